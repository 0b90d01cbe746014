/* nsa.h -- Native Sparse Attention: the public API.

   nsa computes DeepSeek's Native Sparse Attention (Yuan et al., 2025) exactly
   as NSA_CONTRACT.md (docs/CONTRACT.md) fixes it: three branches (compressed,
   selected, window) over packed variable-length sequences, mixed by gates.
   Two implementations sit behind this one API:

     nsa_ref.h   exact CPU reference (C99, OpenMP optional)   nsa_ref_*
     nsa_cuda.h  CUDA kernels                                  nsa_cuda_*

   This header declares the types they share, the parameter presets, the
   validator, the size queries and the error reporting.

   USING IT
     In exactly one C or C++ file of your program:
         #define NSA_REF_IMPLEMENTATION  // the CPU reference
         #include "nsa_ref.h"
     Everywhere else include "nsa_ref.h" (or "nsa.h") as a plain header.
     The CUDA path is compiled once from a .cu file that defines
     NSA_CUDA_IMPLEMENTATION before including "nsa_cuda.h"; C files then call
     it through the plain declarations of nsa_cuda.h.
     Either implementation macro also defines the shared part of this header
     (presets, validation, errors), which a program must hold exactly once:
       - both implementations in one file: define both macros there;
       - in two files: define NSA_SHARED_IN_OTHER_FILE in one of them
         (otherwise the link fails with a duplicate symbol whose name says
         so: nsa_shared_part_is_in_two_files_define_NSA_SHARED_IN_OTHER_FILE
         _in_one);
       - the shared part alone (a program that only sizes buffers):
         NSA_IMPLEMENTATION.

   CONVENTIONS
     - Every entry point returns nsa_status; NSA_OK is 0. On any other status
       no output buffer has been touched, and nsa_last_error() returns a
       message (thread-local) naming the argument and the rule it broke.
     - Tensors are packed over sequences: Q [TQ, H, Dk], K [T, Hkv, Dk],
       V [T, Hkv, Dv], O [TQ, H, Dv], gates [TQ, H, 3]. Inputs Q, K, V may have
       token and head strides (in elements, 0 = contiguous); everything else
       is contiguous.
     - No entry point allocates: scratch is a caller-owned workspace whose
       size a query returns; what backward needs is kept by forward in a
       caller-owned nsa_saved (nsa_buffers_place cuts it and nsa_grads from
       one block).
     - No output may overlap an input or another output (o over q
       included): outputs are written while inputs are still being read.
       Nothing checks this; the results are undefined.

   OPTIONS (macros read by this header)
     NSA_IMPLEMENTATION   define the shared functions in this translation unit
                          (implied by NSA_REF_IMPLEMENTATION and
                          NSA_CUDA_IMPLEMENTATION)
     NSA_SHARED_IN_OTHER_FILE  another file of the program defines them
     NSADEF               storage class of every function (default extern)

   LICENSE: MIT. */
#ifndef NSA_H
#define NSA_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifndef NSADEF
#define NSA__DEFAULT_NSADEF /* the sentinel below needs external linkage */
#ifdef __cplusplus
#define NSADEF extern "C"
#else
#define NSADEF extern
#endif
#endif

#define NSA_CONTRACT_VERSION "1.0"

/* ------------------------------------------------------------------------ */
/* Status                                                                    */

typedef enum nsa_status {
    NSA_OK = 0,
    NSA_ERR_NULL_POINTER,     /* a required pointer is NULL                    */
    NSA_ERR_INVALID_CONFIG,   /* a parameter of nsa_config breaks a rule        */
    NSA_ERR_INVALID_BATCH,    /* shapes, strides or cu_seqlens break a rule     */
    NSA_ERR_OVERFLOW,         /* a size product does not fit in 64 bits         */
    NSA_ERR_WORKSPACE,        /* the workspace is smaller than the size query  */
    NSA_ERR_UNSUPPORTED,      /* valid, but this implementation lacks it        */
    NSA_ERR_DEVICE            /* the CUDA runtime reported an error             */
} nsa_status;

/* Message for the last failed call on this thread ("" if none). */
NSADEF const char *nsa_last_error(void);
/* Fixed name of a status, e.g. "NSA_ERR_INVALID_CONFIG". */
NSADEF const char *nsa_status_string(nsa_status status);

/* ------------------------------------------------------------------------ */
/* Parameters                                                                */

typedef enum nsa_dtype { NSA_BF16 = 0, NSA_FP16 = 1, NSA_FP32 = 2 } nsa_dtype;

/* Selection importance (contract, Selection step 1). */
typedef enum nsa_score_mode {
    NSA_SCORE_PROBS = 0,   /* compressed-branch softmax probabilities (paper) */
    NSA_SCORE_LOGITS = 1   /* raw sc * q . K_cmp                             */
} nsa_score_mode;

/* Branch bits, also the gate order g[t,h,0..2] = (cmp, slc, win). */
enum {
    NSA_BRANCH_CMP = 1,
    NSA_BRANCH_SLC = 2,
    NSA_BRANCH_WIN = 4,
    NSA_BRANCH_ALL = 7
};

/* Accumulation type of every sum (contract: fp32; the reference also
   offers fp64, the CUDA path returns NSA_ERR_UNSUPPORTED for it). */
typedef enum nsa_accum { NSA_ACCUM_FP32 = 0, NSA_ACCUM_FP64 = 1 } nsa_accum;

typedef struct nsa_config {
    int l;          /* compression block length                           */
    int d;          /* compression stride; d divides l and l'             */
    int lp;         /* selection block length l'                          */
    int n;          /* selected blocks per query (or tile), forced incl.  */
    int n_init;     /* forced leading blocks (blocks 0 .. n_init-1)        */
    int n_local;    /* forced blocks ending at the query's own block       */
    int w;          /* window length                                      */
    int bq;         /* query tile for selection; 1 = per-token selection  */
    nsa_score_mode score_mode;
    unsigned branches;      /* NSA_BRANCH_* bits that are on              */
    float scale;            /* softmax scale; 0 = 1/sqrt(Dk)              */
    int caller_compressed;  /* 1: K_cmp/V_cmp come from the caller        */
    int deterministic;      /* 1 (default): bitwise-reproducible backward */
    nsa_accum accum;        /* NSA_ACCUM_FP32 (default) or _FP64 (ref)    */
} nsa_config;

