/* kernels/nsa_topk.cuh -- exact top-k per row (nsa_cuda_topk_rows) and
   top-n block masks (nsa_cuda_topk_blocks).

   The ranking is the contract's (Selection step 6) on each row's range
   [st, en) (nsa.h, nsa_topk_range): every column becomes the 64-bit rank
   key nsa_rank_key(nsa_score_key(score), column - st), so -0 = +0, NaN
   ranks lowest and equal scores rank the lower column higher; the keys of
   a row are distinct, and "the kk = min(k, width) largest keys" is exactly
   the rule, never more, never fewer, with no tie pass.

   One building block finds them, a streaming select (topk_stream): a CTA
   reads its columns once, a tile of NSA_TOPK_TILE at a time, and keeps in
   shared memory a list of candidate keys and a floor. A key below the
   floor is dropped as it is read; one at or above it is appended. After
   the first tile, and whenever the next tile might not fit, topk_keep
   cuts the list to its kk largest (a radix select on the keys,
   NSA_TOPK_DIGIT bits a round below the bits they all share, stopping as
   soon as the keys left in play are all taken) and raises the
   floor to the cut: those kk keys are all at or above it, so no key below
   it can be among the row's kk largest. At the end the list is cut once
   more and holds exactly the kk largest keys of the columns read. On a
   long row of scores the first cut keeps fewer than kk keys, as many as
   the first tile likely holds of the row's kk largest plus a wide margin
   (topk_guess_keep), so that later tiles append a few thousand keys
   instead of tens of thousands; a row whose order defeats the guess (it
   ends with fewer than kk keys) is read once more without it. The
   next tiles are loaded before the current one is filtered, so a cut
   overlaps the loads in flight, and the tiles after those are on their way
   into L2. Each column is read from global memory once.

   A row's kk best are written best first. From a list of n >= kk keys
   that holds them, a counting select (topk_rank_top) finds each one's
   place in one pass over bins of the leading digit in which the keys
   differ; where kk is small, or the keys bunch in a few bins, the list is
   cut to kk and sorted (bitonic) instead.

   Two ways to spread rows over the GPU:
     - many rows: one CTA per row (topk_row_kernel) streams the row and
       writes its kk best; two CTAs share an SM, so one streams while the
       other cuts or sorts;
     - few long rows: each row is split into `slices` CTAs
       (topk_slice_kernel, grid (slices, rows)); each streams its slice and
       writes the slice's best min(kk, slice width) keys to the workspace
       (zero past them: no rank key is 0). topk_merge_kernel (one CTA per
       row) selects among the row's slices * k keys, in shared memory at
       once where they fit, else streamed (floor 1: the zeros are
       dropped), and finishes as the one-CTA path does. No atomics on
       global memory, nothing to clear, no host synchronisation. */
#ifndef NSA_KERNELS_TOPK_CUH
#define NSA_KERNELS_TOPK_CUH

#include "nsa_common.cuh"

namespace nsak {

#define NSA_TOPK_KMAX 4096
#define NSA_TOPK_THREADS 512 /* every top-k CTA                           */
#define NSA_TOPK_PER 8       /* columns a thread reads per tile            */
#define NSA_TOPK_TILE (NSA_TOPK_THREADS * NSA_TOPK_PER)
/* The candidate list: the kk kept after a cut, and room for two tiles. */
#define NSA_TOPK_CAP (NSA_TOPK_KMAX + 2 * NSA_TOPK_TILE)
/* A stream's loads in flight (topk_stream_pass): the NSA_TOPK_AHEAD tiles
   after the one being filtered are loaded into registers, and the
   NSA_TOPK_PREFETCH tiles after those are on their way into L2 (one tile
   in registers a CTA was too little to cover the memory's latency at two
   CTAs an SM). */
#ifndef NSA_TOPK_PREFETCH
#define NSA_TOPK_PREFETCH 2
#endif
#ifndef NSA_TOPK_AHEAD
#define NSA_TOPK_AHEAD 2 /* tiles loaded ahead into registers */
#endif
#define NSA_TOPK_DIGIT 11 /* bits per radix digit                           */
#define NSA_TOPK_BINS (1 << NSA_TOPK_DIGIT)
/* Dynamic shared memory of every top-k CTA: the list and the histogram
   (104 KB: two CTAs fit an H100 SM's 228 KB; an A100 runs one). */
#define NSA_TOPK_SMEM (NSA_TOPK_CAP * 8 + NSA_TOPK_BINS * 4)
/* Split the rows over several CTAs when there are at most this many and
   they are at least two tiles long: slices fill about NSA_TOPK_SPLIT_CTAS
   CTAs (one per SM of a 132-SM H100: fewer, longer slices leave fewer keys
   for the merge, which one CTA a row does), at least two a row and at
   least a tile each, and no more than NSA_TOPK_MERGE_KEYS keys for the
   merge. */
#define NSA_TOPK_SPLIT_ROWS 128
#ifndef NSA_TOPK_SPLIT_CTAS
#define NSA_TOPK_SPLIT_CTAS 132
#endif
#ifndef NSA_TOPK_MERGE_KEYS
#define NSA_TOPK_MERGE_KEYS (8 * NSA_TOPK_TILE)
#endif

/* Scratch of topk_find_digit, the list's append counters (three in turn:
   topk_stream), topk_keep's counters and topk_radix_cut's per-warp AND and
   OR of the keys. */
struct TopkShared {
    uint32_t scan[32];
    uint32_t res[3];
    uint32_t added[3];
    uint32_t holes, moved;
    uint64_t all[NSA_TOPK_THREADS / 32], any[NSA_TOPK_THREADS / 32]; /* topk_radix_cut */
};

/* The shared memory of a top-k CTA: the candidate list, and the histogram
   of a radix round (its words also hold topk_keep's list of holes). */
struct TopkList {
    uint64_t *key;  /* [NSA_TOPK_CAP] */
    uint32_t *hist; /* [NSA_TOPK_BINS] */
};
__device__ __forceinline__ TopkList topk_list(unsigned char *raw)
{
    TopkList L;
    L.key = (uint64_t *)raw;
    L.hist = (uint32_t *)(raw + NSA_TOPK_CAP * 8);
    return L;
}

/* How many slices a row of cols columns is split into when rows are few
   (1: not split), the same on the host (workspace size) and the device. */
__host__ __device__ inline int topk_slices(int64_t rows, int64_t cols, int k)
{
    if (rows <= 0 || rows > NSA_TOPK_SPLIT_ROWS || k <= 0 || cols < 2 * NSA_TOPK_TILE) return 1;
    int64_t s = NSA_TOPK_SPLIT_CTAS / rows;
    const int64_t by_cols = cols / NSA_TOPK_TILE, by_merge = NSA_TOPK_MERGE_KEYS / k;
    s = s < by_cols ? s : by_cols;
    s = s < by_merge ? s : by_merge;
    return (int)(s < 2 ? 2 : s);
}

__device__ __forceinline__ uint64_t topk_rank(float v, int64_t rel)
{
    return nsa_rank_key(nsa_score_key(v), rel);
}

/* The first of cnt slots of the calling thread in an append to *ctr, the
   warp's threads in lane order; called by all 32 lanes together (one
   shared-memory atomic a warp, none when no lane appends). */
__device__ __forceinline__ uint32_t topk_warp_slots(uint32_t cnt, uint32_t *ctr)
{
    const int lane = threadIdx.x & 31;
    uint32_t incl = cnt;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    const uint32_t total = __shfl_sync(0xffffffffu, incl, 31);
    uint32_t base = 0;
    if (total) {
        if (lane == 31) base = atomicAdd(ctr, total);
        base = __shfl_sync(0xffffffffu, base, 31);
    }
    return base + incl - cnt;
}

/* The same for a count of 0 or 1 (take): a ballot instead of a scan. */
__device__ __forceinline__ uint32_t topk_warp_slot(bool take, uint32_t *ctr)
{
    const int lane = threadIdx.x & 31;
    const unsigned m = __ballot_sync(0xffffffffu, take);
    uint32_t base = 0;
    if (m) {
        if (lane == 0) base = atomicAdd(ctr, (uint32_t)__popc(m));
        base = __shfl_sync(0xffffffffu, base, 0);
    }
    return base + (uint32_t)__popc(m & ((1u << lane) - 1u));
}

/* f(i, row[i]) for every i in [lo, hi), by all threads of the block:
   16-byte loads for the aligned body (four in flight per thread), marked
   evict-first (the block-score kernel reads its columns once). */
template <typename F>
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
            if (j < nv) x[u] = __ldcs(v + j);
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const int64_t j = j0 + (int64_t)u * nt;
            if (j < nv) {
                const int64_t i = lo + head + j * 4;
                f(i, x[u].x);
                f(i + 1, x[u].y);
                f(i + 2, x[u].z);
                f(i + 3, x[u].w);
            }
        }
    }
}

