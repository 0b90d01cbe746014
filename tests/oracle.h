/* oracle.h -- an fp64 brute-force statement of the NSA contract, for tests.

   Written from the contract alone (docs/CONTRACT.md), not from the
   reference: it shares nothing with nsa_ref.h but the plain types of nsa.h.
   It is slow on purpose and reads like the contract:

     - every branch is plain masked dense attention over a key set that is
       enumerated explicitly for each query (no tiles, no online softmax);
     - selection scores every block in double and ranks the candidates by a
       FULL SORT (qsort: larger first, ties to the lower index, NaN below
       everything), after the forced blocks are taken;
     - the backward pass is the analytic gradient of each softmax with the
       selection held fixed, in double.

   Inputs are double arrays holding exactly the values the library reads
   from its storage type (the tests convert them), contiguous:
   q [TQ,H,Dk], k [T,Hkv,Dk], v [T,Hkv,Dv], gates [TQ,H,3] or NULL,
   k_cmp/v_cmp [Tc,Hkv,D] in caller-compressed mode. All outputs are
   allocated by oracle_forward and freed by oracle_free. */
#ifndef NSA_TEST_ORACLE_H
#define NSA_TEST_ORACLE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../nsa.h"

typedef struct oracle_in {
    const nsa_config *cfg;  /* only the plain fields are read */
    int B;
    const int32_t *cu_k;    /* B+1 key starts */
    const int32_t *cu_q;    /* B+1 query starts, or NULL (= cu_k) */
    int H, Hkv, Dk, Dv;
    const double *q, *k, *v, *gates;
    const double *k_cmp, *v_cmp;   /* caller-compressed mode only */
    /* Mean compression: the contract stores K_cmp / V_cmp in the storage
       type; this rounds a double to it (NULL: keep the double). */
    double (*round_cmp)(double);
    /* Mean compression: when set, these K_cmp / V_cmp [Tc,Hkv,D] are used
       instead of the rounded means. A test hands in the library's own after
       checking that each element is a correctly rounded mean: a mean whose
       exact value lies near a rounding midpoint may round either way from an
       fp32 sum, and that one-ulp choice must not be mistaken downstream for
       an attention error. */
    const double *k_cmp_used, *v_cmp_used;
    /* Optional fixed selection [units, Hkv, n] + counts (as the library's
       caller indices): skips steps 1-6. */
    const int32_t *sel_idx, *sel_count;
} oracle_in;

typedef struct oracle_out {
    int64_t T, TQ, Tc, units, maxblk;
    double *k_cmp, *v_cmp;      /* [Tc,Hkv,D] as used */
    double *scores;             /* [units,Hkv,maxblk], -inf if not eligible */
    int32_t *sel_idx;           /* [units,Hkv,n] ascending, -1 padded */
    int32_t *sel_count;         /* [units,Hkv] */
    double *o_br[3];            /* per branch [TQ,H,Dv] (0 if branch off)  */
    double *lse[3];             /* per branch [TQ,H], -inf if no key        */
    double *o;                  /* [TQ,H,Dv] */
    /* oracle_backward: */
    double *dq, *dk, *dv, *dgates, *dk_cmp, *dv_cmp;
} oracle_out;

/* ---- helpers ------------------------------------------------------------ */

static double oracle__scale(const oracle_in *in)
{
    return in->cfg->scale != 0.0f ? (double)in->cfg->scale
                                   : 1.0 / sqrt((double)in->Dk);
}

static int oracle__nbranches(unsigned br)
{
    return ((br & NSA_BRANCH_CMP) != 0) + ((br & NSA_BRANCH_SLC) != 0) +
           ((br & NSA_BRANCH_WIN) != 0);
}

static double oracle__gate(const oracle_in *in, int64_t tq, int h, int c)
{
    if (in->gates) return in->gates[(tq * in->H + h) * 3 + c];
    return 1.0 / oracle__nbranches(in->cfg->branches);
}

/* One sequence's geometry. */
typedef struct oracle__seq {
    int64_t k0, nk, q0, nq, c0, nc, u0, nu, nb;
} oracle__seq;

