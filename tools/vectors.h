/* vectors.h -- check the CPU reference against golden test vectors.

   A vector folder is either
     (a) a folder with cases.json: a JSON array of cases, each naming a
         subfolder ("name") that holds that case's .npy files; an entry
         carries the parameters itself (cu, H, Hkv, Dk, Dv, cfg, branches,
         gates), or its subfolder has a case.json that does (the layout that
         `nsa_vectors gen` writes);
     (b) a folder of subfolders, each with a case.json (no cases.json); or
     (c) one case folder with a case.json.
   A folder may also hold nested folders of cases (a subfolder with its own
   cases.json that is not one of the listed cases); they are read after the
   folder's own cases.
   Suffix queries (contract: queries are the last positions of their
   sequences): "cu_q" in the parameters and cu_seqlens_q.npy; q, gates, do
   and every query-side result (o, lse_*, dq, dgates) have TQ = cu_q[B]
   rows, k, v, dk, dv have T = cu[B].
   Inputs (q, k, v, gates, do, cu_seqlens) may be stored as float32 or
   float64; expected outputs are float64 files o, lse_cmp, lse_slc, lse_win,
   dq, dk, dv, dgates and int32 sel_idx [units, Hkv, n]. A case written by
   `nsa_vectors gen` also has k_cmp, v_cmp, sel_count, which are checked too.

   For each case the reference (nsa_ref_forward, then nsa_ref_backward on
   the case's dO) runs twice: in fp32 storage and in bf16 storage (and also
   in fp16 storage when the case's own storage type is fp16), always with
   fp32 accumulation, the contract's numerics. The inputs must be exactly
   representable in the storage type (the vectors are built that way), so
   every run reads the same numbers. Each array of each run is one check.

   TOLERANCES. Float arrays: max |got - expected| <= rtol * scale, with
   scale = max |expected| over the array (finite entries; at least
   FLT_MIN). Infinite expected entries (lse = -inf of an empty branch) must
   match exactly; a non-finite result where a finite one is expected fails.
     fp32 storage: rtol = 2e-5 + 4 * 2^-24 * L (nsa_vectors_rtol_for), L =
       the case's largest finite |lse|. fp32 has a 24-bit significand (unit
       2^-24 = 6e-8); sums of up to a few thousand terms in a fixed order
       carry a relative error of a few 1e-7 of the summands' magnitude, and
       the backward sums (dk, dv: over every query and head of the group)
       are the longest. Measured on the independent fp64 vectors with
       logits of order 1 (T up to 2400, G up to 16): o, lse, dq, dgates
       within 4e-7 of scale, dk and dv within 6e-6; 2e-5 keeps a margin of
       3x and still flags a single misplaced key of a window of a few
       hundred (which moves outputs by ~1e-3 of their scale). The logits
       themselves are fp32 sums with an error relative to their size, so a
       probability exp(s - lse) carries ~2^-24 * |s| <= 2^-24 * L of
       relative error: the second term (measured at L = 192: o, dq, dk
       within 1.4 * 2^-24 * L of scale; the term adds 2e-6 at L ~ 8).
     bf16 storage: rtol = 8e-3. bf16 keeps 8 significant bits: rounding
       once to bf16 moves a value by up to 2^-8 = 0.39% of itself, so by up
       to 0.39% of the array's scale. The outputs are rounded once; the
       contract also rounds K_cmp / V_cmp to bf16 before they are used, and
       backward reads the rounded O: errors of the same size that propagate
       with O(1) gain. 8e-3 = two such roundings; measured within 3.5e-3 of
       scale on every case (sharp inputs included). This check is about the
       bf16 paths (conversion, rounding); the rules themselves are pinned
       down by the fp32 run.
     fp16 storage: rtol = 2e-3, by the same argument with fp16's 11
       significant bits (unit 2^-11 = 4.9e-4; four of them); measured 4e-4.
     lse_*: per element, |got - expected| <= 2e-6 * max(1, |expected|)
       (NSA_VTOL_LSE, 32 units of 2^-24: an lse's rounding is relative to
       its own size), plus, for lse_cmp in bf16 / fp16, the bound of what
       rounding K_cmp to that type can do to it (nsa_v_lse_cmp_bound).
     dq / dk: the scale is at least 0.1 * max |expected| of the other one
       (see NSA_VGRAD_FLOOR): both are sums of the same dS terms, and one of
       them can vanish identically (all keys equal makes dq = 0 exactly).
   Selections (sel_idx, sel_count) must match exactly: integers. One
   allowance in 16-bit storage, where the contract scores on K_cmp rounded to
   the storage type: a row may differ where the two blocks' scores lie
   within what K_cmp's rounding did to them, computed per block in fp64
   (a note, not a failure; see nsa_v_explain_sel). Never a loose relative
   threshold (contract, settled rules).

   Report: every failed check prints one line
     FAIL case/array(dtype): max abs err X at index i (tol Y)
   and every case one summary line. All functions are static: include this
   file in the one translation unit that also defines NSA_REF_IMPLEMENTATION
   before including nsa_ref.h. */
#ifndef NSA_TOOLS_VECTORS_H
#define NSA_TOOLS_VECTORS_H

#include "../nsa_ref.h"
#include "npy.h"
#include "json.h"

#include <dirent.h>
#include <stdarg.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#if defined(__GNUC__) || defined(__clang__)
#define NSAV__UNUSED __attribute__((unused))
#else
#define NSAV__UNUSED
#endif
#define NSAVDEF static NSAV__UNUSED

/* snprintf through a va_list: the same result, and no compiler guesses
   about truncation of long paths (messages are cut, never overrun). */
static NSAV__UNUSED int nsa_v__fmt(char *buf, size_t len, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static NSAV__UNUSED int nsa_v__fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n;
}

#define NSA_VTOL_FP32 2e-5
#define NSA_VTOL_BF16 8e-3
#define NSA_VTOL_FP16 2e-3
/* fp32: the part of the tolerance that grows with the logits (see
   nsa_vectors_rtol_for): NSA_VTOL_LOGIT * 2^-24 * max |lse| of the case. */
#define NSA_VTOL_LOGIT 4.0
/* Log-sum-exps, per element, in every storage type:
     |got - exp| <= NSA_VTOL_LSE * max(1, |exp|)  (+ K_cmp's rounding bound
                                                  for lse_cmp in bf16/fp16)
   An lse is the log of a sum of exponentials of fp32 logits: its rounding
   error is relative to its own magnitude, so each element is held to its
   own (a bound relative to the array's largest |lse| would let a
   large-|lse| query's error pass at every small one). 2e-6 = 32 fp32 units
   (2^-24); measured within 0.43 of that on every independent case, sharp
   ones included. The 16-bit runs read the same (exact) inputs with the
   same fp32 sums, so lse_slc and lse_win are held to the same; lse_cmp
   reads K_cmp rounded to the storage type, which moves it by at most the
   largest move of one of its logits (lse is a smooth max: |d lse| <=
   max_i |d s_i|), bounded by nsa_v_lse_cmp_bound. */
#define NSA_VTOL_LSE 2e-6

/* 1: print a line for every passed check too (max error, tolerance). */
static int nsa_vectors_verbose = 0;

NSAVDEF double nsa_vectors_rtol(nsa_dtype dt)
{
    return dt == NSA_FP32 ? NSA_VTOL_FP32
         : dt == NSA_BF16 ? NSA_VTOL_BF16 : NSA_VTOL_FP16;
}

/* The rtol of a case's float arrays in storage dt when the case's largest
   finite |lse| is L. fp32: the logits s = sc * q . k are fp32 sums whose
   rounding error is relative to their magnitude, so a probability
   exp(s - lse) carries a relative error of order 2^-24 * |s| <= 2^-24 * L
   (all |s| at a query's dominant keys are close to its lse), which o, dq,
   dk, dv inherit at O(1) gain: the tolerance grows by NSA_VTOL_LOGIT of
   those units per unit of L (measured on the independent sharp case,
   L = 192: o, dq, dk within 1.4 * 2^-24 * L of scale). At L ~ 8 (logits of
   order 1) this adds 2e-6 to 2e-5. The 16-bit rtols already cover their
   own, much larger, rounding. */
NSAVDEF double nsa_vectors_rtol_for(nsa_dtype dt, double L)
{
    if (dt != NSA_FP32) return nsa_vectors_rtol(dt);
    if (!(L >= 0.0) || L > 1e30) L = 0.0;
    return NSA_VTOL_FP32 + NSA_VTOL_LOGIT * L / 16777216.0;
}

NSAVDEF const char *nsa_vectors_dtype_name(nsa_dtype dt)
{
    return dt == NSA_FP32 ? "fp32" : dt == NSA_BF16 ? "bf16" : "fp16";
}

/* "bf16" / "fp16" / "fp32" (also "float32", "bfloat16", "float16"). */
NSAVDEF int nsa_vectors_parse_dtype(const char *s, nsa_dtype *dt)
{
    if (!s) return -1;
    if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *dt = NSA_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "float16")) *dt = NSA_FP16;
    else if (!strcmp(s, "fp32") || !strcmp(s, "float32")) *dt = NSA_FP32;
    else return -1;
    return 0;
}

/* ---- a case -------------------------------------------------------------- */