/* The bins above thread t's group: the threads split nbins bins of hist
   into groups of per = ceil(nbins / threads) from the top (thread t's is
   [lo, hi), hi = nbins - t * per), and an exclusive block scan of the
   groups' sums gives each thread the number of keys in the bins above its
   group; sum is its group's own. Called by every thread of the block; ends
   synchronised (sh.scan is read until the caller's next barrier). */
__device__ uint32_t topk_scan_groups(const uint32_t *hist, int nbins, TopkShared &sh, int &lo,
                                     int &hi, uint32_t &sum)
{
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    const int per = (nbins + blockDim.x - 1) / blockDim.x;
    hi = nbins - tid * per;
    lo = max(hi - per, 0);
    sum = 0;
    for (int b = lo; b < hi; ++b) sum += hist[b];
    uint32_t incl = sum;
    for (int o = 1; o < 32; o <<= 1) {
        const uint32_t y = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += y;
    }
    if (lane == 31) sh.scan[warp] = incl;
    __syncthreads();
    if (warp == 0) {
        const uint32_t w = lane < nw ? sh.scan[lane] : 0u;
        uint32_t wi = w;
        for (int o = 1; o < 32; o <<= 1) {
            const uint32_t y = __shfl_up_sync(0xffffffffu, wi, o);
            if (lane >= o) wi += y;
        }
        if (lane < nw) sh.scan[lane] = wi - w; /* warps before this one */
    }
    __syncthreads();
    return incl - sum + sh.scan[warp];
}

/* The digit that holds the remain-th largest key, from a histogram of nbins
   bins in shared memory: the largest d with sum(hist[d..]) >= remain.
   res[0] = d, res[1] = remain - sum(hist[d+1..]) (how many of digit d are
   taken), res[2] = hist[d]. Needs sum(hist) >= remain >= 1. Called by every
   thread of the block (it synchronises); res is valid on return until the
   next call. The one group of bins (topk_scan_groups) that crosses remain
   finds d. */
