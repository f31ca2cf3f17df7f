#!/usr/bin/env bash
# Run every fuzz target (fuzz/fuzz_targets/*.rs) for a bounded time; exit non-zero on the first
# crash, panic, failed invariant, leak, timeout or OOM that libFuzzer reports.
#
#   bash scripts/fuzz.sh                    # every target, FUZZ_SECONDS (default 15) each
#   FUZZ_SECONDS=600 bash scripts/fuzz.sh client_frame startup
#
# Why not `cargo fuzz run`: cargo-fuzz is not on a fresh CI machine (`cargo install cargo-fuzz`
# takes minutes) and its default AddressSanitizer build needs nightly `-Z` flags. Without a
# sanitizer, everything cargo-fuzz passes to rustc is a stable `-C`/`--cfg` flag, so this script
# builds the targets with plain stable cargo and the same flags (libfuzzer-sys links libFuzzer's
# own main), then runs each binary as libFuzzer would under cargo-fuzz. What is lost is ASan,
# which mostly guards dependencies here (the crate denies unsafe_code); fuzz/README.md shows
# how to run with it (cargo-fuzz + RUSTC_BOOTSTRAP=1).
#
# Inputs: the committed seeds (fuzz/seeds/<target>) and regression inputs
# (fuzz/artifacts-found/<target>) are read; new inputs go to fuzz/corpus/<target> (gitignored),
# crashes to fuzz/artifacts/<target>/ (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-15}"
host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=()
    for f in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

# The flags cargo-fuzz 0.13 passes with `-s none` (checked with `cargo fuzz build -s none -v`),
# plus debug assertions and overflow checks (cargo-fuzz's default too) so that arithmetic
# overflow on hostile lengths is a crash here. `--target` keeps RUSTFLAGS off build scripts.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
-Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth \
-Cdebug-assertions -Coverflow-checks"
export CARGO_TARGET_DIR="$PWD/fuzz/target"
printf '==> building %d fuzz targets (stable, libFuzzer, no sanitizer)\n' "${#targets[@]}"
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
cargo build --release --manifest-path fuzz/Cargo.toml --target "$host" "${bins[@]}"

for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    dirs=("fuzz/corpus/$t")
    [ -d "fuzz/seeds/$t" ] && dirs+=("fuzz/seeds/$t")
    [ -d "fuzz/artifacts-found/$t" ] && dirs+=("fuzz/artifacts-found/$t")
    printf '==> fuzz %s for %ss (%s)\n' "$t" "$seconds" "${dirs[*]}"
    log="fuzz/artifacts/$t/last-run.log"
    if ! "fuzz/target/$host/release/$t" "${dirs[@]}" -max_total_time="$seconds" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        printf '\nERROR: fuzz target %s failed; input saved under fuzz/artifacts/%s/ (log: %s)\n' \
            "$t" "$t" "$log" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^stat::new_units_added|cov: ' "$log" | tail -n 3
done
printf '==> all %d fuzz targets ran %ss each without a failure\n' "${#targets[@]}" "$seconds"
