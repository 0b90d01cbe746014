/* test_cuda.cu -- the CUDA path against the CPU reference.

   Every output and gradient of nsa_cuda_* is compared, on the same inputs,
   with an fp64 run of the reference (NSA_ACCUM_FP64, fp32 storage of the
   same values): the GPU's error must be at most about twice the reference's
   own error in the same storage type (err = ||x - x64|| / ||x64||, plus a
   small floor for fp32 arrays such as lse). Selections are compared with the
   reference's exactly; a differing row counts as a near-tie when the blocks
   swapped score within rounding of each other (reported; never in the case
   whose scores only subnormal probabilities decide), and the attention
   checks then run the reference on the GPU's selection (caller indices), so
   they test attention apart from selection.

   usage: test_cuda [--quick] [--big] [--huge] [--vectors DIR [--vectors-only]] [--topk-only]
                    [--decode-only] [--host-only] [--case TEXT] [--log FILE]
     --quick   a few small cases (for compute-sanitizer)
     --case TEXT   only the main cross-check of the cases whose name
                   contains TEXT (with --vectors DIR, those too)
     --topk-only   only the top-k and block-mask cross-checks
                   (nsa_cuda_topk_rows, nsa_cuda_topk_blocks)
     --decode-only   only the decode cases (one query per sequence), their
                     graph capture and the compression of a growing cache
                     (with --quick: two decode cases and the compression)
     --vectors-only   only the cases of --vectors DIR
     --big     also the >= 256K-token case with T*H*D > 2^31
     --huge    also one sequence of 1,048,576 tokens at H=32, Hkv=8 (the
               same sampled rows; about 30 GB of host and 27 GB of device
               memory)
     --host-only   only the checks of the CUDA path's host logic (the
                   query ranges, run_query_ranges_host), which need no GPU
   The host checks run first in every run; without a CUDA device it then
   prints that the GPU tests were skipped and counts the host checks alone. Inputs are drawn afresh each run (seed.h:
   NSA_TEST_SEED=N repeats one). Last line: "N passed, N failed". */
#define NSA_IMPLEMENTATION
#define NSA_REF_IMPLEMENTATION
#define NSA_CUDA_IMPLEMENTATION
#include "../nsa_ref.h"
#include "../nsa_cuda.h"
/* tools/npy.h sets a variable it never reads (nvcc warns, gcc does not) */
#pragma nv_diag_suppress 550
#include "../tools/vectors.h"
#pragma nv_diag_default 550
#include "seed.h"

#include <cuda_runtime.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <algorithm>
#include <stdarg.h>
#include <vector>

static int g_pass = 0, g_fail = 0;
static FILE *g_log = NULL;
struct Row {
    std::string name;
    int checks, fails;
    double worst_ratio;
    long long sel_rows, sel_diff, sel_ties;
};
static std::vector<Row> g_rows;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    if (g_log) {
        va_start(ap, fmt);
        vfprintf(g_log, fmt, ap);
        va_end(ap);
        fflush(g_log);
    }
}

