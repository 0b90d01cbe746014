/* kernels/nsa_attn_sm90.cuh -- the forward's compressed and window passes,
   their dQ, and the key-centric dK/dV pass on Hopper's warpgroup MMA
   (wgmma), sm_90a.

   The same row tile as row_body (NW warps, NW*16 flattened (token, head)
   rows of one kv head, the group's heads adjacent), the same key chunks,
   masks, online softmax and epilogue; only the products change. A
   warpgroup (4 warps, 64 rows) multiplies
     S = Q K^T   as DK/16 wgmma m64n64k16, Q and K both read from shared
                 memory (K-major), so the 64 rows of a warpgroup share each
                 read of K instead of each warp reading it again;
     O += P V    as KN/16 wgmma m64nDVk16, P from registers (its fp32
                 accumulator fragments packed in place: the accumulator
                 layout of S is the A-fragment layout of P), V read from
                 shared memory N-major (transposed by the tensor core).
   Shared tiles are stored in the 128-byte swizzle the tensor core reads
   (panels of 64 columns, 16-byte chunk c of row r at c ^ (r % 8)), filled
   by cp.async and made visible to the tensor core's (async) proxy by a
   proxy fence before the barrier.

   cw_fwd_kernel, cw_dq_kernel and kv_kernel are the entries: compiled for
   sm_90a they run these paths, for any other target the mma.sync kernels
   (row_body, kv_body), so a build for sm_80 or plain sm_90 keeps the
   portable path and its cross-checks. */
#ifndef NSA_KERNELS_ATTN_SM90_CUH
#define NSA_KERNELS_ATTN_SM90_CUH

#include "nsa_attn.cuh"

namespace nsak {

/* K / V stages of the wgmma path: 32 KB a stage at D = 128. */
#ifndef NSA_WG_STAGES
#define NSA_WG_STAGES 4
#endif
#define NSA_WG_KN 64 /* keys a chunk: one m64n64 product per 16 of the head dim */

/* The compressed branch's gated output waits in shared memory for the
   window branch (fp32, [DV / 2][NW * 32] float2, each thread its own)
   instead of a round trip through the fp32 accumulator in global memory,
   where it fits beside a pass's `stage` bytes; with_held is then the
   pass's whole shared memory. */
__host__ __device__ constexpr size_t held_bytes(int DV, int NW) { return (size_t)NW * 16 * DV * 4; }
__host__ __device__ constexpr bool held_fits(size_t stage, int DV, int NW)
{
    return stage + held_bytes(DV, NW) <= 227 * 1024;
}
__host__ __device__ constexpr size_t with_held(size_t stage, int DV, int NW)
{
    return stage + (held_fits(stage, DV, NW) ? held_bytes(DV, NW) : 0);
}

template <int DK, int DV, int NW>
__host__ __device__ constexpr size_t wg_stage_smem()
{
    /* + 1024: the swizzled panels start on a 1024-byte boundary */
    return (size_t)(NW * 16 * DK + NSA_WG_STAGES * NSA_WG_KN * (DK + DV)) * 2 + 1024;
}
template <int DK, int DV, int NW>
__host__ __device__ constexpr bool wg_held()
{
    return held_fits(wg_stage_smem<DK, DV, NW>(), DV, NW);
}
template <int DK, int DV, int NW>
constexpr size_t wg_smem()
{
    return with_held(wg_stage_smem<DK, DV, NW>(), DV, NW);
}

/* 0: the forward's compressed and window passes without warp
   specialisation (row_fwd_sm90), for comparison. */
#ifndef NSA_CW_WS
#define NSA_CW_WS 1
#endif
/* Registers a thread of the producer warpgroup keeps, and those the
   consumers take (setmaxnreg): 128 x 56 + NW * 32 x 224, the 168 x 384
   the CTA launches with, for NW = 8. A whole producer warpgroup because an
   SM splits its registers among four schedulers: with one producer warp,
   one scheduler would hold three warps, and every warp only 168
   registers. At 40 / 232 the producer spilled its loop state to local
   memory, where the reloads missed L1 and held its copies back; with 224
   the consumers measured no slower (bench/RESULTS.md). */
#ifndef NSA_CW_PRODUCER_REGS
#define NSA_CW_PRODUCER_REGS 56
#endif
#ifndef NSA_CW_CONSUMER_REGS
#define NSA_CW_CONSUMER_REGS 224
#endif
/* The registers a thread has at launch under __launch_bounds__(threads,
   1): the register file's 65,536 shared by the threads, in the steps of 8
   a thread that registers are allocated in, at most 255. setmaxnreg.inc
   takes its registers only from those that setmaxnreg.dec gave back to the
   CTA's pool, and waits until there are enough: a split that needs more
   than the CTA launched with never starts (128 x 32 + 256 x 240 at 168 a
   thread hung). */
__host__ __device__ constexpr int launch_regs(int threads)
{
    return (65536 / threads < 255 ? 65536 / threads : 255) / 8 * 8;
}

/* Threads of cw_fwd_kernel: on sm_90a a producer warpgroup beside the NW
   consumer warps (row_fwd_ws), elsewhere the NW warps of row_body. The host
   reads it back as the kernel's launch bound (cw_fwd_block). */
template <int DK, int DV, int NW>
__host__ __device__ constexpr int cw_fwd_threads()
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) && NSA_CW_WS
    return NW % 4 == 0 && DV <= 128 ? NW * 32 + 128 : NW * 32;
#else
    return NW * 32;
#endif
}

/* dQ on wgmma: Q and dO of the tile, K and V stages. */
template <int DK, int DV, int NW>
constexpr size_t wg_dq_smem()
{
    return (size_t)(NW * 16 * (DK + DV) + NSA_WG_STAGES * NSA_WG_KN * (DK + DV)) * 2 + 1024;
}
/* cw_dq_kernel's shared memory: enough for either path (the wgmma one runs
   for head dims up to 128). */
template <int DK, int DV, int NW>
constexpr size_t cw_dq_smem()
{
    return DK <= 128 && wg_dq_smem<DK, DV, NW>() > row_smem<DK, DV, NW, true>()
               ? wg_dq_smem<DK, DV, NW>()
               : row_smem<DK, DV, NW, true>();
}

/* The warp-specialised pass (row_fwd_ws): keys a chunk (one m64nKN
   product per 16 of the head dim) and K / V stages; Q, the stages, 256
   bytes of mbarriers and the published tile, and the held output where it
   fits. */
#ifndef NSA_CW_KN
#define NSA_CW_KN 64
#endif
#ifndef NSA_CW_STAGES
#define NSA_CW_STAGES 4
#endif
/* Column tiles of the earlier branches' sums the warp-specialised pass's
   epilogue loads together (PrevSums): with 128-key chunks, batches of
   eight held the consumers' registers past their 224 (ptxas: spills). */
#ifndef NSA_CW_PB
#define NSA_CW_PB (NSA_CW_KN > 64 ? 1 : 8)
#endif
/* The pass's consumer warps (NSA_CW_WARPS: three warpgroups, 192-row
   tiles, where their Q and stages fit in shared memory, else
   NSA_ROW_WARPS), and per warp count the registers' split and the
   earlier sums' batch: three consumer warpgroups have 160 registers a
   thread beside a producer of 32 (128 x 32 + 384 x 160 = 65,536), where
   batches of eight earlier sums would spill (and batches of two or four,
   which spill a little, measured the same as one: bench/RESULTS.md). */
