/* nsa_ref.h -- the exact CPU reference of Native Sparse Attention.

   Declarations always; definitions, with nsa.h's shared part, in the one
   file that defines NSA_REF_IMPLEMENTATION before including this header
   (nsa.h, "USING IT", for the CUDA path beside it). C99; OpenMP is used
   when the file is built with -fopenmp and is not needed otherwise.

   Every function below computes one equation of the contract and says which.
   All pointers are host pointers. Stage outputs that feed a later stage are
   fp32 so that running the stages one after the other gives, bit for bit,
   what nsa_ref_forward gives.

   NUMERICS (docs/MATH.md, "Numerics of the reference")
     - Inputs are read from their storage type exactly; every sum is
       accumulated in fp32 (or fp64 with cfg.accum = NSA_ACCUM_FP64) in a fixed
       order that does not depend on the thread count; outputs are rounded once
       to the storage type, nearest-even.
     - Results are bitwise identical for any thread count and any run, and
       across gcc and clang and their -O and -march flags: the
       implementation turns off the contraction of a*b + c into one fused
       rounding itself (except under nvcc, see below). Flags that reorder
       sums (-ffast-math, -Ofast, -fassociative-math) break this promise,
       and so does clang's explicit -ffp-contract=fast, which overrides the
       pragma.

   OPTIONS (macros read by the implementation)
     NSA_REF_NO_SIMD   build the portable C kernels only (no GNU vector
                       types, no AVX2); the results are the same bits.
*/
#ifndef NSA_REF_H
#define NSA_REF_H

#include "nsa.h"

/* Bytes of workspace that any nsa_ref_* call below needs for this config
   and batch (one size serves every entry point). */
NSADEF nsa_status nsa_ref_workspace_size(const nsa_config *cfg,
                                         const nsa_batch *batch, size_t *bytes);

/* ---- whole operation ---------------------------------------------------- */

/* o [TQ, H, Dv] (storage dtype) = sum over enabled branches c of
   g[t,h,c] * o_c[t,h] (contract "Gates and output"). gates [TQ, H, 3] storage
   dtype, or NULL for 1 / (number of enabled branches). Writes saved, and
   when saved->o_branch is set the fp32 o_c of every enabled branch to its
   plane (0 where the branch sees no key), the values the gates multiply. */
NSADEF nsa_status nsa_ref_forward(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, void *o, nsa_saved *saved,
                                  void *workspace, size_t workspace_bytes);

/* Gradients of sum(o * d_o) with the selection held constant (contract
   "Backward"). d_o [TQ, H, Dv] storage dtype; saved as written by forward
   with the same cfg, batch and gates. With saved->o_branch set (fp32
   accumulation) o_c is read from its planes instead of being recomputed:
   the same gradients, bit for bit; fp64 accumulation recomputes it. */
NSADEF nsa_status nsa_ref_backward(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, const void *d_o,
                                   const nsa_saved *saved, nsa_grads *grads,
                                   void *workspace, size_t workspace_bytes);

/* ---- stages ------------------------------------------------------------- */

/* Branch 1: K_cmp[i] = mean of K over keys [i*d, i*d + l - 1] (fp32 sum in
   key order, divided by l, rounded once to the storage type); V likewise.
   k_cmp [Tc, Hkv, Dk], v_cmp [Tc, Hkv, Dv]. */
NSADEF nsa_status nsa_ref_compress(const nsa_config *cfg, const nsa_batch *batch,
                                   void *k_cmp, void *v_cmp);

/* Branch 1 for a growing cache (decoding): the blocks that became complete
   since each sequence held seqlens_old[b] keys, and only those. k_cmp,
   v_cmp are in the batch's packed layout (nsa_sizes.k_cmp, .v_cmp
   elements); sequence b's blocks 0 .. nsa_cmp_blocks(seqlens_old[b]) - 1
   are neither read nor written (appending keeps earlier keys, so those
   blocks are unchanged), the rest are written as nsa_ref_compress writes
   them: the result equals a full recompression bit for bit. seqlens_old
   (host, B entries) needs 0 <= seqlens_old[b] <= the sequence's keys. */
NSADEF nsa_status nsa_ref_compress_append(const nsa_config *cfg,
                                          const nsa_batch *batch,
                                          const int32_t *seqlens_old,
                                          void *k_cmp, void *v_cmp);

/* Selection steps 1-4: block_scores [units, Hkv, max_slc_blocks] fp32, the
   score of every selection block that is eligible (step 5) for the unit;
   -inf for blocks that are not eligible or do not exist in the sequence.
   Forced blocks are scored like the others (they are forced in step 5). */
NSADEF nsa_status nsa_ref_block_scores(const nsa_config *cfg,
                                       const nsa_batch *batch,
                                       const void *k_cmp, float *block_scores,
                                       void *workspace, size_t workspace_bytes);

/* Selection steps 1-7: sel_idx [units, Hkv, n] ascending, -1 padded, and
   sel_count [units, Hkv]. k_cmp as written by nsa_ref_compress (or the
   caller's in caller_compressed mode). */
NSADEF nsa_status nsa_ref_select(const nsa_config *cfg, const nsa_batch *batch,
                                 const void *k_cmp, int32_t *sel_idx,
                                 int32_t *sel_count, void *workspace,
                                 size_t workspace_bytes);

/* block_mask [units, Hkv, max_slc_blocks]: 1 where the block is selected.
   The selection stages and each nsa_ref_attend_* need their branch on
   (NSA_ERR_INVALID_CONFIG otherwise). */
NSADEF nsa_status nsa_ref_block_mask(const nsa_config *cfg,
                                     const nsa_batch *batch,
                                     const int32_t *sel_idx,
                                     const int32_t *sel_count,
                                     uint8_t *block_mask);

/* One branch's attention, o_c [TQ, H, Dv] fp32 (not yet rounded) and
   lse_c [TQ, H] fp32; o_c = 0 and lse_c = -inf where the branch sees no key. */
NSADEF nsa_status nsa_ref_attend_cmp(const nsa_config *cfg,
                                     const nsa_batch *batch, const void *k_cmp,
                                     const void *v_cmp, float *o_cmp,
                                     float *lse_cmp);
NSADEF nsa_status nsa_ref_attend_slc(const nsa_config *cfg,
                                     const nsa_batch *batch,
                                     const int32_t *sel_idx,
                                     const int32_t *sel_count, float *o_slc,
                                     float *lse_slc);
NSADEF nsa_status nsa_ref_attend_win(const nsa_config *cfg,
                                     const nsa_batch *batch, float *o_win,
                                     float *lse_win);

/* o = sum over enabled c of g_c * o_c, in the order cmp, slc, win, fp32,
   rounded once. Branch outputs of disabled branches may be NULL. */
NSADEF nsa_status nsa_ref_combine(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, const float *o_cmp,
                                  const float *o_slc, const float *o_win,
                                  void *o);

/* ---- top-k per row ------------------------------------------------------ */

/* For each of `rows` rows of fp32 scores (row r starts at
   scores + r * row_stride), the k best columns among [start_r, end_r)
   (start_r = row_start ? row_start[r] : 0, end_r = row_end ? row_end[r] :
   cols; outside is ignored). Ranges follow nsa.h's nsa_topk_range: start_r
   is clamped to [0, cols], end_r to [start_r, cols], and an empty range
   gives count 0 and -1 everywhere (never an error, as on the GPU). Exact:
   larger scores first, ties to the lower index, -0 equals +0, NaN below
   everything (-inf included). Writes exactly min(k, end_r - start_r)
   indices relative to the clamped start_r, best first, then -1 up to k;
   out_count (may be NULL) gets that number. */
NSADEF nsa_status nsa_ref_topk_workspace_size(int64_t rows, int64_t cols, int k,
                                              size_t *bytes);
NSADEF nsa_status nsa_ref_topk_rows(const float *scores, int64_t rows,
                                    int64_t cols, int64_t row_stride,
                                    const int32_t *row_start,
                                    const int32_t *row_end, int k,
                                    int32_t *out_idx, int32_t *out_count,
                                    void *workspace, size_t workspace_bytes);

/* ---- top-n blocks per row, as a mask --------------------------------------

   The block-sparse mask of a row of scores. Columns are cut into blocks of
   `block` from column 0 (block j is [j*block, (j+1)*block)); for each row
   only the columns inside its range count (the range as nsa_ref_topk_rows
   takes it, clamped by nsa_topk_range). A block with at least one column
   in range is eligible; its score is the mean of those columns: an fp32 sum
   in ascending column order, divided once by their number. The min(n,
   eligible) best eligible blocks, ranked as nsa_ref_topk_rows ranks columns
   (ties to the lower block, -0 = +0, NaN below everything), get 1 in
   mask[r * nblocks + j], every other block 0, where nblocks =
   ceil(cols / block). out_count (may be NULL) gets that number. */
NSADEF nsa_status nsa_ref_topk_blocks_workspace_size(int64_t rows, int64_t cols,
                                                     int64_t block, int n,
                                                     size_t *bytes);
NSADEF nsa_status nsa_ref_topk_blocks(const float *scores, int64_t rows,
                                      int64_t cols, int64_t row_stride,
                                      const int32_t *row_start,
                                      const int32_t *row_end, int64_t block,
                                      int n, uint8_t *mask, int32_t *out_count,
                                      void *workspace, size_t workspace_bytes);

#endif /* NSA_REF_H */

#ifdef NSA_REF_IMPLEMENTATION
#ifndef NSA_REF_IMPLEMENTATION_DONE
#define NSA_REF_IMPLEMENTATION_DONE
/* nsa.h's shared part, which this macro implies (unless
   NSA_SHARED_IN_OTHER_FILE), even when nsa.h was included plainly before. */
