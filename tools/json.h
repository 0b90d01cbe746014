/* json.h -- a minimal JSON reader and writer (C99, libc only, header-only).

   Reader: parses a whole document (objects, arrays, numbers, strings with
   escapes incl. \uXXXX -> UTF-8, true, false, null) into a tree.

     json_value root;
     char err[256];
     if (json_parse_file("cases.json", &root, err, sizeof err) != 0) ...
     const json_value *c = json_at(&root, 0);
     double H = json_num(json_get(c, "H"), -1);
     json_free(&root);

   Writer: pretty-printed output to a FILE*, commas handled by the writer.

     json_writer w;
     jw_init(&w, f);
     jw_begin_object(&w);
     jw_key(&w, "H"); jw_int(&w, 4);
     jw_key(&w, "shape"); jw_begin_array_inline(&w); jw_int(&w, 3); jw_end_array(&w);
     jw_end_object(&w);

   Every function is static; the header may be included anywhere. */
#ifndef NSA_TOOLS_JSON_H
#define NSA_TOOLS_JSON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define JSON__UNUSED __attribute__((unused))
#else
#define JSON__UNUSED
#endif
#define JSONDEF static JSON__UNUSED

#define JSON_MAX_DEPTH 64

typedef enum json_type {
    JSON_NULL = 0, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} json_type;

typedef struct json_value {
    json_type type;
    int boolean;               /* JSON_BOOL */
    double number;             /* JSON_NUMBER */
    char *string;              /* JSON_STRING (NUL-terminated, UTF-8) */
    int len;                   /* JSON_ARRAY / JSON_OBJECT: element count */
    struct json_value *items;  /* elements / member values */
    char **keys;               /* JSON_OBJECT: member names */
} json_value;

typedef struct json__parser {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} json__parser;

static JSON__UNUSED void json__msg(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static JSON__UNUSED void json__fail(json__parser *ps, const char *fmt, ...)
{
    va_list ap;
    char msg[200];
    int line = 1, col = 1;
    const char *q;
    if (ps->failed) return;
    ps->failed = 1;
    for (q = ps->start; q < ps->p && q < ps->end; ++q) {
        if (*q == '\n') { ++line; col = 1; } else ++col;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json__msg(ps->err, ps->errlen, "line %d, column %d: %s", line, col, msg);
}

JSONDEF void json_free(json_value *v)
{
    int i;
    if (!v) return;
    if (v->type == JSON_STRING) free(v->string);
    if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
        for (i = 0; i < v->len; ++i) {
            json_free(&v->items[i]);
            if (v->keys) free(v->keys[i]);
        }
        free(v->items);
        free(v->keys);
    }
    memset(v, 0, sizeof *v);
}

static JSON__UNUSED void json__ws(json__parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
                               *ps->p == '\n' || *ps->p == '\r'))
        ++ps->p;
}

