# shellcheck shell=bash disable=SC2034,SC2119,SC2120
# Shared helpers for scripts/quickstart.sh and benches/pgbench_compare.sh.
#
# Source it, then call `install_cleanup_trap` once: everything started through these
# helpers (PostgreSQL clusters, poolers, background helper processes, temp dirs) is then
# stopped BY PID and removed on exit, Ctrl-C, SIGTERM and errors.
#
#   pg_up <dir> <port>                                 throwaway cluster in <dir>/pgdata (sets PG_PID)
#   pg_down [<dir>]                                    stop that cluster (default: all started)
#   free_port [<var>]                                  a free TCP port on 127.0.0.1 (into <var> or printed)
#   make_tmpdir <var> [<tag>]                          temp dir into <var>, removed on exit
#   write_pooler_ini <dir> <listen_port> <pg_port> <pool_size>
#                                                      <dir>/pgbouncer.ini + <dir>/userlist.txt, read
#                                                      unchanged by PgBouncer and ollyscale-pooler
#   make_selfsigned_cert <dir> <name> <cn>             <dir>/<name>.key + .crt (openssl, RSA 2048)
#   pooler_up <binary> <ini> [<name>]                  start in background, wait for the port (sets POOLER_PID)
#   pooler_down [<pid>]                                stop that pooler (default: all started)
#
# Environment knobs (all optional):
#   PG_BINDIR               PostgreSQL bin dir (default: newest /usr/lib/postgresql/*/bin)
#   PG_OS_USER              OS user that runs PostgreSQL and the poolers when we are root (postgres)
#   PG_PASSWORD_ENCRYPTION  how the server stores bench's password: scram-sha-256 (default) or md5
#   MAX_CLIENT_CONN         max_client_conn written to the ini (2000)
#   POOLER_INI_EXTRA        extra "key = value" lines appended to [pgbouncer]
#   PG_SSL=1                pg_up turns ssl on with a self-signed certificate made at run time, and
#                           its pg_hba.conf then refuses TCP logins without TLS (hostnossl reject,
#                           as Spilo's does)
#   POOLER_TLS              TLS lines written into the pooler ini: off (default: none, so both
#                           poolers keep server_tls_sslmode = prefer), client (client_tls_sslmode =
#                           require with a self-signed certificate made in the pooler's dir), server
#                           (server_tls_sslmode = require) or both
#   KEEP_TMP=1              keep temp dirs (logs) instead of removing them

BENCH_USER=bench
BENCH_PASSWORD=bench_pw
BENCH_DB=bench

: "${PG_OS_USER:=postgres}"
: "${PG_PASSWORD_ENCRYPTION:=scram-sha-256}"
: "${MAX_CLIENT_CONN:=2000}"
: "${POOLER_INI_EXTRA:=}"
: "${KEEP_TMP:=0}"
: "${PG_SSL:=0}"
: "${POOLER_TLS:=off}"

# Registries used by the cleanup trap.
_OLLY_POOLER_PIDS=()
_OLLY_PG_DIRS=()
_OLLY_BG_PIDS=()
_OLLY_TMPDIRS=()
_OLLY_PORTS_GIVEN=" "
_OLLY_CLEANED=0

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

# Runs a command as the user that owns the database files (postgres when we are root,
# ourselves otherwise). setpriv exec()s, so `as_db_user cmd &` gives `$!` == the command's PID
# (runuser/su would fork and leave a parent in between), and it does not go through PAM, so
# the raised `ulimit -n` is inherited.
as_db_user() {
    if is_root; then
        (cd / && exec setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@")
    else
        "$@"
    fi
}

# Prints the PostgreSQL bin dir (initdb, pg_ctl, postgres, psql, pgbench).
pg_bindir() {
    if [ -n "${PG_BINDIR:-}" ]; then
        [ -x "$PG_BINDIR/initdb" ] || die "PG_BINDIR=$PG_BINDIR has no initdb"
        printf '%s\n' "$PG_BINDIR"; return 0
    fi
    local d best="" bestver=0 ver
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] || continue
        ver=$(basename "$(dirname "$d")")
        ver=${ver%%.*}
        if [ "$ver" -gt "$bestver" ] 2>/dev/null; then best=$d; bestver=$ver; fi
    done
    if [ -z "$best" ] && command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir)
        [ -x "$d/initdb" ] && best=$d
    fi
    [ -n "$best" ] || die "no PostgreSQL server binaries found (apt-get install postgresql postgresql-contrib)"
    printf '%s\n' "$best"
}

