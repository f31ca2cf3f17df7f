#!/usr/bin/env bash
# The Zalando operator's pooler ini, unchanged and at its real paths, in the container image: the
# "done means" of issue 8, as CI's step after scripts/docker-image.sh (which builds $IMAGE).
#
# What the operator's pooler pod does, and what this does instead of Kubernetes:
#   - its entrypoint renders pooler/pgbouncer.ini.tmpl (tests/tls/zalando/, byte for byte) with
#     envsubst into /etc/pgbouncer/pgbouncer.ini; here the same envsubst with the operator's
#     environment for a cluster `ollyscale-db` (PGHOST is the cluster's service name, PGPORT 5432,
#     PGUSER pooler, the sizes the operator computes from its defaults), mounted there read-only
#     with the userlist the operator's secret holds (pooler/auth_file.txt.tmpl);
#   - it makes a self-signed certificate with `openssl req ... -subj /CN=spilo.dummy.org` at
#     /etc/ssl/certs/pgbouncer.{crt,key}: the same command here, mounted at those paths;
#   - logfile and pidfile go to /var/log/pgbouncer and /var/run/pgbouncer, and the Unix socket to
#     /tmp (unix_socket_dir's default): writable mounts, the rest of the image read-only (as
#     deploy/ runs it; the operator's pod has a writable root, so it needs no mounts for these);
#   - PostgreSQL is Spilo, reached as `ollyscale-db:5432`, with ssl on and plain TCP rejected
#     (Spilo's pg_hba ends in `hostnossl all all all reject`), and the operator's pooler role and
#     pooler.user_lookup in every database. Here the host's PostgreSQL binaries run inside the
#     network namespace of a placeholder container that carries the DNS alias `ollyscale-db` on a
#     private Docker network, listening on its port 5432; nothing listens outside that network
#     except the pooler's port, published on 127.0.0.1 only.
# Then psql with sslmode=require through the image: client TLS, server TLS (pg_stat_ssl), an md5
# and a SCRAM user found by auth_query, the admin console as $PGUSER, PgBouncer's login line in
# the template's logfile, its pidfile, and `SSL required` for a plain client.
#
# Needs root (nsenter) and Docker. About 10 s. Everything it starts is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
install_cleanup_trap

IMAGE=${IMAGE:-ollyscale-pooler:ci}
TEMPLATES=tests/tls/zalando
command -v docker >/dev/null 2>&1 || die "docker not found"
docker image inspect "$IMAGE" >/dev/null 2>&1 || die "no image $IMAGE (scripts/docker-image.sh builds it)"
for tool in envsubst openssl nsenter setpriv; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
is_root || die "needs root (nsenter into the database container's network namespace)"
bin=$(pg_bindir)

tag="olly-zalando-$$"
net=$tag
db_box="$tag-db"
pooler_box="$tag-pooler"
remove_docker() {
    docker rm -f "$pooler_box" "$db_box" >/dev/null 2>&1 || true
    docker network rm "$net" >/dev/null 2>&1 || true
}
# PostgreSQL first (cleanup_all, by PID), then the containers and the network.
trap 'cleanup_all; remove_docker' EXIT

# The operator's environment for the pooler container of cluster ollyscale-db (defaults:
# maxDBConnections 60 over 2 instances = 30 per pod, default_pool_size 15, min and reserve 7).
export PGHOST=ollyscale-db PGPORT=5432 PGUSER=pooler PGSCHEMA=pooler
PGPASSWORD=$(openssl rand -hex 32)
export PGPASSWORD
export CONNECTION_POOLER_PORT=5432 CONNECTION_POOLER_MODE=transaction
export CONNECTION_POOLER_DEFAULT_SIZE=15 CONNECTION_POOLER_MIN_SIZE=7
export CONNECTION_POOLER_RESERVE_SIZE=7 CONNECTION_POOLER_MAX_CLIENT_CONN=10000
export CONNECTION_POOLER_MAX_DB_CONN=30