__device__ void topk_find_digit(const uint32_t *hist, int nbins, uint32_t remain, TopkShared &sh)
{
    int lo, hi;
    uint32_t sum;
    const uint32_t excl = topk_scan_groups(hist, nbins, sh, lo, hi, sum);
    if (excl < remain && excl + sum >= remain) {
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

/* The AND and the OR over the block of each thread's all and any, in every
   thread. Called by every thread of the block; the caller synchronises
   before the next call (sh.all, sh.any). */
template <typename K>
__device__ void topk_and_or_reduce(K &all, K &any, TopkShared &sh)
{
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
    for (int o = 16; o > 0; o >>= 1) {
        all &= __shfl_xor_sync(0xffffffffu, all, o);
        any |= __shfl_xor_sync(0xffffffffu, any, o);
    }
    if (lane == 0) {
        sh.all[warp] = all;
        sh.any[warp] = any;
    }
    __syncthreads();
    for (int w = 0; w < (nt >> 5); ++w) {
        all &= (K)sh.all[w];
        any |= (K)sh.any[w];
    }
}

/* The AND and the OR of the keys key_at(0 .. n), in every thread; with
   SKIP_ZERO, zero keys (padding: no rank key is 0) are left out. Called by
   every thread of the block; the caller synchronises before the next call
   (sh.all, sh.any). */
template <bool SKIP_ZERO, typename KeyAt>
__device__ void topk_and_or(KeyAt key_at, int64_t n, TopkShared &sh, uint64_t &all,
                            uint64_t &any)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    all = ~0ull;
    any = 0ull;
    for (int64_t i = tid; i < n; i += nt) {
        const uint64_t key = key_at(i);
        if (!SKIP_ZERO || key) {
            all &= key;
            any |= key;
        }
    }
    topk_and_or_reduce(all, any, sh);
}

/* The cut of the kk largest of n keys key_at(0 .. n) (of type K, 32 or 64
   bits), given their AND and OR: a P with exactly kk of them >= P. A radix
   select decides digits from the top; `prefix` holds the decided digits
   (zeros below), so a key's decided digits are >= prefix exactly when the
   key is >= prefix. The leading bits that all n keys share are decided
   first, from the AND and the OR: a list above a risen floor shares many,
   and a first digit among them would put every key in one bin, its
   atomics in one queue. It stops when the pivot digit's keys are all
   taken; distinct keys (rank keys) always do by the last digit. Keys that
   are not distinct may not: then, once every digit is decided, the cut is
   the one key value P that more than the *tied (>= 1) keys still wanted
   hold, and the caller breaks the tie; otherwise *tied is 0. Needs n > kk
   >= 1; hist holds NSA_TOPK_BINS words. Called by every thread of the
   block; ends synchronised. */
template <typename K, typename KeyAt>
__device__ K topk_radix_cut_from(K all, K any, KeyAt key_at, int64_t n, uint32_t kk,
                                 uint32_t *hist, TopkShared &sh, uint32_t *tied)
{
    constexpr int BITS = 8 * (int)sizeof(K);
    const int tid = threadIdx.x, nt = blockDim.x;
    const K diff = all ^ any;
    const int common = diff ? (BITS == 64 ? __clzll((long long)diff) : __clz((int)diff)) : BITS;
    K pmask = common > 0 ? (K)(~(K)0 << (BITS - common)) : (K)0;
    K prefix = all & pmask;
    uint32_t remain = kk;
    int shift = BITS - common;
    *tied = 0;
    while (shift > 0) {
        const int width = min(NSA_TOPK_DIGIT, shift);
        shift -= width;
        const uint32_t nb = 1u << width;
        for (uint32_t b = tid; b < nb; b += nt) hist[b] = 0;
        __syncthreads();
        for (int64_t i = tid; i < n; i += nt) {
            const K key = key_at(i);
            if ((key & pmask) == prefix) atomicAdd(&hist[(key >> shift) & (nb - 1)], 1u);
        }
        __syncthreads();
        topk_find_digit(hist, (int)nb, remain, sh);
        const uint32_t d = sh.res[0], r = sh.res[1], c = sh.res[2];
        prefix |= (K)d << shift;
        pmask |= (K)(nb - 1) << shift;
        remain = r;
        if (c == r) return prefix;
    }
    /* every digit decided (or all keys equal, so no round ran): the
       barrier that each round ends with, for sh.all / sh.any read above */
    __syncthreads();
    *tied = remain;
    return prefix;
}

/* The cut of the kk largest of n distinct 64-bit keys key_at(0 .. n)
   (topk_radix_cut_from, after a pass for their AND and OR). */
template <typename KeyAt>
__device__ uint64_t topk_radix_cut(KeyAt key_at, int64_t n, uint32_t kk, uint32_t *hist,
                                   TopkShared &sh)
{
    uint64_t all, any;
    uint32_t tied;
    topk_and_or<false>(key_at, n, sh, all, any);
    return topk_radix_cut_from<uint64_t>(all, any, key_at, n, kk, hist, sh, &tied);
}

/* Cuts the list's n > kk keys to its kk largest, left in key[0 .. kk), and
   returns the cut (topk_radix_cut). The keys >= the cut that lie past kk
   move into the places below kk whose keys are below it. Called by every
   thread of the block; ends synchronised. */
__device__ uint64_t topk_keep(const TopkList &L, uint32_t n, uint32_t kk, TopkShared &sh)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    const uint64_t prefix =
        topk_radix_cut([&](int64_t i) { return L.key[i]; }, n, kk, L.hist, sh);
    /* places below kk whose key is out (the histogram's words hold them:
       at most kk <= NSA_TOPK_KMAX of 16 bits), then the keys past kk that
       are in fill them, as many as there are */
    uint16_t *hole = (uint16_t *)L.hist;
    if (tid == 0) { sh.holes = 0; sh.moved = 0; }
    __syncthreads();
    for (uint32_t i0 = 0; i0 < kk; i0 += nt) {
        const uint32_t i = i0 + tid;
        const bool out = i < kk && L.key[i] < prefix;
        const uint32_t s = topk_warp_slot(out, &sh.holes);
        if (out) hole[s] = (uint16_t)i;
    }
    __syncthreads();
    for (uint32_t i0 = kk; i0 < n; i0 += nt) {
        const uint32_t i = i0 + tid;
        const bool in = i < n && L.key[i] >= prefix;
        const uint32_t s = topk_warp_slot(in, &sh.moved);
        if (in) L.key[hole[s]] = L.key[i];
    }
    __syncthreads();
    return prefix;
}

/* The columns [0, count) of one CTA's source (count < 2^31; item indices,
   up to a tile past count, are unsigned 32-bit), read a tile at a time:
   column i of tile t is item t * NSA_TOPK_TILE + e * NSA_TOPK_THREADS +
   tid of thread tid (e < NSA_TOPK_PER), so each load is coalesced. */
