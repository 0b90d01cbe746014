/* nsa_cuda.h -- Native Sparse Attention on NVIDIA GPUs (CUDA).

   The CUDA implementation of the API in nsa.h: the same functions as the
   CPU reference (nsa_ref.h), prefixed nsa_cuda_, on device pointers, with a
   stream and a caller-owned workspace.

   USING IT
     Declarations are plain C (no CUDA syntax): any C or C++ file may include
     this header and call the functions. The definitions are compiled once,
     by nvcc, from one .cu file:
         #define NSA_CUDA_IMPLEMENTATION  // with nsa.h's shared part
         #include "nsa_cuda.h"
     (if another file of the program defines NSA_REF_IMPLEMENTATION, one of
     the two also defines NSA_SHARED_IN_OTHER_FILE; see nsa.h, "USING IT")
     and the program links that object and the CUDA runtime (-lcudart).
     examples/cuda_example.c (gcc) + examples/nsa_cuda.cu (nvcc) show it.
     Build for sm_80 and up; sm_90a is the Hopper target:
         nvcc -std=c++17 -O3 -gencode=arch=compute_80,code=sm_80
              -gencode=arch=compute_90a,code=sm_90a -c nsa_cuda.cu

   CONVENTIONS (beyond nsa.h's)
     - Tensor pointers are device pointers. batch.cu_seqlens and
       batch.cu_seqlens_q (host) are used for validation and to size the
       launches; batch.cu_seqlens_dev and batch.cu_seqlens_q_dev (device
       copies of the same arrays) are what the kernels read.
     - Every call validates on the host first (nsa__validate and the same
       NULL / workspace rules as nsa_ref_*), then only enqueues work on
       `stream`: no host-device synchronisation and no allocation inside any
       call, so a sequence of calls can be captured into a CUDA graph.
       Errors of the launches come back as NSA_ERR_DEVICE with the CUDA
       error string; errors of the kernels themselves surface at the
       caller's next synchronisation.
     - One workspace size (nsa_cuda_workspace_size) serves every entry point
       for a config and batch.
     - Supported: storage bf16 and fp16; head dims (Dk, Dv) in {(64, 64),
       (128, 128), (192, 128)}; fp32 accumulation. fp32 storage, other head
       dims and NSA_ACCUM_FP64 return NSA_ERR_UNSUPPORTED. Q, K, V, K_cmp,
       V_cmp must be 16-byte aligned with strides that are multiples of 8
       elements (NSA_ERR_UNSUPPORTED otherwise).
     - Backward is deterministic in every mode (bitwise-reproducible: no
       float atomics; the selected branch's dK / dV walk the transposed
       selection in a fixed order); cfg.deterministic = 0 takes the same path.

   STAGE FUNCTIONS take a workspace too (the kernels find their sequence
   through prefix arrays built there on the device).

   LICENSE: MIT. */
#ifndef NSA_CUDA_H
#define NSA_CUDA_H

#include "nsa.h"

/* Same type as cudaStream_t; NULL is the legacy default stream. */
typedef struct CUstream_st *nsa_cuda_stream;

NSADEF nsa_status nsa_cuda_workspace_size(const nsa_config *cfg,
                                          const nsa_batch *batch, size_t *bytes);

