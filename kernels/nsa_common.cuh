/* kernels/nsa_common.cuh -- tensor-core primitives and per-sequence planning
   shared by every nsa CUDA kernel. Included only from nsa_cuda.h under
   NSA_CUDA_IMPLEMENTATION.

   Tiles follow FlashAttention-2: a warp owns 16 rows (one mma M tile), keys
   stream through shared memory in chunks of NSA_KN, and the three branches
   are three ways of naming the chunks a row tile visits. Shared-memory rows
   are padded by 8 elements (16 bytes) so that ldmatrix reads of 8
   consecutive rows fall in distinct banks. */
#ifndef NSA_KERNELS_COMMON_CUH
#define NSA_KERNELS_COMMON_CUH

#include <cuda.h> /* CUtensorMap: the copy engine's view of a tensor */
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#include "../nsa.h" /* the contract's small rules (NSA_HD functions) */

namespace nsak {

#define NSA_KN 32 /* keys per chunk in the row-centric kernels */
#ifndef NSA_ROW_KN
#define NSA_ROW_KN 64 /* ... in the forward's compressed and window passes */
#endif
/* Warps of the row-centric CTAs of the compressed and window branches (16
   rows each). More rows per CTA means each K / V chunk staged in shared
   memory serves more queries: the compressed branch re-reads K_cmp once
   per CTA, so its L2 traffic falls as the tile grows. */
#ifndef NSA_ROW_WARPS
#define NSA_ROW_WARPS 8
#endif
#define NSA_ROWS (16 * NSA_ROW_WARPS)
/* The compressed and window forward's warps where its warp-specialised
   pass of that width runs (sm_90a, head dims up to 128; nsah::cw_fwd_warps
   decides, NSA_ROW_WARPS elsewhere): three consumer warpgroups, whose
   chunks' dependent steps (issue, softmax, rescale) interleave where two
   left the tensor pipe idle (bench/RESULTS.md, the pass's clock trace).
   Its tiles of NSA_CW_ROWS rows have a prefix array of their own
   (PF_CWT). */
#ifndef NSA_CW_WARPS
#define NSA_CW_WARPS 12
#endif
#define NSA_CW_ROWS (16 * NSA_CW_WARPS)
/* Shared-memory stages of their K / V chunks: NS - 1 chunks in flight while
   one is computed, enough bytes to cover L2 latency at a few CTAs per SM. */
#ifndef NSA_ROW_STAGES
#define NSA_ROW_STAGES 4
#endif

/* ---- per-sequence counts (host and device use the same formulas) ------- */

struct Shape {
    int G, l, d, lp, n, bq;
};

__host__ __device__ inline int64_t cdiv64(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}
/* Row tiles of NSA_ROWS (or rows) flattened (token, head) rows over a
   whole sequence. */
__host__ __device__ inline int64_t seq_row_tiles(int64_t nq, int G, int rows = NSA_ROWS)
{
    return cdiv64(nq * G, rows);
}
/* Row tiles of 16 rows that never straddle a selection unit. */
__host__ __device__ inline int64_t seq_unit_tiles(int64_t nq, int G, int bq)
{
    int64_t full = nq / bq, rest = nq % bq;
    int64_t tpu = cdiv64((int64_t)bq * G, 16);
    return full * tpu + cdiv64(rest * G, 16);
}

/* Prefix arrays over sequences, B+1 entries each, built on the device. */
enum {
    PF_CMP = 0,   /* compressed blocks              */
    PF_UNIT,      /* selection units                */
    PF_SLC,       /* selection blocks ceil(nk/l')   */
    PF_ROWT,      /* NSA_ROWS-row tiles             */
    PF_UNITT,     /* 16-row unit tiles              */
    PF_KEYT,      /* 64-key tiles                   */
    PF_CMPT,      /* 64-compressed-block tiles      */
    PF_CWT,       /* NSA_CW_ROWS-row tiles          */
    PF_COUNT
};

__host__ __device__ inline void seq_counts(int64_t nq, int64_t nk,
                                           const Shape &s, int64_t out[PF_COUNT])
{
    int64_t nc = nsa_cmp_blocks(nk, s.l, s.d);
    out[PF_CMP] = nc;
    out[PF_UNIT] = nsa_units(nq, s.bq);
    out[PF_SLC] = nsa_slc_blocks(nk, s.lp);
    out[PF_ROWT] = seq_row_tiles(nq, s.G);
    out[PF_UNITT] = seq_unit_tiles(nq, s.G, s.bq);
    out[PF_KEYT] = cdiv64(nk, 64);
    out[PF_CMPT] = cdiv64(nc, 64);
    out[PF_CWT] = seq_row_tiles(nq, s.G, NSA_CW_ROWS);
}

/* Largest b in [0, B) with pf[b] <= x (pf non-decreasing, pf[0] = 0). */
__device__ inline int find_seq(const int64_t *pf, int B, int64_t x)
{
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (pf[mid] <= x) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* ---- storage types ----------------------------------------------------- */

template <typename T> struct Ty;
template <> struct Ty<__nv_bfloat16> {
    static __device__ inline uint32_t pack(float a, float b)
    {
        __nv_bfloat162 h = __floats2bfloat162_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ inline float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
    static __device__ inline __nv_bfloat16 from_f(float x) { return __float2bfloat16_rn(x); }
    static __device__ inline float2 unpack(uint32_t u)
    {
        __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162 *>(&u);
        return __bfloat1622float2(h);
    }
};
template <> struct Ty<__half> {
    static __device__ inline uint32_t pack(float a, float b)
    {
        __half2 h = __floats2half2_rn(a, b);
        return *reinterpret_cast<uint32_t *>(&h);
    }
    static __device__ inline float to_f(__half x) { return __half2float(x); }
    static __device__ inline __half from_f(float x) { return __float2half_rn(x); }
    static __device__ inline float2 unpack(uint32_t u)
    {
        __half2 h = *reinterpret_cast<__half2 *>(&u);
        return __half22float2(h);
    }
};

/* D += A(16x16, row) * B(16x8, col), fp32 accumulation. Not volatile: it
   touches only its registers, so the compiler may interleave independent
   MMAs (volatile asm keeps program order, and a chain of dependent MMAs
   then stalls on each one's latency). ldmatrix and the copies stay
   volatile: they touch shared memory and must keep their place between
   barriers. */
template <typename T>
__device__ inline void mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1);
template <>
__device__ inline void mma<__nv_bfloat16>(float c[4], const uint32_t a[4],
                                          uint32_t b0, uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ inline void mma<__half>(float c[4], const uint32_t a[4], uint32_t b0,
                                   uint32_t b1)
{
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* Accumulator fragments (n-tiles of four fp32, the C layout of mma and
   wgmma) set to zero. */
template <int N>
__device__ inline void zero_frags(float (&f)[N][4])
{
#pragma unroll
    for (int i = 0; i < N; ++i) f[i][0] = f[i][1] = f[i][2] = f[i][3] = 0.f;
}

__device__ inline uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}
__device__ inline void ldsm_x4(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
__device__ inline void ldsm_x4_t(uint32_t r[4], const void *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p)));
}
/* 16 bytes global -> shared; src_bytes = 0 writes zeros. */
__device__ inline void cp16(void *dst, const void *src, int src_bytes)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n"
                 :: "r"(smem_u32(dst)), "l"(src), "r"(src_bytes));
}
__device__ inline void cp_commit() { asm volatile("cp.async.commit_group;\n"); }
template <int N> __device__ inline void cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" :: "n"(N));
}

