/* nsa_cp.h -- context parallelism: one batch of long sequences across the
   GPUs of a host, over NCCL.

   Each rank (one GPU) holds a shard of every sequence of the batch: the
   sequence is cut into 2R chunks (R ranks) and rank r holds chunks r and
   2R-1-r (one early, one late: causal work per rank is then balanced, since
   a query's work grows with its position). Forward gathers, from the other
   ranks, the keys and values that the rank's queries can see (every chunk
   up to its late one), lays them out as two prefixes per sequence,

       keys [0, end of chunk r)          with the queries of chunk r
       keys [0, end of chunk 2R-1-r)     with the queries of chunk 2R-1-r

   and runs the single-GPU path (nsa_cuda_forward) on that batch of 2B
   sequences with the local queries as suffix queries (the contract's
   cu_seqlens_q: the queries are the last positions of each prefix). The
   math is the single-GPU run's: a query's visible keys, compressed blocks
   (complete blocks only, all inside the prefix) and eligible selection
   blocks all lie in its prefix. Backward gathers K, V again, runs
   nsa_cuda_backward_f32kv on the same batch (dQ and dgates are local and
   final), adds the two prefixes' fp32 dK, dV into one buffer in the order
   of the owners' shards, and sums it over the ranks with one
   ncclReduceScatter (fp32, sum) that hands each rank its own rows; these
   are rounded once to the storage type.

   SHARDING (nsa_cp_chunk_start, nsa_cp_chunk_len)
     A sequence of N tokens has chunks c = 0 .. 2R-1 of C = floor(N / 2R)
     tokens; the last N mod 2R chunks get one token more. Rank r's shard of
     the sequence is chunk r followed by chunk 2R-1-r; its shard of the
     batch is the sequences' shards one after the other. q, k, v, gates,
     o, dO and every gradient of the rank use that row order.
     Example: R = 2, N = 10: chunks [0,2) [2,4) [4,7) [7,10); rank 0 holds
     rows 0,1,7,8,9, rank 1 holds rows 2,3,4,5,6.

   API (the style of nsa_cuda.h)
     The caller passes an nsa_batch that describes the WHOLE sequences (B,
     T, cu_seqlens and cu_seqlens_dev of all ranks' tokens together, H, Hkv,
     Dk, Dv, dtype) and whose q, k, v point at this rank's shard (contiguous
     k and v; q may have strides); its communicator (ncclComm_t, one rank per
     GPU) and a stream on the communicator's GPU. Sizes come from
     nsa_cp_sizes (the saved state, nsa_saved, of this rank) and
     nsa_cp_workspace_size; nothing allocates and nothing synchronises the
     host. All ranks must call with the same cfg and batch shape (the
     collectives pair up); a rank whose call fails before communicating
     leaves the others waiting, as any failed NCCL peer does.
     One process may drive several GPUs with one host thread per rank
     (ncclCommInitAll, then each thread calls for its rank).

   DETERMINISM
     The gathers are copies; nsa_cuda_backward_f32kv is deterministic; the
     two prefixes are added by one fixed kernel; and the sum over ranks is
     NCCL's reduce-scatter, whose order of reduction is fixed for a given
     communicator, size and algorithm (this code assumes so, and
     tests/test_cp.cu checks that two backward runs give the same bits).
     The forward of a query equals the single-GPU forward bit for bit where
     the kernels see the same tiles: every chunk start a multiple of the row
     tile (64 tokens suffices); otherwise it equals it within rounding.

   LIMITS
     - bf16 and fp16 storage, head dims and alignment as nsa_cuda.h.
     - No caller-compressed K_cmp / V_cmp, no caller selection, no suffix
       queries in the global batch (every position is a query).
     - Tiled selection (bq > 1): every chunk start must be a multiple of bq
       (so that the tiles are the single-GPU run's).
     - At most NSA_CP_MAX_SEQS sequences (the 2B-sequence local batch's
       offsets live on the host stack; no allocation) and NSA_CP_MAX_RANKS.
     - Memory: the two prefixes hold (2R+1)/(2R) of the keys; backward adds
       fp32 dK, dV of the prefixes and an fp32 buffer of all keys.
     - Communication is not overlapped with compute yet: the gathers and
       the reduce-scatter run on the caller's stream before and after the
       attention kernels.

   USING IT
     Only where NCCL is present (make cp; CMake NSA_WITH_NCCL). In the one
     .cu file that compiles nsa_cuda.h's implementation:
         #define NSA_CP_IMPLEMENTATION
         #include "nsa_cp.h"        (after nsa_cuda.h)
     and link NCCL. The declarations below are plain C and need neither
     CUDA nor NCCL headers; NSA_CP_LAYOUT_ONLY with NSA_CP_IMPLEMENTATION
     compiles only the host-side layout functions (any C compiler).

   LICENSE: MIT. */