NSADEF nsa_status nsa_cuda_forward(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, void *o, nsa_saved *saved,
                                   void *workspace, size_t workspace_bytes,
                                   nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_backward(const nsa_config *cfg, const nsa_batch *batch,
                                    const void *gates, const void *d_o,
                                    const nsa_saved *saved, nsa_grads *grads,
                                    void *workspace, size_t workspace_bytes,
                                    nsa_cuda_stream stream);

NSADEF nsa_status nsa_cuda_compress(const nsa_config *cfg, const nsa_batch *batch,
                                    void *k_cmp, void *v_cmp, void *workspace,
                                    size_t workspace_bytes, nsa_cuda_stream stream);
/* nsa_ref_compress_append on the GPU: the blocks completed since each
   sequence held seqlens_old[b] keys (host, for validation and the launch
   size; seqlens_old_dev: its device copy, which the kernel reads). */
NSADEF nsa_status nsa_cuda_compress_append(const nsa_config *cfg, const nsa_batch *batch,
                                           const int32_t *seqlens_old,
                                           const int32_t *seqlens_old_dev, void *k_cmp,
                                           void *v_cmp, void *workspace,
                                           size_t workspace_bytes, nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_block_scores(const nsa_config *cfg,
                                        const nsa_batch *batch, const void *k_cmp,
                                        float *block_scores, void *workspace,
                                        size_t workspace_bytes,
                                        nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_select(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *k_cmp, int32_t *sel_idx,
                                  int32_t *sel_count, void *workspace,
                                  size_t workspace_bytes, nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_block_mask(const nsa_config *cfg,
                                      const nsa_batch *batch,
                                      const int32_t *sel_idx,
                                      const int32_t *sel_count,
                                      uint8_t *block_mask, void *workspace,
                                      size_t workspace_bytes,
                                      nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_attend_cmp(const nsa_config *cfg,
                                      const nsa_batch *batch, const void *k_cmp,
                                      const void *v_cmp, float *o_cmp,
                                      float *lse_cmp, void *workspace,
                                      size_t workspace_bytes,
                                      nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_attend_slc(const nsa_config *cfg,
                                      const nsa_batch *batch,
                                      const int32_t *sel_idx,
                                      const int32_t *sel_count, float *o_slc,
                                      float *lse_slc, void *workspace,
                                      size_t workspace_bytes,
                                      nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_attend_win(const nsa_config *cfg,
                                      const nsa_batch *batch, float *o_win,
                                      float *lse_win, void *workspace,
                                      size_t workspace_bytes,
                                      nsa_cuda_stream stream);
NSADEF nsa_status nsa_cuda_combine(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, const float *o_cmp,
                                   const float *o_slc, const float *o_win,
                                   void *o, nsa_cuda_stream stream);

/* nsa_cuda_backward with dK and dV left unrounded: grads->dk and grads->dv
   are float [T, Hkv, Dk] and [T, Hkv, Dv]; every other gradient as there.
   For callers that add partial gradients of several calls and round once
   (context parallelism, nsa_cp.h): rounding each partial first would add
   one rounding error per partial. */
NSADEF nsa_status nsa_cuda_backward_f32kv(const nsa_config *cfg,
                                          const nsa_batch *batch, const void *gates,
                                          const void *d_o, const nsa_saved *saved,
                                          nsa_grads *grads, void *workspace,
                                          size_t workspace_bytes,
                                          nsa_cuda_stream stream);

/* Top-k per row of fp32 scores, as nsa_ref_topk_rows (k <= 4096 here).
   The workspace (nsa_cuda_topk_workspace_size: 0 bytes when the rows are
   many, and then it may be NULL; up to 256 KB a row when they are few and
   long) must be 16-byte aligned (as cudaMalloc gives) and is the call's
   until the stream has run it. */
NSADEF nsa_status nsa_cuda_topk_workspace_size(int64_t rows, int64_t cols, int k,
                                               size_t *bytes);
NSADEF nsa_status nsa_cuda_topk_rows(const float *scores, int64_t rows,
                                     int64_t cols, int64_t row_stride,
                                     const int32_t *row_start,
                                     const int32_t *row_end, int k,
                                     int32_t *out_idx, int32_t *out_count,
                                     void *workspace, size_t workspace_bytes,
                                     nsa_cuda_stream stream);

/* Top-n blocks per row as a 0/1 mask, as nsa_ref_topk_blocks: the same
   mask bytes and counts, bit for bit (each block's mean is the same fp32
   sum in ascending column order, divided once; the same ranking). Any n
   (not capped as k is above). The workspace, of the size that
   nsa_cuda_topk_blocks_workspace_size gives (rows * ceil(cols / block)
   fp32 block scores; 0 bytes when n is 0 or at least the number of
   blocks, and then it may be NULL), must be 16-byte aligned (as cudaMalloc
   gives) and is the call's until the stream has run it. Bad input gives
   the reference's status; rows above 2^31 - 1 give NSA_ERR_UNSUPPORTED. */
NSADEF nsa_status nsa_cuda_topk_blocks_workspace_size(int64_t rows, int64_t cols,
                                                      int64_t block, int n,
                                                      size_t *bytes);
NSADEF nsa_status nsa_cuda_topk_blocks(const float *scores, int64_t rows,
                                       int64_t cols, int64_t row_stride,
                                       const int32_t *row_start,
                                       const int32_t *row_end, int64_t block,
                                       int n, uint8_t *mask, int32_t *out_count,
                                       void *workspace, size_t workspace_bytes,
                                       nsa_cuda_stream stream);

#endif /* NSA_CUDA_H */

/* ======================================================================== */
#ifdef NSA_CUDA_IMPLEMENTATION
#ifndef NSA_CUDA_IMPLEMENTATION_DONE
#define NSA_CUDA_IMPLEMENTATION_DONE

#ifndef __CUDACC__
#error "NSA_CUDA_IMPLEMENTATION must be compiled by nvcc (a .cu file)"
#endif
/* nsa.h's shared part, which this macro implies (see nsa.h, "USING IT"). */
#include "nsa.h"

#include <cuda.h> /* CUtensorMap (the driver's encoder comes through the runtime) */
#include <cudaTypedefs.h>
#include <cuda_runtime.h>
#include <cub/device/device_radix_sort.cuh>
#include <string.h>

#include "kernels/nsa_common.cuh"
#include "kernels/nsa_attn.cuh"
#include "kernels/nsa_attn_sm90.cuh"
#include "kernels/nsa_select_sm90.cuh"
#include "kernels/nsa_select.cuh"
#include "kernels/nsa_slc.cuh"
#include "kernels/nsa_topk.cuh"
#include "kernels/nsa_decode.cuh"

namespace nsak {
/* fp32 "storage" for the unrounded dK, dV of nsa_cuda_backward_f32kv */
template <> struct Ty<float> {
    static __device__ inline float from_f(float x) { return x; }
};
} /* namespace nsak */

namespace nsah {

using nsak::PF_COUNT;

#define NSA__CK(call)                                                          \
    do {                                                                       \
        cudaError_t e_ = (call);                                               \
        if (e_ != cudaSuccess)                                                 \
            return nsa__fail(NSA_ERR_DEVICE, "CUDA: %s (%s:%d)",               \
                             cudaGetErrorString(e_), __FILE__, __LINE__);      \
    } while (0)
#define NSA__LAUNCHED() NSA__CK(cudaGetLastError())

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

/* Everything a call needs to know on the host. */
struct Plan {
    nsa_sizes sz;
    nsak::Shape shape;
    int B, H, Hkv, G, Dk, Dv;
    nsa_dtype dt;
    unsigned br;
    int64_t tot[PF_COUNT + 1]; /* totals of the prefix arrays (+ unit groups) */
    int64_t nc_max, nsel_max, nsel_tot;
    int64_t qst, qsh, kst, ksh, vst, vsh;
    /* workspace regions (byte offsets) */
    size_t o_pf, o_acc, o_delta, o_dk, o_dv, o_dkc, o_dvc, o_trk, o_trk2, o_trv,
        o_trv2, o_trs, o_cub, o_sel, o_kcn, o_kvseg[3], o_part, total;
    size_t cub_bytes;
    int64_t tr_n, sel_ctas, slot_stride;
    /* key-centric backward per branch (nsak::BR_*): tiles per kv head, a
       bound on the row chunks (NSA_KV_ROWS rows) of all tiles, chunks per
       segment and a bound on the segments beyond each tile's first
       (kernels/nsa_attn.cuh) */
    int64_t kv_tiles[3], kv_chunks[3], kv_seg_len[3], kv_extra[3];
    int64_t kv_cmp_nch; /* a bound on one compressed tile's chunks */
    /* the row passes' fp32 accumulator: queries it holds at once, and the
       step (tokens) a sequence is cut at when it holds less than one
       (section "query ranges") */
    int64_t acc_tok, acc_step;
    int kv_heads; /* kv heads the dK, dV accumulators hold at once (run_kv) */
    nsak::Decode dec; /* the decode path's slots and workspace (section "decoding") */
};

/* Decoding (section "decoding" below): the plan's decode part, appended to
   the workspace at offset o, and the forward's decode path. */
static void decode_plan(const nsa_config *cfg, const nsa_batch *x, Plan &P, size_t &o);
template <typename T, int DK, int DV>
static nsa_status run_decode(const nsa_config *cfg, const Plan &P, nsak::Params &p,
                             nsa_saved *sv, void *ws, cudaStream_t s);

/* Partial slots of the key-centric backward: a branch's chunks are cut so
   that at most this many segments beyond the tiles' first ones exist;
   segments hold at least NSA_KV_SEG_MIN chunks. */
#define NSA_KV_PARTS 4096
/* Flattened (token, head) rows the row passes' fp32 accumulator (the
   gated sums that one pass hands the next, forward and dQ) holds: a batch
   with more query rows runs those passes a range of queries at a time
   (section "query ranges"), so that the workspace stops growing with T
   (2M rows: 1 GiB at Dv = 128; 32K tokens at H = 64, 64K at H = 32). The
   ranges are of one length rounded up to a step of queries, so the
   accumulator may hold up to a step more than this. */
#ifndef NSA_ACC_ROWS
#define NSA_ACC_ROWS ((int64_t)1 << 21)
#endif
/* (Key, kv head) rows the fp32 dK, dV accumulators hold: a batch with more
   runs the key-centric passes and the finishing step a range of kv heads
   at a time (at least one head; 1M rows: 1 GiB at Dk = Dv = 128, one of
   1M tokens' eight heads). With NSA_ACC_ROWS this keeps the workspace of
   a 1M-token batch (H = 32, Hkv = 8, D = 128) within 2 GiB. */
#ifndef NSA_KV_ACC_ROWS
#define NSA_KV_ACC_ROWS ((int64_t)1 << 20)
#endif
#define NSA_KV_SEG_MIN 32
#ifndef NSA_KV_SPARSE
#define NSA_KV_SPARSE 4
#endif

static bool head_dims_ok(int dk, int dv)
{
    return (dk == 64 && dv == 64) || (dk == 128 && dv == 128) || (dk == 192 && dv == 128);
}

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

/* The saved buffers this path copies 16 bytes at a time (forward and
   backward alike). */
static nsa_status check_saved_aligned(const nsa_saved *saved)
{
    if (!aligned16(saved->k_cmp) || !aligned16(saved->v_cmp) || !aligned16(saved->o_branch))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "saved.k_cmp, v_cmp, o_branch: must be "
                         "16-byte aligned on the CUDA path");
    return NSA_OK;
}

/* The step (tokens) at which query ranges cut a sequence (section "query
   ranges"): whole row tiles (NSA_ROWS flattened rows, and the compressed
   and window forward's NSA_CW_ROWS) and whole groups of four selection
   units (the selection kernel's), and so whole unit tiles: lcm(4 bq,
   NSA_ROWS, NSA_CW_ROWS). */
static int64_t lcm64(int64_t a, int64_t b)
{
    int64_t x = a, y = b;
    while (y) {
        const int64_t r = x % y;
        x = y;
        y = r;
    }
    return a / x * b;
}
static int64_t query_step(int bq)
{
    return lcm64(lcm64(4 * (int64_t)bq, NSA_ROWS), NSA_CW_ROWS);
}

/* pointers: check the batch's data and device pointers too (the calls
   that run); the size function reads the shapes only. */
static nsa_status plan_make(const nsa_config *cfg, const nsa_batch *x, Plan &P,
                            bool pointers = true)
{
    nsa_status st = pointers ? nsa__validate(cfg, x, &P.sz) : nsa_sizes_get(cfg, x, &P.sz);
    if (st != NSA_OK) return st;
    if (cfg->accum != NSA_ACCUM_FP32)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "cfg.accum: the CUDA path accumulates "
                         "in fp32 only (NSA_ACCUM_FP64 is the reference's)");
    if (x->dtype == NSA_FP32)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.dtype: the CUDA path supports "
                         "bf16 and fp16 storage (fp32 is the reference's)");
    if (!head_dims_ok(x->Dk, x->Dv))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.Dk, batch.Dv: (%d, %d) is not "
                         "supported by the CUDA path; supported: (64, 64), "
                         "(128, 128), (192, 128)", x->Dk, x->Dv);
    if (pointers && x->B > 0 && !x->cu_seqlens_dev)
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.cu_seqlens_dev: is NULL "
                         "(the CUDA path reads the device copy)");
    if (pointers && x->cu_seqlens_q && !x->cu_seqlens_q_dev)
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.cu_seqlens_q_dev: is NULL "
                         "while batch.cu_seqlens_q is set");
    P.B = x->B;
    P.H = x->H;
    P.Hkv = x->Hkv;
    P.G = x->H / x->Hkv;
    P.Dk = x->Dk;
    P.Dv = x->Dv;
    P.dt = x->dtype;
    P.br = cfg->branches;
    const bool use_cb = (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    const bool slc = (cfg->branches & NSA_BRANCH_SLC) != 0;
    P.shape.G = P.G;
    P.shape.l = use_cb ? cfg->l : 1;
    P.shape.d = use_cb ? cfg->d : 1;
    P.shape.lp = slc ? cfg->lp : 1;
    P.shape.n = slc ? cfg->n : 1;
    P.shape.bq = slc ? cfg->bq : 1;
    /* strides as the validator resolved them (nsa_token_stride, nsa_head_stride) */
    P.qst = P.sz.q_stride_token;
    P.qsh = P.sz.q_stride_head;
    P.kst = P.sz.k_stride_token;
    P.ksh = P.sz.k_stride_head;
    P.vst = P.sz.v_stride_token;
    P.vsh = P.sz.v_stride_head;
    if (!aligned16(x->q) || !aligned16(x->k) || !aligned16(x->v) ||
        (P.qst | P.qsh | P.kst | P.ksh | P.vst | P.vsh) % 8 != 0 ||
        !aligned16(x->k_cmp) || !aligned16(x->v_cmp))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.q, k, v, k_cmp, v_cmp: the CUDA"
                         " path needs 16-byte aligned pointers and strides that"
                         " are multiples of 8 elements");
    for (int i = 0; i <= PF_COUNT; ++i) P.tot[i] = 0;
    P.nc_max = P.nsel_max = P.kv_cmp_nch = 0;
    int64_t cmp_chunks = 0; /* compressed tiles x the row chunks of their sequence */
    for (int b = 0; b < x->B; ++b) {
        int64_t nk = x->cu_seqlens[b + 1] - x->cu_seqlens[b];
        int64_t nq = x->cu_seqlens_q ? x->cu_seqlens_q[b + 1] - x->cu_seqlens_q[b] : nk;
        int64_t v[PF_COUNT];
        nsak::seq_counts(nq, nk, P.shape, v);
        for (int i = 0; i < PF_COUNT; ++i) P.tot[i] += v[i];
        P.tot[PF_COUNT] += nsak::cdiv64(v[nsak::PF_UNIT], 4);
        if (v[nsak::PF_CMP] > P.nc_max) P.nc_max = v[nsak::PF_CMP];
        if (v[nsak::PF_SLC] > P.nsel_max) P.nsel_max = v[nsak::PF_SLC];
        cmp_chunks += v[nsak::PF_CMPT] * nsak::cdiv64(nq * P.G, NSA_KV_ROWS);
        if (v[nsak::PF_CMPT] > 0 && nsak::cdiv64(nq * P.G, NSA_KV_ROWS) > P.kv_cmp_nch)
            P.kv_cmp_nch = nsak::cdiv64(nq * P.G, NSA_KV_ROWS);
    }
    P.nsel_tot = P.tot[nsak::PF_SLC];
    const int64_t TQ = P.sz.TQ, T = P.sz.T, Tc = P.sz.Tc;
    const int Dm = x->Dk > x->Dv ? x->Dk : x->Dv;
    {
        const int64_t heads = T > 0 ? NSA_KV_ACC_ROWS / T : x->Hkv;
        P.kv_heads = heads < 1 ? 1 : heads > x->Hkv ? x->Hkv : (int)heads;
    }
    /* the transposed selection, built for the kv heads of one range of the
       key-centric phase at a time (Plan::kv_heads of them) */
    P.tr_n = slc ? P.sz.units * P.kv_heads * (int64_t)(cfg->n) : 0;
    if (P.tr_n > INT32_MAX || (slc && (int64_t)x->Hkv * P.nsel_tot + 1 > INT32_MAX))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch: units*%d*n = %lld selection "
                         "entries exceed the CUDA path's 2^31 limit", P.kv_heads,
                         (long long)P.tr_n);
    P.cub_bytes = 0;
    if (P.tr_n > 0) {
        cub::DoubleBuffer<uint32_t> keys(NULL, NULL);
        cub::DoubleBuffer<int32_t> units(NULL, NULL);
        cudaError_t e = cub::DeviceRadixSort::SortPairs((void *)NULL, P.cub_bytes, keys, units,
                                                        (int)P.tr_n, 0, 32, (cudaStream_t)0);
        if (e != cudaSuccess)
            return nsa__fail(NSA_ERR_DEVICE, "CUDA: %s", cudaGetErrorString(e));
    }
    P.sel_ctas = slc ? (P.tot[PF_COUNT] * x->Hkv < NSA_SEL_SLOTS_CTA
                            ? P.tot[PF_COUNT] * x->Hkv : NSA_SEL_SLOTS_CTA) : 0;
    P.slot_stride = (P.nc_max + P.nsel_max + 3) & ~(int64_t)3;
    {
        const int64_t subt = nsak::cdiv64(P.shape.lp, 64);
        const int64_t tpu = nsak::cdiv64((int64_t)P.shape.bq * P.G, 16);
        P.kv_tiles[nsak::BR_CMP] = P.tot[nsak::PF_CMPT];
        P.kv_tiles[nsak::BR_SLC] = P.nsel_tot * subt;
        P.kv_tiles[nsak::BR_WIN] = P.tot[nsak::PF_KEYT];
        P.kv_chunks[nsak::BR_CMP] = cmp_chunks * x->Hkv;
        /* a tile's 16-row pieces, rounded up to whole chunks */
        const int64_t entries = slc ? P.sz.units * x->Hkv * (int64_t)cfg->n : 0;
        P.kv_chunks[nsak::BR_SLC] = nsak::cdiv64(entries * subt * tpu, NSA_KV_ROWS / 16) +
                                    P.kv_tiles[nsak::BR_SLC] * x->Hkv;
        P.kv_chunks[nsak::BR_WIN] = P.tot[nsak::PF_KEYT] * x->Hkv *
                                    nsak::cdiv64((int64_t)(63 + cfg->w) * P.G, NSA_KV_ROWS);
        const unsigned on[3] = {NSA_BRANCH_CMP, NSA_BRANCH_SLC, NSA_BRANCH_WIN};
        for (int i = 0; i < 3; ++i) {
            if (!(cfg->branches & on[i])) P.kv_tiles[i] = P.kv_chunks[i] = 0;
            int64_t len = nsak::cdiv64(P.kv_chunks[i], NSA_KV_PARTS);
            P.kv_seg_len[i] = len > NSA_KV_SEG_MIN ? len : NSA_KV_SEG_MIN;
            P.kv_extra[i] = P.kv_chunks[i] / P.kv_seg_len[i];
        }
    }
    size_t o = 0;
    P.o_pf = o; o = align256(o + (size_t)(PF_COUNT + 1) * (x->B + 1) * 8);
    {
        /* as many ranges as NSA_ACC_ROWS asks for, of one length rounded
           up to a step: a range rounded down instead would leave a last
           range of a few steps, and each range pays its passes' tails */
        P.acc_step = query_step(P.shape.bq);
        const int64_t fit = NSA_ACC_ROWS / x->H > 0 ? NSA_ACC_ROWS / x->H : 1;
        const int64_t ranges = TQ > fit ? nsak::cdiv64(TQ, fit) : 1;
        P.acc_tok = nsak::cdiv64(nsak::cdiv64(TQ, ranges), P.acc_step) * P.acc_step;
        if (P.acc_tok > TQ) P.acc_tok = TQ;
    }
    /* Regions over the same bytes where no call has them live together:
       the row passes' accumulator (the forward's, and the backward's dQ
       passes') or the backward's key-centric phase (the dK / dV
       accumulators, the transposed selection, the segments and partials),
       which starts once its dQ passes are done; after the accumulator, the
       forward's selection slots and decode regions (the forward and the
       stage functions); after both the accumulator and the key-centric
       regions, Delta, which both backward phases read. */
    const size_t o_either = o;
    P.o_dk = o; o = align256(o + (size_t)T * P.kv_heads * x->Dk * 4);
    P.o_dv = o; o = align256(o + (size_t)T * P.kv_heads * x->Dv * 4);
    P.o_dkc = o; o = align256(o + (size_t)Tc * P.kv_heads * x->Dk * 4);
    P.o_dvc = o; o = align256(o + (size_t)Tc * P.kv_heads * x->Dv * 4);
    P.o_trk = o; o = align256(o + (size_t)P.tr_n * 4);
    P.o_trk2 = o; o = align256(o + (size_t)P.tr_n * 4);
    P.o_trv = o; o = align256(o + (size_t)P.tr_n * 4);
    P.o_trv2 = o; o = align256(o + (size_t)P.tr_n * 4);
    P.o_trs = o; o = align256(o + (size_t)(slc ? x->Hkv * P.nsel_tot + 1 : 0) * 4);
    P.o_cub = o; o = align256(o + P.cub_bytes);
    int64_t parts = 0;
    for (int i = 0; i < 3; ++i) {
        P.o_kvseg[i] = o;
        o = align256(o + (size_t)(x->Hkv * P.kv_tiles[i] + 1) * 8);
        if (P.kv_extra[i] > parts) parts = P.kv_extra[i];
    }
    P.o_part = o; o = align256(o + (size_t)parts * 64 * (x->Dk + x->Dv) * 4);
    const size_t kv_end = o;
    o = o_either;
    P.o_acc = o; o = align256(o + (size_t)P.acc_tok * x->H * Dm * 4);
    const size_t acc_end = o;
    P.o_sel = o; o = align256(o + (size_t)P.sel_ctas * 4 * P.slot_stride * 4);
    P.o_kcn = o; o = align256(o + (size_t)x->Hkv * 4);
    decode_plan(cfg, x, P, o);
    const size_t fwd_end = o;
    o = acc_end > kv_end ? acc_end : kv_end;
    P.o_delta = o; o = align256(o + (size_t)3 * TQ * x->H * 4);
    P.total = o > fwd_end ? o : fwd_end;
    return NSA_OK;
}

static nsa_status check_ws(const Plan &P, const void *ws, size_t bytes)
{
    if (!ws)
        return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    if (bytes < P.total)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller than "
                         "the %zu this call needs (see nsa_cuda_workspace_size)",
                         bytes, P.total);
    return NSA_OK;
}

