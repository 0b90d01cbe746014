/* kernels/nsa_select_fused.cuh -- selection in one pass over K_cmp per row
   tile, for one-query units (contract, "Selection", steps 1-7, bq = 1).

   Runs after the compressed branch, whose lse it reads. A CTA owns the same
   NSA_ROWS (token, head) rows of one kv head as the compressed pass, and
   streams the same K_cmp chunks:
     1. S^T = K_cmp Q^T on tensor cores: a thread's accumulators then hold a
        few compressed blocks against a few query rows, so the sum over the G
        heads of a token (step 1: p_cmp summed over the group) is a sum over
        a thread's own values and at most two lane shuffles;
     2. probabilities exp(s - lse) (probs mode) or logits sc * s (logits
        mode), 0 where the block is not visible to the row's token;
     3. the overlap map (step 2) onto the selection blocks the chunk
        completes, reading the last rk - 1 compressed scores of the previous
        chunk from a halo;
     4. an exact streaming top-n per token (steps 3-7): a selection block's
        64-bit key is its order-preserving score key above the complement of
        its index, so larger scores win and equal scores go to the lower
        index; NaN ranks lowest; forced and ineligible blocks never compete.
   Nothing of size T x blocks reaches global memory, and every sum runs in a
   fixed order, so the result is bitwise reproducible.

   It is a kernel of its own rather than a second sweep inside the
   compressed pass: there it ran at that kernel's occupancy (its O
   accumulators hold ~240 registers a thread) and cost twice the pass
   itself; alone it keeps few registers and many warps in flight.

   Used when G divides 16 (a warp's 16 rows hold whole tokens), bq = 1,
   n <= 32, and a chunk of NSA_KN compressed blocks holds whole selection
   blocks (fused_select_ok); other shapes use select_kernel. */
#ifndef NSA_KERNELS_SELECT_FUSED_CUH
#define NSA_KERNELS_SELECT_FUSED_CUH

#include "nsa_tiles.cuh"

namespace nsak {

typedef unsigned long long u64;

#define NSA_SEL_HALO 8 /* room for the previous chunk's last rk - 1 scores */

/* Whether the fused selection serves this shape (host and device). */
__host__ __device__ inline bool fused_select_ok(int G, int bq, int n, int l, int d, int lp)
{
    if (G < 1 || 16 % G != 0 || bq != 1 || n < 1 || n > 32) return false;
    if (l % d != 0 || lp % d != 0) return false;
    const int rl = lp / d, rk = l / d;
    return NSA_KN % rl == 0 && rk - 1 <= NSA_SEL_HALO;
}

/* Params.kcn2: for each kv head, the largest |k|^2 over the compressed
   keys kc [rows, Hkv, DK] (fp32 sums of squares of the storage type's
   values), into kcn2[Hkv], which the caller zeroes: a warp a (row, head)
   at a time, the maximum by an integer atomic on the sum's bits
   (non-negative floats order as their bits; NaN and inf above every finite
   value). Any order gives the same maximum. */
template <typename T>
__global__ void kcmp_norm2_kernel(const T *kc, int64_t rows, int Hkv, int DK, float *kcn2)
{
    const int lane = threadIdx.x & 31;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
    for (int64_t w = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < rows * Hkv;
         w += warps) {
        const T *k = kc + w * DK;
        float s = 0.f;
        for (int c = lane; c < DK; c += 32) {
            const float v = Ty<T>::to_f(k[c]);
            s = fmaf(v, v, s);
        }
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) atomicMax((int *)(kcn2 + (int)(w % Hkv)), __float_as_int(s));
    }
}

/* Shared memory of the fused selection for a CTA of NW warps:
   top-n lists [NW][16/G][n] (u64), row lse [NW*16], token scores
   [NW][16/G][HALO + KN]. */
__host__ __device__ inline size_t fused_select_smem(int NW, int G, int n, int KN = NSA_KN)
{
    const int tpw = 16 / G;
    return (size_t)NW * tpw * n * 8 + (size_t)NW * 16 * 4 +
           (size_t)NW * tpw * (NSA_SEL_HALO + KN) * 4;
}

