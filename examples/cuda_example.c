/* cuda_example.c -- calling the CUDA path from plain C.

   This file never sees CUDA syntax: it includes nsa_cuda.h (plain C
   declarations) and the CUDA runtime's C API for memory, and links one
   object compiled by nvcc from nsa_cuda.cu:

       nvcc -std=c++17 -O3 -c examples/nsa_cuda.cu -o nsa_cuda.o
       gcc -std=c99 -I. -I/usr/local/cuda/include -c examples/cuda_example.c
       nvcc cuda_example.o nsa_cuda.o -o cuda_example      (or: make cuda-example)

   It runs the paper preset forward and backward on two packed sequences
   (bf16, H = 8 query heads over Hkv = 2 kv heads, D = 128) and prints a
   checksum of the output and of dQ. Exits 0 with a note when no GPU is
   present. */
#include "nsa_cuda.h"

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK_CUDA(x)                                                          \
    do {                                                                       \
        cudaError_t e_ = (x);                                                  \
        if (e_ != cudaSuccess) {                                               \
            fprintf(stderr, "CUDA: %s (line %d)\n", cudaGetErrorString(e_),    \
                    __LINE__);                                                 \
            return 1;                                                          \
        }                                                                      \
    } while (0)
#define CHECK_NSA(x)                                                           \
    do {                                                                       \
        nsa_status s_ = (x);                                                   \
        if (s_ != NSA_OK) {                                                    \
            fprintf(stderr, "%s: %s\n", nsa_status_string(s_),                 \
                    nsa_last_error());                                         \
            return 1;                                                          \
        }                                                                      \
    } while (0)

static void *dev_random(size_t n, unsigned *seed)
{
    uint16_t *h = (uint16_t *)malloc(n * 2);
    void *d = NULL;
    size_t i;
    for (i = 0; i < n; ++i) {
        *seed = *seed * 1664525u + 1013904223u;
        h[i] = nsa_f32_to_bf16((float)(*seed >> 8) / 16777216.0f - 0.5f);
    }
    if (cudaMalloc(&d, n * 2) == cudaSuccess) cudaMemcpy(d, h, n * 2, cudaMemcpyHostToDevice);
    free(h);
    return d;
}

int main(void)
{
    const int32_t cu[3] = {0, 700, 2000};
    nsa_config cfg = nsa_config_paper();
    nsa_batch x = {0};
    nsa_sizes sz;
    nsa_saved sv = {0};
    nsa_grads gr = {0};
    int32_t *cu_dev = NULL;
    void *o, *d_o, *ws;
    size_t ws_bytes, i;
    uint16_t *h;
    double sum_o = 0, sum_dq = 0;
    unsigned seed = 1;
    int ndev = 0;

    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: nothing to run\n");
        return 0;
    }
    x.B = 2;
    x.T = 2000;
    x.cu_seqlens = cu;
    x.H = 8;
    x.Hkv = 2;
    x.Dk = x.Dv = 128;
    x.dtype = NSA_BF16;
    CHECK_CUDA(cudaMalloc((void **)&cu_dev, sizeof cu));
    CHECK_CUDA(cudaMemcpy(cu_dev, cu, sizeof cu, cudaMemcpyHostToDevice));
    x.cu_seqlens_dev = cu_dev;
    x.q = dev_random((size_t)2000 * 8 * 128, &seed);
    x.k = dev_random((size_t)2000 * 2 * 128, &seed);
    x.v = dev_random((size_t)2000 * 2 * 128, &seed);
    CHECK_NSA(nsa_sizes_get(&cfg, &x, &sz));
    CHECK_NSA(nsa_cuda_workspace_size(&cfg, &x, &ws_bytes));
    CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
    CHECK_CUDA(cudaMalloc(&o, (size_t)sz.o * 2));
    d_o = dev_random((size_t)sz.o, &seed);
    CHECK_CUDA(cudaMalloc((void **)&sv.lse_cmp, (size_t)sz.lse * 4));
    CHECK_CUDA(cudaMalloc((void **)&sv.lse_slc, (size_t)sz.lse * 4));
    CHECK_CUDA(cudaMalloc((void **)&sv.lse_win, (size_t)sz.lse * 4));
    CHECK_CUDA(cudaMalloc((void **)&sv.sel_idx, (size_t)sz.sel_idx * 4));
    CHECK_CUDA(cudaMalloc((void **)&sv.sel_count, (size_t)sz.sel_count * 4));
    CHECK_CUDA(cudaMalloc(&sv.k_cmp, (size_t)sz.k_cmp * 2));
    CHECK_CUDA(cudaMalloc(&sv.v_cmp, (size_t)sz.v_cmp * 2));
    CHECK_CUDA(cudaMalloc(&gr.dq, (size_t)sz.q * 2));
    CHECK_CUDA(cudaMalloc(&gr.dk, (size_t)sz.k * 2));
    CHECK_CUDA(cudaMalloc(&gr.dv, (size_t)sz.v * 2));

    CHECK_NSA(nsa_cuda_forward(&cfg, &x, NULL, o, &sv, ws, ws_bytes, NULL));
    CHECK_NSA(nsa_cuda_backward(&cfg, &x, NULL, d_o, &sv, &gr, ws, ws_bytes, NULL));
    CHECK_CUDA(cudaDeviceSynchronize());

    h = (uint16_t *)malloc((size_t)sz.q * 2);
    CHECK_CUDA(cudaMemcpy(h, o, (size_t)sz.o * 2, cudaMemcpyDeviceToHost));
    for (i = 0; i < (size_t)sz.o; ++i) sum_o += nsa_bf16_to_f32(h[i]);
    CHECK_CUDA(cudaMemcpy(h, gr.dq, (size_t)sz.q * 2, cudaMemcpyDeviceToHost));
    for (i = 0; i < (size_t)sz.q; ++i) sum_dq += nsa_bf16_to_f32(h[i]);
    printf("nsa_cuda paper preset, T=2000 in 2 sequences: sum(o) = %.6f, "
           "sum(dq) = %.6f\n", sum_o, sum_dq);
    free(h);
    return 0;
}