/* Presets of the contract ("Presets worth shipping"). */
NSADEF nsa_config nsa_config_paper(void);     /* l=32 d=16 l'=64 n=16 w=512   */
NSADEF nsa_config nsa_config_fla(void);       /* l=d=l'=64 n=16 w=512         */
/* tile-style: l=d=64, l'=lp (64 or 128), logits, Bq=bq (64 or 128), only the
   local block forced (n_init=0, n_local=1), n=16, w=512. */
NSADEF nsa_config nsa_config_tile(int lp, int bq);

/* NSA_OK, or NSA_ERR_INVALID_CONFIG with a message naming the rule. */
NSADEF nsa_status nsa_config_validate(const nsa_config *cfg);

/* ------------------------------------------------------------------------ */
/* A batch of packed sequences                                               */

typedef struct nsa_batch {
    int B;                         /* number of sequences                      */
    int64_t T;                     /* total keys = cu_seqlens[B]               */
    int64_t TQ;                    /* total queries = cu_seqlens_q[B]; ignored
                                      (taken as T) when cu_seqlens_q is NULL   */
    const int32_t *cu_seqlens;     /* host, B+1: key sequence starts           */
    const int32_t *cu_seqlens_q;   /* host, B+1, or NULL: query i of sequence b
                                      sits at position TK_b - TQ_b + i         */
    const int32_t *cu_seqlens_dev;   /* CUDA path: device copies of the two  */
    const int32_t *cu_seqlens_q_dev; /* arrays above (ignored by nsa_ref_*)   */
    int H, Hkv, Dk, Dv;
    nsa_dtype dtype;               /* storage type of every non-index tensor  */
    const void *q; int64_t q_stride_token, q_stride_head;  /* [TQ, H, Dk]    */
    const void *k; int64_t k_stride_token, k_stride_head;  /* [T, Hkv, Dk]   */
    const void *v; int64_t v_stride_token, v_stride_head;  /* [T, Hkv, Dv]   */
    /* caller_compressed mode: K_cmp [Tc, Hkv, Dk], V_cmp [Tc, Hkv, Dv]. */
    const void *k_cmp, *v_cmp;
    /* Optional caller selection [units, Hkv, n] and counts [units, Hkv]:
       when set, forward skips selection steps 1-6 and attends these blocks.
       An entry is used iff 0 <= idx < ceil(TK_b / l'); count is clamped to
       [0, n]. */
    const int32_t *sel_idx, *sel_count;
} nsa_batch;

/* Element counts of every buffer the API exchanges, for one config and
   batch. Compressed blocks and selection units are packed sequence after
   sequence like tokens. */
typedef struct nsa_sizes {
    int64_t T, TQ;
    int64_t Tc;          /* compressed blocks, all sequences               */
    int64_t units;       /* selection units: queries (bq=1) or query tiles */
    int64_t max_slc_blocks; /* max over sequences of ceil(TK_b / l')       */
    int64_t q, k, v, o;  /* TQ*H*Dk, T*Hkv*Dk, T*Hkv*Dv, TQ*H*Dv           */
    int64_t gates;       /* TQ*H*3                                         */
    int64_t lse;         /* TQ*H, one array per branch                     */
    int64_t k_cmp, v_cmp;/* Tc*Hkv*Dk, Tc*Hkv*Dv                           */
    int64_t sel_idx;     /* units*Hkv*n                                    */
    int64_t sel_count;   /* units*Hkv                                      */
    int64_t block_mask;  /* units*Hkv*max_slc_blocks                       */
    /* Resolved once by the validator, by the rules below: */
    double scale;        /* nsa_scale(cfg.scale, Dk), exact                */
    int nbranch;         /* nsa_branch_count(cfg.branches)                 */
    int64_t q_stride_token, q_stride_head;  /* element strides, 0 resolved */
    int64_t k_stride_token, k_stride_head;  /* by nsa_token_stride and     */
    int64_t v_stride_token, v_stride_head;  /* nsa_head_stride             */
} nsa_sizes;

/* Validates cfg and the batch's shapes, strides and cu_seqlens (every rule
   of the contract's Errors section but the data pointers, which a caller
   sizing its buffers has not allocated yet) and fills sizes. Every entry
   point checks the same rules, and the pointers too. */
NSADEF nsa_status nsa_sizes_get(const nsa_config *cfg, const nsa_batch *batch,
                                nsa_sizes *sizes);

/* What forward keeps for backward, in caller-owned memory. */
typedef struct nsa_saved {
    float *lse_cmp, *lse_slc, *lse_win; /* [TQ, H] each, natural log; needed
                                           for the branches that are on     */
    int32_t *sel_idx;    /* [units, Hkv, n] ascending, -1 padded (slc on)   */
    int32_t *sel_count;  /* [units, Hkv]                         (slc on)   */
    void *k_cmp, *v_cmp; /* [Tc, Hkv, D] storage dtype (mean mode, cmp or
                            slc on); unused in caller_compressed mode       */
    float *o_branch;     /* optional (NULL: none): [3, TQ, H, Dv] fp32, the
                            branches' normalised outputs o_c, planes cmp,
                            slc, win (an off branch's plane is not touched).
                            Forward writes it; backward then reads Delta's
                            and dg's o_c from it instead of recomputing each
                            branch: 3 * sizes.o floats for a pass of every
                            branch. Pass the same saved to both calls.
                            fp64 accumulation (NSA_ACCUM_FP64, reference)
                            writes the planes rounded to fp32 but does not
                            read them: it recomputes o_c in fp64.          */
} nsa_saved;

/* Gradients written by backward; all contiguous, storage dtype. */
typedef struct nsa_grads {
    void *dq;       /* [TQ, H, Dk]                                   */
    void *dk;       /* [T, Hkv, Dk]                                  */
    void *dv;       /* [T, Hkv, Dv]                                  */
    void *dgates;   /* [TQ, H, 3]; required iff gates were given     */
    void *dk_cmp;   /* [Tc, Hkv, Dk]; required in caller_compressed  */
    void *dv_cmp;   /* [Tc, Hkv, Dv]; required in caller_compressed  */
} nsa_grads;