#include "nsa.h"
/* No contraction of a*b + c into one fused rounding: the summation order
   of NUMERICS has none, and with it the bits would change between
   compilers and -march flags (gcc contracts by default outside ISO mode,
   clang within expressions). Set here so that no user has to pass
   -ffp-contract=off; nvcc's front end takes no such pragma, so a .cu file
   that defines NSA_REF_IMPLEMENTATION passes -Xcompiler -ffp-contract=off. */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__) && !defined(__CUDACC__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
/* ========================================================================

   HOW THE REFERENCE COMPUTES (read this before the code)

   Layout. Work is organised per sequence; inside a sequence the rows of a
   stage (a query and head, a unit and kv head, a key block and kv head) are
   independent and are shared among threads. Each row is computed by one
   thread, start to finish, in the order written below, so the thread count
   never changes a bit of any result.

   Accumulation. Every value that is summed or scaled lives in a double
   variable. In fp32 mode (the contract's) every operation is rounded back to
   fp32 right after it (nsa__r): double holds more than 2*24+2 bits, so a
   double +, -, *, / followed by that rounding is exactly the fp32 operation.
   Hot accumulator rows (nsa__row) hold fp32 values directly. In fp64 mode
   nothing is rounded. exp and log are the C library's expf / logf in fp32
   mode and exp / log in fp64 mode. Builds are assumed to use
   -ffp-contract=off (no fused multiply-add).

   Fixed orders.
     - Dot products a . b over D elements use 8 partial sums: lane j takes
       the elements i with i % 8 == j in increasing i; the lanes are then
       combined as ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)). (Four such
       dot products may run side by side; each keeps this order.)
     - Softmax of an attention branch is online, over the branch's keys in
       the order the branch lists them (compressed blocks ascending; the
       selected entries in their stored order, each block's keys ascending;
       window keys ascending): a new maximum rescales the running sum and the
       output accumulator first, then p = exp(s - m) is added.
     - Selection: per query, the importance row p[i] (i ascending); per head
       and selection block the overlap sum over m < l'/d (outer), k < l/d
       (inner); the group sum over heads ascending; the tile sum over the
       tile's queries ascending. Scores are rounded to fp32 before ranking
       (they are the fp32 block_scores of the stage function).
     - Gates: o = g_cmp*o_cmp + g_slc*o_slc + g_win*o_win, left to right,
       each o_c first rounded to fp32 (the stage outputs are fp32). Without
       gates each enabled branch weighs 1.0f / (number enabled).
     - Backward (selection held constant; w = the branch's gate weight;
       dov = dO . v). Per (query, head, branch) the forward's online softmax
       runs again and gives o_c (normalized, as the forward's) and the row's
       lse in the accumulation type (in fp32 the saved lse, bit for bit;
       the saved lse only marks rows without keys). With saved.o_branch in
       fp32 mode only the logits run again: o_c is the forward's (its
       plane) and lse the saved one, the same values. Then, the
       FlashAttention form (MATH.md 8.1: no error that grows with |lse|):
         dgate_c = dO . o_c (8 lanes and the tree of a dot product);
         Delta_c = w * dgate_c;  P = exp(s - lse);  dP = w * dov;
         ds = sc * P * (dP - Delta_c);
         dQ += ds * k, dK += ds * q, dV += (P * w) * dO.
       dQ[t,h] sums its terms branch by branch (cmp, slc, win), keys in
       forward order. dK/dV of a key sum, in this order: window queries
       ascending, then the queries that selected the key's block ascending
       (units ascending, then queries of the unit), then dK_cmp[i]/l of
       every compressed block i holding the key, i ascending; heads of the
       group ascending within each query. dK_cmp[i] sums its queries
       ascending, heads ascending. Caller selections are used entry by
       entry as stored: an entry given twice counts its keys twice in the
       forward and in the backward alike.
   Speed never changes an order: vector registers only hold the 8 lanes of
     a dot product or independent elements of a row, and a fused accumulate
     (nsa__axpyn: several p * x terms swept over a row at once) adds the
     terms to each element in the order above. On x86 CPUs with AVX2
     (checked at run time) the same kernels run 8 lanes wide. These kernels
     sit at the end of the implementation, after the math they serve;
     NSA_REF_NO_SIMD leaves the portable C alone, with the same bits.
   Parallel passes (threads never share an accumulator, so no atomics):
   forward rows (query, head); selection rows (unit, kv head); backward
   A (query, head) -> dQ, dgates, Delta, lse; B1 (compressed block, kv head) ->
   dK_cmp, dV_cmp; B2 (key block, kv head) -> dK, dV, walking the window's
   queries and the transposed selection (a counting sort of the selection
   by block, units ascending).
   Workspace: Delta and lse [TQ,H,3] each, dK_cmp/dV_cmp [Tc,Hkv,D] (mean mode), the
   transposed selection, then one scratch slot a thread (score and key
   rows of selection, P, dov and o_c rows of pass A, a key block's dK/dV), for
   omp_get_max_threads() threads; a call whose workspace is smaller than
   the size query gives for the current thread count returns
   NSA_ERR_WORKSPACE. The results never depend on the thread count.
   Outputs are rounded once to the storage type, nearest-even (fp64 values
   through a round-to-odd fp32 step, which makes the double rounding exact).
   ======================================================================== */

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#define NSA__OMP(x) _Pragma(#x)
#define NSA__TID() omp_get_thread_num()
#define NSA__MAX_THREADS() omp_get_max_threads()
#else
#define NSA__OMP(x)
#define NSA__TID() 0
#define NSA__MAX_THREADS() 1
#endif

/* Output dims one forward attention pass holds on the stack (the stage
   functions take no workspace); a wider Dv repeats the pass per chunk,
   recomputing the same logits. */
#define NSA__CHUNK 256
#define NSA__ALIGN 64
/* Terms one fused accumulate (nsa__axpyn) adds to a row in one sweep. */
#define NSA__GROUP 16

/* ---- context ------------------------------------------------------------ */

typedef struct nsa__ctx {
    const nsa_config *cfg;
    const nsa_batch *x;
    nsa_sizes sz;
    nsa_dtype dt;
    int f64;                 /* cfg->accum == NSA_ACCUM_FP64 */
    int H, Hkv, G, Dk, Dv;
    double sc;               /* softmax scale, in the accumulation type */
    int64_t qst, qsh, kst, ksh, vst, vsh; /* resolved element strides   */
    const int32_t *cuk, *cuq;
    const void *kc, *vc;     /* compressed K/V, [Tc, Hkv, D] contiguous */
    int nbranch;             /* number of enabled branches              */
    int simd;                /* 1: the CPU runs the AVX2 kernels        */
    /* workspace */
    unsigned char *slots;
    size_t slot_bytes;
    int nthreads;
    double *delta;           /* [TQ, H, 3] backward                     */
    double *lse_acc;         /* [TQ, H, 3] backward: the row's lse, recomputed
                                in the accumulation type (-inf: no key) */
    double *dkc, *dvc;       /* [Tc, Hkv, D] backward, mean mode        */
    int64_t *toff;           /* [Jtot*Hkv + 1] transposed selection     */
    int32_t *tlist;          /* [units*Hkv*n]                           */
    int64_t nk_max, nc_max, nb_max, jtot, keys_max;
} nsa__ctx;

/* One sequence: where its keys, queries, compressed blocks, selection
   units and selection blocks start in their packed arrays. */
typedef struct nsa__seq {
    int64_t k0, nk;  /* keys                                    */
    int64_t q0, nq;  /* queries; query i sits at t = off + i    */
    int64_t off;
    int64_t c0, nc;  /* compressed blocks                       */
    int64_t u0, nu;  /* selection units                         */
    int64_t j0, nb;  /* selection blocks                        */
} nsa__seq;

enum { NSA__CMP = 0, NSA__SLC = 1, NSA__WIN = 2 };

static int nsa__on(const nsa__ctx *c, int br)
{
    return (c->cfg->branches >> br) & 1u;
}

/* Moves s from sequence b-1 (or all zeros) to sequence b. */
static void nsa__seq_step(const nsa__ctx *c, int b, nsa__seq *s)
{
    const nsa_config *cfg = c->cfg;
    s->c0 += s->nc;
    s->u0 += s->nu;
    s->j0 += s->nb;
    s->k0 = c->cuk[b];
    s->nk = (int64_t)c->cuk[b + 1] - c->cuk[b];
    s->q0 = c->cuq[b];
    s->nq = (int64_t)c->cuq[b + 1] - c->cuq[b];
    s->off = s->nk - s->nq;
    s->nc = (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
                ? nsa_cmp_blocks(s->nk, cfg->l, cfg->d) : 0;
    s->nu = (cfg->branches & NSA_BRANCH_SLC) ? nsa_units(s->nq, cfg->bq) : 0;
    s->nb = (cfg->branches & NSA_BRANCH_SLC) ? nsa_slc_blocks(s->nk, cfg->lp) : 0;
}

static void nsa__seq_begin(const nsa__ctx *c, nsa__seq *s)
{
    memset(s, 0, sizeof *s);
    if (c->x->B > 0) nsa__seq_step(c, 0, s);
}

/* ---- numerics ------------------------------------------------------------ */

/* x rounded to the accumulation type. */
static double nsa__r(const nsa__ctx *c, double x)
{
    return c->f64 ? x : (double)(float)x;
}
static double nsa__exp(const nsa__ctx *c, double x)
{
    return c->f64 ? exp(x) : (double)expf((float)x);
}
static double nsa__log(const nsa__ctx *c, double x)
{
    return c->f64 ? log(x) : (double)logf((float)x);
}

/* double to fp32 rounding to odd: a later nearest-even rounding to bf16 or
   fp16 then equals one nearest-even rounding of x. */
static float nsa__f32_odd(double x)
{
    float f = (float)x;
    if ((double)f == x || x != x) return f;
    if (isinf(f)) f = f > 0 ? 3.40282347e38f : -3.40282347e38f;
    if ((nsa__f32_bits(f) & 1u) == 0)
        f = nextafterf(f, x > (double)f ? INFINITY : -INFINITY);
    return f;
}

/* Stores an accumulated value, rounded once to the storage type. */
static void nsa__put(const nsa__ctx *c, void *p, int64_t i, double x)
{
    nsa_store(p, c->dt, i, c->dt == NSA_FP32 ? (float)x : nsa__f32_odd(x));
}

/* Offsets base + r * step, r < m. */
static void nsa__offsets(int64_t *o, int64_t base, int64_t step, int m)
{
    int r;
    for (r = 0; r < m; ++r) o[r] = base + r * step;
}

/* An accumulator row: fp32 values in fp32 mode, fp64 values in fp64 mode
   (one of the two pointers is set). Scratch gives it 8 bytes an element. */
typedef struct nsa__row {
    float *f;
    double *d;
} nsa__row;

static nsa__row nsa__row_of(const nsa__ctx *c, void *mem)
{
    nsa__row r;
    r.f = c->f64 ? NULL : (float *)mem;
    r.d = c->f64 ? (double *)mem : NULL;
    return r;
}
static nsa__row nsa__row_add(nsa__row r, int64_t off)
{
    if (r.f) r.f += off;
    else r.d += off;
    return r;
}
static double nsa__get(nsa__row r, int64_t j)
{
    return r.f ? (double)r.f[j] : r.d[j];
}
static void nsa__set(nsa__row r, int64_t j, double x)
{
    if (r.f) r.f[j] = (float)x;
    else r.d[j] = x;
}
static void nsa__zero(nsa__row r, int64_t n)
{
    int64_t j;
    for (j = 0; j < n; ++j) nsa__set(r, j, 0.0);
}

/* ---- primitives: what the math below calls --------------------------------
   Dot products and accumulates over a head dim, with the fixed orders of
   the top of this section. Their definitions are at the end of the
   implementation ("kernels behind the primitives"): portable C, and vector
   kernels (GNU vector types; AVX2, chosen at run time, on x86) that do the
   same operations per element and per lane, so every build gives the same
   bits. Defining NSA_REF_NO_SIMD before the implementation leaves only the
   portable C. */

/* out[r] = a . b over n elements for the first m <= 4 pairs r, a read at
   element offset ia[r] and b at ib[r] of their storage tensors: lane j sums
   the elements i % 8 == j in increasing i, and the lanes are combined as
   ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)), in the accumulation type. */
static void nsa__dot4(const nsa__ctx *c, const void *a, const int64_t *ia,
                      const void *b, const int64_t *ib, int m, int n, double *out);
/* acc[j] += p * x[ix + j] for j < n, x read from storage. */
static void nsa__axpy(const nsa__ctx *c, nsa__row acc, double p, const void *x,
                      int64_t ix, int n);
/* acc[j] += p[u] * x[ix[u] + j] for u = 0, 1, .. m-1 (in that order for each
   element), m <= NSA__GROUP: the same as m calls of nsa__axpy. */
static void nsa__axpyn(const nsa__ctx *c, nsa__row acc, const double *p,
                       const void *x, const int64_t *ix, int m, int n);
/* acc[j] *= a for j < n. */
static void nsa__scal(nsa__row acc, double a, int n);

/* Element offsets of rows. */
static int64_t nsa__q_at(const nsa__ctx *c, int64_t tok, int h)
{
    return tok * c->qst + (int64_t)h * c->qsh;
}
static int64_t nsa__k_at(const nsa__ctx *c, int64_t tok, int hk)
{
    return tok * c->kst + (int64_t)hk * c->ksh;
}
static int64_t nsa__v_at(const nsa__ctx *c, int64_t tok, int hk)
{
    return tok * c->vst + (int64_t)hk * c->vsh;
}
/* Gradient outputs are contiguous [T, Hkv, D]. */
static int64_t nsa__k_out(const nsa__ctx *c, int64_t tok, int hk)
{
    return (tok * c->Hkv + hk) * (int64_t)c->Dk;
}
static int64_t nsa__v_out(const nsa__ctx *c, int64_t tok, int hk)
{
    return (tok * c->Hkv + hk) * (int64_t)c->Dv;
}
static int64_t nsa__kc_at(const nsa__ctx *c, int64_t blk, int hk)
{
    return (blk * c->Hkv + hk) * (int64_t)c->Dk;
}
static int64_t nsa__vc_at(const nsa__ctx *c, int64_t blk, int hk)
{
    return (blk * c->Hkv + hk) * (int64_t)c->Dv;
}

/* ---- branch 1: compression ----------------------------------------------- */

/* Compressed blocks visible to position t (contract, branch 1 causality:
   block i is visible iff i*d + l - 1 <= t). */
static int64_t nsa__cmp_visible(const nsa__ctx *c, const nsa__seq *s, int64_t t)
{
    int64_t v = nsa_cmp_visible_count(t, c->cfg->l, c->cfg->d);
    return v < s->nc ? v : s->nc;
}

/* Branch 1: one element of K_cmp[i] (or V_cmp[i]) = mean of the block's l
   keys: fp32 sum in key order, divided by l. */
static double nsa__compress_mean(const nsa__ctx *c, const void *src,
                                 int64_t first, int64_t tok_stride)
{
    double acc = 0;
    int s;
    for (s = 0; s < c->cfg->l; ++s)
        acc = nsa__r(c, acc + nsa_load(src, c->dt, first + s * tok_stride));
    return nsa__r(c, acc / c->cfg->l);
}

/* Blocks from_blocks .. nc - 1 of each sequence, from_blocks =
   nsa_cmp_blocks(seqlens_old[b]) (0 for every sequence when seqlens_old is
   NULL: the whole compression). */
static void nsa__compress_all(const nsa__ctx *c, const int32_t *seqlens_old,
                              void *k_cmp, void *v_cmp)
{
    const nsa_batch *x = c->x;
    NSA__OMP(omp parallel num_threads(c->nthreads))
    {
        nsa__seq s;
        int b;
        nsa__seq_begin(c, &s);
        for (b = 0; b < x->B; ++b) {
            int64_t r, i0;
            if (b) nsa__seq_step(c, b, &s);
            i0 = seqlens_old ? nsa_cmp_blocks(seqlens_old[b], c->cfg->l, c->cfg->d) : 0;
            if (i0 > s.nc) i0 = s.nc;
            NSA__OMP(omp for schedule(static) nowait)
            for (r = i0 * c->Hkv; r < s.nc * c->Hkv; ++r) {
                int64_t i = r / c->Hkv, tok = s.k0 + i * c->cfg->d;
                int hk = (int)(r % c->Hkv), j;
                for (j = 0; j < c->Dk; ++j)
                    nsa__put(c, k_cmp, nsa__kc_at(c, s.c0 + i, hk) + j,
                             nsa__compress_mean(c, x->k, nsa__k_at(c, tok, hk) + j,
                                                c->kst));
                for (j = 0; j < c->Dv; ++j)
                    nsa__put(c, v_cmp, nsa__vc_at(c, s.c0 + i, hk) + j,
                             nsa__compress_mean(c, x->v, nsa__v_at(c, tok, hk) + j,
                                                c->vst));
            }
        }
    }
}

/* ---- key sets of the three branches -------------------------------------- */

/* The keys a branch shows query position t, as ranges [lo, hi) of rows of
   one K/V source: compressed blocks (cmp) or keys of the sequence. */
typedef struct nsa__keys {
    const void *k, *v;
    int64_t kbase, vbase, kst, vst; /* element offset of row r: base + r*st */
    int nranges;
    const int32_t *sel;  /* slc: the used selection entries */
    int64_t lo, hi;      /* cmp, win: the single range      */
    int64_t t;
} nsa__keys;

/* Is a selection entry used? (contract: entry used iff 0 <= idx < nb). */
static int nsa__sel_ok(const nsa__seq *s, int32_t j)
{
    return j >= 0 && (int64_t)j < s->nb;
}
static int nsa__sel_clamp(const nsa__ctx *c, int32_t cnt)
{
    return cnt < 0 ? 0 : cnt > c->cfg->n ? c->cfg->n : (int)cnt;
}

/* Unit (packed) of query i of sequence s. */
static int64_t nsa__unit_of(const nsa__ctx *c, const nsa__seq *s, int64_t i)
{
    return s->u0 + i / c->cfg->bq;
}

static nsa__keys nsa__branch_keys(const nsa__ctx *c, const nsa__seq *s, int br,
                                  int64_t t, int hk, const int32_t *sel,
                                  int32_t sel_count)
{
    nsa__keys K;
    memset(&K, 0, sizeof K);
    K.t = t;
    if (br == NSA__CMP) { /* branch 1: blocks i with i*d + l - 1 <= t */
        K.k = c->kc; K.v = c->vc;
        K.kbase = nsa__kc_at(c, s->c0, hk); K.kst = (int64_t)c->Hkv * c->Dk;
        K.vbase = nsa__vc_at(c, s->c0, hk); K.vst = (int64_t)c->Hkv * c->Dv;
        K.lo = 0; K.hi = nsa__cmp_visible(c, s, t);
        K.nranges = 1;
        return K;
    }
    K.k = c->x->k; K.v = c->x->v;
    K.kbase = nsa__k_at(c, s->k0, hk); K.kst = c->kst;
    K.vbase = nsa__v_at(c, s->k0, hk); K.vst = c->vst;
    if (br == NSA__WIN) { /* branch 3: keys max(0, t-w+1) .. t */
        K.lo = t - c->cfg->w + 1 < 0 ? 0 : t - c->cfg->w + 1;
        K.hi = t + 1;
        K.nranges = 1;
    } else { /* branch 2: keys of the selected blocks with s <= t */
        K.sel = sel;
        K.nranges = nsa__sel_clamp(c, sel_count);
    }
    return K;
}

/* Range e of a key set; empty for unused selection entries. */
static void nsa__keys_range(const nsa__ctx *c, const nsa__seq *s,
                            const nsa__keys *K, int e, int64_t *lo, int64_t *hi)
{
    int64_t j, end;
    if (!K->sel) { *lo = K->lo; *hi = K->hi; return; }
    j = K->sel[e];
    if (!nsa__sel_ok(s, (int32_t)j)) { *lo = *hi = 0; return; }
    end = (j + 1) * c->cfg->lp;
    if (end > s->nk) end = s->nk;
    if (end > K->t + 1) end = K->t + 1;
    *lo = j * c->cfg->lp;
    *hi = end > *lo ? end : *lo;
}

/* Selection entries of the unit holding query i (slc). */
static const int32_t *nsa__unit_sel(const nsa__ctx *c, const nsa__seq *s,
                                    const int32_t *sel_idx, int64_t i, int hk)
{
    return sel_idx + (nsa__unit_of(c, s, i) * c->Hkv + hk) * (int64_t)c->cfg->n;
}
static int32_t nsa__unit_cnt(const nsa__ctx *c, const nsa__seq *s,
                             const int32_t *sel_count, int64_t i, int hk)
{
    return sel_count[nsa__unit_of(c, s, i) * c->Hkv + hk];
}

/* ---- attention of one branch (forward) ------------------------------------ */

/* The logits z[u] = sc * q . K[r + u] of keys r .. r + nr - 1 (nr <= 4) of
   one range of a key set, query row qoff: the one formula of the forward's
   online softmax and of the backward's logits (nsa__logits_row). */
static void nsa__logits4(const nsa__ctx *c, const nsa__keys *K, int64_t qoff,
                         int64_t r, int nr, double *z)
{
    int64_t ia[4] = {0, 0, 0, 0}, ib[4] = {0, 0, 0, 0}; /* nr >= 1 */
    double dots[4];
    int u;
    nsa__offsets(ia, qoff, 0, nr);
    nsa__offsets(ib, K->kbase + r * K->kst, K->kst, nr);
    nsa__dot4(c, c->x->q, ia, K->k, ib, nr, c->Dk, dots);
    for (u = 0; u < nr; ++u) z[u] = nsa__r(c, c->sc * dots[u]);
}

/* "The three branches": o_c[t,h][j0 .. j0+nj) and lse_c[t,h] by online
   softmax over the branch's keys; o = 0, lse = -inf when no key is seen.
   When z is not NULL, the logit of every key goes to z[0 ..), in key order
   (the backward reuses them). */
static void nsa__attend_row(const nsa__ctx *c, const nsa__seq *s,
                            const nsa__keys *K, int64_t qoff, int j0, int nj,
                            nsa__row acc, double *lse, double *z)
{
    double m = -INFINITY, L = 0;
    int e, j;
    nsa__zero(acc, nj);
    for (e = 0; e < K->nranges; ++e) {
        int64_t lo, hi, r;
        nsa__keys_range(c, s, K, e, &lo, &hi);
        for (r = lo; r < hi; r += 4) {
            const int nr = hi - r < 4 ? (int)(hi - r) : 4;
            double zs[4];
            int u;
            nsa__logits4(c, K, qoff, r, nr, zs);
            int np = 0;           /* p * v terms not yet added to acc */
            double pp[4];
            int64_t pv[4];
            for (u = 0; u < nr; ++u) {
                double sc = zs[u], p;
                if (z) *z++ = sc;
                if (sc == -INFINITY) continue; /* probability exactly 0 */
                if (sc > m) { /* new maximum: rescale what is summed so far */
                    double alpha = nsa__exp(c, nsa__r(c, m - sc));
                    L = nsa__r(c, L * alpha);
                    nsa__axpyn(c, acc, pp, K->v, pv, np, nj);
                    np = 0;
                    nsa__scal(acc, alpha, nj);
                    m = sc;
                }
                p = nsa__exp(c, nsa__r(c, sc - m));
                L = nsa__r(c, L + p);
                pp[np] = p;
                pv[np++] = K->vbase + (r + u) * K->vst + j0;
            }
            nsa__axpyn(c, acc, pp, K->v, pv, np, nj);
        }
    }
    /* L == 0 only when no key was summed: an empty key set, or only -inf
       logits. A NaN or +inf logit makes L NaN, and NaN then reaches o and
       lse: a bad input must not look like an empty branch. */
    if (L == 0) {
        nsa__zero(acc, nj);
        *lse = -INFINITY;
        return;
    }
    for (j = 0; j < nj; ++j) nsa__set(acc, j, nsa__r(c, nsa__get(acc, j) / L));
    *lse = nsa__r(c, m + nsa__log(c, L));
}

/* Gate weight of branch br for (query token gq, head h): the caller's gate,
   or 1 / (number of enabled branches) in fp32 ("Gates and output"). */
static double nsa__gate(const nsa__ctx *c, const void *gates, int64_t gq,
                        int h, int br)
{
    if (!nsa__on(c, br)) return 0;
    if (gates) return nsa_load(gates, c->dt, (gq * c->H + h) * 3 + br);
    return nsa_default_gate(c->cfg->branches);
}

/* "Gates and output": o = sum over enabled c, in order cmp, slc, win, of
   g_c * o_c, o_c being the fp32 branch output. */
static double nsa__combine_one(const nsa__ctx *c, const double g[3],
                               const float oc[3])
{
    double acc = 0;
    int br;
    for (br = 0; br < 3; ++br)
        if (nsa__on(c, br))
            acc = nsa__r(c, acc + nsa__r(c, g[br] * (double)oc[br]));
    return acc;
}

/* ---- selection ------------------------------------------------------------ */

/* Selection step 1: importance p[i] of the compressed blocks visible to t
   (i < nvis), for query row qoff of kv head hk. probs: softmax of
   sc * q . K_cmp[i] over the visible blocks; logits: the raw value. */
static void nsa__importance(const nsa__ctx *c, const nsa__seq *s, int64_t qoff,
                            int hk, int64_t nvis, double *p)
{
    double m = -INFINITY, L = 0;
    int64_t i;
    for (i = 0; i < nvis; i += 4) {
        const int nr = nvis - i < 4 ? (int)(nvis - i) : 4;
        int64_t ia[4], ib[4];
        double dots[4];
        int u;
        nsa__offsets(ia, qoff, 0, nr);
        nsa__offsets(ib, nsa__kc_at(c, s->c0 + i, hk), (int64_t)c->Hkv * c->Dk, nr);
        nsa__dot4(c, c->x->q, ia, c->kc, ib, nr, c->Dk, dots);
        for (u = 0; u < nr; ++u) {
            p[i + u] = nsa__r(c, c->sc * dots[u]);
            if (p[i + u] > m) m = p[i + u];
        }
    }
    if (c->cfg->score_mode == NSA_SCORE_LOGITS || nvis == 0) return;
    for (i = 0; i < nvis; ++i) {
        p[i] = nsa__exp(c, nsa__r(c, p[i] - m));
        L = nsa__r(c, L + p[i]);
    }
    for (i = 0; i < nvis; ++i) p[i] = nsa__r(c, p[i] / L);
}

/* Selection step 2: score of selection block j from one head's importance:
   sum over m < l'/d (outer), k < l/d (inner) of p[(l'/d)*j + m - k], indices
   outside [0, nvis) skipped (the overlap form). */
static double nsa__overlap(const nsa__ctx *c, const double *p, int64_t nvis,
                           int64_t j)
{
    const int64_t per_slc = c->cfg->lp / c->cfg->d, per_cmp = c->cfg->l / c->cfg->d;
    double acc = 0;
    int64_t m, k, k0, k1;
    for (m = 0; m < per_slc; ++m) {
        /* only the k with 0 <= i < nvis, in the same ascending order: the
           same sum, in O(visible) steps rather than O(l/d) (a long l with
           few visible blocks would otherwise spin) */
        const int64_t top = nsa_overlap_index(j, (int)m, 0, c->cfg->d, c->cfg->lp); /* i = top - k */
        k0 = top - nvis + 1 > 0 ? top - nvis + 1 : 0;
        k1 = top < per_cmp - 1 ? top : per_cmp - 1;
        for (k = k0; k <= k1; ++k) acc = nsa__r(c, acc + p[top - k]);
    }
    return acc;
}

/* First and last query position of unit u (local) of sequence s. */
static void nsa__unit_span(const nsa__ctx *c, const nsa__seq *s, int64_t u,
                           int64_t *t0, int64_t *t1)
{
    int64_t last = (u + 1) * c->cfg->bq;
    if (last > s->nq) last = s->nq;
    *t0 = s->off + u * c->cfg->bq;
    *t1 = s->off + last - 1;
}

/* Selection steps 1-4 for unit u (local) and kv head hk: score[j] for the
   eligible blocks j (j*l' <= t_last; returns their number), rounded to
   fp32. Scratch: p [nc], g [2 nb]. */
static int64_t nsa__unit_scores(const nsa__ctx *c, const nsa__seq *s, int64_t u,
                                int hk, double *p, double *g, float *score)
{
    int64_t t0, t1, t, j, nelig;
    double *tile = g + s->nb;
    int h;
    nsa__unit_span(c, s, u, &t0, &t1);
    nelig = nsa_slc_eligible_count(t1, c->cfg->lp); /* step 5: j*l' <= t_last */
    for (j = 0; j < nelig; ++j) tile[j] = 0;
    for (t = t0; t <= t1; ++t) {
        int64_t nvis = nsa__cmp_visible(c, s, t);
        int64_t gq = s->q0 + (t - s->off);
        for (j = 0; j < nelig; ++j) g[j] = 0;
        for (h = hk * c->G; h < (hk + 1) * c->G; ++h) { /* step 3: group */
            nsa__importance(c, s, nsa__q_at(c, gq, h), hk, nvis, p);
            for (j = 0; j < nelig; ++j)
                g[j] = nsa__r(c, g[j] + nsa__overlap(c, p, nvis, j));
        }
        for (j = 0; j < nelig; ++j) /* step 4: tile */
            tile[j] = nsa__r(c, tile[j] + g[j]);
    }
    for (j = 0; j < nelig; ++j) score[j] = (float)tile[j];
    return nelig;
}

/* Step 6's order is nsa.h's one encoding: nsa_score_key (-0 as +0, NaN
   below -inf) above the complemented index (nsa_rank_key). */

/* Heap sort, ascending. */
static void nsa__sift(uint64_t *a, int64_t i, int64_t n)
{
    for (;;) {
        int64_t m = i, l = 2 * i + 1, r = l + 1;
        uint64_t t;
        if (l < n && a[l] > a[m]) m = l;
        if (r < n && a[r] > a[m]) m = r;
        if (m == i) return;
        t = a[i]; a[i] = a[m]; a[m] = t;
        i = m;
    }
}
static void nsa__sort_u64(uint64_t *a, int64_t n)
{
    int64_t i;
    for (i = n / 2 - 1; i >= 0; --i) nsa__sift(a, i, n);
    for (i = n - 1; i > 0; --i) {
        uint64_t t = a[0];
        a[0] = a[i]; a[i] = t;
        nsa__sift(a, 0, i);
    }
}

/* The k largest of m distinct keys, to keys[0 .. k) in descending order.
   Radix select over 8-bit digits from the top finds the k-th largest key
   (the candidates sharing the chosen prefix are kept in tmp), then one pass
   collects every key at or above it: exactly k, since keys are distinct. */
static void nsa__largest(uint64_t *keys, int64_t m, int64_t k, uint64_t *tmp)
{
    uint64_t prefix = 0;
    const uint64_t *cand = keys;
    int64_t ncand = m, need = k, i, n = 0;
    int shift;
    if (k <= 0) return;
    if (k < m) {
        for (shift = 56; shift >= 0; shift -= 8) {
            int64_t hist[256];
            int dg;
            memset(hist, 0, sizeof hist);
            for (i = 0; i < ncand; ++i) ++hist[(cand[i] >> shift) & 255u];
            for (dg = 255; dg > 0 && hist[dg] < need; --dg) need -= hist[dg];
            prefix |= (uint64_t)dg << shift;
            if (hist[dg] == need) break; /* all of this digit are in */
            for (i = 0, n = 0; i < ncand; ++i)
                if (((cand[i] >> shift) & 255u) == (uint64_t)dg) tmp[n++] = cand[i];
            cand = tmp;
            ncand = n;
        }
        for (i = 0, n = 0; i < m; ++i)
            if (keys[i] >= prefix) tmp[n++] = keys[i];
        memcpy(keys, tmp, (size_t)k * sizeof *keys);
    }
    if (k > m) k = m;
    nsa__sort_u64(keys, k);
    for (i = 0; i < k / 2; ++i) {
        uint64_t t = keys[i];
        keys[i] = keys[k - 1 - i];
        keys[k - 1 - i] = t;
    }
}

/* Selection steps 5-7 for a unit whose last query is t_last, from the
   eligible scores: forced blocks (first n_init, and the n_local blocks ending
   at floor(t_last/l')) first, then the best scores; exactly min(n, nelig)
   blocks, ascending, -1 padded. Scratch: keys, tmp [nelig]. */
static void nsa__unit_select(const nsa__ctx *c, int64_t t_last, const float *score,
                             int64_t nelig, uint64_t *keys, uint64_t *tmp,
                             int32_t *idx, int32_t *count)
{
    const nsa_config *cfg = c->cfg;
    int64_t j, k = nelig < cfg->n ? nelig : cfg->n;
    for (j = 0; j < nelig; ++j) {
        int forced = nsa_slc_forced(j, t_last, cfg->lp, cfg->n_init, cfg->n_local);
        keys[j] = nsa_rank_key(forced ? 0xffffffffu : nsa_score_key(score[j]), j);
    }
    nsa__largest(keys, nelig, k, tmp);
    for (j = 0; j < k; ++j) keys[j] = (uint64_t)nsa_rank_index(keys[j]);
    nsa__sort_u64(keys, k);
    for (j = 0; j < cfg->n; ++j) idx[j] = j < k ? (int32_t)keys[j] : -1;
    *count = (int32_t)k;
}

/* Scratch of one thread, as typed rows. */
static unsigned char *nsa__slot(const nsa__ctx *c)
{
    return c->slots + (size_t)NSA__TID() * c->slot_bytes;
}

/* Selection for every unit: block scores (when score_out) and/or the
   selection (when idx_out). */
static void nsa__select_all(const nsa__ctx *c, float *score_out,
                            int32_t *idx_out, int32_t *cnt_out)
{
    NSA__OMP(omp parallel num_threads(c->nthreads))
    {
        double *p = (double *)nsa__slot(c);
        double *g = p + c->nc_max;                      /* 2 * nb_max */
        float *score = (float *)(g + 2 * c->nb_max);    /* nb_max     */
        uint64_t *keys = (uint64_t *)(g + 3 * c->nb_max);
        uint64_t *tmp = keys + c->nb_max;
        nsa__seq s;
        int b;
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            int64_t r;
            if (b) nsa__seq_step(c, b, &s);
            NSA__OMP(omp for schedule(dynamic, 1) nowait)
            for (r = 0; r < s.nu * c->Hkv; ++r) {
                int64_t u = r / c->Hkv, t0, t1, j, nelig, unit = s.u0 + u;
                int hk = (int)(r % c->Hkv);
                nelig = nsa__unit_scores(c, &s, u, hk, p, g, score);
                nsa__unit_span(c, &s, u, &t0, &t1);
                if (score_out) {
                    float *row = score_out + (unit * c->Hkv + hk) * c->sz.max_slc_blocks;
                    for (j = 0; j < c->sz.max_slc_blocks; ++j)
                        row[j] = j < nelig ? score[j] : -INFINITY;
                }
                if (idx_out)
                    nsa__unit_select(c, t1, score, nelig, keys, tmp,
                                     idx_out + (unit * c->Hkv + hk) * (int64_t)c->cfg->n,
                                     cnt_out + unit * c->Hkv + hk);
            }
        }
    }
}

/* A caller's selection, its used entries kept in order, -1 padded (forward
   saves it so that backward reads one format). */
static void nsa__copy_selection(const nsa__ctx *c, int32_t *idx_out,
                                int32_t *cnt_out)
{
    nsa__seq s;
    int b;
    nsa__seq_begin(c, &s);
    for (b = 0; b < c->x->B; ++b) {
        int64_t r;
        if (b) nsa__seq_step(c, b, &s);
        for (r = s.u0 * c->Hkv; r < (s.u0 + s.nu) * c->Hkv; ++r) {
            const int32_t *in = c->x->sel_idx + r * c->cfg->n;
            int32_t *out = idx_out + r * c->cfg->n;
            int cnt = nsa__sel_clamp(c, c->x->sel_count[r]), e, k = 0;
            for (e = 0; e < cnt; ++e)
                if (nsa__sel_ok(&s, in[e])) out[k++] = in[e];
            cnt_out[r] = k;
            for (e = k; e < c->cfg->n; ++e) out[e] = -1;
        }
    }
}

/* ---- forward over all rows -------------------------------------------------- */

/* Per (query, head) rows of the forward: every enabled branch attends
   (NSA__CHUNK output dims at a time), then either the branch outputs go to
   o_br / lse_br (stage functions) or the gated sum goes to o and each lse to
   lse_br (nsa_ref_forward). */
typedef struct nsa__fwd {
    const int32_t *sel_idx, *sel_count;
    const void *gates;
    void *o;           /* combined output (storage dtype) or NULL          */
    float *o_br[3];    /* fp32 branch outputs [TQ, H, Dv], or NULL         */
    float *lse_br[3];  /* [TQ, H] for the branches wanted, or NULL          */
    int want[3];       /* branches to compute                              */
} nsa__fwd;

static void nsa__forward_row(const nsa__ctx *c, const nsa__seq *s,
                             const nsa__fwd *F, int64_t i, int h)
{
    const int64_t gq = s->q0 + i, t = s->off + i;
    const int hk = h / c->G;
    const int64_t qoff = nsa__q_at(c, gq, h), orow = (gq * c->H + h) * c->Dv;
    double accd[NSA__CHUNK], g[3], lse[3];
    float accf[NSA__CHUNK], oc[3][NSA__CHUNK];
    const nsa__row acc = c->f64 ? nsa__row_of(c, accd) : nsa__row_of(c, accf);
    nsa__keys K[3];
    int br, j0, j;
    for (br = 0; br < 3; ++br) {
        g[br] = nsa__gate(c, F->gates, gq, h, br);
        if (!F->want[br]) continue;
        K[br] = nsa__branch_keys(c, s, br, t, hk,
                                 br == NSA__SLC ? nsa__unit_sel(c, s, F->sel_idx, i, hk) : NULL,
                                 br == NSA__SLC ? nsa__unit_cnt(c, s, F->sel_count, i, hk) : 0);
    }
    for (j0 = 0; j0 < c->Dv; j0 += NSA__CHUNK) {
        const int nj = c->Dv - j0 < NSA__CHUNK ? c->Dv - j0 : NSA__CHUNK;
        for (br = 0; br < 3; ++br) {
            if (!F->want[br]) {
                for (j = 0; j < nj; ++j) oc[br][j] = 0.0f;
                continue;
            }
            nsa__attend_row(c, s, &K[br], qoff, j0, nj, acc, &lse[br], NULL);
            for (j = 0; j < nj; ++j) oc[br][j] = (float)nsa__get(acc, j);
            if (F->o_br[br])
                for (j = 0; j < nj; ++j) F->o_br[br][orow + j0 + j] = oc[br][j];
        }
        if (F->o)
            for (j = 0; j < nj; ++j) {
                float o3[3];
                o3[0] = oc[0][j]; o3[1] = oc[1][j]; o3[2] = oc[2][j];
                nsa__put(c, F->o, orow + j0 + j, nsa__combine_one(c, g, o3));
            }
    }
    for (br = 0; br < 3; ++br)
        if (F->want[br] && F->lse_br[br])
            F->lse_br[br][gq * c->H + h] = (float)lse[br];
}

static void nsa__forward_all(const nsa__ctx *c, const nsa__fwd *F)
{
    NSA__OMP(omp parallel num_threads(c->nthreads))
    {
        nsa__seq s;
        int b;
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            int64_t r;
            if (b) nsa__seq_step(c, b, &s);
            NSA__OMP(omp for schedule(dynamic, 4) nowait)
            for (r = 0; r < s.nq * c->H; ++r)
                nsa__forward_row(c, &s, F, r / c->H, (int)(r % c->H));
        }
    }
}

