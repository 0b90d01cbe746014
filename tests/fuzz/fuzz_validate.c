/* fuzz_validate.c -- libFuzzer target for the API's validator (nsa.h) and
   the reference behind it (nsa_ref.h).

   The contract's Errors section: "Every entry point validates its arguments
   before touching memory ... Bad input never crashes, never writes outside
   the caller's buffers". The input bytes describe a config and a batch
   (each field a small signed offset from a valid small case, or, behind a
   flag, any 32-bit value), cu_seqlens / cu_seqlens_q, strides, caller
   selection and caller-compressed K/V, and the contents of every tensor.
   nsa_sizes_get must accept or reject it; an accepted small batch is then
   run through nsa_ref_forward and nsa_ref_backward with every buffer
   allocated to exactly the size the API documents (strided extents computed
   here, independently of nsa.h), so AddressSanitizer sees any access the
   validator should have stopped. A workspace one byte short must be
   refused with NSA_ERR_WORKSPACE.

   Build and run: make fuzz. */
#define NSA_REF_IMPLEMENTATION
#include "../../nsa_ref.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct rd { const uint8_t *p; size_t n; } rd;

static unsigned u8(rd *r)
{
    if (!r->n) return 0;
    --r->n;
    return *r->p++;
}
static uint32_t u32(rd *r)
{
    uint32_t x = u8(r);
    x |= (uint32_t)u8(r) << 8;
    x |= (uint32_t)u8(r) << 16;
    return x | (uint32_t)u8(r) << 24;
}
/* base + a small signed step, or (1 in 16) any 32-bit value */
static int field(rd *r, int base)
{
    unsigned c = u8(r);
    if ((c & 0xf0) == 0xf0) return (int)u32(r);
    return base + (int)(int8_t)(uint8_t)(c << 4) / 16;
}

/* Elements a strided [N, heads, D] tensor spans (0 when N is 0). */
static int64_t extent(int64_t N, int heads, int D, int64_t st, int64_t sh)
{
    if (N <= 0) return 0;
    if (!sh) sh = D;
    if (!st) st = (int64_t)heads * D;
    return (N - 1) * st + (int64_t)(heads - 1) * sh + D;
}

static void *buf(int64_t n, size_t es, rd *r)
{
    size_t bytes = (size_t)(n > 0 ? n : 0) * es, i;
    unsigned char *p = (unsigned char *)malloc(bytes ? bytes : 1);
    if (!p) abort();
    /* values: small numbers mostly, any bits sometimes */
    for (i = 0; i < bytes; ++i) p[i] = (unsigned char)(u8(r) & 0x3f);
    return p;
}