struct TopkScores { /* fp32 scores; rank keys relative to column -rel0 */
    const float *p;
    uint32_t rel0;
    struct Regs { float v[NSA_TOPK_PER]; };
    __device__ __forceinline__ void fetch(uint32_t i, int e, Regs &r) const { r.v[e] = __ldg(p + i); }
    __device__ __forceinline__ void fetch_full(uint32_t i0, Regs &r) const
    {
        const float *q = p + i0; /* one address a tile; the columns at fixed offsets */
#pragma unroll
        for (int e = 0; e < NSA_TOPK_PER; ++e) r.v[e] = __ldg(q + e * NSA_TOPK_THREADS);
    }
    __device__ __forceinline__ void prefetch(uint32_t i0, uint32_t i1) const
    {
        l2_prefetch_bytes(p + i0, (i1 - i0) * (uint32_t)sizeof(*p));
    }
    __device__ __forceinline__ uint64_t key(const Regs &r, int e, uint32_t i) const
    {
        return nsa_rank_key(nsa_score_key(r.v[e]), rel0 + i);
    }
    /* The floor's score as a float v, so that a column's key is compared
       with the floor by comparing its score with v, and its whole key only
       when the score ties v or is NaN (both rare): nsa_score_key orders
       non-NaN floats as their values, -0 with +0, so a score above v has a
       key above the floor's and one below v a key below it. v is the float
       whose key is the floor's upper half, or -inf when that half lies
       below -inf's key (a floor among NaN keys: then every score above
       -inf is taken, and -inf and NaN compare whole keys). */
    struct Floor {
        uint64_t key;
        float v;
    };
    __device__ __forceinline__ Floor floor(uint64_t key) const
    {
        const uint32_t hi = (uint32_t)(key >> 32);
        Floor f;
        f.key = key;
        f.v = hi < 0x007fffffu ? -INFINITY
                               : nsa__f32_from_bits(hi & 0x80000000u ? hi & 0x7fffffffu : ~hi);
        return f;
    }
    /* takes: the key is above the floor; else undecided: it may be at or
       above it (a tie with v, or NaN), and only the whole key tells */
    __device__ __forceinline__ bool takes(const Regs &r, int e, const Floor &f) const
    {
        return r.v[e] > f.v;
    }
    __device__ __forceinline__ bool undecided(const Regs &r, int e, const Floor &f) const
    {
        return !(r.v[e] < f.v);
    }
};
struct TopkKeys { /* rank keys already made (a slice's best, or zero) */
    const uint64_t *p;
    struct Regs { uint64_t v[NSA_TOPK_PER]; };
    __device__ __forceinline__ void fetch(uint32_t i, int e, Regs &r) const { r.v[e] = __ldcg(p + i); }
    __device__ __forceinline__ void fetch_full(uint32_t i0, Regs &r) const
    {
        const uint64_t *q = p + i0;
#pragma unroll
        for (int e = 0; e < NSA_TOPK_PER; ++e) r.v[e] = __ldcg(q + e * NSA_TOPK_THREADS);
    }
    __device__ __forceinline__ void prefetch(uint32_t i0, uint32_t i1) const
    {
        l2_prefetch_bytes(p + i0, (i1 - i0) * (uint32_t)sizeof(*p));
    }
    __device__ __forceinline__ uint64_t key(const Regs &r, int e, uint32_t) const { return r.v[e]; }
    struct Floor {
        uint64_t key;
    };
    __device__ __forceinline__ Floor floor(uint64_t key) const { return Floor{key}; }
    __device__ __forceinline__ bool takes(const Regs &r, int e, const Floor &f) const
    {
        return r.v[e] >= f.key;
    }
    __device__ __forceinline__ bool undecided(const Regs &, int, const Floor &) const { return false; }
};

/* Which of this thread's columns of a tile (its regs r, first item i0) are
   at or above the floor, as bits; FULL: the tile has all its columns. The
   source decides most columns by a cheap test (takes); the few it cannot
   (undecided) compare whole keys, behind one branch a tile. */
template <bool FULL, typename Src>
__device__ __forceinline__ unsigned topk_tile_takes(const Src &src, const typename Src::Regs &r,
                                                    uint32_t i0, uint32_t count, uint64_t floor)
{
    const typename Src::Floor f = src.floor(floor);
    unsigned take = 0, tie = 0;
#pragma unroll
    for (int e = 0; e < NSA_TOPK_PER; ++e) {
        const uint32_t i = i0 + e * NSA_TOPK_THREADS;
        if (FULL || i < count) {
            if (src.takes(r, e, f)) take |= 1u << e;
            else if (src.undecided(r, e, f)) tie |= 1u << e;
        }
    }
    if (tie) {
#pragma unroll
        for (int e = 0; e < NSA_TOPK_PER; ++e)
            if (((tie >> e) & 1u) && src.key(r, e, i0 + e * NSA_TOPK_THREADS) >= floor)
                take |= 1u << e;
    }
    return take;
}

/* The size of the first cut when the stream guesses its floor: if a
   row's columns come in no particular order, its first tile holds about e
   = kk * TILE / count of the row's kk largest keys (a hypergeometric count,
   standard deviation below sqrt(e)). Keeping the tile's q = e + 4 sqrt(e)
   + 8 largest raises the floor to a key that about q * count / TILE of the
   row's keys reach: more than kk unless that count is off by four
   deviations, and far fewer than the kk-th of the first tile lets through
   (at k = 2,048 of 129,280: about 3,300 keys appended instead of about
   22,000). q >= kk: no guess. */
__device__ __forceinline__ uint32_t topk_guess_keep(uint32_t kk, uint32_t count)
{
    const float e = (float)kk * (float)NSA_TOPK_TILE / (float)count;
    const float q = e + 4.f * sqrtf(e) + 8.f;
    return q < (float)kk ? (uint32_t)q : kk;
}
#define NSA_TOPK_GUESS_TILES 4 /* the least tiles a stream guesses on */

/* One pass of the streaming select over src's count columns (module
   comment), the first cut (after the first tile) to keep1 <= kk keys:
   returns n with L.key[0 .. n) keys at or above floor0 that hold the kk
   largest of them, n = min(kk, their number) when keep1 = kk and keep_last
   = kk; with keep_last > kk the list is cut to kk at the end only if it
   holds more than keep_last (the caller then selects the kk largest
   itself, topk_rank_top). With keep1 < kk the first cut may drop keys of
   the kk largest; then n < kk says so (topk_stream). kk >= 1. Called by
   every thread of the block; ends synchronised. */
