/* kernels/nsa_topk.cuh -- exact top-k per row (nsa_cuda_topk_rows).

   One CTA per row. Scores become order-preserving 32-bit keys (nsa_score_key:
   -0 = +0, NaN lowest); a radix select over 4 passes of 8 bits finds the
   k-th largest key K*; every key > K* is taken, and the keys == K* are
   taken in index order until k are held (a block-wide prefix count keeps
   that order), so ties go to the lower index and exactly min(k, width)
   columns are taken. The taken (key, ~index) pairs are sorted in shared
   memory (bitonic, descending) and written best first. */
#ifndef NSA_KERNELS_TOPK_CUH
#define NSA_KERNELS_TOPK_CUH

#include "nsa_common.cuh"

namespace nsak {

#define NSA_TOPK_THREADS 512
#define NSA_TOPK_KMAX 4096

__global__ void __launch_bounds__(NSA_TOPK_THREADS)
topk_kernel(const float *scores, int64_t cols, int64_t row_stride, const int32_t *row_start,
            const int32_t *row_end, int k, int32_t *out_idx, int32_t *out_count)
{
    __shared__ unsigned long long sel[NSA_TOPK_KMAX];
    __shared__ uint32_t hist[256];
    __shared__ uint32_t wcount[NSA_TOPK_THREADS / 32];
    __shared__ uint32_t s_prefix, s_remain, s_ngt, s_eqbase;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int64_t r = blockIdx.x;
    const float *row = scores + r * row_stride;
    int64_t st, en; /* clamped, empty when en <= st: nsa.h's one rule */
    nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols, cols,
                   &st, &en);
    const int64_t width = en - st;
    const int kk = (int)min((int64_t)k, width);
    int32_t *out = out_idx + r * (int64_t)k;

    if (kk > 0) {
        /* radix select of the kk-th largest key */
        uint32_t prefix = 0, pmask = 0;
        uint32_t remain = (uint32_t)kk;
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += blockDim.x) hist[i] = 0;
            __syncthreads();
            for (int64_t i = st + tid; i < en; i += blockDim.x) {
                uint32_t key = nsa_score_key(row[i]);
                if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                uint32_t acc = 0;
                int dsel = 0;
                for (int dgt = 255; dgt >= 0; --dgt) {
                    if (acc + hist[dgt] >= remain) { dsel = dgt; break; }
                    acc += hist[dgt];
                }
                s_prefix = prefix | ((uint32_t)dsel << shift);
                s_remain = remain - acc;
            }
            __syncthreads();
            prefix = s_prefix;
            remain = s_remain;
            pmask |= 255u << shift;
        }
        const uint32_t kth = prefix;          /* the kk-th largest key       */
        const uint32_t need_eq = remain;      /* how many == kth to take     */
        if (tid == 0) { s_ngt = 0; s_eqbase = 0; }
        __syncthreads();
        /* collect: > kth in any order, == kth in index order */
        for (int64_t base = st; base < en; base += blockDim.x) {
            int64_t i = base + tid;
            uint32_t key = i < en ? nsa_score_key(row[i]) : 0u;
            bool gt = i < en && key > kth, eq = i < en && key == kth;
            unsigned m = __ballot_sync(0xffffffffu, eq);
            if (lane == 0) wcount[warp] = __popc(m);
            __syncthreads();
            uint32_t before = s_eqbase;
            for (int w = 0; w < warp; ++w) before += wcount[w];
            before += __popc(m & ((1u << lane) - 1u));
            unsigned long long pk = nsa_rank_key(key, i - st);
            if (gt) {
                uint32_t pos = atomicAdd(&s_ngt, 1u);
                sel[pos] = pk;
            }
            __syncthreads();
            if (eq && before < need_eq) sel[kk - need_eq + before] = pk;
            if (tid == 0) {
                uint32_t tot = 0;
                for (int w = 0; w < (int)(blockDim.x >> 5); ++w) tot += wcount[w];
                s_eqbase += tot;
            }
            __syncthreads();
        }
        /* bitonic sort, descending, over the next power of two */
        int np = 1;
        while (np < kk) np <<= 1;
        for (int i = kk + tid; i < np; i += blockDim.x) sel[i] = 0ull;
        __syncthreads();
        for (int size = 2; size <= np; size <<= 1)
            for (int stride = size >> 1; stride > 0; stride >>= 1) {
                for (int i = tid; i < np; i += blockDim.x) {
                    int j = i ^ stride;
                    if (j > i) {
                        bool desc = (i & size) == 0;
                        unsigned long long a = sel[i], c = sel[j];
                        if (desc ? (a < c) : (a > c)) { sel[i] = c; sel[j] = a; }
                    }
                }
                __syncthreads();
            }
        for (int i = tid; i < kk; i += blockDim.x)
            out[i] = (int32_t)nsa_rank_index(sel[i]);
    }
    for (int i = kk + tid; i < k; i += blockDim.x) out[i] = -1;
    if (tid == 0 && out_count) out_count[r] = kk;
}

} /* namespace nsak */

#endif
