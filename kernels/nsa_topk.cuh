/* kernels/nsa_topk.cuh -- exact top-k per row (nsa_cuda_topk_rows).

   The ranking is the contract's (Selection step 6) on each row's range
   [st, en) (nsa.h, nsa_topk_range): every column becomes the 64-bit rank
   key nsa_rank_key(nsa_score_key(score), column - st), so -0 = +0, NaN
   ranks lowest and equal scores rank the lower column higher; the keys of
   a row are distinct, and "the kk = min(k, width) largest keys" is exactly
   the rule, never more, never fewer, with no tie pass.

   A radix select on the rank keys, 13-bit digits from the top, finds them:
   at each digit the histogram of the keys still in play says which digit
   value holds the remain-th largest; all keys of higher digits are taken,
   and only that digit's keys stay in play. When every key left in play is
   needed (count == remain) it stops early. The taken keys are those whose
   decided top bits are >= the decided prefix.

   Bytes, not arithmetic, set the speed, so the row is read from global
   memory twice and no more: pass 1 histograms the first digit (the score
   key's top 13 bits), pass 2 keeps the keys of higher digits (fewer than
   kk) and the keys of the pivot digit (typically a few thousand of the
   row; about 1/32 of uniform scores) in shared memory; the remaining
   digits are found there. If the pivot digit holds more keys than shared
   memory does (a row of nearly equal scores), the remaining digits are
   found by passes over the row in global memory instead: correct, slower.
   The taken keys are sorted (bitonic, descending) and written best first.

   Two ways to spread rows over the GPU:
     - many rows: one CTA per row (topk_row_kernel), two CTAs per SM so one
       streams while the other sorts;
     - few rows (fewer than the GPU has SMs): each row is split over
       `slices` CTAs. topk_split_hist_kernel histograms each slice and adds
       it to the row's histogram in the workspace; the last CTA of a row
       (a ticket counter) finds the pivot digit. topk_split_scatter_kernel
       re-reads each slice (from L2) and appends the keys of higher digits
       and of the pivot digit to the row's lists in the workspace.
       topk_split_finish_kernel (one CTA per row) loads the lists into
       shared memory and finishes as the one-CTA path does.
   Every launch is on the caller's stream; the workspace's counters are
   cleared by cudaMemsetAsync first; nothing synchronises with the host. */
#ifndef NSA_KERNELS_TOPK_CUH
#define NSA_KERNELS_TOPK_CUH

#include "nsa_common.cuh"
#include <cooperative_groups.h>

