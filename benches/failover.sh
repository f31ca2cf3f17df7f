#!/usr/bin/env bash
# Patroni switchover and kill -9 failover under write load, N rounds, through ollyscale-pooler.
# See benches/README.md ("Failover"). Typical use (from any directory, as root or a normal user):
#
#   bash benches/failover.sh            # 3 rounds
#   ROUNDS=10 bash benches/failover.sh
#
# Each round: a real etcd + two Patroni nodes (Debian packages, PostgreSQL 15, synchronous_mode,
# ttl 10 / loop_wait 1 / retry_timeout 4) started by the test harness on 127.0.0.1; 8 clients
# commit numbered rows (BEGIN; INSERT; COMMIT) through the pooler while the lab does a
# POST /switchover, then a kill -9 of the leader's Patroni, postmaster and backends. Printed per
# scenario (and once for a partition of the leader from etcd and the other node): errors between transactions (on BEGIN or on connecting), errors inside transactions,
# the longest stall between two commits, and acknowledged commits missing on the new leader.
# The run fails if any client between transactions saw an error or an acknowledged commit is lost.
#
# Environment (defaults in brackets):
#   ROUNDS [3]            switchover + kill -9 rounds, in one lab
#   CARGO_PROFILE [dev]   cargo profile the test and the pooler are built with (dev or release)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
PROFILE=${CARGO_PROFILE:-dev}

# The packages the lab needs (as .ci/run installs them).
missing=()
for bin in /usr/bin/patroni /usr/bin/etcd /usr/lib/postgresql/15/bin/postgres; do
    [ -x "$bin" ] || missing+=("$bin")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "failover.sh: missing ${missing[*]}; install: apt-get install patroni etcd-server \
etcd-client python3-etcd postgresql-15" >&2
    exit 1
fi

cd "$REPO"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
status=0
# One test at a time: each starts its own lab, and two at once would share the 2 cores.
FAILOVER_ROUNDS="$ROUNDS" cargo test --profile "$PROFILE" --test failover -- --nocapture \
    --test-threads=1 >"$out" 2>&1 || status=$?

echo "ollyscale-pooler failover bench: $ROUNDS round(s), 8 writers"
# The summary block at the end lists every scenario once, in order.
sed -n '/^FAILOVER summary/,$p' "$out" | grep -E '^FAILOVER (summary|switchover|kill)' || true
# (cargo prints "test <name> ... " before a test's own output, on the same line)
grep -o 'FAILOVER partition.*' "$out" || true
echo
echo "standard stack on the same lab (HAProxy 2.6 + Patroni /primary health checks):"
echo "  switchover: 24 errors, 3.5 s stall, 0 lost;  kill -9: 311 errors, 10.8 s stall, 0 lost"
if [ "$status" -ne 0 ]; then
    echo
    echo "FAILED (exit $status); the test output:" >&2
    tail -n 80 "$out" >&2
fi
exit "$status"
