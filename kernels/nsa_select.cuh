/* kernels/nsa_select.cuh -- selection (contract, "Selection" steps 1-7).

   One CTA of 4 warps takes 4 consecutive selection units of one kv head;
   the compressed keys visible to the last of them stream through shared
   memory once for all four (group-centric), and each warp scores its own
   unit: S = Q K_cmp^T on tensor cores for the unit's rows (bq tokens x G
   heads, 16 at a time), probabilities from a first pass that computes the
   row's log-sum-exp (probs mode) or raw sc * q.k (logits mode), then column
   sums over the rows in a fixed order into pc[i] (one value per compressed
   block), the overlap map onto selection blocks, and an exact warp top-n:
   scores become order-preserving 32-bit keys, the block index rides in the
   low half of a 64-bit key so ties fall to the lower index, NaN ranks below
   -inf, and taken or ineligible blocks hold key 0. Exactly min(n, eligible)
   blocks are taken. The per-warp scratch (pc and keys) lives in the
   workspace, one slot per resident warp of a persistent grid. */
#ifndef NSA_KERNELS_SELECT_CUH
#define NSA_KERNELS_SELECT_CUH

#include "nsa_common.cuh"
#include "nsa_attn.cuh"
#include "nsa_select_fused.cuh"

namespace nsak {

#define NSA_SEL_SLOTS_CTA 512 /* persistent CTAs of the selection kernel */

/* ---- the selection kernel's steps, one warp a unit ---------------------- */

/* Step 1's products for one warp's 16 rows (qa: rows A = lane / 4 and B =
   A + 8 of the fragment, tokens tA and tB, -1 past the unit) against a
   chunk of compressed keys Kc (blocks s0 .. s0 + cnt): S = Q K_cmp^T, and
   ok: the block is in the chunk and visible to the row's token. */
template <typename T, int DK, int LDK, int KN>
__device__ __forceinline__ void select_chunk_scores(const uint32_t (&qa)[DK / 16][4], const T *Kc,
                                                    int s0, int cnt, int tA, int tB,
                                                    const Params &p, int lane,
                                                    float (&S)[KN / 8][4], bool (&ok)[KN / 8][4])
{
    zero_frags(S);
#pragma unroll
    for (int kp = 0; kp < DK / 32; ++kp)
#pragma unroll
        for (int nt = 0; nt < KN / 8; ++nt) {
            uint32_t bb[4];
            ldb_nk<LDK>(bb, Kc, nt * 8, kp * 32, lane);
            mma<T>(S[nt], qa[2 * kp], bb[0], bb[1]);
            mma<T>(S[nt], qa[2 * kp + 1], bb[2], bb[3]);
        }
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
            const int t = e < 2 ? tA : tB;
            ok[nt][e] = col < cnt && t >= 0 && nsa_cmp_visible(s0 + col, t, p.l, p.d);
        }
}

/* The first pass's step over a chunk (probs mode without the forward's
   lse): the rows' running max m and sum l of 2^(sl2 s - m) (base 2) over
   their visible blocks. */
template <int KN>
__device__ __forceinline__ void select_lse_step(float (&S)[KN / 8][4], const bool (&ok)[KN / 8][4],
                                                float sl2, float &mA, float &mB, float &lA,
                                                float &lB)
{
    float xA = -INFINITY, xB = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            S[nt][e] = ok[nt][e] ? S[nt][e] * sl2 : -INFINITY;
            if (e < 2) xA = fmaxf(xA, S[nt][e]); else xB = fmaxf(xB, S[nt][e]);
        }
    xA = warp_max4(xA);
    xB = warp_max4(xB);
    const float nA = fmaxf(mA, xA), nB = fmaxf(mB, xB);
    const float bA = nA == -INFINITY ? 0.f : nA, bB = nB == -INFINITY ? 0.f : nB;
    float sA = 0.f, sB = 0.f;
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt) {
        sA += exp2f(S[nt][0] - bA) + exp2f(S[nt][1] - bA);
        sB += exp2f(S[nt][2] - bB) + exp2f(S[nt][3] - bB);
    }
    lA = lA * exp2f(mA - bA) + sA;
    lB = lB * exp2f(mB - bB) + sB;
    mA = nA;
    mB = nB;
}

