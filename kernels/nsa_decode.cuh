/* kernels/nsa_decode.cuh -- decoding: one query per sequence against a long
   cache, and the compression of a growing cache.

   Decoding (every sequence has exactly one query, at its last position
   t = nk - 1). Per (sequence, kv head) the G query heads of the group are
   the 16 rows of one warp (rows past G are zeros, never written), so every
   key row read serves the whole group. A prefill-shaped pass would give one
   CTA per (sequence, kv head); here each branch's keys are cut into slots
   (split-K) so that a batch of a few sequences still fills the chip:
     cmp: NSA_KN-aligned ranges of cspl compressed blocks,
     win: ranges of wspl keys of [max(0, t - w + 1), t],
     slc: groups of spb entries of the query's selection.
   A slot's CTA is one warp running the prefill kernels' building blocks
   (qk_chunk, mask_chunk, softmax_pv_chunk) over its chunks and writes a
   partial (m, l, acc) for its 16 rows; slots are combined in their fixed
   order (the flash-decoding sum), so results do not depend on scheduling.

   The steps, in stream order, each kernel chained to the one before (it
   launches while that one finishes: chain_wait in nsa_common.cuh):
     1. decode_split_kernel over the cmp and win slots; the cmp slots also
        keep each head's raw q . K_cmp[i] for the selection;
     2. decode_select_kernel, nsel CTAs per (sequence, kv head), each over a
        range of selection blocks: the compressed lse from the cmp partials,
        the selection's importance p (contract, Selection step 1: probs or
        logits, summed over the G heads in head order), the overlap map
        (step 2) and the range's n best (steps 3-6: the 64-bit rank keys of
        nsa.h, ties to the lower index, NaN lowest, forced blocks never
        compete); the pair's last CTA to finish merges the lists, exactly,
        and sel_finish writes the selection (step 7);
     3. decode_split_kernel over the slc slots;
     4. decode_combine_kernel: each branch's partials in slot order, its lse,
        and the gated sum o = g_cmp o_cmp + g_slc o_slc + g_win o_win
        (contract, "Gates and output"), rounded once.

   Compression of a growing cache: compress_append_kernel computes only the
   blocks that became complete since the cache held seqlens_old[b] keys
   (contract, branch 1: block i covers keys i*d .. i*d + l - 1 and exists
   once complete), with the same per-element code as a full compression, so
   the result is bitwise the same. */
#ifndef NSA_KERNELS_DECODE_CUH
#define NSA_KERNELS_DECODE_CUH

#include "nsa_attn.cuh"
#include "nsa_select.cuh"
#include "nsa_select_fused.cuh"

