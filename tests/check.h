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

static long check_passed_count, check_failed_count;

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
    ++check_failed_count;
    printf("FAIL %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    return 0;
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
    printf("%ld passed, %ld failed\n", check_passed_count, check_failed_count);
    fflush(stdout);
    return check_failed_count ? 1 : 0;
}

/* ---- random numbers (splitmix64) ---------------------------------------- */

static uint64_t check_rng_state;

static uint64_t check_seed_from_env(void)
{
    const char *s = getenv("NSA_TEST_SEED");
    uint64_t seed;
    if (s && *s)
        seed = (uint64_t)strtoull(s, NULL, 10);
    else
        seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    check_rng_state = seed;
    printf("seed %llu (NSA_TEST_SEED=%llu repeats this run)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    return seed;
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

#endif /* NSA_TEST_CHECK_H */
