#!/usr/bin/env bash
# Load-independent cost per transaction, ollyscale-pooler vs PgBouncer, same ini, same pgbench.
#
# Wall-clock CPU per transaction swings with whatever else runs on the machine; these counts do
# not (or barely), so a change can be judged on a busy machine:
#   * syscalls per transaction, by kind (`perf stat` on the kernel's syscall tracepoints,
#     attached to the running pooler: no slowdown, so the batching is the real one);
#   * userland instructions per transaction (callgrind's Ir; the pooler runs under valgrind);
#   * malloc calls per transaction (malloc + calloc + realloc + aligned allocations, from the
#     same callgrind profile's call counts).
# Each figure is a difference of two windows, pgbench -t N and -t 3N on warm pools, divided by
# the difference in transactions: pgbench's own connects and disconnects, the pool's first
# server logins and the start-up cost cancel out (with -C each transaction is a login anyway).
#
#   bash benches/counts.sh
#   WORKLOADS="select:simple:50 connect:simple:20" TOOLS=syscalls bash benches/counts.sh
#
# Environment (defaults in brackets):
#   POOLER_BIN [target/release/ollyscale-pooler]   PGBOUNCER_BIN [/usr/sbin/pgbouncer]
#   TARGETS [ollyscale pgbouncer]   POOL_SIZE [20]   SCALE [10]   JOBS [2]
#   WORKLOADS  KIND:MODE:CLIENTS as in pgbench_compare.sh
#              [select:simple:50 select:extended:50 select:prepared:50 tpcb:simple:20
#               connect:simple:20 select:simple:500]
#   TOOLS [syscalls callgrind]   which counts to take
#   SC_XACTS [10000]  transactions in the syscall window's difference (rounded to the clients)
#   CG_XACTS [1000]   the same for the callgrind window (valgrind runs the pooler ~50x slower)
#   RESULTS_DIR [<repo>/target/bench]   KEEP_TMP [0]
# Needs perf (linux-perf) with tracepoint access (root or perf_event_paranoid <= -1) and valgrind.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
JOBS=${JOBS:-2}
WORKLOADS=${WORKLOADS:-select:simple:50 select:extended:50 select:prepared:50 tpcb:simple:20 connect:simple:20 select:simple:500}
TARGETS=${TARGETS:-ollyscale pgbouncer}
TOOLS=${TOOLS:-syscalls callgrind}
SC_XACTS=${SC_XACTS:-10000}
CG_XACTS=${CG_XACTS:-1000}
RESULTS_DIR=${RESULTS_DIR:-$REPO/target/bench}
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
POOLER_BIN=${POOLER_BIN:-$REPO/target/release/ollyscale-pooler}

# The syscalls worth telling apart; the rest is summed as "other".
SYSCALLS="recvfrom sendto read write readv writev epoll_wait epoll_pwait epoll_ctl futex accept4 close
socket connect setsockopt getsockopt getsockname shutdown clock_gettime mmap munmap madvise brk getrandom"

want() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; }
[ -x "$POOLER_BIN" ] || die "POOLER_BIN=$POOLER_BIN missing: cargo build --release"
want syscalls "$TOOLS" && { command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"; }
want callgrind "$TOOLS" && { command -v valgrind >/dev/null || die "valgrind missing"; }
ensure_packages postgresql postgresql-contrib
BIN=$(pg_bindir)
export PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=60
# A full pool before each window (see warm_up), in both poolers alike.
POOLER_INI_EXTRA="min_pool_size = $POOL_SIZE${POOLER_INI_EXTRA:+
$POOLER_INI_EXTRA}"
raise_nofile 8192
install_cleanup_trap

STAMP=$(date +%Y%m%d-%H%M%S)
OUT=$RESULTS_DIR/counts-$STAMP
mkdir -p "$OUT"
CSV=$OUT/counts.csv
echo "workload,target,tool,xacts,metric,per_xact" > "$CSV"

make_tmpdir PGD pg
free_port PGP
pg_up "$PGD" "$PGP"
"$BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGP" -U "$BENCH_USER" "$BENCH_DB" > "$OUT/init.log" 2>&1 \
    || { cat "$OUT/init.log"; die "pgbench -i failed"; }

