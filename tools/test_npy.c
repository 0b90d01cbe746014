/* test_npy.c -- unit tests of tools/npy.h and tools/json.h.

   Build:  cc -std=c99 -O2 -I. tools/test_npy.c -o build/test_npy
   Usage:  build/test_npy TMPDIR      (writes scratch files there)
   Prints one line per failed check and "N passed, N failed"; exit status 1
   on failure. */
#include "npy.h"
#include "json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;
static char tmpdir[1024];

static void check(int ok, const char *what)
{
    if (ok) ++passed;
    else {
        ++failed;
        printf("FAIL %s\n", what);
    }
}

static void path_of(char *buf, size_t len, const char *name)
{
    size_t n = strlen(tmpdir);
    if (n + strlen(name) + 2 > len) { buf[0] = '\0'; return; }
    memcpy(buf, tmpdir, n);
    buf[n] = '/';
    strcpy(buf + n + 1, name);
}

static void roundtrip(npy_dtype dt, int ndim, const int64_t *shape)
{
    char path[1200], err[256], what[128];
    int64_t n = 1, i;
    int d, ok;
    size_t es = npy_dtype_size(dt);
    unsigned char *data;
    npy_array a;
    for (d = 0; d < ndim; ++d) n *= shape[d];
    data = (unsigned char *)malloc((size_t)(n * (int64_t)es + 1));
    for (i = 0; i < n * (int64_t)es; ++i) data[i] = (unsigned char)(i * 37 + 11);
    if (dt == NPY_F4) for (i = 0; i < n; ++i) ((float *)data)[i] = (float)i * 0.25f - 3.0f;
    if (dt == NPY_F8) for (i = 0; i < n; ++i) ((double *)data)[i] = (double)i / 3.0 - 1e300 * (i == 1);
    path_of(path, sizeof path, "rt.npy");
    sprintf(what, "roundtrip %s ndim %d: write", npy_dtype_descr(dt), ndim);
    check(npy_write(path, dt, ndim, shape, data, err, sizeof err) == 0, what);
    sprintf(what, "roundtrip %s ndim %d: read", npy_dtype_descr(dt), ndim);
    ok = npy_read(path, &a, err, sizeof err) == 0;
    if (!ok) printf("  %s\n", err);
    check(ok, what);
    if (ok) {
        sprintf(what, "roundtrip %s ndim %d: dtype/shape", npy_dtype_descr(dt), ndim);
        ok = a.dtype == dt && a.ndim == ndim && a.count == n;
        for (d = 0; ok && d < ndim; ++d) ok = a.shape[d] == shape[d];
        check(ok, what);
        sprintf(what, "roundtrip %s ndim %d: data", npy_dtype_descr(dt), ndim);
        check(n == 0 || memcmp(a.data, data, (size_t)n * es) == 0, what);
        npy_free(&a);
    }
    {   /* header is padded to a multiple of 64 bytes and ends in '\n' */
        FILE *f = fopen(path, "rb");
        unsigned char h[10];
        size_t hl;
        ok = f && fread(h, 1, 10, f) == 10;
        hl = (size_t)h[8] | ((size_t)h[9] << 8);
        if (ok) {
            char *hdr = (char *)malloc(hl);
            ok = fread(hdr, 1, hl, f) == hl && (10 + hl) % 64 == 0 &&
                 hdr[hl - 1] == '\n' && h[6] == 1 && h[7] == 0;
            free(hdr);
        }
        if (f) fclose(f);
        sprintf(what, "roundtrip %s ndim %d: header alignment", npy_dtype_descr(dt), ndim);
        check(ok, what);
    }
    free(data);
}

/* Writes raw bytes (header dict text + data) as a .npy file. */
static void write_raw(const char *name, int version, const char *dict,
                      const void *data, size_t dlen, int pad_ok)
{
    char path[1200];
    FILE *f;
    size_t hl = strlen(dict);
    path_of(path, sizeof path, name);
    f = fopen(path, "wb");
    fwrite("\x93NUMPY", 1, 6, f);
    fputc(version, f);
    fputc(0, f);
    if (version == 1) {
        fputc((int)((hl + 1) & 0xff), f);
        fputc((int)((hl + 1) >> 8), f);
    } else {
        fputc((int)((hl + 1) & 0xff), f);
        fputc((int)((hl + 1) >> 8), f);
        fputc(0, f);
        fputc(0, f);
    }
    fwrite(dict, 1, hl, f);
    fputc(pad_ok ? '\n' : ' ', f);
    if (dlen) fwrite(data, 1, dlen, f);
    fclose(f);
}