struct SelSmem {
    u64 *top;    /* this warp's top-n lists, [16/G][n], descending */
    float *lse2; /* this warp's 16 rows' lse, log2 domain          */
    float *tsc;  /* this warp's token scores, [16/G][HALO + KN]    */
};

template <int NW, int KN = NSA_KN>
__device__ inline SelSmem sel_smem(unsigned char *base, int G, int n, int warp)
{
    const int tpw = 16 / G;
    SelSmem s;
    s.top = (u64 *)base + (size_t)warp * tpw * n;
    s.lse2 = (float *)(base + (size_t)NW * tpw * n * 8) + warp * 16;
    s.tsc = (float *)(base + (size_t)NW * tpw * n * 8) + NW * 16 +
            (size_t)warp * tpw * (NSA_SEL_HALO + KN);
    return s;
}

/* The warp's 16 rows' lse from the compressed pass into sm.lse2, log2
   domain; +inf past the tile's end and where a row sees no block (its
   probabilities are then 0). */
__device__ inline void sel_row_lse2(const Params &p, const RowTile &rt, int hkv, int G,
                                    const SelSmem &sm, int warp, int lane)
{
    if (lane >= 16) return;
    const int64_t f = rt.fbase + warp * 16 + lane;
    float v = INFINITY;
    if (f < rt.fmax && p.probs) {
        const int64_t row = (rt.q0 + rt.tok_off + f / G) * p.H + hkv * G + (int)(f % G);
        const float l = p.lse[BR_CMP][row];
        v = l == -INFINITY ? INFINITY : l * NSA_LOG2E;
    }
    sm.lse2[lane] = v;
}

/* Position of the warp's token tk, or -1 past the tile's rows (the tile
   starts on a token: G divides the rows of a CTA). */
__device__ inline int sel_token_pos(const RowTile &rt, int G, int warp, int tk)
{
    const int64_t f = rt.fbase + warp * 16 + (int64_t)tk * G;
    return f < rt.fmax ? rt.t_first + warp * (16 / G) + tk : -1;
}

/* Step 1 for one chunk: per token, the sum over its G heads of each
   compressed block's probability (or logit), into tsc[tk][HALO + key]. */
template <typename T, int DK, int LDK, int G>
__device__ inline void sel_chunk_sums(const Params &p, const uint32_t (&qa)[DK / 16][4],
                                      const T *Kc, int s0, const float l2[2][2],
                                      const int tq[2][2], float *tsc, int lane)
{
    constexpr int KN = NSA_KN, LDT = NSA_SEL_HALO + NSA_KN;
    const int g = lane >> 2, t4 = lane & 3;
    float St[KN / 16][2][4];
#pragma unroll
    for (int mt = 0; mt < KN / 16; ++mt) zero_frags(St[mt]);
    /* S^T = K Q^T: A = 16 keys of the chunk, B = Q's A fragment read as two
       8-row B fragments (rows 0-7: a0, a2; rows 8-15: a1, a3) */
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) {
        uint32_t ka[KN / 16][4];
#pragma unroll
        for (int mt = 0; mt < KN / 16; ++mt) lda<LDK>(ka[mt], Kc, mt * 16, k * 16, lane);
#pragma unroll
        for (int mt = 0; mt < KN / 16; ++mt) {
            mma<T>(St[mt][0], ka[mt], qa[k][0], qa[k][2]);
            mma<T>(St[mt][1], ka[mt], qa[k][1], qa[k][3]);
        }
    }