namespace nsak {

/* Shared-memory stages of a decode slot's K / V chunks (one warp per CTA,
   as the selected branch's forward: more CTAs per SM beat depth). */
#ifndef NSA_DEC_STAGES
#define NSA_DEC_STAGES 2
#endif
/* Slots of all (sequence, kv head) pairs together that the cmp split aims
   at (a few per SM), the fewest chunks a cmp slot holds (each slot's
   partial costs 16 * (Dv + 2) floats written and read again), the keys of
   a win slot and of a slc slot. */
#define NSA_DEC_CTAS 1024
#ifndef NSA_DEC_MIN_CHUNKS
#define NSA_DEC_MIN_CHUNKS 4
#endif
#define NSA_DEC_WIN_KEYS 128
#ifndef NSA_DEC_SLC_KEYS
#define NSA_DEC_SLC_KEYS 128
#endif
#define NSA_DEC_THREADS 256 /* decode_select_kernel: one selection block a thread */
/* Floats of a select CTA's importance stage (its blocks' compressed range),
   and the most keys its merge holds (nsel lists of n). */
#define NSA_DEC_TS 4096
/* The most slots a pair may have: the combine keeps a weight a slot on
   chip, 48 KB of dynamic shared memory (the most without opting in). */
#define NSA_DEC_MAX_SLOTS 12288

/* The decode plan (host) and the kernels' view of it. Slots of one
   (sequence, kv head) pair: cmp [0, nsc), win [nsc, nsc + nsw), slc
   [nsc + nsw, nslots). */
struct Decode {
    int on;          /* the forward takes the decode path               */
    int cspl;        /* compressed blocks per cmp slot (multiple of KN)  */
    int wspl;        /* window keys per win slot                         */
    int spb;         /* selection entries per slc slot                   */
    int nsc, nsw, nss, nslots;
    int jpb;         /* selection blocks per select CTA (<= NSA_DEC_THREADS) */
    int nsel;        /* select CTAs per pair                              */
    int64_t ldl;     /* row length of logit: nsc * cspl                   */
    size_t o_part, o_logit, o_cand, o_done; /* workspace offsets (host)   */
    float *part;     /* [B*Hkv][nslots][16 * (2 + Dv)]: m[16], l[16] (log2
                        domain), acc[16][Dv] unnormalised                 */
    float *logit;    /* [B*Hkv][G][ldl] raw q . K_cmp[i] (slc on)         */
    u64 *cand;       /* [B*Hkv][nsel][n] each select CTA's best keys,
                        descending, 0-padded (nsel > 1)                  */
    unsigned *done;  /* [B*Hkv] select CTAs finished; the cmp / win pass
                        zeroes it (nsel > 1)                             */
};

__host__ __device__ inline int64_t dec_part_floats(int Dv) { return 16 * (2 + (int64_t)Dv); }

/* The row tile of decode CTA (sequence b): its one query at t = nk - 1. */
__device__ inline RowTile dec_rows(const Params &p, int b)
{
    RowTile rt;
    rt.b = b;
    rt.q0 = p.cuq[b];
    rt.nq = 1;
    rt.nk = (int)(p.cuk[b + 1] - p.cuk[b]);
    rt.pos0 = rt.nk - 1;
    rt.fbase = 0;
    rt.fmax = p.G;
    rt.tok_off = 0;
    rt.t_first = rt.t_last = rt.nk - 1;
    rt.unit = 0;
    return rt;
}

template <int DK, int DV, int NS>
constexpr size_t dec_split_smem()
{
    return (size_t)(16 * (DK + 8) + NS * NSA_KN * (DK + 8) + NS * NSA_KN * (DV + 8)) * 2;
}

/* One slot of one (sequence, kv head): grid (slots, Hkv, B), one warp;
   slot = slot0 + blockIdx.x. */
template <typename T, int DK, int DV, int NS>
__global__ void __launch_bounds__(32) decode_split_kernel(Params p, Decode dc, int slot0)
{
    constexpr int LDK = DK + 8, LDV = DV + 8, KN = NSA_KN;
    static_assert(NS >= 2, "a pipeline needs two stages");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)smem_raw;      /* [16][LDK]     */
    T *Ks = Qs + 16 * LDK;      /* [NS][KN][LDK] */
    T *Vs = Ks + NS * KN * LDK; /* [NS][KN][LDV] */
    const int lane = threadIdx.x, slot = slot0 + blockIdx.x, hkv = blockIdx.y, b = blockIdx.z;
    const int G = p.G;
    const RowTile rt = dec_rows(p, b);
    const int t = rt.t_last;
    const int rA = lane >> 2, rB = rA + 8;
    const bool vA = rA < G, vB = rB < G;
    const int tA = vA ? t : -1, tB = vB ? t : -1;
    const int64_t bh = (int64_t)b * p.Hkv + hkv;