/* Kernel parameters common to every launch. */
static nsak::Params params(const nsa_config *cfg, const nsa_batch *x, const Plan &P,
                           void *ws)
{
    nsak::Params p;
    memset(&p, 0, sizeof p);
    p.B = x->B;
    p.H = x->H;
    p.Hkv = x->Hkv;
    p.G = P.G;
    p.l = P.shape.l;
    p.d = P.shape.d;
    p.lp = P.shape.lp;
    p.n = P.shape.n;
    p.n_init = cfg->n_init;
    p.n_local = cfg->n_local;
    p.w = cfg->w;
    p.bq = P.shape.bq;
    p.probs = cfg->score_mode == NSA_SCORE_PROBS;
    p.sc = (float)nsa_scale(cfg->scale, x->Dk);
    p.sl2 = p.sc * NSA_LOG2E;
    p.gate_default = nsa_default_gate(cfg->branches);
    p.cuk = x->cu_seqlens_dev;
    p.cuq = x->cu_seqlens_q_dev ? x->cu_seqlens_q_dev : x->cu_seqlens_dev;
    int64_t *pf = (int64_t *)((char *)ws + P.o_pf);
    for (int i = 0; i < PF_COUNT; ++i) p.pf[i] = pf + (int64_t)i * (x->B + 1);
    p.q = x->q;
    p.k = x->k;
    p.v = x->v;
    p.qst = P.qst; p.qsh = P.qsh;
    p.kst = P.kst; p.ksh = P.ksh;
    p.vst = P.vst; p.vsh = P.vsh;
    p.kc = x->k_cmp;
    p.vc = x->v_cmp;
    p.sel_idx = x->sel_idx;
    p.sel_cnt = x->sel_count;
    p.acc = (float *)((char *)ws + P.o_acc);
    /* every tile and kv head (acc_row0, tile0, kv_h0: 0) unless a range
       sets them */
    p.tile_end = INT64_MAX;
    p.kv_hn = x->Hkv;
    float *dl = (float *)((char *)ws + P.o_delta);
    for (int i = 0; i < 3; ++i) p.delta[i] = dl + (int64_t)i * P.sz.TQ * x->H;
    p.dk_acc = (float *)((char *)ws + P.o_dk);
    p.dv_acc = (float *)((char *)ws + P.o_dv);
    p.dkc_acc = (float *)((char *)ws + P.o_dkc);
    p.dvc_acc = (float *)((char *)ws + P.o_dvc);
    p.nsel_tot = P.nsel_tot;
    return p;
}

static int grid_for(int64_t n, int threads)
{
    int64_t g = (n + threads - 1) / threads;
    return (int)(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

/* Launches kernel chained to the kernel before it in the stream (section
   "chained launches" of kernels/nsa_common.cuh): where the binary that runs
   was built for sm_90 or later, with programmatic stream serialization, so
   that it launches while the one before finishes and waits in chain_wait;
   elsewhere a plain launch. Every CTA of such a kernel calls chain_wait. */
template <typename... KArgs, typename... Args>
static nsa_status launch_chained(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                 cudaStream_t s, Args... args)
{
    cudaFuncAttributes fa;
    NSA__CK(cudaFuncGetAttributes(&fa, kernel));
    cudaLaunchAttribute at;
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t lc = {};
    lc.gridDim = grid;
    lc.blockDim = block;
    lc.dynamicSmemBytes = smem;
    lc.stream = s;
    lc.attrs = &at;
    lc.numAttrs = fa.binaryVersion >= 90 ? 1 : 0;
    NSA__CK(cudaLaunchKernelEx(&lc, kernel, args...));
    return NSA_OK;
}

static nsa_status launch_meta(const Plan &P, const nsak::Params &p, void *ws,
                              cudaStream_t s)
{
    if (P.B == 0) return NSA_OK;
    /* chained: its launch overlaps the end of the caller's kernel before;
       one thread a sequence up to 1,024 (a decoding step of a few
       sequences runs one warp: every barrier and scan of a wider block is
       latency on its critical path), longer batches in chunks */
    const int threads = P.B + 1 < 1024 ? (int)((P.B + 1 + 31) / 32 * 32) : 1024;
    return launch_chained(nsak::meta_kernel, dim3(1), dim3(threads), 0, s, p.cuk, p.cuq, P.B,
                          P.shape, (int64_t *)((char *)ws + P.o_pf));
}

template <typename K>
static nsa_status set_smem(K kernel, size_t bytes)
{
    NSA__CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)bytes));
    return NSA_OK;
}

/* The driver's cuTensorMapEncodeTiled, reached through the runtime so that
   nothing links the driver library; NULL where the driver lacks it. */
static PFN_cuTensorMapEncodeTiled_v12000 encode_tiled()
{
    static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
        cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000,
                                                         cudaEnableDefault, &q);
#else
        cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &q);
#endif
        if (e != cudaSuccess) (void)cudaGetLastError(); /* ours, not the caller's */
        return e == cudaSuccess && q == cudaDriverEntryPointSuccess
                   ? (PFN_cuTensorMapEncodeTiled_v12000)f
                   : nullptr;
    }();
    return fn;
}

/* A [rows][heads][D] tensor of 2-byte elements (token stride st, head
   stride sh, in elements) as a 3-D map of 64-column x box_heads-head x
   box_rows-row boxes, 128-byte swizzle, zeros past the last row. False
   where the encoder refuses the strides. */