namespace nsak {

#define NSA_TOPK_KMAX 4096
#define NSA_TOPK_THREADS 512        /* one-CTA-per-row and finish kernels */
#define NSA_TOPK_SPLIT_THREADS 256  /* the split path's slice kernels      */
#define NSA_TOPK_DIGIT 13           /* bits per radix digit                */
#define NSA_TOPK_BINS (1 << NSA_TOPK_DIGIT)
#define NSA_TOPK_SHIFT0 (64 - NSA_TOPK_DIGIT) /* first digit: key bits 63..51 */
/* Dynamic shared memory of the one-CTA kernels: two CTAs fit an H100 SM
   (228 KB); A100 (164 KB) runs one. */
#define NSA_TOPK_SMEM (110 * 1024)
/* Split the rows over several CTAs when there are at most this many (an
   H100 has 132 SMs) and each row has at least two slices' worth; a row
   gets up to NSA_TOPK_SPLIT_CTAS / rows slices of NSA_TOPK_SLICE columns
   or more. */
#define NSA_TOPK_SPLIT_ROWS 128
#define NSA_TOPK_SLICE 4096
#define NSA_TOPK_SPLIT_CTAS 512

/* Per-row bookkeeping of the split path (in the workspace, cleared). */
struct TopkRowInfo {
    uint32_t n_sure;  /* keys of digits above the pivot, appended      */
    uint32_t n_piv;   /* keys of the pivot digit, appended             */
    uint32_t ticket;  /* slices that have added their histogram       */
    uint32_t digit;   /* the pivot digit (the first 13 bits)           */
    uint32_t remain;  /* how many of the pivot digit's keys are taken  */
    uint32_t count;   /* how many keys the pivot digit holds           */
    uint32_t pad[2];
};

/* Scratch of find_digit and the append counters. */
struct TopkShared {
    uint32_t scan[32];
    uint32_t res[3];
    uint32_t n_sel, n_piv;
};

/* The width of the pivot list that fits beside the histogram and the
   sorted selection (the host sizes the split path's lists the same way). */
__host__ __device__ inline int topk_sort_len(int k)
{
    int np = 1;
    while (np < k) np <<= 1;
    return np;
}
__host__ __device__ inline int64_t topk_piv_cap(int k)
{
    return ((int64_t)NSA_TOPK_SMEM - NSA_TOPK_BINS * 4 - (int64_t)topk_sort_len(k) * 8) / 8;
}

__device__ __forceinline__ uint64_t topk_rank(float v, int64_t rel)
{
    return nsa_rank_key(nsa_score_key(v), rel);
}

/* Slot of the calling thread in an append to *ctr, one atomic per group of
   converged threads that append together. */
__device__ __forceinline__ uint32_t topk_append(uint32_t *ctr)
{
    namespace cg = cooperative_groups;
    cg::coalesced_group g = cg::coalesced_threads();
    uint32_t base = 0;
    if (g.thread_rank() == 0) base = atomicAdd(ctr, (uint32_t)g.size());
    return g.shfl(base, 0u) + (uint32_t)g.thread_rank();
}

/* f(i, row[i]) for every i in [lo, hi), by all threads of the block:
   16-byte loads for the aligned body (four in flight per thread), REV walks
   the body from the end (what a previous forward pass read last is the
   likeliest to be in L2), STREAM marks the loads evict-first. */
template <bool REV, bool STREAM, typename F>
__device__ __forceinline__ void topk_for_each(const float *row, int64_t lo, int64_t hi, F f)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t n = hi - lo;
    if (n <= 0) return;
    const float *p = row + lo;
    const int64_t head = min(n, (int64_t)(((16u - ((uintptr_t)p & 15u)) & 15u) >> 2));
    const int64_t nv = (n - head) >> 2, body_end = head + nv * 4;
    for (int64_t i = tid; i < head; i += nt) f(lo + i, p[i]);
    for (int64_t i = body_end + tid; i < n; i += nt) f(lo + i, p[i]);
    const float4 *v = (const float4 *)(p + head);
    constexpr int U = 4;
    for (int64_t j0 = tid; j0 < nv; j0 += (int64_t)U * nt) {
        float4 x[U];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t j = j0 + (int64_t)u * nt;
            const int64_t jj = REV ? nv - 1 - j : j;
            if (j < nv) x[u] = STREAM ? __ldcs(v + jj) : __ldg(v + jj);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t j = j0 + (int64_t)u * nt;
            const int64_t jj = REV ? nv - 1 - j : j;
            if (j < nv) {
                const int64_t i = lo + head + jj * 4;
                f(i, x[u].x);
                f(i + 1, x[u].y);
                f(i + 2, x[u].z);
                f(i + 3, x[u].w);
            }
        }
    }
}

/* The digit that holds the remain-th largest key, from a histogram of nbins
   bins in shared memory: the largest d with sum(hist[d..]) >= remain.
   res[0] = d, res[1] = remain - sum(hist[d+1..]) (how many of digit d are
   taken), res[2] = hist[d]. Needs sum(hist) >= remain >= 1. Called by every
   thread of the block (it synchronises); res is valid on return until the
   next call. Thread t sums the t-th group of bins from the top; a block scan
   of those sums finds the one group that crosses remain. */