template <int NW>
__host__ __device__ constexpr int cw_producer_regs()
{
    return NW == 12 ? 32 : NSA_CW_PRODUCER_REGS;
}
template <int NW>
__host__ __device__ constexpr int cw_consumer_regs()
{
    return NW == 12 ? 160 : NSA_CW_CONSUMER_REGS;
}
template <int NW>
__host__ __device__ constexpr int cw_prev_batch()
{
    return NW == 12 ? 1 : NSA_CW_PB;
}
template <int DK, int DV, int NW>
__host__ __device__ constexpr size_t ws_stage_smem()
{
    return (size_t)(NW * 16 * DK + NSA_CW_STAGES * NSA_CW_KN * (DK + DV)) * 2 + 1024 + 256;
}
template <int DK, int DV, int NW>
__host__ __device__ constexpr bool ws_held()
{
    return held_fits(ws_stage_smem<DK, DV, NW>(), DV, NW);
}
template <int DK, int DV, int NW>
constexpr size_t ws_smem()
{
    return with_held(ws_stage_smem<DK, DV, NW>(), DV, NW);
}

/* Shared memory of cw_fwd_kernel: enough for any of its paths. */
template <int DK, int DV, int NW>
constexpr size_t cw_fwd_smem()
{
    constexpr size_t a = wg_smem<DK, DV, NW>() > ws_smem<DK, DV, NW>() ? wg_smem<DK, DV, NW>()
                                                                        : ws_smem<DK, DV, NW>();
    return a > row_smem<DK, DV, NW, false>() ? a : row_smem<DK, DV, NW, false>();
}

/* kv_body_sm90's shared memory: the tile's K and V, two chunks of Q and dO,
   their rows' lse2, Delta, gate and token. */
template <int DK, int DV>
__host__ __device__ constexpr size_t kv_sm90_smem()
{
    return (size_t)(64 * (DK + DV) + 2 * NSA_KV_ROWS * (DK + DV)) * 2 +
           2 * 4 * NSA_KV_ROWS * sizeof(float) + 1024;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/* ---- wgmma primitives --------------------------------------------------- */

/* Shared-memory matrix descriptor, 128-byte swizzle: start address, leading
   byte offset (K-major: unused; N-major: between 64-column panels), stride
   byte offset 1024 (between groups of 8 rows of 128 bytes). */
__device__ inline uint64_t sw128_desc(const void *s, uint32_t lbo)
{
    const uint32_t a = smem_u32(s);
    return (uint64_t)((a & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) |
           ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}

/* Descriptor d moved by a byte offset: the address field holds bytes / 16
   in its low 14 bits, and shared addresses stay below 2^18, so the sum
   never carries out of the low word (one 32-bit add). */
__device__ inline uint64_t desc_at(uint64_t d, int bytes)
{
    const uint32_t lo = (uint32_t)d + (uint32_t)(bytes >> 4);
    return (d & 0xFFFFFFFF00000000ull) | lo;
}

/* The first 1024-byte boundary in dynamic shared memory at p: a 128-byte
   swizzle repeats every 8 rows of 128 bytes, and the descriptors assume
   tiles that start on its period (the smem sizes leave 1024 bytes for it). */
__device__ inline unsigned char *sw128_base(unsigned char *p)
{
    return p + ((1024 - (smem_u32(p) & 1023)) & 1023);
}
__device__ inline void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ inline void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ inline void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" :: "n"(N) : "memory"); }
/* Ties accumulator registers to this point: nothing reads or rewrites them
   between an issued wgmma and its wait. */
template <int N>
__device__ inline void wg_hold(float (&d)[N][4])
{
#pragma unroll
    for (int i = 0; i < N; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e]) :: "memory");
}

/* S (+)= A B^T, m64nNk16: A and B K-major in shared memory. */
template <typename T, int N>
__device__ inline void wgmma_qk(float (&d)[N / 8][4], uint64_t a, uint64_t b, int accumulate);
/* D += A B, m64nNk16: A in registers, B N-major in shared memory. */
template <typename T, int N>
__device__ inline void wgmma_pv(float (&d)[N / 8][4], const uint32_t (&a)[4], uint64_t b);

/* Accumulator operands: d[i][e] is register 4 i + e of the instruction's
   fragment (the layout of mma.sync's C fragments, n-tile by n-tile). */
#define NSA_WG_D32(d) \
    "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
    "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
    "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
    "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define NSA_WG_D64(d) NSA_WG_D32(d), \
    "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
    "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
    "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
    "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
#define NSA_WG_R32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define NSA_WG_R64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