static bool tile_map(PFN_cuTensorMapEncodeTiled_v12000 enc, CUtensorMap *m, const void *base,
                     int64_t rows, int heads, int D, int64_t st, int64_t sh, int box_heads,
                     int box_rows)
{
    const cuuint64_t dims[3] = {(cuuint64_t)D, (cuuint64_t)heads, (cuuint64_t)rows};
    const cuuint64_t strides[2] = {(cuuint64_t)sh * 2, (cuuint64_t)st * 2};
    const cuuint32_t box[3] = {64, (cuuint32_t)box_heads, (cuuint32_t)box_rows};
    const cuuint32_t unit[3] = {1, 1, 1};
    return enc(m, CU_TENSOR_MAP_DATA_TYPE_UINT16, 3, const_cast<void *>(base), dims, strides, box,
               unit, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
               CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
           CUDA_SUCCESS;
}

/* K and V for the selected branch's gather through the copy engine
   (kernels/nsa_slc.cuh); ok = 0, and cp.async gathers instead, where
   the encoder is missing or refuses. */
static nsak::KvMaps kv_maps(const Plan &P, const nsak::Params &p)
{
    nsak::KvMaps m;
    memset(&m, 0, sizeof m);
    const PFN_cuTensorMapEncodeTiled_v12000 enc = encode_tiled();
    if (!enc || P.sz.T <= 0 || P.Dk % 64 != 0 || P.Dv % 64 != 0) return m;
    m.ok = tile_map(enc, &m.k, p.k, P.sz.T, P.Hkv, P.Dk, P.kst, P.ksh, 1, NSA_KN) &&
           tile_map(enc, &m.v, p.v, P.sz.T, P.Hkv, P.Dv, P.vst, P.vsh, 1, NSA_KN);
    return m;
}

/* K_cmp [Tc, Hkv, DK] (contiguous, as every reader of the compressed keys
   takes it: make_src in kernels/nsa_tiles.cuh) in boxes of NSA_WG_KN rows,
   for the selection sweep's chunks through the copy engine (maps.k only);
   ok = 0, and cp.async instead, where the encoder is missing or refuses. */
static nsak::KvMaps kcmp_map(const Plan &P, const nsak::Params &p, int DK)
{
    nsak::KvMaps m;
    memset(&m, 0, sizeof m);
    const PFN_cuTensorMapEncodeTiled_v12000 enc = encode_tiled();
    if (!enc || P.sz.Tc <= 0 || DK % 64 != 0) return m;
    m.ok = tile_map(enc, &m.k, p.kc, P.sz.Tc, P.Hkv, DK, (int64_t)P.Hkv * DK, DK, 1, NSA_WG_KN);
    return m;
}

/* Q [TQ, H, Dk] in boxes of one row tile (rows) of a kv head (nsak::QMap),
   for the producer of the compressed and window passes; ok = 0, and
   cp.async instead, where G does not divide the tile's rows or the encoder
   is missing or refuses. */
static nsak::QMap q_map(const Plan &P, const nsak::Params &p, int rows)
{
    nsak::QMap m;
    memset(&m, 0, sizeof m);
    const PFN_cuTensorMapEncodeTiled_v12000 enc = encode_tiled();
    if (!enc || P.sz.TQ <= 0 || P.Dk % 64 != 0 || rows % P.G != 0) return m;
    m.ok = tile_map(enc, &m.q, p.q, P.sz.TQ, P.H, P.Dk, P.qst, P.qsh, P.G, rows / P.G);
    return m;
}

/* ---- typed launchers ---------------------------------------------------- */

/* cw_fwd_kernel's block: its launch bound, which is rows (NW warps: the
   row kernel, a grid of row tiles x kv heads) or rows and a producer
   warpgroup (the warp-specialised kernel of sm_90a builds: a persistent
   grid, one CTA an SM, over `units` tiles). */
template <typename K>
static nsa_status cw_fwd_block(K kernel, int row_threads, int64_t units, int &threads, int &ctas)
{
    cudaFuncAttributes fa;
    NSA__CK(cudaFuncGetAttributes(&fa, kernel));
    threads = fa.maxThreadsPerBlock == row_threads + 128 ? row_threads + 128 : row_threads;
    ctas = 0;
    if (threads == row_threads) return NSA_OK;
    int dev = 0, sms = 0;
    NSA__CK(cudaGetDevice(&dev));
    NSA__CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    ctas = (int)(units < sms ? units : sms);
    return NSA_OK;
}

/* Warps of a selected-branch forward CTA: NSA_SLC_WARPS, or as many as the
   device's shared memory per block takes (smem(nw): the dynamic bytes of
   nw warps). */
template <typename K>
static nsa_status slc_cta_warps(K kernel, size_t (*smem)(int), int &nw)
{
    cudaFuncAttributes fa;
    NSA__CK(cudaFuncGetAttributes(&fa, kernel));
    int dev = 0, optin = 0;
    NSA__CK(cudaGetDevice(&dev));
    NSA__CK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    for (nw = NSA_SLC_WARPS; nw > 1 && smem(nw) + fa.sharedSizeBytes > (size_t)optin; --nw) {}
    return NSA_OK;
}

/* The tiles a launch takes of a kind the batch has `total` of: Params'
   tile0 to tile_end (all of them unless a query range set them). */
static int64_t launch_tiles(const nsak::Params &p, int64_t total)
{
    return (p.tile_end < total ? p.tile_end : total) - p.tile0;
}

/* The compressed and window forward's warps: NSA_CW_WARPS (three consumer
   warpgroups, tiles of NSA_CW_ROWS rows) where its kernel of that width is
   the warp-specialised one on this device (sm_90a, head dims up to 128);
   NSA_ROW_WARPS elsewhere. The caller's query ranges use the matching
   tiles (QueryRange::cwt or rowt). */
template <typename T, int DK, int DV>
static int cw_fwd_warps()
{
    if constexpr (NSA_CW_WARPS != NSA_ROW_WARPS && DK <= 128 && DV <= 128) {
        cudaFuncAttributes fa;
        if (cudaFuncGetAttributes(&fa, nsak::cw_fwd_kernel<T, DK, DV, NSA_CW_WARPS>) !=
            cudaSuccess)
            (void)cudaGetLastError(); /* a refused query is not the call's error */
        else if (fa.maxThreadsPerBlock == NSA_CW_WARPS * 32 + 128)
            return NSA_CW_WARPS;
    }
    return NSA_ROW_WARPS;
}

/* The compressed and window forward (M_STAGE, M_FWD, M_PREP) with NW warps
   of rows: its tiles (PF_ROWT or PF_CWT) from p.tile0 to p.tile_end. */
template <typename T, int DK, int DV, int NW>
static nsa_status run_cw_fwd(const Plan &P, const nsak::Params &p, int mode, unsigned br,
                             cudaStream_t s)
{
    nsa_status st;
    const int64_t tiles =
        launch_tiles(p, P.tot[NW == NSA_ROW_WARPS ? nsak::PF_ROWT : nsak::PF_CWT]);
    if (tiles <= 0) return NSA_OK;
    size_t sm = nsak::cw_fwd_smem<DK, DV, NW>();
    auto k = nsak::cw_fwd_kernel<T, DK, DV, NW>;
    if ((st = set_smem(k, sm))) return st;
    const int64_t units = tiles * P.Hkv;
    int threads = 0, ctas = 0;
    if ((st = cw_fwd_block(k, NW * 32, units, threads, ctas))) return st;
    /* only the warp-specialised producer reads Q's map */
    const nsak::QMap qm = threads == NW * 32 ? nsak::QMap{} : q_map(P, p, NW * 16);
    if (threads == NW * 32)
        k<<<dim3((unsigned)tiles, (unsigned)P.Hkv), threads, sm, s>>>(p, mode, br, units, qm);
    else
        k<<<(unsigned)ctas, threads, sm, s>>>(p, mode, br, units, qm);
    NSA__LAUNCHED();
    return NSA_OK;
}

template <typename T, int DK, int DV>
static nsa_status run_rows(const Plan &P, const nsak::Params &p, int mode, unsigned br,
                           bool dq, cudaStream_t s)
{
    nsa_status st;
    const bool slc = br == NSA_BRANCH_SLC;
    if (!slc && !dq) {
        if constexpr (NSA_CW_WARPS != NSA_ROW_WARPS && DK <= 128 && DV <= 128)
            if (cw_fwd_warps<T, DK, DV>() == NSA_CW_WARPS)
                return run_cw_fwd<T, DK, DV, NSA_CW_WARPS>(P, p, mode, br, s);
        return run_cw_fwd<T, DK, DV, NSA_ROW_WARPS>(P, p, mode, br, s);
    }
    const int64_t tiles = launch_tiles(p, P.tot[slc ? nsak::PF_UNITT : nsak::PF_ROWT]);
    if (tiles <= 0) return NSA_OK;
    dim3 grid((unsigned)tiles, (unsigned)P.Hkv);
    if (slc && !dq) {
        constexpr int NS = NSA_SLC_STAGES;
        auto k = nsak::slc_fwd_kernel<T, DK, DV, NS>;
        int nw = 0;
        if ((st = slc_cta_warps(k, nsak::slc_cta_smem<DK, DV, NS>, nw))) return st;
        const size_t sm = nsak::slc_cta_smem<DK, DV, NS>(nw);
        if ((st = set_smem(k, sm))) return st;
        grid.x = (unsigned)((tiles + nw - 1) / nw);
        k<<<grid, nw * 32, sm, s>>>(p, mode, kv_maps(P, p));
    } else if (slc) {
        constexpr int NS = NSA_SLC_STAGES;
        const size_t sm = nsak::slc_cta_smem<DK, DV, NS>(1);
        auto k = nsak::slc_dq_kernel<T, DK, DV, NS>;
        if ((st = set_smem(k, sm))) return st;
        k<<<grid, 32, sm, s>>>(p, kv_maps(P, p));
    } else {
        constexpr int NW = NSA_ROW_WARPS;
        size_t sm = nsak::cw_dq_smem<DK, DV, NW>();
        auto k = nsak::cw_dq_kernel<T, DK, DV, NW>;
        if ((st = set_smem(k, sm))) return st;
        k<<<grid, NW * 32, sm, s>>>(p, mode, br);
    }
    NSA__LAUNCHED();
    return NSA_OK;
}

template <typename T, int DK, int DV>
static nsa_status run_select(const Plan &P, const nsak::Params &p, void *ws,
                             float *scores_out, int32_t *idx, int32_t *cnt,
                             cudaStream_t s)
{
    nsa_status st;
    const int64_t groups = launch_tiles(p, P.tot[PF_COUNT]);
    if (groups <= 0) return NSA_OK;
    /* select_kernel's work items from tile0 * Hkv to this end */
    const int64_t items = (p.tile0 + groups) * P.Hkv;
    size_t sm = nsak::select_smem<DK>();
    auto k = nsak::select_kernel<T, DK>;
    if ((st = set_smem(k, sm))) return st;
    const int64_t *pf_grp = (const int64_t *)((char *)ws + P.o_pf) +
                            (int64_t)PF_COUNT * (P.B + 1);
    k<<<(unsigned)P.sel_ctas, 128, sm, s>>>(p, pf_grp, items, (float *)((char *)ws + P.o_sel),
                                            P.slot_stride, P.nc_max, scores_out,
                                            P.sz.max_slc_blocks, idx, cnt);
    NSA__LAUNCHED();
    return NSA_OK;
}

template <typename T, int DK, int G>
static nsa_status run_select_sweep_g(const Plan &P, const nsak::Params &p, cudaStream_t s)
{
    nsa_status st;
    constexpr int NW = NSA_ROW_WARPS;
    const size_t sm = nsak::select_sweep_kernel_smem<DK, NW>(G, p.n);
    const dim3 grid((unsigned)launch_tiles(p, P.tot[nsak::PF_ROWT]), (unsigned)P.Hkv);
    const nsak::KvMaps maps = kcmp_map(P, p, DK);
    if (maps.ok) {
        auto k = nsak::select_sweep_tma_kernel<T, DK, NW, G>;
        if ((st = set_smem(k, sm))) return st;
        k<<<grid, NW * 32, sm, s>>>(p, maps);
    } else {
        auto k = nsak::select_sweep_kernel<T, DK, NW, G>;
        if ((st = set_smem(k, sm))) return st;
        k<<<grid, NW * 32, sm, s>>>(p);
    }
    NSA__LAUNCHED();
    return NSA_OK;
}

/* Selection of one-query units from the compressed branch's lse
   (fused_select_ok shapes), into idx / cnt. */
template <typename T, int DK, int DV>
static nsa_status run_select_sweep(const Plan &P, nsak::Params p, int32_t *idx, int32_t *cnt,
                                   cudaStream_t s)
{
    if (launch_tiles(p, P.tot[nsak::PF_ROWT]) <= 0) return NSA_OK;
    p.sel_out_idx = idx;
    p.sel_out_cnt = cnt;
    switch (P.G) {
    case 1: return run_select_sweep_g<T, DK, 1>(P, p, s);
    case 2: return run_select_sweep_g<T, DK, 2>(P, p, s);
    case 4: return run_select_sweep_g<T, DK, 4>(P, p, s);
    case 8: return run_select_sweep_g<T, DK, 8>(P, p, s);
    default: return run_select_sweep_g<T, DK, 16>(P, p, s);
    }
}

template <typename T, int DK, int DV>
static nsa_status run_compress(const Plan &P, const nsak::Params &p, void *kc, void *vc,
                               cudaStream_t s)
{
    int64_t total = P.sz.Tc * P.Hkv * (DK + DV);
    if (total == 0) return NSA_OK;
    nsak::compress_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(p, DK, DV, total, (T *)kc,
                                                                  (T *)vc);
    NSA__LAUNCHED();
    return NSA_OK;
}

/* dK, dV of one branch into the fp32 accumulators for the kv heads of
   p.kv_h0, p.kv_hn: the segment counts of every head's tiles (count: once
   a call), the key-centric pass, then the partials of split tiles in
   segment order. */
template <typename T, int DK, int DV, int BR>
static nsa_status run_kv(const Plan &P, const nsak::Params &p, void *ws, cudaStream_t s,
                         bool count)
{
    nsa_status st;
    const int64_t tiles = P.kv_tiles[BR] * p.kv_hn;
    if (tiles == 0) return NSA_OK;
    nsak::KvSplit sp;
    int64_t *seg_start = (int64_t *)((char *)ws + P.o_kvseg[BR]);
    sp.seg_start = seg_start;
    sp.tiles = P.kv_tiles[BR];
    sp.seg_len = P.kv_seg_len[BR];
    sp.part = (float *)((char *)ws + P.o_part);
    sp.f0 = P.kv_tiles[BR] * p.kv_h0;
    sp.f1 = sp.f0 + tiles;
    if (count) {
        nsak::kv_split_count_kernel<BR><<<1, NSA_KV_SCAN_THREADS, 0, s>>>(p, sp, seg_start);
        NSA__LAUNCHED();
    }
    /* the heads' segments beyond their tiles' first: at most all heads' */
    int64_t ctas = tiles + P.kv_extra[BR];
    /* compressed tiles segment-major (kernels/nsa_attn.cuh says why) where
       the grid of every tile's possible segments is at most NSA_KV_SPARSE
       times the segments there can be: its CTAs past a tile's last segment
       end at once */
    sp.seg_major = 0;
    if (BR == nsak::BR_CMP) {
        const int64_t maxseg = nsak::kv_segments(P.kv_cmp_nch, P.kv_seg_len[BR]);
        if (maxseg <= NSA_KV_SPARSE * ctas / tiles && maxseg * tiles <= INT32_MAX) {
            sp.seg_major = 1;
            ctas = maxseg * tiles;
        }
    }
    if (ctas > INT32_MAX)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch: %lld key tiles exceed the CUDA "
                         "path's 2^31 limit", (long long)ctas);
    size_t sm = nsak::kv_smem<DK, DV>();
    auto k = nsak::kv_kernel<T, DK, DV, BR>;
    if ((st = set_smem(k, sm))) return st;
    k<<<(unsigned)ctas, 128, sm, s>>>(p, sp);
    NSA__LAUNCHED();
    if (P.kv_extra[BR] > 0) {
        nsak::kv_split_finish_kernel<DK, DV, BR><<<(unsigned)tiles, 256, 0, s>>>(p, sp);
        NSA__LAUNCHED();
    }
    return NSA_OK;
}

/* The transposed selection of the kv heads p.kv_h0, p.kv_hn: for each of
   their (kv head, selection block), the units that chose it, ascending (a
   stable radix sort of (block, unit) pairs); the starts of the other heads'
   blocks are all 0 or all n, lists of none. */