typedef struct nsa_vcase {
    char name[256];
    char dir[1024];        /* folder of the case's .npy files */
    nsa_config cfg;
    int H, Hkv, Dk, Dv, B;
    int64_t T;             /* keys: cu[B] */
    int64_t TQ;            /* queries: cu_q[B], or T without cu_q */
    int32_t *cu;           /* B + 1 entries */
    int32_t *cu_q;         /* B + 1 entries, or NULL: suffix queries
                              (contract "Shapes and layout": query i of
                              sequence b sits at TK_b - TQ_b + i; every
                              query-side array has TQ rows) */
    int has_gates;
    int own_layout;        /* parameters came from a case.json */
    nsa_dtype storage;     /* own layout: storage type; else bf16 */
} nsa_vcase;

NSAVDEF void nsa_vcase_free(nsa_vcase *c)
{
    if (c) {
        free(c->cu);
        free(c->cu_q);
        c->cu = c->cu_q = NULL;
    }
}

NSAVDEF int nsa_v_file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

NSAVDEF int nsa_v_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* An integer member within [lo, hi] (dflt when absent); *bad set otherwise. */
static NSAV__UNUSED int nsa_v__int(const json_value *v, int dflt, int lo,
                                   int hi, int *bad)
{
    double x;
    if (!v) return dflt;
    x = json_num(v, 0.5);
    if (!(x >= lo && x <= hi) || x != (double)(int64_t)x) {
        *bad = 1;
        return dflt;
    }
    return (int)x;
}

/* Fills c from a JSON object with the keys of cases.json / case.json. */
NSAVDEF int nsa_vcase_from_json(const json_value *o, const char *dir,
                                nsa_vcase *c, char *err, size_t errlen)
{
    const json_value *cu = json_get(o, "cu"), *cfg = json_get(o, "cfg");
    const json_value *cuq = json_get(o, "cu_q");
    const json_value *br = json_get(o, "branches");
    const char *mode;
    int i, bad = 0;
    memset(c, 0, sizeof *c);
    if (!o || o->type != JSON_OBJECT) {
        nsa_v__fmt(err, errlen, "case entry is not an object");
        return -1;
    }
    nsa_v__fmt(c->name, sizeof c->name, "%s", json_str(json_get(o, "name"), "?"));
    nsa_v__fmt(c->dir, sizeof c->dir, "%s", dir);
    if (!cu || cu->type != JSON_ARRAY || cu->len < 1 || !cfg || !br ||
        br->type != JSON_ARRAY) {
        nsa_v__fmt(err, errlen, "case %s: needs 'cu', 'cfg' and 'branches'",
                 c->name);
        return -1;
    }
    c->B = cu->len - 1;
    c->cu = (int32_t *)malloc((size_t)cu->len * sizeof *c->cu);
    if (!c->cu) { nsa_v__fmt(err, errlen, "out of memory"); return -1; }
    for (i = 0; i < cu->len; ++i)
        c->cu[i] = nsa_v__int(json_at(cu, i), -1, 0, INT32_MAX, &bad);
    c->T = c->cu[c->B];
    c->TQ = c->T;
    if (cuq) {
        if (cuq->type != JSON_ARRAY || cuq->len != cu->len) {
            nsa_v__fmt(err, errlen, "case %s: 'cu_q' must be an array as long "
                       "as 'cu'", c->name);
            nsa_vcase_free(c);
            return -1;
        }
        c->cu_q = (int32_t *)malloc((size_t)cuq->len * sizeof *c->cu_q);
        if (!c->cu_q) {
            nsa_v__fmt(err, errlen, "out of memory");
            nsa_vcase_free(c);
            return -1;
        }
        for (i = 0; i < cuq->len; ++i)
            c->cu_q[i] = nsa_v__int(json_at(cuq, i), -1, 0, INT32_MAX, &bad);
        c->TQ = c->cu_q[c->B];
    }
    c->H = nsa_v__int(json_get(o, "H"), 0, 1, 1 << 16, &bad);
    c->Hkv = nsa_v__int(json_get(o, "Hkv"), 0, 1, 1 << 16, &bad);
    c->Dk = nsa_v__int(json_get(o, "Dk"), 0, 1, 1 << 16, &bad);
    c->Dv = nsa_v__int(json_get(o, "Dv"), 0, 1, 1 << 16, &bad);
    c->has_gates = json_bool(json_get(o, "gates"), 0);
    c->cfg = nsa_config_paper();
    c->cfg.l = nsa_v__int(json_get(cfg, "l"), c->cfg.l, 0, INT32_MAX, &bad);
    c->cfg.d = nsa_v__int(json_get(cfg, "d"), c->cfg.d, 0, INT32_MAX, &bad);
    c->cfg.lp = nsa_v__int(json_get(cfg, "lp"), c->cfg.lp, 0, INT32_MAX, &bad);
    c->cfg.n = nsa_v__int(json_get(cfg, "n"), c->cfg.n, 0, INT32_MAX, &bad);
    c->cfg.n_init = nsa_v__int(json_get(cfg, "n_init"), c->cfg.n_init, 0,
                               INT32_MAX, &bad);
    c->cfg.n_local = nsa_v__int(json_get(cfg, "n_local"), c->cfg.n_local, 0,
                                INT32_MAX, &bad);
    c->cfg.w = nsa_v__int(json_get(cfg, "w"), c->cfg.w, 0, INT32_MAX, &bad);
    c->cfg.bq = nsa_v__int(json_get(cfg, "bq"), c->cfg.bq, 0, INT32_MAX, &bad);
    {
        double sc = json_num(json_get(cfg, "scale"), 0.0);
        if (!(sc >= 0.0 && sc <= FLT_MAX)) bad = 1;
        else c->cfg.scale = (float)sc;
    }
    if (bad) {
        nsa_v__fmt(err, errlen, "case %s: cu, H, Hkv, Dk, Dv (1..65536) and "
                   "the cfg sizes must be non-negative integers, cfg.scale a "
                   "non-negative float", c->name);
        return -1;
    }
    mode = json_str(json_get(cfg, "mode"), "probs");
    if (!strcmp(mode, "probs")) c->cfg.score_mode = NSA_SCORE_PROBS;
    else if (!strcmp(mode, "logits")) c->cfg.score_mode = NSA_SCORE_LOGITS;
    else {
        nsa_v__fmt(err, errlen, "case %s: cfg.mode '%s' is not probs/logits",
                 c->name, mode);
        return -1;
    }
    c->cfg.branches = 0;
    for (i = 0; i < br->len; ++i) {
        const char *b = json_str(json_at(br, i), "");
        if (!strcmp(b, "cmp")) c->cfg.branches |= NSA_BRANCH_CMP;
        else if (!strcmp(b, "slc")) c->cfg.branches |= NSA_BRANCH_SLC;
        else if (!strcmp(b, "win")) c->cfg.branches |= NSA_BRANCH_WIN;
        else {
            nsa_v__fmt(err, errlen, "case %s: unknown branch '%s'", c->name, b);
            return -1;
        }
    }
    c->storage = NSA_BF16;
    if (json_get(o, "storage_dtype")) {
        c->own_layout = 1;
        if (nsa_vectors_parse_dtype(json_str(json_get(o, "storage_dtype"), ""),
                                    &c->storage) != 0) {
            nsa_v__fmt(err, errlen, "case %s: bad storage_dtype", c->name);
            return -1;
        }
    }
    if (c->H < 1 || c->Hkv < 1 || c->Dk < 1 || c->Dv < 1) {
        nsa_v__fmt(err, errlen, "case %s: H, Hkv, Dk, Dv must be >= 1", c->name);
        return -1;
    }
    return 0;
}

/* Loads a case from DIR/case.json. */
NSAVDEF int nsa_vcase_load_own(const char *dir, nsa_vcase *c, char *err,
                               size_t errlen)
{
    char path[1200];
    json_value root;
    int rc;
    nsa_v__fmt(path, sizeof path, "%s/case.json", dir);
    if (json_parse_file(path, &root, err, errlen) != 0) return -1;
    rc = nsa_vcase_from_json(&root, dir, c, err, errlen);
    c->own_layout = 1;
    json_free(&root);
    return rc;
}

/* ---- arrays --------------------------------------------------------------- */

/* Value of element i of an npy array as double; '<u2' arrays hold bit
   patterns of the 16-bit storage type `u2_as`. */
NSAVDEF double nsa_v_npy_value(const npy_array *a, int64_t i, nsa_dtype u2_as)
{
    if (a->dtype == NPY_U2) {
        uint16_t h = ((const uint16_t *)a->data)[i];
        return u2_as == NSA_FP16 ? (double)nsa_fp16_to_f32(h)
                                 : (double)nsa_bf16_to_f32(h);
    }
    return npy_get(a, i);
}

/* Reads DIR/NAME.npy as doubles. Returns 1 if read, 0 if the file does not
   exist, -1 on error (message in err). If expect >= 0 the element count
   must equal it. */
NSAVDEF int nsa_v_load_f64(const char *dir, const char *name, int64_t expect,
                           nsa_dtype u2_as, double **out, int64_t *count,
                           char *err, size_t errlen)
{
    char path[1200];
    npy_array a;
    int64_t i;
    *out = NULL;
    nsa_v__fmt(path, sizeof path, "%s/%s.npy", dir, name);
    if (!nsa_v_file_exists(path)) return 0;
    if (npy_read(path, &a, err, errlen) != 0) return -1;
    if (expect >= 0 && a.count != expect) {
        nsa_v__fmt(err, errlen, "%s: %lld elements, expected %lld", path,
                 (long long)a.count, (long long)expect);
        npy_free(&a);
        return -1;
    }
    *out = (double *)malloc((size_t)(a.count > 0 ? a.count : 1) * sizeof(double));
    if (!*out) { npy_free(&a); nsa_v__fmt(err, errlen, "out of memory"); return -1; }
    for (i = 0; i < a.count; ++i) (*out)[i] = nsa_v_npy_value(&a, i, u2_as);
    if (count) *count = a.count;
    npy_free(&a);
    return 1;
}

