#!/usr/bin/env bash
# Quickstart: build ollyscale-pooler, put it in front of a throwaway PostgreSQL and push
# pgbench through it, then show the PgBouncer-style admin console. Cleans up after itself.
#
#   bash scripts/quickstart.sh
#
# Works on a fresh Debian 12 machine as root or as a sudo user: installs postgresql,
# postgresql-contrib (and build-essential when there is no C compiler). Rust is not
# installed for you: `cargo` must be on PATH.
#
# Environment:
#   POOLER_BIN=/path/to/binary   run this instead of building (e.g. /usr/sbin/pgbouncer)
#   DURATION=10                  seconds per pgbench run
#   CLIENTS=20  POOL_SIZE=10  SCALE=2
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-20}
POOL_SIZE=${POOL_SIZE:-10}
SCALE=${SCALE:-2}

# --- 1. packages and the binary --------------------------------------------------------
pkgs=(postgresql postgresql-contrib)
command -v cc >/dev/null 2>&1 || pkgs+=(build-essential)
ensure_packages "${pkgs[@]}"

if [ -z "${POOLER_BIN:-}" ]; then
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'EOF'
cargo (Rust) is not installed, and this script does not install it. Get it with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
    . "$HOME/.cargo/env"
or Debian's packages (apt-get install cargo) if they are new enough for Cargo.toml's
rust-version; then run this script again.
EOF
        exit 1
    fi
    log "cargo build --release"
    (cd "$REPO" && cargo build --release)
    POOLER_BIN=$REPO/target/release/ollyscale-pooler
fi
[ -x "$POOLER_BIN" ] || die "pooler binary $POOLER_BIN not found or not executable"

BIN=$(pg_bindir)
export PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=10
install_cleanup_trap

# --- 2. PostgreSQL and the pooler -------------------------------------------------------
make_tmpdir PGD pg
make_tmpdir POOLD pooler
free_port PGP
free_port POOLP
pg_up "$PGD" "$PGP"
INI=$(write_pooler_ini "$POOLD" "$POOLP" "$PGP" "$POOL_SIZE")
pooler_up "$POOLER_BIN" "$INI" pooler || die "the pooler did not start (see its log above)"

cat <<EOF

=== $(basename "$POOLER_BIN") (pid $POOLER_PID) on 127.0.0.1:$POOLP -> PostgreSQL on 127.0.0.1:$PGP
    transaction pooling, pool size $POOL_SIZE; the ini it reads:
EOF
sed 's/^/    | /' "$INI"

PGB=("$BIN/pgbench" -h 127.0.0.1 -p "$POOLP" -U "$BENCH_USER")

# Prints pgbench's summary lines (or all of its output when it failed).
run_pgbench() {
    local title=$1 out rc=0
    shift
    printf '\n=== %s\n$ pgbench %s\n' "$title" "$*"
    out=$("${PGB[@]}" "$@" "$BENCH_DB" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ]; then
        printf '%s\n' "$out"
        warn "pgbench exited with status $rc"
        return 0
    fi
    printf '%s\n' "$out" | grep -E '^(transaction type|scaling factor|query mode|number of (clients|threads|transactions actually processed|failed)|latency average|initial connection time|tps =)' || printf '%s\n' "$out"
}

# --- 3. pgbench through the pooler ------------------------------------------------------
printf '\n=== pgbench -i -s %s (through the pooler)\n' "$SCALE"
if ! "${PGB[@]}" -i -s "$SCALE" -q "$BENCH_DB" > "$POOLD/pgbench-init.log" 2>&1; then
    cat "$POOLD/pgbench-init.log"
    pooler_show_log "$POOLD" pooler
    die "pgbench -i through the pooler failed"
fi
tail -n 1 "$POOLD/pgbench-init.log"

J=2; [ "$CLIENTS" -lt 2 ] && J=1
run_pgbench "read-only (-S), simple protocol" -c "$CLIENTS" -j "$J" -T "$DURATION" -S
run_pgbench "read-only (-S), extended protocol" -c "$CLIENTS" -j "$J" -T "$DURATION" -S -M extended
run_pgbench "TPC-B-like read/write" -c "$CLIENTS" -j "$J" -T "$DURATION"

# --- 4. the admin console ---------------------------------------------------------------
printf '\n=== admin console\n$ psql -h 127.0.0.1 -p %s -U %s pgbouncer -c '"'"'SHOW POOLS'"'"' -c '"'"'SHOW STATS'"'"' -c '"'"'SHOW SERVERS'"'"'\n' "$POOLP" "$BENCH_USER"
rc=0
"$BIN/psql" -X -h 127.0.0.1 -p "$POOLP" -U "$BENCH_USER" pgbouncer \
    -c 'SHOW POOLS' -c 'SHOW STATS' -c 'SHOW SERVERS' 2>&1 || rc=$?
[ "$rc" -eq 0 ] || warn "the admin console answered with an error (psql exit status $rc); continuing"

if ! kill -0 "$POOLER_PID" 2>/dev/null; then
    pooler_show_log "$POOLD" pooler
    die "the pooler died during the quickstart"
fi
printf '\n=== done: cleaning up (pooler, PostgreSQL, %s, %s)\n' "$PGD" "$POOLD"
