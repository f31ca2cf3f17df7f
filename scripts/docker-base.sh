#!/usr/bin/env bash
# Make the local base image the Dockerfile's runtime stage starts FROM, on a machine whose Docker
# Engine has no registry to pull from: debootstrap a minimal Debian 12 (bookworm) with CA
# certificates, then `docker import` it as debian:bookworm-slim (the production FROM name, so the
# Dockerfile stays the same everywhere). Cached: skips all work when the image is already present.
#
# The Debian mirror is the one this host's apt uses (first URIs:/deb line naming bookworm), or
# $DEBIAN_MIRROR. Needs root (debootstrap, docker). Takes 1-3 minutes the first time.
set -euo pipefail

image="${BASE_IMAGE:-debian:bookworm-slim}"
suite=bookworm

die() { printf 'docker-base: %s\n' "$*" >&2; exit 1; }

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "docker-base: $image present, nothing to do"
    exit 0
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v debootstrap >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap
fi

# The mirror apt already uses here: deb822 `URIs:` lines first, then one-line `deb` entries.
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
        | awk '/^URIs:/ {print $2}' | grep -v -- '-security' | head -n 1 || true)
fi
if [ -z "$mirror" ]; then
    mirror=$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -v -- '-security' | head -n 1 || true)
fi
[ -n "$mirror" ] || die "no Debian mirror found in /etc/apt; set DEBIAN_MIRROR"

root=$(mktemp -d /tmp/docker-base.XXXXXX)
trap 'as_root rm -rf "$root"' EXIT
echo "docker-base: debootstrap $suite from $mirror into $root"
as_root debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; die "debootstrap failed (log $root.log)"; }
# Slim it like the registry's -slim image: no apt lists, docs or man pages, no caches.
as_root rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
as_root tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' - "$image" >/dev/null
rm -f "$root.log"
echo "docker-base: imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