/* Every buffer of nsa_saved and nsa_grads in one caller-owned block, for
   either implementation (host or device memory: the block is only cut, never
   read). with_gates: 1 if the calls will pass gates (grads.dgates is then
   placed too). nsa_buffers_bytes gives the block's size in bytes, alignment
   slack included; nsa_buffers_place cuts block into the buffers that cfg
   needs, each aligned to NSA_BUFFER_ALIGN bytes, and sets the others to
   NULL. The block must stay alive as long as saved and grads are used. */
#define NSA_BUFFER_ALIGN 256
NSADEF nsa_status nsa_buffers_bytes(const nsa_config *cfg, const nsa_batch *batch,
                                    int with_gates, size_t *bytes);
NSADEF nsa_status nsa_buffers_place(const nsa_config *cfg, const nsa_batch *batch,
                                    int with_gates, void *block, size_t bytes,
                                    nsa_saved *saved, nsa_grads *grads);

/* ------------------------------------------------------------------------ */
/* Small shared rules                                                        */
/* Each rule of the contract that more than one implementation needs is
   written once, here, as a small function that host and device code can
   call (NSA_HD is __host__ __device__ under nvcc). The CPU reference and the
   CUDA kernels call these; the test oracle (tests/oracle.h) does not, so
   that it stays an independent statement of the contract.                 */

#if defined(__CUDACC__)
#define NSA_HD __host__ __device__
#else
#define NSA_HD
#endif

/* Compressed blocks of a sequence of N keys: max(0, floor((N-l)/d) + 1)
   (contract, branch 1). */
static inline NSA_HD int64_t nsa_cmp_blocks(int64_t N, int l, int d)
{
    return N < l ? 0 : (N - l) / d + 1;
}
/* Selection blocks of a sequence of N keys: ceil(N / l') (branch 2). */
static inline NSA_HD int64_t nsa_slc_blocks(int64_t N, int lp)
{
    return (N + lp - 1) / lp;
}
/* Selection units of a sequence with TQ queries: ceil(TQ / bq) (Selection
   step 4: tiles start at the sequence's first query). */
static inline NSA_HD int64_t nsa_units(int64_t TQ, int bq)
{
    return (TQ + bq - 1) / bq;
}

/* Compressed-block causality (contract, branch 1): query position t sees
   compressed block i iff the whole block is at or before t,
   i*d + l - 1 <= t. */
static inline NSA_HD int nsa_cmp_visible(int64_t i, int64_t t, int l, int d)
{
    return i * d + l - 1 <= t;
}
/* The first position that sees compressed block i: i*d + l - 1. */
static inline NSA_HD int64_t nsa_cmp_first_query(int64_t i, int l, int d)
{
    return i * d + l - 1;
}
/* How many compressed blocks position t sees, i = 0 .. count-1 (not capped
   by the sequence's own block count: take the min with nsa_cmp_blocks). */
static inline NSA_HD int64_t nsa_cmp_visible_count(int64_t t, int l, int d)
{
    return t < l - 1 ? 0 : (t - l + 1) / d + 1;
}

/* The overlap map (contract, Selection step 2). With segments of d keys,
   segment m (0 <= m < l'/d) of selection block j is segment k
   (0 <= k < l/d) of compressed block nsa_overlap_index(j, m, k, ...) =
   (l'/d)*j + m - k; score[j] sums p[i] over all pairs (m, k) whose index
   is a visible block (others are skipped). Summed over m outer, k inner
   (the order of the reference and of the kernels). */
static inline NSA_HD int64_t nsa_overlap_index(int64_t j, int m, int k, int d,
                                               int lp)
{
    return (int64_t)(lp / d) * j + m - k;
}
/* The same map as a weight: the number of d-key segments that compressed
   block i and selection block j share (0 when they do not overlap). */
static inline NSA_HD int nsa_overlap_weight(int64_t i, int64_t j, int l, int d,
                                            int lp)
{
    const int64_t a0 = i, a1 = i + l / d;                       /* [a0, a1) */
    const int64_t b0 = j * (lp / d), b1 = (j + 1) * (lp / d);   /* [b0, b1) */
    const int64_t lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    return hi > lo ? (int)(hi - lo) : 0;
}

/* Eligible selection blocks of a unit whose last query is t_last
   (Selection step 5): j*l' <= t_last, i.e. j < t_last/l' + 1 (take the min
   with nsa_slc_blocks). */
static inline NSA_HD int64_t nsa_slc_eligible_count(int64_t t_last, int lp)
{
    return t_last / lp + 1;
}
/* Is eligible block j forced (step 5)? The first n_init blocks and the
   n_local blocks ending at t_last's block floor(t_last/l'). */
static inline NSA_HD int nsa_slc_forced(int64_t j, int64_t t_last, int lp,
                                        int n_init, int n_local)
{
    const int64_t cur = t_last / lp;
    return j < n_init || (j > cur - n_local && j <= cur);
}

/* Row ranges of top-k (nsa_ref_topk_rows, nsa_cuda_topk_rows): the range
   [start, end) of a row of cols scores is clamped, start to [0, cols] and
   end to [start, cols]; a range with end <= start is empty (count 0, every
   index -1). Indices are relative to the clamped start. One rule that both
   implementations follow without reading the range arrays on the host (a
   device array cannot be validated without a host sync), so no range is
   an error. */
static inline NSA_HD void nsa_topk_range(int64_t start, int64_t end, int64_t cols,
                                         int64_t *lo, int64_t *hi)
{
    start = start < 0 ? 0 : start > cols ? cols : start;
    end = end < start ? start : end > cols ? cols : end;
    *lo = start;
    *hi = end;
}

/* Bits of an fp32 value (and back). */
static inline NSA_HD uint32_t nsa__f32_bits(float f)
{
    union { float f; uint32_t u; } x;
    x.f = f;
    return x.u;
}
static inline NSA_HD float nsa__f32_from_bits(uint32_t u)
{
    union { float f; uint32_t u; } x;
    x.u = u;
    return x.f;
}

/* The ranking of Selection step 6 as one unsigned order. nsa_score_key maps
   an fp32 score to a 32-bit key that orders as the contract ranks: larger
   score, larger key; -0 and +0 the same key; every NaN the key 1, below
   -inf (whose key is 0x007fffff). Key 0 is never produced: an
   implementation may use it for "not a candidate". */
