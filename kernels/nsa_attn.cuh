/* kernels/nsa_attn.cuh -- one tile engine, three key iterators.

   Row-centric kernels (forward, its recompute for backward, and dQ): a CTA
   of NW warps owns NW*16 flattened (token, head) rows of one kv head; the
   G query heads of a GQA group are adjacent rows, so each K/V chunk staged
   in shared memory serves the whole group (group-centric loading).
     cmp: compressed blocks 0 .. last visible one of the tile's last token;
          a block is visible to t iff i*d + l - 1 <= t (contract, branch 1),
          so the tiles above that line are never loaded.
     win: keys max(0, t_first - w + 1) .. t_last only.
     slc: the tile lies inside one selection unit (query or query tile) and
          walks the unit's selected blocks; mask s <= t.
   Softmax is online in the log2 domain (FlashAttention-2); lse is written
   per branch in natural log.

   Key-centric kernel (dK, dV): a CTA owns 64 keys (or compressed blocks) and
   walks the query rows that can see them: a contiguous row range for cmp and
   win, and the transposed selection (for each block, the units that chose
   it, ascending) for slc. Each key is owned by one CTA, so the reduction is
   a fixed-order loop: no atomics, bitwise reproducible. */
#ifndef NSA_KERNELS_ATTN_CUH
#define NSA_KERNELS_ATTN_CUH

#include "nsa_tiles.cuh"

#include <cub/block/block_scan.cuh>

namespace nsak {

/* The gradient products (dS K, dS^T Q, (g P)^T dO) take dS and g P as A
   operands in the storage type: x is rounded to hi = fl_T(x), and where
   the rounding would cost accuracy the residual lo = x - hi (split2) is
   multiplied too, a second product whose own rounding is ~2^-16 relative,
   so that the error left is the fp32 accumulation's.
   NSA_GRAD_LO says where: 0 nowhere (one product each, as FlashAttention
   does), 1 dS's products (the default), 2 dS's and g P's.
   dS needs it: a row's dS sums to zero, and where it falls on a few keys
   of large and equal norm (a sink; the subnormal-scores case of
   tests/test_cuda.cu: compressed keys of norm 100 at logit 100) the
   rounding of each term, multiplied by |k|, no longer cancels. Rounded,
   dq had 68 and 73 times the reference's error there in two draws, and
   dk_cmp 3.7 and 1.1 times (bench/RESULTS.md, 2026-11-28); with the
   residual, dq 1.03. g P is positive and sums to at most
   one: rounded, dV stays within its bound of twice the reference's error
   (at most 1.65 times on every case and vector, over many draws). */
#ifndef NSA_GRAD_LO
#define NSA_GRAD_LO 1
#endif
enum GradOperand { GRAD_DS, GRAD_P };
/* whether the products of this operand also multiply its residual */
__host__ __device__ constexpr bool grad_lo(GradOperand x)
{
    return NSA_GRAD_LO >= (x == GRAD_DS ? 1 : 2);
}
template <typename T>
__device__ inline void split2(float a, float b, uint32_t &hi, uint32_t &lo)
{
    hi = Ty<T>::pack(a, b);
    float2 h = Ty<T>::unpack(hi);
    lo = Ty<T>::pack(a - h.x, b - h.y);
}
/* k-slice kk (16 columns) of accumulator fragments as hi + lo A fragments
   (split2; the accumulator layout is the A-fragment layout). */
template <typename T, int NT>
__device__ inline void split_frag(const float (&S)[NT][4], int kk, uint32_t (&hi)[4],
                                  uint32_t (&lo)[4])
{
    split2<T>(S[2 * kk][0], S[2 * kk][1], hi[0], lo[0]);
    split2<T>(S[2 * kk][2], S[2 * kk][3], hi[1], lo[1]);
    split2<T>(S[2 * kk + 1][0], S[2 * kk + 1][1], hi[2], lo[2]);
    split2<T>(S[2 * kk + 1][2], S[2 * kk + 1][3], hi[3], lo[3]);
}
enum { M_STAGE = 0, M_FWD = 1, M_PREP = 2 };

/* ---- building blocks of a warp's 16-row tile against a chunk of keys ---- */

/* A row's natural-log lse from its running max m (log2 units) and sum l:
   -inf for a row that saw no key; a NaN logit propagates (contract, settled
   rules: never a silent empty branch). */
__device__ inline float lse_of(float m, float l)
{
    return l == 0.f ? -INFINITY : (m + log2f(l)) * NSA_LN2;
}
__device__ inline float inv_sum(float l) { return l == 0.f ? 0.f : 1.f / l; }

/* S = Q K^T: qa holds the warp's Q rows as A fragments, Kc the chunk's keys
   [KN][DK] in shared memory, of layout L (nsa_common.cuh). */
template <typename T, int DK, typename L, int NT>
__device__ inline void qk_chunk(float (&S)[NT][4], const uint32_t (&qa)[DK / 16][4],
                                const T *Kc, int lane)
{
    constexpr int KN = NT * 8;
    zero_frags(S);
    /* for each 32 of the head dim, the KN/8 accumulators are independent:
       issue them side by side so no MMA waits on the one before it */
#pragma unroll
    for (int kp = 0; kp < DK / 32; ++kp) {
        uint32_t bb[KN / 8][4];
#pragma unroll
        for (int nt = 0; nt < KN / 8; ++nt) ldb_nk<L>(bb[nt], Kc, nt * 8, kp * 32, lane);
#pragma unroll
        for (int nt = 0; nt < KN / 8; ++nt) mma<T>(S[nt], qa[2 * kp], bb[nt][0], bb[nt][1]);
#pragma unroll
        for (int nt = 0; nt < KN / 8; ++nt) mma<T>(S[nt], qa[2 * kp + 1], bb[nt][2], bb[nt][3]);
    }
}

/* -inf where the key is past the chunk's cnt keys or not visible to the
   row's position (branch rules, visible()); the logits stay unscaled (the
   softmax scales them). whole: every key is visible to every row. */
template <int NT>
__device__ inline void mask_chunk(const Params &p, int br, float (&S)[NT][4], int s0,
                                  int cnt, bool whole, int tA, int tB, int lane)
{
    if (whole) return;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            int col = nt * 8 + 2 * (lane & 3) + (e & 1);
            int t = e < 2 ? tA : tB;
            bool ok = col < cnt && t >= 0 && visible(p, br, t, s0 + col);
            if (!ok) S[nt][e] = -INFINITY;
        }
}

/* The keys of branch br a row at position t sees, [lo, hi) (visible();
   empty for t < 0), and mask_chunk with them: a row's bounds computed once
   a branch, two compares a logit. */
struct KeyRange {
    int lo, hi;
};
__device__ inline KeyRange visible_keys(const Params &p, int br, int t)
{
    if (t < 0) return KeyRange{0, 0};
    if (br == BR_CMP) return KeyRange{0, t < p.l - 1 ? 0 : (t - p.l + 1) / p.d + 1};
    if (br == BR_WIN) return KeyRange{max(0, t - p.w + 1), t + 1};
    return KeyRange{0, t + 1};
}
template <int NT>
__device__ inline void mask_keys(float (&S)[NT][4], int s0, int cnt, KeyRange A, KeyRange B,
                                 int lane)
{
    const int loA = A.lo - s0, hiA = min(A.hi - s0, cnt);
    const int loB = B.lo - s0, hiB = min(B.hi - s0, cnt);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int col = nt * 8 + 2 * (lane & 3) + (e & 1);
            const bool ok = e < 2 ? col >= loA && col < hiA : col >= loB && col < hiB;
            if (!ok) S[nt][e] = -INFINITY;
        }
}

/* 2^x on the special-function unit, subnormal results flushed to zero: a
   probability below 2^-126 of the row's largest adds nothing to its sum. */
