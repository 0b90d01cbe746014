/* test_nsa.c -- the test suite of the CPU reference (nsa_ref.h).

   Build (from the repository root):
     gcc -std=c99 -O2 -fopenmp -ffp-contract=off -Wall -Wextra -Werror \
         -pedantic -I. tests/test_nsa.c -lm -o build/test_nsa
   Run from the repository root:
     build/test_nsa [vectors-folder]
   The golden vectors come from argv[1], else $NSA_VECTORS_DIR, else
   ../shared/vectors; a missing folder is a failure unless NSA_SKIP_VECTORS=1
   (then a counted skip). NSA_TEST_SEED=N replays a run; NSA_TEST_QUICK=1
   shrinks the long top-k rows (for sanitizer builds and the mutation
   check); NSA_TEST_STOP=1 exits at the first failure; NSA_TEST_VERBOSE=1
   prints each test's CPU time.

   Each test names the property it checks. Results are compared with an
   independent fp64 oracle (tests/oracle.h) at tolerances derived below, or
   bitwise where the contract promises identical results. Output: one line
   per failing check, then "N passed, N failed"; the exit status is non-zero
   on any failure. */
/* sigsetjmp / siglongjmp (POSIX) let the bad-input tests report a crash
   as a failure and go on. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#define NSA_REF_IMPLEMENTATION
#include "../nsa_ref.h"

#include "check.h"
#include "oracle.h"

#include "../tools/vectors.h"

#include <ctype.h>
#include <float.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* ------------------------------------------------------------------------ */
/* Crash guard. The contract says bad input never crashes; a call that does
   (SIGSEGV, SIGBUS, SIGFPE) is turned into status NSA__CRASHED, which fails
   the check that made it, and the suite goes on. */

#define NSA__CRASHED ((nsa_status)-1)
static sigjmp_buf guard_jmp;
static volatile sig_atomic_t guard_armed;

