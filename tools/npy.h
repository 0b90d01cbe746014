/* npy.h -- read and write numpy .npy files (C99, libc only, header-only).

   Reads format versions 1.0, 2.0 and 3.0 (the header length field is the
   only difference), writes 1.0. Arrays are C order (fortran_order False);
   data may be little- or big-endian in the file and is converted to the
   host's byte order on read; files are written little-endian.

   dtypes:  '<f4' float32   '<f8' float64   '<i4' int32   '<i8' int64
            '<u2' uint16 (also used for bf16/fp16 bit patterns)   '|u1' uint8

   Every function is static, so the header can be included in any number of
   translation units; errors are returned as a status with a message.

     npy_array a;
     char err[256];
     if (npy_read("q.npy", &a, err, sizeof err) != 0) puts(err);
     (npy_read_mem(bytes, nbytes, &a, err, sizeof err): the same from memory)
     ... a.dtype, a.ndim, a.shape[], a.count, a.data ...
     double x = npy_get(&a, i);   // any element as double
     npy_free(&a);

     int64_t shape[2] = {3, 4};
     npy_write("x.npy", NPY_F4, 2, shape, data, err, sizeof err);
*/
#ifndef NPY_H
#define NPY_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>

#if defined(__GNUC__) || defined(__clang__)
#define NPY__UNUSED __attribute__((unused))
#else
#define NPY__UNUSED
#endif
#define NPYDEF static NPY__UNUSED

#define NPY_MAX_DIMS 16

typedef enum npy_dtype {
    NPY_F4 = 0, /* <f4 */
    NPY_F8,     /* <f8 */
    NPY_I4,     /* <i4 */
    NPY_U2,     /* <u2 */
    NPY_U1,     /* |u1 */
    NPY_I8,     /* <i8 */
    NPY_DTYPE_COUNT
} npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;
    int ndim;                       /* 0 for a scalar array */
    int64_t shape[NPY_MAX_DIMS];
    int64_t count;                  /* product of shape (1 for ndim 0) */
    void *data;                     /* count elements, host byte order */
} npy_array;

NPYDEF const char *npy_dtype_descr(npy_dtype t)
{
    static const char *names[] = {"<f4", "<f8", "<i4", "<u2", "|u1", "<i8"};
    return (unsigned)t < NPY_DTYPE_COUNT ? names[t] : "?";
}

NPYDEF size_t npy_dtype_size(npy_dtype t)
{
    static const size_t sizes[] = {4, 8, 4, 2, 1, 8};
    return (unsigned)t < NPY_DTYPE_COUNT ? sizes[t] : 0;
}

static NPY__UNUSED void npy__err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || errlen == 0) return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static NPY__UNUSED int npy__host_little(void)
{
    const uint16_t one = 1;
    return *(const unsigned char *)&one == 1;
}

static NPY__UNUSED void npy__swap(void *data, int64_t count, size_t size)
{
    unsigned char *p = (unsigned char *)data;
    int64_t i;
    size_t a;
    if (size < 2) return;
    for (i = 0; i < count; ++i, p += size)
        for (a = 0; a < size / 2; ++a) {
            unsigned char t = p[a];
            p[a] = p[size - 1 - a];
            p[size - 1 - a] = t;
        }
}

/* --- header dict parsing: {'descr': '<f4', 'fortran_order': False,
       'shape': (3, 4), } ------------------------------------------------ */

static NPY__UNUSED const char *npy__ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        ++p;
    return p;
}

/* Parses a quoted Python string literal into buf; returns the position
   after it or NULL. */
static NPY__UNUSED const char *npy__str(const char *p, const char *end,
                                         char *buf, size_t buflen)
{
    char q;
    size_t n = 0;
    if (p >= end || (*p != '\'' && *p != '"')) return NULL;
    q = *p++;
    while (p < end && *p != q) {
        if (n + 1 >= buflen) return NULL;
        buf[n++] = *p++;
    }
    if (p >= end) return NULL;
    buf[n] = '\0';
    return p + 1;
}