#define NSA_SCORE_KEY_NAN 1u
static inline NSA_HD uint32_t nsa_score_key(float f)
{
    uint32_t u = nsa__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return NSA_SCORE_KEY_NAN;
    if (u == 0x80000000u) u = 0u; /* -0 ranks as +0 */
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
/* A candidate's 64-bit rank key: its score key above the complement of its
   index, so that all keys of a row are distinct and equal scores rank the
   lower index higher ("the k largest keys" is then exactly the rule). */
static inline NSA_HD uint64_t nsa_rank_key(uint32_t score_key, int64_t idx)
{
    return ((uint64_t)score_key << 32) | (uint64_t)(0xffffffffu - (uint32_t)idx);
}
/* The index back from a rank key. */
static inline NSA_HD int64_t nsa_rank_index(uint64_t rank_key)
{
    return (int64_t)(0xffffffffu - (uint32_t)(rank_key & 0xffffffffu));
}

/* Default strides (contract, Shapes: 0 means contiguous), in elements, of
   a [N, heads, D] tensor. */
static inline NSA_HD int64_t nsa_head_stride(int64_t given, int D)
{
    return given ? given : (int64_t)D;
}
static inline NSA_HD int64_t nsa_token_stride(int64_t given, int heads, int D)
{
    return given ? given : (int64_t)heads * D;
}

/* Softmax scale (contract, "The three branches"): cfg.scale, or 1/sqrt(Dk)
   when it is 0. Returned exactly; fp32 arithmetic (the contract's) rounds it
   to fp32 once, (float)nsa_scale(...), and the reference's fp64 mode uses
   the double. */
static inline NSA_HD double nsa_scale(float scale, int Dk)
{
    return scale > 0.0f ? (double)scale : 1.0 / sqrt((double)Dk);
}

/* Number of enabled branches (the NSA_BRANCH_* bits that are on). */
static inline NSA_HD int nsa_branch_count(unsigned branches)
{
    return (int)(branches & 1u) + (int)((branches >> 1) & 1u) +
           (int)((branches >> 2) & 1u);
}
/* The gate of an enabled branch when no gates are given (contract, "Gates
   and output"): 1 / (number of enabled branches), in fp32. */
static inline NSA_HD float nsa_default_gate(unsigned branches)
{
    return 1.0f / (float)nsa_branch_count(branches);
}

/* ------------------------------------------------------------------------ */
/* bf16 / fp16 <-> fp32, exact round-to-nearest-even, NaN kept, subnormals
   right. Shared by both implementations and by the tests.                  */

static inline NSA_HD float nsa_bf16_to_f32(uint16_t h)
{
    return nsa__f32_from_bits((uint32_t)h << 16);
}
static inline NSA_HD uint16_t nsa_f32_to_bf16(float f)
{
    uint32_t u = nsa__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, force quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}
static inline NSA_HD float nsa_fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1fu) /* inf or NaN */
        return nsa__f32_from_bits(sign | 0x7f800000u | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in fp32 */
        float mag = (float)man * 5.9604644775390625e-8f;
        return sign ? -mag : mag;
    }
    return nsa__f32_from_bits(sign | ((exp + 112u) << 23) | (man << 13));
}
static inline NSA_HD uint16_t nsa_f32_to_fp16(float f)
{
    uint32_t u = nsa__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, keep top payload bits */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a < 0x38800000u) { /* below 2^-14: subnormal or zero */
        /* a * 2^24 rounded to an integer, ties to even; exact steps. */
        uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e; /* value = m * 2^(e-150); want m*2^(e-126) */
        uint32_t q, rem, half;
        if (e == 0 || shift > 24) return sign; /* < 2^-25: rounds to 0 */
        q = m >> shift;
        rem = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    a += 0x0fffu + ((a >> 13) & 1u); /* round mantissa to 10 bits */
    return (uint16_t)(sign | ((a - 0x38000000u) >> 13));
}