    stage_q_rows<DK, LDK>(p, rt, hkv, G, Qs, 16, lane, 32); /* q: no kernel of the chain writes it */
    chain_wait();
    chain_release();
    if (slot == 0 && lane == 0 && dc.done) dc.done[bh] = 0u; /* before the select kernel counts */
    __syncwarp();
    uint32_t qa[DK / 16][4];
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) lda<LDK>(qa[k], Qs, 0, k * 16, lane);

    const int br = slot < dc.nsc ? BR_CMP : slot < dc.nsc + dc.nsw ? BR_WIN : BR_SLC;
    const T *kb, *vb;
    int64_t kst, vst;
    KeySrc src = make_src<T>(p, br, rt, hkv, kb, vb, kst, vst, DK, DV);
    if (br == BR_CMP) { /* blocks [slot * cspl, +cspl) of the visible ones */
        src.lo = slot * dc.cspl;
        src.hi = min(src.hi, src.lo + dc.cspl);
    } else if (br == BR_WIN) { /* keys [lo + k * wspl, +wspl) of the window */
        src.lo += (slot - dc.nsc) * dc.wspl;
        src.hi = min(src.hi, src.lo + dc.wspl);
    } else { /* entries [k * spb, +spb) of the selection */
        const int e0 = (slot - dc.nsc - dc.nsw) * dc.spb;
        src.idx += e0;
        src.cnt = max(0, min(src.cnt - e0, dc.spb));
    }
    const int nch = src.nchunks();
    float *lg = (br == BR_CMP && dc.logit) ? dc.logit + bh * G * dc.ldl : nullptr;

    /* stage c % NS <- chunk c; rows past the chunk's keys are zeros (their
       logits are masked, and p = 0 times a zero row adds nothing) */
    auto issue = [&](int c) {
        int s0 = 0, cnt = c < nch ? src.chunk(c, s0) : 0;
        if (cnt > 0) {
            T *kd = Ks + (c % NS) * KN * LDK, *vd = Vs + (c % NS) * KN * LDV;
            stage_run<DK, LDK, KN, 32>(kd, kb + s0 * kst, kst, cnt, lane);
            stage_run<DV, LDV, KN, 32>(vd, vb + s0 * vst, vst, cnt, lane);
        }
        cp_commit(); /* one group per chunk, empty or not, so the count holds */
    };

    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
    float acc[DV / 8][4];
    zero_frags(acc);
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        issue(c + NS - 1); /* into the stage read in iteration c - 1 */
        cp_wait<NS - 1>();
        __syncwarp();
        int s0, cnt = src.chunk(c, s0);
        if (cnt > 0) {
            float S[KN / 8][4];
            qk_chunk<T, DK, Padded<LDK>>(S, qa, Ks + (c % NS) * KN * LDK, lane);
            if (lg) { /* raw logits for the selection: the slot's own columns
                         (cmp chunks start at multiples of KN, ldl covers them) */
#pragma unroll
                for (int nt = 0; nt < KN / 8; ++nt) {
                    const int col = s0 + nt * 8 + 2 * (lane & 3);
                    if (vA) *(float2 *)(lg + (int64_t)rA * dc.ldl + col) = make_float2(S[nt][0], S[nt][1]);
                    if (vB) *(float2 *)(lg + (int64_t)rB * dc.ldl + col) = make_float2(S[nt][2], S[nt][3]);
                }
            }
            const bool whole = cnt == KN && visible(p, br, t, s0) && visible(p, br, t, s0 + cnt - 1);
            mask_chunk(p, br, S, s0, cnt, whole, tA, tB, lane);
            softmax_pv_chunk<T, DV, Padded<LDV>>(S, p.sl2, Vs + (c % NS) * KN * LDV, mA, mB, lA, lB, acc, lane);
        }
        __syncwarp();
    }
    cp_wait<0>();

    lA = quad_sum(lA);
    lB = quad_sum(lB);
    float *pp = dc.part + (bh * dc.nslots + slot) * dec_part_floats(DV);
    if ((lane & 3) == 0) {
        pp[rA] = mA; pp[16 + rA] = lA;
        pp[rB] = mB; pp[16 + rB] = lB;
    }
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) {
        const int dcol = nt * 8 + 2 * (lane & 3);
        *(float2 *)(pp + 32 + rA * DV + dcol) = make_float2(acc[nt][0], acc[nt][1]);
        *(float2 *)(pp + 32 + rB * DV + dcol) = make_float2(acc[nt][2], acc[nt][3]);
    }
}

/* Row r's max M and sum L over slots [s_lo, s_hi) of one pair's partials,
   by one warp, with one round of loads while the slots are at most 32:
   lane i keeps a running (max, sum) over slots s_lo + i, + 32, ... in
   order, and a butterfly merges the lanes (every lane ends with the same
   bits, run after run). Mb is the base the slots are rescaled to (0 when M
   is -inf, as softmax_pv_chunk does: an empty slot then adds 0, a NaN sum
   still propagates). w, when given, gets each slot's weight exp2(m_s - Mb)
   at w[s]. */