#pragma unroll
    for (int mt = 0; mt < KN / 16; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int key = mt * 16 + g + 8 * h, i = s0 + key;
            float v[2][2];
#pragma unroll
            for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int t = tq[nt][e];
                    const float s = St[mt][nt][2 * h + e];
                    const bool vis = t >= 0 && nsa_cmp_visible(i, t, p.l, p.d); /* step 1 */
                    v[nt][e] = !vis ? 0.f : p.probs ? exp2f(s * p.sl2 - l2[nt][e]) : s * p.sc;
                }
            /* query row r = nt*8 + 2*t4 + e belongs to token r / G (G is a
               compile-time constant: no divisions here) */
            if constexpr (G == 1) {
#pragma unroll
                for (int nt = 0; nt < 2; ++nt)
#pragma unroll
                    for (int e = 0; e < 2; ++e) tsc[(nt * 8 + 2 * t4 + e) * LDT + NSA_SEL_HALO + key] = v[nt][e];
                continue;
            }
            float w0 = v[0][0] + v[0][1], w1 = v[1][0] + v[1][1];
            if constexpr (G == 16) w0 += w1;
            if constexpr (G >= 4) {
                w0 += __shfl_xor_sync(0xffffffffu, w0, 1);
                w1 += __shfl_xor_sync(0xffffffffu, w1, 1);
            }
            if constexpr (G >= 8) {
                w0 += __shfl_xor_sync(0xffffffffu, w0, 2);
                w1 += __shfl_xor_sync(0xffffffffu, w1, 2);
            }
            constexpr int lanes = G < 2 ? 1 : G / 2 < 4 ? G / 2 : 4; /* lanes of t4 a token spans */
            constexpr int per_nt = 8 / G > 0 ? 8 / G : 1; /* tokens in an 8-row n tile */
            if (t4 % lanes == 0) {
                const int tk0 = G == 16 ? 0 : (2 * t4) / G;
                tsc[tk0 * LDT + NSA_SEL_HALO + key] = w0;
                if constexpr (G != 16) tsc[(per_nt + tk0) * LDT + NSA_SEL_HALO + key] = w1;
            }
        }
}

/* Steps 2-4 for one token and one chunk: score the selection blocks the
   chunk completes, and fold the eligible, unforced ones into the token's
   top-n list (held by lanes 0..n-1 while merging). A chunk of KN blocks
   completes KN / rl selection blocks, a lane each: KN / rl <= 32. The
   divisions are done once a kernel (SelGeo) and once a token (jt = t / l',
   sel_token_jt), not once a chunk. */
struct SelGeo {
    int rl, rk; /* rl = l' / d compressed blocks a selection block; rk = l / d */
    int bpc;    /* selection blocks NSA_KN compressed blocks complete (NSA_KN / rl) */
};
__device__ inline SelGeo sel_geo(const Params &p)
{
    SelGeo g;
    g.rl = p.lp / p.d;
    g.rk = p.l / p.d;
    g.bpc = NSA_KN / g.rl;
    return g;
}

/* Lane tk (< 16 / G) holds jt = t / l' of the warp's token tk, -1 past the
   tile's rows; a chunk's merge takes it with a shuffle. */
__device__ inline int sel_token_jt(const Params &p, const RowTile &rt, int G, int warp, int lane)
{
    const int t = lane < 16 / G ? sel_token_pos(rt, G, warp, lane) : -1;
    return t >= 0 ? t / p.lp : -1;
}

/* Step 2 for one selection block: the sum over m < rl, k < rk of c[m - k]
   (c: the block's first compressed score, cs + HALO + rl * j), m outer and
   k inner, the reference's order. RL, RK known to the compiler: the loads
   and adds unrolled, no loop. */
template <int RL, int RK>
__device__ __forceinline__ float sel_overlap_sum_fixed(const float *c)
{
    float s = 0.f;
#pragma unroll
    for (int m = 0; m < RL; ++m)
#pragma unroll
        for (int k = 0; k < RK; ++k) s += c[m - k];
    return s;
}
/* The same for any rl, rk; the presets' shapes (paper: rl = 4, rk = 2;
   fla and tile: 1, 1) take the unrolled sums (a profile of the paper
   preset's sweep found ~12% of its instructions in the rolled loop). */
__device__ __forceinline__ float sel_overlap_sum(const float *c, int rl, int rk)
{
    if (rl == 4 && rk == 2) return sel_overlap_sum_fixed<4, 2>(c);
    if (rl == 1 && rk == 1) return sel_overlap_sum_fixed<1, 1>(c);
    float s = 0.f;
    for (int m = 0; m < rl; ++m)
        for (int k = 0; k < rk; ++k) s += c[m - k];
    return s;
}

/* Steps 2-5 for the i-th selection block a chunk of KN compressed blocks
   from s0 completes (i < (KN / NSA_KN) * bpc), for a token of jt = t / l':
   its 64-bit rank key, or 0 (empty) where there is no token (!on), no
   such block, or the block is not eligible (step 4: j * l' <= t) or is
   forced (step 5: initial and local blocks). */
