/* kernels/nsa_select_sm90.cuh -- the fused selection sweep (contract,
   "Selection", bq = 1) on Hopper's warpgroup MMA, sm_90a.

   The same CTA, rows and steps as select_sweep_body (nsa_select_fused.cuh),
   with the products of nsa_attn_sm90.cuh: S^T = K_cmp Q^T as wgmma m64n64k16
   from swizzled shared tiles (a warpgroup's 64 rows against the chunk's 64
   compressed blocks), and several CTAs an SM (NSA_SEL_CTAS), so that one
   CTA's scoring overlaps the others' products. The sweep is bound by the
   instructions it issues a chunk (a 16K profile: two thirds of the issue
   slots busy, the tensor and special-function pipes far less), so each
   step is written for few of them:
     - the transposed product puts a token's G heads in a lane's columns:
       at G = 16 the group sum is three adds a value and a reduce-scatter
       over four lanes (with Q K^T it was a reduce-scatter over eight);
     - 2^x is one EX2, with the subnormal-keeping exp2f only for chunks
       that need it (sel_probs);
     - at G = 16 the overlap map and the streaming top-n run once every two
       chunks, on 32 selection blocks (rl = 4) rather than 16.

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
    const size_t a = select_sweep_wg_smem<DK, NW>() +
                     fused_select_smem(NW, G, n, G == 16 ? 2 * NSA_WG_KN : NSA_WG_KN);
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

/* The sweep's products are S^T = K_cmp Q^T: a warpgroup's m64n64 tile is
   the chunk's 64 compressed blocks against the warpgroup's 64 query rows,
   and S[nt][e] of a lane is block key0 + g + 8 (e >> 1) (g = lane / 4,
   key0 = 16 (warp % 4)) against row 8 nt + 2 t4 + (e & 1) (t4 = lane % 4).
   A token's G heads are then adjacent columns: the sum over them (step 1)
   is mostly a sum of a lane's own values. */

/* S -> p = 2^(sl2 s - lse2) in place (probs mode; l2s: the lse2 of the
   warpgroup's 64 rows, in shared memory rather than 16 registers a lane),
   or sc s (logits mode). 2^x is one FFMA and one EX2,
   which flushes results below 2^-126 to zero; exp2f keeps them as
   subnormals (a flushed score could change a ranking), and gives the same
   bits above, so a chunk where some lane of the warp has an exponent below
   -126 (rows past the tile's end and rows that see no block have lse2 =
   +inf, exponent -inf) takes exp2f. */
__device__ inline void sel_probs(const Params &p, float (&S)[NSA_WG_KN / 8][4], const float *l2s,
                                 bool flush_free, int lane)
{
    constexpr int NT = NSA_WG_KN / 8;
    if (!p.probs) {
        const float sc = p.sc;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[nt][e] *= sc;
        return;
    }
    const float sl2 = p.sl2;
    if (flush_free) { /* no exponent below -126 (sel_flush_free): the same bits */
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            const float2 l2 = *(const float2 *)(l2s + nt * 8 + 2 * (lane & 3));
#pragma unroll
            for (int e = 0; e < 4; ++e) S[nt][e] = exp2_ftz(fmaf(S[nt][e], sl2, -(e & 1 ? l2.y : l2.x)));
        }
        return;
    }
    float lo[4] = {INFINITY, INFINITY, INFINITY, INFINITY}; /* four short chains, not one long */
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const float2 l2 = *(const float2 *)(l2s + nt * 8 + 2 * (lane & 3));
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            S[nt][e] = fmaf(S[nt][e], sl2, -(e & 1 ? l2.y : l2.x));
            lo[e] = fminf(lo[e], S[nt][e]);
        }
    }
    if (__any_sync(0xffffffffu, fminf(fminf(lo[0], lo[1]), fminf(lo[2], lo[3])) < -126.f)) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[nt][e] = exp2f(S[nt][e]);
    } else {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) S[nt][e] = exp2_ftz(S[nt][e]);
    }
}