/* Element i of a tensor of the given storage dtype, as fp32. */
static inline float nsa_load(const void *p, nsa_dtype t, int64_t i)
{
    switch (t) {
    case NSA_BF16: return nsa_bf16_to_f32(((const uint16_t *)p)[i]);
    case NSA_FP16: return nsa_fp16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}
/* Stores fp32 x as element i, rounded once to nearest even. */
static inline void nsa_store(void *p, nsa_dtype t, int64_t i, float x)
{
    switch (t) {
    case NSA_BF16: ((uint16_t *)p)[i] = nsa_f32_to_bf16(x); break;
    case NSA_FP16: ((uint16_t *)p)[i] = nsa_f32_to_fp16(x); break;
    default: ((float *)p)[i] = x; break;
    }
}
static inline size_t nsa_dtype_size(nsa_dtype t)
{
    return t == NSA_FP32 ? 4u : 2u;
}

/* ------------------------------------------------------------------------ */
/* Internal, shared by the implementations: error recording. */
NSADEF nsa_status nsa__fail(nsa_status status, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
NSADEF void nsa__clear_error(void);
/* nsa_sizes_get plus the batch's data pointers: what entry points run first. */
NSADEF nsa_status nsa__validate(const nsa_config *cfg, const nsa_batch *batch,
                                nsa_sizes *sizes);
/* The nsa_saved buffers a forward writes (for_backward = 0) or a backward
   reads (1), and the nsa_grads buffers a backward writes: one rule for both
   implementations. */
NSADEF nsa_status nsa__check_saved(const nsa_config *cfg, const nsa_sizes *sizes,
                                   const nsa_saved *saved, int for_backward);
NSADEF nsa_status nsa__check_grads(const nsa_config *cfg, const nsa_sizes *sizes,
                                   const void *gates, const nsa_grads *grads);
/* The key counts of a growing cache at its last compression (the
   *_compress_append entry points): host, batch.B entries, each in
   [0, keys of the sequence now]. Run after nsa__validate. */
NSADEF nsa_status nsa__check_seqlens_old(const nsa_batch *batch,
                                         const int32_t *seqlens_old);

#endif /* NSA_H */

/* ======================================================================== */
/* Which file holds the shared part: the one that defines an implementation
   (single-header libraries are used with one macro in one file), unless the
   caller says another file does. Evaluated at every inclusion, so that
   nsa_ref.h and nsa_cuda.h can include this header again from their own
   implementation sections. */
#if defined(NSA_IMPLEMENTATION) && defined(NSA_SHARED_IN_OTHER_FILE)
#error "nsa.h: NSA_IMPLEMENTATION and NSA_SHARED_IN_OTHER_FILE contradict each other: keep NSA_IMPLEMENTATION in the one file that holds the shared part"
#endif
#if (defined(NSA_REF_IMPLEMENTATION) || defined(NSA_CUDA_IMPLEMENTATION)) && \
    !defined(NSA_SHARED_IN_OTHER_FILE) && !defined(NSA_IMPLEMENTATION)
#define NSA_IMPLEMENTATION
#endif

#ifdef NSA_IMPLEMENTATION
#ifndef NSA_IMPLEMENTATION_DONE
#define NSA_IMPLEMENTATION_DONE

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#if defined(_MSC_VER)
#define NSA__THREAD_LOCAL __declspec(thread)
#else
#define NSA__THREAD_LOCAL __thread
#endif

static NSA__THREAD_LOCAL char nsa__error_message[512];

#ifdef NSA__DEFAULT_NSADEF
/* Defined only here, so that a program holding the shared part twice fails
   to link with a name that says what to do. */
NSADEF void nsa_shared_part_is_in_two_files_define_NSA_SHARED_IN_OTHER_FILE_in_one(void);
NSADEF void nsa_shared_part_is_in_two_files_define_NSA_SHARED_IN_OTHER_FILE_in_one(void) {}
#endif

NSADEF const char *nsa_last_error(void) { return nsa__error_message; }

NSADEF void nsa__clear_error(void) { nsa__error_message[0] = '\0'; }

NSADEF nsa_status nsa__fail(nsa_status status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(nsa__error_message, sizeof nsa__error_message, fmt, ap);
    va_end(ap);
    return status;
}

NSADEF const char *nsa_status_string(nsa_status status)
{
    switch (status) {
    case NSA_OK: return "NSA_OK";
    case NSA_ERR_NULL_POINTER: return "NSA_ERR_NULL_POINTER";
    case NSA_ERR_INVALID_CONFIG: return "NSA_ERR_INVALID_CONFIG";
    case NSA_ERR_INVALID_BATCH: return "NSA_ERR_INVALID_BATCH";
    case NSA_ERR_OVERFLOW: return "NSA_ERR_OVERFLOW";
    case NSA_ERR_WORKSPACE: return "NSA_ERR_WORKSPACE";
    case NSA_ERR_UNSUPPORTED: return "NSA_ERR_UNSUPPORTED";
    case NSA_ERR_DEVICE: return "NSA_ERR_DEVICE";
    }
    return "NSA_ERR_UNKNOWN";
}

static nsa_config nsa__config_base(void)
{
    nsa_config c;
    memset(&c, 0, sizeof c);
    c.n = 16;
    c.n_init = 1;
    c.n_local = 2;
    c.w = 512;
    c.bq = 1;
    c.score_mode = NSA_SCORE_PROBS;
    c.branches = NSA_BRANCH_ALL;
    c.scale = 0.0f;
    c.deterministic = 1;
    c.accum = NSA_ACCUM_FP32;
    return c;
}

NSADEF nsa_config nsa_config_paper(void)
{
    nsa_config c = nsa__config_base();
    c.l = 32;
    c.d = 16;
    c.lp = 64;
    return c;
}

NSADEF nsa_config nsa_config_fla(void)
{
    nsa_config c = nsa__config_base();
    c.l = c.d = c.lp = 64;
    return c;
}

NSADEF nsa_config nsa_config_tile(int lp, int bq)
{
    nsa_config c = nsa__config_base();
    c.l = c.d = 64;
    c.lp = lp;
    c.bq = bq;
    c.score_mode = NSA_SCORE_LOGITS;
    c.n_init = 0;
    c.n_local = 1;
    return c;
}

NSADEF nsa_status nsa_config_validate(const nsa_config *c)
{
    const int uses_cmp_blocks = (c != NULL) &&
        (c->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    nsa__clear_error();
    if (!c) return nsa__fail(NSA_ERR_NULL_POINTER, "cfg: is NULL");
    if (c->branches == 0 || (c->branches & ~(unsigned)NSA_BRANCH_ALL))
        return nsa__fail(NSA_ERR_INVALID_CONFIG,
                         "cfg.branches: must be a non-empty set of "
                         "NSA_BRANCH_CMP|SLC|WIN bits (got %u)", c->branches);
    if (uses_cmp_blocks) {
        if (c->l < 1 || c->d < 1)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.l, cfg.d: compression block and stride must "
                             "be >= 1 (got l=%d, d=%d)", c->l, c->d);
        if (c->l % c->d != 0)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.d: stride d=%d must divide the compression "
                             "block l=%d", c->d, c->l);
    }
    if (c->branches & NSA_BRANCH_SLC) {
        if (c->lp < 1)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.lp: selection block l' must be >= 1 (got %d)",
                             c->lp);
        if (c->lp % c->d != 0)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.d: stride d=%d must divide the selection "
                             "block l'=%d", c->d, c->lp);
        if (c->n < 1)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.n: the selected branch is on, so n must be "
                             ">= 1 (got %d)", c->n);
        if (c->n_init < 0 || c->n_local < 0)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.n_init, cfg.n_local: must be >= 0 (got %d, %d)",
                             c->n_init, c->n_local);
        if ((int64_t)c->n_init + c->n_local > c->n)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.n_init + cfg.n_local: forced blocks %d + %d "
                             "exceed n=%d", c->n_init, c->n_local, c->n);
        if (c->bq < 1)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.bq: query tile must be >= 1 (got %d)", c->bq);
        if (c->score_mode != NSA_SCORE_PROBS && c->score_mode != NSA_SCORE_LOGITS)
            return nsa__fail(NSA_ERR_INVALID_CONFIG,
                             "cfg.score_mode: must be NSA_SCORE_PROBS or "
                             "NSA_SCORE_LOGITS (got %d)", (int)c->score_mode);
    }
    if ((c->branches & NSA_BRANCH_WIN) && c->w < 1)
        return nsa__fail(NSA_ERR_INVALID_CONFIG,
                         "cfg.w: the window branch is on, so w must be >= 1 "
                         "(got %d)", c->w);
    if (!(c->scale >= 0.0f) || isinf(c->scale))
        return nsa__fail(NSA_ERR_INVALID_CONFIG,
                         "cfg.scale: must be finite and >= 0 (0 = 1/sqrt(Dk))");
    if (c->accum != NSA_ACCUM_FP32 && c->accum != NSA_ACCUM_FP64)
        return nsa__fail(NSA_ERR_INVALID_CONFIG,
                         "cfg.accum: must be NSA_ACCUM_FP32 or NSA_ACCUM_FP64");
    return NSA_OK;
}

