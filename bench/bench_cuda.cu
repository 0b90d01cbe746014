/* bench_cuda.cu -- timings of the CUDA path, each beside its floor.

   B=1, H=64, Hkv=4, D=128, bf16, random inputs in [-1, 1], for the presets
   paper (l=32, d=16, l'=64), fla (l=d=l'=64) and tile (l'=64, 64-query
   tiles, logits): per stage (each stage's own entry point), the forward, and
   (with --bwd) forward + backward. CUDA events, 3 warm-ups, median of the
   runs.

   Floors. Dense work (the compressed and window branches, the selection
   scores) counts useful FLOPs (bench/flops.h: only visible keys) over the
   bf16 tensor-core peak (989 TFLOP/s on H100 SXM, the datasheet's dense
   figure). The selected branch counts the bytes of K and V it must gather
   (each selected key row, once per (token, kv head)) over the gather
   bandwidth measured first by gather_bw: the same access pattern (64-key
   blocks of D-element rows from random block indices) with no arithmetic,
   the best of several ways to move it (bulk row copies, cp.async, loads
   into registers, tensor tiles of the copy engine). A forward's floor is the
   sum of its parts' floors; forward + backward adds 2.5x the forward
   attention's FLOPs over the peak.

   Every figure goes to stdout and, with --csv FILE, as rows
     device,date,commit,preset,B,T,H,Hkv,D,dtype,what,ms,floor_ms
   (what: fwd, fwd_bwd, stage_<name>; fwd_bwd_o_branch: forward + backward
   with the branch outputs kept (nsa_saved.o_branch); gather_bw: the micro-benchmark's time
   for 64K tokens x 4 kv heads x 16 blocks of K and V, 137 GB;
   topk_r<rows>_k<k>: top-k of [rows, 129280] fp32 scores, its floor the
   scores' bytes over the measured device-to-device copy bandwidth
   (topk_r<rows>_k2048_descending: rows in descending order);
   block_mask_r<rows>: the block mask of [rows, 129280] fp32 scores,
   blocks of 16 columns (8,080 a row), n = 64, the same floor;
   read_once_r<rows>: the measured time of a kernel that only reads those
   scores once, read_once_ms, beside the same floor).

   --decode times decoding instead (run_decode below): one query per
   sequence, contexts 8K, 64K, 128K, batch 1, 8, 64, rows what =
   decode_b<B>_ctx<T> (floor: the bytes a step reads over the copy
   bandwidth), decode_graph_b<B>_ctx<T> (the same step captured in a CUDA
   graph and replayed) and compress_append_b<B>_ctx<T>; --decode-ctx T
   only the context T.

   --chunked times chunked prefill (run_chunked below): 64, 256, 1,024 and
   4,096 new queries after a cache of 64K tokens (--decode-ctx T: T), rows
   what = chunk_prefill_q<chunk>_ctx<T> beside the forward's floor; with
   --tmin 1 --tmax 0 it runs alone.

   --digest prints, after each preset's forward, a hash (64-bit FNV-1a) of
   its output, its three lse and its selection, and takes the inputs'
   seeds without the clock: two builds that compute the same bits print
   the same lines (a check that a change to a kernel's schedule left its
   numbers alone).

   usage: bench_cuda [--tmin T] [--tmax T] [--tmul M] [--reps N] [--csv FILE]
                     [--commit SHA] [--presets paper,fla,tile] [--bwd]
                     [--topk] [--blockmask] [--decode] [--long T] [--digest]
                     [--chunked]
   --long T: also one sequence of T tokens at H=32, Hkv=8 (paper and fla
   presets): forward, forward + backward and the device memory held (what:
   peak_mem_gib, in GiB); --tmin 1 --tmax 0 runs it alone. */
#define NSA_IMPLEMENTATION
#define NSA_CUDA_IMPLEMENTATION
#include "../nsa_cuda.h"
#include "flops.h"

#include <algorithm>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <time.h>
#include <vector>

#define CK(x)                                                                  \
    do {                                                                       \
        cudaError_t e_ = (x);                                                  \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "CUDA: %s line %d\n", cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)
#define CN(x)                                                                  \
    do {                                                                       \
        nsa_status s_ = (x);                                                   \
        if (s_) {                                                              \
            fprintf(stderr, "%s: %s (line %d)\n", nsa_status_string(s_),       \
                    nsa_last_error(), __LINE__);                               \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

/* The clock's part of every input's seed: fresh inputs each run, except
   under --digest (0: the same inputs in every run and build). */
static uint64_t seed_clock = (uint64_t)time(NULL);

static void *drand_bf16(size_t n, uint64_t seed)
{
    std::vector<uint16_t> h(n);
    seed = seed * 0x9E3779B97F4A7C15ull + seed_clock;
    for (size_t i = 0; i < n; ++i) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        h[i] = nsa_f32_to_bf16((float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0));
    }
    void *d;
    CK(cudaMalloc(&d, n * 2));
    CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
}

/* Uniform bf16 in [-1, 1) from a hash of the index, on the device (the
   long runs' tensors are too large to fill from the host quickly). */
__global__ void fill_bf16_kernel(uint16_t *x, int64_t n, uint64_t seed)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        uint64_t z = (uint64_t)i * 0x9E3779B97F4A7C15ull + seed;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        z ^= z >> 31;
        float u = (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
        __nv_bfloat16 b = __float2bfloat16_rn(u);
        x[i] = *(uint16_t *)&b;
    }
}

static void *dfill_bf16(size_t n, uint64_t seed)
{
    void *d;
    CK(cudaMalloc(&d, n * 2));
    fill_bf16_kernel<<<4096, 256>>>((uint16_t *)d, (int64_t)n,
                                    seed * 0x2545F4914F6CDD1Dull + seed_clock);
    CK(cudaGetLastError());
    return d;
}

/* Median of reps timed calls after warm warm-up calls (3; the long runs,
   seconds a call, take 1). */
template <typename F> static float median_ms(F f, int reps, int warm = 3)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < warm; ++i) f();
    CK(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return t[t.size() / 2];
}

/* ---- gather bandwidth: the selected branch's access pattern, no math ---- */

/* Hopper bulk copies completing on an mbarrier (sm_90), for the gather
   benchmark's bulk-row variant (the library gathers with tensor tiles:
   faster).
   One instruction moves a whole row (global -> shared) through the copy
   engine, so a warp gathering scattered key rows spends one issue slot per
   row instead of one per 16 bytes. The barrier's phase completes when its
   one arrival (with the expected byte count) and all the bytes are in. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define NSA_HAS_BULK 1
#else
#define NSA_HAS_BULK 0
#endif

/* bytes % 16 == 0, both addresses 16-byte aligned. */
__device__ inline void bulk_row(void *dst, const void *src, unsigned bytes, uint64_t *bar)
{
#if NSA_HAS_BULK
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes "
                 "[%0], [%1], %2, [%3];\n"
                 :: "r"(nsak::smem_u32(dst)), "l"(src), "r"(bytes), "r"(nsak::smem_u32(bar)) : "memory");
#endif
}
/* One warp per (token, kv head): n blocks of 64 rows of K and of V (Dk =
   Dv = D), block indices from idx, through a 3-stage ring of 32-row chunks,
   one row per lane per chunk. Each chunk's first word is folded into a sum
   so the copies have a consumer. */