/* ---- chained launches (sm_90: programmatic dependent launch) ---------- */

/* A kernel that the host launched chained to the one before it in the
   stream (nsah::launch_chained) may start while that one still runs: its
   launch and prologue overlap the other's tail. chain_wait() returns once
   the kernel before has finished and its writes are visible; every CTA
   calls it before it reads or writes anything another kernel of the chain
   touches, and before it exits (so that the end of a kernel implies the end
   of the ones before it). chain_release() lets the next kernel launch. The
   host chains only binaries built for sm_90 and up; below that both are
   empty and launches keep plain stream order. */
__device__ __forceinline__ void chain_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void chain_release()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/* ---- the copy engine (sm_90): tensor tiles completing on an mbarrier ---- */

/* K and V as the copy engine sees them: 3-D maps [keys][Hkv][D] (D
   innermost) of boxes of 64 columns x one head x NSA_KN keys, 128-byte
   swizzle (nsah::kv_maps encodes them). ok = 0: no maps, and the kernels
   that take them stage with cp.async instead. */
struct KvMaps {
    CUtensorMap k, v;
    int ok;
};

/* Q as the copy engine sees it for the row tiles of the compressed and
   window passes: a 3-D map [queries][H][D] of boxes of 64 columns x G heads
   x rows / G queries (rows: the pass's tile, NW * 16), a tile's rows of one
   kv head in its flattened (token, head) order, 128-byte swizzle
   (nsah::q_map encodes it). ok = 0 (G does not divide the tile's rows, or
   the encoder refuses the strides): the rows are staged with cp.async
   instead. */
struct QMap {
    CUtensorMap q;
    int ok;
};

#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 900
/* A transaction barrier in shared memory: its phase completes when its
   arrivals (count) and all the bytes it expects are in. */