template <int KN>
__device__ __forceinline__ u64 sel_block_key(const Params &p, const SelGeo &g, int jt, int s0,
                                             const float *cs, int i, bool on)
{
    const int a = min(p.n_init, jt + 1);                                  /* initial */
    const int llo = p.n_local > 0 ? max(0, jt - p.n_local + 1) : jt + 1; /* local   */
    u64 key = 0;
    if (on && i < (KN / NSA_KN) * g.bpc) {
        const int j = (s0 / NSA_KN) * g.bpc + i;
        if (j <= jt && j >= a && j < llo) {
            /* step 2: sum over m < rl, k < rk of p_cmp[rl*j + m - k] */
            const float s = sel_overlap_sum(cs + NSA_SEL_HALO + g.rl * i, g.rl, g.rk);
            key = nsa_rank_key(nsa_score_key(s), j);
        }
    }
    return key;
}

template <int KN = NSA_KN>
__device__ inline void sel_chunk_merge(const Params &p, const SelGeo &g, int jt, int s0,
                                       const float *cs, u64 *top, int lane)
{
    static_assert(KN % NSA_KN == 0, "chunks of whole NSA_KN blocks");
    const int n = p.n;
    const u64 key = sel_block_key<KN>(p, g, jt, s0, cs, lane, true);
    /* merge the candidates above the list's last key into the descending
       list by ranks: a key's new place is the number of keys of both
       above it (keys are distinct, but for the empty 0, which ranks below
       every candidate and keeps its order) */
    const u64 cur = lane < n ? top[lane] : 0ull;
    const u64 thr = __shfl_sync(0xffffffffu, cur, n - 1);
    const bool cand = key > thr;
    unsigned m = __ballot_sync(0xffffffffu, cand);
    if (!m) return;
    int cur_above = 0, key_above = 0, list_above = 0;
    /* two candidates a trip: their shuffles, compares and ballots are
       independent, so one's latency hides the other's (a 64K profile
       found the one-at-a-time loop the sweep's largest stall) */
    while (m) {
        const int s1 = __ffs(m) - 1;
        m &= m - 1;
        const bool two = m != 0;
        const int s2 = two ? __ffs(m) - 1 : s1;
        m &= m - 1;
        const u64 x1 = __shfl_sync(0xffffffffu, key, s1), x2 = __shfl_sync(0xffffffffu, key, s2);
        cur_above += (x1 > cur) + (two && x2 > cur);
        key_above += (x1 > key) + (two && x2 > key);
        const unsigned b1 = __ballot_sync(0xffffffffu, lane < n && cur > x1);
        const unsigned b2 = __ballot_sync(0xffffffffu, lane < n && cur > x2);
        if (lane == s1) list_above = __popc(b1);
        if (two && lane == s2) list_above = __popc(b2);
    }
    __syncwarp(); /* every lane has read the list */
    if (lane < n && lane + cur_above < n) top[lane + cur_above] = cur;
    if (cand && list_above + key_above < n) top[list_above + key_above] = key;
    __syncwarp();
}

/* Steps 2-4 for two tokens at once, where a chunk completes at most 16
   selection blocks and n <= 16: lanes 0-15 take the first token's blocks
   and list, lanes 16-31 the second's (jt, cs and top are the lane's half's;
   jt < 0: a half without a token). The same keys and the same ranks as
   two calls of sel_chunk_merge, in one pass of the warp's 32 lanes: one
   candidate of each half a trip, one ballot serving both. */