static oracle__seq oracle__seq_at(const oracle_in *in, int b, int64_t *c_acc,
                                  int64_t *u_acc)
{
    const nsa_config *c = in->cfg;
    const int32_t *cq = in->cu_q ? in->cu_q : in->cu_k;
    oracle__seq s;
    s.k0 = in->cu_k[b];
    s.nk = in->cu_k[b + 1] - in->cu_k[b];
    s.q0 = cq[b];
    s.nq = cq[b + 1] - cq[b];
    s.nc = 0;
    if ((c->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC)) && s.nk >= c->l)
        s.nc = (s.nk - c->l) / c->d + 1;
    s.nu = 0;
    s.nb = 0;
    if (c->branches & NSA_BRANCH_SLC) {
        s.nu = (s.nq + c->bq - 1) / c->bq;
        s.nb = (s.nk + c->lp - 1) / c->lp;
    }
    s.c0 = *c_acc;
    s.u0 = *u_acc;
    *c_acc += s.nc;
    *u_acc += s.nu;
    return s;
}

/* Dense softmax attention of one query over nkey keys given by pointers. */
static void oracle__attend(const double *q, int64_t nkey, const double **kp,
                           const double **vp, int Dk, int Dv, double sc,
                           double *o, double *lse)
{
    int64_t j;
    int x;
    double m = -INFINITY, sum = 0.0;
    double *lg = (double *)malloc((size_t)(nkey > 0 ? nkey : 1) * sizeof *lg);
    for (x = 0; x < Dv; ++x) o[x] = 0.0;
    if (nkey == 0) {
        *lse = -INFINITY;
        free(lg);
        return;
    }
    for (j = 0; j < nkey; ++j) {
        double s = 0.0;
        for (x = 0; x < Dk; ++x) s += q[x] * kp[j][x];
        lg[j] = sc * s;
        if (lg[j] > m) m = lg[j];
    }
    for (j = 0; j < nkey; ++j) sum += exp(lg[j] - m);
    *lse = m + log(sum);
    for (j = 0; j < nkey; ++j) {
        double p = exp(lg[j] - *lse);
        for (x = 0; x < Dv; ++x) o[x] += p * vp[j][x];
    }
    free(lg);
}

/* Its gradient: do_ is dL/do of this branch (already times its gate). */
static void oracle__attend_bwd(const double *q, int64_t nkey, const double **kp,
                               const double **vp, int Dk, int Dv, double sc,
                               double lse, const double *o, const double *do_,
                               double *dq, double **dkp, double **dvp)
{
    int64_t j;
    int x;
    double D = 0.0;
    for (x = 0; x < Dv; ++x) D += do_[x] * o[x];
    for (j = 0; j < nkey; ++j) {
        double s = 0.0, p, dp = 0.0, ds;
        for (x = 0; x < Dk; ++x) s += q[x] * kp[j][x];
        p = exp(sc * s - lse);
        for (x = 0; x < Dv; ++x) dp += do_[x] * vp[j][x];
        ds = p * (dp - D);
        for (x = 0; x < Dk; ++x) {
            dq[x] += sc * ds * kp[j][x];
            dkp[j][x] += sc * ds * q[x];
        }
        for (x = 0; x < Dv; ++x) dvp[j][x] += p * do_[x];
    }
}

/* Ranking of the full sort: larger score first, NaN below all, ties to the
   lower block index; -0 == +0 falls out of double comparison. */
typedef struct oracle__cand { double s; int32_t j; } oracle__cand;

static int oracle__cmp_cand(const void *pa, const void *pb)
{
    const oracle__cand *a = (const oracle__cand *)pa;
    const oracle__cand *b = (const oracle__cand *)pb;
    int an = isnan(a->s), bn = isnan(b->s);
    if (an != bn) return an ? 1 : -1;
    if (!an) {
        if (a->s > b->s) return -1;
        if (a->s < b->s) return 1;
    }
    return (a->j > b->j) - (a->j < b->j);
}

static int oracle__cmp_int(const void *pa, const void *pb)
{
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    return (a > b) - (a < b);
}

/* Position of query i of a sequence (contract "Shapes and layout"). */
static int64_t oracle__pos(const oracle__seq *s, int64_t i)
{
    return s->nk - s->nq + i;
}