/* The three products for one storage type (TS its PTX name). */
#define NSA_WGMMA_DEFS(T, TS)                                                              \
    template <>                                                                            \
    __device__ inline void wgmma_qk<T, 64>(float (&d)[8][4], uint64_t a, uint64_t b,       \
                                           int acc)                                        \
    {                                                                                      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                          \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TS "." TS " "           \
                     NSA_WG_R32 ", %32, %33, p, 1, 1, 0, 0;\n}\n"                        \
                     : NSA_WG_D32(d)                                                       \
                     : "l"(a), "l"(b), "r"(acc));                                          \
    }                                                                                      \
    template <>                                                                            \
    __device__ inline void wgmma_qk<T, 128>(float (&d)[16][4], uint64_t a, uint64_t b,     \
                                            int acc)                                       \
    {                                                                                      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                          \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TS "." TS " "          \
                     NSA_WG_R64 ", %64, %65, p, 1, 1, 0, 0;\n}\n"                        \
                     : NSA_WG_D64(d)                                                       \
                     : "l"(a), "l"(b), "r"(acc));                                          \
    }                                                                                      \
    template <>                                                                            \
    __device__ inline void wgmma_pv<T, 64>(float (&d)[8][4], const uint32_t (&a)[4],       \
                                           uint64_t b)                                     \
    {                                                                                      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                          \
                     "wgmma.mma_async.sync.aligned.m64n64k16.f32." TS "." TS " "           \
                     NSA_WG_R32 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"             \
                     : NSA_WG_D32(d)                                                       \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));        \
    }                                                                                      \
    template <>                                                                            \
    __device__ inline void wgmma_pv<T, 128>(float (&d)[16][4], const uint32_t (&a)[4],     \
                                            uint64_t b)                                    \
    {                                                                                      \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                          \
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32." TS "." TS " "          \
                     NSA_WG_R64 ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"             \
                     : NSA_WG_D64(d)                                                       \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));        \
    }
NSA_WGMMA_DEFS(__nv_bfloat16, "bf16")
NSA_WGMMA_DEFS(__half, "f16")

/* Rows of D elements into a [ROWS][D] tile of layout Sw128<ROWS>
   (nsa_common.cuh). Row r comes from src(r), zeros where NULL. The
   trip count is a constant: no branch that depends on the thread, so the
   code around the wgmma stays provably uniform (ptxas serialises wgmma
   across divergent paths). */
template <int D, int ROWS, int NTHREADS, typename T, typename F>
__device__ inline void stage_rows_sw128(T *dst, F src, int tid)
{
    constexpr int CH = D / 8;
    static_assert(ROWS * CH % NTHREADS == 0, "whole passes");
#pragma unroll
    for (int j = 0; j < ROWS * CH / NTHREADS; ++j) {
        const int i = tid + j * NTHREADS, r = i / CH, c = i % CH;
        const T *p = src(r);
        T *d = dst + Sw128<ROWS>::at(r, c * 8);
        cp16(d, p ? (const void *)(p + c * 8) : (const void *)d, p ? 16 : 0);
    }
}

/* stage_run_to into the swizzled panels of stage_rows_sw128. */
template <int D, int ROWS, int NTHREADS, int UNROLL = 0, typename T>
__device__ inline void stage_run_sw128(T *dst, const T *run, int64_t st, int cnt, int tid)
{
    stage_run_to<D, ROWS, NTHREADS, UNROLL>([&](int r, int c) { return dst + Sw128<ROWS>::at(r, c * 8); },
                                    run, st, cnt, tid);
}

/* x of lane 0: a value the compiler then knows to be warp-uniform. */
__device__ inline int uniform(int x) { return __shfl_sync(0xffffffffu, x, 0); }

/* S = A B^T over D columns, issued (the caller fences and commits): A the
   ROWS-row tile and B the KN rows of a BROWS-row tile (swizzled) at
   descriptors a and b. The k-th 16 columns of a tile lie in panel k / 4,
   32 bytes into its rows. */
template <typename T, int D, int ROWS, int KN, int BROWS = KN>
__device__ inline void wgmma_tiles_abt(float (&S)[KN / 8][4], uint64_t a, uint64_t b)
{
#pragma unroll
    for (int k = 0; k < D / 16; ++k)
        wgmma_qk<T, KN>(S, desc_at(a, (k >> 2) * ROWS * 128 + (k & 3) * 32),
                        desc_at(b, (k >> 2) * BROWS * 128 + (k & 3) * 32), k > 0);
}

/* A branch's keys for a row tile on this path: where they are, and how
   many NSA_WG_KN-key chunks (a count the compiler knows to be uniform). */
template <typename T>
struct BranchKeys {
    KeySrc src;
    const T *kb, *vb;
    int64_t kst, vst;
    int nch;

    __device__ BranchKeys(const Params &p, int br, const RowTile &rt, int hkv, int DK, int DV,
                          int kn = NSA_WG_KN)
    {
        src = make_src<T>(p, br, rt, hkv, kb, vb, kst, vst, DK, DV);
        src.kn = kn;
        nch = uniform(src.nchunks());
    }

    /* Chunk c into stage c % NS of the swizzled K and V tiles (zeros past
       the chunk's keys): one cp.async group per call, empty past the last
       chunk, so that waiting for all but the newest groups finds the chunk
       wanted. */
    template <int DK, int DV, int NS, int NTHREADS>
    __device__ void load(T *Ks, T *Vs, int c, int tid) const
    {
        constexpr int KN = NSA_WG_KN;
        if (c < nch) {
            int s0, cnt = src.chunk(c, s0);
            stage_run_sw128<DK, KN, NTHREADS>(Ks + (c % NS) * KN * DK, kb + s0 * kst, kst, cnt,
                                              tid);
            stage_run_sw128<DV, KN, NTHREADS>(Vs + (c % NS) * KN * DV, vb + s0 * vst, vst, cnt,
                                              tid);
        }
        cp_commit();
    }
};

/* ---- the row tile on wgmma ---------------------------------------------- */
template <typename T, int DK, int DV, int NW>
__device__ inline void row_fwd_sm90(const Params &p, int mode, unsigned br_mask)
{
    constexpr int KN = NSA_WG_KN, NS = NSA_WG_STAGES, ROWS = NW * 16;
    static_assert(NS >= 3, "chunk c + 1 resident while chunk c is computed");
    static_assert(DK % 64 == 0 && DV % 64 == 0 && DV <= 128, "64-column panels");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)sw128_base(smem_raw); /* [DK/64][ROWS][64] */
    T *Ks = Qs + ROWS * DK;      /* [NS][DK/64][KN][64] */
    T *Vs = Ks + NS * KN * DK;   /* [NS][DV/64][KN][64] */
    float2 *held = (float2 *)(Vs + NS * KN * DV); /* wg_held(): [DV/2][NW*32] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    const int hkv = blockIdx.y;
    RowTile rt;
    /* every branch below is uniform across the CTA; uniform() says so */
    if (!uniform(locate_rows<false, NW>(p, rt))) return;
    const int G = p.G;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase + warp * 16, lane);
    /* every warpgroup multiplies, also one whose rows are all past the
       tile's end (zeros, never written): wgmma stays on uniform paths */
    const bool wactive = rt.fbase + warp * 16 < rt.fmax;

    stage_rows_sw128<DK, ROWS, NW * 32>(Qs, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.q, p.qst, p.qsh); }, tid);
    cp_commit();
    /* descriptors of this warpgroup's 64 rows of Q, and of stage 0 of K, V
       (N-major: the next 64 columns of V lie KN rows further) */
    const uint64_t qdesc = sw128_desc(Qs + wg * 64 * 64, 16);
    const uint64_t kdesc = sw128_desc(Ks, 16), vdesc = sw128_desc(Vs, KN * 128);

    bool prev = epi_adds_earlier(p.epi);
    unsigned last_br = 0, first_br = 3;
    for (int br = 2; br >= 0; --br) if (br_mask & (1u << br)) first_br = br;
    for (int br = 0; br < 3; ++br) if (br_mask & (1u << br)) last_br = br;
    const bool hold = wg_held<DK, DV, NW>() && mode == M_FWD && first_br != last_br;

    for (int br = 0; br < 3; ++br) {
        if (!(br_mask & (1u << br))) continue;
        const BranchKeys<T> keys(p, br, rt, hkv, DK, DV);
        const KeySrc &src = keys.src;
        const int nch = keys.nch;
        float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
        float acc[DV / 8][4], S[KN / 8][4];
        uint32_t pa[KN / 16][4];
        zero_frags(acc);
        auto load = [&](int c) { keys.template load<DK, DV, NS, NW * 32>(Ks, Vs, c, tid); };
        /* S = Q K_c^T, issued without waiting */
        auto issue_qk = [&](int c) {
            wg_fence();
            wgmma_tiles_abt<T, DK, ROWS, KN>(S, qdesc, desc_at(kdesc, (c % NS) * KN * DK * 2));
            wg_commit();
        };
        /* acc += P V_c, issued without waiting; 16 keys are 16 rows of 128
           bytes */
        auto issue_pv = [&](int c) {
            const uint64_t vd = desc_at(vdesc, (c % NS) * KN * DV * 2);
            wg_fence();
#pragma unroll
            for (int kk = 0; kk < KN / 16; ++kk)
                wgmma_pv<T, DV>(acc, pa[kk], desc_at(vd, kk * 16 * 128));
            wg_commit();
        };
        /* mask and online softmax of S_c (its wgmma complete); returns the
           rescale factors of acc */
        auto scores = [&](int c, float &aA, float &aB) {
            int s0, cnt = src.chunk(c, s0);
            mask_chunk(p, br, S, s0, cnt, uniform(chunk_whole(p, br, s0, cnt, KN, lr)), lr.tA,
                       lr.tB, lane);
            softmax_scores(S, p.sl2, mA, mB, lA, lB, aA, aB);
        };
        /* Stages: chunk c lives in stage c % NS. Step c reads K_c and
           V_{c-1} while chunk c + 1 may still be landing, and loads chunk
           c + NS - 2 into the stage P_{c-2} V_{c-2} freed. landed(): this
           thread's copies, then everyone's, visible to the tensor core. */
        auto landed = [&]() {
            fence_async_smem();
            __syncthreads();
        };
        __syncthreads();
        for (int c = 0; c < NS - 1; ++c) load(c);
        cp_wait<NS - 2>(); /* chunk 0 (and Q) */
        landed();
        if (nch > 0) {
            float aA, aB;
            issue_qk(0);
            wg_wait<0>();
            wg_hold(S);
            scores(0, aA, aB);
#pragma unroll
            for (int kk = 0; kk < KN / 16; ++kk) p_fragment<T>(pa[kk], S, kk);
        }
        /* Step c (FlashAttention-3's intra-warpgroup overlap): S_c = Q K_c^T
           and acc += P_{c-1} V_{c-1} issued together; the softmax of S_c
           runs while the second product is in flight. */
        for (int c = 1; c < nch; ++c) {
            cp_wait<NS - 3>(); /* chunk c landed for this thread */
            landed();          /* ... for all; stage (c + NS - 2) % NS is free */
            load(c + NS - 2);
            float aA, aB;
            issue_qk(c);
            issue_pv(c - 1);
            wg_wait<1>();
            wg_hold(S);
            scores(c, aA, aB);
            wg_wait<0>();
            wg_hold(acc);
            rescale_rows(acc, aA, aB);
#pragma unroll
            for (int kk = 0; kk < KN / 16; ++kk) p_fragment<T>(pa[kk], S, kk);
        }
        if (nch > 0) issue_pv(nch - 1);
        wg_wait<0>();
        wg_hold(acc);
        if (wactive) {
            /* held: the first branch's output never reached the accumulator */
            const bool first = (unsigned)br == first_br;
            branch_epilogue<T, DV>(p, br, mode, epi_writes_out(p.epi) && (unsigned)br == last_br,
                                   prev && !(hold && !first), lr, mA, mB, lA, lB, acc, lane,
                                   HeldOut{hold ? held + tid : nullptr, NW * 32, first});
        }
        prev = true;
    }
}

