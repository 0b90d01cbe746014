/* kernels/nsa_slc.cuh -- the selected branch's row kernels (contract,
   branch 2: attention over the unit's selected blocks of l' keys): the
   forward (slc_fwd_kernel) and the backward's dQ (slc_dq_kernel).

   A CTA is one warp: 16 (token, head) rows of one selection unit and one kv
   head (the G heads of a token are adjacent rows, so each gathered block
   serves the whole group). The unit's blocks are a gather of scattered key
   rows, so these kernels are bound by how fast rows arrive, not by the
   tensor cores (about 16 FLOP per gathered byte at G = 16). Chunks of
   NSA_KN keys stream through NS shared-memory stages, NS - 1 in flight
   while one is computed. Two ways to fill a stage:
     - sm_90a: the copy engine (TmaStages): one lane issues a tensor-tile
       copy per 64 columns of K and of V (KvMaps), landing in the 128-byte
       swizzle. It moves these rows at the rate of plain loads; 16-byte
       cp.async copies of the same rows reach about two thirds of it (the
       gather micro-benchmark, bench/RESULTS.md);
     - elsewhere: 16-byte cp.async copies into padded rows (CpStages).
   Two stages measured fastest: more CTAs per SM beat depth.
   Rows past a chunk's last key are zeros in V: finite values that the mask
   removes (a zero-probability key times a NaN would not vanish); in K the
   mask alone removes them. */
#ifndef NSA_KERNELS_SLC_CUH
#define NSA_KERNELS_SLC_CUH

#include "nsa_attn_sm90.cuh"