__device__ inline float exp2_ftz(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* How far (log2 units) a chunk's max may rise above a row's running max
   before the row moves its max: below it the row keeps the old one, its
   probabilities then stay below 2^NSA_SOFTMAX_SLACK, and O needs no
   rescale (FlashAttention-4's conditional rescale; docs/MATH.md section 8,
   "The CUDA path"). */
#ifndef NSA_SOFTMAX_SLACK
#define NSA_SOFTMAX_SLACK 8.f
#endif

/* Online softmax (FlashAttention-2, log2 domain), the scores' half: the
   running max m (log2 units) and sum l move to the chunk's logits S scaled
   by sl2 (> 0, so the max of S scales to the max of sl2 S), S becomes its
   unnormalised probabilities P = 2^(sl2 S - m), one FFMA and one EX2 each,
   and aA, aB are the factors O must be rescaled by (the change of max).
   m is a running max with slack: while no row of the warp sees a logit more
   than NSA_SOFTMAX_SLACK above its m, every row keeps its m and the factors
   are exactly 1 (the caller may then skip the rescale; m only has to be
   the same in P, l and the rescale, and lse = m + log2 l whatever m is).
   Rows A and B are the lane's rows lane/4 and lane/4 + 8. */
template <int NT>
__device__ inline void softmax_scores(float (&S)[NT][4], float sl2, float &mA, float &mB,
                                      float &lA, float &lB, float &aA, float &aB)
{
    float xA = -INFINITY, xB = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        xA = fmaxf(xA, fmaxf(S[nt][0], S[nt][1]));
        xB = fmaxf(xB, fmaxf(S[nt][2], S[nt][3]));
    }
    xA = warp_max4(xA) * sl2;
    xB = warp_max4(xB) * sl2;
    /* a row that has seen only -inf keeps -inf only while it sees -inf; a
       NaN max (every logit NaN) keeps the old m, as fmaxf does */
    const bool keep = __all_sync(0xffffffffu, !(xA > mA + NSA_SOFTMAX_SLACK) &&
                                                  !(xB > mB + NSA_SOFTMAX_SLACK));
    float nA = keep ? mA : fmaxf(mA, xA), nB = keep ? mB : fmaxf(mB, xB);
    float bA = nA == -INFINITY ? 0.f : nA, bB = nB == -INFINITY ? 0.f : nB;
    aA = exp2_ftz(mA - bA);
    aB = exp2_ftz(mB - bB);
    mA = nA;
    mB = nB;
    float sA = 0.f, sB = 0.f;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        S[nt][0] = exp2_ftz(fmaf(S[nt][0], sl2, -bA));
        S[nt][1] = exp2_ftz(fmaf(S[nt][1], sl2, -bA));
        S[nt][2] = exp2_ftz(fmaf(S[nt][2], sl2, -bB));
        S[nt][3] = exp2_ftz(fmaf(S[nt][3], sl2, -bB));
        sA += S[nt][0] + S[nt][1];
        sB += S[nt][2] + S[nt][3];
    }
    lA = lA * aA + sA;
    lB = lB * aB + sB;
}

/* The output's half: O *= a per row. A warp whose rows all kept their max
   (softmax_scores' slack) has factors of exactly 1 and skips the
   multiplies. Called by the whole warp. */
template <int N>
__device__ inline void rescale_rows(float (&acc)[N][4], float aA, float aB)
{
    if (!__any_sync(0xffffffffu, aA != 1.f || aB != 1.f)) return;
#pragma unroll
    for (int i = 0; i < N; ++i) {
        acc[i][0] *= aA; acc[i][1] *= aA;
        acc[i][2] *= aB; acc[i][3] *= aB;
    }
}

/* Both halves: the online softmax of one chunk. */
template <int DV, int NT>
__device__ inline void softmax_chunk(float (&S)[NT][4], float sl2, float &mA, float &mB,
                                     float &lA, float &lB, float (&acc)[DV / 8][4])
{
    float aA, aB;
    softmax_scores(S, sl2, mA, mB, lA, lB, aA, aB);
    rescale_rows(acc, aA, aB);
}

/* P (fp32 accumulator fragments of 16 keys) as the A fragment of the next
   product, in the storage type. */
template <typename T, int NT>
__device__ inline void p_fragment(uint32_t (&pa)[4], const float (&S)[NT][4], int kk)
{
    pa[0] = Ty<T>::pack(S[2 * kk][0], S[2 * kk][1]);
    pa[1] = Ty<T>::pack(S[2 * kk][2], S[2 * kk][3]);
    pa[2] = Ty<T>::pack(S[2 * kk + 1][0], S[2 * kk + 1][1]);
    pa[3] = Ty<T>::pack(S[2 * kk + 1][2], S[2 * kk + 1][3]);
}

/* softmax_chunk, then O += P V with Vc the chunk's values [KN][DV], of
   layout L. */
template <typename T, int DV, typename L, int NT>
__device__ inline void softmax_pv_chunk(float (&S)[NT][4], float sl2, const T *Vc,
                                        float &mA, float &mB, float &lA, float &lB,
                                        float (&acc)[DV / 8][4], int lane)
{
    softmax_chunk<DV>(S, sl2, mA, mB, lA, lB, acc);
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
        uint32_t pa[4];
        p_fragment<T>(pa, S, kk);
#pragma unroll
        for (int np = 0; np < DV / 16; ++np) {
            uint32_t bb[4];
            ldb_kn<L>(bb, Vc, kk * 16, np * 16, lane);
            mma<T>(acc[2 * np], pa, bb[0], bb[1]);
            mma<T>(acc[2 * np + 1], pa, bb[2], bb[3]);
        }
    }
}

/* A branch's gated output kept for the next branch of the same CTA in the
   thread's own shared-memory slots (slot[(nt * 2 + h) * stride]): the
   first branch leaves it there instead of storing it, the second adds it
   where an earlier pass's accumulator would be added (same order, same
   bits), then stores. */
struct HeldOut {
    float2 *slot; /* NULL: none */
    int stride;
    bool first;
};

/* Row `row` (flattened (token, head)) of the fp32 accumulator, D wide. */
__device__ inline float *acc_at(const Params &p, int64_t row, int D)
{
    return p.acc + (row - p.acc_row0) * D;
}

/* Forward epilogue: o_acc (+)= g_br * O_br / l for the lane's rows, written
   in the storage type when this is the last branch (fin), else to the fp32
   accumulator (contract, "Gates": o = sum of g_c * o_c, rounded once);
   prev: the accumulator holds earlier branches; held: see HeldOut. */
/* The fp32 sums earlier passes left in p.acc for a lane's rows A and B,
   NB column tiles at a time and before any store: the compiler cannot
   move a load of p.acc above a store to p.out (they might alias), so a
   load beside each store waited out one memory latency per tile (a
   quarter of the selected branch's time went there). */
template <int D, int BATCH = 8>
struct PrevSums {
    static constexpr int NB = D / 8 < BATCH ? D / 8 : BATCH;
    static_assert((D / 8) % NB == 0, "whole batches");
    /* tiles nt0 .. nt0 + NB - 1, from the column dcol of tile nt0 */
    __device__ static inline void load(const Params &p, bool vA, bool vB, int64_t rowA,
                                       int64_t rowB, int dcol, float2 (&b)[NB][2])
    {
#pragma unroll
        for (int i = 0; i < NB; ++i)
#pragma unroll
            for (int h = 0; h < 2; ++h)
                if (h ? vB : vA) b[i][h] = *(const float2 *)(acc_at(p, h ? rowB : rowA, D) + dcol + i * 8);
    }
};

#ifndef NSA_HELD_BATCH
#define NSA_HELD_BATCH 2 /* column tiles of held sums loaded together */
#endif
template <typename T, int DV, int PB = 8>
__device__ inline void store_gated(const Params &p, int br, bool fin, bool prev, bool vA,
                                   bool vB, int64_t rowA, int64_t rowB, float iA, float iB,
                                   const float (&acc)[DV / 8][4], int lane,
                                   HeldOut held = HeldOut{nullptr, 0, false})
{
    float ga = vA ? gate_of<T>(p, rowA, br) : 0.f, gb = vB ? gate_of<T>(p, rowB, br) : 0.f;
    constexpr int NB = PrevSums<DV, PB>::NB;
    if (held.slot && !prev) {
        /* the held output without earlier sums, as below but with no branch
           an element: the slots of rows past the tile are the thread's own
           and never stored, and the next branch's slots are loaded HB
           column tiles at a time */
        constexpr int HB = NSA_HELD_BATCH;
#pragma unroll
        for (int nt0 = 0; nt0 < DV / 8; nt0 += HB) {
            float2 kept[HB][2];
            if (!held.first)
#pragma unroll
                for (int i = 0; i < HB; ++i)
#pragma unroll
                    for (int h = 0; h < 2; ++h) kept[i][h] = held.slot[((nt0 + i) * 2 + h) * held.stride];
#pragma unroll
            for (int i = 0; i < HB; ++i)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int nt = nt0 + i;
                    const float g = h ? gb : ga, in = h ? iB : iA;
                    float x0 = g * (acc[nt][2 * h] * in), x1 = g * (acc[nt][2 * h + 1] * in);
                    if (held.first) {
                        held.slot[(nt * 2 + h) * held.stride] = make_float2(x0, x1);
                        continue;
                    }
                    x0 = kept[i][h].x + x0;
                    x1 = kept[i][h].y + x1;
                    const int64_t row = h ? rowB : rowA;
                    const int col = nt * 8 + 2 * (lane & 3);
                    if (h ? vB : vA) {
                        if (fin) *(uint32_t *)((T *)p.out + row * DV + col) = Ty<T>::pack(x0, x1);
                        else *(float2 *)(acc_at(p, row, DV) + col) = make_float2(x0, x1);
                    }
                }
        }
        return;
    }
    float2 before[NB][2];
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) {
        int dcol = nt * 8 + 2 * (lane & 3);
        if (prev && nt % NB == 0) PrevSums<DV, PB>::load(p, vA, vB, rowA, rowB, dcol, before);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            bool vv = h ? vB : vA;
            if (!vv) continue;
            const int64_t row = h ? rowB : rowA;
            float g = h ? gb : ga, in = h ? iB : iA;
            float x0 = g * (acc[nt][2 * h] * in), x1 = g * (acc[nt][2 * h + 1] * in);
            if (prev) {
                const float2 a = before[nt % NB][h];
                x0 = a.x + x0;
                x1 = a.y + x1;
            }
            if (held.slot) {
                float2 &s = held.slot[(nt * 2 + h) * held.stride];
                if (held.first) {
                    s = make_float2(x0, x1);
                    continue;
                }
                x0 = s.x + x0;
                x1 = s.y + x1;
            }
            if (fin) *(uint32_t *)((T *)p.out + row * DV + dcol) = Ty<T>::pack(x0, x1);
            else *(float2 *)(acc_at(p, row, DV) + dcol) = make_float2(x0, x1);
        }
    }
}