# Installs the Debian packages among "$@" that are not installed yet.
ensure_packages() {
    local p missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    if ! is_root && ! command -v sudo >/dev/null 2>&1; then
        die "need root or sudo to install: ${missing[*]}"
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Raises the soft open-files limit of this shell (inherited by what it starts) to at least $1.
raise_nofile() {
    local want=$1 hard soft
    hard=$(ulimit -Hn)
    soft=$(ulimit -Sn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
        if is_root && ulimit -Hn "$want" 2>/dev/null; then hard=$want; else
            warn "hard open-files limit is $hard < $want: the pooler may refuse clients"
            want=$hard
        fi
    fi
    if [ "$soft" = unlimited ] || [ "$soft" -lt "$want" ]; then ulimit -Sn "$want"; fi
}

# make_tmpdir <var> [<tag>]: a new temp dir (owned by the DB user when we are root) stored in
# variable <var>; removed by the cleanup trap. (Not `$(make_tmpdir)`: a subshell could not
# register it for cleanup.)
make_tmpdir() {
    local _var=$1 _d
    _d=$(mktemp -d "${TMPDIR:-/tmp}/ollyscale-${2:-tmp}.XXXXXX")
    _OLLY_TMPDIRS+=("$_d")
    chmod 700 "$_d"
    if is_root; then chown "$PG_OS_USER:" "$_d"; fi
    printf -v "$_var" '%s' "$_d"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# free_port [<var>]: a TCP port on 127.0.0.1 that nothing listens on. With <var>, stores it
# there and remembers it so later calls never hand it out again (use this form when taking
# several ports before starting the servers); without, prints it.
free_port() {
    local _p _i _lo=32768 _hi=60999 _base=15000 _span=15000
    # Stay out of the kernel's ephemeral range: an outgoing connection's local port there makes
    # a later bind() fail even though nothing listens on it.
    read -r _lo _hi < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
    if [ "$_lo" -le $((_base + _span)) ]; then _base=10000; _span=$((_lo - 10000)); fi
    [ "$_span" -ge 1000 ] || { _base=$((_hi + 1)); _span=$((65535 - _hi)); }
    for _i in $(seq 1 200); do
        _p=$(( _base + (RANDOM * 32768 + RANDOM) % _span ))
        case "$_OLLY_PORTS_GIVEN" in *" $_p "*) continue ;; esac
        # any socket (listening, connected or TIME_WAIT) on that port
        if command -v ss >/dev/null 2>&1 && ss -Htan "sport = :$_p" 2>/dev/null | grep -q .; then continue; fi
        port_open "$_p" && continue
        _OLLY_PORTS_GIVEN+="$_p "
        if [ -n "${1:-}" ]; then printf -v "$1" '%s' "$_p"; else printf '%s\n' "$_p"; fi
        return 0
    done
    die "no free port found"
}

# pg_up <dir> <port>: initdb a throwaway cluster in <dir>/pgdata (superuser bench/bench_pw,
# host md5 on 127.0.0.1/32, database bench), start it listening on 127.0.0.1:<port> only
# (Unix socket in <dir>) and wait until it is ready. Sets PG_PID, PG_PORT, PG_DIR.
pg_up() {
    local dir=$1 port=$2 bin data
    bin=$(pg_bindir)
    data=$dir/pgdata
    if is_root; then chown "$PG_OS_USER:" "$dir"; fi
    printf '%s\n' "$BENCH_PASSWORD" > "$dir/pwfile"
    if is_root; then chown "$PG_OS_USER:" "$dir/pwfile"; fi
    log "initdb $data (PostgreSQL $("$bin/postgres" --version | awk '{print $3}'))"
    if ! as_db_user "$bin/initdb" -D "$data" -U "$BENCH_USER" --pwfile="$dir/pwfile" \
            -E UTF8 --locale=C --auth-local=trust --auth-host=md5 > "$dir/initdb.log" 2>&1; then
        cat "$dir/initdb.log" >&2; die "initdb failed"
    fi
    rm -f "$dir/pwfile"
    if [ "$PG_SSL" = 1 ]; then
        # Spilo's shape: TLS-only host access, so a client (or pooler) that falls back to plain
        # text fails instead of being measured without TLS.
        make_selfsigned_cert "$dir" server localhost
        cat > "$data/pg_hba.conf" <<EOF
# written by scripts/lib.sh (PG_SSL=1)
local     all all              trust
hostssl   all all 127.0.0.1/32 md5
hostnossl all all 127.0.0.1/32 reject
EOF
    else
        cat > "$data/pg_hba.conf" <<EOF
# written by scripts/lib.sh
local all all                trust
host  all all 127.0.0.1/32   md5
EOF
    fi
    cat >> "$data/postgresql.conf" <<EOF

# --- scripts/lib.sh (throwaway benchmark cluster: NOT crash safe) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 400
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = '$PG_PASSWORD_ENCRYPTION'
logging_collector = off
EOF
    if [ "$PG_SSL" = 1 ]; then
        cat >> "$data/postgresql.conf" <<EOF
ssl = on
ssl_cert_file = '$dir/server.crt'
ssl_key_file = '$dir/server.key'
EOF
    fi
    if is_root; then chown "$PG_OS_USER:" "$data/pg_hba.conf" "$data/postgresql.conf"; fi
    _OLLY_PG_DIRS+=("$dir")
    log "starting PostgreSQL on 127.0.0.1:$port"
    if ! as_db_user "$bin/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 start > "$dir/pg_ctl.log" 2>&1; then
        cat "$dir/pg_ctl.log" "$dir/postgres.log" >&2 2>/dev/null; die "PostgreSQL did not start"
    fi
    PG_PID=$(head -1 "$data/postmaster.pid")
    local i
    for i in $(seq 1 100); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break
        kill -0 "$PG_PID" 2>/dev/null || { cat "$dir/postgres.log" >&2; die "PostgreSQL died"; }
        sleep 0.1
    done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" || die "PostgreSQL not ready on port $port"
    # Re-store bench's password with the chosen encryption (initdb used the build default) and
    # create the bench database; over the private Unix socket (trust).
    "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U "$BENCH_USER" -d postgres \
        -c "SET password_encryption = '$PG_PASSWORD_ENCRYPTION'" \
        -c "ALTER ROLE $BENCH_USER PASSWORD '$BENCH_PASSWORD'" \
        -c "CREATE DATABASE $BENCH_DB" >/dev/null || die "could not create database $BENCH_DB"
    PG_PORT=$port
    PG_DIR=$dir
    local ssl_note=""
    [ "$PG_SSL" = 1 ] && ssl_note=", ssl on (TCP logins need TLS)"
    log "PostgreSQL up: pid $PG_PID, 127.0.0.1:$port, password stored as $PG_PASSWORD_ENCRYPTION$ssl_note"
}

# Stops a process by PID: signal $2 (TERM), wait up to $3 seconds (15), then SIGKILL.
_stop_pid() {
    local pid=$1 sig=${2:-TERM} secs=${3:-15} i
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "pid $pid did not stop on SIG$sig, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# pg_down [<dir>]: fast shutdown (SIGINT to the postmaster's PID) of one or all started clusters.
pg_down() {
    local d pid keep=()
    for d in "${_OLLY_PG_DIRS[@]}"; do
        if [ -n "${1:-}" ] && [ "$d" != "$1" ]; then keep+=("$d"); continue; fi
        if [ -f "$d/pgdata/postmaster.pid" ]; then
            pid=$(head -1 "$d/pgdata/postmaster.pid")
            if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
                log "stopping PostgreSQL (pid $pid)"
                _stop_pid "$pid" INT 30
            fi
        fi
    done
    _OLLY_PG_DIRS=("${keep[@]}")
}

# make_selfsigned_cert <dir> <name> <cn>: <dir>/<name>.key and <dir>/<name>.crt, a self-signed
# RSA 2048 certificate as the Zalando entrypoint makes it (`openssl req -nodes -new -x509`),
# the key readable only by its owner (PostgreSQL refuses a key others can read).
make_selfsigned_cert() {
    local dir=$1 name=$2 cn=$3
    command -v openssl >/dev/null 2>&1 || ensure_packages openssl
    openssl req -nodes -new -x509 -days 2 -newkey rsa:2048 -subj "/CN=$cn" \
        -keyout "$dir/$name.key" -out "$dir/$name.crt" > "$dir/$name.openssl.log" 2>&1 \
        || { cat "$dir/$name.openssl.log" >&2; die "openssl req failed for $dir/$name.crt"; }
    rm -f "$dir/$name.openssl.log"
    chmod 600 "$dir/$name.key"
    if is_root; then chown "$PG_OS_USER:" "$dir/$name.key" "$dir/$name.crt"; fi
}

# write_pooler_ini <dir> <listen_port> <pg_port> <pool_size>: prints the ini path.
write_pooler_ini() {
    local dir=$1 lport=$2 pgport=$3 pool=$4
    case "$POOLER_TLS" in off|client|server|both) ;; *) die "POOLER_TLS=$POOLER_TLS: off, client, server or both" ;; esac
    if [ "$POOLER_TLS" = client ] || [ "$POOLER_TLS" = both ]; then
        make_selfsigned_cert "$dir" pooler localhost
    fi
    cat > "$dir/userlist.txt" <<EOF
"$BENCH_USER" "$BENCH_PASSWORD"
EOF
    {
        cat <<EOF
;; written by scripts/lib.sh: read unchanged by PgBouncer and ollyscale-pooler
[databases]
$BENCH_DB = host=127.0.0.1 port=$pgport dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $lport
unix_socket_dir = $dir
auth_type = md5
auth_file = $dir/userlist.txt
admin_users = $BENCH_USER
pool_mode = transaction
default_pool_size = $pool
max_client_conn = $MAX_CLIENT_CONN
ignore_startup_parameters = extra_float_digits
logfile = $dir/pooler.log
pidfile = $dir/pooler.pid
EOF
        [ "$POOLER_TLS" = off ] || printf ';; POOLER_TLS=%s\n' "$POOLER_TLS"
        case "$POOLER_TLS" in
            client|both) printf 'client_tls_sslmode = require\nclient_tls_key_file = %s\nclient_tls_cert_file = %s\n' \
                             "$dir/pooler.key" "$dir/pooler.crt" ;;
        esac
        case "$POOLER_TLS" in
            server|both) printf 'server_tls_sslmode = require\n' ;;
        esac
        if [ -n "$POOLER_INI_EXTRA" ]; then
            printf ';; POOLER_INI_EXTRA\n%s\n' "$POOLER_INI_EXTRA"
        fi
    } > "$dir/pgbouncer.ini"
    if is_root; then chown "$PG_OS_USER:" "$dir/userlist.txt" "$dir/pgbouncer.ini"; fi
    chmod 600 "$dir/userlist.txt"
    printf '%s\n' "$dir/pgbouncer.ini"
}