namespace nsak {

#ifndef NSA_SLC_STAGES
#define NSA_SLC_STAGES 2
#endif

/* Stages as padded rows filled by cp.async, one commit group a chunk. */
template <typename T, int DK, int DV, int NS>
struct CpStages {
    using LK = Padded<DK + 8>;
    using LV = Padded<DV + 8>;
    static constexpr size_t q_room = (size_t)NSA_KN * (DK + 8) * 2; /* Q in K's first stage */
    T *Ks, *Vs; /* [NS][KN][DK + 8], [NS][KN][DV + 8] */
    const T *kb, *vb;
    int64_t kst, vst;
    __device__ CpStages(unsigned char *smem, const T *kb_, const T *vb_, int64_t kst_,
                        int64_t vst_)
        : Ks((T *)smem), Vs((T *)smem + NS * NSA_KN * (DK + 8)), kb(kb_), vb(vb_), kst(kst_),
          vst(vst_) {}
    __device__ T *q() const { return Ks; }
    __device__ T *k(int c) const { return Ks + (c % NS) * NSA_KN * (DK + 8); }
    __device__ T *v(int c) const { return Vs + (c % NS) * NSA_KN * (DV + 8); }
    __device__ void init(int) const {}
    /* stage c % NS <- chunk c (keys [s0, s0 + cnt), zeros past cnt) */
    __device__ void issue(int c, int s0, int cnt, int lane) const
    {
        if (cnt > 0) {
            stage_run<DK, DK + 8, NSA_KN, 32>(k(c), kb + s0 * kst, kst, cnt, lane);
            stage_run<DV, DV + 8, NSA_KN, 32>(v(c), vb + s0 * vst, vst, cnt, lane);
        }
        cp_commit(); /* one group per chunk, empty or not, so the count holds */
    }
    __device__ void wait(int, int) const
    {
        cp_wait<NS - 1>();
        __syncwarp();
    }
    __device__ void release() const {}
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
/* Stages filled by the copy engine: a stage is K's DK / 64 then V's DV / 64
   swizzled panels of NSA_KN rows, the keys of the sequence's rows
   key0 + s0 ... (rows past the tensor arrive as zeros); one transaction
   barrier a stage. The stages start on a 1024-byte boundary. */
template <typename T, int DK, int DV, int NS>
struct TmaStages {
    static constexpr int KN = NSA_KN, KBYTES = KN * DK * 2, BYTES = KN * (DK + DV) * 2;
    static_assert(DK % 64 == 0 && DV % 64 == 0, "whole 64-column panels");
    static_assert(BYTES % 1024 == 0, "every stage on the swizzle's period");
    using LK = Sw128<NSA_KN>;
    using LV = Sw128<NSA_KN>;
    static constexpr size_t q_room = BYTES;
    unsigned char *st;
    uint64_t *bar;
    const KvMaps *maps;
    int hkv, key0;
    __device__ TmaStages(unsigned char *smem, uint64_t *bar_, const KvMaps *maps_, int hkv_,
                         int key0_)
        : st(sw128_base(smem)), bar(bar_), maps(maps_), hkv(hkv_), key0(key0_) {}
    __device__ T *q() const { return (T *)st; }
    __device__ T *k(int c) const { return (T *)(st + (c % NS) * BYTES); }
    __device__ T *v(int c) const { return (T *)(st + (c % NS) * BYTES + KBYTES); }
    /* after Q has been read from the first stage */
    __device__ void init(int lane) const
    {
        if (lane == 0)
            for (int s = 0; s < NS; ++s) mbar_init(&bar[s], 1);
        fence_async_smem(); /* Q's reads before the copy engine's writes */
        __syncwarp();
    }
    __device__ void issue(int c, int s0, int cnt, int lane) const
    {
        if (lane != 0) return;
        uint64_t *b = &bar[c % NS];
        mbar_expect_tx(b, cnt > 0 ? BYTES : 0); /* an empty chunk: the arrival alone */
        if (cnt <= 0) return;
        unsigned char *d = (unsigned char *)k(c);
#pragma unroll
        for (int i = 0; i < DK / 64; ++i) tma_box3(d + i * KN * 128, &maps->k, i * 64, hkv, key0 + s0, b);
        d = (unsigned char *)v(c);
#pragma unroll
        for (int i = 0; i < DV / 64; ++i) tma_box3(d + i * KN * 128, &maps->v, i * 64, hkv, key0 + s0, b);
    }
    /* chunk c in; V's rows past cnt zeroed (they hold the tensor's next rows) */
    __device__ void wait(int c, int cnt) const
    {
        mbar_wait(&bar[c % NS], (unsigned)(c / NS) & 1u);
        if (cnt > 0 && cnt < KN) {
#pragma unroll
            for (int i = 0; i < DV / 64; ++i) {
                uint4 *r = (uint4 *)(v(c) + i * KN * 64 + cnt * 64); /* rows cnt.. of panel i */
                for (int j = threadIdx.x & 31; j < (KN - cnt) * 8; j += 32) r[j] = make_uint4(0, 0, 0, 0);
            }
        }
        __syncwarp();
    }
    /* every lane's reads of the stage before the copy engine refills it */
    __device__ void release() const { fence_async_smem(); }
};
#endif

/* The tile's 16 rows of x (Q or dO: token stride xst, head stride xsh) as
   A fragments, staged through the first stage of st. */
template <typename T, int D, int LDQ, typename S>
__device__ inline void slc_rows_to_frags(const Params &p, const RowTile &rt, int hkv,
                                         const T *x, int64_t xst, int64_t xsh,
                                         uint32_t (&a)[D / 16][4], const S &st, int lane)
{
    static_assert(16 * LDQ * 2 <= S::q_room, "the rows fit in the first stage");
    stage_rows<D, LDQ>(st.q(), 16, [&](int r) { return tile_row(rt, hkv, p.G, r, x, xst, xsh); },
                       lane, 32);
    cp_commit();
    cp_wait<0>();
    __syncwarp();
#pragma unroll
    for (int k = 0; k < D / 16; ++k) lda<LDQ>(a[k], st.q(), 0, k * 16, lane);
    __syncwarp(); /* every lane has read them before the stage is refilled */
}

/* The body: Q's rows to A fragments, then every chunk of the unit's blocks
   through the stages S (CpStages or TmaStages). */
template <typename T, int DK, int DV, int NS, typename S>
__device__ inline void slc_fwd_body(const Params &p, int mode, const RowTile &rt,
                                    const KeySrc &src, const S &st)
{
    constexpr int KN = NSA_KN;
    static_assert(KN == 32, "one key row per lane");
    static_assert(NS >= 2, "a pipeline needs two stages");
    const int lane = threadIdx.x, hkv = blockIdx.y;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase, lane);

    /* Q is staged in the first stage and read into registers before any
       chunk is: without a Q tile of its own, six CTAs fit an SM instead of
       five (at DK = DV = 128, two stages), and more gathers are in flight */
    uint32_t qa[DK / 16][4];
    slc_rows_to_frags<T, DK, DK + 8>(p, rt, hkv, (const T *)p.q, p.qst, p.qsh, qa, st, lane);
    st.init(lane);

    const int nch = src.nchunks();
    auto issue = [&](int c) {
        int s0 = 0, cnt = c < nch ? src.chunk(c, s0) : 0;
        st.issue(c, s0, cnt, lane);
    };
    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
    float acc[DV / 8][4];
    zero_frags(acc);
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        issue(c + NS - 1); /* into the stage read in iteration c - 1 */
        int s0, cnt = src.chunk(c, s0);
        st.wait(c, cnt);
        if (cnt > 0) {
            float Sc[KN / 8][4];
            qk_chunk<T, DK, typename S::LK>(Sc, qa, st.k(c), lane);
            mask_chunk(p, BR_SLC, Sc, s0, cnt, cnt == KN && s0 + cnt - 1 <= rt.t_first, lr.tA,
                       lr.tB, lane);
            softmax_pv_chunk<T, DV, typename S::LV>(Sc, p.sl2, st.v(c), mA, mB, lA, lB, acc, lane);
        }
        __syncwarp();
        st.release();
    }
    cp_wait<0>();