/* ---- backward --------------------------------------------------------------- */

/* Per (query, head, branch) quantities of the backward. */
typedef struct nsa__bwd {
    const void *gates, *d_o;
    const nsa_saved *sv;
    const nsa_grads *gr;
    const float *lse[3];
    float *o_br[3];   /* the forward's o_c planes [TQ, H, Dv] (saved.o_branch,
                         fp32 mode, branch on), or NULL: recompute o_c */
} nsa__bwd;

/* The logits of a key set for query row qoff, in key order, to z: those
   nsa__attend_row writes to its z, the same bits (nsa__logits4 in the same
   groups of four), without the softmax and the V rows. */
static void nsa__logits_row(const nsa__ctx *c, const nsa__seq *s,
                            const nsa__keys *K, int64_t qoff, double *z)
{
    int e;
    for (e = 0; e < K->nranges; ++e) {
        int64_t lo, hi, r;
        nsa__keys_range(c, s, K, e, &lo, &hi);
        for (r = lo; r < hi; r += 4) {
            const int nr = hi - r < 4 ? (int)(hi - r) : 4;
            nsa__logits4(c, K, qoff, r, nr, z);
            z += nr;
        }
    }
}

/* Backward of one (key, query, head) term: the gradient of the logit's
   dot product, ds = sc * P * (dP - Delta) with dP = w * (dO . v), from
   P = exp(s - lse), the gate weight w and Delta = dO_c . o_c. */
