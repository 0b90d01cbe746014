/* Benchmark of the CPU reference (not a test): tokens/s and useful GFLOP/s
   of forward and forward+backward for one sequence.

     make bench && ./build/bench_ref [--preset paper|fla|tile64|tile128]
         [--T 8192] [--H 64] [--Hkv 4] [--D 128] [--dtype bf16|fp16|fp32]
         [--reps 3]

   It is also the oracle the GPU checks lean on at T = 32K, so its speed
   matters; the figures it prints are recorded in bench/RESULTS.md. */
#define _POSIX_C_SOURCE 199309L
#define NSA_IMPLEMENTATION
#define NSA_REF_IMPLEMENTATION
#include "../nsa_ref.h"
#include "flops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static void *random_tensor(int64_t count, nsa_dtype t, uint64_t *state)
{
    void *p = xmalloc((size_t)count * nsa_dtype_size(t));
    int64_t i;
    for (i = 0; i < count; ++i) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        nsa_store(p, t, i, (float)((*state >> 40) * (1.0 / 8388608.0)) - 1.0f);
    }
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *preset = "paper";
    int64_t T = 8192;
    int H = 64, Hkv = 4, D = 128, reps = 3, r, i;
    nsa_dtype dtype = NSA_BF16;
    nsa_config cfg;
    nsa_batch x;
    nsa_sizes sz;
    nsa_saved saved;
    nsa_grads grads;
    nsa_flops flops;
    int32_t cu[2];
    size_t ws_bytes, es;
    void *ws, *o, *d_o;
    double *t_fwd, *t_bwd;
    uint64_t rng = 1;
    int threads = 1;

    for (i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset")) preset = argv[i + 1];
        else if (!strcmp(argv[i], "--T")) T = atoll(argv[i + 1]);
        else if (!strcmp(argv[i], "--H")) H = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--Hkv")) Hkv = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--D")) D = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--reps")) reps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--dtype"))
            dtype = !strcmp(argv[i + 1], "fp32") ? NSA_FP32
                  : !strcmp(argv[i + 1], "fp16") ? NSA_FP16 : NSA_BF16;
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    if (!strcmp(preset, "fla")) cfg = nsa_config_fla();
    else if (!strcmp(preset, "tile64")) cfg = nsa_config_tile(64, 64);
    else if (!strcmp(preset, "tile128")) cfg = nsa_config_tile(128, 128);
    else cfg = nsa_config_paper();

    memset(&x, 0, sizeof x);
    cu[0] = 0;
    cu[1] = (int32_t)T;
    x.B = 1;
    x.T = T;
    x.cu_seqlens = cu;
    x.H = H;
    x.Hkv = Hkv;
    x.Dk = x.Dv = D;
    x.dtype = dtype;
    CHECK(nsa_sizes_get(&cfg, &x, &sz));
    es = nsa_dtype_size(dtype);
    x.q = random_tensor(sz.q, dtype, &rng);
    x.k = random_tensor(sz.k, dtype, &rng);
    x.v = random_tensor(sz.v, dtype, &rng);
    d_o = random_tensor(sz.o, dtype, &rng);
    o = xmalloc((size_t)sz.o * es);
    memset(&saved, 0, sizeof saved); /* every field, o_branch (none) too */
    saved.lse_cmp = (float *)xmalloc((size_t)sz.lse * sizeof(float));
    saved.lse_slc = (float *)xmalloc((size_t)sz.lse * sizeof(float));
    saved.lse_win = (float *)xmalloc((size_t)sz.lse * sizeof(float));
    saved.sel_idx = (int32_t *)xmalloc((size_t)sz.sel_idx * sizeof(int32_t));
    saved.sel_count = (int32_t *)xmalloc((size_t)sz.sel_count * sizeof(int32_t));
    saved.k_cmp = xmalloc((size_t)sz.k_cmp * es);
    saved.v_cmp = xmalloc((size_t)sz.v_cmp * es);
    grads.dq = xmalloc((size_t)sz.q * es);
    grads.dk = xmalloc((size_t)sz.k * es);
    grads.dv = xmalloc((size_t)sz.v * es);
    grads.dgates = grads.dk_cmp = grads.dv_cmp = NULL;
    CHECK(nsa_ref_workspace_size(&cfg, &x, &ws_bytes));
    ws = xmalloc(ws_bytes);
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif

    t_fwd = (double *)xmalloc((size_t)reps * sizeof(double));
    t_bwd = (double *)xmalloc((size_t)reps * sizeof(double));
    for (r = 0; r < reps; ++r) {
        double t0 = now_seconds();
        CHECK(nsa_ref_forward(&cfg, &x, NULL, o, &saved, ws, ws_bytes));
        t_fwd[r] = now_seconds() - t0;
        t0 = now_seconds();
        CHECK(nsa_ref_backward(&cfg, &x, NULL, d_o, &saved, &grads, ws, ws_bytes));
        t_bwd[r] = now_seconds() - t0;
    }
    flops = nsa_useful_flops(&cfg, &x, saved.sel_idx, saved.sel_count);
    qsort(t_fwd, (size_t)reps, sizeof(double), cmp_double);
    qsort(t_bwd, (size_t)reps, sizeof(double), cmp_double);
    {
        double f = t_fwd[reps / 2], b = t_bwd[reps / 2];
        printf("reference, preset %s, T=%lld H=%d Hkv=%d D=%d %s, %d threads, "
               "median of %d\n", preset, (long long)T, H, Hkv, D,
               dtype == NSA_BF16 ? "bf16" : dtype == NSA_FP16 ? "fp16" : "fp32",
               threads, reps);
        printf("  visible keys per (query, head): cmp %.1f  slc %.1f  win %.1f\n",
               flops.keys[0] / ((double)T * H), flops.keys[1] / ((double)T * H),
               flops.keys[2] / ((double)T * H));
        printf("  %-16s %9s %12s %14s\n", "pass", "seconds", "tokens/s",
               "useful GFLOP/s");
        printf("  %-16s %9.3f %12.0f %14.1f\n", "forward", f, (double)T / f,
               flops.fwd / f * 1e-9);
        printf("  %-16s %9.3f %12.0f %14.1f\n", "forward+backward", f + b,
               (double)T / (f + b), (flops.fwd + flops.bwd) / (f + b) * 1e-9);
    }
    return 0;
}