/* Reads DIR/NAME.npy as int32 (from <i4, <i8 or |u1). Same returns. */
NSAVDEF int nsa_v_load_i32(const char *dir, const char *name, int64_t expect,
                           int32_t **out, npy_array *shape_out, char *err,
                           size_t errlen)
{
    char path[1200];
    npy_array a;
    int64_t i;
    *out = NULL;
    nsa_v__fmt(path, sizeof path, "%s/%s.npy", dir, name);
    if (!nsa_v_file_exists(path)) return 0;
    if (npy_read(path, &a, err, errlen) != 0) return -1;
    if (a.dtype != NPY_I4 && a.dtype != NPY_I8 && a.dtype != NPY_U1) {
        nsa_v__fmt(err, errlen, "%s: dtype %s, expected an integer type", path,
                 npy_dtype_descr(a.dtype));
        npy_free(&a);
        return -1;
    }
    if (expect >= 0 && a.count != expect) {
        nsa_v__fmt(err, errlen, "%s: %lld elements, expected %lld", path,
                 (long long)a.count, (long long)expect);
        npy_free(&a);
        return -1;
    }
    *out = (int32_t *)malloc((size_t)(a.count > 0 ? a.count : 1) * sizeof(int32_t));
    if (!*out) { npy_free(&a); nsa_v__fmt(err, errlen, "out of memory"); return -1; }
    for (i = 0; i < a.count; ++i) (*out)[i] = (int32_t)npy_get(&a, i);
    if (shape_out) {
        *shape_out = a;
        shape_out->data = NULL;
    }
    npy_free(&a);
    return 1;
}

/* ---- running the reference ---------------------------------------------- */

typedef struct nsa_vinputs {
    double *q, *k, *v, *gates, *d_o;  /* gates NULL when the case has none */
} nsa_vinputs;

NSAVDEF void nsa_vinputs_free(nsa_vinputs *in)
{
    free(in->q); free(in->k); free(in->v); free(in->gates); free(in->d_o);
    memset(in, 0, sizeof *in);
}

NSAVDEF int nsa_vinputs_load(const nsa_vcase *c, nsa_vinputs *in, char *err,
                             size_t errlen)
{
    /* q, do, gates are query-side: TQ rows (contract, settled rules) */
    int64_t T = c->T, TQ = c->TQ;
    int rc;
    memset(in, 0, sizeof *in);
    if ((rc = nsa_v_load_f64(c->dir, "q", TQ * c->H * c->Dk, c->storage, &in->q,
                             NULL, err, errlen)) != 1 ||
        (rc = nsa_v_load_f64(c->dir, "k", T * c->Hkv * c->Dk, c->storage,
                             &in->k, NULL, err, errlen)) != 1 ||
        (rc = nsa_v_load_f64(c->dir, "v", T * c->Hkv * c->Dv, c->storage,
                             &in->v, NULL, err, errlen)) != 1 ||
        (rc = nsa_v_load_f64(c->dir, "do", TQ * c->H * c->Dv, c->storage,
                             &in->d_o, NULL, err, errlen)) != 1) {
        if (rc == 0) nsa_v__fmt(err, errlen, "%s: an input (q, k, v, do) is "
                              "missing", c->dir);
        nsa_vinputs_free(in);
        return -1;
    }
    if (c->has_gates) {
        rc = nsa_v_load_f64(c->dir, "gates", TQ * c->H * 3, c->storage,
                            &in->gates, NULL, err, errlen);
        if (rc != 1) {
            if (rc == 0) nsa_v__fmt(err, errlen, "%s: gates.npy is missing",
                                  c->dir);
            nsa_vinputs_free(in);
            return -1;
        }
    }
    return 0;
}

/* One run of the reference: every buffer it reads and writes. */
typedef struct nsa_vrun {
    nsa_dtype dt;
    nsa_accum accum;
    nsa_config cfg;
    nsa_batch batch;
    nsa_sizes sz;
    int64_t inexact;          /* input values not representable in dt */
    void *q, *k, *v, *gates, *d_o;
    void *o;
    float *lse[3];            /* cmp, slc, win */
    int32_t *sel_idx, *sel_count;
    void *k_cmp, *v_cmp;
    void *dq, *dk, *dv, *dgates;
    /* stages (nsa_vrun_stages) */
    float *block_scores;
    uint8_t *block_mask;
    float *o_br[3], *lse_br[3];
    void *ws;
    size_t ws_bytes;
} nsa_vrun;

NSAVDEF void nsa_vrun_free(nsa_vrun *r)
{
    int i;
    free(r->q); free(r->k); free(r->v); free(r->gates); free(r->d_o);
    free(r->o); free(r->sel_idx); free(r->sel_count); free(r->k_cmp);
    free(r->v_cmp); free(r->dq); free(r->dk); free(r->dv); free(r->dgates);
    free(r->block_scores); free(r->block_mask); free(r->ws);
    for (i = 0; i < 3; ++i) { free(r->lse[i]); free(r->o_br[i]); free(r->lse_br[i]); }
    memset(r, 0, sizeof *r);
}

static NSAV__UNUSED void *nsa_v__alloc(int64_t n, size_t size)
{
    return calloc((size_t)(n > 0 ? n : 1), size);
}

static NSAV__UNUSED void *nsa_v__to_storage(const double *x, int64_t n,
                                            nsa_dtype dt, int64_t *inexact)
{
    void *p = nsa_v__alloc(n, nsa_dtype_size(dt));
    int64_t i;
    if (!p) return NULL;
    for (i = 0; i < n; ++i) {
        nsa_store(p, dt, i, (float)x[i]);
        if ((double)nsa_load(p, dt, i) != x[i] && !(x[i] != x[i])) ++*inexact;
    }
    return p;
}

/* Values of a storage-dtype buffer as doubles (malloc'ed). */
NSAVDEF double *nsa_v_storage_to_f64(const void *p, nsa_dtype dt, int64_t n)
{
    double *x = (double *)nsa_v__alloc(n, sizeof(double));
    int64_t i;
    if (!x) return NULL;
    for (i = 0; i < n; ++i) x[i] = nsa_load(p, dt, i);
    return x;
}

NSAVDEF double *nsa_v_f32_to_f64(const float *p, int64_t n)
{
    double *x = (double *)nsa_v__alloc(n, sizeof(double));
    int64_t i;
    if (!x) return NULL;
    for (i = 0; i < n; ++i) x[i] = p[i];
    return x;
}

/* Runs forward and backward of case c on inputs in, with storage dt and
   accumulation accum; with sel_idx / sel_count non-NULL, on that selection
   (the caller-selection mode of the API) instead of the reference's own.
   Returns 0, or -1 with a message. */
