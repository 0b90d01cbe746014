/* Forward and backward of NSA with the paper preset on a random batch of
   three sequences of different lengths, on the CPU reference.

     make build/example && ./build/example
*/
#define _POSIX_C_SOURCE 199309L
#define NSA_REF_IMPLEMENTATION
#include "nsa_ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CHECK(call)                                                        \
    do {                                                                   \
        nsa_status s_ = (call);                                            \
        if (s_ != NSA_OK) {                                                \
            fprintf(stderr, "%s failed: %s (%s)\n", #call,                 \
                    nsa_status_string(s_), nsa_last_error());              \
            exit(1);                                                       \
        }                                                                  \
    } while (0)

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Uniform in [-1, 1), from a 64-bit LCG so the example needs nothing else. */
static float uniform(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*state >> 40) * (1.0 / 8388608.0)) - 1.0f;
}

static uint16_t *random_bf16(int64_t count, uint64_t *state)
{
    uint16_t *p = (uint16_t *)malloc((size_t)count * sizeof *p);
    int64_t i;
    for (i = 0; i < count; ++i) p[i] = nsa_f32_to_bf16(uniform(state));
    return p;
}

static double norm_f32(const float *x, int64_t count)
{
    double s = 0;
    int64_t i;
    for (i = 0; i < count; ++i) s += (double)x[i] * x[i];
    return sqrt(s);
}

int main(void)
{
    const int32_t cu_seqlens[] = {0, 700, 2748, 4096}; /* lengths 700, 2048, 1348 */
    uint64_t rng = 20251125u;
    nsa_config cfg = nsa_config_paper();
    nsa_batch x = {0};
    nsa_sizes sz;
    nsa_saved saved;
    nsa_grads grads;
    size_t ws_bytes, block_bytes;
    void *ws, *block, *o, *d_o;
    float *o_branch[3];
    const char *branch_name[3] = {"compressed", "selected", "window"};
    const char *o_name[3] = {"o_cmp", "o_slc", "o_win"};
    double t0, t_fwd, t_bwd;
    int c, probe;

    x.B = 3;
    x.T = 4096;
    x.cu_seqlens = cu_seqlens;
    x.H = 16;
    x.Hkv = 2;
    x.Dk = x.Dv = 64;
    x.dtype = NSA_BF16;
    CHECK(nsa_sizes_get(&cfg, &x, &sz));
    x.q = random_bf16(sz.q, &rng);
    x.k = random_bf16(sz.k, &rng);
    x.v = random_bf16(sz.v, &rng);
    d_o = random_bf16(sz.o, &rng);
    o = malloc((size_t)sz.o * 2);

    /* Everything forward keeps for backward, and the gradients, in one
       block (no gates here: with_gates = 0). */
    CHECK(nsa_buffers_bytes(&cfg, &x, 0, &block_bytes));
    block = malloc(block_bytes);
    CHECK(nsa_buffers_place(&cfg, &x, 0, block, block_bytes, &saved, &grads));

    CHECK(nsa_ref_workspace_size(&cfg, &x, &ws_bytes));
    ws = malloc(ws_bytes ? ws_bytes : 1);

    printf("NSA, paper preset (l=%d d=%d l'=%d n=%d w=%d), bf16, "
           "%d sequences of lengths %d, %d, %d; H=%d Hkv=%d D=%d\n",
           cfg.l, cfg.d, cfg.lp, cfg.n, cfg.w, x.B,
           cu_seqlens[1] - cu_seqlens[0], cu_seqlens[2] - cu_seqlens[1],
           cu_seqlens[3] - cu_seqlens[2], x.H, x.Hkv, x.Dk);

    t0 = now_seconds();
    CHECK(nsa_ref_forward(&cfg, &x, NULL, o, &saved, ws, ws_bytes));
    t_fwd = now_seconds() - t0;
    t0 = now_seconds();
    CHECK(nsa_ref_backward(&cfg, &x, NULL, d_o, &saved, &grads, ws, ws_bytes));
    t_bwd = now_seconds() - t0;

    /* Each branch alone, through the stage entry points, for its norm. */
    for (c = 0; c < 3; ++c)
        o_branch[c] = (float *)malloc((size_t)sz.o * sizeof(float));
    CHECK(nsa_ref_attend_cmp(&cfg, &x, saved.k_cmp, saved.v_cmp, o_branch[0],
                             saved.lse_cmp));
    CHECK(nsa_ref_attend_slc(&cfg, &x, saved.sel_idx, saved.sel_count,
                             o_branch[1], saved.lse_slc));
    CHECK(nsa_ref_attend_win(&cfg, &x, o_branch[2], saved.lse_win));
    for (c = 0; c < 3; ++c)
        printf("  %-10s branch: |%s| = %.4f\n", branch_name[c], o_name[c],
               norm_f32(o_branch[c], sz.o));

    /* Selected blocks of a few queries of the second sequence (bq = 1, so
       unit = query), kv head 0. */
    {
        const int probes[] = {0, 63, 64, 1000, 2047};
        for (probe = 0; probe < 5; ++probe) {
            int64_t unit = cu_seqlens[1] + probes[probe];
            const int32_t *idx = saved.sel_idx + unit * x.Hkv * cfg.n;
            int count = saved.sel_count[unit * x.Hkv], j;
            printf("  query t=%4d of sequence 1 selects %2d blocks:", probes[probe],
                   count);
            for (j = 0; j < count; ++j) printf(" %d", idx[j]);
            printf("\n");
        }
    }
    printf("forward %.3f s, backward %.3f s (%lld tokens)\n", t_fwd, t_bwd,
           (long long)x.T);

    for (c = 0; c < 3; ++c) free(o_branch[c]);
    free(ws); free(block); free(o); free(d_o);
    free((void *)x.q); free((void *)x.k); free((void *)x.v);
    return 0;
}