__device__ void topk_find_digit(const uint32_t *hist, int nbins, uint32_t remain, TopkShared &sh)
{
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const int per = (nbins + blockDim.x - 1) / blockDim.x;
    const int hi = nbins - tid * per, lo = max(hi - per, 0);
    uint32_t sum = 0;
    for (int b = lo; b < hi; ++b) sum += hist[b];
    uint32_t incl = sum;
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) sh.scan[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        uint32_t w = lane < nw ? sh.scan[lane] : 0u, wi = w;
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t y = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += y;
        }
        if (lane < nw) sh.scan[lane] = wi - w; /* warps before this one */
    }
    __syncthreads();
    incl += sh.scan[warp];
    const uint32_t excl = incl - sum;
    if (excl < remain && incl >= remain) {
        uint32_t acc = excl;
        for (int b = hi - 1; b >= lo; --b) {
            if (acc + hist[b] >= remain) {
                sh.res[0] = (uint32_t)b;
                sh.res[1] = remain - acc;
                sh.res[2] = hist[b];
                break;
            }
            acc += hist[b];
        }
    }
    __syncthreads();
}

/* The first digit of the keys of src[st, en) (a row, or a row's block
   scores): its histogram in hist (NSA_TOPK_BINS entries, zeroed here), then
   topk_find_digit for the kk best (sh.res). Called by every thread of the
   block; the barriers also publish what the threads set in sh before. */
__device__ void topk_first_digit(const float *src, int64_t st, int64_t en, uint32_t kk,
                                 uint32_t *hist, TopkShared &sh)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    for (int b = tid; b < NSA_TOPK_BINS; b += nt) hist[b] = 0;
    __syncthreads();
    topk_for_each<false, false>(src, st, en, [&](int64_t, float v) {
        atomicAdd(&hist[nsa_score_key(v) >> (32 - NSA_TOPK_DIGIT)], 1u);
    });
    __syncthreads();
    topk_find_digit(hist, NSA_TOPK_BINS, kk, sh);
}

/* The digits after the first. The pivot digit's keys are piv[0 .. count)
   when count <= piv_cap, else they are found again in the row's range
   [st, en) in global memory. On return every key k of the row with
   (k & *pmask) >= *prefix is taken, exactly as many as the first digit's
   topk_find_digit was asked for (the keys of higher first digits and
   `remain` of the pivot digit's). Called by every thread of the block;
   hist is scratch (NSA_TOPK_BINS entries). */
__device__ void topk_refine(const float *row, int64_t st, int64_t en, uint32_t digit,
                            uint32_t remain, uint32_t count, int64_t piv_cap, uint32_t *hist,
                            const uint64_t *piv, TopkShared &sh, uint64_t *prefix_out,
                            uint64_t *pmask_out)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    const bool from_row = (int64_t)count > piv_cap;
    uint64_t prefix = (uint64_t)digit << NSA_TOPK_SHIFT0;
    uint64_t pmask = (uint64_t)(NSA_TOPK_BINS - 1) << NSA_TOPK_SHIFT0;
    int shift = NSA_TOPK_SHIFT0;
    bool done = count == remain; /* every key of the pivot digit is taken */
    /* the rank keys are distinct, so at the last digit count == remain == 1:
       the loop always ends with done */
    while (!done && shift > 0) {
        const int width = min(NSA_TOPK_DIGIT, shift);
        shift -= width;
        const uint32_t nb = 1u << width;
        for (uint32_t b = tid; b < nb; b += nt) hist[b] = 0;
        __syncthreads();
        if (from_row) {
            topk_for_each<false, false>(row, st, en, [&](int64_t i, float v) {
                const uint64_t key = topk_rank(v, i - st);
                if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & (nb - 1)], 1u);
            });
        } else {
            for (uint32_t i = tid; i < count; i += nt) {
                const uint64_t key = piv[i];
                if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & (nb - 1)], 1u);
            }
        }
        __syncthreads();
        topk_find_digit(hist, (int)nb, remain, sh);
        const uint32_t d = sh.res[0], r = sh.res[1], c = sh.res[2];
        prefix |= (uint64_t)d << shift;
        pmask |= (uint64_t)(nb - 1) << shift;
        done = c == r;
        remain = r;
    }
    *prefix_out = prefix;
    *pmask_out = pmask;
}

/* After the first digit: sel[0 .. sh.n_sel) holds the keys of higher
   digits, piv[0 .. count) the pivot digit's keys when count <= piv_cap
   (else the row in global memory is searched). Finds the remaining digits,
   collects exactly kk keys, sorts them and writes the row's output. */
