/* test_cp_layout.c -- context parallelism's layout and math on the CPU.

   nsa_cp.h runs each rank's queries as suffix queries over two key
   prefixes (chunks r and 2R-1-r of 2R). This test replays that plan with
   the CPU reference instead of NCCL and the GPU: for R = 1 .. 4 ranks it
   builds each rank's shard and local batch with nsa_cp.h's own functions
   (nsa_cp_local_batch), fills the prefixes from the whole sequences, runs
   nsa_ref_forward / nsa_ref_backward, and compares with one run over the
   whole batch:
     - o, lse, selection, dq, dgates of every shard row: bitwise equal (the
       same queries over the same visible keys, in the same order);
     - dk, dv: the ranks' partials (fp32 storage: unrounded), added per key,
       within fp32 summation error of the whole run's;
     - every token is in exactly one shard, and the rules of LIMITS are
       enforced (status codes).
   Sequences include lengths not divisible by 2R and shorter than 2R. */
#define NSA_IMPLEMENTATION
#define NSA_REF_IMPLEMENTATION
#include "../nsa_ref.h"
#define NSA_CP_IMPLEMENTATION
#define NSA_CP_LAYOUT_ONLY
#include "../nsa_cp.h"
/* check.h is a kit; this test uses part of it */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "check.h"

typedef struct Run {
    float *o, *lse[3], *dq, *dk, *dv, *dg;
    int32_t *sel, *cnt;
    nsa_sizes sz;
} Run;

static float *rnd(int64_t n)
{
    float *x = (float *)malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (int64_t i = 0; i < n; ++i) x[i] = (float)check_uniform(-1.0, 1.0);
    return x;
}

static void run_ref(const nsa_config *cfg, const nsa_batch *b, const float *gates,
                    const float *dO, Run *r)
{
    size_t wsb = 0;
    nsa_status st = nsa_sizes_get(cfg, b, &r->sz);
    if (!st) st = nsa_ref_workspace_size(cfg, b, &wsb);
    if (st) { printf("setup: %s\n", nsa_last_error()); exit(2); }
    const nsa_sizes *z = &r->sz;
    void *ws = malloc(wsb + 1);
    r->o = (float *)calloc((size_t)z->o + 1, 4);
    for (int i = 0; i < 3; ++i) r->lse[i] = (float *)calloc((size_t)z->lse + 1, 4);
    r->sel = (int32_t *)calloc((size_t)z->sel_idx + 1, 4);
    r->cnt = (int32_t *)calloc((size_t)z->sel_count + 1, 4);
    float *kc = (float *)calloc((size_t)z->k_cmp + 1, 4), *vc = (float *)calloc((size_t)z->v_cmp + 1, 4);
    r->dq = (float *)calloc((size_t)z->q + 1, 4);
    r->dk = (float *)calloc((size_t)z->k + 1, 4);
    r->dv = (float *)calloc((size_t)z->v + 1, 4);
    r->dg = (float *)calloc((size_t)z->gates + 1, 4);
    nsa_saved sv = {r->lse[0], r->lse[1], r->lse[2], r->sel, r->cnt, kc, vc, NULL};
    nsa_grads gr = {r->dq, r->dk, r->dv, r->dg, NULL, NULL};
    st = nsa_ref_forward(cfg, b, gates, r->o, &sv, ws, wsb);
    if (!st) st = nsa_ref_backward(cfg, b, gates, dO, &sv, &gr, ws, wsb);
    if (st) { printf("ref: %s\n", nsa_last_error()); exit(2); }
    free(ws); free(kc); free(vc);
}

static void run_free(Run *r)
{
    free(r->o); free(r->dq); free(r->dk); free(r->dv); free(r->dg); free(r->sel); free(r->cnt);
    for (int i = 0; i < 3; ++i) free(r->lse[i]);
}

/* Copies rows [from, from+n) of a [*, w] array to dst row at. */
static void rows(float *dst, int64_t at, const float *src, int64_t from, int64_t n, int64_t w)
{
    if (n > 0) memcpy(dst + at * w, src + from * w, (size_t)(n * w) * sizeof(float));
}