#ifndef NSA_CP_H
#define NSA_CP_H

#include "nsa_cuda.h"

#ifndef NSA_CP_MAX_SEQS
#define NSA_CP_MAX_SEQS 256
#endif
#define NSA_CP_MAX_RANKS 64

/* Same type as ncclComm_t. */
typedef struct ncclComm *nsa_cp_comm;

/* Chunk c (0 .. 2*nranks-1) of a sequence of N tokens: its first token and
   its length (the last N mod 2R chunks are one token longer). */
static inline NSA_HD int64_t nsa_cp_chunk_start(int64_t N, int c, int nranks)
{
    const int64_t nch = 2 * (int64_t)nranks, C = N / nch, first_long = nch - N % nch;
    return c * C + (c > first_long ? c - first_long : 0);
}
static inline NSA_HD int64_t nsa_cp_chunk_len(int64_t N, int c, int nranks)
{
    return nsa_cp_chunk_start(N, c + 1, nranks) - nsa_cp_chunk_start(N, c, nranks);
}
/* The rank that holds chunk c: chunks r and 2R-1-r belong to rank r. */
static inline NSA_HD int nsa_cp_chunk_owner(int c, int nranks)
{
    return c < nranks ? c : 2 * nranks - 1 - c;
}

/* The offsets of the local batch of rank `rank`, 2B sequences: sequence 2s
   is keys [0, end of chunk rank) of global sequence s with that chunk's
   queries, sequence 2s+1 keys [0, end of chunk 2R-1-rank) with its queries.
   cu (B+1) are the global offsets; writes cu_keys and cu_queries (2B+1).
   Shared by the host (sizes, launches) and the device (the kernels' copy). */
static inline NSA_HD void nsa_cp_local_offsets(const int32_t *cu, int B, int rank,
                                               int nranks, int32_t *cu_keys,
                                               int32_t *cu_queries)
{
    const int a = rank, b = 2 * nranks - 1 - rank;
    int64_t k = 0, q = 0;
    cu_keys[0] = cu_queries[0] = 0;
    for (int s = 0; s < B; ++s) {
        const int64_t N = (int64_t)cu[s + 1] - cu[s];
        k += nsa_cp_chunk_start(N, a + 1, nranks);
        q += nsa_cp_chunk_len(N, a, nranks);
        cu_keys[2 * s + 1] = (int32_t)k;
        cu_queries[2 * s + 1] = (int32_t)q;
        k += nsa_cp_chunk_start(N, b + 1, nranks);
        q += nsa_cp_chunk_len(N, b, nranks);
        cu_keys[2 * s + 2] = (int32_t)k;
        cu_queries[2 * s + 2] = (int32_t)q;
    }
}

/* The local batch of rank `rank` out of `nranks`: validates cfg and the
   global batch (shapes, the rules of LIMITS), fills cu_keys and cu_queries
   (2B+1 each, caller-owned host arrays) and *local: the global batch with
   B = 2B, those offsets, q as given, k = v = NULL (the gathered prefixes)
   and no device offsets (set cu_seqlens_dev, cu_seqlens_q_dev to use it).
   nsa_sizes_get(cfg, local) then gives this rank's sizes. */
NSADEF nsa_status nsa_cp_local_batch(const nsa_config *cfg, const nsa_batch *batch,
                                     int rank, int nranks, int32_t *cu_keys,
                                     int32_t *cu_queries, nsa_batch *local);

/* This rank's sizes (of its local batch): TQ is the shard's rows (q, o,
   gates, dq; k, v, dk, dv have TQ rows of Hkv heads), lse, sel_idx,
   sel_count, k_cmp, v_cmp size the nsa_saved that forward fills. */
NSADEF nsa_status nsa_cp_sizes(const nsa_config *cfg, const nsa_batch *batch, int rank,
                               int nranks, nsa_sizes *local);