/* Step 1 over a chunk: each visible block's probability 2^(sl2 s - lse2)
   (probs mode) or sc s (logits mode), 0 elsewhere, summed over the warp's
   16 rows in a fixed order (the fragment's two halves, then a butterfly
   over the lanes of one column) and added to pc[block] (rc > 0: the
   unit's earlier rows' sums) by the column's lane. */
template <int KN>
__device__ __forceinline__ void select_column_sums(float (&S)[KN / 8][4],
                                                   const bool (&ok)[KN / 8][4], const Params &p,
                                                   float lse2A, float lse2B, float *pc, int s0,
                                                   int cnt, int rc, int lane)
{
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x;
            if (!ok[nt][e]) x = 0.f;
            else if (p.probs) x = exp2f(S[nt][e] * p.sl2 - (e < 2 ? lse2A : lse2B));
            else x = S[nt][e] * p.sc;
            S[nt][e] = x;
        }
#pragma unroll
    for (int nt = 0; nt < KN / 8; ++nt) {
        float v0 = S[nt][0] + S[nt][2], v1 = S[nt][1] + S[nt][3];
#pragma unroll
        for (int o = 4; o < 32; o <<= 1) {
            v0 += __shfl_xor_sync(0xffffffffu, v0, o);
            v1 += __shfl_xor_sync(0xffffffffu, v1, o);
        }
        const int col = nt * 8 + 2 * lane;
        if (lane < 4) {
            if (col < cnt) pc[s0 + col] = rc ? pc[s0 + col] + v0 : v0;
            if (col + 1 < cnt) pc[s0 + col + 1] = rc ? pc[s0 + col + 1] + v1 : v1;
        }
    }
}

/* Step 2, the overlap map: selection block j's score is the sum of pc[i]
   over the visible compressed blocks i = rl j + m - k (m < rl = l'/d, k <
   rk = l/d), in that order. By the warp's lanes, j = lane, lane + 32, ... */
__device__ __forceinline__ float select_overlap_sum(const float *pc, int j, int rl, int rk,
                                                    int nvis)
{
    float s = 0.f;
    /* only the k whose block is visible, in the same order (rk = l/d may
       be huge when no block is visible) */
    for (int m = 0; m < rl; ++m) {
        const int top = rl * j + m;
        for (int k = max(0, top - nvis + 1); k < rk && k <= top; ++k) s += pc[top - k];
    }
    return s;
}

/* Steps 5-6 on a unit's keys[0 .. elig) (its eligible blocks' score keys):
   the forced blocks (the first n_init, the n_local up to the unit's last
   token's block jt) are taken, then the best of the rest, one warp argmax
   a round on the rank key (score, then the lower block), until min(n,
   elig) are taken. A taken block's key becomes 0 (no score key is 0). */
__device__ inline void select_warp_topn(uint32_t *keys, int elig, int jt, const Params &p,
                                        int lane)
{
    const int a = min(p.n_init, elig);
    const int llo = max(0, jt - p.n_local + 1);
    const int nloc = p.n_local > 0 ? jt - llo + 1 : 0;
    const int ovl = p.n_local > 0 ? max(0, min(a, jt + 1) - llo) : 0;
    const int forced = a + nloc - ovl;
    for (int j = lane; j < elig; j += 32)
        if (j < a || (p.n_local > 0 && j >= llo && j <= jt)) keys[j] = 0u;
    __syncwarp();
    const int want = min(p.n, elig) - forced;
    auto lane_best = [&]() -> unsigned long long {
        unsigned long long best = 0ull;
        for (int j = lane; j < elig; j += 32) {
            const uint32_t k = keys[j];
            if (k) {
                const unsigned long long c = nsa_rank_key(k, j);
                best = c > best ? c : best;
            }
        }
        return best;
    };
    unsigned long long mine = lane_best();
    for (int r = 0; r < want; ++r) {
        unsigned long long w = mine;
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            const unsigned long long x = __shfl_xor_sync(0xffffffffu, w, o);
            w = x > w ? x : w;
        }
        const int j = (int)nsa_rank_index(w);
        if ((j & 31) == lane) {
            keys[j] = 0u;
            mine = lane_best();
        }
        __syncwarp();
    }
}

