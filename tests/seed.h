/* seed.h -- the seed of a test run's random inputs.

   NSA_TEST_SEED=N repeats a run; without it the seed comes from the clock,
   so every run draws fresh inputs. The seed is printed first, so that a
   failing run can be replayed. */
#ifndef NSA_TEST_SEED_H
#define NSA_TEST_SEED_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t test_seed_from_env(void)
{
    const char *s = getenv("NSA_TEST_SEED");
    uint64_t seed;
    if (s && *s)
        seed = (uint64_t)strtoull(s, NULL, 10);
    else
        seed = (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
    printf("seed %llu (NSA_TEST_SEED=%llu repeats this run)\n",
           (unsigned long long)seed, (unsigned long long)seed);
    fflush(stdout);
    return seed;
}

/* A nonzero xorshift64 state from any seed (one splitmix64 step). */
static inline uint64_t test_xorshift_state(uint64_t seed)
{
    uint64_t z = seed + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return z ? z : 0x2545f4914f6cdd1dull;
}

#endif