NSADEF nsa_status nsa_cp_workspace_size(const nsa_config *cfg, const nsa_batch *batch,
                                        int rank, int nranks, size_t *bytes);

/* batch: the global shape with this rank's q, k, v shards; gates, o: the
   shard's [TQ, H, 3] and [TQ, H, Dv]; saved: sized by nsa_cp_sizes. */
NSADEF nsa_status nsa_cp_forward(const nsa_config *cfg, const nsa_batch *batch,
                                 const void *gates, void *o, nsa_saved *saved,
                                 void *workspace, size_t workspace_bytes,
                                 nsa_cp_comm comm, nsa_cuda_stream stream);
/* grads: dq, dgates of the shard's queries; dk, dv of the shard's keys
   ([TQ, Hkv, D]: the sum over every rank's queries). dk_cmp, dv_cmp unused. */
NSADEF nsa_status nsa_cp_backward(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, const void *d_o,
                                  const nsa_saved *saved, nsa_grads *grads,
                                  void *workspace, size_t workspace_bytes,
                                  nsa_cp_comm comm, nsa_cuda_stream stream);

#endif /* NSA_CP_H */

/* ======================================================================== */
#ifdef NSA_CP_IMPLEMENTATION
#ifndef NSA_CP_IMPLEMENTATION_DONE
#define NSA_CP_IMPLEMENTATION_DONE

NSADEF nsa_status nsa_cp_local_batch(const nsa_config *cfg, const nsa_batch *batch,
                                     int rank, int nranks, int32_t *cu_keys,
                                     int32_t *cu_queries, nsa_batch *local)
{
    nsa_sizes sz;
    nsa_status st;
    int s, c;
    int64_t k = 0;
    if (!cu_keys || !cu_queries || !local)
        return nsa__fail(NSA_ERR_NULL_POINTER, "cu_keys, cu_queries, local: NULL");
    if ((st = nsa_sizes_get(cfg, batch, &sz))) return st;
    if (nranks < 1 || nranks > NSA_CP_MAX_RANKS || rank < 0 || rank >= nranks)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rank %d of %d: need 0 <= rank < nranks "
                         "<= %d", rank, nranks, NSA_CP_MAX_RANKS);
    if (batch->cu_seqlens_q)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.cu_seqlens_q: context parallelism "
                         "takes whole sequences (every position a query)");
    if (cfg->caller_compressed || batch->sel_idx || batch->sel_count)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "cfg.caller_compressed, batch.sel_idx: "
                         "not supported by context parallelism");
    if (sz.k_stride_token != (int64_t)batch->Hkv * batch->Dk ||
        sz.k_stride_head != batch->Dk ||
        sz.v_stride_token != (int64_t)batch->Hkv * batch->Dv || sz.v_stride_head != batch->Dv)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.k, v strides: context parallelism "
                         "needs contiguous k and v shards");
    for (s = 0; s < batch->B; ++s) {
        const int64_t N = (int64_t)batch->cu_seqlens[s + 1] - batch->cu_seqlens[s];
        k += nsa_cp_chunk_start(N, rank + 1, nranks) +
             nsa_cp_chunk_start(N, 2 * nranks - rank, nranks);
        if (k > INT32_MAX)
            return nsa__fail(NSA_ERR_OVERFLOW, "batch: the two key prefixes of rank %d "
                             "pass 2^31 keys", rank);
        if ((cfg->branches & NSA_BRANCH_SLC) && cfg->bq > 1)
            for (c = 0; c < 2 * nranks; ++c)
                if (nsa_cp_chunk_start(N, c, nranks) % cfg->bq != 0)
                    return nsa__fail(NSA_ERR_UNSUPPORTED, "cfg.bq: %d does not divide the "
                                     "start %lld of chunk %d of sequence %d (tiles would "
                                     "differ from the single-GPU run's)", cfg->bq,
                                     (long long)nsa_cp_chunk_start(N, c, nranks), c, s);
    }
    nsa_cp_local_offsets(batch->cu_seqlens, batch->B, rank, nranks, cu_keys, cu_queries);
    *local = *batch;
    local->B = 2 * batch->B;
    local->T = cu_keys[2 * batch->B];
    local->TQ = cu_queries[2 * batch->B];
    local->cu_seqlens = cu_keys;
    local->cu_seqlens_q = cu_queries;
    local->cu_seqlens_dev = local->cu_seqlens_q_dev = NULL;
    local->k = local->v = NULL;
    local->k_stride_token = local->k_stride_head = 0;
    local->v_stride_token = local->v_stride_head = 0;
    return NSA_OK;
}

