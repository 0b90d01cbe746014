#!/usr/bin/env bash
# Runs every test program of the project and ends with the line
# "N passed, N failed" summed over all of them; exits non-zero on any failure.
# Each program ends with its own "N passed, N failed" line; a program that
# dies before printing it counts as one failure.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
VECTORS=${VECTORS:-../shared/vectors}
total_pass=0
total_fail=0

run_suite() { # name, command...
    local name=$1; shift
    local log line p f
    echo "== $name"
    log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    rm -f "$log"
    if [ -z "$line" ]; then
        echo "FAIL $name: exited with status $rc before its summary line"
        total_fail=$((total_fail + 1))
        return
    fi
    p=${line%% passed*}
    f=${line#*, }; f=${f%% failed*}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exited with status $rc"
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
}

run_suite "reference (gcc)" "$BUILD/test_nsa" "$VECTORS"
if [ -x "$BUILD/test_nsa_clang" ]; then
    run_suite "reference (clang)" "$BUILD/test_nsa_clang" "$VECTORS"
fi
# The sanitizer run checks the vectors once, inside test_nsa: they are its
# slowest part there, and the command is the same code.
if [ "${NSA_SANITIZE:-0}" = 0 ]; then
    run_suite "vectors command" "$BUILD/nsa_vectors" check "$VECTORS"
fi
run_suite "vector kernels on and off" env BUILD="$BUILD" bash tests/simd_same.sh
run_suite "golden-vector tools" env BUILD="$BUILD" bash tools/test_tools.sh
run_suite "selection pictures" env BUILD="$BUILD" bash tools/test_picture.sh

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "== CUDA: a GPU is present; run tests/gpu.sh for the GPU cross-checks"
else
    echo "== CUDA: skipped, no GPU on this machine (not counted as passed)"
fi

echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