static void one_case(const char *name, nsa_config cfg, int B, const int32_t *lens, int R)
{
    const int H = 4, Hkv = 2, D = 16, G = H / Hkv;
    char tag[160];
    int32_t cu[16];
    cu[0] = 0;
    for (int s = 0; s < B; ++s) cu[s + 1] = cu[s] + lens[s];
    const int64_t T = cu[B];
    nsa_batch gb;
    memset(&gb, 0, sizeof gb);
    gb.B = B; gb.T = T; gb.cu_seqlens = cu;
    gb.H = H; gb.Hkv = Hkv; gb.Dk = D; gb.Dv = D; gb.dtype = NSA_FP32;
    float *q = rnd(T * H * D), *k = rnd(T * Hkv * D), *v = rnd(T * Hkv * D),
          *g = rnd(T * H * 3), *dO = rnd(T * H * D);
    gb.q = q; gb.k = k; gb.v = v;
    Run full;
    run_ref(&cfg, &gb, g, dO, &full);
    double *dks = (double *)calloc((size_t)(T * Hkv * D), sizeof(double));
    double *dvs = (double *)calloc((size_t)(T * Hkv * D), sizeof(double));
    int *seen = (int *)calloc((size_t)(T + 1), sizeof(int));
    long bad_fwd = 0, bad_bwd = 0, bad_sel = 0;
    const unsigned br = cfg.branches;
    for (int r = 0; r < R; ++r) {
        int32_t ck[32], cq[32];
        nsa_batch lb;
        nsa_status st = nsa_cp_local_batch(&cfg, &gb, r, R, ck, cq, &lb);
        snprintf(tag, sizeof tag, "%s R=%d rank %d: local batch", name, R, r);
        if (!CHECK(tag, st == NSA_OK, "%s", nsa_last_error())) continue;
        /* the shard: chunk r then chunk 2R-1-r of each sequence; the
           prefixes: rows [0, end of the chunk) of the whole sequence */
        const int64_t TQ = lb.TQ, TK = lb.T;
        float *sq = (float *)malloc((size_t)(TQ * H * D + 1) * 4), *sg = (float *)malloc((size_t)(TQ * H * 3 + 1) * 4),
              *sd = (float *)malloc((size_t)(TQ * H * D + 1) * 4),
              *pk = (float *)malloc((size_t)(TK * Hkv * D + 1) * 4), *pv = (float *)malloc((size_t)(TK * Hkv * D + 1) * 4);
        int64_t *grow = (int64_t *)malloc((size_t)(TQ + 1) * 8); /* shard row -> global row */
        /* shard row -> (local unit, global unit) of the selection */
        int64_t *lunit = (int64_t *)malloc((size_t)(TQ + 1) * 8), *gunit = (int64_t *)malloc((size_t)(TQ + 1) * 8);
        const int bq = (br & NSA_BRANCH_SLC) ? cfg.bq : 1;
        int64_t row = 0, lu0 = 0, gu0 = 0;
        for (int s = 0; s < B; ++s) {
            const int cs[2] = {r, 2 * R - 1 - r};
            for (int i = 0; i < 2; ++i) {
                const int64_t st0 = nsa_cp_chunk_start(lens[s], cs[i], R),
                              len = nsa_cp_chunk_len(lens[s], cs[i], R);
                const int64_t end = st0 + len;
                CHECK(tag, cq[2 * s + i + 1] - cq[2 * s + i] == len &&
                      ck[2 * s + i + 1] - ck[2 * s + i] == end,
                      "sequence %d chunk %d: %d queries over %d keys, want %lld over %lld", s,
                      cs[i], cq[2 * s + i + 1] - cq[2 * s + i], ck[2 * s + i + 1] - ck[2 * s + i],
                      (long long)len, (long long)end);
                for (int64_t t = 0; t < len; ++t) {
                    grow[row + t] = cu[s] + st0 + t;
                    seen[cu[s] + st0 + t]++;
                    lunit[row + t] = lu0 + t / bq;
                    gunit[row + t] = gu0 + (st0 + t) / bq;
                }
                lu0 += nsa_units(len, bq);
                rows(sq, row, q, cu[s] + st0, len, H * D);
                rows(sg, row, g, cu[s] + st0, len, H * 3);
                rows(sd, row, dO, cu[s] + st0, len, H * D);
                rows(pk, ck[2 * s + i], k, cu[s], end, Hkv * D);
                rows(pv, ck[2 * s + i], v, cu[s], end, Hkv * D);
                row += len;
            }
            gu0 += nsa_units(lens[s], bq);
        }
        lb.q = sq; lb.k = pk; lb.v = pv;
        Run loc;
        run_ref(&cfg, &lb, sg, sd, &loc);
        for (int64_t t = 0; t < TQ; ++t) {
            const int64_t gt = grow[t];
            bad_fwd += memcmp(loc.o + t * H * D, full.o + gt * H * D, (size_t)(H * D) * 4) != 0;
            for (int c = 0; c < 3; ++c)
                if (br & (1u << c))
                    bad_fwd += memcmp(loc.lse[c] + t * H, full.lse[c] + gt * H, (size_t)H * 4) != 0;
            if (br & NSA_BRANCH_SLC)
                bad_sel += memcmp(loc.sel + lunit[t] * Hkv * cfg.n, full.sel + gunit[t] * Hkv * cfg.n,
                                  (size_t)(Hkv * cfg.n) * 4) != 0 ||
                           memcmp(loc.cnt + lunit[t] * Hkv, full.cnt + gunit[t] * Hkv, (size_t)Hkv * 4) != 0;
            bad_bwd += memcmp(loc.dq + t * H * D, full.dq + gt * H * D, (size_t)(H * D) * 4) != 0;
            bad_bwd += memcmp(loc.dg + t * H * 3, full.dg + gt * H * 3, (size_t)(H * 3) * 4) != 0;
        }
        /* partial dK, dV of both prefixes back to the whole sequence's keys */
        for (int s = 0; s < B; ++s)
            for (int i = 0; i < 2; ++i)
                for (int64_t x = 0; x < (int64_t)(ck[2 * s + i + 1] - ck[2 * s + i]) * Hkv * D; ++x) {
                    dks[(int64_t)cu[s] * Hkv * D + x] += loc.dk[(int64_t)ck[2 * s + i] * Hkv * D + x];
                    dvs[(int64_t)cu[s] * Hkv * D + x] += loc.dv[(int64_t)ck[2 * s + i] * Hkv * D + x];
                }
        run_free(&loc);
        free(sq); free(sg); free(sd); free(pk); free(pv); free(grow); free(lunit); free(gunit);
    }
    snprintf(tag, sizeof tag, "%s R=%d", name, R);
    long once = 0;
    for (int64_t t = 0; t < T; ++t) once += seen[t] == 1;
    CHECK(tag, once == T, "%ld of %lld tokens in exactly one shard", once, (long long)T);
    CHECK(tag, bad_fwd == 0, "%ld shard rows of o / lse differ from the whole run's", bad_fwd);
    CHECK(tag, bad_sel == 0, "%ld shard rows of the selection differ", bad_sel);
    CHECK(tag, bad_bwd == 0, "%ld shard rows of dq / dgates differ", bad_bwd);
    /* fp32 sums of up to 2R partials against one fp32 sum: |err| within a
       few fp32 roundings of the largest gradient */
    double ek = 0, ev = 0, mk = 0, mv = 0;
    for (int64_t x = 0; x < T * Hkv * D; ++x) {
        ek = fmax(ek, fabs(dks[x] - full.dk[x]));
        ev = fmax(ev, fabs(dvs[x] - full.dv[x]));
        mk = fmax(mk, fabs(full.dk[x]));
        mv = fmax(mv, fabs(full.dv[x]));
    }
    CHECK(tag, ek <= 1e-5 * mk && ev <= 1e-5 * mv && mk > 0 && mv > 0,
          "dk max err %.3e of max %.3e, dv %.3e of %.3e", ek, mk, ev, mv);
    printf("  %-28s R=%d T=%-5lld rows differing: o/lse %ld, sel %ld, dq/dg %ld; "
           "dk err %.2e, dv err %.2e (of max)\n", name, R, (long long)T, bad_fwd, bad_sel,
           bad_bwd, mk > 0 ? ek / mk : 0, mv > 0 ? ev / mv : 0);
    (void)G;
    run_free(&full);
    free(q); free(k); free(v); free(g); free(dO); free(dks); free(dvs); free(seen);
}

