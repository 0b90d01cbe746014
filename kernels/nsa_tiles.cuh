/* kernels/nsa_tiles.cuh -- what every attention and selection kernel shares:
   the kernel parameters, which (token, head) rows a CTA owns, and which keys
   each branch walks for them (contract, "Branches"). */
#ifndef NSA_KERNELS_TILES_CUH
#define NSA_KERNELS_TILES_CUH

#include "nsa_common.cuh"

namespace nsak {

enum { BR_CMP = 0, BR_SLC = 1, BR_WIN = 2 };

/* Which part of the gated sum o = sum over the branches of g_c o_c
   (contract, "Gates") a forward or dQ launch computes: the host runs the
   branches in one or two passes, and each pass's epilogue starts from and
   ends in one of two places. */
enum Epilogue {
    EPI_ONLY = 0,  /* the one pass: the output in the storage type                  */
    EPI_FIRST = 1, /* the first of two: its sums into the fp32 accumulator (acc)    */
    EPI_LAST = 2   /* the second: the accumulator's sums plus its own, the output */
};
/* whether the pass adds the sums an earlier pass left in the accumulator */
__host__ __device__ inline bool epi_adds_earlier(Epilogue e) { return e == EPI_LAST; }
/* whether the pass's last branch writes the output (else the accumulator) */
__host__ __device__ inline bool epi_writes_out(Epilogue e) { return e != EPI_FIRST; }

struct Params {
    int B, H, Hkv, G;
    int l, d, lp, n, n_init, n_local, w, bq, probs;
    float sc, sl2, gate_default;
    const int32_t *cuk, *cuq;
    const int64_t *pf[PF_COUNT];
    const void *q, *k, *v;
    int64_t qst, qsh, kst, ksh, vst, vsh;
    const void *kc, *vc;
    const void *gates;
    const int32_t *sel_idx, *sel_cnt;
    const void *dout;
    float *lse[3];
    /* per kv head, the largest |k|^2 of the compressed keys
       (kcmp_norm2_kernel), or NULL: the selection sweep's bound on its
       exponents (sel_flush_free) */
    const float *kcn2;
    float *ostage;
    float *obr[3];  /* M_FWD: each branch's o_c, fp32 (nsa_saved.o_branch), or NULL */
    /* the fp32 sums that passes hand on (epi) for flattened (token, head)
       rows [acc_row0, acc_row0 + rows of the launch), row acc_row0 first
       (acc_at) */
    float *acc;
    int64_t acc_row0;
    void *out;
    Epilogue epi;
    /* the launch's tiles of its kind (row tiles, unit tiles, or the
       selection kernel's unit groups): [tile0, tile_end); CTA or warp i
       takes tile tile0 + i (locate_rows) */
    int64_t tile0, tile_end;
    float *delta[3];
    void *dgates;
    float *dk_acc, *dv_acc, *dkc_acc, *dvc_acc;
    /* the key-centric launch's kv heads [kv_h0, kv_h0 + kv_hn): the rows
       of its accumulators, the compressed ones too (kv_acc_row) */
    int kv_h0, kv_hn;
    const int32_t *tr_start, *tr_units;
    int64_t nsel_tot;
    /* select_sweep_kernel's output */
    int32_t *sel_out_idx, *sel_out_cnt;
};

/* The rows of a row-centric CTA: flattened row f in [fbase, fmax) of a
   segment maps to query tok_off + f / G, head g = f % G. */
struct RowTile {
    int b, nq, nk, pos0;
    int64_t q0;          /* global index of the sequence's first query */
    int64_t fbase, fmax;
    int tok_off;
    int t_first, t_last; /* positions of the tile's first and last query */
    int unit;            /* slc: unit within the sequence */
};

/* The rows of the launch's row tile `tile` (a CTA's blockIdx.x, or a
   persistent CTA's current tile), p.tile0 + tile of the batch; false past
   the sequence's last row. A launch of more than its tiles checks
   p.tile_end itself (slc_cta): here it would cost the selection sweep a
   spill. */
template <bool SLC, int NW>
__device__ inline bool locate_rows(const Params &p, RowTile &r, int64_t tile)
{
    tile += p.tile0;
    static_assert(SLC || NW == NSA_ROW_WARPS || NW == NSA_CW_WARPS,
                  "row tiles of NSA_ROWS or NSA_CW_ROWS rows");
    if (!SLC) {
        /* NSA_ROWS-row tiles, or the compressed and window forward's */
        const int64_t *pf = p.pf[NW == NSA_ROW_WARPS ? PF_ROWT : PF_CWT];
        r.b = find_seq(pf, p.B, tile);
        r.fbase = (tile - pf[r.b]) * (NW * 16);
        r.tok_off = 0;
        r.unit = 0;
    } else {
        r.b = find_seq(p.pf[PF_UNITT], p.B, tile);
        int64_t ti = tile - p.pf[PF_UNITT][r.b];
        int64_t tpu = cdiv64((int64_t)p.bq * p.G, 16);
        r.unit = (int)(ti / tpu);
        r.fbase = (ti % tpu) * 16;
        r.tok_off = r.unit * p.bq;
    }
    int64_t qs = p.cuq[r.b], ks = p.cuk[r.b];
    r.nq = (int)(p.cuq[r.b + 1] - qs);
    r.nk = (int)(p.cuk[r.b + 1] - ks);
    r.pos0 = r.nk - r.nq;
    r.q0 = qs;
    if (!SLC) r.fmax = (int64_t)r.nq * p.G;
    else r.fmax = (int64_t)min(p.bq, r.nq - r.tok_off) * p.G;
    if (r.fbase >= r.fmax) return false;
    int64_t flast = min(r.fbase + NW * 16, r.fmax) - 1;
    r.t_first = r.pos0 + r.tok_off + (int)(r.fbase / p.G);
    r.t_last = r.pos0 + r.tok_off + (int)(flast / p.G);
    return true;
}
template <bool SLC, int NW>
__device__ inline bool locate_rows(const Params &p, RowTile &r)
{
    return locate_rows<SLC, NW>(p, r, blockIdx.x);
}

/* Tile row r's row of a per-(token, head) tensor at base (token stride st,
   head stride sh): query tok_off + (fbase + r) / G, head hkv*G +
   (fbase + r) % G; NULL past fmax (staged as zeros). */
template <typename T>
__device__ inline const T *tile_row(const RowTile &rt, int hkv, int G, int r, const T *base,
                                    int64_t st, int64_t sh)
{
    const int64_t f = rt.fbase + r;
    if (f >= rt.fmax) return nullptr;
    const int tok = rt.tok_off + (int)(f / G), g = (int)(f % G);
    return base + (rt.q0 + tok) * st + (int64_t)(hkv * G + g) * sh;
}

/* Stages the tile's Q rows into Qs (row stride LDK) and waits for them
   (tile_row; rows past fmax are zeros). The caller synchronises its
   threads after. */
template <int DK, int LDK, typename T>
__device__ inline void stage_q_rows(const Params &p, const RowTile &rt, int hkv, int G, T *Qs,
                                    int rows, int tid, int nthreads)
{
    stage_rows<DK, LDK>(Qs, rows, [&](int r) {
        return tile_row(rt, hkv, G, r, (const T *)p.q, p.qst, p.qsh); }, tid, nthreads);
    cp_commit();
    cp_wait<0>();
}

/* Key chunks of a branch for a row tile. */
struct KeySrc {
    int br;
    int lo, hi;          /* cmp / win: key range [lo, hi)             */
    const int32_t *idx;  /* slc: the unit's block list                */
    int cnt, nsel, cpb;  /* slc: entries, blocks in sequence, chunks per block */
    int cpb_log2;        /* slc: log2(cpb) when cpb is a power of two, else -1 */
    int lp, nk, t_last;
    int kn;              /* cmp / win: keys per chunk (NSA_KN unless set) */
    __device__ inline int nchunks() const
    {
        if (br == BR_SLC) return cnt * cpb;
        return hi > lo ? (hi - lo + kn - 1) / kn : 0;
    }
    __device__ inline int chunk(int c, int &s0) const
    {
        if (br != BR_SLC) {
            s0 = lo + c * kn;
            return min(kn, hi - s0);
        }
        int e, sub;
        split(c, e, sub);
        return block_chunk(__ldg(idx + e), sub, s0);
    }
    /* slc: chunk c of a list is chunk sub of its entry e; a shift where it
       can be: this runs once a chunk, twice in the pipelined kernels, and an
       integer division costs ~20 instructions */
    __device__ inline void split(int c, int &e, int &sub) const
    {
        e = cpb_log2 >= 0 ? c >> cpb_log2 : c / cpb;
        sub = c - e * cpb;
    }
    /* slc: chunk sub of selection block j, its keys up to t_last; none for
       an index outside the sequence's blocks */
    __device__ inline int block_chunk(int j, int sub, int &s0) const
    {
        if (j < 0 || j >= nsel) { s0 = 0; return 0; }
        s0 = j * lp + sub * NSA_KN;
        int end = min(min(j * lp + lp, nk), t_last + 1);
        return max(0, min(NSA_KN, end - s0));
    }
};

__device__ inline bool visible(const Params &p, int br, int t, int s)
{
    if (br == BR_CMP) return nsa_cmp_visible(s, t, p.l, p.d);
    if (br == BR_WIN) return s <= t && s > t - p.w;
    return s <= t;
}

/* The positions that see key s of branch br: visible(p, br, t, s) iff
   lo <= t <= hi, for t >= 0 (positions stay below INT_MAX). */
__device__ inline void visible_range(const Params &p, int br, int s, int &lo, int &hi)
{
    const int64_t a = br == BR_CMP ? nsa_cmp_first_query(s, p.l, p.d) : (int64_t)s;
    const int64_t b = br == BR_WIN ? (int64_t)s + p.w - 1 : (int64_t)INT_MAX;
    lo = (int)min(a, (int64_t)INT_MAX);
    hi = (int)min(b, (int64_t)INT_MAX);
}

template <typename T>
__device__ inline float gate_of(const Params &p, int64_t row, int c)
{
    if (!p.gates) return p.gate_default;
    return Ty<T>::to_f(((const T *)p.gates)[row * 3 + c]);
}

/* Build the key source of branch br for row tile rt, kv head hkv. */
template <typename T>
__device__ inline KeySrc make_src(const Params &p, int br, const RowTile &rt, int hkv,
                                  const T *&kb, const T *&vb, int64_t &kst,
                                  int64_t &vst, int DK, int DV)
{
    KeySrc s;
    s.br = br;
    s.kn = NSA_KN;
    s.lp = p.lp;
    s.nk = rt.nk;
    s.t_last = rt.t_last;
    s.idx = nullptr;
    s.cnt = s.nsel = s.cpb = 0;
    s.cpb_log2 = -1;
    s.lo = s.hi = 0;
    if (br == BR_CMP) {
        int64_t nc = nsa_cmp_blocks(rt.nk, p.l, p.d);
        s.lo = 0;
        s.hi = rt.t_last >= p.l - 1 ? (int)min(nc, (int64_t)((rt.t_last - p.l + 1) / p.d + 1)) : 0;
        int64_t c0 = p.pf[PF_CMP][rt.b];
        kb = (const T *)p.kc + (c0 * p.Hkv + hkv) * DK;
        vb = (const T *)p.vc + (c0 * p.Hkv + hkv) * DV;
        kst = (int64_t)p.Hkv * DK;
        vst = (int64_t)p.Hkv * DV;
    } else {
        int64_t ks = p.cuk[rt.b];
        kb = (const T *)p.k + ks * p.kst + hkv * p.ksh;
        vb = (const T *)p.v + ks * p.vst + hkv * p.vsh;
        kst = p.kst;
        vst = p.vst;
        if (br == BR_WIN) {
            s.lo = max(0, rt.t_first - p.w + 1);
            s.hi = rt.t_last + 1;
        } else {
            int64_t ug = p.pf[PF_UNIT][rt.b] + rt.unit;
            s.idx = p.sel_idx + (ug * p.Hkv + hkv) * p.n;
            s.cnt = min(max(__ldg(p.sel_cnt + ug * p.Hkv + hkv), 0), p.n);
            s.nsel = (int)nsa_slc_blocks(rt.nk, p.lp);
            s.cpb = (p.lp + NSA_KN - 1) / NSA_KN;
            if ((s.cpb & (s.cpb - 1)) == 0) s.cpb_log2 = __ffs(s.cpb) - 1;
        }
    }
    return s;
}


} /* namespace nsak */

#endif