/* Selection steps 1-7 for one sequence. */
static void oracle__select_seq(const oracle_in *in, const oracle__seq *s,
                               oracle_out *out)
{
    const nsa_config *c = in->cfg;
    const int G = in->H / in->Hkv, r = c->lp / c->d, lb = c->l / c->d;
    const double sc = oracle__scale(in);
    double *p = (double *)malloc((size_t)(s->nc > 0 ? s->nc : 1) * sizeof *p);
    oracle__cand *cand =
        (oracle__cand *)malloc((size_t)(s->nb > 0 ? s->nb : 1) * sizeof *cand);
    char *forced = (char *)malloc((size_t)(s->nb > 0 ? s->nb : 1));
    int64_t u, i, j, ic;
    int hk, h, x;
    for (u = 0; u < s->nu; ++u) {
        int64_t ilo = u * c->bq, ihi = ilo + c->bq;
        int64_t tlast, jl;
        if (ihi > s->nq) ihi = s->nq;
        tlast = oracle__pos(s, ihi - 1);
        jl = tlast / c->lp;
        for (hk = 0; hk < in->Hkv; ++hk) {
            const int64_t row = (s->u0 + u) * in->Hkv + hk;
            double *sco = out->scores + row * out->maxblk;
            int32_t *sel = out->sel_idx + row * c->n;
            int64_t nf = 0, ncand = 0, take, cnt = 0;
            for (j = 0; j < out->maxblk; ++j)
                sco[j] = (j < s->nb && j * c->lp <= tlast) ? 0.0 : -INFINITY;
            /* Steps 1-4: per query of the tile, per head of the group. */
            for (i = ilo; i < ihi; ++i) {
                const int64_t t = oracle__pos(s, i);
                for (h = hk * G; h < (hk + 1) * G; ++h) {
                    const double *qv = in->q + ((s->q0 + i) * in->H + h) * in->Dk;
                    int64_t nvis = 0;
                    double m = -INFINITY, sum = 0.0;
                    for (ic = 0; ic < s->nc; ++ic) {
                        const double *kc;
                        double dot = 0.0;
                        if (ic * c->d + c->l - 1 > t) break;
                        kc = out->k_cmp + ((s->c0 + ic) * in->Hkv + hk) * in->Dk;
                        for (x = 0; x < in->Dk; ++x) dot += qv[x] * kc[x];
                        p[ic] = sc * dot;
                        if (p[ic] > m) m = p[ic];
                        nvis = ic + 1;
                    }
                    if (c->score_mode == NSA_SCORE_PROBS && nvis > 0) {
                        for (ic = 0; ic < nvis; ++ic) sum += exp(p[ic] - m);
                        for (ic = 0; ic < nvis; ++ic)
                            p[ic] = exp(p[ic] - m) / sum;
                    }
                    /* Step 2: overlap of segments. */
                    for (ic = 0; ic < nvis; ++ic)
                        for (j = 0; j < s->nb; ++j) {
                            int64_t lo = ic > j * r ? ic : j * r;
                            int64_t hi = ic + lb - 1 < (j + 1) * r - 1
                                             ? ic + lb - 1 : (j + 1) * r - 1;
                            if (hi >= lo) sco[j] += (double)(hi - lo + 1) * p[ic];
                        }
                }
            }
            /* Step 5: eligible and forced blocks. */
            for (j = 0; j < s->nb; ++j) {
                forced[j] = 0;
                if (j * c->lp > tlast) continue;
                if (j < c->n_init || (j <= jl && j > jl - c->n_local)) {
                    forced[j] = 1;
                    ++nf;
                }
            }
            for (j = 0; j < s->nb; ++j)
                if (j * c->lp <= tlast && !forced[j]) {
                    cand[ncand].s = sco[j];
                    cand[ncand].j = (int32_t)j;
                    ++ncand;
                }
            /* Step 6: full sort of the rest. */
            qsort(cand, (size_t)ncand, sizeof *cand, oracle__cmp_cand);
            take = c->n - nf;
            if (take > ncand) take = ncand;
            for (j = 0; j < s->nb; ++j)
                if (forced[j]) sel[cnt++] = (int32_t)j;
            for (j = 0; j < take; ++j) sel[cnt++] = cand[j].j;
            qsort(sel, (size_t)cnt, sizeof *sel, oracle__cmp_int);
            out->sel_count[row] = (int32_t)cnt;
            for (j = cnt; j < c->n; ++j) sel[j] = -1;
        }
    }
    free(p);
    free(cand);
    free(forced);
}

/* Key list of query (seq s, index i, kv head hk) in branch br. Returns the
   count; kp/vp get key/value pointers, kidx their global row (token or
   compressed block) for gradient scattering. */