__device__ inline void dec_merge_ml(const float *part, int64_t stride, int s_lo, int s_hi, int r,
                                    int lane, float &M, float &Mb, float &L, float *w = nullptr)
{
    float Ml = -INFINITY, Ll = 0.f, m_first = -INFINITY;
    for (int s = s_lo + lane; s < s_hi; s += 32) {
        const float m = __ldcg(part + s * stride + r), l = __ldcg(part + s * stride + 16 + r);
        const float nm = fmaxf(Ml, m), nb = nm == -INFINITY ? 0.f : nm;
        Ll = Ll * exp2f(Ml - nb) + l * exp2f(m - nb);
        Ml = nm;
        if (s == s_lo + lane) m_first = m;
    }
    M = Ml;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
    Mb = M == -INFINITY ? 0.f : M;
    L = Ll * exp2f((Ml == -INFINITY ? Mb : Ml) - Mb);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
    if (w)
        for (int s = s_lo + lane; s < s_hi; s += 32)
            w[s] = exp2f((s == s_lo + lane ? m_first : __ldcg(part + s * stride + r)) - Mb);
}

/* A warp's 32 keys (one a lane) sorted descending across the lanes
   (bitonic: at stage (k, j) the lower lane of a pair keeps the larger key
   where its k-block runs descending, the smaller where it runs ascending). */
__device__ inline u64 dec_warp_sort_desc(u64 x, int lane)
{
#pragma unroll
    for (int k = 2; k <= 32; k <<= 1)
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            const u64 y = __shfl_xor_sync(0xffffffffu, x, j);
            const bool keep_max = ((lane & j) == 0) == ((lane & k) == 0);
            x = keep_max ? (x > y ? x : y) : (x < y ? x : y);
        }
    return x;
}

/* Entries above key in a list of len keys sorted descending. */
__device__ inline int dec_count_above(const u64 *list, int len, u64 key)
{
    int lo = 0, hi = len;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (list[mid] > key) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* The n best keys of nl lists of len keys each (shared memory, each sorted
   descending, 0 = no candidate) into top[0, n): descending, 0-padded. Keys
   other than 0 are distinct, so a key's rank is its place in its own list
   plus the keys above it in the other lists: exact, whatever the order the
   lists were filled in. Every thread of the CTA calls it; top is complete
   when it returns. */
__device__ inline void dec_top_of_lists(const u64 *lists, int nl, int len, int n, u64 *top)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) top[i] = 0ull;
    __syncthreads();
    for (int e = threadIdx.x; e < nl * len; e += blockDim.x) {
        const u64 key = lists[e];
        const int l0 = e / len;
        int rank = e - l0 * len; /* a list's zeros trail its keys */
        if (key == 0ull || rank >= n) continue;
        for (int l = 0; l < nl && rank < n; ++l)
            if (l != l0) rank += dec_count_above(lists + l * len, len, key);
        if (rank < n) top[rank] = key;
    }
    __syncthreads();
}

/* Selection of one (sequence, kv head), split over dc.nsel CTAs: grid
   (nsel, Hkv, B), NSA_DEC_THREADS. CTA c scores the selection blocks
   [c * jpb, +jpb), one a thread, and keeps its n best; the last CTA of the
   pair to finish merges the nsel lists and writes the selection. */