/* Step 7: the taken blocks (key 0) in ascending order into out[0 ..
   count), -1 after them up to n; returns count. */
__device__ inline int select_write_ascending(const uint32_t *keys, int elig, int n, int32_t *out,
                                             int lane)
{
    int count = 0;
    for (int base = 0; base < elig; base += 32) {
        const int j = base + lane;
        const bool s = j < elig && keys[j] == 0u;
        const unsigned m = __ballot_sync(0xffffffffu, s);
        if (s) out[count + __popc(m & ((1u << lane) - 1u))] = j;
        count += __popc(m);
    }
    for (int e = count + lane; e < n; e += 32) out[e] = -1;
    return count;
}

/* The selection of every unit (module comment): items are (unit group of
   4, kv head), kv head fastest; a warp a unit. */
template <typename T, int DK>
__global__ void __launch_bounds__(128)
select_kernel(Params p, const int64_t *pf_grp, int64_t items, float *scratch,
              int64_t slot_stride, int64_t nc_max, float *scores_out,
              int64_t max_blocks, int32_t *sel_idx, int32_t *sel_cnt)
{
    constexpr int LDK = DK + 8, KN = NSA_KN;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)smem_raw;        /* [64][LDK] */
    T *Ks = Qs + 64 * LDK;        /* [2][KN][LDK] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int G = p.G;
    float *pc = scratch + (int64_t)(blockIdx.x * 4 + warp) * slot_stride;
    uint32_t *keys = (uint32_t *)(pc + nc_max);

    /* items: the launch's work items (kv head fastest) end there; they
       start at its first group, tile0 */
    for (int64_t item = blockIdx.x + p.tile0 * p.Hkv; item < items; item += gridDim.x) {
        const int hkv = (int)(item % p.Hkv);
        const int64_t grp = item / p.Hkv;
        const int b = find_seq(pf_grp, p.B, grp);
        const int64_t qs = p.cuq[b];
        const int nq = p.cuq[b + 1] - (int)qs, nk = p.cuk[b + 1] - p.cuk[b];
        const int pos0 = nk - nq;
        const int nunits = (int)nsa_units(nq, p.bq);
        const int u0 = (int)(grp - pf_grp[b]) * 4;
        const int u = u0 + warp;
        const bool wvalid = u < nunits;
        const int ntok = wvalid ? min(p.bq, nq - u * p.bq) : 0;
        const int64_t frows = (int64_t)ntok * G;
        const int t_last_w = pos0 + u * p.bq + ntok - 1;
        const int t_cta = pos0 + min((u0 + 4) * p.bq, nq) - 1;
        const int64_t nc = nsa_cmp_blocks(nk, p.l, p.d);
        const int nvis = t_cta >= p.l - 1 ? (int)min(nc, (int64_t)((t_cta - p.l + 1) / p.d + 1)) : 0;
        const int nrc = (int)cdiv64((int64_t)min(p.bq, nq - u0 * p.bq) * G, 16);
        const int64_t c0 = p.pf[PF_CMP][b];
        const T *kb = (const T *)p.kc + (c0 * p.Hkv + hkv) * DK;
        const int64_t kst = (int64_t)p.Hkv * DK;
        const int nch = (nvis + KN - 1) / KN;

        /* step 1: pc[i], the unit's rows' probabilities of compressed block
           i, 16 rows (of the unit's tokens x G heads) at a time */
        for (int rc = 0; rc < nrc; ++rc) {
            /* rows of this warp: unit u, flattened rows rc*16 .. rc*16+15 */
            __syncthreads();
            stage_rows<DK, LDK>(Qs, 64, [&](int r) -> const T * {
                int w = r >> 4;
                int uu = u0 + w;
                if (uu >= nunits) return nullptr;
                int nt = min(p.bq, nq - uu * p.bq);
                int64_t f = (int64_t)rc * 16 + (r & 15);
                if (f >= (int64_t)nt * G) return nullptr;
                int tok = uu * p.bq + (int)(f / G), g = (int)(f % G);
                return (const T *)p.q + (qs + tok) * p.qst + (int64_t)(hkv * G + g) * p.qsh;
            }, tid, 128);
            cp_commit();
            cp_wait<0>();
            __syncthreads();
            uint32_t qa[DK / 16][4];
#pragma unroll
            for (int k = 0; k < DK / 16; ++k) lda<LDK>(qa[k], Qs, warp * 16, k * 16, lane);
            const int64_t fA = (int64_t)rc * 16 + (lane >> 2), fB = fA + 8;
            const bool vA = fA < frows, vB = fB < frows;
            const int tA = vA ? pos0 + u * p.bq + (int)(fA / G) : -1;
            const int tB = vB ? pos0 + u * p.bq + (int)(fB / G) : -1;
            const bool wact = (int64_t)rc * 16 < frows;
            /* probs mode: the compressed branch's lse when forward has it
               (p.lse[0]), else a first pass computes it here */
            const bool have_lse = p.probs && p.lse[0] != nullptr;
            float lse2A = 0.f, lse2B = 0.f;
            if (have_lse) {
                const int hA = hkv * G + (int)(fA % G), hB = hkv * G + (int)(fB % G);
                const int64_t qA = qs + u * p.bq + (int)(fA / G), qB = qs + u * p.bq + (int)(fB / G);
                lse2A = vA ? p.lse[0][qA * p.H + hA] * NSA_LOG2E : INFINITY;
                lse2B = vB ? p.lse[0][qB * p.H + hB] * NSA_LOG2E : INFINITY;
            }

            auto load = [&](int c, int buf) {
                int s0 = c * KN, cnt = min(KN, nvis - s0);
                stage_run<DK, LDK, KN, 128>(Ks + buf * KN * LDK, kb + s0 * kst, kst, cnt, tid);
                cp_commit();
            };
            for (int pass = p.probs && !have_lse ? 0 : 1; pass < 2; ++pass) {
                float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
                __syncthreads();
                if (nch > 0) load(0, 0);
                for (int c = 0; c < nch; ++c) {
                    if (c + 1 < nch) { load(c + 1, (c + 1) & 1); cp_wait<1>(); }
                    else cp_wait<0>();
                    __syncthreads();
                    const int s0 = c * KN, cnt = min(KN, nvis - s0);
                    if (wact) {
                        float S[KN / 8][4];
                        bool ok[KN / 8][4];
                        select_chunk_scores<T, DK, LDK, KN>(qa, Ks + (c & 1) * KN * LDK, s0, cnt,
                                                            tA, tB, p, lane, S, ok);
                        if (pass == 0) select_lse_step<KN>(S, ok, p.sl2, mA, mB, lA, lB);
                        else select_column_sums<KN>(S, ok, p, lse2A, lse2B, pc, s0, cnt, rc, lane);
                    }
                    __syncthreads();
                }
                if (pass == 0) {
                    lA = quad_sum(lA);
                    lB = quad_sum(lB);
                    lse2A = lA > 0.f ? mA + log2f(lA) : INFINITY;
                    lse2B = lB > 0.f ? mB + log2f(lB) : INFINITY;
                }
            }
        }
        __syncwarp();
        if (!wvalid) continue;

        /* steps 2-3: the overlap map onto selection blocks, as scores or keys */
        const int nsel = (int)nsa_slc_blocks(nk, p.lp);
        const int elig = min(nsel, t_last_w / p.lp + 1);
        const int rl = p.lp / p.d, rk = p.l / p.d;
        const int64_t ug = p.pf[PF_UNIT][b] + u;
        for (int j = lane; j < elig; j += 32) {
            const float s = select_overlap_sum(pc, j, rl, rk, nvis);
            if (scores_out) scores_out[(ug * p.Hkv + hkv) * max_blocks + j] = s;
            else keys[j] = nsa_score_key(s);
        }
        if (scores_out) {
            for (int64_t j = elig + lane; j < max_blocks; j += 32)
                scores_out[(ug * p.Hkv + hkv) * max_blocks + j] = -INFINITY;
            continue;
        }
        __syncwarp();
        /* steps 5-7 */
        select_warp_topn(keys, elig, t_last_w / p.lp, p, lane);
        const int count =
            select_write_ascending(keys, elig, p.n, sel_idx + (ug * p.Hkv + hkv) * p.n, lane);
        if (lane == 0) sel_cnt[ug * p.Hkv + hkv] = count;
        __syncwarp();
    }
}

