#!/usr/bin/env bash
# End-to-end run of issue 11's container topology (docker-compose.yml here): builds the images
# (images.sh, cached), brings up etcd + two Patroni nodes + the two pooler replicas, and runs the
# application load (tests/clients/rolling_load.py: SQLAlchemy async on asyncpg, pool_pre_ping) in a
# container that reaches the poolers through an emulated Kubernetes Service (kube-proxy's per-
# connection DNAT from a ClusterIP to the ready endpoints; docker-compose.yml says how), as
# ollyScale reaches `ollyscale-db-pooler`. Then:
#
#   phase 1, rolling restart: each pooler replica in turn goes through what a Deployment rollout
#            does to one pod: out of the Service's endpoints, the preStop delay, SIGTERM (drain)
#            with the rest of terminationGracePeriodSeconds before a SIGKILL, start, /readyz 200,
#            back into the endpoints (the delay and grace period are read from the rendered
#            deploy/overlays/ollyscale, so the run follows the manifests);
#   phase 2, HA (only when the pooler routes `cluster=` databases): a Patroni switchover, then the
#            leader cut off the network (`docker network disconnect`) until Patroni elects the
#            other node, then reconnected (it rejoins as a replica).
#
# After each phase it prints what the clients saw (errors between / inside transactions, stalls,
# committed units per node) and fails on a lost or duplicated row, an error inside a transaction
# (phase 1 only: phase 2 cuts transactions off with their leader), or (phase 2) a committed unit
# whose statements the cut-off leader ran after the cut, or nodes that end with different rows.
# Errors between transactions are printed; E2E_STRICT=1 also fails on them. Everything is torn
# down on exit, also on failure.
#
# Knobs: E2E_SKIP_BUILD=1 (reuse the images), E2E_TIMEOUT (seconds for the whole run, 600),
# E2E_LOG_DIR=dir (keep every service's log, with timestamps, and each phase's summary there),
# E2E_KEEP=1 (leave the containers up for a look; tear down with the printed command),
# E2E_HA_DB (phase 2's database, ollyscale_ha), E2E_FORCE_HA=1 (run phase 2 even when that
# database does not answer: with E2E_HA_DB=ollyscale it exercises the switchover and partition
# steps against the static pg1 entry, whose writes then fail on the demoted node, as expected).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
REPO_DIR=$(cd ../.. && pwd)
export REPO_DIR
export COMPOSE_PROJECT_NAME="ollye2e$$"
E2E_CONTROL_DIR=$(mktemp -d /tmp/olly-e2e.XXXXXX)
export E2E_CONTROL_DIR
NET="${COMPOSE_PROJECT_NAME}_db"
# The Service's virtual address (docker-compose.yml maps the name ollyscale-db-pooler to it).
SERVICE_IP=10.96.0.10
PSQL=${PSQL:-psql}
failures=()