NSADEF nsa_status nsa_cp_sizes(const nsa_config *cfg, const nsa_batch *batch, int rank,
                               int nranks, nsa_sizes *local)
{
    int32_t ck[2 * NSA_CP_MAX_SEQS + 1], cq[2 * NSA_CP_MAX_SEQS + 1];
    nsa_batch lb;
    nsa_status st;
    nsa__clear_error();
    if (!local) return nsa__fail(NSA_ERR_NULL_POINTER, "local: is NULL");
    if (batch && batch->B > NSA_CP_MAX_SEQS)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.B: %d sequences, more than "
                         "NSA_CP_MAX_SEQS = %d", batch->B, NSA_CP_MAX_SEQS);
    if ((st = nsa_cp_local_batch(cfg, batch, rank, nranks, ck, cq, &lb))) return st;
    return nsa_sizes_get(cfg, &lb, local);
}

#ifndef NSA_CP_LAYOUT_ONLY
#ifndef __CUDACC__
#error "NSA_CP_IMPLEMENTATION must be compiled by nvcc (or with NSA_CP_LAYOUT_ONLY)"
#endif
#ifndef NSA_CUDA_IMPLEMENTATION_DONE
#error "nsa_cp.h's implementation goes in the translation unit of nsa_cuda.h's"
#endif

#include <nccl.h>

namespace nsacp {

#define NSA__NCCL(call)                                                        \
    do {                                                                       \
        ncclResult_t r_ = (call);                                              \
        if (r_ != ncclSuccess)                                                 \
            return nsa__fail(NSA_ERR_DEVICE, "NCCL: %s (%s:%d)",               \
                             ncclGetErrorString(r_), __FILE__, __LINE__);      \
    } while (0)

struct Plan {
    int R, r, B;
    int32_t kcu[2 * NSA_CP_MAX_SEQS + 1], qcu[2 * NSA_CP_MAX_SEQS + 1];
    nsa_batch local;
    nsa_sizes lsz;       /* of the local batch */
    int64_t rows, rows_max; /* this rank's shard rows; the most of any rank */
    size_t esz, kd, vd;  /* bytes of an element; elements of a K row, a V row */
    size_t ws_bytes;     /* nsa_cuda_workspace_size of the local batch */
    /* workspace regions (byte offsets); full_* overlay kp, vp, ws, which
       backward no longer reads when it fills them */
    size_t o_cu, o_kp, o_vp, o_ws, o_full_k, o_full_v, o_dkp, o_dvp, total;
};

static size_t align256(size_t x) { return (x + 255) & ~(size_t)255; }

static nsa_status plan_make(const nsa_config *cfg, const nsa_batch *x, int rank, int R,
                            Plan &P)
{
    nsa_status st;
    if (!x) return nsa__fail(NSA_ERR_NULL_POINTER, "batch: is NULL");
    if (x->B > NSA_CP_MAX_SEQS)
        return nsa__fail(NSA_ERR_UNSUPPORTED, "batch.B: %d sequences, more than "
                         "NSA_CP_MAX_SEQS = %d", x->B, NSA_CP_MAX_SEQS);
    if ((st = nsa_cp_local_batch(cfg, x, rank, R, P.kcu, P.qcu, &P.local))) return st;
    P.R = R;
    P.r = rank;
    P.B = x->B;
    P.rows = P.local.TQ;
    P.rows_max = 0;
    for (int p = 0; p < R; ++p) {
        int64_t n = 0;
        for (int s = 0; s < x->B; ++s) {
            const int64_t N = (int64_t)x->cu_seqlens[s + 1] - x->cu_seqlens[s];
            n += nsa_cp_chunk_len(N, p, R) + nsa_cp_chunk_len(N, 2 * R - 1 - p, R);
        }
        if (n > P.rows_max) P.rows_max = n;
    }
    /* sizing only: the device offsets are not read here, but the CUDA
       path's validator wants them set */
    P.local.cu_seqlens_dev = P.kcu;
    P.local.cu_seqlens_q_dev = P.qcu;
    if ((st = nsa_cuda_workspace_size(cfg, &P.local, &P.ws_bytes))) return st;
    if ((st = nsa_sizes_get(cfg, &P.local, &P.lsz))) return st;
    P.esz = 2;
    P.kd = (size_t)x->Hkv * x->Dk;
    P.vd = (size_t)x->Hkv * x->Dv;
    const size_t Tp = (size_t)P.local.T;
    size_t o = 0;
    P.o_cu = o; o = align256(o + (size_t)2 * (2 * x->B + 1) * 4);
    const size_t a0 = o;
    P.o_kp = o; o = align256(o + Tp * P.kd * P.esz);
    P.o_vp = o; o = align256(o + Tp * P.vd * P.esz);
    P.o_ws = o; o = align256(o + P.ws_bytes);
    const size_t a_end = o;
    o = a0;
    P.o_full_k = o; o = align256(o + (size_t)R * P.rows_max * P.kd * 4);
    P.o_full_v = o; o = align256(o + (size_t)R * P.rows_max * P.vd * 4);
    o = o > a_end ? o : a_end;
    P.o_dkp = o; o = align256(o + Tp * P.kd * 4);
    P.o_dvp = o; o = align256(o + Tp * P.vd * 4);
    P.total = o;
    return NSA_OK;
}

/* rank, nranks from the communicator; the plan; the workspace's size */
static nsa_status begin(const nsa_config *cfg, const nsa_batch *x, nsa_cp_comm comm,
                        Plan &P, void *ws, size_t wsb)
{
    int rank = 0, R = 0;
    nsa_status st;
    if (!comm) return nsa__fail(NSA_ERR_NULL_POINTER, "comm: is NULL");
    NSA__NCCL(ncclCommUserRank((ncclComm_t)comm, &rank));
    NSA__NCCL(ncclCommCount((ncclComm_t)comm, &R));
    if ((st = plan_make(cfg, x, rank, R, P))) return st;
    if (!ws) return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    if (wsb < P.total)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller than the "
                         "%zu this call needs (see nsa_cp_workspace_size)", wsb, P.total);
    if ((P.rows > 0 && (!x->q || !x->k || !x->v)))
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.q, k, v: NULL");
    P.local.cu_seqlens_dev = (const int32_t *)((char *)ws + P.o_cu);
    P.local.cu_seqlens_q_dev = P.local.cu_seqlens_dev + 2 * P.B + 1;
    P.local.k = (char *)ws + P.o_kp;
    P.local.v = (char *)ws + P.o_vp;
    return NSA_OK;
}