static int64_t oracle__keys(const oracle_in *in, const oracle_out *out,
                            const oracle__seq *s, int64_t i, int hk, int br,
                            const double **kp, const double **vp, int64_t *kidx)
{
    const nsa_config *c = in->cfg;
    const int64_t t = oracle__pos(s, i);
    int64_t n = 0, ic, sk, e;
    if (br == 0) {
        for (ic = 0; ic < s->nc && ic * c->d + c->l - 1 <= t; ++ic) {
            kidx[n] = s->c0 + ic;
            kp[n] = out->k_cmp + (kidx[n] * in->Hkv + hk) * in->Dk;
            vp[n] = out->v_cmp + (kidx[n] * in->Hkv + hk) * in->Dv;
            ++n;
        }
    } else if (br == 1) {
        const int64_t row = (s->u0 + i / c->bq) * in->Hkv + hk;
        const int32_t *sel = in->sel_idx ? in->sel_idx : out->sel_idx;
        int64_t cnt = in->sel_count ? in->sel_count[row] : out->sel_count[row];
        if (cnt > c->n) cnt = c->n;
        for (e = 0; e < cnt; ++e) {
            int64_t j = sel[row * c->n + e];
            if (j < 0 || j >= s->nb) continue;
            for (sk = j * c->lp; sk < (j + 1) * c->lp && sk < s->nk && sk <= t;
                 ++sk) {
                kidx[n] = s->k0 + sk;
                kp[n] = in->k + (kidx[n] * in->Hkv + hk) * in->Dk;
                vp[n] = in->v + (kidx[n] * in->Hkv + hk) * in->Dv;
                ++n;
            }
        }
    } else {
        for (sk = t - c->w + 1 < 0 ? 0 : t - c->w + 1; sk <= t; ++sk) {
            kidx[n] = s->k0 + sk;
            kp[n] = in->k + (kidx[n] * in->Hkv + hk) * in->Dk;
            vp[n] = in->v + (kidx[n] * in->Hkv + hk) * in->Dv;
            ++n;
        }
    }
    return n;
}

static int64_t oracle__maxkeys(const oracle_in *in)
{
    int64_t m = 1;
    int b;
    for (b = 0; b < in->B; ++b) {
        int64_t nk = in->cu_k[b + 1] - in->cu_k[b];
        if (nk > m) m = nk;
    }
    /* slc may list a block more than once if a caller does so */
    return m * (in->cfg->n > 1 ? in->cfg->n : 1) + 1;
}

static void oracle_free(oracle_out *o)
{
    int c;
    free(o->k_cmp); free(o->v_cmp); free(o->scores);
    free(o->sel_idx); free(o->sel_count); free(o->o);
    for (c = 0; c < 3; ++c) { free(o->o_br[c]); free(o->lse[c]); }
    free(o->dq); free(o->dk); free(o->dv); free(o->dgates);
    free(o->dk_cmp); free(o->dv_cmp);
    memset(o, 0, sizeof *o);
}

static void *oracle__calloc(int64_t n, size_t sz)
{
    return calloc((size_t)(n > 0 ? n : 1), sz);
}

/* Forward: compression, selection (unless given), the three branches, the
   gated sum. */
