#!/usr/bin/env bash
# ollyscale-pooler vs PgBouncer vs direct PostgreSQL, same pgbench workloads, interleaved.
# See benches/README.md. Typical use (from any directory):
#
#   bash benches/pgbench_compare.sh
#   DURATION=3 ROUNDS=1 WORKLOADS="select:simple:10 tpcb:simple:20" bash benches/pgbench_compare.sh
#   POOLER_BIN=/usr/sbin/pgbouncer DURATION=3 ROUNDS=1 bash benches/pgbench_compare.sh   # plumbing test
#
# Environment (defaults in brackets):
#   POOLER_BIN     ollyscale-pooler binary [<repo>/target/release/ollyscale-pooler, built if missing]
#   PGBOUNCER_BIN  PgBouncer binary [/usr/sbin/pgbouncer]
#   DURATION [10]  ROUNDS [2]  POOL_SIZE [20]  SCALE [10]  JOBS [2]
#   WORKLOADS      space-separated KIND:MODE:CLIENTS, KIND = select (-S) | tpcb (built-in TPC-B-like)
#                  | connect (-S -C, new connection per transaction), MODE = simple | extended | prepared
#                  [select:simple:{1,10,50,200} select:extended:{1,10,50,200} tpcb:simple:20 connect:simple:10]
#   TARGETS        which of ollyscale pgbouncer direct baseline to run, in interleaving order
#                  [ollyscale pgbouncer direct]
#   BASELINE_BIN   for the target `baseline`: another ollyscale-pooler binary (e.g. built from
#                  main) measured the same way, for before/after ratios in one run
#   IDLE_CLIENTS   idle authenticated clients for the memory test, 0 = skip [2000]
#   RESULTS_DIR    CSVs and raw pgbench logs [<repo>/target/bench]
#   TLS [off]      off | client | server | both. client: both poolers get client_tls_sslmode = require
#                  with a self-signed certificate (made at run time) and pgbench connects to them
#                  with PGSSLMODE=require; server: PostgreSQL runs with ssl=on (PG_SSL=1) and both
#                  poolers get server_tls_sslmode = require; both: the two together, the Zalando
#                  template's shape, and `direct` then uses TLS too
#   PG_SSL [0]     1: PostgreSQL with ssl=on and TLS-only TCP logins (set by TLS=server|both); on
#                  its own, the poolers keep their default server_tls_sslmode = prefer, i.e. TLS
#   PG_PASSWORD_ENCRYPTION, POOLER_INI_EXTRA, KEEP_TMP: see scripts/lib.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"

DEFAULT_WORKLOADS="select:simple:1 select:simple:10 select:simple:50 select:simple:200 \
select:extended:1 select:extended:10 select:extended:50 select:extended:200 \
tpcb:simple:20 connect:simple:10"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-2}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-10}
JOBS=${JOBS:-2}
WORKLOADS=${WORKLOADS:-$DEFAULT_WORKLOADS}
TARGETS=${TARGETS:-ollyscale pgbouncer direct}
IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
RESULTS_DIR=${RESULTS_DIR:-$REPO/target/bench}
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
POOLER_BIN_DEFAULT=$REPO/target/release/ollyscale-pooler
POOLER_BIN=${POOLER_BIN:-$POOLER_BIN_DEFAULT}
BASELINE_BIN=${BASELINE_BIN:-}
TLS=${TLS:-off}
case "$TLS" in
    off|client) ;;
    server|both) PG_SSL=1 ;;   # server_tls_sslmode = require needs a server with ssl on
    *) die "TLS=$TLS: off, client, server or both" ;;
esac
POOLER_TLS=$TLS
# sslmode of pgbench/psql towards the poolers and towards PostgreSQL itself (`direct`); set per
# command, never exported, so the Unix-socket housekeeping stays plain.
POOLER_SSLMODE=disable
case "$TLS" in client|both) POOLER_SSLMODE=require ;; esac
DIRECT_SSLMODE=disable
[ "$PG_SSL" = 1 ] && DIRECT_SSLMODE=require
sslmode_for() { if [ "$1" = direct ]; then echo "$DIRECT_SSLMODE"; else echo "$POOLER_SSLMODE"; fi; }

# ---- the exact command line -----------------------------------------------------------------
cmdline="cd $(printf '%q' "$PWD") &&"
for v in POOLER_BIN BASELINE_BIN PGBOUNCER_BIN DURATION ROUNDS POOL_SIZE SCALE JOBS WORKLOADS TARGETS IDLE_CLIENTS \
         RESULTS_DIR TLS PG_SSL PG_PASSWORD_ENCRYPTION POOLER_INI_EXTRA; do
    cmdline+=" $v=$(printf '%q' "${!v}")"