NSAVDEF int nsa_vrun_exec(const nsa_vcase *c, const nsa_vinputs *in,
                          nsa_dtype dt, nsa_accum accum,
                          const int32_t *sel_idx, const int32_t *sel_count,
                          nsa_vrun *r, char *err, size_t errlen)
{
    nsa_status st;
    nsa_saved saved;
    nsa_grads grads;
    size_t es = nsa_dtype_size(dt);
    int64_t T = c->T, TQ = c->TQ;
    int i;
    memset(r, 0, sizeof *r);
    r->dt = dt;
    r->accum = accum;
    r->cfg = c->cfg;
    r->cfg.accum = accum;
    r->q = nsa_v__to_storage(in->q, TQ * c->H * c->Dk, dt, &r->inexact);
    r->k = nsa_v__to_storage(in->k, T * c->Hkv * c->Dk, dt, &r->inexact);
    r->v = nsa_v__to_storage(in->v, T * c->Hkv * c->Dv, dt, &r->inexact);
    r->d_o = nsa_v__to_storage(in->d_o, TQ * c->H * c->Dv, dt, &r->inexact);
    if (in->gates)
        r->gates = nsa_v__to_storage(in->gates, TQ * c->H * 3, dt, &r->inexact);
    if (!r->q || !r->k || !r->v || !r->d_o || (in->gates && !r->gates)) {
        nsa_v__fmt(err, errlen, "out of memory");
        nsa_vrun_free(r);
        return -1;
    }
    memset(&r->batch, 0, sizeof r->batch);
    r->batch.B = c->B;
    r->batch.T = T;
    r->batch.TQ = TQ;
    r->batch.cu_seqlens = c->cu;
    r->batch.cu_seqlens_q = c->cu_q;
    r->batch.H = c->H;
    r->batch.Hkv = c->Hkv;
    r->batch.Dk = c->Dk;
    r->batch.Dv = c->Dv;
    r->batch.dtype = dt;
    r->batch.q = r->q;
    r->batch.k = r->k;
    r->batch.v = r->v;
    r->batch.sel_idx = sel_idx;
    r->batch.sel_count = sel_count;
    if ((st = nsa_sizes_get(&r->cfg, &r->batch, &r->sz)) != NSA_OK ||
        (st = nsa_ref_workspace_size(&r->cfg, &r->batch, &r->ws_bytes)) != NSA_OK) {
        nsa_v__fmt(err, errlen, "%s: %s", nsa_status_string(st), nsa_last_error());
        nsa_vrun_free(r);
        return -1;
    }
    r->ws = malloc(r->ws_bytes ? r->ws_bytes : 1);
    r->o = nsa_v__alloc(r->sz.o, es);
    for (i = 0; i < 3; ++i)
        r->lse[i] = (float *)nsa_v__alloc(r->sz.lse, sizeof(float));
    r->sel_idx = (int32_t *)nsa_v__alloc(r->sz.sel_idx, sizeof(int32_t));
    r->sel_count = (int32_t *)nsa_v__alloc(r->sz.sel_count, sizeof(int32_t));
    r->k_cmp = nsa_v__alloc(r->sz.k_cmp, es);
    r->v_cmp = nsa_v__alloc(r->sz.v_cmp, es);
    r->dq = nsa_v__alloc(r->sz.q, es);
    r->dk = nsa_v__alloc(r->sz.k, es);
    r->dv = nsa_v__alloc(r->sz.v, es);
    r->dgates = nsa_v__alloc(r->sz.gates, es);
    if (!r->ws || !r->o || !r->lse[0] || !r->lse[1] || !r->lse[2] ||
        !r->sel_idx || !r->sel_count || !r->k_cmp || !r->v_cmp || !r->dq ||
        !r->dk || !r->dv || !r->dgates) {
        nsa_v__fmt(err, errlen, "out of memory");
        nsa_vrun_free(r);
        return -1;
    }
    memset(&saved, 0, sizeof saved); /* every field, o_branch (none) too */
    saved.lse_cmp = r->lse[0];
    saved.lse_slc = r->lse[1];
    saved.lse_win = r->lse[2];
    saved.sel_idx = r->sel_idx;
    saved.sel_count = r->sel_count;
    saved.k_cmp = r->k_cmp;
    saved.v_cmp = r->v_cmp;
    st = nsa_ref_forward(&r->cfg, &r->batch, r->gates, r->o, &saved, r->ws,
                         r->ws_bytes);
    if (st != NSA_OK) {
        nsa_v__fmt(err, errlen, "nsa_ref_forward: %s: %s", nsa_status_string(st),
                 nsa_last_error());
        nsa_vrun_free(r);
        return -1;
    }
    memset(&grads, 0, sizeof grads);
    grads.dq = r->dq;
    grads.dk = r->dk;
    grads.dv = r->dv;
    grads.dgates = r->gates ? r->dgates : NULL;
    st = nsa_ref_backward(&r->cfg, &r->batch, r->gates, r->d_o, &saved, &grads,
                          r->ws, r->ws_bytes);
    if (st != NSA_OK) {
        nsa_v__fmt(err, errlen, "nsa_ref_backward: %s: %s",
                 nsa_status_string(st), nsa_last_error());
        nsa_vrun_free(r);
        return -1;
    }
    return 0;
}

/* After nsa_vrun_exec: the stage functions' outputs (block scores, block
   mask, per-branch outputs and lse), from the saved K_cmp and selection. */
NSAVDEF int nsa_vrun_stages(nsa_vrun *r, char *err, size_t errlen)
{
    nsa_status st = NSA_OK;
    int i;
    unsigned br = r->cfg.branches;
    r->block_scores = (float *)nsa_v__alloc(r->sz.block_mask, sizeof(float));
    r->block_mask = (uint8_t *)nsa_v__alloc(r->sz.block_mask, 1);
    for (i = 0; i < 3; ++i) {
        r->o_br[i] = (float *)nsa_v__alloc(r->sz.o, sizeof(float));
        r->lse_br[i] = (float *)nsa_v__alloc(r->sz.lse, sizeof(float));
        if (!r->o_br[i] || !r->lse_br[i]) st = NSA_ERR_WORKSPACE;
    }
    if (!r->block_scores || !r->block_mask || st != NSA_OK) {
        nsa_v__fmt(err, errlen, "out of memory");
        return -1;
    }
    if (br & NSA_BRANCH_SLC) {
        st = nsa_ref_block_scores(&r->cfg, &r->batch, r->k_cmp, r->block_scores,
                                  r->ws, r->ws_bytes);
        if (st == NSA_OK)
            st = nsa_ref_block_mask(&r->cfg, &r->batch, r->sel_idx,
                                    r->sel_count, r->block_mask);
    }
    if (st == NSA_OK && (br & NSA_BRANCH_CMP))
        st = nsa_ref_attend_cmp(&r->cfg, &r->batch, r->k_cmp, r->v_cmp,
                                r->o_br[0], r->lse_br[0]);
    if (st == NSA_OK && (br & NSA_BRANCH_SLC))
        st = nsa_ref_attend_slc(&r->cfg, &r->batch, r->sel_idx, r->sel_count,
                                r->o_br[1], r->lse_br[1]);
    if (st == NSA_OK && (br & NSA_BRANCH_WIN))
        st = nsa_ref_attend_win(&r->cfg, &r->batch, r->o_br[2], r->lse_br[2]);
    if (st != NSA_OK) {
        nsa_v__fmt(err, errlen, "stage: %s: %s", nsa_status_string(st),
                 nsa_last_error());
        return -1;
    }
    return 0;
}

/* ---- comparing ------------------------------------------------------------ */

typedef struct nsa_vstats {
    double max_abs;      /* max |got - exp| over finite pairs (inf if a
                            non-finite value disagrees)                     */
    int64_t max_abs_at;
    double max_rel;      /* max |got - exp| / |exp| over |exp| >= 1e-3 scale */
    double scale, tol;
    double worst;        /* max |got - exp| / (that element's tolerance) */
    int64_t first_bad;   /* first index beyond tol, -1 if none */
    int64_t n_bad;
} nsa_vstats;

/* Compares got to exp element-wise (see TOLERANCES above). per_elem = 0:
   |got_i - exp_i| <= rtol * scale, scale = max(scale_floor, max |exp|);
   per_elem = 1 (log-sum-exps): |got_i - exp_i| <= rtol * max(scale_floor,
   |exp_i|) + extra_i (extra may be NULL). s->tol is the array-wide
   tolerance (per_elem = 0), s->worst the
   largest ratio of error to that element's tolerance. Returns 1 when every
   element is within its tolerance. */
NSAVDEF int nsa_v_compare_f64(const double *got, const double *exp, int64_t n,
                              double rtol, double scale_floor, int per_elem,
                              const double *extra, nsa_vstats *s)
{
    int64_t i;
    double scale = 0.0;
    memset(s, 0, sizeof *s);
    s->first_bad = -1;
    s->max_abs_at = -1;
    for (i = 0; i < n; ++i)
        if (isfinite(exp[i]) && fabs(exp[i]) > scale) scale = fabs(exp[i]);
    if (scale < scale_floor) scale = scale_floor;
    s->scale = scale;
    s->tol = rtol * scale;
    for (i = 0; i < n; ++i) {
        double e, g = got[i], x = exp[i], tol = s->tol;
        if (!isfinite(x) || !isfinite(g)) {
            int same = (x != x) ? (g != g) : (g == x);
            e = same ? 0.0 : HUGE_VAL;
        } else {
            e = fabs(g - x);
            if (fabs(x) >= 1e-3 * scale && e / fabs(x) > s->max_rel)
                s->max_rel = e / fabs(x);
            if (per_elem)
                tol = rtol * (fabs(x) > scale_floor ? fabs(x) : scale_floor) +
                      (extra ? extra[i] : 0.0);
        }
        if (e > s->max_abs || s->max_abs_at < 0) {
            s->max_abs = e;
            s->max_abs_at = i;
        }
        if (tol > 0 && e / tol > s->worst) s->worst = e / tol;
        if (e > tol) {
            if (s->first_bad < 0) s->first_bad = i;
            ++s->n_bad;
        }
    }
    return s->n_bad == 0;
}

/* Index i of an array of the given shape as "[a, b, c]". */
NSAVDEF void nsa_v_index_str(int64_t i, int ndim, const int64_t *shape,
                             char *buf, size_t len)
{
    int64_t idx[NPY_MAX_DIMS];
    int d;
    size_t n = 0;
    for (d = ndim - 1; d >= 0; --d) {
        idx[d] = shape[d] > 0 ? i % shape[d] : 0;
        i = shape[d] > 0 ? i / shape[d] : 0;
    }
    n += (size_t)nsa_v__fmt(buf, len, "[");
    for (d = 0; d < ndim; ++d)
        n += (size_t)nsa_v__fmt(buf + n, n < len ? len - n : 0, "%s%lld",
                              d ? "," : "", (long long)idx[d]);
    nsa_v__fmt(buf + n, n < len ? len - n : 0, "]");
}

/* Checks one float array (per_elem: see nsa_v_compare_f64); prints the
   FAIL line. */
