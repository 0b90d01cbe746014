/* kernels/nsa_select_sm90.cuh -- the fused selection sweep (contract,
   "Selection", bq = 1) on Hopper's warpgroup MMA, sm_90a.

   The same CTA, rows and steps as select_sweep_body (nsa_select_fused.cuh),
   with the products of nsa_attn_sm90.cuh: S = Q K_cmp^T as wgmma m64n64k16
   from swizzled shared tiles, 64 compressed blocks a chunk, and several CTAs
   an SM (NSA_SEL_CTAS), so that one CTA's scoring, which
   is most of the work, overlaps the others' products: the sweep is bound
   by its instructions, not its products (one CTA an SM with the next
   chunk's product in flight was slower than the mma.sync sweep, 33.5 ms
   against 29.6 ms at 64K). A lane holds rows g and
   g + 8 of its warp's 16 (g = lane / 4) against 16 of the chunk's columns,
   so the sum over a token's G heads (step 1) is a sum over those rows: the
   two in the lane when G = 16, then across the lanes of equal lane % 4.
   The overlap map and the streaming top-n run per 32 blocks, as before.

   select_sweep_kernel is the one entry: this path on sm_90a, the mma.sync
   sweep elsewhere. */
#ifndef NSA_KERNELS_SELECT_SM90_CUH
#define NSA_KERNELS_SELECT_SM90_CUH

#include "nsa_attn_sm90.cuh"
#include "nsa_select_fused.cuh"

namespace nsak {

/* K stages of the sweep: two, so that three CTAs share an SM (about 71 KB
   of shared memory and at most 85 registers a thread each): the sweep is
   bound by the latency of its scoring, and a third CTA's warps hide more
   of it than deeper stages do. */
#ifndef NSA_SEL_STAGES
#define NSA_SEL_STAGES 2
#endif
/* CTAs an SM (launch bounds): three on the wgmma path; the mma.sync
   sweep holds more registers and keeps two */
#ifndef NSA_SEL_CTAS
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NSA_SEL_CTAS 3
#else
#define NSA_SEL_CTAS 2
#endif
#endif

template <int DK, int NW>
constexpr size_t select_sweep_wg_smem()
{
    return (size_t)(NW * 16 * DK + NSA_SEL_STAGES * NSA_WG_KN * DK) * 2 + 1024;
}

/* Shared memory of select_sweep_kernel: either path, plus the selection's
   lists and scores (fused_select_smem). */
template <int DK, int NW>
inline size_t select_sweep_kernel_smem(int G, int n)
{
    const size_t a = select_sweep_wg_smem<DK, NW>() + fused_select_smem(NW, G, n, NSA_WG_KN);
    const size_t b = select_sweep_smem<DK, NW>() + fused_select_smem(NW, G, n);
    return a > b ? a : b;
}

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

/* One level of the group sum's reduce-scatter: lanes that differ in bit
   `mask` swap halves of w[0 .. 2 HALF) and add, so each keeps the sum of
   one half in w[0 .. HALF). HALF is a constant, so w stays in registers
   (an index computed at run time put it in local memory). */
template <int HALF>
__device__ inline void reduce_scatter_half(float *w, int mask, int lane)
{
    const bool up = lane & mask;
#pragma unroll
    for (int i = 0; i < HALF; ++i) {
        const float send = up ? w[i] : w[i + HALF], keep = up ? w[i + HALF] : w[i];
        w[i] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
    }
}

/* Step 1 for one chunk: the lane's probabilities (or logits) of rows g and
   g + 8, summed over each token's G heads into tsc[token][HALO + column].
   Rows past the tile's end hold Q = 0 and lse2 = +inf, so they add 0
   without a test; a chunk that every row of the warp sees whole needs no
   visibility test either. */
template <int G>
__device__ inline void sel_group_sums(const Params &p, const float (&S)[NSA_WG_KN / 8][4],
                                      int s0, bool whole, int tA, int tB, float l2A, float l2B,
                                      float *tsc, int lane)
{
    constexpr int NT = NSA_WG_KN / 8, LDT = NSA_SEL_HALO + NSA_WG_KN;
    const int g = lane >> 2, t4 = lane & 3;
    float v[NT][4];
    if (p.probs) { /* one test a chunk, not one an element */
        const float sl2 = p.sl2;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) v[nt][e] = exp2f(S[nt][e] * sl2 - (e < 2 ? l2A : l2B));
    } else {
        const float sc = p.sc;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) v[nt][e] = S[nt][e] * sc;
    }
    if (!whole)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int t = e < 2 ? tA : tB, i = s0 + nt * 8 + 2 * t4 + (e & 1);
                if (!(t >= 0 && nsa_cmp_visible(i, t, p.l, p.d))) v[nt][e] = 0.f; /* step 1 */
            }
    if constexpr (G == 16) {
        /* one token: rows g and g + 8, then a reduce-scatter over the 8
           lanes of equal lane % 4 (halving the columns at each of lanes'
           bits 4, 3, 2): lane (g, t4) ends with columns 8 g + 2 t4 + {0, 1} */
        float w[2 * NT];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            w[2 * nt] = v[nt][0] + v[nt][2];
            w[2 * nt + 1] = v[nt][1] + v[nt][3];
        }
        reduce_scatter_half<NT>(w, 16, lane);     /* 8 values move */
        reduce_scatter_half<NT / 2>(w, 8, lane);  /* 4 */
        reduce_scatter_half<NT / 4>(w, 4, lane);  /* 2 */
        *(float2 *)(tsc + NSA_SEL_HALO + g * 8 + 2 * t4) = make_float2(w[0], w[1]);
    } else { /* rows g and g + 8 are tokens g / G and (g + 8) / G */
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                float w = v[nt][e];
                if constexpr (G >= 2) w += __shfl_xor_sync(0xffffffffu, w, 4);
                if constexpr (G >= 4) w += __shfl_xor_sync(0xffffffffu, w, 8);
                if constexpr (G >= 8) w += __shfl_xor_sync(0xffffffffu, w, 16);
                v[nt][e] = w;
            }
        if (g % G == 0) {
            float *ta = tsc + (g / G) * LDT + NSA_SEL_HALO, *tb = tsc + ((g + 8) / G) * LDT + NSA_SEL_HALO;
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
                *(float2 *)(ta + nt * 8 + 2 * t4) = make_float2(v[nt][0], v[nt][1]);
                *(float2 *)(tb + nt * 8 + 2 * t4) = make_float2(v[nt][2], v[nt][3]);
            }
        }
    }
}