/* ---- the row tiles on wgmma, warp-specialised (FlashAttention-3) ---------

   A persistent CTA walks row tiles, the heaviest first (a later token sees
   more compressed blocks), as three roles:
     the producer (the last warpgroup) stages each tile's Q and every key
     chunk of its branches into the NS stages with cp.async; a stage's
     barrier (full) completes when every producer thread's copies into it
     have landed. It runs ahead across branches and tiles, so the next
     tile's chunks land while this one ends, and it hands most of its
     registers to the consumers.
     the consumers (warpgroups 0 ..): 64 rows each, the steps of
     row_fwd_sm90, but waiting on the stage's barrier (then a proxy fence
     for the tensor core) instead of a CTA barrier, and freeing a stage
     (empty) once its P V is done, and Q (qempty) after the tile's last
     Q K^T.
   The chunks go through the stages in one sequence, g, over every branch
   of every tile: chunk g lives in stage g % NS, in that stage's (g / NS)-th
   phase. */

struct CwBars {
    uint64_t *full, *empty; /* [NS]: a chunk landed / its stage free again */
    uint64_t *qfull, *qempty;
};

/* The tile whose Q is staged, as the producer found it (rt.b < 0: no
   tile left), so that the consumers start a tile without the dependent
   global loads of locate_rows. Published with Q (qfull). */
struct CwTile {
    RowTile rt;
    int hkv;
};

/* The published tile, read by lane 0 and passed to the warp: the warp's
   only reader is the lane that later frees Q for the producer to write the
   next tile. */
__device__ inline CwTile read_tile(const CwTile *t, int lane)
{
    constexpr int W = sizeof(CwTile) / 4;
    static_assert(sizeof(CwTile) % 4 == 0, "whole words");
    uint32_t w[W];
#pragma unroll
    for (int i = 0; i < W; ++i) /* words of shared memory, lane 0's passed on */
        w[i] = __shfl_sync(0xffffffffu, lane == 0 ? ((const uint32_t *)t)[i] : 0u, 0);
    CwTile r;
    memcpy(&r, w, sizeof r);
    return r;
}

/* Work unit u of the persistent walk: kv head and row tile, the last tiles
   (the heaviest) first. */
template <int NW>
__device__ inline bool cw_tile(const Params &p, int64_t units, int64_t u, RowTile &rt, int &hkv)
{
    const int64_t v = units - 1 - u;
    hkv = (int)(v % p.Hkv);
    return locate_rows<false, NW>(p, rt, v / p.Hkv);
}

/* Chunks of a tile the producer stages before the tile's Q (cw_produce):
   at most NSA_CW_STAGES - 2, the stages the tile before frees ahead of
   its last Q K^T. */
#ifndef NSA_CW_Q_AFTER
#define NSA_CW_Q_AFTER 2
#endif

/* The box coordinates of tile rt's Q rows of kv head hkv in a QMap: its
   first query and the group's first head (tiles start on a query when G
   divides the tile's rows, as QMap requires). */
__device__ inline int q_tok(const Params &p, const RowTile &rt)
{
    return (int)(rt.q0 + rt.tok_off + rt.fbase / p.G);
}

/* The producer warpgroup (ptid 0..127): each thread's copies of a chunk
   (or of Q) arrive on the chunk's barrier once they have landed
   (cp_arrive), so it never waits for its own copies, only for a stage
   (or Q) to be free. Q's barrier also counts thread 0's arrival after it
   wrote the tile (release: the consumers read it once the phase is
   complete). With a QMap, thread 0 loads Q through the copy engine (that
   arrival expects its bytes) and prefetches the next tile's Q into L2:
   the consumers' wait for a tile's Q was a quarter of their time in a
   profile of the window pass, its 16 copies a thread issued only once the
   tile before had freed Q. */
