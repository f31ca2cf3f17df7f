# ollyscale-pooler image (runs as ollyscale-db-pooler on Kubernetes; see deploy/ and the README).
#
# Multi-stage: build with cargo on the Rust image, run on Debian 12 slim with the binary and CA
# certificates only, as a non-root user. The config is read from a mounted path
# (/etc/ollyscale-pooler/pgbouncer.ini, the ConfigMap in deploy/); with no config file and the
# Zalando operator's environment the binary starts in operator mode instead.
#
#   docker build -t ollyscale-pooler .
#
# Machines without a registry (CI here): scripts/docker-base.sh imports a debootstrapped
# debian:bookworm-slim, and scripts/docker-image.sh builds from a context that holds only
# prebuilt/ollyscale-pooler (a binary built on the host, Debian 12 like the image) with
# --build-arg RUST_IMAGE=debian:bookworm-slim: the build stage then copies that binary instead of
# running cargo, and every other line is the same as in production.
#
# No HEALTHCHECK: Kubernetes probes /livez and /readyz on the HTTP port.

ARG RUST_IMAGE=rust:1.85-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN if [ -x prebuilt/ollyscale-pooler ]; then \
        install -D -m 0755 prebuilt/ollyscale-pooler /out/ollyscale-pooler; \
    else \
        cargo build --release --locked --bin ollyscale-pooler \
        && install -D -m 0755 target/release/ollyscale-pooler /out/ollyscale-pooler; \
    fi

FROM ${RUNTIME_IMAGE}
# CA certificates for TLS to the servers; the local debootstrapped base already has them.
RUN if [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --system --gid 10001 pooler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin pooler \
    && mkdir -p /etc/ollyscale-pooler
COPY --from=build /out/ollyscale-pooler /usr/local/bin/ollyscale-pooler
# 5432: PostgreSQL clients and the admin console. 9127: /metrics, /livez, /readyz.
EXPOSE 5432 9127
# SIGTERM drains: stop accepting, let each client finish its transaction, then exit
# (bounded by shutdown_timeout).
STOPSIGNAL SIGTERM
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ollyscale-pooler"]
CMD ["/etc/ollyscale-pooler/pgbouncer.ini"]