done
cmdline+=" bash $(printf '%q' "$0")"
for a in "$@"; do cmdline+=" $(printf '%q' "$a")"; done
echo "# command: $cmdline"
echo "# host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo); $(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The machine may be shared: the load before and after the runs says how far to trust the numbers.
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "# load average at start: $LOAD_START"

# ---- checks ---------------------------------------------------------------------------------------
for w in $WORKLOADS; do
    IFS=: read -r kind mode clients <<< "$w"
    case "$kind" in select|tpcb|connect) ;; *) die "workload $w: kind must be select, tpcb or connect" ;; esac
    case "$mode" in simple|extended|prepared) ;; *) die "workload $w: mode must be simple, extended or prepared" ;; esac
    if ! [[ "$clients" =~ ^[0-9]+$ ]] || [ "$clients" -eq 0 ]; then die "workload $w: bad client count"; fi
done
for t in $TARGETS; do
    case "$t" in ollyscale|pgbouncer|direct|baseline) ;; *) die "unknown target $t (ollyscale, pgbouncer, direct, baseline)" ;; esac
done
want_target() { case " $TARGETS " in *" $1 "*) return 0 ;; esac; return 1; }

if want_target ollyscale && [ ! -x "$POOLER_BIN" ]; then
    if [ "$POOLER_BIN" = "$POOLER_BIN_DEFAULT" ]; then
        command -v cargo >/dev/null 2>&1 || die "$POOLER_BIN is missing and cargo is not installed"
        log "building ollyscale-pooler: cargo build --release"
        (cd "$REPO" && cargo build --release) || die "cargo build --release failed"
    fi
    [ -x "$POOLER_BIN" ] || die "POOLER_BIN=$POOLER_BIN not found or not executable"
fi
if want_target baseline && [ ! -x "$BASELINE_BIN" ]; then
    die "target baseline needs BASELINE_BIN (an ollyscale-pooler binary)"
fi
if want_target pgbouncer && [ ! -x "$PGBOUNCER_BIN" ]; then
    [ "$PGBOUNCER_BIN" = /usr/sbin/pgbouncer ] && ensure_packages pgbouncer
    [ -x "$PGBOUNCER_BIN" ] || die "PGBOUNCER_BIN=$PGBOUNCER_BIN not found (apt-get install pgbouncer)"
fi
ensure_packages postgresql postgresql-contrib
command -v python3 >/dev/null 2>&1 || ensure_packages python3
BIN=$(pg_bindir)
CLK_TCK=$(getconf CLK_TCK)
export PGPASSWORD=$BENCH_PASSWORD PGCONNECT_TIMEOUT=10

# Poolers must hold IDLE_CLIENTS client sockets (+ pgbench, servers): raise the fd limit first.
MAX_CLIENT_CONN=$(( IDLE_CLIENTS + 500 > 2000 ? IDLE_CLIENTS + 500 : 2000 ))
raise_nofile $(( MAX_CLIENT_CONN * 2 + 256 ))
log "open files limit: $(ulimit -Sn); max_client_conn = $MAX_CLIENT_CONN"

install_cleanup_trap

STAMP=$(date +%Y%m%d-%H%M%S)
mkdir -p "$RESULTS_DIR/raw-$STAMP"
RAW=$RESULTS_DIR/raw-$STAMP
CSV=$RESULTS_DIR/pgbench-$STAMP.csv
MEMCSV=$RESULTS_DIR/memory-$STAMP.csv
printf '%s\n# load average at start: %s\n' "$cmdline" "$LOAD_START" > "$RAW/command.txt"
echo "workload,kind,mode,clients,target,round,duration_s,tps,latency_ms,xacts,failed_xacts,pooler_cpu_s,cpu_us_per_xact,status,pooler_user_s,pooler_sys_s" > "$CSV"

# ---- PostgreSQL + poolers --------------------------------------------------------------------
make_tmpdir PGD pg
free_port PGP
pg_up "$PGD" "$PGP"
log "pgbench -i -s $SCALE (directly)"
PGSSLMODE=$DIRECT_SSLMODE "$BIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGP" -U "$BENCH_USER" "$BENCH_DB" > "$RAW/init.log" 2>&1 \
    || { cat "$RAW/init.log"; die "pgbench -i failed"; }

declare -A T_PORT T_PID T_DIR T_BIN T_INI
T_BIN[ollyscale]=$POOLER_BIN
T_BIN[pgbouncer]=$PGBOUNCER_BIN
T_BIN[baseline]=$BASELINE_BIN
T_PORT[direct]=$PGP
T_PID[direct]=""

