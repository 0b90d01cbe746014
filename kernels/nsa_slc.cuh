/* kernels/nsa_slc.cuh -- the selected branch's row kernels (contract,
   branch 2: attention over the unit's selected blocks of l' keys): the
   forward (slc_fwd_kernel) and the backward's dQ (slc_dq_kernel).

   A warp owns 16 (token, head) rows of one selection unit and one kv head
   (the G heads of a token are adjacent rows, so each gathered block serves
   the whole group); a forward CTA is a few such warps of consecutive row
   tiles, which load once the blocks they all select and all see whole
   (SlcShare: block 0 and a local block in the paper preset, nearly all of
   a unit's blocks in a tile preset). The unit's blocks are a gather of
   scattered key rows, so these kernels are bound by how fast rows arrive
   and by each warp's chain of dependent steps, not by the tensor cores
   (about 16 FLOP per gathered byte at G = 16). Chunks of NSA_KN keys
   stream through each warp's NS shared-memory stages, NS - 1 in flight
   while one is computed. Two ways to fill a stage:
     - sm_90a: the copy engine (TmaStages): one lane issues a tensor-tile
       copy per 64 columns of K and of V (KvMaps), landing in the 128-byte
       swizzle. It moves these rows at the rate of plain loads; 16-byte
       cp.async copies of the same rows reach about two thirds of it (the
       gather micro-benchmark, bench/RESULTS.md);
     - elsewhere: 16-byte cp.async copies into padded rows (CpStages).
   Two stages measured fastest: more CTAs per SM beat depth.
   Rows past a chunk's last key are zeros in K and V: finite values that the
   mask removes (a zero-probability key times a NaN would not vanish, in
   P V as in the backward's dS K). */
#ifndef NSA_KERNELS_SLC_CUH
#define NSA_KERNELS_SLC_CUH

#include "nsa_attn_sm90.cuh"

namespace nsak {

#ifndef NSA_SLC_STAGES
#define NSA_SLC_STAGES 2
#endif
/* The warps of a forward CTA (slc_fwd_kernel): 16 rows each, each with its
   own stages (about 34 KB at DK = DV = 128), the blocks all of them select
   loaded once (SlcShare). Measured on an H100 (64K, bench/RESULTS.md):
   three (two CTAs an SM) beat one (six an SM) and six (one an SM, whose
   warps start and end together). */
#ifndef NSA_SLC_WARPS
#define NSA_SLC_WARPS 3
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
    /* the stages of the warp dw regions of `region` bytes away */
    __device__ CpStages at(int dw, size_t region) const
    {
        CpStages s = *this;
        s.Ks = (T *)((unsigned char *)Ks + (ptrdiff_t)dw * (ptrdiff_t)region);
        s.Vs = (T *)((unsigned char *)Vs + (ptrdiff_t)dw * (ptrdiff_t)region);
        return s;
    }
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
    /* chunk c in; K's and V's rows past cnt zeroed: they hold the tensor's
       next rows, which may not be finite, and the masked scores' zeros
       meet them in P V and in the backward's dS K (0 * inf is NaN) */
    __device__ void wait(int c, int cnt) const
    {
        mbar_wait(&bar[c % NS], (unsigned)(c / NS) & 1u);
        if (cnt > 0 && cnt < KN) {
            auto zero_rows = [&](T *x, int panels) {
                for (int i = 0; i < panels; ++i) {
                    uint4 *r = (uint4 *)(x + i * KN * 64 + cnt * 64); /* rows cnt.. of panel i */
                    for (int j = threadIdx.x & 31; j < (KN - cnt) * 8; j += 32) r[j] = make_uint4(0, 0, 0, 0);
                }
            };
            zero_rows(k(c), DK / 64);
            zero_rows(v(c), DV / 64);
        }
        __syncwarp();
    }
    /* every lane's reads of the stage before the copy engine refills it */
    __device__ void release() const { fence_async_smem(); }
    /* the stages of the warp dw regions of `region` bytes away (a multiple
       of 1024, so that they keep the swizzle's alignment) */
    __device__ TmaStages at(int dw, size_t region) const
    {
        TmaStages s = *this;
        s.st = st + (ptrdiff_t)dw * (ptrdiff_t)region;
        s.bar = bar + dw * NS;
        return s;
    }
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

/* A warp's stages in a CTA of several (either way), on a multiple of 1024
   bytes so that every warp's keep the swizzle's alignment; the CTA's
   shared memory is nw regions and 1024 bytes for the alignment. */
template <int DK, int DV, int NS>
__host__ __device__ constexpr size_t slc_region()
{
    constexpr size_t cp = (size_t)NS * NSA_KN * (DK + 8 + DV + 8) * 2; /* CpStages */
    constexpr size_t tma = (size_t)NS * NSA_KN * (DK + DV) * 2;        /* TmaStages */
    return ((cp > tma ? cp : tma) + 1023) / 1024 * 1024;
}
template <int DK, int DV, int NS>
constexpr size_t slc_cta_smem(int nw)
{
    return (size_t)nw * slc_region<DK, DV, NS>() + 1024;
}

/* The blocks a forward CTA's warps load once for all of them (SlcShare):
   blocks in every warp's list that every row of the CTA sees whole, so
   that no warp needs a mask there, nor zeroed rows of V (a key that one
   row sees and another does not, a NaN in V say, must not reach the other
   row). In the paper preset these are block 0 and the local block before
   the current one, 2 of each token's 16; in a tile preset every block of
   the unit but its own. A warp's list takes part when it holds at most
   NSA_SLC_LIST_MAX entries, strictly ascending, all inside the sequence
   (the contract's format; then a block is in a list at most once);
   otherwise, or where the warps' rows lie in different sequences, nothing
   is shared and each warp walks its own list, as a one-warp CTA does. */
#define NSA_SLC_LIST_MAX 64
struct SlcShare {
    int32_t list[NSA_SLC_WARPS][NSA_SLC_LIST_MAX]; /* each warp's list, then its own part */
    int n[NSA_SLC_WARPS];    /* entries; -1: the list takes no part; -2: no rows  */
    int b[NSA_SLC_WARPS];    /* the warp's sequence                               */
    int nown[NSA_SLC_WARPS]; /* entries of the own part (set where n >= 0)        */
    int32_t common[NSA_SLC_LIST_MAX];
    int ncommon;
};

/* Whether j is in the ascending list l[0 .. n) (a binary search; on a list
   out of order it may miss, never finds a j that is not there). */
__device__ inline bool slc_in_list(const int32_t *l, int n, int j)
{
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        const int x = l[mid];
        if (x == j) return true;
        if (x < j) lo = mid + 1; else hi = mid;
    }
    return false;
}