template <int D>
__global__ void __launch_bounds__(32) gather_kernel(const __nv_bfloat16 *k, const __nv_bfloat16 *v,
                                                    int Hkv, const int32_t *idx, int n,
                                                    float *sink)
{
    constexpr int NS = 3, KN = 32, LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)smem_raw, *Vs = Ks + NS * KN * LD;
    const int lane = threadIdx.x, h = blockIdx.y;
    const int32_t *blk = idx + (int64_t)blockIdx.x * n;
    const int nch = n * 2; /* 64-key block = 2 chunks */
    float acc = 0.f;
#if NSA_HAS_BULK
    __shared__ uint64_t bar[NS];
    if (lane == 0)
        for (int s = 0; s < NS; ++s) nsak::mbar_init(&bar[s], 1);
    __syncwarp();
    auto issue = [&](int c) {
        if (c >= nch) return;
        const int buf = c % NS;
        const int64_t row = (int64_t)__ldg(blk + c / 2) * 64 + (c & 1) * KN + lane;
        if (lane == 0) nsak::mbar_expect_tx(&bar[buf], KN * D * 4);
        bulk_row(Ks + (buf * KN + lane) * LD, k + (row * Hkv + h) * D, D * 2, &bar[buf]);
        bulk_row(Vs + (buf * KN + lane) * LD, v + (row * Hkv + h) * D, D * 2, &bar[buf]);
    };
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        nsak::fence_async_smem();
        issue(c + NS - 1);
        nsak::mbar_wait(&bar[c % NS], (unsigned)(c / NS) & 1u);
        acc += __bfloat162float(Ks[(c % NS) * KN * LD + lane * LD]) +
               __bfloat162float(Vs[(c % NS) * KN * LD + lane * LD]);
        __syncwarp();
    }
#else
    for (int c = 0; c < nch; ++c) {
        const int64_t row = (int64_t)__ldg(blk + c / 2) * 64 + (c & 1) * KN + lane;
        acc += __bfloat162float(k[(row * Hkv + h) * D]) + __bfloat162float(v[(row * Hkv + h) * D]);
    }
#endif
    (void)Vs;
    if (acc == 12345.f) *sink = acc; /* never true for these inputs; keeps acc live */
}

/* The same gather with 16-byte cp.async into a ring of NS stages (the
   selected branch's path where the copy engine is absent). */
template <int D, int NS>
__global__ void __launch_bounds__(32) gather_cpasync_kernel(const __nv_bfloat16 *k,
                                                            const __nv_bfloat16 *v, int Hkv,
                                                            const int32_t *idx, int n, float *sink)
{
    constexpr int KN = 32, LD = D + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __nv_bfloat16 *Ks = (__nv_bfloat16 *)smem_raw, *Vs = Ks + NS * KN * LD;
    const int lane = threadIdx.x, h = blockIdx.y;
    const int32_t *blk = idx + (int64_t)blockIdx.x * n;
    const int nch = n * 2;
    float acc = 0.f;
    auto issue = [&](int c) {
        if (c < nch) {
            const int buf = c % NS;
            const int64_t row0 = (int64_t)__ldg(blk + c / 2) * 64 + (c & 1) * KN;
            nsak::stage_rows<D, LD>(Ks + buf * KN * LD, KN, [&](int r) -> const __nv_bfloat16 * {
                return k + ((row0 + r) * Hkv + h) * D; }, lane, 32);
            nsak::stage_rows<D, LD>(Vs + buf * KN * LD, KN, [&](int r) -> const __nv_bfloat16 * {
                return v + ((row0 + r) * Hkv + h) * D; }, lane, 32);
        }
        nsak::cp_commit();
    };
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        issue(c + NS - 1);
        nsak::cp_wait<NS - 1>();
        __syncwarp();
        acc += __bfloat162float(Ks[(c % NS) * KN * LD + lane * LD]) +
               __bfloat162float(Vs[(c % NS) * KN * LD + lane * LD]);
        __syncwarp();
    }
    nsak::cp_wait<0>();
    if (acc == 12345.f) *sink = acc;
}

/* The same rows read into registers, 16 bytes a lane, a block's K (or V)
   rows all in flight: the most the memory system gives this pattern. */
template <int D>
__global__ void __launch_bounds__(128) gather_ldg_kernel(const __nv_bfloat16 *k,
                                                         const __nv_bfloat16 *v, int Hkv, int T,
                                                         const int32_t *idx, int n, float *sink)
{
    constexpr int PER_ROW = D / 8, LOADS = 64 * PER_ROW / 32; /* 16-byte pieces per lane */
    const int lane = threadIdx.x & 31, h = blockIdx.y;
    const int64_t tok = (int64_t)blockIdx.x * 4 + (threadIdx.x >> 5);
    if (tok >= T) return;
    const int32_t *blk = idx + tok * n;
    float acc = 0.f;
    for (int b = 0; b < 2 * n; ++b) {
        const __nv_bfloat16 *base = (b & 1) ? v : k;
        const int64_t row0 = (int64_t)__ldg(blk + b / 2) * 64;
        uint4 x[LOADS];
#pragma unroll
        for (int i = 0; i < LOADS; ++i) {
            const int piece = i * 32 + lane, r = piece / PER_ROW, c = piece % PER_ROW;
            x[i] = __ldg((const uint4 *)(base + ((row0 + r) * Hkv + h) * D) + c);
        }
#pragma unroll
        for (int i = 0; i < LOADS; ++i) acc += __uint_as_float(x[i].x & 0x3fffffffu);
    }
    if (acc == 12345.f) *sink = acc;
}

/* The same gather with the copy engine's tensor tiles: K and V as 3-D maps
   [T][Hkv][D] (D innermost), a stage is KEYS consecutive keys of one kv
   head, two 64-column boxes each for K and V (128-byte swizzle, the layout
   the tensor cores read). One lane issues; NS stages, NS - 1 in flight. */
template <int NS, int KEYS>
__global__ void __launch_bounds__(32) gather_tma_kernel(const __grid_constant__ CUtensorMap tk,
                                                        const __grid_constant__ CUtensorMap tv,
                                                        const int32_t *idx, int n, float *sink)
{
    constexpr int BOX = KEYS * 64 * 2, STAGE = 4 * BOX, PER_BLK = 64 / KEYS;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    unsigned char *st = (unsigned char *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023);
    __shared__ uint64_t bar[NS];
    const int lane = threadIdx.x, h = blockIdx.y;
    const int32_t *blk = idx + (int64_t)blockIdx.x * n;
    const int nch = n * PER_BLK;
    float acc = 0.f;
#if NSA_HAS_BULK
    if (lane == 0)
        for (int s = 0; s < NS; ++s) nsak::mbar_init(&bar[s], 1);
    __syncwarp();
    auto issue = [&](int c) {
        if (c >= nch || lane != 0) return;
        const int buf = c % NS, s0 = __ldg(blk + c / PER_BLK) * 64 + (c % PER_BLK) * KEYS;
        unsigned char *d = st + buf * STAGE;
        nsak::mbar_expect_tx(&bar[buf], STAGE);
        nsak::tma_box3(d, &tk, 0, h, s0, &bar[buf]);
        nsak::tma_box3(d + BOX, &tk, 64, h, s0, &bar[buf]);
        nsak::tma_box3(d + 2 * BOX, &tv, 0, h, s0, &bar[buf]);
        nsak::tma_box3(d + 3 * BOX, &tv, 64, h, s0, &bar[buf]);
    };
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        nsak::fence_async_smem();
        issue(c + NS - 1);
        nsak::mbar_wait(&bar[c % NS], (unsigned)(c / NS) & 1u);
        const __nv_bfloat16 *x = (const __nv_bfloat16 *)(st + (c % NS) * STAGE);
        acc += __bfloat162float(x[lane * 64]) + __bfloat162float(x[2 * BOX / 2 + lane * 64]);
        __syncwarp();
    }