__device__ void topk_finish(const float *row, int64_t st, int64_t en, int kk, int k,
                            uint32_t digit, uint32_t remain, uint32_t count, int64_t piv_cap,
                            uint32_t *hist, uint64_t *sel, const uint64_t *piv, TopkShared &sh,
                            int32_t *out, int32_t *out_count)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    const bool from_row = (int64_t)count > piv_cap;
    uint64_t prefix, pmask;
    topk_refine(row, st, en, digit, remain, count, piv_cap, hist, piv, sh, &prefix, &pmask);
    /* taken: every key whose decided bits are >= the decided prefix */
    if (from_row) {
        __syncthreads();
        if (tid == 0) sh.n_sel = 0; /* the whole row is searched again */
        __syncthreads();
        topk_for_each<false, false>(row, st, en, [&](int64_t i, float v) {
            const uint64_t key = topk_rank(v, i - st);
            if ((key & pmask) >= prefix) {
                const uint32_t pos = topk_append(&sh.n_sel);
                if (pos < (uint32_t)kk) sel[pos] = key;
            }
        });
    } else {
        for (uint32_t i = tid; i < count; i += nt) {
            const uint64_t key = piv[i];
            if ((key & pmask) >= prefix) {
                const uint32_t pos = topk_append(&sh.n_sel);
                if (pos < (uint32_t)kk) sel[pos] = key;
            }
        }
    }
    __syncthreads();
    /* bitonic sort, descending, over the next power of two (key 0 pads:
       every rank key is >= 2^32, nsa_score_key never gives 0) */
    const int np = topk_sort_len(kk);
    for (int i = kk + tid; i < np; i += nt) sel[i] = 0ull;
    __syncthreads();
    for (int size = 2; size <= np; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < np; i += nt) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool desc = (i & size) == 0;
                    const uint64_t a = sel[i], c = sel[j];
                    if (desc ? (a < c) : (a > c)) { sel[i] = c; sel[j] = a; }
                }
            }
            __syncthreads();
        }
    for (int i = tid; i < k; i += nt) out[i] = i < kk ? (int32_t)nsa_rank_index(sel[i]) : -1;
    if (tid == 0 && out_count) *out_count = kk;
}

/* The row's clamped range and how many columns it takes. */
__device__ __forceinline__ int topk_row_range(int64_t r, int64_t cols, const int32_t *row_start,
                                              const int32_t *row_end, int k, int64_t *st,
                                              int64_t *en)
{
    nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols, cols, st, en);
    return (int)min((int64_t)k, *en - *st);
}

/* Shared memory of the one-CTA kernels: the histogram, the selection (its
   sort length), the pivot list (the rest of NSA_TOPK_SMEM). */
struct TopkSmemLayout {
    uint32_t *hist;
    uint64_t *sel, *piv;
};
__device__ __forceinline__ TopkSmemLayout topk_smem(unsigned char *raw, int k)
{
    TopkSmemLayout L;
    L.hist = (uint32_t *)raw;
    L.sel = (uint64_t *)(raw + NSA_TOPK_BINS * 4);
    L.piv = L.sel + topk_sort_len(k);
    return L;
}