/* The device copy of the local offsets, from the global device offsets. */
__global__ void local_offsets_kernel(const int32_t *cu, int B, int rank, int R,
                                     int32_t *cu_keys, int32_t *cu_queries)
{
    if (blockIdx.x == 0 && threadIdx.x == 0)
        nsa_cp_local_offsets(cu, B, rank, R, cu_keys, cu_queries);
}

/* dst = a + b over n floats; either may be NULL (then the other is copied). */
__global__ void add2_kernel(float *dst, const float *a, const float *b, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = a && b ? a[i] + b[i] : a ? a[i] : b[i];
}

template <typename T>
__global__ void round_kernel(const float *in, T *out, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        out[i] = nsak::Ty<T>::from_f(in[i]);
}

static int grid_for(int64_t n)
{
    int64_t g = (n + 255) / 256;
    return (int)(g < 65536 ? (g > 0 ? g : 1) : 65536);
}

/* The seq-th sequence's row offset in rank p's shard, for every p. */
struct ShardOffsets {
    int64_t off[NSA_CP_MAX_RANKS];
    void start(int R) { for (int p = 0; p < R; ++p) off[p] = 0; }
    void next(const nsa_batch *x, int s, int R)
    {
        const int64_t N = (int64_t)x->cu_seqlens[s + 1] - x->cu_seqlens[s];
        for (int p = 0; p < R; ++p)
            off[p] += nsa_cp_chunk_len(N, p, R) + nsa_cp_chunk_len(N, 2 * R - 1 - p, R);
    }
};

/* Row of chunk c within its owner's shard of sequence s (after off[p]). */
static int64_t row_in_shard(int64_t N, int c, int R)
{
    const int p = nsa_cp_chunk_owner(c, R);
    return c == p ? 0 : nsa_cp_chunk_len(N, p, R);
}