# Prints the last lines of a pooler's logs (the logfile from the ini and its stdout/stderr).
pooler_show_log() {
    local dir=$1 name=${2:-pooler} f shown=0
    for f in "$dir/pooler.log" "$dir/$name.out"; do
        [ -s "$f" ] || continue
        printf -- '----- %s (last 40 lines) -----\n' "$f" >&2
        tail -n 40 "$f" >&2
        shown=1
    done
    [ "$shown" = 1 ] || log "($name wrote nothing to $dir/pooler.log or $dir/$name.out)"
}

# pooler_up <binary> <ini> [<name>]: starts `<binary> <ini>` in the background (as the DB user
# when root), waits until listen_port accepts, fails with the log if it dies. Sets POOLER_PID.
pooler_up() {
    local bin=$1 ini=$2 name=${3:-pooler} dir port i
    dir=$(dirname "$ini")
    port=$(awk -F= '/^[[:space:]]*listen_port[[:space:]]*=/ {gsub(/[[:space:]]/, "", $2); print $2; exit}' "$ini")
    [ -n "$port" ] || die "no listen_port in $ini"
    [ -x "$bin" ] || die "pooler binary not found or not executable: $bin"
    if is_root && ! as_db_user test -x "$bin"; then
        # e.g. a repo under /root: the DB user cannot reach the binary, so run a copy.
        cp "$bin" "$dir/$(basename "$bin")"
        chown "$PG_OS_USER:" "$dir/$(basename "$bin")"
        bin=$dir/$(basename "$bin")
    fi
    rm -f "$dir/pooler.pid"
    # setsid: own session, so a Ctrl-C on the terminal reaches this script (whose trap stops the
    # pooler) and not the pooler directly. The subshell is no process-group leader, so setsid and
    # setpriv both exec() in place and $! is the pooler's own PID.
    ( cd "$dir" && if is_root; then
          exec setsid setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$bin" "$ini"
      else
          exec setsid "$bin" "$ini"
      fi ) > "$dir/$name.out" 2>&1 < /dev/null &
    POOLER_PID=$!
    _OLLY_POOLER_PIDS+=("$POOLER_PID")
    for _ in $(seq 1 150); do
        if ! kill -0 "$POOLER_PID" 2>/dev/null; then
            local rc=0
            wait "$POOLER_PID" 2>/dev/null || rc=$?
            pooler_show_log "$dir" "$name"
            log "$name ($bin) exited with status $rc before accepting connections on port $port"
            return 1
        fi
        port_open "$port" && break
        sleep 0.1
    done
    if ! port_open "$port"; then
        pooler_show_log "$dir" "$name"
        log "$name ($bin) does not accept connections on 127.0.0.1:$port after 15 s"
        return 1
    fi
    log "$name up: pid $POOLER_PID ($(readlink "/proc/$POOLER_PID/exe" 2>/dev/null || echo "$bin")), 127.0.0.1:$port"
}