template <typename T, int DK, int DV, int NW>
__device__ inline void cw_produce(const Params &p, unsigned br_mask, int64_t units,
                                  const QMap &qm, T *Qs, T *Ks, T *Vs, const CwBars &b,
                                  CwTile *tile, int ptid)
{
    constexpr int KN = NSA_CW_KN, NS = NSA_CW_STAGES, ROWS = NW * 16;
    static_assert(NSA_CW_Q_AFTER <= NS - 2, "no wait on a stage that only the tile's Q frees");
    uint32_t g = 0, j = 0;
    for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {
        RowTile rt;
        int hkv;
        if (!uniform(cw_tile<NW>(p, units, u, rt, hkv))) continue;
        /* Q once the tile before has freed it */
        auto load_q = [&] {
            mbar_wait(b.qempty, (j & 1) ^ 1);
            ++j;
            if (ptid == 0) {
                tile->rt = rt;
                tile->hkv = hkv;
                if (qm.ok) {
                    mbar_expect_tx(b.qfull, ROWS * DK * (unsigned)sizeof(T));
                    for (int i = 0; i < DK / 64; ++i)
                        tma_box3(Qs + i * ROWS * 64, &qm.q, i * 64, hkv * p.G, q_tok(p, rt),
                                 b.qfull);
                    RowTile nt;
                    int nh;
                    if (u + gridDim.x < units && cw_tile<NW>(p, units, u + gridDim.x, nt, nh))
                        for (int i = 0; i < DK / 64; ++i)
                            tma_prefetch3(&qm.q, i * 64, nh * p.G, q_tok(p, nt));
                } else {
                    mbar_arrive(b.qfull);
                }
            }
            /* one row at a time: a row's address costs divisions by G, and
               unrolled they would hold the producer's few registers */
            if (!qm.ok)
#pragma unroll 1
                for (int i = ptid; i < ROWS * (DK / 8); i += 128) {
                    const int r = i / (DK / 8), c = i % (DK / 8);
                    const T *src = tile_row(rt, hkv, p.G, r, (const T *)p.q, p.qst, p.qsh);
                    T *d = Qs + Sw128<ROWS>::at(r, c * 8);
                    cp16(d, src ? (const void *)(src + c * 8) : (const void *)d, src ? 16 : 0);
                }
            cp_arrive(b.qfull);
        };
        /* The tile's first NSA_CW_Q_AFTER chunks go before its Q: their
           stages free while the tile before still computes, Q only after
           its last Q K^T (its first chunk's wait was the consumers' largest
           at a tile's start once Q came through the copy engine). */
        int staged = 0;
        for (int br = 0; br < 3; ++br) {
            if (!(br_mask & (1u << br))) continue;
            const BranchKeys<T> keys(p, br, rt, hkv, DK, DV, NSA_CW_KN);
            for (int c = 0; c < keys.nch; ++c, ++g) {
                if (staged++ == NSA_CW_Q_AFTER) load_q();
                const int st = g % NS;
                mbar_wait(&b.empty[st], ((g / NS) & 1) ^ 1);
                int s0, cnt = keys.src.chunk(c, s0);
                stage_run_sw128<DK, KN, 128, 8>(Ks + st * KN * DK, keys.kb + s0 * keys.kst,
                                                keys.kst, cnt, ptid);
                stage_run_sw128<DV, KN, 128, 8>(Vs + st * KN * DV, keys.vb + s0 * keys.vst,
                                                keys.vst, cnt, ptid);
                cp_arrive(&b.full[st]);
            }
        }
        if (staged <= NSA_CW_Q_AFTER) load_q();
    }
    /* no tile left: 128 + 1 arrivals without copies */
    mbar_wait(b.qempty, (j & 1) ^ 1);
    if (ptid == 0) {
        tile->rt.b = -1;
        mbar_arrive(b.qfull);
    }
    mbar_arrive(b.qfull);
    cp_wait<0>(); /* no copy outlives its thread */
}

/* Turns of the consumer warpgroups (FlashAttention-3's ping-pong, for two
   or three of them): a warpgroup issues its products only in its turn and
   passes the turn on once they are issued, so the tensor core runs one
   warpgroup's products while the others compute their softmax. Named
   barrier 2 + w is warpgroup w's turn: it syncs there (its 128 threads)
   and the warpgroup before it in the round arrives (128 more). All walk
   the same chunks, so their turns pair up; the last warpgroup gives
   warpgroup 0 the first turn, and warpgroup 0 takes the last turn the
   last one passes (cw_consume). */
#ifndef NSA_CW_PINGPONG
#define NSA_CW_PINGPONG 1
#endif
template <int NW>
struct CwTurns {
    static constexpr int NWG = NW / 4; /* consumer warpgroups */
    static constexpr bool on = NSA_CW_PINGPONG && (NW == 8 || NW == 12);
    int wg;
    __device__ inline void begin() const
    {
        if (on) asm volatile("bar.sync %0, 256;\n" :: "r"(2 + wg) : "memory");
    }
    __device__ inline void end() const
    {
        if (on) asm volatile("bar.arrive %0, 256;\n" :: "r"(2 + (wg + 1) % NWG) : "memory");
    }
    /* before the first tile and after the last (the round's two ends) */
    __device__ inline void open() const
    {
        if (wg == NWG - 1) end();
    }
    __device__ inline void close() const
    {
        if (wg == 0) begin();
    }
};

/* One branch BR (BR_CMP or BR_WIN) of a row tile for a consumer warp (warp
   of the consumers' NW, lane): row_fwd_sm90's steps over the chunks g0,
   g0 + 1, ... of the stage sequence, products issued in the warpgroup's
   turns; frees Q after the last Q K^T when free_q. The branch is a
   template argument: its key source, visibility and whole-chunk test then
   fold to the branch's own (the chunk loop is the pass's hot path). */
template <typename T, int DK, int DV, int NW, int BR>
__device__ inline void cw_branch(const Params &p, const RowTile &rt, int hkv,
                                 const LaneRows &lr, uint32_t g0, bool free_q, uint64_t qdesc,
                                 uint64_t kdesc, uint64_t vdesc, const CwBars &b,
                                 const CwTurns<NW> &turn, int lane, float (&acc)[DV / 8][4],
                                 float (&m)[2], float (&l)[2], int &nch_out)
{
    static_assert(BR == BR_CMP || BR == BR_WIN, "the dense branches");
    constexpr int KN = NSA_CW_KN, NS = NSA_CW_STAGES, ROWS = NW * 16, br = BR;
    const BranchKeys<T> keys(p, br, rt, hkv, DK, DV, NSA_CW_KN);
    const KeySrc &src = keys.src;
    const int nch = keys.nch;
    float S[KN / 8][4];
    uint32_t pa[KN / 16][4];
    zero_frags(acc);
    m[0] = m[1] = -INFINITY;
    l[0] = l[1] = 0.f;
    /* the producer's copies (generic proxy), seen by this thread once the
       barrier completes, ordered before its tensor-core reads (async) */
    auto wait_full = [&](int c) {
        mbar_wait(&b.full[(g0 + c) % NS], ((g0 + c) / NS) & 1);
        fence_async_smem();
    };
    auto release = [&](uint64_t *bar) {
        __syncwarp();
        if (lane == 0) mbar_arrive(bar);
    };
    /* chunk c's stage, from lane 0: its descriptors then stay uniform */
    auto stage = [&](int c) { return uniform((int)((g0 + c) % NS)); };
    auto issue_qk = [&](int c) {
        wg_fence();
        wgmma_tiles_abt<T, DK, ROWS, KN>(S, qdesc, desc_at(kdesc, stage(c) * KN * DK * 2));
        wg_commit();
    };
    auto issue_pv = [&](int c) {
        const uint64_t vd = desc_at(vdesc, stage(c) * KN * DV * 2);
        wg_fence();
#pragma unroll
        for (int kk = 0; kk < KN / 16; ++kk)
            wgmma_pv<T, DV>(acc, pa[kk], desc_at(vd, kk * 16 * 128));
        wg_commit();
    };
    const KeyRange kA = visible_keys(p, br, lr.tA), kB = visible_keys(p, br, lr.tB);
    auto scores = [&](int c, float &aA, float &aB) {
        int s0, cnt = src.chunk(c, s0);
        if (!uniform(chunk_whole(p, br, s0, cnt, KN, lr))) mask_keys(S, s0, cnt, kA, kB, lane);
        softmax_scores(S, p.sl2, m[0], m[1], l[0], l[1], aA, aB);
    };
    if (nch > 0) {
        float aA, aB;
        wait_full(0);
        turn.begin();
        issue_qk(0);
        turn.end();
        wg_wait<0>();
        wg_hold(S);
        scores(0, aA, aB);
#pragma unroll
        for (int kk = 0; kk < KN / 16; ++kk) p_fragment<T>(pa[kk], S, kk);
    }
    for (int c = 1; c < nch; ++c) {
        float aA, aB;
        wait_full(c);
        turn.begin();
        issue_qk(c);
        issue_pv(c - 1);
        turn.end();
        wg_wait<1>();
        wg_hold(S);
        scores(c, aA, aB);
        wg_wait<0>();
        wg_hold(acc);
        release(&b.empty[(g0 + c - 1) % NS]);
        rescale_rows(acc, aA, aB);
#pragma unroll
        for (int kk = 0; kk < KN / 16; ++kk) p_fragment<T>(pa[kk], S, kk);
    }
    if (free_q) release(b.qempty);
    if (nch > 0) {
        turn.begin();
        issue_pv(nch - 1);
        turn.end();
    }
    wg_wait<0>();
    wg_hold(acc);
    if (nch > 0) release(&b.empty[(g0 + nch - 1) % NS]);
    nch_out = nch;
}

