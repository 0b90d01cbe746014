#!/usr/bin/env bash
# Runs every test program of the project and ends with the line
# "N passed, N failed" summed over all of them; exits non-zero on any failure.
# Each program ends with its own "N passed, N failed" line; a program that
# dies before printing it counts as one failure. Skipped checks are counted
# apart (never as passes) and reported just before that line.
#
# The golden vectors (VECTORS, default ../shared/vectors) are required: a
# missing folder fails the run unless NSA_SKIP_VECTORS=1 asks to skip them.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
VECTORS=${VECTORS:-../shared/vectors}
total_pass=0
total_fail=0
total_skip=0

run_suite() { # name, command...
    local name=$1; shift
    local log line p f sk
    echo "== $name"
    log=$(mktemp)
    "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    sk=$(grep -E '^[0-9]+ skipped' "$log" | tail -n 1)
    sk=${sk%% *}
    total_skip=$((total_skip + ${sk:-0}))
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
    if [ ! -d "$VECTORS" ] && [ "${NSA_SKIP_VECTORS:-0}" != 0 ]; then
        echo "== vectors command"
        echo "SKIP vectors command: no folder $VECTORS and NSA_SKIP_VECTORS is set"
        total_skip=$((total_skip + 1))
    else
        run_suite "vectors command" "$BUILD/nsa_vectors" check "$VECTORS"
    fi
fi
run_suite "vector kernels on and off, contraction" env BUILD="$BUILD" bash tests/simd_same.sh
run_suite "implementation macros" bash tests/one_macro.sh
# The Python binding on the reference (numpy); its library is built by
# `make all` (a sanitizer build has none: Python cannot load it).
if [ ! -f "$BUILD/libnsa.so" ]; then
    echo "== Python binding"
    echo "SKIP Python binding: no $BUILD/libnsa.so"
    total_skip=$((total_skip + 1))
elif ! python3 -c 'import numpy' >/dev/null 2>&1; then
    echo "== Python binding"
    echo "SKIP Python binding: python3 with numpy not found"
    total_skip=$((total_skip + 1))
else
    run_suite "Python binding (reference, numpy)" \
        env NSA_LIBRARY="$BUILD/libnsa.so" python3 tests/test_python.py "$VECTORS"
fi
run_suite "context parallelism plan (reference)" "$BUILD/test_cp_layout"
run_suite "golden-vector tools" env BUILD="$BUILD" bash tools/test_tools.sh
run_suite "selection pictures" bash tools/test_picture.sh "$BUILD/nsa_picture"
# The CUDA path's host logic, which needs no GPU (its query ranges):
# build/test_cuda comes from `make cuda` (CI builds it before this command).
if [ -x "$BUILD/test_cuda" ]; then
    run_suite "CUDA path, host logic" "$BUILD/test_cuda" --host-only
else
    echo "== CUDA path, host logic"
    echo "SKIP CUDA path, host logic: no $BUILD/test_cuda (make cuda builds it)"
    total_skip=$((total_skip + 1))
fi

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "== CUDA: a GPU is present; run tests/gpu.sh for the GPU cross-checks"
else
    echo "== CUDA: skipped, no GPU on this machine (not counted as passed)"
fi

[ "$total_skip" -gt 0 ] && echo "$total_skip skipped (not counted as passed)"
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