    branch_epilogue<T, DV>(p, BR_SLC, mode, p.final_out != 0, p.acc_in != 0, lr, mA, mB, lA,
                           lB, acc, lane);
}

/* dQ of the selected branch: Q's and dO's rows to A fragments, then every
   chunk of the unit's blocks (dq_chunk, kernels/nsa_attn.cuh), dQ stored
   once. */
template <typename T, int DK, int DV, int NS, typename S>
__device__ inline void slc_dq_body(const Params &p, const RowTile &rt, const KeySrc &src,
                                   const S &st)
{
    constexpr int KN = NSA_KN, LDQ = (DK > DV ? DK : DV) + 8;
    const int lane = threadIdx.x, hkv = blockIdx.y;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase, lane);
    uint32_t qa[DK / 16][4], da[DV / 16][4];
    slc_rows_to_frags<T, DK, LDQ>(p, rt, hkv, (const T *)p.q, p.qst, p.qsh, qa, st, lane);
    slc_rows_to_frags<T, DV, LDQ>(p, rt, hkv, (const T *)p.dout, (int64_t)p.H * DV, DV, da, st,
                                  lane);
    st.init(lane);

    const DqRows rs = dq_rows<T>(p, BR_SLC, lr);
    const int nch = src.nchunks();
    auto issue = [&](int c) {
        int s0 = 0, cnt = c < nch ? src.chunk(c, s0) : 0;
        st.issue(c, s0, cnt, lane);
    };
    float acc[DK / 8][4];
    zero_frags(acc);
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        issue(c + NS - 1);
        int s0, cnt = src.chunk(c, s0);
        st.wait(c, cnt);
        if (cnt > 0) {
            float Sc[KN / 8][4];
            qk_chunk<T, DK, typename S::LK>(Sc, qa, st.k(c), lane);
            mask_chunk(p, BR_SLC, Sc, s0, cnt, cnt == KN && s0 + cnt - 1 <= rt.t_first, lr.tA,
                       lr.tB, lane);
            dq_chunk<T, DK, DV, typename S::LK, typename S::LV>(Sc, da, st.k(c), st.v(c), p.sl2,
                                                                rs, acc, lane);
        }
        __syncwarp();
        st.release();
    }
    cp_wait<0>();
    store_dq<T, DK>(p, lr, acc, lane);
}

/* Shared memory for either way of filling the stages (CpStages, TmaStages:
   + 1024 for the swizzle's alignment). */
template <int DK, int DV, int NS>
constexpr size_t slc_smem()
{
    return (size_t)NS * NSA_KN * (DK + 8 + DV + 8) * 2 > (size_t)NS * NSA_KN * (DK + DV) * 2 + 1024
               ? (size_t)NS * NSA_KN * (DK + 8 + DV + 8) * 2
               : (size_t)NS * NSA_KN * (DK + DV) * 2 + 1024;
}

/* The stages of a selected-branch kernel, and body(st) on them: the copy
   engine's where maps.ok (sm_90a builds), cp.async otherwise. */
template <typename T, int DK, int DV, int NS, typename F>
__device__ inline void slc_with_stages(const Params &p, const RowTile &rt, const KvMaps &maps,
                                       F body)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int hkv = blockIdx.y;
    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_SLC, rt, hkv, kb, vb, kst, vst, DK, DV);
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if (maps.ok) {
        __shared__ uint64_t bar[NS];
        body(src, TmaStages<T, DK, DV, NS>(smem_raw, bar, &maps, hkv, (int)p.cuk[rt.b]));
        return;
    }
#endif
    body(src, CpStages<T, DK, DV, NS>(smem_raw, kb, vb, kst, vst));
}

/* mode: M_FWD (gated into the output), M_STAGE (this branch's O and lse
   alone, fp32, for nsa_cuda_attend_slc) or M_PREP (the backward's Delta
   and dg from the recomputed O, store_delta). */
template <typename T, int DK, int DV, int NS>
__global__ void __launch_bounds__(32) slc_fwd_kernel(Params p, int mode,
                                                     const __grid_constant__ KvMaps maps)
{
    RowTile rt;
    if (!locate_rows<true, 1>(p, rt)) return;
    slc_with_stages<T, DK, DV, NS>(p, rt, maps, [&](const KeySrc &src, const auto &st) {
        slc_fwd_body<T, DK, DV, NS>(p, mode, rt, src, st);
    });
}

/* The backward's dQ of the selected branch, into the fp32 accumulator or
   the output as store_dq decides. */
template <typename T, int DK, int DV, int NS>
__global__ void __launch_bounds__(32) slc_dq_kernel(Params p, const __grid_constant__ KvMaps maps)
{
    RowTile rt;
    if (!locate_rows<true, 1>(p, rt)) return;
    slc_with_stages<T, DK, DV, NS>(p, rt, maps, [&](const KeySrc &src, const auto &st) {
        slc_dq_body<T, DK, DV, NS>(p, rt, src, st);
    });
}

} /* namespace nsak */

#endif
