/* check.h -- a tiny check framework for the nsa tests.

   CHECK(name, cond, fmt, ...) counts a pass or a failure; a failure prints
   one line "FAIL name: detail". check_summary() prints the last line,
   "N passed, N failed", and returns the process exit status (non-zero on
   any failure). The random stream is seeded from the clock unless
   NSA_TEST_SEED is set; the seed is printed first so a failure can be
   replayed. */
#ifndef NSA_TEST_CHECK_H
#define NSA_TEST_CHECK_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "seed.h"

static long check_passed_count, check_failed_count, check_skipped_count;
/* NSA_TEST_STOP=1: exit at the first failure (the mutation check wants only
   to know whether anything fails). */
static int check_stop_on_fail;
/* While check_probing is set, checks are probes whose failure the calling
   test expects and counts itself (check_probe_failed): a failing probe is
   printed as an expected failure, never counted as a failure of the run,
   and never stops it. */
static int check_probing;
static long check_probe_failed;

#if defined(__GNUC__) || defined(__clang__)
static int check_report(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#endif
/* Records one check; prints one line on failure. Returns ok. */
static int check_report(int ok, const char *name, const char *fmt, ...)
{
    va_list ap;
    if (ok) {
        ++check_passed_count;
        return 1;
    }
    if (check_probing) {
        ++check_probe_failed;
        printf("expected failure (probe) %s: ", name);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        return 0;
    }
    ++check_failed_count;
    printf("FAIL %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    if (check_stop_on_fail) {
        printf("stopping at the first failure (NSA_TEST_STOP)\n");
        printf("%ld passed, %ld failed\n", check_passed_count, check_failed_count);
        fflush(stdout);
        exit(1);
    }
    return 0;
}

/* A check that could not run here: printed and counted, never as a pass. */
static void check_skip(const char *name, const char *why)
{
    ++check_skipped_count;
    printf("SKIP %s: %s\n", name, why);
    fflush(stdout);
}

#define CHECK(name, cond, ...) check_report((cond) ? 1 : 0, (name), __VA_ARGS__)

/* Adds counts from a checker that keeps its own (e.g. the golden vectors). */
static void check_add(int passed, int failed)
{
    check_passed_count += passed;
    check_failed_count += failed;
}

static int check_summary(void)
{
    if (check_skipped_count)
        printf("%ld skipped (not counted as passed)\n", check_skipped_count);
    printf("%ld passed, %ld failed\n", check_passed_count, check_failed_count);
    fflush(stdout);
    return check_failed_count ? 1 : 0;
}

/* ---- random numbers (splitmix64) ---------------------------------------- */

static uint64_t check_rng_state;

static uint64_t check_seed_from_env(void)
{
    const char *stop = getenv("NSA_TEST_STOP");
    check_stop_on_fail = stop && *stop && strcmp(stop, "0") != 0;
    check_rng_state = test_seed_from_env();
    return check_rng_state;
}

static uint64_t check_rand_u64(void)
{
    uint64_t z = (check_rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi). */
static double check_uniform(double lo, double hi)
{
    return lo + (hi - lo) * ((double)(check_rand_u64() >> 11) * (1.0 / 9007199254740992.0));
}

/* Uniform integer in [0, n). */
static int64_t check_rand_int(int64_t n)
{
    return (int64_t)(check_rand_u64() % (uint64_t)n);
}

/* ---- comparisons ---------------------------------------------------------- */

/* max |got - want| / max(max |want|, floor). Infinities must match exactly
   (same sign); NaN anywhere is an error (returns +inf). */
static double check_max_rel_err(const double *got, const double *want, int64_t n,
                                double floor_)
{
    double scale = floor_, err = 0.0;
    int64_t i;
    for (i = 0; i < n; ++i)
        if (isfinite(want[i]) && fabs(want[i]) > scale) scale = fabs(want[i]);
    for (i = 0; i < n; ++i) {
        double e;
        if (isnan(got[i]) || isnan(want[i])) return INFINITY;
        if (isinf(got[i]) || isinf(want[i])) {
            if (got[i] != want[i]) return INFINITY;
            continue;
        }
        e = fabs(got[i] - want[i]);
        if (e > err) err = e;
    }
    return err / scale;
}

/* ---- rounding to a storage format, stated independently ------------------ */

/* A binary floating-point format: p significand bits (the hidden one
   included), smallest normal exponent emin, largest finite value. */
typedef struct check_fmt { int p, emin; double maxf; } check_fmt;

static const check_fmt check_fmt_fp32 = {24, -126, 3.4028234663852886e38};
static const check_fmt check_fmt_bf16 = {8, -126, 3.3895313892515355e38};
static const check_fmt check_fmt_fp16 = {11, -14, 65504.0};

/* x rounded to nearest, ties to even, in format f: written with frexp, ldexp
   and rint in double (rounding mode: the default, to nearest), sharing
   nothing with the converters under test. Subnormals keep the ulp of the
   smallest normal binade; a result above the largest finite value is an
   infinity; NaN and infinities pass through. */
static double check_round(double x, check_fmt f)
{
    int e;
    double r;
    if (x != x || x == 0.0 || isinf(x)) return x;
    (void)frexp(x, &e);           /* 2^(e-1) <= |x| < 2^e: ulp 2^(e-p) */
    if (e - 1 < f.emin) e = f.emin + 1;
    r = ldexp(rint(ldexp(x, f.p - e)), e - f.p);
    if (fabs(r) > f.maxf) return copysign(INFINITY, x);
    return r;
}

/* Element-wise check that got[i] is the correctly rounded (format f) value
   of something within acc of want[i]: RN(want - acc) <= got <= RN(want + acc)
   (rounding is monotone). NaN must meet NaN and an infinity the same
   infinity. Returns the number of bad elements; *first gets the first one;
   *excess (may be NULL) the largest |got - want| beyond half an ulp of the
   format at got, for reports. */
static int64_t check_rounded(const double *got, const double *want, int64_t n,
                             check_fmt f, double acc, int64_t *first,
                             double *excess)
{
    int64_t i, bad = 0;
    if (excess) *excess = 0.0;
    *first = -1;
    for (i = 0; i < n; ++i) {
        double g = got[i], w = want[i];
        int ok;
        if (w != w) ok = g != g;
        else if (isinf(w)) ok = g == w;
        else if (g != g || isinf(g)) ok = 0;
        else {
            ok = check_round(w - acc, f) <= g && g <= check_round(w + acc, f);
            if (excess && g != 0.0) {
                int e;
                double half, x;
                (void)frexp(g, &e);
                if (e - 1 < f.emin) e = f.emin + 1;
                half = ldexp(1.0, e - f.p - 1);
                x = fabs(g - w) - half;
                if (x > *excess) *excess = x;
            }
        }
        if (!ok) {
            if (*first < 0) *first = i;
            ++bad;
        }
    }
    return bad;
}

#endif /* NSA_TEST_CHECK_H */