# /etc/pgbouncer: the rendered ini and the userlist; the certificate; log and pid directories.
make_tmpdir root zalando
mkdir -p "$root/etc-pgbouncer" "$root/certs" "$root/log" "$root/run" "$root/pg"
envsubst < "$TEMPLATES/pgbouncer.ini.tmpl" > "$root/etc-pgbouncer/pgbouncer.ini"
envsubst < "$TEMPLATES/auth_file.txt.tmpl" > "$root/etc-pgbouncer/userlist.txt"
openssl req -nodes -new -x509 -subj /CN=spilo.dummy.org \
    -keyout "$root/certs/pgbouncer.key" -out "$root/certs/pgbouncer.crt" >/dev/null 2>&1 \
    || die "openssl req failed"
# The image runs as 10001; the key stays private to it.
chown -R 10001:10001 "$root/certs" "$root/log" "$root/run"
chmod 600 "$root/certs/pgbouncer.key"
chmod 644 "$root/certs/pgbouncer.crt" "$root/etc-pgbouncer/"*
chmod 755 "$root" "$root/etc-pgbouncer"
# The one change a Kubernetes pod needs no file for: the rendered ini is the template's.
grep -q '^listen_addr = \*$' "$root/etc-pgbouncer/pgbouncer.ini" || die "envsubst changed the template"
grep -q 'user_lookup(\$1)$' "$root/etc-pgbouncer/pgbouncer.ini" || die "envsubst ate \$1"

log "docker network $net; placeholder container $db_box (alias ollyscale-db)"
docker network create "$net" >/dev/null
docker run -d --name "$db_box" --network "$net" --network-alias ollyscale-db --read-only \
    --cap-drop ALL --security-opt no-new-privileges --entrypoint /bin/sleep "$IMAGE" infinity >/dev/null
db_pid=$(docker inspect -f '{{.State.Pid}}' "$db_box")
[ "$db_pid" -gt 0 ] || die "no PID for $db_box"

# Spilo's side: ssl on with a self-signed certificate, TLS-only host access, md5/SCRAM users.
pgdir=$root/pg
chown "$PG_OS_USER:" "$pgdir"
as_db_user "$bin/initdb" -D "$pgdir/pgdata" -U postgres -E UTF8 --locale=C --auth-local=trust \
    >"$pgdir/initdb.log" 2>&1 || { cat "$pgdir/initdb.log" >&2; die "initdb failed"; }
openssl req -nodes -new -x509 -subj /CN=ollyscale-db \
    -keyout "$pgdir/server.key" -out "$pgdir/server.crt" >/dev/null 2>&1 || die "openssl req failed"
chown "$PG_OS_USER:" "$pgdir/server.key" "$pgdir/server.crt"
chmod 600 "$pgdir/server.key"
cat > "$pgdir/pgdata/pg_hba.conf" <<EOF
local     all all            trust
hostssl   all all 0.0.0.0/0  md5
hostnossl all all all        reject
EOF
cat >> "$pgdir/pgdata/postgresql.conf" <<EOF
listen_addresses = '*'
port = 5432
unix_socket_directories = '$pgdir'
ssl = on
ssl_cert_file = '$pgdir/server.crt'
ssl_key_file = '$pgdir/server.key'
fsync = off
EOF
chown "$PG_OS_USER:" "$pgdir/pgdata/pg_hba.conf" "$pgdir/pgdata/postgresql.conf"
_OLLY_PG_DIRS+=("$pgdir")
log "PostgreSQL in $db_box's network namespace (ollyscale-db:5432)"
nsenter --net="/proc/$db_pid/ns/net" -- setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" \
    --init-groups -- "$bin/pg_ctl" -D "$pgdir/pgdata" -l "$pgdir/postgres.log" -w -t 60 start \
    >/dev/null || { cat "$pgdir/postgres.log" >&2; die "PostgreSQL did not start"; }

sql() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgdir" -p 5432 -U postgres -d "$1" -c "$2" >/dev/null; }
sql postgres "SET password_encryption = 'md5'; CREATE ROLE md5user LOGIN PASSWORD 'md5_pw';
    CREATE ROLE pooler LOGIN PASSWORD '$PGPASSWORD';
    SET password_encryption = 'scram-sha-256'; CREATE ROLE ollyscale LOGIN PASSWORD 'ollyscale_pw'"