static nsa_status run_transpose(const Plan &P, nsak::Params &p, void *ws, cudaStream_t s)
{
    char *w = (char *)ws;
    uint32_t *k1 = (uint32_t *)(w + P.o_trk), *k2 = (uint32_t *)(w + P.o_trk2);
    int32_t *v1 = (int32_t *)(w + P.o_trv), *v2 = (int32_t *)(w + P.o_trv2);
    int32_t *start = (int32_t *)(w + P.o_trs);
    int64_t nkeys = (int64_t)P.Hkv * P.nsel_tot;
    uint32_t sentinel = (uint32_t)nkeys;
    int bits = 1;
    while (bits < 32 && ((uint64_t)1 << bits) <= (uint64_t)sentinel) ++bits;
    const int64_t n = P.tr_n / P.kv_heads * p.kv_hn; /* the range's pairs */
    if (n > 0) {
        nsak::tr_pairs_kernel<<<grid_for(n, 256), 256, 0, s>>>(p, n, sentinel, k1, v1);
        NSA__LAUNCHED();
        /* the pairs sorted in place between the two buffers of each (cub's
           DoubleBuffer: no copies of them in its temporary storage, which
           is then a few histograms instead of 8 bytes a pair); the sorted
           ones are where the host-side selector points after the call */
        cub::DoubleBuffer<uint32_t> keys(k1, k2);
        cub::DoubleBuffer<int32_t> units(v1, v2);
        size_t cb = P.cub_bytes;
        NSA__CK(cub::DeviceRadixSort::SortPairs((void *)(w + P.o_cub), cb, keys, units, (int)n,
                                                0, bits, s));
        k2 = keys.Current();
        v2 = units.Current();
    }
    nsak::tr_start_kernel<<<grid_for(nkeys + 1, 256), 256, 0, s>>>(k2, n, nkeys, start);
    NSA__LAUNCHED();
    p.tr_start = start;
    p.tr_units = v2;
    return NSA_OK;
}

/* ---- query ranges ---------------------------------------------------------
   The row passes hand each other gated fp32 sums (the forward: compressed
   and window, then selected; dQ: selected, then compressed and window)
   through an accumulator of Plan::acc_tok queries. A batch with more runs
   those passes (and the forward's selection between them) one range of
   queries at a time: whole sequences while they fit, a longer one cut at
   multiples of Plan::acc_step tokens. A range is a run of row tiles, unit
   tiles and unit groups (Params::tile0, tile_end) and a run of rows of
   the accumulator (Params::acc_row0); every row is computed as in one
   range. */
struct QueryRange {
    int64_t row[2];      /* flattened (token, head) rows [row[0], row[1]) */
    int64_t rowt[2];     /* row tiles [rowt[0], rowt[1]) */
    int64_t cwt[2];      /* the compressed and window forward's (PF_CWT) */
    int64_t unitt[2];    /* unit tiles */
    int64_t grp[2];      /* groups of four selection units */
};

class QueryRanges {
  public:
    QueryRanges(const nsa_batch *x, const Plan &P) : x_(x), P_(P) {}
    /* The next range into r; false after the last. */
    bool next(QueryRange &r)
    {
        if (b_ >= x_->B) return false;
        at(r.row[0], r.rowt[0], r.cwt[0], r.unitt[0], r.grp[0]);
        int64_t held = 0;
        while (b_ < x_->B) {
            const int64_t nq = queries(b_), rest = nq - tok_;
            if (held + rest <= P_.acc_tok) { /* the rest of the sequence */
                held += rest;
                int64_t v[PF_COUNT];
                nsak::seq_counts(nq, keys(b_), P_.shape, v);
                rowt_ += v[nsak::PF_ROWT];
                cwt_ += v[nsak::PF_CWT];
                unitt_ += v[nsak::PF_UNITT];
                grp_ += nsak::cdiv64(v[nsak::PF_UNIT], 4);
                q_ += nq;
                tok_ = 0;
                ++b_;
                continue;
            }
            int64_t take = (P_.acc_tok - held) / P_.acc_step * P_.acc_step;
            if (take == 0 && held > 0) break; /* the next range starts here */
            if (take == 0) take = P_.acc_step; /* plan_make: acc_tok >= acc_step */
            tok_ += take;
            break;
        }
        at(r.row[1], r.rowt[1], r.cwt[1], r.unitt[1], r.grp[1]);
        return true;
    }

  private:
    int64_t queries(int b) const
    {
        const int32_t *cu = x_->cu_seqlens_q ? x_->cu_seqlens_q : x_->cu_seqlens;
        return cu[b + 1] - cu[b];
    }
    int64_t keys(int b) const { return x_->cu_seqlens[b + 1] - x_->cu_seqlens[b]; }
    /* where token tok_ of sequence b_ starts (tok_ a multiple of acc_step) */
    void at(int64_t &row, int64_t &rowt, int64_t &cwt, int64_t &unitt, int64_t &grp) const
    {
        const int G = P_.G, bq = P_.shape.bq;
        row = (q_ + tok_) * P_.H;
        rowt = rowt_ + tok_ * G / NSA_ROWS;
        cwt = cwt_ + tok_ * G / NSA_CW_ROWS;
        unitt = unitt_ + tok_ / bq * nsak::cdiv64((int64_t)bq * G, 16);
        grp = grp_ + tok_ / bq / 4;
    }
    const nsa_batch *x_;
    const Plan &P_;
    int b_ = 0;
    int64_t tok_ = 0; /* the next range's first query within sequence b_ */
    int64_t q_ = 0, rowt_ = 0, cwt_ = 0, unitt_ = 0, grp_ = 0; /* totals before sequence b_ */
};

/* Points p's launches at range r's tiles of a kind (QueryRange). */
static void use_tiles(nsak::Params &p, const int64_t (&t)[2])
{
    p.tile0 = t[0];
    p.tile_end = t[1];
}

template <typename T, int DK, int DV>
static nsa_status fwd_typed(const nsa_config *cfg, const nsa_batch *x, const Plan &P,
                            nsak::Params &p, const void *gates, void *o, nsa_saved *sv,
                            void *ws, cudaStream_t s)
{
    nsa_status st;
    const unsigned br = cfg->branches;
    const bool use_cb = (br & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    p.gates = gates;
    p.out = o;
    for (int i = 0; i < 3; ++i) p.lse[i] = NULL;
    p.lse[0] = sv->lse_cmp;
    p.lse[1] = sv->lse_slc;
    p.lse[2] = sv->lse_win;
    if ((st = launch_meta(P, p, ws, s))) return st;
    /* nsa_saved.o_branch: the planes (cmp, slc, win) of the branches on */
    for (int i = 0; i < 3; ++i)
        p.obr[i] = sv->o_branch && (br & (1u << i)) ? sv->o_branch + (int64_t)i * P.sz.o : NULL;
    if (use_cb && !cfg->caller_compressed) {
        if ((st = run_compress<T, DK, DV>(P, p, sv->k_cmp, sv->v_cmp, s))) return st;
        p.kc = sv->k_cmp;
        p.vc = sv->v_cmp;
    }
    if (P.dec.on) return run_decode<T, DK, DV>(cfg, P, p, sv, ws, s);
    const bool slc = (br & NSA_BRANCH_SLC) != 0;
    /* One-query units with the compressed branch on: one pass over K_cmp
       per row tile scores and selects (kernels/nsa_select_fused.cuh). */
    const bool fused = slc && (br & NSA_BRANCH_CMP) && !x->sel_idx &&
                       nsak::fused_select_ok(P.G, P.shape.bq, P.shape.n, P.shape.l,
                                             P.shape.d, P.shape.lp);
    if (slc && x->sel_idx && P.sz.sel_count > 0) {
        /* caller selection: its usable entries, compacted */
        nsak::copy_sel_kernel<<<grid_for(P.sz.sel_count, 256), 256, 0, s>>>(
            p, P.sz.sel_count, sv->sel_idx, sv->sel_count);
        NSA__LAUNCHED();
    }
    if (fused && p.probs && P.sz.Tc > 0) {
        /* the sweep's bound on its exponents (sel_flush_free) */
        float *kcn2 = (float *)((char *)ws + P.o_kcn);
        NSA__CK(cudaMemsetAsync(kcn2, 0, (size_t)P.Hkv * 4, s));
        nsak::kcmp_norm2_kernel<T><<<grid_for(P.sz.Tc * P.Hkv * 32, 256), 256, 0, s>>>(
            (const T *)p.kc, P.sz.Tc, P.Hkv, DK, kcn2);
        NSA__LAUNCHED();
        p.kcn2 = kcn2;
    }
    /* the compressed and window pass's tiles (run_rows takes the same width) */
    const bool cw_wide = cw_fwd_warps<T, DK, DV>() != NSA_ROW_WARPS;
    QueryRanges ranges(x, P);
    for (QueryRange r; ranges.next(r);) {
        p.acc_row0 = r.row[0];
        /* cmp and win first: the compressed branch's lse then serves the
           selection's probabilities (probs mode) without a second pass */
        if (br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN)) {
            use_tiles(p, cw_wide ? r.cwt : r.rowt);
            p.epi = slc ? nsak::EPI_FIRST : nsak::EPI_ONLY;
            if ((st = run_rows<T, DK, DV>(P, p, nsak::M_FWD,
                                          br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN), false, s)))
                return st;
        }
        if (!slc) continue;
        if (fused) {
            use_tiles(p, r.rowt);
            if ((st = run_select_sweep<T, DK, DV>(P, p, sv->sel_idx, sv->sel_count, s)))
                return st;
        } else if (!x->sel_idx) {
            nsak::Params ps = p;
            use_tiles(ps, r.grp);
            if (!(br & NSA_BRANCH_CMP)) ps.lse[0] = NULL;
            if ((st = run_select<T, DK, DV>(P, ps, ws, NULL, sv->sel_idx, sv->sel_count, s)))
                return st;
        }
        p.sel_idx = sv->sel_idx;
        p.sel_cnt = sv->sel_count;
        use_tiles(p, r.unitt);
        p.epi = br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN) ? nsak::EPI_LAST : nsak::EPI_ONLY;
        if ((st = run_rows<T, DK, DV>(P, p, nsak::M_FWD, NSA_BRANCH_SLC, false, s))) return st;
    }
    return NSA_OK;
}

/* dK or dV (D wide, n elements of the accumulator acc) of the kv heads of
   p.kv_h0, p.kv_hn into out: the storage type, or fp32 (kv_f32). */
template <typename T>
static nsa_status finish_kv(const nsak::Params &p, int D, int64_t n, const float *acc,
                            const float *cacc, void *out, bool kv_f32, cudaStream_t s)
{
    if (n <= 0) return NSA_OK;
    if (kv_f32)
        nsak::finish_kv_kernel<float><<<grid_for(n, 256), 256, 0, s>>>(p, D, n, acc, cacc,
                                                                       (float *)out);
    else
        nsak::finish_kv_kernel<T><<<grid_for(n, 256), 256, 0, s>>>(p, D, n, acc, cacc, (T *)out);
    NSA__LAUNCHED();
    return NSA_OK;
}