template <typename Src>
__device__ uint32_t topk_stream_pass(const Src &src, uint32_t count, uint32_t kk,
                                     uint32_t keep1, uint32_t keep_last, uint64_t floor0,
                                     const TopkList &L, TopkShared &sh)
{
    constexpr int PER = NSA_TOPK_PER, NT = NSA_TOPK_THREADS, TILE = NSA_TOPK_TILE;
    const int tid = threadIdx.x;
    const uint32_t ntiles = (count + TILE - 1) / TILE;
    uint64_t floor = floor0;
    uint32_t n = 0;
    /* r[0] the tile being filtered, r[1 .. AHEAD] the next ones, loaded
       ahead into registers */
    constexpr uint32_t AHEAD = NSA_TOPK_AHEAD;
    typename Src::Regs r[AHEAD + 1];
    auto fetch = [&](uint32_t t, typename Src::Regs &dst) {
        if ((t + 1) * TILE <= count) {
            src.fetch_full(t * TILE + tid, dst);
            return;
        }
#pragma unroll
        for (int e = 0; e < PER; ++e) {
            const uint32_t i = t * TILE + e * NT + tid;
            if (i < count) src.fetch(i, e, dst);
        }
    };
    /* tiles [t0, t1) into L2 by one thread, the copy engine's prefetch */
    auto prefetch = [&](uint32_t t0, uint32_t t1) {
        t1 = t1 < ntiles ? t1 : ntiles;
        if (tid == 0 && t0 < t1) src.prefetch(t0 * TILE, t1 * TILE < count ? t1 * TILE : count);
    };
    if (tid < 3) sh.added[tid] = 0;
    prefetch(AHEAD + 1, AHEAD + 1 + NSA_TOPK_PREFETCH);
#pragma unroll
    for (uint32_t a = 0; a < AHEAD; ++a)
        if (a < ntiles) fetch(a, r[a]);
    __syncthreads();
    for (uint32_t t = 0; t < ntiles; ++t) {
        if (t > 0) prefetch(t + AHEAD + NSA_TOPK_PREFETCH, t + AHEAD + 1 + NSA_TOPK_PREFETCH);
        if (t + AHEAD < ntiles) fetch(t + AHEAD, r[AHEAD]);
        /* a cut when the tile might not fit (then n > kk), and one after
           the first tile when it holds more than keep1: a floor from the
           start cuts the keys appended later */
        if (n + TILE > NSA_TOPK_CAP || (t == 1 && n > keep1)) { /* the same for every thread */
            const uint32_t keep = n + TILE > NSA_TOPK_CAP ? kk : keep1;
            const uint64_t cut = topk_keep(L, n, keep, sh);
            n = keep;
            floor = cut > floor ? cut : floor;
        }
        /* tile t appends after the n keys, counted in added[t % 3]: every
           thread reads it after the barrier below, and it is cleared for
           tile t + 3 after the next tile's barrier, once all have read it */
        uint32_t *added = &sh.added[t % 3];
        const uint32_t i0 = t * TILE + tid;
        const unsigned take = (t + 1) * TILE <= count
                                  ? topk_tile_takes<true>(src, r[0], i0, count, floor)
                                  : topk_tile_takes<false>(src, r[0], i0, count, floor);
        /* a warp appends its takes together: one scan of the counts, one
           atomic; most warps of a long row's later tiles have none */
        if (__any_sync(0xffffffffu, take)) {
            uint32_t s = topk_warp_slots((uint32_t)__popc(take), added);
#pragma unroll
            for (int e = 0; e < PER; ++e)
                if ((take >> e) & 1u) L.key[n + s++] = src.key(r[0], e, i0 + e * NT);
        }
        __syncthreads();
        n += *added;
        if (tid == 0) sh.added[(t + 2) % 3] = 0;
#pragma unroll
        for (uint32_t a = 0; a < AHEAD; ++a) r[a] = r[a + 1];
    }
    if (n > keep_last) {
        topk_keep(L, n, kk, sh);
        n = kk;
    }
    return n;
}

/* The streaming select (module comment): returns n = min(kk, keys >=
   floor0 among src's count columns) with L.key[0 .. n) the n largest
   (keep_last = kk), or n >= that with L.key[0 .. n) holding them
   (topk_stream_pass).
   With guess (columns in no particular order, at least
   NSA_TOPK_GUESS_TILES tiles), the first cut keeps topk_guess_keep(kk,
   count) keys. Every key the list drops lies below every key it keeps, so
   when the pass still ends with kk keys they are the kk largest; when it
   ends with fewer, the guess was too high (the columns were in an order,
   descending say) and a second pass reads them again with the first cut at
   kk, as a pass without a guess does. Exact either way: the guess costs
   only time, and only when it fails. */
template <typename Src>
__device__ uint32_t topk_stream(const Src &src, uint32_t count, uint32_t kk, uint32_t keep_last,
                                uint64_t floor0, bool guess, const TopkList &L, TopkShared &sh)
{
    const uint32_t keep1 =
        guess && count >= NSA_TOPK_GUESS_TILES * NSA_TOPK_TILE ? topk_guess_keep(kk, count) : kk;
    const uint32_t n = topk_stream_pass(src, count, kk, keep1, keep_last, floor0, L, sh);
    return n < kk && keep1 < kk
               ? topk_stream_pass(src, count, kk, kk, keep_last, floor0, L, sh)
               : n;
}

/* One size's bitonic stages of strides s0, s0 / 2, ..., 1 (s0 <= 32) on a
   warp's 64 keys from e0: lane l holds keys e0 + l (a) and e0 + 32 + l
   (b). Pairs 32 apart are a thread's own, nearer ones a shuffle away; in a
   pair the lower key goes first in a descending run (its index's `size`
   bit clear), last in an ascending one. */
__device__ __forceinline__ void topk_bitonic_warp(uint64_t &a, uint64_t &b, uint32_t e0,
                                                  uint32_t size, uint32_t s0)
{
    const uint32_t ia = e0 + (threadIdx.x & 31), ib = ia + 32;
    auto cx = [&](uint64_t v, uint32_t i, uint32_t s) {
        const uint64_t o = __shfl_xor_sync(0xffffffffu, v, (int)s);
        const bool desc = (i & size) == 0, low = (i & s) == 0;
        return low == desc ? (v > o ? v : o) : (v < o ? v : o);
    };
    for (uint32_t s = s0; s > 0; s >>= 1) {
        if (s == 32) {
            if ((ia & size) == 0 ? a < b : a > b) { const uint64_t x = a; a = b; b = x; }
        } else {
            a = cx(a, ia, s);
            b = cx(b, ib, s);
        }
    }
}

/* Sorts key[0 .. n) descending: bitonic over np = the next power of two
   (at least 64), zeros past n (every rank key is > 0). Each warp owns
   64-key segments; the stages of strides up to 32 run in its registers,
   the wider ones in shared memory. Called by every thread of the block;
   ends synchronised. */
