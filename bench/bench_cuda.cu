/* bench_cuda.cu -- timings of the CUDA path.

   Paper preset (l=32, d=16, l'=64, n=16, w=512), B=1, H=64, Hkv=4, D=128,
   bf16, T = 8K .. 128K: forward per stage (compress, select, each branch as
   its stage function) and total, and forward + backward total; then top-k
   per row of 129,280 columns at 32 and 2048 rows. CUDA events, warm-up,
   median of the runs. Useful TFLOP/s counts the multiply-adds the math
   needs (4 * D per visible key per head for attention, QK^T + PV; 2 * D
   per visible compressed block for the selection scores; backward 2.5x the
   forward attention), not the masked work, and its fraction of the
   tensor-core peak is printed beside it.

   usage: bench_cuda [--tmin T] [--tmax T] [--tmul M] [--reps N] [--csv FILE]
   (T = tmin, tmin*M, ... up to --tmax; tmin defaults to 8192) */
#define NSA_IMPLEMENTATION
#define NSA_CUDA_IMPLEMENTATION
#include "../nsa_cuda.h"

#include <algorithm>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

#define CK(x)                                                                  \
    do {                                                                       \
        cudaError_t e_ = (x);                                                  \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "CUDA: %s line %d\n", cudaGetErrorString(e_), __LINE__); \
            exit(1);                                                           \
        }                                                                      \
    } while (0)
#define CN(x)                                                                  \
    do {                                                                       \
        nsa_status s_ = (x);                                                   \
        if (s_) {                                                              \
            fprintf(stderr, "%s: %s (line %d)\n", nsa_status_string(s_),       \
                    nsa_last_error(), __LINE__);                               \
            exit(1);                                                           \
        }                                                                      \
    } while (0)

static void *drand_bf16(size_t n, uint64_t seed)
{
    std::vector<uint16_t> h(n);
    for (size_t i = 0; i < n; ++i) {
        seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
        h[i] = nsa_f32_to_bf16((float)((double)(seed >> 11) / 9007199254740992.0 * 2.0 - 1.0));
    }
    void *d;
    CK(cudaMalloc(&d, n * 2));
    CK(cudaMemcpy(d, h.data(), n * 2, cudaMemcpyHostToDevice));
    return d;
}

template <typename F> static float median_ms(F f, int reps)
{
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int i = 0; i < 3; ++i) f();
    CK(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int i = 0; i < reps; ++i) {
        CK(cudaEventRecord(a));
        f();
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        float ms;
        CK(cudaEventElapsedTime(&ms, a, b));
        t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return t[t.size() / 2];
}