/* Gather K and V into the two prefixes of every sequence: chunks 0 ..
   2R-1-r into the long prefix (own chunks copied, the others received from
   their owners, every shard chunk sent to the ranks that need it), then
   the short prefix copied from the long one's start. One NCCL group; a
   pair's messages go in the same (sequence, chunk, K then V) order on both
   sides. */
static nsa_status gather_kv(const nsa_batch *x, const Plan &P, void *ws, ncclComm_t comm,
                            cudaStream_t s)
{
    const int R = P.R, r = P.r, br = 2 * R - 1 - r;
    char *kp = (char *)ws + P.o_kp, *vp = (char *)ws + P.o_vp;
    const char *ks = (const char *)x->k, *vs = (const char *)x->v;
    const size_t kb = P.kd * P.esz, vb = P.vd * P.esz; /* bytes a row */
    ShardOffsets so;
    NSA__NCCL(ncclGroupStart());
    so.start(R);
    for (int q = 0; q < P.B; ++q) {
        const int64_t N = (int64_t)x->cu_seqlens[q + 1] - x->cu_seqlens[q];
        const int64_t base = P.kcu[2 * q + 1];
        for (int c = 0; c <= br; ++c) { /* what this rank receives */
            const int64_t len = nsa_cp_chunk_len(N, c, R);
            const int p = nsa_cp_chunk_owner(c, R);
            if (len == 0 || p == r) continue;
            const int64_t dst = base + nsa_cp_chunk_start(N, c, R);
            NSA__NCCL(ncclRecv(kp + dst * kb, (size_t)len * kb, ncclUint8, p, comm, s));
            NSA__NCCL(ncclRecv(vp + dst * vb, (size_t)len * vb, ncclUint8, p, comm, s));
        }
        for (int p = 0; p < R; ++p) { /* what it sends: its chunks r, 2R-1-r */
            if (p == r) continue;
            const int cs[2] = {r, br};
            for (int i = 0; i < 2; ++i) {
                const int c = cs[i];
                const int64_t len = nsa_cp_chunk_len(N, c, R);
                if (len == 0 || c > 2 * R - 1 - p) continue;
                const int64_t src = so.off[r] + row_in_shard(N, c, R);
                NSA__NCCL(ncclSend(ks + src * kb, (size_t)len * kb, ncclUint8, p, comm, s));
                NSA__NCCL(ncclSend(vs + src * vb, (size_t)len * vb, ncclUint8, p, comm, s));
            }
        }
        so.next(x, q, R);
    }
    NSA__NCCL(ncclGroupEnd());
    /* own chunks into the long prefix, then the short prefix */
    so.start(R);
    for (int q = 0; q < P.B; ++q) {
        const int64_t N = (int64_t)x->cu_seqlens[q + 1] - x->cu_seqlens[q];
        const int cs[2] = {r, br};
        for (int i = 0; i < 2; ++i) {
            const int64_t len = nsa_cp_chunk_len(N, cs[i], R);
            if (len == 0) continue;
            const int64_t dst = P.kcu[2 * q + 1] + nsa_cp_chunk_start(N, cs[i], R);
            const int64_t src = so.off[r] + row_in_shard(N, cs[i], R);
            NSA__CK(cudaMemcpyAsync(kp + dst * kb, ks + src * kb, (size_t)len * kb,
                                    cudaMemcpyDeviceToDevice, s));
            NSA__CK(cudaMemcpyAsync(vp + dst * vb, vs + src * vb, (size_t)len * vb,
                                    cudaMemcpyDeviceToDevice, s));
        }
        const int64_t ea = P.kcu[2 * q + 1] - P.kcu[2 * q];
        if (ea > 0) {
            NSA__CK(cudaMemcpyAsync(kp + (int64_t)P.kcu[2 * q] * kb,
                                    kp + (int64_t)P.kcu[2 * q + 1] * kb, (size_t)ea * kb,
                                    cudaMemcpyDeviceToDevice, s));
            NSA__CK(cudaMemcpyAsync(vp + (int64_t)P.kcu[2 * q] * vb,
                                    vp + (int64_t)P.kcu[2 * q + 1] * vb, (size_t)ea * vb,
                                    cudaMemcpyDeviceToDevice, s));
        }
        so.next(x, q, R);
    }
    return NSA_OK;
}

