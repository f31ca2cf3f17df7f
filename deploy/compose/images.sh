#!/usr/bin/env bash
# Build the two local images of the end-to-end topology (deploy/compose/), on a machine whose
# Docker Engine has no registry:
#
#   ollyscale-pooler:e2e        the top-level Dockerfile with a binary built here (as
#                               scripts/docker-image.sh does), on scripts/docker-base.sh's base;
#   ollyscale-e2e-node:local    etcd, Patroni and PostgreSQL 15 from Debian 12's own packages
#                               (etcd-server, patroni, python3-etcd, postgresql-15): a debootstrapped
#                               root imported with `docker import`, then deploy/compose/node/ on top.
#
# The debootstrap is cached: it is skipped while an image with the same package list exists
# (label e2e.packages). Needs root (debootstrap) and the Debian mirror apt uses here.
# $POOLER_BIN: the binary to ship (default: cargo build, target/debug/ollyscale-pooler).
set -euo pipefail
cd "$(dirname "$0")/../.."

POOLER_IMAGE=${POOLER_IMAGE:-ollyscale-pooler:e2e}
NODE_IMAGE=${NODE_IMAGE:-ollyscale-e2e-node:local}
ROOTFS_IMAGE=ollyscale-e2e-rootfs:local
PACKAGES=ca-certificates,postgresql-15,patroni,python3-etcd,etcd-server,etcd-client,iproute2,procps
say() { printf '[%s] images: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

docker info >/dev/null 2>&1 || die "the Docker daemon is not running"
nice -n 10 bash scripts/docker-base.sh

# --- the pooler image ---------------------------------------------------------------------
bin=${POOLER_BIN:-}
if [ -z "$bin" ]; then
    say "cargo build --bin ollyscale-pooler"
    nice -n 10 cargo build --quiet --bin ollyscale-pooler
    bin=target/debug/ollyscale-pooler
fi
[ -x "$bin" ] || die "no binary at $bin"
ctx=$(mktemp -d /tmp/e2e-pooler-ctx.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/prebuilt"
cp "$bin" "$ctx/prebuilt/ollyscale-pooler"
say "docker build $POOLER_IMAGE (prebuilt binary)"
DOCKER_BUILDKIT=0 nice -n 10 docker build --quiet --build-arg RUST_IMAGE=debian:bookworm-slim \
    -f Dockerfile -t "$POOLER_IMAGE" "$ctx" >/dev/null

# --- the etcd/Patroni/PostgreSQL root file system (cached) ----------------------------------
have=$(docker image inspect -f '{{index .Config.Labels "e2e.packages"}}' "$ROOTFS_IMAGE" 2>/dev/null || true)
if [ "$have" != "$PACKAGES" ]; then
    command -v debootstrap >/dev/null 2>&1 || die "debootstrap not installed (scripts/docker-base.sh installs it)"
    mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -n 1 || true)}
    [ -n "$mirror" ] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"
    root=$(mktemp -d /tmp/e2e-rootfs.XXXXXX)
    trap 'rm -rf "$ctx"; as_root rm -rf "$root" "$root.log"' EXIT
    say "debootstrap bookworm + $PACKAGES from $mirror (1-4 minutes the first time)"
    as_root nice -n 10 debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$mirror" \
        >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; die "debootstrap failed"; }
    # Debian's postgresql-common creates a "main" cluster on install: Patroni makes its own.
    as_root rm -rf "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
    as_root tar -C "$root" -c . | nice -n 10 docker import \
        -c 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c "LABEL e2e.packages=$PACKAGES" - "$ROOTFS_IMAGE" >/dev/null
    say "imported $ROOTFS_IMAGE"
else
    say "$ROOTFS_IMAGE present (same packages), no debootstrap"
fi

say "docker build $NODE_IMAGE"
DOCKER_BUILDKIT=0 nice -n 10 docker build --quiet --build-arg BASE="$ROOTFS_IMAGE" \
    -t "$NODE_IMAGE" deploy/compose/node >/dev/null
say "done: $POOLER_IMAGE, $NODE_IMAGE"