/* Whether no exponent sl2 s - lse2 of the warp's 16 rows can fall below
   -126 in any chunk, so that sel_probs may skip its test: for a row of
   query q and lse2 l, every product with a compressed key k obeys |s| <=
   |q| |k| (Cauchy-Schwarz), so the exponent is at least -(|sl2| |q| max|k|
   + l), max|k|^2 being the kv head's p.kcn2 (kcmp_norm2_kernel). The
   margins (a factor 1.001, one unit of exponent) cover the fp32 rounding
   of the products, the norms and the exponent. A row past the tile or
   seeing no block (l = +inf) has exponents -inf, 0 either way; a NaN or
   infinite norm fails the test. Qs: the CTA's Q rows, staged and seen;
   lse2: the warp's rows'. Called by all lanes of the warp. */
template <typename T, int DK, int ROWS>
__device__ inline bool sel_flush_free(const Params &p, const T *Qs, const float *lse2, int hkv,
                                      int warp, int lane)
{
    if (!p.kcn2 || !p.probs) return false;
    const int r = lane & 15, half = lane >> 4; /* half of row r's columns */
    float q2 = 0.f;
#pragma unroll
    for (int c = 0; c < DK / 2; c += 8) {
        const uint4 u = *(const uint4 *)(Qs + Sw128<ROWS>::at(warp * 16 + r, half * (DK / 2) + c));
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const float2 v = Ty<T>::unpack(w[i]);
            q2 = fmaf(v.y, v.y, fmaf(v.x, v.x, q2));
        }
    }
    q2 += __shfl_xor_sync(0xffffffffu, q2, 16);
    const float l = lse2[r];
    const float least = fabsf(p.sl2) * sqrtf(q2 * __ldg(p.kcn2 + hkv)) * 1.001f + l;
    return __all_sync(0xffffffffu, l == INFINITY || least <= 125.f);
}

/* Step 1 for one chunk of a warpgroup: the lane's probabilities (or
   logits), 0 where the block is not visible to the row's token, summed
   over each token's G heads into tsc[token][HALO + soff + block]: tsc is
   the warpgroup's first token's scores (row stride LDT), t0 the position
   of the warpgroup's first row's token, nrows its rows in the tile. */
template <int G, int LDT>
__device__ inline void sel_group_sums(const Params &p, float (&S)[NSA_WG_KN / 8][4], int s0,
                                      int key0, bool whole, int t0, int nrows, float *tsc,
                                      int lane)
{
    constexpr int NT = NSA_WG_KN / 8;
    const int g = lane >> 2, t4 = lane & 3;
    if (!whole) /* step 1: only blocks the row's token sees */
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = nt * 8 + 2 * t4 + (e & 1), i = s0 + key0 + g + 8 * (e >> 1);
                if (!(r < nrows && nsa_cmp_visible(i, t0 + r / G, p.l, p.d))) S[nt][e] = 0.f;
            }
    float *col = tsc + NSA_SEL_HALO + key0 + g; /* block key0 + g of token 0 */
    if constexpr (G == 16) {
        /* token k: columns 16 k .. 16 k + 15, n tiles 2 k and 2 k + 1 of the
           four lanes of equal g; a reduce-scatter over those lanes leaves
           lane t4 with token t4's sums for blocks g and g + 8 */
        float w[8];
#pragma unroll
        for (int k = 0; k < 4; ++k)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                w[2 * k + h] = (S[2 * k][2 * h] + S[2 * k][2 * h + 1]) +
                               (S[2 * k + 1][2 * h] + S[2 * k + 1][2 * h + 1]);
        reduce_scatter_half<4>(w, 2, lane);
        reduce_scatter_half<2>(w, 1, lane);
        col[t4 * LDT] = w[0];
        col[t4 * LDT + 8] = w[1];
    } else if constexpr (G == 1) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) col[(nt * 8 + 2 * t4 + (e & 1)) * LDT + 8 * (e >> 1)] = S[nt][e];
    } else {
        /* G = 2, 4, 8: a token is the two columns of a lane and, for G > 2,
           the lanes of equal t4 / (G / 2) (a butterfly over t4's low bits);
           the first of them stores */
#pragma unroll
        for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float w = S[nt][2 * h] + S[nt][2 * h + 1];
                if constexpr (G >= 4) w += __shfl_xor_sync(0xffffffffu, w, 1);
                if constexpr (G >= 8) w += __shfl_xor_sync(0xffffffffu, w, 2);
                if ((2 * t4) % G == 0) col[((nt * 8 + 2 * t4) / G) * LDT + 8 * h] = w;
            }
    }
}