NSAVDEF int nsa_v_check_array(const char *label, const double *got,
                              const double *exp, int64_t n, int ndim,
                              const int64_t *shape, double rtol,
                              double scale_floor, int per_elem,
                              const double *extra)
{
    nsa_vstats s;
    char at[128];
    int64_t w;
    if (nsa_v_compare_f64(got, exp, n, rtol, scale_floor, per_elem, extra,
                          &s)) {
        if (nsa_vectors_verbose) {
            if (per_elem)
                printf("ok   %s: max abs err %.3g, at most %.3g of the "
                       "element's tolerance (rtol %.3g of max(1, |lse|)%s)\n",
                       label, s.max_abs, s.worst, rtol,
                       extra ? " + K_cmp's rounding bound" : "");
            else
                printf("ok   %s: max abs err %.3g = %.3g of scale %.3g (tol "
                       "%.3g)\n", label, s.max_abs, s.max_abs / s.scale,
                       s.scale, s.tol);
        }
        return 1;
    }
    w = s.first_bad;
    nsa_v_index_str(w, ndim, shape, at, sizeof at);
    printf("FAIL %s: max abs err %.3g; first beyond tol: %.3g at index %lld "
           "%s (tol %.3g there): got %.9g, expected %.9g; %lld of %lld beyond "
           "tol, worst %.3g times its tol\n", label, s.max_abs,
           fabs(got[w] - exp[w]), (long long)w, at,
           per_elem ? rtol * (fabs(exp[w]) > scale_floor ? fabs(exp[w])
                                                        : scale_floor) +
                          (extra ? extra[w] : 0.0)
                    : s.tol,
           got[w], exp[w], (long long)s.n_bad, (long long)n, s.worst);
    return 0;
}

/* Checks a selection [units, Hkv, n] exactly; prints the FAIL line with the
   number of differing (unit, kv head) rows and the first one. */
NSAVDEF int nsa_v_check_sel(const char *label, const int32_t *got,
                            const int32_t *exp, int64_t units, int Hkv, int n)
{
    int64_t r, rows = units * Hkv, bad = 0, first = -1;
    int j;
    for (r = 0; r < rows; ++r)
        for (j = 0; j < n; ++j)
            if (got[r * n + j] != exp[r * n + j]) {
                if (first < 0) first = r;
                ++bad;
                break;
            }
    if (!bad) return 1;
    printf("FAIL %s: %lld of %lld (unit, kv head) rows differ; first unit %lld"
           " kv head %lld: got [", label, (long long)bad, (long long)rows,
           (long long)(first / Hkv), (long long)(first % Hkv));
    for (j = 0; j < n; ++j) printf("%s%d", j ? " " : "", got[first * n + j]);
    printf("], expected [");
    for (j = 0; j < n; ++j) printf("%s%d", j ? " " : "", exp[first * n + j]);
    printf("]\n");
    return 0;
}

/* ---- one case ------------------------------------------------------------- */

static NSAV__UNUSED void nsa_v__count(int ok, int *passed, int *failed)
{
    if (ok) ++*passed; else ++*failed;
}

/* Checks float array NAME of run r (values got, n elements) against
   DIR/NAME.npy if it exists. */
static NSAV__UNUSED void nsa_v__check_named(const nsa_vcase *c, const char *name,
                                            const char *dtname, const double *got,
                                            int64_t n, int ndim,
                                            const int64_t *shape, double rtol,
                                            double floor_, int per_elem,
                                            const double *extra, int *passed,
                                            int *failed)
{
    double *exp = NULL;
    char err[512], label[512];
    int rc;
    nsa_v__fmt(label, sizeof label, "%s/%s(%s)", c->name, name, dtname);
    rc = nsa_v_load_f64(c->dir, name, n, NSA_BF16, &exp, NULL, err, sizeof err);
    if (rc == 0) return; /* not part of this case */
    if (rc < 0) {
        printf("FAIL %s: %s\n", label, err);
        ++*failed;
        return;
    }
    nsa_v__count(got && nsa_v_check_array(label, got, exp, n, ndim, shape, rtol,
                                          floor_, per_elem, extra), passed,
                 failed);
    free(exp);
}

/* Max |x| over the finite entries of DIR/NAME.npy, 0 if absent. */
NSAVDEF double nsa_v_maxabs_file(const char *dir, const char *name)
{
    double *x = NULL, m = 0.0;
    int64_t n = 0, i;
    char err[256];
    if (nsa_v_load_f64(dir, name, -1, NSA_BF16, &x, &n, err, sizeof err) != 1)
        return 0.0;
    for (i = 0; i < n; ++i)
        if (isfinite(x[i]) && fabs(x[i]) > m) m = fabs(x[i]);
    free(x);
    return m;
}

/* The largest finite |lse| of a case's expected lse_cmp, lse_slc, lse_win
   (0 if it has none): the size of its logits (nsa_vectors_rtol_for). */
NSAVDEF double nsa_v_max_lse(const char *dir)
{
    double a = nsa_v_maxabs_file(dir, "lse_cmp"),
           b = nsa_v_maxabs_file(dir, "lse_slc"),
           c = nsa_v_maxabs_file(dir, "lse_win");
    if (b > a) a = b;
    return c > a ? c : a;
}

/* Least scale of the dq / dk tolerance: dq = sc * sum_s dS[t,s] k_s and
   dk = sc * sum_t dS[t,s] q_t are made of the same dS terms, so the size of
   those terms (and of the fp32 rounding noise of either sum) is set by both
   arrays. When one of them vanishes identically by symmetry (all keys
   equal: dq = sc * k * sum_s dS = 0) its own max |expected| is fp64 noise
   (1e-16) and a tolerance relative to it would be meaningless; the floor
   0.1 * max |other| takes over then. 0.1 is below the usual dq/dk ratio
   (0.5-2), so the floor does not loosen the check otherwise. */
#define NSA_VGRAD_FLOOR 0.1

/* Half the spacing of storage type dt at x (x a value of that type): the
   largest error of rounding a real number to x (round to nearest). */
NSAVDEF double nsa_v_half_ulp(double x, nsa_dtype dt)
{
    const int p = dt == NSA_BF16 ? 8 : dt == NSA_FP16 ? 11 : 24; /* digits */
    const int emin = dt == NSA_FP16 ? -14 : -126;
    int e;
    if (!(x == x) || isinf(x)) return HUGE_VAL;
    if (x == 0.0) e = emin;
    else { (void)frexp(fabs(x), &e); e -= 1; if (e < emin) e = emin; }
    return ldexp(1.0, e - p);
}

/* fp32 slack of a near-tie, relative to the row's largest |score|: the
   run's block scores are fp32 sums (dot products of Dk terms, softmax sums
   over the visible blocks, the overlap map, the group and tile sums),
   each carrying a few 2^-24 of the magnitudes summed; 64 such units. */
#define NSA_VTIE_FP32_SLACK (64.0 / 16777216.0)

/* Explains a selection difference of a 16-bit storage run.

   Contract (settled rules): selection scores read K_cmp in the storage
   type, so a selection may differ from an exact computation where two
   block scores lie within K_cmp's rounding of each other, and a checker
   accepts such a near-tie only within that bound. The bound is computed,
   not assumed:
     K_ex  = the mean of K in fp64 (nsa_ref_compress, NSA_ACCUM_FP64, fp32
             storage: K_cmp before its rounding to the storage type);
     K_st  = the run's K_cmp, which must be K_ex rounded to the storage type
             (|K_st - K_ex| <= half a unit of K_st; checked here: a K_cmp
             that is not a rounding of the mean explains nothing);
     S_st, S_ex = every block score computed from the same q with fp64 sums
             on K_st and on K_ex; E_j = |S_st[j] - S_ex[j]| is what K_cmp's
             rounding did to block j's score.
   A differing (unit, kv head) row is a near-tie iff it swaps as many
   blocks as it takes (same count), and for every block a chosen instead of
   an expected block b, the run's own fp32 scores satisfy
       |score[a] - score[b]| <= E_a + E_b + NSA_VTIE_FP32_SLACK * max |score|.
   Prints one note per row (at most 5) and returns 1 if all rows are
   near-ties, else prints the FAIL line and returns 0. */