/* The backward's per-row terms of one branch from its recomputed output
   O_c = acc * i (M_PREP): dg_c = dO . O_c, Delta_c = g_c dg_c (the
   FlashAttention form, normalized probabilities); the dQ pass refines dg_c
   (store_dg). */
template <typename T, int DV>
__device__ inline void store_delta(const Params &p, int br, bool vA, bool vB, int64_t rowA,
                                   int64_t rowB, float iA, float iB,
                                   const float (&acc)[DV / 8][4], int lane)
{
    float sA = 0.f, sB = 0.f;
    const T *dA = (const T *)p.dout + rowA * DV, *dB = (const T *)p.dout + rowB * DV;
#pragma unroll
    for (int nt = 0; nt < DV / 8; ++nt) {
        int dcol = nt * 8 + 2 * (lane & 3);
        if (vA) {
            float2 x = Ty<T>::unpack(*(const uint32_t *)(dA + dcol));
            sA += x.x * (acc[nt][0] * iA) + x.y * (acc[nt][1] * iA);
        }
        if (vB) {
            float2 x = Ty<T>::unpack(*(const uint32_t *)(dB + dcol));
            sB += x.x * (acc[nt][2] * iB) + x.y * (acc[nt][3] * iB);
        }
    }
    sA = quad_sum(sA);
    sB = quad_sum(sB);
    if ((lane & 3) == 0) {
        if (vA) {
            p.delta[br][rowA] = gate_of<T>(p, rowA, br) * sA;
            if (p.dgates) ((T *)p.dgates)[rowA * 3 + br] = Ty<T>::from_f(sA);
        }
        if (vB) {
            p.delta[br][rowB] = gate_of<T>(p, rowB, br) * sB;
            if (p.dgates) ((T *)p.dgates)[rowB * 3 + br] = Ty<T>::from_f(sB);
        }
    }
}

/* store_delta's terms from the forward's saved outputs (nsa_saved.o_branch)
   instead of a recomputed pass: dg_c = dO . O_c (which the dQ pass
   refines), Delta_c = g_c dg_c for the branches of br_mask, one warp a
   (token, head) row of [0, rows); plane c of o_branch starts at o_branch +
   c * rows * DV. */
template <typename T, int DV>
__global__ void __launch_bounds__(256) delta_saved_kernel(Params p, const float *o_branch,
                                                          int64_t rows, unsigned br_mask)
{
    static_assert(DV % 64 == 0, "two columns a lane, or more");
    constexpr int PER = DV / 32;
    const int64_t row = (int64_t)blockIdx.x * 8 + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;
    float d[PER];
    const T *dr = (const T *)p.dout + row * DV + lane * PER;
#pragma unroll
    for (int i = 0; i < PER; i += 2) {
        const float2 x = Ty<T>::unpack(*(const uint32_t *)(dr + i));
        d[i] = x.x;
        d[i + 1] = x.y;
    }
#pragma unroll
    for (int br = 0; br < 3; ++br) {
        if (!(br_mask & (1u << br))) continue;
        const float *o = o_branch + (br * rows + row) * DV + lane * PER;
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < PER; ++i) s += d[i] * o[i];
#pragma unroll
        for (int m = 1; m < 32; m <<= 1) s += __shfl_xor_sync(0xffffffffu, s, m);
        if (lane == 0) {
            p.delta[br][row] = gate_of<T>(p, row, br) * s;
            if (p.dgates) ((T *)p.dgates)[row * 3 + br] = Ty<T>::from_f(s);
        }
    }
}

/* The two rows a lane holds in a warp's 16-row tile (rows lane/4 and
   lane/4 + 8, from flattened row f0 of the tile): validity, position, and
   global (token, head) row. */
struct LaneRows {
    bool vA, vB;
    int tA, tB;          /* positions, -1 when not valid */
    int64_t rowA, rowB;  /* (token * H + head) */
    int tmin, tmax;      /* positions of the warp's first and last valid rows */
};

__device__ inline LaneRows lane_rows(const Params &p, const RowTile &rt, int hkv, int64_t f0,
                                     int lane)
{
    const int G = p.G;
    const int64_t fA = f0 + (lane >> 2), fB = fA + 8;
    LaneRows r;
    r.vA = fA < rt.fmax;
    r.vB = fB < rt.fmax;
    const int tokA = rt.tok_off + (int)(fA / G), tokB = rt.tok_off + (int)(fB / G);
    r.tA = r.vA ? rt.pos0 + tokA : -1;
    r.tB = r.vB ? rt.pos0 + tokB : -1;
    r.rowA = (rt.q0 + tokA) * p.H + hkv * G + (int)(fA % G);
    r.rowB = (rt.q0 + tokB) * p.H + hkv * G + (int)(fB % G);
    r.tmin = rt.pos0 + rt.tok_off + (int)(f0 / G);
    r.tmax = rt.pos0 + rt.tok_off + (int)(min(f0 + 15, rt.fmax - 1) / G);
    return r;
}

/* Whether every row of a warp sees every key of a full chunk [s0, s0 + KN)
   of branch br (then the chunk needs no mask; rows past the tile's end are
   never written). */
__device__ inline bool chunk_whole(const Params &p, int br, int s0, int cnt, int KN, int tmin,
                                   int tmax)
{
    const int s1 = s0 + cnt - 1;
    return cnt == KN && (br == BR_CMP ? nsa_cmp_visible(s1, tmin, p.l, p.d)
                         : br == BR_WIN ? (s1 <= tmin && s0 > tmax - p.w)
                                        : s1 <= tmin);
}
/* The same for a warp's rows (tmin, tmax: their first and last positions). */
__device__ inline bool chunk_whole(const Params &p, int br, int s0, int cnt, int KN,
                                   const LaneRows &r)
{
    return chunk_whole(p, br, s0, cnt, KN, r.tmin, r.tmax);
}

/* The end of one branch for a lane's two rows (forward kinds): lse, then
   the normalised output staged in fp32 (M_STAGE), gated into the output
   (M_FWD; fin: the last branch, prev: an earlier branch wrote the
   accumulator, held: store_gated; with p.obr[br] also kept in fp32 for the
   backward), or Delta and dg (M_PREP). PB: column tiles of earlier sums
   loaded together (PrevSums). */
template <typename T, int DV, int PB = 8>
__device__ inline void branch_epilogue(const Params &p, int br, int mode, bool fin, bool prev,
                                       const LaneRows &r, float mA, float mB, float lA,
                                       float lB, const float (&acc)[DV / 8][4], int lane,
                                       HeldOut held = HeldOut{nullptr, 0, false})
{
    lA = quad_sum(lA);
    lB = quad_sum(lB);
    const float iA = inv_sum(lA), iB = inv_sum(lB);
    if (mode == M_PREP) {
        store_delta<T, DV>(p, br, r.vA, r.vB, r.rowA, r.rowB, iA, iB, acc, lane);
        return;
    }
    if ((lane & 3) == 0) {
        if (r.vA) p.lse[br][r.rowA] = lse_of(mA, lA);
        if (r.vB) p.lse[br][r.rowB] = lse_of(mB, lB);
    }
    /* the normalised O_c in fp32: the stage's output (M_STAGE), or the
       forward's copy for the backward's Delta (M_FWD with saved outputs) */
    float *oc = mode == M_STAGE ? p.ostage : p.obr[br];
    if (oc) {
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt) {
            const int dcol = nt * 8 + 2 * (lane & 3);
            if (r.vA) *(float2 *)(oc + r.rowA * DV + dcol) = make_float2(acc[nt][0] * iA, acc[nt][1] * iA);
            if (r.vB) *(float2 *)(oc + r.rowB * DV + dcol) = make_float2(acc[nt][2] * iB, acc[nt][3] * iB);
        }
    }
    if (mode == M_STAGE) return;
    store_gated<T, DV, PB>(p, br, fin, prev, r.vA, r.vB, r.rowA, r.rowB, iA, iB, acc, lane, held);
}