template <int DK>
constexpr size_t select_smem()
{
    return (size_t)(64 * (DK + 8) + 2 * NSA_KN * (DK + 8)) * 2;
}

/* ---- small kernels ------------------------------------------------------ */

/* Prefix arrays (B+1 each, plus unit groups of 4) from the device cu_seqlens. */
__global__ void meta_kernel(const int32_t *cuk, const int32_t *cuq, int B, Shape s,
                            int64_t *pf /* [PF_COUNT+1][B+1] */)
{
    __shared__ int64_t carry[PF_COUNT + 1];
    __shared__ int64_t wsum[PF_COUNT + 1][32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    chain_wait(); /* launched chained: the kernel before may have written cuk, cuq or read pf */
    chain_release();
    if (tid <= PF_COUNT) carry[tid] = 0;
    __syncthreads();
    for (int base = 0; base < B + 1; base += blockDim.x) {
        int b = base + tid;
        int64_t v[PF_COUNT + 1];
        if (b < B) {
            int64_t nk = cuk[b + 1] - cuk[b], nq = cuq[b + 1] - cuq[b];
            seq_counts(nq, nk, s, v);
            v[PF_COUNT] = cdiv64(v[PF_UNIT], 4);
        } else {
            for (int i = 0; i <= PF_COUNT; ++i) v[i] = 0;
        }
        /* exclusive scan of v over the block, per array */
        for (int i = 0; i <= PF_COUNT; ++i) {
            int64_t x = v[i];
            for (int o = 1; o < 32; o <<= 1) {
                int64_t y = __shfl_up_sync(0xffffffffu, x, o);
                if (lane >= o) x += y;
            }
            if (lane == 31) wsum[i][warp] = x;
            v[i] = x - v[i]; /* exclusive within warp */
        }
        __syncthreads();
        if (warp == 0) {
            for (int i = 0; i <= PF_COUNT; ++i) {
                int64_t x = lane < (int)(blockDim.x >> 5) ? wsum[i][lane] : 0;
                int64_t incl = x;
                for (int o = 1; o < 32; o <<= 1) {
                    int64_t y = __shfl_up_sync(0xffffffffu, incl, o);
                    if (lane >= o) incl += y;
                }
                wsum[i][lane] = incl - x; /* exclusive warp offsets */
            }
        }
        __syncthreads();
        if (b <= B)
            for (int i = 0; i <= PF_COUNT; ++i) pf[(int64_t)i * (B + 1) + b] = carry[i] + wsum[i][warp] + v[i];
        __syncthreads();
        /* carry = inclusive total of the chunk's last sequence */
        if (tid == 0 && base + (int)blockDim.x <= B) {
            int bl = base + blockDim.x - 1;
            int64_t nk = cuk[bl + 1] - cuk[bl], nq = cuq[bl + 1] - cuq[bl];
            int64_t w[PF_COUNT + 1];
            seq_counts(nq, nk, s, w);
            w[PF_COUNT] = cdiv64(w[PF_UNIT], 4);
            for (int i = 0; i <= PF_COUNT; ++i) carry[i] = pf[(int64_t)i * (B + 1) + bl] + w[i];
        }
        __syncthreads();
    }
}

/* K_cmp[i] = mean of K over keys [i*d, i*d + l - 1] (fp32 sum in key order,
   divided by l, rounded once); V likewise. One element: compressed block i
   of sequence b (c = its packed index), kv head hkv, column r of the
   row's Dk + Dv (K first). */
template <typename T>
__device__ inline void compress_elem(const Params &p, int Dk, int Dv, int b, int64_t i,
                                     int64_t c, int hkv, int r, T *kc, T *vc)
{
    const int64_t s0 = p.cuk[b] + i * p.d;
    float s = 0.f;
    if (r < Dk) {
        const T *k = (const T *)p.k + hkv * p.ksh + r;
        for (int j = 0; j < p.l; ++j) s += Ty<T>::to_f(k[(s0 + j) * p.kst]);
        kc[(c * p.Hkv + hkv) * Dk + r] = Ty<T>::from_f(s / (float)p.l);
    } else {
        r -= Dk;
        const T *v = (const T *)p.v + hkv * p.vsh + r;
        for (int j = 0; j < p.l; ++j) s += Ty<T>::to_f(v[(s0 + j) * p.vst]);
        vc[(c * p.Hkv + hkv) * Dv + r] = Ty<T>::from_f(s / (float)p.l);
    }
}

template <typename T>
__global__ void compress_kernel(Params p, int Dk, int Dv, int64_t total, T *kc, T *vc)
{
    int64_t per = (int64_t)p.Hkv * (Dk + Dv);
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.x * blockDim.x) {
        int64_t c = x / per;
        int r = (int)(x - c * per);
        int hkv = r / (Dk + Dv), dd = r - hkv * (Dk + Dv);
        int b = find_seq(p.pf[PF_CMP], p.B, c);
        compress_elem<T>(p, Dk, Dv, b, c - p.pf[PF_CMP][b], c, hkv, dd, kc, vc);
    }
}