static JSON__UNUSED int json__hex(json__parser *ps, unsigned *out)
{
    unsigned v = 0;
    int i;
    if (ps->end - ps->p < 4) return 0;
    for (i = 0; i < 4; ++i) {
        char c = ps->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    ps->p += 4;
    *out = v;
    return 1;
}

static JSON__UNUSED char *json__string(json__parser *ps)
{
    size_t cap = 16, n = 0;
    char *s = (char *)malloc(cap);
    if (!s) { json__fail(ps, "out of memory"); return NULL; }
    ++ps->p; /* opening quote */
    for (;;) {
        unsigned char c;
        char tmp[4];
        size_t k = 0, t;
        if (ps->p >= ps->end) { json__fail(ps, "unterminated string"); break; }
        c = (unsigned char)*ps->p++;
        if (c == '"') {
            s[n] = '\0';
            return s;
        }
        if (c < 0x20) { json__fail(ps, "control character in string"); break; }
        if (c != '\\') {
            tmp[k++] = (char)c;
        } else {
            unsigned u;
            if (ps->p >= ps->end) { json__fail(ps, "unterminated escape"); break; }
            c = (unsigned char)*ps->p++;
            switch (c) {
            case '"': tmp[k++] = '"'; break;
            case '\\': tmp[k++] = '\\'; break;
            case '/': tmp[k++] = '/'; break;
            case 'b': tmp[k++] = '\b'; break;
            case 'f': tmp[k++] = '\f'; break;
            case 'n': tmp[k++] = '\n'; break;
            case 'r': tmp[k++] = '\r'; break;
            case 't': tmp[k++] = '\t'; break;
            case 'u':
                if (!json__hex(ps, &u)) { json__fail(ps, "bad \\u escape"); goto fail; }
                if (u >= 0xd800 && u < 0xdc00) { /* surrogate pair */
                    unsigned lo;
                    if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u')
                        { json__fail(ps, "lone surrogate"); goto fail; }
                    ps->p += 2;
                    if (!json__hex(ps, &lo) || lo < 0xdc00 || lo > 0xdfff)
                        { json__fail(ps, "bad surrogate pair"); goto fail; }
                    u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                }
                if (u < 0x80) tmp[k++] = (char)u;
                else if (u < 0x800) {
                    tmp[k++] = (char)(0xc0 | (u >> 6));
                    tmp[k++] = (char)(0x80 | (u & 0x3f));
                } else if (u < 0x10000) {
                    tmp[k++] = (char)(0xe0 | (u >> 12));
                    tmp[k++] = (char)(0x80 | ((u >> 6) & 0x3f));
                    tmp[k++] = (char)(0x80 | (u & 0x3f));
                } else {
                    tmp[k++] = (char)(0xf0 | (u >> 18));
                    tmp[k++] = (char)(0x80 | ((u >> 12) & 0x3f));
                    tmp[k++] = (char)(0x80 | ((u >> 6) & 0x3f));
                    tmp[k++] = (char)(0x80 | (u & 0x3f));
                }
                break;
            default: json__fail(ps, "bad escape '\\%c'", c); goto fail;
            }
        }
        if (n + k + 1 > cap) {
            char *ns;
            cap = cap * 2 + k;
            ns = (char *)realloc(s, cap);
            if (!ns) { json__fail(ps, "out of memory"); break; }
            s = ns;
        }
        for (t = 0; t < k; ++t) s[n++] = tmp[t];
    }
fail:
    free(s);
    return NULL;
}

static JSON__UNUSED int json__value(json__parser *ps, json_value *v, int depth);

static JSON__UNUSED int json__push(json__parser *ps, json_value *v, int *cap,
                                    int with_keys)
{
    if (v->len == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        json_value *ni = (json_value *)realloc(v->items, (size_t)nc * sizeof *ni);
        if (!ni) { json__fail(ps, "out of memory"); return 0; }
        v->items = ni;
        if (with_keys) {
            char **nk = (char **)realloc(v->keys, (size_t)nc * sizeof *nk);
            if (!nk) { json__fail(ps, "out of memory"); return 0; }
            v->keys = nk;
        }
        *cap = nc;
    }
    memset(&v->items[v->len], 0, sizeof v->items[0]);
    if (with_keys) v->keys[v->len] = NULL;
    return 1;
}

static JSON__UNUSED int json__value(json__parser *ps, json_value *v, int depth)
{
    memset(v, 0, sizeof *v);
    json__ws(ps);
    if (depth > JSON_MAX_DEPTH) { json__fail(ps, "nested too deeply"); return 0; }
    if (ps->p >= ps->end) { json__fail(ps, "unexpected end of input"); return 0; }
    switch (*ps->p) {
    case '{': {
        int cap = 0;
        v->type = JSON_OBJECT;
        ++ps->p;
        json__ws(ps);
        if (ps->p < ps->end && *ps->p == '}') { ++ps->p; return 1; }
        for (;;) {
            char *key;
            json__ws(ps);
            if (ps->p >= ps->end || *ps->p != '"') {
                json__fail(ps, "expected a string key");
                return 0;
            }
            if (!(key = json__string(ps))) return 0;
            if (!json__push(ps, v, &cap, 1)) { free(key); return 0; }
            v->keys[v->len] = key;
            ++v->len; /* counted now so json_free releases it on error */
            json__ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                json__fail(ps, "expected ':' after key \"%s\"", key);
                return 0;
            }
            ++ps->p;
            if (!json__value(ps, &v->items[v->len - 1], depth + 1)) return 0;
            json__ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ++ps->p; continue; }
            if (ps->p < ps->end && *ps->p == '}') { ++ps->p; return 1; }
            json__fail(ps, "expected ',' or '}' in object");
            return 0;
        }
    }
    case '[': {
        int cap = 0;
        v->type = JSON_ARRAY;
        ++ps->p;
        json__ws(ps);
        if (ps->p < ps->end && *ps->p == ']') { ++ps->p; return 1; }
        for (;;) {
            if (!json__push(ps, v, &cap, 0)) return 0;
            ++v->len;
            if (!json__value(ps, &v->items[v->len - 1], depth + 1)) return 0;
            json__ws(ps);
            if (ps->p < ps->end && *ps->p == ',') { ++ps->p; continue; }
            if (ps->p < ps->end && *ps->p == ']') { ++ps->p; return 1; }
            json__fail(ps, "expected ',' or ']' in array");
            return 0;
        }
    }
    case '"':
        v->type = JSON_STRING;
        v->string = json__string(ps);
        if (!v->string) { v->type = JSON_NULL; return 0; }
        return 1;
    case 't':
        if (ps->end - ps->p >= 4 && strncmp(ps->p, "true", 4) == 0) {
            ps->p += 4; v->type = JSON_BOOL; v->boolean = 1; return 1;
        }
        break;
    case 'f':
        if (ps->end - ps->p >= 5 && strncmp(ps->p, "false", 5) == 0) {
            ps->p += 5; v->type = JSON_BOOL; v->boolean = 0; return 1;
        }
        break;
    case 'n':
        if (ps->end - ps->p >= 4 && strncmp(ps->p, "null", 4) == 0) {
            ps->p += 4; v->type = JSON_NULL; return 1;
        }
        break;
    default: {
        /* number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
        const char *q = ps->p;
        char buf[64];
        size_t n;
        if (q < ps->end && *q == '-') ++q;
        if (q >= ps->end || *q < '0' || *q > '9') break;
        if (*q == '0') ++q;
        else while (q < ps->end && *q >= '0' && *q <= '9') ++q;
        if (q < ps->end && *q == '.') {
            ++q;
            if (q >= ps->end || *q < '0' || *q > '9') break;
            while (q < ps->end && *q >= '0' && *q <= '9') ++q;
        }
        if (q < ps->end && (*q == 'e' || *q == 'E')) {
            ++q;
            if (q < ps->end && (*q == '+' || *q == '-')) ++q;
            if (q >= ps->end || *q < '0' || *q > '9') break;
            while (q < ps->end && *q >= '0' && *q <= '9') ++q;
        }
        n = (size_t)(q - ps->p);
        if (n >= sizeof buf) { json__fail(ps, "number too long"); return 0; }
        memcpy(buf, ps->p, n);
        buf[n] = '\0';
        v->type = JSON_NUMBER;
        v->number = strtod(buf, NULL);
        ps->p = q;
        return 1;
    }
    }
    json__fail(ps, "unexpected character '%c'", *ps->p);
    return 0;
}

/* Parses text[0..len) into *out. Returns 0, or -1 with a message. */
JSONDEF int json_parse(const char *text, size_t len, json_value *out,
                       char *err, size_t errlen)
{
    json__parser ps;
    ps.p = ps.start = text;
    ps.end = text + len;
    ps.err = err;
    ps.errlen = errlen;
    ps.failed = 0;
    if (!json__value(&ps, out, 0)) {
        json__fail(&ps, "parse error");
        json_free(out);
        return -1;
    }
    json__ws(&ps);
    if (ps.p != ps.end) {
        json__fail(&ps, "trailing characters after the document");
        json_free(out);
        return -1;
    }
    return 0;
}

JSONDEF int json_parse_file(const char *path, json_value *out, char *err,
                            size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;
    int rc;
    char msg[256];
    memset(out, 0, sizeof *out);
    if (!f) {
        json__msg(err, errlen, "%s: cannot open", path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        json__msg(err, errlen, "%s: cannot seek", path);
        fclose(f);
        return -1;
    }
    buf = (char *)malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        json__msg(err, errlen, "%s: cannot read", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    buf[n] = '\0';
    rc = json_parse(buf, (size_t)n, out, msg, sizeof msg);
    if (rc != 0) json__msg(err, errlen, "%s: %s", path, msg);
    free(buf);
    return rc;
}

/* Member `key` of an object, or NULL. */
JSONDEF const json_value *json_get(const json_value *obj, const char *key)
{
    int i;
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (i = 0; i < obj->len; ++i)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

/* Element i of an array, or NULL. */
JSONDEF const json_value *json_at(const json_value *arr, int i)
{
    if (!arr || arr->type != JSON_ARRAY || i < 0 || i >= arr->len) return NULL;
    return &arr->items[i];
}

JSONDEF double json_num(const json_value *v, double dflt)
{
    return v && v->type == JSON_NUMBER ? v->number : dflt;
}

JSONDEF const char *json_str(const json_value *v, const char *dflt)
{
    return v && v->type == JSON_STRING ? v->string : dflt;
}

/* true/false, or a number (nonzero = true); dflt otherwise. */
JSONDEF int json_bool(const json_value *v, int dflt)
{
    if (v && v->type == JSON_BOOL) return v->boolean;
    if (v && v->type == JSON_NUMBER) return v->number != 0.0;
    return dflt;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct json_writer {
    FILE *f;
    int depth;
    int count[JSON_MAX_DEPTH];   /* elements written at each level */
    int inl[JSON_MAX_DEPTH];     /* container written on one line  */
    int after_key;
} json_writer;

JSONDEF void jw_init(json_writer *w, FILE *f)
{
    memset(w, 0, sizeof *w);
    w->f = f;
}

static JSON__UNUSED void jw__sep(json_writer *w)
{
    int i;
    if (w->after_key) { w->after_key = 0; return; }
    if (w->depth == 0) return;
    if (w->count[w->depth - 1]++) fputc(',', w->f);
    if (w->inl[w->depth - 1]) {
        if (w->count[w->depth - 1] > 1) fputc(' ', w->f);
        return;
    }
    fputc('\n', w->f);
    for (i = 0; i < w->depth; ++i) fputs("  ", w->f);
}

static JSON__UNUSED void jw__open(json_writer *w, char c, int inl)
{
    jw__sep(w);
    fputc(c, w->f);
    if (w->depth < JSON_MAX_DEPTH) {
        w->count[w->depth] = 0;
        w->inl[w->depth] = inl || (w->depth > 0 && w->inl[w->depth - 1]);
    }
    ++w->depth;
}

static JSON__UNUSED void jw__close(json_writer *w, char c)
{
    int i, had;
    --w->depth;
    had = w->count[w->depth];
    if (had && !w->inl[w->depth]) {
        fputc('\n', w->f);
        for (i = 0; i < w->depth; ++i) fputs("  ", w->f);
    }
    fputc(c, w->f);
    if (w->depth == 0) fputc('\n', w->f);
}

JSONDEF void jw_begin_object(json_writer *w) { jw__open(w, '{', 0); }
JSONDEF void jw_begin_object_inline(json_writer *w) { jw__open(w, '{', 1); }
JSONDEF void jw_end_object(json_writer *w) { jw__close(w, '}'); }
JSONDEF void jw_begin_array(json_writer *w) { jw__open(w, '[', 0); }
JSONDEF void jw_begin_array_inline(json_writer *w) { jw__open(w, '[', 1); }
JSONDEF void jw_end_array(json_writer *w) { jw__close(w, ']'); }

static JSON__UNUSED void jw__quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { fputc('\\', f); fputc((int)c, f); }
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc((int)c, f);
    }
    fputc('"', f);
}

JSONDEF void jw_key(json_writer *w, const char *key)
{
    jw__sep(w);
    jw__quoted(w->f, key);
    fputs(": ", w->f);
    w->after_key = 1;
}

JSONDEF void jw_string(json_writer *w, const char *s)
{
    jw__sep(w);
    jw__quoted(w->f, s);
}

/* Finite numbers in the shortest form that reads back exactly; NaN and
   infinities are not JSON and are written as null. */
JSONDEF void jw_number(json_writer *w, double x)
{
    char buf[40];
    int prec;
    jw__sep(w);
    if (x != x || x - x != 0.0) { fputs("null", w->f); return; }
    for (prec = 1; prec <= 17; ++prec) {
        snprintf(buf, sizeof buf, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    fputs(buf, w->f);
}

JSONDEF void jw_int(json_writer *w, long long x)
{
    jw__sep(w);
    fprintf(w->f, "%lld", x);
}

JSONDEF void jw_bool(json_writer *w, int b)
{
    jw__sep(w);
    fputs(b ? "true" : "false", w->f);
}

JSONDEF void jw_null(json_writer *w)
{
    jw__sep(w);
    fputs("null", w->f);
}

#endif /* NSA_TOOLS_JSON_H */