__device__ inline void mbar_init(uint64_t *bar, unsigned count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(smem_u32(bar)), "r"(count));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/* One arrival that also expects `bytes` more (0: the arrival alone). */
__device__ inline void mbar_expect_tx(uint64_t *bar, unsigned bytes)
{
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
                 :: "r"(smem_u32(bar)), "r"(bytes) : "memory");
}
/* One arrival, no bytes. */
__device__ inline void mbar_arrive(uint64_t *bar)
{
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(smem_u32(bar)) : "memory");
}
/* One arrival once every cp.async this thread issued before has landed
   (the barrier's count includes it: noinc). */
__device__ inline void cp_arrive(uint64_t *bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" :: "r"(smem_u32(bar)) : "memory");
}
/* Wait until the phase of the given parity has completed. */
__device__ inline void mbar_wait(uint64_t *bar, unsigned parity)
{
    asm volatile("{\n"
                 ".reg .pred done;\n"
                 "WAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
                 "@!done bra WAIT_%=;\n"
                 "}\n" :: "r"(smem_u32(bar)), "r"(parity) : "memory");
}
/* Generic-proxy accesses of shared memory (cp.async, ld/st, ldmatrix)
   ordered before the async proxy's (the copy engine, wgmma) that follow. */
__device__ inline void fence_async_smem()
{
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/* One box of a 3-D tensor map at coordinates (c0, c1, c2), innermost
   first, into shared memory, its bytes counted on bar. Rows past the
   tensor's end arrive as zeros. */
__device__ inline void tma_box3(void *dst, const CUtensorMap *map, int c0, int c1, int c2,
                                uint64_t *bar)
{
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
                 "[%0], [%1, {%2, %3, %4}], [%5];\n"
                 :: "r"(smem_u32(dst)), "l"(map), "r"(c0), "r"(c1), "r"(c2), "r"(smem_u32(bar))
                 : "memory");
}
/* The same box fetched into L2 only, ahead of its tma_box3 (no barrier,
   nothing written to shared memory). */
__device__ inline void tma_prefetch3(const CUtensorMap *map, int c0, int c1, int c2)
{
    asm volatile("cp.async.bulk.prefetch.tensor.3d.L2.global.tile [%0, {%1, %2, %3}];\n"
                 :: "l"(map), "r"(c0), "r"(c1), "r"(c2) : "memory");
}
#endif

/* Bytes [p, p + bytes) fetched into L2 ahead of their loads, by one
   thread (the copy engine's bulk prefetch: a hint; no registers held,
   nothing written). The range is widened to the whole 16-byte units that
   hold its bytes, as the instruction takes it. Before sm_90, nothing. */
__device__ __forceinline__ void l2_prefetch_bytes(const void *p, uint32_t bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const uintptr_t a = (uintptr_t)p & ~(uintptr_t)15;
    const uint32_t n = (uint32_t)(((uintptr_t)p + bytes + 15 - a) & ~(uintptr_t)15);
    if (n) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" :: "l"(a), "r"(n) : "memory");
#else
    (void)p;
    (void)bytes;
#endif
}

/* lane src's 64-bit value, to the whole warp */
__device__ inline int64_t shfl64(int64_t v, int src)
{
    const int lo = __shfl_sync(0xffffffffu, (int)(uint32_t)v, src);
    const int hi = __shfl_sync(0xffffffffu, (int)(v >> 32), src);
    return (int64_t)(((uint64_t)(uint32_t)hi << 32) | (uint32_t)lo);
}

/* Layouts of a shared tile: at(r, c) is where element (r, c) lives, for c
   a multiple of 8 (a fragment loader's 16-byte row piece).
   Padded<LD>: row-major, LD elements a row (D + 8: the eight row addresses
   of an ldmatrix fall in distinct banks).
   Sw128<ROWS>: the 128-byte swizzle that the copy engine writes and wgmma
   reads: panels of 64 columns x ROWS rows, 128 bytes a row, the 16-byte
   piece c of row r stored at c ^ (r % 8) (the tile starts on a 1024-byte
   boundary, the swizzle's period). */
template <int LD> struct Padded {
    static __device__ inline int at(int r, int c) { return r * LD + c; }
};
template <int ROWS> struct Sw128 {
    static __device__ inline int at(int r, int c)
    {
        return (c >> 6) * (ROWS * 64) + r * 64 + ((((c >> 3) ^ r) & 7) << 3);
    }
};

/* Fragment loaders, from a tile of layout L (or Padded<LD> given LD).
   A operand (16 x 16 at (r0, k0)) of a [m][k] tile. */
template <int LD, typename T>
__device__ inline void lda(uint32_t a[4], const T *s, int r0, int k0, int lane)
{
    ldsm_x4(a, s + (r0 + (lane & 15)) * LD + k0 + (lane >> 4) * 8);
}
/* B operand from an [n][k] tile (e.g. K for Q K^T): 8 columns n0..n0+7 and
   32 of k: b[0],b[1] for k0..k0+15, b[2],b[3] for k0+16..k0+31. */
