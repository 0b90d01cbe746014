#!/usr/bin/env bash
# gpu.sh LOGDIR -- build and run every GPU check on a machine with a GPU.
#
# Builds with nvcc here (sm_80 and sm_90a), then runs: the C example; the
# cross-checks against the CPU reference (tests/test_cuda.cu, with the
# shared vectors when VECTORS names their folder, and the >= 256K-token
# case), and again from a plain sm_90 build (the portable mma.sync
# kernels, build/test_cuda_portable), and the quick cases from a build with
# NSA_GRAD_LO=2 (build/test_cuda_grad_lo), and all cases and vectors from a
# build with the smallest accumulators (build/test_cuda_ranges: passes by
# query and kv head ranges); the Python binding with torch on the GPU (tests/test_python.py
# --cuda; skipped with a line when torch is absent); compute-sanitizer memcheck, racecheck and initcheck on the quick
# cases; the benchmark (bench/bench_cuda.cu) and the dense SDPA / torch.topk
# baseline (bench/bench_dense.py). Logs go to LOGDIR; a short table is
# printed last. Exits non-zero if a check failed or if no GPU check ran.
#
#   SKIP_BUILD=1   use the binaries already in build/
#   SKIP_BENCH=1   checks only;  SKIP_SAN=1  no compute-sanitizer;
#   SKIP_BIG=1     no >= 256K-token case;  HUGE=1  also the 1M-token one
#   BENCH_TMIN, BENCH_TMAX, BENCH_TMUL   the lengths (8K .. 64K, x2)
#   BENCH_PRESETS=paper,fla,tile   BENCH_BWD=1 forward+backward too
#   BENCH_TOPK=1   top-k rows too;  BENCH_BLOCKMASK=1  block masks too
#   SKIP_DENSE=1   no torch SDPA/topk script
#   BENCH_DECODE=1 decoding too (bench_cuda --decode, bench_dense.py --decode)
#   NCCL_HOME      NCCL for tests/test_cp.cu (default: python3's nvidia-nccl
#                  wheel, else /usr/local/nccl, /usr/local/cuda, /usr); 1 rank,
#                  and 2 ranks when 2 GPUs are present; BENCH_CP_T=T also
#                  times T tokens on 2 GPUs against one
#   PEERS=DIR      also time dense cuDNN and the public Triton NSA kernels
#                  (their packages in DIR; PEERS_SIDE=side.py, PEERS_T="T ...")
set -u
cd "$(dirname "$0")/.."
LOGDIR=${1:?usage: tests/gpu.sh LOGDIR}
mkdir -p "$LOGDIR"
VECTORS=${VECTORS:-../shared/vectors}
status=0
summary=()
note() { summary+=("$1"); }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$LOGDIR/device.txt" 2>&1
echo "device: $(cat "$LOGDIR/device.txt")"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "== build"
    if make -k -j8 cuda shared build/test_cuda_portable build/test_cuda_grad_lo build/test_cuda_ranges > "$LOGDIR/build.log" 2>&1; then note "build           ok"
    else note "build           FAILED (see build.log)"; tail -30 "$LOGDIR/build.log"; status=1; fi
fi

echo "== example"
if ./build/cuda_example > "$LOGDIR/example.log" 2>&1; then note "example         ok: $(tail -1 "$LOGDIR/example.log")"
else note "example         FAILED"; status=1; fi

echo "== cross-checks"
args=()
[ -d "$VECTORS" ] && args+=(--vectors "$VECTORS")
[ "${SKIP_BIG:-0}" != 1 ] && args+=(--big)
[ "${HUGE:-0}" = 1 ] && args+=(--huge)
OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} ./build/test_cuda "${args[@]}" --log "$LOGDIR/test_cuda.log" > "$LOGDIR/test_cuda.out" 2>&1
rc=$?
tail -60 "$LOGDIR/test_cuda.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/test_cuda.out" | tail -1)
note "test_cuda       ${line:-died (rc $rc)}"
[ $rc -ne 0 ] && status=1
# No GPU check at all (no device, or every case skipped) is a failure here:
# this script exists to run them.
if [ -z "$line" ] || [ "${line%% passed*}" -eq 0 ]; then
    note "test_cuda       FAILED: no GPU check ran"
    status=1