template <int KN>
__device__ inline void sel_chunk_merge_pair(const Params &p, const SelGeo &g, int jt, int s0,
                                            const float *cs, u64 *top, int lane)
{
    static_assert(KN % NSA_KN == 0, "chunks of whole NSA_KN blocks");
    const int half = lane >> 4, hl = lane & 15, n = p.n;
    const u64 key = sel_block_key<KN>(p, g, jt, s0, cs, hl, jt >= 0);
    const u64 cur = hl < n ? top[hl] : 0ull;
    const u64 thr = __shfl_sync(0xffffffffu, cur, half * 16 + n - 1);
    const bool cand = key > thr;
    const unsigned m = __ballot_sync(0xffffffffu, cand);
    if (!m) return;
    unsigned mA = m & 0xffffu, mB = m >> 16;
    int cur_above = 0, key_above = 0, list_above = 0;
    while (mA | mB) {
        const int s1 = mA ? __ffs(mA) - 1 : -1, s2 = mB ? __ffs(mB) + 15 : -1;
        mA &= mA - 1;
        mB &= mB - 1;
        const u64 x1 = __shfl_sync(0xffffffffu, key, s1 < 0 ? 0 : s1);
        const u64 x2 = __shfl_sync(0xffffffffu, key, s2 < 0 ? 16 : s2);
        const bool own = half ? s2 >= 0 : s1 >= 0; /* this half's candidate this trip */
        const u64 x = half ? x2 : x1;
        cur_above += own && x > cur;
        key_above += own && x > key;
        const unsigned b = __ballot_sync(0xffffffffu, own && hl < n && cur > x);
        if (lane == s1) list_above = __popc(b & 0xffffu);
        if (lane == s2) list_above = __popc(b >> 16);
    }
    __syncwarp(); /* every lane has read its list */
    if (hl < n && hl + cur_above < n) top[hl + cur_above] = cur;
    if (cand && list_above + key_above < n) top[list_above + key_above] = key;
    __syncwarp();
}

/* Step 7 for one token: forced blocks plus the best n - forced, ascending,
   -1 padded; the count. */
__device__ inline void sel_finish(const Params &p, int t, const u64 *top, int32_t *out,
                                  int32_t *count, int lane)
{
    const int jt = t / p.lp, elig = jt + 1, n = p.n;
    const int a = min(p.n_init, elig);
    const int llo = p.n_local > 0 ? max(max(0, jt - p.n_local + 1), a) : elig;
    const int forced = a + max(0, jt - llo + 1);
    const int want = max(0, min(n, elig) - forced);
    int v = 0x7fffffff;
    if (lane < a) v = lane;
    else if (lane < forced) v = llo + (lane - a);
    else if (lane < forced + want) v = (int)nsa_rank_index(top[lane - forced]);
    int rank = 0;
    for (int k = 0; k < 32; ++k) rank += __shfl_sync(0xffffffffu, v, k) < v;
    const int total = forced + want;
    if (lane < total) out[rank] = v;
    else if (lane < n) out[lane] = -1;
    if (lane == 0) *count = total;
}

/* Step 7 for the warp's tokens, into p.sel_out_idx / p.sel_out_cnt. */
template <int G>
__device__ inline void sel_finish_warp(const Params &p, const RowTile &rt, int hkv,
                                       const SelSmem &sm, int warp, int lane)
{
    const int n = p.n;
    for (int tk = 0; tk < 16 / G; ++tk) {
        const int t = sel_token_pos(rt, G, warp, tk);
        if (t < 0) continue;
        const int64_t f = rt.fbase + warp * 16 + (int64_t)tk * G;
        const int64_t ug = p.pf[PF_UNIT][rt.b] + rt.tok_off + f / G; /* bq = 1: unit = query */
        sel_finish(p, t, sm.top + tk * n, p.sel_out_idx + (ug * p.Hkv + hkv) * n,
                   p.sel_out_cnt + ug * p.Hkv + hkv, lane);
    }
}

/* The second sweep over K_cmp. Called by every thread of the CTA after the
   compressed branch's chunk loop, with sm.lse2 filled for the warp's rows;
   kb, kst, hi: the compressed keys of the sequence and how many the tile's
   last token sees. Ends with the K buffers free. */