static void expect_error(const char *name, const char *needle)
{
    char path[1200], err[256], what[300];
    npy_array a;
    int rc;
    path_of(path, sizeof path, name);
    rc = npy_read(path, &a, err, sizeof err);
    sprintf(what, "malformed %s is rejected", name);
    check(rc != 0, what);
    if (rc == 0) { npy_free(&a); return; }
    sprintf(what, "malformed %s: message mentions '%s' (got: %.200s)", name,
            needle, err);
    check(strstr(err, needle) != NULL, what);
}

static void test_npy(void)
{
    int64_t s3[3] = {2, 3, 4}, s1[1] = {5}, s0[1] = {0}, se[2] = {3, 0};
    float f4[6] = {1, 2, 3, 4, 5, 6};
    double d8[2];
    int t;
    npy_array a;
    char path[1200], err[256];
    for (t = 0; t < NPY_DTYPE_COUNT; ++t) {
        roundtrip((npy_dtype)t, 3, s3);
        roundtrip((npy_dtype)t, 1, s1);
    }
    roundtrip(NPY_F4, 0, s1);   /* scalar array */
    roundtrip(NPY_F8, 1, s0);   /* empty */
    roundtrip(NPY_I4, 2, se);   /* empty second dim */

    /* a header as numpy writes it, with spaces and a trailing comma */
    write_raw("ok1.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
              f4, sizeof f4, 1);
    path_of(path, sizeof path, "ok1.npy");
    check(npy_read(path, &a, err, sizeof err) == 0 && a.count == 6 &&
          a.ndim == 2 && npy_get(&a, 5) == 6.0, "numpy-style header reads");
    npy_free(&a);
    /* version 2.0, keys in another order, no trailing comma */
    write_raw("ok2.npy", 2, "{'shape': (6,), 'fortran_order': False, 'descr': '<f4'}",
              f4, sizeof f4, 1);
    path_of(path, sizeof path, "ok2.npy");
    check(npy_read(path, &a, err, sizeof err) == 0 && a.count == 6 &&
          a.ndim == 1 && npy_get(&a, 0) == 1.0, "format 2.0 header reads");
    npy_free(&a);
    /* big-endian data is converted */
    {
        unsigned char be[16];
        double v[2] = {1.5, -2.25};
        int i, k;
        for (i = 0; i < 2; ++i)
            for (k = 0; k < 8; ++k)
                be[i * 8 + k] = ((unsigned char *)&v[i])[7 - k];
        write_raw("be.npy", 1, "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }",
                  be, sizeof be, 1);
        path_of(path, sizeof path, "be.npy");
        check(npy_read(path, &a, err, sizeof err) == 0 &&
              npy_get(&a, 0) == 1.5 && npy_get(&a, 1) == -2.25,
              "big-endian '>f8' is converted");
        npy_free(&a);
    }

    /* malformed files */
    {
        char path2[1200];
        FILE *f;
        path_of(path2, sizeof path2, "magic.npy");
        f = fopen(path2, "wb");
        fputs("NOTNUMPYFILE......", f);
        fclose(f);
        expect_error("magic.npy", "magic");
        path_of(path2, sizeof path2, "empty.npy");
        f = fopen(path2, "wb");
        fclose(f);
        expect_error("empty.npy", "magic");
    }
    expect_error("does_not_exist.npy", "cannot open");
    write_raw("trunc.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
              f4, sizeof f4 - 4, 1);
    expect_error("trunc.npy", "need");
    write_raw("extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
              f4, sizeof f4, 1);
    expect_error("extra.npy", "need");
    write_raw("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
              f4, sizeof f4, 1);
    expect_error("fortran.npy", "fortran_order");
    write_raw("dtype.npy", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }",
              f4, sizeof f4, 1);
    expect_error("dtype.npy", "unsupported dtype");
    write_raw("noshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, }",
              f4, sizeof f4, 1);
    expect_error("noshape.npy", "shape");
    write_raw("badshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }",
              f4, sizeof f4, 1);
    expect_error("badshape.npy", "shape");
    write_raw("notdict.npy", 1, "['descr', '<f4']", f4, sizeof f4, 1);
    expect_error("notdict.npy", "dict");
    write_raw("version.npy", 9, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }",
              f4, sizeof f4, 1);
    expect_error("version.npy", "version");
    d8[0] = 1.0;
    d8[1] = 2.0;
    (void)d8;
}