/* The consumer warps (ctid 0 .. NW * 32 - 1): the tiles the producer
   publishes, until it says there are none. */
template <typename T, int DK, int DV, int NW>
__device__ inline void cw_consume(const Params &p, int mode, unsigned br_mask, const T *Qs,
                                  const T *Ks, const T *Vs, float2 *held, const CwBars &b,
                                  const CwTile *tile, int ctid)
{
    constexpr int KN = NSA_CW_KN;
    /* wg from lane 0: the compiler then keeps the descriptors derived from
       it in uniform registers (no per-chunk moves into them) */
    const int warp = ctid >> 5, lane = ctid & 31, wg = uniform(warp >> 2);
    const uint64_t qdesc = sw128_desc(Qs + wg * 64 * 64, 16);
    const uint64_t kdesc = sw128_desc(Ks, 16), vdesc = sw128_desc(Vs, KN * 128);
    unsigned last_br = 0, first_br = 3;
    for (int br = 2; br >= 0; --br) if (br_mask & (1u << br)) first_br = br;
    for (int br = 0; br < 3; ++br) if (br_mask & (1u << br)) last_br = br;
    const bool hold = ws_held<DK, DV, NW>() && mode == M_FWD && first_br != last_br;
    const CwTurns<NW> turn{wg};
    turn.open();
    uint32_t g = 0;
    for (uint32_t j = 0;; ++j) {
        mbar_wait(b.qfull, j & 1); /* Q fenced with the first chunk's wait */
        const CwTile tl = read_tile(tile, lane);
        const RowTile &rt = tl.rt;
        const int hkv = tl.hkv;
        if (uniform(rt.b) < 0) break;
        const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase + warp * 16, lane);
        const bool wactive = rt.fbase + warp * 16 < rt.fmax;
        bool prev = epi_adds_earlier(p.epi);
        for (int br = 0; br < 3; ++br) {
            if (!(br_mask & (1u << br))) continue;
            float acc[DV / 8][4], m[2], l[2];
            int nch;
            if (br == BR_CMP)
                cw_branch<T, DK, DV, NW, BR_CMP>(p, rt, hkv, lr, g, (unsigned)br == last_br,
                                                 qdesc, kdesc, vdesc, b, turn, lane, acc, m, l,
                                                 nch);
            else
                cw_branch<T, DK, DV, NW, BR_WIN>(p, rt, hkv, lr, g, (unsigned)br == last_br,
                                                 qdesc, kdesc, vdesc, b, turn, lane, acc, m, l,
                                                 nch);
            g += nch;
            if (wactive) {
                const bool first = (unsigned)br == first_br;
                branch_epilogue<T, DV, cw_prev_batch<NW>()>(
                    p, br, mode, epi_writes_out(p.epi) && (unsigned)br == last_br,
                    prev && !(hold && !first),
                    lr, m[0], m[1], l[0], l[1], acc, lane,
                    HeldOut{hold ? held + ctid : nullptr, NW * 32, first});
            }
            prev = true;
        }
    }
    turn.close();
}

template <typename T, int DK, int DV, int NW>
__device__ inline void row_fwd_ws(const Params &p, int mode, unsigned br_mask, int64_t units,
                                  const QMap &qm)
{
    constexpr int KN = NSA_CW_KN, NS = NSA_CW_STAGES, ROWS = NW * 16;
    static_assert(NS >= 2, "the next chunk lands while one is computed");
    static_assert(DK % 64 == 0 && DV % 64 == 0 && DV <= 128, "64-column panels");
    static_assert(2 * NS + 2 <= 16 && sizeof(CwTile) <= 128, "ws_stage_smem's 256 bytes");
    constexpr int PREGS = cw_producer_regs<NW>(), CREGS = cw_consumer_regs<NW>();
    static_assert(PREGS % 8 == 0 && CREGS % 8 == 0 && PREGS >= 24 && CREGS <= 256,
                  "setmaxnreg takes multiples of 8 from 24 to 256");
    constexpr int threads = cw_fwd_threads<DK, DV, NW>(); /* the launch bound */
    static_assert(128 * PREGS + NW * 32 * CREGS <=
                      threads * launch_regs(threads),
                  "the registers given (NSA_CW_*_REGS) within the CTA's at launch");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)sw128_base(smem_raw); /* [DK/64][ROWS][64] */
    T *Ks = Qs + ROWS * DK;            /* [NS][DK/64][KN][64] */
    T *Vs = Ks + NS * KN * DK;         /* [NS][DV/64][KN][64] */
    uint64_t *bar = (uint64_t *)(Vs + NS * KN * DV);
    CwTile *tile = (CwTile *)(bar + 16);
    float2 *held = (float2 *)(bar + 32); /* ws_held(): [DV/2][NW*32] */
    const CwBars b{bar, bar + NS, bar + 2 * NS, bar + 2 * NS + 1};
    const int tid = threadIdx.x;
    if (tid == 0) {
        for (int i = 0; i < NS; ++i) {
            mbar_init(b.full + i, 128);
            mbar_init(b.empty + i, NW);
        }
        mbar_init(b.qfull, 128 + 1);
        mbar_init(b.qempty, NW);
    }
    __syncthreads();
    if (uniform(tid >> 5) >= NW) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" :: "n"(PREGS));
        cw_produce<T, DK, DV, NW>(p, br_mask, units, qm, Qs, Ks, Vs, b, tile, tid - NW * 32);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" :: "n"(CREGS));
        cw_consume<T, DK, DV, NW>(p, mode, br_mask, Qs, Ks, Vs, held, b, tile, tid);
    }
}

/* Accumulator fragments (16 rows x 8 KN/8 columns a warp) as hi + lo A
   fragments of all KN/16 k-slices (split_frag). */
template <typename T, int KN>
__device__ inline void split_frags(const float (&S)[KN / 8][4], uint32_t (&hi)[KN / 16][4],
                                   uint32_t (&lo)[KN / 16][4])
{
#pragma unroll
    for (int kk = 0; kk < KN / 16; ++kk) split_frag<T>(S, kk, hi[kk], lo[kk]);
}

/* acc += hi B over the KN / 16 k-slices of split_frags, and lo B where
   grad_lo(X) (split2 says when and why), issued (the caller fences and
   commits): B the N-major tile at descriptor b, a slice's 16 rows 16 rows
   of 128 bytes further; hi then lo a slice, a fixed order of sums. */
template <typename T, int N, int KN, GradOperand X>
__device__ inline void wgmma_hilo(float (&acc)[N / 8][4], const uint32_t (&hi)[KN / 16][4],
                                  const uint32_t (&lo)[KN / 16][4], uint64_t b)
{
#pragma unroll
    for (int kk = 0; kk < KN / 16; ++kk) {
        wgmma_pv<T, N>(acc, hi[kk], desc_at(b, kk * 16 * 128));
        if (grad_lo(X)) wgmma_pv<T, N>(acc, lo[kk], desc_at(b, kk * 16 * 128));
    }
}

