#!/usr/bin/env bash
# Fuzzing (docs/security.md, "Fuzzing"): builds the cargo-fuzz targets in fuzz/ and runs
# each for SECONDS (default 20), starting from the committed seed corpus
# (fuzz/corpus/<target>). New inputs found during the run go to a scratch directory, so
# the committed corpus stays as it is (pass FUZZ_KEEP_CORPUS=1 to add them to it).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#
# FUZZ_CORPUS_DIR=DIR keeps the inputs found in DIR/<target> across runs (a long campaign
# in short pieces) instead of a scratch directory.
#
# Fails when a target finds a crash; the failing input is kept under
# fuzz/artifacts/<target>/ and its path printed (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> -s none <file>`).
#
# The machine has a stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz's unstable rustc
# flags through; `-s none` skips the sanitizer (Rust code: we look for panics, and the
# standard library need not be instrumented).
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
shift || true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/edge-suite/target-fuzz}"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
# 16 codegen units: a much shorter cold build on 2 cores for slightly slower runs.
build_flags=(-s none --codegen-units 16)
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
echo "== cargo fuzz build (${#targets[@]} targets)"
start=$(date +%s)
cargo fuzz build "${build_flags[@]}"
echo "   built in $(($(date +%s) - start)) s"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    seeds="fuzz/corpus/$t"
    found="${FUZZ_CORPUS_DIR:-$work}/$t"
    mkdir -p "$seeds" "$found"
    corpus=("$found" "$seeds")
    [ "${FUZZ_KEEP_CORPUS:-0}" = 1 ] && corpus=("$seeds")
    start=$(date +%s)
    if cargo fuzz run "${build_flags[@]}" "$t" "${corpus[@]}" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        >"$work/$t.log" 2>&1; then
        runs=$(grep -Eo 'Done [0-9]+ runs' "$work/$t.log" | tail -n1 | grep -Eo '[0-9]+' || echo '?')
        cov=$(grep -Eo 'cov: [0-9]+' "$work/$t.log" | tail -n1 || true)
        echo "== $t: ok ($runs runs, ${cov:-cov: ?}, $(ls "$seeds" | wc -l) seeds, $(($(date +%s) - start)) s)"
    else
        echo "== $t: FAILED"
        grep -a -A2 -E 'panicked at|ERROR: libFuzzer' "$work/$t.log" | head -n 20 || true
        crash=$(grep -a -Eo 'fuzz/artifacts/[^ ]*/(crash|leak|timeout|oom|slow-unit)-[0-9a-f]+' "$work/$t.log" | head -n1 || true)
        echo "   crash input: ${crash:-see the log above}"
        failed+=("$t")
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]}"
    exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${secs} s each, no crash"