#else
    (void)st; (void)bar; (void)lane; (void)h; (void)blk; (void)nch; (void)tk; (void)tv; (void)STAGE;
#endif
    if (acc == 12345.f) *sink = acc;
}

template <int NS, int KEYS>
static float time_gather_tma(int T, int Hkv, const void *k, const void *v, const int32_t *idx,
                             int n, float *sink, int reps)
{
    const size_t sm = (size_t)NS * KEYS * 64 * 2 * 4 + 1024;
    CK(cudaFuncSetAttribute(gather_tma_kernel<NS, KEYS>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm));
    const PFN_cuTensorMapEncodeTiled_v12000 enc = nsah::encode_tiled();
    CUtensorMap tk, tv;
    if (!enc || !nsah::tile_map(enc, &tk, k, T, Hkv, 128, (int64_t)Hkv * 128, 128, 1, KEYS) ||
        !nsah::tile_map(enc, &tv, v, T, Hkv, 128, (int64_t)Hkv * 128, 128, 1, KEYS))
        return INFINITY; /* no copy engine maps here */
    return median_ms([&] {
        gather_tma_kernel<NS, KEYS><<<dim3((unsigned)T, (unsigned)Hkv), 32, sm>>>(tk, tv, idx, n, sink);
        CK(cudaGetLastError());
    }, reps);
}

/* Measured bytes per second of that pattern at T tokens (n = 16 blocks
   each, random indices), median of reps: the best of the ways above. */