say() { printf '[%s] e2e: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

if docker compose version >/dev/null 2>&1; then
    compose() { docker compose -f "$HERE/docker-compose.yml" "$@"; }
elif command -v docker-compose >/dev/null 2>&1; then
    compose() { docker-compose -f "$HERE/docker-compose.yml" "$@"; }
else
    die "neither 'docker compose' nor docker-compose is installed"
fi

watchdog=""
cleanup() {
    local rc=$?
    [ -n "$watchdog" ] && kill "$watchdog" 2>/dev/null || true
    if [ "$rc" -ne 0 ]; then
        say "failed (exit $rc); last log lines of each service:"
        compose logs --no-color --tail 25 >&2 2>/dev/null || true
    fi
    if [ -n "${E2E_LOG_DIR:-}" ]; then
        mkdir -p "$E2E_LOG_DIR"
        compose logs --no-color --timestamps > "$E2E_LOG_DIR/compose.log" 2>&1 || true
        cp "$E2E_CONTROL_DIR"/*.log "$E2E_CONTROL_DIR"/*.json "$E2E_LOG_DIR"/ 2>/dev/null || true
        say "logs of every service and phase in $E2E_LOG_DIR"
    fi
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        say "kept: COMPOSE_PROJECT_NAME=$COMPOSE_PROJECT_NAME REPO_DIR=$REPO_DIR E2E_CONTROL_DIR=$E2E_CONTROL_DIR docker-compose -f $HERE/docker-compose.yml down -v -t 1"
    else
        compose down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
        rm -rf "$E2E_CONTROL_DIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# The whole run is bounded: the watchdog TERMs this script (our own PID), whose trap tears down.
( sleep "${E2E_TIMEOUT:-600}"; say "timeout after ${E2E_TIMEOUT:-600}s"; kill -TERM $$ ) &
watchdog=$!

# Polls `cmd...` every second until it succeeds; false after `secs` seconds.
wait_for() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$end" ] || return 1
        sleep 1
    done
}

# Patroni's view of the members, as JSON, asked of whichever node answers.
members() {
    local n
    for n in pg1 pg2; do
        compose exec -T "$n" patronictl -c /tmp/patroni.yml list -f json 2>/dev/null && return 0
    done
    return 1
}
leader() { members | python3 -c 'import json,sys; print(next(m["Member"] for m in json.load(sys.stdin) if m["Role"] == "Leader"))'; }
leader_is() { [ "$(leader)" = "$1" ]; }
# The node $1 itself reports being the leader (used while the other node is cut off).
leader_seen_by() {
    compose exec -T "$1" patronictl -c /tmp/patroni.yml list -f json \
        | python3 -c 'import json,sys; sys.exit(not any(m["Member"] == sys.argv[1] and m["Role"] == "Leader" for m in json.load(sys.stdin)))' "$1"
}
# A leader and a streaming sync standby: the cluster is ready for writes that survive a failover.
cluster_ready() {
    members | python3 -c '
import json, sys
m = json.load(sys.stdin)
roles = sorted((x["Role"], x["State"]) for x in m)
sys.exit(0 if any(r == "Leader" and s == "running" for r, s in roles)
         and any(r == "Sync Standby" and s in ("streaming", "running") for r, s in roles) else 1)'
}
node_ip() { docker inspect -f "{{with index .NetworkSettings.Networks \"$NET\"}}{{.IPAddress}}{{end}}" "$(compose ps -q "$1")"; }
pooler_port() { compose port "$1" 5432 | sed 's/.*://'; }
pooler_psql() { # pooler db sql
    PGPASSWORD=ollyscale PGCONNECT_TIMEOUT=5 timeout 30 "$PSQL" -X -A -t -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$(pooler_port "$1")" -U ollyscale -d "$2" -c "$3"
}
pooler_serves() { [ "$(pooler_psql "$1" ollyscale 'SELECT 40 + 2')" = 42 ]; }
# How many of the load's clients a pooler has now (SHOW CLIENTS, the console itself left out).
pooler_clients() { pooler_psql "$1" pgbouncer 'SHOW CLIENTS' | awk -F'|' '$3 == "ollyscale"' | grep -c . || true; }
# How many of the load's logins a pooler logged (`docker logs` options, e.g. --since/--until).
pooler_logins() {
    local p=$1; shift
    docker logs "$@" "$(compose ps -q "$p")" 2>&1 | grep -c 'login attempt: db=ollyscale ' || true
}

# --- the Service: kube-proxy's rules and the endpoints controller --------------------------------
# The Deployment's preStop sleep and terminationGracePeriodSeconds, from the manifests as shipped.
read -r PRESTOP GRACE < <(kubectl kustomize "$REPO_DIR/deploy/overlays/ollyscale" | python3 -c '
import sys, yaml
for o in yaml.safe_load_all(sys.stdin):
    if o and o["kind"] == "Deployment":
        pod = o["spec"]["template"]["spec"]
        c = next(c for c in pod["containers"] if c["name"] == "pooler")
        cmd = c["lifecycle"]["preStop"]["exec"]["command"]
        assert cmd[0].endswith("sleep"), cmd
        print(int(cmd[1]), pod["terminationGracePeriodSeconds"])
') || true
[ -n "${PRESTOP:-}" ] && [ -n "${GRACE:-}" ] || die "no preStop sleep / terminationGracePeriodSeconds in deploy/overlays/ollyscale"

# Kubelet's readiness probe: GET /readyz on the pod's HTTP port, from the node (service-proxy).
pod_ready() {
    docker exec "$PROXY_ID" python3 -c 'import sys, urllib.request
sys.exit(urllib.request.urlopen(sys.argv[1], timeout=3).status != 200)' "http://$(node_ip "$1"):9127/readyz"
}

# Makes the Service's endpoints exactly the pods named (kube-proxy's nftables mode: one chain per
# endpoint, a random pick per new connection; conntrack keeps established ones where they are).
# One `nft -f` transaction replaces the whole table, so no connection sees a half-written set.
ENDPOINTS=""
endpoints_set() {
    local rules n=$# i=0 p ip map=""
    rules="table ip kube-service
delete table ip kube-service
table ip kube-service {
    chain output {
        type nat hook output priority -100; policy accept;
"
    if [ "$n" -gt 0 ]; then
        for p in "$@"; do
            map+="${map:+, }$i : goto ep-$p"
            i=$((i + 1))
        done
        rules+="        ip daddr $SERVICE_IP tcp dport 5432 numgen random mod $n vmap { $map }
    }
"
        for p in "$@"; do
            ip=$(node_ip "$p")
            [ -n "$ip" ] || die "$p has no address on $NET"
            rules+="    chain ep-$p {
        meta l4proto tcp dnat to $ip:5432
    }
"
        done
    else
        # No ready endpoint: refused at once, as kube-proxy rejects a Service without endpoints.
        rules+="    }
    chain no-endpoints {
        type filter hook output priority 0; policy accept;
        ip daddr $SERVICE_IP tcp dport 5432 reject with tcp reset
    }
"
    fi
    rules+="}
"
    printf '%s' "$rules" | docker exec -i "$PROXY_ID" nft -f - || die "nft could not apply the endpoints $*"
    ENDPOINTS="$*"
    say "Service $SERVICE_IP:5432 endpoints: ${ENDPOINTS:-none}"
}

# Starts the load container against database $1 and waits until it writes.
load_start() {
    rm -f "$E2E_CONTROL_DIR"/ready "$E2E_CONTROL_DIR"/stop
    chmod 777 "$E2E_CONTROL_DIR"
    E2E_DB=$1 compose up -d --no-deps --force-recreate client >/dev/null 2>&1
    wait_for 60 test -e "$E2E_CONTROL_DIR/ready" || { compose logs --no-color client >&2; die "the load never started"; }
    say "load running on database $1"
}

# Stops the load, prints its SUMMARY and judges it; $1 names the phase, $2 is "inside-allowed"
# when errors inside transactions are expected.
load_stop() {
    local phase=$1 id summary
    touch "$E2E_CONTROL_DIR/stop"
    id=$(compose ps -q client)
    timeout 120 docker wait "$id" >/dev/null || die "the load did not stop"
    compose logs --no-color client > "$E2E_CONTROL_DIR/$phase.log" 2>&1 || true
    summary=$(sed -n 's/.*SUMMARY //p' "$E2E_CONTROL_DIR/$phase.log" | tail -n 1)
    [ -n "$summary" ] || { cat "$E2E_CONTROL_DIR/$phase.log" >&2; die "$phase: no SUMMARY from the load"; }
    [ "$(docker inspect -f '{{.State.ExitCode}}' "$id")" = 0 ] || failures+=("$phase: the load script failed (lost or duplicated rows)")
    printf '%s\n' "$summary" > "$E2E_CONTROL_DIR/$phase.json"
    say "$phase: what the clients saw:"
    python3 - "$E2E_CONTROL_DIR/$phase.json" "${NODE_NAMES:-}" <<'PY' >&2
import json, sys, time
s = json.load(open(sys.argv[1]))
names = dict(p.split("=") for p in sys.argv[2].split() if "=" in p)
print(f"    {s['committed']} units committed in {s['seconds']}s, {s['rows']} rows in the table, "
      f"lost {s['lost']}, duplicated {s['duplicated']}")
print(f"    errors between transactions: {s['errors_between']} {s['between'] or ''}")
print(f"    errors inside transactions:  {s['errors_inside']} {s['inside'] or ''}")
print(f"      of which on the unit's first statement (its BEGIN answered): {s['inside_first_statement']}")
print(f"    slowest unit {s['slowest_unit_seconds']}s, units over 1 s: {s['stalls_over_1s']}")
for ip, n in sorted(s["committed_per_node"].items()):
    print(f"    committed on {names.get(ip, ip)}: {n} (last at {s['last_commit_per_node'][ip]})")
for at, where, kind in s.get("error_events", []):
    stamp = time.strftime("%H:%M:%S", time.localtime(at)) + f"{at % 1:.3f}"[1:]
    print(f"    error at {stamp} {where}: {kind}")
PY
    # A transaction open on a leader that is cut off or demoted cannot finish: phase 2 allows
    # errors inside transactions, the rolling restart (which drains) does not.
    python3 - "$E2E_CONTROL_DIR/$phase.json" "$2" <<'PY' || failures+=("$phase: lost/duplicated rows or errors inside transactions")
import json, sys
s = json.load(open(sys.argv[1]))
inside_ok = sys.argv[2] == "inside-allowed" or s["errors_inside"] == 0
sys.exit(0 if s["lost"] == 0 and s["duplicated"] == 0 and inside_ok else 1)
PY
    if [ "${E2E_STRICT:-0}" = 1 ]; then
        python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["errors_between"] != 0)' \
            "$E2E_CONTROL_DIR/$phase.json" || failures+=("$phase: errors between transactions (E2E_STRICT=1)")
    fi
}

# --- images and the cluster --------------------------------------------------------------------
[ "${E2E_SKIP_BUILD:-0}" = 1 ] || bash "$HERE/images.sh"
say "compose: $(compose version --short 2>/dev/null || compose version | head -n 1); project $COMPOSE_PROJECT_NAME"
# pg1 bootstraps alone, so it is the leader that the static database `ollyscale = host=pg1` needs.
compose up -d etcd pg1 >/dev/null 2>&1
wait_for 90 leader_is pg1 || { members >&2 || true; die "pg1 did not bootstrap as the leader in 90 s"; }
compose up -d pg2 >/dev/null 2>&1
wait_for 120 cluster_ready || { members >&2 || true; die "no leader with a streaming sync standby after 120 s"; }
say "Patroni: leader $(leader), sync standby streaming"
compose up -d pooler1 pooler2 >/dev/null 2>&1
for p in pooler1 pooler2; do
    wait_for 60 pooler_serves "$p" || die "$p does not serve on 127.0.0.1:$(pooler_port "$p")"
done
say "poolers serve on 127.0.0.1:$(pooler_port pooler1) and 127.0.0.1:$(pooler_port pooler2)"
compose up -d service-proxy >/dev/null 2>&1
PROXY_ID=$(compose ps -q service-proxy)
for p in pooler1 pooler2; do
    wait_for 60 pod_ready "$p" || die "$p: /readyz does not answer 200"
done
endpoints_set pooler1 pooler2
clusters=$(pooler_psql pooler1 pgbouncer 'SHOW CLUSTERS' || true)
say "pooler1 SHOW CLUSTERS: $clusters"
NODE_NAMES="$(node_ip pg1)=pg1 $(node_ip pg2)=pg2"

# --- phase 1: rolling restart of the poolers ----------------------------------------------------
load_start ollyscale
sleep 3
drained=0
for p in pooler1 pooler2; do
    rest=$([ "$p" = pooler1 ] && echo pooler2 || echo pooler1)
    # The Service must have spread the load: a pod without clients would restart unnoticed.
    n1=$(pooler_clients pooler1) n2=$(pooler_clients pooler2)
    say "rolling restart of $p: terminating, out of the endpoints (clients now: pooler1 $n1, pooler2 $n2)"
    [ "$([ "$p" = pooler1 ] && echo "$n1" || echo "$n2")" -gt 0 ] \
        || failures+=("rolling: $p had no client when its restart began (the Service did not spread the load)")
    endpoints_set "$rest"
    left=$(date -u +%s)
    # The preStop hook's sleep: SIGTERM comes only after it, while the pod still serves the
    # connections it has.
    sleep "$PRESTOP"
    n=$(pooler_clients "$p")
    drained=$((drained + n))
    say "rolling restart of $p: preStop ${PRESTOP}s over, SIGTERM with $n clients left (drain at transaction end, SIGKILL after $((GRACE - PRESTOP))s)"
    sigterm=$(date -u +%s)
    compose stop -t "$((GRACE - PRESTOP))" "$p" >/dev/null 2>&1
    # Out of the endpoints, a pod gets no new client: its log shows no login from a second
    # after it left (a connection DNATed just before may still be logging in) to its SIGTERM.
    late=$(pooler_logins "$p" --since "$((left + 1))" --until "$sigterm")
    [ "$late" = 0 ] || failures+=("rolling: $p logged in $late clients after it left the Service's endpoints")
    # The same count before it left, so a changed log line cannot make the check above pass.
    [ "$(pooler_logins "$p" --until "$left")" -gt 0 ] || failures+=("rolling: no login of the load in $p's log before it left the endpoints")
    code=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q "$p")")
    [ "$code" = 0 ] || failures+=("rolling: $p exited $code after SIGTERM")
    say "rolling restart of $p: exited $code, no login between leaving the endpoints and SIGTERM: $([ "$late" = 0 ] && echo yes || echo "NO, $late"); starting it"
    compose start "$p" >/dev/null 2>&1
    wait_for 60 pod_ready "$p" || die "$p: /readyz not 200 within 60 s of its start"
    endpoints_set pooler1 pooler2
    # The load keeps its connections (pool_recycle is longer than the run): the next pooler's
    # drain moves them all back here.
    sleep 3
done
# The load's fixed-size engine keeps its connections until a drain closes them (pooler2's, at the
# latest): a rollout where no SIGTERM found a client would not have tested the drain.
[ "$drained" -gt 0 ] || failures+=("rolling: no pooler had a client left at its SIGTERM (the drain was not exercised)")
load_stop rolling no

# --- phase 2: switchover and partition, once cluster databases are routed -----------------------
HA_DB=${E2E_HA_DB:-ollyscale_ha}
if [ "${E2E_FORCE_HA:-0}" != 1 ] \
    && { ! probe=$(pooler_psql pooler1 "$HA_DB" 'SELECT pg_is_in_recovery()' 2>&1) || [ "$probe" != f ]; }; then
    say "phase 2 SKIPPED: the pooler does not route cluster= databases yet (ollyscale_ha said: $(printf '%s' "$probe" | tr '\n' ' '))"
else
    load_start "$HA_DB"
    sleep 3
    old=$(leader)
    new=$([ "$old" = pg1 ] && echo pg2 || echo pg1)
    say "switchover $old -> $new"
    compose exec -T "$old" patronictl -c /tmp/patroni.yml switchover --leader "$old" --candidate "$new" --force >&2
    wait_for 60 leader_is "$new" || die "$new did not become the leader"
    wait_for 60 cluster_ready || die "no sync standby again after the switchover"
    sleep 5
    cut=$(leader)
    other=$([ "$cut" = pg1 ] && echo pg2 || echo pg1)
    cut_id=$(compose ps -q "$cut")
    say "partition: docker network disconnect $cut (the leader)"
    docker network disconnect "$NET" "$cut_id"
    t_cut=$(date +%s.%N)
    wait_for 90 leader_seen_by "$other" || say "no new leader seen within 90 s"
    say "after the cut: $(compose exec -T "$other" patronictl -c /tmp/patroni.yml list 2>&1 | tr -s ' ' | tail -n +1 | tr '\n' ' ')"
    sleep 5
    say "reconnect $cut"
    docker network connect --alias "$cut" "$NET" "$cut_id"
    wait_for 120 cluster_ready || say "the cut-off node did not rejoin as sync standby within 120 s"
    sleep 3
    load_stop ha inside-allowed
    python3 - "$E2E_CONTROL_DIR/ha.json" "$(node_ip "$cut")" "$t_cut" <<'PY' >&2 || failures+=("ha: the cut-off leader ran a committed write after the cut")
import json, sys
# Judged on the node's own clock (containers share the host's): the last statement of a committed
# unit that ran there, i.e. the UPDATE right before its COMMIT. The client's stamp of when COMMIT
# returned is printed too but not judged: an answer sent before the cut can reach the client only
# when the network is back (TCP retransmits it), long after the commit itself.
s = json.load(open(sys.argv[1]))
node, cut = sys.argv[2], float(sys.argv[3])
ran = s["last_statement_per_node"].get(node)
acked = s["last_commit_per_node"].get(node)
late = ran is not None and ran > cut
rel = lambda t: "-" if t is None else f"{t - cut:+.3f} s"
print(f"    cut-off node: last committed unit's last statement ran {rel(ran)} from the cut "
      f"({'AFTER' if late else 'before'} it); its COMMIT answer reached the client {rel(acked)}")
sys.exit(1 if late else 0)
PY
    # No write reached one node only: after the rejoin both nodes hold the same rows.
    sums=""
    for n in pg1 pg2; do
        sums+="$n=$(compose exec -T "$n" psql -X -A -t -h /tmp -U postgres -d ollyscale \
            -c "SELECT count(*) || ':' || md5(coalesce(string_agg(key, ',' ORDER BY key), '')) FROM rolling_writes") "
    done
    say "rows per node after the rejoin: $sums"
    [ "$(printf '%s' "$sums" | tr ' ' '\n' | sed 's/^pg.=//' | sort -u | grep -c .)" = 1 ] || failures+=("ha: the nodes hold different rows: $sums")
fi

if [ "${#failures[@]}" -gt 0 ]; then
    printf '  FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
say "OK"