/* Many rows: one CTA per row, both passes over the row and the finish. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_row_kernel(const float *scores, int64_t cols, int64_t row_stride, const int32_t *row_start,
                const int32_t *row_end, int k, int32_t *out_idx, int32_t *out_count)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t r = blockIdx.x;
    const float *row = scores + r * row_stride;
    int64_t st, en; /* clamped, empty when en <= st: nsa.h's one rule */
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    int32_t *out = out_idx + r * (int64_t)k;
    int32_t *cnt = out_count ? out_count + r : NULL;
    if (kk == 0) { /* the whole CTA leaves together */
        for (int i = tid; i < k; i += nt) out[i] = -1;
        if (tid == 0 && cnt) *cnt = 0;
        return;
    }
    TopkSmemLayout L = topk_smem(smem_raw, k);
    const int64_t cap = topk_piv_cap(k);
    /* pass 1: the first digit's histogram */
    if (tid == 0) { sh.n_sel = 0; sh.n_piv = 0; }
    topk_first_digit(row, st, en, (uint32_t)kk, L.hist, sh);
    const uint32_t digit = sh.res[0], remain = sh.res[1], count = sh.res[2];
    const bool keep_piv = (int64_t)count <= cap;
    /* pass 2 (the row backwards, evict-first): higher digits are taken,
       the pivot digit's keys are kept for the next digits */
    topk_for_each<true, true>(row, st, en, [&](int64_t i, float v) {
        const uint32_t sk = nsa_score_key(v), dg = sk >> (32 - NSA_TOPK_DIGIT);
        if (dg > digit) {
            const uint32_t pos = topk_append(&sh.n_sel);
            if (pos < (uint32_t)kk) L.sel[pos] = nsa_rank_key(sk, i - st);
        } else if (dg == digit && keep_piv) {
            const uint32_t pos = topk_append(&sh.n_piv);
            if (pos < (uint32_t)cap) L.piv[pos] = nsa_rank_key(sk, i - st);
        }
    });
    __syncthreads();
    topk_finish(row, st, en, kk, k, digit, remain, count, cap, L.hist, L.sel, L.piv, sh, out, cnt);
}

/* Few rows, step 1 of 3: grid (slices, rows). */
__global__ void __launch_bounds__(NSA_TOPK_SPLIT_THREADS)
topk_split_hist_kernel(const float *scores, int64_t cols, int64_t row_stride,
                       const int32_t *row_start, const int32_t *row_end, int k,
                       uint32_t *row_hist, TopkRowInfo *info)
{
    __shared__ uint32_t hist[NSA_TOPK_BINS];
    __shared__ TopkShared sh;
    __shared__ bool last;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t r = blockIdx.y;
    int64_t st, en;
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    if (kk == 0) return; /* the same for every CTA of the row */
    const int64_t len = cdiv64(en - st, gridDim.x);
    const int64_t lo = min(en, st + len * blockIdx.x), hi = min(en, lo + len);
    const float *row = scores + r * row_stride;
    for (int b = tid; b < NSA_TOPK_BINS; b += nt) hist[b] = 0;
    __syncthreads();
    topk_for_each<false, false>(row, lo, hi, [&](int64_t, float v) {
        atomicAdd(&hist[nsa_score_key(v) >> (32 - NSA_TOPK_DIGIT)], 1u);
    });
    __syncthreads();
    uint32_t *gh = row_hist + r * NSA_TOPK_BINS;
    for (int b = tid; b < NSA_TOPK_BINS; b += nt)
        if (hist[b]) atomicAdd(&gh[b], hist[b]);
    /* the last slice of the row to finish finds the pivot digit: each
       thread's additions are visible device-wide before the ticket */
    __threadfence();
    __syncthreads();
    if (tid == 0) last = atomicAdd(&info[r].ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int b = tid; b < NSA_TOPK_BINS; b += nt) hist[b] = __ldcg(&gh[b]);
    __syncthreads();
    topk_find_digit(hist, NSA_TOPK_BINS, (uint32_t)kk, sh);
    if (tid == 0) {
        info[r].digit = sh.res[0];
        info[r].remain = sh.res[1];
        info[r].count = sh.res[2];
    }
}

/* Few rows, step 2 of 3: grid (slices, rows); appends the keys of higher
   digits to sure[r] and, when they fit, the pivot digit's to piv[r]. */