/* a * b into *out, false on int64 overflow (operands >= 0). */
static int nsa__mul(int64_t a, int64_t b, int64_t *out)
{
    if (a != 0 && b > INT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* cu (named name) against B and the token count in the field total_name. */
static nsa_status nsa__check_cu(const char *name, const int32_t *cu, int B,
                                const char *total_name, int64_t total)
{
    int b;
    if (cu[0] != 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "%s: first entry must be 0 "
                         "(got %d)", name, (int)cu[0]);
    for (b = 0; b < B; ++b)
        if (cu[b + 1] < cu[b])
            return nsa__fail(NSA_ERR_INVALID_BATCH, "%s: must be non-decreasing"
                             " (entry %d = %d < entry %d = %d)", name, b + 1,
                             (int)cu[b + 1], b, (int)cu[b]);
    if ((int64_t)cu[B] != total)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "%s: last entry %d must equal "
                         "%s, the token count (got %s = %lld)", name,
                         (int)cu[B], total_name, total_name, (long long)total);
    return NSA_OK;
}

/* Largest element offset + 1 of a strided [N, heads, D] view, or -1. */
static int64_t nsa__extent(int64_t N, int heads, int D, int64_t st, int64_t sh)
{
    int64_t a, b, c;
    if (N == 0) return 0;
    if (!nsa__mul(N - 1, st, &a) || !nsa__mul(heads - 1, sh, &b)) return -1;
    if (a > INT64_MAX - b) return -1; /* a, b >= 0: the sum alone may overflow */
    c = a + b;
    if (c > INT64_MAX - D) return -1;
    return c + D;
}

static nsa_status nsa__check_tensor(const char *name, const void *p, int64_t N,
                                    int heads, int D, int64_t *st, int64_t *sh,
                                    int check_pointer)
{
    if (check_pointer && !p && N > 0)
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.%s: is NULL", name);
    if (*st < 0 || *sh < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.%s strides: must be >= 0"
                         " (token %lld, head %lld)", name, (long long)*st,
                         (long long)*sh);
    *sh = nsa_head_stride(*sh, D);
    *st = nsa_token_stride(*st, heads, D);
    if (nsa__extent(N, heads, D, *st, *sh) < 0)
        return nsa__fail(NSA_ERR_OVERFLOW, "batch.%s: offsets of a [%lld, %d, "
                         "%d] tensor with these strides overflow 64 bits", name,
                         (long long)N, heads, D);
    return NSA_OK;
}

static nsa_status nsa__sizes(const nsa_config *cfg, const nsa_batch *x,
                             nsa_sizes *s, int check_pointers)
{
    nsa_status st;
    int64_t TQ, Tc = 0, units = 0, maxblk = 0, t;
    int64_t ts, hs, st_r[6];
    int b;
    if (!x) return nsa__fail(NSA_ERR_NULL_POINTER, "batch: is NULL");
    if (!s) return nsa__fail(NSA_ERR_NULL_POINTER, "sizes: is NULL");
    if ((st = nsa_config_validate(cfg)) != NSA_OK) return st;
    if (x->B < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.B: must be >= 0 (got %d)",
                         x->B);
    if (x->Hkv < 1 || x->H < 1)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.H, batch.Hkv: must be >="
                         " 1 (got H=%d, Hkv=%d)", x->H, x->Hkv);
    if (x->H % x->Hkv != 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.H: H=%d must be a "
                         "multiple of Hkv=%d (GQA)", x->H, x->Hkv);
    if (x->Dk < 1 || x->Dv < 1)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.Dk, batch.Dv: must be >= "
                         "1 (got Dk=%d, Dv=%d)", x->Dk, x->Dv);
    if (x->dtype != NSA_BF16 && x->dtype != NSA_FP16 && x->dtype != NSA_FP32)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.dtype: must be NSA_BF16, "
                         "NSA_FP16 or NSA_FP32 (got %d)", (int)x->dtype);
    if (x->T < 0 || x->T > INT32_MAX)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.T: must be in [0, 2^31)"
                         " (got %lld)", (long long)x->T);
    if (!x->cu_seqlens)
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.cu_seqlens: is NULL");
    if ((st = nsa__check_cu("batch.cu_seqlens", x->cu_seqlens, x->B, "batch.T", x->T)))
        return st;
    TQ = x->T;
    if (x->cu_seqlens_q) {
        TQ = x->TQ;
        if ((st = nsa__check_cu("batch.cu_seqlens_q", x->cu_seqlens_q, x->B,
                                "batch.TQ", x->TQ)))
            return st;
        for (b = 0; b < x->B; ++b) {
            int64_t nq = x->cu_seqlens_q[b + 1] - x->cu_seqlens_q[b];
            int64_t nk = x->cu_seqlens[b + 1] - x->cu_seqlens[b];
            if (nq > nk)
                return nsa__fail(NSA_ERR_INVALID_BATCH, "batch.cu_seqlens_q: "
                                 "sequence %d has %lld queries but only %lld "
                                 "keys", b, (long long)nq, (long long)nk);
        }
    }
    ts = x->q_stride_token; hs = x->q_stride_head;
    if ((st = nsa__check_tensor("q", x->q, TQ, x->H, x->Dk, &ts, &hs, check_pointers)))
        return st;
    st_r[0] = ts; st_r[1] = hs;
    ts = x->k_stride_token; hs = x->k_stride_head;
    if ((st = nsa__check_tensor("k", x->k, x->T, x->Hkv, x->Dk, &ts, &hs, check_pointers)))
        return st;
    st_r[2] = ts; st_r[3] = hs;
    ts = x->v_stride_token; hs = x->v_stride_head;
    if ((st = nsa__check_tensor("v", x->v, x->T, x->Hkv, x->Dv, &ts, &hs, check_pointers)))
        return st;
    st_r[4] = ts; st_r[5] = hs;

    for (b = 0; b < x->B; ++b) {
        int64_t nk = x->cu_seqlens[b + 1] - x->cu_seqlens[b];
        int64_t nq = x->cu_seqlens_q
                         ? x->cu_seqlens_q[b + 1] - x->cu_seqlens_q[b] : nk;
        if (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
            Tc += nsa_cmp_blocks(nk, cfg->l, cfg->d);
        if (cfg->branches & NSA_BRANCH_SLC) {
            int64_t nb = nsa_slc_blocks(nk, cfg->lp);
            units += nsa_units(nq, cfg->bq);
            if (nb > maxblk) maxblk = nb;
        }
    }
    memset(s, 0, sizeof *s);
    s->T = x->T;
    s->TQ = TQ;
    s->Tc = Tc;
    s->units = units;
    s->max_slc_blocks = maxblk;
    s->scale = nsa_scale(cfg->scale, x->Dk);
    s->nbranch = nsa_branch_count(cfg->branches);
    s->q_stride_token = st_r[0]; s->q_stride_head = st_r[1];
    s->k_stride_token = st_r[2]; s->k_stride_head = st_r[3];
    s->v_stride_token = st_r[4]; s->v_stride_head = st_r[5];
    /* T < 2^31 and H, D < 2^31, so every product below of three such
       factors fits in 93 bits only in theory: check each one. */
    if (!nsa__mul(TQ, x->H, &t) || !nsa__mul(t, x->Dk, &s->q) ||
        !nsa__mul(t, x->Dv, &s->o) || !nsa__mul(t, 3, &s->gates) ||
        !nsa__mul(x->T, x->Hkv, &t) || !nsa__mul(t, x->Dk, &s->k) ||
        !nsa__mul(t, x->Dv, &s->v) || !nsa__mul(Tc, x->Hkv, &t) ||
        !nsa__mul(t, x->Dk, &s->k_cmp) || !nsa__mul(t, x->Dv, &s->v_cmp) ||
        !nsa__mul(units, x->Hkv, &s->sel_count) ||
        !nsa__mul(s->sel_count, cfg->n, &s->sel_idx) ||
        !nsa__mul(s->sel_count, maxblk, &s->block_mask) ||
        !nsa__mul(s->q, 8, &t) || !nsa__mul(s->o, 8, &t))
        return nsa__fail(NSA_ERR_OVERFLOW, "batch: a tensor size (T=%lld, "
                         "H=%d, Dk=%d, Dv=%d) overflows 64 bits",
                         (long long)x->T, x->H, x->Dk, x->Dv);
    s->lse = TQ * x->H;
    if (!check_pointers) return NSA_OK;
    if (cfg->caller_compressed && (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
        && Tc > 0 && (!x->k_cmp || !x->v_cmp))
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.k_cmp, batch.v_cmp: "
                         "required in caller_compressed mode");
    if ((x->sel_idx == NULL) != (x->sel_count == NULL))
        return nsa__fail(NSA_ERR_NULL_POINTER, "batch.sel_idx, batch.sel_count:"
                         " caller selection needs both or neither");
    return NSA_OK;
}

