/* kernels/nsa_slc_fwd.cuh -- the selected branch's forward (contract,
   branch 2: attention over the unit's selected blocks of l' keys).

   A CTA is one warp: 16 (token, head) rows of one selection unit and one kv
   head (the G heads of a token are adjacent rows, so each gathered block
   serves the whole group). The unit's blocks are a gather of scattered key
   rows, so the kernel is bound by how fast rows arrive, not by the tensor
   cores (about 16 FLOP per gathered byte at G = 16):
   its 16-byte cp.async copies run NS stages deep, so NS - 1 chunks are in
   flight while one is computed. (Two stages measured fastest on an H100:
   more CTAs per SM beat depth. One bulk copy per row through the copy
   engine was slower: bench/RESULTS.md.)
   Rows past a chunk's last key are zeros: finite values that the mask
   removes (a zero-probability key times a NaN would not vanish). */
#ifndef NSA_KERNELS_SLC_FWD_CUH
#define NSA_KERNELS_SLC_FWD_CUH

#include "nsa_attn.cuh"

namespace nsak {

#ifndef NSA_SLC_STAGES
#define NSA_SLC_STAGES 2
#endif

/* Q is staged in the first K stage and read into registers before any
   chunk is: without a Q tile of its own, six CTAs fit an SM instead of
   five (at DK = DV = 128, two stages), and more gathers are in flight. */
template <int DK, int DV, int NS>
constexpr size_t slc_fwd_smem()
{
    static_assert(16 <= NSA_KN, "Q fits in one K stage");
    return (size_t)(NS * NSA_KN * (DK + 8) + NS * NSA_KN * (DV + 8)) * 2;
}

/* mode: M_FWD (gated into the output), M_STAGE (this branch's O and lse
   alone, fp32, for nsa_cuda_attend_slc) or M_PREP (the backward's Delta
   and dg from the recomputed O, store_delta). */
template <typename T, int DK, int DV, int NS>
__global__ void __launch_bounds__(32) slc_fwd_kernel(Params p, int mode)
{
    constexpr int LDK = DK + 8, LDV = DV + 8, KN = NSA_KN;
    static_assert(KN == 32, "one key row per lane");
    static_assert(NS >= 2, "a pipeline needs two stages");
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T *Ks = (T *)smem_raw;      /* [NS][KN][LDK] */
    T *Vs = Ks + NS * KN * LDK; /* [NS][KN][LDV] */
    T *Qs = Ks;                 /* [16][LDK], read before chunk 0 is staged */
    const int lane = threadIdx.x, hkv = blockIdx.y;
    RowTile rt;
    if (!locate_rows<true, 1>(p, rt)) return;
    const int G = p.G;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase, lane);

    stage_q_rows<DK, LDK>(p, rt, hkv, G, Qs, 16, lane, 32);
    __syncwarp();
    uint32_t qa[DK / 16][4];
#pragma unroll
    for (int k = 0; k < DK / 16; ++k) lda<LDK>(qa[k], Qs, 0, k * 16, lane);
    __syncwarp(); /* every lane has read Q before the K stages overwrite it */

    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_SLC, rt, hkv, kb, vb, kst, vst, DK, DV);
    const int nch = src.nchunks();
    /* stage c % NS <- chunk c */
    auto issue = [&](int c) {
        const int buf = c % NS;
        int s0 = 0, cnt = c < nch ? src.chunk(c, s0) : 0;
        T *kd = Ks + buf * KN * LDK, *vd = Vs + buf * KN * LDV;
        if (cnt > 0) {
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
            qk_chunk<T, DK, LDK>(S, qa, Ks + (c % NS) * KN * LDK, lane);
            mask_chunk(p, BR_SLC, S, s0, cnt, cnt == KN && s0 + cnt - 1 <= rt.t_first, lr.tA,
                       lr.tB, lane);
            softmax_pv_chunk<T, DV, LDV>(S, p.sl2, Vs + (c % NS) * KN * LDV, mA, mB, lA, lB, acc, lane);
        }
        __syncwarp();
    }
    cp_wait<0>();

    branch_epilogue<T, DV>(p, BR_SLC, mode, p.final_out != 0, p.acc_in != 0, lr, mA, mB, lA,
                           lB, acc, lane);
}

} /* namespace nsak */

#endif