__device__ inline int find_seq32(const int32_t *cu, int B, int64_t x)
{
    int lo = 0, hi = B - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if ((int64_t)cu[mid] <= x) lo = mid; else hi = mid - 1;
    }
    return lo;
}

/* dK = dK(slc, win) + sum over the compressed blocks i covering the key of
   dK_cmp[i] / l (contract, Backward), rounded once, for the kv heads the
   accumulators acc and cacc hold ([keys][kv_hn][D] and [compressed
   keys][kv_hn][D] from head kv_h0; out: every head). D is Dk or Dv;
   total: the elements of acc. */
template <typename T>
__global__ void finish_kv_kernel(Params p, int D, int64_t total, const float *acc,
                                 const float *cacc, T *out)
{
    const int64_t held = (int64_t)p.kv_hn * D, per = (int64_t)p.Hkv * D;
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t sg = x / held;                             /* the key */
        const int64_t r = x - sg * held + (int64_t)p.kv_h0 * D;  /* within its heads */
        float v = acc[x];
        if (cacc) {
            int b = find_seq32(p.cuk, p.B, sg);
            int64_t s = sg - p.cuk[b];
            int64_t nc = nsa_cmp_blocks(p.cuk[b + 1] - p.cuk[b], p.l, p.d);
            int64_t lo = s - p.l + 1 <= 0 ? 0 : (s - p.l + 1 + p.d - 1) / p.d;
            int64_t hi = min(nc - 1, s / p.d);
            int64_t c0 = p.pf[PF_CMP][b];
            const int64_t rh = x - sg * held; /* within the held heads */
            for (int64_t i = lo; i <= hi; ++i) v += cacc[(c0 + i) * held + rh] / (float)p.l;
        }
        out[sg * per + r] = Ty<T>::from_f(v);
    }
}