# pooler_down [<pid>]: stops one or all started poolers. SIGTERM waits for the clients to
# leave (PgBouncer 1.23+ and ours; 1.18 exits at once); a second one, 5 s later, exits at once.
pooler_down() {
    local p keep=() i
    for p in "${_OLLY_POOLER_PIDS[@]}"; do
        if [ -n "${1:-}" ] && [ "$p" != "$1" ]; then keep+=("$p"); continue; fi
        if kill -0 "$p" 2>/dev/null; then log "stopping pooler (pid $p)"; fi
        kill -TERM "$p" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        _stop_pid "$p" TERM 10
    done
    _OLLY_POOLER_PIDS=("${keep[@]}")
}

# Registers a background helper PID (e.g. a client process) for the cleanup trap.
register_bg_pid() { _OLLY_BG_PIDS+=("$1"); }

# workload_args <KIND:MODE:CLIENTS>: sets WORKLOAD_ARGS to pgbench's options for a bench workload
# (KIND select = -S, connect = -S -C, tpcb = the built-in TPC-B-like script; MODE = -M; threads up
# to JOBS); the caller adds -t or -T and the connection options.
workload_args() {
    local kind mode clients jobs=${JOBS:-2}
    IFS=: read -r kind mode clients <<< "$1"
    WORKLOAD_ARGS=(-n -c "$clients" -j $(( clients < jobs ? clients : jobs )) -M "$mode")
    case "$kind" in
        select)  WORKLOAD_ARGS+=(-S) ;;
        connect) WORKLOAD_ARGS+=(-S -C) ;;
        tpcb)    ;;
        *)       die "bad workload $1" ;;
    esac
}

# utime and stime of a process, in clock ticks (all threads): "<user> <system>" ("0 0" when gone).
proc_cpu_split() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || { echo "0 0"; return 0; }
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${12} ${13}"
}

# VmRSS of a process in KiB (0 when it is gone).
proc_rss_kib() {
    local rss
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null) || true
    echo "${rss:-0}"
}

# Stops everything that was started, by PID, and removes temp dirs. Idempotent.
cleanup_all() {
    local rc=$? p d
    [ "$_OLLY_CLEANED" = 1 ] && return 0
    _OLLY_CLEANED=1
    set +e
    for p in "${_OLLY_BG_PIDS[@]}"; do _stop_pid "$p" TERM 5; done
    pooler_down
    pg_down
    for d in "${_OLLY_TMPDIRS[@]}"; do
        if [ "$KEEP_TMP" = 1 ]; then log "keeping $d"; else rm -rf -- "$d"; fi
    done
    return "$rc"
}

# Installs the trap: cleanup on normal exit, errors (set -e), Ctrl-C, SIGTERM and SIGHUP.
install_cleanup_trap() {
    trap cleanup_all EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM HUP
}