/* dQ epilogue for a lane's two rows: sc * the sum over the branches, plus
   the accumulator of an earlier pass (EPI_LAST), into the output in the
   storage type (EPI_ONLY, EPI_LAST) or the fp32 accumulator (EPI_FIRST). */
template <typename T, int DK>
__device__ inline void store_dq(const Params &p, const LaneRows &r, const float (&acc)[DK / 8][4],
                                int lane)
{
    const bool fin = epi_writes_out(p.epi), earlier = epi_adds_earlier(p.epi);
    constexpr int NB = PrevSums<DK>::NB;
    float2 before[NB][2];
#pragma unroll
    for (int nt = 0; nt < DK / 8; ++nt) {
        const int dcol = nt * 8 + 2 * (lane & 3);
        if (earlier && nt % NB == 0) PrevSums<DK>::load(p, r.vA, r.vB, r.rowA, r.rowB, dcol, before);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            if (!(h ? r.vB : r.vA)) continue;
            const int64_t row = h ? r.rowB : r.rowA;
            float x0 = acc[nt][2 * h] * p.sc, x1 = acc[nt][2 * h + 1] * p.sc;
            if (earlier) {
                const float2 a = before[nt % NB][h];
                x0 = a.x + x0;
                x1 = a.y + x1;
            }
            if (fin) *(uint32_t *)((T *)p.out + row * DK + dcol) = Ty<T>::pack(x0, x1);
            else *(float2 *)(acc_at(p, row, DK) + dcol) = make_float2(x0, x1);
        }
    }
}

/* What dQ needs of a lane's rows A and B for one branch: lse (log2 units;
   +inf for a row past the tile, so its P is 0), Delta and gate. */
struct DqRows {
    float lse2A, lse2B, dlA, dlB, gA, gB;
};
template <typename T>
__device__ inline DqRows dq_rows(const Params &p, int br, const LaneRows &lr)
{
    DqRows r;
    /* +inf also for a row that sees no key (lse -inf): its logits are all
       masked (-inf), and -inf - inf keeps every P at 0 */
    const float lA = lr.vA ? p.lse[br][lr.rowA] : -INFINITY;
    const float lB = lr.vB ? p.lse[br][lr.rowB] : -INFINITY;
    r.lse2A = lA == -INFINITY ? INFINITY : lA * NSA_LOG2E;
    r.lse2B = lB == -INFINITY ? INFINITY : lB * NSA_LOG2E;
    r.dlA = lr.vA ? p.delta[br][lr.rowA] : 0.f;
    r.dlB = lr.vB ? p.delta[br][lr.rowB] : 0.f;
    r.gA = lr.vA ? gate_of<T>(p, lr.rowA, br) : 0.f;
    r.gB = lr.vB ? gate_of<T>(p, lr.rowB, br) : 0.f;
    return r;
}

/* The dQ pass's sums of dS over a lane's rows A, B, for dg_c (store_dg):
   the lane's columns in four chains a row (n tile mod 4), so that the sums
   do not hold up a chunk's scores; store_dg adds them in a fixed order. */
struct DgSums {
    float s[2][4];
    __device__ DgSums()
    {
#pragma unroll
        for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int i = 0; i < 4; ++i) s[r][i] = 0.f;
    }
};

/* In place on a chunk's masked logits S (the lane's rows A, B): dS = P (g
   dP - Delta), P from the saved lse (0 where S is -inf: lse2 is finite or
   +inf, dq_rows); dg sums dS. */
template <int NT>
__device__ inline void ds_chunk(float (&S)[NT][4], const float (&dP)[NT][4], float sl2,
                                const DqRows &r, DgSums &dg)
{
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const bool a = e < 2;
            const float pr = exp2_ftz(fmaf(S[nt][e], sl2, -(a ? r.lse2A : r.lse2B)));
            S[nt][e] = pr * ((a ? r.gA : r.gB) * dP[nt][e] - (a ? r.dlA : r.dlB));
            dg.s[a ? 0 : 1][nt & 3] += S[nt][e];
        }
}

/* dg_c of a lane's two rows, refined by the dQ pass (docs/MATH.md section
   8, "The CUDA path"): store_delta's dg' = dO . O_c comes from a product
   that rounds P to the storage type; the pass's own P is fp32, and the sum
   of its dS = P (g dP - g dg') over the branch's keys is g (sum P dP - dg'),
   so dg = (Delta + sum dS) / g = sum P dP (with sum P = 1). A row whose gate
   is 0, below 2^-64 in size or not finite has no dS to learn from (or
   none that survives the products by g) and keeps dg'. In the storage
   type; no gates, nothing to write. */
__device__ inline bool dg_refinable(float g) { return fabsf(g) >= 0x1p-64f && isfinite(g); }
template <typename T>
__device__ inline void store_dg(const Params &p, int br, const LaneRows &lr, const DqRows &r,
                                const DgSums &dg, int lane)
{
    float v[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) v[h] = (dg.s[h][0] + dg.s[h][1]) + (dg.s[h][2] + dg.s[h][3]);
    const float sA = quad_sum(v[0]), sB = quad_sum(v[1]);
    if (!p.dgates || (lane & 3) != 0) return;
    T *out = (T *)p.dgates;
    if (lr.vA && dg_refinable(r.gA)) out[lr.rowA * 3 + br] = Ty<T>::from_f((r.dlA + sA) / r.gA);
    if (lr.vB && dg_refinable(r.gB)) out[lr.rowB * 3 + br] = Ty<T>::from_f((r.dlB + sB) / r.gB);
}

/* dQ of one chunk: S holds the masked logits Q K^T, da the rows' dO as A
   fragments, Kc / Vc the chunk's keys and values (layouts LK, LV).
   dP = dO V^T, dS (ds_chunk), dQ += dS K with dS in the storage type
   (and its residual, grad_lo). */
template <typename T, int DK, int DV, typename LK, typename LV, int NT>
__device__ inline void dq_chunk(float (&S)[NT][4], const uint32_t (&da)[DV / 16][4],
                                const T *Kc, const T *Vc, float sl2, const DqRows &r,
                                DgSums &dg, float (&acc)[DK / 8][4], int lane)
{
    constexpr int KN = NT * 8;
    float dP[NT][4];
    zero_frags(dP);
#pragma unroll
    for (int kp = 0; kp < DV / 32; ++kp)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
            uint32_t bb[4];
            ldb_nk<LV>(bb, Vc, nt * 8, kp * 32, lane);
            mma<T>(dP[nt], da[2 * kp], bb[0], bb[1]);
            mma<T>(dP[nt], da[2 * kp + 1], bb[2], bb[3]);
        }
    ds_chunk(S, dP, sl2, r, dg);
#pragma unroll
    for (int kk = 0; kk < KN / 16; ++kk) {
        uint32_t ph[4], pl[4];
        split_frag<T>(S, kk, ph, pl);
#pragma unroll
        for (int np = 0; np < DK / 16; ++np) {
            uint32_t bb[4];
            ldb_kn<LK>(bb, Kc, kk * 16, np * 16, lane);
            mma<T>(acc[2 * np], ph, bb[0], bb[1]);
            mma<T>(acc[2 * np + 1], ph, bb[2], bb[3]);
            if (grad_lo(GRAD_DS)) {
                mma<T>(acc[2 * np], pl, bb[0], bb[1]);
                mma<T>(acc[2 * np + 1], pl, bb[2], bb[3]);
            }
        }
    }
}

/* K / V stages of a row kernel (the compressed and window passes, on the
   mma.sync path): the forward streams long key ranges at one CTA per SM and
   keeps NSA_ROW_STAGES in flight; dQ keeps two. */
__host__ __device__ constexpr int row_stages(bool dq)
{
    return dq ? 2 : NSA_ROW_STAGES;
}

/* Keys a row kernel stages and multiplies at a time: the forward takes
   NSA_ROW_KN (more mma per softmax rescale and per barrier); dQ (which also
   holds dP) NSA_KN. */
__host__ __device__ constexpr int row_kn(bool dq)
{
    return dq ? NSA_KN : NSA_ROW_KN;
}

/* Whether a row kernel's Q (and dO) tile of NW * 16 rows fits in the space
   of its K and V stages: then it lies there (row_body reads it into
   registers before staging any chunk) and takes no shared memory of its
   own. */
__host__ __device__ constexpr bool row_q_in_stages(int nw, bool dq, int dk, int dv)
{
    return nw * 16 * (dk + 8) <= row_stages(dq) * row_kn(dq) * (dk + 8 + dv + 8);
}

/* ------------------------------------------------------------------------ */
/* Row-centric pass of the compressed and window branches (the selected
   branch has its own, kernels/nsa_slc.cuh): forward (M_STAGE / M_FWD),
   forward recompute for the backward (M_PREP), or dQ (DQ = true).
   br_mask: branches run, in the order cmp, win. */
