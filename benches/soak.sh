#!/usr/bin/env bash
# The full soak: 10,000 mostly idle clients + 1,000 busy ones through a pool of 20 for 10 minutes,
# RSS and open fds sampled every 10 s; writes benches/soak.svg (plot), benches/soak.json (samples
# and figures) and benches/soak.md (figures table).
#
#   bash benches/soak.sh            # nice'd; takes about 12 minutes
#
# It runs the suite's soak test (tests/faults/main.rs `soak_short`) with the full sizes, so that the
# PostgreSQL and pooler setup is the test harness's (real PostgreSQL on a loopback port, the
# built pooler, both stopped at the end); benches/soak.py is the load generator and sampler.
set -euo pipefail
cd "$(dirname "$0")/.."
export OLLY_SOAK_IDLE="${OLLY_SOAK_IDLE:-10000}" OLLY_SOAK_BUSY="${OLLY_SOAK_BUSY:-1000}"
export OLLY_SOAK_SECONDS="${OLLY_SOAK_SECONDS:-600}" OLLY_SOAK_INTERVAL="${OLLY_SOAK_INTERVAL:-10}"
export OLLY_SOAK_STORM="${OLLY_SOAK_STORM:-2000}" OLLY_SOAK_OUT="${OLLY_SOAK_OUT:-$PWD/benches/soak}"
ulimit -n "$(ulimit -Hn)"
# SOAK_CARGO_FLAGS="" runs the debug build (what the committed figures used, see benches/soak.md).
exec nice cargo test ${SOAK_CARGO_FLAGS---release} --test faults soak_short -- --exact --nocapture