NSADEF nsa_status nsa_sizes_get(const nsa_config *cfg, const nsa_batch *x,
                                nsa_sizes *s)
{
    return nsa__sizes(cfg, x, s, 0);
}

NSADEF nsa_status nsa__validate(const nsa_config *cfg, const nsa_batch *x,
                                nsa_sizes *s)
{
    return nsa__sizes(cfg, x, s, 1);
}

/* The buffers of nsa_buffers_place in their order, with their byte sizes
   (0 where cfg does not need one): the same rules as nsa__check_saved (for
   forward, which writes the most) and nsa__check_grads. */
enum { NSA__NBUF = 13 };
static nsa_status nsa__buffer_sizes(const nsa_config *cfg, const nsa_batch *x,
                                    int with_gates, int64_t bytes[NSA__NBUF])
{
    nsa_sizes s;
    nsa_status st = nsa_sizes_get(cfg, x, &s);
    unsigned br;
    int mean, caller_cmp;
    int64_t e;
    if (st) return st;
    br = cfg->branches;
    mean = !cfg->caller_compressed && (br & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    caller_cmp = cfg->caller_compressed && (br & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    e = (int64_t)nsa_dtype_size(x->dtype);
    {
        const int64_t count[NSA__NBUF] = {
            (br & NSA_BRANCH_CMP) ? s.lse : 0,       /* lse_cmp   fp32  */
            (br & NSA_BRANCH_SLC) ? s.lse : 0,       /* lse_slc   fp32  */
            (br & NSA_BRANCH_WIN) ? s.lse : 0,       /* lse_win   fp32  */
            (br & NSA_BRANCH_SLC) ? s.sel_idx : 0,   /* sel_idx   int32 */
            (br & NSA_BRANCH_SLC) ? s.sel_count : 0, /* sel_count int32 */
            mean ? s.k_cmp : 0, mean ? s.v_cmp : 0,  /* k_cmp, v_cmp    */
            s.q, s.k, s.v,                           /* dq, dk, dv      */
            with_gates ? s.gates : 0,                /* dgates          */
            caller_cmp ? s.k_cmp : 0, caller_cmp ? s.v_cmp : 0 /* dk_cmp, dv_cmp */
        };
        int i;
        for (i = 0; i < NSA__NBUF; ++i)
            if (!nsa__mul(count[i], i < 5 ? 4 : e, &bytes[i]))
                return nsa__fail(NSA_ERR_OVERFLOW, "buffers: a buffer's size "
                                 "in bytes overflows 64 bits");
    }
    return NSA_OK;
}

/* The block's size: each buffer rounded up to NSA_BUFFER_ALIGN, plus the
   slack to align the block's start. */
static nsa_status nsa__buffers_total(const int64_t bytes[NSA__NBUF], size_t *total)
{
    const uint64_t a = NSA_BUFFER_ALIGN;
    uint64_t sum = a - 1;
    int i;
    for (i = 0; i < NSA__NBUF; ++i) {
        uint64_t r = ((uint64_t)bytes[i] + a - 1) / a * a;
        if (r > (uint64_t)SIZE_MAX - sum)
            return nsa__fail(NSA_ERR_OVERFLOW, "buffers: the block's size "
                             "overflows size_t");
        sum += r;
    }
    *total = (size_t)sum;
    return NSA_OK;
}

NSADEF nsa_status nsa_buffers_bytes(const nsa_config *cfg, const nsa_batch *x,
                                    int with_gates, size_t *bytes)
{
    int64_t b[NSA__NBUF];
    nsa_status st = nsa__buffer_sizes(cfg, x, with_gates, b);
    if (st) return st;
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    return nsa__buffers_total(b, bytes);
}

NSADEF nsa_status nsa_buffers_place(const nsa_config *cfg, const nsa_batch *x,
                                    int with_gates, void *block, size_t bytes,
                                    nsa_saved *saved, nsa_grads *grads)
{
    int64_t b[NSA__NBUF];
    void *p[NSA__NBUF];
    size_t need = 0;
    uintptr_t at;
    int i;
    nsa_status st = nsa__buffer_sizes(cfg, x, with_gates, b);
    if (st) return st;
    if (!saved) return nsa__fail(NSA_ERR_NULL_POINTER, "saved: is NULL");
    if (!grads) return nsa__fail(NSA_ERR_NULL_POINTER, "grads: is NULL");
    if ((st = nsa__buffers_total(b, &need))) return st;
    if (!block) return nsa__fail(NSA_ERR_NULL_POINTER, "block: is NULL");
    if (bytes < need)
        return nsa__fail(NSA_ERR_WORKSPACE, "block: %zu bytes is smaller than "
                         "the %zu that nsa_buffers_bytes gives", bytes, need);
    /* Pointer arithmetic through uintptr_t: a device block is never read. */
    at = ((uintptr_t)block + NSA_BUFFER_ALIGN - 1) / NSA_BUFFER_ALIGN *
         NSA_BUFFER_ALIGN;
    for (i = 0; i < NSA__NBUF; ++i) {
        p[i] = b[i] > 0 ? (void *)at : NULL;
        at += ((uintptr_t)b[i] + NSA_BUFFER_ALIGN - 1) / NSA_BUFFER_ALIGN *
              NSA_BUFFER_ALIGN;
    }
    saved->lse_cmp = (float *)p[0];
    saved->lse_slc = (float *)p[1];
    saved->lse_win = (float *)p[2];
    saved->sel_idx = (int32_t *)p[3];
    saved->sel_count = (int32_t *)p[4];
    saved->k_cmp = p[5];
    saved->v_cmp = p[6];
    saved->o_branch = NULL; /* optional, the caller's own (nsa_saved) */
    grads->dq = p[7];
    grads->dk = p[8];
    grads->dv = p[9];
    grads->dgates = p[10];
    grads->dk_cmp = p[11];
    grads->dv_cmp = p[12];
    return NSA_OK;
}

#define NSA__REQUIRE(ptr, needed, what)                                       \
    do {                                                                      \
        if ((needed) && !(ptr))                                               \
            return nsa__fail(NSA_ERR_NULL_POINTER, "%s: is NULL", what);     \
    } while (0)

NSADEF nsa_status nsa__check_saved(const nsa_config *cfg, const nsa_sizes *s,
                                   const nsa_saved *saved, int for_backward)
{
    const unsigned br = cfg->branches;
    /* Forward writes K_cmp / V_cmp whenever the compressed keys are used
       (selection scores them too); backward reads them for the compressed
       branch only, the selection being a constant there. */
    const unsigned reads_cmp = for_backward ? (unsigned)NSA_BRANCH_CMP
                                            : (unsigned)(NSA_BRANCH_CMP | NSA_BRANCH_SLC);
    const int mean = !cfg->caller_compressed && (br & reads_cmp) != 0;
    NSA__REQUIRE(saved, 1, "saved");
    NSA__REQUIRE(saved->lse_cmp, (br & NSA_BRANCH_CMP) && s->lse > 0, "saved.lse_cmp");
    NSA__REQUIRE(saved->lse_slc, (br & NSA_BRANCH_SLC) && s->lse > 0, "saved.lse_slc");
    NSA__REQUIRE(saved->lse_win, (br & NSA_BRANCH_WIN) && s->lse > 0, "saved.lse_win");
    NSA__REQUIRE(saved->sel_idx, (br & NSA_BRANCH_SLC) && s->sel_idx > 0, "saved.sel_idx");
    NSA__REQUIRE(saved->sel_count, (br & NSA_BRANCH_SLC) && s->sel_count > 0,
                 "saved.sel_count");
    NSA__REQUIRE(saved->k_cmp, mean && s->k_cmp > 0, "saved.k_cmp");
    NSA__REQUIRE(saved->v_cmp, mean && s->v_cmp > 0, "saved.v_cmp");
    return NSA_OK;
}

NSADEF nsa_status nsa__check_grads(const nsa_config *cfg, const nsa_sizes *s,
                                   const void *gates, const nsa_grads *grads)
{
    const int caller_cmp = cfg->caller_compressed &&
        (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    NSA__REQUIRE(grads, 1, "grads");
    NSA__REQUIRE(grads->dq, s->q > 0, "grads.dq");
    NSA__REQUIRE(grads->dk, s->k > 0, "grads.dk");
    NSA__REQUIRE(grads->dv, s->v > 0, "grads.dv");
    NSA__REQUIRE(grads->dgates, gates && s->gates > 0, "grads.dgates (gates were given)");
    NSA__REQUIRE(grads->dk_cmp, caller_cmp && s->k_cmp > 0,
                 "grads.dk_cmp (caller_compressed mode)");
    NSA__REQUIRE(grads->dv_cmp, caller_cmp && s->v_cmp > 0,
                 "grads.dv_cmp (caller_compressed mode)");
    return NSA_OK;
}
#undef NSA__REQUIRE

NSADEF nsa_status nsa__check_seqlens_old(const nsa_batch *x, const int32_t *old)
{
    int b;
    if (x->B > 0 && !old)
        return nsa__fail(NSA_ERR_NULL_POINTER, "seqlens_old: is NULL");
    for (b = 0; b < x->B; ++b) {
        int64_t nk = (int64_t)x->cu_seqlens[b + 1] - x->cu_seqlens[b];
        if (old[b] < 0 || old[b] > nk)
            return nsa__fail(NSA_ERR_INVALID_BATCH, "seqlens_old: entry %d = %d must "
                             "be in [0, %lld], the keys sequence %d holds now (a "
                             "cache only grows)", b, (int)old[b], (long long)nk, b);
    }
    return NSA_OK;
}

#endif /* NSA_IMPLEMENTATION_DONE */
#endif /* NSA_IMPLEMENTATION */