static void limits(void)
{
    nsa_config cfg = nsa_config_paper();
    int32_t cu[3] = {0, 1000, 1600}, ck[8], cq[8], cuq[3] = {0, 10, 20};
    nsa_batch b, lb;
    nsa_sizes sz;
    memset(&b, 0, sizeof b);
    memset(&sz, 0, sizeof sz);
    b.B = 2; b.T = 1600; b.cu_seqlens = cu;
    b.H = 4; b.Hkv = 2; b.Dk = 64; b.Dv = 64; b.dtype = NSA_BF16;
    CHECK("cp limits: valid", nsa_cp_local_batch(&cfg, &b, 1, 2, ck, cq, &lb) == NSA_OK, "%s",
          nsa_last_error());
    CHECK("cp limits: sizes", nsa_cp_sizes(&cfg, &b, 1, 2, &sz) == NSA_OK && sz.TQ == 250 + 150 + 250 + 150,
          "TQ %lld: %s", (long long)sz.TQ, nsa_last_error());
    CHECK("cp limits: rank", nsa_cp_local_batch(&cfg, &b, 2, 2, ck, cq, &lb) == NSA_ERR_INVALID_BATCH,
          "rank 2 of 2 accepted");
    CHECK("cp limits: nranks", nsa_cp_local_batch(&cfg, &b, 0, 0, ck, cq, &lb) == NSA_ERR_INVALID_BATCH,
          "0 ranks accepted");
    b.cu_seqlens_q = cuq; b.TQ = 20;
    CHECK("cp limits: suffix queries", nsa_cp_local_batch(&cfg, &b, 0, 2, ck, cq, &lb) == NSA_ERR_UNSUPPORTED,
          "cu_seqlens_q accepted");
    b.cu_seqlens_q = NULL; b.TQ = 0;
    b.k_stride_token = 2 * 64 * 2;
    CHECK("cp limits: k strides", nsa_cp_local_batch(&cfg, &b, 0, 2, ck, cq, &lb) == NSA_ERR_UNSUPPORTED,
          "strided k accepted");
    b.k_stride_token = 0;
    cfg = nsa_config_tile(64, 64); /* 1000 / 4 = 250: chunk starts not multiples of 64 */
    CHECK("cp limits: bq", nsa_cp_local_batch(&cfg, &b, 0, 2, ck, cq, &lb) == NSA_ERR_UNSUPPORTED,
          "misaligned tiles accepted");
    cu[1] = 1024; cu[2] = 1536; b.T = 1536;
    CHECK("cp limits: bq aligned", nsa_cp_local_batch(&cfg, &b, 0, 2, ck, cq, &lb) == NSA_OK, "%s",
          nsa_last_error());
    /* the documented example: R = 2, N = 10 */
    CHECK("cp chunks: example", nsa_cp_chunk_start(10, 1, 2) == 2 && nsa_cp_chunk_start(10, 2, 2) == 4 &&
          nsa_cp_chunk_start(10, 3, 2) == 7 && nsa_cp_chunk_start(10, 4, 2) == 10 &&
          nsa_cp_chunk_owner(3, 2) == 0 && nsa_cp_chunk_owner(2, 2) == 1, "chunk starts differ");
}

int main(void)
{
    check_seed_from_env();
    nsa_config small = nsa_config_paper();
    small.l = 16; small.d = 8; small.lp = 32; small.n = 4; small.w = 64;
    nsa_config logits = small;
    logits.score_mode = NSA_SCORE_LOGITS;
    logits.n_init = 0; logits.n_local = 1;
    nsa_config tile = small;
    tile.bq = 8;
    const int32_t one[1] = {1024}, odd[1] = {1003}, var[4] = {700, 5, 0, 513},
                  tiled[2] = {768, 384};
    for (int R = 1; R <= 4; ++R) {
        one_case("paper-like, one sequence", small, 1, one, R);
        one_case("paper-like, T mod 2R != 0", small, 1, odd, R);
        one_case("paper-like, varlen", small, 4, var, R);
        one_case("logits, varlen", logits, 4, var, R);
        one_case("tiles bq=8, aligned", tile, 2, tiled, R);
    }
    limits();
    return check_summary();
}