static nsa_status launch_offsets(const nsa_batch *x, const Plan &P, cudaStream_t s)
{
    if (P.B == 0) return NSA_OK;
    if (!x->cu_seqlens_dev)
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.cu_seqlens_dev: is NULL");
    local_offsets_kernel<<<1, 32, 0, s>>>(x->cu_seqlens_dev, P.B, P.r, P.R,
                                          (int32_t *)P.local.cu_seqlens_dev,
                                          (int32_t *)P.local.cu_seqlens_q_dev);
    NSA__LAUNCHED();
    return NSA_OK;
}

/* dK or dV: the prefixes' fp32 partials (pre, [Tp, D-row]) added into the
   owners' row order (full, [R, rows_max, D-row]); padding rows 0. */
static nsa_status fold(const nsa_batch *x, const Plan &P, const float *pre, float *full,
                       size_t d, cudaStream_t s)
{
    const int R = P.R, r = P.r;
    ShardOffsets so;
    so.start(R);
    for (int q = 0; q < P.B; ++q) {
        const int64_t N = (int64_t)x->cu_seqlens[q + 1] - x->cu_seqlens[q];
        for (int p = 0; p < R; ++p) {
            const int cs[2] = {p, 2 * R - 1 - p};
            for (int i = 0; i < 2; ++i) {
                const int c = cs[i];
                const int64_t len = nsa_cp_chunk_len(N, c, R);
                if (len == 0) continue;
                float *dst = full + ((int64_t)p * P.rows_max + so.off[p] +
                                     row_in_shard(N, c, R)) * (int64_t)d;
                const int64_t at = nsa_cp_chunk_start(N, c, R);
                /* chunk c is in the short prefix iff c <= r, in the long one
                   iff c <= 2R-1-r */
                const float *a = c <= r ? pre + ((int64_t)P.kcu[2 * q] + at) * (int64_t)d : NULL;
                const float *b = c <= 2 * R - 1 - r
                                     ? pre + ((int64_t)P.kcu[2 * q + 1] + at) * (int64_t)d
                                     : NULL;
                const int64_t n = len * (int64_t)d;
                if (!a && !b) {
                    NSA__CK(cudaMemsetAsync(dst, 0, (size_t)n * 4, s));
                } else {
                    add2_kernel<<<grid_for(n), 256, 0, s>>>(dst, a, b, n);
                    NSA__LAUNCHED();
                }
            }
        }
        so.next(x, q, R);
    }
    for (int p = 0; p < R; ++p) { /* padding rows after each shard */
        const int64_t pad = P.rows_max - so.off[p];
        if (pad > 0)
            NSA__CK(cudaMemsetAsync(full + ((int64_t)p * P.rows_max + so.off[p]) * (int64_t)d,
                                    0, (size_t)(pad * (int64_t)d) * 4, s));
    }
    return NSA_OK;
}

template <typename T>
static nsa_status round_out(const float *in, void *out, int64_t n, cudaStream_t s)
{
    if (n <= 0) return NSA_OK;
    round_kernel<T><<<grid_for(n), 256, 0, s>>>(in, (T *)out, n);
    NSA__LAUNCHED();
    return NSA_OK;
}

} /* namespace nsacp */

NSADEF nsa_status nsa_cp_workspace_size(const nsa_config *cfg, const nsa_batch *batch,
                                        int rank, int nranks, size_t *bytes)
{
    nsacp::Plan P;
    nsa_status st;
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    if ((st = nsacp::plan_make(cfg, batch, rank, nranks, P))) return st;
    *bytes = P.total;
    return NSA_OK;
}

NSADEF nsa_status nsa_cp_forward(const nsa_config *cfg, const nsa_batch *batch,
                                 const void *gates, void *o, nsa_saved *saved,
                                 void *workspace, size_t workspace_bytes,
                                 nsa_cp_comm comm, nsa_cuda_stream stream)
{
    nsacp::Plan P;
    nsa_status st;
    cudaStream_t s = (cudaStream_t)stream;
    nsa__clear_error();
    if ((st = nsacp::begin(cfg, batch, comm, P, workspace, workspace_bytes))) return st;
    /* every check of the local call before the first message, so that a
       rejected call fails before its peers wait on it */
    if (!o && P.lsz.o > 0) return nsa__fail(NSA_ERR_NULL_POINTER, "o: is NULL");
    if ((st = nsa__check_saved(cfg, &P.lsz, saved, 0))) return st;
    void *ws = (char *)workspace + P.o_ws;
    if ((st = nsacp::launch_offsets(batch, P, s))) return st;
    if ((st = nsacp::gather_kv(batch, P, workspace, (ncclComm_t)comm, s))) return st;
    return nsa_cuda_forward(cfg, &P.local, gates, o, saved, ws, P.ws_bytes, stream);
}