#define LIMIT_T 48
#define LIMIT_ELEMS 20000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rd r = {data, size};
    nsa_config cfg;
    nsa_batch b;
    nsa_sizes sz;
    nsa_saved sv;
    nsa_grads gr;
    int32_t cu[9], cuq[9], i;
    unsigned flags;
    size_t es, wsb = 0;
    void *q, *k, *v, *kc, *vc, *g, *o, *dO, *dq, *dk, *dv, *dg, *dkc, *dvc, *ws;
    float *lse[3];
    int32_t *sel, *cnt, *csel = NULL, *ccnt = NULL;
    nsa_status st;

    cfg = nsa_config_paper();
    cfg.l = field(&r, 8);
    cfg.d = field(&r, 4);
    cfg.lp = field(&r, 8);
    cfg.n = field(&r, 3);
    cfg.n_init = field(&r, 1);
    cfg.n_local = field(&r, 1);
    cfg.w = field(&r, 8);
    cfg.bq = field(&r, 1);
    flags = u8(&r);
    cfg.branches = (flags & 7) ? (flags & 7) : NSA_BRANCH_ALL;
    if (flags & 8) cfg.branches = u32(&r);
    cfg.score_mode = (nsa_score_mode)((flags >> 4) & 1);
    cfg.caller_compressed = (flags >> 5) & 1;
    cfg.accum = (nsa_accum)((flags >> 6) & 1);
    if (flags & 0x80) {
        uint32_t s = u32(&r);
        memcpy(&cfg.scale, &s, sizeof s);
    }
    flags = u8(&r);
    if (flags & 1) cfg.score_mode = (nsa_score_mode)field(&r, 0);
    if (flags & 2) cfg.accum = (nsa_accum)field(&r, 0);
    if (flags & 4) cfg.deterministic = field(&r, 1);

    memset(&b, 0, sizeof b);
    b.B = field(&r, 2);
    b.H = field(&r, 2);
    b.Hkv = field(&r, 1);
    b.Dk = field(&r, 4);
    b.Dv = field(&r, 4);
    b.dtype = (nsa_dtype)((u8(&r) & 3) % 3);
    if (flags & 8) b.dtype = (nsa_dtype)field(&r, 0);
    {   /* cu_seqlens: B+1 entries (at most 9 kept), increments or any */
        int nb = b.B >= 0 && b.B < 8 ? b.B : 8;
        cu[0] = cuq[0] = 0;
        for (i = 1; i <= nb; ++i) {
            int inc = field(&r, 12);
            cu[i] = cu[i - 1] + (inc >= -64 && inc <= 64 ? inc : inc / 65536);
        }
        if (flags & 16) cu[0] = field(&r, 0);
        b.cu_seqlens = cu;
        b.T = (int64_t)cu[nb] + ((flags & 32) ? field(&r, 0) : 0);
        if (b.B != nb) b.B = b.B < 0 ? b.B : nb; /* B > 8: not representable */
        if (flags & 64) {
            /* suffix queries: query count per sequence = keys - offset */
            cuq[0] = 0;
            for (i = 1; i <= nb; ++i) {
                int64_t nk = (int64_t)cu[i] - cu[i - 1];
                int64_t nq = nk - (int64_t)(u8(&r) % 24);
                if (nq < 0 && !(u8(&r) & 1)) nq = 0;
                nq += cuq[i - 1];
                cuq[i] = nq < INT32_MIN ? INT32_MIN
                       : nq > INT32_MAX ? INT32_MAX : (int32_t)nq;
            }
            b.cu_seqlens_q = cuq;
            b.TQ = (int64_t)cuq[nb] + ((flags & 128) ? field(&r, 0) : 0);
        }
    }
    flags = u8(&r);
    if (flags & 1) b.q_stride_token = (int64_t)field(&r, 0) * 8 + (int64_t)b.H * b.Dk;
    if (flags & 2) b.q_stride_head = (int64_t)field(&r, 0) + b.Dk;
    if (flags & 4) b.k_stride_token = (int64_t)field(&r, 0) * 8 + (int64_t)b.Hkv * b.Dk;
    if (flags & 8) b.k_stride_head = (int64_t)field(&r, 0) + b.Dk;
    if (flags & 16) b.v_stride_token = (int64_t)field(&r, 0) * 8 + (int64_t)b.Hkv * b.Dv;
    if (flags & 32) b.v_stride_head = (int64_t)field(&r, 0) + b.Dv;
    {
        static const char dummy[64];
        b.q = b.k = b.v = dummy;
        st = nsa_sizes_get(&cfg, &b, &sz);
        b.q = b.k = b.v = NULL;
    }
    if (st != NSA_OK) {
        if (nsa_last_error()[0] == '\0') abort(); /* a message, always */
        return 0;
    }
    /* accepted: the sizes the API reports must be the documented ones */
    {
        const int64_t TQ = b.cu_seqlens_q ? b.TQ : b.T;
        if (sz.T != b.T || sz.TQ != TQ || sz.q != TQ * b.H * b.Dk ||
            sz.o != TQ * b.H * b.Dv || sz.k != b.T * b.Hkv * b.Dk ||
            sz.v != b.T * b.Hkv * b.Dv || sz.lse != TQ * b.H ||
            sz.gates != TQ * b.H * 3)
            abort();
    }
    /* the run below is for small batches only (the fuzzer's speed) */
    if (b.T > LIMIT_T || b.H > 4 || b.Dk > 16 || b.Dv > 16 ||
        (int64_t)cfg.n * cfg.lp > 512 || cfg.w > 512 || sz.q > LIMIT_ELEMS || sz.k > LIMIT_ELEMS ||
        sz.v > LIMIT_ELEMS || sz.o > LIMIT_ELEMS || sz.block_mask > LIMIT_ELEMS ||
        sz.sel_idx > LIMIT_ELEMS || sz.k_cmp > LIMIT_ELEMS ||
        sz.v_cmp > LIMIT_ELEMS ||
        extent(sz.TQ, b.H, b.Dk, b.q_stride_token, b.q_stride_head) > LIMIT_ELEMS ||
        extent(b.T, b.Hkv, b.Dk, b.k_stride_token, b.k_stride_head) > LIMIT_ELEMS ||
        extent(b.T, b.Hkv, b.Dv, b.v_stride_token, b.v_stride_head) > LIMIT_ELEMS)
        return 0;

    /* run it, every buffer exactly as large as documented */
    es = nsa_dtype_size(b.dtype);
    q = buf(extent(sz.TQ, b.H, b.Dk, b.q_stride_token, b.q_stride_head), es, &r);
    k = buf(extent(b.T, b.Hkv, b.Dk, b.k_stride_token, b.k_stride_head), es, &r);
    v = buf(extent(b.T, b.Hkv, b.Dv, b.v_stride_token, b.v_stride_head), es, &r);
    kc = buf(sz.k_cmp, es, &r);
    vc = buf(sz.v_cmp, es, &r);
    g = buf(sz.gates, es, &r);
    dO = buf(sz.o, es, &r);
    o = buf(sz.o, es, &r);
    dq = buf(sz.q, es, &r); dk = buf(sz.k, es, &r); dv = buf(sz.v, es, &r);
    dg = buf(sz.gates, es, &r);
    dkc = buf(sz.k_cmp, es, &r); dvc = buf(sz.v_cmp, es, &r);
    for (i = 0; i < 3; ++i) lse[i] = (float *)buf(sz.lse, sizeof(float), &r);
    sel = (int32_t *)buf(sz.sel_idx, sizeof(int32_t), &r);
    cnt = (int32_t *)buf(sz.sel_count, sizeof(int32_t), &r);
    flags = u8(&r);
    if (flags & 1) {
        /* caller selection: any indices and counts (entries outside
           [0, blocks) are ignored, counts clamped: nsa.h) */
        int64_t e;
        csel = (int32_t *)buf(sz.sel_idx, sizeof(int32_t), &r);
        ccnt = (int32_t *)buf(sz.sel_count, sizeof(int32_t), &r);
        for (e = 0; e < sz.sel_idx; ++e) csel[e] = (int32_t)(int8_t)u8(&r);
        for (e = 0; e < sz.sel_count; ++e) ccnt[e] = (int32_t)(int8_t)u8(&r);
        b.sel_idx = csel;
        b.sel_count = ccnt;
    }
    b.q = q; b.k = k; b.v = v;
    if (cfg.caller_compressed) { b.k_cmp = kc; b.v_cmp = vc; }
    st = nsa_ref_workspace_size(&cfg, &b, &wsb);
    if (st != NSA_OK) abort(); /* sizes were accepted above */
    /* a huge n (with caller selection, entries may repeat, so the selected
       branch sizes its rows by n * l') asks for a large workspace: valid,
       but not for a fuzzer's memory */
    if (wsb > ((size_t)1 << 20)) wsb = 0;
    ws = wsb ? malloc(wsb) : NULL;
    if (!wsb) goto done;
    if (!ws) abort();
    memset(&sv, 0, sizeof sv); /* every field, o_branch (none) too */
    sv.lse_cmp = lse[0]; sv.lse_slc = lse[1]; sv.lse_win = lse[2];
    sv.sel_idx = sel; sv.sel_count = cnt; sv.k_cmp = kc; sv.v_cmp = vc;
    memset(&gr, 0, sizeof gr);
    gr.dq = dq; gr.dk = dk; gr.dv = dv;
    gr.dgates = (flags & 2) ? NULL : dg;
    if (cfg.caller_compressed) { gr.dk_cmp = dkc; gr.dv_cmp = dvc; }
    if (wsb > 0 && (flags & 4)) {
        /* one byte short: refused, nothing written past it */
        st = nsa_ref_forward(&cfg, &b, (flags & 2) ? NULL : g, o, &sv, ws,
                             wsb - 1);
        if (st != NSA_ERR_WORKSPACE) abort();
    }
    st = nsa_ref_forward(&cfg, &b, (flags & 2) ? NULL : g, o, &sv, ws, wsb);
    if (st == NSA_OK)
        st = nsa_ref_backward(&cfg, &b, (flags & 2) ? NULL : g, dO, &sv, &gr,
                              ws, wsb);
    (void)st;
done:
    free(q); free(k); free(v); free(kc); free(vc); free(g); free(dO); free(o);
    free(dq); free(dk); free(dv); free(dg); free(dkc); free(dvc); free(ws);
    for (i = 0; i < 3; ++i) free(lse[i]);
    free(sel); free(cnt); free(csel); free(ccnt);
    return 0;
}