/* SlcShare for the CTA (t0: the position of warp 0's first row); called by
   every thread, ends synchronised. */
__device__ inline void slc_share(const Params &p, bool active, const RowTile &rt,
                                 const KeySrc &src, int t0, SlcShare &sh)
{
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (nw == 1) { /* one warp: nothing to share, its list as it is */
        if (lane == 0) {
            sh.n[0] = -1;
            sh.ncommon = 0;
        }
        __syncwarp();
        return;
    }
    /* 1. every warp its list */
    bool ok = active && src.cnt <= NSA_SLC_LIST_MAX;
    if (ok) {
        for (int e0 = 0; e0 < src.cnt; e0 += 32) {
            const int e = e0 + lane;
            int j = e < src.cnt ? __ldg(src.idx + e) : 0, nx = 0;
            if (e < src.cnt) sh.list[w][e] = j;
            if (e + 1 < src.cnt) nx = __ldg(src.idx + e + 1);
            const bool good =
                e >= src.cnt || (j >= 0 && j < src.nsel && (e + 1 >= src.cnt || j < nx));
            ok = __all_sync(0xffffffffu, good) && ok;
        }
    }
    if (lane == 0) {
        sh.n[w] = !active ? -2 : ok ? src.cnt : -1;
        sh.b[w] = rt.b;
    }
    __syncthreads();
    /* 2. warp 0: the common blocks, ascending */
    if (w == 0) {
        bool any = sh.n[0] >= 0;
        for (int v = 1; v < nw; ++v)
            any = any && (sh.n[v] == -2 || (sh.n[v] >= 0 && sh.b[v] == sh.b[0]));
        int nc = 0;
        for (int e0 = 0; any && e0 < sh.n[0]; e0 += 32) {
            const int e = e0 + lane;
            bool in = e < sh.n[0];
            const int j = in ? sh.list[0][e] : 0;
            in = in && (int64_t)(j + 1) * p.lp - 1 <= (int64_t)t0;
            for (int v = 1; v < nw && in; ++v)
                if (sh.n[v] >= 0) in = slc_in_list(sh.list[v], sh.n[v], j);
            const unsigned m = __ballot_sync(0xffffffffu, in);
            if (in) sh.common[nc + __popc(m & ((1u << lane) - 1u))] = j;
            nc += __popc(m);
        }
        if (lane == 0) sh.ncommon = nc;
    }
    __syncthreads();
    /* 3. every warp the rest of its list, in place (only it reads it now) */
    if (sh.n[w] >= 0) {
        const int n = sh.n[w], nc = sh.ncommon;
        int keep = 0;
        for (int e0 = 0; e0 < n; e0 += 32) {
            const int e = e0 + lane;
            const int j = e < n ? sh.list[w][e] : 0;
            const bool mine = e < n && !slc_in_list(sh.common, nc, j);
            const unsigned m = __ballot_sync(0xffffffffu, mine);
            __syncwarp();
            if (mine) sh.list[w][keep + __popc(m & ((1u << lane) - 1u))] = j;
            keep += __popc(m);
        }
        if (lane == 0) sh.nown[w] = keep;
    }
    __syncwarp();
}