__global__ void __launch_bounds__(NSA_TOPK_SPLIT_THREADS)
topk_split_scatter_kernel(const float *scores, int64_t cols, int64_t row_stride,
                          const int32_t *row_start, const int32_t *row_end, int k,
                          TopkRowInfo *info, uint64_t *sure, uint64_t *piv, int64_t cap)
{
    const int64_t r = blockIdx.y;
    int64_t st, en;
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    if (kk == 0) return;
    const int64_t len = cdiv64(en - st, gridDim.x);
    const int64_t lo = min(en, st + len * blockIdx.x), hi = min(en, lo + len);
    const float *row = scores + r * row_stride;
    TopkRowInfo *in = info + r;
    const uint32_t digit = in->digit;
    const bool keep_piv = (int64_t)in->count <= cap;
    uint64_t *s = sure + r * (int64_t)k, *pv = piv + r * cap;
    topk_for_each<false, true>(row, lo, hi, [&](int64_t i, float v) {
        const uint32_t sk = nsa_score_key(v), dg = sk >> (32 - NSA_TOPK_DIGIT);
        if (dg > digit) {
            const uint32_t pos = topk_append(&in->n_sure);
            if (pos < (uint32_t)kk) s[pos] = nsa_rank_key(sk, i - st);
        } else if (dg == digit && keep_piv) {
            const uint32_t pos = topk_append(&in->n_piv);
            if (pos < (uint64_t)cap) pv[pos] = nsa_rank_key(sk, i - st);
        }
    });
}

/* Few rows, step 3 of 3: one CTA per row, the lists into shared memory. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_split_finish_kernel(const float *scores, int64_t cols, int64_t row_stride,
                         const int32_t *row_start, const int32_t *row_end, int k,
                         const TopkRowInfo *info, const uint64_t *sure, const uint64_t *piv,
                         int32_t *out_idx, int32_t *out_count)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t r = blockIdx.x;
    int64_t st, en;
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    int32_t *out = out_idx + r * (int64_t)k;
    int32_t *cnt = out_count ? out_count + r : NULL;
    if (kk == 0) {
        for (int i = tid; i < k; i += nt) out[i] = -1;
        if (tid == 0 && cnt) *cnt = 0;
        return;
    }
    TopkSmemLayout L = topk_smem(smem_raw, k);
    const int64_t cap = topk_piv_cap(k);
    const TopkRowInfo in = info[r];
    const uint32_t n_sure = (uint32_t)kk - in.remain; /* == in.n_sure */
    for (uint32_t i = tid; i < n_sure; i += nt) L.sel[i] = sure[r * (int64_t)k + i];
    if ((int64_t)in.count <= cap)
        for (uint32_t i = tid; i < in.count; i += nt) L.piv[i] = piv[r * cap + i];
    if (tid == 0) sh.n_sel = n_sure;
    __syncthreads();
    topk_finish(scores + r * row_stride, st, en, kk, k, in.digit, in.remain, in.count, cap,
                L.hist, L.sel, L.piv, sh, out, cnt);
}

/* ---- top-n blocks per row, as a mask (nsa_cuda_topk_blocks) ---------------

   The rule is nsa_ref_topk_blocks' (docs/MATH.md, "Top-n blocks per row"):
   block j is columns [j*block, (j+1)*block); a block with a column in the
   row's clamped range [a, e) is eligible, its score the fp32 sum of those
   columns in ascending order divided once by their number; the min(n,
   eligible) best eligible blocks by the top-k ranking get 1 in the mask.

   Two kernels:
     - topk_block_scores_kernel, grid (CTAs along the row, rows): each CTA
       stages its blocks' columns in shared memory, a tile of
       NSA_TOPK_BLK_TILE columns at a time (coalesced 16-byte loads, marked
       evict-first: the scores are read once), and one thread per block adds
       its columns in ascending order, carrying its sum from tile to tile,
       so that the sum is the reference's sequence of fp32 additions. The
       means go to the workspace, scores [rows][nblocks], eligible blocks
       only.
     - topk_block_mask_kernel, one CTA per row: the radix select of the
       top-k rows kernel over the row's eligible block scores (the first
       digit's histogram, the pivot digit's keys kept in shared memory,
       topk_refine), then every block's mask byte and the count. No sort:
       the mask needs only the set, and "key >= the decided prefix" marks
       exactly the min(n, eligible) best.
   A row whose eligible blocks are all taken (n >= eligible, or none is
   eligible) needs no score: the first kernel skips it, the second writes
   its mask from the range alone. */

#define NSA_TOPK_BLK_THREADS 256 /* the block-score kernel              */
#define NSA_TOPK_BLK_TILE 4096   /* columns staged at a time, 16 KB      */