template <typename T, int DK, int DV, int NW, bool DQ>
__device__ inline void row_body(const Params &p, int mode, unsigned br_mask)
{
    constexpr int LDK = DK + 8, LDV = DV + 8, KN = row_kn(DQ);
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Qs = (T *)smem_raw;          /* [NW*16][LDK] */
    constexpr int NS = row_stages(DQ);
    /* Q and dO go to registers before any chunk is staged: where their
       tile fits in the stages' space it lies there (row_smem) */
    T *Ks = Qs + (row_q_in_stages(NW, DQ, DK, DV) ? 0 : NW * 16 * LDK); /* [NS][KN][LDK] */
    T *Vs = Ks + NS * KN * LDK;     /* [NS][KN][LDV] */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int hkv = blockIdx.y;
    RowTile rt;
    if (!locate_rows<false, NW>(p, rt)) return;
    const int G = p.G;

    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase + warp * 16, lane);
    const bool wactive = rt.fbase + warp * 16 < rt.fmax;

    stage_q_rows<DK, LDK>(p, rt, hkv, G, Qs, NW * 16, tid, NW * 32);
    __syncthreads();
    uint32_t qa[DK / 16][4];
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) lda<LDK>(qa[k], Qs, warp * 16, k * 16, lane);
    uint32_t da[DQ ? DV / 16 : 1][4];
    if constexpr (DQ) {
        __syncthreads();
        stage_rows<DV, LDK>(Qs, NW * 16, [&](int r) {
            return tile_row(rt, hkv, G, r, (const T *)p.dout, (int64_t)p.H * DV, DV); },
            tid, NW * 32);
        cp_commit();
        cp_wait<0>();
        __syncthreads();
#pragma unroll
        for (int k = 0; k < DV / 16; ++k) lda<LDK>(da[k], Qs, warp * 16, k * 16, lane);
    }

    float acc[(DQ ? DK : DV) / 8][4]; /* dQ across branches, or O of one branch */
    if constexpr (DQ) {
        zero_frags(acc);
    }
    bool prev = epi_adds_earlier(p.epi);
    unsigned last_br = 0;
    for (int br = 0; br < 3; ++br) if (br_mask & (1u << br)) last_br = br;

    for (int br = 0; br < 3; ++br) {
        if (!(br_mask & (1u << br))) continue;
        const T *kb, *vb;
        int64_t kst, vst;
        KeySrc src = make_src<T>(p, br, rt, hkv, kb, vb, kst, vst, DK, DV);
        src.kn = KN;
        const int nch = src.nchunks();
        float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
        DgSums dg; /* dQ pass */
        DqRows rs = {};
        if constexpr (!DQ) zero_frags(acc);
        else rs = dq_rows<T>(p, br, lr);
        /* stage c % NS <- chunk c; one commit group per chunk, empty past
           the last, so that waiting for all but NS - 1 groups finds chunk c */
        auto load = [&](int c) {
            if (c < nch) {
                int s0, cnt = src.chunk(c, s0);
                T *kd = Ks + (c % NS) * KN * LDK, *vd = Vs + (c % NS) * KN * LDV;
                stage_run<DK, LDK, KN, NW * 32>(kd, kb + s0 * kst, kst, cnt, tid);
                stage_run<DV, LDV, KN, NW * 32>(vd, vb + s0 * vst, vst, cnt, tid);
            }
            cp_commit();
        };
        __syncthreads();
        for (int c = 0; c < NS - 1; ++c) load(c);
        for (int c = 0; c < nch; ++c) {
            load(c + NS - 1); /* into the stage read in iteration c - 1 */
            cp_wait<NS - 1>();
            __syncthreads();
            int s0, cnt = src.chunk(c, s0);
            const T *Kc = Ks + (c % NS) * KN * LDK, *Vc = Vs + (c % NS) * KN * LDV;
            if (wactive && cnt > 0) {
                float S[KN / 8][4];
                qk_chunk<T, DK, Padded<LDK>>(S, qa, Kc, lane);
                const bool whole = chunk_whole(p, br, s0, cnt, KN, lr);
                mask_chunk(p, br, S, s0, cnt, whole, lr.tA, lr.tB, lane);
                if constexpr (!DQ) {
                    softmax_pv_chunk<T, DV, Padded<LDV>>(S, p.sl2, Vc, mA, mB, lA, lB, acc, lane);
                } else {
                    dq_chunk<T, DK, DV, Padded<LDK>, Padded<LDV>>(S, da, Kc, Vc, p.sl2, rs, dg,
                                                                  acc, lane);
                }
            }
            __syncthreads();
        }
        if constexpr (!DQ) {
            if (wactive)
                branch_epilogue<T, DV>(p, br, mode,
                                       epi_writes_out(p.epi) && (unsigned)br == last_br, prev,
                                       lr, mA, mB, lA, lB, acc, lane);
            prev = true;
        } else if (wactive) {
            store_dg<T>(p, br, lr, rs, dg, lane);
        }
    }
    if constexpr (DQ) if (wactive) store_dq<T, DK>(p, lr, acc, lane);
}

template <int DK, int DV, int NW, bool DQ>
constexpr size_t row_smem()
{
    return (size_t)((row_q_in_stages(NW, DQ, DK, DV) ? 0 : NW * 16 * (DK + 8)) +
                    row_stages(DQ) * row_kn(DQ) * (DK + 8 + DV + 8)) * 2;
}

/* ------------------------------------------------------------------------ */
/* Key-centric pass: dK, dV of one branch, 64 keys of one kv head a tile.

   A tile's query rows are walked in chunks of NSA_KV_ROWS rows. Keys that
   many queries see (selection block 0 and the local blocks, the first
   compressed blocks) would leave one CTA walking most of the sequence
   alone, so a tile's chunks are cut into segments of at most seg_len
   chunks, each its own CTA: segment 0 adds into the fp32 accumulators, the
   others write a partial that kv_split_finish_kernel then adds in segment
   order -- the same sums in the same order on every run, no atomics.
   seg_start (kv_split_count_kernel) is the exclusive prefix of the segment
   counts over tiles (kv head major).

   The order of the chunks is chosen for the L2 cache. A head's Q and dO
   rows are far larger than L2, so a row must be read by the tiles that
   share it at about the same time or it comes from HBM once per tile (at
   64K the compressed pass read 47 GB from DRAM that way, the window pass
   20 GB; 3.8 and 2.7 GB in this order). Compressed tiles all end at their
   sequence's last row, so their chunks are counted from the end: chunk c
   of every tile is the same rows, and the CTAs run segment-major
   (KvSplit::seg_major) where that grid stays small, every tile's segment
   s beside the others'. Window tiles of neighbouring keys overlap by all
   but 64 tokens, so a tile walks its chunks rotated (KvTile::rot) until
   chunk i of each holds the rows of the sequence's i-th chunk modulo the
   tiles' common chunk count. */

/* Query rows a key-centric CTA stages at a time (one pair of barriers per
   chunk); its warps multiply them 32 rows at a time, S^T and dP^T
   interleaved: 8 independent mma chains. */
#define NSA_KV_ROWS 64

struct KvSplit {
    const int64_t *seg_start; /* [Hkv * tiles + 1] */
    int64_t tiles;            /* tiles per kv head */
    int64_t seg_len;          /* chunks per segment */
    float *part;              /* [extra segments][64][DK + DV] */
    int64_t f0, f1;           /* the launch's tiles, kv head major: those of
                                 heads [p.kv_h0, p.kv_h0 + p.kv_hn) */
    int seg_major;            /* CTA x: segment x / (f1 - f0) of tile f0 + x % (f1 - f0),
                                 none past the tile's last; else the x-th segment in
                                 tile order from tile f0's first */
};

/* The row of key kg (in the batch) of kv head hkv in the launch's dK, dV
   accumulators: [keys][kv_hn][D] from head kv_h0. */
__device__ inline int64_t kv_acc_row(const Params &p, int64_t kg, int hkv)
{
    return kg * p.kv_hn + (hkv - p.kv_h0);
}

/* The keys a tile holds and the query rows that may see them. */
struct KvTile {
    int b, key0, key_end, nq, nk, pos0;
    int64_t jg;     /* slc: the selection block (in the batch) */
    int64_t rlo, rhi; /* cmp / win: flattened rows [rlo, rhi) */
    int64_t e0, ne;   /* slc: entries of the transposed list  */
    int64_t nch;      /* NSA_KV_ROWS-row chunks; 0 when the tile holds no key */
    int64_t rot;      /* win: the walk's first chunk (chunk i is rot + i mod nch) */
};