static NPY__UNUSED int npy__parse_header(const char *h, size_t len,
                                          npy_array *a, int *big_endian,
                                          char *err, size_t errlen)
{
    const char *p = h, *end = h + len;
    int have_descr = 0, have_fortran = 0, have_shape = 0;
    char key[64], val[64];
    p = npy__ws(p, end);
    if (p >= end || *p != '{') {
        npy__err(err, errlen, "header is not a dict (no '{')");
        return -1;
    }
    ++p;
    for (;;) {
        p = npy__ws(p, end);
        if (p < end && *p == '}') break;
        p = npy__str(p, end, key, sizeof key);
        if (!p) {
            npy__err(err, errlen, "header dict: expected a quoted key");
            return -1;
        }
        p = npy__ws(p, end);
        if (p >= end || *p != ':') {
            npy__err(err, errlen, "header dict: expected ':' after '%s'", key);
            return -1;
        }
        p = npy__ws(p + 1, end);
        if (strcmp(key, "descr") == 0) {
            static const char *le[] = {"<f4", "<f8", "<i4", "<u2", "|u1", "<i8"};
            static const char *be[] = {">f4", ">f8", ">i4", ">u2", ">u1", ">i8"};
            int t, found = 0;
            p = npy__str(p, end, val, sizeof val);
            if (!p) {
                npy__err(err, errlen, "header: 'descr' is not a string "
                                      "(structured dtypes are not supported)");
                return -1;
            }
            for (t = 0; t < NPY_DTYPE_COUNT; ++t) {
                if (strcmp(val, le[t]) == 0 ||
                    (t == NPY_U1 && (strcmp(val, "<u1") == 0 ||
                                     strcmp(val, "=u1") == 0))) {
                    a->dtype = (npy_dtype)t;
                    *big_endian = 0;
                    found = 1;
                    break;
                }
                if (strcmp(val, be[t]) == 0) {
                    a->dtype = (npy_dtype)t;
                    *big_endian = t != NPY_U1;
                    found = 1;
                    break;
                }
            }
            if (!found) {
                npy__err(err, errlen, "unsupported dtype '%s' (supported: <f4 "
                         "<f8 <i4 <u2 |u1 <i8)", val);
                return -1;
            }
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if ((size_t)(end - p) >= 5 && strncmp(p, "False", 5) == 0) {
                p += 5;
            } else if ((size_t)(end - p) >= 4 && strncmp(p, "True", 4) == 0) {
                npy__err(err, errlen, "fortran_order True is not supported "
                                      "(write the array in C order)");
                return -1;
            } else {
                npy__err(err, errlen, "header: 'fortran_order' must be "
                                      "True or False");
                return -1;
            }
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            int nd = 0;
            if (p >= end || *p != '(') {
                npy__err(err, errlen, "header: 'shape' is not a tuple");
                return -1;
            }
            ++p;
            for (;;) {
                int64_t v = 0;
                int digits = 0;
                p = npy__ws(p, end);
                if (p < end && *p == ')') { ++p; break; }
                while (p < end && *p >= '0' && *p <= '9') {
                    if (v > (INT64_MAX - 9) / 10) {
                        npy__err(err, errlen, "header: shape entry overflows");
                        return -1;
                    }
                    v = v * 10 + (*p - '0');
                    ++p;
                    ++digits;
                }
                if (p < end && *p == 'L') ++p; /* Python 2 long */
                if (!digits) {
                    npy__err(err, errlen, "header: bad shape entry");
                    return -1;
                }
                if (nd >= NPY_MAX_DIMS) {
                    npy__err(err, errlen, "header: more than %d dimensions",
                             NPY_MAX_DIMS);
                    return -1;
                }
                a->shape[nd++] = v;
                p = npy__ws(p, end);
                if (p < end && *p == ',') { ++p; continue; }
                if (p < end && *p == ')') { ++p; break; }
                npy__err(err, errlen, "header: bad shape tuple");
                return -1;
            }
            a->ndim = nd;
            have_shape = 1;
        } else {
            npy__err(err, errlen, "header: unknown key '%s'", key);
            return -1;
        }
        p = npy__ws(p, end);
        if (p < end && *p == ',') { ++p; continue; }
        if (p < end && *p == '}') break;
        npy__err(err, errlen, "header dict: expected ',' or '}'");
        return -1;
    }
    if (!have_descr || !have_fortran || !have_shape) {
        npy__err(err, errlen, "header: missing key '%s'",
                 !have_descr ? "descr" : !have_fortran ? "fortran_order"
                                                       : "shape");
        return -1;
    }
    return 0;
}

/* Parses the bytes buf[0..len) of a whole .npy file into *a (a->data
   malloc'ed; free with npy_free). Returns 0, or -1 with a message in err.
   Every length and count is checked against len before it is used: a file
   a porter hands in is untrusted input. */