/* Slot of column i of a staged tile: one spare word after every 32, so
   that the threads of a warp, each reading the next column of its own
   block, share a bank at most two at a time for blocks of 1 to 64 columns
   (without it blocks of 16 put 16 threads on one bank). */
__device__ __forceinline__ int topk_tile_slot(int i) { return i + (i >> 5); }

/* Blocks one CTA of the block-score kernel covers: one per thread, and no
   more than a tile's columns (at least one block). */
__host__ __device__ inline int64_t topk_blocks_per_cta(int64_t block)
{
    const int64_t fit = NSA_TOPK_BLK_TILE / block;
    return fit < 1 ? 1 : fit > NSA_TOPK_BLK_THREADS ? NSA_TOPK_BLK_THREADS : fit;
}

/* Pivot-list entries of the mask kernel beside its histogram: every block
   of the row when they fit (then no row is searched twice in global
   memory), else what NSA_TOPK_SMEM leaves. */
__host__ __device__ inline int64_t topk_block_piv_cap(int64_t nblocks)
{
    const int64_t fit = ((int64_t)NSA_TOPK_SMEM - NSA_TOPK_BINS * 4) / 8;
    return nblocks < fit ? nblocks : fit;
}
__host__ __device__ inline size_t topk_block_mask_smem(int64_t nblocks)
{
    return (size_t)NSA_TOPK_BINS * 4 + (size_t)topk_block_piv_cap(nblocks) * 8;
}

/* Row r's clamped range [a, e) (nsa.h, nsa_topk_range) and its eligible
   blocks [j0, j1): those holding a column of the range. */
__device__ __forceinline__ void topk_row_blocks(int64_t r, int64_t cols, const int32_t *row_start,
                                                const int32_t *row_end, int64_t block,
                                                int64_t *a, int64_t *e, int64_t *j0,
                                                int64_t *j1)
{
    nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols, cols, a, e);
    *j0 = *a / block;
    *j1 = *e > *a ? (*e - 1) / block + 1 : *j0;
}

/* Block masks, step 1 of 2: grid (cdiv(nblocks, per_cta), up to 65535 rows,
   each CTA stepping through the rows by gridDim.y). CTA x covers blocks
   [x*per_cta, (x+1)*per_cta) of every row it visits; per_cta <=
   NSA_TOPK_BLK_THREADS (topk_blocks_per_cta), so thread t owns at most one
   block. Writes bscores[r*nblocks + j] for each eligible block j of each
   row that has more eligible blocks than n. */
__global__ void __launch_bounds__(NSA_TOPK_BLK_THREADS)
topk_block_scores_kernel(const float *scores, int64_t rows, int64_t cols, int64_t row_stride,
                         const int32_t *row_start, const int32_t *row_end, int64_t block,
                         int64_t nblocks, int64_t per_cta, int n, float *bscores)
{
    __shared__ float tile[NSA_TOPK_BLK_TILE + NSA_TOPK_BLK_TILE / 32];
    const int tid = threadIdx.x;
    const int64_t cta_b0 = (int64_t)blockIdx.x * per_cta;
    const int64_t cta_b1 = min(cta_b0 + per_cta, nblocks);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        int64_t a, e, j0, j1;
        topk_row_blocks(r, cols, row_start, row_end, block, &a, &e, &j0, &j1);
        /* every value below depends on r and blockIdx only: the branches
           and trip counts are the same for the whole CTA, so each
           __syncthreads is reached by all of its threads */
        if (j1 - j0 <= (int64_t)n) continue; /* all eligible blocks taken: no score needed */
        const int64_t b0 = max(cta_b0, j0), b1 = min(cta_b1, j1);
        if (b0 >= b1) continue;
        const float *row = scores + r * row_stride;
        /* this thread's block and its in-range columns [c0, c1) */
        const bool mine = tid < b1 - b0;
        const int64_t j = b0 + (mine ? tid : 0);
        const int64_t c0 = max(j * block, a), c1 = min((j + 1) * block, e);
        /* the CTA's columns: its blocks' in-range columns */
        const int64_t lo = max(b0 * block, a), hi = min(b1 * block, e);
        float sum = 0.0f;
        for (int64_t t0 = lo; t0 < hi; t0 += NSA_TOPK_BLK_TILE) {
            const int64_t t1 = min(t0 + (int64_t)NSA_TOPK_BLK_TILE, hi);
            __syncthreads(); /* the last tile's (or row's) sums have read it */
            topk_for_each<false, true>(row, t0, t1, [&](int64_t i, float v) {
                tile[topk_tile_slot((int)(i - t0))] = v;
            });
            __syncthreads();
            if (mine) {
                /* the block's columns inside this tile, in ascending order;
                   __fadd_rn: never contracted or reassociated */
                const int u0 = (int)(max(c0, t0) - t0), u1 = (int)(min(c1, t1) - t0);
                for (int u = u0; u < u1; ++u) sum = __fadd_rn(sum, tile[topk_tile_slot(u)]);
            }
        }
        /* one division by the number of columns, rounded to nearest as the
           reference's (float)(c1 - c0) and its fp32 division */
        if (mine) bscores[r * nblocks + j] = __fdiv_rn(sum, (float)(c1 - c0));
    }
}