template <typename T, int DK, int DV>
static nsa_status bwd_typed(const nsa_config *cfg, const nsa_batch *x, const Plan &P,
                            nsak::Params &p, const void *gates, const void *d_o,
                            const nsa_saved *sv, nsa_grads *g, void *ws, cudaStream_t s,
                            bool kv_f32)
{
    nsa_status st;
    const unsigned br = cfg->branches;
    const bool cw = (br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN)) != 0;
    p.gates = gates;
    p.dout = d_o;
    p.dgates = g->dgates;
    p.lse[0] = sv->lse_cmp;
    p.lse[1] = sv->lse_slc;
    p.lse[2] = sv->lse_win;
    if (!cfg->caller_compressed) {
        p.kc = sv->k_cmp;
        p.vc = sv->v_cmp;
    }
    p.sel_idx = sv->sel_idx; /* forward saved (and compacted) the selection */
    p.sel_cnt = sv->sel_count;
    if ((st = launch_meta(P, p, ws, s))) return st;
    /* branches that are off get dg = 0 */
    if (g->dgates && P.sz.gates > 0)
        NSA__CK(cudaMemsetAsync(g->dgates, 0, (size_t)P.sz.gates * 2, s));
    /* 1. dgates and Delta = g * (dO . O_c): from the outputs the forward
       kept, or each branch's output recomputed (the dQ passes refine
       dgates) */
    if (sv->o_branch) {
        const int64_t rows = P.sz.TQ * P.H;
        if (rows > 0) {
            nsak::delta_saved_kernel<T, DV><<<(unsigned)((rows + 7) / 8), 256, 0, s>>>(
                p, sv->o_branch, rows, br);
            NSA__LAUNCHED();
        }
    } else {
        if (br & NSA_BRANCH_SLC)
            if ((st = run_rows<T, DK, DV>(P, p, nsak::M_PREP, NSA_BRANCH_SLC, false, s)))
                return st;
        if (cw)
            if ((st = run_rows<T, DK, DV>(P, p, nsak::M_PREP,
                                          br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN), false, s)))
                return st;
    }
    /* 2. dQ, row-centric, a range of queries at a time */
    p.out = g->dq;
    QueryRanges ranges(x, P);
    for (QueryRange r; ranges.next(r);) {
        p.acc_row0 = r.row[0];
        if (br & NSA_BRANCH_SLC) {
            use_tiles(p, r.unitt);
            p.epi = cw ? nsak::EPI_FIRST : nsak::EPI_ONLY;
            if ((st = run_rows<T, DK, DV>(P, p, nsak::M_FWD, NSA_BRANCH_SLC, true, s)))
                return st;
        }
        if (cw) {
            use_tiles(p, r.rowt);
            p.epi = br & NSA_BRANCH_SLC ? nsak::EPI_LAST : nsak::EPI_ONLY;
            if ((st = run_rows<T, DK, DV>(P, p, nsak::M_FWD,
                                          br & (NSA_BRANCH_CMP | NSA_BRANCH_WIN), true, s)))
                return st;
        }
    }
    /* 3. dK, dV, key-centric, into fp32 accumulators, a range of
       Plan::kv_heads heads at a time: the compressed branch's, the
       selected and window branches', then the finishing step (4: mean
       compression's backward, rounding) */
    const bool cmp = (br & NSA_BRANCH_CMP) != 0 && P.sz.k_cmp > 0;
    const bool fold = cmp && !cfg->caller_compressed;
    for (int h0 = 0; h0 < P.Hkv; h0 += P.kv_heads) {
        p.kv_h0 = h0;
        p.kv_hn = P.Hkv - h0 < P.kv_heads ? P.Hkv - h0 : P.kv_heads;
        const int64_t nk = P.sz.k / P.Hkv * p.kv_hn, nv = P.sz.v / P.Hkv * p.kv_hn;
        const int64_t nkc = P.sz.k_cmp / P.Hkv * p.kv_hn, nvc = P.sz.v_cmp / P.Hkv * p.kv_hn;
        if (cmp) {
            NSA__CK(cudaMemsetAsync(p.dkc_acc, 0, (size_t)nkc * 4, s));
            NSA__CK(cudaMemsetAsync(p.dvc_acc, 0, (size_t)nvc * 4, s));
            if ((st = run_kv<T, DK, DV, nsak::BR_CMP>(P, p, ws, s, h0 == 0))) return st;
        }
        if (nk > 0) NSA__CK(cudaMemsetAsync(p.dk_acc, 0, (size_t)nk * 4, s));
        if (nv > 0) NSA__CK(cudaMemsetAsync(p.dv_acc, 0, (size_t)nv * 4, s));
        /* the selected branch's lists and segment counts of this range's
           heads (the counts of the other heads' blocks, of no entry, are
           one segment each, as the host's bound assumes) */
        if (br & NSA_BRANCH_SLC) {
            if ((st = run_transpose(P, p, ws, s))) return st;
            if ((st = run_kv<T, DK, DV, nsak::BR_SLC>(P, p, ws, s, true))) return st;
        }
        if (br & NSA_BRANCH_WIN)
            if ((st = run_kv<T, DK, DV, nsak::BR_WIN>(P, p, ws, s, h0 == 0))) return st;
        if ((st = finish_kv<T>(p, DK, nk, p.dk_acc, fold ? p.dkc_acc : NULL, g->dk, kv_f32, s)))
            return st;
        if ((st = finish_kv<T>(p, DV, nv, p.dv_acc, fold ? p.dvc_acc : NULL, g->dv, kv_f32, s)))
            return st;
        if (cmp && cfg->caller_compressed) { /* the caller's dK_cmp, dV_cmp */
            if (nkc > 0) {
                nsak::round_heads_kernel<T><<<grid_for(nkc, 256), 256, 0, s>>>(
                    p, DK, nkc, p.dkc_acc, (T *)g->dk_cmp);
                NSA__LAUNCHED();
            }
            if (nvc > 0) {
                nsak::round_heads_kernel<T><<<grid_for(nvc, 256), 256, 0, s>>>(
                    p, DV, nvc, p.dvc_acc, (T *)g->dv_cmp);
                NSA__LAUNCHED();
            }
        }
    }
    if (cfg->caller_compressed && !cmp && (br & NSA_BRANCH_SLC) && P.sz.k_cmp > 0) {
        NSA__CK(cudaMemsetAsync(g->dk_cmp, 0, (size_t)P.sz.k_cmp * 2, s));
        NSA__CK(cudaMemsetAsync(g->dv_cmp, 0, (size_t)P.sz.v_cmp * 2, s));
    }
    return NSA_OK;
}

/* Calls F<T, DK, DV>(args...) for the batch's dtype and head dims (checked). */
#define NSA__DISPATCH(P, F, ...)                                               \
    ((P).dt == NSA_BF16                                                        \
         ? ((P).Dk == 64    ? F<__nv_bfloat16, 64, 64>(__VA_ARGS__)            \
            : (P).Dk == 128 ? F<__nv_bfloat16, 128, 128>(__VA_ARGS__)          \
                            : F<__nv_bfloat16, 192, 128>(__VA_ARGS__))         \
         : ((P).Dk == 64    ? F<__half, 64, 64>(__VA_ARGS__)                   \
            : (P).Dk == 128 ? F<__half, 128, 128>(__VA_ARGS__)                 \
                            : F<__half, 192, 128>(__VA_ARGS__)))

} /* namespace nsah */

NSADEF nsa_status nsa_cuda_workspace_size(const nsa_config *cfg, const nsa_batch *batch,
                                          size_t *bytes)
{
    nsah::Plan P;
    nsa_status st;
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    if ((st = nsah::plan_make(cfg, batch, P, false))) return st;
    *bytes = P.total;
    return NSA_OK;
}

NSADEF nsa_status nsa_cuda_forward(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, void *o, nsa_saved *saved,
                                   void *workspace, size_t workspace_bytes,
                                   nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st;
    nsa__clear_error();
    if ((st = nsah::plan_make(cfg, batch, P))) return st;
    if (!o && P.sz.o > 0) return nsa__fail(NSA_ERR_NULL_POINTER, "o: is NULL");
    if ((st = nsa__check_saved(cfg, &P.sz, saved, 0))) return st;
    if ((st = nsah::check_saved_aligned(saved))) return st;
    if ((st = nsah::check_ws(P, workspace, workspace_bytes))) return st;
    if (P.sz.TQ == 0 && P.sz.T == 0) return NSA_OK;
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    return NSA__DISPATCH(P, nsah::fwd_typed, cfg, batch, P, p, gates, o, saved, workspace,
                         (cudaStream_t)stream);
}

namespace nsah {
static nsa_status backward(const nsa_config *cfg, const nsa_batch *batch, const void *gates,
                           const void *d_o, const nsa_saved *saved, nsa_grads *grads,
                           void *workspace, size_t workspace_bytes, nsa_cuda_stream stream,
                           bool kv_f32)
{
    nsah::Plan P;
    nsa_status st;
    nsa__clear_error();
    if ((st = nsah::plan_make(cfg, batch, P))) return st;
    if (!d_o && P.sz.o > 0) return nsa__fail(NSA_ERR_NULL_POINTER, "d_o: is NULL");
    if (!nsah::aligned16(d_o))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "d_o: must be 16-byte aligned on the CUDA path");
    if ((st = nsa__check_saved(cfg, &P.sz, saved, 1))) return st;
    if ((st = nsa__check_grads(cfg, &P.sz, gates, grads))) return st;
    if ((st = nsah::check_saved_aligned(saved))) return st;
    if ((st = nsah::check_ws(P, workspace, workspace_bytes))) return st;
    if (P.sz.TQ == 0 && P.sz.T == 0) return NSA_OK;
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    return NSA__DISPATCH(P, nsah::bwd_typed, cfg, batch, P, p, gates, d_o, saved, grads,
                         workspace, (cudaStream_t)stream, kv_f32);
}
} /* namespace nsah */

NSADEF nsa_status nsa_cuda_backward(const nsa_config *cfg, const nsa_batch *batch,
                                    const void *gates, const void *d_o,
                                    const nsa_saved *saved, nsa_grads *grads,
                                    void *workspace, size_t workspace_bytes,
                                    nsa_cuda_stream stream)
{
    return nsah::backward(cfg, batch, gates, d_o, saved, grads, workspace, workspace_bytes,
                          stream, false);
}

NSADEF nsa_status nsa_cuda_backward_f32kv(const nsa_config *cfg, const nsa_batch *batch,
                                          const void *gates, const void *d_o,
                                          const nsa_saved *saved, nsa_grads *grads,
                                          void *workspace, size_t workspace_bytes,
                                          nsa_cuda_stream stream)
{
    return nsah::backward(cfg, batch, gates, d_o, saved, grads, workspace, workspace_bytes,
                          stream, true);
}

/* ---- stages -------------------------------------------------------------- */

namespace nsah {

static nsa_status stage_begin(const nsa_config *cfg, const nsa_batch *x, Plan &P,
                              unsigned need, const char *name, void *ws, size_t wsb)
{
    nsa_status st;
    nsa__clear_error();
    if ((st = plan_make(cfg, x, P))) return st;
    if (need && !(cfg->branches & need))
        return nsa__fail(NSA_ERR_INVALID_CONFIG, "cfg.branches: %s needs its branch "
                         "switched on", name);
    return check_ws(P, ws, wsb);
}

template <typename T, int DK, int DV>
static nsa_status stage_compress(const Plan &P, nsak::Params &p, void *kc, void *vc, void *ws,
                                 cudaStream_t s)
{
    nsa_status st;
    if ((st = launch_meta(P, p, ws, s))) return st;
    return run_compress<T, DK, DV>(P, p, kc, vc, s);
}

template <typename T, int DK, int DV>
static nsa_status stage_select(const Plan &P, nsak::Params &p, float *scores, int32_t *idx,
                               int32_t *cnt, void *ws, cudaStream_t s)
{
    nsa_status st;
    if ((st = launch_meta(P, p, ws, s))) return st;
    return run_select<T, DK, DV>(P, p, ws, scores, idx, cnt, s);
}

template <typename T, int DK, int DV>
static nsa_status stage_attend(const Plan &P, nsak::Params &p, unsigned br, void *ws,
                               cudaStream_t s)
{
    nsa_status st;
    if ((st = launch_meta(P, p, ws, s))) return st;
    return run_rows<T, DK, DV>(P, p, nsak::M_STAGE, br, false, s);
}

template <typename T, int DK, int DV>
static nsa_status stage_combine(const Plan &P, nsak::Params &p, const float *o0,
                                const float *o1, const float *o2, void *o, cudaStream_t s)
{
    int64_t total = P.sz.o;
    if (total == 0) return NSA_OK;
    nsak::combine_kernel<T><<<grid_for(total, 256), 256, 0, s>>>(p, DV, total, P.br, o0, o1,
                                                                 o2, (T *)o);
    NSA__LAUNCHED();
    return NSA_OK;
}

template <typename T, int DK, int DV>
static nsa_status stage_mask(const Plan &P, nsak::Params &p, uint8_t *mask, void *ws,
                             cudaStream_t s)
{
    nsa_status st;
    if ((st = launch_meta(P, p, ws, s))) return st;
    int64_t total = P.sz.block_mask;
    if (total == 0) return NSA_OK;
    nsak::block_mask_kernel<<<grid_for(total, 256), 256, 0, s>>>(p, P.sz.max_slc_blocks, total,
                                                                 mask);
    NSA__LAUNCHED();
    return NSA_OK;
}

} /* namespace nsah */