/* TMA: K chunks through the copy engine (one lane issues the chunk's
   DK / 64 boxes on the stage's transaction barrier) instead of every
   thread's cp.async; rows past the tile's visible blocks then arrive as
   the tensor's next rows, which the step-1 mask (a chunk with them is
   never whole) sets to 0 after their exponentials. */
template <typename T, int DK, int NW, int G, bool TMA>
__device__ inline void select_sweep_sm90(const Params &p, const KvMaps &maps)
{
    constexpr int KN = NSA_WG_KN, NS = NSA_SEL_STAGES, ROWS = NW * 16;
    /* G = 16 with rl >= 4: a merge every two chunks (2 KN / rl <= 32
       selection blocks, a lane each), so tsc holds two chunks */
    constexpr int SPAN = G == 16 ? 2 * KN : KN, LDT = NSA_SEL_HALO + SPAN, tpw = 16 / G;
    static_assert(NS >= 2 && KN == 2 * NSA_KN, "two merges of NSA_KN blocks a chunk");
    static_assert(NW == 8 && KN == 64, "two warpgroups of 64 rows against 64 blocks");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)sw128_base(smem_raw); /* [DK/64][ROWS][64] */
    T *Ks = Qs + ROWS * DK;                                         /* [NS][DK/64][KN][64] */
    unsigned char *selm = (unsigned char *)(Ks + NS * KN * DK);
    /* wg from lane 0: the compiler then keeps what it derives (the
       descriptors) in uniform registers */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wg = uniform(warp >> 2);
    const int hkv = blockIdx.y, n = p.n;
    RowTile rt;
    if (!uniform(locate_rows<false, NW>(p, rt))) return;
    const bool wactive = rt.fbase + warp * 16 < rt.fmax;
    stage_rows_sw128<DK, ROWS, NW * 32>(Qs, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.q, p.qst, p.qsh); }, tid);
    cp_commit();
    const SelSmem sm = sel_smem<NW, SPAN>(selm, G, n, warp);
    /* the warpgroup's: its first token's scores (tsc), its 64 rows' lse2 */
    const SelSmem sm_wg = sel_smem<NW, SPAN>(selm, G, n, 4 * wg);
    for (int i = lane; i < tpw * n; i += 32) sm.top[i] = 0ull; /* key 0: empty */
    for (int i = lane; i < tpw * LDT; i += 32) sm.tsc[i] = 0.f;
    sel_row_lse2(p, rt, hkv, G, sm, warp, lane);
    const int64_t f_wg = rt.fbase + 64 * wg;
    const int nrows = (int)max((int64_t)0, min((int64_t)64, rt.fmax - f_wg));
    const int t0 = rt.pos0 + rt.tok_off + (int)(f_wg / G);

    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_CMP, rt, hkv, kb, vb, kst, vst, DK, DK);
    const int hi = src.hi;
    const SelGeo geo = sel_geo(p);
    const int rk = geo.rk, jt_lane = sel_token_jt(p, rt, G, warp, lane);
    const bool span2 = SPAN == 2 * KN && geo.rl >= 4;
    /* cover every selection block the tile's last token may take */
    const int nch = uniform((max(hi, (rt.t_last / p.lp + 1) * geo.rl) + KN - 1) / KN);
    __shared__ uint64_t kbar[NS];
    const int c0 = (int)p.pf[PF_CMP][rt.b]; /* the sequence's first compressed row */
    if (TMA) {
        if (tid == 0)
            for (int st = 0; st < NS; ++st) mbar_init(&kbar[st], 1);
        fence_async_smem();
        __syncthreads(); /* the barriers initialised before any wait */
    }
    auto load = [&](int c) {
        if constexpr (TMA) {
            if (c < nch && tid == 0) {
                const int s0 = c * KN;
                uint64_t *b = &kbar[c % NS];
                mbar_expect_tx(b, KN * DK * 2);
                unsigned char *d = (unsigned char *)(Ks + (c % NS) * KN * DK);
#pragma unroll
                for (int i = 0; i < DK / 64; ++i)
                    tma_box3(d + i * KN * 128, &maps.k, i * 64, hkv, c0 + s0, b);
            }
        } else {
            if (c < nch) {
                const int s0 = c * KN;
                stage_run_sw128<DK, KN, NW * 32>(Ks + (c % NS) * KN * DK, kb + s0 * kst, kst,
                                                 hi - s0, tid);
            }
            cp_commit();
        }
    };
    const uint64_t qdesc = sw128_desc(Qs + wg * 64 * 64, 16), kdesc = sw128_desc(Ks, 16);
    const int key0 = 16 * (warp & 3);
    float S[KN / 8][4];
    /* Steps 2-4 for the warp's tokens on the span of blocks from m0, then
       the halo: the span's last rk - 1 scores serve the next span */
    /* two tokens a merge where a chunk completes at most 16 selection
       blocks (the paper preset's rl = 4) and n <= 16 */
    const bool pair = tpw >= 2 && !span2 && (KN / NSA_KN) * geo.bpc <= 16 && n <= 16;
    auto merge = [&](int m0) {
        if (pair) {
            for (int tk = 0; tk < tpw; tk += 2) {
                const int tl = tk + (lane >> 4); /* the lane's half's token */
                const int jt = __shfl_sync(0xffffffffu, jt_lane, tl);
                sel_chunk_merge_pair<KN>(p, geo, jt, m0, sm.tsc + tl * LDT, sm.top + tl * n, lane);
            }
        }
        for (int tk = 0; tk < tpw && !pair; ++tk) {
            const int jt = __shfl_sync(0xffffffffu, jt_lane, tk);
            if (jt < 0) continue;
            const float *cs = sm.tsc + tk * LDT;
            if (span2) {
                sel_chunk_merge<2 * KN>(p, geo, jt, m0, cs, sm.top + tk * n, lane);
            } else if (geo.rl >= KN / 32) {
                sel_chunk_merge<KN>(p, geo, jt, m0, cs, sm.top + tk * n, lane);
            } else { /* more selection blocks than lanes: two halves */
                sel_chunk_merge<NSA_KN>(p, geo, jt, m0, cs, sm.top + tk * n, lane);
                sel_chunk_merge<NSA_KN>(p, geo, jt, m0 + NSA_KN, cs + NSA_KN, sm.top + tk * n,
                                        lane);
            }
        }
        __syncwarp();
        const int last = NSA_SEL_HALO + (span2 ? 2 * KN : KN) - 1;
        if (lane < rk - 1)
            for (int tk = 0; tk < tpw; ++tk)
                sm.tsc[tk * LDT + NSA_SEL_HALO - 1 - lane] = sm.tsc[tk * LDT + last - lane];
    };
    /* Step c: chunk c landed (every thread's copies, then the barrier, which
       also says every warp is done with chunk c - 1: its stage takes chunk
       c + NS - 1, its scores are all written), S_c^T = K_c Q^T, and while
       the tensor cores compute it the warps merge the span that ended with
       chunk c - 1 (the merge is a chain of dependent shuffles, the product
       a wait: each hides the other); the warpgroup's warps then pass a
       barrier before any writes scores over the merged ones. Then steps 1
       (scores) and 2-4 (when chunk c ends a span) */
    int pending = -1; /* the first block of the span to merge, -1: none */
    bool flush_free = false; /* sel_flush_free, once Q is staged */
    auto step = [&](int c, int stage) {
        if constexpr (TMA) {
            mbar_wait(&kbar[stage], (unsigned)(c / NS) & 1u);
        } else {
            cp_wait<NS - 2>();
            fence_async_smem();
        }
        __syncthreads();
        load(c + NS - 1);
        wg_fence();
        wgmma_tiles_abt<T, DK, KN, KN, ROWS>(S, desc_at(kdesc, stage * KN * DK * 2), qdesc);
        wg_commit();
        if (pending >= 0) {
            if (wactive) merge(pending);
            pending = -1;
            if (wg == 0) asm volatile("bar.sync 1, 128;\n" ::: "memory");
            else asm volatile("bar.sync 2, 128;\n" ::: "memory");
        }
        wg_wait<0>();
        wg_hold(S);
        const int s0 = c * KN, soff = span2 ? (c & 1) * KN : 0;
        const bool whole = nrows == 64 && chunk_whole(p, BR_CMP, s0, min(KN, hi - s0), KN, t0,
                                                      t0 + 63 / G);
        sel_probs(p, S, sm_wg.lse2, flush_free, lane);
        sel_group_sums<G, LDT>(p, S, s0, key0, whole, t0, nrows, sm_wg.tsc + soff, lane);
        if (!(span2 && !(c & 1) && c + 1 < nch)) pending = s0 - soff; /* the span ends here */
    };
    /* NS chunks a trip, so that each step's stage is a constant (its
       descriptor one uniform add) */
    if constexpr (TMA) { /* Q (cp.async) landed and seen by the tensor core */
        cp_wait<0>();
        fence_async_smem();
    }
    for (int c = 0; c < NS - 1; ++c) load(c);
    /* Q staged and seen (with cp.async, the first chunk too: the first
       step waits for no less), and the rows' lse2 written */
    cp_wait<0>();
    __syncthreads();
    flush_free = sel_flush_free<T, DK, ROWS>(p, Qs, sm.lse2, hkv, warp, lane);
    for (int cb = 0; cb < nch; cb += NS)
