#!/usr/bin/env bash
# Build the two local images of the end-to-end topology (deploy/compose/), on a machine whose
# Docker Engine has no registry:
#
#   ollyscale-pooler:e2e        the top-level Dockerfile with a binary built here (as
#                               scripts/docker-image.sh does), on scripts/docker-base.sh's base;
#   ollyscale-e2e-node:local    etcd, Patroni and PostgreSQL 15 from Debian 12's own packages
#                               (etcd-server, patroni, python3-etcd, postgresql-15), installed with
#                               apt on the same local base (deploy/compose/node/Dockerfile; its apt
#                               layer is cached by Docker's build cache).
#
# Needs root (debootstrap, for the base) and the Debian mirror apt uses here.
# $POOLER_BIN: the binary to ship (default: cargo build, target/debug/ollyscale-pooler).
set -euo pipefail
cd "$(dirname "$0")/../.."

POOLER_IMAGE=${POOLER_IMAGE:-ollyscale-pooler:e2e}
NODE_IMAGE=${NODE_IMAGE:-ollyscale-e2e-node:local}
say() { printf '[%s] images: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

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

say "docker build $NODE_IMAGE"
# The classic builder (this engine has no buildx); apt runs inside the build (node/Dockerfile).
DOCKER_BUILDKIT=0 nice -n 10 docker build --quiet -t "$NODE_IMAGE" deploy/compose/node >/dev/null
say "done: $POOLER_IMAGE, $NODE_IMAGE"
