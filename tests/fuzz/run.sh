#!/usr/bin/env bash
# run.sh BUILD SECONDS NAME... -- runs each libFuzzer target BUILD/NAME for
# SECONDS on its seeds (tests/fuzz/corpus/NAME, read only) and its own corpus
# (BUILD/corpus/NAME). FUZZ_RUNS=N: N executions each instead of SECONDS.
# Prints the executions of each; exits non-zero when a target reports a
# crash, a leak, a timeout (10 s for one input), a sanitizer error or an
# abort.
set -u
cd "$(dirname "$0")/../.."
build=${1:?usage: run.sh BUILD SECONDS NAME...}
secs=${2:?}
shift 2
status=0
for f in "$@"; do
    mkdir -p "$build/corpus/$f" "$build/crashes"
    log="$build/$f.log"
    if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); what="$FUZZ_RUNS runs"
    else limit=(-max_total_time="$secs"); what="$secs s"; fi
    start=$(date +%s)
    "$build/$f" "${limit[@]}" -timeout=10 -max_len=4096 -print_final_stats=1 \
        -artifact_prefix="$build/crashes/$f-" \
        "$build/corpus/$f" "tests/fuzz/corpus/$f" >"$log" 2>&1
    rc=$?
    runs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    if [ $rc -eq 0 ]; then
        echo "ok   $f: ${runs:-?} executions in $(( $(date +%s) - start )) s ($what), no crash"
    else
        echo "FAIL $f: exit status $rc after ${runs:-?} executions; log $log"
        grep -E 'ERROR|SUMMARY|runtime error|Test unit written' "$log" | head -n 20 | sed 's/^/    /'
        status=1
    fi
done
exit $status