static double gather_bw(int T, int Hkv, int n, int reps, float *ms_out)
{
    const int D = 128, nblk = T / 64;
    std::vector<int32_t> h((size_t)T * n);
    uint64_t s = 0x1234567ull + seed_clock;
    for (auto &x : h) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; x = (int32_t)((s >> 11) % nblk); }
    int32_t *idx;
    CK(cudaMalloc(&idx, h.size() * 4));
    CK(cudaMemcpy(idx, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    void *k = drand_bf16((size_t)T * Hkv * D, 11), *v = drand_bf16((size_t)T * Hkv * D, 12);
    float *sink;
    CK(cudaMalloc(&sink, 4));
    const __nv_bfloat16 *kk = (const __nv_bfloat16 *)k, *vv = (const __nv_bfloat16 *)v;
    const size_t sm3 = (size_t)2 * 3 * 32 * (D + 8) * 2, sm2 = (size_t)2 * 2 * 32 * (D + 8) * 2;
    CK(cudaFuncSetAttribute(gather_kernel<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm3));
    CK(cudaFuncSetAttribute(gather_cpasync_kernel<128, 3>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm3));
    CK(cudaFuncSetAttribute(gather_cpasync_kernel<128, 2>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm2));
    const float ms_bulk = median_ms([&] {
        gather_kernel<128><<<dim3((unsigned)T, (unsigned)Hkv), 32, sm3>>>(kk, vv, Hkv, idx, n, sink);
        CK(cudaGetLastError());
    }, reps);
    const float ms_cp3 = median_ms([&] {
        gather_cpasync_kernel<128, 3><<<dim3((unsigned)T, (unsigned)Hkv), 32, sm3>>>(kk, vv, Hkv, idx, n, sink);
        CK(cudaGetLastError());
    }, reps);
    const float ms_cp2 = median_ms([&] {
        gather_cpasync_kernel<128, 2><<<dim3((unsigned)T, (unsigned)Hkv), 32, sm2>>>(kk, vv, Hkv, idx, n, sink);
        CK(cudaGetLastError());
    }, reps);
    const float ms_ldg = median_ms([&] {
        gather_ldg_kernel<128><<<dim3((unsigned)(T + 3) / 4, (unsigned)Hkv), 128>>>(kk, vv, Hkv, T, idx, n, sink);
        CK(cudaGetLastError());
    }, reps);
    const float ms_tma2 = time_gather_tma<2, 32>(T, Hkv, k, v, idx, n, sink, reps),
                ms_tma3 = time_gather_tma<3, 64>(T, Hkv, k, v, idx, n, sink, reps);
    const double bytes = (double)T * Hkv * n * 64 * D * 2 * 2;
    const struct { const char *name; float ms; } way[] = {
        {"bulk rows, 3 stages", ms_bulk},
        {"cp.async, 3 stages", ms_cp3},
        {"cp.async, 2 stages", ms_cp2},
        {"registers", ms_ldg},
        {"tensor tiles, 2 stages of 32 keys", ms_tma2},
        {"tensor tiles, 3 stages of 64 keys", ms_tma3},
    };
    printf("gather of %.1f GB:\n", bytes / 1e9);
    float ms = INFINITY;
    for (const auto &w : way) {
        printf("  %-34s %8.3f ms  %5.2f TB/s\n", w.name, w.ms, bytes / w.ms / 1e9);
        ms = std::min(ms, w.ms);
    }
    cudaFree(idx); cudaFree(k); cudaFree(v); cudaFree(sink);
    *ms_out = ms;
    return bytes / (ms * 1e-3);
}

/* ---- one preset at one length ------------------------------------------ */

struct Ctx {
    FILE *csv;
    std::string device, date, commit;
    double peak_flops, gather_Bps;
    bool digest;
};

/* 64-bit FNV-1a of n bytes of device memory, continuing from h */
static uint64_t digest_dev(const void *p, size_t n, uint64_t h = 14695981039346656037ull)
{
    std::vector<unsigned char> b(n);
    CK(cudaMemcpy(b.data(), p, n, cudaMemcpyDeviceToHost));
    for (unsigned char x : b) h = (h ^ x) * 1099511628211ull;
    return h;
}

static void emit(const Ctx &c, const char *preset, int T, const char *what, double ms,
                 double floor_ms, int H = 64, int Hkv = 4)
{
    if (!c.csv) return;
    fprintf(c.csv, "%s,%s,%s,%s,1,%d,%d,%d,128,bf16,%s,%.4f,", c.device.c_str(),
            c.date.c_str(), c.commit.c_str(), preset, T, H, Hkv, what, ms);
    if (floor_ms > 0) fprintf(c.csv, "%.4f", floor_ms);
    fprintf(c.csv, "\n");
    fflush(c.csv);
}

/* One sequence of T tokens: inputs (fill: random bf16 in [-1, 1)), the
   outputs, saved tensors, gradients and workspace of a forward + backward,
   all on the device. In place only (x points at cu). */
struct Run {
    int32_t cu[2];
    int32_t *cud;
    nsa_batch x;
    nsa_sizes sz;
    size_t wsb;
    void *ws, *o, *d_o, *dq, *dk, *dv;
    nsa_saved sv;
    nsa_grads gr;
    Run(const Run &) = delete;
    Run &operator=(const Run &) = delete;
    Run(const nsa_config &cfg, int T, int H, int Hkv, int D, void *(*fill)(size_t, uint64_t))
    {
        cu[0] = 0;
        cu[1] = T;
        CK(cudaMalloc(&cud, 8));
        CK(cudaMemcpy(cud, cu, 8, cudaMemcpyHostToDevice));
        memset(&x, 0, sizeof x);
        x.B = 1; x.T = T; x.cu_seqlens = cu; x.cu_seqlens_dev = cud;
        x.H = H; x.Hkv = Hkv; x.Dk = D; x.Dv = D; x.dtype = NSA_BF16;
        x.q = fill((size_t)T * H * D, 1);
        x.k = fill((size_t)T * Hkv * D, 2);
        x.v = fill((size_t)T * Hkv * D, 3);
        CN(nsa_sizes_get(&cfg, &x, &sz));
        CN(nsa_cuda_workspace_size(&cfg, &x, &wsb));
        d_o = fill((size_t)sz.o, 4);
        CK(cudaMalloc(&ws, wsb));
        CK(cudaMalloc(&o, sz.o * 2));
        CK(cudaMalloc(&dq, sz.q * 2));
        CK(cudaMalloc(&dk, sz.k * 2));
        CK(cudaMalloc(&dv, sz.v * 2));
        memset(&sv, 0, sizeof sv);
        CK(cudaMalloc((void **)&sv.lse_cmp, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_slc, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_win, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.sel_idx, sz.sel_idx * 4));
        CK(cudaMalloc((void **)&sv.sel_count, sz.sel_count * 4));
        CK(cudaMalloc(&sv.k_cmp, sz.k_cmp * 2));
        CK(cudaMalloc(&sv.v_cmp, sz.v_cmp * 2));
        memset(&gr, 0, sizeof gr);
        gr.dq = dq; gr.dk = dk; gr.dv = dv;
    }
    ~Run()
    {
        void *ps[] = {cud, (void *)x.q, (void *)x.k, (void *)x.v, ws, o, d_o, dq, dk, dv,
                      sv.lse_cmp, sv.lse_slc, sv.lse_win, sv.sel_idx, sv.sel_count, sv.k_cmp,
                      sv.v_cmp};
        for (void *p : ps) cudaFree(p);
    }
};

static void run_preset(const Ctx &c, const char *name, nsa_config cfg, int T, int reps, bool bwd)
{
    const int H = 64, Hkv = 4, D = 128;
    Run R(cfg, T, H, Hkv, D, drand_bf16);
    const nsa_batch &x = R.x;
    const nsa_sizes &sz = R.sz;
    const size_t wsb = R.wsb;
    void *ws = R.ws, *o = R.o, *d_o = R.d_o;
    nsa_saved &sv = R.sv;
    nsa_grads &gr = R.gr;
    float *ob, *lb;
    CK(cudaMalloc((void **)&ob, sz.o * 4));
    CK(cudaMalloc((void **)&lb, sz.lse * 4));

    float t_fwd = median_ms([&] { CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0)); }, reps);
    if (c.digest)
        printf("digest %s %d: o %016llx lse %016llx sel %016llx\n", name, T,
               (unsigned long long)digest_dev(o, sz.o * 2),
               (unsigned long long)digest_dev(sv.lse_win, sz.lse * 4,
                                              digest_dev(sv.lse_slc, sz.lse * 4,
                                                         digest_dev(sv.lse_cmp, sz.lse * 4))),
               (unsigned long long)digest_dev(sv.sel_count, sz.sel_count * 4,
                                              digest_dev(sv.sel_idx, sz.sel_idx * 4)));
    /* useful work from the forward's own selection */
    std::vector<int32_t> hi((size_t)sz.sel_idx), hc((size_t)sz.sel_count);
    CK(cudaMemcpy(hi.data(), sv.sel_idx, hi.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hc.data(), sv.sel_count, hc.size() * 4, cudaMemcpyDeviceToHost));
    nsa_flops fl = nsa_useful_flops(&cfg, &x, hi.data(), hc.data());
    const double pk = c.peak_flops / 1e3; /* FLOP per ms */
    const double f_cmp = fl.keys[0] * 4.0 * D, f_win = fl.keys[2] * 4.0 * D;
    const double f_sel = fl.fwd - (fl.keys[0] + fl.keys[1] + fl.keys[2]) * 4.0 * D;
    const double slc_bytes = fl.keys[1] / (H / Hkv) * D * 2 * 2;
    const double fl_cmp = f_cmp / pk, fl_win = f_win / pk, fl_sel = f_sel / pk;
    const double fl_slc = slc_bytes / (c.gather_Bps / 1e3);
    const double fl_fwd = fl_cmp + fl_win + fl_sel + fl_slc;

    nsa_config cw = cfg;
    cw.branches = NSA_BRANCH_CMP | NSA_BRANCH_WIN;
    float t_cw = median_ms([&] { CN(nsa_cuda_forward(&cw, &x, NULL, o, &sv, ws, wsb, 0)); }, reps);
    float t_cz = median_ms([&] { CN(nsa_cuda_compress(&cfg, &x, sv.k_cmp, sv.v_cmp, ws, wsb, 0)); }, reps);
    float t_sel = median_ms([&] { CN(nsa_cuda_select(&cfg, &x, sv.k_cmp, sv.sel_idx, sv.sel_count, ws, wsb, 0)); }, reps);
    float t_slc = median_ms([&] { CN(nsa_cuda_attend_slc(&cfg, &x, sv.sel_idx, sv.sel_count, ob, lb, ws, wsb, 0)); }, reps);
    float t_cmp = median_ms([&] { CN(nsa_cuda_attend_cmp(&cfg, &x, sv.k_cmp, sv.v_cmp, ob, lb, ws, wsb, 0)); }, reps);
    float t_win = median_ms([&] { CN(nsa_cuda_attend_win(&cfg, &x, ob, lb, ws, wsb, 0)); }, reps);
    /* the backward alone, whole and one branch at a time (each after its
       own forward, which saved what the backward reads). Floors: 2.5x the
       forward's useful FLOPs (the FlashAttention convention); the selected
       branch at least gathers its K/V blocks once more (for dQ) and reads
       Q and dO once per chosen block (a quarter of those bytes when
       G = 16 heads share a block), 1.25x the forward's gather. */
    struct { const char *what; unsigned br; double floor; float ms; } bs[] = {
        {"bwd", cfg.branches, 0, 0.f},
        {"bwd_stage_cmp", NSA_BRANCH_CMP, 2.5 * f_cmp / pk, 0.f},
        {"bwd_stage_slc", NSA_BRANCH_SLC,
         std::max(2.5 * fl.keys[1] * 4.0 * D / pk, 1.25 * fl_slc), 0.f},
        {"bwd_stage_win", NSA_BRANCH_WIN, 2.5 * f_win / pk, 0.f}};
    bs[0].floor = bs[1].floor + bs[2].floor + bs[3].floor;
    float t_fb = 0.f;
    const double fl_fb = fl_fwd + bs[0].floor;
    if (bwd)
        t_fb = median_ms([&] {
            CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0));
            CN(nsa_cuda_backward(&cfg, &x, NULL, d_o, &sv, &gr, ws, wsb, 0));
        }, reps > 10 && T >= 65536 ? 10 : reps);

    /* the same with the forward's branch outputs kept for the backward
       (nsa_saved.o_branch, 3 x [T, H, D] fp32): no branch recomputed for
       Delta; skipped when that memory is not there */
    float t_fbo = 0.f;
    float *obr = NULL;
    if (bwd && cudaMalloc((void **)&obr, (size_t)sz.o * 3 * 4) == cudaSuccess) {
        sv.o_branch = obr;
        t_fbo = median_ms([&] {
            CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0));
            CN(nsa_cuda_backward(&cfg, &x, NULL, d_o, &sv, &gr, ws, wsb, 0));
        }, reps > 10 && T >= 65536 ? 10 : reps);
        sv.o_branch = NULL;
        CK(cudaFree(obr));
    }
    (void)cudaGetLastError(); /* a failed cudaMalloc above is not an error */

    if (bwd)
        for (auto &b : bs) {
            if (!(cfg.branches & b.br)) continue;
            nsa_config cb = cfg;
            cb.branches = b.br;
            CN(nsa_cuda_forward(&cb, &x, NULL, o, &sv, ws, wsb, 0));
            b.ms = median_ms([&] { CN(nsa_cuda_backward(&cb, &x, NULL, d_o, &sv, &gr, ws, wsb, 0)); },
                             reps > 10 && T >= 65536 ? 10 : reps);
        }

    printf("%-6s %7d | %8.3f | %8.3f %7.3f | %8.3f %7.3f | %8.3f %7.3f | %8.3f %7.3f | %9.3f %8.3f",
           name, T, t_cz, t_sel, fl_sel, t_slc, fl_slc, t_cmp, fl_cmp, t_win, fl_win, t_fwd, fl_fwd);
    if (bwd) printf(" | %9.3f %8.3f", t_fb, fl_fb);
    printf(" | cmp+win fwd %.3f\n", t_cw);
    if (t_fbo > 0.f) printf("    fwd_bwd, branch outputs kept (o_branch) %9.3f ms  floor %8.3f\n",
                            t_fbo, fl_fb);
    if (bwd)
        for (auto &b : bs)
            if (cfg.branches & b.br) {
                printf("    %-14s %9.3f ms  floor %8.3f\n", b.what, b.ms, b.floor);
                emit(c, name, T, b.what, b.ms, b.floor);
            }
    emit(c, name, T, "fwd", t_fwd, fl_fwd);
    if (bwd) emit(c, name, T, "fwd_bwd", t_fb, fl_fb);
    if (t_fbo > 0.f) emit(c, name, T, "fwd_bwd_o_branch", t_fbo, fl_fb);
    emit(c, name, T, "fwd_cmp_win", t_cw, fl_cmp + fl_win);
    emit(c, name, T, "stage_compress", t_cz, 0);
    emit(c, name, T, "stage_select", t_sel, fl_sel);
    emit(c, name, T, "stage_slc", t_slc, fl_slc);
    emit(c, name, T, "stage_cmp", t_cmp, fl_cmp);
    emit(c, name, T, "stage_win", t_win, fl_win);
    cudaFree(ob);
    cudaFree(lb);
}