static double nsa__dlogit(const nsa__ctx *c, double P, double w, double dov,
                          double delta)
{
    const double dP = nsa__r(c, w * dov);
    return nsa__r(c, c->sc * nsa__r(c, P * nsa__r(c, dP - delta)));
}

/* dO . o_c over Dv: dO from storage at element offset ix, o_c an
   accumulator row; 8 lanes and the tree of nsa__dot, each operation rounded
   to the accumulation type. */
static double nsa__dot_row(const nsa__ctx *c, const void *x, int64_t ix,
                           nsa__row row, int n)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i;
    for (i = 0; i < n; ++i)
        lane[i & 7] = nsa__r(c, lane[i & 7] +
                                nsa__r(c, (double)nsa_load(x, c->dt, ix + i) *
                                              nsa__get(row, i)));
    return nsa__r(c, nsa__r(c, nsa__r(c, lane[0] + lane[4]) + nsa__r(c, lane[2] + lane[6])) +
                         nsa__r(c, nsa__r(c, lane[1] + lane[5]) + nsa__r(c, lane[3] + lane[7])));
}

/* Pass A, per (query, head), for each branch (MATH.md 7.2, 8.1):
   o_c and the row's lse are recomputed by the forward's own online softmax
   (nsa__attend_row: normalized, so exactly the forward's o_c and, in fp32,
   its saved lse bit for bit); dgate = dO . o_c and Delta = w * dgate (the
   FlashAttention form: no error that grows with |lse|); then per key
   P = exp(s - lse) and dov = dO . v (kept in the row scratch) and
   dQ += ds * k. The saved lse marks rows without keys (-inf).
   With the forward's o_c planes (B->o_br, saved.o_branch in fp32 mode)
   only the logits are recomputed (nsa__logits_row), o_c is read from the
   plane and lse is the saved one: the same fp32 values the recomputation
   gives, so the same gradients bit for bit. */
static void nsa__backward_query(const nsa__ctx *c, const nsa__seq *s,
                                const nsa__bwd *B, int64_t i, int h,
                                nsa__row dq, double *prow, double *dovrow,
                                nsa__row oc)
{
    const int64_t gq = s->q0 + i, t = s->off + i;
    const int hk = h / c->G;
    const int64_t qoff = nsa__q_at(c, gq, h), dooff = (gq * c->H + h) * c->Dv;
    int br, j;
    nsa__zero(dq, c->Dk);
    for (br = 0; br < 3; ++br) {
        const double w = nsa__gate(c, B->gates, gq, h, br);
        double lse = nsa__on(c, br) ? B->lse[br][gq * c->H + h] : -INFINITY;
        double dgate = 0, delta = 0;
        nsa__row o = oc; /* the row's o_c: recomputed, or the forward's */
        if (lse != -INFINITY && B->o_br[br]) { /* forward's o_c, saved lse */
            const nsa__keys K = nsa__branch_keys(c, s, br, t, hk,
                br == NSA__SLC ? nsa__unit_sel(c, s, B->sv->sel_idx, i, hk) : NULL,
                br == NSA__SLC ? nsa__unit_cnt(c, s, B->sv->sel_count, i, hk) : 0);
            nsa__logits_row(c, s, &K, qoff, prow);
            o.f = B->o_br[br] + dooff;
            o.d = NULL;
        } else if (lse != -INFINITY) { /* the branch saw keys: recompute o_c, lse */
            const nsa__keys K = nsa__branch_keys(c, s, br, t, hk,
                br == NSA__SLC ? nsa__unit_sel(c, s, B->sv->sel_idx, i, hk) : NULL,
                br == NSA__SLC ? nsa__unit_cnt(c, s, B->sv->sel_count, i, hk) : 0);
            int j0;
            for (j0 = 0; j0 < c->Dv; j0 += NSA__CHUNK) /* logits to prow */
                nsa__attend_row(c, s, &K, qoff, j0,
                                c->Dv - j0 < NSA__CHUNK ? c->Dv - j0 : NSA__CHUNK,
                                nsa__row_add(oc, j0), &lse, j0 ? NULL : prow);
        }
        if (lse != -INFINITY) {
            const nsa__keys K = nsa__branch_keys(c, s, br, t, hk,
                br == NSA__SLC ? nsa__unit_sel(c, s, B->sv->sel_idx, i, hk) : NULL,
                br == NSA__SLC ? nsa__unit_cnt(c, s, B->sv->sel_count, i, hk) : 0);
            int64_t n = 0, lo, hi, r;
            int e;
            dgate = nsa__dot_row(c, B->d_o, dooff, o, c->Dv);
            delta = nsa__r(c, w * dgate);
            for (e = 0; e < K.nranges; ++e) { /* P from the logits, dO . v */
                nsa__keys_range(c, s, &K, e, &lo, &hi);
                for (r = lo; r < hi; r += 4) {
                    const int nr = hi - r < 4 ? (int)(hi - r) : 4;
                    int64_t ia[4], ib[4];
                    int u;
                    nsa__offsets(ia, dooff, 0, nr);
                    nsa__offsets(ib, K.vbase + r * K.vst, K.vst, nr);
                    nsa__dot4(c, B->d_o, ia, K.v, ib, nr, c->Dv, dovrow + n);
                    for (u = 0; u < nr; ++u, ++n)
                        prow[n] = nsa__exp(c, nsa__r(c, prow[n] - lse));
                }
            }
            for (e = 0, n = 0; e < K.nranges; ++e) { /* dQ += ds k */
                nsa__keys_range(c, s, &K, e, &lo, &hi);
                for (r = lo; r < hi; r += NSA__GROUP) {
                    const int nr = hi - r < NSA__GROUP ? (int)(hi - r) : NSA__GROUP;
                    double ds[NSA__GROUP];
                    int64_t ik[NSA__GROUP];
                    int u;
                    for (u = 0; u < nr; ++u, ++n) {
                        ds[u] = nsa__dlogit(c, prow[n], w, dovrow[n], delta);
                        ik[u] = K.kbase + (r + u) * K.kst;
                    }
                    nsa__axpyn(c, dq, ds, K.k, ik, nr, c->Dk);
                }
            }
        }
        c->delta[(gq * c->H + h) * 3 + br] = delta;
        c->lse_acc[(gq * c->H + h) * 3 + br] = lse;
        if (B->gates) nsa__put(c, B->gr->dgates, (gq * c->H + h) * 3 + br, dgate);
    }
    for (j = 0; j < c->Dk; ++j)
        nsa__put(c, B->gr->dq, (gq * c->H + h) * (int64_t)c->Dk + j, nsa__get(dq, j));
}

/* Adds to dk, dv (one key's accumulators) the terms of query position t,
   heads of group hk ascending, for the key at koff / voff in branch br:
   dK += ds q, dV += P w dO. Used by pass B. */
static void nsa__key_terms(const nsa__ctx *c, const nsa__seq *s, const nsa__bwd *B,
                           int br, int hk, int64_t t, const void *k, int64_t koff,
                           const void *v, int64_t voff, nsa__row dk, nsa__row dv)
{
    const int64_t gq = s->q0 + (t - s->off), h1 = (int64_t)(hk + 1) * c->G;
    int64_t h0;
    double ds[NSA__GROUP], pw[NSA__GROUP];
    int64_t iq[NSA__GROUP], io[NSA__GROUP];
    int m = 0;
    for (h0 = (int64_t)hk * c->G; h0 < h1; h0 += 4) {
        const int nr = h1 - h0 < 4 ? (int)(h1 - h0) : 4;
        int64_t ia[4], ib[4];
        double qk[4], dov[4];
        int u;
        nsa__offsets(ia, nsa__q_at(c, gq, (int)h0), c->qsh, nr);
        nsa__offsets(ib, koff, 0, nr);
        nsa__dot4(c, c->x->q, ia, k, ib, nr, c->Dk, qk);
        nsa__offsets(ia, (gq * c->H + h0) * c->Dv, c->Dv, nr);
        nsa__offsets(ib, voff, 0, nr);
        nsa__dot4(c, B->d_o, ia, v, ib, nr, c->Dv, dov);
        for (u = 0; u < nr; ++u) {
            const int h = (int)h0 + u;
            const double lse = c->lse_acc[(gq * c->H + h) * 3 + br];
            double w, P;
            if (lse == -INFINITY) continue;
            w = nsa__gate(c, B->gates, gq, h, br);
            P = nsa__exp(c, nsa__r(c, nsa__r(c, c->sc * qk[u]) - lse));
            ds[m] = nsa__dlogit(c, P, w, dov[u], c->delta[(gq * c->H + h) * 3 + br]);
            pw[m] = nsa__r(c, P * w);
            iq[m] = nsa__q_at(c, gq, h);
            io[m++] = (gq * c->H + h) * c->Dv;
        }
        if (m + 4 > NSA__GROUP || h0 + 4 >= h1) {
            /* dK += ds q, dV += P w dO, heads ascending (per element) */
            nsa__axpyn(c, dk, ds, c->x->q, iq, m, c->Dk);
            nsa__axpyn(c, dv, pw, B->d_o, io, m, c->Dv);
            m = 0;
        }
    }
}

/* Pass B1, per (compressed block, kv head): dK_cmp, dV_cmp from the queries
   that see the block (t >= i*d + l - 1), ascending. */
static void nsa__backward_cmp_block(const nsa__ctx *c, const nsa__seq *s,
                                    const nsa__bwd *B, int64_t i, int hk,
                                    nsa__row dk, nsa__row dv)
{
    int64_t t = nsa_cmp_first_query(i, c->cfg->l, c->cfg->d);
    nsa__zero(dk, c->Dk);
    nsa__zero(dv, c->Dv);
    if (nsa__on(c, NSA__CMP))
        for (t = t < s->off ? s->off : t; t < s->nk; ++t)
            nsa__key_terms(c, s, B, NSA__CMP, hk, t, c->kc, nsa__kc_at(c, s->c0 + i, hk),
                           c->vc, nsa__vc_at(c, s->c0 + i, hk), dk, dv);
}

/* Pass B2, per (key chunk [k0, k1) of the sequence, kv head): dK, dV of its
   keys: window terms, selected terms (the chunk is selection block jb when
   the selected branch is on), then dK_cmp / l of the blocks holding a key. */