NSADEF nsa_status nsa_cp_backward(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, const void *d_o,
                                  const nsa_saved *saved, nsa_grads *grads,
                                  void *workspace, size_t workspace_bytes,
                                  nsa_cp_comm comm, nsa_cuda_stream stream)
{
    nsacp::Plan P;
    nsa_status st;
    cudaStream_t s = (cudaStream_t)stream;
    nsa__clear_error();
    if ((st = nsacp::begin(cfg, batch, comm, P, workspace, workspace_bytes))) return st;
    if (!d_o && P.lsz.o > 0) return nsa__fail(NSA_ERR_NULL_POINTER, "d_o: is NULL");
    if ((st = nsa__check_saved(cfg, &P.lsz, saved, 1))) return st;
    if (!grads) return nsa__fail(NSA_ERR_NULL_POINTER, "grads: is NULL");
    if (P.rows > 0 && (!grads->dq || !grads->dk || !grads->dv))
        return nsa__fail(NSA_ERR_NULL_POINTER, "grads.dq, dk, dv: NULL");
    if (gates && P.rows > 0 && !grads->dgates)
        return nsa__fail(NSA_ERR_NULL_POINTER, "grads.dgates: is NULL while gates are given");
    char *w = (char *)workspace;
    float *dkp = (float *)(w + P.o_dkp), *dvp = (float *)(w + P.o_dvp);
    float *fk = (float *)(w + P.o_full_k), *fv = (float *)(w + P.o_full_v);
    nsa_grads lg = {grads->dq, dkp, dvp, gates ? grads->dgates : NULL, NULL, NULL};
    if ((st = nsacp::launch_offsets(batch, P, s))) return st;
    if ((st = nsacp::gather_kv(batch, P, workspace, (ncclComm_t)comm, s))) return st;
    if ((st = nsa_cuda_backward_f32kv(cfg, &P.local, gates, d_o, saved, &lg, w + P.o_ws,
                                      P.ws_bytes, stream)))
        return st;
    /* full_* overlay the prefixes and the single-GPU workspace, whose last
       reader is the backward just queued on the same stream */
    if ((st = nsacp::fold(batch, P, dkp, fk, P.kd, s))) return st;
    if ((st = nsacp::fold(batch, P, dvp, fv, P.vd, s))) return st;
    const size_t nk = (size_t)P.rows_max * P.kd, nv = (size_t)P.rows_max * P.vd;
    NSA__NCCL(ncclGroupStart());
    NSA__NCCL(ncclReduceScatter(fk, fk + (size_t)P.r * nk, nk, ncclFloat32, ncclSum,
                                (ncclComm_t)comm, s));
    NSA__NCCL(ncclReduceScatter(fv, fv + (size_t)P.r * nv, nv, ncclFloat32, ncclSum,
                                (ncclComm_t)comm, s));
    NSA__NCCL(ncclGroupEnd());
    const int64_t ek = P.rows * (int64_t)P.kd, ev = P.rows * (int64_t)P.vd;
    if (batch->dtype == NSA_BF16) {
        if ((st = nsacp::round_out<__nv_bfloat16>(fk + (size_t)P.r * nk, grads->dk, ek, s)))
            return st;
        return nsacp::round_out<__nv_bfloat16>(fv + (size_t)P.r * nv, grads->dv, ev, s);
    }
    if ((st = nsacp::round_out<__half>(fk + (size_t)P.r * nk, grads->dk, ek, s))) return st;
    return nsacp::round_out<__half>(fv + (size_t)P.r * nv, grads->dv, ev, s);
}

#endif /* NSA_CP_LAYOUT_ONLY */
#endif /* NSA_CP_IMPLEMENTATION_DONE */
#endif /* NSA_CP_IMPLEMENTATION */