/* Device-to-device copy bandwidth (read + write bytes over time): the
   read-once floor of a top-k is its scores' bytes over this. */
static double copy_bw(int reps)
{
    const size_t n = (size_t)1 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 0, n));
    float ms = median_ms([&] { CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0)); }, reps);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * n / (ms * 1e-3);
}

/* One long sequence (--long T): H=32, Hkv=8, D=128, forward and forward +
   backward (1 warm-up, median of reps), and the device memory the run
   holds (caller's tensors, saved tensors, workspace: the library allocates
   nothing), in GiB in the ms column of what = peak_mem_gib. */
static void run_long(const Ctx &c, const char *name, nsa_config cfg, int T, int reps)
{
    const int H = 32, Hkv = 8, D = 128;
    size_t free0, total;
    CK(cudaMemGetInfo(&free0, &total));
    Run R(cfg, T, H, Hkv, D, dfill_bf16);
    const nsa_batch &x = R.x;
    const nsa_sizes &sz = R.sz;
    const size_t wsb = R.wsb;
    void *ws = R.ws, *o = R.o, *d_o = R.d_o;
    nsa_saved &sv = R.sv;
    nsa_grads &gr = R.gr;
    size_t free1;
    CK(cudaMemGetInfo(&free1, &total));
    const double gib = (double)(free0 - free1) / (1u << 30);
    const double caller = (double)(sz.q * 2 + sz.k * 2 + sz.v * 2 + sz.o * 2 * 2 + sz.q * 2 +
                                   sz.k * 2 + sz.v * 2) / (1u << 30);
    float t_fwd = median_ms([&] { CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0)); },
                            reps, 1);
    float t_fb = median_ms([&] {
        CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0));
        CN(nsa_cuda_backward(&cfg, &x, NULL, d_o, &sv, &gr, ws, wsb, 0));
    }, reps, 1);
    printf("%-6s T=%d H=%d Hkv=%d: fwd %.1f ms, fwd+bwd %.1f ms, device memory %.1f GiB "
           "(caller's q k v o dO dq dk dv %.1f GiB, workspace %.1f GiB)\n", name, T, H, Hkv,
           t_fwd, t_fb, gib, caller, wsb / (double)(1u << 30));
    emit(c, name, T, "fwd", t_fwd, 0, H, Hkv);
    emit(c, name, T, "fwd_bwd", t_fb, 0, H, Hkv);
    emit(c, name, T, "peak_mem_gib", gib, 0, H, Hkv);
}

/* Reads [rows, cols] fp32 once (16-byte loads, four of them in flight a
   thread, cols % 4 == 0) and writes a sum a CTA, so that nothing is
   skipped: grid (ctas a row, rows). */
__global__ void read_once_kernel(const float4 *x, int64_t cols4, int per_cta4, float *sink)
{
    const float4 *row = x + blockIdx.y * cols4;
    const int64_t c0 = (int64_t)blockIdx.x * per_cta4, c1 = min(c0 + per_cta4, cols4);
    float acc = 0.f;
    for (int64_t i = c0 + threadIdx.x; i < c1; i += 4 * (int64_t)blockDim.x) {
        float4 v[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int64_t j = i + u * (int64_t)blockDim.x;
            v[u] = j < c1 ? __ldcs(row + j) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) acc += v[u].x + v[u].y + v[u].z + v[u].w;
    }
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) atomicAdd(sink + blockIdx.y * gridDim.x + blockIdx.x, acc);
}

/* The time to read [rows, cols] fp32 scores once at this size, measured:
   read_once_kernel timed as the calls are (CUDA events around one launch,
   median of reps), the best of CTAs reading 4 to 64 KB each at 256 or 512
   threads. A call that reads the scores once cannot be faster; at few rows
   the copy bandwidth's floor (bytes / copy_bw) leaves out the start and
   the tail of a kernel that moves only a few MB. */
static float read_once_ms(const float *d, int64_t rows, int64_t cols, int reps)
{
    const int64_t cols4 = cols / 4;
    float best = 1e30f, *sink;
    const int64_t max_ctas = rows * nsak::cdiv64(cols4, 256);
    CK(cudaMalloc(&sink, (size_t)max_ctas * 4));
    CK(cudaMemset(sink, 0, (size_t)max_ctas * 4));
    for (int per4 : {256, 1024, 4096})
        for (int threads : {256, 512}) {
            const dim3 grid((unsigned)nsak::cdiv64(cols4, per4), (unsigned)rows);
            const float t = median_ms([&] {
                read_once_kernel<<<grid, threads>>>((const float4 *)d, cols4, per4, sink);
                CK(cudaGetLastError());
            }, reps);
            best = std::min(best, t);
        }
    cudaFree(sink);
    return best;
}