static void oracle_forward(const oracle_in *in, oracle_out *out)
{
    const nsa_config *c = in->cfg;
    const int G = in->H / in->Hkv;
    const double sc = oracle__scale(in);
    const int32_t *cq = in->cu_q ? in->cu_q : in->cu_k;
    int64_t cacc = 0, uacc = 0, i, ic, sk, mk = oracle__maxkeys(in);
    const double **kp = (const double **)malloc((size_t)mk * sizeof *kp);
    const double **vp = (const double **)malloc((size_t)mk * sizeof *vp);
    int64_t *kidx = (int64_t *)malloc((size_t)mk * sizeof *kidx);
    int b, h, x, br;

    memset(out, 0, sizeof *out);
    out->T = in->cu_k[in->B];
    out->TQ = cq[in->B];
    for (b = 0; b < in->B; ++b) {
        oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
        if (s.nb > out->maxblk) out->maxblk = s.nb;
    }
    out->Tc = cacc;
    out->units = uacc;
    out->k_cmp = (double *)oracle__calloc(out->Tc * in->Hkv * in->Dk, sizeof(double));
    out->v_cmp = (double *)oracle__calloc(out->Tc * in->Hkv * in->Dv, sizeof(double));
    out->scores = (double *)oracle__calloc(out->units * in->Hkv * out->maxblk, sizeof(double));
    out->sel_idx = (int32_t *)oracle__calloc(out->units * in->Hkv * c->n, sizeof(int32_t));
    out->sel_count = (int32_t *)oracle__calloc(out->units * in->Hkv, sizeof(int32_t));
    out->o = (double *)oracle__calloc(out->TQ * in->H * in->Dv, sizeof(double));
    for (br = 0; br < 3; ++br) {
        out->o_br[br] = (double *)oracle__calloc(out->TQ * in->H * in->Dv, sizeof(double));
        out->lse[br] = (double *)oracle__calloc(out->TQ * in->H, sizeof(double));
        for (i = 0; i < out->TQ * in->H; ++i) out->lse[br][i] = -INFINITY;
    }

    /* Branch 1's compressed keys: the caller's, or the mean rounded to the
       storage type. */
    cacc = uacc = 0;
    for (b = 0; b < in->B; ++b) {
        oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
        int hk;
        for (ic = 0; ic < s.nc; ++ic)
            for (hk = 0; hk < in->Hkv; ++hk) {
                int64_t row = (s.c0 + ic) * in->Hkv + hk;
                for (x = 0; x < in->Dk; ++x) {
                    double m = 0.0;
                    if (c->caller_compressed || in->k_cmp_used) {
                        out->k_cmp[row * in->Dk + x] = c->caller_compressed
                            ? in->k_cmp[row * in->Dk + x]
                            : in->k_cmp_used[row * in->Dk + x];
                        continue;
                    }
                    for (sk = ic * c->d; sk < ic * c->d + c->l; ++sk)
                        m += in->k[((s.k0 + sk) * in->Hkv + hk) * in->Dk + x];
                    m /= c->l;
                    out->k_cmp[row * in->Dk + x] = in->round_cmp ? in->round_cmp(m) : m;
                }
                for (x = 0; x < in->Dv; ++x) {
                    double m = 0.0;
                    if (c->caller_compressed || in->v_cmp_used) {
                        out->v_cmp[row * in->Dv + x] = c->caller_compressed
                            ? in->v_cmp[row * in->Dv + x]
                            : in->v_cmp_used[row * in->Dv + x];
                        continue;
                    }
                    for (sk = ic * c->d; sk < ic * c->d + c->l; ++sk)
                        m += in->v[((s.k0 + sk) * in->Hkv + hk) * in->Dv + x];
                    m /= c->l;
                    out->v_cmp[row * in->Dv + x] = in->round_cmp ? in->round_cmp(m) : m;
                }
            }
    }
    cacc = uacc = 0;
    for (b = 0; b < in->B; ++b) {
        oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
        if ((c->branches & NSA_BRANCH_SLC) && !in->sel_idx)
            oracle__select_seq(in, &s, out);
        else if (in->sel_idx) {
            memcpy(out->sel_idx + s.u0 * in->Hkv * c->n,
                   in->sel_idx + s.u0 * in->Hkv * c->n,
                   (size_t)(s.nu * in->Hkv * c->n) * sizeof(int32_t));
            memcpy(out->sel_count + s.u0 * in->Hkv,
                   in->sel_count + s.u0 * in->Hkv,
                   (size_t)(s.nu * in->Hkv) * sizeof(int32_t));
        }
    }
    /* The branches and the gated sum. */
    cacc = uacc = 0;
    for (b = 0; b < in->B; ++b) {
        oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
        for (i = 0; i < s.nq; ++i)
            for (h = 0; h < in->H; ++h) {
                const int64_t tq = s.q0 + i, r = tq * in->H + h;
                const double *qv = in->q + r * in->Dk;
                for (br = 0; br < 3; ++br) {
                    int64_t nkey;
                    double g;
                    if (!(c->branches & (1u << br))) continue;
                    nkey = oracle__keys(in, out, &s, i, h / G, br, kp, vp, kidx);
                    oracle__attend(qv, nkey, kp, vp, in->Dk, in->Dv, sc,
                                   out->o_br[br] + r * in->Dv, out->lse[br] + r);
                    g = oracle__gate(in, tq, h, br);
                    for (x = 0; x < in->Dv; ++x)
                        out->o[r * in->Dv + x] += g * out->o_br[br][r * in->Dv + x];
                }
            }
    }
    free((void *)kp);
    free((void *)vp);
    free(kidx);
}