/* The compressed keys' dK_cmp or dV_cmp (caller-compressed) of the kv
   heads the accumulator in holds ([compressed keys][kv_hn][D] from head
   kv_h0), rounded into out (every head). total: the elements of in. */
template <typename T>
__global__ void round_heads_kernel(Params p, int D, int64_t total, const float *in, T *out)
{
    const int64_t held = (int64_t)p.kv_hn * D, per = (int64_t)p.Hkv * D;
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.x * blockDim.x) {
        const int64_t c = x / held;
        out[c * per + (x - c * held) + (int64_t)p.kv_h0 * D] = Ty<T>::from_f(in[x]);
    }
}

/* o = sum over enabled branches, in the order cmp, slc, win, of g_c o_c. */
template <typename T>
__global__ void combine_kernel(Params p, int Dv, int64_t total, unsigned br,
                               const float *o0, const float *o1, const float *o2, T *out)
{
    const float *oc[3] = {o0, o1, o2};
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = x / Dv;
        float s = 0.f;
        bool first = true;
        for (int c = 0; c < 3; ++c) {
            if (!(br & (1u << c))) continue;
            float t = gate_of<T>(p, row, c) * oc[c][x];
            s = first ? t : s + t;
            first = false;
        }
        out[x] = Ty<T>::from_f(s);
    }
}