__device__ void topk_sort_desc(uint64_t *key, uint32_t n)
{
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31;
    const uint32_t nw = (uint32_t)nt >> 5;
    uint32_t np = 64;
    while (np < n) np <<= 1;
    for (uint32_t i = n + tid; i < np; i += nt) key[i] = 0ull;
    __syncthreads();
    /* sizes 2 .. size: every segment's stages of strides <= 32 */
    auto warp_stages = [&](uint32_t size_lo, uint32_t size_hi) {
        for (uint32_t e0 = (uint32_t)(tid >> 5) * 64; e0 < np; e0 += nw * 64) {
            uint64_t a = key[e0 + lane], b = key[e0 + 32 + lane];
            for (uint32_t size = size_lo; size <= size_hi; size <<= 1)
                topk_bitonic_warp(a, b, e0, size, min(size >> 1, 32u));
            key[e0 + lane] = a;
            key[e0 + 32 + lane] = b;
        }
    };
    warp_stages(2, 64);
    for (uint32_t size = 128; size <= np; size <<= 1) {
        for (uint32_t stride = size >> 1; stride >= 64; stride >>= 1) {
            __syncthreads();
            for (uint32_t p = tid; p < np / 2; p += nt) {
                const uint32_t i = ((p & ~(stride - 1)) << 1) | (p & (stride - 1)), j = i + stride;
                const bool desc = (i & size) == 0;
                const uint64_t a = key[i], c = key[j];
                if (desc ? (a < c) : (a > c)) { key[i] = c; key[j] = a; }
            }
        }
        __syncthreads();
        warp_stages(size, size);
    }
    __syncthreads();
}

/* The row's clamped range and how many columns it takes. */
__device__ __forceinline__ int topk_row_range(int64_t r, int64_t cols, const int32_t *row_start,
                                              const int32_t *row_end, int k, int64_t *st,
                                              int64_t *en)
{
    nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols, cols, st, en);
    return (int)min((int64_t)k, *en - *st);
}

/* The largest bin a counting select takes (topk_rank_top): keys bunched
   more than this go to the radix cut and the bitonic sort. A key's place
   costs one compare per key of its bin, so bins of 128 still cost less
   than the bitonic sort; they take rows whose best keys straddle a power
   of two (the top 2,048 of a row in descending order: the first key's
   exponent is one above the others', so the bins are about 32 times
   coarser), which bins of 32 sent to the sort (bench/RESULTS.md). */
#ifndef NSA_TOPK_SORT_BIN
#define NSA_TOPK_SORT_BIN 128
#endif
/* The least kk that topk_rank_top serves: below it the bitonic sort of kk
   keys is cheaper than the counting select's scan of its bins. */
#ifndef NSA_TOPK_COUNT_MIN
#define NSA_TOPK_COUNT_MIN 256
#endif
/* The most keys a list may hold for topk_rank_top to select from it: its
   scratch lies past them. */
#define NSA_TOPK_COUNT_KEYS(kk) (NSA_TOPK_CAP - (kk) - NSA_TOPK_SORT_BIN)

/* f(place, key) for each of the kk largest keys of L.key[0 .. n), place
   being its rank from the largest (0 .. kk - 1), by one counting pass;
   zero keys are padding and left out. Needs at least kk >= 1 nonzero keys,
   distinct, and n <= NSA_TOPK_COUNT_KEYS(kk). Returns false, without a
   call, when the keys bunch: a bin among those that hold the kk largest
   with more than NSA_TOPK_SORT_BIN keys.
   The bins are the NSA_TOPK_DIGIT bits below the bits that all the keys
   share (topk_and_or), so that keys from any spread of scores fill many
   bins: the top 2,048 of 129,280 uniform scores hold about one a bin. Bin
   sizes, then their exclusive scan from the top bin down: bin d's keys
   take the places [start(d), start(d) + size(d)), and the bins that start
   below kk hold the kk largest. Their keys are copied past n, into their
   bins' places (unordered within a bin), and a key's place is its bin's
   start plus the number of its bin's keys above it. O(n) work and a few
   barriers, against a radix cut's rounds and the bitonic sort's
   O(kk log^2 kk) and its log^2 kk barriers. Called by every thread of the
   block; ends synchronised. */
template <typename F>
__device__ bool topk_rank_top(const TopkList &L, uint32_t n, uint32_t kk, TopkShared &sh, F f)
{
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31;
    uint64_t all, any;
    topk_and_or<true>([&](int64_t i) { return L.key[i]; }, n, sh, all, any);
    if (all == any) { /* one nonzero key, so kk = 1 */
        for (uint32_t i = tid; i < n; i += nt)
            if (L.key[i]) f(0u, L.key[i]);
        __syncthreads();
        return true;
    }
    const int top = 63 - __clzll((long long)(all ^ any)); /* the highest bit that differs */
    const int width = min(NSA_TOPK_DIGIT, top + 1), shift = top + 1 - width;
    const uint32_t nb = 1u << width;
    constexpr uint32_t OUT = 0x80000000u; /* a bin that starts at kk or later */
    uint32_t *bin = L.hist;
    auto bin_of = [&](uint64_t key) { return (uint32_t)(key >> shift) & (nb - 1); };
    for (uint32_t b = tid; b < nb; b += nt) bin[b] = 0;
    if (tid == 0) sh.res[0] = 0;
    __syncthreads();
    for (uint32_t i = tid; i < n; i += nt) {
        const uint64_t key = L.key[i];
        if (key) atomicAdd(&bin[bin_of(key)], 1u);
    }
    __syncthreads();
    /* starts in place (OUT past kk), thread t the t-th group of bins from
       the top; the largest bin that starts below kk to sh.res[0], and the
       end of the one that holds the kk-th key (the keys copied) to
       sh.res[1] */
    int lo, hi;
    uint32_t sum;
    uint32_t at = topk_scan_groups(bin, (int)nb, sh, lo, hi, sum), big = 0;
    for (int b = hi - 1; b >= lo; --b) {
        const uint32_t c = bin[b];
        if (at < kk) {
            big = max(big, c);
            if (at + c >= kk) sh.res[1] = at + c;
        }
        bin[b] = at < kk ? at : OUT;
        at += c;
    }
    for (int o = 16; o > 0; o >>= 1) big = max(big, __shfl_xor_sync(0xffffffffu, big, o));
    if (lane == 0 && big > 0) atomicMax(&sh.res[0], big);
    __syncthreads();
    if (sh.res[0] > NSA_TOPK_SORT_BIN) return false; /* the same for every thread */
    const uint32_t copied = sh.res[1];
    uint64_t *tmp = L.key + n;
    for (uint32_t i = tid; i < n; i += nt) {
        const uint64_t key = L.key[i];
        if (!key) continue;
        uint32_t *b = &bin[bin_of(key)];
        if (*b != OUT) tmp[atomicAdd(b, 1u)] = key; /* bin[d] ends as the bin's end */
    }
    __syncthreads();
    for (uint32_t i = tid; i < copied; i += nt) {
        const uint64_t key = tmp[i];
        const uint32_t d = bin_of(key), b0 = d + 1 < nb ? bin[d + 1] : 0u, b1 = bin[d];
        uint32_t place = b0;
        for (uint32_t j = b0; j < b1; ++j) place += tmp[j] > key;
        if (place < kk) f(place, key);
    }
    __syncthreads();
    return true;
}