binary_of() { if [ "$1" = pgbouncer ]; then echo "$PGBOUNCER_BIN"; else echo "$POOLER_BIN"; fi; }

# run_pgbench <port> <workload> <per-client transactions> <log>: prints the transactions done.
run_pgbench() {
    workload_args "$2"
    # A pooler may not support a mode (PgBouncer 1.18 and -M prepared): the caller records it.
    "$BIN/pgbench" "${WORKLOAD_ARGS[@]}" -t "$3" -h 127.0.0.1 -p "$1" -U "$BENCH_USER" "$BENCH_DB" > "$4" 2>&1 \
        || { warn "pgbench failed: $(grep -m1 -iE 'error|fatal' "$4" || true) ($4)"; return 1; }
    awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$4"
}

# Per-client transactions so that the two windows differ by about <total> transactions.
per_client() { local c=${1##*:} t; t=$(( $2 / (2 * c) )); echo $(( t < 1 ? 1 : t )); }

# A fresh pooler in its own dir; $1 = target, $2 = wrapper (empty, or a valgrind launcher).
start_pooler() {
    local t=$1 wrapper=$2 dir port bin
    make_tmpdir dir "counts-$t"
    free_port port
    ini=$(write_pooler_ini "$dir" "$port" "$PGP" "$POOL_SIZE")
    bin=$(binary_of "$t")
    if [ -n "$wrapper" ]; then
        cat > "$dir/launch.sh" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$dir/cg.out --compress-strings=no -q \
    "$bin" "\$@"
EOF
        chmod 755 "$dir/launch.sh"
        is_root && chown "$PG_OS_USER:" "$dir/launch.sh"
        bin=$dir/launch.sh
    fi
    pooler_up "$bin" "$ini" "$t" || die "$t did not start"
    P_DIR=$dir P_PORT=$port P_PID=$POOLER_PID
}

# The servers of the bench pool, from SHOW POOLS (the same columns in both poolers).
pool_servers() {
    "$BIN/psql" -X -q -A -F, -P footer=off -h 127.0.0.1 -p "$1" -U "$BENCH_USER" -d pgbouncer -c 'SHOW POOLS' 2>/dev/null \
        | awk -F, -v db="$BENCH_DB" '
            NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
            $col["database"] == db { n += $col["sv_active"] + $col["sv_idle"] + $col["sv_used"] + $col["sv_tested"]
                                     l += $col["sv_login"] }
            END { print (l > 0 ? -1 : n + 0) }'
}

# Fills the pool before a window: a server login (a SCRAM exchange, ~25M instructions) inside
# a window would swamp the per-transaction figures. PgBouncer grows a pool only while clients
# queue, one server at a time (and min_pool_size only while clients are connected), so the
# warm-up is a select load of twice the pool's clients, repeated until SHOW POOLS shows the
# pool full; then the workload itself once, for its own first-use costs.
warm_up() {  # warm_up <workload> <tag>
    local i
    for i in $(seq 1 60); do
        [ "$(pool_servers "$P_PORT")" = "$POOL_SIZE" ] && break
        "$BIN/pgbench" -n -S -c $(( 2 * POOL_SIZE )) -j "$JOBS" -T 1 -h 127.0.0.1 -p "$P_PORT" \
            -U "$BENCH_USER" "$BENCH_DB" > "$OUT/$2-fill.pgbench" 2>&1 || true
    done
    [ "$(pool_servers "$P_PORT")" = "$POOL_SIZE" ] || die "the pool of $P_PORT did not reach $POOL_SIZE servers"
    run_pgbench "$P_PORT" "$1" 2 "$OUT/$2-warm.pgbench" > /dev/null
}

failed() {  # failed <workload> <target> <tool>: the pooler could not run it
    record "$1" "$2" "$3" 0 failed NA
    pooler_down "$P_PID"
}

record() { echo "$1,$2,$3,$4,$5,$6" >> "$CSV"; }

# ---- syscalls: perf stat on the tracepoints, attached to the live process ---------------------
syscall_events() {
    local s ev="raw_syscalls:sys_enter"
    for s in $SYSCALLS; do
        [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$s" ] && ev+=",syscalls:sys_enter_$s"
    done
    echo "$ev"
}

# perf_window <pid> <port> <workload> <per-client t> <tag>: leaves counts in $OUT/<tag>.perf
perf_window() {
    local log=$OUT/$5.pgbench x ctl ack
    # Counts the pooler's threads until SIGINT, sent once pgbench is done. perf starts with its
    # events disabled and acknowledges the `enable`: a fixed sleep was sometimes too short for it
    # to attach every tracepoint, and a window then held only the first event's count.
    rm -f "$OUT/$5.ctl" "$OUT/$5.ack"
    mkfifo "$OUT/$5.ctl" "$OUT/$5.ack"
    perf stat -D -1 --control "fifo:$OUT/$5.ctl,$OUT/$5.ack" -x, -e "$(syscall_events)" \
        -p "$1" -o "$OUT/$5.perf" > /dev/null 2>&1 &
    local perf_pid=$!
    exec {ctl}>"$OUT/$5.ctl" {ack}<"$OUT/$5.ack"
    echo enable >&"$ctl"
    read -r -t 30 -u "$ack" _ || die "perf stat did not acknowledge enable ($5)"
    local rc=0
    x=$(run_pgbench "$2" "$3" "$4" "$log") || rc=1
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    exec {ctl}>&- {ack}<&-
    rm -f "$OUT/$5.ctl" "$OUT/$5.ack"
    [ "$(grep -c ',syscalls:\|,raw_syscalls:' "$OUT/$5.perf")" -eq "$(syscall_events | tr , '\n' | wc -l)" ] \
        || die "perf stat missed events in $OUT/$5.perf"
    echo "$x"
    return "$rc"
}

perf_count() {  # perf_count <file> <event>
    awk -F, -v e="$2" '$3 == e { print ($1 ~ /^[0-9]+$/) ? $1 : 0; f = 1 } END { if (!f) print 0 }' "$1"
}

syscall_counts() {  # <target> <workload>
    local t=$1 w=$2 n xa xb tag s a b total=0 named=0 v
    start_pooler "$t" ""
    n=$(per_client "$w" "$SC_XACTS")
    tag="sc-$t-${w//:/_}"
    warm_up "$w" "$tag" || { failed "$w" "$t" syscalls; return 0; }
    xa=$(perf_window "$P_PID" "$P_PORT" "$w" "$n" "$tag-a") || { failed "$w" "$t" syscalls; return 0; }
    xb=$(perf_window "$P_PID" "$P_PORT" "$w" $(( 3 * n )) "$tag-b") || { failed "$w" "$t" syscalls; return 0; }
    pooler_down "$P_PID"
    local dx=$(( xb - xa ))
    for s in raw $SYSCALLS; do
        if [ "$s" = raw ]; then ev=raw_syscalls:sys_enter; else ev=syscalls:sys_enter_$s; fi
        a=$(perf_count "$OUT/$tag-a.perf" "$ev"); b=$(perf_count "$OUT/$tag-b.perf" "$ev")
        v=$(awk -v a="$a" -v b="$b" -v d="$dx" 'BEGIN { printf "%.3f", (b - a) / d }')
        if [ "$s" = raw ]; then total=$v; record "$w" "$t" syscalls "$dx" all "$v"; continue; fi
        awk -v v="$v" 'BEGIN { exit !(v >= 0.0005 || v <= -0.0005) }' && record "$w" "$t" syscalls "$dx" "$s" "$v"
        named=$(awk -v a="$named" -v v="$v" 'BEGIN { print a + v }')
    done
    record "$w" "$t" syscalls "$dx" other "$(awk -v a="$total" -v b="$named" 'BEGIN { printf "%.3f", a - b }')"
}

# ---- instructions and mallocs: callgrind, zeroed and dumped around each window -----------------
cg_sum() {  # cg_sum <dump>: "<Ir> <malloc calls>"
    awk '
        /^(summary|totals):/ { ir = $2 }
        /^cfn=/ { f = $0; sub(/^cfn=(\([0-9]+\) )?/, "", f)
                  alloc = (f ~ /^(malloc|calloc|realloc|aligned_alloc|posix_memalign|memalign)$/) }
        /^fn=/ { alloc = 0 }
        /^calls=/ && alloc { split($1, c, "="); n += c[2]; alloc = 0 }
        END { printf "%d %d\n", ir, n }' "$1"
}

# callgrind_control talks to valgrind through FIFOs named after the user, so it runs as the
# user the pooler runs as (pooler_up switches to PG_OS_USER when we are root).
cg_control() {  # cg_control <option> <pid>
    if is_root; then
        env -u USER -u LOGNAME setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- \
            callgrind_control "$1" "$2"
    else
        callgrind_control "$1" "$2"
    fi > "$OUT/cg_control.log" 2>&1 || { cat "$OUT/cg_control.log" >&2; die "callgrind_control $1 failed"; }
}

# One pooler under callgrind; counters zeroed after the warm-up, dumped after each window.
callgrind_counts() {  # <target> <workload>
    local t=$1 w=$2 n tag xa xb ira ma irb mb dumps
    n=$(per_client "$w" "$CG_XACTS")
    tag="cg-$t-${w//:/_}"
    start_pooler "$t" valgrind
    warm_up "$w" "$tag" || { failed "$w" "$t" callgrind; return 0; }
    cg_control -z "$P_PID"
    xa=$(run_pgbench "$P_PORT" "$w" "$n" "$OUT/$tag-a.pgbench") || { failed "$w" "$t" callgrind; return 0; }
    cg_control -d "$P_PID"
    xb=$(run_pgbench "$P_PORT" "$w" $(( 3 * n )) "$OUT/$tag-b.pgbench") || { failed "$w" "$t" callgrind; return 0; }
    cg_control -d "$P_PID"
    pooler_down "$P_PID"
    mapfile -t dumps < <(ls -v "$P_DIR"/cg.out.* 2>/dev/null | grep -E '\.[0-9]+$' || true)
    [ "${#dumps[@]}" -ge 2 ] || die "callgrind dumps missing in $P_DIR"
    cp "${dumps[0]}" "$OUT/$tag-a.cg"; cp "${dumps[1]}" "$OUT/$tag-b.cg"
    read -r ira ma < <(cg_sum "${dumps[0]}")
    read -r irb mb < <(cg_sum "${dumps[1]}")
    local dx=$(( xb - xa ))
    record "$w" "$t" callgrind "$dx" instructions "$(awk -v a="$ira" -v b="$irb" -v d="$dx" 'BEGIN { printf "%.0f", (b - a) / d }')"
    record "$w" "$t" callgrind "$dx" mallocs "$(awk -v a="$ma" -v b="$mb" -v d="$dx" 'BEGIN { printf "%.2f", (b - a) / d }')"
}

for w in $WORKLOADS; do
    for t in $TARGETS; do
        log "$w through $t"
        want syscalls "$TOOLS" && syscall_counts "$t" "$w"
        want callgrind "$TOOLS" && callgrind_counts "$t" "$w"
    done
done

echo
echo "# per transaction, $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?') vs $("$PGBOUNCER_BIN" --version 2>/dev/null | head -1); $CSV"
awk -F, -v targets="$TARGETS" '
    NR == 1 { next }
    { key = $1 SUBSEP $5; v[key, $2] = $6; if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
    END {
        nt = split(targets, T, " ")
        printf "%-22s %-14s", "workload", "metric"; for (j = 1; j <= nt; j++) printf " %12s", T[j]
        if (nt == 2) printf " %8s", "ratio"; printf "\n"
        for (i = 1; i <= n; i++) {
            split(order[i], p, SUBSEP); printf "%-22s %-14s", p[1], p[2]
            for (j = 1; j <= nt; j++) printf " %12s", ((order[i], T[j]) in v) ? v[order[i], T[j]] : "-"
            a = v[order[i], T[1]]; b = v[order[i], T[2]]
            if (nt == 2) printf " %8s", (b + 0 != 0) ? sprintf("%.2f", a / b) : "-"
            printf "\n"
        }
    }' "$CSV" | tee "$OUT/summary.txt"
