#!/usr/bin/env bash
# Where each pooler's CPU goes per transaction: ollyscale-pooler and PgBouncer on the same ini
# under the same pgbench load, sampled by `perf record -e cpu-clock` (a timer, so it works on VMs
# without hardware counters), split into the kernel and user space and their top symbols, each
# in microseconds per transaction (samples x sample period / transactions).
#
#   bash benches/profile.sh
#   WORKLOADS="tpcb:simple:20 connect:simple:20" DURATION=10 bash benches/profile.sh
#
# The sampled window is one pgbench -T DURATION run on a warm pool; CPU per transaction moves
# with the machine's load like any wall-clock figure (see counts.sh for load-independent counts),
# so compare the two poolers of one run, not runs of different days.
#
# Environment (defaults in brackets):
#   POOLER_BIN [target/release/ollyscale-pooler]   PGBOUNCER_BIN [/usr/sbin/pgbouncer]
#   TARGETS [ollyscale pgbouncer]   POOL_SIZE [20]   SCALE [10]   JOBS [2]   DURATION [8]
#   FREQ [4999] samples per second   TOP [12] symbols listed per side
#   WORKLOADS  KIND:MODE:CLIENTS as in pgbench_compare.sh [tpcb:simple:20 connect:simple:20]
#   RESULTS_DIR [<repo>/target/bench]   KEEP_TMP [0]
# Needs perf (linux-perf) and perf_event_paranoid <= 1 or root.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
JOBS=${JOBS:-2}
DURATION=${DURATION:-8}
FREQ=${FREQ:-4999}
TOP=${TOP:-12}
WORKLOADS=${WORKLOADS:-tpcb:simple:20 connect:simple:20}
TARGETS=${TARGETS:-ollyscale pgbouncer}
RESULTS_DIR=${RESULTS_DIR:-$REPO/target/bench}
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
POOLER_BIN=${POOLER_BIN:-$REPO/target/release/ollyscale-pooler}

[ -x "$POOLER_BIN" ] || die "POOLER_BIN=$POOLER_BIN missing: cargo build --release"
command -v perf >/dev/null || die "perf missing (apt-get install linux-perf)"
ensure_packages postgresql postgresql-contrib
BIN=$(pg_bindir)
export PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=60
raise_nofile 8192
install_cleanup_trap

OUT=$RESULTS_DIR/profile-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
make_tmpdir PGD pg
free_port PGP
pg_up "$PGD" "$PGP"
"$BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGP" -U "$BENCH_USER" "$BENCH_DB" > "$OUT/init.log" 2>&1 \
    || { cat "$OUT/init.log"; die "pgbench -i failed"; }

# per_xact <perf.data> <xacts> <sort key> <filter awk regex> <top>: "<us/xact> <name>" lines
per_xact() {
    perf report -i "$1" --no-children --sort "$3" -q -g none --stdio -n 2>/dev/null \
        | awk -v x="$2" -v f="$FREQ" -v re="$4" -v top="$5" '
            $2 ~ /^[0-9]+$/ && $0 ~ re {
                name = $0; sub(/^ *[0-9.]+% +[0-9]+ +/, "", name)
                if (n++ < top) printf "%8.2f  %s\n", $2 * 1e6 / f / x, name
            }'
}

for w in $WORKLOADS; do
    workload_args "$w"
    for t in $TARGETS; do
        bin=$POOLER_BIN; [ "$t" = pgbouncer ] && bin=$PGBOUNCER_BIN
        make_tmpdir dir "profile-$t"
        free_port port
        ini=$(write_pooler_ini "$dir" "$port" "$PGP" "$POOL_SIZE")
        pooler_up "$bin" "$ini" "$t" || die "$t did not start"
        pid=$POOLER_PID
        # Warm: the pool's server logins stay out of the window.
        "$BIN/pgbench" "${WORKLOAD_ARGS[@]}" -T 2 -h 127.0.0.1 -p "$port" -U "$BENCH_USER" "$BENCH_DB" > /dev/null 2>&1 || true
        tag="$t-${w//:/_}"
        perf record -F "$FREQ" -e cpu-clock -p "$pid" -o "$OUT/$tag.data" > "$OUT/$tag.perf.log" 2>&1 &
        perf_pid=$!
        sleep 1
        "$BIN/pgbench" "${WORKLOAD_ARGS[@]}" -T "$DURATION" -h 127.0.0.1 -p "$port" -U "$BENCH_USER" "$BENCH_DB" > "$OUT/$tag.pgbench" 2>&1 \
            || die "pgbench through $t failed: $(grep -m1 -iE 'error|fatal' "$OUT/$tag.pgbench" || true)"
        kill -INT "$perf_pid"; wait "$perf_pid" || true
        pooler_down "$pid"
        x=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] + 0 }' "$OUT/$tag.pgbench")
        {
            echo "== $w through $t: $x transactions in ${DURATION}s; CPU in us per transaction"
            per_xact "$OUT/$tag.data" "$x" dso . 1000 | awk '
                { us = $1; $1 = ""; d = substr($0, 2)
                  if (d == "[kernel.kallsyms]") k += us; else u += us
                  line[++n] = sprintf("    %8.2f  %s", us, d) }
                END { printf "  total %.2f = kernel %.2f + user %.2f\n  by object:\n", k + u, k, u
                      for (i = 1; i <= n; i++) print line[i] }'
            echo "  top user-space symbols:"
            per_xact "$OUT/$tag.data" "$x" dso,sym '\[\.\]' "$TOP" | sed 's/^/  /'
            echo "  top kernel symbols:"
            per_xact "$OUT/$tag.data" "$x" sym '\[k\]' "$TOP" | sed 's/^/  /'
            echo
        } | tee -a "$OUT/summary.txt"
    done
done
log "profiles and summary in $OUT"