NSAVDEF int nsa_v_explain_sel(const char *label, nsa_vrun *r,
                              const int32_t *exp)
{
    const int n = r->cfg.n;
    const int64_t mb = r->sz.max_slc_blocks, rows = r->sz.units * r->batch.Hkv;
    const nsa_dtype dt = r->dt;
    nsa_config c64 = r->cfg;
    nsa_batch b32 = r->batch;
    float *bs = (float *)nsa_v__alloc(r->sz.block_mask, sizeof(float));
    float *s_st = (float *)nsa_v__alloc(r->sz.block_mask, sizeof(float));
    float *s_ex = (float *)nsa_v__alloc(r->sz.block_mask, sizeof(float));
    float *q32 = (float *)nsa_v__alloc(r->sz.q, sizeof(float));
    float *k32 = (float *)nsa_v__alloc(r->sz.k, sizeof(float));
    float *v32 = (float *)nsa_v__alloc(r->sz.v, sizeof(float));
    float *kst = (float *)nsa_v__alloc(r->sz.k_cmp, sizeof(float));
    float *kex = (float *)nsa_v__alloc(r->sz.k_cmp, sizeof(float));
    float *vex = (float *)nsa_v__alloc(r->sz.v_cmp, sizeof(float));
    void *ws = NULL;
    size_t wsb = 0;
    int64_t row, i, bad = 0, worst_row = -1, printed = 0;
    double worst = 0.0;
    int ok = 0;
    nsa_status st;
    if (!bs || !s_st || !s_ex || !q32 || !k32 || !v32 || !kst || !kex || !vex) {
        printf("FAIL %s: out of memory\n", label);
        goto done;
    }
    /* the run's own scores, on its K_cmp, in its numerics */
    st = nsa_ref_block_scores(&r->cfg, &r->batch, r->k_cmp, bs, r->ws,
                              r->ws_bytes);
    /* the same q, fp64 sums, fp32 storage holding the storage values */
    c64.accum = NSA_ACCUM_FP64;
    for (i = 0; i < r->sz.q; ++i) q32[i] = nsa_load(r->q, dt, i);
    for (i = 0; i < r->sz.k; ++i) k32[i] = nsa_load(r->k, dt, i);
    for (i = 0; i < r->sz.v; ++i) v32[i] = nsa_load(r->v, dt, i);
    for (i = 0; i < r->sz.k_cmp; ++i) kst[i] = nsa_load(r->k_cmp, dt, i);
    b32.dtype = NSA_FP32;
    b32.q = q32; b32.k = k32; b32.v = v32;
    b32.sel_idx = NULL; b32.sel_count = NULL;
    b32.q_stride_token = b32.q_stride_head = 0;
    b32.k_stride_token = b32.k_stride_head = 0;
    b32.v_stride_token = b32.v_stride_head = 0;
    if (st == NSA_OK) st = nsa_ref_workspace_size(&c64, &b32, &wsb);
    if (st == NSA_OK && !(ws = malloc(wsb ? wsb : 1))) st = NSA_ERR_WORKSPACE;
    if (st == NSA_OK) st = nsa_ref_compress(&c64, &b32, kex, vex);
    if (st == NSA_OK)
        st = nsa_ref_block_scores(&c64, &b32, kst, s_st, ws, wsb);
    if (st == NSA_OK)
        st = nsa_ref_block_scores(&c64, &b32, kex, s_ex, ws, wsb);
    if (st != NSA_OK) {
        printf("FAIL %s: block scores: %s\n", label, nsa_last_error());
        goto done;
    }
    for (i = 0; i < r->sz.k_cmp; ++i) {
        /* K_ex is the fp64 mean rounded once to fp32: allow that rounding */
        double lim = nsa_v_half_ulp(kst[i], dt) + fabs((double)kex[i]) * 1.2e-7;
        if (!(fabs((double)kst[i] - (double)kex[i]) <= lim)) {
            printf("FAIL %s: K_cmp element %lld is %.9g, not the storage "
                   "rounding of the mean %.9g, so a selection difference "
                   "cannot be a near-tie\n", label, (long long)i,
                   (double)kst[i], (double)kex[i]);
            goto done;
        }
    }
    for (row = 0; row < rows; ++row) {
        const int32_t *g = r->sel_idx + row * n, *e = exp + row * n;
        const float *sc = bs + row * mb, *ss = s_st + row * mb,
                    *sx = s_ex + row * mb;
        double top = 0.0, rowworst = 0.0, gap_at = 0.0, bound_at = 0.0;
        int a, b, differs = 0, na = 0, nb = 0, tie = 1;
        for (a = 0; a < n; ++a) if (g[a] != e[a]) differs = 1;
        if (!differs) continue;
        for (a = 0; a < mb; ++a)
            if (isfinite(sc[a]) && fabs(sc[a]) > top) top = fabs(sc[a]);
        for (a = 0; a < n; ++a) {
            int ga = g[a], in_e = 0, in_g = 0;
            for (b = 0; b < n; ++b) {
                if (e[b] == ga) in_e = 1;
                if (g[b] == e[a]) in_g = 1;
            }
            if (ga >= 0 && !in_e) ++na;
            if (e[a] >= 0 && !in_g) ++nb;
        }
        if (na != nb || na == 0) tie = 0;
        /* every (chosen-not-expected a, expected-not-chosen b) pair */
        for (a = 0; a < n && tie; ++a) {
            int ga = g[a], in_e = 0;
            if (ga < 0) continue;
            for (b = 0; b < n; ++b) if (e[b] == ga) in_e = 1;
            if (in_e) continue;
            for (b = 0; b < n && tie; ++b) {
                int eb = e[b], in_g = 0, k2;
                double gap, bound;
                if (eb < 0) continue;
                for (k2 = 0; k2 < n; ++k2) if (g[k2] == eb) in_g = 1;
                if (in_g) continue;
                if (ga >= mb || eb >= mb || !isfinite(sc[ga]) ||
                    !isfinite(sc[eb])) { tie = 0; break; }
                gap = fabs((double)sc[ga] - (double)sc[eb]);
                bound = fabs((double)ss[ga] - (double)sx[ga]) +
                        fabs((double)ss[eb] - (double)sx[eb]) +
                        NSA_VTIE_FP32_SLACK * top;
                if (!(gap <= bound)) tie = 0;
                if (bound > 0 && gap / bound >= rowworst) {
                    rowworst = gap / bound;
                    gap_at = gap;
                    bound_at = bound;
                }
            }
        }
        if (!tie) {
            if (!bad) worst_row = row;
            ++bad;
            continue;
        }
        if (rowworst > worst) worst = rowworst;
        if (printed++ < 5) {
            printf("note %s: unit %lld kv head %lld: chose [", label,
                   (long long)(row / r->batch.Hkv),
                   (long long)(row % r->batch.Hkv));
            for (a = 0; a < n; ++a) printf("%s%d", a ? " " : "", g[a]);
            printf("], expected [");
            for (a = 0; a < n; ++a) printf("%s%d", a ? " " : "", e[a]);
            printf("]: a near-tie, score gap %.3g within K_cmp's rounding "
                   "of the two scores (%.3g; row max %.3g)\n", gap_at,
                   bound_at, top);
        }
    }
    if (bad) {
        const int32_t *g = r->sel_idx + worst_row * n, *e = exp + worst_row * n;
        int a;
        printf("FAIL %s: %lld (unit, kv head) rows differ by more than K_cmp's "
               "rounding explains; first unit %lld kv head %lld: got [", label,
               (long long)bad, (long long)(worst_row / r->batch.Hkv),
               (long long)(worst_row % r->batch.Hkv));
        for (a = 0; a < n; ++a) printf("%s%d", a ? " " : "", g[a]);
        printf("], expected [");
        for (a = 0; a < n; ++a) printf("%s%d", a ? " " : "", e[a]);
        printf("]\n");
        goto done;
    }
    printf("note %s: %lld rows differ from the expected selection, all "
           "near-ties within K_cmp's rounding (largest gap %.3g of its "
           "bound)\n", label, (long long)printed, worst);
    ok = 1;
done:
    free(bs); free(s_st); free(s_ex); free(q32); free(k32); free(v32);
    free(kst); free(kex); free(vex); free(ws);
    return ok;
}

/* Bound of what rounding K_cmp to storage dt does to each lse_cmp [TQ, H]:
   M[t,h] = max over the compressed blocks i visible to t (contract: i*d +
   l - 1 <= t) of sc * sum_d |q[t,h,d]| * halfulp(K_cmp[i,d]), where K_cmp
   is the fp64 mean of the case's keys rounded to dt, and halfulp its
   rounding's largest error. Each logit s_i moves by at most that sum, and
   lse by at most the largest such move. Also covers the fp32 rounding of
   the mean (one more 2^-24 |K|). q [TQ, H, Dk], k [T, Hkv, Dk] (inputs as
   doubles). Returns 0, or -1 out of memory. */
NSAVDEF int nsa_v_lse_cmp_bound(const nsa_vcase *c, const double *q,
                                const double *k, nsa_dtype dt, double *M)
{
    const int l = c->cfg.l, d = c->cfg.d, G = c->H / c->Hkv, Dk = c->Dk;
    const double sc = c->cfg.scale > 0 ? (double)c->cfg.scale
                                       : (double)(float)(1.0 / sqrt((double)Dk));
    double *hu = NULL;
    int64_t b, kc0 = 0, i, j;
    int hk, h, e;
    for (i = 0; i < c->TQ * c->H; ++i) M[i] = 0.0;
    for (b = 0; b < c->B; ++b) {
        const int64_t k0 = c->cu[b], nk = c->cu[b + 1] - c->cu[b];
        const int64_t q0 = c->cu_q ? c->cu_q[b] : k0;
        const int64_t nq = c->cu_q ? c->cu_q[b + 1] - c->cu_q[b] : nk;
        const int64_t nc = (l > 0 && d > 0 && nk >= l) ? (nk - l) / d + 1 : 0;
        if (nc <= 0) continue;
        free(hu);
        hu = (double *)malloc((size_t)(nc * c->Hkv * Dk) * sizeof(double));
        if (!hu) return -1;
        for (i = 0; i < nc; ++i)        /* K_cmp's rounding, per element */
            for (hk = 0; hk < c->Hkv; ++hk)
                for (e = 0; e < Dk; ++e) {
                    double m = 0.0;
                    float st;
                    for (j = 0; j < l; ++j)
                        m += k[((k0 + i * d + j) * c->Hkv + hk) * Dk + e];
                    m /= l;
                    st = (float)m;             /* then rounded to dt */
                    if (dt == NSA_BF16) st = nsa_bf16_to_f32(nsa_f32_to_bf16(st));
                    else if (dt == NSA_FP16) st = nsa_fp16_to_f32(nsa_f32_to_fp16(st));
                    hu[(i * c->Hkv + hk) * Dk + e] =
                        nsa_v_half_ulp(st, dt) + fabs(m) * 1.2e-7;
                }
        for (i = 0; i < nq; ++i) {
            const int64_t t = nk - nq + i; /* position in the sequence */
            int64_t nvis = t >= l - 1 ? (t - l + 1) / d + 1 : 0, ci;
            if (nvis > nc) nvis = nc;
            for (h = 0; h < c->H; ++h) {
                const double *qq = q + ((q0 + i) * c->H + h) * Dk;
                double mx = 0.0;
                hk = h / G;
                for (ci = 0; ci < nvis; ++ci) {
                    const double *u = hu + (ci * c->Hkv + hk) * Dk;
                    double a = 0.0;
                    for (e = 0; e < Dk; ++e) a += fabs(qq[e]) * u[e];
                    if (a > mx) mx = a;
                }
                M[(q0 + i) * c->H + h] = sc * mx;
            }
        }
        kc0 += nc;
    }
    (void)kc0;
    free(hu);
    return 0;
}