start_target() {  # start_target <ollyscale|pgbouncer|baseline>
    local t=$1
    pooler_up "${T_BIN[$t]}" "${T_INI[$t]}" "$t" || return 1
    T_PID[$t]=$POOLER_PID
}

for t in ollyscale pgbouncer baseline; do
    want_target "$t" || continue
    make_tmpdir "T_DIR[$t]" "$t"
    free_port "T_PORT[$t]"
    T_INI[$t]=$(write_pooler_ini "${T_DIR[$t]}" "${T_PORT[$t]}" "$PGP" "$POOL_SIZE")
    start_target "$t" || die "$t (${T_BIN[$t]}) did not start"
done
[ "$TLS" = off ] || log "TLS=$TLS: pgbench sslmode $POOLER_SSLMODE to the poolers, $DIRECT_SSLMODE to PostgreSQL (ssl $([ "$PG_SSL" = 1 ] && echo on || echo off))"

# Direct SQL on the server (not through a pooler), for housekeeping between runs.
psql_direct() { PGSSLMODE=disable "$BIN/psql" -X -q -h "$PGD" -p "$PGP" -U "$BENCH_USER" -d "$BENCH_DB" "$@"; }

# Extracts "<tps> <latency_ms> <xacts> <failed>" from a pgbench log (NA when absent).
# pgbench >= 14 prints one "tps = X (without initial connection time)" line; older ones print
# "including" and "excluding connections establishing": take "excluding" then.
parse_pgbench() {
    awk '
        /^tps = / {
            if ($0 ~ /excluding/) { tps_ex = $3 } else if (tps == "") { tps = $3 }
        }
        /^latency average = / { lat = $4 }
        /^number of transactions actually processed:/ { split($0, a, ": "); split(a[2], b, "/"); xacts = b[1] + 0 }
        /^number of failed transactions:/ { split($0, a, ": "); failed = a[2] + 0 }
        END {
            if (tps_ex != "") tps = tps_ex
            printf "%s %s %s %s\n", (tps == "" ? "NA" : tps), (lat == "" ? "NA" : lat),
                   (xacts == "" ? "NA" : xacts), (failed == "" ? 0 : failed)
        }' "$1"
}

# ---- the interleaved runs -----------------------------------------------------------------------
nw=$(wc -w <<< "$WORKLOADS"); nt=$(wc -w <<< "$TARGETS")
total=$(( nw * nt * ROUNDS )); n=0
log "$total pgbench runs of ${DURATION}s (~$(( total * (DURATION + 2) / 60 + 1 )) min), results in $RESULTS_DIR"
printf '\n%-22s %-9s %5s %12s %10s %10s %12s  %s\n' workload target round tps lat_ms xacts cpu_us/xact status