/* The chunks of a CTA's warps, through each warp's stages (S: CpStages
   or TmaStages, filled NS - 1 ahead): first the common blocks' chunks in
   rounds (round r: chunk r * nw + v fills warp v's stage; all warps wait
   for the round, each takes all of its chunks, all release it), then each
   warp's own chunks as a one-warp CTA takes them. take(sv, c, s0, cnt):
   the work of a chunk of cnt > 0 keys from s0, in stage c of sv. A warp
   without rows (active false) only fills and waits for its stages. Called
   after st.init by every thread. */
template <typename T, int DK, int DV, int NS, typename S, typename F>
__device__ inline void slc_walk(bool active, const KeySrc &src, const SlcShare &sh, const S &st,
                                F take)
{
    constexpr size_t region = slc_region<DK, DV, NS>();
    static_assert(NS >= 2, "a pipeline needs two stages");
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const int ncc = sh.ncommon * src.cpb, rounds = (ncc + nw - 1) / nw;
    const int32_t *own = sh.n[w] >= 0 ? sh.list[w] : nullptr;
    const int nown = active ? (own ? sh.nown[w] : src.cnt) * src.cpb : 0;
    /* chunk x of a list of blocks in shared memory */
    auto list_chunk = [&](const int32_t *list, int x, int &s0) {
        int e, sub;
        src.split(x, e, sub);
        return src.block_chunk(list[e], sub, s0);
    };
    /* chunk c of this warp's sequence: its chunk of round c, then its own */
    auto piece = [&](int c, int &s0) {
        s0 = 0;
        if (c < rounds) {
            const int x = c * nw + w;
            return x < ncc ? list_chunk(sh.common, x, s0) : 0;
        }
        c -= rounds;
        if (c >= nown) return 0;
        return own ? list_chunk(own, c, s0) : src.chunk(c, s0);
    };
    auto issue = [&](int c) {
        int s0, cnt = piece(c, s0);
        st.issue(c, s0, cnt, lane);
    };
    const int nch = rounds + nown;
    for (int c = 0; c < NS - 1; ++c) issue(c);
    for (int c = 0; c < nch; ++c) {
        issue(c + NS - 1); /* into the stage read in iteration c - 1 */
        int s0, cnt = piece(c, s0);
        st.wait(c, cnt);
        /* a round: every warp's chunk (the same branch for the whole CTA);
           after the rounds: this warp's own */
        const bool round = c < rounds;
        if (round) __syncthreads(); /* every warp's chunk of the round is in */
        const int v0 = round ? 0 : w, v1 = !active ? v0 : round ? nw : w + 1;
        for (int v = v0; v < v1; ++v) {
            int s0v = s0, cv = cnt;
            if (round) {
                const int x = c * nw + v;
                cv = x < ncc ? list_chunk(sh.common, x, s0v) : 0;
            }
            if (cv > 0) take(st.at(v - w, region), c, s0v, cv);
        }
        __syncwarp();
        st.release();
        if (round) __syncthreads(); /* every warp has read the round's stages */
    }
    cp_wait<0>();
}

/* The forward: Q's rows to A fragments, every chunk (slc_walk), the
   branch's epilogue. */