/* Loads the expected selection of a run in storage dt: DIR/NAME.<dt>.npy
   (a generated case's run in that type) if there, else DIR/NAME.npy. */
static NSAV__UNUSED int nsa_v__load_sel(const nsa_vcase *c, const char *name,
                                        nsa_dtype dt, int64_t count,
                                        int32_t **out, char *err, size_t len)
{
    char sname[64];
    int rc = 0;
    nsa_v__fmt(sname, sizeof sname, "%s.%s", name, nsa_vectors_dtype_name(dt));
    rc = nsa_v_load_i32(c->dir, sname, count, out, NULL, err, len);
    if (rc == 0) rc = nsa_v_load_i32(c->dir, name, count, out, NULL, err, len);
    return rc;
}

/* Runs the reference in storage dt on case c and checks every array the
   case has.

   The selection must match the expected one exactly. In a 16-bit storage
   type there is one allowance, because the contract rounds K_cmp to the
   storage type before scoring: a (unit, kv head) row may differ where the
   run's own block scores tie within the storage tolerance (see
   nsa_v_explain_sel); it is reported as a note, and the run is repeated on
   the expected selection (the API's caller-selection mode) so that the
   output checks measure the storage numerics rather than a different
   block. In fp32 storage no difference is allowed. */
NSAVDEF void nsa_vectors_check_run(const nsa_vcase *c, const nsa_vinputs *in,
                                   nsa_dtype dt, int *passed, int *failed)
{
    nsa_vrun r;
    char err[512], label[512];
    const char *dn = nsa_vectors_dtype_name(dt);
    static const char *lse_names[3] = {"lse_cmp", "lse_slc", "lse_win"};
    const double L = nsa_v_max_lse(c->dir);
    const double rtol = nsa_vectors_rtol_for(dt, L);
    double *kbound = NULL;
    int64_t TQ = c->TQ, shape[3];
    int i;
    const double mdq = nsa_v_maxabs_file(c->dir, "dq");
    const double mdk = nsa_v_maxabs_file(c->dir, "dk");
    double fl;
    if (nsa_vrun_exec(c, in, dt, NSA_ACCUM_FP32, NULL, NULL, &r, err,
                      sizeof err) != 0) {
        printf("FAIL %s/run(%s): %s\n", c->name, dn, err);
        ++*failed;
        return;
    }
    if (r.inexact)
        printf("note %s(%s): %lld input values are not exact in %s; the "
               "comparison is not meaningful for them\n", c->name, dn,
               (long long)r.inexact, dn);
    if (dt != NSA_FP32 && (c->cfg.branches & NSA_BRANCH_CMP)) {
        kbound = (double *)nsa_v__alloc(r.sz.lse, sizeof(double));
        if (!kbound || nsa_v_lse_cmp_bound(c, in->q, in->k, dt, kbound) != 0) {
            printf("FAIL %s/lse_cmp(%s): out of memory\n", c->name, dn);
            ++*failed;
            free(kbound);
            kbound = NULL;
        }
    }
    if (c->cfg.branches & NSA_BRANCH_SLC) {
        int32_t *exp = NULL, *base = NULL, *cnt = NULL;
        int64_t k, e, rows = r.sz.units * c->Hkv;
        int rc = nsa_v__load_sel(c, "sel_idx", dt, r.sz.sel_idx, &exp, err,
                                 sizeof err);
        int differs = 0;
        nsa_v__fmt(label, sizeof label, "%s/%s(%s)", c->name, "sel_idx", dn);
        if (rc < 0) {
            printf("FAIL %s: %s\n", label, err);
            ++*failed;
        } else if (rc == 1) {
            int same = 1;
            for (k = 0; k < r.sz.sel_idx; ++k)
                if (r.sel_idx[k] != exp[k]) same = 0;
            if (same) {
                ++*passed;
                if (nsa_vectors_verbose)
                    printf("ok   %s: all %lld rows equal\n", label,
                           (long long)rows);
            } else if (dt == NSA_FP32) {
                nsa_v__count(nsa_v_check_sel(label, r.sel_idx, exp, r.sz.units,
                                             c->Hkv, c->cfg.n), passed, failed);
            } else {
                nsa_v__count(nsa_v_explain_sel(label, &r, exp), passed,
                             failed);
            }
        }
        free(exp);
        exp = NULL;
        rc = nsa_v__load_sel(c, "sel_count", dt, r.sz.sel_count, &exp, err,
                             sizeof err);
        nsa_v__fmt(label, sizeof label, "%s/%s(%s)", c->name, "sel_count", dn);
        if (rc < 0) {
            printf("FAIL %s: %s\n", label, err);
            ++*failed;
        } else if (rc == 1) {
            nsa_v__count(nsa_v_check_sel(label, r.sel_count, exp, r.sz.units,
                                         c->Hkv, 1), passed, failed);
        }
        free(exp);
        /* The expected outputs were computed on the selection of
           sel_idx.npy. Where this run selected otherwise (a near-tie of a
           16-bit storage type, a generated case whose storage run selected
           otherwise, or an error already reported above), the rest of the
           run is repeated on that selection, handed in through the API's
           caller-selection mode, so that the output checks measure the
           numerics, not a different block. */
        if (nsa_v_load_i32(c->dir, "sel_idx", r.sz.sel_idx, &base, NULL, err,
                           sizeof err) == 1) {
            for (k = 0; k < r.sz.sel_idx; ++k)
                if (r.sel_idx[k] != base[k]) differs = 1;
        }
        if (differs) {
            cnt = (int32_t *)nsa_v__alloc(rows, sizeof(int32_t));
            for (k = 0; cnt && k < rows; ++k)
                for (e = 0; e < c->cfg.n; ++e)
                    if (base[k * c->cfg.n + e] >= 0) ++cnt[k];
            nsa_vrun_free(&r);
            if (!cnt || nsa_vrun_exec(c, in, dt, NSA_ACCUM_FP32, base, cnt, &r,
                                      err, sizeof err) != 0) {
                printf("FAIL %s/run(%s, expected selection): %s\n", c->name,
                       dn, cnt ? err : "out of memory");
                ++*failed;
                free(cnt);
                free(base);
                return;
            }
            printf("note %s(%s): the outputs below are computed on the "
                   "selection of sel_idx.npy (caller-selection mode), the one "
                   "the expected values were computed on\n", c->name, dn);
        }
        free(cnt);
        free(base);
    }
    {   /* o */
        double *g = nsa_v_storage_to_f64(r.o, dt, r.sz.o);
        shape[0] = TQ; shape[1] = c->H; shape[2] = c->Dv;
        nsa_v__check_named(c, "o", dn, g, r.sz.o, 3, shape, rtol, FLT_MIN, 0, NULL,
                           passed, failed);
        free(g);
    }
    for (i = 0; i < 3; ++i) {
        double *g;
        if (!(c->cfg.branches & (1u << i))) continue;
        g = nsa_v_f32_to_f64(r.lse[i], r.sz.lse);
        shape[0] = TQ; shape[1] = c->H;
        /* fp32 rounding per element; in 16-bit storage lse_cmp also the
           bound of K_cmp's rounding (nsa_v_lse_cmp_bound) */
        nsa_v__check_named(c, lse_names[i], dn, g, r.sz.lse, 2, shape,
                           NSA_VTOL_LSE, 1.0, 1, i == 0 ? kbound : NULL,
                           passed, failed);
        free(g);
    }
    if (c->cfg.branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) {
        double *g = nsa_v_storage_to_f64(r.k_cmp, dt, r.sz.k_cmp);
        shape[0] = r.sz.Tc; shape[1] = c->Hkv; shape[2] = c->Dk;
        nsa_v__check_named(c, "k_cmp", dn, g, r.sz.k_cmp, 3, shape, rtol,
                           FLT_MIN, 0, NULL, passed, failed);
        free(g);
        g = nsa_v_storage_to_f64(r.v_cmp, dt, r.sz.v_cmp);
        shape[2] = c->Dv;
        nsa_v__check_named(c, "v_cmp", dn, g, r.sz.v_cmp, 3, shape, rtol,
                           FLT_MIN, 0, NULL, passed, failed);
        free(g);
    }
    {
        double *g = nsa_v_storage_to_f64(r.dq, dt, r.sz.q);
        shape[0] = TQ; shape[1] = c->H; shape[2] = c->Dk;
        fl = NSA_VGRAD_FLOOR * mdk;
        nsa_v__check_named(c, "dq", dn, g, r.sz.q, 3, shape, rtol,
                           fl > FLT_MIN ? fl : FLT_MIN, 0, NULL, passed, failed);
        free(g);
        g = nsa_v_storage_to_f64(r.dk, dt, r.sz.k);
        shape[0] = c->T; shape[1] = c->Hkv;
        fl = NSA_VGRAD_FLOOR * mdq;
        nsa_v__check_named(c, "dk", dn, g, r.sz.k, 3, shape, rtol,
                           fl > FLT_MIN ? fl : FLT_MIN, 0, NULL, passed, failed);
        free(g);
        g = nsa_v_storage_to_f64(r.dv, dt, r.sz.v);
        shape[2] = c->Dv;
        nsa_v__check_named(c, "dv", dn, g, r.sz.v, 3, shape, rtol, FLT_MIN, 0, NULL,
                           passed, failed);
        free(g);
        if (c->has_gates) {
            g = nsa_v_storage_to_f64(r.dgates, dt, r.sz.gates);
            shape[0] = TQ; shape[1] = c->H; shape[2] = 3;
            nsa_v__check_named(c, "dgates", dn, g, r.sz.gates, 3, shape, rtol,
                               FLT_MIN, 0, NULL, passed, failed);
            free(g);
        }
    }
    free(kbound);
    nsa_vrun_free(&r);
}