int main(int argc, char **argv)
{
    int tmin = 8192, tmax = 131072, reps = 20, tmul = 2;
    FILE *csv = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--tmin") && i + 1 < argc) tmin = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tmax") && i + 1 < argc) tmax = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tmul") && i + 1 < argc) tmul = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--csv") && i + 1 < argc) csv = fopen(argv[++i], "w");
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: benchmark skipped\n");
        return 0;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    double peak = strstr(prop.name, "PCIe") ? 756.0 : 989.0; /* dense bf16 TFLOP/s */
    printf("device: %s, tensor-core peak taken as %.0f TFLOP/s (dense bf16)\n", prop.name, peak);
    if (csv) fprintf(csv, "what,T,ms,tflops,frac_peak\n");

    const int H = 64, Hkv = 4, D = 128;
    nsa_config cfg = nsa_config_paper();
    printf("\nNSA paper preset, B=1 H=%d Hkv=%d D=%d bf16, median of %d\n", H, Hkv, D, reps);
    printf("%7s %9s %9s %9s %9s %9s %10s %8s %11s %8s %8s\n", "T", "compress", "select",
           "slc", "cmp", "win", "fwd total", "TFLOP/s", "fwd+bwd", "TFLOP/s", "of peak");
    for (int T = tmin; T <= tmax; T *= tmul) {
        int32_t cu[2] = {0, T};
        int32_t *cud;
        CK(cudaMalloc(&cud, 8));
        CK(cudaMemcpy(cud, cu, 8, cudaMemcpyHostToDevice));
        nsa_batch x;
        memset(&x, 0, sizeof x);
        x.B = 1; x.T = T; x.cu_seqlens = cu; x.cu_seqlens_dev = cud;
        x.H = H; x.Hkv = Hkv; x.Dk = D; x.Dv = D; x.dtype = NSA_BF16;
        x.q = drand_bf16((size_t)T * H * D, 1);
        x.k = drand_bf16((size_t)T * Hkv * D, 2);
        x.v = drand_bf16((size_t)T * Hkv * D, 3);
        nsa_sizes sz;
        CN(nsa_sizes_get(&cfg, &x, &sz));
        size_t wsb;
        CN(nsa_cuda_workspace_size(&cfg, &x, &wsb));
        void *ws, *o, *d_o = drand_bf16((size_t)sz.o, 4), *dq, *dk, *dv;
        CK(cudaMalloc(&ws, wsb));
        CK(cudaMalloc(&o, sz.o * 2));
        CK(cudaMalloc(&dq, sz.q * 2));
        CK(cudaMalloc(&dk, sz.k * 2));
        CK(cudaMalloc(&dv, sz.v * 2));
        nsa_saved sv;
        memset(&sv, 0, sizeof sv);
        CK(cudaMalloc((void **)&sv.lse_cmp, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_slc, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.lse_win, sz.lse * 4));
        CK(cudaMalloc((void **)&sv.sel_idx, sz.sel_idx * 4));
        CK(cudaMalloc((void **)&sv.sel_count, sz.sel_count * 4));
        CK(cudaMalloc(&sv.k_cmp, sz.k_cmp * 2));
        CK(cudaMalloc(&sv.v_cmp, sz.v_cmp * 2));
        float *ob, *lb;
        CK(cudaMalloc((void **)&ob, sz.o * 4));
        CK(cudaMalloc((void **)&lb, sz.lse * 4));
        nsa_grads gr;
        memset(&gr, 0, sizeof gr);
        gr.dq = dq; gr.dk = dk; gr.dv = dv;

        /* useful flops */
        double keys_cmp = 0, keys_slc = 0, keys_win = 0;
        for (int64_t t = 0; t < T; ++t) {
            int64_t nc = t >= cfg.l - 1 ? (t - cfg.l + 1) / cfg.d + 1 : 0;
            int64_t elig = t / cfg.lp + 1;
            int64_t ns = elig < cfg.n ? elig : cfg.n;
            keys_cmp += (double)nc;
            keys_slc += (double)(ns * cfg.lp) - (double)(cfg.lp - 1 - t % cfg.lp);
            keys_win += (double)(t + 1 < cfg.w ? t + 1 : cfg.w);
        }
        double f_att = 4.0 * H * D * (keys_cmp + keys_slc + keys_win);
        double f_sel = 2.0 * H * D * keys_cmp;
        double f_fwd = f_att + f_sel, f_fb = f_fwd + 2.5 * f_att;

        float t_cmpz = median_ms([&] { CN(nsa_cuda_compress(&cfg, &x, sv.k_cmp, sv.v_cmp, ws, wsb, 0)); }, reps);
        float t_sel = median_ms([&] { CN(nsa_cuda_select(&cfg, &x, sv.k_cmp, sv.sel_idx, sv.sel_count, ws, wsb, 0)); }, reps);
        float t_slc = median_ms([&] { CN(nsa_cuda_attend_slc(&cfg, &x, sv.sel_idx, sv.sel_count, ob, lb, ws, wsb, 0)); }, reps);
        float t_cmp = median_ms([&] { CN(nsa_cuda_attend_cmp(&cfg, &x, sv.k_cmp, sv.v_cmp, ob, lb, ws, wsb, 0)); }, reps);
        float t_win = median_ms([&] { CN(nsa_cuda_attend_win(&cfg, &x, ob, lb, ws, wsb, 0)); }, reps);
        float t_fwd = median_ms([&] { CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0)); }, reps);
        float t_fb = median_ms([&] {
            CN(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, wsb, 0));
            CN(nsa_cuda_backward(&cfg, &x, NULL, d_o, &sv, &gr, ws, wsb, 0));
        }, reps);
        double tf_f = f_fwd / (t_fwd * 1e-3) / 1e12, tf_fb = f_fb / (t_fb * 1e-3) / 1e12;
        printf("%7d %9.3f %9.3f %9.3f %9.3f %9.3f %10.3f %8.1f %11.3f %8.1f %7.1f%%\n", T, t_cmpz,
               t_sel, t_slc, t_cmp, t_win, t_fwd, tf_f, t_fb, tf_fb, 100.0 * tf_fb / peak);
        if (csv) {
            fprintf(csv, "nsa_fwd,%d,%.4f,%.2f,%.4f\n", T, t_fwd, tf_f, tf_f / peak);
            fprintf(csv, "nsa_fwd_bwd,%d,%.4f,%.2f,%.4f\n", T, t_fb, tf_fb, tf_fb / peak);
            fprintf(csv, "stage_compress,%d,%.4f,,\n", T, t_cmpz);
            fprintf(csv, "stage_select,%d,%.4f,,\n", T, t_sel);
            fprintf(csv, "stage_slc,%d,%.4f,,\n", T, t_slc);
            fprintf(csv, "stage_cmp,%d,%.4f,,\n", T, t_cmp);
            fprintf(csv, "stage_win,%d,%.4f,,\n", T, t_win);
        }
        void *ps[] = {cud, (void *)x.q, (void *)x.k, (void *)x.v, ws, o, d_o, dq, dk, dv, sv.lse_cmp,
                      sv.lse_slc, sv.lse_win, sv.sel_idx, sv.sel_count, sv.k_cmp, sv.v_cmp, ob, lb};
        for (void *p : ps) cudaFree(p);
    }

    /* top-k per row */
    const int64_t cols = 129280;
    printf("\ntop-k per row, %lld columns, fp32 scores, median of %d\n", (long long)cols, reps);
    printf("%6s %6s %10s %12s\n", "rows", "k", "ms", "GB/s (1 read)");
    for (int rows : {32, 2048})
        for (int k : {64, 2048}) {
            std::vector<float> h((size_t)rows * cols);
            uint64_t s = 12345;
            for (auto &v : h) { s ^= s << 13; s ^= s >> 7; s ^= s << 17; v = (float)((s >> 11) * (1.0 / 9007199254740992.0)); }
            float *d;
            int32_t *oi, *oc;
            CK(cudaMalloc(&d, h.size() * 4));
            CK(cudaMemcpy(d, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
            CK(cudaMalloc(&oi, (size_t)rows * k * 4));
            CK(cudaMalloc(&oc, (size_t)rows * 4));
            float t = median_ms([&] { CN(nsa_cuda_topk_rows(d, rows, cols, cols, NULL, NULL, k, oi, oc, NULL, 0, 0)); }, reps);
            printf("%6d %6d %10.4f %12.1f\n", rows, k, t, rows * cols * 4.0 / (t * 1e-3) / 1e9);
            if (csv) fprintf(csv, "topk_rows%d_k%d,%lld,%.4f,,\n", rows, k, (long long)cols, t);
            cudaFree(d); cudaFree(oi); cudaFree(oc);
        }
    if (csv) fclose(csv);
    return 0;
}