template <int BR>
__device__ inline KvTile kv_tile(const Params &p, int64_t tile, int hkv)
{
    KvTile t;
    t.jg = 0;
    t.rlo = t.rhi = t.e0 = t.ne = t.nch = t.rot = 0;
    if (BR == BR_SLC) {
        int subt = (p.lp + 63) / 64;
        t.jg = tile / subt;
        int sub = (int)(tile - t.jg * subt);
        t.b = find_seq(p.pf[PF_SLC], p.B, t.jg);
        int j = (int)(t.jg - p.pf[PF_SLC][t.b]);
        int nk = p.cuk[t.b + 1] - p.cuk[t.b];
        t.key0 = j * p.lp + sub * 64;
        t.key_end = min(min(t.key0 + 64, j * p.lp + p.lp), nk);
    } else if (BR == BR_WIN) {
        t.b = find_seq(p.pf[PF_KEYT], p.B, tile);
        int nk = p.cuk[t.b + 1] - p.cuk[t.b];
        t.key0 = (int)(tile - p.pf[PF_KEYT][t.b]) * 64;
        t.key_end = min(t.key0 + 64, nk);
    } else {
        t.b = find_seq(p.pf[PF_CMPT], p.B, tile);
        int nk = p.cuk[t.b + 1] - p.cuk[t.b];
        t.key0 = (int)(tile - p.pf[PF_CMPT][t.b]) * 64;
        t.key_end = (int)min((int64_t)t.key0 + 64, nsa_cmp_blocks(nk, p.l, p.d));
    }
    t.nq = p.cuq[t.b + 1] - p.cuq[t.b];
    t.nk = p.cuk[t.b + 1] - p.cuk[t.b];
    t.pos0 = t.nk - t.nq;
    if (t.key0 >= t.key_end) return t;
    const int G = p.G;
    if (BR == BR_WIN) {
        int tlo = max(t.key0, t.pos0), thi = min(t.key_end - 1 + p.w - 1, t.nk - 1);
        if (thi >= tlo) {
            t.rlo = (int64_t)(tlo - t.pos0) * G;
            t.rhi = (int64_t)(thi - t.pos0 + 1) * G;
        }
    } else if (BR == BR_CMP) {
        int tlo = max((int)nsa_cmp_first_query(t.key0, p.l, p.d), t.pos0);
        if (tlo <= t.nk - 1) {
            t.rlo = (int64_t)(tlo - t.pos0) * G;
            t.rhi = (int64_t)t.nq * G;
        }
    } else {
        int64_t key = (int64_t)hkv * p.nsel_tot + t.jg;
        t.e0 = p.tr_start[key];
        t.ne = p.tr_start[key + 1] - t.e0;
    }
    t.nch = BR == BR_SLC ? cdiv64(t.ne * cdiv64((int64_t)p.bq * G, 16), NSA_KV_ROWS / 16)
                         : cdiv64(t.rhi - t.rlo, NSA_KV_ROWS);
    if (BR == BR_WIN && t.nch > 0) t.rot = (t.nch - (t.rlo / NSA_KV_ROWS) % t.nch) % t.nch;
    return t;
}

/* The segments of a tile of nch chunks, seg_len chunks each: max(1,
   ceil(nch / seg_len)); the host's bound on them (run_kv) and the device's
   count (kv_split_count_kernel) are this one rule. */
__host__ __device__ inline int64_t kv_segments(int64_t nch, int64_t seg_len)
{
    return nch <= seg_len ? 1 : cdiv64(nch, seg_len);
}

/* seg_start: the exclusive prefix of kv_segments over the Hkv * tiles
   tiles, and its total last. One CTA of KV_SCAN_THREADS. */
#define NSA_KV_SCAN_THREADS 1024
template <int BR>
__global__ void __launch_bounds__(NSA_KV_SCAN_THREADS) kv_split_count_kernel(Params p, KvSplit sp,
                                                                           int64_t *seg_start)
{
    typedef cub::BlockScan<int64_t, NSA_KV_SCAN_THREADS> Scan;
    __shared__ typename Scan::TempStorage tmp;
    const int64_t n = (int64_t)p.Hkv * sp.tiles;
    const int64_t per = cdiv64(n, NSA_KV_SCAN_THREADS);
    const int64_t f0 = min(n, threadIdx.x * per), f1 = min(n, f0 + per);
    auto nseg = [&](int64_t f) -> int64_t {
        KvTile t = kv_tile<BR>(p, f % sp.tiles, (int)(f / sp.tiles));
        return kv_segments(t.nch, sp.seg_len);
    };
    int64_t sum = 0;
    for (int64_t f = f0; f < f1; ++f) sum += nseg(f);
    int64_t base, total;
    Scan(tmp).ExclusiveSum(sum, base, total);
    for (int64_t f = f0; f < f1; ++f) {
        seg_start[f] = base;
        base += nseg(f);
    }
    if (threadIdx.x == 0) seg_start[n] = total;
}

/* Adds each split tile's partials (segments 1, 2, ...) into the
   accumulators, in segment order. One CTA per tile. */
template <int DK, int DV, int BR>
__global__ void __launch_bounds__(256) kv_split_finish_kernel(Params p, KvSplit sp)
{
    const int64_t f = sp.f0 + blockIdx.x;
    const int64_t s0 = sp.seg_start[f], nseg = sp.seg_start[f + 1] - s0;
    if (nseg <= 1) return;
    const int hkv = (int)(f / sp.tiles);
    const KvTile t = kv_tile<BR>(p, f % sp.tiles, hkv);
    const int nkeys = t.key_end - t.key0;
    float *dka = BR == BR_CMP ? p.dkc_acc : p.dk_acc;
    float *dva = BR == BR_CMP ? p.dvc_acc : p.dv_acc;
    const int64_t kbase = BR == BR_CMP ? p.pf[PF_CMP][t.b] : (int64_t)p.cuk[t.b];
    const float *part = sp.part + (s0 - f) * 64 * (DK + DV); /* segment 1's partial */
    for (int e = threadIdx.x; e < nkeys * (DK + DV); e += blockDim.x) {
        const int r = e / (DK + DV), c = e - r * (DK + DV);
        const int64_t kg = kbase + t.key0 + r;
        float *a = c < DK ? dka + kv_acc_row(p, kg, hkv) * DK + c
                          : dva + kv_acc_row(p, kg, hkv) * DV + (c - DK);
        float v = *a;
        for (int64_t sg = 1; sg < nseg; ++sg) v += part[(sg - 1) * 64 * (DK + DV) + e];
        *a = v;
    }
}

/* A key-centric CTA's work: its tile, its segment of the tile's row chunks,
   and where each row of a chunk comes from. Shared by the mma.sync body
   (kv_body) and the wgmma one (kv_body_sm90). */
template <typename T, int DK, int DV, int BR>
struct KvWork {
    const Params &p;
    KvTile t;
    int64_t flo, seg;  /* tile (kv head major) and segment */
    int64_t cbeg, cend; /* the segment's chunks */
    int64_t qs;        /* the sequence's first query */
    int hkv, tpu;      /* tpu: 16-row pieces a selection unit */
    bool ok;           /* false: past the last segment, or a tile with no key */
    bool rows32;       /* flattened rows fit 32 bits */
    const T *kb, *vb;  /* the sequence's keys of this kv head */
    int64_t kst, vst;
    const T *q0, *o0;  /* Q and dO of the sequence's first token, head hkv * G */

    __device__ KvWork(const Params &p_, const KvSplit &sp, int64_t x) : p(p_)
    {
        /* this CTA's tile and segment */
        const int64_t nf = sp.f1 - sp.f0;
        if (sp.seg_major) {
            seg = x / nf;
            flo = sp.f0 + (x - seg * nf);
            ok = seg < sp.seg_start[flo + 1] - sp.seg_start[flo];
            if (!ok) return;
        } else {
            /* the last f with seg_start[f] <= x, counted from tile f0's first */
            x += sp.seg_start[sp.f0];
            ok = x < sp.seg_start[sp.f1];
            if (!ok) return;
            int64_t lo = sp.f0, hi = sp.f1 - 1;
            while (lo < hi) {
                int64_t mid = (lo + hi + 1) >> 1;
                if (sp.seg_start[mid] <= x) lo = mid;
                else hi = mid - 1;
            }
            flo = lo;
            seg = x - sp.seg_start[flo];
        }
        hkv = (int)(flo / sp.tiles);
        t = kv_tile<BR>(p, flo % sp.tiles, hkv);
        ok = t.key0 < t.key_end;
        if (!ok) return;
        qs = p.cuq[t.b];
        q0 = (const T *)p.q + qs * p.qst + (int64_t)hkv * p.G * p.qsh;
        o0 = (const T *)p.dout + (qs * p.H + (int64_t)hkv * p.G) * DV;
        tpu = (int)cdiv64((int64_t)p.bq * p.G, 16);
        cbeg = seg * sp.seg_len;
        cend = min(t.nch, cbeg + sp.seg_len);
        /* 32-bit divisions where the flattened rows fit (a 64-bit one costs
           several times more, and these run once per staged row) */
        rows32 = (int64_t)t.nq * p.G <= INT32_MAX && (int64_t)t.nch * NSA_KV_ROWS <= INT32_MAX;
        if (BR == BR_CMP) {
            const int64_t c0 = p.pf[PF_CMP][t.b];
            kb = (const T *)p.kc + c0 * p.Hkv * DK + (int64_t)hkv * DK;
            vb = (const T *)p.vc + c0 * p.Hkv * DV + (int64_t)hkv * DV;
            kst = (int64_t)p.Hkv * DK;
            vst = (int64_t)p.Hkv * DV;
        } else {
            const int64_t ks = p.cuk[t.b];
            kb = (const T *)p.k + ks * p.kst + hkv * p.ksh;
            vb = (const T *)p.v + ks * p.vst + hkv * p.vsh;
            kst = p.kst;
            vst = p.vst;
        }
    }