/* ---- dQ of the compressed and window branches on wgmma ------------------

   The row tile of row_fwd_sm90. Per chunk: S = Q K^T and dP = dO V^T (both
   m64n64k16, A and B from shared memory), then P = 2^(sl2 S - lse2) from
   the saved lse (exp2_ftz, as row_body), dS = P (g dP - Delta) in the
   storage type (and its residual: grad_lo, split2, wgmma_hilo),
   and dQ += dS K with dS from registers and K read N-major. A fixed order
   of products: same bits run after run. */
template <typename T, int DK, int DV, int NW>
__device__ inline void row_dq_sm90(const Params &p, unsigned br_mask)
{
    constexpr int KN = NSA_WG_KN, NS = NSA_WG_STAGES, ROWS = NW * 16;
    static_assert(NS >= 3, "chunk c + 1 resident while chunks c - 1 and c are computed");
    static_assert(DK % 64 == 0 && DV % 64 == 0 && DK <= 128, "64-column panels");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)sw128_base(smem_raw); /* [DK/64][ROWS][64] */
    T *Os = Qs + ROWS * DK;      /* dO, [DV/64][ROWS][64] */
    T *Ks = Os + ROWS * DV;      /* [NS][DK/64][KN][64]   */
    T *Vs = Ks + NS * KN * DK;   /* [NS][DV/64][KN][64]   */
    /* wg and the stages from lane 0: the descriptors derived from them then
       stay in uniform registers */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = uniform(warp >> 2);
    const int hkv = blockIdx.y;
    RowTile rt;
    if (!uniform(locate_rows<false, NW>(p, rt))) return;
    const int G = p.G;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase + warp * 16, lane);
    const bool wactive = rt.fbase + warp * 16 < rt.fmax;
    stage_rows_sw128<DK, ROWS, NW * 32>(Qs, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.q, p.qst, p.qsh); }, tid);
    stage_rows_sw128<DV, ROWS, NW * 32>(Os, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.dout, (int64_t)p.H * DV, DV); }, tid);
    cp_commit();
    const uint64_t qdesc = sw128_desc(Qs + wg * 64 * 64, 16), odesc = sw128_desc(Os + wg * 64 * 64, 16);
    const uint64_t kdesc = sw128_desc(Ks, 16), vdesc = sw128_desc(Vs, 16);
    const uint64_t kndesc = sw128_desc(Ks, KN * 128); /* K as the N-major B of dS K */

    float acc[DK / 8][4]; /* dQ over the branches */
    zero_frags(acc);
    for (int br = 0; br < 3; ++br) {
        if (!(br_mask & (1u << br))) continue;
        const BranchKeys<T> keys(p, br, rt, hkv, DK, DV);
        const KeySrc &src = keys.src;
        const int nch = keys.nch;
        const DqRows rs = dq_rows<T>(p, br, lr);
        DgSums dg;
        auto load = [&](int c) { keys.template load<DK, DV, NS, NW * 32>(Ks, Vs, c, tid); };
        float S[KN / 8][4], dP[KN / 8][4];
        uint32_t ph[KN / 16][4], pl[KN / 16][4]; /* dS of the chunk before (split_frags) */
        /* S_c = Q K_c^T and dP_c = dO V_c^T, issued as one group */
        auto stage = [&](int c) { return uniform(c % NS); };
        auto issue_s_dp = [&](int c) {
            wg_fence();
            wgmma_tiles_abt<T, DK, ROWS, KN>(S, qdesc, desc_at(kdesc, stage(c) * KN * DK * 2));
            wgmma_tiles_abt<T, DV, ROWS, KN>(dP, odesc, desc_at(vdesc, stage(c) * KN * DV * 2));
            wg_commit();
        };
        /* acc += dS_c K_c from ph, pl, issued as one group */
        auto issue_dq = [&](int c) {
            wg_hold(acc);
            wg_fence();
            wgmma_hilo<T, DK, KN, GRAD_DS>(acc, ph, pl, desc_at(kndesc, stage(c) * KN * DK * 2));
            wg_commit();
        };
        /* dS_c = P (g dP - Delta) into S, P from the saved lse */
        auto scores = [&](int c) {
            int s0, cnt = src.chunk(c, s0);
            mask_chunk(p, br, S, s0, cnt, uniform(chunk_whole(p, br, s0, cnt, KN, lr)), lr.tA,
                       lr.tB, lane);
            ds_chunk(S, dP, p.sl2, rs, dg);
        };
        /* Stages: chunk c lives in stage c % NS. Step c reads K_c, V_c and
           K_{c-1} while chunk c + 1 may still be landing, and loads chunk
           c + NS - 2 into the stage that dS_{c-2} K_{c-2} freed. landed():
           this thread's copies, then everyone's, visible to the tensor core. */
        auto landed = [&]() {
            fence_async_smem();
            __syncthreads();
        };
        __syncthreads();
        for (int c = 0; c < NS - 1; ++c) load(c);
        cp_wait<NS - 2>(); /* chunk 0 (and Q, dO) */
        landed();
        if (nch > 0) {
            issue_s_dp(0);
            wg_wait<0>();
            wg_hold(S);
            wg_hold(dP);
            scores(0);
            split_frags<T, KN>(S, ph, pl);
        }
        /* Step c (as the forward's): S_c, dP_c and acc += dS_{c-1} K_{c-1}
           issued together; the scores of chunk c run while the dQ product is
           in flight. The products add into acc in chunk order, as before. */
        for (int c = 1; c < nch; ++c) {
            cp_wait<NS - 3>(); /* chunk c landed for this thread */
            landed();          /* ... for all; stage (c + NS - 2) % NS is free */
            load(c + NS - 2);
            issue_s_dp(c);
            issue_dq(c - 1);
            wg_wait<1>();
            wg_hold(S);
            wg_hold(dP);
            scores(c);
            wg_wait<0>();
            wg_hold(acc);
            split_frags<T, KN>(S, ph, pl);
        }
        if (nch > 0) issue_dq(nch - 1);
        wg_wait<0>();
        wg_hold(acc);
        if (wactive) store_dg<T>(p, br, lr, rs, dg, lane);
    }
    if (wactive) store_dq<T, DK>(p, lr, acc, lane);
}

/* ---- dK, dV on wgmma: the key-centric pass ------------------------------

   kv_body's tiles, segments and order of sums; one warpgroup, its warp w
   the tile's keys 16 w .. 16 w + 15 (the accumulator layout of wgmma is
   mma.sync's, so kv_scores and kv_store serve both). Per chunk of
   NSA_KV_ROWS query rows:
     S^T = K Q^T, dP^T = V dO^T   m64n64k16, A and B K-major from shared
                                  memory (wgmma_tiles_abt);
     g P, dS = P (g dP - Delta)   in registers (kv_scores), in the storage
                                  type (split_frags, wgmma_hilo);
     dV += (g P)^T dO, dK += dS^T Q
                                  m64nDk16 from registers against dO and Q
                                  read N-major (one 16-row slice a step).
   The products of a chunk run in a fixed order: same bits run after run. */