/* block_mask[unit, hkv, j] = 1 iff j is among the unit's used entries. */
__global__ void block_mask_kernel(Params p, int64_t maxblk, int64_t total, uint8_t *mask)
{
    for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < total;
         x += (int64_t)gridDim.x * blockDim.x) {
        int64_t row = x / maxblk;
        int j = (int)(x - row * maxblk);
        int64_t ug = row / p.Hkv;
        int b = find_seq(p.pf[PF_UNIT], p.B, ug);
        int nsel = (int)cdiv64(p.cuk[b + 1] - p.cuk[b], p.lp);
        int cnt = min(max(p.sel_cnt[row], 0), p.n);
        uint8_t m = 0;
        if (j < nsel)
            for (int e = 0; e < cnt; ++e) m |= (uint8_t)(p.sel_idx[row * p.n + e] == j);
        mask[x] = m;
    }
}

/* A caller selection as forward saves it: the usable entries of each row
   (0 <= idx < ceil(TK_b / l'), among the first clamp(count, 0, n)) in their
   order, then -1 padding. */
__global__ void copy_sel_kernel(Params p, int64_t rows, int32_t *idx_out, int32_t *cnt_out)
{
    for (int64_t row = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; row < rows;
         row += (int64_t)gridDim.x * blockDim.x) {
        int64_t ug = row / p.Hkv;
        int b = find_seq(p.pf[PF_UNIT], p.B, ug);
        int nsel = (int)cdiv64(p.cuk[b + 1] - p.cuk[b], p.lp);
        int cnt = min(max(p.sel_cnt[row], 0), p.n), k = 0;
        const int32_t *in = p.sel_idx + row * p.n;
        int32_t *out = idx_out + row * p.n;
        for (int e = 0; e < cnt; ++e)
            if (in[e] >= 0 && in[e] < nsel) out[k++] = in[e];
        cnt_out[row] = k;
        for (int e = k; e < p.n; ++e) out[e] = -1;
    }
}

/* Transposed selection, step 1: (block key, unit) pairs of every used entry
   of the kv heads p.kv_h0, p.kv_hn (pair x: unit, then head, then entry);
   unused entries get the sentinel key, which sorts last. */
__global__ void tr_pairs_kernel(Params p, int64_t total, uint32_t sentinel, uint32_t *keys,
                                int32_t *vals)
{
    for (int64_t y = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; y < total;
         y += (int64_t)gridDim.x * blockDim.x) {
        const int64_t yr = y / p.n;
        const int e = (int)(y - yr * p.n);
        const int64_t ug = yr / p.kv_hn;
        const int hkv = p.kv_h0 + (int)(yr - ug * p.kv_hn);
        const int64_t row = ug * p.Hkv + hkv, x = row * p.n + e;
        int b = find_seq(p.pf[PF_UNIT], p.B, ug);
        int nsel = (int)cdiv64(p.cuk[b + 1] - p.cuk[b], p.lp);
        int cnt = min(max(p.sel_cnt[row], 0), p.n);
        int j = p.sel_idx[x];
        bool use = e < cnt && j >= 0 && j < nsel;
        keys[y] = use ? (uint32_t)((int64_t)hkv * p.nsel_tot + p.pf[PF_SLC][b] + j) : sentinel;
        vals[y] = (int32_t)ug;
    }
}

/* step 3: start[k] = first position of key k in the sorted keys. */
__global__ void tr_start_kernel(const uint32_t *sorted, int64_t n, int64_t nkeys, int32_t *start)
{
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k <= nkeys;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t lo = 0, hi = n;
        while (lo < hi) {
            int64_t mid = (lo + hi) >> 1;
            if ((int64_t)sorted[mid] < k) lo = mid + 1; else hi = mid;
        }
        start[k] = (int32_t)lo;
    }
}

} /* namespace nsak */

#endif
