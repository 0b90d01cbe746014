/* fuzz_json.c -- libFuzzer target for the JSON reader (tools/json.h) and the
   case reader built on it (nsa_vcase_from_json in tools/vectors.h).

   cases.json and case.json come from outside; any byte string must parse to
   a tree or fail with a message, and any tree must be read into a case or
   rejected, without touching memory outside the buffers. An accepted case
   is then sized through the API's validator (nsa_sizes_get), as the checker
   does before it allocates anything.

   Build and run: make fuzz. */
#define NSA_REF_IMPLEMENTATION
#include "../../nsa_ref.h"
#include "../../tools/vectors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Visits every node (the accessors must be safe on any tree). */
static double walk(const json_value *v, int depth)
{
    double s = 0.0;
    int i;
    if (!v || depth > JSON_MAX_DEPTH + 2) return 0.0;
    s += json_num(v, 0.0) + json_bool(v, 0);
    if (json_str(v, NULL)) s += (double)strlen(json_str(v, NULL));
    for (i = 0; i < v->len; ++i) {
        if (v->type == JSON_OBJECT && json_get(v, v->keys[i]) == NULL) abort();
        s += walk(v->type == JSON_ARRAY ? json_at(v, i) : &v->items[i],
                  depth + 1);
    }
    return s;
}

static void try_case(const json_value *o)
{
    nsa_vcase c;
    nsa_batch b;
    nsa_sizes sz;
    char err[512];
    static const char dummy[16];
    if (nsa_vcase_from_json(o, "dir", &c, err, sizeof err) == 0) {
        memset(&b, 0, sizeof b);
        b.B = c.B; b.T = c.T; b.TQ = c.TQ;
        b.cu_seqlens = c.cu; b.cu_seqlens_q = c.cu_q;
        b.H = c.H; b.Hkv = c.Hkv; b.Dk = c.Dk; b.Dv = c.Dv;
        b.dtype = NSA_FP32;
        b.q = b.k = b.v = dummy;
        (void)nsa_sizes_get(&c.cfg, &b, &sz);
    }
    nsa_vcase_free(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_value root;
    char err[256];
    int i;
    if (json_parse((const char *)data, size, &root, err, sizeof err) != 0)
        return 0;
    (void)walk(&root, 0);
    if (root.type == JSON_ARRAY)
        for (i = 0; i < root.len && i < 8; ++i) try_case(json_at(&root, i));
    else if (root.type == JSON_OBJECT)
        try_case(&root);
    json_free(&root);
    return 0;
}