template <typename T, int DK, int DV, int BR>
__device__ inline void kv_body_sm90(const Params &p, const KvSplit &sp)
{
    constexpr int RC = NSA_KV_ROWS;
    static_assert(RC == 64 && DK % 64 == 0 && DV % 64 == 0 && DK <= 128 && DV <= 128,
                  "64-column panels, m64n64 scores");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = (T *)sw128_base(smem_raw); /* [DK/64][64][64] */
    T *Vs = Ks + 64 * DK;              /* [DV/64][64][64] */
    T *Qs = Vs + 64 * DV;              /* [2][DK/64][RC][64] */
    T *Os = Qs + 2 * RC * DK;          /* [2][DV/64][RC][64] */
    float4 *info = (float4 *)(Os + 2 * RC * DV); /* [2][RC]: lse2, delta, g, t */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const KvWork<T, DK, DV, BR> w(p, sp, blockIdx.x);
    if (!uniform(w.ok)) return;
    const int key0 = w.t.key0, key_end = w.t.key_end, nkeys = key_end - key0;
    stage_run_sw128<DK, 64, 128>(Ks, w.kb + key0 * w.kst, w.kst, nkeys, tid);
    stage_run_sw128<DV, 64, 128>(Vs, w.vb + key0 * w.vst, w.vst, nkeys, tid);
    cp_commit();
    auto sw = [](T *tile, int r, int j) {
        return tile + (j >> 3) * RC * 64 + r * 64 + (((j & 7) ^ (r & 7)) << 3);
    };
    auto load = [&](int64_t c, int buf) {
        T *qd = Qs + buf * RC * DK, *od = Os + buf * RC * DV;
        return w.template load<128>(c, [&](int r, int j) { return sw(qd, r, j); },
                                    [&](int r, int j) { return sw(od, r, j); }, tid);
    };
    /* A of the scores (K, V), B of the scores (Q, dO K-major) and of the
       gradients (Q, dO N-major: the next 64 columns lie RC rows further) */
    const uint64_t kdesc = sw128_desc(Ks, 16), vdesc = sw128_desc(Vs, 16);
    const uint64_t qdesc = sw128_desc(Qs, 16), odesc = sw128_desc(Os, 16);
    const uint64_t qndesc = sw128_desc(Qs, RC * 128), ondesc = sw128_desc(Os, RC * 128);

    float dk[DK / 8][4], dv[DV / 8][4];
    zero_frags(dk);
    zero_frags(dv);
    const int kw0 = warp * 16;
    const KvSeen seen(p, BR, key0 + kw0 + (lane >> 2), key_end);
    const int64_t cbeg = w.cbeg;
    const int nc = uniform((int)(w.cend - w.cbeg)); /* <= seg_len chunks */

    /* One barrier a chunk: past it, chunk i is staged and every warp is done
       with chunk i - 1, whose buffer then takes chunk i + 1 while the
       scores' products run. The rows' info of chunk i + 1 is fetched then
       too but stored only after chunk i's scores: a store at the fetch
       waited out the global loads' latency (a sixth of this kernel's stall
       samples at 64K); later than the scores, its registers would be live
       beside the gradient products' and spill. */
    typename KvWork<T, DK, DV, BR>::Info next{};
    if (nc > 0) w.put(info, load(cbeg, 0));
    for (int i = 0; i < nc; ++i) {
        const int buf = i & 1;
        cp_wait<0>();
        fence_async_smem();
        __syncthreads();
        float St[RC / 8][4], dPt[RC / 8][4];
        wg_fence();
        wgmma_tiles_abt<T, DK, 64, RC>(St, kdesc, desc_at(qdesc, buf * RC * DK * 2));
        wgmma_tiles_abt<T, DV, 64, RC>(dPt, vdesc, desc_at(odesc, buf * RC * DV * 2));
        wg_commit();
        if (i + 1 < nc) next = load(cbeg + i + 1, buf ^ 1);
        wg_wait<0>();
        wg_hold(St);
        wg_hold(dPt);
        kv_scores(p, St, dPt, info + buf * RC, 0, seen, lane);
        if (i + 1 < nc) w.put(info + (buf ^ 1) * RC, next);
        uint32_t ph[RC / 16][4], pl[RC / 16][4], sh[RC / 16][4], sl[RC / 16][4];
        split_frags<T, RC>(St, ph, pl);
        split_frags<T, RC>(dPt, sh, sl);
        const uint64_t qn = desc_at(qndesc, buf * RC * DK * 2);
        const uint64_t on = desc_at(ondesc, buf * RC * DV * 2);
        wg_hold(dk);
        wg_hold(dv);
        wg_fence();
        wgmma_hilo<T, DV, RC, GRAD_P>(dv, ph, pl, on);
        wgmma_hilo<T, DK, RC, GRAD_DS>(dk, sh, sl, qn);
        wg_commit();
        wg_wait<0>();
        wg_hold(dk);
        wg_hold(dv);
    }
    if (kw0 < nkeys) kv_store<T, DK, DV, BR>(w, sp, dk, dv, kw0, lane);
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

/* dQ of the compressed and window branches: wgmma on sm_90a (head dims up
   to 128), the mma.sync row kernel elsewhere. */
template <typename T, int DK, int DV, int NW>
__global__ void __launch_bounds__(NW * 32, 1) cw_dq_kernel(Params p, int mode, unsigned br_mask)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (NW % 4 == 0 && DK <= 128) row_dq_sm90<T, DK, DV, NW>(p, br_mask); else
#endif
    row_body<T, DK, DV, NW, true>(p, mode, br_mask);
}

/* The forward's compressed and window passes (M_STAGE, M_FWD, M_PREP):
   on sm_90a warp-specialised wgmma (a persistent grid walking `units` =
   row tiles x kv heads), elsewhere the mma.sync row kernel (grid row tiles
   x kv heads). cw_fwd_threads says which; qm: Q for the warp-specialised
   producer (nsah::q_map), unused by the other paths. */
template <typename T, int DK, int DV, int NW>
__global__ void __launch_bounds__(cw_fwd_threads<DK, DV, NW>(), 1)
    cw_fwd_kernel(Params p, int mode, unsigned br_mask, int64_t units,
                  const __grid_constant__ QMap qm)
{
    /* NSA_CW_WARPS wide only as the warp-specialised pass: the host takes
       that width nowhere else (nsah::cw_fwd_warps) */
    if constexpr (NW != NSA_ROW_WARPS && cw_fwd_threads<DK, DV, NW>() == NW * 32) {
        __trap();
    } else {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
        if constexpr (NW % 4 == 0 && DV <= 128) {
            if constexpr (cw_fwd_threads<DK, DV, NW>() > NW * 32)
                row_fwd_ws<T, DK, DV, NW>(p, mode, br_mask, units, qm);
            else
                row_fwd_sm90<T, DK, DV, NW>(p, mode, br_mask);
        } else
#endif
        row_body<T, DK, DV, NW, false>(p, mode, br_mask);
    }
}

/* dK, dV of one branch (the key-centric pass): wgmma on sm_90a (head dims
   64 or 128), the mma.sync body elsewhere. */
template <typename T, int DK, int DV, int BR>
__global__ void __launch_bounds__(128) kv_kernel(Params p, KvSplit sp)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (DK % 64 == 0 && DV % 64 == 0 && DK <= 128 && DV <= 128)
        kv_body_sm90<T, DK, DV, BR>(p, sp); else
#endif
    kv_body<T, DK, DV, BR>(p, sp);
}

/* kv_kernel's shared memory: enough for either path. */
template <int DK, int DV>
constexpr size_t kv_smem()
{
    return kv_sm90_smem<DK, DV>() > kv_body_smem<DK, DV>() ? kv_sm90_smem<DK, DV>()
                                                            : kv_body_smem<DK, DV>();
}

} /* namespace nsak */

#endif