sql postgres "CREATE DATABASE ollyscale OWNER ollyscale"
# The operator's lookup function (pkg/cluster/database.go), in every database.
for d in postgres ollyscale; do
    sql "$d" "CREATE SCHEMA IF NOT EXISTS pooler;
        CREATE OR REPLACE FUNCTION pooler.user_lookup(in i_username text, out uname text, out phash text)
        RETURNS record AS \$\$
        BEGIN
            SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_username INTO uname, phash;
            RETURN;
        END;
        \$\$ LANGUAGE plpgsql SECURITY DEFINER;
        REVOKE ALL ON FUNCTION pooler.user_lookup(text) FROM public, pooler;
        GRANT EXECUTE ON FUNCTION pooler.user_lookup(text) TO pooler;
        GRANT USAGE ON SCHEMA pooler TO pooler;"
done

mounts=(-v "$root/etc-pgbouncer:/etc/pgbouncer:ro"
    -v "$root/certs/pgbouncer.crt:/etc/ssl/certs/pgbouncer.crt:ro"
    -v "$root/certs/pgbouncer.key:/etc/ssl/certs/pgbouncer.key:ro"
    -v "$root/log:/var/log/pgbouncer" -v "$root/run:/var/run/pgbouncer" --tmpfs /tmp)
flags=(--network "$net" --read-only --cap-drop ALL --security-opt no-new-privileges "${mounts[@]}")
log "--check /etc/pgbouncer/pgbouncer.ini inside the image"
docker run --rm "${flags[@]}" "$IMAGE" --check /etc/pgbouncer/pgbouncer.ini

free_port port
log "docker run $pooler_box: /etc/pgbouncer/pgbouncer.ini, port 5432 published on 127.0.0.1:$port"
docker run -d --name "$pooler_box" "${flags[@]}" -p "127.0.0.1:$port:5432" "$IMAGE" \
    /etc/pgbouncer/pgbouncer.ini >/dev/null
dump() { docker logs "$pooler_box" >&2 2>&1; cat "$root/log/pgbouncer.log" >&2 2>/dev/null || true; }
# The published port accepts before the pooler listens (docker-proxy): wait for the log line.
for _ in $(seq 1 100); do
    grep -q "listening on" "$root/log/pgbouncer.log" 2>/dev/null && break
    [ "$(docker inspect -f '{{.State.Running}}' "$pooler_box")" = true ] || { dump; die "container exited"; }
    sleep 0.1
done
grep -q "listening on" "$root/log/pgbouncer.log" 2>/dev/null || { dump; die "never listened"; }
[ -s "$root/run/pgbouncer.pid" ] || { dump; die "no pidfile at /var/run/pgbouncer/pgbouncer.pid"; }

through() {  # through <user> <password> <db> <sslmode> <sql>
    PGPASSWORD=$2 PGCONNECT_TIMEOUT=10 timeout 30 "$bin/psql" -X -A -t -v ON_ERROR_STOP=1 \
        "host=127.0.0.1 port=$port user=$1 dbname=$3 sslmode=$4" -c "$5" 2>&1
}
check() {  # check <what> <got> <want>
    [ "$2" = "$3" ] || { dump; die "$1: got '$2', want '$3'"; }
    log "$1: $2"
}
ssl_sql="SELECT current_user || ' ' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
check "SCRAM user over TLS both ways" "$(through ollyscale ollyscale_pw ollyscale require "$ssl_sql")" "ollyscale true"
check "md5 user, JDBC's extra_float_digits ignored" \
    "$(PGOPTIONS='-c extra_float_digits=2' through md5user md5_pw ollyscale require "$ssl_sql")" "md5user true"
out=$(through pooler "$PGPASSWORD" pgbouncer require "SHOW CLIENTS")
case "$out" in *"|TLSv1.3/"*) log "admin console as pooler: SHOW CLIENTS shows TLSv1.3" ;;
    *) dump; die "SHOW CLIENTS: $out" ;; esac
out=$(through ollyscale ollyscale_pw ollyscale disable "SELECT 1" || true)
case "$out" in *"SSL required"*) log "plain client refused: SSL required" ;;
    *) dump; die "plain client: $out" ;; esac
grep -q "login attempt: db=ollyscale user=ollyscale tls=TLSv1.3/" "$root/log/pgbouncer.log" \
    || { dump; die "no TLS login line in /var/log/pgbouncer/pgbouncer.log"; }
log "Zalando ini served psql sslmode=require in $IMAGE"