#pragma unroll
        for (int st = 0; st < NS; ++st)
            if (cb + st < nch) step(cb + st, st);
    if (pending >= 0) { /* the last span: every warp's scores written */
        __syncthreads();
        if (wactive) merge(pending);
    }
    if (wactive) sel_finish_warp<G>(p, rt, hkv, sm, warp, lane);
}

#endif /* __CUDA_ARCH_FEAT_SM90_ALL */

template <typename T, int DK, int NW, int G>
__global__ void __launch_bounds__(NW * 32, NSA_SEL_CTAS) select_sweep_kernel(Params p)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (NW == 8 && DK % 64 == 0) select_sweep_sm90<T, DK, NW, G, false>(p, KvMaps{}); else
#endif
    select_sweep_body<T, DK, NW, G>(p);
}

/* The same with K_cmp through the copy engine (maps.k, which the host made:
   maps.ok), on sm_90a; other targets run select_sweep_body. A kernel of its
   own: both stagings in one kernel spill at the three CTAs' registers. */
template <typename T, int DK, int NW, int G>
__global__ void __launch_bounds__(NW * 32, NSA_SEL_CTAS)
    select_sweep_tma_kernel(Params p, const __grid_constant__ KvMaps maps)
{
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (NW == 8 && DK % 64 == 0) select_sweep_sm90<T, DK, NW, G, true>(p, maps); else
#endif
    select_sweep_body<T, DK, NW, G>(p);
}

} /* namespace nsak */

#endif
