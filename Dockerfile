# ollyscale-pooler image (runs as ollyscale-db-pooler on Kubernetes; see deploy/ and the README).
#
# Production recipe, multi-stage: build with cargo on the Rust image, run on Debian 12 slim with the
# binary and CA certificates only, as a non-root user. The config is read from a mounted path
# (/etc/ollyscale-pooler/pgbouncer.ini, the ConfigMap in deploy/); with no config file the binary
# starts in operator mode from the Zalando operator's environment variables instead.
#
#   docker build -t ollyscale-pooler .
#
# Machines without a registry (CI here): scripts/docker-base.sh imports a debootstrapped
# debian:bookworm-slim, the host builds the release binary, and the `prebuilt` target copies it in
# from a context holding only that binary (scripts/docker-image.sh does all of it):
#
#   docker build --target prebuilt -f Dockerfile <dir with ollyscale-pooler>
#
# No HEALTHCHECK: Kubernetes probes /livez and /readyz on the HTTP port.

ARG RUST_IMAGE=rust:1.85-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# Everything but the binary: shared by the two final targets below. Listed first: see `build`.
FROM ${RUNTIME_IMAGE} AS runtime
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
# 5432: PostgreSQL clients and the admin console. 9127: /metrics, /livez, /readyz.
EXPOSE 5432 9127
# SIGTERM drains: stop accepting, let each client finish its transaction, then exit
# (bounded by shutdown_timeout).
STOPSIGNAL SIGTERM
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ollyscale-pooler"]
CMD ["/etc/ollyscale-pooler/pgbouncer.ini"]

# CI on machines without a registry: the binary built on the host (Debian 12, same glibc).
FROM runtime AS prebuilt
COPY ollyscale-pooler /usr/local/bin/ollyscale-pooler

# The cargo build. It comes after `prebuilt` so that the classic builder, which runs every stage up
# to --target in order, never needs the Rust image for `--target prebuilt`.
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin ollyscale-pooler \
    && install -D -m 0755 target/release/ollyscale-pooler /out/ollyscale-pooler

# The default target: the binary from the cargo stage.
FROM runtime AS release
COPY --from=build /out/ollyscale-pooler /usr/local/bin/ollyscale-pooler
