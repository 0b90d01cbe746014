/* nsa_ref.h -- the exact CPU reference of Native Sparse Attention.

   Declarations always; definitions in the one file that defines
   NSA_REF_IMPLEMENTATION (and NSA_IMPLEMENTATION, for nsa.h's shared part)
   before including this header. C99; OpenMP is used when the file is built
   with -fopenmp and is not needed otherwise.

   Every function below computes one equation of the contract and says which.
   All pointers are host pointers. Stage outputs that feed a later stage are
   fp32 so that running the stages one after the other gives, bit for bit,
   what nsa_ref_forward gives.

   NUMERICS (docs/MATH.md, "Numerics of the reference")
     - Inputs are read from their storage type exactly; every sum is
       accumulated in fp32 (or fp64 with cfg.accum = NSA_ACCUM_FP64) in a fixed
       order that does not depend on the thread count; outputs are rounded once
       to the storage type, nearest-even.
     - Results are bitwise identical for any thread count and any run.
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
   dtype, or NULL for 1 / (number of enabled branches). Writes saved. */
NSADEF nsa_status nsa_ref_forward(const nsa_config *cfg, const nsa_batch *batch,
                                  const void *gates, void *o, nsa_saved *saved,
                                  void *workspace, size_t workspace_bytes);

/* Gradients of sum(o * d_o) with the selection held constant (contract
   "Backward"). d_o [TQ, H, Dv] storage dtype; saved as written by forward
   with the same cfg, batch and gates. */
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

/* block_mask [units, Hkv, max_slc_blocks]: 1 where the block is selected. */
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
   cols; outside is ignored). Exact: larger scores first, ties to the lower
   index, -0 equals +0, NaN below everything (-inf included). Writes exactly
   min(k, end_r - start_r) indices relative to start_r, best first, then -1
   up to k; out_count (may be NULL) gets that number. */
NSADEF nsa_status nsa_ref_topk_workspace_size(int64_t rows, int64_t cols, int k,
                                              size_t *bytes);
NSADEF nsa_status nsa_ref_topk_rows(const float *scores, int64_t rows,
                                    int64_t cols, int64_t row_stride,
                                    const int32_t *row_start,
                                    const int32_t *row_end, int k,
                                    int32_t *out_idx, int32_t *out_count,
                                    void *workspace, size_t workspace_bytes);

#endif /* NSA_REF_H */

#ifdef NSA_REF_IMPLEMENTATION
#ifndef NSA_REF_IMPLEMENTATION_DONE
#define NSA_REF_IMPLEMENTATION_DONE
/* Definitions: see below. */
#endif
#endif