NPYDEF int npy_read_mem(const void *buf, size_t len, npy_array *a, char *err,
                        size_t errlen)
{
    const unsigned char *pre = (const unsigned char *)buf;
    size_t hlen, plen, esize, dlen;
    char *header;
    int big = 0, i;
    int64_t count = 1;
    memset(a, 0, sizeof *a);
    if (len < 10 || memcmp(pre, "\x93NUMPY", 6) != 0) {
        npy__err(err, errlen, "not a .npy file (bad magic)");
        return -1;
    }
    if (pre[6] == 1) {
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
        plen = 10;
    } else if (pre[6] == 2 || pre[6] == 3) {
        if (len < 12) {
            npy__err(err, errlen, "truncated header");
            return -1;
        }
        hlen = (size_t)pre[8] | ((size_t)pre[9] << 8) |
               ((size_t)pre[10] << 16) | ((size_t)pre[11] << 24);
        plen = 12;
        if (hlen > (1u << 24)) {
            npy__err(err, errlen, "header length %lu is implausible",
                     (unsigned long)hlen);
            return -1;
        }
    } else {
        npy__err(err, errlen, "unsupported format version %d.%d", pre[6],
                 pre[7]);
        return -1;
    }
    if (hlen > len - plen) {
        npy__err(err, errlen, "truncated header");
        return -1;
    }
    header = (char *)malloc(hlen + 1);
    if (!header) {
        npy__err(err, errlen, "out of memory");
        return -1;
    }
    memcpy(header, pre + plen, hlen);
    header[hlen] = '\0';
    if (npy__parse_header(header, hlen, a, &big, err, errlen) != 0) {
        free(header);
        return -1;
    }
    free(header);
    esize = npy_dtype_size(a->dtype);
    for (i = 0; i < a->ndim; ++i) {
        if (a->shape[i] != 0 && count > INT64_MAX / 8 / a->shape[i]) {
            npy__err(err, errlen, "shape too large");
            return -1;
        }
        count *= a->shape[i];
    }
    a->count = count;
    /* The data must be exactly what the shape says: no more, no less.
       count * esize < 2^63 by the loop above. */
    dlen = len - plen - hlen;
    if ((uint64_t)dlen != (uint64_t)count * (uint64_t)esize) {
        npy__err(err, errlen, "data is %llu bytes, but shape and dtype %s "
                 "need %lld", (unsigned long long)dlen,
                 npy_dtype_descr(a->dtype), (long long)(count * (int64_t)esize));
        a->count = 0;
        return -1;
    }
    a->data = malloc(count > 0 ? (size_t)count * esize : 1);
    if (!a->data) {
        npy__err(err, errlen, "out of memory (%lld elements)", (long long)count);
        a->count = 0;
        return -1;
    }
    if (count > 0) memcpy(a->data, pre + plen + hlen, (size_t)count * esize);
    if (big == npy__host_little()) npy__swap(a->data, count, esize);
    return 0;
}

/* Reads path into *a (a->data malloc'ed; free with npy_free). Returns 0, or
   -1 with a message (starting with the path) in err. */
NPYDEF int npy_read(const char *path, npy_array *a, char *err, size_t errlen)
{
    FILE *f;
    unsigned char *buf;
    long n;
    int rc;
    char msg[256];
    memset(a, 0, sizeof *a);
    f = fopen(path, "rb");
    if (!f) {
        npy__err(err, errlen, "%s: cannot open", path);
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        npy__err(err, errlen, "%s: cannot seek", path);
        fclose(f);
        return -1;
    }
    buf = (unsigned char *)malloc(n > 0 ? (size_t)n : 1);
    if (!buf) {
        npy__err(err, errlen, "%s: out of memory (%ld bytes)", path, n);
        fclose(f);
        return -1;
    }
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        npy__err(err, errlen, "%s: cannot read", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    rc = npy_read_mem(buf, (size_t)n, a, msg, sizeof msg);
    free(buf);
    if (rc != 0) npy__err(err, errlen, "%s: %s", path, msg);
    return rc;
}

NPYDEF void npy_free(npy_array *a)
{
    if (a) {
        free(a->data);
        a->data = NULL;
        a->count = 0;
    }
}

/* Element i as double (int64 beyond 2^53 loses precision). */
NPYDEF double npy_get(const npy_array *a, int64_t i)
{
    switch (a->dtype) {
    case NPY_F4: return ((const float *)a->data)[i];
    case NPY_F8: return ((const double *)a->data)[i];
    case NPY_I4: return ((const int32_t *)a->data)[i];
    case NPY_U2: return ((const uint16_t *)a->data)[i];
    case NPY_U1: return ((const uint8_t *)a->data)[i];
    case NPY_I8: return (double)((const int64_t *)a->data)[i];
    default: return 0.0;
    }
}

/* Formats a shape as "(3, 4)" (numpy's spelling, "(3,)" for one dim). */
NPYDEF void npy_shape_str(int ndim, const int64_t *shape, char *buf, size_t len)
{
    size_t n = 0;
    int i;
    if (len == 0) return;
    buf[0] = '\0';
    n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "(");
    for (i = 0; i < ndim; ++i)
        n += (size_t)snprintf(buf + n, n < len ? len - n : 0, "%s%lld",
                              i ? ", " : "", (long long)shape[i]);
    if (ndim == 1) n += (size_t)snprintf(buf + n, n < len ? len - n : 0, ",");
    snprintf(buf + n, n < len ? len - n : 0, ")");
}