/* Block masks, step 2 of 2: one CTA per row (grid = rows). bscores holds
   the row's eligible block scores (step 1) when it has more eligible
   blocks than n, and is not read otherwise (it may be NULL when no row
   can: n == 0 or n >= nblocks). Writes mask[r*nblocks + j] for every
   block and out_count[r]. Dynamic shared memory: topk_block_mask_smem. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_block_mask_kernel(int64_t cols, const int32_t *row_start, const int32_t *row_end,
                       int64_t block, int64_t nblocks, int n, const float *bscores,
                       uint8_t *mask, int32_t *out_count)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t r = blockIdx.x;
    int64_t a, e, j0, j1;
    topk_row_blocks(r, cols, row_start, row_end, block, &a, &e, &j0, &j1);
    const int64_t m = j1 - j0, kk = min((int64_t)n, m);
    if (tid == 0 && out_count) out_count[r] = (int32_t)kk;
    if (kk == 0 || kk == m) { /* none or every eligible block: the whole CTA leaves */
        for (int64_t j = tid; j < nblocks; j += nt)
            mask[r * nblocks + j] = (uint8_t)(kk > 0 && j >= j0 && j < j1);
        return;
    }
    /* 0 < kk < m: select among the m eligible scores, keys relative to j0
       as the reference's (nsa_rank_key(score key, j - j0)) */
    const float *bs = bscores + r * nblocks;
    uint32_t *hist = (uint32_t *)smem_raw;
    uint64_t *piv = (uint64_t *)(smem_raw + NSA_TOPK_BINS * 4);
    const int64_t cap = topk_block_piv_cap(nblocks);
    if (tid == 0) sh.n_piv = 0;
    topk_first_digit(bs, j0, j1, (uint32_t)kk, hist, sh);
    const uint32_t digit = sh.res[0], remain = sh.res[1], count = sh.res[2];
    if ((int64_t)count <= cap) /* else topk_refine searches bs itself */
        topk_for_each<false, false>(bs, j0, j1, [&](int64_t j, float v) {
            const uint32_t sk = nsa_score_key(v);
            if (sk >> (32 - NSA_TOPK_DIGIT) == digit) {
                const uint32_t pos = topk_append(&sh.n_piv);
                if (pos < (uint64_t)cap) piv[pos] = nsa_rank_key(sk, j - j0);
            }
        });
    __syncthreads();
    uint64_t prefix, pmask;
    topk_refine(bs, j0, j1, digit, remain, count, cap, hist, piv, sh, &prefix, &pmask);
    for (int64_t j = tid; j < nblocks; j += nt) {
        bool take = false;
        if (j >= j0 && j < j1) take = (topk_rank(bs[j], j - j0) & pmask) >= prefix;
        mask[r * nblocks + j] = (uint8_t)take;
    }
}

} /* namespace nsak */

#endif