    __device__ int64_t divmod(int64_t a, int d, int64_t &q) const
    {
        if (rows32) {
            const unsigned qq = (unsigned)a / (unsigned)d;
            q = qq;
            return (int64_t)((unsigned)a - qq * (unsigned)d);
        }
        q = a / d;
        return a - q * d;
    }
    /* (token, head) of chunk c's row r; false if none. A selected block's
       chunk holds NSA_KV_ROWS / 16 pieces of 16 rows (a unit's bq * G rows
       padded to whole pieces, tpu pieces a unit). */
    __device__ bool rowof(int64_t c, int r, int &tok, int &g) const
    {
        int64_t f, fmax;
        int tok_off;
        if (BR == BR_SLC) {
            const int64_t sc = c * (NSA_KV_ROWS / 16) + r / 16;
            int64_t e;
            const int64_t piece = divmod(sc, tpu, e);
            if (e >= t.ne) return false;
            const int u = (int)(p.tr_units[t.e0 + e] - p.pf[PF_UNIT][t.b]);
            tok_off = u * p.bq;
            f = piece * 16 + (r & 15);
            fmax = (int64_t)min(p.bq, t.nq - tok_off) * p.G;
        } else if (BR == BR_CMP) {
            /* counted from the tile's end (see the order above) */
            tok_off = 0;
            f = t.rhi - (c + 1) * NSA_KV_ROWS + r;
            if (f < t.rlo) return false;
            fmax = t.rhi;
        } else {
            tok_off = 0;
            const int64_t cr = c + t.rot;
            f = t.rlo + (cr < t.nch ? cr : cr - t.nch) * NSA_KV_ROWS + r;
            fmax = t.rhi;
        }
        if (f >= fmax) return false;
        int64_t q;
        g = (int)divmod(f, p.G, q);
        tok = tok_off + (int)q;
        return true;
    }
    /* element offsets of (token, head) rows from q0 and o0 */
    __device__ int64_t q_off(int tok, int g) const { return tok * p.qst + g * p.qsh; }
    __device__ int64_t do_off(int tok, int g) const
    {
        return ((int64_t)tok * p.H + g) * DV;
    }

    /* Row r's lse, Delta, gate and token as load fetched them (lse2 and the
       gate's float made at put), or those of a row that sees no key; r < 0:
       this thread fetched no row. */
    struct Info {
        float lse, delta;
        T gate;
        int t, r;
    };
    __device__ Info fetch_info(int r, bool in, int tok, int g) const
    {
        Info f;
        f.r = r;
        f.gate = Ty<T>::from_f(0.f);
        if (in) {
            const int64_t row = (qs + tok) * p.H + hkv * p.G + g;
            f.lse = p.lse[BR][row];
            f.delta = p.delta[BR][row];
            if (p.gates) f.gate = ((const T *)p.gates)[row * 3 + BR];
            f.t = t.pos0 + tok;
        } else {
            f.lse = INFINITY;
            f.delta = 0.f;
            f.t = -1;
        }
        return f;
    }
    /* inf[r] as kv_scores reads it (one 16-byte load a row): lse2, Delta,
       gate (gate_of's rule), token. Called after the loads had time to land:
       the conversions wait for them, so they sit here, not in load. */
    __device__ void put(float4 *inf, const Info &f) const
    {
        if (f.r < 0) return;
        const float gate = f.t < 0 ? 0.f : p.gates ? Ty<T>::to_f(f.gate) : p.gate_default;
        inf[f.r] = make_float4(f.lse * NSA_LOG2E, f.delta, gate, __int_as_float(f.t));
    }

    /* Q and dO rows of chunk c (one cp.async group), and the rows' info
       fetched (put stores it: this thread's row of the chunk, at most one).
       qdst(r, j) / odst(r, j): where 16-byte column j of row r goes.
       Where Q and dO rows split into 16-byte columns alike, warp w copies
       rows w * WR .. w * WR + WR - 1: lane i < WR finds row w * WR + i once
       (rowof divides) with its Q and dO offsets, and the lanes copying a
       row take the offsets from that lane (finding the row in every lane
       that copies a piece of it, then its address, was two thirds of these
       kernels' instructions). */
    template <int NTHREADS, typename QD, typename OD>
    __device__ Info load(int64_t c, QD qdst, OD odst, int tid) const
    {
        constexpr int RC = NSA_KV_ROWS, CH = DK / 8, WR = RC / (NTHREADS / 32);
        static_assert(RC <= NTHREADS, "a row's info per thread at most");
        if constexpr (DK == DV && 32 % CH == 0 && WR <= 32 && WR % (32 / CH) == 0) {
            constexpr int RPS = 32 / CH; /* rows a warp copies a step */
            const int warp = tid >> 5, lane = tid & 31, j = lane % CH;
            int tok = 0, g = 0;
            const bool in = lane < WR && rowof(c, warp * WR + lane, tok, g);
            /* no row: zeros, from an address that is valid all the same */
            const int64_t qo = in ? q_off(tok, g) : (const T *)p.q - q0;
            const int64_t oo = in ? do_off(tok, g) : (const T *)p.dout - o0;
            const T *qj = q0 + j * 8, *oj = o0 + j * 8;
#pragma unroll
            for (int i = 0; i < WR / RPS; ++i) {
                const int src = i * RPS + lane / CH, r = warp * WR + src;
                const int bytes = __shfl_sync(0xffffffffu, in ? 16 : 0, src);
                cp16(qdst(r, j), qj + shfl64(qo, src), bytes);
                cp16(odst(r, j), oj + shfl64(oo, src), bytes);
            }
            cp_commit();
            return fetch_info(lane < WR ? warp * WR + lane : -1, in, tok, g);
        } else {
            for (int i = tid; i < RC * (DK / 8); i += NTHREADS) {
                const int r = i / (DK / 8), j = i % (DK / 8);
                int tok, g;
                const bool in = rowof(c, r, tok, g);
                cp16(qdst(r, j), in ? q0 + q_off(tok, g) + j * 8 : (const T *)p.q, in ? 16 : 0);
            }
            for (int i = tid; i < RC * (DV / 8); i += NTHREADS) {
                const int r = i / (DV / 8), j = i % (DV / 8);
                int tok, g;
                const bool in = rowof(c, r, tok, g);
                cp16(odst(r, j), in ? o0 + do_off(tok, g) + j * 8 : (const T *)p.dout,
                     in ? 16 : 0);
            }
            cp_commit();
            int tok = 0, g = 0;
            const bool in = tid < RC && rowof(c, tid, tok, g);
            return fetch_info(tid < RC ? tid : -1, in, tok, g);
        }
    }
};

/* The positions that see a lane's two keys of a key-centric tile (its
   rows lane / 4 and lane / 4 + 8 of the 16 keys from s): none for a key
   past the tile's end. */
struct KvSeen {
    int lo[2], hi[2];
    __device__ KvSeen(const Params &p, int br, int s, int key_end)
    {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            visible_range(p, br, s + 8 * h, lo[h], hi[h]);
            if (s + 8 * h >= key_end) lo[h] = INT_MAX;
        }
    }
};

/* In place on a 16-key x (NT * 8)-row fragment pair of S^T and dP^T (the
   C-fragment layout: key lane / 4 (+ 8), row 8 nt + 2 (lane % 4) (+ 1)):
   St becomes g P, dPt becomes dS = P (g dP - Delta), with the rows' lse2,
   Delta, gate and token in inf[] from row r0 (token -1: no row, seen by no
   key). P on the special-function unit, subnormal results flushed to zero,
   as the forward's softmax (exp2_ftz): P <= 1 here, normalised by the
   saved lse. */
template <int NT>
__device__ inline void kv_scores(const Params &p, float (&St)[NT][4], float (&dPt)[NT][4],
                                 const float4 *inf, int r0, const KvSeen &seen, int lane)
{
    const float sl2 = p.sl2;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
        const int col = r0 + nt * 8 + 2 * (lane & 3);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float4 *f = inf + col + (e & 1); /* lse2, Delta, g, t */
            const int t = __float_as_int(f->w), h = e >> 1;
            const bool ok = t >= seen.lo[h] && t <= seen.hi[h];
            const float pr = ok ? exp2_ftz(fmaf(St[nt][e], sl2, -f->x)) : 0.f;
            St[nt][e] = pr * f->z;
            dPt[nt][e] = pr * (f->z * dPt[nt][e] - f->y);
        }
    }
}