static void guard_handler(int sig)
{
    if (guard_armed) {
        guard_armed = 0;
        siglongjmp(guard_jmp, sig);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

#define GUARD_CALL(st_, call_)                                   \
    do {                                                         \
        signal(SIGSEGV, guard_handler);                          \
        signal(SIGBUS, guard_handler);                           \
        signal(SIGFPE, guard_handler);                           \
        if (sigsetjmp(guard_jmp, 1) == 0) {                      \
            guard_armed = 1;                                     \
            (st_) = (call_);                                     \
            guard_armed = 0;                                     \
        } else {                                                 \
            (st_) = NSA__CRASHED;                                \
        }                                                        \
        signal(SIGSEGV, SIG_DFL);                                \
        signal(SIGBUS, SIG_DFL);                                 \
        signal(SIGFPE, SIG_DFL);                                 \
    } while (0)

static const char *status_name(nsa_status st)
{
    return st == NSA__CRASHED ? "a crash (signal caught)" : nsa_status_string(st);
}

/* ------------------------------------------------------------------------ */
/* Tolerances against the fp64 oracle.

   The oracle runs on exactly the values the reference reads (bf16/fp16
   inputs rounded first), so the only differences are (a) the accumulation
   type's rounding and (b) the final rounding of each output to the storage
   type. Every output element is checked on its own: it must be the
   correctly rounded (nearest-even, storage type) value of something within
   `acc` of the oracle's value, acc = tol * max |oracle| over the array:

       RN(want - acc) <= got <= RN(want + acc).

   So a 16-bit output may be off by half an ulp of its own magnitude plus
   the fp32 accumulation error, never by a whole ulp of the array's largest
   element, and a few bad elements cannot hide in a relative norm.

   Mean K_cmp is its own output: it must be the correctly rounded mean of
   an fp32 sum of l inputs. Within that, an exact mean near a rounding
   midpoint may round either way; the oracle then continues from the
   reference's K_cmp (oracle_in.k_cmp_used), so that one-ulp choice is not
   charged to the attention downstream.

   fp32 accumulation: sums of a few hundred terms err by ~sqrt(n) * 2^-24
         relative to the terms' scale, ~1e-6 (observed up to ~2e-7 on o and
         lse, ~2e-6 on gradients); we allow 1e-5 on o and lse, 3e-5 on
         gradients (dS = P (dP - D) cancels, and dK/dV sum over every query
         that reads a key), whatever the storage type.
   fp64 accumulation: lse and K_cmp are exact but for one rounding: 1e-10;
         o adds the branch outputs after rounding each to fp32 (the stage
         outputs are fp32): 2e-7. The backward reads the fp32 saved lse, whose
         rounding (|lse| * 2^-24) reaches P = exp(s - lse): 1e-6 (the
         contract's "rounding of fp32 accumulation"), see
         test_fp64_accumulation_matches_oracle_at_its_precision. */
typedef struct tols {
    double o, lse, grad, kcmp; /* acc, relative to max |oracle| of the array */
    double sel; /* two blocks whose oracle scores differ by less than this
                   (relative to the row's largest) may trade places: the
                   reference's fp32 scores cannot order them */
} tols;

static tols tols_fp32acc(void)
{
    tols t;
    t.o = 1e-5;
    t.lse = 1e-5;
    t.grad = 3e-5;
    t.kcmp = 1e-5;
    t.sel = 1e-4;
    return t;
}

static check_fmt dtype_fmt(nsa_dtype t)
{
    return t == NSA_FP32 ? check_fmt_fp32 : t == NSA_BF16 ? check_fmt_bf16
                                                          : check_fmt_fp16;
}
/* When > 0, the tolerance of every array in compare_with_oracle (the fp64
   accumulation mode is held to it). */
static double tol_force;

static const char *dtype_name(nsa_dtype t)
{
    return t == NSA_FP32 ? "fp32" : t == NSA_BF16 ? "bf16" : "fp16";
}

/* Worst error seen against the oracle, per storage type, for the summary. */
static double worst_o[4], worst_lse[4], worst_grad[4]; /* [3]: fp64 accum */
/* Largest error of the last compare_with_oracle over o and the gradients
   (of max |oracle|), and over lse (of max(1, max |lse|)). */
static double last_err_out, last_err_lse;
static long near_tie_rows;
static int quick_mode;

static double round_fp32(double x) { return (double)(float)x; }
static double round_bf16(double x) { return nsa_bf16_to_f32(nsa_f32_to_bf16((float)x)); }
static double round_fp16(double x) { return nsa_fp16_to_f32(nsa_f32_to_fp16((float)x)); }

static void *xcalloc(int64_t n, size_t sz)
{
    void *p = calloc((size_t)(n > 0 ? n : 1), sz);
    if (!p) {
        printf("out of memory\n");
        exit(2);
    }
    return p;
}

/* ------------------------------------------------------------------------ */
/* A test problem: random inputs in the storage type and their exact values
   as doubles. */

#define MAXB 16

/* q, k and v are drawn at this multiple of their usual ranges (sharp
   inputs: at 6-8 a softmax row puts nearly all its weight on one key and
   |lse| reaches the hundreds). */
static double prob_input_scale = 1.0;

typedef struct prob {
    nsa_config cfg;
    nsa_dtype dt;
    int B, H, Hkv, Dk, Dv, has_q, has_gates;
    int32_t cu[MAXB + 1], cuq[MAXB + 1];
    int64_t T, TQ, Tc;
    void *q, *k, *v, *g, *kc, *vc, *dO;
    double *qd, *kd, *vd, *gd, *kcd, *vcd, *dOd;
    const int32_t *sel_idx, *sel_count; /* caller selection, or NULL */
} prob;

static void tensor_fill(nsa_dtype dt, int64_t n, double lo, double hi, void **st,
                        double **d)
{
    int64_t i;
    *st = xcalloc(n, nsa_dtype_size(dt));
    *d = (double *)xcalloc(n, sizeof(double));
    for (i = 0; i < n; ++i) {
        nsa_store(*st, dt, i, (float)check_uniform(lo, hi));
        (*d)[i] = nsa_load(*st, dt, i);
    }
}

/* Re-reads the double copy of a storage tensor after a test edited it. */
static void tensor_sync(nsa_dtype dt, int64_t n, const void *st, double *d)
{
    int64_t i;
    for (i = 0; i < n; ++i) d[i] = nsa_load(st, dt, i);
}

static void to_double(nsa_dtype dt, int64_t n, const void *st, double *d)
{
    tensor_sync(dt, n, st, d);
}

/* klen: keys per sequence; qlen: queries per sequence (NULL: all). */
static void prob_make(prob *p, const nsa_config *cfg, nsa_dtype dt, int B,
                      const int *klen, const int *qlen, int H, int Hkv, int Dk,
                      int Dv, int gates)
{
    int b;
    memset(p, 0, sizeof *p);
    p->cfg = *cfg;
    p->dt = dt;
    p->B = B;
    p->H = H;
    p->Hkv = Hkv;
    p->Dk = Dk;
    p->Dv = Dv;
    p->has_gates = gates;
    p->has_q = qlen != NULL;
    for (b = 0; b < B; ++b) {
        p->cu[b + 1] = p->cu[b] + klen[b];
        p->cuq[b + 1] = p->cuq[b] + (qlen ? qlen[b] : klen[b]);
        if (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
            p->Tc += nsa_cmp_blocks(klen[b], cfg->l, cfg->d);
    }
    p->T = p->cu[B];
    p->TQ = p->cuq[B];
    /* q a little wider than k so that softmaxes are not flat. */
    tensor_fill(dt, p->TQ * H * Dk, -1.5 * prob_input_scale,
                1.5 * prob_input_scale, &p->q, &p->qd);
    tensor_fill(dt, p->T * Hkv * Dk, -prob_input_scale, prob_input_scale,
                &p->k, &p->kd);
    tensor_fill(dt, p->T * Hkv * Dv, -prob_input_scale, prob_input_scale,
                &p->v, &p->vd);
    tensor_fill(dt, p->TQ * H * 3, 0.05, 1.0, &p->g, &p->gd);
    tensor_fill(dt, p->TQ * H * Dv, -1.0, 1.0, &p->dO, &p->dOd);
    tensor_fill(dt, p->Tc * Hkv * Dk, -prob_input_scale, prob_input_scale,
                &p->kc, &p->kcd);
    tensor_fill(dt, p->Tc * Hkv * Dv, -1.0, 1.0, &p->vc, &p->vcd);
}

static void prob_free(prob *p)
{
    free(p->q); free(p->k); free(p->v); free(p->g); free(p->kc); free(p->vc);
    free(p->dO);
    free(p->qd); free(p->kd); free(p->vd); free(p->gd); free(p->kcd);
    free(p->vcd); free(p->dOd);
}

static nsa_batch prob_batch(const prob *p)
{
    nsa_batch x;
    memset(&x, 0, sizeof x);
    x.B = p->B;
    x.T = p->T;
    x.TQ = p->TQ;
    x.cu_seqlens = p->cu;
    x.cu_seqlens_q = p->has_q ? p->cuq : NULL;
    x.H = p->H;
    x.Hkv = p->Hkv;
    x.Dk = p->Dk;
    x.Dv = p->Dv;
    x.dtype = p->dt;
    x.q = p->q;
    x.k = p->k;
    x.v = p->v;
    if (p->cfg.caller_compressed) {
        x.k_cmp = p->kc;
        x.v_cmp = p->vc;
    }
    x.sel_idx = p->sel_idx;
    x.sel_count = p->sel_count;
    return x;
}

static const void *prob_gates(const prob *p) { return p->has_gates ? p->g : NULL; }

static oracle_in prob_oracle_in(const prob *p)
{
    oracle_in in;
    memset(&in, 0, sizeof in);
    in.cfg = &p->cfg;
    in.B = p->B;
    in.cu_k = p->cu;
    in.cu_q = p->has_q ? p->cuq : NULL;
    in.H = p->H;
    in.Hkv = p->Hkv;
    in.Dk = p->Dk;
    in.Dv = p->Dv;
    in.q = p->qd;
    in.k = p->kd;
    in.v = p->vd;
    in.gates = p->has_gates ? p->gd : NULL;
    in.k_cmp = p->kcd;
    in.v_cmp = p->vcd;
    in.sel_idx = p->sel_idx;
    in.sel_count = p->sel_count;
    in.round_cmp = p->dt == NSA_FP32 ? round_fp32
                 : p->dt == NSA_BF16 ? round_bf16 : round_fp16;
    return in;
}

/* ------------------------------------------------------------------------ */
/* One run of the reference, owning every buffer. */

typedef struct run {
    nsa_status st, bst;
    nsa_sizes sz;
    nsa_dtype dt;
    void *o;
    float *lse[3];
    int32_t *sel_idx, *sel_count;
    void *kc, *vc;
    nsa_saved sv;
    void *ws;
    size_t wsb;
    nsa_grads gr;
} run;

static void run_free(run *r)
{
    int c;
    free(r->o);
    for (c = 0; c < 3; ++c) free(r->lse[c]);
    free(r->sel_idx); free(r->sel_count); free(r->kc); free(r->vc);
    free(r->ws);
    free(r->gr.dq); free(r->gr.dk); free(r->gr.dv); free(r->gr.dgates);
    free(r->gr.dk_cmp); free(r->gr.dv_cmp);
    memset(r, 0, sizeof *r);
}

/* Every output buffer is filled with poison before every call, and every
   element the call owns must have been written after it: float buffers get
   all-ones bits (a NaN in fp32, bf16 and fp16 that no computation makes:
   arithmetic NaNs are 0x7fc00000 / 0xffc00000 and their 16-bit roundings),
   index buffers 0xA5 bytes (neither -1 nor a block). */
#define FILL_F 0xFF
#define FILL_I 0xA5

static const char *cur_test = "?"; /* the running test, for these checks */

static void fill(void *p, int64_t n, size_t es, int byte)
{
    if (p && n > 0) memset(p, byte, (size_t)n * es);
}

/* Elements of n (size es) still all `byte`; *first the first one. */
static int64_t unwritten(const void *p, int64_t n, size_t es, int byte,
                         int64_t *first)
{
    const unsigned char *c = (const unsigned char *)p;
    int64_t i, bad = 0;
    size_t j;
    *first = -1;
    for (i = 0; i < n; ++i) {
        int all = 1;
        for (j = 0; j < es && all; ++j) all = c[(size_t)i * es + j] == byte;
        if (all) {
            if (*first < 0) *first = i;
            ++bad;
        }
    }
    return bad;
}

static void check_written(const char *what, const void *p, int64_t n, size_t es,
                          int byte)
{
    int64_t first, bad = unwritten(p, n, es, byte, &first);
    CHECK(cur_test, bad == 0, "%s: %lld of %lld elements were not written "
          "(first: %lld)", what, (long long)bad, (long long)n, (long long)first);
}

static void run_fill_forward(run *r)
{
    size_t es = nsa_dtype_size(r->dt);
    int c;
    fill(r->o, r->sz.o, es, FILL_F);
    for (c = 0; c < 3; ++c) fill(r->lse[c], r->sz.lse, 4, FILL_F);
    fill(r->sel_idx, r->sz.sel_idx, 4, FILL_I);
    fill(r->sel_count, r->sz.sel_count, 4, FILL_I);
    fill(r->kc, r->sz.k_cmp, es, FILL_F);
    fill(r->vc, r->sz.v_cmp, es, FILL_F);
}

static void run_fill_backward(run *r)
{
    size_t es = nsa_dtype_size(r->dt);
    fill(r->gr.dq, r->sz.q, es, FILL_F);
    fill(r->gr.dk, r->sz.k, es, FILL_F);
    fill(r->gr.dv, r->sz.v, es, FILL_F);
    fill(r->gr.dgates, r->sz.gates, es, FILL_F);
    fill(r->gr.dk_cmp, r->sz.k_cmp, es, FILL_F);
    fill(r->gr.dv_cmp, r->sz.v_cmp, es, FILL_F);
}

/* Sizes, workspace and saved buffers for cfg/batch; NSA_OK or the status. */
static nsa_status run_alloc(run *r, const nsa_config *cfg, const nsa_batch *x)
{
    size_t es = nsa_dtype_size(x->dtype);
    int c;
    memset(r, 0, sizeof *r);
    r->dt = x->dtype;
    if ((r->st = nsa_sizes_get(cfg, x, &r->sz)) != NSA_OK) return r->st;
    if ((r->st = nsa_ref_workspace_size(cfg, x, &r->wsb)) != NSA_OK) return r->st;
    r->ws = xcalloc((int64_t)r->wsb, 1);
    fill(r->ws, (int64_t)r->wsb, 1, FILL_F);
    r->o = xcalloc(r->sz.o, es);
    for (c = 0; c < 3; ++c) r->lse[c] = (float *)xcalloc(r->sz.lse, sizeof(float));
    r->sel_idx = (int32_t *)xcalloc(r->sz.sel_idx, sizeof(int32_t));
    r->sel_count = (int32_t *)xcalloc(r->sz.sel_count, sizeof(int32_t));
    r->kc = xcalloc(r->sz.k_cmp, es);
    r->vc = xcalloc(r->sz.v_cmp, es);
    r->sv.lse_cmp = r->lse[0];
    r->sv.lse_slc = r->lse[1];
    r->sv.lse_win = r->lse[2];
    r->sv.sel_idx = r->sel_idx;
    r->sv.sel_count = r->sel_count;
    r->sv.k_cmp = r->kc;
    r->sv.v_cmp = r->vc;
    r->gr.dq = xcalloc(r->sz.q, es);
    r->gr.dk = xcalloc(r->sz.k, es);
    r->gr.dv = xcalloc(r->sz.v, es);
    r->gr.dgates = xcalloc(r->sz.gates, es);
    r->gr.dk_cmp = xcalloc(r->sz.k_cmp, es);
    r->gr.dv_cmp = xcalloc(r->sz.v_cmp, es);
    run_fill_forward(r);
    run_fill_backward(r);
    return NSA_OK;
}

/* Forward into poisoned buffers; on success every element forward owns
   must have been written. planes: saved.o_branch (the caller's, not freed
   by run_free), or NULL. */
static nsa_status run_forward_planes(run *r, const nsa_config *cfg,
                                     const nsa_batch *x, const void *gates,
                                     float *planes)
{
    size_t es;
    int br;
    if (run_alloc(r, cfg, x) != NSA_OK) return r->st;
    r->sv.o_branch = planes;
    es = nsa_dtype_size(r->dt);
    run_fill_forward(r);
    r->st = nsa_ref_forward(cfg, x, gates, r->o, &r->sv, r->ws, r->wsb);
    if (r->st != NSA_OK) return r->st;
    check_written("forward o", r->o, r->sz.o, es, FILL_F);
    for (br = 0; br < 3; ++br)
        if (cfg->branches & (1u << br))
            check_written(br == 0 ? "forward lse_cmp" : br == 1 ? "forward lse_slc"
                                                                : "forward lse_win",
                          r->lse[br], r->sz.lse, 4, FILL_F);
    if (cfg->branches & NSA_BRANCH_SLC) {
        check_written("forward sel_idx", r->sel_idx, r->sz.sel_idx, 4, FILL_I);
        check_written("forward sel_count", r->sel_count, r->sz.sel_count, 4, FILL_I);
    }
    if (!cfg->caller_compressed &&
        (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))) {
        check_written("forward saved k_cmp", r->kc, r->sz.k_cmp, es, FILL_F);
        check_written("forward saved v_cmp", r->vc, r->sz.v_cmp, es, FILL_F);
    }
    return r->st;
}

static nsa_status run_forward(run *r, const nsa_config *cfg, const nsa_batch *x,
                              const void *gates)
{
    return run_forward_planes(r, cfg, x, gates, NULL);
}

/* Backward into poisoned gradient buffers; on success every element
   backward owns must have been written (zeros included: a key no query
   reads, a sequence without queries). */
static nsa_status run_backward(run *r, const nsa_config *cfg, const nsa_batch *x,
                               const void *gates, const void *d_o)
{
    size_t es = nsa_dtype_size(r->dt);
    run_fill_backward(r);
    r->bst = nsa_ref_backward(cfg, x, gates, d_o, &r->sv, &r->gr, r->ws, r->wsb);
    if (r->bst != NSA_OK) return r->bst;
    check_written("backward dq", r->gr.dq, r->sz.q, es, FILL_F);
    check_written("backward dk", r->gr.dk, r->sz.k, es, FILL_F);
    check_written("backward dv", r->gr.dv, r->sz.v, es, FILL_F);
    if (gates) check_written("backward dgates", r->gr.dgates, r->sz.gates, es, FILL_F);
    if (cfg->caller_compressed &&
        (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))) {
        check_written("backward dk_cmp", r->gr.dk_cmp, r->sz.k_cmp, es, FILL_F);
        check_written("backward dv_cmp", r->gr.dv_cmp, r->sz.v_cmp, es, FILL_F);
    }
    return r->bst;
}

static int status_ok(const char *name, const char *what, nsa_status st)
{
    return CHECK(name, st == NSA_OK, "%s returned %s (%s)", what,
                 status_name(st), nsa_last_error());
}

/* ------------------------------------------------------------------------ */
/* Comparisons with the oracle. */

/* Element-wise: got (format f, named fname) against the oracle, see
   "Tolerances". Returns max |got - want| / max |want| for the summary. */
static double cmp_elems(const char *name, const char *what, const double *g,
                        check_fmt f, const char *fname, const double *want,
                        int64_t n, double tol, double floor_)
{
    double scale = floor_, e;
    int64_t i, bad, first;
    for (i = 0; i < n; ++i)
        if (isfinite(want[i]) && fabs(want[i]) > scale) scale = fabs(want[i]);
    e = check_max_rel_err(g, want, n, floor_);
    bad = check_rounded(g, want, n, f, tol * scale, &first, NULL);
    CHECK(name, bad == 0, "%s (%s): %lld of %lld elements are not the rounded "
          "value within %.1g of max |oracle| (%.3g); first: element %lld = %.9g,"
          " oracle %.9g", what, fname, (long long)bad, (long long)n, tol, scale,
          (long long)first, first >= 0 ? g[first] : 0.0,
          first >= 0 ? want[first] : 0.0);
    return e;
}

static double cmp_store(const char *name, const char *what, const void *got,
                        nsa_dtype dt, const double *want, int64_t n, double tol)
{
    double *g = (double *)xcalloc(n, sizeof(double));
    double e;
    to_double(dt, n, got, g);
    e = cmp_elems(name, what, g, dtype_fmt(dt), dtype_name(dt), want, n, tol, 1e-30);
    free(g);
    return e;
}

/* lse: fp32, -inf where the branch sees no key (must match exactly); the
   scale is max(1, max |lse|). */
static double cmp_lse(const char *name, const char *what, const float *got,
                      const double *want, int64_t n, double tol)
{
    double *g = (double *)xcalloc(n, sizeof(double));
    double e;
    int64_t i;
    for (i = 0; i < n; ++i) g[i] = got[i];
    e = cmp_elems(name, what, g, check_fmt_fp32, "fp32", want, n, tol, 1.0);
    free(g);
    return e;
}

/* How far a block score of the reference may lie from the oracle's (the
   contract's settled rule: a near-tie is accepted only within K_cmp's
   rounding to the storage type, never by a loose fraction). For each unit
   row and block j: bound[j] = sum over the unit's queries t, the group's
   heads h and the overlap pairs of block j of |dp_i|, where
     E_i  = sc * sum_e |q_e| |K_cmp[i]_e| * (us + (Dk + 2) u) + u |z_i|
   bounds the change of the logit z_i when every element of K_cmp[i] moves
   by half a storage ulp (us = 2^-8 bf16, 2^-11 fp16, 2^-24 fp32) plus fp32
   dot-product rounding (u = 2^-24); in logits mode dp_i = E_i, in probs mode
   dp_i = p_i (E_i + sum_k p_k E_k + (nvis + 4) u) (first order of the
   softmax); plus (terms + 2) u times the sum of |terms| for the fp32 sums.
   Computed from the oracle's doubles with its geometry (tests/oracle.h). */
static double *near_tie_bound(const oracle_in *in, const oracle_out *oo,
                              nsa_dtype dt)
{
    const nsa_config *c = in->cfg;
    const double u = 5.9604644775390625e-8;
    const double us = dt == NSA_BF16 ? 1.0 / 256 : dt == NSA_FP16 ? 1.0 / 2048 : u;
    const int G = in->H / in->Hkv, r = c->lp / c->d, lb = c->l / c->d;
    const double sc = in->cfg->scale != 0.0f ? (double)in->cfg->scale
                                              : 1.0 / sqrt((double)in->Dk);
    double *bound = (double *)xcalloc(oo->units * in->Hkv * (oo->maxblk > 0 ? oo->maxblk : 1),
                                      sizeof(double));
    double *z = (double *)xcalloc(oo->Tc + 1, sizeof(double));
    double *E = (double *)xcalloc(oo->Tc + 1, sizeof(double));
    double *pa = (double *)xcalloc(oo->maxblk + 1, sizeof(double));
    int64_t c_acc = 0, u_acc = 0, un, i, ic, j;
    int b, hk, h, x;
    for (b = 0; b < in->B; ++b) {
        oracle__seq sq = oracle__seq_at(in, b, &c_acc, &u_acc);
        for (un = 0; un < sq.nu; ++un) {
            int64_t ilo = un * c->bq, ihi = ilo + c->bq;
            if (ihi > sq.nq) ihi = sq.nq;
            for (hk = 0; hk < in->Hkv; ++hk) {
                double *bd = bound + ((sq.u0 + un) * in->Hkv + hk) * oo->maxblk;
                const double nadd = (double)((ihi - ilo) * G * lb * r + 2);
                for (j = 0; j < oo->maxblk; ++j) pa[j] = 0.0;
                for (i = ilo; i < ihi; ++i) {
                    const int64_t t = oracle__pos(&sq, i);
                    for (h = hk * G; h < (hk + 1) * G; ++h) {
                        const double *qv = in->q + ((sq.q0 + i) * in->H + h) * in->Dk;
                        int64_t nvis = 0;
                        double m = -INFINITY, sum = 0.0, ebar = 0.0;
                        for (ic = 0; ic < sq.nc && ic * c->d + c->l - 1 <= t; ++ic) {
                            const double *kc = oo->k_cmp + ((sq.c0 + ic) * in->Hkv + hk) * in->Dk;
                            double dot = 0.0, ad = 0.0;
                            for (x = 0; x < in->Dk; ++x) {
                                dot += qv[x] * kc[x];
                                ad += fabs(qv[x] * kc[x]);
                            }
                            z[ic] = sc * dot;
                            E[ic] = sc * ad * (us + (in->Dk + 2) * u) + u * fabs(z[ic]);
                            if (z[ic] > m) m = z[ic];
                            nvis = ic + 1;
                        }
                        if (c->score_mode == NSA_SCORE_PROBS && nvis > 0) {
                            for (ic = 0; ic < nvis; ++ic) sum += exp(z[ic] - m);
                            for (ic = 0; ic < nvis; ++ic) {
                                z[ic] = exp(z[ic] - m) / sum; /* now p_i */
                                ebar += z[ic] * E[ic];
                            }
                            for (ic = 0; ic < nvis; ++ic)
                                E[ic] = z[ic] * (E[ic] + ebar + (double)(nvis + 4) * u);
                        }
                        for (ic = 0; ic < nvis; ++ic)
                            for (j = 0; j < sq.nb; ++j) {
                                int64_t lo = ic > j * r ? ic : j * r;
                                int64_t hi = ic + lb - 1 < (j + 1) * r - 1
                                                 ? ic + lb - 1 : (j + 1) * r - 1;
                                if (hi >= lo) {
                                    bd[j] += (double)(hi - lo + 1) * E[ic];
                                    pa[j] += (double)(hi - lo + 1) * fabs(z[ic]);
                                }
                            }
                    }
                }
                for (j = 0; j < oo->maxblk; ++j) bd[j] += nadd * u * pa[j];
            }
        }
    }
    free(z);
    free(E);
    free(pa);
    return bound;
}

/* Compares the reference's selection with the oracle's: same count, same
   ascending -1-padded rows; a swap is allowed only between blocks a, b
   whose oracle scores differ by at most bound[a] + bound[b]
   (near_tie_bound). bound = NULL allows no swap. Returns the number of rows
   that differ. */
static long cmp_selection(const char *name, const run *r, const oracle_out *oo,
                          int n, int Hkv, const double *bound)
{
    const int exact = bound == NULL;
    int64_t row, rows = oo->units * Hkv;
    long bad = 0, differ = 0;
    char detail[256] = "";
    for (row = 0; row < rows; ++row) {
        const int32_t *a = r->sel_idx + row * n, *b = oo->sel_idx + row * n;
        const double *sc = oo->scores + row * oo->maxblk;
        const double *bd = bound ? bound + row * oo->maxblk : NULL;
        int32_t ca = r->sel_count[row], cb = oo->sel_count[row];
        int e, same = 1, ok = 1;
        if (ca != cb) {
            ok = 0;
            snprintf(detail, sizeof detail, "row %lld: count %d, oracle %d",
                     (long long)row, (int)ca, (int)cb);
        }
        for (e = 0; ok && e < n; ++e) {
            if (e < ca && (a[e] < 0 || a[e] >= oo->maxblk ||
                           (e > 0 && a[e] <= a[e - 1]))) {
                ok = 0;
                snprintf(detail, sizeof detail, "row %lld: entry %d = %d is not"
                         " an ascending valid block", (long long)row, e, (int)a[e]);
            } else if (e >= ca && a[e] != -1) {
                ok = 0;
                snprintf(detail, sizeof detail, "row %lld: padding entry %d = %d"
                         " is not -1", (long long)row, e, (int)a[e]);
            }
            if (a[e] != b[e]) same = 0;
        }
        if (ok && !same) {
            /* Every block in one set and not the other must tie (within tol)
               with every block in the other and not the one. */
            int i, j;
            ++differ;
            for (i = 0; ok && i < ca; ++i) {
                int inb = 0;
                for (j = 0; j < cb; ++j) inb |= b[j] == a[i];
                if (inb) continue;
                for (j = 0; ok && j < cb; ++j) {
                    int ina = 0, k;
                    for (k = 0; k < ca; ++k) ina |= a[k] == b[j];
                    if (ina) continue;
                    if (exact || !(fabs(sc[a[i]] - sc[b[j]]) <= bd[a[i]] + bd[b[j]])) {
                        ok = 0;
                        snprintf(detail, sizeof detail, "row %lld: chose block "
                                 "%d (oracle score %.9g) over block %d (%.9g)",
                                 (long long)row, (int)a[i], sc[a[i]], (int)b[j],
                                 sc[b[j]]);
                    }
                }
            }
        }
        if (!ok) ++bad;
    }
    CHECK(name, bad == 0, "selection: %ld of %lld rows differ from the oracle's "
          "full sort; first: %s", bad, (long long)rows, detail);
    if (!exact) near_tie_rows += differ;
    return differ;
}

/* Exact (double) means of K (which = 0) or V (1) over each compressed
   block, [Tc, Hkv, D], from the storage values the reference reads. */
static double *exact_means(const prob *p, int which)
{
    const int D = which ? p->Dv : p->Dk;
    const double *src = which ? p->vd : p->kd;
    double *m = (double *)xcalloc(p->Tc * p->Hkv * D, sizeof(double));
    int64_t c0 = 0, i, sk;
    int b, hk, x;
    for (b = 0; b < p->B; ++b) {
        int64_t nc = nsa_cmp_blocks(p->cu[b + 1] - p->cu[b], p->cfg.l, p->cfg.d);
        for (i = 0; i < nc; ++i)
            for (hk = 0; hk < p->Hkv; ++hk)
                for (x = 0; x < D; ++x) {
                    double acc = 0.0;
                    for (sk = i * p->cfg.d; sk < i * p->cfg.d + p->cfg.l; ++sk)
                        acc += src[((p->cu[b] + sk) * p->Hkv + hk) * D + x];
                    m[((c0 + i) * p->Hkv + hk) * D + x] = acc / p->cfg.l;
                }
        c0 += nc;
    }
    return m;
}

/* Forward (and backward) of the reference against the oracle, with the
   selection checked first and then held to the reference's own so that
   output errors are not confused with near-tie swaps. */
static void compare_with_oracle_tol(const char *name, prob *p, int backward,
                                    const tols *tl)
{
    nsa_batch x = prob_batch(p);
    oracle_in in = prob_oracle_in(p);
    oracle_out oo, oo2;
    run r;
    const nsa_config *c = &p->cfg;
    const oracle_out *use = &oo;
    int br, dti = c->accum == NSA_ACCUM_FP64 && p->dt == NSA_FP32 ? 3 : (int)p->dt;
    double e, *kc_used = NULL, *vc_used = NULL;
    static const char *lse_name[3] = {"lse_cmp", "lse_slc", "lse_win"};

    if (!status_ok(name, "nsa_ref_forward", run_forward(&r, c, &x, prob_gates(p)))) {
        run_free(&r);
        return;
    }
    if (!c->caller_compressed && r.sz.Tc > 0) {
        /* K_cmp, V_cmp: correctly rounded means (see "Tolerances"); the
           oracle goes on from these. */
        double *mk = exact_means(p, 0), *mv = exact_means(p, 1);
        kc_used = (double *)xcalloc(r.sz.k_cmp, sizeof(double));
        vc_used = (double *)xcalloc(r.sz.v_cmp, sizeof(double));
        to_double(p->dt, r.sz.k_cmp, r.kc, kc_used);
        to_double(p->dt, r.sz.v_cmp, r.vc, vc_used);
        cmp_elems(name, "k_cmp", kc_used, dtype_fmt(p->dt), dtype_name(p->dt), mk,
                  r.sz.k_cmp, tl->kcmp, 1e-30);
        cmp_elems(name, "v_cmp", vc_used, dtype_fmt(p->dt), dtype_name(p->dt), mv,
                  r.sz.v_cmp, tl->kcmp, 1e-30);
        in.k_cmp_used = kc_used;
        in.v_cmp_used = vc_used;
        free(mk);
        free(mv);
    }
    oracle_forward(&in, &oo);
    CHECK(name, r.sz.Tc == oo.Tc && r.sz.units == oo.units,
          "sizes: Tc %lld units %lld, oracle %lld %lld", (long long)r.sz.Tc,
          (long long)r.sz.units, (long long)oo.Tc, (long long)oo.units);
    if ((c->branches & NSA_BRANCH_SLC) && !p->sel_idx) {
        double *bound = near_tie_bound(&in, &oo, p->dt);
        long differ = cmp_selection(name, &r, &oo, c->n, p->Hkv, bound);
        free(bound);
        if (differ) {
            in.sel_idx = r.sel_idx;
            in.sel_count = r.sel_count;
            oracle_forward(&in, &oo2);
            use = &oo2;
        }
    }
    last_err_out = last_err_lse = 0.0;
    e = cmp_store(name, "o", r.o, p->dt, use->o, r.sz.o, tol_force > 0 ? tol_force : tl->o);
    last_err_out = e;
    if (e > worst_o[dti]) worst_o[dti] = e;
    for (br = 0; br < 3; ++br)
        if (c->branches & (1u << br)) {
            e = cmp_lse(name, lse_name[br], r.lse[br], use->lse[br], r.sz.lse,
                        tol_force > 0 ? tol_force : tl->lse);
            if (e > worst_lse[dti]) worst_lse[dti] = e;
            if (e > last_err_lse) last_err_lse = e;
        }
    if (backward && status_ok(name, "nsa_ref_backward",
                              run_backward(&r, c, &x, prob_gates(p), p->dO))) {
        oracle_out *uw = (oracle_out *)use;
        double eg = 0.0;
        const double tg = tol_force > 0 ? tol_force : tl->grad;
        oracle_backward(&in, p->dOd, uw);
        e = cmp_store(name, "dq", r.gr.dq, p->dt, uw->dq, r.sz.q, tg);
        if (e > eg) eg = e;
        e = cmp_store(name, "dk", r.gr.dk, p->dt, uw->dk, r.sz.k, tg);
        if (e > eg) eg = e;
        e = cmp_store(name, "dv", r.gr.dv, p->dt, uw->dv, r.sz.v, tg);
        if (e > eg) eg = e;
        if (p->has_gates) {
            e = cmp_store(name, "dgates", r.gr.dgates, p->dt, uw->dgates,
                          r.sz.gates, tg);
            if (e > eg) eg = e;
        }
        if (c->caller_compressed && r.sz.Tc > 0) {
            e = cmp_store(name, "dk_cmp", r.gr.dk_cmp, p->dt, uw->dk_cmp,
                          r.sz.k_cmp, tg);
            if (e > eg) eg = e;
            e = cmp_store(name, "dv_cmp", r.gr.dv_cmp, p->dt, uw->dv_cmp,
                          r.sz.v_cmp, tg);
            if (e > eg) eg = e;
        }
        if (eg > worst_grad[dti]) worst_grad[dti] = eg;
        if (eg > last_err_out) last_err_out = eg;
    }
    if (use == &oo2) oracle_free(&oo2);
    oracle_free(&oo);
    run_free(&r);
    free(kc_used);
    free(vc_used);
}

static void compare_with_oracle(const char *name, prob *p, int backward)
{
    tols t = tols_fp32acc();
    if (p->cfg.accum == NSA_ACCUM_FP64) {
        /* o sums the branch outputs, each rounded to fp32 first (they are
           the fp32 stage outputs): up to ~1.5 fp32 ulps of the scale. */
        t.o = 2e-7;
        t.lse = t.kcmp = 1e-10;
        t.grad = 1e-6;
        t.sel = 1e-6;
    }
    compare_with_oracle_tol(name, p, backward, &t);
}

/* ------------------------------------------------------------------------ */
/* Configs used below. */

/* Small blocks so that every rule fires within a few dozen tokens: overlap
   (l = 2d), l' = 2l, forced blocks, a short window. */
static nsa_config cfg_small(void)
{
    nsa_config c = nsa_config_paper();
    c.l = 8;
    c.d = 4;
    c.lp = 16;
    c.n = 4;
    c.n_init = 1;
    c.n_local = 2;
    c.w = 24;
    return c;
}

/* ------------------------------------------------------------------------ */
/* Oracle self-check: its analytic gradient against central differences in
   pure fp64 (h = 1e-5: truncation ~1e-10, rounding ~1e-11; observed up to
   ~1e-9 of max |grad|). We allow 1e-7. */

static double oracle_loss(const oracle_in *in, const double *d_o)
{
    oracle_out o;
    double f = 0.0;
    int64_t i;
    oracle_forward(in, &o);
    for (i = 0; i < o.TQ * in->H * in->Dv; ++i) f += o.o[i] * d_o[i];
    oracle_free(&o);
    return f;
}

static void oracle_fd_tensor(const char *name, const char *what, oracle_in *in,
                             const double *d_o, double *x, int64_t n,
                             const double *grad)
{
    double gmax = 1e-30, err = 0.0;
    int64_t i, s;
    for (i = 0; i < n; ++i)
        if (fabs(grad[i]) > gmax) gmax = fabs(grad[i]);
    for (s = 0; s < 24 && n > 0; ++s) {
        const double h = 1e-5;
        double x0, fp, fm;
        i = check_rand_int(n);
        x0 = x[i];
        x[i] = x0 + h; fp = oracle_loss(in, d_o);
        x[i] = x0 - h; fm = oracle_loss(in, d_o);
        x[i] = x0;
        if (fabs((fp - fm) / (2 * h) - grad[i]) > err)
            err = fabs((fp - fm) / (2 * h) - grad[i]);
    }
    CHECK(name, err / gmax <= 1e-7, "%s: oracle gradient vs central "
          "differences: %.3g of max |grad|", what, err / gmax);
}

static void test_oracle_gradient_matches_central_differences(void)
{
    const char *name = "oracle_gradient_matches_central_differences";
    int klen[2] = {37, 21}, cc;
    for (cc = 0; cc < 2; ++cc) {
        nsa_config c = cfg_small();
        prob p;
        oracle_in in;
        oracle_out o;
        c.caller_compressed = cc;
        c.n = 3;
        c.n_local = 1;
        c.w = 7;
        prob_make(&p, &c, NSA_FP32, 2, klen, NULL, 4, 2, 8, 6, 1);
        in = prob_oracle_in(&p);
        in.round_cmp = NULL;
        oracle_forward(&in, &o);
        in.sel_idx = o.sel_idx; /* selection held fixed */
        in.sel_count = o.sel_count;
        oracle_backward(&in, p.dOd, &o);
        oracle_fd_tensor(name, "dq", &in, p.dOd, p.qd, p.TQ * p.H * p.Dk, o.dq);
        oracle_fd_tensor(name, "dk", &in, p.dOd, p.kd, p.T * p.Hkv * p.Dk, o.dk);
        oracle_fd_tensor(name, "dv", &in, p.dOd, p.vd, p.T * p.Hkv * p.Dv, o.dv);
        oracle_fd_tensor(name, "dgates", &in, p.dOd, p.gd, p.TQ * p.H * 3, o.dgates);
        if (cc) {
            oracle_fd_tensor(name, "dk_cmp", &in, p.dOd, p.kcd,
                             p.Tc * p.Hkv * p.Dk, o.dk_cmp);
            oracle_fd_tensor(name, "dv_cmp", &in, p.dOd, p.vcd,
                             p.Tc * p.Hkv * p.Dv, o.dv_cmp);
        }
        oracle_free(&o);
        prob_free(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* Reference vs oracle. */

/* Varlen batch with empty, 1-token, l-1, l, l', odd and long sequences. */
static const int varlen_lens[] = {0, 1, 7, 8, 16, 45, 96, 131};
#define VARLEN_B ((int)(sizeof varlen_lens / sizeof varlen_lens[0]))

static void test_forward_backward_match_oracle_in_each_dtype(void)
{
    static const nsa_dtype dts[3] = {NSA_FP32, NSA_BF16, NSA_FP16};
    static const char *names[3] = {"forward_backward_match_oracle_fp32",
                                   "forward_backward_match_oracle_bf16",
                                   "forward_backward_match_oracle_fp16"};
    int i, g;
    for (i = 0; i < 3; ++i)
        for (g = 0; g < 2; ++g) {
            nsa_config c = cfg_small();
            prob p;
            prob_make(&p, &c, dts[i], VARLEN_B, varlen_lens, NULL, 4, 2, 16, 8, g);
            compare_with_oracle(names[i], &p, 1);
            prob_free(&p);
        }
}

static void test_presets_match_oracle(void)
{
    nsa_config cs[4];
    static const char *names[4] = {"preset_paper_matches_oracle",
                                   "preset_fla_matches_oracle",
                                   "preset_tile_64_64_matches_oracle",
                                   "preset_tile_128_128_matches_oracle"};
    /* As shipped: longer than n = 16 blocks of 64 so that the lp = 64
       presets make real choices at the end, with a sequence whose length
       is a multiple of nothing. Then each preset's geometry with n = 4, where
       most queries choose among many blocks at a third of the cost. */
    int klen[2] = {1100, 157}, klen4[3] = {700, 131, 64}, i, small;
    cs[0] = nsa_config_paper();
    cs[1] = nsa_config_fla();
    cs[2] = nsa_config_tile(64, 64);
    cs[3] = nsa_config_tile(128, 128);
    for (small = 0; small < 2; ++small)
        for (i = 0; i < 4; ++i) {
            prob p;
            nsa_config c = cs[i];
            char name[96];
            snprintf(name, sizeof name, "%s%s", names[i], small ? "_with_n_4" : "");
            if (small) c.n = 4;
            if (small && c.n_init + c.n_local > c.n) c.n_init = 0;
            prob_make(&p, &c, NSA_FP32, small ? 3 : 2, small ? klen4 : klen, NULL,
                      2, 1, 16, 16, 1);
            /* backward once per preset */
            compare_with_oracle(name, &p, small);
            prob_free(&p);
        }
    {
        prob p;
        nsa_config c = cs[0];
        c.n = 4;
        prob_make(&p, &c, NSA_BF16, 3, klen4, NULL, 2, 1, 16, 16, 1);
        compare_with_oracle("preset_paper_with_n_4_matches_oracle_bf16", &p, 1);
        prob_free(&p);
    }
}

static void test_gqa_ratios_match_oracle(void)
{
    static const int G[4] = {1, 2, 4, 16};
    int klen[3] = {70, 1, 97}, i;
    for (i = 0; i < 4; ++i) {
        nsa_config c = cfg_small();
        prob p;
        char name[64];
        int Hkv = G[i] == 16 ? 1 : 2;
        snprintf(name, sizeof name, "gqa_ratio_%d_matches_oracle", G[i]);
        prob_make(&p, &c, NSA_FP32, 3, klen, NULL, G[i] * Hkv, Hkv, 16, 16, 1);
        compare_with_oracle(name, &p, 1);
        prob_free(&p);
    }
}

static void test_head_dims_match_oracle(void)
{
    static const int dk[3] = {64, 128, 192}, dv[3] = {64, 128, 128};
    int klen[2] = {90, 41}, i, t;
    for (i = 0; i < 3; ++i)
        for (t = 0; t < 2; ++t) {
            nsa_config c = cfg_small();
            prob p;
            char name[64];
            nsa_dtype dt = t ? NSA_BF16 : NSA_FP32;
            snprintf(name, sizeof name, "head_dims_%d_%d_match_oracle_%s", dk[i],
                     dv[i], dtype_name(dt));
            prob_make(&p, &c, dt, 2, klen, NULL, 4, 2, dk[i], dv[i], 1);
            compare_with_oracle(name, &p, 1);
            prob_free(&p);
        }
}

/* Every non-empty set of branches, gates given and absent; selection must
   still score against K_cmp when the compressed branch is off. */
static void test_branch_subsets_match_oracle(void)
{
    int klen[3] = {60, 17, 33};
    unsigned br;
    int g;
    for (br = 1; br <= 7; ++br)
        for (g = 0; g < 2; ++g) {
            nsa_config c = cfg_small();
            prob p;
            char name[80];
            c.branches = br;
            snprintf(name, sizeof name, "branches_%s%s%s_%s_match_oracle",
                     br & 1 ? "cmp" : "", br & 2 ? "slc" : "", br & 4 ? "win" : "",
                     g ? "gated" : "ungated");
            prob_make(&p, &c, NSA_FP32, 3, klen, NULL, 4, 2, 8, 8, g);
            compare_with_oracle(name, &p, 1);
            prob_free(&p);
        }
}

static void test_query_tiles_match_oracle(void)
{
    int klen[4] = {77, 5, 40, 64}, qlen[4] = {77, 3, 13, 1};
    int m, bq, suf;
    for (m = 0; m < 2; ++m)
        for (bq = 2; bq <= 8; bq *= 2)
            for (suf = 0; suf < 2; ++suf) {
                nsa_config c = cfg_small();
                prob p;
                char name[96];
                c.bq = bq;
                c.score_mode = m ? NSA_SCORE_LOGITS : NSA_SCORE_PROBS;
                snprintf(name, sizeof name, "query_tiles_bq%d_%s%s_match_oracle",
                         bq, m ? "logits" : "probs", suf ? "_suffix_queries" : "");
                prob_make(&p, &c, NSA_FP32, 4, klen, suf ? qlen : NULL, 4, 1, 8,
                          8, 1);
                compare_with_oracle(name, &p, 1);
                prob_free(&p);
            }
}

static void test_logits_mode_and_forced_variants_match_oracle(void)
{
    /* n_init = n_local = 0 in logits mode: eligible blocks whose compressed
       blocks are not yet visible score 0 (an empty sum) and compete. */
    int klen[2] = {95, 50};
    int v;
    for (v = 0; v < 4; ++v) {
        nsa_config c = cfg_small();
        prob p;
        char name[96];
        c.score_mode = (v & 1) ? NSA_SCORE_LOGITS : NSA_SCORE_PROBS;
        c.n_init = (v & 2) ? 0 : 2;
        c.n_local = (v & 2) ? 0 : 1;
        c.n = 3;
        snprintf(name, sizeof name, "selection_%s_n_init%d_n_local%d_matches_oracle",
                 (v & 1) ? "logits" : "probs", c.n_init, c.n_local);
        prob_make(&p, &c, NSA_FP32, 2, klen, NULL, 2, 1, 8, 8, 0);
        compare_with_oracle(name, &p, 0);
        prob_free(&p);
    }
}

static void test_caller_compressed_matches_oracle(void)
{
    /* t = 2: the compressed branch off, so only selection reads K_cmp; its
       gradient dK_cmp is then zero and must still be written. */
    int klen[3] = {50, 9, 64}, t;
    static const char *names[3] = {"caller_compressed_matches_oracle_fp32",
                                   "caller_compressed_matches_oracle_bf16",
                                   "caller_compressed_without_cmp_branch_matches_oracle"};
    for (t = 0; t < 3; ++t) {
        nsa_config c = cfg_small();
        prob p;
        c.caller_compressed = 1;
        if (t == 2) c.branches = NSA_BRANCH_SLC | NSA_BRANCH_WIN;
        prob_make(&p, &c, t == 1 ? NSA_BF16 : NSA_FP32, 3, klen, NULL, 4, 2, 16, 8, 1);
        compare_with_oracle(names[t], &p, 1);
        prob_free(&p);
    }
}

/* perm[0 .. n) = a uniformly random permutation of 0 .. n - 1
   (Fisher-Yates on the suite's generator). */
static void random_permutation(int32_t *perm, int64_t n)
{
    int64_t j;
    for (j = 0; j < n; ++j) perm[j] = (int32_t)j;
    for (j = n - 1; j > 0; --j) {
        int64_t k = check_rand_int(j + 1);
        int32_t t = perm[j];
        perm[j] = perm[k];
        perm[k] = t;
    }
}

/* Caller block indices: used as given (any order of valid blocks, future
   blocks masked causally), entries outside [0, ceil(TK/l')) skipped,
   counts clamped to [0, n]. */
static void test_caller_selection_is_used_as_given(void)
{
    int klen[3] = {50, 20, 33}, t;
    for (t = 0; t < 2; ++t) {
        nsa_config c = cfg_small();
        prob p;
        int32_t *si, *sn;
        int64_t row, rows;
        int b, i;
        c.bq = t ? 4 : 1;
        prob_make(&p, &c, NSA_FP32, 3, klen, NULL, 4, 2, 8, 8, 1);
        rows = 0;
        for (b = 0; b < 3; ++b) rows += nsa_units(klen[b], c.bq) * p.Hkv;
        si = (int32_t *)xcalloc(rows * c.n, sizeof(int32_t));
        sn = (int32_t *)xcalloc(rows, sizeof(int32_t));
        row = 0;
        for (b = 0; b < 3; ++b) {
            int64_t nb = nsa_slc_blocks(klen[b], c.lp), u;
            for (u = 0; u < nsa_units(klen[b], c.bq) * p.Hkv; ++u, ++row) {
                /* distinct blocks from a shuffled [0, nb), some invalid */
                int32_t perm[16];
                random_permutation(perm, nb);
                sn[row] = (int32_t)check_rand_int(c.n + 3) - 1; /* -1 .. n+1 */
                for (i = 0; i < c.n; ++i) {
                    int64_t r = check_rand_int(8);
                    si[row * c.n + i] = i < nb ? perm[i] : -1;
                    if (r == 0) si[row * c.n + i] = -1;
                    if (r == 1) si[row * c.n + i] = (int32_t)nb + (int32_t)check_rand_int(3);
                }
            }
        }
        p.sel_idx = si;
        p.sel_count = sn;
        compare_with_oracle(t ? "caller_selection_is_used_as_given_with_tiles"
                              : "caller_selection_is_used_as_given", &p, 1);
        {
            /* Forward saves the caller's used entries (0 <= idx < blocks of
               the sequence, among the first clamp(count, 0, n)) in their
               order, -1 padded, with their number as the count. */
            nsa_batch x = prob_batch(&p);
            run r;
            int64_t bad = 0, first = -1;
            if (status_ok("caller_selection_is_saved_as_its_used_entries",
                          "nsa_ref_forward", run_forward(&r, &c, &x, p.g))) {
                row = 0;
                for (b = 0; b < 3; ++b) {
                    int64_t nb = nsa_slc_blocks(klen[b], c.lp), u;
                    for (u = 0; u < nsa_units(klen[b], c.bq) * p.Hkv; ++u, ++row) {
                        int cnt = sn[row] < 0 ? 0 : sn[row] > c.n ? c.n : sn[row];
                        int k = 0, ok = 1;
                        for (i = 0; i < cnt; ++i) {
                            int32_t j = si[row * c.n + i];
                            if (j >= 0 && j < nb) ok &= r.sel_idx[row * c.n + k++] == j;
                        }
                        ok &= r.sel_count[row] == k;
                        for (; k < c.n; ++k) ok &= r.sel_idx[row * c.n + k] == -1;
                        if (!ok) {
                            if (first < 0) first = row;
                            ++bad;
                        }
                    }
                }
                CHECK("caller_selection_is_saved_as_its_used_entries", bad == 0,
                      "bq=%d: %lld saved rows differ from the caller's used "
                      "entries; first row %lld", c.bq, (long long)bad,
                      (long long)first);
            }
            run_free(&r);
        }
        free(si);
        free(sn);
        prob_free(&p);
    }
}

/* Query tiles that straddle a selection-block boundary while more blocks
   are eligible than n (the forced local blocks are those of the tile's LAST
   query), suffix queries with and without tiles, and sequences that have
   keys but no queries (their dK, dV are zeros that backward must write). */
static void test_straddling_tiles_and_zero_query_sequences_match_oracle(void)
{
    static const int klen[5] = {150, 40, 0, 33, 97};
    static const int qlen[5] = {101, 0, 0, 33, 9};
    static const int bqs[3] = {12, 8, 1};
    int v, m;
    for (v = 0; v < 3; ++v)
        for (m = 0; m < 2; ++m) {
            nsa_config c = cfg_small();
            prob p;
            char name[112];
            /* bq 12 does not divide l' = 16: tiles straddle from the start;
               bq 8 with suffix queries: the first query sits at 49, so tiles
               start at 49, 57 (straddles 64, with 5 > n = 4 eligible), ... */
            const int suffix = bqs[v] != 12;
            if (bqs[v] == 1 && m == 1) continue;
            c.bq = bqs[v];
            c.score_mode = m ? NSA_SCORE_LOGITS : NSA_SCORE_PROBS;
            snprintf(name, sizeof name, "tiles_bq%d_%s%s_straddling_blocks_and_"
                     "zero_query_sequences_match_oracle", bqs[v],
                     m ? "logits" : "probs", suffix ? "_suffix_queries" : "");
            prob_make(&p, &c, v == 1 ? NSA_BF16 : NSA_FP32, 5, klen,
                      suffix ? qlen : NULL, 4, 2, 8, 8, 1);
            compare_with_oracle(name, &p, 1);
            prob_free(&p);
        }
}

/* NSA_ACCUM_FP64 against the oracle at that mode's own precision: the
   forward must be the storage type's rounding of the exact result (1e-10 of
   the array's scale beyond it for lse and K_cmp, 2e-7 for o, whose branch
   outputs are rounded to fp32 first), which fp32 accumulation misses by
   ~1e-7.
   The backward is held to 1e-6 of scale: P = exp(s - lse) reads the fp32
   saved lse, whose rounding grows with |lse| (docs/MATH.md); a Delta of the
   FlashAttention form, rowsum(dO * O), removes that term. */
static void test_fp64_accumulation_matches_oracle_at_its_precision(void)
{
    int t, g;
    for (t = 0; t < 2; ++t)
        for (g = 0; g < 2; ++g) {
            nsa_config c = cfg_small();
            prob p;
            char name[96];
            nsa_dtype dt = t ? NSA_BF16 : NSA_FP32;
            c.accum = NSA_ACCUM_FP64;
            c.caller_compressed = g;
            snprintf(name, sizeof name, "fp64_accumulation_matches_oracle_%s%s",
                     dtype_name(dt), g ? "_caller_compressed" : "");
            prob_make(&p, &c, dt, VARLEN_B, varlen_lens, NULL, 4, 2, 16, 8, 1);
            compare_with_oracle(name, &p, 1);
            prob_free(&p);
        }
}

/* The converters of nsa.h against an independent statement (check_round):
   every 16-bit pattern decodes to its value; fp32 values at, near and
   exactly between neighbouring 16-bit values (ties to even), subnormals,
   overflow to infinity, infinities, NaN and random bit patterns encode to
   the nearest-even 16-bit value. */
static double decode16(uint16_t h, int bf16)
{
    const int eb = bf16 ? 8 : 5, mb = bf16 ? 7 : 10, bias = bf16 ? 127 : 15;
    const int e = (h >> mb) & ((1 << eb) - 1), m = h & ((1 << mb) - 1);
    const double sgn = (h & 0x8000u) ? -1.0 : 1.0;
    if (e == (1 << eb) - 1) return m ? NAN : sgn * INFINITY;
    if (e == 0) return sgn * ldexp((double)m, 1 - bias - mb);
    return sgn * ldexp((double)(m + (1 << mb)), e - bias - mb);
}

static int conv_ok(float x, int bf16)
{
    uint16_t h = bf16 ? nsa_f32_to_bf16(x) : nsa_f32_to_fp16(x);
    double got = decode16(h, bf16);
    double want = check_round((double)x, bf16 ? check_fmt_bf16 : check_fmt_fp16);
    if (want != want) return got != got;
    /* signed zeros keep their sign */
    return got == want && (signbit(got) != 0) == (signbit(want) != 0);
}

static void test_converters_match_independent_rounding(void)
{
    const char *name = "converters_round_to_nearest_even_like_an_independent_rounding";
    int bf, bad_dec = 0, bad_enc = 0;
    uint32_t i;
    float first_bad = 0.0f;
    for (bf = 0; bf < 2; ++bf) {
        for (i = 0; i < 65536u; ++i) {
            uint16_t h = (uint16_t)i;
            float f = bf ? nsa_bf16_to_f32(h) : nsa_fp16_to_f32(h);
            double want = decode16(h, bf);
            if (want != want ? f == f
                             : !((double)f == want &&
                                 (signbit(f) != 0) == (signbit(want) != 0)))
                ++bad_dec;
            if (want != want || isinf(want)) continue;
            {
                /* the value, its fp32 neighbours, the midpoint to the next
                   16-bit value (a tie) and the midpoint's neighbours */
                double up = decode16((uint16_t)(h + 1), bf);
                float xs[6];
                int k;
                xs[0] = f;
                xs[1] = nextafterf(f, INFINITY);
                xs[2] = nextafterf(f, -INFINITY);
                if (up == up && (h & 0x7fffu) != 0x7fffu) {
                    if (isinf(up)) /* the overflow threshold: max + half ulp */
                        up = (double)f + ((double)f - decode16((uint16_t)(h - 1), bf));
                    xs[3] = (float)(0.5 * ((double)f + up)); /* exact in fp32 */
                } else {
                    xs[3] = f;
                }
                xs[4] = nextafterf(xs[3], INFINITY);
                xs[5] = nextafterf(xs[3], -INFINITY);
                for (k = 0; k < 6; ++k)
                    if (!conv_ok(xs[k], bf)) {
                        if (!bad_enc) first_bad = xs[k];
                        ++bad_enc;
                    }
            }
        }
        for (i = 0; i < 200000u; ++i) { /* random fp32 bit patterns */
            uint32_t u = (uint32_t)check_rand_u64();
            float x = nsa__f32_from_bits(u);
            if (!conv_ok(x, bf)) {
                if (!bad_enc) first_bad = x;
                ++bad_enc;
            }
        }
        {
            static const float sp[8] = {0.0f, -0.0f, 1e-45f, -1e-45f, 3.4028235e38f,
                                        -3.4028235e38f, 1.17549435e-38f, 65520.0f};
            int k;
            for (k = 0; k < 8; ++k)
                if (!conv_ok(sp[k], bf)) {
                    if (!bad_enc) first_bad = sp[k];
                    ++bad_enc;
                }
            if (!conv_ok(INFINITY, bf) || !conv_ok(-INFINITY, bf) ||
                !conv_ok(NAN, bf) || !conv_ok(-NAN, bf))
                ++bad_enc;
        }
        CHECK(name, bad_dec == 0, "%s: %d of 65536 patterns decode wrongly",
              bf ? "bf16" : "fp16", bad_dec);
        CHECK(name, bad_enc == 0, "%s: %d fp32 values encode to another value "
              "than nearest-even; first %.9g", bf ? "bf16" : "fp16", bad_enc,
              (double)first_bad);
        bad_dec = bad_enc = 0;
    }
}

/* Every accumulated value reaches its storage type through one rounding
   (nsa__put, the reference's single store of outputs and gradients): a
   double just off a 16-bit rounding midpoint must round as the exact value
   does, not through an fp32 value that lands on the midpoint. This calls
   the reference's internal store directly: no output of random data comes
   near enough to a midpoint often enough to show a double rounding. */
static void test_outputs_are_rounded_once_to_nearest_even(void)
{
    const char *name = "outputs_rounded_once_to_nearest_even_no_double_rounding";
    static const nsa_dtype dts[3] = {NSA_BF16, NSA_FP16, NSA_FP32};
    int t;
    for (t = 0; t < 3; ++t) {
        nsa__ctx c;
        check_fmt f = dtype_fmt(dts[t]);
        int64_t i, bad = 0;
        double first = 0.0;
        memset(&c, 0, sizeof c);
        c.dt = dts[t];
        for (i = 0; i < 300000; ++i) {
            uint16_t h16 = 0;
            float f32 = 0.0f;
            double x, got, want;
            /* a finite positive value of the format (any fp32 value for
               fp32), the midpoint above it, nudged by 2^-40 of itself (below
               fp32's resolution) or not, or a random point near it */
            double v = t == 2 ? check_uniform(0.0, 4.0)
                              : decode16((uint16_t)check_rand_int(0x7c00), t == 0);
            {
                int e;
                (void)frexp(v == 0.0 ? 1.0 : v, &e);
                if (e - 1 < f.emin) e = f.emin + 1;
                x = v + ldexp(1.0, e - f.p - 1); /* midpoint above v */
                switch (check_rand_int(4)) {
                case 0: x += ldexp(x, -40); break;
                case 1: x -= ldexp(x, -40); break;
                case 2: break;
                default: x = v + ldexp(check_uniform(-1.0, 1.0), e - f.p); break;
                }
                if (check_rand_int(2)) x = -x;
            }
            if (dts[t] == NSA_FP32) {
                nsa__put(&c, &f32, 0, x);
                got = f32;
            } else {
                nsa__put(&c, &h16, 0, x);
                got = decode16(h16, t == 0);
            }
            want = check_round(x, f);
            if (!(got == want)) {
                if (!bad) first = x;
                ++bad;
            }
        }
        CHECK(name, bad == 0, "%s: %lld of 300000 values near rounding midpoints "
              "stored otherwise than rounded once; first %.17g", dtype_name(dts[t]),
              (long long)bad, first);
    }
}

/* ------------------------------------------------------------------------ */
/* Gradients of the reference against central differences (fp32 storage,
   fp64 accumulation, selection held fixed through caller indices).

   Loss f = sum(o * dO) in double from the fp32 outputs. Each o is rounded
   once (2^-24 relative), so f carries ~1e-7 absolute noise; with steps of
   ~1e-2 the difference quotient errs by ~1e-5 from rounding and ~1e-5 from
   truncation (h^2 f'''/6): observed 1e-6 to 4e-5 of max |grad|. We allow
   3e-4 of max |grad| per tensor (40 random elements each). */

typedef struct fd_ctx {
    nsa_config cfg;
    nsa_batch x;
    const void *gates;
    const float *dO;
    run r;
} fd_ctx;

static double fd_loss(fd_ctx *f)
{
    double s = 0.0;
    int64_t i;
    nsa_status st;
    run_fill_forward(&f->r); /* an unwritten o would make the loss NaN */
    st = nsa_ref_forward(&f->cfg, &f->x, f->gates, f->r.o, &f->r.sv, f->r.ws,
                         f->r.wsb);
    if (st != NSA_OK) return NAN;
    for (i = 0; i < f->r.sz.o; ++i) s += (double)((float *)f->r.o)[i] * f->dO[i];
    return s;
}

static void fd_tensor(const char *name, const char *what, fd_ctx *f, float *x,
                      int64_t n, const float *grad)
{
    double gmax = 1e-30, err = 0.0;
    int64_t i, s, worst = -1;
    for (i = 0; i < n; ++i)
        if (fabs(grad[i]) > gmax) gmax = fabs(grad[i]);
    for (s = 0; s < 40 && n > 0; ++s) {
        float x0, xp, xm;
        double fp, fm, fd;
        i = check_rand_int(n);
        x0 = x[i];
        x[i] = x0 + 1e-2f; xp = x[i]; fp = fd_loss(f);
        x[i] = x0 - 1e-2f; xm = x[i]; fm = fd_loss(f);
        x[i] = x0;
        fd = (fp - fm) / ((double)xp - (double)xm);
        if (!(fabs(fd - grad[i]) <= err)) {
            err = fabs(fd - grad[i]);
            worst = i;
        }
    }
    CHECK(name, err / gmax <= 3e-4, "%s: gradient vs central differences "
          "differs by %.3g of max |grad| (element %lld)", what, err / gmax,
          (long long)worst);
}

/* Sharp inputs (q, k, v at 6-8 times their usual range: |lse| in the
   hundreds, rows dominated by one key). In fp64 accumulation every array
   agrees with the fp64 oracle within 1e-6 of its scale (MATH.md 8.1: the
   backward's Delta is rowsum(dO_c * O_c) from normalized probabilities and
   P uses the row's own log-sum-exp, so no error grows with |lse|); in fp32
   accumulation within the fp32 bound of 8.1, which grows with the largest
   logit |z| (the logits themselves are fp32), not with |lse| times the
   gradient's scale. */
static double sharp_worst[2][2]; /* [accum][out or lse] */
static void test_sharp_inputs_match_oracle(void)
{
    static const double scales[2] = {6.0, 8.0};
    int si, acc, ci, g;
    for (si = 0; si < 2; ++si)
        for (acc = 0; acc < 2; ++acc)
            for (ci = 0; ci < 3; ++ci) {
                nsa_config c = cfg_small();
                prob p;
                int klen[3] = {150, 67, 9}, H = 4, Hkv = 2, Dk = 16, Dv = 8;
                char name[96];
                g = ci != 1;
                if (ci == 1) { /* GQA 4, wider heads, window only partly used */
                    H = 8; Dk = 32; Dv = 24; c.w = 40;
                }
                if (ci == 2) { /* caller-compressed, logits mode, tiles */
                    c.caller_compressed = 1;
                    c.score_mode = NSA_SCORE_LOGITS;
                    c.bq = 4;
                }
                c.accum = acc ? NSA_ACCUM_FP64 : NSA_ACCUM_FP32;
                snprintf(name, sizeof name, "sharp_inputs_x%.0f_%s_case%d_match_oracle",
                         scales[si], acc ? "fp64_accum" : "fp32_accum", ci);
                prob_input_scale = scales[si];
                prob_make(&p, &c, NSA_FP32, 3, klen, NULL, H, Hkv, Dk, Dv, g);
                prob_input_scale = 1.0;
                tol_force = acc ? 1e-6 : 0.0;
                compare_with_oracle(name, &p, 1);
                tol_force = 0.0;
                if (last_err_out > sharp_worst[acc][0]) sharp_worst[acc][0] = last_err_out;
                if (last_err_lse > sharp_worst[acc][1]) sharp_worst[acc][1] = last_err_lse;
                prob_free(&p);
            }
}

static void test_gradients_match_central_differences(void)
{
    int klen[2] = {41, 22}, cc;
    for (cc = 0; cc < 2; ++cc) {
        const char *name = cc ? "gradients_match_central_differences_caller_compressed"
                              : "gradients_match_central_differences_mean_compression";
        nsa_config c = cfg_small();
        prob p;
        fd_ctx f;
        float *sel_copy;
        c.caller_compressed = cc;
        c.accum = NSA_ACCUM_FP64;
        c.n = 3;
        c.n_local = 1;
        c.w = 9;
        prob_make(&p, &c, NSA_FP32, 2, klen, NULL, 4, 2, 8, 6, 1);
        memset(&f, 0, sizeof f);
        f.cfg = c;
        f.x = prob_batch(&p);
        f.gates = p.g;
        f.dO = (const float *)p.dO;
        if (!status_ok(name, "nsa_ref_forward", run_forward(&f.r, &c, &f.x, p.g)) ||
            !status_ok(name, "nsa_ref_backward",
                       run_backward(&f.r, &c, &f.x, p.g, p.dO))) {
            run_free(&f.r);
            prob_free(&p);
            continue;
        }
        /* Hold the selection: hand the forward's own back as caller indices
           (copies, since forward rewrites saved.sel_idx). */
        sel_copy = (float *)xcalloc(f.r.sz.sel_idx + f.r.sz.sel_count, 4);
        memcpy(sel_copy, f.r.sel_idx, (size_t)f.r.sz.sel_idx * 4);
        memcpy(sel_copy + f.r.sz.sel_idx, f.r.sel_count, (size_t)f.r.sz.sel_count * 4);
        f.x.sel_idx = (const int32_t *)(void *)sel_copy;
        f.x.sel_count = (const int32_t *)(void *)(sel_copy + f.r.sz.sel_idx);
        fd_tensor(name, "dq", &f, (float *)p.q, f.r.sz.q, (const float *)f.r.gr.dq);
        fd_tensor(name, "dk", &f, (float *)p.k, f.r.sz.k, (const float *)f.r.gr.dk);
        fd_tensor(name, "dv", &f, (float *)p.v, f.r.sz.v, (const float *)f.r.gr.dv);
        fd_tensor(name, "dgates", &f, (float *)p.g, f.r.sz.gates,
                  (const float *)f.r.gr.dgates);
        if (cc) {
            fd_tensor(name, "dk_cmp", &f, (float *)p.kc, f.r.sz.k_cmp,
                      (const float *)f.r.gr.dk_cmp);
            fd_tensor(name, "dv_cmp", &f, (float *)p.vc, f.r.sz.v_cmp,
                      (const float *)f.r.gr.dv_cmp);
        }
        free(sel_copy);
        run_free(&f.r);
        prob_free(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* Selection: ties, forced blocks. */

/* Runs forward on p and returns the run (caller frees); checks status. */
static int run_ok(const char *name, run *r, prob *p)
{
    nsa_batch x = prob_batch(p);
    return status_ok(name, "nsa_ref_forward", run_forward(r, &p->cfg, &x, prob_gates(p)));
}

/* Expected rows of a case where every candidate ties: the forced blocks,
   then the lowest indices. */
static void check_tie_rows(const char *name, const prob *p, const run *r)
{
    const nsa_config *c = &p->cfg;
    int64_t i, bad = 0, first = -1;
    for (i = 0; i < p->T; ++i) {
        int64_t jl = i / c->lp, j, cnt = 0, e;
        int32_t want[64];
        int hk;
        for (j = 0; j <= jl; ++j) {
            int forced = j < c->n_init || j > jl - c->n_local;
            if (forced) want[cnt++] = (int32_t)j;
        }
        for (j = 0; j <= jl && cnt < c->n; ++j) {
            int forced = j < c->n_init || j > jl - c->n_local;
            if (!forced) want[cnt++] = (int32_t)j;
        }
        qsort(want, (size_t)cnt, sizeof *want, oracle__cmp_int);
        for (hk = 0; hk < p->Hkv; ++hk) {
            const int32_t *s = r->sel_idx + (i * p->Hkv + hk) * c->n;
            int ok = r->sel_count[i * p->Hkv + hk] == cnt;
            for (e = 0; e < c->n; ++e) ok &= s[e] == (e < cnt ? want[e] : -1);
            if (!ok) {
                ++bad;
                if (first < 0) first = i;
            }
        }
    }
    CHECK(name, bad == 0, "%lld rows do not pick forced blocks then the lowest "
          "tied indices (exactly min(n, eligible)); first query %lld",
          (long long)bad, (long long)first);
}

static void test_selection_ties_pick_lower_index(void)
{
    static const char *name = "selection_ties_pick_lower_index";
    int klen[1] = {200}, v;
    /* v = 0: all K rows equal; 1: all queries zero; 2: small integers with a
       block-periodic K (every block has the same mean), logits mode, where
       every score is exact. l = d = l' so that blocks map one to one. */
    for (v = 0; v < 3; ++v) {
        nsa_config c = cfg_small();
        prob p;
        run r;
        oracle_in in;
        oracle_out oo;
        int64_t i;
        int x;
        c.l = c.d = c.lp = 16;
        c.n = 4;
        c.n_init = 1;
        c.n_local = 1;
        if (v == 2) c.score_mode = NSA_SCORE_LOGITS;
        prob_make(&p, &c, NSA_FP32, 1, klen, NULL, 2, 1, 16, 16, 0);
        for (i = 0; i < p.T; ++i)
            for (x = 0; x < 16; ++x) {
                float *k = (float *)p.k, *q = (float *)p.q;
                if (v == 0) k[i * 16 + x] = k[x];
                if (v == 1) { q[i * 32 + x] = 0.0f; q[i * 32 + 16 + x] = 0.0f; }
                if (v == 2) {
                    k[i * 16 + x] = (float)((int)((i % 16) * 7 + x * 3) % 5 - 2);
                    q[i * 32 + x] = (float)(int)check_rand_int(7) - 3.0f;
                    q[i * 32 + 16 + x] = (float)(int)check_rand_int(7) - 3.0f;
                }
            }
        tensor_sync(p.dt, p.T * 16, p.k, p.kd);
        tensor_sync(p.dt, p.T * 32, p.q, p.qd);
        if (run_ok(name, &r, &p)) {
            if (v < 2) check_tie_rows(name, &p, &r);
            in = prob_oracle_in(&p);
            oracle_forward(&in, &oo);
            cmp_selection(name, &r, &oo, c.n, p.Hkv, NULL);
            oracle_free(&oo);
        }
        run_free(&r);
        prob_free(&p);
    }
    /* Overlapping blocks (paper-like geometry) with equal keys: block 0
       gathers fewer compressed blocks, all interior blocks tie. */
    {
        nsa_config c = cfg_small();
        prob p;
        run r;
        oracle_in in;
        oracle_out oo;
        int64_t i;
        c.n = 5;
        prob_make(&p, &c, NSA_FP32, 1, klen, NULL, 2, 1, 16, 16, 0);
        for (i = 0; i < p.T * 16; ++i) ((float *)p.k)[i] = ((float *)p.k)[i % 16];
        tensor_sync(p.dt, p.T * 16, p.k, p.kd);
        if (run_ok(name, &r, &p)) {
            in = prob_oracle_in(&p);
            oracle_forward(&in, &oo);
            cmp_selection("selection_ties_pick_lower_index_overlapping_blocks", &r,
                          &oo, c.n, p.Hkv, NULL);
            oracle_free(&oo);
        }
        run_free(&r);
        prob_free(&p);
    }
}

/* Selection scores that only subnormal probabilities decide: q = (4, 0,
   ...), caller-compressed keys (b, 0, ...), so at Dk = 16 (sc = 1/4) the
   compressed logit is b. The keys of selection block 0 (forced) have b =
   100, those of block j > 0 one of nine levels b = 2 + (5 j mod 9); every
   other probability is then about e^(b - 100) / 4, 2^-143 to 2^-132 in
   fp32 (subnormal), a factor e apart from level to level. The reference
   keeps them (no flush to zero), so its selection equals the fp64
   oracle's exactly. The check has teeth: flushed to zero, every block
   after block 1 (which the overlap map gives a share of block 0's keys)
   would score 0 and the lowest would win, so the last query would take
   {0, 1, 2, 3, 4, 5, 23, 24}; by value it takes blocks 5, 7, 14 and 16
   (levels 7 and 8) instead of 2 to 5, and the oracle is checked to. */
static void test_selection_keeps_subnormal_probabilities(void)
{
    static const char *name = "selection_keeps_subnormal_probabilities";
    static const int32_t flushed[8] = {0, 1, 2, 3, 4, 5, 23, 24};
    nsa_config c = cfg_small(); /* l = 8, d = 4, l' = 16, n_init = 1, n_local = 2 */
    prob p;
    run r;
    int klen[1] = {400};
    int64_t i, row;
    c.n = 8;
    c.caller_compressed = 1;
    prob_make(&p, &c, NSA_FP32, 1, klen, NULL, 2, 1, 16, 16, 0);
    for (i = 0; i < p.TQ * p.H * 16; ++i) ((float *)p.q)[i] = i % 16 == 0 ? 4.0f : 0.0f;
    for (i = 0; i < p.Tc; ++i) {
        const int64_t j = i / (c.lp / c.d);
        int x;
        for (x = 0; x < 16; ++x)
            ((float *)p.kc)[i * 16 + x] =
                x > 0 ? 0.0f : j == 0 ? 100.0f : (float)(2 + (5 * j) % 9);
    }
    tensor_sync(p.dt, p.TQ * p.H * 16, p.q, p.qd);
    tensor_sync(p.dt, p.Tc * 16, p.kc, p.kcd);
    if (run_ok(name, &r, &p)) {
        oracle_in in = prob_oracle_in(&p);
        oracle_out oo;
        oracle_forward(&in, &oo);
        cmp_selection(name, &r, &oo, c.n, p.Hkv, NULL);
        row = (oo.units - 1) * p.Hkv; /* the last query */
        CHECK(name, oo.sel_count[row] == 8 && memcmp(oo.sel_idx + row * c.n, flushed,
                                                      sizeof flushed) != 0 &&
                        oo.sel_idx[row * c.n + 2] == 5,
              "the oracle's last row (%d blocks: %d %d %d %d ...) is not the value "
              "order the case is built for", (int)oo.sel_count[row],
              (int)oo.sel_idx[row * c.n], (int)oo.sel_idx[row * c.n + 1],
              (int)oo.sel_idx[row * c.n + 2], (int)oo.sel_idx[row * c.n + 3]);
        oracle_free(&oo);
    }
    run_free(&r);
    prob_free(&p);
}

/* The selection comparison must fail what is wrong: a selected block
   swapped for an unselected eligible one whose score gap is beyond the
   derived near-tie bound is reported (bf16 storage, where the bound is
   widest), and the unchanged selection is not. */
static void test_near_tie_bound_rejects_a_real_swap(void)
{
    const char *name = "near_tie_bound_rejects_a_swap_beyond_k_cmp_rounding";
    nsa_config c = cfg_small();
    const int len[2] = {120, 77};
    prob p;
    run r;
    nsa_batch x;
    c.n_init = 0;
    c.n_local = 1;
    prob_make(&p, &c, NSA_BF16, 2, len, NULL, 4, 2, 16, 8, 0);
    x = prob_batch(&p);
    if (status_ok(name, "nsa_ref_forward", run_forward(&r, &c, &x, NULL))) {
        oracle_in in = prob_oracle_in(&p);
        oracle_out oo;
        double *bound;
        int64_t row, rows;
        long f0 = check_probe_failed, p0 = check_passed_count, fails_same, fails_swap;
        const long ties0 = near_tie_rows;
        int swapped = 0;
        oracle_forward(&in, &oo);
        bound = near_tie_bound(&in, &oo, p.dt);
        rows = oo.units * p.Hkv;
        /* the oracle's own selection against itself: no failure */
        memcpy(r.sel_idx, oo.sel_idx, (size_t)(rows * c.n) * 4);
        memcpy(r.sel_count, oo.sel_count, (size_t)rows * 4);
        check_probing = 1;
        cmp_selection(name, &r, &oo, c.n, p.Hkv, bound);
        fails_same = check_probe_failed - f0;
        /* one row: the lowest-scoring free selected block a for the best
           unselected eligible block b, far apart */
        for (row = 0; row < rows && !swapped; ++row) {
            int32_t *sel = r.sel_idx + row * c.n;
            const double *sc = oo.scores + row * oo.maxblk, *bd = bound + row * oo.maxblk;
            int cnt = r.sel_count[row], e, e2, j;
            if (cnt < c.n) continue; /* every eligible block is taken */
            for (e = 0; e < cnt && !swapped; ++e) {
                const int32_t a = sel[e];
                if (a == sel[cnt - 1]) continue; /* the local (forced) block */
                for (j = 0; j < oo.maxblk && !swapped; ++j) {
                    int in_sel = 0;
                    for (e2 = 0; e2 < cnt; ++e2) in_sel |= sel[e2] == j;
                    if (in_sel || !isfinite(sc[j]) || j > sel[cnt - 1]) continue;
                    if (fabs(sc[a] - sc[j]) > 10.0 * (bd[a] + bd[j])) {
                        sel[e] = j;
                        for (e2 = cnt - 1; e2 > 0; --e2) /* keep it ascending */
                            if (sel[e2 - 1] > sel[e2]) {
                                int32_t tmp = sel[e2];
                                sel[e2] = sel[e2 - 1];
                                sel[e2 - 1] = tmp;
                            }
                        for (e2 = 0; e2 + 1 < cnt; ++e2)
                            if (sel[e2] > sel[e2 + 1]) {
                                int32_t tmp = sel[e2];
                                sel[e2] = sel[e2 + 1];
                                sel[e2 + 1] = tmp;
                            }
                        swapped = 1;
                    }
                }
            }
        }
        f0 = check_probe_failed;
        cmp_selection(name, &r, &oo, c.n, p.Hkv, bound);
        fails_swap = check_probe_failed - f0;
        check_probing = 0;
        /* the two calls above were probes: they count as this one check */
        check_passed_count = p0;
        near_tie_rows = ties0;
        CHECK(name, swapped && fails_same == 0 && fails_swap == 1,
              "swap found %d; failures: unchanged %ld (want 0), swapped %ld "
              "(want 1)", swapped, fails_same, fails_swap);
        free(bound);
        oracle_free(&oo);
    }
    run_free(&r);
    prob_free(&p);
}

static void test_forced_blocks_near_sequence_start(void)
{
    static const char *name = "forced_blocks_near_sequence_start_are_clipped";
    int klen[3] = {70, 3, 20}, n_init;
    for (n_init = 0; n_init <= 3; ++n_init) {
        nsa_config c = cfg_small();
        prob p;
        run r;
        c.l = c.d = 4;
        c.lp = 8;
        c.n = 6;
        c.n_init = n_init;
        c.n_local = 3;
        prob_make(&p, &c, NSA_FP32, 3, klen, NULL, 2, 2, 8, 8, 0);
        if (run_ok(name, &r, &p)) {
            int64_t b, i, bad = 0;
            oracle_in in = prob_oracle_in(&p);
            oracle_out oo;
            /* Every forced block that is eligible must be there, and the
               count must be min(n, eligible). */
            for (b = 0; b < 3; ++b)
                for (i = 0; i < klen[b]; ++i) {
                    int64_t row = (p.cu[b] + i) * p.Hkv, jl = i / c.lp, j, e;
                    int32_t cnt = r.sel_count[row];
                    if (cnt != (jl + 1 < c.n ? jl + 1 : c.n)) ++bad;
                    for (j = 0; j <= jl; ++j)
                        if (j < c.n_init || j > jl - c.n_local) {
                            int found = 0;
                            for (e = 0; e < cnt; ++e) found |= r.sel_idx[row * c.n + e] == j;
                            if (!found) ++bad;
                        }
                }
            CHECK(name, bad == 0, "n_init=%d: %lld forced-block or count "
                  "violations", n_init, (long long)bad);
            double *bound;
            oracle_forward(&in, &oo);
            bound = near_tie_bound(&in, &oo, NSA_FP32);
            cmp_selection(name, &r, &oo, c.n, p.Hkv, bound);
            free(bound);
            oracle_free(&oo);
        }
        run_free(&r);
        prob_free(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* Top-k rows against a full sort. */

static int topk_row_check(const float *row, int32_t start, int32_t end, int k,
                          const int32_t *got, int32_t got_count, char *detail,
                          size_t dn)
{
    int64_t len = end > start ? end - start : 0, i, want_n;
    oracle__cand *c = (oracle__cand *)xcalloc(len, sizeof *c);
    int ok = 1;
    for (i = 0; i < len; ++i) {
        c[i].s = row[start + i];
        c[i].j = (int32_t)i;
    }
    qsort(c, (size_t)len, sizeof *c, oracle__cmp_cand);
    want_n = len < k ? len : k;
    if (got_count != want_n) {
        snprintf(detail, dn, "count %d, want %lld", (int)got_count, (long long)want_n);
        ok = 0;
    }
    for (i = 0; ok && i < k; ++i) {
        int32_t w = i < want_n ? c[i].j : -1;
        if (got[i] != w) {
            snprintf(detail, dn, "place %lld: column %d, full sort says %d",
                     (long long)i, (int)got[i], (int)w);
            ok = 0;
        }
    }
    free(c);
    return ok;
}

static float topk_value(int kind)
{
    /* Heavy ties near the top, plus every special value. */
    int64_t r = check_rand_int(1000);
    if (kind == 0) { /* quantised: ~390 copies of each of 256 levels */
        if (r < 10) return -INFINITY;
        if (r < 20) return NAN;
        if (r < 30) return (r & 1) ? -0.0f : 0.0f;
        if (r < 32) return INFINITY;
        return (float)check_rand_int(256) / 64.0f;
    }
    if (kind == 1) { /* many exact copies of the maximum */
        if (r < 60) return 100.0f;
        if (r < 70) return NAN;
        return (float)check_uniform(-10.0, 10.0);
    }
    if (kind == 2) return NAN;
    if (kind == 3) return (r & 1) ? -0.0f : 0.0f;
    return -INFINITY;
}

static void test_topk_rows_match_full_sort(void)
{
    const char *name = "topk_rows_match_full_sort_with_ties_and_specials";
    const int64_t cols = quick_mode ? 20000 : 129280;
    const int64_t stride = cols + 7, rows = 7;
    static const int ks[2] = {1024, 2048};
    int32_t rs[7], re[7];
    int ki;
    float *sc = (float *)xcalloc(rows * stride, sizeof(float));
    int64_t i, r;
    /* row kinds: quantised, max-heavy, all NaN, all +-0 (random signs), all
       -inf, quantised, max-heavy */
    static const int kind[7] = {0, 1, 2, 3, 4, 0, 1};
    for (r = 0; r < rows; ++r)
        for (i = 0; i < stride; ++i) sc[r * stride + i] = topk_value(kind[r]);
    /* ranges: full, interior, short (< k), nearly full, full, tail, empty */
    rs[0] = 0; re[0] = (int32_t)cols;
    rs[1] = 1000; re[1] = (int32_t)(cols - 29000 > 2000 ? cols - 29000 : 2000);
    rs[2] = (int32_t)cols - 700; re[2] = (int32_t)cols;
    rs[3] = 5; re[3] = (int32_t)cols - 5;
    rs[4] = 0; re[4] = (int32_t)cols;
    rs[5] = 17; re[5] = (int32_t)cols;
    rs[6] = 3; re[6] = 3;
    for (ki = 0; ki < 2; ++ki) {
        const int k = ks[ki];
        size_t wsb = 0;
        void *ws;
        int32_t *idx = (int32_t *)xcalloc(rows * k, sizeof(int32_t));
        int32_t cnt[7];
        nsa_status st;
        if (!status_ok(name, "nsa_ref_topk_workspace_size",
                       nsa_ref_topk_workspace_size(rows, cols, k, &wsb))) {
            free(idx);
            continue;
        }
        ws = xcalloc((int64_t)wsb, 1);
        fill(idx, rows * k, 4, FILL_I);
        fill(cnt, rows, 4, FILL_I);
        GUARD_CALL(st, nsa_ref_topk_rows(sc, rows, cols, stride, rs, re, k, idx, cnt, ws, wsb));
        if (status_ok(name, "nsa_ref_topk_rows", st))
            for (r = 0; r < rows; ++r) {
                char detail[160] = "";
                int ok = topk_row_check(sc + r * stride, rs[r], re[r], k,
                                        idx + r * k, cnt[r], detail, sizeof detail);
                CHECK(name, ok, "k=%d row %lld [%d, %d): %s", k, (long long)r,
                      (int)rs[r], (int)re[r], detail);
            }
        /* No ranges: every row is [0, cols). */
        fill(idx, rows * k, 4, FILL_I);
        fill(cnt, rows, 4, FILL_I);
        GUARD_CALL(st, nsa_ref_topk_rows(sc, 2, cols, stride, NULL, NULL, k, idx, cnt, ws, wsb));
        if (status_ok(name, "nsa_ref_topk_rows (no ranges)", st))
            for (r = 0; r < 2; ++r) {
                char detail[160] = "";
                int ok = topk_row_check(sc + r * stride, 0, (int32_t)cols, k,
                                        idx + r * k, cnt[r], detail, sizeof detail);
                CHECK(name, ok, "k=%d row %lld without ranges: %s", k,
                      (long long)r, detail);
            }
        free(ws);
        free(idx);
    }
    free(sc);
}

/* One rule for bad row ranges, shared with the GPU (nsa.h, nsa_topk_range;
   MATH.md section 9): start clamped to [0, cols], end to [start, cols], an
   empty range gives count 0 and -1 everywhere, and no range is an error.
   Each row must equal the full sort of its clamped range. */
static void test_topk_bad_ranges_are_clamped_not_rejected(void)
{
    const char *name = "topk_bad_ranges_are_clamped_empty_gives_count_0";
    enum { ROWS = 9, COLS = 50, K = 8 };
    /* given ranges and the clamped ones the rule gives */
    static const int32_t rs[ROWS] = {-5, 10, 30, -10, 60, 55, INT32_MIN, 0, 49};
    static const int32_t re[ROWS] = {20, 80, 10, -3, 70, 20, INT32_MAX, 0, 50};
    static const int32_t lo[ROWS] = {0, 10, 30, 0, 50, 50, 0, 0, 49};
    static const int32_t hi[ROWS] = {20, 50, 30, 0, 50, 50, 50, 0, 50};
    float sc[ROWS * COLS];
    int32_t idx[ROWS * K], cnt[ROWS];
    size_t wsb = 0;
    void *ws;
    nsa_status st;
    int r, i;
    for (i = 0; i < ROWS * COLS; ++i) sc[i] = (float)check_rand_int(6) - 2.0f;
    sc[3] = NAN;
    for (r = 0; r < ROWS; ++r) {
        int64_t a, e;
        nsa_topk_range(rs[r], re[r], COLS, &a, &e);
        CHECK(name, a == lo[r] && e == hi[r], "row %d: range [%d, %d) clamps to "
              "[%lld, %lld), want [%d, %d)", r, (int)rs[r], (int)re[r],
              (long long)a, (long long)e, (int)lo[r], (int)hi[r]);
    }
    if (!status_ok(name, "nsa_ref_topk_workspace_size",
                   nsa_ref_topk_workspace_size(ROWS, COLS, K, &wsb)))
        return;
    ws = xcalloc((int64_t)wsb, 1);
    for (i = 0; i < ROWS * K; ++i) idx[i] = 12345;
    for (r = 0; r < ROWS; ++r) cnt[r] = 12345;
    GUARD_CALL(st, nsa_ref_topk_rows(sc, ROWS, COLS, COLS, rs, re, K, idx, cnt, ws, wsb));
    if (status_ok(name, "nsa_ref_topk_rows with bad ranges", st))
        for (r = 0; r < ROWS; ++r) {
            char detail[160] = "";
            int ok = topk_row_check(sc + r * COLS, lo[r], hi[r], K, idx + r * K,
                                    cnt[r], detail, sizeof detail);
            CHECK(name, ok, "row %d [%d, %d) as [%d, %d): %s", r, (int)rs[r],
                  (int)re[r], (int)lo[r], (int)hi[r], detail);
        }
    free(ws);
}

/* Small crafted rows: -0 ties +0, NaN below -inf, k beyond the valid count. */
static void test_topk_special_values_rank_as_contract_says(void)
{
    const char *name = "topk_neg_zero_ties_pos_zero_nan_below_neg_inf";
    float row[8] = {NAN, -INFINITY, -0.0f, 0.0f, -1.0f, NAN, -0.0f, 2.0f};
    /* expected: 7 (2), then 2, 3, 6 (all zeros, by index: a -0 before a +0
       must stay first), 4 (-1), 1 (-inf), 0, 5 (NaN), then -1 */
    static const int32_t want[10] = {7, 2, 3, 6, 4, 1, 0, 5, -1, -1};
    int32_t idx[10], cnt = -5;
    size_t wsb = 0;
    void *ws;
    int i, ok = 1;
    if (!status_ok(name, "nsa_ref_topk_workspace_size",
                   nsa_ref_topk_workspace_size(1, 8, 10, &wsb)))
        return;
    ws = xcalloc((int64_t)wsb, 1);
    if (status_ok(name, "nsa_ref_topk_rows",
                  nsa_ref_topk_rows(row, 1, 8, 8, NULL, NULL, 10, idx, &cnt, ws, wsb))) {
        for (i = 0; i < 10; ++i) ok &= idx[i] == want[i];
        CHECK(name, ok && cnt == 8, "got %d %d %d %d %d %d %d %d %d %d count %d",
              idx[0], idx[1], idx[2], idx[3], idx[4], idx[5], idx[6], idx[7],
              idx[8], idx[9], (int)cnt);
    }
    /* k = 3 with a tie at the 3rd place among three zeros: exactly 3. */
    if (status_ok(name, "nsa_ref_topk_rows",
                  nsa_ref_topk_rows(row, 1, 8, 8, NULL, NULL, 3, idx, &cnt, ws, wsb)))
        CHECK("topk_ties_at_kth_place_do_not_over_select",
              cnt == 3 && idx[0] == 7 && idx[1] == 2 && idx[2] == 3,
              "got %d %d %d count %d", idx[0], idx[1], idx[2], (int)cnt);
    free(ws);
}

/* ------------------------------------------------------------------------ */
/* Top-n blocks per row (nsa_ref_topk_blocks) against the rule written out
   here: blocks of `block` columns from column 0, the in-range columns'
   fp32 sum in column order divided once by their number, a full sort of
   the eligible blocks (NaN last, ties to the lower block). */

static int topk_blocks_row_check(const float *row, int64_t cols, int32_t rs, int32_t re,
                                 int64_t block, int n, const uint8_t *got, int32_t got_count,
                                 char *detail, size_t dn)
{
    const int64_t nb = (cols + block - 1) / block;
    int64_t a, e, j0, j1, j, i, want_n;
    oracle__cand *c;
    uint8_t *want = (uint8_t *)xcalloc(nb > 0 ? nb : 1, 1);
    int ok = 1;
    nsa_topk_range(rs, re, cols, &a, &e);
    j0 = a / block;
    j1 = e > a ? (e - 1) / block + 1 : j0;
    c = (oracle__cand *)xcalloc(j1 - j0 > 0 ? j1 - j0 : 1, sizeof *c);
    for (j = j0; j < j1; ++j) {
        const int64_t lo = j * block > a ? j * block : a;
        const int64_t hi = (j + 1) * block < e ? (j + 1) * block : e;
        float s = 0.0f;
        for (i = lo; i < hi; ++i) s += row[i];
        c[j - j0].s = (double)(s / (float)(hi - lo));
        c[j - j0].j = (int32_t)j;
    }
    qsort(c, (size_t)(j1 - j0), sizeof *c, oracle__cmp_cand);
    want_n = j1 - j0 < n ? j1 - j0 : n;
    for (i = 0; i < want_n; ++i) want[c[i].j] = 1;
    if (got_count != want_n) {
        snprintf(detail, dn, "count %d, want %lld", (int)got_count, (long long)want_n);
        ok = 0;
    }
    for (j = 0; ok && j < nb; ++j)
        if (got[j] != want[j]) {
            snprintf(detail, dn, "block %lld: mask %d, want %d", (long long)j, (int)got[j],
                     (int)want[j]);
            ok = 0;
        }
    free(c);
    free(want);
    return ok;
}

static void test_topk_blocks_match_block_means(void)
{
    const char *name = "topk_blocks_match_block_means_and_full_sort";
    const int64_t cols = quick_mode ? 9000 : 129280;
    const int64_t stride = cols + 3, rows = 7;
    static const int64_t blocks[4] = {1, 7, 32, 1000};
    static const int ns[3] = {1, 64, 5000};
    static const int kind[7] = {0, 1, 2, 3, 4, 0, 1};
    int32_t rs[7], re[7];
    float *sc = (float *)xcalloc(rows * stride, sizeof(float));
    int64_t i, r;
    int bi, ni;
    for (r = 0; r < rows; ++r)
        for (i = 0; i < stride; ++i) sc[r * stride + i] = topk_value(kind[r]);
    /* ranges: full, unaligned interior, short, nearly full, full, unaligned
       tail, empty */
    rs[0] = 0; re[0] = (int32_t)cols;
    rs[1] = 1003; re[1] = (int32_t)(cols - 2991);
    rs[2] = (int32_t)cols - 45; re[2] = (int32_t)cols;
    rs[3] = 5; re[3] = (int32_t)cols - 5;
    rs[4] = 0; re[4] = (int32_t)cols;
    rs[5] = 17; re[5] = (int32_t)cols;
    rs[6] = 3; re[6] = 3;
    for (bi = 0; bi < 4; ++bi)
        for (ni = 0; ni < 3; ++ni) {
            const int64_t block = blocks[bi], nb = (cols + block - 1) / block;
            const int n = ns[ni];
            size_t wsb = 0;
            void *ws;
            uint8_t *mask;
            int32_t cnt[7];
            nsa_status st;
            if (!status_ok(name, "nsa_ref_topk_blocks_workspace_size",
                           nsa_ref_topk_blocks_workspace_size(rows, cols, block, n, &wsb)))
                continue;
            ws = xcalloc((int64_t)wsb, 1);
            mask = (uint8_t *)xcalloc(rows * nb, 1);
            memset(mask, 0xA5, (size_t)(rows * nb)); /* poison: every byte is written */
            fill(cnt, rows, 4, FILL_I);
            GUARD_CALL(st, nsa_ref_topk_blocks(sc, rows, cols, stride, rs, re, block, n, mask,
                                               cnt, ws, wsb));
            if (status_ok(name, "nsa_ref_topk_blocks", st))
                for (r = 0; r < rows; ++r) {
                    char detail[160] = "";
                    int ok = topk_blocks_row_check(sc + r * stride, cols, rs[r], re[r], block,
                                                   n, mask + r * nb, cnt[r], detail,
                                                   sizeof detail);
                    CHECK(name, ok, "block %lld n %d row %lld [%d, %d): %s", (long long)block,
                          n, (long long)r, (int)rs[r], (int)re[r], detail);
                }
            free(mask);
            free(ws);
        }
    free(sc);
}

/* Blocks of one column are columns: the mask marks exactly the columns
   that nsa_ref_topk_rows returns (indices there relative to the start). */
static void test_topk_blocks_of_one_column_are_topk_rows(void)
{
    const char *name = "topk_blocks_of_one_column_mark_the_topk_rows_columns";
    enum { ROWS = 3, COLS = 300, K = 37 };
    static const int32_t rs[ROWS] = {0, 11, 250}, re[ROWS] = {COLS, 200, 260};
    float sc[ROWS * COLS];
    uint8_t mask[ROWS * COLS];
    int32_t idx[ROWS * K], cnt[ROWS], cntb[ROWS];
    size_t wsa = 0, wsb = 0;
    void *ws;
    int i, r;
    for (i = 0; i < ROWS * COLS; ++i) sc[i] = topk_value(0);
    if (!status_ok(name, "nsa_ref_topk_workspace_size",
                   nsa_ref_topk_workspace_size(ROWS, COLS, K, &wsa)) ||
        !status_ok(name, "nsa_ref_topk_blocks_workspace_size",
                   nsa_ref_topk_blocks_workspace_size(ROWS, COLS, 1, K, &wsb)))
        return;
    ws = xcalloc((int64_t)(wsa > wsb ? wsa : wsb), 1);
    if (status_ok(name, "nsa_ref_topk_rows",
                  nsa_ref_topk_rows(sc, ROWS, COLS, COLS, rs, re, K, idx, cnt, ws, wsa)) &&
        status_ok(name, "nsa_ref_topk_blocks",
                  nsa_ref_topk_blocks(sc, ROWS, COLS, COLS, rs, re, 1, K, mask, cntb, ws,
                                      wsb)))
        for (r = 0; r < ROWS; ++r) {
            uint8_t want[COLS];
            int ok = cnt[r] == cntb[r];
            memset(want, 0, sizeof want);
            for (i = 0; i < cnt[r]; ++i) want[rs[r] + idx[r * K + i]] = 1;
            for (i = 0; i < COLS; ++i) ok &= mask[r * COLS + i] == want[i];
            CHECK(name, ok, "row %d: counts %d and %d, or the marked columns differ", r,
                  (int)cnt[r], (int)cntb[r]);
        }
    free(ws);
}

/* A crafted row, blocks of 4 (block j is columns 4j .. 4j + 3):
     block 0: 1 1 1 1      mean 1
     block 1: -0 +0 -0 +0  mean 0 (ties block 3: the lower block ranks first)
     block 2: inf -inf 0 0 mean NaN (ranks last)
     block 3: 0 0 0 0      mean 0
     block 4: 9 NaN 9 9    mean NaN
     block 5: 3 3 | 100 100  the range ends after its second column: mean 3
   range [0, 22): block 5 has 2 columns in range. Order: 5 (3), 0 (1), 1, 3
   (0, tie to the lower), then 2, 4 (NaN, by index). */
static void test_topk_blocks_special_values_and_partial_blocks(void)
{
    const char *name = "topk_blocks_partial_block_mean_zero_ties_nan_last";
    const float row[24] = {1, 1, 1, 1, -0.0f, 0.0f, -0.0f, 0.0f, INFINITY, -INFINITY, 0, 0,
                           0, 0, 0, 0, 9, NAN, 9, 9, 3, 3, 100, 100};
    static const int32_t rs = 0, re = 22;
    static const int ns[4] = {1, 3, 5, 9};
    static const uint8_t want[4][6] = {{0, 0, 0, 0, 0, 1}, {1, 1, 0, 0, 0, 1},
                                       {1, 1, 1, 1, 0, 1}, {1, 1, 1, 1, 1, 1}};
    static const int32_t want_cnt[4] = {1, 3, 5, 6};
    size_t wsb = 0;
    void *ws;
    int t, j;
    if (!status_ok(name, "nsa_ref_topk_blocks_workspace_size",
                   nsa_ref_topk_blocks_workspace_size(1, 24, 4, 9, &wsb)))
        return;
    ws = xcalloc((int64_t)wsb, 1);
    for (t = 0; t < 4; ++t) {
        uint8_t mask[6];
        int32_t cnt = -5;
        int ok;
        memset(mask, 7, sizeof mask);
        if (!status_ok(name, "nsa_ref_topk_blocks",
                       nsa_ref_topk_blocks(row, 1, 24, 24, &rs, &re, 4, ns[t], mask, &cnt, ws,
                                           wsb)))
            continue;
        ok = cnt == want_cnt[t];
        for (j = 0; j < 6; ++j) ok &= mask[j] == want[t][j];
        CHECK(name, ok, "n %d: mask %d %d %d %d %d %d count %d", ns[t], mask[0], mask[1],
              mask[2], mask[3], mask[4], mask[5], (int)cnt);
    }
    /* an unaligned range [6, 13): block 1 is columns 6, 7 (mean +0), block 2
       is 8..11 (NaN), block 3 is column 12 (0): n = 1 takes block 1 */
    {
        const int32_t a = 6, e = 13;
        uint8_t mask[6];
        int32_t cnt = -5;
        if (status_ok(name, "nsa_ref_topk_blocks",
                      nsa_ref_topk_blocks(row, 1, 24, 24, &a, &e, 4, 1, mask, &cnt, ws, wsb)))
            CHECK(name, cnt == 1 && mask[0] == 0 && mask[1] == 1 && mask[2] == 0 &&
                  mask[3] == 0 && mask[4] == 0 && mask[5] == 0,
                  "range [6, 13), n 1: mask %d %d %d %d %d %d count %d", mask[0], mask[1],
                  mask[2], mask[3], mask[4], mask[5], (int)cnt);
    }
    /* a short block ranks by its mean, not its sum: [1 1 1 1 | 3] with
       range [0, 5) has means 1 and 3 (sums 4 and 3), so n = 1 takes block 1 */
    {
        const float head[5] = {1, 1, 1, 1, 3};
        const int32_t a = 0, e = 5;
        uint8_t mask[2] = {7, 7};
        int32_t cnt = -5;
        if (status_ok(name, "nsa_ref_topk_blocks",
                      nsa_ref_topk_blocks(head, 1, 5, 5, &a, &e, 4, 1, mask, &cnt, ws, wsb)))
            CHECK(name, cnt == 1 && mask[0] == 0 && mask[1] == 1,
                  "[1 1 1 1 | 3], n 1: mask %d %d count %d", mask[0], mask[1], (int)cnt);
    }
    /* columns before the range do not count: [100 100 0 0 | 1 1 1 1] with
       range [2, 8) scores block 0 by columns 2, 3 (mean 0), so n = 1 takes
       block 1 */
    {
        const float head[8] = {100, 100, 0, 0, 1, 1, 1, 1};
        const int32_t a = 2, e = 8;
        uint8_t mask[2] = {7, 7};
        int32_t cnt = -5;
        if (status_ok(name, "nsa_ref_topk_blocks",
                      nsa_ref_topk_blocks(head, 1, 8, 8, &a, &e, 4, 1, mask, &cnt, ws, wsb)))
            CHECK(name, cnt == 1 && mask[0] == 0 && mask[1] == 1,
                  "range [2, 8), n 1: mask %d %d count %d", mask[0], mask[1], (int)cnt);
    }
    free(ws);
}

/* The small rules of nsa.h (one definition each, shared by the reference and
   the CUDA kernels) against the contract's own statement of them, written
   out here by enumeration. */
static void test_shared_rules_match_the_contract(void)
{
    static const int geo[][3] = {{4, 2, 4}, {8, 4, 16}, {32, 16, 64}, {64, 64, 64},
                                 {16, 16, 64}, {6, 2, 4}};
    int gi, ok_vis = 1, ok_first = 1, ok_ovl = 1, ok_pairs = 1, ok_elig = 1;
    for (gi = 0; gi < (int)(sizeof geo / sizeof geo[0]); ++gi) {
        const int l = geo[gi][0], d = geo[gi][1], lp = geo[gi][2];
        int64_t t, i, j, m, k;
        for (t = 0; t < 300; ++t) {
            int64_t nvis = 0, nel = 0;
            for (i = 0; i < 300; ++i) { /* block i covers keys [i*d, i*d+l-1] */
                const int whole_block_before = i * d + l - 1 <= t;
                nvis += whole_block_before;
                ok_vis &= nsa_cmp_visible(i, t, l, d) == whole_block_before;
            }
            ok_vis &= nsa_cmp_visible_count(t, l, d) == nvis;
            for (j = 0; j < 300; ++j) nel += j * lp <= t;
            ok_elig &= nsa_slc_eligible_count(t, lp) == nel;
        }
        for (i = 0; i < 40; ++i)
            ok_first &= nsa_cmp_visible(i, nsa_cmp_first_query(i, l, d), l, d) &&
                        !nsa_cmp_visible(i, nsa_cmp_first_query(i, l, d) - 1, l, d);
        for (i = 0; i < 40; ++i)
            for (j = 0; j < 12; ++j) {
                /* shared segments of d keys, counted key by key */
                int64_t s0, shared = 0, pairs = 0;
                for (s0 = 0; s0 < 40 * lp; s0 += d)
                    shared += s0 >= i * d && s0 + d - 1 <= i * d + l - 1 &&
                              s0 >= j * lp && s0 + d - 1 <= (j + 1) * lp - 1;
                ok_ovl &= nsa_overlap_weight(i, j, l, d, lp) == shared;
                for (m = 0; m < lp / d; ++m)
                    for (k = 0; k < l / d; ++k)
                        pairs += nsa_overlap_index(j, (int)m, (int)k, d, lp) == i;
                ok_pairs &= pairs == shared;
            }
    }
    CHECK("rule_cmp_visibility_is_whole_block_at_or_before_t", ok_vis && ok_first,
          "visible %d, first query %d", ok_vis, ok_first);
    CHECK("rule_overlap_weight_counts_shared_segments", ok_ovl, "weight differs");
    CHECK("rule_overlap_index_pairs_give_the_weight", ok_pairs, "pair count differs");
    CHECK("rule_eligible_blocks_start_at_or_before_t_last", ok_elig, "count differs");
    {
        /* ascending by the contract's ranking; equal neighbours marked */
        const float v[] = {-INFINITY, -3.0e38f, -1.0f, -1e-45f, -0.0f, 0.0f,
                           1e-45f, 1.0f, 3.0e38f, INFINITY};
        const int same_as_prev[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 0};
        uint32_t nan_bits[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xffffffffu};
        int n = (int)(sizeof v / sizeof v[0]), a, ok_order = 1, ok_nan = 1;
        uint64_t rk;
        for (a = 1; a < n; ++a)
            ok_order &= same_as_prev[a] ? nsa_score_key(v[a]) == nsa_score_key(v[a - 1])
                                        : nsa_score_key(v[a]) > nsa_score_key(v[a - 1]);
        for (a = 0; a < 4; ++a) {
            const uint32_t kn = nsa_score_key(nsa__f32_from_bits(nan_bits[a]));
            ok_nan &= kn == NSA_SCORE_KEY_NAN && kn != 0u &&
                      kn < nsa_score_key(-INFINITY);
        }
        CHECK("rule_score_key_orders_as_ranked_neg_zero_is_pos_zero", ok_order,
              "order broken");
        CHECK("rule_score_key_nan_is_one_key_below_neg_inf_never_zero", ok_nan,
              "NaN key wrong");
        rk = nsa_rank_key(nsa_score_key(0.5f), 7);
        CHECK("rule_rank_key_ties_to_lower_index",
              nsa_rank_index(rk) == 7 &&
              nsa_rank_key(nsa_score_key(0.5f), 3) > rk &&
              nsa_rank_key(nsa_score_key(0.25f), 0) < rk,
              "rank key order");
    }
    CHECK("rule_defaults_strides_scale_branches",
          nsa_head_stride(0, 96) == 96 && nsa_head_stride(200, 96) == 200 &&
          nsa_token_stride(0, 4, 96) == 384 && nsa_token_stride(1000, 4, 96) == 1000 &&
          nsa_scale(0.0f, 64) == 0.125 && nsa_scale(0.3f, 64) == (double)0.3f &&
          nsa_scale(0.0f, 128) == 1.0 / sqrt(128.0) &&
          nsa_branch_count(NSA_BRANCH_ALL) == 3 &&
          nsa_branch_count(NSA_BRANCH_CMP | NSA_BRANCH_WIN) == 2 &&
          nsa_default_gate(NSA_BRANCH_ALL) == 1.0f / 3.0f &&
          nsa_default_gate(NSA_BRANCH_SLC) == 1.0f &&
          nsa_slc_forced(0, 100, 64, 1, 2) && nsa_slc_forced(1, 100, 64, 1, 2) &&
          !nsa_slc_forced(1, 200, 64, 1, 2) && nsa_slc_forced(2, 200, 64, 0, 2) &&
          nsa_slc_forced(3, 200, 64, 0, 2) && !nsa_slc_forced(0, 200, 64, 0, 1),
          "a default differs");
}

/* A NaN in the input must reach the output of every query that reads it: a
   bad value never passes for an empty branch (o = 0, lse = -inf). */
static void test_nan_input_propagates_to_readers(void)
{
    const char *name = "nan_query_gives_nan_output_not_empty_branch";
    nsa_config cfg = nsa_config_paper();
    const int len[1] = {300};
    const int64_t t_bad = 200, t_good = 150;
    prob p;
    run r;
    nsa_batch x;
    int j, nan_all = 1, finite_other = 1;
    prob_make(&p, &cfg, NSA_FP32, 1, len, NULL, 2, 1, 16, 16, 0);
    ((float *)p.q)[(t_bad * 2 + 1) * 16 + 3] = NAN; /* query t_bad, head 1 */
    x = prob_batch(&p);
    if (status_ok(name, "nsa_ref_forward", run_forward(&r, &cfg, &x, NULL))) {
        const float *o = (const float *)r.o;
        for (j = 0; j < 16; ++j) {
            nan_all &= o[(t_bad * 2 + 1) * 16 + j] != o[(t_bad * 2 + 1) * 16 + j];
            finite_other &= isfinite(o[(t_good * 2 + 1) * 16 + j]) != 0;
        }
        CHECK(name, nan_all, "o[%lld, head 1] is not all NaN", (long long)t_bad);
        CHECK(name, r.lse[2][t_bad * 2 + 1] != r.lse[2][t_bad * 2 + 1],
              "lse_win[%lld, head 1] = %g, want NaN", (long long)t_bad,
              (double)r.lse[2][t_bad * 2 + 1]);
        CHECK("nan_query_leaves_other_queries_finite", finite_other,
              "o[%lld, head 1] has a non-finite value", (long long)t_good);
    }
    run_free(&r);
    prob_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Bitwise properties. */

static int same_bytes(const void *a, const void *b, int64_t n)
{
    return n <= 0 || memcmp(a, b, (size_t)n) == 0;
}

/* The contract's settled rules (docs/CONTRACT.md, last section) that no
   other test pins down directly. */
static void test_settled_rules_hold(void)
{
    /* (1) A +inf logit makes the branch's output and lse NaN, never an empty
       branch. Caller-compressed, Dk = 1, q = 1, scale = 1: the compressed
       logits are K_cmp itself. */
    {
        const char *name = "settled_inf_logit_gives_nan_output_and_lse";
        nsa_config c = nsa_config_fla();
        const int len[1] = {40};
        prob p;
        nsa_batch x;
        float *o, *lse;
        int64_t t;
        int ok_nan = 1, ok_empty = 1;
        c.l = c.d = c.lp = 4;
        c.branches = NSA_BRANCH_CMP;
        c.caller_compressed = 1;
        c.scale = 1.0f;
        prob_make(&p, &c, NSA_FP32, 1, len, NULL, 1, 1, 1, 2, 0);
        for (t = 0; t < p.T; ++t) ((float *)p.q)[t] = 1.0f;
        ((float *)p.kc)[2] = INFINITY; /* block 2, keys 8..11: seen from t = 11 */
        x = prob_batch(&p);
        o = (float *)xcalloc(p.TQ * 2, sizeof(float));
        lse = (float *)xcalloc(p.TQ, sizeof(float));
        if (status_ok(name, "nsa_ref_attend_cmp",
                      nsa_ref_attend_cmp(&c, &x, p.kc, p.vc, o, lse))) {
            for (t = 0; t < p.TQ; ++t) {
                if (t >= 11) ok_nan &= isnan(lse[t]) && isnan(o[2 * t]) && isnan(o[2 * t + 1]);
                else if (t < 3) ok_empty &= lse[t] == -INFINITY && o[2 * t] == 0.0f;
                else ok_nan &= isfinite(lse[t]) && isfinite(o[2 * t]);
            }
            CHECK(name, ok_nan, "a query that sees the +inf logit is not NaN (or "
                  "one that does not see it is not finite)");
            CHECK(name, ok_empty, "queries before the first block are not empty");
        }
        free(o);
        free(lse);
        prob_free(&p);
    }
    /* (2) Logits mode: an eligible selection block that no visible
       compressed block overlaps scores exactly 0. */
    {
        const char *name = "settled_logits_block_without_visible_cmp_block_scores_0";
        nsa_config c = cfg_small(); /* l = 8, d = 4, l' = 16 */
        const int len[2] = {70, 23};
        prob p;
        run r;
        nsa_batch x;
        float *bs;
        size_t wsb;
        void *ws;
        c.score_mode = NSA_SCORE_LOGITS;
        prob_make(&p, &c, NSA_FP32, 2, len, NULL, 4, 2, 16, 8, 0);
        x = prob_batch(&p);
        if (status_ok(name, "nsa_ref_forward", run_forward(&r, &c, &x, NULL))) {
            int64_t bad = 0, zero_rows = 0, nonzero = 0, u0 = 0;
            int b, hk;
            bs = (float *)xcalloc(r.sz.units * p.Hkv * r.sz.max_slc_blocks, sizeof(float));
            nsa_ref_workspace_size(&c, &x, &wsb);
            ws = xcalloc((int64_t)wsb, 1);
            if (status_ok(name, "nsa_ref_block_scores",
                          nsa_ref_block_scores(&c, &x, r.kc, bs, ws, wsb)))
                for (b = 0; b < 2; ++b) {
                    int64_t t, j, i;
                    for (t = 0; t < len[b]; ++t)
                        for (hk = 0; hk < p.Hkv; ++hk)
                            for (j = 0; j * c.lp <= t; ++j) {
                                /* some compressed block [i*d, i*d+l-1] that is
                                   whole at or before t meets [j*l', (j+1)*l'-1]? */
                                int covered = 0;
                                float v = bs[((u0 + t) * p.Hkv + hk) * r.sz.max_slc_blocks + j];
                                for (i = 0; i * c.d + c.l - 1 <= t; ++i)
                                    covered |= i * c.d <= (j + 1) * c.lp - 1 &&
                                               i * c.d + c.l - 1 >= j * c.lp;
                                if (!covered) {
                                    ++zero_rows;
                                    bad += v != 0.0f;
                                } else {
                                    nonzero += v != 0.0f;
                                }
                            }
                    u0 += len[b];
                }
            CHECK(name, bad == 0 && zero_rows > 0 && nonzero > 0,
                  "%lld of %lld uncovered eligible blocks do not score 0 "
                  "(%lld covered blocks score non-zero)", (long long)bad,
                  (long long)zero_rows, (long long)nonzero);
            free(bs);
            free(ws);
        }
        run_free(&r);
        prob_free(&p);
    }
    /* (3) Tiles start at each sequence's first query: with suffix queries,
       a one-query decode step is its own tile and selects what the same
       query selects per token (bq = 1); longer suffixes match the oracle. */
    {
        const char *name = "settled_tiles_start_at_first_query_decode_is_own_tile";
        static const int klen[3] = {90, 37, 64}, q1[3] = {1, 1, 1}, q6[3] = {6, 5, 64};
        nsa_config c = cfg_small(), c1;
        prob p;
        run rt, r1;
        nsa_batch x;
        c.bq = 4;
        c1 = c;
        c1.bq = 1;
        prob_make(&p, &c, NSA_FP32, 3, klen, q1, 4, 2, 16, 8, 1);
        x = prob_batch(&p);
        if (status_ok(name, "nsa_ref_forward (bq 4)", run_forward(&rt, &c, &x, p.g)) &&
            status_ok(name, "nsa_ref_forward (bq 1)", run_forward(&r1, &c1, &x, p.g)))
            CHECK(name, rt.sz.units == 3 &&
                  same_bytes(rt.sel_idx, r1.sel_idx, r1.sz.sel_idx * 4) &&
                  same_bytes(rt.sel_count, r1.sel_count, r1.sz.sel_count * 4),
                  "decode steps with bq = 4 (%lld units) do not select as bq = 1",
                  (long long)rt.sz.units);
        run_free(&rt);
        run_free(&r1);
        prob_free(&p);
        prob_make(&p, &c, NSA_FP32, 3, klen, q6, 4, 2, 16, 8, 1);
        compare_with_oracle("settled_tiles_with_suffix_queries_match_oracle", &p, 1);
        prob_free(&p);
    }
}

/* Two runs agree bitwise on every output. */
static int runs_equal(const run *a, const run *b, int backward, char *what,
                      size_t wn)
{
    size_t es = nsa_dtype_size(a->dt);
    int c;
    static const char *ln[3] = {"lse_cmp", "lse_slc", "lse_win"};
#define SAME(name_, pa, pb, bytes)                                   \
    if (!same_bytes(pa, pb, bytes)) {                                \
        snprintf(what, wn, "%s", name_);                             \
        return 0;                                                    \
    }
    SAME("o", a->o, b->o, a->sz.o * (int64_t)es);
    for (c = 0; c < 3; ++c) SAME(ln[c], a->lse[c], b->lse[c], a->sz.lse * 4);
    SAME("sel_idx", a->sel_idx, b->sel_idx, a->sz.sel_idx * 4);
    SAME("sel_count", a->sel_count, b->sel_count, a->sz.sel_count * 4);
    if (backward) {
        SAME("dq", a->gr.dq, b->gr.dq, a->sz.q * (int64_t)es);
        SAME("dk", a->gr.dk, b->gr.dk, a->sz.k * (int64_t)es);
        SAME("dv", a->gr.dv, b->gr.dv, a->sz.v * (int64_t)es);
        SAME("dgates", a->gr.dgates, b->gr.dgates, a->sz.gates * (int64_t)es);
        SAME("dk_cmp", a->gr.dk_cmp, b->gr.dk_cmp, a->sz.k_cmp * (int64_t)es);
        SAME("dv_cmp", a->gr.dv_cmp, b->gr.dv_cmp, a->sz.v_cmp * (int64_t)es);
    }
#undef SAME
    return 1;
}

static void test_each_sequence_equals_running_it_alone(void)
{
    const char *name = "varlen_sequence_equals_running_it_alone_bitwise";
    int t;
    for (t = 0; t < 2; ++t) {
        nsa_config c = cfg_small();
        prob p;
        nsa_batch x;
        run all;
        int b;
        nsa_dtype dt = t ? NSA_BF16 : NSA_FP32;
        size_t es = nsa_dtype_size(dt);
        prob_make(&p, &c, dt, VARLEN_B, varlen_lens, NULL, 4, 2, 16, 8, 1);
        x = prob_batch(&p);
        if (!status_ok(name, "nsa_ref_forward", run_forward(&all, &c, &x, p.g)) ||
            !status_ok(name, "nsa_ref_backward", run_backward(&all, &c, &x, p.g, p.dO))) {
            run_free(&all);
            prob_free(&p);
            continue;
        }
        {
            int64_t c0 = 0, u0 = 0;
            for (b = 0; b < VARLEN_B; ++b) {
                int32_t cu1[2];
                nsa_batch y = x;
                run one;
                int64_t t0 = p.cu[b], n = varlen_lens[b], ok = 1, br;
                char what[64] = "";
                cu1[0] = 0;
                cu1[1] = (int32_t)n;
                y.B = 1;
                y.T = y.TQ = n;
                y.cu_seqlens = cu1;
                y.q = (const char *)p.q + t0 * p.H * p.Dk * es;
                y.k = (const char *)p.k + t0 * p.Hkv * p.Dk * es;
                y.v = (const char *)p.v + t0 * p.Hkv * p.Dv * es;
                {
                    const char *g1 = (const char *)p.g + t0 * p.H * 3 * es;
                    const char *d1 = (const char *)p.dO + t0 * p.H * p.Dv * es;
                    if (!status_ok(name, "nsa_ref_forward (alone)",
                                   run_forward(&one, &c, &y, g1)) ||
                        !status_ok(name, "nsa_ref_backward (alone)",
                                   run_backward(&one, &c, &y, g1, d1))) {
                        run_free(&one);
                        continue;
                    }
                }
/* Rows of the batched run (starting at element `at` of a tensor of
   element size `sz`) against the whole of the lone run's. */
#define PART(nm, pa, at, sz, pb, count)                                     \
    if (ok && !same_bytes((const char *)(pa) + (at) * (sz), pb, (count) * (sz))) { \
        ok = 0;                                                           \
        snprintf(what, sizeof what, "%s", nm);                            \
    }
                PART("o", all.o, t0 * p.H * p.Dv, es, one.o, one.sz.o);
                for (br = 0; br < 3; ++br)
                    PART("lse", all.lse[br], t0 * p.H, 4, one.lse[br], one.sz.lse);
                PART("sel_idx", all.sel_idx, u0 * p.Hkv * c.n, 4, one.sel_idx,
                     one.sz.sel_idx);
                PART("sel_count", all.sel_count, u0 * p.Hkv, 4, one.sel_count,
                     one.sz.sel_count);
                PART("dq", all.gr.dq, t0 * p.H * p.Dk, es, one.gr.dq, one.sz.q);
                PART("dk", all.gr.dk, t0 * p.Hkv * p.Dk, es, one.gr.dk, one.sz.k);
                PART("dv", all.gr.dv, t0 * p.Hkv * p.Dv, es, one.gr.dv, one.sz.v);
                PART("dgates", all.gr.dgates, t0 * p.H * 3, es, one.gr.dgates,
                     one.sz.gates);
                PART("k_cmp", all.kc, c0 * p.Hkv * p.Dk, es, one.kc, one.sz.k_cmp);
#undef PART
                CHECK(name, ok, "%s: sequence %d (length %lld) differs in %s",
                      dtype_name(dt), b, (long long)n, what);
                c0 += one.sz.Tc;
                u0 += one.sz.units;
                run_free(&one);
            }
        }
        run_free(&all);
        prob_free(&p);
    }
}

/* Queries that are the last positions of their sequences (decode: one
   each; chunked prefill: a few) give the matching rows of the full run. */
static void test_suffix_queries_equal_full_run_rows(void)
{
    const char *name = "suffix_queries_equal_matching_rows_of_full_run_bitwise";
    static const int klen[5] = {100, 1, 33, 64, 17};
    static const int q1[5] = {1, 1, 1, 1, 1}, qc[5] = {20, 1, 0, 64, 5};
    int v;
    for (v = 0; v < 2; ++v) {
        nsa_config c = cfg_small();
        prob p, s;
        nsa_batch x, y;
        run full, suf;
        const int *ql = v ? qc : q1;
        int b;
        prob_make(&p, &c, NSA_BF16, 5, klen, NULL, 4, 2, 16, 8, 1);
        prob_make(&s, &c, NSA_BF16, 5, klen, ql, 4, 2, 16, 8, 1);
        /* s shares p's keys; its queries and gates are p's last rows. */
        memcpy(s.k, p.k, (size_t)(p.T * p.Hkv * p.Dk) * 2);
        memcpy(s.v, p.v, (size_t)(p.T * p.Hkv * p.Dv) * 2);
        for (b = 0; b < 5; ++b) {
            int64_t nq = s.cuq[b + 1] - s.cuq[b];
            int64_t from = p.cu[b + 1] - nq;
            memcpy((char *)s.q + (int64_t)s.cuq[b] * p.H * p.Dk * 2,
                   (char *)p.q + from * p.H * p.Dk * 2, (size_t)(nq * p.H * p.Dk) * 2);
            memcpy((char *)s.g + (int64_t)s.cuq[b] * p.H * 3 * 2,
                   (char *)p.g + from * p.H * 3 * 2, (size_t)(nq * p.H * 3) * 2);
        }
        tensor_sync(s.dt, s.T * s.Hkv * s.Dk, s.k, s.kd);
        tensor_sync(s.dt, s.T * s.Hkv * s.Dv, s.v, s.vd);
        tensor_sync(s.dt, s.TQ * s.H * s.Dk, s.q, s.qd);
        tensor_sync(s.dt, s.TQ * s.H * 3, s.g, s.gd);
        x = prob_batch(&p);
        y = prob_batch(&s);
        if (status_ok(name, "nsa_ref_forward (full)", run_forward(&full, &c, &x, p.g)) &&
            status_ok(name, "nsa_ref_forward (suffix)", run_forward(&suf, &c, &y, s.g))) {
            int64_t bad = 0, br;
            for (b = 0; b < 5; ++b) {
                int64_t nq = s.cuq[b + 1] - s.cuq[b], i;
                for (i = 0; i < nq; ++i) {
                    int64_t rf = p.cu[b + 1] - nq + i, rs = s.cuq[b] + i;
                    if (!same_bytes((char *)full.o + rf * p.H * p.Dv * 2,
                                    (char *)suf.o + rs * p.H * p.Dv * 2, p.H * p.Dv * 2))
                        ++bad;
                    for (br = 0; br < 3; ++br)
                        if (!same_bytes(full.lse[br] + rf * p.H, suf.lse[br] + rs * p.H,
                                        p.H * 4))
                            ++bad;
                    /* bq = 1: units are queries */
                    if (!same_bytes(full.sel_idx + rf * p.Hkv * c.n,
                                    suf.sel_idx + rs * p.Hkv * c.n, p.Hkv * c.n * 4) ||
                        !same_bytes(full.sel_count + rf * p.Hkv,
                                    suf.sel_count + rs * p.Hkv, p.Hkv * 4))
                        ++bad;
                }
            }
            CHECK(name, bad == 0, "%s: %lld rows differ from the full run",
                  v ? "chunks" : "one query per sequence", (long long)bad);
            /* The suffix run also matches the oracle. */
            compare_with_oracle("suffix_queries_match_oracle", &s, 1);
        }
        run_free(&full);
        run_free(&suf);
        prob_free(&p);
        prob_free(&s);
    }
}

/* Q, K, V inside one fused [T, H + 2 Hkv, D] buffer, and head-major Q. */
static void test_strided_inputs_equal_contiguous(void)
{
    const char *name = "strided_inputs_equal_contiguous_bitwise";
    int klen[3] = {50, 13, 80}, t;
    for (t = 0; t < 2; ++t) {
        nsa_config c = cfg_small();
        prob p;
        nsa_batch x, y, z;
        run a, f, hm;
        const int D = 16, H = 4, Hkv = 2, W = H + 2 * Hkv;
        nsa_dtype dt = t ? NSA_BF16 : NSA_FP32;
        size_t es = nsa_dtype_size(dt);
        char *fused, *qhm;
        int64_t i;
        int h;
        char what[64] = "";
        prob_make(&p, &c, dt, 3, klen, NULL, H, Hkv, D, D, 1);
        fused = (char *)xcalloc(p.T * W * D, es);
        qhm = (char *)xcalloc(p.T * H * D, es);
        for (i = 0; i < p.T; ++i) {
            memcpy(fused + i * W * D * es, (char *)p.q + i * H * D * es, H * D * es);
            memcpy(fused + (i * W + H) * D * es, (char *)p.k + i * Hkv * D * es,
                   Hkv * D * es);
            memcpy(fused + (i * W + H + Hkv) * D * es, (char *)p.v + i * Hkv * D * es,
                   Hkv * D * es);
            for (h = 0; h < H; ++h)
                memcpy(qhm + ((int64_t)h * p.T + i) * D * es,
                       (char *)p.q + (i * H + h) * D * es, D * es);
        }
        x = prob_batch(&p);
        y = x;
        y.q = fused;
        y.k = fused + H * D * es;
        y.v = fused + (H + Hkv) * D * es;
        y.q_stride_token = y.k_stride_token = y.v_stride_token = W * D;
        y.q_stride_head = y.k_stride_head = y.v_stride_head = D;
        z = x;
        z.q = qhm;
        z.q_stride_token = D;
        z.q_stride_head = p.T * D;
        if (status_ok(name, "contiguous", run_forward(&a, &c, &x, p.g)) &&
            status_ok(name, "fused", run_forward(&f, &c, &y, p.g)) &&
            status_ok(name, "head-major", run_forward(&hm, &c, &z, p.g)) &&
            status_ok(name, "contiguous bwd", run_backward(&a, &c, &x, p.g, p.dO)) &&
            status_ok(name, "fused bwd", run_backward(&f, &c, &y, p.g, p.dO)) &&
            status_ok(name, "head-major bwd", run_backward(&hm, &c, &z, p.g, p.dO))) {
            CHECK(name, runs_equal(&a, &f, 1, what, sizeof what),
                  "%s fused QKV buffer differs in %s", dtype_name(dt), what);
            CHECK(name, runs_equal(&a, &hm, 1, what, sizeof what),
                  "%s head-major Q differs in %s", dtype_name(dt), what);
        }
        run_free(&a);
        run_free(&f);
        run_free(&hm);
        free(fused);
        free(qhm);
        prob_free(&p);
    }
}

/* compress -> select -> attend_* -> combine is forward, bit for bit. */
static void test_stages_compose_to_forward(void)
{
    const char *name = "stages_compose_to_forward_bitwise";
    int klen[3] = {70, 8, 45}, v;
    for (v = 0; v < 3; ++v) {
        nsa_config c = v == 2 ? nsa_config_tile(64, 64) : cfg_small();
        prob p;
        nsa_batch x;
        run r;
        nsa_sizes sz;
        size_t es;
        nsa_dtype dt = v == 1 ? NSA_BF16 : NSA_FP32;
        int lens2[3] = {300, 64, 129};
        if (v == 2) c.w = 100;
        prob_make(&p, &c, dt, 3, v == 2 ? lens2 : klen, NULL, 4, 2, 16, 16, v != 1);
        es = nsa_dtype_size(dt);
        x = prob_batch(&p);
        if (status_ok(name, "nsa_ref_forward", run_forward(&r, &c, &x, prob_gates(&p)))) {
            void *kc, *vc, *o;
            float *oc, *os, *ow, *lc, *ls, *lw, *bs;
            int32_t *si, *sn;
            uint8_t *bm;
            int64_t i, j, bad = 0;
            sz = r.sz;
            kc = xcalloc(sz.k_cmp, es);
            vc = xcalloc(sz.v_cmp, es);
            o = xcalloc(sz.o, es);
            oc = (float *)xcalloc(sz.o, 4); os = (float *)xcalloc(sz.o, 4);
            ow = (float *)xcalloc(sz.o, 4);
            lc = (float *)xcalloc(sz.lse, 4); ls = (float *)xcalloc(sz.lse, 4);
            lw = (float *)xcalloc(sz.lse, 4);
            si = (int32_t *)xcalloc(sz.sel_idx, 4);
            sn = (int32_t *)xcalloc(sz.sel_count, 4);
            bm = (uint8_t *)xcalloc(sz.block_mask, 1);
            bs = (float *)xcalloc(sz.block_mask, 4);
            fill(kc, sz.k_cmp, es, FILL_F); fill(vc, sz.v_cmp, es, FILL_F);
            fill(o, sz.o, es, FILL_F);
            fill(oc, sz.o, 4, FILL_F); fill(os, sz.o, 4, FILL_F); fill(ow, sz.o, 4, FILL_F);
            fill(lc, sz.lse, 4, FILL_F); fill(ls, sz.lse, 4, FILL_F);
            fill(lw, sz.lse, 4, FILL_F);
            fill(si, sz.sel_idx, 4, FILL_I); fill(sn, sz.sel_count, 4, FILL_I);
            fill(bm, sz.block_mask, 1, FILL_I); fill(bs, sz.block_mask, 4, FILL_F);
            if (status_ok(name, "nsa_ref_compress", nsa_ref_compress(&c, &x, kc, vc)) &&
                status_ok(name, "nsa_ref_select",
                          nsa_ref_select(&c, &x, kc, si, sn, r.ws, r.wsb)) &&
                status_ok(name, "nsa_ref_attend_cmp",
                          nsa_ref_attend_cmp(&c, &x, kc, vc, oc, lc)) &&
                status_ok(name, "nsa_ref_attend_slc",
                          nsa_ref_attend_slc(&c, &x, si, sn, os, ls)) &&
                status_ok(name, "nsa_ref_attend_win", nsa_ref_attend_win(&c, &x, ow, lw)) &&
                status_ok(name, "nsa_ref_combine",
                          nsa_ref_combine(&c, &x, prob_gates(&p), oc, os, ow, o))) {
                check_written("compress k_cmp", kc, sz.k_cmp, es, FILL_F);
                check_written("compress v_cmp", vc, sz.v_cmp, es, FILL_F);
                check_written("select sel_idx", si, sz.sel_idx, 4, FILL_I);
                check_written("select sel_count", sn, sz.sel_count, 4, FILL_I);
                check_written("attend_cmp o", oc, sz.o, 4, FILL_F);
                check_written("attend_slc o", os, sz.o, 4, FILL_F);
                check_written("attend_win o", ow, sz.o, 4, FILL_F);
                check_written("attend_cmp lse", lc, sz.lse, 4, FILL_F);
                check_written("attend_slc lse", ls, sz.lse, 4, FILL_F);
                check_written("attend_win lse", lw, sz.lse, 4, FILL_F);
                check_written("combine o", o, sz.o, es, FILL_F);
                CHECK(name, same_bytes(kc, r.kc, sz.k_cmp * (int64_t)es) &&
                      same_bytes(vc, r.vc, sz.v_cmp * (int64_t)es),
                      "v%d: compressed K/V differ from forward's saved", v);
                CHECK(name, same_bytes(si, r.sel_idx, sz.sel_idx * 4) &&
                      same_bytes(sn, r.sel_count, sz.sel_count * 4),
                      "v%d: selection differs from forward's", v);
                CHECK(name, same_bytes(lc, r.lse[0], sz.lse * 4) &&
                      same_bytes(ls, r.lse[1], sz.lse * 4) &&
                      same_bytes(lw, r.lse[2], sz.lse * 4),
                      "v%d: branch lse differ from forward's", v);
                CHECK(name, same_bytes(o, r.o, sz.o * (int64_t)es),
                      "v%d: combined o differs from forward's", v);
            }
            if (status_ok(name, "nsa_ref_block_mask",
                          nsa_ref_block_mask(&c, &x, r.sel_idx, r.sel_count, bm))) {
                for (i = 0; i < sz.sel_count; ++i) {
                    int cntm = 0;
                    for (j = 0; j < sz.max_slc_blocks; ++j) {
                        uint8_t m = bm[i * sz.max_slc_blocks + j];
                        int e, in = 0;
                        for (e = 0; e < r.sel_count[i]; ++e)
                            in |= r.sel_idx[i * c.n + e] == j;
                        if ((m != 0) != in || m > 1) ++bad;
                        cntm += m != 0;
                    }
                    if (cntm != r.sel_count[i]) ++bad;
                }
                CHECK("block_mask_agrees_with_sel_idx", bad == 0,
                      "v%d: %lld mismatches", v, (long long)bad);
            }
            /* Block scores: -inf exactly where a block is not eligible;
               the oracle's scores elsewhere. */
            if (status_ok(name, "nsa_ref_block_scores",
                          nsa_ref_block_scores(&c, &x, r.kc, bs, r.ws, r.wsb))) {
                oracle_in in = prob_oracle_in(&p);
                check_written("block_scores", bs, sz.block_mask, 4, FILL_F);
                oracle_out oo;
                double e = 0.0, mx = 1e-30;
                int64_t inf_bad = 0;
                oracle_forward(&in, &oo);
                for (i = 0; i < sz.block_mask; ++i) {
                    double w = oo.scores[i];
                    if (isinf(w) || isinf(bs[i])) {
                        if (w != (double)bs[i]) ++inf_bad;
                        continue;
                    }
                    if (fabs(w) > mx) mx = fabs(w);
                    if (fabs(w - bs[i]) > e) e = fabs(w - bs[i]);
                }
                CHECK("block_scores_match_oracle", inf_bad == 0 &&
                      e / mx <= (dt == NSA_FP32 ? 1e-5 : 1e-2),
                      "v%d: %lld eligibility mismatches, max error %.3g of max",
                      v, (long long)inf_bad, e / mx);
                oracle_free(&oo);
            }
            free(kc); free(vc); free(o); free(oc); free(os); free(ow);
            free(lc); free(ls); free(lw); free(si); free(sn); free(bm); free(bs);
        }
        run_free(&r);
        prob_free(&p);
    }
}

/* Logits mode with tiles: the tile's score of a block whose compressed
   blocks every query of the tile sees equals Bq * mean(q) . K_cmp, summed
   over the group's heads (l = d = l', so blocks map one to one). */
static void test_logits_tile_score_is_q_mean_score(void)
{
    const char *name = "logits_tile_score_equals_bq_times_mean_q_dot_kcmp";
    int klen[2] = {150, 61}, bq;
    for (bq = 4; bq <= 16; bq *= 4) {
        nsa_config c = cfg_small();
        prob p;
        nsa_batch x;
        run r;
        c.l = c.d = c.lp = 16;
        c.bq = bq;
        c.score_mode = NSA_SCORE_LOGITS;
        prob_make(&p, &c, NSA_FP32, 2, klen, NULL, 4, 2, 16, 8, 0);
        x = prob_batch(&p);
        if (status_ok(name, "nsa_ref_forward", run_forward(&r, &c, &x, NULL))) {
            float *bs = (float *)xcalloc(r.sz.block_mask, 4);
            const float *kc = (const float *)r.kc;
            double sc = 1.0 / sqrt(16.0), err = 0.0, mx = 1e-30;
            int64_t checked = 0;
            if (status_ok(name, "nsa_ref_block_scores",
                          nsa_ref_block_scores(&c, &x, r.kc, bs, r.ws, r.wsb))) {
                int64_t u0 = 0, c0 = 0;
                int b;
                for (b = 0; b < 2; ++b) {
                    int64_t nu = nsa_units(klen[b], bq), u, j;
                    for (u = 0; u < nu; ++u) {
                        int64_t t0 = u * bq, t1 = t0 + bq < klen[b] ? t0 + bq : klen[b];
                        int hk, h, xx;
                        for (hk = 0; hk < 2; ++hk)
                            for (j = 0; (j + 1) * 16 - 1 <= t0; ++j) {
                                double want = 0.0, got;
                                for (h = hk * 2; h < hk * 2 + 2; ++h)
                                    for (xx = 0; xx < 16; ++xx) {
                                        double m = 0.0;
                                        int64_t t;
                                        for (t = t0; t < t1; ++t)
                                            m += p.qd[((p.cu[b] + t) * 4 + h) * 16 + xx];
                                        m /= (double)(t1 - t0);
                                        want += sc * (double)(t1 - t0) * m *
                                                kc[((c0 + j) * 2 + hk) * 16 + xx];
                                    }
                                got = bs[((u0 + u) * 2 + hk) * r.sz.max_slc_blocks + j];
                                if (fabs(want) > mx) mx = fabs(want);
                                if (fabs(got - want) > err) err = fabs(got - want);
                                ++checked;
                            }
                    }
                    u0 += nu;
                    c0 += nsa_cmp_blocks(klen[b], 16, 16);
                }
                CHECK(name, checked > 0 && err / mx <= 1e-5,
                      "bq=%d: %lld scores checked, max error %.3g of max", bq,
                      (long long)checked, err / mx);
            }
            free(bs);
        }
        run_free(&r);
        prob_free(&p);
    }
}

/* Two runs, and 1, 3 and 4 threads, bitwise. The thread counts are forced
   (omp_set_num_threads, dynamic adjustment off) whatever the core count, so
   a one-core machine still runs several threads. */
static void test_results_are_bitwise_deterministic(void)
{
    const char *name = "results_bitwise_identical_across_threads_and_runs";
    int klen[3] = {500, 129, 200};
    nsa_config c = nsa_config_paper();
    prob p;
    nsa_batch x;
    run a, b2;
    char what[64] = "";
    c.w = 128;
    c.n = 4;
    prob_make(&p, &c, NSA_BF16, 3, klen, NULL, 4, 2, 32, 32, 1);
    x = prob_batch(&p);
#ifdef _OPENMP
    {
        static const int counts[2] = {1, 3};
        const int nt = omp_get_max_threads(), dyn = omp_get_dynamic();
        int i;
        omp_set_dynamic(0);
        omp_set_num_threads(4);
        CHECK(name, omp_get_max_threads() == 4, "asked for 4 OpenMP threads, "
              "got %d", omp_get_max_threads());
        if (status_ok(name, "run 1", run_forward(&a, &c, &x, p.g)) &&
            status_ok(name, "run 1 bwd", run_backward(&a, &c, &x, p.g, p.dO)) &&
            status_ok(name, "run 2", run_forward(&b2, &c, &x, p.g)) &&
            status_ok(name, "run 2 bwd", run_backward(&b2, &c, &x, p.g, p.dO))) {
            CHECK(name, runs_equal(&a, &b2, 1, what, sizeof what),
                  "two runs with 4 threads differ in %s", what);
            for (i = 0; i < 2; ++i) {
                run o;
                omp_set_num_threads(counts[i]);
                if (status_ok(name, "fewer threads", run_forward(&o, &c, &x, p.g)) &&
                    status_ok(name, "fewer threads bwd",
                              run_backward(&o, &c, &x, p.g, p.dO)))
                    CHECK(name, runs_equal(&a, &o, 1, what, sizeof what),
                          "%d threads vs 4 threads differ in %s", counts[i], what);
                run_free(&o);
            }
        }
        omp_set_num_threads(nt);
        omp_set_dynamic(dyn);
    }
#else
    check_skip(name, "built without OpenMP: thread counts not compared");
    if (status_ok(name, "run 1", run_forward(&a, &c, &x, p.g)) &&
        status_ok(name, "run 1 bwd", run_backward(&a, &c, &x, p.g, p.dO)) &&
        status_ok(name, "run 2", run_forward(&b2, &c, &x, p.g)) &&
        status_ok(name, "run 2 bwd", run_backward(&b2, &c, &x, p.g, p.dO)))
        CHECK(name, runs_equal(&a, &b2, 1, what, sizeof what),
              "two runs differ in %s", what);
#endif
    run_free(&a);
    run_free(&b2);
    prob_free(&p);
}

/* ------------------------------------------------------------------------ */
/* Saved branch outputs (nsa_saved.o_branch): forward writes each enabled
   branch's fp32 o_c to its plane; backward (fp32 accumulation) reads o_c
   from there instead of recomputing it. The planes are the numbers the
   recomputation gives, so nothing else may change by a bit. */

static const char *const plane_name[3] = {"cmp", "slc", "win"};

/* A caller selection for p (cfg.bq units over p's queries): distinct blocks
   in shuffled order, with unused entries (-1, past the sequence's blocks),
   an entry given twice now and then, and counts from -1 to n + 1. */
static void random_caller_selection(prob *p, int32_t **si_out, int32_t **sn_out)
{
    const nsa_config *c = &p->cfg;
    int64_t rows = 0, row = 0;
    int32_t *si, *sn;
    int b, i;
    for (b = 0; b < p->B; ++b)
        rows += nsa_units(p->cuq[b + 1] - p->cuq[b], c->bq) * p->Hkv;
    si = (int32_t *)xcalloc(rows * c->n, sizeof(int32_t));
    sn = (int32_t *)xcalloc(rows, sizeof(int32_t));
    for (b = 0; b < p->B; ++b) {
        const int64_t nb = nsa_slc_blocks(p->cu[b + 1] - p->cu[b], c->lp);
        const int64_t nu = nsa_units(p->cuq[b + 1] - p->cuq[b], c->bq);
        int32_t *perm = (int32_t *)xcalloc(nb, sizeof(int32_t));
        int64_t u;
        for (u = 0; u < nu * p->Hkv; ++u, ++row) {
            random_permutation(perm, nb);
            sn[row] = (int32_t)check_rand_int(c->n + 3) - 1; /* -1 .. n+1 */
            for (i = 0; i < c->n; ++i) {
                int64_t r = check_rand_int(8);
                int32_t *e = &si[row * c->n + i];
                *e = i < nb ? perm[i] : -1;
                if (r == 0) *e = -1;
                if (r == 1) *e = (int32_t)nb + (int32_t)check_rand_int(3);
                if (r == 2 && i > 0) *e = e[-1];
            }
        }
        free(perm);
    }
    p->sel_idx = si;
    p->sel_count = sn;
    *si_out = si;
    *sn_out = sn;
}

/* One problem, run without and with saved.o_branch: forward's outputs the
   same bits; every element of an enabled branch's plane written (NaN
   poison before), a disabled branch's plane untouched, rows that see no key
   +0; each plane the bits of the stage entry point of its branch
   (nsa_ref_attend_*); then backward's gradients the same bits. */
static void saved_branch_case(const char *what, const prob *p)
{
    const nsa_config *c = &p->cfg;
    const nsa_batch x = prob_batch(p);
    const void *g = prob_gates(p);
    run a, b;
    char diff[64] = "";
    float *planes, *stage_o, *stage_lse;
    int64_t n, first, bad, row;
    int br, j;
    memset(&b, 0, sizeof b);
    if (!status_ok("backward_with_saved_branch_outputs_is_bitwise_the_same",
                   "nsa_ref_forward", run_forward(&a, c, &x, g)) ||
        !status_ok("backward_with_saved_branch_outputs_is_bitwise_the_same",
                   "nsa_ref_backward", run_backward(&a, c, &x, g, p->dO))) {
        run_free(&a);
        return;
    }
    n = a.sz.o;
    planes = (float *)xcalloc(3 * n, sizeof(float));
    stage_o = (float *)xcalloc(n, sizeof(float));
    stage_lse = (float *)xcalloc(a.sz.lse, sizeof(float));
    fill(planes, 3 * n, 4, FILL_F);
    if (status_ok("forward_with_saved_branch_outputs_is_bitwise_the_same",
                  "nsa_ref_forward (o_branch)",
                  run_forward_planes(&b, c, &x, g, planes))) {
        CHECK("forward_with_saved_branch_outputs_is_bitwise_the_same",
              runs_equal(&a, &b, 0, diff, sizeof diff),
              "%s: %s differs from a forward without o_branch", what, diff);
        for (br = 0; br < 3; ++br) {
            const float *pl = planes + br * n;
            if (!(c->branches & (1u << br))) {
                bad = n - unwritten(pl, n, 4, FILL_F, &first);
                CHECK("forward_leaves_a_disabled_branch_plane_untouched", bad == 0,
                      "%s: %lld elements of the %s plane were written", what,
                      (long long)bad, plane_name[br]);
                continue;
            }
            bad = unwritten(pl, n, 4, FILL_F, &first);
            CHECK("forward_writes_every_element_of_an_enabled_branch_plane", bad == 0,
                  "%s: %lld of %lld elements of the %s plane still NaN-poisoned "
                  "(first %lld)", what, (long long)bad, (long long)n,
                  plane_name[br], (long long)first);
            for (row = 0, bad = 0; row < a.sz.lse; ++row)
                if (a.lse[br][row] == -INFINITY)
                    for (j = 0; j < p->Dv; ++j)
                        bad += nsa__f32_bits(pl[row * p->Dv + j]) != 0u;
            CHECK("branch_plane_is_zero_where_the_branch_sees_no_key", bad == 0,
                  "%s: %lld elements of the %s plane are not +0 in rows with "
                  "lse = -inf", what, (long long)bad, plane_name[br]);
            /* the stage entry point of the branch, on the forward's K_cmp
               (or the caller's) and on the caller's selection as given (or
               the forward's) */
            fill(stage_o, n, 4, FILL_F);
            {
                const void *kc = c->caller_compressed ? p->kc : a.kc;
                const void *vc = c->caller_compressed ? p->vc : a.vc;
                const int32_t *si = p->sel_idx ? p->sel_idx : a.sel_idx;
                const int32_t *sn = p->sel_idx ? p->sel_count : a.sel_count;
                nsa_status st = br == 0 ? nsa_ref_attend_cmp(c, &x, kc, vc, stage_o, stage_lse)
                              : br == 1 ? nsa_ref_attend_slc(c, &x, si, sn, stage_o, stage_lse)
                                        : nsa_ref_attend_win(c, &x, stage_o, stage_lse);
                if (status_ok("branch_plane_equals_the_stage_output_bitwise",
                              plane_name[br], st))
                    CHECK("branch_plane_equals_the_stage_output_bitwise",
                          same_bytes(pl, stage_o, n * 4),
                          "%s: the %s plane differs from nsa_ref_attend_%s's o",
                          what, plane_name[br], plane_name[br]);
            }
        }
        if (status_ok("backward_with_saved_branch_outputs_is_bitwise_the_same",
                      "nsa_ref_backward (o_branch)",
                      run_backward(&b, c, &x, g, p->dO)))
            CHECK("backward_with_saved_branch_outputs_is_bitwise_the_same",
                  runs_equal(&a, &b, 1, diff, sizeof diff),
                  "%s: %s differs from a backward without o_branch", what, diff);
    }
    run_free(&a);
    run_free(&b);
    free(planes);
    free(stage_o);
    free(stage_lse);
}

static void test_saved_branch_outputs_change_no_bit(void)
{
    static const nsa_dtype dts[3] = {NSA_FP32, NSA_BF16, NSA_FP16};
    static const unsigned subsets[6] = {
        NSA_BRANCH_CMP, NSA_BRANCH_SLC, NSA_BRANCH_WIN,
        NSA_BRANCH_CMP | NSA_BRANCH_SLC, NSA_BRANCH_CMP | NSA_BRANCH_WIN,
        NSA_BRANCH_SLC | NSA_BRANCH_WIN};
    static const int klen_p[2] = {1100, 157}, klen_t[3] = {300, 64, 129};
    static const int klen_s[5] = {150, 40, 0, 33, 97}, qlen_s[5] = {101, 0, 0, 33, 9};
    static const int klen_c[3] = {50, 20, 33}, klen_w[2] = {40, 17};
    char what[96];
    prob p;
    int i, g;
    /* varlen batch (empty, one-token, l-1, l, l' and longer sequences),
       each storage type, gates and none */
    for (i = 0; i < 3; ++i)
        for (g = 0; g < 2; ++g) {
            nsa_config c = cfg_small();
            prob_make(&p, &c, dts[i], VARLEN_B, varlen_lens, NULL, 4, 2, 16, 8, g);
            snprintf(what, sizeof what, "varlen %s, %s", dtype_name(dts[i]),
                     g ? "gates" : "no gates");
            saved_branch_case(what, &p);
            prob_free(&p);
        }
    /* the presets as shipped; tiles Bq = 64 and 128 in logits mode */
    for (i = 0; i < 4; ++i) {
        nsa_config c = i == 0 ? nsa_config_paper() : i == 1 ? nsa_config_fla()
                     : i == 2 ? nsa_config_tile(64, 64) : nsa_config_tile(128, 128);
        const nsa_dtype dt = i == 0 ? NSA_BF16 : i == 1 ? NSA_FP16 : i == 2 ? NSA_FP32 : NSA_BF16;
        if (i >= 2) c.w = 100;
        prob_make(&p, &c, dt, i >= 2 ? 3 : 2, i >= 2 ? klen_t : klen_p, NULL,
                  i >= 2 ? 4 : 2, i >= 2 ? 2 : 1, 16, 16, i != 3);
        snprintf(what, sizeof what, "preset %s, %s",
                 i == 0 ? "paper" : i == 1 ? "fla" : i == 2 ? "tile 64 64" : "tile 128 128",
                 dtype_name(dt));
        saved_branch_case(what, &p);
        prob_free(&p);
    }
    /* branch subsets */
    for (i = 0; i < 6; ++i) {
        nsa_config c = cfg_small();
        c.branches = subsets[i];
        prob_make(&p, &c, i % 2 ? NSA_BF16 : NSA_FP32, VARLEN_B, varlen_lens, NULL,
                  4, 2, 16, 8, i % 3 != 2);
        snprintf(what, sizeof what, "branches %u", subsets[i]);
        saved_branch_case(what, &p);
        prob_free(&p);
    }
    /* suffix queries (cu_seqlens_q), per query and in tiles of 8; a
       sequence with keys and no queries */
    for (g = 0; g < 2; ++g) {
        nsa_config c = cfg_small();
        c.bq = g ? 8 : 1;
        prob_make(&p, &c, NSA_BF16, 5, klen_s, qlen_s, 4, 2, 16, 8, 1);
        snprintf(what, sizeof what, "suffix queries, bq %d", c.bq);
        saved_branch_case(what, &p);
        prob_free(&p);
    }
    /* a caller's selection with unused and repeated entries, bq 1 and 4 */
    for (g = 0; g < 2; ++g) {
        nsa_config c = cfg_small();
        int32_t *si, *sn;
        c.bq = g ? 4 : 1;
        prob_make(&p, &c, NSA_FP32, 3, klen_c, NULL, 4, 2, 8, 8, 1);
        random_caller_selection(&p, &si, &sn);
        snprintf(what, sizeof what, "caller selection, bq %d", c.bq);
        saved_branch_case(what, &p);
        free(si);
        free(sn);
        prob_free(&p);
    }
    /* caller-compressed K/V (dK_cmp, dV_cmp compared too) */
    for (g = 0; g < 2; ++g) {
        nsa_config c = cfg_small();
        c.caller_compressed = 1;
        prob_make(&p, &c, g ? NSA_BF16 : NSA_FP32, VARLEN_B, varlen_lens, NULL,
                  4, 2, 16, 8, g);
        snprintf(what, sizeof what, "caller compressed, %s", g ? "bf16" : "fp32");
        saved_branch_case(what, &p);
        prob_free(&p);
    }
    /* Dv wider than one forward pass (NSA__CHUNK): o_c in two chunks; a
       GQA group of 4 */
    {
        nsa_config c = cfg_small();
        prob_make(&p, &c, NSA_FP32, 2, klen_w, NULL, 4, 1, 8, NSA__CHUNK + 8, 1);
        saved_branch_case("Dv = NSA__CHUNK + 8, group of 4", &p);
        prob_free(&p);
    }
    /* fp64 accumulation: the planes hold o_c rounded to fp32 (the stage
       outputs' bits); backward ignores them and recomputes */
    for (g = 0; g < 2; ++g) {
        nsa_config c = cfg_small();
        c.accum = NSA_ACCUM_FP64;
        prob_make(&p, &c, g ? NSA_BF16 : NSA_FP32, VARLEN_B, varlen_lens, NULL,
                  4, 2, 16, 8, 1);
        snprintf(what, sizeof what, "fp64 accumulation, %s", g ? "bf16" : "fp32");
        saved_branch_case(what, &p);
        prob_free(&p);
    }
}

/* The backward really reads the planes (fp32 accumulation): o_c[row][j] of
   one branch moved by 0.5 moves that row's dgate of the branch by
   dO[row][j] * 0.5 and leaves every other dgate as it was; Delta moves, so
   the row's dq moves and no other row's; dV (P w dO) keeps every bit. With
   fp64 accumulation the planes are not read: nothing moves. */
static void test_backward_reads_saved_branch_outputs(void)
{
    static const int klen[2] = {70, 45};
    int acc;
    for (acc = 0; acc < 2; ++acc) {
        const char *name = acc ? "fp64_backward_recomputes_o_c_ignoring_saved_planes"
                               : "backward_reads_o_c_from_saved_branch_outputs";
        nsa_config c = cfg_small();
        prob p;
        nsa_batch x;
        run r;
        float *planes;
        float *dq0, *dk0, *dv0, *dg0;
        int64_t n;
        int br;
        c.accum = acc ? NSA_ACCUM_FP64 : NSA_ACCUM_FP32;
        prob_make(&p, &c, NSA_FP32, 2, klen, NULL, 4, 2, 16, 8, 1);
        x = prob_batch(&p);
        n = p.TQ * p.H * p.Dv;
        planes = (float *)xcalloc(3 * n, sizeof(float));
        if (!status_ok(name, "nsa_ref_forward", run_forward_planes(&r, &c, &x, p.g, planes)) ||
            !status_ok(name, "nsa_ref_backward", run_backward(&r, &c, &x, p.g, p.dO))) {
            run_free(&r);
            free(planes);
            prob_free(&p);
            continue;
        }
        dq0 = (float *)xcalloc(r.sz.q, 4);
        dk0 = (float *)xcalloc(r.sz.k, 4);
        dv0 = (float *)xcalloc(r.sz.v, 4);
        dg0 = (float *)xcalloc(r.sz.gates, 4);
        memcpy(dq0, r.gr.dq, (size_t)r.sz.q * 4);
        memcpy(dk0, r.gr.dk, (size_t)r.sz.k * 4);
        memcpy(dv0, r.gr.dv, (size_t)r.sz.v * 4);
        memcpy(dg0, r.gr.dgates, (size_t)r.sz.gates * 4);
        for (br = 0; br < 3; ++br) {
            const float *dO = (const float *)p.dO;
            const float *dq = (const float *)r.gr.dq, *dg = (const float *)r.gr.dgates;
            int64_t row, i, tries, other_dg = 0, other_dq = 0, row_dq = 0;
            float *e, old;
            int j, jm = 0;
            /* a (query, head) row that sees keys in this branch */
            for (tries = 0, row = -1; tries < 1000 && row < 0; ++tries) {
                int64_t cand = check_rand_int(r.sz.lse);
                if (r.lse[br][cand] != -INFINITY) row = cand;
            }
            if (!CHECK(name, row >= 0, "no row sees keys in the %s branch", plane_name[br]))
                continue;
            for (j = 1; j < p.Dv; ++j)
                if (fabsf(dO[row * p.Dv + j]) > fabsf(dO[row * p.Dv + jm])) jm = j;
            e = planes + br * n + row * p.Dv + jm;
            old = *e;
            *e = old + 0.5f;
            if (!status_ok(name, "nsa_ref_backward (plane moved)",
                           run_backward(&r, &c, &x, p.g, p.dO))) {
                *e = old;
                continue;
            }
            for (i = 0; i < r.sz.gates; ++i)
                if (i != row * 3 + br && nsa__f32_bits(dg[i]) != nsa__f32_bits(dg0[i]))
                    ++other_dg;
            for (i = 0; i < r.sz.q; ++i) {
                const int same = nsa__f32_bits(dq[i]) == nsa__f32_bits(dq0[i]);
                if (i / p.Dk == row) row_dq += !same;
                else other_dq += !same;
            }
            if (acc) {
                CHECK(name, same_bytes(r.gr.dq, dq0, r.sz.q * 4) &&
                      same_bytes(r.gr.dk, dk0, r.sz.k * 4) &&
                      same_bytes(r.gr.dv, dv0, r.sz.v * 4) &&
                      same_bytes(r.gr.dgates, dg0, r.sz.gates * 4),
                      "moving the %s plane changed a gradient", plane_name[br]);
            } else {
                const double want = (double)dO[row * p.Dv + jm] * 0.5;
                const double got = (double)dg[row * 3 + br] - (double)dg0[row * 3 + br];
                CHECK(name, fabs(got - want) <= 1e-5 * (1.0 + fabs(dg0[row * 3 + br])),
                      "%s plane, row %lld: o_c[%d] + 0.5 moved dgate by %.9g, "
                      "want dO * 0.5 = %.9g", plane_name[br], (long long)row, jm,
                      got, want);
                CHECK(name, other_dg == 0, "%s plane, row %lld: %lld other dgates moved",
                      plane_name[br], (long long)row, (long long)other_dg);
                CHECK(name, row_dq > 0 && other_dq == 0,
                      "%s plane, row %lld: %lld elements of the row's dq moved "
                      "(want some), %lld of other rows (want none)", plane_name[br],
                      (long long)row, (long long)row_dq, (long long)other_dq);
                CHECK(name, same_bytes(r.gr.dv, dv0, r.sz.v * 4),
                      "%s plane: dV (P w dO, no o_c in it) moved", plane_name[br]);
            }
            *e = old;
        }
        /* planes restored: the first gradients again, bit for bit */
        if (status_ok(name, "nsa_ref_backward (planes restored)",
                      run_backward(&r, &c, &x, p.g, p.dO)))
            CHECK(name, same_bytes(r.gr.dq, dq0, r.sz.q * 4) &&
                  same_bytes(r.gr.dk, dk0, r.sz.k * 4) &&
                  same_bytes(r.gr.dv, dv0, r.sz.v * 4) &&
                  same_bytes(r.gr.dgates, dg0, r.sz.gates * 4),
                  "restored planes: gradients differ from the first backward");
        free(dq0); free(dk0); free(dv0); free(dg0);
        run_free(&r);
        free(planes);
        prob_free(&p);
    }
}

/* ------------------------------------------------------------------------ */
/* Bad input: status, a message naming the argument, untouched outputs. */

/* msg names arg: as a whole identifier for short names, else a substring. */
static int names_arg(const char *msg, const char *arg)
{
    size_t n = strlen(arg);
    const char *s = msg;
    if (n > 2) return strstr(msg, arg) != NULL;
    while ((s = strstr(s, arg)) != NULL) {
        int before = s == msg || !(isalnum((unsigned char)s[-1]) || s[-1] == '_');
        int after = !(isalnum((unsigned char)s[n]) || s[n] == '_');
        if (before && after) return 1;
        ++s;
    }
    return 0;
}

#define POISON 0xA5

static int is_poisoned(const void *p, int64_t n)
{
    const unsigned char *c = (const unsigned char *)p;
    int64_t i;
    for (i = 0; i < n; ++i)
        if (c[i] != POISON) return 0;
    return 1;
}

static void poison_run(run *r)
{
    size_t es = nsa_dtype_size(r->dt);
    int c;
    memset(r->o, POISON, (size_t)r->sz.o * es);
    for (c = 0; c < 3; ++c) memset(r->lse[c], POISON, (size_t)r->sz.lse * 4);
    memset(r->sel_idx, POISON, (size_t)r->sz.sel_idx * 4);
    memset(r->sel_count, POISON, (size_t)r->sz.sel_count * 4);
    memset(r->kc, POISON, (size_t)r->sz.k_cmp * es);
    memset(r->gr.dq, POISON, (size_t)r->sz.q * es);
    memset(r->gr.dk, POISON, (size_t)r->sz.k * es);
    memset(r->gr.dv, POISON, (size_t)r->sz.v * es);
    memset(r->gr.dgates, POISON, (size_t)r->sz.gates * es);
}

static int run_untouched(const run *r)
{
    size_t es = nsa_dtype_size(r->dt);
    int c, ok = is_poisoned(r->o, r->sz.o * (int64_t)es);
    for (c = 0; c < 3; ++c) ok &= is_poisoned(r->lse[c], r->sz.lse * 4);
    ok &= is_poisoned(r->sel_idx, r->sz.sel_idx * 4);
    ok &= is_poisoned(r->sel_count, r->sz.sel_count * 4);
    ok &= is_poisoned(r->kc, r->sz.k_cmp * (int64_t)es);
    ok &= is_poisoned(r->gr.dq, r->sz.q * (int64_t)es);
    ok &= is_poisoned(r->gr.dk, r->sz.k * (int64_t)es);
    ok &= is_poisoned(r->gr.dv, r->sz.v * (int64_t)es);
    ok &= is_poisoned(r->gr.dgates, r->sz.gates * (int64_t)es);
    return ok;
}

static void expect_error(const char *name, nsa_status got, nsa_status want,
                         const char *arg, const run *r)
{
    const char *msg = nsa_last_error();
    CHECK(name, got == want, "status %s, want %s (message: %s)",
          status_name(got), nsa_status_string(want), msg);
    CHECK(name, names_arg(msg, arg), "message \"%s\" does not name %s", msg, arg);
    if (r) CHECK(name, run_untouched(r), "an output buffer was written");
}

/* Bad arguments of the top-n blocks call: a clear status naming them. */
static void test_topk_blocks_bad_input_is_rejected(void)
{
    const float sc[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint8_t mask[8];
    size_t wsb = 0, need = 0;
    void *ws;
    nsa_status st;
    GUARD_CALL(st, nsa_ref_topk_blocks_workspace_size(1, 8, 0, 2, &wsb));
    expect_error("topk_blocks_block_0_is_rejected", st, NSA_ERR_INVALID_BATCH, "block", NULL);
    GUARD_CALL(st, nsa_ref_topk_blocks_workspace_size(1, 8, 2, -1, &wsb));
    expect_error("topk_blocks_negative_n_is_rejected", st, NSA_ERR_INVALID_BATCH, "n", NULL);
    if (!status_ok("topk_blocks_bad_input", "nsa_ref_topk_blocks_workspace_size",
                   nsa_ref_topk_blocks_workspace_size(2, 8, 2, 2, &need)))
        return;
    ws = xcalloc((int64_t)need, 1);
    GUARD_CALL(st, nsa_ref_topk_blocks(sc, 1, 8, 8, NULL, NULL, 2, 2, NULL, NULL, ws, need));
    expect_error("topk_blocks_without_mask_is_rejected", st, NSA_ERR_NULL_POINTER, "mask",
                 NULL);
    GUARD_CALL(st, nsa_ref_topk_blocks(NULL, 1, 8, 8, NULL, NULL, 2, 2, mask, NULL, ws, need));
    expect_error("topk_blocks_without_scores_is_rejected", st, NSA_ERR_NULL_POINTER,
                 "scores", NULL);
    GUARD_CALL(st, nsa_ref_topk_blocks(sc, 2, 8, 4, NULL, NULL, 2, 2, mask, NULL, ws, need));
    expect_error("topk_blocks_short_row_stride_is_rejected", st, NSA_ERR_INVALID_BATCH,
                 "row_stride", NULL);
    GUARD_CALL(st, nsa_ref_topk_blocks(sc, 1, 8, 8, NULL, NULL, 2, 2, mask, NULL, ws,
                                       need - 1));
    expect_error("topk_blocks_workspace_below_size_query_is_rejected", st, NSA_ERR_WORKSPACE,
                 "workspace", NULL);
    free(ws);
}

/* Forward on a mutated config / batch, everything else valid. */
static void bad_forward(const char *name, const nsa_config *c, const nsa_batch *x,
                        run *r, const void *gates, nsa_status want, const char *arg)
{
    poison_run(r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(c, x, gates, r->o, &r->sv, r->ws, r->wsb));
        expect_error(name, gst_,
                     want, arg, r);
    }
}

static void bad_backward(const char *name, const nsa_config *c, const nsa_batch *x,
                         run *r, const void *gates, const void *d_o,
                         const nsa_saved *sv, nsa_grads *gr, nsa_status want,
                         const char *arg)
{
    poison_run(r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_backward(c, x, gates, d_o, sv, gr, r->ws, r->wsb));
        expect_error(name, gst_,
                     want, arg, r);
    }
}

/* A caller sizes its buffers before it has them: nsa_sizes_get reads no data
   pointer, while every entry point still rejects a NULL one. */
static void test_sizes_query_needs_no_data_pointers(void)
{
    const char *name = "sizes_query_needs_no_data_pointers";
    nsa_config cfg = nsa_config_paper();
    const int32_t cu[3] = {0, 100, 300};
    nsa_batch x;
    nsa_sizes sz;
    nsa_status st;
    memset(&x, 0, sizeof x);
    memset(&sz, 0, sizeof sz);
    x.B = 2;
    x.T = 300;
    x.cu_seqlens = cu;
    x.H = 4;
    x.Hkv = 2;
    x.Dk = x.Dv = 8;
    x.dtype = NSA_BF16;
    st = nsa_sizes_get(&cfg, &x, &sz);
    CHECK(name, st == NSA_OK && sz.q == 300 * 4 * 8 && sz.Tc == 5 + 11,
          "status %s (%s), q %lld, Tc %lld", status_name(st), nsa_last_error(),
          (long long)sz.q, (long long)sz.Tc);
    {
        uint16_t o[8];
        st = nsa_ref_forward(&cfg, &x, NULL, o, NULL, NULL, 0);
        CHECK("forward_rejects_null_q_after_sizes_accepted_it",
              st == NSA_ERR_NULL_POINTER && strstr(nsa_last_error(), "batch.q"),
              "status %s (%s)", status_name(st), nsa_last_error());
    }
}

/* nsa_buffers_place: every buffer forward and backward need, cut from one
   block, aligned, inside it and disjoint; forward and backward through them
   give the bits of separately allocated buffers. Cases: gates and all
   branches (bf16), caller-compressed K/V (dk_cmp, dv_cmp), the window alone
   (no saved selection, lse or K_cmp); each also checks which pointers are
   NULL, and that a block one byte short is refused. */
static void test_buffers_in_one_block_equal_separate_buffers(void)
{
    const char *name = "buffers_in_one_block_equal_separate_buffers";
    int klen[3] = {40, 9, 70};
    int cs;
    for (cs = 0; cs < 3; ++cs) {
        nsa_config c = cfg_small();
        nsa_dtype dt = cs == 0 ? NSA_BF16 : NSA_FP32;
        int gates = cs == 0;
        prob p;
        run r;
        nsa_batch x;
        nsa_saved sv;
        nsa_grads gr;
        void *o, *ws, *ptr[13];
        unsigned char *block;
        size_t bytes = 0, es = nsa_dtype_size(dt);
        int64_t len[13];
        int i, j;
        nsa_status st;
        const void *g;
        if (cs == 1) c.caller_compressed = 1;
        if (cs == 2) c.branches = NSA_BRANCH_WIN;
        prob_make(&p, &c, dt, 3, klen, NULL, 4, 2, 16, 8, gates);
        x = prob_batch(&p);
        g = gates ? p.g : NULL;
        memset(&r, 0, sizeof r);
        if (!status_ok(name, "nsa_ref_forward", run_forward(&r, &c, &x, g)) ||
            !status_ok(name, "nsa_ref_backward",
                       run_backward(&r, &c, &x, g, p.dO)) ||
            !status_ok(name, "nsa_buffers_bytes",
                       nsa_buffers_bytes(&c, &x, gates, &bytes))) {
            run_free(&r);
            prob_free(&p);
            continue;
        }
        /* One byte in front, so that the block's start is misaligned. */
        block = (unsigned char *)xcalloc((int64_t)bytes + 1, 1) + 1;
        st = nsa_buffers_place(&c, &x, gates, block, bytes - 1, &sv, &gr);
        CHECK(name, st == NSA_ERR_WORKSPACE && names_arg(nsa_last_error(), "block"),
              "case %d: a block one byte short gave %s (%s)", cs, status_name(st),
              nsa_last_error());
        memset(&sv, 0xA5, sizeof sv); /* a stack struct's garbage */
        st = nsa_buffers_place(&c, &x, gates, block, bytes, &sv, &gr);
        if (!status_ok(name, "nsa_buffers_place", st)) {
            free(block - 1);
            run_free(&r);
            prob_free(&p);
            continue;
        }
        CHECK("buffers_place_sets_no_branch_output_planes", sv.o_branch == NULL,
              "case %d: saved.o_branch left at %p (it is the caller's, optional)",
              cs, (void *)sv.o_branch);
        ptr[0] = sv.lse_cmp; ptr[1] = sv.lse_slc; ptr[2] = sv.lse_win;
        ptr[3] = sv.sel_idx; ptr[4] = sv.sel_count; ptr[5] = sv.k_cmp;
        ptr[6] = sv.v_cmp; ptr[7] = gr.dq; ptr[8] = gr.dk; ptr[9] = gr.dv;
        ptr[10] = gr.dgates; ptr[11] = gr.dk_cmp; ptr[12] = gr.dv_cmp;
        len[0] = len[1] = len[2] = r.sz.lse * 4;
        len[3] = r.sz.sel_idx * 4; len[4] = r.sz.sel_count * 4;
        len[5] = len[11] = r.sz.k_cmp * (int64_t)es;
        len[6] = len[12] = r.sz.v_cmp * (int64_t)es;
        len[7] = r.sz.q * (int64_t)es; len[8] = r.sz.k * (int64_t)es;
        len[9] = r.sz.v * (int64_t)es; len[10] = r.sz.gates * (int64_t)es;
        for (i = 0; i < 13; ++i) {
            /* Which buffers this case needs (nsa.h, nsa_saved and nsa_grads). */
            int needed = i >= 7 && i <= 9;
            if (i <= 2) needed = (c.branches >> i) & 1u;
            if (i == 3 || i == 4) needed = (c.branches & NSA_BRANCH_SLC) != 0;
            if (i == 5 || i == 6) needed = cs == 0;
            if (i == 10) needed = gates;
            if (i >= 11) needed = cs == 1;
            CHECK(name, (ptr[i] != NULL) == needed, "case %d: buffer %d is %s",
                  cs, i, ptr[i] ? "placed but not needed" : "needed but NULL");
            if (!ptr[i]) continue;
            CHECK(name, (uintptr_t)ptr[i] % NSA_BUFFER_ALIGN == 0 &&
                        (unsigned char *)ptr[i] >= block &&
                        (unsigned char *)ptr[i] + len[i] <= block + bytes,
                  "case %d: buffer %d misaligned or outside the block", cs, i);
            for (j = 0; j < i; ++j)
                if (ptr[j])
                    CHECK(name, (unsigned char *)ptr[j] + len[j] <= (unsigned char *)ptr[i] ||
                                (unsigned char *)ptr[i] + len[i] <= (unsigned char *)ptr[j],
                          "case %d: buffers %d and %d overlap", cs, j, i);
        }
        o = xcalloc(r.sz.o, es);
        ws = xcalloc((int64_t)r.wsb, 1);
        st = nsa_ref_forward(&c, &x, g, o, &sv, ws, r.wsb);
        if (st == NSA_OK)
            st = nsa_ref_backward(&c, &x, g, p.dO, &sv, &gr, ws, r.wsb);
        if (status_ok(name, "forward and backward on the block", st)) {
            CHECK(name, memcmp(o, r.o, (size_t)r.sz.o * es) == 0 &&
                        memcmp(gr.dq, r.gr.dq, (size_t)len[7]) == 0 &&
                        memcmp(gr.dk, r.gr.dk, (size_t)len[8]) == 0 &&
                        memcmp(gr.dv, r.gr.dv, (size_t)len[9]) == 0 &&
                        (!gates || memcmp(gr.dgates, r.gr.dgates, (size_t)len[10]) == 0) &&
                        (cs != 1 || (memcmp(gr.dk_cmp, r.gr.dk_cmp, (size_t)len[11]) == 0 &&
                                     memcmp(gr.dv_cmp, r.gr.dv_cmp, (size_t)len[12]) == 0)),
                  "case %d: results through the block differ from separate "
                  "buffers", cs);
        }
        free(o);
        free(ws);
        free(block - 1);
        run_free(&r);
        prob_free(&p);
    }
}

static void test_bad_input_is_rejected(void)
{
    nsa_config c = cfg_small();
    int klen[3] = {40, 9, 30};
    prob p;
    nsa_batch x, y;
    nsa_config d;
    run r;
    int32_t cu[4];
    prob_make(&p, &c, NSA_FP32, 3, klen, NULL, 4, 2, 16, 8, 1);
    x = prob_batch(&p);
    if (!status_ok("bad_input_base_case_is_valid", "nsa_ref_forward",
                   run_forward(&r, &c, &x, p.g)) ||
        !status_ok("bad_input_base_case_is_valid", "nsa_ref_backward",
                   run_backward(&r, &c, &x, p.g, p.dO))) {
        run_free(&r);
        prob_free(&p);
        return;
    }
    /* NULL pointers. */
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(NULL, &x, p.g, r.o, &r.sv, r.ws, r.wsb));
        expect_error("null_config_is_rejected", gst_,
                     NSA_ERR_NULL_POINTER, "cfg", &r);
    }
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(&c, NULL, p.g, r.o, &r.sv, r.ws, r.wsb));
        expect_error("null_batch_is_rejected", gst_,
                     NSA_ERR_NULL_POINTER, "batch", &r);
    }
    y = x; y.q = NULL;
    bad_forward("null_q_is_rejected", &c, &y, &r, p.g, NSA_ERR_NULL_POINTER, "q");
    y = x; y.k = NULL;
    bad_forward("null_k_is_rejected", &c, &y, &r, p.g, NSA_ERR_NULL_POINTER, "k");
    y = x; y.v = NULL;
    bad_forward("null_v_is_rejected", &c, &y, &r, p.g, NSA_ERR_NULL_POINTER, "v");
    y = x; y.cu_seqlens = NULL;
    bad_forward("null_cu_seqlens_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_NULL_POINTER, "cu_seqlens");
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, NULL, &r.sv, r.ws, r.wsb));
        expect_error("null_output_is_rejected", gst_,
                     NSA_ERR_NULL_POINTER, "o", &r);
    }
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, NULL, r.ws, r.wsb));
        expect_error("null_saved_is_rejected", gst_,
                     NSA_ERR_NULL_POINTER, "saved", &r);
    }
    {
        nsa_saved sv = r.sv;
        sv.lse_cmp = NULL;
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, &sv, r.ws, r.wsb));
            expect_error("missing_saved_lse_is_rejected", gst_,
                         NSA_ERR_NULL_POINTER, "lse_cmp", &r);
        }
        sv = r.sv;
        sv.sel_idx = NULL;
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, &sv, r.ws, r.wsb));
            expect_error("missing_saved_selection_is_rejected", gst_,
                         NSA_ERR_NULL_POINTER, "sel_idx", &r);
        }
    }
    /* A workspace far below any need. */
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, &r.sv, r.ws, 8));
        expect_error("too_small_workspace_is_rejected", gst_,
                     NSA_ERR_WORKSPACE, "workspace", &r);
    }
    /* nsa.h: NSA_ERR_WORKSPACE is "the workspace is smaller than the size
       query"; one byte short of it must be refused. */
    poison_run(&r);
    {
        nsa_status gst_;
        GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, &r.sv, r.ws, r.wsb - 1));
        expect_error("workspace_below_size_query_is_rejected", gst_,
                     NSA_ERR_WORKSPACE, "workspace", &r);
    }
    if (r.wsb > 0) {
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_forward(&c, &x, p.g, r.o, &r.sv, NULL, r.wsb));
            expect_error("null_workspace_is_rejected", gst_,
                         NSA_ERR_NULL_POINTER, "workspace", &r);
        }
    }
    /* Config rules. */
    d = c; d.d = 3;
    bad_forward("stride_not_dividing_l_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "d");
    d = c; d.l = 8; d.d = 8; d.lp = 12;
    bad_forward("stride_not_dividing_lp_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "d");
    d = c; d.n = 0; d.n_init = 0; d.n_local = 0;
    bad_forward("n_zero_with_selected_branch_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "n");
    d = c; d.n = 2; d.n_init = 1; d.n_local = 2;
    bad_forward("forced_blocks_beyond_n_are_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "n_init");
    d = c; d.w = 0;
    bad_forward("window_below_one_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "w");
    d = c; d.branches = 0;
    bad_forward("no_branch_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "branches");
    d = c; d.bq = 0;
    bad_forward("query_tile_below_one_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "bq");
    d = c; d.scale = -1.0f;
    bad_forward("negative_scale_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_INVALID_CONFIG, "scale");
    /* Batch rules. */
    y = x; y.H = 3; y.Hkv = 2;
    bad_forward("heads_not_multiple_of_kv_heads_are_rejected", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "H");
    memcpy(cu, p.cu, sizeof cu);
    cu[1] = 45; cu[2] = 44;
    y = x; y.cu_seqlens = cu;
    bad_forward("cu_seqlens_not_monotone_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "cu_seqlens");
    memcpy(cu, p.cu, sizeof cu);
    cu[3] = (int32_t)p.T - 1;
    y = x; y.cu_seqlens = cu;
    bad_forward("cu_seqlens_not_ending_at_T_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "cu_seqlens");
    /* The message names the field to fix: the count, not the array. */
    y = x; y.T = 0;
    bad_forward("T_left_zero_is_named_in_the_message", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "batch.T,");
    {
        static int32_t cq[4];
        cq[0] = 0; cq[1] = 30; cq[2] = 39; cq[3] = 60;
        y = x; y.cu_seqlens_q = cq; y.TQ = 0;
        bad_forward("TQ_left_zero_is_named_in_the_message", &c, &y, &r, p.g,
                    NSA_ERR_INVALID_BATCH, "batch.TQ,");
    }
    memcpy(cu, p.cu, sizeof cu);
    cu[0] = 1;
    y = x; y.cu_seqlens = cu;
    bad_forward("cu_seqlens_not_starting_at_0_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "cu_seqlens");
    {
        /* sequence 1 gets 10 queries for its 9 keys (total TQ = T). */
        static int32_t cq[4];
        cq[0] = 0; cq[1] = 39; cq[2] = 49; cq[3] = (int32_t)p.T;
        y = x; y.cu_seqlens_q = cq; y.TQ = p.T;
        bad_forward("more_queries_than_keys_is_rejected", &c, &y, &r, p.g,
                    NSA_ERR_INVALID_BATCH, "cu_seqlens_q");
    }
    y = x; y.q_stride_token = -1;
    bad_forward("negative_stride_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_INVALID_BATCH, "q");
    y = x; y.q_stride_token = INT64_MAX / 8;
    bad_forward("overflowing_strides_are_rejected", &c, &y, &r, p.g,
                NSA_ERR_OVERFLOW, "q");
    if (x.TQ > 1 && x.H > 1) {
        /* the last token's offset and the last head's each fit in 64 bits,
           their sum does not */
        y = x;
        y.q_stride_token = INT64_MAX / 2 / (x.TQ - 1) + 1;
        y.q_stride_head = INT64_MAX / 2 / (x.H - 1) + 1;
        bad_forward("strides_overflowing_only_together_are_rejected", &c, &y, &r, p.g,
                    NSA_ERR_OVERFLOW, "q");
    }
    {
        /* T * H * Dk past 2^63: nothing may be read or written. */
        static int32_t cub[2] = {0, 1 << 30};
        y = x; y.B = 1; y.T = y.TQ = 1 << 30; y.cu_seqlens = cub;
        y.H = y.Hkv = 1 << 20; y.Dk = y.Dv = 1 << 20;
        bad_forward("overflowing_sizes_are_rejected", &c, &y, &r, p.g,
                    NSA_ERR_OVERFLOW, "batch");
    }
    d = c; d.caller_compressed = 1;
    bad_forward("caller_compressed_without_k_cmp_is_rejected", &d, &x, &r, p.g,
                NSA_ERR_NULL_POINTER, "k_cmp");
    y = x; y.sel_idx = r.sel_idx; y.sel_count = NULL;
    bad_forward("caller_selection_without_counts_is_rejected", &c, &y, &r, p.g,
                NSA_ERR_NULL_POINTER, "sel_count");
    /* Backward: missing saved or gradient buffers. */
    {
        nsa_grads g = r.gr;
        nsa_saved sv = r.sv;
        bad_backward("backward_null_d_o_is_rejected", &c, &x, &r, p.g, NULL, &r.sv,
                     &r.gr, NSA_ERR_NULL_POINTER, "d_o");
        bad_backward("backward_null_saved_is_rejected", &c, &x, &r, p.g, p.dO,
                     NULL, &r.gr, NSA_ERR_NULL_POINTER, "saved");
        bad_backward("backward_null_grads_is_rejected", &c, &x, &r, p.g, p.dO,
                     &r.sv, NULL, NSA_ERR_NULL_POINTER, "grads");
        g.dq = NULL;
        bad_backward("backward_missing_dq_is_rejected", &c, &x, &r, p.g, p.dO,
                     &r.sv, &g, NSA_ERR_NULL_POINTER, "dq");
        g = r.gr; g.dk = NULL;
        bad_backward("backward_missing_dk_is_rejected", &c, &x, &r, p.g, p.dO,
                     &r.sv, &g, NSA_ERR_NULL_POINTER, "dk");
        g = r.gr; g.dv = NULL;
        bad_backward("backward_missing_dv_is_rejected", &c, &x, &r, p.g, p.dO,
                     &r.sv, &g, NSA_ERR_NULL_POINTER, "dv");
        g = r.gr; g.dgates = NULL;
        bad_backward("backward_missing_dgates_with_gates_is_rejected", &c, &x, &r,
                     p.g, p.dO, &r.sv, &g, NSA_ERR_NULL_POINTER, "dgates");
        sv.lse_win = NULL;
        bad_backward("backward_missing_saved_lse_is_rejected", &c, &x, &r, p.g,
                     p.dO, &sv, &r.gr, NSA_ERR_NULL_POINTER, "lse_win");
        sv = r.sv; sv.sel_count = NULL;
        bad_backward("backward_missing_saved_selection_is_rejected", &c, &x, &r,
                     p.g, p.dO, &sv, &r.gr, NSA_ERR_NULL_POINTER, "sel_count");
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_backward(&c, &x, p.g, p.dO, &r.sv, &r.gr, r.ws,
                                              8));
            expect_error("backward_too_small_workspace_is_rejected", gst_,
                         NSA_ERR_WORKSPACE, "workspace", &r);
        }
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_backward(&c, &x, p.g, p.dO, &r.sv, &r.gr, r.ws,
                                              r.wsb - 1));
            expect_error("backward_workspace_below_size_query_is_rejected", gst_,
                         NSA_ERR_WORKSPACE, "workspace", &r);
        }
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_backward(NULL, &x, p.g, p.dO, &r.sv, &r.gr,
                                              r.ws, r.wsb));
            expect_error("backward_null_config_is_rejected", gst_,
                         NSA_ERR_NULL_POINTER, "cfg", &r);
        }
        poison_run(&r);
        {
            nsa_status gst_;
            GUARD_CALL(gst_, nsa_ref_backward(&c, NULL, p.g, p.dO, &r.sv, &r.gr,
                                              r.ws, r.wsb));
            expect_error("backward_null_batch_is_rejected", gst_,
                         NSA_ERR_NULL_POINTER, "batch", &r);
        }
    }
    {
        /* caller_compressed backward needs dk_cmp / dv_cmp. */
        nsa_config e = c;
        run rc;
        e.caller_compressed = 1;
        y = x; y.k_cmp = p.kc; y.v_cmp = p.vc;
        if (status_ok("backward_missing_dk_cmp_is_rejected", "nsa_ref_forward",
                      run_forward(&rc, &e, &y, p.g))) {
            nsa_grads g = rc.gr;
            g.dk_cmp = NULL;
            bad_backward("backward_missing_dk_cmp_is_rejected", &e, &y, &rc, p.g,
                         p.dO, &rc.sv, &g, NSA_ERR_NULL_POINTER, "dk_cmp");
            g = rc.gr; g.dv_cmp = NULL;
            bad_backward("backward_missing_dv_cmp_is_rejected", &e, &y, &rc, p.g,
                         p.dO, &rc.sv, &g, NSA_ERR_NULL_POINTER, "dv_cmp");
        }
        run_free(&rc);
    }
    /* Window off: w = 0 is not an error. */
    {
        nsa_config e = c;
        run rw;
        e.branches = NSA_BRANCH_CMP | NSA_BRANCH_SLC;
        e.w = 0;
        status_ok("window_zero_with_window_off_is_valid", "nsa_ref_forward",
                  run_forward(&rw, &e, &x, p.g));
        run_free(&rw);
    }
    /* Stage entry points and top-k validate too. */
    {
        float sc[4] = {1, 2, 3, 4};
        int32_t idx[4], cnt;
        nsa_status st;
        poison_run(&r);
        GUARD_CALL(st, nsa_ref_select(&c, &x, NULL, r.sel_idx, r.sel_count, r.ws, r.wsb));
        expect_error("select_without_k_cmp_is_rejected", st, NSA_ERR_NULL_POINTER,
                     "k_cmp", &r);
        poison_run(&r);
        GUARD_CALL(st, nsa_ref_select(NULL, &x, r.kc, r.sel_idx, r.sel_count, r.ws, r.wsb));
        expect_error("select_null_config_is_rejected", st, NSA_ERR_NULL_POINTER,
                     "cfg", &r);
        poison_run(&r);
        GUARD_CALL(st, nsa_ref_attend_win(&c, NULL, (float *)r.o, r.lse[2]));
        expect_error("attend_win_null_batch_is_rejected", st, NSA_ERR_NULL_POINTER,
                     "batch", &r);
        poison_run(&r);
        GUARD_CALL(st, nsa_ref_compress(&c, &x, NULL, r.kc));
        expect_error("compress_without_output_is_rejected", st,
                     NSA_ERR_NULL_POINTER, "k_cmp", &r);
        GUARD_CALL(st, nsa_ref_topk_rows(NULL, 1, 4, 4, NULL, NULL, 2, idx, &cnt, r.ws, r.wsb));
        expect_error("topk_without_scores_is_rejected", st, NSA_ERR_NULL_POINTER,
                     "scores", NULL);
        {
            size_t need = 0;
            nsa_ref_topk_workspace_size(1, 4, 2, &need);
            GUARD_CALL(st, nsa_ref_topk_rows(sc, 1, 4, 4, NULL, NULL, 2, idx, &cnt,
                                             r.ws, 1));
            expect_error("topk_too_small_workspace_is_rejected", st,
                         NSA_ERR_WORKSPACE, "workspace", NULL);
            if (need > 0) {
                GUARD_CALL(st, nsa_ref_topk_rows(sc, 1, 4, 4, NULL, NULL, 2, idx, &cnt,
                                       r.ws, need - 1));
                expect_error("topk_workspace_below_size_query_is_rejected", st,
                             NSA_ERR_WORKSPACE, "workspace", NULL);
            }
        }
    }
    run_free(&r);
    prob_free(&p);
}

/* ------------------------------------------------------------------------ */

static int verbose_mode, skip_vectors;

/* Runs one test; with NSA_TEST_VERBOSE=1 prints its CPU time. */
#define RUN_TEST(fn)                                                       \
    do {                                                                   \
        clock_t t_ = clock();                                              \
        cur_test = #fn;                                                    \
        fn();                                                              \
        if (verbose_mode)                                                  \
            printf("  %-55s %6.2f s\n", #fn,                               \
                   (double)(clock() - t_) / CLOCKS_PER_SEC);               \
    } while (0)

/* Growing cache: nsa_ref_compress_append over a cache whose first
   seqlens_old[b] keys were compressed before equals a full recompression
   bit for bit, writes only the blocks that became complete, and rejects a
   cache that shrank. Appends of 1, d-1, d, l and many keys, varlen with an
   empty sequence and one that did not grow; both presets' (l, d). */
static void compress_append_case(const char *name, const nsa_config *c, nsa_dtype dt,
                                 int append)
{
    enum { B = 4, HKV = 2, DK = 16, DV = 8 };
    static const int klen[B] = {203, 47, 0, 130};
    const size_t es = nsa_dtype_size(dt);
    int32_t cu[B + 1] = {0}, cu_old[B + 1] = {0}, cuq[B + 1] = {0}, old[B];
    int64_t c0[B + 1] = {0}, c0_old[B + 1] = {0}, i;
    nsa_batch x, y;
    void *k, *v, *k_old, *v_old, *kc_full, *vc_full, *kc_old, *vc_old, *kc, *vc;
    int b, new_ok = 1, old_kept = 1;
    for (b = 0; b < B; ++b) {
        /* sequence 3 did not grow; the others grew by `append` keys */
        old[b] = b == 3 ? klen[b] : (klen[b] > append ? klen[b] - append : 0);
        cu[b + 1] = cu[b] + klen[b];
        cu_old[b + 1] = cu_old[b] + old[b];
        c0[b + 1] = c0[b] + nsa_cmp_blocks(klen[b], c->l, c->d);
        c0_old[b + 1] = c0_old[b] + nsa_cmp_blocks(old[b], c->l, c->d);
    }
    k = xcalloc((int64_t)cu[B] * HKV * DK, es);
    v = xcalloc((int64_t)cu[B] * HKV * DV, es);
    for (i = 0; i < (int64_t)cu[B] * HKV * DK; ++i) nsa_store(k, dt, i, (float)check_uniform(-1, 1));
    for (i = 0; i < (int64_t)cu[B] * HKV * DV; ++i) nsa_store(v, dt, i, (float)check_uniform(-1, 1));
    /* the cache as it was: each sequence's first old[b] keys, packed */
    k_old = xcalloc((int64_t)cu_old[B] * HKV * DK, es);
    v_old = xcalloc((int64_t)cu_old[B] * HKV * DV, es);
    for (b = 0; b < B; ++b) {
        memcpy((char *)k_old + (size_t)cu_old[b] * HKV * DK * es,
               (char *)k + (size_t)cu[b] * HKV * DK * es, (size_t)old[b] * HKV * DK * es);
        memcpy((char *)v_old + (size_t)cu_old[b] * HKV * DV * es,
               (char *)v + (size_t)cu[b] * HKV * DV * es, (size_t)old[b] * HKV * DV * es);
    }
    memset(&x, 0, sizeof x);
    x.B = B; x.T = cu[B]; x.TQ = 0; x.cu_seqlens = cu; x.cu_seqlens_q = cuq;
    x.H = 2 * HKV; x.Hkv = HKV; x.Dk = DK; x.Dv = DV; x.dtype = dt; x.k = k; x.v = v;
    y = x;
    y.T = cu_old[B]; y.cu_seqlens = cu_old; y.k = k_old; y.v = v_old;
    kc_full = xcalloc(c0[B] * HKV * DK, es); vc_full = xcalloc(c0[B] * HKV * DV, es);
    kc = xcalloc(c0[B] * HKV * DK, es); vc = xcalloc(c0[B] * HKV * DV, es);
    kc_old = xcalloc(c0_old[B] * HKV * DK, es); vc_old = xcalloc(c0_old[B] * HKV * DV, es);
    memset(kc, 0xA7, (size_t)(c0[B] * HKV * DK) * es);
    memset(vc, 0xA7, (size_t)(c0[B] * HKV * DV) * es);
    if (status_ok(name, "nsa_ref_compress (grown cache)", nsa_ref_compress(c, &x, kc_full, vc_full)) &&
        status_ok(name, "nsa_ref_compress (cache before)", nsa_ref_compress(c, &y, kc_old, vc_old)) &&
        status_ok(name, "nsa_ref_compress_append", nsa_ref_compress_append(c, &x, old, kc, vc))) {
        for (b = 0; b < B; ++b) {
            const int64_t nold = c0_old[b + 1] - c0_old[b], rk = HKV * DK * es, rv = HKV * DV * es;
            const int64_t nnew = c0[b + 1] - c0[b] - nold;
            char *pk = (char *)kc + c0[b] * rk, *pv = (char *)vc + c0[b] * rv;
            /* the new blocks: as the full recompression */
            if (!same_bytes(pk + nold * rk, (char *)kc_full + (c0[b] + nold) * rk, nnew * rk) ||
                !same_bytes(pv + nold * rv, (char *)vc_full + (c0[b] + nold) * rv, nnew * rv))
                new_ok = 0;
            /* the old blocks: never written (still the fill) */
            for (i = 0; i < nold * rk; ++i) if ((unsigned char)pk[i] != 0xA7) old_kept = 0;
            for (i = 0; i < nold * rv; ++i) if ((unsigned char)pv[i] != 0xA7) old_kept = 0;
            /* with the earlier compression's blocks in place: the whole cache */
            memcpy(pk, (char *)kc_old + c0_old[b] * rk, (size_t)(nold * rk));
            memcpy(pv, (char *)vc_old + c0_old[b] * rv, (size_t)(nold * rv));
        }
        CHECK(name, new_ok, "append %d: a new block differs from the full recompression", append);
        CHECK(name, old_kept, "append %d: a block that was complete before was written", append);
        CHECK(name, same_bytes(kc, kc_full, c0[B] * HKV * DK * (int64_t)es) &&
                        same_bytes(vc, vc_full, c0[B] * HKV * DV * (int64_t)es),
              "append %d: old + appended blocks differ from the full recompression", append);
    }
    if (append == 1) { /* bad arguments: a clear status, nothing written */
        int32_t bad[B];
        memcpy(bad, old, sizeof bad);
        memset(kc, 0x5C, (size_t)(c0[B] * HKV * DK) * es);
        CHECK("compress_append_null_seqlens_old_is_rejected",
              nsa_ref_compress_append(c, &x, NULL, kc, vc) == NSA_ERR_NULL_POINTER &&
                  names_arg(nsa_last_error(), "seqlens_old"),
              "status or message wrong: %s", nsa_last_error());
        bad[1] = klen[1] + 1;
        CHECK("compress_append_cache_that_shrank_is_rejected",
              nsa_ref_compress_append(c, &x, bad, kc, vc) == NSA_ERR_INVALID_BATCH &&
                  names_arg(nsa_last_error(), "seqlens_old"),
              "status or message wrong: %s", nsa_last_error());
        bad[1] = -1;
        CHECK("compress_append_negative_seqlens_old_is_rejected",
              nsa_ref_compress_append(c, &x, bad, kc, vc) == NSA_ERR_INVALID_BATCH &&
                  names_arg(nsa_last_error(), "seqlens_old"),
              "status or message wrong: %s", nsa_last_error());
        CHECK("compress_append_null_k_cmp_is_rejected",
              nsa_ref_compress_append(c, &x, old, NULL, vc) == NSA_ERR_NULL_POINTER &&
                  names_arg(nsa_last_error(), "k_cmp"),
              "status or message wrong: %s", nsa_last_error());
        for (i = 0; i < c0[B] * HKV * DK * (int64_t)es; ++i)
            if (((unsigned char *)kc)[i] != 0x5C) break;
        CHECK("compress_append_rejected_call_writes_nothing",
              i == c0[B] * HKV * DK * (int64_t)es, "k_cmp byte %lld was written", (long long)i);
    }
    free(k); free(v); free(k_old); free(v_old); free(kc_full); free(vc_full);
    free(kc); free(vc); free(kc_old); free(vc_old);
}

static void test_compress_append_equals_full_recompression(void)
{
    const char *name = "compress_append_equals_full_recompression_bitwise";
    nsa_config presets[2];
    int pi, ai;
    presets[0] = nsa_config_paper();
    presets[1] = nsa_config_fla();
    for (pi = 0; pi < 2; ++pi) {
        const nsa_config *c = &presets[pi];
        const int appends[5] = {1, c->d - 1, c->d, c->l, 150};
        for (ai = 0; ai < 5; ++ai)
            compress_append_case(name, c, pi ? NSA_FP32 : NSA_BF16, appends[ai]);
    }
}

int main(int argc, char **argv)
{
    const char *vec = argc > 1 ? argv[1] : getenv("NSA_VECTORS_DIR");
    const char *q = getenv("NSA_TEST_QUICK");
    clock_t t0 = clock();
    DIR *probe; /* <dirent.h> comes with the vectors checker */
    int i;
    setvbuf(stdout, NULL, _IOLBF, 0); /* keep FAIL lines if a test crashes */
    quick_mode = q && *q && strcmp(q, "0") != 0;
    skip_vectors = getenv("NSA_SKIP_VECTORS") && strcmp(getenv("NSA_SKIP_VECTORS"), "0") != 0;
    verbose_mode = getenv("NSA_TEST_VERBOSE") && strcmp(getenv("NSA_TEST_VERBOSE"), "0") != 0;
    check_seed_from_env();
#ifdef _OPENMP
    printf("OpenMP: %d threads\n", omp_get_max_threads());
#else
    printf("OpenMP: off (single-threaded)\n");
#endif
    /* Quick unit-level checks first, the central differences (slowest)
       last: with NSA_TEST_STOP a planted bug is reported sooner. */
    RUN_TEST(test_converters_match_independent_rounding);
    RUN_TEST(test_outputs_are_rounded_once_to_nearest_even);
    RUN_TEST(test_topk_special_values_rank_as_contract_says);
    RUN_TEST(test_bad_input_is_rejected);
    RUN_TEST(test_sizes_query_needs_no_data_pointers);
    RUN_TEST(test_buffers_in_one_block_equal_separate_buffers);
    RUN_TEST(test_selection_ties_pick_lower_index);
    RUN_TEST(test_selection_keeps_subnormal_probabilities);
    RUN_TEST(test_forced_blocks_near_sequence_start);
    RUN_TEST(test_oracle_gradient_matches_central_differences);
    RUN_TEST(test_forward_backward_match_oracle_in_each_dtype);
    RUN_TEST(test_topk_rows_match_full_sort);
    RUN_TEST(test_topk_blocks_match_block_means);
    RUN_TEST(test_topk_blocks_of_one_column_are_topk_rows);
    RUN_TEST(test_topk_blocks_special_values_and_partial_blocks);
    RUN_TEST(test_topk_blocks_bad_input_is_rejected);
    RUN_TEST(test_presets_match_oracle);
    RUN_TEST(test_gqa_ratios_match_oracle);
    RUN_TEST(test_head_dims_match_oracle);
    RUN_TEST(test_branch_subsets_match_oracle);
    RUN_TEST(test_query_tiles_match_oracle);
    RUN_TEST(test_logits_mode_and_forced_variants_match_oracle);
    RUN_TEST(test_caller_compressed_matches_oracle);
    RUN_TEST(test_caller_selection_is_used_as_given);
    RUN_TEST(test_sharp_inputs_match_oracle);
    RUN_TEST(test_near_tie_bound_rejects_a_real_swap);
    RUN_TEST(test_topk_bad_ranges_are_clamped_not_rejected);
    RUN_TEST(test_shared_rules_match_the_contract);
    RUN_TEST(test_straddling_tiles_and_zero_query_sequences_match_oracle);
    RUN_TEST(test_fp64_accumulation_matches_oracle_at_its_precision);
    RUN_TEST(test_nan_input_propagates_to_readers);
    RUN_TEST(test_settled_rules_hold);
    RUN_TEST(test_each_sequence_equals_running_it_alone);
    RUN_TEST(test_suffix_queries_equal_full_run_rows);
    RUN_TEST(test_compress_append_equals_full_recompression);
    RUN_TEST(test_strided_inputs_equal_contiguous);
    RUN_TEST(test_stages_compose_to_forward);
    RUN_TEST(test_logits_tile_score_is_q_mean_score);
    RUN_TEST(test_results_are_bitwise_deterministic);
    RUN_TEST(test_saved_branch_outputs_change_no_bit);
    RUN_TEST(test_backward_reads_saved_branch_outputs);
    RUN_TEST(test_gradients_match_central_differences);

    /* Golden vectors from an outside fp64 implementation. A missing folder
       fails the run unless NSA_SKIP_VECTORS=1 asks to skip them. */
    if (!vec || !*vec) vec = "../shared/vectors";
    probe = opendir(vec);
    if (probe) {
        int vp = 0, vf = 0;
        closedir(probe);
        nsa_vectors_check_folder(vec, &vp, &vf);
        check_add(vp, vf);
        printf("vectors: %d passed, %d failed (%s)\n", vp, vf, vec);
    } else if (skip_vectors) {
        check_skip("golden_vectors", "NSA_SKIP_VECTORS is set");
    } else {
        CHECK("golden_vectors_folder_exists", 0, "no folder %s (set VECTORS=dir, "
              "or NSA_SKIP_VECTORS=1 to skip the golden vectors)", vec);
    }

    for (i = 0; i < 4; ++i)
        printf("worst error vs oracle, %s: o %.3g, lse %.3g, gradients %.3g\n",
               i == 3 ? "fp32 storage, fp64 accumulation" : dtype_name((nsa_dtype)i),
               worst_o[i], worst_lse[i], worst_grad[i]);
    printf("sharp inputs, worst error vs oracle: fp32 accumulation: o and "
           "gradients %.3g, lse %.3g; fp64 accumulation: %.3g, %.3g\n",
           sharp_worst[0][0], sharp_worst[0][1], sharp_worst[1][0],
           sharp_worst[1][1]);
    printf("selection rows that differ from the oracle only by a near-tie "
           "swap: %ld\n", near_tie_rows);
    printf("time: %.1f s of CPU\n", (double)(clock() - t0) / CLOCKS_PER_SEC);
    return check_summary();
}