template <typename T, int DK, int NW, int G>
__device__ void fused_select_sweep(const Params &p, const RowTile &rt, int hkv,
                                   const uint32_t (&qa)[DK / 16][4], const T *kb, int64_t kst,
                                   int hi, T *Ks, const SelSmem &sm, bool wactive)
{
    constexpr int LDK = DK + 8, KN = NSA_KN, LDT = NSA_SEL_HALO + NSA_KN;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    constexpr int tpw = 16 / G;
    const int n = p.n;
    const SelGeo geo = sel_geo(p);
    const int rk = geo.rk, jt_lane = sel_token_jt(p, rt, G, warp, lane);
    for (int i = lane; i < tpw * n; i += 32) sm.top[i] = 0ull; /* key 0: empty */
    for (int i = lane; i < tpw * LDT; i += 32) sm.tsc[i] = 0.f;
    float l2[2][2];
    int tq[2][2];
#pragma unroll
    for (int nt = 0; nt < 2; ++nt)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int r = nt * 8 + 2 * (lane & 3) + e;
            const int64_t f = rt.fbase + warp * 16 + r;
            tq[nt][e] = f < rt.fmax ? rt.pos0 + rt.tok_off + (int)(f / G) : -1;
            l2[nt][e] = sm.lse2[r];
        }
    /* cover every selection block the tile's last token may take */
    const int ncov = max(hi, (rt.t_last / p.lp + 1) * geo.rl);
    const int nch = (ncov + KN - 1) / KN;
    /* the row kernel's K stages, NS deep (V is not needed) */
    constexpr int NS = NSA_ROW_STAGES;
    auto load = [&](int c) {
        if (c < nch) {
            const int s0 = c * KN, cnt = min(KN, hi - s0);
            stage_run<DK, LDK, KN, NW * 32>(Ks + (c % NS) * KN * LDK, kb + s0 * kst, kst, cnt, tid);
        }
        cp_commit();
    };
    __syncthreads();
    for (int c = 0; c < NS - 1; ++c) load(c);
    for (int c = 0; c < nch; ++c) {
        load(c + NS - 1);
        cp_wait<NS - 1>();
        __syncthreads();
        const int s0 = c * KN;
        if (wactive) {
            sel_chunk_sums<T, DK, LDK, G>(p, qa, Ks + (c % NS) * KN * LDK, s0, l2, tq, sm.tsc, lane);
            __syncwarp();
            for (int tk = 0; tk < tpw; ++tk) {
                const int jt = __shfl_sync(0xffffffffu, jt_lane, tk);
                if (jt >= 0) sel_chunk_merge(p, geo, jt, s0, sm.tsc + tk * LDT, sm.top + tk * n, lane);
            }
            __syncwarp();
            /* halo: the chunk's last rk - 1 scores serve the next chunk */
            if (lane < rk - 1)
                for (int tk = 0; tk < tpw; ++tk)
                    sm.tsc[tk * LDT + NSA_SEL_HALO - 1 - lane] =
                        sm.tsc[tk * LDT + NSA_SEL_HALO + KN - 1 - lane];
            __syncwarp();
        }
        __syncthreads();
    }
    if (wactive) sel_finish_warp<G>(p, rt, hkv, sm, warp, lane);
}

/* The selection kernel: rows as the compressed pass's CTA (locate_rows),
   the rows' lse from that pass (natural log, saved). */
template <int DK, int NW>
constexpr size_t select_sweep_smem()
{
    return (size_t)(NW * 16 * (DK + 8) + NSA_ROW_STAGES * NSA_KN * (DK + 8)) * 2;
}

template <typename T, int DK, int NW, int G>
__device__ inline void select_sweep_body(const Params &p)
{
    constexpr int LDK = DK + 8;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)smem_raw;          /* [NW*16][LDK]     */
    T *Ks = Qs + NW * 16 * LDK;     /* [NS][KN][LDK]    */
    unsigned char *selm = (unsigned char *)(Ks + NSA_ROW_STAGES * NSA_KN * LDK);
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, hkv = blockIdx.y;
    RowTile rt;
    if (!locate_rows<false, NW>(p, rt)) return;
    stage_q_rows<DK, LDK>(p, rt, hkv, G, Qs, NW * 16, tid, NW * 32);
    __syncthreads();
    uint32_t qa[DK / 16][4];
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) lda<LDK>(qa[k], Qs, warp * 16, k * 16, lane);
    const SelSmem sm = sel_smem<NW>(selm, G, p.n, warp);
    sel_row_lse2(p, rt, hkv, G, sm, warp, lane);
    __syncwarp();
    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_CMP, rt, hkv, kb, vb, kst, vst, DK, DK);
    fused_select_sweep<T, DK, NW, G>(p, rt, hkv, qa, kb, kst, src.hi, Ks, sm,
                                     rt.fbase + warp * 16 < rt.fmax);
}

} /* namespace nsak */

#endif