static void test_json(void)
{
    const char *doc =
        "[ {\"name\": \"a\\\"b\\u00e9\\n\", \"cu\": [0, 1, 31, 300],"
        "   \"x\": -1.5e-3, \"t\": true, \"f\": false, \"z\": null,"
        "   \"cfg\": {\"l\": 32, \"mode\": \"probs\"}, \"empty\": [], \"eo\": {}} ]";
    json_value v;
    char err[256], path[1200];
    const json_value *c;
    FILE *f;
    check(json_parse(doc, strlen(doc), &v, err, sizeof err) == 0, "json parses");
    c = json_at(&v, 0);
    check(v.type == JSON_ARRAY && v.len == 1 && c && c->type == JSON_OBJECT,
          "json array of object");
    check(!strcmp(json_str(json_get(c, "name"), ""), "a\"b\xc3\xa9\n"),
          "json string escapes and \\u to UTF-8");
    check(json_get(c, "cu")->len == 4 &&
          json_num(json_at(json_get(c, "cu"), 3), 0) == 300, "json number array");
    check(json_num(json_get(c, "x"), 0) == -1.5e-3, "json exponent number");
    check(json_bool(json_get(c, "t"), 0) == 1 && json_bool(json_get(c, "f"), 1) == 0,
          "json true/false");
    check(json_get(c, "z")->type == JSON_NULL, "json null");
    check(json_num(json_get(json_get(c, "cfg"), "l"), 0) == 32, "json nested object");
    check(json_get(c, "empty")->len == 0 && json_get(c, "eo")->len == 0,
          "json empty containers");
    check(json_get(c, "missing") == NULL, "json missing key");
    json_free(&v);
    {
        static const char *bad[] = {"[1, 2", "{\"a\" 1}", "[01]", "[1,]",
                                    "\"abc", "tru", "[1] x", "{1: 2}",
                                    "[\"\\q\"]", ""};
        size_t i;
        char what[128];
        for (i = 0; i < sizeof bad / sizeof *bad; ++i) {
            int rc = json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err);
            sprintf(what, "json rejects '%s'", bad[i]);
            check(rc != 0 && strstr(err, "line") != NULL, what);
        }
    }
    /* writer output reads back */
    path_of(path, sizeof path, "w.json");
    f = fopen(path, "w");
    if (f) {
        json_writer w;
        jw_init(&w, f);
        jw_begin_object(&w);
        jw_key(&w, "s"); jw_string(&w, "q\"\\\n");
        jw_key(&w, "a"); jw_begin_array_inline(&w);
        jw_int(&w, 1); jw_number(&w, 0.1); jw_number(&w, 1.0 / 3.0);
        jw_bool(&w, 1); jw_null(&w);
        jw_end_array(&w);
        jw_key(&w, "o"); jw_begin_object(&w); jw_end_object(&w);
        jw_key(&w, "inf"); jw_number(&w, HUGE_VAL);
        jw_end_object(&w);
        fclose(f);
    }
    check(json_parse_file(path, &v, err, sizeof err) == 0, "json writer output parses");
    check(!strcmp(json_str(json_get(&v, "s"), ""), "q\"\\\n") &&
          json_num(json_at(json_get(&v, "a"), 1), 0) == 0.1 &&
          json_num(json_at(json_get(&v, "a"), 2), 0) == 1.0 / 3.0 &&
          json_get(&v, "inf")->type == JSON_NULL,
          "json writer values read back exactly");
    json_free(&v);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_npy TMPDIR\n");
        return 2;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s", argv[1]);
    test_npy();
    test_json();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
