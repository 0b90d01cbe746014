/* Useful FLOPs of NSA attention: the multiply-adds of the visible keys only,
   counted per (query, head) and branch. Shared by the CPU and GPU benchmarks
   so both report the same figure.

   Per visible key, forward does q.k (2*Dk) and p*v (2*Dv); backward
   recomputes q.k (2*Dk) and does dV += p*dO (2*Dv), dP = dO.v (2*Dv),
   dQ += dS*k (2*Dk), dK += dS*q (2*Dk). Selection scoring (q.K_cmp over the
   visible compressed blocks, 2*Dk each) is counted in the forward too, once
   per (query, head), even when the compressed branch shares it. */
#ifndef NSA_BENCH_FLOPS_H
#define NSA_BENCH_FLOPS_H

#include "../nsa.h"

typedef struct nsa_flops {
    double fwd, bwd;           /* totals                         */
    double keys[3];            /* visible (query, head, key) per branch */
} nsa_flops;

/* sel_idx / sel_count: the forward's selection (host copies), or NULL when
   the selected branch is off. Only the host cu_seqlens of the batch are read. */
static nsa_flops nsa_useful_flops(const nsa_config *cfg, const nsa_batch *x,
                                  const int32_t *sel_idx,
                                  const int32_t *sel_count)
{
    nsa_flops f = {0, 0, {0, 0, 0}};
    double score_keys = 0;
    int64_t unit_base = 0;
    int b, kh;
    for (b = 0; b < x->B; ++b) {
        int64_t nk = x->cu_seqlens[b + 1] - x->cu_seqlens[b];
        int64_t nq = x->cu_seqlens_q ? x->cu_seqlens_q[b + 1] - x->cu_seqlens_q[b]
                                     : nk;
        int64_t i;
        for (i = 0; i < nq; ++i) {
            int64_t t = nk - nq + i;
            int64_t ncmp = (cfg->branches & (NSA_BRANCH_CMP | NSA_BRANCH_SLC))
                               ? (t + 1 >= cfg->l ? (t + 1 - cfg->l) / cfg->d + 1 : 0)
                               : 0;
            if (cfg->branches & NSA_BRANCH_CMP) f.keys[0] += (double)ncmp * x->H;
            if (cfg->branches & NSA_BRANCH_SLC) score_keys += (double)ncmp * x->H;
            if (cfg->branches & NSA_BRANCH_WIN)
                f.keys[2] += (double)(t + 1 < cfg->w ? t + 1 : cfg->w) * x->H;
            if ((cfg->branches & NSA_BRANCH_SLC) && sel_idx) {
                int64_t unit = unit_base + i / cfg->bq;
                for (kh = 0; kh < x->Hkv; ++kh) {
                    const int32_t *idx = sel_idx + (unit * x->Hkv + kh) * cfg->n;
                    int c, count = sel_count[unit * x->Hkv + kh];
                    for (c = 0; c < count; ++c) {
                        int64_t s0 = (int64_t)idx[c] * cfg->lp;
                        int64_t s1 = s0 + cfg->lp - 1;
                        if (s1 > t) s1 = t;
                        if (s1 >= s0)
                            f.keys[1] += (double)(s1 - s0 + 1) * (x->H / x->Hkv);
                    }
                }
            }
        }
        if (cfg->branches & NSA_BRANCH_SLC) unit_base += nsa_units(nq, cfg->bq);
    }
    {
        double keys = f.keys[0] + f.keys[1] + f.keys[2];
        f.fwd = keys * 2.0 * (x->Dk + x->Dv) + score_keys * 2.0 * x->Dk;
        f.bwd = keys * (6.0 * x->Dk + 4.0 * x->Dv);
    }
    return f;
}

#endif /* NSA_BENCH_FLOPS_H */