/* Writes data (count = product of shape elements, host byte order) to path
   as a format 1.0 file, little-endian, C order. Returns 0 or -1. */
NPYDEF int npy_write(const char *path, npy_dtype dtype, int ndim,
                     const int64_t *shape, const void *data, char *err,
                     size_t errlen)
{
    char dict[64 + 24 * NPY_MAX_DIMS], shp[24 * NPY_MAX_DIMS + 8];
    unsigned char pre[10];
    size_t dlen, total, esize = npy_dtype_size(dtype);
    int64_t count = 1;
    int i;
    FILE *f;
    if ((unsigned)dtype >= NPY_DTYPE_COUNT) {
        npy__err(err, errlen, "%s: bad dtype", path);
        return -1;
    }
    if (ndim < 0 || ndim > NPY_MAX_DIMS) {
        npy__err(err, errlen, "%s: bad ndim %d", path, ndim);
        return -1;
    }
    for (i = 0; i < ndim; ++i) {
        if (shape[i] < 0) {
            npy__err(err, errlen, "%s: negative shape", path);
            return -1;
        }
        count *= shape[i];
    }
    if (count > 0 && !data) {
        npy__err(err, errlen, "%s: data is NULL", path);
        return -1;
    }
    npy_shape_str(ndim, shape, shp, sizeof shp);
    dlen = (size_t)snprintf(dict, sizeof dict,
                            "{'descr': '%s', 'fortran_order': False, "
                            "'shape': %s, }", npy_dtype_descr(dtype), shp);
    /* pad with spaces so that 10 + header (ending in '\n') is a multiple
       of 64, as numpy does */
    total = 10 + dlen + 1;
    total = (total + 63) / 64 * 64;
    if (total - 10 > 65535) {
        npy__err(err, errlen, "%s: header too long", path);
        return -1;
    }
    f = fopen(path, "wb");
    if (!f) {
        npy__err(err, errlen, "%s: cannot create", path);
        return -1;
    }
    memcpy(pre, "\x93NUMPY\x01\x00", 8);
    pre[8] = (unsigned char)((total - 10) & 0xff);
    pre[9] = (unsigned char)(((total - 10) >> 8) & 0xff);
    fwrite(pre, 1, 10, f);
    fwrite(dict, 1, dlen, f);
    for (i = 0; (size_t)i < total - 10 - dlen - 1; ++i) fputc(' ', f);
    fputc('\n', f);
    if (count > 0) {
        if (npy__host_little() || esize == 1) {
            fwrite(data, esize, (size_t)count, f);
        } else {
            /* big-endian host: swap through a small buffer */
            unsigned char buf[4096];
            const unsigned char *p = (const unsigned char *)data;
            int64_t left = count;
            while (left > 0) {
                int64_t nb = (int64_t)(sizeof buf / esize);
                if (nb > left) nb = left;
                memcpy(buf, p, (size_t)nb * esize);
                npy__swap(buf, nb, esize);
                fwrite(buf, esize, (size_t)nb, f);
                p += (size_t)nb * esize;
                left -= nb;
            }
        }
    }
    i = ferror(f);
    if (fclose(f) != 0 || i) {
        npy__err(err, errlen, "%s: write failed", path);
        return -1;
    }
    return 0;
}

#endif /* NPY_H */