/* Checks one case in fp32 and bf16 storage (and fp16 when that is the
   case's own storage type). */
NSAVDEF void nsa_vectors_check_case(const nsa_vcase *c, int *passed,
                                    int *failed)
{
    nsa_vinputs in;
    char err[512];
    int p0 = *passed, f0 = *failed;
    int64_t b;
    int32_t *cu = NULL;
    int rc, k;
    /* cu_seqlens.npy and cu_seqlens_q.npy, where present, must agree with
       the parameters (cu, cu_q); a cu_seqlens_q.npy without cu_q in the
       parameters is a case this reader would misread, so it fails. */
    for (k = 0; k < 2; ++k) {
        const char *nm = k ? "cu_seqlens_q" : "cu_seqlens";
        const int32_t *want = k ? c->cu_q : c->cu;
        rc = nsa_v_load_i32(c->dir, nm, c->B + 1, &cu, NULL, err, sizeof err);
        if (rc == 1 && !want) {
            nsa_v__fmt(err, sizeof err, "the file is there, but the case's "
                       "parameters have no cu_q");
            rc = -1;
        }
        if (rc < 0) {
            printf("FAIL %s/%s: %s\n", c->name, nm, err);
            ++*failed;
            free(cu);
            return;
        }
        if (rc == 1) {
            for (b = 0; b <= c->B; ++b)
                if (cu[b] != want[b]) {
                    printf("FAIL %s/%s: entry %lld is %d in the file and %d"
                           " in the case's parameters\n", c->name, nm,
                           (long long)b, cu[b], want[b]);
                    ++*failed;
                    free(cu);
                    return;
                }
        }
        free(cu);
        cu = NULL;
    }
    if (nsa_vinputs_load(c, &in, err, sizeof err) != 0) {
        printf("FAIL %s/inputs: %s\n", c->name, err);
        ++*failed;
        return;
    }
    nsa_vectors_check_run(c, &in, NSA_FP32, passed, failed);
    nsa_vectors_check_run(c, &in, NSA_BF16, passed, failed);
    if (c->storage == NSA_FP16)
        nsa_vectors_check_run(c, &in, NSA_FP16, passed, failed);
    nsa_vinputs_free(&in);
    printf("case %-28s %3d passed, %d failed\n", c->name, *passed - p0,
           *failed - f0);
}

static NSAV__UNUSED int nsa_v__cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static NSAV__UNUSED void nsa_v__check_one_folder(const char *dir,
                                                 int has_nested, int *passed,
                                                 int *failed);

/* Names (sorted, malloc'ed; *n of them) of the subfolders of dir that hold
   a cases.json of their own: nested folders of cases. */
static NSAV__UNUSED char **nsa_v__nested_folders(const char *dir, int *n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    int cap = 0;
    *n = 0;
    if (!d) return NULL;
    while ((e = readdir(d)) != NULL) {
        char own[1300];
        if (e->d_name[0] == '.') continue;
        nsa_v__fmt(own, sizeof own, "%s/%s/cases.json", dir, e->d_name);
        if (!nsa_v_file_exists(own)) continue;
        if (*n == cap) {
            char **nn;
            cap = cap ? 2 * cap : 8;
            nn = (char **)realloc(names, (size_t)cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        names[*n] = (char *)malloc(strlen(e->d_name) + 1);
        if (!names[*n]) break;
        strcpy(names[(*n)++], e->d_name);
    }
    closedir(d);
    if (*n > 1) qsort(names, (size_t)*n, sizeof *names, nsa_v__cmp_str);
    return names;
}

/* Reads DIR (see the top of this file for the layouts) and checks every
   case, then every nested folder of cases below it (a subfolder with its
   own cases.json, e.g. suffix_and_sharp/ beside the cases of
   cases.json). passed / failed are incremented per check. */
static NSAV__UNUSED void nsa_v__check_folder(const char *dir, int depth,
                                             int *passed, int *failed)
{
    int i, nn = 0;
    char **nested = depth < 4 ? nsa_v__nested_folders(dir, &nn) : NULL;
    nsa_v__check_one_folder(dir, nn > 0, passed, failed);
    for (i = 0; i < nn; ++i) {
        char sub[1200];
        nsa_v__fmt(sub, sizeof sub, "%s/%s", dir, nested[i]);
        printf("folder %s\n", sub);
        nsa_v__check_folder(sub, depth + 1, passed, failed);
        free(nested[i]);
    }
    free(nested);
}

static NSAV__UNUSED void nsa_vectors_check_folder(const char *dir, int *passed,
                                                   int *failed)
{
    nsa_v__check_folder(dir, 0, passed, failed);
}

/* The cases of dir itself (cases.json, case.json or case folders). */
static NSAV__UNUSED void nsa_v__check_one_folder(const char *dir,
                                                 int has_nested, int *passed,
                                                 int *failed)
{
    char path[1200], err[512];
    json_value root;
    nsa_vcase c;
    int i;
    nsa_v__fmt(path, sizeof path, "%s/cases.json", dir);
    if (nsa_v_file_exists(path)) {
        if (json_parse_file(path, &root, err, sizeof err) != 0 ||
            root.type != JSON_ARRAY) {
            printf("FAIL %s: %s\n", path,
                   root.type != JSON_ARRAY ? "not a JSON array" : err);
            json_free(&root);
            ++*failed;
            return;
        }
        for (i = 0; i < root.len; ++i) {
            const json_value *e = &root.items[i];
            const char *name = json_str(json_get(e, "name"), NULL);
            char sub[1200], own[1300];
            int rc;
            if (!name) {
                printf("FAIL %s: entry %d has no name\n", path, i);
                ++*failed;
                continue;
            }
            nsa_v__fmt(sub, sizeof sub, "%s/%s", dir, name);
            nsa_v__fmt(own, sizeof own, "%s/case.json", sub);
            if (nsa_v_file_exists(own))
                rc = nsa_vcase_load_own(sub, &c, err, sizeof err);
            else
                rc = nsa_vcase_from_json(e, sub, &c, err, sizeof err);
            if (rc != 0) {
                printf("FAIL %s: %s\n", name, err);
                ++*failed;
            } else {
                nsa_vectors_check_case(&c, passed, failed);
            }
            nsa_vcase_free(&c);
        }
        json_free(&root);
        return;
    }
    nsa_v__fmt(path, sizeof path, "%s/case.json", dir);
    if (nsa_v_file_exists(path)) {
        if (nsa_vcase_load_own(dir, &c, err, sizeof err) != 0) {
            printf("FAIL %s: %s\n", dir, err);
            ++*failed;
        } else {
            nsa_vectors_check_case(&c, passed, failed);
        }
        nsa_vcase_free(&c);
        return;
    }
    {   /* a folder of case folders, in name order */
        DIR *d = opendir(dir);
        struct dirent *e;
        char **names = NULL;
        int n = 0, cap = 0;
        if (!d) {
            printf("FAIL %s: cannot open folder\n", dir);
            ++*failed;
            return;
        }
        while ((e = readdir(d)) != NULL) {
            char own[1300];
            if (e->d_name[0] == '.') continue;
            nsa_v__fmt(own, sizeof own, "%s/%s/case.json", dir, e->d_name);
            if (!nsa_v_file_exists(own)) continue;
            if (n == cap) {
                char **nn;
                cap = cap ? 2 * cap : 16;
                nn = (char **)realloc(names, (size_t)cap * sizeof *nn);
                if (!nn) break;
                names = nn;
            }
            names[n] = (char *)malloc(strlen(e->d_name) + 1);
            if (!names[n]) break;
            strcpy(names[n++], e->d_name);
        }
        closedir(d);
        if (n == 0 && !has_nested) {
            printf("FAIL %s: no cases.json, no case.json, no case folders\n",
                   dir);
            ++*failed;
        }
        if (n > 1) qsort(names, (size_t)n, sizeof *names, nsa_v__cmp_str);
        for (i = 0; i < n; ++i) {
            char sub[1200];
            nsa_v__fmt(sub, sizeof sub, "%s/%s", dir, names[i]);
            if (nsa_vcase_load_own(sub, &c, err, sizeof err) != 0) {
                printf("FAIL %s: %s\n", names[i], err);
                ++*failed;
            } else {
                nsa_vectors_check_case(&c, passed, failed);
            }
            nsa_vcase_free(&c);
            free(names[i]);
        }
        free(names);
    }
}

#endif /* NSA_TOOLS_VECTORS_H */