template <int DV>
__global__ void __launch_bounds__(NSA_DEC_THREADS) decode_select_kernel(Params p, Decode dc)
{
    constexpr int NW = NSA_DEC_THREADS / 32;
    __shared__ float lse2[16];
    __shared__ __align__(16) unsigned char buf[NSA_DEC_TS * 8]; /* ts, then the lists to merge */
    __shared__ u64 lists[NW][32];
    __shared__ u64 top[32];
    __shared__ int last;
    float *ts = (float *)buf;
    u64 *merge = (u64 *)buf;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int c = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z, G = p.G, n = p.n;
    const int64_t bh = (int64_t)b * p.Hkv + hkv, stride = dec_part_floats(DV);
    const int nk = (int)(p.cuk[b + 1] - p.cuk[b]), t = nk - 1;
    const int nc = (int)nsa_cmp_blocks(nk, p.l, p.d); /* all visible to t = nk - 1 */
    const float *lg = dc.logit + bh * G * dc.ldl;
    chain_wait();
    chain_release();

    /* step 1 needs the compressed softmax's lse per head (log2 domain;
       +inf where the head sees no block, so that its probabilities are 0) */
    for (int h = warp; h < G; h += NW) {
        float M, Mb, L;
        dec_merge_ml(dc.part + bh * dc.nslots * stride, stride, 0, dc.nsc, h, lane, M, Mb, L);
        if (lane == 0) lse2[h] = L == 0.f ? INFINITY : M + log2f(L);
    }
    __syncthreads();
    /* step 1 for the compressed blocks this CTA's selection blocks cover
       (step 2 reads i = rl * j + m - k, m < rl, k < rk): importance summed
       over the G heads of the group in head order */
    const int rl = p.lp / p.d, rk = p.l / p.d;
    const int jt = t / p.lp;
    const int j0 = c * dc.jpb, j1 = min(j0 + dc.jpb, jt + 1);
    const int i0 = max(0, rl * j0 - rk + 1), i1 = min(nc, rl * (j1 - 1) + rl);
#pragma unroll 2
    for (int i = i0 + tid; i < i1; i += NSA_DEC_THREADS) {
        float x[16];
#pragma unroll
        for (int h = 0; h < 16; ++h) x[h] = h < G ? __ldcg(lg + (int64_t)h * dc.ldl + i) : 0.f;
        float s = 0.f;
#pragma unroll
        for (int h = 0; h < 16; ++h)
            if (h < G) s += p.probs ? exp2f(x[h] * p.sl2 - lse2[h]) : x[h] * p.sc;
        ts[i - i0] = s;
    }
    __syncthreads();
    /* steps 2-6: the block scores of the eligible, unforced blocks; each
       warp's 32 sorted, then the CTA's n best */
    const int a = min(p.n_init, jt + 1);
    const int llo = p.n_local > 0 ? max(0, jt - p.n_local + 1) : jt + 1;
    const int j = j0 + tid;
    u64 key = 0ull;
    if (j < j1 && j >= a && j < llo) {
        /* step 2: sum over m < rl, k < rk of p[rl*j + m - k], visible ones */
        float s = 0.f;
        for (int m = 0; m < rl; ++m)
            for (int k = 0; k < rk; ++k) {
                const int i = rl * j + m - k;
                if (i >= 0 && i < nc) s += ts[i - i0];
            }
        key = nsa_rank_key(nsa_score_key(s), j);
    }
    lists[warp][lane] = dec_warp_sort_desc(key, lane);
    __syncthreads();
    u64 *own = dc.nsel > 1 ? merge : top;
    dec_top_of_lists(&lists[0][0], NW, 32, n, own);
    if (dc.nsel > 1) {
        /* this CTA's list out; the last CTA of the pair merges them all
           (the fence orders the list before the count, as the CUDA
           programming guide's last-block reduction does) */
        u64 *cand = dc.cand + bh * dc.nsel * n;
        if (tid < n) cand[c * n + tid] = own[tid];
        __threadfence();
        __syncthreads();
        if (tid == 0) last = atomicAdd(dc.done + bh, 1u) == (unsigned)dc.nsel - 1;
        __syncthreads();
        if (!last) return;
        __threadfence();
        for (int e = tid; e < dc.nsel * n; e += NSA_DEC_THREADS) merge[e] = __ldcg(cand + e);
        __syncthreads();
        dec_top_of_lists(merge, dc.nsel, n, n, top);
    }
    if (warp != 0) return;
    /* step 7 (bq = 1: the unit is the query) */
    const int64_t ug = p.pf[PF_UNIT][b];
    sel_finish(p, t, top, p.sel_out_idx + (ug * p.Hkv + hkv) * n,
               p.sel_out_cnt + ug * p.Hkv + hkv, lane);
}