for w in $WORKLOADS; do
    IFS=: read -r kind mode clients <<< "$w"
    workload_args "$w"
    args=("${WORKLOAD_ARGS[@]}" -T "$DURATION")
    for r in $(seq 1 "$ROUNDS"); do
        for t in $TARGETS; do
            n=$((n + 1))
            pid=${T_PID[$t]:-}
            if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
                warn "$t (pid $pid) has died; its log:"
                pooler_show_log "${T_DIR[$t]}" "$t"
                pooler_down "$pid"
                T_PID[$t]=""
                if start_target "$t"; then pid=${T_PID[$t]}; else pid=""; fi
            fi
            logf=$RAW/${kind}-${mode}-c${clients}-${t}-r${r}.log
            if [ "$t" != direct ] && [ -z "$pid" ]; then
                echo "$t is not running" > "$logf"
                echo "$w,$kind,$mode,$clients,$t,$r,$DURATION,NA,NA,NA,NA,NA,NA,down,NA,NA" >> "$CSV"
                printf '%-22s %-9s %5s %12s %10s %10s %12s  %s\n' "$w" "$t" "$r" - - - - down
                continue
            fi
            # What pgbench would do without -n, done directly so it is outside the measurement.
            psql_direct -c 'VACUUM pgbench_branches' -c 'VACUUM pgbench_tellers' \
                -c 'TRUNCATE pgbench_history' >/dev/null 2>&1 || warn "vacuum before the run failed"
            sslmode=$(sslmode_for "$t")
            echo "\$ PGSSLMODE=$sslmode pgbench ${args[*]} -h 127.0.0.1 -p ${T_PORT[$t]} -U $BENCH_USER $BENCH_DB   # $t round $r" > "$logf"
            u0=0 s0=0; [ -n "$pid" ] && read -r u0 s0 < <(proc_cpu_split "$pid")
            rc=0
            PGSSLMODE=$sslmode "$BIN/pgbench" "${args[@]}" -h 127.0.0.1 -p "${T_PORT[$t]}" -U "$BENCH_USER" "$BENCH_DB" >> "$logf" 2>&1 || rc=$?
            u1=0 s1=0; [ -n "$pid" ] && read -r u1 s1 < <(proc_cpu_split "$pid")
            cpu0=$(( u0 + s0 )) cpu1=$(( u1 + s1 ))
            read -r tps lat xacts failed < <(parse_pgbench "$logf")
            status=ok
            [ "$rc" -ne 0 ] && status="pgbench_exit_$rc"
            [ "$tps" = NA ] && status="${status/ok/no_tps}"
            cpu_s=NA; cpu_us=NA; user_s=NA; sys_s=NA
            if [ -n "$pid" ]; then
                cpu_s=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
                user_s=$(awk -v a="$u0" -v b="$u1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
                sys_s=$(awk -v a="$s0" -v b="$s1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')
                if [ "$xacts" != NA ] && [ "$xacts" -gt 0 ]; then
                    cpu_us=$(awk -v c="$cpu_s" -v x="$xacts" 'BEGIN { printf "%.2f", c / x * 1e6 }')
                fi
            fi
            echo "$w,$kind,$mode,$clients,$t,$r,$DURATION,$tps,$lat,$xacts,$failed,$cpu_s,$cpu_us,$status,$user_s,$sys_s" >> "$CSV"
            printf '%-22s %-9s %5s %12s %10s %10s %12s  %s  [%d/%d]\n' "$w" "$t" "$r" "$tps" "$lat" "$xacts" "$cpu_us" "$status" "$n" "$total"
            if [ "$status" != ok ]; then
                grep -v '^\$ ' "$logf" | grep -iE 'error|fatal|abort|fail' | head -n 3 | sed 's/^/      /' || true
            fi
            sleep 1
        done
    done
done

# ---- memory: idle authenticated clients ---------------------------------------------------------------
echo "target,idle_clients,rss_before_kib,rss_with_clients_kib,kib_per_client,status" > "$MEMCSV"
if [ "$IDLE_CLIENTS" -gt 0 ]; then
    for t in ollyscale pgbouncer baseline; do
        want_target "$t" || continue
        log "memory: $IDLE_CLIENTS idle clients through $t (fresh process)"
        [ -n "${T_PID[$t]:-}" ] && pooler_down "${T_PID[$t]}"
        T_PID[$t]=""
        if ! start_target "$t"; then
            echo "$t,$IDLE_CLIENTS,NA,NA,NA,down" >> "$MEMCSV"; continue
        fi
        pid=${T_PID[$t]}
        # One real query first, so the pool and its server connection exist before the baseline.
        PGSSLMODE=$POOLER_SSLMODE "$BIN/psql" -X -q -At -h 127.0.0.1 -p "${T_PORT[$t]}" -U "$BENCH_USER" -d "$BENCH_DB" -c 'SELECT 1' >/dev/null 2>&1 \
            || warn "warm-up query through $t failed"
        sleep 0.5
        before=$(proc_rss_kib "$pid")
        out=$RAW/idle-$t.out
        : > "$out"
        python3 "$REPO/benches/idle_clients.py" --port "${T_PORT[$t]}" -n "$IDLE_CLIENTS" \
            --user "$BENCH_USER" --password "$BENCH_PASSWORD" --dbname "$BENCH_DB" --sslmode "$POOLER_SSLMODE" \
            --hold 300 > "$out" 2>&1 &
        cpid=$!
        register_bg_pid "$cpid"
        status=timeout
        for _ in $(seq 1 600); do
            if grep -q '^READY' "$out"; then status=ok; break; fi
            if grep -q '^FAILED' "$out" || ! kill -0 "$cpid" 2>/dev/null; then status=client_failed; break; fi
            sleep 0.2
        done
        kill -0 "$pid" 2>/dev/null || status=pooler_died
        after=NA; per=NA
        if [ "$status" = ok ]; then
            sleep 1
            after=$(proc_rss_kib "$pid")
            per=$(awk -v a="$before" -v b="$after" -v n="$IDLE_CLIENTS" 'BEGIN { printf "%.2f", (b - a) / n }')
        else
            cat "$out" >&2
            [ "$status" = pooler_died ] && pooler_show_log "${T_DIR[$t]}" "$t"
        fi
        _stop_pid "$cpid" TERM 10
        echo "$t,$IDLE_CLIENTS,$before,$after,$per,$status" >> "$MEMCSV"
        log "memory $t: RSS $before KiB -> $after KiB with $IDLE_CLIENTS idle clients = $per KiB/client ($status)"
    done
fi

# ---- summary tables -------------------------------------------------------------------------------
echo
echo "# command: $cmdline"
echo "# load average at start: $LOAD_START, at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$RAW/command.txt"
[ "$TLS" = off ] || echo "# TLS=$TLS: pgbench sslmode=$POOLER_SSLMODE to the poolers, sslmode=$DIRECT_SSLMODE to PostgreSQL"
echo "# results: $CSV"
[ "$IDLE_CLIENTS" -gt 0 ] && echo "# memory:  $MEMCSV"
echo "# raw pgbench logs: $RAW"
awk -F, -v order="$WORKLOADS" -v targets="$TARGETS" -v rounds="$ROUNDS" '
    NR == 1 { next }
    {
        k = $1 SUBSEP $5
        runs[k]++
        if ($14 == "ok") {
            ok[k]++; tps[k] += $8; lat[k] += $9
            if ($12 != "NA") { cpu[k] += $12; us[k] += $15; sy[k] += $16; xa[k] += $10; hascpu[k] = 1 }
        } else { bad[k] = bad[k] (bad[k] == "" ? "" : " ") $14 }
    }
    function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.3f", a / b) }
    END {
        nw = split(order, W, " "); nt = split(targets, T, " ")
        for (i = 1; i <= nw; i++) {
            w = W[i]
            printf "\n== %s  (%s)\n", w, describe(w)
            printf "  %-10s %12s %11s %16s %15s %7s  %s\n", "target", "TPS(mean)", "lat ms", "pooler CPU us/xact", "user / sys", "rounds", "notes"
            delete mt; delete mc
            for (j = 1; j <= nt; j++) {
                t = T[j]; k = w SUBSEP t
                if (ok[k] > 0) {
                    mt[t] = tps[k] / ok[k]; ml = lat[k] / ok[k]
                    mc[t] = (hascpu[k] && xa[k] > 0) ? cpu[k] / xa[k] * 1e6 : ""
                    printf "  %-10s %12.1f %11.3f %16s %15s %4d/%-2d  %s\n", t, mt[t], ml,
                        (mc[t] == "" ? "-" : sprintf("%.2f", mc[t])),
                        (mc[t] == "" ? "-" : sprintf("%.1f / %.1f", us[k] / xa[k] * 1e6, sy[k] / xa[k] * 1e6)),
                        ok[k], runs[k], bad[k]
                } else {
                    printf "  %-10s %12s %11s %16s %15s %4d/%-2d  %s\n", t, "FAILED", "-", "-", "-", 0, runs[k], bad[k]
                }
            }
            printf "  ratios: ollyscale/pgbouncer TPS %s, ollyscale/pgbouncer CPU per xact %s, ollyscale/direct TPS %s\n",
                ratio(mt["ollyscale"], mt["pgbouncer"]), ratio(mc["ollyscale"], mc["pgbouncer"]),
                ratio(mt["ollyscale"], mt["direct"])
            if ("baseline" in mt)
                printf "  ratios: ollyscale/baseline TPS %s, ollyscale/baseline CPU per xact %s\n",
                    ratio(mt["ollyscale"], mt["baseline"]), ratio(mc["ollyscale"], mc["baseline"])
        }
    }
    function describe(w,   p, s) {
        split(w, p, ":")
        s = (p[1] == "select" ? "pgbench -S" : p[1] == "connect" ? "pgbench -S -C" : "pgbench TPC-B-like")
        return s " -M " p[2] " -c " p[3]
    }' "$CSV"

if [ "$IDLE_CLIENTS" -gt 0 ]; then
    echo
    echo "== memory: $IDLE_CLIENTS idle authenticated clients (VmRSS delta / clients)"
    awk -F, '
        NR == 1 { next }
        { printf "  %-10s RSS before %8s KiB, with clients %8s KiB -> %8s KiB/client  %s\n", $1, $3, $4, $5, ($6 == "ok" ? "" : $6)
          if ($6 == "ok") per[$1] = $5 }
        END {
            if (("ollyscale" in per) && ("pgbouncer" in per) && per["pgbouncer"] > 0)
                printf "  ratio ollyscale/pgbouncer KiB per idle client: %.3f\n", per["ollyscale"] / per["pgbouncer"]
            else print "  ratio ollyscale/pgbouncer KiB per idle client: -"
            if (("ollyscale" in per) && ("baseline" in per) && per["baseline"] > 0)
                printf "  ratio ollyscale/baseline KiB per idle client: %.3f\n", per["ollyscale"] / per["baseline"]
        }' "$MEMCSV"
fi