fi

# A second build of the cross-checks: run_build_checks LABEL NAME ARGS...
# runs build/NAME with ARGS, logs under LOGDIR/NAME.*, notes its last line.
run_build_checks() {
    local label=$1 name=$2
    shift 2
    if [ -x "./build/$name" ]; then
        OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} "./build/$name" "$@" --log "$LOGDIR/$name.log" > "$LOGDIR/$name.out" 2>&1
        local rc=$?
        grep -E 'FAIL' "$LOGDIR/$name.log" | head -10
        local line
        line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/$name.out" | tail -1)
        note "$label ${line:-died (rc $rc)}"
        [ $rc -ne 0 ] && status=1
    else
        note "$label FAILED: build/$name missing"; status=1
    fi
}

# The portable kernels: on a Hopper GPU the library runs wgmma kernels
# (sm_90a); the mma.sync ones that other GPUs run are cross-checked here
# from a build for plain sm_90.
echo "== cross-checks, portable kernels"
pargs=()
[ -d "$VECTORS" ] && pargs+=(--vectors "$VECTORS")
run_build_checks "test portable  " test_cuda_portable "${pargs[@]}"

# Every gradient product with its residual (NSA_GRAD_LO=2; by default
# dS's alone).
echo "== cross-checks, every gradient product with its residual (NSA_GRAD_LO=2, quick cases)"
run_build_checks "test grad_lo=2 " test_cuda_grad_lo --quick

# The smallest accumulators (NSA_ACC_ROWS=1, NSA_KV_ACC_ROWS=1): the
# query and kv head ranges that a batch longer than them runs, on every
# case and vector.
echo "== cross-checks, by query and kv head ranges (NSA_ACC_ROWS=1, NSA_KV_ACC_ROWS=1)"
run_build_checks "test ranges    " test_cuda_ranges "${pargs[@]}"

# The Python binding: torch tensors on the GPU through nsa.attention and
# autograd, against the shared vectors (skipped, with a line, without torch).
echo "== python binding (torch on the GPU)"
python3 tests/test_python.py --cuda "$VECTORS" > "$LOGDIR/python.log" 2>&1
rc=$?
grep -E '^(FAIL|SKIP)' "$LOGDIR/python.log" | head -20
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/python.log" | tail -1)
skips=$(grep -c '^SKIP' "$LOGDIR/python.log")
note "python torch    ${line:-died (rc $rc)}$([ "$skips" -gt 0 ] && echo ", $skips skipped (see python.log)")"
[ $rc -ne 0 ] && status=1

echo "== context parallelism (NCCL)"
# The tests need no NVLink multicast (NVLS): keep it off.
export NCCL_NVLS_ENABLE=0
nccl_home=${NCCL_HOME:-}
if [ -z "$nccl_home" ]; then
    for d in "$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null)" \
             /usr/local/nccl /usr/local/cuda /usr; do
        if [ -n "$d" ] && [ -f "$d/include/nccl.h" ] && ls "$d"/lib/libnccl.so* > /dev/null 2>&1; then
            nccl_home=$d; break
        fi
    done
fi
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')
if [ -z "$nccl_home" ]; then
    note "test_cp         SKIPPED: no NCCL (nccl.h and libnccl.so) found; set NCCL_HOME"
elif ! make cp NCCL_HOME="$nccl_home" > "$LOGDIR/build_cp.log" 2>&1; then
    note "test_cp         build FAILED (see build_cp.log)"; tail -30 "$LOGDIR/build_cp.log"; status=1