/* Each branch's partials combined in slot order, its lse, and the gated
   output of one row (query head): grid (G, Hkv, B), DV threads, a thread
   per column, nslots floats of dynamic shared memory. Warps merge the
   branches' (m, l) and put each slot's weight on chip; then every thread
   reads its column of all slots at once (one pass, loads in flight
   together) and sums each branch's in slot order. */
template <typename T, int DV>
__global__ void __launch_bounds__(DV) decode_combine_kernel(Params p, Decode dc, unsigned br_mask)
{
    extern __shared__ float wts[]; /* [nslots] exp2(m_s - Mb of the slot's branch) */
    __shared__ float inv_l[3];
    constexpr int NW = DV / 32;
    const int d = threadIdx.x, lane = d & 31, warp = d >> 5;
    const int r = blockIdx.x, hkv = blockIdx.y, b = blockIdx.z, G = p.G;
    const int64_t bh = (int64_t)b * p.Hkv + hkv, stride = dec_part_floats(DV);
    const float *part = dc.part + bh * dc.nslots * stride;
    const int64_t row = (int64_t)p.cuq[b] * p.H + hkv * G + r;
    /* slot ranges of cmp, slc, win (the gate order); in slot order cmp,
       win, slc */
    const int lo[3] = {0, dc.nsc + dc.nsw, dc.nsc};
    const int hi[3] = {dc.nsc, dc.nslots, dc.nsc + dc.nsw};
    chain_wait();
    chain_release();
    for (int br = warp; br < 3; br += NW) {
        float M, Mb, L;
        dec_merge_ml(part, stride, lo[br], hi[br], r, lane, M, Mb, L, wts);
        if (lane == 0) {
            inv_l[br] = inv_sum(L);
            if (br_mask & (1u << br)) p.lse[br][row] = lse_of(M, L);
        }
    }
    __syncthreads();
    float o[3] = {0.f, 0.f, 0.f}; /* cmp, slc, win */
#pragma unroll 16
    for (int s = 0; s < dc.nslots; ++s) {
        const float v = __ldcg(part + s * stride + 32 + r * DV + d) * wts[s];
        if (s < hi[0]) o[0] += v;
        else if (s < hi[2]) o[2] += v;
        else o[1] += v;
    }
    float x = 0.f;
    bool first = true;
    for (int br = 0; br < 3; ++br) {
        if (!(br_mask & (1u << br))) continue;
        const float oc = o[br] * inv_l[br];
        if (p.obr[br]) p.obr[br][row * DV + d] = oc;
        const float y = gate_of<T>(p, row, br) * oc;
        x = first ? y : x + y;
        first = false;
    }
    ((T *)p.out)[row * DV + d] = Ty<T>::from_f(x);
}

/* Compression of a growing cache: grid (B, y), the blocks of sequence b
   from nsa_cmp_blocks(seqlens_old[b]) on (compress_elem: the same
   arithmetic as compress_kernel). */
template <typename T>
__global__ void compress_append_kernel(Params p, const int32_t *seqlens_old, int Dk, int Dv,
                                       T *kc, T *vc)
{
    const int b = blockIdx.x;
    const int64_t nk = p.cuk[b + 1] - p.cuk[b];
    const int64_t nc = nsa_cmp_blocks(nk, p.l, p.d);
    const int64_t i0 = min(nsa_cmp_blocks(seqlens_old[b], p.l, p.d), nc);
    const int64_t per = (int64_t)p.Hkv * (Dk + Dv), total = (nc - i0) * per;
    const int64_t c0 = p.pf[PF_CMP][b];
    for (int64_t x = blockIdx.y * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.y * blockDim.x) {
        const int64_t i = i0 + x / per;
        const int r = (int)(x % per);
        const int hkv = r / (Dk + Dv);
        compress_elem<T>(p, Dk, Dv, b, i, c0 + i, hkv, r - hkv * (Dk + Dv), kc, vc);
    }
}

} /* namespace nsak */

#endif