static void nsa__backward_keys(const nsa__ctx *c, const nsa__seq *s,
                               const nsa__bwd *B, int64_t k0, int64_t k1,
                               int64_t jb, int hk, nsa__row dk, nsa__row dv)
{
    const int Dk = c->Dk, Dv = c->Dv;
    int64_t sp, t, j;
    nsa__zero(dk, (k1 - k0) * Dk);
    nsa__zero(dv, (k1 - k0) * Dv);
    if (nsa__on(c, NSA__WIN)) { /* window: t in [s, s + w - 1] */
        int64_t tend = k1 - 1 + c->cfg->w - 1;
        if (tend > s->nk - 1) tend = s->nk - 1;
        for (t = k0 > s->off ? k0 : s->off; t <= tend; ++t)
            for (sp = (t - c->cfg->w + 1 > k0 ? t - c->cfg->w + 1 : k0);
                 sp < k1 && sp <= t; ++sp)
                nsa__key_terms(c, s, B, NSA__WIN, hk, t, c->x->k,
                               nsa__k_at(c, s->k0 + sp, hk), c->x->v,
                               nsa__v_at(c, s->k0 + sp, hk),
                               nsa__row_add(dk, (sp - k0) * Dk),
                               nsa__row_add(dv, (sp - k0) * Dv));
    }
    if (nsa__on(c, NSA__SLC)) { /* selected: units that chose block jb */
        const int64_t x = (s->j0 + jb) * c->Hkv + hk;
        int64_t e;
        for (e = c->toff[x]; e < c->toff[x + 1]; ++e) {
            int64_t u = c->tlist[e] - s->u0, t0, t1;
            nsa__unit_span(c, s, u, &t0, &t1);
            for (t = t0 > k0 ? t0 : k0; t <= t1; ++t)
                for (sp = k0; sp < k1 && sp <= t; ++sp)
                    nsa__key_terms(c, s, B, NSA__SLC, hk, t, c->x->k,
                                   nsa__k_at(c, s->k0 + sp, hk), c->x->v,
                                   nsa__v_at(c, s->k0 + sp, hk),
                                   nsa__row_add(dk, (sp - k0) * Dk),
                                   nsa__row_add(dv, (sp - k0) * Dv));
        }
    }
    if (nsa__on(c, NSA__CMP) && !c->cfg->caller_compressed) {
        /* mean compression: dK_cmp[i] / l to each key of block i */
        const int l = c->cfg->l, d = c->cfg->d;
        for (sp = k0; sp < k1; ++sp) {
            int64_t i = sp < l - 1 ? 0 : (sp - l + 1 + d - 1) / d, jj;
            for (; i * d <= sp && i < s->nc; ++i)
                for (jj = 0; jj < Dk + Dv; ++jj) {
                    const nsa__row acc = jj < Dk ? dk : dv;
                    const int64_t at = jj < Dk ? (sp - k0) * Dk + jj : (sp - k0) * Dv + (jj - Dk);
                    double g = jj < Dk ? c->dkc[((s->c0 + i) * c->Hkv + hk) * Dk + jj]
                                       : c->dvc[((s->c0 + i) * c->Hkv + hk) * Dv + (jj - Dk)];
                    nsa__set(acc, at, nsa__r(c, nsa__get(acc, at) + nsa__r(c, g / l)));
                }
        }
    }
    for (sp = k0; sp < k1; ++sp) {
        for (j = 0; j < Dk; ++j)
            nsa__put(c, B->gr->dk, nsa__k_out(c, s->k0 + sp, hk) + j,
                     nsa__get(dk, (sp - k0) * Dk + j));
        for (j = 0; j < Dv; ++j)
            nsa__put(c, B->gr->dv, nsa__v_out(c, s->k0 + sp, hk) + j,
                     nsa__get(dv, (sp - k0) * Dv + j));
    }
}

/* Transposed selection: for each (selection block, kv head), the units that
   selected it, ascending (a counting sort: exact and deterministic). */
static void nsa__transpose_selection(const nsa__ctx *c, const nsa_saved *sv)
{
    const int64_t X = c->jtot * c->Hkv;
    nsa__seq s;
    int64_t x, r;
    int b, e, pass;
    for (x = 0; x <= X; ++x) c->toff[x] = 0;
    for (pass = 0; pass < 2; ++pass) {
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            if (b) nsa__seq_step(c, b, &s);
            for (r = s.u0 * c->Hkv; r < (s.u0 + s.nu) * c->Hkv; ++r) {
                const int32_t *sel = sv->sel_idx + r * c->cfg->n;
                int cnt = nsa__sel_clamp(c, sv->sel_count[r]);
                for (e = 0; e < cnt; ++e) {
                    if (!nsa__sel_ok(&s, sel[e])) continue;
                    x = (s.j0 + sel[e]) * c->Hkv + r % c->Hkv;
                    if (pass == 0) ++c->toff[x + 1];
                    else c->tlist[c->toff[x]++] = (int32_t)(r / c->Hkv);
                }
            }
        }
        if (pass == 0)
            for (x = 0; x < X; ++x) c->toff[x + 1] += c->toff[x];
    }
    for (x = X; x > 0; --x) c->toff[x] = c->toff[x - 1];
    c->toff[0] = 0;
}

static void nsa__backward_all(const nsa__ctx *c, const nsa__bwd *B)
{
    const int64_t chunk = nsa__on(c, NSA__SLC) ? c->cfg->lp : 64;
    /* pass A: dQ, dgates, Delta per (query, head) */
    NSA__OMP(omp parallel num_threads(c->nthreads))
    {
        double *mem = (double *)nsa__slot(c), *prow = mem + c->Dk;
        const nsa__row dq = nsa__row_of(c, mem);
        const nsa__row oc = nsa__row_of(c, prow + 2 * c->keys_max);
        nsa__seq s;
        int b;
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            int64_t r;
            if (b) nsa__seq_step(c, b, &s);
            NSA__OMP(omp for schedule(dynamic, 4) nowait)
            for (r = 0; r < s.nq * c->H; ++r)
                nsa__backward_query(c, &s, B, r / c->H, (int)(r % c->H), dq, prow,
                                    prow + c->keys_max, oc);
        }
    }
    /* pass B1: dK_cmp, dV_cmp per (compressed block, kv head) */
    if ((c->cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) &&
        (c->cfg->caller_compressed || nsa__on(c, NSA__CMP)))
        NSA__OMP(omp parallel num_threads(c->nthreads))
        {
            double *mem = (double *)nsa__slot(c);
            const nsa__row dk = nsa__row_of(c, mem), dv = nsa__row_of(c, mem + c->Dk);
            nsa__seq s;
            int b, j;
            nsa__seq_begin(c, &s);
            for (b = 0; b < c->x->B; ++b) {
                int64_t r;
                if (b) nsa__seq_step(c, b, &s);
                NSA__OMP(omp for schedule(dynamic, 1) nowait)
                for (r = 0; r < s.nc * c->Hkv; ++r) {
                    const int64_t i = r / c->Hkv;
                    const int hk = (int)(r % c->Hkv);
                    nsa__backward_cmp_block(c, &s, B, i, hk, dk, dv);
                    for (j = 0; j < c->Dk; ++j) {
                        if (c->cfg->caller_compressed)
                            nsa__put(c, B->gr->dk_cmp, nsa__kc_at(c, s.c0 + i, hk) + j, nsa__get(dk, j));
                        else
                            c->dkc[nsa__kc_at(c, s.c0 + i, hk) + j] = nsa__get(dk, j);
                    }
                    for (j = 0; j < c->Dv; ++j) {
                        if (c->cfg->caller_compressed)
                            nsa__put(c, B->gr->dv_cmp, nsa__vc_at(c, s.c0 + i, hk) + j, nsa__get(dv, j));
                        else
                            c->dvc[nsa__vc_at(c, s.c0 + i, hk) + j] = nsa__get(dv, j);
                    }
                }
            }
        }
    /* pass B2: dK, dV per (key chunk, kv head) */
    NSA__OMP(omp parallel num_threads(c->nthreads))
    {
        double *mem = (double *)nsa__slot(c);
        const nsa__row dk = nsa__row_of(c, mem), dv = nsa__row_of(c, mem + chunk * c->Dk);
        nsa__seq s;
        int b;
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            int64_t r, nchunks;
            if (b) nsa__seq_step(c, b, &s);
            nchunks = (s.nk + chunk - 1) / chunk;
            NSA__OMP(omp for schedule(dynamic, 1) nowait)
            for (r = 0; r < nchunks * c->Hkv; ++r) {
                const int64_t jb = r / c->Hkv, k0 = jb * chunk;
                const int64_t k1 = k0 + chunk < s.nk ? k0 + chunk : s.nk;
                nsa__backward_keys(c, &s, B, k0, k1, jb, (int)(r % c->Hkv), dk, dv);
            }
        }
    }
}

/* ---- kernels behind the primitives -----------------------------------------
   The definitions of nsa__dot4, nsa__axpy, nsa__axpyn and nsa__scal
   (declared, with their orders, above the math). Speed never changes an
   order: a vector register holds the 8 lanes of one dot product, or
   independent elements of one row, and each element sees the same
   operations as in the portable loops. NSA_REF_NO_SIMD turns the vector
   code off; tests/simd_same.sh checks that both builds give the same
   bits. */
#if (defined(__GNUC__) || defined(__clang__)) && !defined(NSA_REF_NO_SIMD)
#define NSA__VEC 1
#else
#define NSA__VEC 0
#endif
/* 1 when this build uses the vector kernels (for tests). */
#define NSA_REF_SIMD NSA__VEC