/* The measured read-once time of [rows, cols] scores beside the copy
   bandwidth's floor: printed, and one CSV row a size (what =
   read_once_r<rows>) however many runs print it. */
static float read_once_row(const Ctx &c, const float *d, int rows, int64_t cols, double fl,
                           int reps)
{
    static std::vector<int> emitted;
    const float t = read_once_ms(d, rows, cols, reps);
    printf("%6d rows: reading the scores once takes %.4f ms (measured; %.2fx the copy "
           "bandwidth's floor %.4f)\n", rows, t, t / fl, fl);
    if (c.csv && std::find(emitted.begin(), emitted.end(), rows) == emitted.end()) {
        fprintf(c.csv, "%s,%s,%s,topk,1,%lld,,,,fp32,read_once_r%d,%.4f,%.4f\n",
                c.device.c_str(), c.date.c_str(), c.commit.c_str(), (long long)cols, rows, t, fl);
        emitted.push_back(rows);
    }
    return t;
}

/* Top-k of [rows, 129280] fp32 scores, uniform in [0, 1) (k = 64, 1,024,
   2,048), and of rows in descending order (k = 2,048: the order that
   defeats the stream's guessed first floor, kernels/nsa_topk.cuh, so each
   row is read twice; what = topk_r<rows>_k<k>_descending). */
static void run_topk(const Ctx &c, int reps)
{
    const int64_t cols = 129280;
    const double bw = copy_bw(reps);
    printf("\ntop-k per row, %lld columns, fp32 scores, median of %d; floor = reading the "
           "scores once at the copy bandwidth (%.2f TB/s)\n", (long long)cols, reps, bw / 1e12);
    printf("%6s %6s %10s %10s %10s %8s %12s\n", "rows", "k", "order", "ms", "floor ms", "x floor",
           "GB/s (1 read)");
    for (int rows : {32, 2048}) {
        std::vector<float> h((size_t)rows * cols);
        float *d;
        CK(cudaMalloc(&d, h.size() * 4));
        for (bool descending : {false, true}) {
            uint64_t s = 12345 + seed_clock;
            for (size_t i = 0; i < h.size(); ++i) {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                h[i] = descending ? 1.0f - (float)(i % cols) / (float)cols
                                  : (float)((s >> 11) * (1.0 / 9007199254740992.0));
            }
            CK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
            if (!descending) read_once_row(c, d, rows, cols, rows * cols * 4.0 / bw * 1e3, reps);
            for (int k : {64, 1024, 2048}) {
                if (descending && k != 2048) continue;
                int32_t *oi, *oc;
                CK(cudaMalloc(&oi, (size_t)rows * k * 4));
                CK(cudaMalloc(&oc, (size_t)rows * 4));
                size_t wsb;
                CN(nsa_cuda_topk_workspace_size(rows, cols, k, &wsb));
                void *ws = NULL;
                if (wsb) CK(cudaMalloc(&ws, wsb));
                float t = median_ms([&] { CN(nsa_cuda_topk_rows(d, rows, cols, cols, NULL, NULL, k, oi, oc, ws, wsb, 0)); }, reps);
                const double bytes = rows * cols * 4.0, fl = bytes / bw * 1e3;
                printf("%6d %6d %10s %10.4f %10.4f %8.2f %12.1f\n", rows, k,
                       descending ? "descending" : "uniform", t, fl, t / fl, bytes / (t * 1e-3) / 1e9);
                char what[64];
                snprintf(what, sizeof what, "topk_r%d_k%d%s", rows, k, descending ? "_descending" : "");
                if (c.csv)
                    fprintf(c.csv, "%s,%s,%s,topk,1,%lld,,,,fp32,%s,%.4f,%.4f\n", c.device.c_str(),
                            c.date.c_str(), c.commit.c_str(), (long long)cols, what, t, fl);
                cudaFree(oi); cudaFree(oc); cudaFree(ws);
            }
        }
        cudaFree(d);
    }
}

/* Block masks (nsa_cuda_topk_blocks) of [rows, 129280] fp32 scores
   (uniform in [0, 1)), blocks of 16 columns (8,080 a row), the top 64 a
   row, each beside the read-once floor of the scores (as run_topk). */
static void run_blockmask(const Ctx &c, int reps)
{
    const int64_t cols = 129280, block = 16, nb = (cols + block - 1) / block;
    const int n = 64;
    const double bw = copy_bw(reps);
    printf("\nblock mask per row, %lld columns in blocks of %lld (%lld blocks), top %d, fp32 "
           "scores, median of %d; floor = reading the scores once at the copy bandwidth "
           "(%.2f TB/s)\n", (long long)cols, (long long)block, (long long)nb, n, reps, bw / 1e12);
    printf("%6s %10s %10s %8s %12s\n", "rows", "ms", "floor ms", "x floor", "GB/s (1 read)");
    for (int rows : {32, 2048}) {
        std::vector<float> h((size_t)rows * cols);
        uint64_t s = 12345 + seed_clock;
        for (auto &v : h) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; v = (float)((s >> 11) * (1.0 / 9007199254740992.0)); }
        float *d;
        uint8_t *mask;
        int32_t *cnt;
        CK(cudaMalloc(&d, h.size() * 4));
        CK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
        CK(cudaMalloc(&mask, (size_t)rows * nb));
        CK(cudaMalloc(&cnt, (size_t)rows * 4));
        size_t wsb;
        CN(nsa_cuda_topk_blocks_workspace_size(rows, cols, block, n, &wsb));
        void *ws = NULL;
        if (wsb) CK(cudaMalloc(&ws, wsb));
        float t = median_ms([&] {
            CN(nsa_cuda_topk_blocks(d, rows, cols, cols, NULL, NULL, block, n, mask, cnt, ws, wsb, 0));
        }, reps);
        const double bytes = rows * cols * 4.0, fl = bytes / bw * 1e3;
        const float ro = read_once_row(c, d, rows, cols, fl, reps);
        printf("%6d %10.4f %10.4f %8.2f %12.1f   (%.2fx the measured read)\n", rows, t, fl, t / fl,
               bytes / (t * 1e-3) / 1e9, t / ro);
        char what[64];
        snprintf(what, sizeof what, "block_mask_r%d", rows);
        if (c.csv)
            fprintf(c.csv, "%s,%s,%s,topk,1,%lld,,,,fp32,%s,%.4f,%.4f\n", c.device.c_str(),
                    c.date.c_str(), c.commit.c_str(), (long long)cols, what, t, fl);
        cudaFree(d); cudaFree(mask); cudaFree(cnt); cudaFree(ws);
    }
}

/* B sequences of nk keys whose last nq positions are the queries (decoding:
   nq = 1; chunked prefill), paper-style caller-compressed: the batch, its
   random q, k, v, K_cmp / V_cmp compressed from k, v, the output, the
   workspace and the saved outputs (lse, selection), freed with it. */