/* Backward of sum(o * d_o) with the selection of `out` held fixed; call
   after oracle_forward with the same input. */
static void oracle_backward(const oracle_in *in, const double *d_o,
                            oracle_out *out)
{
    const nsa_config *c = in->cfg;
    const int G = in->H / in->Hkv;
    const double sc = oracle__scale(in);
    int64_t cacc = 0, uacc = 0, i, ic, sk, mk = oracle__maxkeys(in);
    const double **kp = (const double **)malloc((size_t)mk * sizeof *kp);
    const double **vp = (const double **)malloc((size_t)mk * sizeof *vp);
    double **dkp = (double **)malloc((size_t)mk * sizeof *dkp);
    double **dvp = (double **)malloc((size_t)mk * sizeof *dvp);
    int64_t *kidx = (int64_t *)malloc((size_t)mk * sizeof *kidx);
    double *doc = (double *)malloc((size_t)in->Dv * sizeof *doc);
    int b, h, x, br, hk;

    out->dq = (double *)oracle__calloc(out->TQ * in->H * in->Dk, sizeof(double));
    out->dk = (double *)oracle__calloc(out->T * in->Hkv * in->Dk, sizeof(double));
    out->dv = (double *)oracle__calloc(out->T * in->Hkv * in->Dv, sizeof(double));
    out->dgates = (double *)oracle__calloc(out->TQ * in->H * 3, sizeof(double));
    out->dk_cmp = (double *)oracle__calloc(out->Tc * in->Hkv * in->Dk, sizeof(double));
    out->dv_cmp = (double *)oracle__calloc(out->Tc * in->Hkv * in->Dv, sizeof(double));
    for (b = 0; b < in->B; ++b) {
        oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
        for (i = 0; i < s.nq; ++i)
            for (h = 0; h < in->H; ++h) {
                const int64_t tq = s.q0 + i, r = tq * in->H + h;
                const double *qv = in->q + r * in->Dk;
                for (br = 0; br < 3; ++br) {
                    int64_t nkey, e;
                    double g, dg = 0.0;
                    if (!(c->branches & (1u << br))) continue;
                    g = oracle__gate(in, tq, h, br);
                    for (x = 0; x < in->Dv; ++x) {
                        doc[x] = g * d_o[r * in->Dv + x];
                        dg += d_o[r * in->Dv + x] * out->o_br[br][r * in->Dv + x];
                    }
                    out->dgates[r * 3 + br] = dg;
                    nkey = oracle__keys(in, out, &s, i, h / G, br, kp, vp, kidx);
                    for (e = 0; e < nkey; ++e) {
                        double *dkb = br == 0 ? out->dk_cmp : out->dk;
                        double *dvb = br == 0 ? out->dv_cmp : out->dv;
                        dkp[e] = dkb + (kidx[e] * in->Hkv + h / G) * in->Dk;
                        dvp[e] = dvb + (kidx[e] * in->Hkv + h / G) * in->Dv;
                    }
                    oracle__attend_bwd(qv, nkey, kp, vp, in->Dk, in->Dv, sc,
                                       out->lse[br][r], out->o_br[br] + r * in->Dv,
                                       doc, out->dq + r * in->Dk, dkp, dvp);
                }
            }
    }
    /* Mean compression: dK_cmp[i] / l flows to every key of block i. */
    if (!c->caller_compressed) {
        cacc = uacc = 0;
        for (b = 0; b < in->B; ++b) {
            oracle__seq s = oracle__seq_at(in, b, &cacc, &uacc);
            for (ic = 0; ic < s.nc; ++ic)
                for (hk = 0; hk < in->Hkv; ++hk) {
                    int64_t row = (s.c0 + ic) * in->Hkv + hk;
                    for (sk = ic * c->d; sk < ic * c->d + c->l; ++sk) {
                        int64_t kr = (s.k0 + sk) * in->Hkv + hk;
                        for (x = 0; x < in->Dk; ++x)
                            out->dk[kr * in->Dk + x] +=
                                out->dk_cmp[row * in->Dk + x] / c->l;
                        for (x = 0; x < in->Dv; ++x)
                            out->dv[kr * in->Dv + x] +=
                                out->dv_cmp[row * in->Dv + x] / c->l;
                    }
                }
        }
    }
    free((void *)kp); free((void *)vp); free(dkp); free(dvp); free(kidx); free(doc);
}

#endif /* NSA_TEST_ORACLE_H */