NSADEF nsa_status nsa_cuda_compress(const nsa_config *cfg, const nsa_batch *batch,
                                    void *k_cmp, void *v_cmp, void *workspace,
                                    size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, 0, "nsa_cuda_compress", workspace,
                                      workspace_bytes);
    if (st) return st;
    if (P.sz.k_cmp > 0 && (!k_cmp || !v_cmp))
        return nsa__fail(NSA_ERR_NULL_POINTER, "k_cmp, v_cmp: is NULL");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    return NSA__DISPATCH(P, nsah::stage_compress, P, p, k_cmp, v_cmp, workspace,
                         (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_block_scores(const nsa_config *cfg, const nsa_batch *batch,
                                        const void *k_cmp, float *block_scores,
                                        void *workspace, size_t workspace_bytes,
                                        nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_SLC, "nsa_cuda_block_scores",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.k_cmp > 0 && !k_cmp) return nsa__fail(NSA_ERR_NULL_POINTER, "k_cmp: is NULL");
    if (P.sz.block_mask > 0 && !block_scores)
        return nsa__fail(NSA_ERR_NULL_POINTER, "block_scores: is NULL");
    if (!nsah::aligned16(k_cmp))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "k_cmp: must be 16-byte aligned");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.kc = k_cmp;
    return NSA__DISPATCH(P, nsah::stage_select, P, p, block_scores, (int32_t *)NULL,
                         (int32_t *)NULL, workspace, (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_select(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *k_cmp, int32_t *sel_idx, int32_t *sel_count,
                                  void *workspace, size_t workspace_bytes,
                                  nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_SLC, "nsa_cuda_select",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.k_cmp > 0 && !k_cmp) return nsa__fail(NSA_ERR_NULL_POINTER, "k_cmp: is NULL");
    if (P.sz.sel_idx > 0 && (!sel_idx || !sel_count))
        return nsa__fail(NSA_ERR_NULL_POINTER, "sel_idx, sel_count: is NULL");
    if (!nsah::aligned16(k_cmp))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "k_cmp: must be 16-byte aligned");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.kc = k_cmp;
    return NSA__DISPATCH(P, nsah::stage_select, P, p, (float *)NULL, sel_idx, sel_count,
                         workspace, (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_block_mask(const nsa_config *cfg, const nsa_batch *batch,
                                      const int32_t *sel_idx, const int32_t *sel_count,
                                      uint8_t *block_mask, void *workspace,
                                      size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_SLC, "nsa_cuda_block_mask",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.block_mask > 0 && (!sel_idx || !sel_count || !block_mask))
        return nsa__fail(NSA_ERR_NULL_POINTER, "sel_idx, sel_count, block_mask: is NULL");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.sel_idx = sel_idx;
    p.sel_cnt = sel_count;
    return NSA__DISPATCH(P, nsah::stage_mask, P, p, block_mask, workspace,
                         (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_attend_cmp(const nsa_config *cfg, const nsa_batch *batch,
                                      const void *k_cmp, const void *v_cmp, float *o_cmp,
                                      float *lse_cmp, void *workspace,
                                      size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_CMP, "nsa_cuda_attend_cmp",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.k_cmp > 0 && (!k_cmp || !v_cmp))
        return nsa__fail(NSA_ERR_NULL_POINTER, "k_cmp, v_cmp: is NULL");
    if (P.sz.o > 0 && (!o_cmp || !lse_cmp))
        return nsa__fail(NSA_ERR_NULL_POINTER, "o_cmp, lse_cmp: is NULL");
    if (!nsah::aligned16(k_cmp) || !nsah::aligned16(v_cmp))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "k_cmp, v_cmp: must be 16-byte aligned");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.kc = k_cmp;
    p.vc = v_cmp;
    p.ostage = o_cmp;
    p.lse[0] = lse_cmp;
    return NSA__DISPATCH(P, nsah::stage_attend, P, p, (unsigned)NSA_BRANCH_CMP, workspace,
                         (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_attend_slc(const nsa_config *cfg, const nsa_batch *batch,
                                      const int32_t *sel_idx, const int32_t *sel_count,
                                      float *o_slc, float *lse_slc, void *workspace,
                                      size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_SLC, "nsa_cuda_attend_slc",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.sel_idx > 0 && (!sel_idx || !sel_count))
        return nsa__fail(NSA_ERR_NULL_POINTER, "sel_idx, sel_count: is NULL");
    if (P.sz.o > 0 && (!o_slc || !lse_slc))
        return nsa__fail(NSA_ERR_NULL_POINTER, "o_slc, lse_slc: is NULL");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.sel_idx = sel_idx;
    p.sel_cnt = sel_count;
    p.ostage = o_slc;
    p.lse[1] = lse_slc;
    return NSA__DISPATCH(P, nsah::stage_attend, P, p, (unsigned)NSA_BRANCH_SLC, workspace,
                         (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_attend_win(const nsa_config *cfg, const nsa_batch *batch,
                                      float *o_win, float *lse_win, void *workspace,
                                      size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, NSA_BRANCH_WIN, "nsa_cuda_attend_win",
                                      workspace, workspace_bytes);
    if (st) return st;
    if (P.sz.o > 0 && (!o_win || !lse_win))
        return nsa__fail(NSA_ERR_NULL_POINTER, "o_win, lse_win: is NULL");
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    p.ostage = o_win;
    p.lse[2] = lse_win;
    return NSA__DISPATCH(P, nsah::stage_attend, P, p, (unsigned)NSA_BRANCH_WIN, workspace,
                         (cudaStream_t)stream);
}

NSADEF nsa_status nsa_cuda_combine(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, const float *o_cmp,
                                   const float *o_slc, const float *o_win, void *o,
                                   nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st;
    nsa__clear_error();
    if ((st = nsah::plan_make(cfg, batch, P))) return st;
    const unsigned br = cfg->branches;
    if (P.sz.o > 0 && (!o || ((br & NSA_BRANCH_CMP) && !o_cmp) ||
                       ((br & NSA_BRANCH_SLC) && !o_slc) || ((br & NSA_BRANCH_WIN) && !o_win)))
        return nsa__fail(NSA_ERR_NULL_POINTER, "o, or the output of a branch that is "
                         "on: is NULL");
    nsak::Params p = nsah::params(cfg, batch, P, (void *)NULL);
    p.gates = gates;
    return NSA__DISPATCH(P, nsah::stage_combine, P, p, o_cmp, o_slc, o_win, o,
                         (cudaStream_t)stream);
}

/* ---- decoding ---------------------------------------------------------------
   One query per sequence (kernels/nsa_decode.cuh): the forward splits each
   branch's keys over many one-warp CTAs and combines them in a fixed order;
   the compression of a growing cache computes only its new blocks. */

namespace nsah {

/* The decode path serves forwards whose every sequence has exactly one query
   (cu_seqlens_q given), G <= 16 (one warp's rows), no caller selection,
   for the selected branch bq = 1, n <= 32 (sel_finish's lanes) and a
   select CTA's compressed range and merge within NSA_DEC_TS, and at most
   NSA_DEC_MAX_SLOTS slots (the combine's weights on chip). Others take the
   general path, which computes the same. */
static void decode_plan(const nsa_config *cfg, const nsa_batch *x, Plan &P, size_t &o)
{
    nsak::Decode &D = P.dec;
    memset(&D, 0, sizeof D);
    const unsigned br = cfg->branches;
    const bool slc = (br & NSA_BRANCH_SLC) != 0;
    const bool cb = (br & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    if (!x->cu_seqlens_q || x->B < 1 || x->B > 65535 || x->Hkv > 65535 || P.G > 16 ||
        x->sel_idx)
        return;
    if (slc && (cfg->bq != 1 || cfg->n > 32)) return;
    int64_t nk_max = 0;
    for (int b = 0; b < x->B; ++b) {
        if (x->cu_seqlens_q[b + 1] - x->cu_seqlens_q[b] != 1) return;
        const int64_t nk = x->cu_seqlens[b + 1] - x->cu_seqlens[b];
        if (nk > nk_max) nk_max = nk;
    }
    const int64_t bh = (int64_t)x->B * x->Hkv;
    if (cb && P.nc_max > 0) {
        /* enough cmp slots over all pairs for NSA_DEC_CTAS CTAs, but no
           fewer than NSA_DEC_MIN_CHUNKS chunks a slot */
        const int64_t want = nsak::cdiv64(NSA_DEC_CTAS, bh);
        const int64_t chunks = nsak::cdiv64(P.nc_max, NSA_KN);
        int64_t per = nsak::cdiv64(chunks, want);
        if (per < NSA_DEC_MIN_CHUNKS) per = NSA_DEC_MIN_CHUNKS;
        D.cspl = (int)(per * NSA_KN);
        D.nsc = (int)nsak::cdiv64(P.nc_max, D.cspl);
    }
    if (br & NSA_BRANCH_WIN) {
        D.wspl = NSA_DEC_WIN_KEYS;
        D.nsw = (int)nsak::cdiv64(cfg->w < nk_max ? cfg->w : nk_max, D.wspl);
    }
    if (slc) {
        D.spb = NSA_DEC_SLC_KEYS / cfg->lp > 1 ? NSA_DEC_SLC_KEYS / cfg->lp : 1;
        D.nss = (int)nsak::cdiv64(cfg->n, D.spb);
        /* a select CTA's blocks j cover compressed blocks rl*j - rk + 1 ..
           rl*j + rl - 1 (step 2), staged in NSA_DEC_TS floats; its merge
           holds nsel lists of n keys in as many u64 */
        const int64_t rl = cfg->lp / cfg->d, rk = cfg->l / cfg->d;
        const int64_t jpb = (NSA_DEC_TS - rk + 1) / rl;
        if (jpb < 1) return;
        D.jpb = (int)(jpb < NSA_DEC_THREADS ? jpb : NSA_DEC_THREADS);
        const int64_t nsel = nsak::cdiv64(nsak::cdiv64(nk_max, cfg->lp), D.jpb);
        if (nsel * cfg->n > NSA_DEC_TS) return;
        D.nsel = (int)(nsel > 1 ? nsel : 1);
    }
    D.nslots = D.nsc + D.nsw + D.nss;
    if (D.nslots > NSA_DEC_MAX_SLOTS) return;
    D.ldl = (int64_t)D.nsc * D.cspl;
    D.on = 1;
    D.o_part = o;
    o = align256(o + (size_t)bh * D.nslots * nsak::dec_part_floats(x->Dv) * 4);
    D.o_logit = o;
    o = align256(o + (slc ? (size_t)bh * P.G * D.ldl * 4 : 0));
    D.o_cand = o;
    o = align256(o + (D.nsel > 1 ? (size_t)bh * D.nsel * cfg->n * 8 : 0));
    D.o_done = o;
    o = align256(o + (D.nsel > 1 ? (size_t)bh * 4 : 0));
}

/* The forward on the decode path, after the compression (mean mode): cmp and
   win slots, the selection, slc slots, the combine (kernels/nsa_decode.cuh). */
template <typename T, int DK, int DV>
static nsa_status run_decode(const nsa_config *cfg, const Plan &P, nsak::Params &p,
                             nsa_saved *sv, void *ws, cudaStream_t s)
{
    nsa_status st;
    const unsigned br = cfg->branches;
    const bool slc = (br & NSA_BRANCH_SLC) != 0;
    nsak::Decode dc = P.dec;
    char *w = (char *)ws;
    dc.part = (float *)(w + dc.o_part);
    dc.logit = slc ? (float *)(w + dc.o_logit) : NULL;
    dc.cand = dc.nsel > 1 ? (nsak::u64 *)(w + dc.o_cand) : NULL;
    dc.done = dc.nsel > 1 ? (unsigned *)(w + dc.o_done) : NULL;
    constexpr int NS = NSA_DEC_STAGES;
    const size_t sm = nsak::dec_split_smem<DK, DV, NS>();
    auto split = nsak::decode_split_kernel<T, DK, DV, NS>;
    if ((st = set_smem(split, sm))) return st;
    const int first = dc.nsc + dc.nsw; /* the cmp and win slots */
    /* the first split pass zeroes the select kernel's counters; without one
       a memset does (no compressed block and no window: short sequences) */
    if (first == 0 && dc.done) NSA__CK(cudaMemsetAsync(dc.done, 0, (size_t)P.B * P.Hkv * 4, s));
    if (first > 0 &&
        (st = launch_chained(split, dim3((unsigned)first, (unsigned)P.Hkv, (unsigned)P.B), 32,
                             sm, s, p, dc, 0)))
        return st;
    if (slc) {
        p.sel_out_idx = sv->sel_idx;
        p.sel_out_cnt = sv->sel_count;
        if ((st = launch_chained(nsak::decode_select_kernel<DV>,
                                 dim3((unsigned)dc.nsel, (unsigned)P.Hkv, (unsigned)P.B),
                                 NSA_DEC_THREADS, 0, s, p, dc)))
            return st;
        p.sel_idx = sv->sel_idx;
        p.sel_cnt = sv->sel_count;
        if ((st = launch_chained(split, dim3((unsigned)dc.nss, (unsigned)P.Hkv, (unsigned)P.B),
                                 32, sm, s, p, dc, first)))
            return st;
    }
    return launch_chained(nsak::decode_combine_kernel<T, DV>,
                          dim3((unsigned)P.G, (unsigned)P.Hkv, (unsigned)P.B), DV,
                          (size_t)dc.nslots * 4, s, p, dc, br);
}

template <typename T, int DK, int DV>
static nsa_status stage_compress_append(const Plan &P, nsak::Params &p, const int32_t *old_dev,
                                        int64_t max_new, void *kc, void *vc, void *ws,
                                        cudaStream_t s)
{
    nsa_status st;
    if ((st = launch_meta(P, p, ws, s))) return st;
    if (max_new == 0) return NSA_OK;
    const int64_t work = max_new * P.Hkv * (DK + DV);
    const int64_t y = nsak::cdiv64(work, 256);
    nsak::compress_append_kernel<T><<<dim3((unsigned)P.B, (unsigned)(y < 65535 ? y : 65535)),
                                      256, 0, s>>>(p, old_dev, DK, DV, (T *)kc, (T *)vc);
    NSA__LAUNCHED();
    return NSA_OK;
}

} /* namespace nsah */

NSADEF nsa_status nsa_cuda_compress_append(const nsa_config *cfg, const nsa_batch *batch,
                                           const int32_t *seqlens_old,
                                           const int32_t *seqlens_old_dev, void *k_cmp,
                                           void *v_cmp, void *workspace,
                                           size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsah::Plan P;
    nsa_status st = nsah::stage_begin(cfg, batch, P, 0, "nsa_cuda_compress_append",
                                      workspace, workspace_bytes);
    if (st) return st;
    if ((st = nsa__check_seqlens_old(batch, seqlens_old))) return st;
    if (batch->B > 0 && !seqlens_old_dev)
        return nsa__fail(NSA_ERR_NULL_POINTER, "seqlens_old_dev: is NULL (the CUDA path "
                         "reads the device copy)");
    if (P.sz.k_cmp > 0 && (!k_cmp || !v_cmp))
        return nsa__fail(NSA_ERR_NULL_POINTER, "k_cmp, v_cmp: is NULL");
    /* the most blocks one sequence gains: the launch's size */
    int64_t max_new = 0;
    if (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
        for (int b = 0; b < batch->B; ++b) {
            const int64_t nk = batch->cu_seqlens[b + 1] - batch->cu_seqlens[b];
            const int64_t gain = nsa_cmp_blocks(nk, cfg->l, cfg->d) -
                                 nsa_cmp_blocks(seqlens_old[b], cfg->l, cfg->d);
            if (gain > max_new) max_new = gain;
        }
    nsak::Params p = nsah::params(cfg, batch, P, workspace);
    return NSA__DISPATCH(P, nsah::stage_compress_append, P, p, seqlens_old_dev, max_new, k_cmp,
                         v_cmp, workspace, (cudaStream_t)stream);
}

/* ---- top-k per row --------------------------------------------------------- */

namespace nsah {

/* Which kernels a top-k call runs and its workspace (kernels/nsa_topk.cuh):
   few long rows are split into slices, whose best keys wait in the
   workspace for the merge; many rows take one CTA each and need none. */
struct TopkPlan {
    int slices; /* 1: not split */
    size_t total;
};

static nsa_status topk_plan(int64_t rows, int64_t cols, int k, TopkPlan &T)
{
    if (rows < 0 || cols < 0 || cols > INT32_MAX || k < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rows, cols, k: must be >= 0 and cols "
                         "< 2^31 (got %lld, %lld, %d)", (long long)rows, (long long)cols, k);
    if (k > NSA_TOPK_KMAX)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "k: %d exceeds the CUDA path's %d", k,
                         NSA_TOPK_KMAX);
    if (rows > INT32_MAX)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "rows: more than 2^31 - 1");
    T.slices = nsak::topk_slices(rows, cols, k);
    T.total = T.slices > 1 ? align256((size_t)rows * T.slices * k * 8) : 0;
    return NSA_OK;
}

} /* namespace nsah */

NSADEF nsa_status nsa_cuda_topk_workspace_size(int64_t rows, int64_t cols, int k,
                                               size_t *bytes)
{
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    nsah::TopkPlan T = {};
    nsa_status st = nsah::topk_plan(rows, cols, k, T);
    if (st) return st;
    *bytes = T.total;
    return NSA_OK;
}

NSADEF nsa_status nsa_cuda_topk_rows(const float *scores, int64_t rows, int64_t cols,
                                     int64_t row_stride, const int32_t *row_start,
                                     const int32_t *row_end, int k, int32_t *out_idx,
                                     int32_t *out_count, void *workspace,
                                     size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsa__clear_error();
    nsah::TopkPlan T = {};
    nsa_status st = nsah::topk_plan(rows, cols, k, T);
    if (st) return st;
    if (T.total > 0 && !workspace) return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    if (workspace_bytes < T.total)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller than the %zu "
                         "this call needs (see nsa_cuda_topk_workspace_size)",
                         workspace_bytes, T.total);
    if (T.total > 0 && !nsah::aligned16(workspace))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "workspace: must be 16-byte aligned");
    if (rows > 0 && cols > 0 && !scores) return nsa__fail(NSA_ERR_NULL_POINTER, "scores: is NULL");
    if (rows > 0 && k > 0 && !out_idx) return nsa__fail(NSA_ERR_NULL_POINTER, "out_idx: is NULL");
    if (rows > 1 && row_stride < cols)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "row_stride: %lld is less than cols %lld",
                         (long long)row_stride, (long long)cols);
    if (rows == 0) return NSA_OK;
    cudaStream_t s = (cudaStream_t)stream;
    if (k == 0) { /* nothing to select: the counts are 0 */
        if (out_count) NSA__CK(cudaMemsetAsync(out_count, 0, (size_t)rows * 4, s));
        return NSA_OK;
    }
    if (T.slices == 1) {
        if ((st = nsah::set_smem(nsak::topk_row_kernel, NSA_TOPK_SMEM))) return st;
        nsak::topk_row_kernel<<<(unsigned)rows, NSA_TOPK_THREADS, NSA_TOPK_SMEM, s>>>(
            scores, cols, row_stride, row_start, row_end, k, out_idx, out_count);
        NSA__LAUNCHED();
        return NSA_OK;
    }
    uint64_t *best = (uint64_t *)workspace;
    if ((st = nsah::set_smem(nsak::topk_slice_kernel, NSA_TOPK_SMEM))) return st;
    nsak::topk_slice_kernel<<<dim3((unsigned)T.slices, (unsigned)rows), NSA_TOPK_THREADS,
                              NSA_TOPK_SMEM, s>>>(scores, cols, row_stride, row_start, row_end,
                                                  k, best);
    NSA__LAUNCHED();
    if ((st = nsah::set_smem(nsak::topk_merge_kernel, NSA_TOPK_SMEM))) return st;
    nsak::topk_merge_kernel<<<(unsigned)rows, NSA_TOPK_THREADS, NSA_TOPK_SMEM, s>>>(
        cols, row_start, row_end, k, T.slices, best, out_idx, out_count);
    NSA__LAUNCHED();
    return NSA_OK;
}

/* ---- top-n blocks per row, as a mask --------------------------------------- */

namespace nsah {

/* What a block-mask call runs (kernels/nsa_topk.cuh) and its workspace:
   the block scores [rows][nblocks], needed only when some row can have
   more eligible blocks than n (0 < n < nblocks). */
struct TopkBlocksPlan {
    int64_t nblocks, per_cta;
    bool scores;
    size_t total;
};

/* The reference's shape checks (nsa_ref_topk_blocks, same statuses and
   messages), then this path's own limit and the workspace's size. */
static nsa_status topk_blocks_plan(int64_t rows, int64_t cols, int64_t block, int n,
                                   TopkBlocksPlan &T)
{
    if (rows < 0 || cols < 0 || cols > INT32_MAX || n < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rows, cols, n: must be >= 0 "
                         "and cols < 2^31 (got %lld, %lld, %d)", (long long)rows,
                         (long long)cols, n);
    if (block < 1)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "block: must be >= 1 (got %lld)",
                         (long long)block);
    if (rows > INT32_MAX)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "rows: more than 2^31 - 1");
    memset(&T, 0, sizeof T);
    T.nblocks = cols / block + (cols % block != 0);
    T.per_cta = nsak::topk_blocks_per_cta(block);
    T.scores = rows > 0 && n > 0 && (int64_t)n < T.nblocks;
    if (!T.scores) return NSA_OK;
    if ((uint64_t)rows > ((uint64_t)SIZE_MAX - 255) / 4 / (uint64_t)T.nblocks)
        return nsa__fail(NSA_ERR_OVERFLOW, "workspace: its size overflows");
    T.total = align256((size_t)rows * (size_t)T.nblocks * 4);
    return NSA_OK;
}

} /* namespace nsah */

NSADEF nsa_status nsa_cuda_topk_blocks_workspace_size(int64_t rows, int64_t cols,
                                                      int64_t block, int n, size_t *bytes)
{
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    nsah::TopkBlocksPlan T = {};
    nsa_status st = nsah::topk_blocks_plan(rows, cols, block, n, T);
    if (st) return st;
    *bytes = T.total;
    return NSA_OK;
}

NSADEF nsa_status nsa_cuda_topk_blocks(const float *scores, int64_t rows, int64_t cols,
                                       int64_t row_stride, const int32_t *row_start,
                                       const int32_t *row_end, int64_t block, int n,
                                       uint8_t *mask, int32_t *out_count, void *workspace,
                                       size_t workspace_bytes, nsa_cuda_stream stream)
{
    nsa__clear_error();
    nsah::TopkBlocksPlan T = {};
    nsa_status st = nsah::topk_blocks_plan(rows, cols, block, n, T);
    if (st) return st;
    /* the reference's order of checks: rows of scores, NULL pointers, workspace */
    if (rows > 1 && row_stride < cols)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "row_stride: %lld must be >= "
                         "cols %lld", (long long)row_stride, (long long)cols);
    if (rows > 0 && row_stride > 0 && rows - 1 > INT64_MAX / row_stride)
        return nsa__fail(NSA_ERR_OVERFLOW, "rows * row_stride: overflows 64 bits");
    if (rows > 0 && cols > 0 && !scores) return nsa__fail(NSA_ERR_NULL_POINTER, "scores: is NULL");
    if (rows > 0 && T.nblocks > 0 && !mask) return nsa__fail(NSA_ERR_NULL_POINTER, "mask: is NULL");
    if (T.total > 0 && !workspace) return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    if (workspace_bytes < T.total)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller than the %zu "
                         "this call needs (see nsa_cuda_topk_blocks_workspace_size)",
                         workspace_bytes, T.total);
    if (T.total > 0 && !nsah::aligned16(workspace))
        return nsa__fail(NSA_ERR_UNSUPPORTED, "workspace: must be 16-byte aligned");
    if (rows == 0) return NSA_OK;
    cudaStream_t s = (cudaStream_t)stream;
    float *bscores = T.scores ? (float *)workspace : NULL;
    if (T.scores) {
        const dim3 grid((unsigned)nsak::cdiv64(T.nblocks, T.per_cta),
                        (unsigned)(rows < 65535 ? rows : 65535));
        nsak::topk_block_scores_kernel<<<grid, NSA_TOPK_BLK_THREADS, 0, s>>>(
            scores, rows, cols, row_stride, row_start, row_end, block, T.nblocks, T.per_cta, n,
            bscores);
        NSA__LAUNCHED();
    }
    /* the rows' eligible scores on chip, as many as a row can have */
    const size_t staged =
        T.scores ? (size_t)(T.nblocks < NSA_TOPK_MASK_STAGED ? T.nblocks : NSA_TOPK_MASK_STAGED) * 4 : 0;
    if ((st = nsah::set_smem(nsak::topk_block_mask_kernel, staged))) return st;
    return nsah::launch_chained(nsak::topk_block_mask_kernel, dim3((unsigned)rows),
                                dim3(NSA_TOPK_THREADS), staged, s, cols, row_start, row_end,
                                block, T.nblocks, n, (const float *)bscores, mask, out_count);
}

#endif /* NSA_CUDA_IMPLEMENTATION_DONE */
#endif /* NSA_CUDA_IMPLEMENTATION */