/* A row's output past its kk places: -1, and its count. */
__device__ __forceinline__ void topk_pad_row(uint32_t kk, int k, int32_t *out, int32_t *out_count)
{
    for (int i = (int)kk + threadIdx.x; i < k; i += blockDim.x) out[i] = -1;
    if (threadIdx.x == 0 && out_count) *out_count = (int32_t)kk;
}

/* Writes a row's output: the column of rank key `key` at place `place`. */
struct TopkPut {
    int32_t *out;
    __device__ void operator()(uint32_t place, uint64_t key) const
    {
        out[place] = (int32_t)nsa_rank_index(key);
    }
};

/* The keep_last of a stream whose list goes to topk_write_row. */
__device__ __forceinline__ uint32_t topk_keep_last(uint32_t kk)
{
    return kk >= NSA_TOPK_COUNT_MIN ? NSA_TOPK_COUNT_KEYS(kk) : kk;
}

/* A row's output from the n >= kk distinct nonzero keys of its list that
   hold its kk best (topk_stream with topk_keep_last): those kk sorted,
   best first, -1 past kk. By topk_rank_top where kk is large enough and
   the keys do not bunch (try_count), else cut to kk (topk_keep) and sorted
   (topk_sort_desc). */
__device__ void topk_write_row(const TopkList &L, uint32_t n, uint32_t kk, int k, int32_t *out,
                               int32_t *out_count, TopkShared &sh, bool try_count)
{
    const TopkPut put{out};
    if (!(try_count && kk >= NSA_TOPK_COUNT_MIN && n <= NSA_TOPK_COUNT_KEYS(kk) &&
          topk_rank_top(L, n, kk, sh, put))) {
        if (n > kk) topk_keep(L, n, kk, sh);
        topk_sort_desc(L.key, kk);
        for (uint32_t i = threadIdx.x; i < kk; i += blockDim.x) put(i, L.key[i]);
    }
    topk_pad_row(kk, k, out, out_count);
}

/* Many rows: one CTA per row. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_row_kernel(const float *scores, int64_t cols, int64_t row_stride, const int32_t *row_start,
                const int32_t *row_end, int k, int32_t *out_idx, int32_t *out_count)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int64_t r = blockIdx.x;
    int64_t st, en; /* clamped, empty when en <= st: nsa.h's one rule */
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    int32_t *out = out_idx + r * (int64_t)k;
    int32_t *cnt = out_count ? out_count + r : NULL;
    const TopkList L = topk_list(smem_raw);
    uint32_t n = 0;
    if (kk > 0) /* the same for the whole CTA */
        n = topk_stream(TopkScores{scores + r * row_stride + st, 0}, (uint32_t)(en - st),
                        (uint32_t)kk, topk_keep_last((uint32_t)kk), 0ull, true, L, sh);
    topk_write_row(L, n, (uint32_t)kk, k, out, cnt, sh, true);
}

/* Few rows, step 1 of 2: grid (slices, rows). Slice s of row r writes its
   best keys to best[(r * slices + s) * k ..], zeros past them. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_slice_kernel(const float *scores, int64_t cols, int64_t row_stride,
                  const int32_t *row_start, const int32_t *row_end, int k, uint64_t *best)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int64_t r = blockIdx.y;
    int64_t st, en;
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    if (kk == 0) return; /* the merge reads nothing of this row */
    const int64_t len = cdiv64(en - st, gridDim.x);
    const int64_t lo = min(en, st + len * blockIdx.x), hi = min(en, lo + len);
    const TopkList L = topk_list(smem_raw);
    const uint32_t n = topk_stream(TopkScores{scores + r * row_stride + lo, (uint32_t)(lo - st)},
                                   (uint32_t)(hi - lo), (uint32_t)kk, (uint32_t)kk, 0ull, true,
                                   L, sh);
    uint64_t *dst = best + (r * gridDim.x + blockIdx.x) * (int64_t)k;
    for (int i = threadIdx.x; i < k; i += blockDim.x) dst[i] = i < (int)n ? L.key[i] : 0ull;
}

