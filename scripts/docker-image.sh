#!/usr/bin/env bash
# Build the container image on this machine (no registry) and prove it serves: CI's image step.
#
#   1. scripts/docker-base.sh: the local debian:bookworm-slim base (cached);
#   2. the Dockerfile with a binary built here ($POOLER_BIN, default the debug build that the test
#      step reuses) in place of its cargo stage (see the Dockerfile's header);
#   3. run it the way deploy/ does (read-only root filesystem, all capabilities dropped, the config
#      mounted read-only, non-root) on the host network, listening on 127.0.0.1 only, in front of
#      a throwaway PostgreSQL: --check inside the image, psql through it, /readyz, then
#      `docker stop` (SIGTERM) must drain and exit 0.
# Everything it starts is removed on exit. Bounded: each wait has a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
install_cleanup_trap

IMAGE=${IMAGE:-ollyscale-pooler:ci}
command -v docker >/dev/null 2>&1 || die "docker not found"
docker info >/dev/null 2>&1 || die "the Docker daemon is not running"

bash scripts/docker-base.sh

bin=${POOLER_BIN:-}
if [ -z "$bin" ]; then
    log "cargo build --bin ollyscale-pooler"
    cargo build --quiet --bin ollyscale-pooler
    bin=target/debug/ollyscale-pooler
fi
[ -x "$bin" ] || die "no binary at $bin"

make_tmpdir ctx image
mkdir -p "$ctx/prebuilt"
cp "$bin" "$ctx/prebuilt/ollyscale-pooler"
log "docker build -t $IMAGE (prebuilt binary)"
# The classic builder: this engine has no buildx. The cargo stage runs on the plain base.
DOCKER_BUILDKIT=0 docker build --quiet --build-arg RUST_IMAGE=debian:bookworm-slim \
    -f Dockerfile -t "$IMAGE" "$ctx" >/dev/null
[ "$(docker image inspect -f '{{.Config.User}} {{.Config.StopSignal}}' "$IMAGE")" = "10001:10001 SIGTERM" ] \
    || die "image runs as $(docker image inspect -f '{{.Config.User}}' "$IMAGE"), not 10001:10001 with SIGTERM"

make_tmpdir pgdir pg
free_port pg_port
free_port pooler_port
free_port http_port
pg_up "$pgdir" "$pg_port"

# The mounted config directory, readable by the image's user (uid 10001).
conf=$(mktemp -d "${TMPDIR:-/tmp}/ollyscale-conf.XXXXXX")
_OLLY_TMPDIRS+=("$conf")
chmod 755 "$conf"
printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" > "$conf/userlist.txt"
cat > "$conf/pgbouncer.ini" <<INI
[databases]
$BENCH_DB = host=127.0.0.1 port=$pg_port dbname=$BENCH_DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $pooler_port
unix_socket_dir =
auth_type = md5
auth_file = /etc/ollyscale-pooler/userlist.txt
admin_users = $BENCH_USER
pool_mode = transaction
shutdown_drain = transaction
shutdown_timeout = 10
http_listen_addr = 127.0.0.1
http_listen_port = $http_port
INI
chmod 644 "$conf/userlist.txt" "$conf/pgbouncer.ini"

run_flags=(--network host --read-only --cap-drop ALL --security-opt no-new-privileges
    -v "$conf:/etc/ollyscale-pooler:ro")
log "--check inside the image"
docker run --rm "${run_flags[@]}" "$IMAGE" --check /etc/ollyscale-pooler/pgbouncer.ini

name="ollyscale-pooler-ci-$$"
log "docker run $name (127.0.0.1:$pooler_port, http $http_port)"
docker run -d --name "$name" "${run_flags[@]}" "$IMAGE" >/dev/null
remove_container() { docker rm -f "$name" >/dev/null 2>&1 || true; }
trap 'remove_container; cleanup_all' EXIT
for _ in $(seq 1 100); do
    port_open "$pooler_port" && break
    [ "$(docker inspect -f '{{.State.Running}}' "$name")" = true ] || { docker logs "$name" >&2; die "container exited"; }
    sleep 0.1
done
port_open "$pooler_port" || { docker logs "$name" >&2; die "the container never listened"; }

out=$(PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=10 timeout 30 "$(pg_bindir)/psql" -X -A -t \
    -h 127.0.0.1 -p "$pooler_port" -U "$BENCH_USER" -d "$BENCH_DB" -c "SELECT 'served ' || 40 + 2")
[ "$out" = "served 42" ] || { docker logs "$name" >&2; die "psql through the container said: $out"; }
ready=$(curl -s -m 10 "http://127.0.0.1:$http_port/readyz")
[ "$ready" = ready ] || die "/readyz said: $ready"
log "psql through the image: $out; /readyz: $ready"

log "docker stop (SIGTERM drain)"
timeout 60 docker stop -t 30 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || { docker logs "$name" >&2; die "exit code $code after SIGTERM"; }
docker logs "$name" 2>&1 | grep -q "got SIGTERM, shutting down" || { docker logs "$name" >&2; die "no drain line in the log"; }
log "image OK: $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