static inline double nsa__tree8(const double a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}
static inline float nsa__tree8f(const float a[8])
{
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

/* out[r] = a . b over n elements for the pairs r < 4, a read at element
   offset ia[r] and b at ib[r] of their storage tensors. Each dot product has
   the order of the top of this section (8 lanes, fixed tree); four are run
   side by side only to overlap their latencies. */
#if NSA__VEC
/* GNU vector types: a dot product's lanes 0-3 and 4-7 each live in one
   4-lane register (lane j holding element i + j), the same operations as the
   portable loop below. 4 lanes is the width every x86-64 and ARM64 has. */
#define NSA__INLINE static inline __attribute__((always_inline))
typedef float nsa__f4 __attribute__((vector_size(16)));
typedef uint32_t nsa__u4 __attribute__((vector_size(16)));
typedef uint16_t nsa__h4 __attribute__((vector_size(8)));
NSA__INLINE nsa__f4 nsa__load4(const void *p, nsa_dtype t, int64_t i)
{
    nsa__f4 r;
    int j;
    if (t == NSA_BF16) {
        nsa__h4 h;
        nsa__u4 u;
        memcpy(&h, (const uint16_t *)p + i, sizeof h);
        u = __builtin_convertvector(h, nsa__u4) << 16;
        memcpy(&r, &u, sizeof r);
    } else if (t == NSA_FP32) {
        memcpy(&r, (const float *)p + i, sizeof r);
    } else {
        for (j = 0; j < 4; ++j) r[j] = nsa_load(p, t, i + j);
    }
    return r;
}
/* The vector loop of nsa__dot4_32; shared = 1: the four a rows are one row
   (ia[r] all equal), shared = 2: likewise the b rows. Reading a shared row
   once changes no operation. */
NSA__INLINE void nsa__dot4_32v(const void *a, const int64_t *ia, const void *b,
                               const int64_t *ib, int n, nsa_dtype t, int shared,
                               float s[4][8], int *done)
{
    const int64_t a0 = ia[0], a1 = ia[1], a2 = ia[2], a3 = ia[3];
    const int64_t b0 = ib[0], b1 = ib[1], b2 = ib[2], b3 = ib[3];
    const nsa__f4 z = {0, 0, 0, 0};
    nsa__f4 l0 = z, l1 = z, l2 = z, l3 = z, h0 = z, h1 = z, h2 = z, h3 = z;
    int i;
    for (i = 0; i + 8 <= n; i += 8) {
        if (shared == 1) {
            const nsa__f4 xl = nsa__load4(a, t, a0 + i), xh = nsa__load4(a, t, a0 + i + 4);
            l0 += xl * nsa__load4(b, t, b0 + i); h0 += xh * nsa__load4(b, t, b0 + i + 4);
            l1 += xl * nsa__load4(b, t, b1 + i); h1 += xh * nsa__load4(b, t, b1 + i + 4);
            l2 += xl * nsa__load4(b, t, b2 + i); h2 += xh * nsa__load4(b, t, b2 + i + 4);
            l3 += xl * nsa__load4(b, t, b3 + i); h3 += xh * nsa__load4(b, t, b3 + i + 4);
        } else if (shared == 2) {
            const nsa__f4 yl = nsa__load4(b, t, b0 + i), yh = nsa__load4(b, t, b0 + i + 4);
            l0 += nsa__load4(a, t, a0 + i) * yl; h0 += nsa__load4(a, t, a0 + i + 4) * yh;
            l1 += nsa__load4(a, t, a1 + i) * yl; h1 += nsa__load4(a, t, a1 + i + 4) * yh;
            l2 += nsa__load4(a, t, a2 + i) * yl; h2 += nsa__load4(a, t, a2 + i + 4) * yh;
            l3 += nsa__load4(a, t, a3 + i) * yl; h3 += nsa__load4(a, t, a3 + i + 4) * yh;
        } else {
            l0 += nsa__load4(a, t, a0 + i) * nsa__load4(b, t, b0 + i);
            h0 += nsa__load4(a, t, a0 + i + 4) * nsa__load4(b, t, b0 + i + 4);
            l1 += nsa__load4(a, t, a1 + i) * nsa__load4(b, t, b1 + i);
            h1 += nsa__load4(a, t, a1 + i + 4) * nsa__load4(b, t, b1 + i + 4);
            l2 += nsa__load4(a, t, a2 + i) * nsa__load4(b, t, b2 + i);
            h2 += nsa__load4(a, t, a2 + i + 4) * nsa__load4(b, t, b2 + i + 4);
            l3 += nsa__load4(a, t, a3 + i) * nsa__load4(b, t, b3 + i);
            h3 += nsa__load4(a, t, a3 + i + 4) * nsa__load4(b, t, b3 + i + 4);
        }
    }
    memcpy(s[0], &l0, sizeof l0); memcpy(s[0] + 4, &h0, sizeof h0);
    memcpy(s[1], &l1, sizeof l1); memcpy(s[1] + 4, &h1, sizeof h1);
    memcpy(s[2], &l2, sizeof l2); memcpy(s[2] + 4, &h2, sizeof h2);
    memcpy(s[3], &l3, sizeof l3); memcpy(s[3] + 4, &h3, sizeof h3);
    *done = i;
}
#if defined(__x86_64__) || defined(__i386__)
/* x86 with AVX2 (checked at run time): the same lanes in one 8-lane
   register, and the same per-element operations as everywhere else (the
   target adds no fused multiply-add: builds use -ffp-contract=off). */
#define NSA__HAVE_AVX2 1
#define NSA__AVX2 __attribute__((target("avx2")))
typedef float nsa__f8 __attribute__((vector_size(32)));
typedef uint32_t nsa__u8 __attribute__((vector_size(32)));
typedef uint16_t nsa__h8 __attribute__((vector_size(16)));
NSA__INLINE void nsa__load8(nsa__f8 *r, const void *p, nsa_dtype t, int64_t i)
{
    int j;
    if (t == NSA_BF16) {
        nsa__h8 h;
        nsa__u8 u;
        memcpy(&h, (const uint16_t *)p + i, sizeof h);
        u = __builtin_convertvector(h, nsa__u8) << 16;
        memcpy(r, &u, sizeof *r);
    } else if (t == NSA_FP32) {
        memcpy(r, (const float *)p + i, sizeof *r);
    } else { /* fp16: through an array, so no lane of *r is read unset */
        float f[8];
        for (j = 0; j < 8; ++j) f[j] = nsa_load(p, t, i + j);
        memcpy(r, f, sizeof *r);
    }
}
NSA__INLINE void nsa__dot4_32w(const void *a, const int64_t *ia, const void *b,
                               const int64_t *ib, int n, nsa_dtype t, int shared,
                               float s[4][8], int *done)
{
    const int64_t a0 = ia[0], a1 = ia[1], a2 = ia[2], a3 = ia[3];
    const int64_t b0 = ib[0], b1 = ib[1], b2 = ib[2], b3 = ib[3];
    nsa__f8 v0 = {0, 0, 0, 0, 0, 0, 0, 0}, v1 = v0, v2 = v0, v3 = v0, x, y;
    int i;
    for (i = 0; i + 8 <= n; i += 8) {
        if (shared == 1) {
            nsa__load8(&x, a, t, a0 + i);
            nsa__load8(&y, b, t, b0 + i); v0 += x * y;
            nsa__load8(&y, b, t, b1 + i); v1 += x * y;
            nsa__load8(&y, b, t, b2 + i); v2 += x * y;
            nsa__load8(&y, b, t, b3 + i); v3 += x * y;
        } else if (shared == 2) {
            nsa__load8(&y, b, t, b0 + i);
            nsa__load8(&x, a, t, a0 + i); v0 += x * y;
            nsa__load8(&x, a, t, a1 + i); v1 += x * y;
            nsa__load8(&x, a, t, a2 + i); v2 += x * y;
            nsa__load8(&x, a, t, a3 + i); v3 += x * y;
        } else {
            nsa__load8(&x, a, t, a0 + i); nsa__load8(&y, b, t, b0 + i); v0 += x * y;
            nsa__load8(&x, a, t, a1 + i); nsa__load8(&y, b, t, b1 + i); v1 += x * y;
            nsa__load8(&x, a, t, a2 + i); nsa__load8(&y, b, t, b2 + i); v2 += x * y;
            nsa__load8(&x, a, t, a3 + i); nsa__load8(&y, b, t, b3 + i); v3 += x * y;
        }
    }
    memcpy(s[0], &v0, sizeof v0);
    memcpy(s[1], &v1, sizeof v1);
    memcpy(s[2], &v2, sizeof v2);
    memcpy(s[3], &v3, sizeof v3);
    *done = i;
}
#define NSA__DOT_SHARED(T)                                                    \
    (shared == 1 ? nsa__dot4_32w(a, ia, b, ib, n, T, 1, s, done)             \
     : shared == 2 ? nsa__dot4_32w(a, ia, b, ib, n, T, 2, s, done)           \
     : nsa__dot4_32w(a, ia, b, ib, n, T, 0, s, done))
NSA__AVX2 static void nsa__dot4_32_avx2(const void *a, const int64_t *ia,
                                        const void *b, const int64_t *ib, int n,
                                        nsa_dtype t, int shared, float s[4][8],
                                        int *done)
{
    switch (t) {
    case NSA_BF16: NSA__DOT_SHARED(NSA_BF16); break;
    case NSA_FP16: NSA__DOT_SHARED(NSA_FP16); break;
    default: NSA__DOT_SHARED(NSA_FP32); break;
    }
}
#undef NSA__DOT_SHARED
/* nsa__axpyn32's loop, 8 elements a step. */
NSA__INLINE void nsa__axpyn32w(float *acc, const float *p, const void *x,
                               const int64_t *ix, int m, int n, nsa_dtype t)
{
    nsa__f8 a, y;
    int j = 0, u;
    for (; j + 8 <= n; j += 8) {
        memcpy(&a, acc + j, sizeof a);
        for (u = 0; u < m; ++u) {
            const nsa__f8 pu = {p[u], p[u], p[u], p[u], p[u], p[u], p[u], p[u]};
            nsa__load8(&y, x, t, ix[u] + j);
            a += pu * y;
        }
        memcpy(acc + j, &a, sizeof a);
    }
    for (; j < n; ++j)
        for (u = 0; u < m; ++u) acc[j] += p[u] * nsa_load(x, t, ix[u] + j);
}
NSA__AVX2 static void nsa__axpyn32_avx2(float *acc, const float *p, const void *x,
                                        const int64_t *ix, int m, int n, nsa_dtype t)
{
    switch (t) {
    case NSA_BF16:
        if (m == 4) nsa__axpyn32w(acc, p, x, ix, 4, n, NSA_BF16);
        else nsa__axpyn32w(acc, p, x, ix, m, n, NSA_BF16);
        break;
    case NSA_FP16: nsa__axpyn32w(acc, p, x, ix, m, n, NSA_FP16); break;
    default:
        if (m == 4) nsa__axpyn32w(acc, p, x, ix, 4, n, NSA_FP32);
        else nsa__axpyn32w(acc, p, x, ix, m, n, NSA_FP32);
        break;
    }
}
static int nsa__cpu_avx2(void)
{
    return __builtin_cpu_supports("avx2") ? 1 : 0;
}
#endif
static inline void nsa__dot4_32(const void *a, const int64_t *ia, const void *b,
                                const int64_t *ib, int n, nsa_dtype t, int simd,
                                double *out)
{
    const int64_t a0 = ia[0], a1 = ia[1], a2 = ia[2], a3 = ia[3];
    const int64_t b0 = ib[0], b1 = ib[1], b2 = ib[2], b3 = ib[3];
    const int shared = (a1 == a0 && a2 == a0 && a3 == a0) ? 1
                       : (b1 == b0 && b2 == b0 && b3 == b0) ? 2 : 0;
    float s[4][8];
    float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
    int i;
#ifdef NSA__HAVE_AVX2
    if (simd)
        nsa__dot4_32_avx2(a, ia, b, ib, n, t, shared, s, &i);
    else
#endif
    if (shared == 1)
        nsa__dot4_32v(a, ia, b, ib, n, t, 1, s, &i);
    else if (shared == 2)
        nsa__dot4_32v(a, ia, b, ib, n, t, 2, s, &i);
    else
        nsa__dot4_32v(a, ia, b, ib, n, t, 0, s, &i);
#else
static inline void nsa__dot4_32(const void *a, const int64_t *ia, const void *b,
                                const int64_t *ib, int n, nsa_dtype t, int simd,
                                double *out)
{
    const int64_t a0 = ia[0], a1 = ia[1], a2 = ia[2], a3 = ia[3];
    const int64_t b0 = ib[0], b1 = ib[1], b2 = ib[2], b3 = ib[3];
    float s0[8], s1[8], s2[8], s3[8];
    int i, j;
    (void)simd;
    for (j = 0; j < 8; ++j) s0[j] = s1[j] = s2[j] = s3[j] = 0.0f;
    for (i = 0; i + 8 <= n; i += 8)
        for (j = 0; j < 8; ++j) {
            s0[j] += nsa_load(a, t, a0 + i + j) * nsa_load(b, t, b0 + i + j);
            s1[j] += nsa_load(a, t, a1 + i + j) * nsa_load(b, t, b1 + i + j);
            s2[j] += nsa_load(a, t, a2 + i + j) * nsa_load(b, t, b2 + i + j);
            s3[j] += nsa_load(a, t, a3 + i + j) * nsa_load(b, t, b3 + i + j);
        }
#endif
    for (; i < n; ++i) {
        s0[i & 7] += nsa_load(a, t, a0 + i) * nsa_load(b, t, b0 + i);
        s1[i & 7] += nsa_load(a, t, a1 + i) * nsa_load(b, t, b1 + i);
        s2[i & 7] += nsa_load(a, t, a2 + i) * nsa_load(b, t, b2 + i);
        s3[i & 7] += nsa_load(a, t, a3 + i) * nsa_load(b, t, b3 + i);
    }
    out[0] = nsa__tree8f(s0);
    out[1] = nsa__tree8f(s1);
    out[2] = nsa__tree8f(s2);
    out[3] = nsa__tree8f(s3);
}
static inline void nsa__dot4_64(const void *a, const int64_t *ia, const void *b,
                                const int64_t *ib, int n, nsa_dtype t, double *out)
{
    const int64_t a0 = ia[0], a1 = ia[1], a2 = ia[2], a3 = ia[3];
    const int64_t b0 = ib[0], b1 = ib[1], b2 = ib[2], b3 = ib[3];
    double s0[8], s1[8], s2[8], s3[8];
    int i, j;
    for (j = 0; j < 8; ++j) s0[j] = s1[j] = s2[j] = s3[j] = 0.0;
    for (i = 0; i < n; ++i) {
        j = i & 7;
        s0[j] += (double)nsa_load(a, t, a0 + i) * (double)nsa_load(b, t, b0 + i);
        s1[j] += (double)nsa_load(a, t, a1 + i) * (double)nsa_load(b, t, b1 + i);
        s2[j] += (double)nsa_load(a, t, a2 + i) * (double)nsa_load(b, t, b2 + i);
        s3[j] += (double)nsa_load(a, t, a3 + i) * (double)nsa_load(b, t, b3 + i);
    }
    out[0] = nsa__tree8(s0);
    out[1] = nsa__tree8(s1);
    out[2] = nsa__tree8(s2);
    out[3] = nsa__tree8(s3);
}
/* The first m <= 4 pairs (unused places repeat pair 0). */
static void nsa__dot4(const nsa__ctx *c, const void *a, const int64_t *ia,
                      const void *b, const int64_t *ib, int m, int n, double *out)
{
    int64_t ja[4], jb[4];
    double o[4];
    int r;
    for (r = 0; r < 4; ++r) {
        ja[r] = ia[r < m ? r : 0];
        jb[r] = ib[r < m ? r : 0];
    }
    if (c->f64) {
        switch (c->dt) {
        case NSA_BF16: nsa__dot4_64(a, ja, b, jb, n, NSA_BF16, o); break;
        case NSA_FP16: nsa__dot4_64(a, ja, b, jb, n, NSA_FP16, o); break;
        default: nsa__dot4_64(a, ja, b, jb, n, NSA_FP32, o); break;
        }
    } else {
        switch (c->dt) {
        case NSA_BF16: nsa__dot4_32(a, ja, b, jb, n, NSA_BF16, c->simd, o); break;
        case NSA_FP16: nsa__dot4_32(a, ja, b, jb, n, NSA_FP16, c->simd, o); break;
        default: nsa__dot4_32(a, ja, b, jb, n, NSA_FP32, c->simd, o); break;
        }
    }
    for (r = 0; r < m; ++r) out[r] = o[r];
}
/* acc[j] += p * x[j], x read from storage. Every element is its own
   multiply and add, so doing 8 (or 4) of them in one vector register gives
   the same bits as the scalar loop. */
static inline void nsa__axpy32(float *acc, float p, const void *x, int64_t ix,
                               int n, nsa_dtype t)
{
    int j = 0;
#if NSA__VEC
    const nsa__f4 pv = {p, p, p, p};
    for (; j + 4 <= n; j += 4) {
        nsa__f4 a;
        memcpy(&a, acc + j, sizeof a);
        a += pv * nsa__load4(x, t, ix + j);
        memcpy(acc + j, &a, sizeof a);
    }
#endif
    for (; j < n; ++j) acc[j] += p * nsa_load(x, t, ix + j);
}
static inline void nsa__axpy64(double *acc, double p, const void *x, int64_t ix,
                               int n, nsa_dtype t)
{
    int j = 0;
#if NSA__VEC
    typedef double nsa__d2 __attribute__((vector_size(16)));
    const nsa__d2 pv = {p, p};
    for (; j + 4 <= n; j += 4) {
        const nsa__f4 y = nsa__load4(x, t, ix + j);
        nsa__d2 a0, a1, y0 = {y[0], y[1]}, y1 = {y[2], y[3]};
        memcpy(&a0, acc + j, sizeof a0);
        memcpy(&a1, acc + j + 2, sizeof a1);
        a0 += pv * y0;
        a1 += pv * y1;
        memcpy(acc + j, &a0, sizeof a0);
        memcpy(acc + j + 2, &a1, sizeof a1);
    }
#endif
    for (; j < n; ++j) acc[j] += p * (double)nsa_load(x, t, ix + j);
}
static void nsa__axpy(const nsa__ctx *c, nsa__row acc, double p, const void *x,
                      int64_t ix, int n)
{
    if (acc.d) {
        switch (c->dt) {
        case NSA_BF16: nsa__axpy64(acc.d, p, x, ix, n, NSA_BF16); break;
        case NSA_FP16: nsa__axpy64(acc.d, p, x, ix, n, NSA_FP16); break;
        default: nsa__axpy64(acc.d, p, x, ix, n, NSA_FP32); break;
        }
        return;
    }
    switch (c->dt) {
    case NSA_BF16: nsa__axpy32(acc.f, (float)p, x, ix, n, NSA_BF16); break;
    case NSA_FP16: nsa__axpy32(acc.f, (float)p, x, ix, n, NSA_FP16); break;
    default: nsa__axpy32(acc.f, (float)p, x, ix, n, NSA_FP32); break;
    }
}

/* acc[j] += p[0] * x[ix[0] + j], then += p[1] * x[ix[1] + j], ... for
   u < m <= NSA__GROUP: the same operations, in the same order per element, as m
   calls of nsa__axpy; only the accumulator row is read and written once. */
static inline void nsa__axpyn32(float *acc, const float *p, const void *x,
                                const int64_t *ix, int m, int n, nsa_dtype t)
{
    int j = 0, u;
#if NSA__VEC
    for (; j + 4 <= n; j += 4) {
        nsa__f4 a;
        memcpy(&a, acc + j, sizeof a);
        for (u = 0; u < m; ++u) {
            const nsa__f4 pu = {p[u], p[u], p[u], p[u]};
            a += pu * nsa__load4(x, t, ix[u] + j);
        }
        memcpy(acc + j, &a, sizeof a);
    }
#endif
    for (; j < n; ++j)
        for (u = 0; u < m; ++u) acc[j] += p[u] * nsa_load(x, t, ix[u] + j);
}
static void nsa__axpyn(const nsa__ctx *c, nsa__row acc, const double *p,
                       const void *x, const int64_t *ix, int m, int n)
{
    float pf[NSA__GROUP];
    int u;
    if (m <= 0) return;
    if (acc.d) {
        for (u = 0; u < m; ++u) nsa__axpy(c, acc, p[u], x, ix[u], n);
        return;
    }
    for (u = 0; u < m; ++u) pf[u] = (float)p[u];
#ifdef NSA__HAVE_AVX2
    if (c->simd) {
        nsa__axpyn32_avx2(acc.f, pf, x, ix, m, n, c->dt);
        return;
    }
#endif
    switch (c->dt) {
    case NSA_BF16: nsa__axpyn32(acc.f, pf, x, ix, m, n, NSA_BF16); break;
    case NSA_FP16: nsa__axpyn32(acc.f, pf, x, ix, m, n, NSA_FP16); break;
    default: nsa__axpyn32(acc.f, pf, x, ix, m, n, NSA_FP32); break;
    }
}

/* acc[j] *= a. */
static void nsa__scal(nsa__row acc, double a, int n)
{
    int j;
    if (acc.d) for (j = 0; j < n; ++j) acc.d[j] *= a;
    else for (j = 0; j < n; ++j) acc.f[j] *= (float)a;
}


/* ---- setup, validation, workspace ------------------------------------------ */

/* Workspace layout for a config and batch (byte offsets from the 64-byte
   aligned start). */
typedef struct nsa__layout {
    size_t delta, lse_acc, dkc, dvc, toff, tlist, fixed, slot;
    int64_t nk_max, nc_max, nb_max, jtot, keys_max;
    int ok;
} nsa__layout;

static size_t nsa__round_up(size_t a)
{
    return (a + NSA__ALIGN - 1) / NSA__ALIGN * NSA__ALIGN;
}
/* a * b bytes, aligned; sets *ok = 0 when it would pass 2^62. */
static size_t nsa__bytes(int64_t a, int64_t b, int *ok)
{
    const int64_t lim = (int64_t)1 << 62;
    if (a < 0 || b < 0 || (a != 0 && b > lim / a)) { *ok = 0; return 0; }
    if ((uint64_t)(a * b) > (uint64_t)SIZE_MAX / 2) { *ok = 0; return 0; }
    return nsa__round_up((size_t)(a * b));
}

static void nsa__make_layout(const nsa__ctx *c, nsa__layout *L)
{
    const nsa_config *cfg = c->cfg;
    const int slc = nsa__on(c, NSA__SLC), win = nsa__on(c, NSA__WIN);
    const int64_t chunk = slc ? cfg->lp : 64;
    int64_t keys = 0, sel, a, b1, b2;
    nsa__seq s;
    int b;
    memset(L, 0, sizeof *L);
    L->ok = 1;
    if (c->x->B > 0) {
        nsa__seq_begin(c, &s);
        for (b = 0; b < c->x->B; ++b) {
            if (b) nsa__seq_step(c, b, &s);
            if (s.nk > L->nk_max) L->nk_max = s.nk;
            if (s.nc > L->nc_max) L->nc_max = s.nc;
            if (s.nb > L->nb_max) L->nb_max = s.nb;
            L->jtot += s.nb;
        }
    }
    /* per-thread rows (in doubles) of every pass; the slot holds the largest */
    keys = L->nc_max;
    if (slc && (int64_t)cfg->n * cfg->lp > keys) keys = (int64_t)cfg->n * cfg->lp;
    if (win && (cfg->w < L->nk_max ? cfg->w : L->nk_max) > keys)
        keys = cfg->w < L->nk_max ? cfg->w : L->nk_max;
    sel = L->nc_max + 5 * L->nb_max;
    a = (int64_t)c->Dk + 2 * keys + c->Dv;
    L->keys_max = keys;
    b1 = (int64_t)c->Dk + c->Dv;
    b2 = chunk * ((int64_t)c->Dk + c->Dv);
    if (a > sel) sel = a;
    if (b1 > sel) sel = b1;
    if (b2 > sel) sel = b2;
    L->slot = nsa__bytes(sel + 1, 8, &L->ok);
    L->delta = 0;
    L->lse_acc = L->delta + nsa__bytes(c->sz.lse, 3 * 8, &L->ok);
    L->dkc = L->lse_acc + nsa__bytes(c->sz.lse, 3 * 8, &L->ok);
    L->dvc = L->dkc;
    L->toff = L->dvc;
    if (nsa__on(c, NSA__CMP) && !cfg->caller_compressed) {
        L->dvc = L->dkc + nsa__bytes(c->sz.k_cmp, 8, &L->ok);
        L->toff = L->dvc + nsa__bytes(c->sz.v_cmp, 8, &L->ok);
    }
    L->tlist = L->toff;
    L->fixed = L->toff;
    if (slc) {
        L->tlist = L->toff + nsa__bytes(L->jtot * c->Hkv + 1, 8, &L->ok);
        L->fixed = L->tlist + nsa__bytes(c->sz.sel_idx, 4, &L->ok);
    }
}

/* Validates cfg and batch, fills c. */
static nsa_status nsa__setup(nsa__ctx *c, const nsa_config *cfg,
                             const nsa_batch *x)
{
    nsa_status st;
    memset(c, 0, sizeof *c);
    nsa__clear_error();
    if ((st = nsa__validate(cfg, x, &c->sz)) != NSA_OK) return st;
    c->cfg = cfg;
    c->x = x;
    c->dt = x->dtype;
    c->f64 = cfg->accum == NSA_ACCUM_FP64;
    c->H = x->H; c->Hkv = x->Hkv; c->G = x->H / x->Hkv;
    c->Dk = x->Dk; c->Dv = x->Dv;
    /* scale and strides as the validator resolved them (nsa.h rules) */
    c->sc = nsa__r(c, c->sz.scale);
    c->qsh = c->sz.q_stride_head;
    c->qst = c->sz.q_stride_token;
    c->ksh = c->sz.k_stride_head;
    c->kst = c->sz.k_stride_token;
    c->vsh = c->sz.v_stride_head;
    c->vst = c->sz.v_stride_token;
    c->cuk = x->cu_seqlens;
    c->cuq = x->cu_seqlens_q ? x->cu_seqlens_q : x->cu_seqlens;
    c->nbranch = c->sz.nbranch;
    c->nthreads = NSA__MAX_THREADS();
#ifdef NSA__HAVE_AVX2
    c->simd = nsa__cpu_avx2();
#endif
    c->kc = x->k_cmp;
    c->vc = x->v_cmp;
    return NSA_OK;
}

/* Checks the workspace (at least what nsa_ref_workspace_size returns for
   the current thread count) and points c at its parts. */
static nsa_status nsa__use_workspace(nsa__ctx *c, void *ws, size_t bytes)
{
    nsa__layout L;
    unsigned char *base;
    size_t pad, slots, need;
    nsa__make_layout(c, &L);
    if (!L.ok || L.slot > ((size_t)SIZE_MAX / 4 - L.fixed) / (size_t)c->nthreads)
        return nsa__fail(NSA_ERR_OVERFLOW, "workspace: its size overflows");
    if (!ws)
        return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    need = NSA__ALIGN + L.fixed + (size_t)c->nthreads * L.slot;
    pad = (size_t)((NSA__ALIGN - (uintptr_t)ws % NSA__ALIGN) % NSA__ALIGN);
    if (bytes < need)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller "
                         "than the %zu that nsa_ref_workspace_size gives for "
                         "%d threads", bytes, need, c->nthreads);
    base = (unsigned char *)ws + pad;
    slots = (bytes - pad - L.fixed) / L.slot;
    if ((size_t)c->nthreads > slots) c->nthreads = (int)slots;
    c->delta = (double *)(base + L.delta);
    c->lse_acc = (double *)(base + L.lse_acc);
    c->dkc = (double *)(base + L.dkc);
    c->dvc = (double *)(base + L.dvc);
    c->toff = (int64_t *)(base + L.toff);
    c->tlist = (int32_t *)(base + L.tlist);
    c->slots = base + L.fixed;
    c->slot_bytes = L.slot;
    c->nk_max = L.nk_max; c->nc_max = L.nc_max; c->nb_max = L.nb_max;
    c->jtot = L.jtot;
    c->keys_max = L.keys_max;
    return NSA_OK;
}

#define NSA__NEED(ptr, cond, what)                                            \
    do {                                                                      \
        if ((cond) && !(ptr))                                                 \
            return nsa__fail(NSA_ERR_NULL_POINTER, "%s: is NULL", what);     \
    } while (0)

static const char *const nsa__branch_name[3] = {"compressed", "selected", "window"};

static nsa_status nsa__need_branch(const nsa__ctx *c, int br, const char *fn)
{
    if (!nsa__on(c, br))
        return nsa__fail(NSA_ERR_INVALID_CONFIG, "cfg.branches: %s computes the "
                         "%s branch, which is off", fn, nsa__branch_name[br]);
    return NSA_OK;
}

/* ---- public entry points ------------------------------------------------------ */

NSADEF nsa_status nsa_ref_workspace_size(const nsa_config *cfg,
                                         const nsa_batch *batch, size_t *bytes)
{
    nsa__ctx c;
    nsa__layout L;
    nsa_status st = nsa__setup(&c, cfg, batch);
    size_t n;
    if (st) return st;
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    nsa__make_layout(&c, &L);
    n = (size_t)NSA__MAX_THREADS();
    if (!L.ok || L.slot > ((size_t)SIZE_MAX / 4 - L.fixed) / n)
        return nsa__fail(NSA_ERR_OVERFLOW, "workspace: its size overflows");
    *bytes = NSA__ALIGN + L.fixed + n * L.slot;
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_forward(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, void *o, nsa_saved *saved,
                                  void *workspace, size_t workspace_bytes)
{
    nsa__ctx c;
    nsa__fwd F;
    nsa_status st = nsa__setup(&c, cfg, batch);
    int br, mean;
    if (st) return st;
    mean = !cfg->caller_compressed &&
           (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) != 0;
    NSA__NEED(o, c.sz.o > 0, "o");
    if ((st = nsa__check_saved(cfg, &c.sz, saved, 0))) return st;
    if ((st = nsa__use_workspace(&c, workspace, workspace_bytes))) return st;

    if (mean) { /* branch 1: K_cmp, V_cmp, read back rounded */
        nsa__compress_all(&c, NULL, saved->k_cmp, saved->v_cmp);
        c.kc = saved->k_cmp;
        c.vc = saved->v_cmp;
    }
    if (nsa__on(&c, NSA__SLC)) {
        if (batch->sel_idx) nsa__copy_selection(&c, saved->sel_idx, saved->sel_count);
        else nsa__select_all(&c, NULL, saved->sel_idx, saved->sel_count);
    }
    memset(&F, 0, sizeof F);
    F.sel_idx = saved->sel_idx;
    F.sel_count = saved->sel_count;
    F.gates = gates;
    F.o = o;
    F.lse_br[0] = saved->lse_cmp;
    F.lse_br[1] = saved->lse_slc;
    F.lse_br[2] = saved->lse_win;
    for (br = 0; br < 3; ++br) {
        F.want[br] = nsa__on(&c, br);
        /* the branches' o_c as the combine reads them (fp32) */
        if (F.want[br] && saved->o_branch) F.o_br[br] = saved->o_branch + br * c.sz.o;
    }
    nsa__forward_all(&c, &F);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_backward(const nsa_config *cfg, const nsa_batch *batch,
                                   const void *gates, const void *d_o,
                                   const nsa_saved *saved, nsa_grads *grads,
                                   void *workspace, size_t workspace_bytes)
{
    nsa__ctx c;
    nsa__bwd B;
    nsa_status st = nsa__setup(&c, cfg, batch);
    if (st) return st;
    NSA__NEED(d_o, c.sz.o > 0, "d_o");
    if ((st = nsa__check_saved(cfg, &c.sz, saved, 1))) return st;
    if ((st = nsa__check_grads(cfg, &c.sz, gates, grads))) return st;
    if ((st = nsa__use_workspace(&c, workspace, workspace_bytes))) return st;

    if (!cfg->caller_compressed) {
        c.kc = saved->k_cmp;
        c.vc = saved->v_cmp;
    }
    memset(&B, 0, sizeof B);
    B.gates = gates;
    B.d_o = d_o;
    B.sv = saved;
    B.gr = grads;
    B.lse[0] = saved->lse_cmp;
    B.lse[1] = saved->lse_slc;
    B.lse[2] = saved->lse_win;
    /* The forward's o_c planes stand in for the recomputed o_c in fp32 mode
       only: fp64 mode's o_c and lse are doubles, which the fp32 planes and
       the fp32 saved lse would round, so it recomputes them. */
    if (saved->o_branch && !c.f64) {
        int br;
        for (br = 0; br < 3; ++br)
            if (nsa__on(&c, br)) B.o_br[br] = saved->o_branch + br * c.sz.o;
    }
    if (nsa__on(&c, NSA__SLC)) nsa__transpose_selection(&c, saved);
    nsa__backward_all(&c, &B);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_compress(const nsa_config *cfg, const nsa_batch *batch,
                                   void *k_cmp, void *v_cmp)
{
    nsa__ctx c;
    nsa_status st = nsa__setup(&c, cfg, batch);
    if (st) return st;
    NSA__NEED(k_cmp, c.sz.k_cmp > 0, "k_cmp");
    NSA__NEED(v_cmp, c.sz.v_cmp > 0, "v_cmp");
    nsa__compress_all(&c, NULL, k_cmp, v_cmp);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_compress_append(const nsa_config *cfg,
                                          const nsa_batch *batch,
                                          const int32_t *seqlens_old,
                                          void *k_cmp, void *v_cmp)
{
    nsa__ctx c;
    nsa_status st = nsa__setup(&c, cfg, batch);
    if (st) return st;
    if ((st = nsa__check_seqlens_old(batch, seqlens_old))) return st;
    NSA__NEED(k_cmp, c.sz.k_cmp > 0, "k_cmp");
    NSA__NEED(v_cmp, c.sz.v_cmp > 0, "v_cmp");
    nsa__compress_all(&c, seqlens_old, k_cmp, v_cmp);
    return NSA_OK;
}

static nsa_status nsa__selection_stage(const nsa_config *cfg,
                                       const nsa_batch *batch, const void *k_cmp,
                                       float *scores, int32_t *sel_idx,
                                       int32_t *sel_count, void *ws, size_t bytes,
                                       int want_scores, const char *fn)
{
    nsa__ctx c;
    nsa_status st = nsa__setup(&c, cfg, batch);
    if (st) return st;
    if ((st = nsa__need_branch(&c, NSA__SLC, fn))) return st;
    NSA__NEED(k_cmp, c.sz.k_cmp > 0, "k_cmp");
    if (want_scores) {
        NSA__NEED(scores, c.sz.block_mask > 0, "block_scores");
    } else {
        NSA__NEED(sel_idx, c.sz.sel_idx > 0, "sel_idx");
        NSA__NEED(sel_count, c.sz.sel_count > 0, "sel_count");
    }
    if ((st = nsa__use_workspace(&c, ws, bytes))) return st;
    c.kc = k_cmp;
    nsa__select_all(&c, scores, sel_idx, sel_count);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_block_scores(const nsa_config *cfg,
                                       const nsa_batch *batch,
                                       const void *k_cmp, float *block_scores,
                                       void *workspace, size_t workspace_bytes)
{
    return nsa__selection_stage(cfg, batch, k_cmp, block_scores, NULL, NULL,
                                workspace, workspace_bytes, 1, "nsa_ref_block_scores");
}

NSADEF nsa_status nsa_ref_select(const nsa_config *cfg, const nsa_batch *batch,
                                 const void *k_cmp, int32_t *sel_idx,
                                 int32_t *sel_count, void *workspace,
                                 size_t workspace_bytes)
{
    return nsa__selection_stage(cfg, batch, k_cmp, NULL, sel_idx, sel_count,
                                workspace, workspace_bytes, 0, "nsa_ref_select");
}

NSADEF nsa_status nsa_ref_block_mask(const nsa_config *cfg,
                                     const nsa_batch *batch,
                                     const int32_t *sel_idx,
                                     const int32_t *sel_count,
                                     uint8_t *block_mask)
{
    nsa__ctx c;
    nsa__seq s;
    nsa_status st = nsa__setup(&c, cfg, batch);
    int b;
    if (st) return st;
    if ((st = nsa__need_branch(&c, NSA__SLC, "nsa_ref_block_mask"))) return st;
    NSA__NEED(sel_idx, c.sz.sel_idx > 0, "sel_idx");
    NSA__NEED(sel_count, c.sz.sel_count > 0, "sel_count");
    NSA__NEED(block_mask, c.sz.block_mask > 0, "block_mask");
    if (c.sz.block_mask > 0) memset(block_mask, 0, (size_t)c.sz.block_mask);
    nsa__seq_begin(&c, &s);
    for (b = 0; b < batch->B; ++b) {
        int64_t r;
        if (b) nsa__seq_step(&c, b, &s);
        for (r = s.u0 * c.Hkv; r < (s.u0 + s.nu) * c.Hkv; ++r) {
            int e, cnt = nsa__sel_clamp(&c, sel_count[r]);
            for (e = 0; e < cnt; ++e) {
                int32_t j = sel_idx[r * cfg->n + e];
                if (nsa__sel_ok(&s, j)) block_mask[r * c.sz.max_slc_blocks + j] = 1;
            }
        }
    }
    return NSA_OK;
}

static nsa_status nsa__attend_stage(const nsa_config *cfg, const nsa_batch *batch,
                                    int br, const void *k_cmp, const void *v_cmp,
                                    const int32_t *sel_idx, const int32_t *sel_count,
                                    float *o_br, float *lse_br, const char *fn)
{
    nsa__ctx c;
    nsa__fwd F;
    nsa_status st = nsa__setup(&c, cfg, batch);
    if (st) return st;
    if ((st = nsa__need_branch(&c, br, fn))) return st;
    if (br == NSA__CMP) {
        NSA__NEED(k_cmp, c.sz.k_cmp > 0, "k_cmp");
        NSA__NEED(v_cmp, c.sz.v_cmp > 0, "v_cmp");
    }
    if (br == NSA__SLC) {
        NSA__NEED(sel_idx, c.sz.sel_idx > 0, "sel_idx");
        NSA__NEED(sel_count, c.sz.sel_count > 0, "sel_count");
    }
    NSA__NEED(o_br, c.sz.o > 0, br == 0 ? "o_cmp" : br == 1 ? "o_slc" : "o_win");
    NSA__NEED(lse_br, c.sz.lse > 0, br == 0 ? "lse_cmp" : br == 1 ? "lse_slc" : "lse_win");
    c.kc = k_cmp;
    c.vc = v_cmp;
    memset(&F, 0, sizeof F);
    F.sel_idx = sel_idx;
    F.sel_count = sel_count;
    F.o_br[br] = o_br;
    F.lse_br[br] = lse_br;
    F.want[br] = 1;
    nsa__forward_all(&c, &F);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_attend_cmp(const nsa_config *cfg,
                                     const nsa_batch *batch, const void *k_cmp,
                                     const void *v_cmp, float *o_cmp,
                                     float *lse_cmp)
{
    return nsa__attend_stage(cfg, batch, NSA__CMP, k_cmp, v_cmp, NULL, NULL,
                             o_cmp, lse_cmp, "nsa_ref_attend_cmp");
}

NSADEF nsa_status nsa_ref_attend_slc(const nsa_config *cfg,
                                     const nsa_batch *batch,
                                     const int32_t *sel_idx,
                                     const int32_t *sel_count, float *o_slc,
                                     float *lse_slc)
{
    return nsa__attend_stage(cfg, batch, NSA__SLC, NULL, NULL, sel_idx, sel_count,
                             o_slc, lse_slc, "nsa_ref_attend_slc");
}

NSADEF nsa_status nsa_ref_attend_win(const nsa_config *cfg,
                                     const nsa_batch *batch, float *o_win,
                                     float *lse_win)
{
    return nsa__attend_stage(cfg, batch, NSA__WIN, NULL, NULL, NULL, NULL,
                             o_win, lse_win, "nsa_ref_attend_win");
}

NSADEF nsa_status nsa_ref_combine(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, const float *o_cmp,
                                  const float *o_slc, const float *o_win,
                                  void *o)
{
    nsa__ctx c;
    nsa_status st = nsa__setup(&c, cfg, batch);
    const float *ob[3];
    int64_t r;
    if (st) return st;
    ob[0] = o_cmp; ob[1] = o_slc; ob[2] = o_win;
    NSA__NEED(o_cmp, nsa__on(&c, NSA__CMP) && c.sz.o > 0, "o_cmp");
    NSA__NEED(o_slc, nsa__on(&c, NSA__SLC) && c.sz.o > 0, "o_slc");
    NSA__NEED(o_win, nsa__on(&c, NSA__WIN) && c.sz.o > 0, "o_win");
    NSA__NEED(o, c.sz.o > 0, "o");
    NSA__OMP(omp parallel for schedule(static) num_threads(c.nthreads))
    for (r = 0; r < c.sz.TQ * c.H; ++r) {
        double g[3];
        int br, j;
        for (br = 0; br < 3; ++br) g[br] = nsa__gate(&c, gates, r / c.H, (int)(r % c.H), br);
        for (j = 0; j < c.Dv; ++j) {
            float o3[3];
            for (br = 0; br < 3; ++br)
                o3[br] = nsa__on(&c, br) ? ob[br][r * c.Dv + j] : 0.0f;
            nsa__put(&c, o, r * c.Dv + j, nsa__combine_one(&c, g, o3));
        }
    }
    return NSA_OK;
}

/* ---- top-k per row ------------------------------------------------------------ */

/* The scratch of the per-row rankings (top-k, top-n blocks): one slot a
   thread of 16 bytes a candidate key, plus one, for the keys and
   nsa__largest's tmp. The size query's bytes for nkeys keys a row: */
static nsa_status nsa__key_slots_size(int64_t nkeys, size_t *bytes)
{
    int ok = 1;
    const size_t slot = nsa__bytes(nkeys + 1, 16, &ok);
    if (!ok || slot > ((size_t)SIZE_MAX / 4) / (size_t)NSA__MAX_THREADS())
        return nsa__fail(NSA_ERR_OVERFLOW, "workspace: its size overflows");
    *bytes = NSA__ALIGN + (size_t)NSA__MAX_THREADS() * slot;
    return NSA_OK;
}

/* The slots in the caller's workspace: a clear status if it is smaller than
   `query` (the size function's name) gives; *nthreads is lowered to the
   slots there are. */
static nsa_status nsa__key_slots(void *workspace, size_t workspace_bytes, int64_t nkeys,
                                 const char *query, unsigned char **base, size_t *slot,
                                 int *nthreads)
{
    int ok = 1;
    size_t pad, slots;
    *slot = nsa__bytes(nkeys + 1, 16, &ok);
    if (!ok) return nsa__fail(NSA_ERR_OVERFLOW, "workspace: its size overflows");
    if (!workspace)
        return nsa__fail(NSA_ERR_NULL_POINTER, "workspace: is NULL");
    pad = (size_t)((NSA__ALIGN - (uintptr_t)workspace % NSA__ALIGN) % NSA__ALIGN);
    if (*slot > ((size_t)SIZE_MAX / 4) / (size_t)*nthreads ||
        workspace_bytes < NSA__ALIGN + (size_t)*nthreads * *slot)
        return nsa__fail(NSA_ERR_WORKSPACE, "workspace: %zu bytes is smaller "
                         "than the %zu that %s gives for %d threads", workspace_bytes,
                         NSA__ALIGN + (size_t)*nthreads * *slot, query, *nthreads);
    *base = (unsigned char *)workspace + pad;
    slots = (workspace_bytes - pad) / *slot;
    if ((size_t)*nthreads > slots) *nthreads = (int)slots;
    return NSA_OK;
}

/* Rows of scores at row_stride: the stride and the last row's offset. */
static nsa_status nsa__score_rows(int64_t rows, int64_t cols, int64_t row_stride)
{
    if (rows > 1 && row_stride < cols)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "row_stride: %lld must be >= "
                         "cols %lld", (long long)row_stride, (long long)cols);
    if (rows > 0 && row_stride > 0 && rows - 1 > INT64_MAX / row_stride)
        return nsa__fail(NSA_ERR_OVERFLOW, "rows * row_stride: overflows 64 bits");
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_topk_workspace_size(int64_t rows, int64_t cols, int k,
                                              size_t *bytes)
{
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    if (rows < 0 || cols < 0 || cols > INT32_MAX || k < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rows, cols, k: must be >= 0 "
                         "and cols < 2^31 (got %lld, %lld, %d)", (long long)rows,
                         (long long)cols, k);
    return nsa__key_slots_size(cols, bytes);
}

NSADEF nsa_status nsa_ref_topk_rows(const float *scores, int64_t rows,
                                    int64_t cols, int64_t row_stride,
                                    const int32_t *row_start,
                                    const int32_t *row_end, int k,
                                    int32_t *out_idx, int32_t *out_count,
                                    void *workspace, size_t workspace_bytes)
{
    int ok = 1, nthreads = NSA__MAX_THREADS();
    size_t slot;
    unsigned char *base;
    int64_t r, outn;
    nsa_status st;
    nsa__clear_error();
    if (rows < 0 || cols < 0 || cols > INT32_MAX || k < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rows, cols, k: must be >= 0 "
                         "and cols < 2^31 (got %lld, %lld, %d)", (long long)rows,
                         (long long)cols, k);
    if ((st = nsa__score_rows(rows, cols, row_stride))) return st;
    nsa__bytes(rows, k, &ok);
    if (!ok) return nsa__fail(NSA_ERR_OVERFLOW, "rows * k: overflows");
    outn = rows * k;
    NSA__NEED(scores, rows > 0 && cols > 0, "scores");
    NSA__NEED(out_idx, outn > 0, "out_idx");
    if ((st = nsa__key_slots(workspace, workspace_bytes, cols, "nsa_ref_topk_workspace_size",
                             &base, &slot, &nthreads)))
        return st;
    NSA__OMP(omp parallel for schedule(dynamic, 1) num_threads(nthreads))
    for (r = 0; r < rows; ++r) {
        uint64_t *keys = (uint64_t *)(base + (size_t)NSA__TID() * slot);
        uint64_t *tmp = keys + cols;
        const float *row = scores + r * row_stride;
        int64_t a, e, m, kk, j;
        /* ranges are clamped, an empty one selects nothing (nsa_topk_range) */
        nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols,
                       cols, &a, &e);
        m = e - a;
        kk = k < m ? k : m;
        for (j = 0; j < m; ++j) keys[j] = nsa_rank_key(nsa_score_key(row[a + j]), j);
        nsa__largest(keys, m, kk, tmp);
        for (j = 0; j < k; ++j)
            out_idx[r * k + j] = j < kk ? (int32_t)nsa_rank_index(keys[j]) : -1;
        if (out_count) out_count[r] = (int32_t)kk;
    }
    return NSA_OK;
}

/* Shape checks of nsa_ref_topk_blocks and its size query; *nblocks gets
   ceil(cols / block). */
static nsa_status nsa__topk_blocks_shape(int64_t rows, int64_t cols, int64_t block, int n,
                                         int64_t *nblocks)
{
    if (rows < 0 || cols < 0 || cols > INT32_MAX || n < 0)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "rows, cols, n: must be >= 0 "
                         "and cols < 2^31 (got %lld, %lld, %d)", (long long)rows,
                         (long long)cols, n);
    if (block < 1)
        return nsa__fail(NSA_ERR_INVALID_BATCH, "block: must be >= 1 (got %lld)",
                         (long long)block);
    *nblocks = cols / block + (cols % block != 0);
    return NSA_OK;
}

NSADEF nsa_status nsa_ref_topk_blocks_workspace_size(int64_t rows, int64_t cols,
                                                     int64_t block, int n,
                                                     size_t *bytes)
{
    int64_t nb = 0;
    nsa_status st;
    nsa__clear_error();
    if (!bytes) return nsa__fail(NSA_ERR_NULL_POINTER, "bytes: is NULL");
    if ((st = nsa__topk_blocks_shape(rows, cols, block, n, &nb))) return st;
    return nsa__key_slots_size(nb, bytes);
}

NSADEF nsa_status nsa_ref_topk_blocks(const float *scores, int64_t rows,
                                      int64_t cols, int64_t row_stride,
                                      const int32_t *row_start,
                                      const int32_t *row_end, int64_t block,
                                      int n, uint8_t *mask, int32_t *out_count,
                                      void *workspace, size_t workspace_bytes)
{
    int ok = 1, nthreads = NSA__MAX_THREADS();
    size_t slot;
    unsigned char *base;
    int64_t r, nb = 0;
    nsa_status st;
    nsa__clear_error();
    if ((st = nsa__topk_blocks_shape(rows, cols, block, n, &nb))) return st;
    if ((st = nsa__score_rows(rows, cols, row_stride))) return st;
    nsa__bytes(rows, nb, &ok);
    if (!ok) return nsa__fail(NSA_ERR_OVERFLOW, "rows * blocks: overflows");
    NSA__NEED(scores, rows > 0 && cols > 0, "scores");
    NSA__NEED(mask, rows > 0 && nb > 0, "mask");
    if ((st = nsa__key_slots(workspace, workspace_bytes, nb,
                             "nsa_ref_topk_blocks_workspace_size", &base, &slot, &nthreads)))
        return st;
    NSA__OMP(omp parallel for schedule(dynamic, 1) num_threads(nthreads))
    for (r = 0; r < rows; ++r) {
        uint64_t *keys = (uint64_t *)(base + (size_t)NSA__TID() * slot);
        uint64_t *tmp = keys + nb;
        const float *row = scores + r * row_stride;
        uint8_t *out = mask + r * nb;
        int64_t a, e, j0, j1, j, m, kk;
        nsa_topk_range(row_start ? row_start[r] : 0, row_end ? row_end[r] : cols,
                       cols, &a, &e);
        /* eligible blocks: those with a column in [a, e) */
        j0 = a / block;
        j1 = e > a ? (e - 1) / block + 1 : j0;
        m = j1 - j0;
        for (j = j0; j < j1; ++j) {
            const int64_t c0 = j * block > a ? j * block : a;
            const int64_t c1 = (j + 1) * block < e ? (j + 1) * block : e;
            float s = 0.0f;
            int64_t c;
            for (c = c0; c < c1; ++c) s += row[c];
            keys[j - j0] = nsa_rank_key(nsa_score_key(s / (float)(c1 - c0)), j - j0);
        }
        kk = n < m ? n : m;
        nsa__largest(keys, m, kk, tmp);
        memset(out, 0, (size_t)nb);
        for (j = 0; j < kk; ++j) out[j0 + (int64_t)nsa_rank_index(keys[j])] = 1;
        if (out_count) out_count[r] = (int32_t)kk;
    }
    return NSA_OK;
}

#if defined(__clang__)
#pragma STDC FP_CONTRACT DEFAULT
#elif defined(__GNUC__) && !defined(__CUDACC__)
#pragma GCC pop_options
#endif
#endif /* NSA_REF_IMPLEMENTATION_DONE */
#endif /* NSA_REF_IMPLEMENTATION */