/* A warp's dK (scaled) and dV rows (keys kw0 + lane / 4 (+ 8) of the tile)
   into the fp32 accumulators (segment 0) or into its partial (segment s >
   0 writes partial s - 1: rows the tile's keys, columns dK then dV). */
template <typename T, int DK, int DV, int BR>
__device__ inline void kv_store(const KvWork<T, DK, DV, BR> &w, const KvSplit &sp,
                                const float (&dk)[DK / 8][4], const float (&dv)[DV / 8][4],
                                int kw0, int lane)
{
    const Params &p = w.p;
    float *dka = BR == BR_CMP ? p.dkc_acc : p.dk_acc;
    float *dva = BR == BR_CMP ? p.dvc_acc : p.dv_acc;
    const int64_t kbase = BR == BR_CMP ? p.pf[PF_CMP][w.t.b] : (int64_t)p.cuk[w.t.b];
    float *part = w.seg == 0 ? nullptr
                : sp.part + (sp.seg_start[w.flo] - w.flo + w.seg - 1) * 64 * (DK + DV);
    auto add = [&](float *a, float2 v) {
        float2 *a2 = (float2 *)a, s = *a2;
        s.x += v.x;
        s.y += v.y;
        *a2 = s;
    };
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int r = kw0 + (lane >> 2) + 8 * h;
        if (w.t.key0 + r >= w.t.key_end) continue;
        const int64_t kg = kbase + w.t.key0 + r;
#pragma unroll
        for (int nt = 0; nt < DK / 8; ++nt) {
            const float2 v = make_float2(dk[nt][2 * h] * p.sc, dk[nt][2 * h + 1] * p.sc);
            const int c = nt * 8 + 2 * (lane & 3);
            if (part) *(float2 *)(part + r * (DK + DV) + c) = v;
            else add(dka + kv_acc_row(p, kg, w.hkv) * DK + c, v);
        }
#pragma unroll
        for (int nt = 0; nt < DV / 8; ++nt) {
            const float2 v = make_float2(dv[nt][2 * h], dv[nt][2 * h + 1]);
            const int c = nt * 8 + 2 * (lane & 3);
            if (part) *(float2 *)(part + r * (DK + DV) + DK + c) = v;
            else add(dva + kv_acc_row(p, kg, w.hkv) * DV + c, v);
        }
    }
}

/* The key-centric pass on mma.sync: 4 warps of 16 keys; padded shared
   tiles. */
template <typename T, int DK, int DV, int BR>
__device__ inline void kv_body(const Params &p, const KvSplit &sp)
{
    constexpr int LDK = DK + 8, LDV = DV + 8;
    constexpr int RC = NSA_KV_ROWS, RH = 32;
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = (T *)smem_raw;            /* [64][LDK] */
    T *Vs = Ks + 64 * LDK;            /* [64][LDV] */
    T *Qs = Vs + 64 * LDV;            /* [2][RC][LDK] */
    T *Os = Qs + 2 * RC * LDK;        /* [2][RC][LDV] */
    float4 *info = (float4 *)(Os + 2 * RC * LDV); /* [2][RC]: lse2, delta, g, t */
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const KvWork<T, DK, DV, BR> w(p, sp, blockIdx.x);
    if (!w.ok) return;
    const int key0 = w.t.key0, key_end = w.t.key_end, nkeys = key_end - key0;
    stage_run<DK, LDK, 64, 128>(Ks, w.kb + key0 * w.kst, w.kst, nkeys, tid);
    stage_run<DV, LDV, 64, 128>(Vs, w.vb + key0 * w.vst, w.vst, nkeys, tid);
    cp_commit();
    auto load = [&](int64_t c, int buf) {
        T *qd = Qs + buf * RC * LDK, *od = Os + buf * RC * LDV;
        w.put(info + buf * RC,
              w.template load<128>(c, [&](int r, int j) { return qd + r * LDK + j * 8; },
                                   [&](int r, int j) { return od + r * LDV + j * 8; }, tid));
    };

    float dk[DK / 8][4], dv[DV / 8][4];
    zero_frags(dk);
    zero_frags(dv);
    const int kw0 = warp * 16;
    const bool wactive = kw0 < nkeys;
    const KvSeen seen(p, BR, key0 + kw0 + (lane >> 2), key_end);

    if (w.cbeg < w.cend) load(w.cbeg, 0);
    for (int64_t c = w.cbeg; c < w.cend; ++c) {
        const int buf = (int)((c - w.cbeg) & 1);
        if (c + 1 < w.cend) { load(c + 1, buf ^ 1); cp_wait<1>(); }
        else cp_wait<0>();
        __syncthreads();
        const T *Qc = Qs + buf * RC * LDK, *Oc = Os + buf * RC * LDV;
        const float4 *inf = info + buf * RC;
        /* RH rows at a time: S^T and dP^T of the warp's 16 keys in one loop
           (2 * RH / 8 independent mma chains), then their products */
#pragma unroll 1
        for (int rh = 0; wactive && rh < RC; rh += RH) {
            float St[RH / 8][4], dPt[RH / 8][4];
            zero_frags(St);
            zero_frags(dPt);
            static_assert(DK % 32 == 0 && DV % 32 == 0 && DK >= DV, "head dims");
#pragma unroll
            for (int kp = 0; kp < DK / 32; ++kp) {
                uint32_t a0[4], a1[4], c0[4], c1[4];
                lda<LDK>(a0, Ks, kw0, kp * 32, lane);
                lda<LDK>(a1, Ks, kw0, kp * 32 + 16, lane);
                if (kp < DV / 32) {
                    lda<LDV>(c0, Vs, kw0, kp * 32, lane);
                    lda<LDV>(c1, Vs, kw0, kp * 32 + 16, lane);
                }
#pragma unroll
                for (int nt = 0; nt < RH / 8; ++nt) {
                    uint32_t bb[4];
                    ldb_nk<LDK>(bb, Qc, rh + nt * 8, kp * 32, lane);
                    mma<T>(St[nt], a0, bb[0], bb[1]);
                    mma<T>(St[nt], a1, bb[2], bb[3]);
                    if (kp < DV / 32) {
                        ldb_nk<LDV>(bb, Oc, rh + nt * 8, kp * 32, lane);
                        mma<T>(dPt[nt], c0, bb[0], bb[1]);
                        mma<T>(dPt[nt], c1, bb[2], bb[3]);
                    }
                }
            }
            kv_scores(p, St, dPt, inf, rh, seen, lane);
            /* dV += (g P)^T dO, dK += dS^T Q, 16 rows a step */
#pragma unroll
            for (int kk = 0; kk < RH / 16; ++kk) {
                uint32_t pa[4], pl[4], sa[4], sl[4];
                split_frag<T>(St, kk, pa, pl);
                split_frag<T>(dPt, kk, sa, sl);
#pragma unroll
                for (int np = 0; np < DV / 16; ++np) {
                    uint32_t bb[4];
                    ldb_kn<LDV>(bb, Oc, rh + kk * 16, np * 16, lane);
                    mma<T>(dv[2 * np], pa, bb[0], bb[1]);
                    mma<T>(dv[2 * np + 1], pa, bb[2], bb[3]);
                    if (grad_lo(GRAD_P)) {
                        mma<T>(dv[2 * np], pl, bb[0], bb[1]);
                        mma<T>(dv[2 * np + 1], pl, bb[2], bb[3]);
                    }
                }
#pragma unroll
                for (int np = 0; np < DK / 16; ++np) {
                    uint32_t bb[4];
                    ldb_kn<LDK>(bb, Qc, rh + kk * 16, np * 16, lane);
                    mma<T>(dk[2 * np], sa, bb[0], bb[1]);
                    mma<T>(dk[2 * np + 1], sa, bb[2], bb[3]);
                    if (grad_lo(GRAD_DS)) {
                        mma<T>(dk[2 * np], sl, bb[0], bb[1]);
                        mma<T>(dk[2 * np + 1], sl, bb[2], bb[3]);
                    }
                }
            }
        }
        __syncthreads();
    }
    if (wactive) kv_store<T, DK, DV, BR>(w, sp, dk, dv, kw0, lane);
}

template <int DK, int DV>
constexpr size_t kv_body_smem()
{
    return (size_t)(64 * (DK + 8) + 64 * (DV + 8) + 2 * NSA_KV_ROWS * (DK + 8 + DV + 8)) * 2 +
           2 * 4 * NSA_KV_ROWS * sizeof(float);
}

} /* namespace nsak */

#endif
