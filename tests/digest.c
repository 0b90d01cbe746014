/* digest.c -- one hash per case of every output of the reference.

   Prints "simd N" (whether the reference was built with its vector
   kernels) and then one line per case: its name and a 64-bit FNV-1a hash
   of all bytes the reference wrote (forward: o, lse, selection, K_cmp,
   V_cmp; backward: dq, dk, dv, dgates, dK_cmp, dV_cmp). Inputs come from a
   fixed seed, so two builds of the same reference print the same lines iff
   they compute the same bits. tests/simd_same.sh compares the build with
   vector kernels against the one built with NSA_REF_NO_SIMD (MATH.md
   section 8: the vector kernels change no operation). */
#define NSA_REF_IMPLEMENTATION
#include "../nsa_ref.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static double uniform(double lo, double hi)
{
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * ((double)(z >> 11) * (1.0 / 9007199254740992.0));
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    for (i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001B3ull;
    return h;
}

static void *zalloc(int64_t n, size_t es)
{
    void *p = calloc((size_t)(n > 0 ? n : 1), es);
    if (!p) { printf("out of memory\n"); exit(2); }
    return p;
}

static void *filled(int64_t n, nsa_dtype dt, double scale)
{
    void *p = zalloc(n, nsa_dtype_size(dt));
    int64_t i;
    for (i = 0; i < n; ++i) nsa_store(p, dt, i, (float)uniform(-scale, scale));
    return p;
}

static int one_case(const char *name, nsa_config cfg, nsa_dtype dt, int gates,
                    int Dk, int Dv, double in_scale)
{
    static const int32_t cu[4] = {0, 37, 37, 141};
    const int H = 4, Hkv = 2, B = 3;
    const int64_t T = 141;
    const size_t es = nsa_dtype_size(dt);
    nsa_batch x;
    nsa_sizes sz;
    nsa_saved sv;
    nsa_grads gr;
    size_t wsb;
    void *ws, *o, *g, *dO, *kc, *vc;
    float *lse[3];
    int32_t *si, *sc;
    uint64_t h = 0xcbf29ce484222325ull;
    int i;
    memset(&x, 0, sizeof x);
    x.B = B; x.T = T; x.cu_seqlens = cu;
    x.H = H; x.Hkv = Hkv; x.Dk = Dk; x.Dv = Dv; x.dtype = dt;
    x.q = filled(T * H * Dk, dt, in_scale);
    x.k = filled(T * Hkv * Dk, dt, in_scale);
    x.v = filled(T * Hkv * Dv, dt, 1.0);
    if (nsa_sizes_get(&cfg, &x, &sz) != NSA_OK) {
        printf("%s: %s\n", name, nsa_last_error());
        return 1;
    }
    if (cfg.caller_compressed) {
        x.k_cmp = filled(sz.k_cmp, dt, in_scale);
        x.v_cmp = filled(sz.v_cmp, dt, 1.0);
    }
    if (nsa_ref_workspace_size(&cfg, &x, &wsb) != NSA_OK) {
        printf("%s: %s\n", name, nsa_last_error());
        return 1;
    }
    g = gates ? filled(sz.gates, dt, 1.0) : NULL;
    dO = filled(sz.o, dt, 1.0);
    ws = zalloc((int64_t)wsb, 1);
    o = zalloc(sz.o, es);
    for (i = 0; i < 3; ++i) lse[i] = (float *)zalloc(sz.lse, sizeof(float));
    si = (int32_t *)zalloc(sz.sel_idx, 4);
    sc = (int32_t *)zalloc(sz.sel_count, 4);
    kc = zalloc(sz.k_cmp, es);
    vc = zalloc(sz.v_cmp, es);
    memset(&sv, 0, sizeof sv); /* every field, o_branch (none) too */
    sv.lse_cmp = lse[0]; sv.lse_slc = lse[1]; sv.lse_win = lse[2];
    sv.sel_idx = si; sv.sel_count = sc; sv.k_cmp = kc; sv.v_cmp = vc;
    gr.dq = zalloc(sz.q, es);
    gr.dk = zalloc(sz.k, es);
    gr.dv = zalloc(sz.v, es);
    gr.dgates = zalloc(sz.gates, es);
    gr.dk_cmp = zalloc(sz.k_cmp, es);
    gr.dv_cmp = zalloc(sz.v_cmp, es);
    if (nsa_ref_forward(&cfg, &x, g, o, &sv, ws, wsb) != NSA_OK ||
        nsa_ref_backward(&cfg, &x, g, dO, &sv, &gr, ws, wsb) != NSA_OK) {
        printf("%s: %s\n", name, nsa_last_error());
        return 1;
    }
    h = fnv(h, o, (size_t)sz.o * es);
    for (i = 0; i < 3; ++i) h = fnv(h, lse[i], (size_t)sz.lse * 4);
    h = fnv(h, si, (size_t)sz.sel_idx * 4);
    h = fnv(h, sc, (size_t)sz.sel_count * 4);
    h = fnv(h, kc, (size_t)sz.k_cmp * es);
    h = fnv(h, vc, (size_t)sz.v_cmp * es);
    h = fnv(h, gr.dq, (size_t)sz.q * es);
    h = fnv(h, gr.dk, (size_t)sz.k * es);
    h = fnv(h, gr.dv, (size_t)sz.v * es);
    h = fnv(h, gr.dgates, (size_t)sz.gates * es);
    h = fnv(h, gr.dk_cmp, (size_t)sz.k_cmp * es);
    h = fnv(h, gr.dv_cmp, (size_t)sz.v_cmp * es);
    printf("%-40s %016llx\n", name, (unsigned long long)h);
    free((void *)x.q); free((void *)x.k); free((void *)x.v);
    free((void *)x.k_cmp); free((void *)x.v_cmp);
    free(g); free(dO); free(ws); free(o);
    for (i = 0; i < 3; ++i) free(lse[i]);
    free(si); free(sc); free(kc); free(vc);
    free(gr.dq); free(gr.dk); free(gr.dv); free(gr.dgates);
    free(gr.dk_cmp); free(gr.dv_cmp);
    return 0;
}

int main(void)
{
    static const char *dn[3] = {"bf16", "fp16", "fp32"};
    static const int dims[][2] = {{16, 16}, {24, 40}, {64, 32}};
    nsa_config small = nsa_config_paper(), tile = nsa_config_tile(16, 4);
    int dt, acc, di, bad = 0;
    char name[96];
    small.l = 8; small.d = 4; small.lp = 16; small.n = 4; small.w = 24;
    tile.l = tile.d = 8; tile.n = 3; tile.w = 10;
#ifdef NSA_REF_SIMD
    printf("simd %d\n", NSA_REF_SIMD);
#else
    printf("simd ?\n");
#endif
    for (dt = 0; dt < 3; ++dt)
        for (acc = 0; acc < 2; ++acc)
            for (di = 0; di < 3; ++di) {
                nsa_config c = small;
                c.accum = acc ? NSA_ACCUM_FP64 : NSA_ACCUM_FP32;
                snprintf(name, sizeof name, "small_%s_%s_dk%d_dv%d", dn[dt],
                         acc ? "f64" : "f32", dims[di][0], dims[di][1]);
                bad |= one_case(name, c, (nsa_dtype)dt, di != 1, dims[di][0],
                                dims[di][1], 1.5);
                c = tile;
                c.accum = acc ? NSA_ACCUM_FP64 : NSA_ACCUM_FP32;
                c.caller_compressed = di == 2;
                snprintf(name, sizeof name, "tile_%s_%s_dk%d_dv%d", dn[dt],
                         acc ? "f64" : "f32", dims[di][0], dims[di][1]);
                bad |= one_case(name, c, (nsa_dtype)dt, di == 1, dims[di][0],
                                dims[di][1], 1.5);
            }
    small.accum = NSA_ACCUM_FP32;
    bad |= one_case("small_fp32_sharp", small, NSA_FP32, 1, 32, 32, 7.0);
    return bad;
}