/* Few rows, step 2 of 2: one CTA per row, the slices' keys merged: where
   they fit beside topk_rank_top's scratch, read into shared memory and
   ranked there at once; else (or where they bunch) streamed (floor 1: the
   zeros past each slice's keys are dropped) and written as a row. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 1)
topk_merge_kernel(int64_t cols, const int32_t *row_start, const int32_t *row_end, int k,
                  int slices, const uint64_t *best, int32_t *out_idx, int32_t *out_count)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __shared__ TopkShared sh;
    const int64_t r = blockIdx.x;
    int64_t st, en;
    const int kk = topk_row_range(r, cols, row_start, row_end, k, &st, &en);
    const TopkList L = topk_list(smem_raw);
    const uint64_t *keys = best + r * slices * (int64_t)k;
    const uint32_t nkeys = (uint32_t)(slices * k);
    int32_t *out = out_idx + r * (int64_t)k, *cnt = out_count ? out_count + r : NULL;
    const bool direct = kk >= NSA_TOPK_COUNT_MIN && nkeys <= NSA_TOPK_COUNT_KEYS((uint32_t)kk);
    if (direct) { /* the same for the whole CTA */
        for (uint32_t i = threadIdx.x; i < nkeys; i += blockDim.x) L.key[i] = __ldcg(keys + i);
        __syncthreads();
        if (topk_rank_top(L, nkeys, (uint32_t)kk, sh, TopkPut{out})) {
            topk_pad_row((uint32_t)kk, k, out, cnt);
            return;
        }
    }
    uint32_t n = 0;
    if (kk > 0)
        n = topk_stream(TopkKeys{keys}, nkeys, (uint32_t)kk, (uint32_t)kk, 1ull, false, L, sh);
    topk_write_row(L, n, (uint32_t)kk, k, out, cnt, sh, !direct);
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
     - topk_block_mask_kernel, one CTA per row, launched chained to the
       first (it starts while the first ends): the row's eligible block
       scores read once into shared memory as 32-bit score keys (up to
       NSA_TOPK_MASK_STAGED; a longer row's are read from L2 in each
       pass), the radix select (topk_radix_cut_from) over them, a pass a
       digit, then every block's mask byte (its key >= the cut; rank keys
       where equal scores straddle the cut) and the count. Any n: no list
       is kept, and no sort (the mask needs only the set).
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
    chain_release(); /* the mask kernel may launch: it waits for this one's end */
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
            topk_for_each(row, t0, t1, [&](int64_t i, float v) {
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

/* Eligible block scores a mask CTA keeps on chip (64 KB): a longer row
   reads them from the workspace (L2) in every radix round. */
#define NSA_TOPK_MASK_STAGED 16384

/* Row r's mask bytes mask_row[j] = in(j), j < nblocks, by all threads of
   the block: aligned 4-byte words for the body (a quarter of the stores
   of one byte a thread). */
template <typename In>
__device__ __forceinline__ void topk_write_mask_row(uint8_t *mask_row, int64_t nblocks, In in)
{
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t head = min(nblocks, (int64_t)((4u - ((uintptr_t)mask_row & 3u)) & 3u));
    const int64_t words = (nblocks - head) >> 2, tail = head + 4 * words;
    for (int64_t j = tid; j < head; j += nt) mask_row[j] = (uint8_t)in(j);
    uint32_t *w = (uint32_t *)(mask_row + head);
    for (int64_t x = tid; x < words; x += nt) {
        const int64_t j = head + 4 * x;
        w[x] = (uint32_t)in(j) | (uint32_t)in(j + 1) << 8 | (uint32_t)in(j + 2) << 16 |
               (uint32_t)in(j + 3) << 24;
    }
    for (int64_t j = tail + tid; j < nblocks; j += nt) mask_row[j] = (uint8_t)in(j);
}

/* Block masks, step 2 of 2: one CTA per row (grid = rows), launched
   chained to step 1 (nsah::launch_chained). bscores holds the row's
   eligible block scores (step 1) when it has more eligible blocks than n,
   and is not read otherwise (it may be NULL when no row can: n == 0 or n
   >= nblocks). A row of up to NSA_TOPK_MASK_STAGED of them is read once
   into shared memory as 32-bit score keys (staged, dynamic; the launch
   gives it when some row may need it), with their AND and OR on the way,
   and the radix select runs on those keys: the kk best blocks are the
   keys above the cut, unless equal scores straddle it, when the rank keys
   (score, then the lower block) decide, from the same staged keys. A
   longer row's rank keys are read from L2 in each round. Writes
   mask[r*nblocks + j] for every block and out_count[r]. */
__global__ void __launch_bounds__(NSA_TOPK_THREADS, 2)
topk_block_mask_kernel(int64_t cols, const int32_t *row_start, const int32_t *row_end,
                       int64_t block, int64_t nblocks, int n, const float *bscores,
                       uint8_t *mask, int32_t *out_count)
{
    extern __shared__ uint32_t staged[];
    __shared__ uint32_t hist[NSA_TOPK_BINS];
    __shared__ TopkShared sh;
    chain_wait();
    const int tid = threadIdx.x, nt = blockDim.x;
    const int64_t r = blockIdx.x;
    int64_t a, e, j0, j1;
    topk_row_blocks(r, cols, row_start, row_end, block, &a, &e, &j0, &j1);
    const int64_t m = j1 - j0, kk = min((int64_t)n, m);
    uint8_t *mask_row = mask + r * nblocks;
    if (tid == 0 && out_count) out_count[r] = (int32_t)kk;
    if (kk == 0 || kk == m) { /* none or every eligible block: the whole CTA leaves */
        topk_write_mask_row(mask_row, nblocks,
                            [&](int64_t j) { return kk > 0 && j >= j0 && j < j1; });
        return;
    }
    /* 0 < kk < m: select among the m eligible scores, keys relative to j0
       as the reference's (nsa_rank_key(score key, j - j0)) */
    const float *bs = bscores + r * nblocks + j0;
    if (m > NSA_TOPK_MASK_STAGED) { /* the same for the CTA */
        const auto key_at = [&](int64_t i) { return topk_rank(__ldcg(bs + i), i); };
        const uint64_t cut = topk_radix_cut(key_at, m, (uint32_t)kk, hist, sh);
        topk_write_mask_row(mask_row, nblocks,
                            [&](int64_t j) { return j >= j0 && j < j1 && key_at(j - j0) >= cut; });
        return;
    }
    constexpr int U = 8; /* loads in flight a thread */
    uint32_t all = ~0u, any = 0u;
    for (int64_t i0 = tid; i0 < m; i0 += U * nt) {
        float v[U];
#pragma unroll
        for (int u = 0; u < U; ++u)
            if (i0 + u * nt < m) v[u] = __ldcg(bs + i0 + u * nt);
#pragma unroll
        for (int u = 0; u < U; ++u)
            if (i0 + u * nt < m) {
                const uint32_t k = nsa_score_key(v[u]);
                staged[i0 + u * nt] = k;
                all &= k;
                any |= k;
            }
    }
    topk_and_or_reduce(all, any, sh); /* its barrier also publishes staged */
    uint32_t tied;
    const uint32_t cut = topk_radix_cut_from<uint32_t>(
        all, any, [&](int64_t i) { return staged[i]; }, m, (uint32_t)kk, hist, sh, &tied);
    if (!tied) {
        topk_write_mask_row(mask_row, nblocks,
                            [&](int64_t j) { return j >= j0 && j < j1 && staged[j - j0] >= cut; });
        return;
    }
    /* equal scores straddle the cut: the rank keys' cut (uniform: tied is
       the CTA's) */
    const auto rank_at = [&](int64_t i) { return nsa_rank_key(staged[i], i); };
    const uint64_t rcut = topk_radix_cut(rank_at, m, (uint32_t)kk, hist, sh);
    topk_write_mask_row(mask_row, nblocks,
                        [&](int64_t j) { return j >= j0 && j < j1 && rank_at(j - j0) >= rcut; });
}

} /* namespace nsak */

#endif