template <typename T, int DK, int NW, int G>
__device__ inline void select_sweep_sm90(const Params &p)
{
    constexpr int KN = NSA_WG_KN, NS = NSA_SEL_STAGES, ROWS = NW * 16;
    constexpr int LDT = NSA_SEL_HALO + KN, tpw = 16 / G;
    /* step c loads chunk c + NS - 1 into the stage chunk c - 1 was read
       from, once every thread has passed step c - 1's closing barrier */
    static_assert(NS >= 2 && KN == 2 * NSA_KN, "two merges of NSA_KN blocks a chunk");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)sw128_base(smem_raw); /* [DK/64][ROWS][64] */
    T *Ks = Qs + ROWS * DK;                                         /* [NS][DK/64][KN][64] */
    unsigned char *selm = (unsigned char *)(Ks + NS * KN * DK);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = warp >> 2;
    const int hkv = blockIdx.y, n = p.n;
    RowTile rt;
    if (!uniform(locate_rows<false, NW>(p, rt))) return;
    const bool wactive = rt.fbase + warp * 16 < rt.fmax;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase + warp * 16, lane);
    stage_rows_sw128<DK, ROWS, NW * 32>(Qs, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.q, p.qst, p.qsh); }, tid);
    cp_commit();
    const SelSmem sm = sel_smem<NW, KN>(selm, G, n, warp);
    for (int i = lane; i < tpw * n; i += 32) sm.top[i] = 0ull; /* key 0: empty */
    for (int i = lane; i < tpw * LDT; i += 32) sm.tsc[i] = 0.f;
    /* the rows' lse from the compressed pass, log2 domain; +inf where a row
       sees no block (its probabilities are then 0) */
    auto lse2_of = [&](bool v, int64_t row) {
        if (!v || !p.probs) return INFINITY;
        const float l = p.lse[BR_CMP][row];
        return l == -INFINITY ? INFINITY : l * NSA_LOG2E;
    };
    const float l2A = lse2_of(lr.vA, lr.rowA), l2B = lse2_of(lr.vB, lr.rowB);

    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_CMP, rt, hkv, kb, vb, kst, vst, DK, DK);
    const int hi = src.hi;
    const SelGeo geo = sel_geo(p);
    const int rk = geo.rk, jt_lane = sel_token_jt(p, rt, G, warp, lane);
    /* cover every selection block the tile's last token may take */
    const int nch = uniform((max(hi, (rt.t_last / p.lp + 1) * geo.rl) + KN - 1) / KN);
    auto load = [&](int c) {
        if (c < nch) {
            const int s0 = c * KN;
            stage_run_sw128<DK, KN, NW * 32>(Ks + (c % NS) * KN * DK, kb + s0 * kst, kst, hi - s0,
                                             tid);
        }
        cp_commit();
    };
    const uint64_t qdesc = sw128_desc(Qs + wg * 64 * 64, 16), kdesc = sw128_desc(Ks, 16);
    auto issue_qk = [&](int c, float (&Sd)[KN / 8][4]) {
        wg_fence();
        wgmma_tiles_abt<T, DK, ROWS, KN>(Sd, qdesc, kdesc + desc_step((c % NS) * KN * DK * 2));
        wg_commit();
    };
    /* Step c: S_c = Q K_c^T, then steps 1-4 on it. Two CTAs share an SM
       (one S, no product in flight across the scoring), so one's scoring
       overlaps the other's products. Stages as in row_fwd_sm90, K only. */
    float S[KN / 8][4];
    __syncthreads();
    for (int c = 0; c < NS - 1; ++c) load(c);
    for (int c = 0; c < nch; ++c) {
        load(c + NS - 1); /* into the stage S_{c-1} was read from */
        cp_wait<NS - 1>();
        fence_async_smem();
        __syncthreads();
        issue_qk(c, S);
        wg_wait<0>();
        wg_hold(S);
        const int s0 = c * KN;
        const bool whole = uniform(chunk_whole(p, BR_CMP, s0, KN, KN, lr));
        sel_group_sums<G>(p, S, s0, whole, lr.tA, lr.tB, l2A, l2B, sm.tsc, lane);
        __syncwarp();
        if (wactive)
            for (int tk = 0; tk < tpw; ++tk) {
                const int jt = __shfl_sync(0xffffffffu, jt_lane, tk);
                if (jt < 0) continue;
                const float *cs = sm.tsc + tk * LDT;
                if (geo.rl >= KN / 32) {
                    sel_chunk_merge<KN>(p, geo, jt, s0, cs, sm.top + tk * n, lane);
                } else { /* more selection blocks than lanes: two halves */
                    sel_chunk_merge<NSA_KN>(p, geo, jt, s0, cs, sm.top + tk * n, lane);
                    sel_chunk_merge<NSA_KN>(p, geo, jt, s0 + NSA_KN, cs + NSA_KN, sm.top + tk * n,
                                            lane);
                }
            }
        __syncwarp();
        /* halo: the chunk's last rk - 1 scores serve the next chunk */
        if (lane < rk - 1)
            for (int tk = 0; tk < tpw; ++tk)
                sm.tsc[tk * LDT + NSA_SEL_HALO - 1 - lane] = sm.tsc[tk * LDT + NSA_SEL_HALO + KN - 1 - lane];
        __syncwarp();
        __syncthreads();
    }
    wg_wait<0>();
    if (wactive) sel_finish_warp<G>(p, rt, hkv, sm, warp, lane);
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

template <typename T, int DK, int NW, int G>
__global__ void __launch_bounds__(NW * 32, NSA_SEL_CTAS) select_sweep_kernel(Params p)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (NW % 4 == 0 && DK % 64 == 0) select_sweep_sm90<T, DK, NW, G>(p); else
#endif
    select_sweep_body<T, DK, NW, G>(p);
}

} /* namespace nsak */

#endif