template <typename T, int DK, int DV, int NS, typename S>
__device__ inline void slc_fwd_body(const Params &p, int mode, const RowTile &rt, bool active,
                                    const KeySrc &src, const SlcShare &sh, const S &st)
{
    constexpr int KN = NSA_KN;
    static_assert(KN == 32, "one key row per lane");
    const int lane = threadIdx.x & 31, hkv = blockIdx.y;
    const LaneRows lr = lane_rows(p, rt, hkv, rt.fbase, lane);

    /* Q is staged in the first stage and read into registers before any
       chunk is: without a Q tile of its own, six warps fit an SM instead of
       five (at DK = DV = 128, two stages), and more gathers are in flight */
    uint32_t qa[DK / 16][4];
    if (active)
        slc_rows_to_frags<T, DK, DK + 8>(p, rt, hkv, (const T *)p.q, p.qst, p.qsh, qa, st, lane);
    st.init(lane);

    float mA = -INFINITY, mB = -INFINITY, lA = 0.f, lB = 0.f;
    float acc[DV / 8][4];
    zero_frags(acc);
    slc_walk<T, DK, DV, NS>(active, src, sh, st, [&](const S &sv, int c, int s0, int cnt) {
        float Sc[KN / 8][4];
        qk_chunk<T, DK, typename S::LK>(Sc, qa, sv.k(c), lane);
        mask_chunk(p, BR_SLC, Sc, s0, cnt, cnt == KN && s0 + cnt - 1 <= rt.t_first, lr.tA,
                   lr.tB, lane);
        softmax_pv_chunk<T, DV, typename S::LV>(Sc, p.sl2, sv.v(c), mA, mB, lA, lB, acc, lane);
    });
    if (active)
        branch_epilogue<T, DV>(p, BR_SLC, mode, epi_writes_out(p.epi), epi_adds_earlier(p.epi),
                               lr, mA, mB, lA, lB, acc, lane);
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
    DgSums dg;
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
                                                                rs, dg, acc, lane);
        }
        __syncwarp();
        st.release();
    }
    cp_wait<0>();
    store_dg<T>(p, BR_SLC, lr, rs, dg, lane);
    store_dq<T, DK>(p, lr, acc, lane);
}

/* The stages of the calling warp (warp w of the CTA: region w of
   slc_region bytes), and body(src, st) on them: the copy engine's where
   maps.ok (sm_90a builds), cp.async otherwise. */
template <typename T, int DK, int DV, int NS, typename F>
__device__ inline void slc_with_stages(const Params &p, const RowTile &rt, const KvMaps &maps,
                                       F body)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    const int hkv = blockIdx.y, w = threadIdx.x >> 5;
    unsigned char *base = smem_raw + (size_t)w * slc_region<DK, DV, NS>();
    const T *kb, *vb;
    int64_t kst, vst;
    const KeySrc src = make_src<T>(p, BR_SLC, rt, hkv, kb, vb, kst, vst, DK, DV);
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if (maps.ok) {
        __shared__ uint64_t bar[NSA_SLC_WARPS * NS];
        body(src, TmaStages<T, DK, DV, NS>(base, bar + w * NS, &maps, hkv, (int)p.cuk[rt.b]));
        return;
    }
#endif
    body(src, CpStages<T, DK, DV, NS>(base, kb, vb, kst, vst));
}

/* A CTA of blockDim.x / 32 <= NSA_SLC_WARPS warps, each 16 rows (row tile
   blockIdx.x * warps + warp), the blocks they share loaded once
   (SlcShare): body(rt, active, src, sh, st) on the calling warp's stages. A
   warp without rows takes the first warp's tile for its stages. */
template <typename T, int DK, int DV, int NS, typename F>
__device__ inline void slc_cta(const Params &p, const KvMaps &maps, F body)
{
    __shared__ SlcShare sh;
    const int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    RowTile rt0, rt;
    /* the grid rounds the launch's tiles up to whole CTAs: none past p.tile_end */
    const int64_t t0 = (int64_t)blockIdx.x * nw;
    const bool lead = p.tile0 + t0 < p.tile_end && locate_rows<true, 1>(p, rt0, t0);
    const bool active = w == 0 ? lead
                               : p.tile0 + t0 + w < p.tile_end && locate_rows<true, 1>(p, rt, t0 + w);
    if (!active && !lead) { /* no rows, nor warp 0's tile to take: nothing is shared */
        slc_share(p, false, rt0, KeySrc{}, 0, sh);
        return;
    }
    if (w == 0 || !active) rt = rt0;
    slc_with_stages<T, DK, DV, NS>(p, rt, maps, [&](const KeySrc &src, const auto &st) {
        slc_share(p, active, rt, src, rt0.t_first, sh);
        body(rt, active, src, sh, st);
    });
}

/* mode: M_FWD (gated into the output), M_STAGE (this branch's O and lse
   alone, fp32, for nsa_cuda_attend_slc) or M_PREP (the backward's Delta
   and dg from the recomputed O, store_delta). */
template <typename T, int DK, int DV, int NS>
__global__ void __launch_bounds__(32 * NSA_SLC_WARPS)
    slc_fwd_kernel(Params p, int mode, const __grid_constant__ KvMaps maps)
{
    slc_cta<T, DK, DV, NS>(p, maps, [&](const RowTile &rt, bool active, const KeySrc &src,
                                        const SlcShare &sh, const auto &st) {
        slc_fwd_body<T, DK, DV, NS>(p, mode, rt, active, src, sh, st);
    });
}

/* The backward's dQ of the selected branch, into the fp32 accumulator or
   the output as store_dq decides: a CTA is one warp. Shared rounds
   (slc_cta) measured slower here: the dQ chunks' longer chain of steps left
   the warps of a round waiting (bench/RESULTS.md). */
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