else
    cp_ranks=(--ranks 1)
    if [ "$ngpu" -ge 2 ]; then cp_ranks+=(--ranks 2)
    else note "test_cp         2 ranks SKIPPED: $ngpu GPU(s)"; fi
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)} ./build/test_cp "${cp_ranks[@]}" > "$LOGDIR/test_cp.out" 2>&1
    rc=$?
    tail -40 "$LOGDIR/test_cp.out"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$LOGDIR/test_cp.out" | tail -1)
    note "test_cp         ${line:-died (rc $rc)}"
    [ $rc -ne 0 ] && status=1
    if [ "${SKIP_BENCH:-0}" != 1 ] && [ "$ngpu" -ge 2 ] && [ -n "${BENCH_CP_T:-}" ]; then
        ./build/test_cp --bench "$BENCH_CP_T" --ranks 2 --reps 1 --csv "$LOGDIR/bench_cp.csv" \
            --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" 2>&1 | tee "$LOGDIR/bench_cp.log"
        note "bench_cp        $(grep -c . "$LOGDIR/bench_cp.csv" 2>/dev/null || echo 0) csv lines"
    fi
fi

if [ "${SKIP_SAN:-0}" != 1 ] && command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck initcheck; do
        echo "== compute-sanitizer $tool"
        compute-sanitizer --tool $tool --error-exitcode 3 ./build/test_cuda --quick > "$LOGDIR/san_$tool.log" 2>&1
        rc=$?
        errs=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$LOGDIR/san_$tool.log" | tail -1)
        note "sanitizer $tool: rc $rc ${errs}"
        [ $rc -ne 0 ] && status=1
    done
fi

if [ "${SKIP_BENCH:-0}" != 1 ]; then
    echo "== benchmark"
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && commit="$commit+"
    ./build/bench_cuda --tmin "${BENCH_TMIN:-8192}" --tmax "${BENCH_TMAX:-65536}" \
        --tmul "${BENCH_TMUL:-2}" --presets "${BENCH_PRESETS:-paper,fla,tile}" \
        --commit "$commit" ${BENCH_BWD:+--bwd} ${BENCH_TOPK:+--topk} ${BENCH_BLOCKMASK:+--blockmask} \
        --csv "$LOGDIR/bench_cuda.csv" 2>&1 | tee "$LOGDIR/bench_cuda.log"
    note "bench           $(grep -c . "$LOGDIR/bench_cuda.csv" 2>/dev/null || echo 0) csv lines"
    # Dense cuDNN and the public Triton NSA kernels, same run, same GPU
    # (PEERS: a folder holding their packages, see ../shared/peers).
    if [ -n "${PEERS:-}" ] && [ -f "${PEERS_SIDE:-../shared/peers/side.py}" ]; then
        PYTHONPATH="$PEERS" PYTHONUNBUFFERED=1 python3 "${PEERS_SIDE:-../shared/peers/side.py}" \
            ${PEERS_T:-16384 65536} > "$LOGDIR/peers.csv" 2> "$LOGDIR/peers.log"
        cat "$LOGDIR/peers.csv"
        note "peers           $(($(grep -c . "$LOGDIR/peers.csv") - 1)) csv lines"
    fi
    [ "${SKIP_DENSE:-0}" != 1 ] && PYTHONUNBUFFERED=1 python3 bench/bench_dense.py --tmax "${BENCH_TMAX:-65536}" --tmul "${BENCH_TMUL:-2}" --csv "$LOGDIR/bench_dense.csv" 2>&1 | tee "$LOGDIR/bench_dense.log"
    if [ "${BENCH_DECODE:-0}" = 1 ]; then
        ./build/bench_cuda --decode --commit "$commit" --csv "$LOGDIR/bench_decode.csv" 2>&1 |
            tee "$LOGDIR/bench_decode.log"
        note "bench decode    $(grep -c . "$LOGDIR/bench_decode.csv" 2>/dev/null || echo 0) csv lines"
        [ "${SKIP_DENSE:-0}" != 1 ] && PYTHONUNBUFFERED=1 python3 bench/bench_dense.py --decode \
            --csv "$LOGDIR/bench_dense_decode.csv" 2>&1 | tee "$LOGDIR/bench_dense_decode.log"
    fi
fi

echo
echo "== summary"
for s in "${summary[@]}"; do echo "  $s"; done
exit $status