#define CK(x)                                                                   \
    do {                                                                        \
        cudaError_t e_ = (x);                                                   \
        if (e_ != cudaSuccess) {                                                \
            logf_("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, \
                  __LINE__);                                                    \
            exit(2);                                                            \
        }                                                                       \
    } while (0)

/* ---- random inputs ----------------------------------------------------- */
static uint64_t g_rng; /* xorshift64, seeded in main (seed.h) */
static double urand()
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) * (1.0 / 9007199254740992.0);
}
static double round_to(double x, nsa_dtype dt)
{
    uint16_t h = dt == NSA_BF16 ? nsa_f32_to_bf16((float)x) : nsa_f32_to_fp16((float)x);
    return dt == NSA_BF16 ? nsa_bf16_to_f32(h) : nsa_fp16_to_f32(h);
}
static std::vector<double> rand_vec(int64_t n, double scale, nsa_dtype dt, double lo = -1.0)
{
    std::vector<double> v((size_t)n);
    for (int64_t i = 0; i < n; ++i) v[i] = round_to(scale * (lo + (1.0 - lo) * urand()), dt);
    return v;
}

/* ---- a case -------------------------------------------------------------- */
struct Case {
    std::string name;
    nsa_config cfg;
    std::vector<int32_t> cu, cuq; /* cuq empty: queries = keys */
    int H, Hkv, Dk, Dv;
    nsa_dtype dt;
    bool gates;
    bool caller_sel = false, caller_cmp = false;
    bool caller_mixed = false; /* caller_sel lists out of order, some entries twice */
    /* compressed keys whose selection scores are subnormal (make_inputs),
       their selections compared exactly (check_sel); a row's dS falls on
       four equal keys of norm 100, so its gradients hold the products'
       residual of dS to account (grad_lo in kernels/nsa_attn.cuh) */
    bool subnormal_scores = false;
    double qscale;
};

struct Inputs {
    std::vector<double> q, k, v, g, dO, kc, vc;
    std::vector<int32_t> sel, cnt;
};

struct Result {
    std::vector<double> o, dq, dk, dv, dg, dkc, dvc;
    std::vector<double> lse[3];
    std::vector<int32_t> sel, cnt;
    std::vector<uint16_t> bits; /* dq|dk|dv|dg raw, for determinism */
};

static nsa_batch make_batch(const Case &c, nsa_sizes *sz)
{
    nsa_batch b;
    memset(&b, 0, sizeof b);
    b.B = (int)c.cu.size() - 1;
    b.T = c.cu.back();
    b.cu_seqlens = c.cu.data();
    if (!c.cuq.empty()) {
        b.cu_seqlens_q = c.cuq.data();
        b.TQ = c.cuq.back();
    } else {
        b.TQ = b.T;
    }
    b.H = c.H;
    b.Hkv = c.Hkv;
    b.Dk = c.Dk;
    b.Dv = c.Dv;
    b.dtype = c.dt;
    /* dummy non-NULL pointers for the size query */
    static char dummy[64] __attribute__((aligned(16)));
    b.q = b.k = b.v = dummy;
    b.k_cmp = b.v_cmp = dummy;
    nsa_status st = nsa_sizes_get(&c.cfg, &b, sz);
    if (st) {
        logf_("case %s: nsa_sizes_get: %s\n", c.name.c_str(), nsa_last_error());
        exit(2);
    }
    b.q = b.k = b.v = b.k_cmp = b.v_cmp = NULL;
    return b;
}

static Inputs make_inputs(const Case &c)
{
    nsa_sizes sz;
    make_batch(c, &sz);
    Inputs in;
    in.q = rand_vec(sz.q, c.qscale, c.dt);
    in.k = rand_vec(sz.k, 1.0, c.dt);
    in.v = rand_vec(sz.v, 1.0, c.dt);
    in.dO = rand_vec(sz.o, 1.0, c.dt);
    if (c.gates) in.g = rand_vec(sz.gates, 1.0, c.dt, 0.0);
    if (c.caller_cmp) {
        in.kc = rand_vec(sz.k_cmp, 1.0, c.dt);
        in.vc = rand_vec(sz.v_cmp, 1.0, c.dt);
    }
    if (c.subnormal_scores) {
        /* q = (8, 0, ...) in every row, caller-compressed keys (b, 0, ...):
           the compressed logit is b (sc = 1/8 at Dk = 64). The keys of
           selection block 0 (forced) have b = 100; those of block j > 0
           one of nine levels b = 2 .. 10 in a shuffled order, so every
           other probability is about e^(b - 100) / 4, 2^-143 to 2^-132:
           subnormal, a factor e apart from level to level, and the blocks'
           ranking (an order other than their index) holds only where
           subnormal probabilities are kept, not flushed to zero */
        const int64_t Tc = (int64_t)in.kc.size() / ((int64_t)c.Hkv * c.Dk);
        const int rl = c.cfg.lp / c.cfg.d;
        std::fill(in.q.begin(), in.q.end(), 0.0);
        for (size_t i = 0; i < in.q.size(); i += (size_t)c.Dk) in.q[i] = 8.0;
        std::fill(in.kc.begin(), in.kc.end(), 0.0);
        for (int64_t r = 0; r < Tc; ++r) {
            const int64_t j = r / rl;
            const double b = j == 0 ? 100.0 : 2.0 + (double)((j * 5) % 9);
            for (int h = 0; h < c.Hkv; ++h) in.kc[(size_t)((r * c.Hkv + h) * c.Dk)] = b;
        }
    }
    if (c.caller_sel) {
        /* random valid blocks (ascending, distinct) and an occasional -1 or
           out-of-range entry, which the API ignores */
        in.sel.assign((size_t)sz.sel_idx, -1);
        in.cnt.assign((size_t)sz.sel_count, 0);
        int64_t unit = 0;
        int B = (int)c.cu.size() - 1;
        for (int b = 0; b < B; ++b) {
            int nk = c.cu[b + 1] - c.cu[b];
            int nq = c.cuq.empty() ? nk : c.cuq[b + 1] - c.cuq[b];
            int nb = (nk + c.cfg.lp - 1) / c.cfg.lp;
            int units = (nq + c.cfg.bq - 1) / c.cfg.bq;
            for (int u = 0; u < units; ++u, ++unit)
                for (int h = 0; h < c.Hkv; ++h) {
                    int32_t *row = &in.sel[(size_t)((unit * c.Hkv + h) * c.cfg.n)];
                    int cnt = 0;
                    for (int j = 0; j < nb && cnt < c.cfg.n; ++j)
                        if (urand() < 0.3) row[cnt++] = j;
                    if (c.caller_mixed && cnt > 0) {
                        /* a repeat (it enters the softmax twice: docs/MATH.md
                           section 9), then the entries shuffled */
                        if (cnt < c.cfg.n && urand() < 0.5) {
                            const int twice = row[(int)(urand() * cnt) % cnt];
                            row[cnt++] = twice;
                        }
                        for (int e = cnt - 1; e > 0; --e)
                            std::swap(row[e], row[(int)(urand() * (e + 1)) % (e + 1)]);
                    }
                    if (cnt < c.cfg.n && urand() < 0.3) row[cnt++] = nb + 3;
                    in.cnt[(size_t)(unit * c.Hkv + h)] = cnt;
                }
        }
    }
    return in;
}

static std::vector<uint16_t> to_u16(const std::vector<double> &x, nsa_dtype dt)
{
    std::vector<uint16_t> r(x.size());
    for (size_t i = 0; i < x.size(); ++i)
        r[i] = dt == NSA_BF16 ? nsa_f32_to_bf16((float)x[i]) : nsa_f32_to_fp16((float)x[i]);
    return r;
}
static std::vector<double> from_u16(const uint16_t *p, size_t n, nsa_dtype dt)
{
    std::vector<double> r(n);
    for (size_t i = 0; i < n; ++i) r[i] = dt == NSA_BF16 ? nsa_bf16_to_f32(p[i]) : nsa_fp16_to_f32(p[i]);
    return r;
}

/* Reference run: storage dt (FP32 with accum FP64 for the fp64 truth). */
static Result run_ref(const Case &c, const Inputs &in, nsa_dtype dt, nsa_accum acc,
                      const int32_t *sel, const int32_t *cnt)
{
    nsa_sizes sz;
    nsa_batch b = make_batch(c, &sz);
    nsa_config cfg = c.cfg;
    cfg.accum = acc;
    b.dtype = dt;
    size_t es = nsa_dtype_size(dt);
    auto store = [&](const std::vector<double> &x) {
        void *p = calloc(x.size() + 1, es);
        for (size_t i = 0; i < x.size(); ++i) nsa_store(p, dt, (int64_t)i, (float)x[i]);
        return p;
    };
    void *q = store(in.q), *k = store(in.k), *v = store(in.v), *dO = store(in.dO);
    void *g = c.gates ? store(in.g) : NULL;
    void *kc = c.caller_cmp ? store(in.kc) : NULL, *vc = c.caller_cmp ? store(in.vc) : NULL;
    b.q = q; b.k = k; b.v = v; b.k_cmp = kc; b.v_cmp = vc;
    b.sel_idx = sel;
    b.sel_count = cnt;
    size_t wsb = 0;
    if (nsa_ref_workspace_size(&cfg, &b, &wsb)) { logf_("ref ws: %s\n", nsa_last_error()); exit(2); }
    void *ws = malloc(wsb + 1);
    void *o = calloc((size_t)sz.o + 1, es);
    Result r;
    std::vector<float> lse[3];
    for (int i = 0; i < 3; ++i) lse[i].assign((size_t)sz.lse + 1, 0.f);
    r.sel.assign((size_t)sz.sel_idx + 1, 0);
    r.cnt.assign((size_t)sz.sel_count + 1, 0);
    void *skc = calloc((size_t)sz.k_cmp + 1, es), *svc = calloc((size_t)sz.v_cmp + 1, es);
    nsa_saved sv = {lse[0].data(), lse[1].data(), lse[2].data(), r.sel.data(), r.cnt.data(), skc, svc, NULL};
    nsa_status st = nsa_ref_forward(&cfg, &b, g, o, &sv, ws, wsb);
    if (st) { logf_("ref fwd %s: %s\n", c.name.c_str(), nsa_last_error()); exit(2); }
    void *dq = calloc((size_t)sz.q + 1, es), *dk = calloc((size_t)sz.k + 1, es),
         *dv = calloc((size_t)sz.v + 1, es), *dg = calloc((size_t)sz.gates + 1, es),
         *dkc = calloc((size_t)sz.k_cmp + 1, es), *dvc = calloc((size_t)sz.v_cmp + 1, es);
    nsa_grads gr = {dq, dk, dv, c.gates ? dg : NULL, c.caller_cmp ? dkc : NULL,
                    c.caller_cmp ? dvc : NULL};
    st = nsa_ref_backward(&cfg, &b, g, dO, &sv, &gr, ws, wsb);
    if (st) { logf_("ref bwd %s: %s\n", c.name.c_str(), nsa_last_error()); exit(2); }
    auto load = [&](void *p, int64_t n) {
        std::vector<double> x((size_t)n);
        for (int64_t i = 0; i < n; ++i) x[i] = nsa_load(p, dt, i);
        return x;
    };
    r.o = load(o, sz.o);
    r.dq = load(dq, sz.q);
    r.dk = load(dk, sz.k);
    r.dv = load(dv, sz.v);
    if (c.gates) r.dg = load(dg, sz.gates);
    if (c.caller_cmp) { r.dkc = load(dkc, sz.k_cmp); r.dvc = load(dvc, sz.v_cmp); }
    for (int i = 0; i < 3; ++i) r.lse[i].assign(lse[i].begin(), lse[i].begin() + sz.lse);
    r.sel.resize((size_t)sz.sel_idx);
    r.cnt.resize((size_t)sz.sel_count);
    free(q); free(k); free(v); free(dO); free(g); free(kc); free(vc); free(ws); free(o);
    free(skc); free(svc); free(dq); free(dk); free(dv); free(dg); free(dkc); free(dvc);
    return r;
}

template <typename T> static T *dalloc(size_t n)
{
    T *p = NULL;
    CK(cudaMalloc((void **)&p, (n ? n : 1) * sizeof(T)));
    CK(cudaMemset(p, 0xff, (n ? n : 1) * sizeof(T))); /* poison */
    /* cudaMemset runs on the legacy default stream, which does not order
       work on the cases' non-blocking streams: without this wait, a late
       poison could land on a result already written there */
    CK(cudaDeviceSynchronize());
    return p;
}
template <typename T> static T *dup(const std::vector<T> &x)
{
    T *p = dalloc<T>(x.size());
    if (!x.empty()) CK(cudaMemcpy(p, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
    return p;
}
template <typename T> static std::vector<T> back(const T *p, size_t n)
{
    std::vector<T> x(n);
    if (n) CK(cudaMemcpy(x.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
    return x;
}

/* Captures f's launches on stream s into a graph and replays it twice (the
   second replay finds any state the first one leaves behind). Returns f's
   verdict; the replays have finished when it returns. */
template <typename F> static bool capture_and_replay(cudaStream_t s, F f)
{
    cudaGraph_t g;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    const bool ok = f();
    CK(cudaStreamEndCapture(s, &g));
    if (ok) {
        cudaGraphExec_t ge;
        CK(cudaGraphInstantiate(&ge, g, 0));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaGraphLaunch(ge, s));
        CK(cudaStreamSynchronize(s));
        cudaGraphExecDestroy(ge);
    }
    cudaGraphDestroy(g);
    return ok;
}

struct Gpu {
    nsa_batch b;
    nsa_sizes sz;
    nsa_config cfg;
    uint16_t *q, *k, *v, *g, *dO, *o, *kc, *vc, *dq, *dk, *dv, *dg, *dkc, *dvc, *skc, *svc;
    float *lse[3];
    int32_t *sel, *cnt, *csel, *ccnt, *cu, *cuq;
    void *ws;
    size_t wsb;
    nsa_saved sv;
    nsa_grads gr;
};

static void gpu_setup(const Case &c, const Inputs &in, Gpu &G)
{
    memset(&G, 0, sizeof G);
    G.cfg = c.cfg;
    G.b = make_batch(c, &G.sz);
    G.q = dup(to_u16(in.q, c.dt));
    G.k = dup(to_u16(in.k, c.dt));
    G.v = dup(to_u16(in.v, c.dt));
    G.dO = dup(to_u16(in.dO, c.dt));
    G.g = c.gates ? dup(to_u16(in.g, c.dt)) : NULL;
    G.kc = c.caller_cmp ? dup(to_u16(in.kc, c.dt)) : NULL;
    G.vc = c.caller_cmp ? dup(to_u16(in.vc, c.dt)) : NULL;
    G.cu = dup(c.cu);
    G.cuq = c.cuq.empty() ? NULL : dup(c.cuq);
    G.b.q = G.q; G.b.k = G.k; G.b.v = G.v;
    G.b.k_cmp = G.kc; G.b.v_cmp = G.vc;
    G.b.cu_seqlens_dev = G.cu;
    G.b.cu_seqlens_q_dev = G.cuq;
    if (c.caller_sel) {
        G.csel = dup(in.sel);
        G.ccnt = dup(in.cnt);
        G.b.sel_idx = G.csel;
        G.b.sel_count = G.ccnt;
    }
    G.o = dalloc<uint16_t>(G.sz.o);
    for (int i = 0; i < 3; ++i) G.lse[i] = dalloc<float>(G.sz.lse);
    G.sel = dalloc<int32_t>(G.sz.sel_idx);
    G.cnt = dalloc<int32_t>(G.sz.sel_count);
    G.skc = dalloc<uint16_t>(G.sz.k_cmp);
    G.svc = dalloc<uint16_t>(G.sz.v_cmp);
    G.dq = dalloc<uint16_t>(G.sz.q);
    G.dk = dalloc<uint16_t>(G.sz.k);
    G.dv = dalloc<uint16_t>(G.sz.v);
    G.dg = dalloc<uint16_t>(G.sz.gates);
    G.dkc = dalloc<uint16_t>(G.sz.k_cmp);
    G.dvc = dalloc<uint16_t>(G.sz.v_cmp);
    nsa_status st = nsa_cuda_workspace_size(&G.cfg, &G.b, &G.wsb);
    if (st) { logf_("cuda ws %s: %s\n", c.name.c_str(), nsa_last_error()); exit(2); }
    CK(cudaMalloc(&G.ws, G.wsb ? G.wsb : 1));
    CK(cudaMemset(G.ws, 0xff, G.wsb ? G.wsb : 1));
    CK(cudaDeviceSynchronize()); /* as in dalloc: before any non-blocking stream */
    G.sv = {G.lse[0], G.lse[1], G.lse[2], G.sel, G.cnt, G.skc, G.svc, NULL};
    G.gr = {G.dq, G.dk, G.dv, c.gates ? G.dg : NULL, c.caller_cmp ? G.dkc : NULL,
            c.caller_cmp ? G.dvc : NULL};
}

static void gpu_free(Gpu &G)
{
    void *ps[] = {G.q, G.k, G.v, G.g, G.dO, G.o, G.kc, G.vc, G.dq, G.dk, G.dv, G.dg, G.dkc,
                  G.dvc, G.skc, G.svc, G.lse[0], G.lse[1], G.lse[2], G.sel, G.cnt, G.csel,
                  G.ccnt, G.cu, G.cuq, G.ws};
    for (void *p : ps) if (p) cudaFree(p);
}

static nsa_status gpu_fwd_bwd(Gpu &G, cudaStream_t s)
{
    nsa_status st = nsa_cuda_forward(&G.cfg, &G.b, G.g, G.o, &G.sv, G.ws, G.wsb, s);
    if (st) return st;
    return nsa_cuda_backward(&G.cfg, &G.b, G.g, G.dO, &G.sv, &G.gr, G.ws, G.wsb, s);
}

static Result gpu_result(const Case &c, Gpu &G)
{
    Result r;
    const nsa_sizes &sz = G.sz;
    auto ld = [&](const uint16_t *p, int64_t n) {
        std::vector<uint16_t> h = back(p, (size_t)n);
        return from_u16(h.data(), h.size(), c.dt);
    };
    r.o = ld(G.o, sz.o);
    r.dq = ld(G.dq, sz.q);
    r.dk = ld(G.dk, sz.k);
    r.dv = ld(G.dv, sz.v);
    if (c.gates) r.dg = ld(G.dg, sz.gates);
    if (c.caller_cmp) { r.dkc = ld(G.dkc, sz.k_cmp); r.dvc = ld(G.dvc, sz.v_cmp); }
    for (int i = 0; i < 3; ++i) {
        if (!(c.cfg.branches & (1u << i))) continue;
        std::vector<float> l = back(G.lse[i], (size_t)sz.lse);
        r.lse[i].assign(l.begin(), l.end());
    }
    if (c.cfg.branches & NSA_BRANCH_SLC) {
        r.sel = back(G.sel, (size_t)sz.sel_idx);
        r.cnt = back(G.cnt, (size_t)sz.sel_count);
    }
    std::vector<uint16_t> a = back(G.dq, (size_t)sz.q), bb = back(G.dk, (size_t)sz.k),
                          cc = back(G.dv, (size_t)sz.v), dd = back(G.dg, (size_t)sz.gates);
    r.bits = a;
    r.bits.insert(r.bits.end(), bb.begin(), bb.end());
    r.bits.insert(r.bits.end(), cc.begin(), cc.end());
    if (c.gates) r.bits.insert(r.bits.end(), dd.begin(), dd.end());
    return r;
}

/* Errors of x against the truth t over t's finite entries: the relative L2
   error of the whole array, and the largest |x - t| relative to max |t| (the
   per-element bound, so that a few bad rows cannot hide in the norm). Both
   are -1 if an infinity differs or a finite truth has a non-finite value. */
struct ArrayErr {
    double rel, max;
};
static ArrayErr array_err(const std::vector<double> &x, const std::vector<double> &t)
{
    ArrayErr e = {-1.0, -1.0};
    double num = 0, den = 0, mnum = 0, mden = 0;
    if (x.size() != t.size()) return e;
    for (size_t i = 0; i < t.size(); ++i) {
        if (!std::isfinite(t[i])) {
            if (x[i] != t[i]) return e;
            continue;
        }
        if (!std::isfinite(x[i])) return e;
        const double d = x[i] - t[i];
        num += d * d;
        den += t[i] * t[i];
        mnum = std::max(mnum, fabs(d));
        mden = std::max(mden, fabs(t[i]));
    }
    e.rel = den == 0 ? (num == 0 ? 0 : sqrt(num)) : sqrt(num / den);
    e.max = mden == 0 ? mnum : mnum / mden;
    return e;
}

static void check(Row &row, const char *what, const std::vector<double> &gpu,
                  const std::vector<double> &ref, const std::vector<double> &truth,
                  double floor_)
{
    const ArrayErr g = array_err(gpu, truth), r = array_err(ref, truth);
    const double eg = g.rel, er = r.rel, mg = g.max, mr = r.max;
    /* whole array: twice the reference's error; every element: four times
       the reference's worst element (both round once to the storage type) */
    bool ok = eg >= 0 && er >= 0 && eg <= 2.0 * er + floor_ && mg >= 0 && mr >= 0 &&
              mg <= 4.0 * mr + floor_;
    double ratio = er > 0 ? eg / er : (eg > 0 ? 99.0 : 0.0);
    if (eg < 0) ratio = 1e9;
    row.checks++;
    if (!ok) row.fails++;
    if (ratio > row.worst_ratio) row.worst_ratio = ratio;
    (ok ? g_pass : g_fail)++;
    logf_("  %-6s %-8s gpu %.3e  ref %.3e  ratio %.2f  max elem gpu %.3e ref %.3e\n",
          ok ? "ok" : "FAIL", what, eg, er, ratio, mg, mr);
}

/* Selections: exact, except rows where the swapped blocks tie within
   rounding in the reference's own block scores. */
static void check_sel(Row &row, const Case &c, const Result &gpu, const Result &ref,
                      const std::vector<float> &scores, int64_t maxblk)
{
    int n = c.cfg.n;
    int64_t rows = (int64_t)gpu.cnt.size();
    long long diff = 0, ties = 0;
    /* Both sides score from the same inputs and the same K_cmp (the stage
       check holds the GPU's compression bitwise equal to the reference's),
       so a swap can only come from fp32 rounding in a different order: the
       logit's dot product (~Dk 2^-24 of sum |q k|, below 1e-5 absolute for
       these inputs, hence ~1e-5 relative on exp(s - lse)) and the sums over
       heads and overlaps. 4e-5 of the row's largest score covers that and
       nothing coarser (the contract: no loose relative threshold). */
    double tol = 4e-5;
    for (int64_t r = 0; r < rows; ++r) {
        bool same = gpu.cnt[r] == ref.cnt[r] &&
                    !memcmp(&gpu.sel[r * n], &ref.sel[r * n], n * sizeof(int32_t));
        if (same) continue;
        ++diff;
        /* near tie: every block in one set and not the other scores within
           tol * max|score| of the lowest score the reference took */
        const float *s = &scores[(size_t)(r * maxblk)];
        double mx = 0;
        for (int64_t j = 0; j < maxblk; ++j) if (std::isfinite(s[j])) mx = fmax(mx, fabs(s[j]));
        double lo = 1e300, hi = -1e300;
        bool tie = gpu.cnt[r] == ref.cnt[r];
        for (int e = 0; e < n && tie; ++e) {
            int a = gpu.sel[r * n + e], b = ref.sel[r * n + e];
            if (a >= 0 && a < maxblk) { lo = fmin(lo, s[a]); hi = fmax(hi, s[a]); }
            if (b >= 0 && b < maxblk) { lo = fmin(lo, s[b]); hi = fmax(hi, s[b]); }
        }
        /* compare only the differing blocks */
        std::vector<int> ga(gpu.sel.begin() + r * n, gpu.sel.begin() + r * n + gpu.cnt[r]);
        std::vector<int> rb(ref.sel.begin() + r * n, ref.sel.begin() + r * n + ref.cnt[r]);
        double smin = 1e300, smax = -1e300;
        for (int a : ga) if (std::find(rb.begin(), rb.end(), a) == rb.end()) { smin = fmin(smin, s[a]); smax = fmax(smax, s[a]); }
        for (int a : rb) if (std::find(ga.begin(), ga.end(), a) == ga.end()) { smin = fmin(smin, s[a]); smax = fmax(smax, s[a]); }
        if (tie && smax - smin <= tol * fmax(mx, 1e-30)) ++ties;
    }
    /* subnormal scores: a factor e apart, never near ties, so exact */
    bool ok = c.subnormal_scores ? diff == 0 : diff == ties;
    row.sel_rows += rows;
    row.sel_diff += diff;
    row.sel_ties += ties;
    row.checks++;
    if (!ok) row.fails++;
    (ok ? g_pass : g_fail)++;
    logf_("  %-6s sel      %lld rows, %lld differ, %lld of them near-ties\n", ok ? "ok" : "FAIL",
          (long long)rows, diff, ties);
}

static std::vector<float> ref_block_scores(const Case &c, const Inputs &in)
{
    /* block scores of the reference in storage dt, on its own K_cmp */
    nsa_sizes sz;
    nsa_batch b = make_batch(c, &sz);
    nsa_config cfg = c.cfg;
    std::vector<uint16_t> q = to_u16(in.q, c.dt), k = to_u16(in.k, c.dt), v = to_u16(in.v, c.dt);
    b.q = q.data(); b.k = k.data(); b.v = v.data();
    std::vector<uint16_t> kc((size_t)sz.k_cmp + 1), vc((size_t)sz.v_cmp + 1);
    if (c.caller_cmp) { kc = to_u16(in.kc, c.dt); vc = to_u16(in.vc, c.dt); kc.push_back(0); vc.push_back(0); }
    else if (nsa_ref_compress(&cfg, &b, kc.data(), vc.data())) { logf_("ref compress: %s\n", nsa_last_error()); exit(2); }
    b.k_cmp = kc.data(); b.v_cmp = vc.data();
    size_t wsb = 0;
    nsa_ref_workspace_size(&cfg, &b, &wsb);
    std::vector<char> ws(wsb + 1);
    std::vector<float> s((size_t)sz.block_mask + 1);
    if (nsa_ref_block_scores(&cfg, &b, kc.data(), s.data(), ws.data(), wsb)) {
        logf_("ref block_scores: %s\n", nsa_last_error());
        exit(2);
    }
    return s;
}

static Row &new_row(const std::string &name)
{
    g_rows.push_back(Row{name, 0, 0, 0.0, 0, 0, 0});
    return g_rows.back();
}

/* The gradients of a GPU run against the reference's (rd) and the fp64
   truth (r64); tag follows each check's name. */
static void check_grads(Row &row, const Case &c, const Result &g, const Result &rd,
                        const Result &r64, const char *tag)
{
    const double fl = 1e-6; /* floor for storage-dtype arrays */
    auto one = [&](const char *name, const std::vector<double> &x, const std::vector<double> &r,
                   const std::vector<double> &t) {
        check(row, (std::string(name) + tag).c_str(), x, r, t, fl);
    };
    one("dq", g.dq, rd.dq, r64.dq);
    one("dk", g.dk, rd.dk, r64.dk);
    one("dv", g.dv, rd.dv, r64.dv);
    if (c.gates) one("dgates", g.dg, rd.dg, r64.dg);
    if (c.caller_cmp) {
        one("dk_cmp", g.dkc, rd.dkc, r64.dkc);
        one("dv_cmp", g.dvc, rd.dvc, r64.dvc);
    }
}

static void tally(Row &row, bool ok, const char *what, const char *detail)
{
    row.checks++;
    if (!ok) row.fails++;
    (ok ? g_pass : g_fail)++;
    logf_("  %-6s %s: %s\n", ok ? "ok" : "FAIL", what, detail);
}

/* The case again with the forward's branch outputs kept for the backward
   (nsa_saved.o_branch): the forward's results do not change, every element
   of an on branch's plane is written and an off branch's is not touched,
   and the gradients meet the same bounds against the reference. */
static void check_saved_outputs(Row &row, const Case &c, Gpu &G, const Result &gr,
                                const Result &rd, const Result &r64)
{
    const int64_t plane = G.sz.o;
    float *ob = dalloc<float>((size_t)(3 * plane));
    CK(cudaMemset(ob, 0xff, (size_t)(3 * plane) * sizeof(float))); /* NaN poison */
    G.sv.o_branch = ob;
    nsa_status st = gpu_fwd_bwd(G, 0);
    CK(cudaDeviceSynchronize());
    G.sv.o_branch = NULL;
    if (st) {
        tally(row, false, "saved outputs", nsa_last_error());
        cudaFree(ob);
        return;
    }
    Result g = gpu_result(c, G);
    bool same = g.o == gr.o && g.sel == gr.sel && g.cnt == gr.cnt;
    for (int i = 0; i < 3; ++i) same = same && g.lse[i] == gr.lse[i];
    tally(row, same, "saved outputs", same ? "forward bitwise the same"
                                           : "forward results DIFFERENT");
    std::vector<uint32_t> bits(back((const uint32_t *)(const void *)ob, (size_t)(3 * plane)));
    int64_t unwritten = 0, touched = 0;
    for (int i = 0; i < 3; ++i) {
        const bool on = (c.cfg.branches & (1u << i)) != 0;
        for (int64_t e = 0; e < plane; ++e) {
            const bool poison = bits[(size_t)(i * plane + e)] == 0xffffffffu;
            if (on && poison) ++unwritten;
            if (!on && !poison) ++touched;
        }
    }
    char msg[128];
    snprintf(msg, sizeof msg, "%lld elements of on branches unwritten, %lld of off branches "
             "touched", (long long)unwritten, (long long)touched);
    tally(row, unwritten == 0 && touched == 0, "saved outputs", msg);
    check_grads(row, c, g, rd, r64, "|o_c");
    cudaFree(ob);
}

/* The main cross-check of one case. */
static void run_case(const Case &c, bool determinism = true)
{
    logf_("== %s\n", c.name.c_str());
    Row &row = new_row(c.name);
    Inputs in = make_inputs(c);
    Gpu G;
    gpu_setup(c, in, G);
    nsa_status st = gpu_fwd_bwd(G, 0);
    CK(cudaDeviceSynchronize());
    if (st) {
        logf_("  FAIL   gpu: %s: %s\n", nsa_status_string(st), nsa_last_error());
        row.checks++; row.fails++; g_fail++;
        gpu_free(G);
        return;
    }
    Result gr = gpu_result(c, G);
    const bool slc = (c.cfg.branches & NSA_BRANCH_SLC) != 0;
    const int32_t *sel = NULL, *cnt = NULL;
    if (slc && !c.caller_sel) {
        Result own = run_ref(c, in, c.dt, NSA_ACCUM_FP32, NULL, NULL);
        std::vector<float> sc = ref_block_scores(c, in);
        check_sel(row, c, gr, own, sc, G.sz.max_slc_blocks);
    }
    if (slc) { sel = gr.sel.data(); cnt = gr.cnt.data(); }
    Result rd = run_ref(c, in, c.dt, NSA_ACCUM_FP32, sel, cnt);
    Result r64 = run_ref(c, in, NSA_FP32, NSA_ACCUM_FP64, sel, cnt);
    const double fl = 1e-6; /* floor for storage-dtype arrays */
    check(row, "o", gr.o, rd.o, r64.o, fl);
    const char *ln[3] = {"lse_cmp", "lse_slc", "lse_win"};
    for (int i = 0; i < 3; ++i)
        if (c.cfg.branches & (1u << i)) {
            std::vector<double> a(rd.lse[i].begin(), rd.lse[i].end());
            check(row, ln[i], gr.lse[i], a, r64.lse[i], 2e-5);
        }
    check_grads(row, c, gr, rd, r64, "");
    if (determinism) {
        st = nsa_cuda_backward(&G.cfg, &G.b, G.g, G.dO, &G.sv, &G.gr, G.ws, G.wsb, 0);
        CK(cudaDeviceSynchronize());
        Result g2 = gpu_result(c, G);
        bool same = st == NSA_OK && g2.bits == gr.bits;
        row.checks++;
        if (!same) row.fails++;
        (same ? g_pass : g_fail)++;
        logf_("  %-6s backward twice: bitwise %s\n", same ? "ok" : "FAIL",
              same ? "equal" : "DIFFERENT");
    }
    check_saved_outputs(row, c, G, gr, rd, r64);
    gpu_free(G);
}

/* Keys past a query's last visible one never reach it, even where they are
   not finite (contract, settled rules: a NaN shows in the output of every
   query that reads it). The kernels stage whole chunks of keys, and a
   chunk cut at a tile's last visible key holds the tensor's next rows (the
   sequence's later keys, or the next sequence's first ones), which must
   not enter any sum. NaN in V and +inf in K at the first key of sequence 1
   and at key 400 of sequence 2: sequence 0 (whose last chunks run into
   sequence 1) and sequence 2's queries before the bad key stay finite and
   meet the usual bounds. With the selected branch alone that is every
   query before key 400 (its units are single queries). The compressed and
   window passes mask a tile's keys per row but multiply the tile's chunks
   whole, so a non-finite value inside a tile's own span reaches that
   tile's earlier rows (tiles of 32 tokens here, G = 4): with every branch
   on, the queries of the tiles before the bad key's, those before 384.
   The backward's dQ passes walk the same tiles and chunks, so the same
   rows' dq and dg meet the usual bounds too. */
static void run_future_nonfinite(unsigned branches, int limit)
{
    nsa_config cfg = nsa_config_paper();
    cfg.branches = branches;
    Case c;
    c.name = std::string(branches == NSA_BRANCH_SLC ? "slc" : "all branches") +
             ": non-finite keys past a query";
    c.cfg = cfg; c.cu = {0, 300, 1000, 1700}; c.H = 8; c.Hkv = 2; c.Dk = 128; c.Dv = 128;
    c.dt = NSA_BF16; c.gates = true; c.qscale = 2.0;
    logf_("== %s\n", c.name.c_str());
    Row &row = new_row(c.name);
    Inputs in = make_inputs(c);
    const int bad[2] = {300, 1000 + 400};
    for (int r : bad)
        for (int h = 0; h < c.Hkv; ++h) {
            in.k[(size_t)((r * c.Hkv + h) * c.Dk)] = INFINITY;
            for (int d = 0; d < c.Dv; ++d) in.v[(size_t)((r * c.Hkv + h) * c.Dv + d)] = NAN;
        }
    Gpu G;
    gpu_setup(c, in, G);
    nsa_status st = gpu_fwd_bwd(G, 0);
    CK(cudaDeviceSynchronize());
    if (st) {
        tally(row, false, "forward and backward", nsa_last_error());
        gpu_free(G);
        return;
    }
    Result gr = gpu_result(c, G);
    Result rd = run_ref(c, in, c.dt, NSA_ACCUM_FP32, gr.sel.data(), gr.cnt.data());
    Result r64 = run_ref(c, in, NSA_FP32, NSA_ACCUM_FP64, gr.sel.data(), gr.cnt.data());
    /* sequence 0, sequence 2's first `limit` queries, of a query-side array
       of w values a query */
    auto rows = [&](const std::vector<double> &x, int w) {
        std::vector<double> y(x.begin(), x.begin() + 300 * (size_t)w);
        y.insert(y.end(), x.begin() + 1000 * (size_t)w, x.begin() + (1000 + limit) * (size_t)w);
        return y;
    };
    const int wo = c.H * c.Dv, wq = c.H * c.Dk, wg = c.H * 3;
    bool finite = true;
    for (const std::vector<double> &t : {rows(r64.o, wo), rows(r64.dq, wq), rows(r64.dg, wg)})
        for (double x : t) finite = finite && std::isfinite(x);
    tally(row, finite, "truth", finite ? "finite where the bad keys are out of sight"
                                       : "NOT finite: the test's inputs are wrong");
    check(row, "o", rows(gr.o, wo), rows(rd.o, wo), rows(r64.o, wo), 1e-6);
    check(row, "dq", rows(gr.dq, wq), rows(rd.dq, wq), rows(r64.dq, wq), 1e-6);
    check(row, "dgates", rows(gr.dg, wg), rows(rd.dg, wg), rows(r64.dg, wg), 1e-6);
    gpu_free(G);
}

/* ---- stage functions vs the reference ------------------------------------ */
static void run_stages(const Case &c)
{
    logf_("== stages: %s\n", c.name.c_str());
    Row &row = new_row("stages " + c.name);
    Inputs in = make_inputs(c);
    Gpu G;
    gpu_setup(c, in, G);
    nsa_sizes sz = G.sz;
    /* reference stages in storage dt and fp64 */
    auto refstages = [&](nsa_dtype dt, nsa_accum acc, std::vector<double> &kc,
                         std::vector<double> *o, std::vector<double> *l,
                         std::vector<float> &scores, std::vector<int32_t> &sel,
                         std::vector<int32_t> &cnt, std::vector<uint8_t> &mask,
                         std::vector<double> &comb) {
        nsa_batch b = G.b;
        nsa_config cfg = c.cfg;
        cfg.accum = acc;
        b.dtype = dt;
        size_t es = nsa_dtype_size(dt);
        auto store = [&](const std::vector<double> &x) {
            std::vector<char> p((x.size() + 1) * es);
            for (size_t i = 0; i < x.size(); ++i) nsa_store(p.data(), dt, (int64_t)i, (float)x[i]);
            return p;
        };
        std::vector<char> q = store(in.q), k = store(in.k), v = store(in.v), g = store(in.g);
        b.q = q.data(); b.k = k.data(); b.v = v.data();
        b.cu_seqlens_dev = b.cu_seqlens_q_dev = NULL;
        b.sel_idx = b.sel_count = NULL;
        std::vector<char> kcs((size_t)(sz.k_cmp + 1) * es), vcs((size_t)(sz.v_cmp + 1) * es);
        nsa_ref_compress(&cfg, &b, kcs.data(), vcs.data());
        b.k_cmp = kcs.data(); b.v_cmp = vcs.data();
        kc.resize((size_t)sz.k_cmp);
        for (int64_t i = 0; i < sz.k_cmp; ++i) kc[i] = nsa_load(kcs.data(), dt, i);
        size_t wsb = 0;
        nsa_ref_workspace_size(&cfg, &b, &wsb);
        std::vector<char> ws(wsb + 1);
        scores.assign((size_t)sz.block_mask + 1, 0.f);
        nsa_ref_block_scores(&cfg, &b, kcs.data(), scores.data(), ws.data(), wsb);
        sel.assign((size_t)sz.sel_idx + 1, 0);
        cnt.assign((size_t)sz.sel_count + 1, 0);
        nsa_ref_select(&cfg, &b, kcs.data(), sel.data(), cnt.data(), ws.data(), wsb);
        mask.assign((size_t)sz.block_mask + 1, 0);
        nsa_ref_block_mask(&cfg, &b, sel.data(), cnt.data(), mask.data());
        std::vector<float> ob[3], lb[3];
        for (int i = 0; i < 3; ++i) { ob[i].assign((size_t)sz.o + 1, 0.f); lb[i].assign((size_t)sz.lse + 1, 0.f); }
        nsa_ref_attend_cmp(&cfg, &b, kcs.data(), vcs.data(), ob[0].data(), lb[0].data());
        nsa_ref_attend_slc(&cfg, &b, sel.data(), cnt.data(), ob[1].data(), lb[1].data());
        nsa_ref_attend_win(&cfg, &b, ob[2].data(), lb[2].data());
        std::vector<char> oc((size_t)(sz.o + 1) * es);
        nsa_ref_combine(&cfg, &b, c.gates ? g.data() : NULL, ob[0].data(), ob[1].data(), ob[2].data(), oc.data());
        comb.resize((size_t)sz.o);
        for (int64_t i = 0; i < sz.o; ++i) comb[i] = nsa_load(oc.data(), dt, i);
        for (int i = 0; i < 3; ++i) {
            o[i].assign(ob[i].begin(), ob[i].begin() + sz.o);
            l[i].assign(lb[i].begin(), lb[i].begin() + sz.lse);
        }
    };
    std::vector<double> kcd, kc64, od[3], o64[3], ld[3], l64[3], combd, comb64;
    std::vector<float> scd, sc64;
    std::vector<int32_t> seld, cntd, sel64, cnt64;
    std::vector<uint8_t> maskd, mask64;
    refstages(c.dt, NSA_ACCUM_FP32, kcd, od, ld, scd, seld, cntd, maskd, combd);
    refstages(NSA_FP32, NSA_ACCUM_FP64, kc64, o64, l64, sc64, sel64, cnt64, mask64, comb64);
    cudaStream_t s = 0;
    bool okall = true;
    auto fail = [&](const char *w, nsa_status st) {
        if (st) { logf_("  FAIL   %s: %s\n", w, nsa_last_error()); okall = false; }
    };
    fail("compress", nsa_cuda_compress(&G.cfg, &G.b, G.skc, G.svc, G.ws, G.wsb, s));
    CK(cudaDeviceSynchronize());
    {
        std::vector<uint16_t> h = back(G.skc, (size_t)sz.k_cmp);
        std::vector<uint16_t> e = to_u16(kcd, c.dt);
        bool same = h == e;
        row.checks++; if (!same) row.fails++; (same ? g_pass : g_fail)++;
        logf_("  %-6s compress bitwise equal to the reference\n", same ? "ok" : "FAIL");
    }
    float *dsc = dalloc<float>((size_t)sz.block_mask);
    fail("block_scores", nsa_cuda_block_scores(&G.cfg, &G.b, G.skc, dsc, G.ws, G.wsb, s));
    fail("select", nsa_cuda_select(&G.cfg, &G.b, G.skc, G.sel, G.cnt, G.ws, G.wsb, s));
    uint8_t *dmask = dalloc<uint8_t>((size_t)sz.block_mask);
    int32_t *rsel = dup(seld), *rcnt = dup(cntd);
    fail("block_mask", nsa_cuda_block_mask(&G.cfg, &G.b, rsel, rcnt, dmask, G.ws, G.wsb, s));
    float *ob[3], *lb[3];
    for (int i = 0; i < 3; ++i) { ob[i] = dalloc<float>((size_t)sz.o); lb[i] = dalloc<float>((size_t)sz.lse); }
    fail("attend_cmp", nsa_cuda_attend_cmp(&G.cfg, &G.b, G.skc, G.svc, ob[0], lb[0], G.ws, G.wsb, s));
    fail("attend_slc", nsa_cuda_attend_slc(&G.cfg, &G.b, rsel, rcnt, ob[1], lb[1], G.ws, G.wsb, s));
    fail("attend_win", nsa_cuda_attend_win(&G.cfg, &G.b, ob[2], lb[2], G.ws, G.wsb, s));
    fail("combine", nsa_cuda_combine(&G.cfg, &G.b, G.g, ob[0], ob[1], ob[2], G.o, s));
    CK(cudaDeviceSynchronize());
    row.checks++; if (!okall) row.fails++; (okall ? g_pass : g_fail)++;
    {
        std::vector<float> h = back(dsc, (size_t)sz.block_mask);
        std::vector<double> a(h.begin(), h.end()), b(scd.begin(), scd.begin() + sz.block_mask),
            t(sc64.begin(), sc64.begin() + sz.block_mask);
        check(row, "scores", a, b, t, 2e-5);
        Result gres, rres;
        gres.sel = back(G.sel, (size_t)sz.sel_idx);
        gres.cnt = back(G.cnt, (size_t)sz.sel_count);
        rres.sel.assign(seld.begin(), seld.begin() + sz.sel_idx);
        rres.cnt.assign(cntd.begin(), cntd.begin() + sz.sel_count);
        check_sel(row, c, gres, rres, scd, sz.max_slc_blocks);
        std::vector<uint8_t> m = back(dmask, (size_t)sz.block_mask);
        bool same = !memcmp(m.data(), maskd.data(), (size_t)sz.block_mask);
        row.checks++; if (!same) row.fails++; (same ? g_pass : g_fail)++;
        logf_("  %-6s block_mask equal\n", same ? "ok" : "FAIL");
    }
    /* fp32 branch outputs: the GPU multiplies P (rounded to the storage type)
       by V on tensor cores, as FlashAttention does, so its error floor is one
       rounding of the storage type (2^-8 bf16, 2^-11 fp16); the reference
       keeps P in fp32. */
    const double pfloor = c.dt == NSA_BF16 ? 3.9e-3 : 4.9e-4;
    const char *bn[3] = {"o_cmp", "o_slc", "o_win"};
    for (int i = 0; i < 3; ++i) {
        std::vector<float> h = back(ob[i], (size_t)sz.o), l = back(lb[i], (size_t)sz.lse);
        check(row, bn[i], std::vector<double>(h.begin(), h.end()), od[i], o64[i], pfloor);
        check(row, "lse", std::vector<double>(l.begin(), l.end()), ld[i], l64[i], 2e-5);
    }
    {
        std::vector<uint16_t> h = back(G.o, (size_t)sz.o);
        check(row, "combine", from_u16(h.data(), h.size(), c.dt), combd, comb64, 1e-6);
    }
    cudaFree(dsc); cudaFree(dmask); cudaFree(rsel); cudaFree(rcnt);
    for (int i = 0; i < 3; ++i) { cudaFree(ob[i]); cudaFree(lb[i]); }
    gpu_free(G);
}

/* ---- CUDA graph: captured forward + backward replays to the same bits --- */
static void run_graph(const Case &c)
{
    logf_("== graph capture: %s\n", c.name.c_str());
    Row &row = new_row("graph " + c.name);
    Inputs in = make_inputs(c);
    Gpu G;
    gpu_setup(c, in, G);
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    nsa_status st = gpu_fwd_bwd(G, s);
    CK(cudaStreamSynchronize(s));
    Result direct = gpu_result(c, G);
    std::vector<uint16_t> o1 = back(G.o, (size_t)G.sz.o);
    CK(cudaMemset(G.o, 0, (size_t)G.sz.o * 2));
    CK(cudaMemset(G.dq, 0, (size_t)G.sz.q * 2));
    CK(cudaMemset(G.dk, 0, (size_t)G.sz.k * 2));
    CK(cudaDeviceSynchronize()); /* the legacy stream's memsets, before s replays */
    const bool captured = capture_and_replay(s, [&] { return gpu_fwd_bwd(G, s) == NSA_OK; });
    bool ok = st == NSA_OK && captured;
    if (!ok) logf_("  capture failed: %s\n", nsa_last_error());
    if (ok) {
        Result rep = gpu_result(c, G);
        std::vector<uint16_t> o2 = back(G.o, (size_t)G.sz.o);
        ok = rep.bits == direct.bits && o1 == o2;
    }
    row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
    logf_("  %-6s graph replay bitwise equal to direct calls\n", ok ? "ok" : "FAIL");
    cudaStreamDestroy(s);
    gpu_free(G);
}

/* ---- top-k per row: exact against nsa_ref_topk_rows ---------------------
   Every output index and count is compared with the reference's, after
   poisoning them (0xa5 bytes: neither an index nor the -1 padding), so an
   element the GPU leaves unwritten fails. The shapes reach both ways the
   rows are spread (kernels/nsa_topk.cuh: up to NSA_TOPK_SPLIT_ROWS rows of
   2 * NSA_TOPK_TILE columns or more are split into slices and merged; more
   rows take one CTA each), and rows whose every column beats the floor, so
   that the candidate list is cut whenever it fills (ascending scores), or
   whose columns after the first cut never do (descending: on a long row
   the guessed first floor then fails, and the row is read again). Rows of
   spread scores (uniform, signed, ascending, all equal: their keys differ
   in the column) place their kk best by the counting select; rows whose
   best keys bunch in a few bins (NaN and +-inf, many tied levels) fall
   back to the radix cut and the bitonic sort, in the merge after the
   counting select tried them in shared memory. */
enum TopkFill { TK_UNIFORM, TK_SIGNED, TK_EQUAL, TK_SPECIAL, TK_FEW_LEVELS, TK_MANY_LEVELS,
                TK_SPARSE_SPECIAL, TK_ASCENDING, TK_DESCENDING, TK_MOSTLY_NAN };

static float topk_value(TopkFill f, int64_t i)
{
    switch (f) {
    case TK_UNIFORM: return (float)urand();                      /* torch.rand-like */
    case TK_SIGNED: return (float)(urand() * 2.0 - 1.0);
    case TK_EQUAL: return 0.5f;                                   /* every key ties */
    case TK_SPECIAL: {                                            /* NaN, +-0, +-inf */
        static const float v[8] = {NAN, -0.0f, 0.0f, INFINITY, -INFINITY, 1.0f, -1.0f, -NAN};
        return urand() < 0.5 ? v[(i * 7 + (int64_t)(urand() * 8)) & 7] : (float)(urand() - 0.5);
    }
    case TK_FEW_LEVELS: return (float)(int)(urand() * 5);          /* ties at the k-th place */
    case TK_MANY_LEVELS: return (float)(int)(urand() * 3000) / 64.f;
    case TK_SPARSE_SPECIAL: { /* a few NaN, +-0, +-inf: block means stay mostly finite */
        static const float v[6] = {NAN, -0.0f, 0.0f, INFINITY, -INFINITY, -NAN};
        return urand() < 0.03 ? v[(int)(urand() * 6) % 6] : (float)(urand() - 0.5);
    }
    case TK_MOSTLY_NAN: /* floors among the NaN and -inf keys (9 in 10 NaN) */
        return urand() < 0.9 ? NAN : urand() < 0.5 ? -INFINITY : (float)(urand() - 0.5);
    case TK_ASCENDING: return (float)i;   /* exact: every test array has < 2^24 scores */
    case TK_DESCENDING: return -(float)i;
    }
    return 0.f;
}

struct TopkCase {
    std::string name;
    int64_t rows, cols, stride;
    int k;
    TopkFill fill;
    bool ranges; /* random ranges: short, empty, reversed, outside the row */
};

static bool topk_run(const TopkCase &t, cudaStream_t s, const float *dsc, const int32_t *drs,
                     const int32_t *dre, int32_t *di, int32_t *dc, void *ws, size_t wsb)
{
    nsa_status st = nsa_cuda_topk_rows(dsc, t.rows, t.cols, t.stride, drs, dre, t.k, di, dc, ws,
                                       wsb, (nsa_cuda_stream)s);
    if (st) logf_("  nsa_cuda_topk_rows: %s\n", nsa_last_error());
    return st == NSA_OK;
}

/* Random row ranges around a width (k columns for top-k, n blocks' columns
   for block masks), by row modulo 8: the whole row (clamped from outside),
   width / 2 columns, empty, reversed (empty), outside the row (empty),
   long, and random starts with up to 2 * width columns. */
static void random_ranges(int64_t rows, int64_t cols, int64_t width, std::vector<int32_t> &rs,
                          std::vector<int32_t> &re)
{
    for (int64_t r = 0; r < rows; ++r) {
        const int32_t c = (int32_t)cols;
        int32_t a = (int32_t)(urand() * c), b = a + (int32_t)(urand() * 2.0 * width);
        switch (r % 8) {
        case 0: a = -5; b = c + 7; break;                /* whole row, clamped */
        case 1: b = a + (int32_t)(width / 2); break;     /* fewer than width */
        case 2: b = a; break;                            /* empty */
        case 3: std::swap(a, b); a += 1; break;          /* reversed: empty */
        case 4: a = c + 3; b = c + 9; break;             /* outside: empty */
        case 5: b = (int32_t)(a + urand() * (c - a)) + 1; break; /* long */
        default: break;
        }
        rs.push_back(a);
        re.push_back(b);
    }
}

static void topk_case(Row &row, const TopkCase &t, bool graph)
{
    std::vector<float> sc((size_t)(t.rows * t.stride));
    for (size_t i = 0; i < sc.size(); ++i) sc[i] = topk_value(t.fill, (int64_t)i);
    std::vector<int32_t> rs, re;
    if (t.ranges) random_ranges(t.rows, t.cols, t.k, rs, re);
    std::vector<int32_t> ri((size_t)(t.rows * t.k)), rc((size_t)t.rows);
    size_t rwsb;
    if (nsa_ref_topk_workspace_size(t.rows, t.cols, t.k, &rwsb)) {
        logf_("ref topk workspace: %s\n", nsa_last_error());
        exit(2);
    }
    std::vector<unsigned char> rws(rwsb);
    if (nsa_ref_topk_rows(sc.data(), t.rows, t.cols, t.stride, t.ranges ? rs.data() : NULL,
                          t.ranges ? re.data() : NULL, t.k, ri.data(), rc.data(), rws.data(),
                          rwsb)) {
        logf_("ref topk: %s\n", nsa_last_error());
        exit(2);
    }
    float *dsc = dup(sc);
    int32_t *drs = t.ranges ? dup(rs) : NULL, *dre = t.ranges ? dup(re) : NULL;
    int32_t *di = dalloc<int32_t>(ri.size()), *dc = dalloc<int32_t>(rc.size());
    size_t wsb = 0;
    bool ok = nsa_cuda_topk_workspace_size(t.rows, t.cols, t.k, &wsb) == NSA_OK;
    void *ws = NULL;
    if (wsb) CK(cudaMalloc(&ws, wsb));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int rep = 0; rep < (graph ? 2 : 1) && ok; ++rep) {
        CK(cudaMemsetAsync(di, 0xa5, ri.size() * 4 + (ri.empty() ? 4 : 0), s));
        CK(cudaMemsetAsync(dc, 0xa5, rc.size() * 4, s));
        /* rep 1: captured into a graph and replayed, the same results */
        auto run = [&] { return topk_run(t, s, dsc, drs, dre, di, dc, ws, wsb); };
        ok = rep == 0 ? run() : capture_and_replay(s, run);
        CK(cudaStreamSynchronize(s));
        CK(cudaGetLastError());
        std::vector<int32_t> gi = back(di, ri.size()), gc = back(dc, rc.size());
        int64_t bad_rows = 0, first = -1;
        for (int64_t r = 0; r < t.rows; ++r) {
            bool same = gc[r] == rc[r] &&
                        !memcmp(&gi[(size_t)(r * t.k)], &ri[(size_t)(r * t.k)], (size_t)t.k * 4);
            if (!same && first < 0) first = r;
            bad_rows += !same;
        }
        if (bad_rows) {
            logf_("  %lld rows differ; first %lld: count gpu %d ref %d, idx[0..3] gpu %d %d %d ref %d %d %d\n",
                  (long long)bad_rows, (long long)first, gc[first], rc[first],
                  t.k > 0 ? gi[first * t.k] : 0, t.k > 1 ? gi[first * t.k + 1] : 0,
                  t.k > 2 ? gi[first * t.k + 2] : 0, t.k > 0 ? ri[first * t.k] : 0,
                  t.k > 1 ? ri[first * t.k + 1] : 0, t.k > 2 ? ri[first * t.k + 2] : 0);
            ok = false;
        }
    }
    row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
    logf_("  %-6s %s%s\n", ok ? "ok" : "FAIL", t.name.c_str(), graph ? " (and graph replay)" : "");
    cudaStreamDestroy(s);
    cudaFree(dsc); cudaFree(drs); cudaFree(dre); cudaFree(di); cudaFree(dc); cudaFree(ws);
}

static void run_topk(bool quick)
{
    logf_("== top-k per row against the reference (exact)\n");
    Row &row = new_row("topk rows");
    const int64_t C = 129280;
    std::vector<TopkCase> ts;
    auto add = [&](const char *what, int64_t rows, int64_t cols, int64_t stride, int k, TopkFill f,
                   bool ranges) {
        char name[160];
        snprintf(name, sizeof name, "topk_%s_r%lld_c%lld_k%d", what, (long long)rows,
                 (long long)cols, k);
        ts.push_back(TopkCase{name, rows, cols, stride, k, f, ranges});
    };
    /* split path (few long rows) and one-CTA path (many rows) */
    add("split_random", 4, 20000, 20000, 100, TK_SIGNED, false);
    add("row_random", 140, 3000, 3003, 100, TK_SIGNED, true);
    add("split_all_equal_rows_take_lowest_indices", 3, 9000, 9000, 700, TK_EQUAL, false);
    add("row_ascending_cuts_whenever_full_short", 130, 20000, 20000, 300, TK_ASCENDING, false);
    if (!quick) {
        for (int k : {64, 1024, 2048, 4096}) add("split_uniform", 32, C, C, k, TK_UNIFORM, false);
        for (int k : {64, 1024, 2048}) add("row_uniform", 256, C, C, k, TK_UNIFORM, false);
        add("split_signed_strided", 32, C, C + 3, 1024, TK_SIGNED, false);
        add("row_signed_strided", 200, 20000, 20001, 2048, TK_SIGNED, false);
        add("split_all_equal_rows_take_lowest_indices", 8, 50000, 50000, 1024, TK_EQUAL, false);
        add("row_all_equal_rows_take_lowest_indices", 200, 20000, 20000, 1024, TK_EQUAL, false);
        add("split_nan_lowest_neg_zero_ties_pos_zero", 16, 30000, 30000, 2048, TK_SPECIAL, false);
        /* the stream compares scores with its floor's score: floors at -inf
           and among NaN keys, where every score ties or is NaN */
        add("split_floor_at_minus_inf_and_nan", 32, C, C, 2048, TK_MOSTLY_NAN, false);
        add("row_floor_among_nan_keys", 140, 40000, 40000, 4096, TK_MOSTLY_NAN, false);
        add("row_nan_lowest_neg_zero_ties_pos_zero", 150, 9000, 9000, 4096, TK_SPECIAL, false);
        add("split_ties_at_kth_place_do_not_over_select", 8, 40000, 40000, 1000, TK_FEW_LEVELS, false);
        add("row_ties_at_kth_place_do_not_over_select", 150, 40000, 40000, 1000, TK_FEW_LEVELS, false);
        add("split_ties_within_pivot_digit", 32, C, C, 2048, TK_MANY_LEVELS, false);
        add("row_ties_within_pivot_digit", 150, 40000, 40000, 2048, TK_MANY_LEVELS, false);
        add("split_short_bad_ranges_k_above_width", 32, C, C, 1024, TK_SIGNED, true);
        add("row_short_bad_ranges_k_above_width", 300, 9000, 9005, 512, TK_SIGNED, true);
        add("row_k_larger_than_cols", 140, 1000, 1000, 2048, TK_SIGNED, false);
        add("split_k1", 8, 70000, 70000, 1, TK_SIGNED, true);
        add("row_k1", 140, 5000, 5000, 1, TK_SPECIAL, false);
        add("one_row_split", 1, C, C, 2048, TK_UNIFORM, false);
        add("split_ascending_cuts_whenever_full", 4, C, C, 4096, TK_ASCENDING, false);
        add("row_ascending_cuts_whenever_full", 140, 40000, 40000, 4096, TK_ASCENDING, false);
        add("split_descending_never_cuts_after_the_first", 4, C, C, 2048, TK_DESCENDING, false);
        /* slices of ~8 tiles: the guessed first floor fails, each is read again */
        add("split_descending_guess_fails_reads_again", 32, C, C, 2048, TK_DESCENDING, false);
        add("row_descending_never_cuts_after_the_first", 140, 40000, 40001, 4096, TK_DESCENDING, true);
        add("row_one_tile_and_one_column", 140, 4097, 4097, 4096, TK_SIGNED, false);
        add("row_two_tiles_and_one_column", 140, 8193, 8193, 2049, TK_MANY_LEVELS, false);
    }
    for (size_t i = 0; i < ts.size(); ++i) topk_case(row, ts[i], i == 0 || i == 1);
    /* validation: host-side, the reference's statuses */
    size_t wsb = 0;
    struct E { const char *what; nsa_status want, got; };
    std::vector<E> es;
    es.push_back({"k above 4096", NSA_ERR_UNSUPPORTED, nsa_cuda_topk_workspace_size(32, C, 4097, &wsb)});
    es.push_back({"negative cols", NSA_ERR_INVALID_BATCH, nsa_cuda_topk_workspace_size(32, -1, 8, &wsb)});
    nsa_cuda_topk_workspace_size(32, C, 64, &wsb);
    int32_t *di = dalloc<int32_t>(32 * 64);
    float *dsc = dalloc<float>(32 * C);
    es.push_back({"split rows need a workspace", NSA_ERR_NULL_POINTER,
                  nsa_cuda_topk_rows(dsc, 32, C, C, NULL, NULL, 64, di, NULL, NULL, wsb, 0)});
    void *ws;
    CK(cudaMalloc(&ws, wsb + 1));
    es.push_back({"workspace small", NSA_ERR_WORKSPACE,
                  nsa_cuda_topk_rows(dsc, 32, C, C, NULL, NULL, 64, di, NULL, ws, wsb - 1, 0)});
    es.push_back({"workspace not 16-byte aligned", NSA_ERR_UNSUPPORTED,
                  nsa_cuda_topk_rows(dsc, 32, C, C, NULL, NULL, 64, di, NULL,
                                     (char *)ws + 8, wsb, 0)});
    es.push_back({"row_stride < cols", NSA_ERR_INVALID_BATCH,
                  nsa_cuda_topk_rows(dsc, 32, C, C - 1, NULL, NULL, 64, di, NULL, ws, wsb, 0)});
    CK(cudaDeviceSynchronize());
    for (auto &e : es) {
        bool ok = e.want == e.got;
        row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
        logf_("  %-6s topk %-28s -> %s\n", ok ? "ok" : "FAIL", e.what, nsa_status_string(e.got));
    }
    cudaFree(di); cudaFree(dsc); cudaFree(ws);
}

/* ---- top-n blocks per row: exact against nsa_ref_topk_blocks -------------
   Every mask byte and count is compared with the reference's, after
   poisoning them (0xa5: neither 0 nor 1, nor a count), so a byte the GPU
   leaves unwritten fails. Blocks of 1, 7, 16, 64 columns and more (a block
   wider than the staged tile of kernels/nsa_topk.cuh, one block wider than
   the row), rows 1, 3, 32, 300, n from 0 to above the number of blocks;
   unaligned strides and ranges cut blocks at both ends (their means count
   only the columns in range). Rows of equal scores make the mask kernel's
   radix select decide every digit, down to the block index. The
   benchmark's n = 64 also on rows in ascending and descending order, of
   few distinct levels (ties at the cut), of many levels and mostly NaN,
   and of equal scores. */
struct BlocksCase {
    std::string name;
    int64_t rows, cols, stride, block;
    int n;
    TopkFill fill;
    bool ranges, counts; /* counts: pass out_count (else NULL) */
};

static int64_t blocks_of(int64_t cols, int64_t block)
{
    return cols / block + (cols % block != 0);
}

static bool blocks_run(const BlocksCase &t, cudaStream_t s, const float *dsc, const int32_t *drs,
                       const int32_t *dre, uint8_t *dm, int32_t *dc, void *ws, size_t wsb)
{
    nsa_status st = nsa_cuda_topk_blocks(dsc, t.rows, t.cols, t.stride, drs, dre, t.block, t.n, dm,
                                         t.counts ? dc : NULL, ws, wsb, (nsa_cuda_stream)s);
    if (st) logf_("  nsa_cuda_topk_blocks: %s\n", nsa_last_error());
    return st == NSA_OK;
}

/* The first differing row, said in full: its range, its eligible blocks,
   the first differing block with its mean in the reference's order and the
   GPU's score of it (the workspace holds [rows][nblocks] block scores when
   the call needed them). */
static void blocks_report(const BlocksCase &t, const std::vector<float> &sc,
                          const std::vector<int32_t> &rs, const std::vector<int32_t> &re,
                          int64_t r, const std::vector<uint8_t> &gm, const std::vector<int32_t> &gc,
                          const std::vector<uint8_t> &rm, const std::vector<int32_t> &rc,
                          const void *ws, size_t wsb)
{
    const int64_t nb = blocks_of(t.cols, t.block);
    int64_t a, e, j = 0;
    nsa_topk_range(t.ranges ? rs[(size_t)r] : 0, t.ranges ? re[(size_t)r] : t.cols, t.cols, &a, &e);
    const int64_t j0 = a / t.block, j1 = e > a ? (e - 1) / t.block + 1 : j0;
    logf_("  first differing row %lld: range [%lld, %lld), eligible blocks [%lld, %lld), n %d, "
          "count gpu %d ref %d\n", (long long)r, (long long)a, (long long)e, (long long)j0,
          (long long)j1, t.n, t.counts ? gc[(size_t)r] : -1, t.counts ? rc[(size_t)r] : -1);
    while (j < nb && gm[(size_t)(r * nb + j)] == rm[(size_t)(r * nb + j)]) ++j;
    if (j == nb) return;
    logf_("  block %lld: mask gpu %d ref %d", (long long)j, gm[(size_t)(r * nb + j)],
          rm[(size_t)(r * nb + j)]);
    if (j >= j0 && j < j1) {
        const int64_t c0 = std::max(j * t.block, a), c1 = std::min((j + 1) * t.block, e);
        float sum = 0.0f;
        for (int64_t c = c0; c < c1; ++c) sum += sc[(size_t)(r * t.stride + c)];
        logf_(", mean %.9g over [%lld, %lld)", (double)(sum / (float)(c1 - c0)), (long long)c0,
              (long long)c1);
        if (ws && wsb >= (size_t)(t.rows * nb) * 4) {
            float g;
            CK(cudaMemcpy(&g, (const float *)ws + r * nb + j, 4, cudaMemcpyDeviceToHost));
            logf_(", gpu block score %.9g", (double)g);
        }
    }
    logf_("\n");
}

static void blocks_case(Row &row, const BlocksCase &t, bool graph)
{
    const int64_t nb = blocks_of(t.cols, t.block);
    std::vector<float> sc((size_t)(t.rows * t.stride));
    for (size_t i = 0; i < sc.size(); ++i) sc[i] = topk_value(t.fill, (int64_t)i);
    std::vector<int32_t> rs, re;
    if (t.ranges) random_ranges(t.rows, t.cols, std::min(t.cols, (int64_t)t.n * t.block), rs, re);
    std::vector<uint8_t> rm((size_t)(t.rows * nb), 0xa5);
    std::vector<int32_t> rc((size_t)t.rows, -7);
    size_t rwsb;
    if (nsa_ref_topk_blocks_workspace_size(t.rows, t.cols, t.block, t.n, &rwsb)) {
        logf_("ref topk_blocks workspace: %s\n", nsa_last_error());
        exit(2);
    }
    std::vector<unsigned char> rws(rwsb);
    if (nsa_ref_topk_blocks(sc.data(), t.rows, t.cols, t.stride, t.ranges ? rs.data() : NULL,
                            t.ranges ? re.data() : NULL, t.block, t.n, rm.data(),
                            t.counts ? rc.data() : NULL, rws.data(), rwsb)) {
        logf_("ref topk_blocks: %s\n", nsa_last_error());
        exit(2);
    }
    float *dsc = dup(sc);
    int32_t *drs = t.ranges ? dup(rs) : NULL, *dre = t.ranges ? dup(re) : NULL;
    uint8_t *dm = dalloc<uint8_t>(rm.size());
    int32_t *dc = dalloc<int32_t>(rc.size());
    size_t wsb = 0;
    bool ok = nsa_cuda_topk_blocks_workspace_size(t.rows, t.cols, t.block, t.n, &wsb) == NSA_OK;
    void *ws = NULL;
    if (wsb) CK(cudaMalloc(&ws, wsb));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    for (int rep = 0; rep < (graph ? 2 : 1) && ok; ++rep) {
        CK(cudaMemsetAsync(dm, 0xa5, rm.size() + (rm.empty() ? 1 : 0), s));
        CK(cudaMemsetAsync(dc, 0xa5, rc.size() * 4 + (rc.empty() ? 4 : 0), s));
        /* rep 1: captured into a graph and replayed, the same results */
        auto run = [&] { return blocks_run(t, s, dsc, drs, dre, dm, dc, ws, wsb); };
        ok = rep == 0 ? run() : capture_and_replay(s, run);
        CK(cudaStreamSynchronize(s));
        CK(cudaGetLastError());
        std::vector<uint8_t> gm = back(dm, rm.size());
        std::vector<int32_t> gc = back(dc, rc.size());
        int64_t bad_rows = 0, first = -1;
        for (int64_t r = 0; r < t.rows; ++r) {
            /* without out_count the GPU must leave the counts alone */
            const bool count_ok = t.counts ? gc[(size_t)r] == rc[(size_t)r]
                                           : gc[(size_t)r] == (int32_t)0xa5a5a5a5;
            const bool same = count_ok && (nb == 0 || !memcmp(&gm[(size_t)(r * nb)],
                                                              &rm[(size_t)(r * nb)], (size_t)nb));
            if (!same && first < 0) first = r;
            bad_rows += !same;
        }
        if (bad_rows) {
            logf_("  %lld of %lld rows differ%s\n", (long long)bad_rows, (long long)t.rows,
                  rep ? " (graph replay)" : "");
            blocks_report(t, sc, rs, re, first, gm, gc, rm, rc, ws, wsb);
            ok = false;
        }
    }
    row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
    logf_("  %-6s %s%s\n", ok ? "ok" : "FAIL", t.name.c_str(), graph ? " (and graph replay)" : "");
    cudaStreamDestroy(s);
    cudaFree(dsc); cudaFree(drs); cudaFree(dre); cudaFree(dm); cudaFree(dc); cudaFree(ws);
}

/* Bad input: the GPU's status is the reference's on the same arguments
   (host buffers for the reference, device buffers for the GPU), and the
   one expected; the two limits of the CUDA path alone are checked too. */
static void blocks_errors(Row &row)
{
    const int64_t R = 32, C = 129280, B = 16, NB = C / B;
    const int N = 64;
    std::vector<float> hsc((size_t)(R * C), 0.5f);
    std::vector<uint8_t> hm((size_t)(R * NB));
    size_t rwsb = 0, wsb = 0;
    if (nsa_ref_topk_blocks_workspace_size(R, C, B, N, &rwsb) ||
        nsa_cuda_topk_blocks_workspace_size(R, C, B, N, &wsb)) {
        logf_("topk_blocks workspace sizes: %s\n", nsa_last_error());
        exit(2);
    }
    std::vector<unsigned char> rws(rwsb);
    float *dsc = dalloc<float>((size_t)(R * C));
    uint8_t *dm = dalloc<uint8_t>((size_t)(R * NB));
    char *dws;
    CK(cudaMalloc((void **)&dws, wsb + 16));
    struct A {
        const char *what;
        nsa_status want;
        int64_t rows, cols, stride, block;
        int n;
        bool no_scores, no_mask, no_ws, ws_short;
    };
    const int64_t big = (int64_t)1 << 31, huge_stride = INT64_MAX / 2 + 1;
    const A as[] = {
        {"negative rows", NSA_ERR_INVALID_BATCH, -1, C, C, B, N, 0, 0, 0, 0},
        {"negative cols", NSA_ERR_INVALID_BATCH, R, -1, C, B, N, 0, 0, 0, 0},
        {"cols 2^31", NSA_ERR_INVALID_BATCH, 1, big, big, B, N, 0, 0, 0, 0},
        {"negative n", NSA_ERR_INVALID_BATCH, R, C, C, B, -1, 0, 0, 0, 0},
        {"block 0", NSA_ERR_INVALID_BATCH, R, C, C, 0, N, 0, 0, 0, 0},
        {"negative block", NSA_ERR_INVALID_BATCH, R, C, C, -16, N, 0, 0, 0, 0},
        {"row_stride < cols", NSA_ERR_INVALID_BATCH, R, C, C - 1, B, N, 0, 0, 0, 0},
        {"rows * row_stride overflows", NSA_ERR_OVERFLOW, 3, C, huge_stride, B, N, 0, 0, 0, 0},
        {"scores NULL", NSA_ERR_NULL_POINTER, R, C, C, B, N, 1, 0, 0, 0},
        {"mask NULL", NSA_ERR_NULL_POINTER, R, C, C, B, N, 0, 1, 0, 0},
        {"workspace NULL", NSA_ERR_NULL_POINTER, R, C, C, B, N, 0, 0, 1, 0},
        {"workspace a byte short", NSA_ERR_WORKSPACE, R, C, C, B, N, 0, 0, 0, 1},
    };
    struct E { std::string what; nsa_status want, gpu, ref; std::string msg; };
    std::vector<E> es;
    for (const A &x : as) {
        const nsa_status ref = nsa_ref_topk_blocks(
            x.no_scores ? NULL : hsc.data(), x.rows, x.cols, x.stride, NULL, NULL, x.block, x.n,
            x.no_mask ? NULL : hm.data(), NULL, x.no_ws ? NULL : rws.data(),
            x.ws_short ? rwsb - 1 : rwsb);
        const nsa_status gpu = nsa_cuda_topk_blocks(
            x.no_scores ? NULL : dsc, x.rows, x.cols, x.stride, NULL, NULL, x.block, x.n,
            x.no_mask ? NULL : dm, NULL, x.no_ws ? NULL : dws, x.ws_short ? wsb - 1 : wsb, 0);
        es.push_back({x.what, x.want, gpu, ref, nsa_last_error()});
    }
    size_t b = 0;
    nsa_status gpu = nsa_cuda_topk_blocks_workspace_size(R, C, B, N, NULL);
    es.push_back({"size: bytes NULL", NSA_ERR_NULL_POINTER, gpu,
                  nsa_ref_topk_blocks_workspace_size(R, C, B, N, NULL), ""});
    gpu = nsa_cuda_topk_blocks_workspace_size(R, C, 0, N, &b);
    es.push_back({"size: block 0", NSA_ERR_INVALID_BATCH, gpu,
                  nsa_ref_topk_blocks_workspace_size(R, C, 0, N, &b), ""});
    gpu = nsa_cuda_topk_blocks_workspace_size(R, C, B, -1, &b);
    es.push_back({"size: negative n", NSA_ERR_INVALID_BATCH, gpu,
                  nsa_ref_topk_blocks_workspace_size(R, C, B, -1, &b), ""});
    /* the CUDA path's own limits (ref: the status it would have to give) */
    gpu = nsa_cuda_topk_blocks_workspace_size(big, C, B, N, &b);
    es.push_back({"rows 2^31 (CUDA limit)", NSA_ERR_UNSUPPORTED, gpu, NSA_ERR_UNSUPPORTED, ""});
    gpu = nsa_cuda_topk_blocks(dsc, R, C, C, NULL, NULL, B, N, dm, NULL, dws + 4, wsb, 0);
    es.push_back({"workspace not 16-byte aligned (CUDA)", NSA_ERR_UNSUPPORTED, gpu,
                  NSA_ERR_UNSUPPORTED, nsa_last_error()});
    CK(cudaDeviceSynchronize());
    for (auto &e : es) {
        const bool ok = e.gpu == e.want && e.ref == e.want;
        row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
        logf_("  %-6s topk_blocks %-38s -> gpu %s, ref %s%s%s\n", ok ? "ok" : "FAIL",
              e.what.c_str(), nsa_status_string(e.gpu), nsa_status_string(e.ref),
              e.msg.empty() ? "" : ": ", e.msg.c_str());
    }
    cudaFree(dsc); cudaFree(dm); cudaFree(dws);
}

static void run_topk_blocks(bool quick)
{
    logf_("== top-n blocks per row against the reference (exact mask and counts)\n");
    Row &row = new_row("topk blocks");
    const int64_t C = 129280;
    std::vector<BlocksCase> ts;
    auto add = [&](const char *what, int64_t rows, int64_t cols, int64_t stride, int64_t block,
                   int n, TopkFill f, bool ranges, bool counts = true) {
        char name[200];
        snprintf(name, sizeof name, "topk_blocks_%s_r%lld_c%lld_b%lld_n%d", what, (long long)rows,
                 (long long)cols, (long long)block, n);
        ts.push_back(BlocksCase{name, rows, cols, stride, block, n, f, ranges, counts});
    };
    add("signed_bad_ranges", 3, 20000, 20000, 16, 64, TK_SIGNED, true);
    add("nan_inf_zero_unaligned_stride", 40, 3000, 3003, 7, 50, TK_SPECIAL, true);
    add("equal_scores_take_lowest_blocks_to_the_last_digit", 2, 12000, 12000, 1, 100, TK_EQUAL,
        false);
    add("n_above_blocks_no_workspace", 3, 5000, 5001, 16, 400, TK_SIGNED, true);
    add("n60_ties_at_the_cut", 32, 800, 803, 1, 60, TK_FEW_LEVELS, true);
    if (!quick) {
        /* the benchmark's shape */
        add("uniform", 32, C, C, 16, 64, TK_UNIFORM, false);
        add("uniform", 3, C, C, 32, 2048, TK_UNIFORM, false);
        /* blocks 1, 7, 16, 64 x rows 1, 3, 32, 300: n from 1 to past the
           number of blocks, every fill, ranges on every other case */
        const int64_t blocks[4] = {1, 7, 16, 64}, rows[4] = {1, 3, 32, 300};
        const TopkFill fills[6] = {TK_SIGNED, TK_SPARSE_SPECIAL, TK_FEW_LEVELS, TK_MANY_LEVELS,
                                   TK_SPECIAL, TK_UNIFORM};
        int i = 0;
        for (int64_t b : blocks)
            for (int64_t r : rows) {
                const int64_t cols = r == 300 ? 9001 : r == 32 ? 40000 + 3 * b : 50021;
                const int64_t nb = blocks_of(cols, b);
                const int64_t ns[5] = {1, nb / 10 + 1, nb / 2, nb - 1, nb + 5};
                const int n = (int)ns[i % 5];
                char what[64];
                snprintf(what, sizeof what, "grid%d", i);
                add(what, r, cols, cols + (i % 3), b, n, fills[i % 6], i % 2 == 0);
                ++i;
            }
        add("sparse_nan_inf_ranges", 300, 20000, 20003, 16, 100, TK_SPARSE_SPECIAL, true);
        add("equal_scores_take_lowest_blocks", 32, 50000, 50000, 16, 1000, TK_EQUAL, false);
        add("equal_scores_to_the_last_digit_ranges", 3, 100000, 100001, 7, 1000, TK_EQUAL, true);
        add("ties_at_nth_place_do_not_over_select", 32, 40000, 40000, 7, 333, TK_FEW_LEVELS, true);
        add("ties_within_pivot_digit", 32, C, C, 16, 2048, TK_MANY_LEVELS, false);
        add("wide_blocks", 3, C, C + 1, 1000, 13, TK_SIGNED, true);
        add("blocks_wider_than_a_tile", 3, C, C, 5000, 5, TK_SIGNED, true);
        add("one_block_wider_than_the_row", 3, 1000, 1000, 4096, 1, TK_SIGNED, true);
        add("n_0", 32, 5000, 5000, 16, 0, TK_SIGNED, true);
        add("n_equals_blocks_minus_1", 32, 5000, 5000, 16, 312, TK_SIGNED, false);
        add("n_equals_blocks", 32, 5000, 5000, 16, 313, TK_SIGNED, false);
        add("cols_0", 3, 0, 0, 16, 4, TK_SIGNED, false);
        add("no_out_count", 32, 9000, 9000, 16, 50, TK_SIGNED, true, false);
        add("one_row", 1, C, C, 16, 4096, TK_UNIFORM, true);
        add("n64_ascending", 32, C, C, 16, 64, TK_ASCENDING, false);
        add("n50_descending_ranges", 3, C, C, 16, 50, TK_DESCENDING, true);
        add("n64_many_levels", 32, C, C, 16, 64, TK_MANY_LEVELS, false);
        add("n64_mostly_nan", 32, 8000, 8000, 1, 64, TK_MOSTLY_NAN, true);
        add("n64_equal_scores", 3, 50000, 50000, 16, 64, TK_EQUAL, false);
    }
    for (size_t i = 0; i < ts.size(); ++i) blocks_case(row, ts[i], i == 0 || i == 1);
    blocks_errors(row);
}

/* ---- errors: validation on the host, same status as the reference ------- */
static void run_errors()
{
    logf_("== errors\n");
    Row &row = new_row("errors");
    Case c;
    c.name = "err";
    c.cfg = nsa_config_paper();
    c.cu = {0, 100};
    c.H = 4; c.Hkv = 2; c.Dk = 64; c.Dv = 64; c.dt = NSA_BF16;
    c.gates = false; c.qscale = 1;
    Inputs in = make_inputs(c);
    Gpu G;
    gpu_setup(c, in, G);
    struct E { const char *what; nsa_status want, got; };
    std::vector<E> es;
    {
        nsa_batch b = G.b; b.H = 5;
        size_t x; es.push_back({"H % Hkv", NSA_ERR_INVALID_BATCH, nsa_cuda_workspace_size(&G.cfg, &b, &x)});
    }
    {
        nsa_batch b = G.b; b.Dk = 32; b.Dv = 32;
        size_t x; es.push_back({"Dk=32 unsupported", NSA_ERR_UNSUPPORTED, nsa_cuda_workspace_size(&G.cfg, &b, &x)});
    }
    {
        nsa_config cf = G.cfg; cf.accum = NSA_ACCUM_FP64;
        size_t x; es.push_back({"fp64 accum", NSA_ERR_UNSUPPORTED, nsa_cuda_workspace_size(&cf, &G.b, &x)});
    }
    {
        nsa_config cf = G.cfg; cf.d = 5;
        size_t x; es.push_back({"d !| l", NSA_ERR_INVALID_CONFIG, nsa_cuda_workspace_size(&cf, &G.b, &x)});
    }
    es.push_back({"workspace small", NSA_ERR_WORKSPACE,
                  nsa_cuda_forward(&G.cfg, &G.b, NULL, G.o, &G.sv, G.ws, G.wsb - 1, 0)});
    es.push_back({"o NULL", NSA_ERR_NULL_POINTER,
                  nsa_cuda_forward(&G.cfg, &G.b, NULL, NULL, &G.sv, G.ws, G.wsb, 0)});
    {
        nsa_batch b = G.b; b.q = NULL;
        es.push_back({"q NULL", NSA_ERR_NULL_POINTER, nsa_cuda_forward(&G.cfg, &b, NULL, G.o, &G.sv, G.ws, G.wsb, 0)});
    }
    {
        nsa_batch b = G.b; int32_t cu[2] = {0, 99}; b.cu_seqlens = cu;
        es.push_back({"cu end", NSA_ERR_INVALID_BATCH, nsa_cuda_forward(&G.cfg, &b, NULL, G.o, &G.sv, G.ws, G.wsb, 0)});
    }
    for (auto &e : es) {
        bool ok = e.want == e.got;
        row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
        logf_("  %-6s %-18s -> %s\n", ok ? "ok" : "FAIL", e.what, nsa_status_string(e.got));
    }
    gpu_free(G);
}

/* ---- the workspace's bound at one million tokens -----------------------
   The fast-backward issue's bound: one sequence of 1,048,576 tokens at
   H=32, Hkv=8, D=128 (the paper and fla presets) needs at most 2 GiB of
   workspace, as nsa_cuda_workspace_size reports it (its accumulators are
   bounded: long batches run by ranges of queries and kv heads). A size
   query only: nothing is allocated. */
static void run_workspace_bound()
{
    Row &row = new_row("workspace at 1M tokens <= 2 GiB");
    const int32_t cu[2] = {0, 1 << 20};
    for (int fla = 0; fla < 2; ++fla) {
        const nsa_config cfg = fla ? nsa_config_fla() : nsa_config_paper();
        nsa_batch b;
        memset(&b, 0, sizeof b);
        b.B = 1; b.T = b.TQ = 1 << 20; b.cu_seqlens = cu;
        b.H = 32; b.Hkv = 8; b.Dk = b.Dv = 128; b.dtype = NSA_BF16;
        size_t bytes = 0;
        const nsa_status st = nsa_cuda_workspace_size(&cfg, &b, &bytes);
        char detail[128];
        snprintf(detail, sizeof detail, "%s, %.3f GiB", nsa_status_string(st),
                 bytes / (double)(1u << 30));
        tally(row, st == NSA_OK && bytes <= ((size_t)2 << 30), fla ? "fla" : "paper", detail);
    }
}

/* ---- growing cache: nsa_cuda_compress_append against the reference ------
   A cache whose first seqlens_old[b] keys were compressed before (the
   blocks from then are poison here: they must be neither read nor written)
   grows to the batch's lengths; the new blocks must equal the reference's
   full compression bit for bit. */
static void run_compress_append()
{
    logf_("== compress append\n");
    Row &row = new_row("compress append");
    const nsa_config presets[2] = {nsa_config_paper(), nsa_config_fla()};
    const int appends[5] = {1, 15, 16, 64, 700};
    for (int pi = 0; pi < 2; ++pi)
        for (int ai = 0; ai < 5; ++ai) {
            Case c;
            c.name = "append";
            c.cfg = presets[pi];
            c.cu = {0, 1000, 1033, 1033, 2500};
            c.H = 8; c.Hkv = 2; c.Dk = 128; c.Dv = 128; c.dt = NSA_BF16;
            c.gates = false; c.qscale = 1;
            Inputs in = make_inputs(c);
            Gpu G;
            gpu_setup(c, in, G);
            const int B = (int)c.cu.size() - 1;
            std::vector<int32_t> old(B);
            for (int b = 0; b < B; ++b) {
                int nk = c.cu[b + 1] - c.cu[b];
                old[b] = b == 3 ? nk : std::max(0, nk - appends[ai]); /* seq 3 did not grow */
            }
            int32_t *old_dev = dup(old);
            nsa_status st = nsa_cuda_compress_append(&G.cfg, &G.b, old.data(), old_dev, G.skc, G.svc,
                                                     G.ws, G.wsb, 0);
            CK(cudaDeviceSynchronize());
            /* the reference's full compression */
            nsa_batch b = G.b;
            std::vector<uint16_t> q = to_u16(in.q, c.dt), k = to_u16(in.k, c.dt), v = to_u16(in.v, c.dt);
            b.q = q.data(); b.k = k.data(); b.v = v.data();
            b.cu_seqlens_dev = b.cu_seqlens_q_dev = NULL;
            std::vector<uint16_t> kc((size_t)G.sz.k_cmp + 1), vc((size_t)G.sz.v_cmp + 1);
            nsa_status rs = nsa_ref_compress(&G.cfg, &b, kc.data(), vc.data());
            std::vector<uint16_t> gk = back(G.skc, (size_t)G.sz.k_cmp), gv = back(G.svc, (size_t)G.sz.v_cmp);
            int64_t wrong_new = 0, written_old = 0, c0 = 0;
            for (int bb = 0; bb < B; ++bb) {
                int64_t nc = nsa_cmp_blocks(c.cu[bb + 1] - c.cu[bb], c.cfg.l, c.cfg.d);
                int64_t i0 = nsa_cmp_blocks(old[bb], c.cfg.l, c.cfg.d);
                for (int64_t i = 0; i < nc; ++i)
                    for (int64_t e = 0; e < (int64_t)c.Hkv * c.Dk; ++e) {
                        size_t x = (size_t)((c0 + i) * c.Hkv * c.Dk + e); /* Dk = Dv here */
                        if (i < i0) written_old += (gk[x] != 0xffff) + (gv[x] != 0xffff);
                        else wrong_new += (gk[x] != kc[x]) + (gv[x] != vc[x]);
                    }
                c0 += nc;
            }
            bool ok = st == NSA_OK && rs == NSA_OK && wrong_new == 0 && written_old == 0;
            row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
            logf_("  %-6s %s append %d: %s, %lld new elements differ from the reference, %lld old "
                  "ones written\n", ok ? "ok" : "FAIL", pi ? "fla" : "paper", appends[ai],
                  nsa_status_string(st), (long long)wrong_new, (long long)written_old);
            if (pi == 0 && ai == 0) { /* bad arguments: the reference's statuses */
                std::vector<int32_t> bad = old;
                bad[1] = c.cu[2] - c.cu[1] + 1;
                struct E { const char *what; nsa_status want, got; } es[3] = {
                    {"seqlens_old NULL", NSA_ERR_NULL_POINTER,
                     nsa_cuda_compress_append(&G.cfg, &G.b, NULL, old_dev, G.skc, G.svc, G.ws, G.wsb, 0)},
                    {"seqlens_old_dev NULL", NSA_ERR_NULL_POINTER,
                     nsa_cuda_compress_append(&G.cfg, &G.b, old.data(), NULL, G.skc, G.svc, G.ws, G.wsb, 0)},
                    {"cache shrank", NSA_ERR_INVALID_BATCH,
                     nsa_cuda_compress_append(&G.cfg, &G.b, bad.data(), old_dev, G.skc, G.svc, G.ws, G.wsb, 0)}};
                for (auto &e : es) {
                    bool eok = e.want == e.got;
                    row.checks++; if (!eok) row.fails++; (eok ? g_pass : g_fail)++;
                    logf_("  %-6s %-20s -> %s\n", eok ? "ok" : "FAIL", e.what, nsa_status_string(e.got));
                }
            }
            cudaFree(old_dev);
            gpu_free(G);
        }
}

/* ---- shared vectors: zero-padded to the nearest supported head dims ------
   Each case's Q, K (and V) are zero-padded to the smallest pair of head dims
   the CUDA path supports (nsa_cuda.h: (64, 64), (128, 128), (192, 128))
   that holds the case's (Dk, Dv): the extra components are zero, so every
   logit and every output component of the case is unchanged (the softmax
   scale stays 1/sqrt of the case's own Dk), and the padded components of
   the outputs are zero. A case no supported pair holds is skipped with a
   line saying so. Suffix-query cases (cu_q) run with cu_seqlens_q: q, gates,
   dO, o, lse, dq, dgates have TQ rows, k, v, dk, dv have T. Nested folders
   of cases (a subfolder with its own cases.json) are read too. Tolerances
   are the checker's (tools/vectors.h): bf16 rtol of each array's scale,
   lse per element (plus K_cmp's rounding bound for lse_cmp). */
static bool vector_head_dims(int Dk, int Dv, int *pk, int *pv)
{
    static const int dims[3][2] = {{64, 64}, {128, 128}, {192, 128}};
    for (int i = 0; i < 3; ++i)
        if (Dk <= dims[i][0] && Dv <= dims[i][1]) {
            *pk = dims[i][0];
            *pv = dims[i][1];
            return true;
        }
    return false;
}

static void run_vector_case(nsa_vcase &vc, const char *sub)
{
    char err[512];
    int Pk = 0, Pv = 0;
    if (!vector_head_dims(vc.Dk, vc.Dv, &Pk, &Pv)) {
        logf_("== vector %s: skipped, no supported head dims hold (Dk %d, Dv %d)\n",
              vc.name, vc.Dk, vc.Dv);
        return;
    }
    vc.storage = NSA_BF16;
    nsa_vinputs vi;
    if (nsa_vinputs_load(&vc, &vi, err, sizeof err) != 0) {
        logf_("== vector %s\n  FAIL inputs: %s\n", vc.name, err);
        Row &row = new_row(std::string("vector ") + vc.name);
        row.checks++; row.fails++; g_fail++;
        return;
    }
    const int64_t T = vc.T, TQ = vc.TQ;
    logf_("== vector %s (padded Dk %d->%d, Dv %d->%d, bf16%s)\n", vc.name, vc.Dk, Pk,
          vc.Dv, Pv, vc.cu_q ? ", suffix queries" : "");
    Row &row = new_row(std::string("vector ") + vc.name);
    Case c;
    c.name = vc.name;
    c.cfg = vc.cfg;
    c.cfg.scale = vc.cfg.scale > 0 ? vc.cfg.scale : (float)(1.0 / sqrt((double)vc.Dk));
    c.cu.assign(vc.cu, vc.cu + vc.B + 1);
    if (vc.cu_q) c.cuq.assign(vc.cu_q, vc.cu_q + vc.B + 1);
    c.H = vc.H; c.Hkv = vc.Hkv; c.Dk = Pk; c.Dv = Pv; c.dt = NSA_BF16;
    c.gates = vc.has_gates != 0; c.qscale = 1;
    Inputs in;
    /* rows of D values -> rows of Dp values, zero-padded */
    auto pad = [&](const double *x, int64_t rows, int D, int Dp) {
        std::vector<double> y((size_t)(rows * Dp), 0.0);
        for (int64_t r = 0; r < rows; ++r)
            for (int d = 0; d < D; ++d) y[(size_t)(r * Dp + d)] = x[r * D + d];
        return y;
    };
    in.q = pad(vi.q, TQ * c.H, vc.Dk, Pk);
    in.k = pad(vi.k, T * c.Hkv, vc.Dk, Pk);
    in.v = pad(vi.v, T * c.Hkv, vc.Dv, Pv);
    in.dO = pad(vi.d_o, TQ * c.H, vc.Dv, Pv);
    if (c.gates) in.g.assign(vi.gates, vi.gates + TQ * c.H * 3);
    Gpu G;
    gpu_setup(c, in, G);
    nsa_status st = gpu_fwd_bwd(G, 0);
    CK(cudaDeviceSynchronize());
    if (st) {
        logf_("  FAIL gpu: %s\n", nsa_last_error());
        row.checks++; row.fails++; g_fail++;
        gpu_free(G);
        nsa_vinputs_free(&vi);
        return;
    }
    Result gr = gpu_result(c, G);
    const double tol = nsa_vectors_rtol(NSA_BF16);
    /* selection first: rows that differ from the vectors' must be near-ties
       by the checker's rule (nsa_v_explain_sel: the swapped blocks' scores
       lie within what rounding K_cmp to bf16 did to them, computed in
       fp64; never a relative threshold), judged on the reference's bf16
       run of the case; the queries of such a unit (a query, or a tile) are
       then left out of the per-query comparisons (o, lse_slc, dq, dgates),
       which would compare different selections */
    std::vector<char> skip((size_t)TQ, 0);
    std::vector<int32_t> vsel; /* the vectors' selection, kept for a rerun */
    bool near_ties_ok = false;
    long long vdiff = 0, vrows = 0;
    if (c.cfg.branches & NSA_BRANCH_SLC) {
        int32_t *es = NULL;
        nsa_vrun rr;
        bool ok = false;
        if (nsa_v_load_i32(sub, "sel_idx", G.sz.sel_idx, &es, NULL, err, sizeof err) != 1) {
            logf_("  FAIL   sel_idx  %s\n", err);
        } else if (nsa_vrun_exec(&vc, &vi, NSA_BF16, NSA_ACCUM_FP32, NULL, NULL, &rr, err,
                                 sizeof err) != 0) {
            logf_("  FAIL   sel_idx  reference run: %s\n", err);
            free(es);
            es = NULL;
        } else {
            const int n = c.cfg.n, bq = c.cfg.bq;
            /* first query and query count of every unit: tiles of bq
               queries starting at each sequence's first query */
            std::vector<int64_t> u0, un;
            for (int b = 0; b < vc.B; ++b) {
                const int64_t q0 = vc.cu_q ? vc.cu_q[b] : vc.cu[b];
                const int64_t nq = (vc.cu_q ? vc.cu_q[b + 1] : vc.cu[b + 1]) - q0;
                for (int64_t j = 0; j * bq < nq; ++j) {
                    u0.push_back(q0 + j * bq);
                    un.push_back(nq - j * bq < bq ? nq - j * bq : bq);
                }
            }
            vrows = (long long)gr.cnt.size();
            for (long long r = 0; r < vrows; ++r)
                if (memcmp(&es[r * n], &gr.sel[(size_t)(r * n)], (size_t)n * 4)) {
                    const size_t u = (size_t)(r / c.Hkv);
                    ++vdiff;
                    for (int64_t t = 0; u < u0.size() && t < un[u]; ++t)
                        skip[(size_t)(u0[u] + t)] = 1;
                }
            if (vdiff == 0) {
                ok = true;
            } else {
                char label[600];
                nsa_v__fmt(label, sizeof label, "vector %s/sel_idx(gpu)", vc.name);
                memcpy(rr.sel_idx, gr.sel.data(), (size_t)rr.sz.sel_idx * sizeof(int32_t));
                ok = nsa_v_explain_sel(label, &rr, es) != 0;
                vsel.assign(es, es + (size_t)rr.sz.sel_idx);
                near_ties_ok = ok;
            }
            nsa_vrun_free(&rr);
        }
        free(es);
        row.sel_rows += vrows; row.sel_diff += vdiff; row.sel_ties += ok ? vdiff : 0;
        row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
        logf_("  %-6s sel_idx  %lld rows, %lld differ from the vectors%s\n", ok ? "ok" : "FAIL",
              vrows, vdiff, vdiff ? (ok ? ", all near-ties (queries left out of per-query "
                                          "checks)" : ", not all near-ties") : "");
    }
    /* After accepted near-ties, outputs and gradients are judged on the
       vectors' own selection, as the checker judges the reference: a rerun
       with it as the caller's selection. A swapped block moves one query's
       contribution between two blocks' dk / dv, which no per-query
       exclusion can take out of those sums. */
    if (near_ties_ok) {
        const int n = c.cfg.n;
        Case c2 = c;
        c2.caller_sel = true;
        in.sel = vsel;
        in.cnt.assign(vsel.size() / (size_t)n, 0);
        for (size_t r = 0; r < in.cnt.size(); ++r)
            for (int e = 0; e < n; ++e) in.cnt[r] += vsel[r * (size_t)n + (size_t)e] >= 0;
        Gpu G2;
        gpu_setup(c2, in, G2);
        st = gpu_fwd_bwd(G2, 0);
        CK(cudaDeviceSynchronize());
        if (st) {
            logf_("  FAIL gpu rerun on the vectors' selection: %s\n", nsa_last_error());
            row.checks++; row.fails++; g_fail++;
            gpu_free(G2);
        } else {
            gr = gpu_result(c2, G2);
            gpu_free(G);
            G = G2;
            /* the batch's host arrays were c2's, which end with this block;
               c's hold the same sequence lengths */
            G.b.cu_seqlens = c.cu.data();
            G.b.cu_seqlens_q = c.cuq.empty() ? NULL : c.cuq.data();
            std::fill(skip.begin(), skip.end(), 0);
            logf_("  (outputs and gradients below: a rerun on the vectors' selection)\n");
        }
    }
    /* lse_cmp in bf16: K_cmp's rounding bound per element (tools/vectors.h) */
    std::vector<double> kbound((size_t)(TQ * c.H > 0 ? TQ * c.H : 1), 0.0);
    if ((c.cfg.branches & NSA_BRANCH_CMP) &&
        nsa_v_lse_cmp_bound(&vc, vi.q, vi.k, NSA_BF16, kbound.data()) != 0) {
        logf_("vectors: out of memory\n");
        exit(2);
    }
    /* dq / dk floors as in the checker (NSA_VGRAD_FLOOR) */
    const double mdq = nsa_v_maxabs_file(sub, "dq"), mdk = nsa_v_maxabs_file(sub, "dk");
    std::string tag; /* after the checks' names: which run */
    auto cmp = [&](const char *name, const std::vector<double> &got, int64_t nrows, int heads,
                   int D, int Dp, bool per_query, double floor_) {
        double *e = NULL;
        int64_t cntv = 0;
        int rc = nsa_v_load_f64(sub, name, nrows * heads * D, NSA_BF16, &e, &cntv, err, sizeof err);
        if (rc == 0) return;
        if (rc < 0) {
            logf_("  FAIL   %-8s %s\n", name, err);
            row.checks++; row.fails++; g_fail++;
            return;
        }
        const bool is_lse = !strncmp(name, "lse_", 4);
        double scale = floor_, worst = 0, worst_ratio = 0;
        bool ok = true;
        for (int64_t i = 0; i < cntv; ++i) if (std::isfinite(e[i])) scale = fmax(scale, fabs(e[i]));
        for (int64_t r = 0; r < nrows * heads; ++r) {
            if (per_query && skip[(size_t)(r / heads)]) continue;
            for (int d = 0; d < D; ++d) {
                double ex = e[r * D + d], g = got[(size_t)(r * Dp + d)];
                if (!std::isfinite(ex)) { if (g != ex) ok = false; continue; }
                if (!std::isfinite(g)) { ok = false; continue; }
                /* lse: per element (NSA_VTOL_LSE of max(1, |lse|), plus the
                   K_cmp bound for lse_cmp); else rtol of the array's scale */
                double t = is_lse ? NSA_VTOL_LSE * fmax(1.0, fabs(ex)) +
                                        (!strcmp(name, "lse_cmp") ? kbound[(size_t)r] : 0.0)
                                  : tol * scale;
                worst = fmax(worst, fabs(g - ex));
                worst_ratio = fmax(worst_ratio, fabs(g - ex) / t);
            }
        }
        ok = ok && worst_ratio <= 1.0;
        row.checks++; if (!ok) row.fails++; (ok ? g_pass : g_fail)++;
        logf_("  %-6s %-8s max err %.3e, %.3f of its tolerance\n", ok ? "ok" : "FAIL",
              (name + tag).c_str(), worst, worst_ratio);
        free(e);
    };
    cmp("o", gr.o, TQ, c.H, vc.Dv, Pv, true, FLT_MIN);
    const char *ln[3] = {"lse_cmp", "lse_slc", "lse_win"};
    for (int i = 0; i < 3; ++i)
        if (c.cfg.branches & (1u << i)) cmp(ln[i], gr.lse[i], TQ, c.H, 1, 1, i == 1, 1.0);
    cmp("dq", gr.dq, TQ, c.H, vc.Dk, Pk, true, fmax(FLT_MIN, NSA_VGRAD_FLOOR * mdk));
    cmp("dk", gr.dk, T, c.Hkv, vc.Dk, Pk, false, fmax(FLT_MIN, NSA_VGRAD_FLOOR * mdq));
    cmp("dv", gr.dv, T, c.Hkv, vc.Dv, Pv, false, FLT_MIN);
    if (c.gates) cmp("dgates", gr.dg, TQ, c.H, 3, 3, true, FLT_MIN);
    /* the gradients again with the forward's branch outputs kept for the
       backward (nsa_saved.o_branch) */
    float *ob = dalloc<float>((size_t)(3 * G.sz.o > 0 ? 3 * G.sz.o : 1));
    G.sv.o_branch = ob;
    st = gpu_fwd_bwd(G, 0);
    CK(cudaDeviceSynchronize());
    G.sv.o_branch = NULL;
    if (st) {
        logf_("  FAIL gpu with saved branch outputs: %s\n", nsa_last_error());
        row.checks++; row.fails++; g_fail++;
    } else {
        const Result gs = gpu_result(c, G);
        tag = "|o_c";
        cmp("dq", gs.dq, TQ, c.H, vc.Dk, Pk, true, fmax(FLT_MIN, NSA_VGRAD_FLOOR * mdk));
        cmp("dk", gs.dk, T, c.Hkv, vc.Dk, Pk, false, fmax(FLT_MIN, NSA_VGRAD_FLOOR * mdq));
        cmp("dv", gs.dv, T, c.Hkv, vc.Dv, Pv, false, FLT_MIN);
        if (c.gates) cmp("dgates", gs.dg, TQ, c.H, 3, 3, true, FLT_MIN);
    }
    cudaFree(ob);
    gpu_free(G);
    nsa_vinputs_free(&vi);
}

static void run_vectors(const char *dir, int depth = 0)
{
    char path[1200], err[512];
    json_value root;
    nsa_v__fmt(path, sizeof path, "%s/cases.json", dir);
    if (json_parse_file(path, &root, err, sizeof err) != 0 || root.type != JSON_ARRAY) {
        logf_("== vectors: %s not readable (%s), skipped\n", path, err);
        json_free(&root);
        return;
    }
    for (int ci = 0; ci < root.len; ++ci) {
        nsa_vcase vc;
        const json_value *o = json_at(&root, ci);
        char sub[1200], own[1300];
        nsa_v__fmt(sub, sizeof sub, "%s/%s", dir, json_str(json_get(o, "name"), "?"));
        nsa_v__fmt(own, sizeof own, "%s/case.json", sub);
        int rc = nsa_v_file_exists(own) ? nsa_vcase_load_own(sub, &vc, err, sizeof err)
                                        : nsa_vcase_from_json(o, sub, &vc, err, sizeof err);
        if (rc != 0) {
            logf_("== vectors: FAIL %s\n", err);
            Row &row = new_row(std::string("vector ") + json_str(json_get(o, "name"), "?"));
            row.checks++; row.fails++; g_fail++;
        } else {
            run_vector_case(vc, sub);
        }
        nsa_vcase_free(&vc);
    }
    json_free(&root);
    /* nested folders of cases, as the checker reads them */
    int nn = 0;
    char **nested = depth < 4 ? nsa_v__nested_folders(dir, &nn) : NULL;
    for (int i = 0; i < nn; ++i) {
        char sub[1200];
        nsa_v__fmt(sub, sizeof sub, "%s/%s", dir, nested[i]);
        run_vectors(sub, depth + 1);
        free(nested[i]);
    }
    free(nested);
}

/* ---- long sequences, T*H*D > 2^31: forward, sampled rows vs reference ----
   One sequence of T tokens (300K at H=64, Hkv=4; 1M at H=32, Hkv=8, the
   long-context shape), paper preset: five rows' outputs against the
   reference's on the GPU's selection, and their selections against the
   reference's own (check_sel). */
static void run_big(int T, int H, int Hkv, const char *label)
{
    const int D = 128;
    logf_("== big: T=%d H=%d Hkv=%d D=%d bf16, paper preset (T*H*D = %.2e)\n", T, H, Hkv, D,
          (double)T * H * D);
    Row &row = new_row(label);
    nsa_config cfg = nsa_config_paper();
    const int64_t nq = (int64_t)T * H * D, nk = (int64_t)T * Hkv * D;
    std::vector<uint16_t> q((size_t)nq), k((size_t)nk), v((size_t)nk);
#pragma omp parallel for
    for (int64_t blk = 0; blk < 1024; ++blk) {
        uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(blk + 1);
        auto rnd = [&]() { s ^= s << 13; s ^= s >> 7; s ^= s << 17; return (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0); };
        for (int64_t i = blk; i < nq; i += 1024) q[i] = nsa_f32_to_bf16(rnd());
        for (int64_t i = blk; i < nk; i += 1024) { k[i] = nsa_f32_to_bf16(rnd()); v[i] = nsa_f32_to_bf16(rnd()); }
    }
    Case c;
    c.name = "big"; c.cfg = cfg; c.cu = {0, T}; c.H = H; c.Hkv = Hkv; c.Dk = D; c.Dv = D;
    c.dt = NSA_BF16; c.gates = false; c.qscale = 1;
    Gpu G;
    memset(&G, 0, sizeof G);
    G.cfg = cfg;
    G.b = make_batch(c, &G.sz);
    G.q = dup(q); G.k = dup(k); G.v = dup(v);
    G.cu = dup(c.cu);
    G.b.q = G.q; G.b.k = G.k; G.b.v = G.v; G.b.cu_seqlens_dev = G.cu;
    G.o = dalloc<uint16_t>((size_t)G.sz.o);
    for (int i = 0; i < 3; ++i) G.lse[i] = dalloc<float>((size_t)G.sz.lse);
    G.sel = dalloc<int32_t>((size_t)G.sz.sel_idx);
    G.cnt = dalloc<int32_t>((size_t)G.sz.sel_count);
    G.skc = dalloc<uint16_t>((size_t)G.sz.k_cmp);
    G.svc = dalloc<uint16_t>((size_t)G.sz.v_cmp);
    if (nsa_cuda_workspace_size(&cfg, &G.b, &G.wsb)) { logf_("ws: %s\n", nsa_last_error()); exit(2); }
    CK(cudaMalloc(&G.ws, G.wsb));
    G.sv = {G.lse[0], G.lse[1], G.lse[2], G.sel, G.cnt, G.skc, G.svc, NULL};
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0); cudaEventCreate(&e1);
    cudaEventRecord(e0);
    nsa_status st = nsa_cuda_forward(&cfg, &G.b, NULL, G.o, &G.sv, G.ws, G.wsb, 0);
    cudaEventRecord(e1);
    CK(cudaDeviceSynchronize());
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    logf_("  forward %.1f ms (workspace %.2f GB)\n", ms, G.wsb / 1e9);
    if (st) { logf_("  FAIL forward: %s\n", nsa_last_error()); row.checks++; row.fails++; g_fail++; gpu_free(G); return; }
    std::vector<uint16_t> o = back(G.o, (size_t)G.sz.o);
    std::vector<int32_t> sel = back(G.sel, (size_t)G.sz.sel_idx), cnt = back(G.cnt, (size_t)G.sz.sel_count);
    std::vector<float> kf((size_t)nk), vf((size_t)nk);
    for (int64_t i = 0; i < nk; ++i) { kf[i] = nsa_bf16_to_f32(k[i]); vf[i] = nsa_bf16_to_f32(v[i]); }
    const int ts[] = {0, 1000, 65535, T / 3 * 2 + 3, T - 1};
    for (int t : ts) {
        int32_t cu[2] = {0, t + 1}, cuq[2] = {0, 1};
        nsa_batch b;
        memset(&b, 0, sizeof b);
        b.B = 1; b.T = t + 1; b.TQ = 1; b.cu_seqlens = cu; b.cu_seqlens_q = cuq;
        b.H = H; b.Hkv = Hkv; b.Dk = D; b.Dv = D;
        b.sel_idx = &sel[(size_t)t * Hkv * cfg.n];
        b.sel_count = &cnt[(size_t)t * Hkv];
        std::vector<double> res[2];
        for (int pass = 0; pass < 2; ++pass) {
            nsa_config cf = cfg;
            std::vector<float> qf((size_t)H * D);
            for (int i = 0; i < H * D; ++i) qf[i] = nsa_bf16_to_f32(q[(size_t)t * H * D + i]);
            if (pass == 0) { b.dtype = NSA_BF16; b.q = &q[(size_t)t * H * D]; b.k = k.data(); b.v = v.data(); }
            else { cf.accum = NSA_ACCUM_FP64; b.dtype = NSA_FP32; b.q = qf.data(); b.k = kf.data(); b.v = vf.data(); }
            nsa_sizes sz;
            nsa_sizes_get(&cf, &b, &sz);
            size_t wsb = 0;
            nsa_ref_workspace_size(&cf, &b, &wsb);
            std::vector<char> ws(wsb + 1);
            size_t es = nsa_dtype_size(b.dtype);
            std::vector<char> oo((size_t)sz.o * es), kc((size_t)(sz.k_cmp + 1) * es), vc((size_t)(sz.v_cmp + 1) * es);
            std::vector<float> l0(H), l1(H), l2(H);
            std::vector<int32_t> s1((size_t)sz.sel_idx + 1), c1((size_t)sz.sel_count + 1);
            nsa_saved sv = {l0.data(), l1.data(), l2.data(), s1.data(), c1.data(), kc.data(), vc.data(), NULL};
            if (nsa_ref_forward(&cf, &b, NULL, oo.data(), &sv, ws.data(), wsb)) { logf_("ref: %s\n", nsa_last_error()); exit(2); }
            res[pass].resize((size_t)H * D);
            for (int i = 0; i < H * D; ++i) res[pass][i] = nsa_load(oo.data(), b.dtype, i);
        }
        std::vector<double> g((size_t)H * D);
        for (int i = 0; i < H * D; ++i) g[i] = nsa_bf16_to_f32(o[(size_t)t * H * D + i]);
        char nm[32];
        snprintf(nm, sizeof nm, "o[t=%d]", t);
        check(row, nm, g, res[0], res[1], 1e-6);
        /* row t's selection (its Hkv rows) against the reference's own, from
           the same bf16 inputs and its own K_cmp */
        nsa_batch bs = b;
        bs.dtype = NSA_BF16; bs.q = &q[(size_t)t * H * D]; bs.k = k.data(); bs.v = v.data();
        bs.sel_idx = NULL; bs.sel_count = NULL;
        nsa_sizes sz;
        nsa_sizes_get(&cfg, &bs, &sz);
        std::vector<uint16_t> kc((size_t)sz.k_cmp + 1), vc((size_t)sz.v_cmp + 1);
        if (nsa_ref_compress(&cfg, &bs, kc.data(), vc.data())) { logf_("ref compress: %s\n", nsa_last_error()); exit(2); }
        bs.k_cmp = kc.data(); bs.v_cmp = vc.data();
        size_t wsb = 0;
        nsa_ref_workspace_size(&cfg, &bs, &wsb);
        std::vector<char> ws(wsb + 1);
        Result gr, rr;
        rr.sel.resize((size_t)sz.sel_idx);
        rr.cnt.resize((size_t)sz.sel_count);
        std::vector<float> scores((size_t)sz.block_mask + 1);
        if (nsa_ref_select(&cfg, &bs, kc.data(), rr.sel.data(), rr.cnt.data(), ws.data(), wsb) ||
            nsa_ref_block_scores(&cfg, &bs, kc.data(), scores.data(), ws.data(), wsb)) {
            logf_("ref select: %s\n", nsa_last_error());
            exit(2);
        }
        gr.sel.assign(sel.begin() + (size_t)t * Hkv * cfg.n, sel.begin() + (size_t)(t + 1) * Hkv * cfg.n);
        gr.cnt.assign(cnt.begin() + (size_t)t * Hkv, cnt.begin() + (size_t)(t + 1) * Hkv);
        check_sel(row, c, gr, rr, scores, sz.block_mask / sz.sel_count);
    }
    gpu_free(G);
}

/* The query ranges of the CUDA path (nsah::QueryRanges), on the host: for
   random batches (suffix queries, empty and long sequences), group sizes,
   unit sizes and accumulator sizes, the ranges take every query once and
   in order, at most Plan::acc_tok of them each, cut a sequence only at
   multiples of Plan::acc_step, and their runs of row tiles (of NSA_ROWS
   and of NSA_CW_ROWS rows), unit tiles and unit groups are exactly those
   of their queries, back to back. The oracle places each query by the
   formulas of kernels/nsa_common.cuh (seq_row_tiles, seq_unit_tiles), one
   query at a time. */
static void run_query_ranges_host(int trials)
{
    int fails = 0;
    for (int trial = 0; trial < trials; ++trial) {
        const int Gs[5] = {1, 2, 4, 8, 16}, bqs[6] = {1, 2, 3, 16, 64, 100};
        nsah::Plan P;
        memset(&P, 0, sizeof P);
        P.G = Gs[(int)(urand() * 5)];
        P.H = P.G * (1 + (int)(urand() * 3));
        P.shape.G = P.G;
        P.shape.l = 32; P.shape.d = 16; P.shape.lp = 64; P.shape.n = 16;
        P.shape.bq = bqs[(int)(urand() * 6)];
        P.acc_step = nsah::query_step(P.shape.bq) * (1 + (int)(urand() * 2));
        const int B = 1 + (int)(urand() * 6);
        std::vector<int32_t> cuk(B + 1, 0), cuq(B + 1, 0);
        for (int b = 0; b < B; ++b) {
            const double u = urand();
            const int nk = u < 0.15 ? 0 : u < 0.5 ? (int)(urand() * 300) : (int)(urand() * 6000);
            const int nq = urand() < 0.3 ? (int)(urand() * (nk + 1)) : nk; /* suffix queries */
            cuk[b + 1] = cuk[b] + nk;
            cuq[b + 1] = cuq[b] + nq;
        }
        const int64_t TQ = cuq[B];
        P.acc_tok = P.acc_step * (1 + (int64_t)(urand() * 6));
        if (urand() < 0.2) P.acc_tok = TQ > P.acc_step ? TQ : P.acc_step;
        nsa_batch x;
        memset(&x, 0, sizeof x);
        x.B = B;
        x.cu_seqlens = cuk.data();
        x.cu_seqlens_q = cuq.data();
        /* the oracle: each query's row tile, unit tile and group */
        std::vector<int64_t> rowt(TQ), cwt(TQ), unitt(TQ), grp(TQ);
        int64_t tot_rowt = 0, tot_cwt = 0, tot_unitt = 0, tot_grp = 0;
        const int bq = P.shape.bq, G = P.G;
        const int64_t tpu = (bq * (int64_t)G + 15) / 16;
        for (int b = 0; b < B; ++b) {
            const int64_t nq = cuq[b + 1] - cuq[b];
            for (int64_t t = 0; t < nq; ++t) {
                rowt[cuq[b] + t] = tot_rowt + t * G / NSA_ROWS;
                cwt[cuq[b] + t] = tot_cwt + t * G / NSA_CW_ROWS;
                unitt[cuq[b] + t] = tot_unitt + t / bq * tpu + (t % bq) * G / 16;
                grp[cuq[b] + t] = tot_grp + t / bq / 4;
            }
            tot_rowt += nsak::seq_row_tiles(nq, G);
            tot_cwt += nsak::seq_row_tiles(nq, G, NSA_CW_ROWS);
            tot_unitt += nsak::seq_unit_tiles(nq, G, bq);
            tot_grp += (nsa_units(nq, bq) + 3) / 4;
        }
        nsah::QueryRanges ranges(&x, P);
        nsah::QueryRange r;
        int64_t q = 0, prev[4] = {0, 0, 0, 0};
        int n = 0;
        bool ok = true;
        while (ok && ranges.next(r)) {
            ++n;
            const int64_t q0 = r.row[0] / P.H, q1 = r.row[1] / P.H;
            const int64_t *rr[4] = {r.rowt, r.unitt, r.grp, r.cwt};
            const std::vector<int64_t> *of[4] = {&rowt, &unitt, &grp, &cwt};
            ok = r.row[0] % P.H == 0 && r.row[1] % P.H == 0 && q0 == q && q1 >= q0 &&
                 q1 - q0 <= P.acc_tok;
            for (int k = 0; ok && k < 4; ++k) {
                ok = rr[k][0] == prev[k] && rr[k][1] >= rr[k][0];
                /* the run is the tiles of the range's queries, no more */
                if (ok && q1 > q0)
                    ok = (*of[k])[q0] == rr[k][0] && (*of[k])[q1 - 1] == rr[k][1] - 1;
                if (ok && q1 == q0) ok = rr[k][1] == rr[k][0];
                prev[k] = rr[k][1];
            }
            /* a cut inside a sequence is at a multiple of the step */
            for (int b = 0; ok && b < B; ++b)
                if (q1 > cuq[b] && q1 < cuq[b + 1]) ok = (q1 - cuq[b]) % P.acc_step == 0;
            q = q1;
            if (n > 100000) ok = false; /* no end */
        }
        ok = ok && q == TQ && prev[0] == tot_rowt && prev[1] == tot_unitt && prev[2] == tot_grp &&
             prev[3] == tot_cwt;
        if (!ok) {
            ++fails;
            logf_("FAIL query ranges: trial %d (B %d, G %d, H %d, bq %d, step %lld, held %lld, "
                  "range %d)\n", trial, B, G, P.H, bq, (long long)P.acc_step,
                  (long long)P.acc_tok, n);
        }
    }
    logf_("%s query ranges: %d random batches (host)\n", fails ? "FAIL" : "ok  ", trials);
    (fails ? g_fail : g_pass)++;
}

int main(int argc, char **argv)
{
    bool quick = false, big = false, huge = false, vectors_only = false, topk_only = false, decode_only = false;
    bool host_only = false;
    const char *vec = NULL, *only = NULL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--case") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--big")) big = true;
        else if (!strcmp(argv[i], "--huge")) huge = true;
        else if (!strcmp(argv[i], "--vectors-only")) vectors_only = true;
        else if (!strcmp(argv[i], "--topk-only")) topk_only = true;
        else if (!strcmp(argv[i], "--decode-only")) decode_only = true;
        else if (!strcmp(argv[i], "--host-only")) host_only = true;
        else if (!strcmp(argv[i], "--vectors") && i + 1 < argc) vec = argv[++i];
        else if (!strcmp(argv[i], "--log") && i + 1 < argc) g_log = fopen(argv[++i], "w");
    }
    const uint64_t seed = test_seed_from_env();
    g_rng = test_xorshift_state(seed);
    if (g_log) fprintf(g_log, "seed %llu\n", (unsigned long long)seed);
    run_query_ranges_host(host_only ? 2000 : 200);
    int ndev = 0;
    if (host_only || cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        if (!host_only) printf("GPU tests skipped: no CUDA device\n");
        printf("%d passed, %d failed\n", g_pass, g_fail);
        return g_fail ? 1 : 0;
    }
    cudaDeviceProp prop;
    cudaGetDeviceProperties(&prop, 0);
    logf_("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);

    auto mk = [](const char *name, nsa_config cfg, std::vector<int32_t> cu, int H, int Hkv, int Dk,
                 int Dv, nsa_dtype dt, bool gates) {
        Case c;
        c.name = name; c.cfg = cfg; c.cu = cu; c.H = H; c.Hkv = Hkv; c.Dk = Dk; c.Dv = Dv;
        c.dt = dt; c.gates = gates; c.qscale = 2.0;
        return c;
    };
    nsa_config small = nsa_config_paper();
    small.l = 16; small.d = 8; small.lp = 32; small.n = 4; small.w = 48;
    /* the decode case whose graph capture is checked too (chained launches) */
    const char *const decode_graph_case = "decode b3 paper long caches G8";
    std::vector<Case> cases;
    cases.push_back(mk("small varlen G4 bf16 d128 gates", small, {0, 0, 1, 5, 40, 300}, 8, 2, 128, 128, NSA_BF16, true));
    if (!quick || decode_only) {
        cases.push_back(mk("paper varlen G4 bf16 d128 gates", nsa_config_paper(), {0, 0, 1, 7, 300, 1400}, 8, 2, 128, 128, NSA_BF16, true));
        cases.push_back(mk("paper varlen G4 fp16 d128", nsa_config_paper(), {0, 3, 700, 1500}, 8, 2, 128, 128, NSA_FP16, false));
        cases.push_back(mk("paper G16 bf16 d192/128 gates", nsa_config_paper(), {0, 1100}, 16, 1, 192, 128, NSA_BF16, true));
        cases.push_back(mk("paper G1 bf16 d64", nsa_config_paper(), {0, 900, 1000}, 2, 2, 64, 64, NSA_BF16, true));
        cases.push_back(mk("fla G16 bf16 d64 gates", nsa_config_fla(), {0, 1200, 2100}, 16, 1, 64, 64, NSA_BF16, true));
        cases.push_back(mk("tile lp64 bq64 G4 fp16 d128", nsa_config_tile(64, 64), {0, 10, 1000, 1300}, 8, 2, 128, 128, NSA_FP16, true));
        cases.push_back(mk("tile lp128 bq128 G1 bf16 d192", nsa_config_tile(128, 128), {0, 1500}, 2, 2, 192, 128, NSA_BF16, true));
        nsa_config lg = nsa_config_paper(); lg.score_mode = NSA_SCORE_LOGITS;
        cases.push_back(mk("paper logits G4 bf16 d64", lg, {0, 600, 1300}, 8, 2, 64, 64, NSA_BF16, false));
        unsigned brs[6] = {NSA_BRANCH_CMP, NSA_BRANCH_SLC, NSA_BRANCH_WIN, NSA_BRANCH_CMP | NSA_BRANCH_SLC,
                           NSA_BRANCH_SLC | NSA_BRANCH_WIN, NSA_BRANCH_CMP | NSA_BRANCH_WIN};
        const char *brn[6] = {"cmp alone", "slc alone", "win alone", "cmp+slc", "slc+win", "cmp+win"};
        for (int i = 0; i < 6; ++i) {
            nsa_config cf = nsa_config_paper(); cf.branches = brs[i];
            cases.push_back(mk(brn[i], cf, {0, 5, 900}, 8, 2, 128, 128, NSA_BF16, i % 2 == 0));
        }
        Case cs = mk("caller indices G4 bf16", nsa_config_paper(), {0, 2, 800, 1000}, 8, 2, 128, 128, NSA_BF16, true);
        cs.caller_sel = true; cases.push_back(cs);
        Case cm = mk("caller indices out of order, repeated", nsa_config_paper(), {0, 3, 900}, 16, 2, 128, 128, NSA_BF16, true);
        cm.caller_sel = cm.caller_mixed = true; cases.push_back(cm);
        Case cc = mk("caller-compressed G4 bf16", nsa_config_paper(), {0, 30, 900}, 8, 2, 128, 128, NSA_BF16, true);
        cc.caller_cmp = true; cc.cfg.caller_compressed = 1; cases.push_back(cc);
        Case cc2 = mk("caller-compressed cmp off", nsa_config_paper(), {0, 700}, 8, 2, 64, 64, NSA_BF16, false);
        cc2.caller_cmp = true; cc2.cfg.caller_compressed = 1; cc2.cfg.branches = NSA_BRANCH_SLC | NSA_BRANCH_WIN; cases.push_back(cc2);
        Case dec = mk("decode 1 query/seq", nsa_config_paper(), {0, 1, 100, 1000, 2500}, 16, 4, 128, 128, NSA_BF16, true);
        dec.cuq = {0, 1, 2, 3, 4}; cases.push_back(dec);
        Case chk = mk("chunked prefill suffixes", nsa_config_paper(), {0, 50, 1000, 2100}, 8, 2, 128, 128, NSA_BF16, true);
        chk.cuq = {0, 50, 80, 280}; cases.push_back(chk);
        Case chk2 = mk("suffix queries tile bq64", nsa_config_tile(64, 64), {0, 1000, 1600}, 8, 2, 64, 64, NSA_BF16, false);
        chk2.cuq = {0, 100, 101}; cases.push_back(chk2);
        Case strided = mk("GQA16 H32 fp16 d128 gates", nsa_config_paper(), {0, 640}, 32, 2, 128, 128, NSA_FP16, true);
        cases.push_back(strided);
        /* sharp inputs: Q of scale 8 and 16 (the other cases: 2), logits of
           standard deviation about 2.7 and 5.3, where the softmax puts most
           of a row on a few keys and dS = P (dP - Delta) cancels most */
        Case sh1 = mk("sharp Q scale 8 paper G4 bf16 d128 gates", nsa_config_paper(), {0, 40, 1300}, 8, 2, 128, 128, NSA_BF16, true);
        sh1.qscale = 8.0; cases.push_back(sh1);
        Case sh2 = mk("sharp Q scale 16 fla G16 fp16 d64", nsa_config_fla(), {0, 1500}, 16, 1, 64, 64, NSA_FP16, false);
        sh2.qscale = 16.0; cases.push_back(sh2);
        /* selections that only subnormal probabilities decide (make_inputs) */
        Case sub = mk("subnormal selection scores paper G16 bf16 d64", nsa_config_paper(), {0, 2048}, 16, 1, 64, 64, NSA_BF16, false);
        sub.caller_cmp = sub.subnormal_scores = true; sub.cfg.caller_compressed = 1; cases.push_back(sub);
        /* decode path (one query per sequence, kernels/nsa_decode.cuh): batch 1, 3, 8;
           caches not multiples of d, l, l'; fewer blocks than n; both presets */
        Case d1 = mk("decode b1 paper G16 d128 gates", nsa_config_paper(), {0, 9001}, 16, 1, 128, 128, NSA_BF16, true);
        d1.cuq = {0, 1}; cases.push_back(d1);
        Case d3 = mk("decode b3 paper G4 fp16", nsa_config_paper(), {0, 1, 778, 2067}, 8, 2, 128, 128, NSA_FP16, false);
        d3.cuq = {0, 1, 2, 3}; cases.push_back(d3);
        Case d8 = mk("decode b8 fla G16 d64 gates", nsa_config_fla(), {0, 63, 127, 192, 1192, 1321, 1323, 5420, 5720}, 16, 1, 64, 64, NSA_BF16, true);
        d8.cuq = {0, 1, 2, 3, 4, 5, 6, 7, 8}; cases.push_back(d8);
        Case d8p = mk("decode b8 paper G8 d128 short", nsa_config_paper(), {0, 31, 32, 33, 100, 600, 1111, 1151, 1600}, 16, 2, 128, 128, NSA_BF16, true);
        d8p.cuq = {0, 1, 2, 3, 4, 5, 6, 7, 8}; cases.push_back(d8p);
        /* G = 1: 8 heads, so that dgates (3 queries x H x 3) is large enough
           for its error to be a measure, not one element's rounding */
        Case dg1 = mk("decode b3 paper G1 d192", nsa_config_paper(), {0, 3000, 3517, 4000}, 8, 8, 192, 128, NSA_BF16, true);
        dg1.cuq = {0, 1, 2, 3}; cases.push_back(dg1);
        nsa_config dlg = nsa_config_paper(); dlg.score_mode = NSA_SCORE_LOGITS;
        Case dl = mk("decode b3 paper logits G4 d64", dlg, {0, 700, 1500, 3000}, 8, 2, 64, 64, NSA_BF16, false);
        dl.cuq = {0, 1, 2, 3}; cases.push_back(dl);
        nsa_config dsw = nsa_config_paper(); dsw.branches = NSA_BRANCH_SLC | NSA_BRANCH_WIN;
        Case ds = mk("decode b3 slc+win caller-compressed", dsw, {0, 200, 1000, 2100}, 8, 2, 128, 128, NSA_BF16, true);
        ds.cuq = {0, 1, 2, 3}; ds.caller_cmp = true; ds.cfg.caller_compressed = 1; cases.push_back(ds);
        nsa_config dcw = nsa_config_paper(); dcw.branches = NSA_BRANCH_CMP | NSA_BRANCH_WIN;
        Case dc = mk("decode b3 cmp+win", dcw, {0, 20, 1000, 2100}, 8, 2, 128, 128, NSA_BF16, false);
        dc.cuq = {0, 1, 2, 3}; cases.push_back(dc);
        /* caches of more than NSA_DEC_THREADS selection blocks: the selection
           split over several CTAs per (sequence, kv head), merged by the last;
           sequences of fewer blocks than the longest leave CTAs without any */
        Case dlong = mk(decode_graph_case, nsa_config_paper(), {0, 16449, 36449, 96449}, 16, 2, 128, 128, NSA_BF16, true);
        dlong.cuq = {0, 1, 2, 3}; cases.push_back(dlong);
        /* l'/d = 32: fewer selection blocks a select CTA (its compressed range
           staged on chip is rl * blocks + rk - 1 floats) */
        nsa_config dfine = nsa_config_paper();
        dfine.l = 16; dfine.d = 2; dfine.lp = 64; dfine.n = 8; dfine.w = 256;
        Case dfn = mk("decode b2 l16 d2 l'64 n8 G4", dfine, {0, 9000, 20000}, 8, 2, 64, 64, NSA_BF16, false);
        dfn.cuq = {0, 1, 2}; cases.push_back(dfn);
    }
    if (only) {
        int n = 0;
        for (auto &c : cases)
            if (c.name.find(only) != std::string::npos) { run_case(c); ++n; }
        if (n == 0) {
            logf_("FAIL --case %s: no case of that name\n", only);
            g_fail++;
        }
    } else if (topk_only) {
        run_topk(quick);
        run_topk_blocks(quick);
    } else if (decode_only) {
        /* --quick: one case whose selection is split over CTAs, one not */
        for (auto &c : cases)
            if (c.name.compare(0, 7, "decode ") == 0 &&
                (!quick || c.name == "decode 1 query/seq" || c.name == "decode b2 l16 d2 l'64 n8 G4"))
                run_case(c);
        for (auto &c : cases)
            if (!quick && c.name == decode_graph_case) run_graph(c);
        run_compress_append();
    } else if (!vectors_only) {
        for (auto &c : cases) run_case(c);
        run_stages(cases[0]);
        if (!quick) run_stages(mk("stages paper G4 bf16", nsa_config_paper(), {0, 3, 600, 1100}, 8, 2, 64, 64, NSA_BF16, true));
        run_graph(cases[0]);
        for (auto &c : cases) /* the decode path's chained launches */
            if (c.name == decode_graph_case) run_graph(c);
        run_future_nonfinite(NSA_BRANCH_SLC, 400);
        run_future_nonfinite(NSA_BRANCH_CMP | NSA_BRANCH_SLC | NSA_BRANCH_WIN, 384);
        run_errors();
        run_workspace_bound();
        run_compress_append();
        run_topk(quick);
        run_topk_blocks(quick);
    }
    if (vec && !topk_only && !decode_only) run_vectors(vec);
    if (big && !topk_only && !decode_only) run_big(300000, 64, 4, "big T=300K H=64 (fwd, sampled rows)");
    if (huge && !topk_only && !decode_only)
        run_big(1048576, 32, 8, "big T=1M H=32 Hkv=8 (fwd, sampled rows)");

    logf_("\n%-42s %6s %6s %10s %24s\n", "case", "checks", "fails", "worst g/r", "sel rows/diff/near-tie");
    for (auto &r : g_rows)
        logf_("%-42s %6d %6d %10.2f %10lld/%lld/%lld\n", r.name.c_str(), r.checks, r.fails,
              r.worst_ratio, r.sel_rows, r.sel_diff, r.sel_ties);
    logf_("%d passed, %d failed\n", g_pass, g_fail);
    if (g_log) fclose(g_log);
    return g_fail ? 1 : 0;
}