struct SuffixBatch {
    std::vector<int32_t> cu, cuq;
    int32_t *cud = nullptr, *cuqd = nullptr;
    nsa_batch x;
    nsa_sizes sz;
    nsa_saved sv;
    void *kc = nullptr, *vc = nullptr, *o = nullptr, *ws = nullptr;
    size_t wsb = 0;
    SuffixBatch(const nsa_config &cfg, int B, int nk, int nq, int H, int Hkv, int D)
        : cu(B + 1), cuq(B + 1)
    {
        for (int b = 0; b <= B; ++b) { cu[b] = b * nk; cuq[b] = b * nq; }
        CK(cudaMalloc(&cud, (B + 1) * 4));
        CK(cudaMalloc(&cuqd, (B + 1) * 4));
        CK(cudaMemcpy(cud, cu.data(), (B + 1) * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(cuqd, cuq.data(), (B + 1) * 4, cudaMemcpyHostToDevice));
        memset(&x, 0, sizeof x);
        x.B = B; x.T = (int64_t)B * nk; x.TQ = (int64_t)B * nq;
        x.cu_seqlens = cu.data(); x.cu_seqlens_q = cuq.data();
        x.cu_seqlens_dev = cud; x.cu_seqlens_q_dev = cuqd;
        x.H = H; x.Hkv = Hkv; x.Dk = D; x.Dv = D; x.dtype = NSA_BF16;
        x.q = x.k = x.v = x.k_cmp = x.v_cmp = (const void *)16; /* sizes only */
        CN(nsa_sizes_get(&cfg, &x, &sz));
        x.q = drand_bf16((size_t)sz.q, 1);
        x.k = drand_bf16((size_t)sz.k, 2);
        x.v = drand_bf16((size_t)sz.v, 3);
        CK(cudaMalloc(&kc, (size_t)sz.k_cmp * 2));
        CK(cudaMalloc(&vc, (size_t)sz.v_cmp * 2));
        CK(cudaMalloc(&o, (size_t)sz.o * 2));
        x.k_cmp = kc; x.v_cmp = vc;
        CN(nsa_cuda_workspace_size(&cfg, &x, &wsb));
        CK(cudaMalloc(&ws, wsb));
        CN(nsa_cuda_compress(&cfg, &x, kc, vc, ws, wsb, 0));
        memset(&sv, 0, sizeof sv);
        CK(cudaMalloc((void **)&sv.lse_cmp, (size_t)sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_slc, (size_t)sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_win, (size_t)sz.lse * 4));
        CK(cudaMalloc((void **)&sv.sel_idx, (size_t)sz.sel_idx * 4));
        CK(cudaMalloc((void **)&sv.sel_count, (size_t)sz.sel_count * 4));
    }
    SuffixBatch(const SuffixBatch &) = delete;
    SuffixBatch &operator=(const SuffixBatch &) = delete;
    ~SuffixBatch()
    {
    }
};

/* ---- decoding: one query per sequence against a long cache -------------
   Paper preset, H=64, Hkv=4, D=128, bf16, caller-compressed (K_cmp kept up
   to date by nsa_cuda_compress_append, timed on its own for one appended
   token per sequence). The floor of a step is the bytes it must read over
   the measured device-to-device copy bandwidth: per (sequence, kv head),
   K_cmp and V_cmp, the n selected blocks of l' keys, and the window's keys
   outside the forced local blocks (those are read once), K and V. */
static void run_decode(const Ctx &c, int reps, int ctx_only)
{
    const int H = 64, Hkv = 4, D = 128;
    const double bw = copy_bw(reps);
    nsa_config cfg = nsa_config_paper();
    cfg.caller_compressed = 1;
    printf("\ndecoding: paper preset, H=%d Hkv=%d D=%d bf16, one query per sequence, median of "
           "%d; floor = bytes a step reads at the copy bandwidth (%.2f TB/s)\n", H, Hkv, D, reps,
           bw / 1e12);
    printf("%4s %7s | %9s %9s %9s %7s %7s | %11s\n", "B", "ctx", "step ms", "graph ms",
           "floor ms", "of bw", "GB", "append ms");
    for (int T : {8192, 65536, 131072})
        for (int B : {1, 8, 64}) {
            if (ctx_only && T != ctx_only) continue;
            SuffixBatch sb(cfg, B, T, 1, H, Hkv, D);
            nsa_batch &x = sb.x;
            std::vector<int32_t> old(B, T - 1);
            int32_t *oldd;
            CK(cudaMalloc(&oldd, B * 4));
            CK(cudaMemcpy(oldd, old.data(), B * 4, cudaMemcpyHostToDevice));
            const float t_step = median_ms([&] {
                CN(nsa_cuda_forward(&cfg, &x, NULL, sb.o, &sb.sv, sb.ws, sb.wsb, 0)); }, reps);
            /* the same step captured once and replayed, as a decoding loop
               runs it: no host work between kernels */
            cudaStream_t gs;
            CK(cudaStreamCreate(&gs)); /* blocking: ordered with the events of stream 0 */
            cudaGraph_t graph;
            cudaGraphExec_t gexec;
            CK(cudaStreamBeginCapture(gs, cudaStreamCaptureModeThreadLocal));
            CN(nsa_cuda_forward(&cfg, &x, NULL, sb.o, &sb.sv, sb.ws, sb.wsb, gs));
            CK(cudaStreamEndCapture(gs, &graph));
            CK(cudaGraphInstantiate(&gexec, graph, 0));
            const float t_graph = median_ms([&] { CK(cudaGraphLaunch(gexec, gs)); }, reps);
            CK(cudaGraphExecDestroy(gexec));
            CK(cudaGraphDestroy(graph));
            CK(cudaStreamDestroy(gs));
            const float t_app = median_ms([&] {
                CN(nsa_cuda_compress_append(&cfg, &x, old.data(), oldd, sb.kc, sb.vc, sb.ws,
                                            sb.wsb, 0)); }, reps);
            const int64_t nc = nsa_cmp_blocks(T, cfg.l, cfg.d);
            const int64_t win_extra = std::max<int64_t>(0, std::min<int64_t>(cfg.w, T) -
                                                               (int64_t)cfg.n_local * cfg.lp);
            const int64_t slc_keys = std::min<int64_t>((int64_t)cfg.n * cfg.lp, T);
            const double bytes = (double)B * Hkv * (nc + slc_keys + win_extra) * 2 * D * 2;
            const double fl = bytes / bw * 1e3;
            printf("%4d %7d | %9.4f %9.4f %9.4f %6.1f%% %7.3f | %11.4f\n", B, T, t_step, t_graph,
                   fl, 100.0 * fl / t_graph, bytes / 1e9, t_app);
            /* one CSV row; floor_ms empty where there is none */
            auto row = [&](const char *stem, float ms, const char *floor_ms) {
                if (c.csv)
                    fprintf(c.csv, "%s,%s,%s,paper,%d,%d,%d,%d,%d,bf16,%s_b%d_ctx%d,%.4f,%s\n",
                            c.device.c_str(), c.date.c_str(), c.commit.c_str(), B, T, H, Hkv, D,
                            stem, B, T, ms, floor_ms);
            };
            char fls[32];
            snprintf(fls, sizeof fls, "%.4f", fl);
            row("decode", t_step, fls);
            row("decode_graph", t_graph, fls);
            row("compress_append", t_app, "");
            cudaFree(oldd);
        }
}

/* ---- chunked prefill: a chunk of new queries after a long cache ----------
   Paper preset, B=1, H=64, Hkv=4, D=128, bf16: nq new queries (the last nq
   positions) against ctx + nq keys, caller-compressed as in decoding (K_cmp
   kept up to date by nsa_cuda_compress_append between chunks, not timed
   here). The floor is the forward's (run_preset): the chunk's useful FLOPs
   with its own selection at the tensor-core peak, its selected blocks at
   the measured gather rate. The full prefill runs at about 1.7x its floor
   at 64K (bench/RESULTS.md); "prefill speed" for a chunk is the same
   ratio. */
static void run_chunked(const Ctx &c, int reps, int ctx)
{
    const int H = 64, Hkv = 4, D = 128;
    nsa_config cfg = nsa_config_paper();
    cfg.caller_compressed = 1;
    printf("\nchunked prefill: paper preset, H=%d Hkv=%d D=%d bf16, B=1, a chunk of new queries "
           "after ctx cached tokens, median of %d\n", H, Hkv, D, reps);
    printf("%7s %6s | %9s %9s %7s | %12s\n", "ctx", "chunk", "fwd ms", "floor ms", "x floor",
           "us / query");
    for (int nq : {64, 256, 1024, 4096}) {
        const int nk = ctx + nq;
        SuffixBatch sb(cfg, 1, nk, nq, H, Hkv, D);
        const nsa_batch &x = sb.x;
        const nsa_sizes &sz = sb.sz;
        const nsa_saved &sv = sb.sv;
        const float t = median_ms(
            [&] { CN(nsa_cuda_forward(&cfg, &x, NULL, sb.o, &sb.sv, sb.ws, sb.wsb, 0)); }, reps);
        std::vector<int32_t> hi((size_t)sz.sel_idx), hc((size_t)sz.sel_count);
        CK(cudaMemcpy(hi.data(), sv.sel_idx, hi.size() * 4, cudaMemcpyDeviceToHost));
        CK(cudaMemcpy(hc.data(), sv.sel_count, hc.size() * 4, cudaMemcpyDeviceToHost));
        const nsa_flops fl = nsa_useful_flops(&cfg, &x, hi.data(), hc.data());
        const double pk = c.peak_flops / 1e3; /* FLOP per ms */
        const double slc_bytes = fl.keys[1] / (H / Hkv) * D * 2 * 2;
        const double floor_ms = (fl.fwd - fl.keys[1] * 4.0 * D) / pk + slc_bytes / (c.gather_Bps / 1e3);
        printf("%7d %6d | %9.4f %9.4f %7.2f | %12.3f\n", ctx, nq, t, floor_ms, t / floor_ms,
               t * 1e3 / nq);
        if (c.csv)
            fprintf(c.csv, "%s,%s,%s,paper,1,%d,%d,%d,%d,bf16,chunk_prefill_q%d_ctx%d,%.4f,%.4f\n",
                    c.device.c_str(), c.date.c_str(), c.commit.c_str(), nk, H, Hkv, D, nq, ctx, t,
                    floor_ms);
    }
}

int main(int argc, char **argv)
{
    int tmin = 8192, tmax = 65536, reps = 20, tmul = 2;
    bool bwd = false, topk = false, blockmask = false, decode = false, chunked = false;
    int tlong = 0, ctx_only = 0;
    std::string presets = "paper,fla,tile";
    Ctx c;
    c.csv = NULL;
    c.commit = "unknown";
    c.digest = false;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--tmin") && i + 1 < argc) tmin = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tmax") && i + 1 < argc) tmax = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tmul") && i + 1 < argc) tmul = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) c.csv = fopen(argv[++i], "w");
        else if (!strcmp(argv[i], "--commit") && i + 1 < argc) c.commit = argv[++i];
        else if (!strcmp(argv[i], "--presets") && i + 1 < argc) presets = argv[++i];
        else if (!strcmp(argv[i], "--bwd")) bwd = true;
        else if (!strcmp(argv[i], "--digest")) c.digest = true, seed_clock = 0;
        else if (!strcmp(argv[i], "--topk")) topk = true;
        else if (!strcmp(argv[i], "--blockmask")) blockmask = true;
        else if (!strcmp(argv[i], "--long") && i + 1 < argc) tlong = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode-ctx") && i + 1 < argc) ctx_only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--decode")) decode = true;
        else if (!strcmp(argv[i], "--chunked")) chunked = true;
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: benchmark skipped\n");
        return 0;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    c.device = prop.name;
    char day[32];
    time_t now = time(NULL);
    strftime(day, sizeof day, "%Y-%m-%d", gmtime(&now));
    c.date = day;
    c.peak_flops = (strstr(prop.name, "PCIe") ? 756.0 : 989.0) * 1e12; /* dense bf16 */
    if (c.csv) fprintf(c.csv, "device,date,commit,preset,B,T,H,Hkv,D,dtype,what,ms,floor_ms\n");
    printf("device: %s, tensor-core peak %.0f TFLOP/s (dense bf16, datasheet)\n", prop.name,
           c.peak_flops / 1e12);

    if (decode) { /* decoding alone: its floor needs only the copy bandwidth */
        run_decode(c, reps, ctx_only);
        if (c.csv) fclose(c.csv);
        return 0;
    }
    float gms;
    c.gather_Bps = gather_bw(65536, 4, 16, reps, &gms);
    printf("gather bandwidth (64-key blocks of 256-byte rows, random blocks, 64K tokens x 4 kv heads"
           " x 16 blocks, K and V): %.3f ms, %.2f TB/s\n", gms, c.gather_Bps / 1e12);
    if (c.csv)
        fprintf(c.csv, "%s,%s,%s,gather,1,65536,,4,128,bf16,gather_bw,%.4f,\n", c.device.c_str(),
                c.date.c_str(), c.commit.c_str(), gms);

    printf("\nB=1 H=64 Hkv=4 D=128 bf16, median of %d; each figure beside its floor (ms)\n", reps);
    printf("%-6s %7s | %8s | %8s %7s | %8s %7s | %8s %7s | %8s %7s | %9s %8s%s\n", "preset", "T",
           "compress", "select", "floor", "slc", "floor", "cmp", "floor", "win", "floor", "fwd",
           "floor", bwd ? " |   fwd+bwd    floor" : "");
    for (int T = tmin; T <= tmax; T *= tmul) {
        if (presets.find("paper") != std::string::npos)
            run_preset(c, "paper", nsa_config_paper(), T, reps, bwd);
        if (presets.find("fla") != std::string::npos)
            run_preset(c, "fla", nsa_config_fla(), T, reps, bwd);
        if (presets.find("tile") != std::string::npos)
            run_preset(c, "tile", nsa_config_tile(64, 64), T, reps, bwd);
    }
    if (chunked) run_chunked(c, reps, ctx_only ? ctx_only : 65536);
    if (topk) run_topk(c, reps);
    if (blockmask) run_blockmask(c, reps);
    if (tlong > 0) {
        printf("\none sequence of %d tokens, H=32 Hkv=8 D=128 bf16, median of %d after a warm-up\n",
               tlong, reps);
        if (presets.find("paper") != std::string::npos)
            run_long(c, "paper", nsa_config_paper(), tlong, reps);
        if (presets.find("fla") != std::string::npos)
            run_long(c, "fla", nsa_config_fla(), tlong, reps);
    }
    if (c.csv) fclose(c.csv);
    return 0;
}