template <typename L, typename T>
__device__ inline void ldb_nk(uint32_t b[4], const T *s, int n0, int k0, int lane)
{
    ldsm_x4(b, s + L::at(n0 + (lane & 7), k0 + (lane >> 3) * 8));
}
template <int LD, typename T>
__device__ inline void ldb_nk(uint32_t b[4], const T *s, int n0, int k0, int lane)
{
    ldb_nk<Padded<LD>>(b, s, n0, k0, lane);
}
/* B operand from a [k][n] tile (e.g. V for P V): 16 of k at k0, 16 columns
   at n0: b[0],b[1] for n0..n0+7, b[2],b[3] for n0+8..n0+15. */
template <typename L, typename T>
__device__ inline void ldb_kn(uint32_t b[4], const T *s, int k0, int n0, int lane)
{
    ldsm_x4_t(b, s + L::at(k0 + (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8));
}
template <int LD, typename T>
__device__ inline void ldb_kn(uint32_t b[4], const T *s, int k0, int n0, int lane)
{
    ldb_kn<Padded<LD>>(b, s, k0, n0, lane);
}

/* Stage `rows` rows of D elements (D % 8 == 0) into shared memory with row
   stride LD; row r comes from src(r), or zeros where src(r) is NULL. */
template <int D, int LD, typename T, typename F>
__device__ inline void stage_rows(T *dst, int rows, F src, int tid, int nthreads)
{
    constexpr int CH = D / 8;
    for (int i = tid; i < rows * CH; i += nthreads) {
        int r = i / CH, c = i - r * CH;
        const T *p = src(r);
        cp16(dst + r * LD + c * 8, p ? (const void *)(p + c * 8) : (const void *)dst,
             p ? 16 : 0);
    }
}

/* Stage ROWS consecutive rows of D elements of a strided run -- row r from
   run + r * st for r < cnt, zeros past cnt -- to dst_of(r, c), the shared
   address of row r's 16-byte column c. Where NTHREADS is a multiple of the
   D / 8 columns of a row, a thread keeps one column and steps down the rows
   by constants: a few instructions a copy, where computing each row's
   address from scratch costs tens (the gather kernels were bound by it).
   UNROLL (0: all) bounds how many of a thread's copies are unrolled: each
   holds its addresses in registers, more than a producer with few of them
   has for a long run. */
template <int D, int ROWS, int NTHREADS, int UNROLL = 0, typename T, typename Dst>
__device__ inline void stage_run_to(Dst dst_of, const T *run, int64_t st, int cnt, int tid)
{
    constexpr int CH = D / 8;
    if constexpr (NTHREADS % CH == 0) {
        constexpr int RSTEP = NTHREADS / CH, STEPS = (ROWS + RSTEP - 1) / RSTEP;
        constexpr int U = UNROLL > 0 && UNROLL < STEPS ? UNROLL : STEPS;
        const int r0 = tid / CH, c = tid % CH;
        const T *src = run + r0 * st + c * 8;
        const int64_t step = RSTEP * st;
        if (cnt >= ROWS) {
#pragma unroll U
            for (int j = 0; j < STEPS; ++j)
                if (ROWS % RSTEP == 0 || r0 + j * RSTEP < ROWS)
                    cp16(dst_of(r0 + j * RSTEP, c), src + j * step, 16);
        } else {
#pragma unroll U
            for (int j = 0; j < STEPS; ++j) {
                const int r = r0 + j * RSTEP;
                if (ROWS % RSTEP == 0 || r < ROWS)
                    cp16(dst_of(r, c), r < cnt ? src + j * step : run, r < cnt ? 16 : 0);
            }
        }
    } else {
        for (int i = tid; i < ROWS * CH; i += NTHREADS) {
            const int r = i / CH, c = i - r * CH;
            cp16(dst_of(r, c), r < cnt ? run + r * st + c * 8 : run, r < cnt ? 16 : 0);
        }
    }
}

/* stage_run_to into a row-major tile of row stride LD. */
template <int D, int LD, int ROWS, int NTHREADS, typename T>
__device__ inline void stage_run(T *dst, const T *run, int64_t st, int cnt, int tid)
{
    stage_run_to<D, ROWS, NTHREADS>([&](int r, int c) { return dst + r * LD + c * 8; }, run, st,
                                     cnt, tid);
}

__device__ inline float warp_max4(float x)
{
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
    return x;
}
__device__ inline float quad_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}

#define NSA_LOG2E 1.4426950408889634f
#define NSA_LN2 0.6931471805599453f

} /* namespace nsak */

#endif
