/* common/rng.h — splitmix64 random numbers for seeded, repeatable data: tests, synthetic KV,
 * tiny random models, and seeding the sampler's own generator (engine/sampler.c). */
#ifndef DS_COMMON_RNG_H
#define DS_COMMON_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct ds_rng {
    uint64_t state;
} ds_rng;

static inline uint64_t ds_rng_u64(ds_rng *r) {
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double ds_rng_uniform(ds_rng *r) {
    return (double)(ds_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Standard normal (Box-Muller). */
/* A length uniform in [len * (1 - ratio), len * (1 + ratio)], at least 1 (benchmark workloads:
 * bench-offline, loadgen). */
static inline int ds_rng_len(ds_rng *r, int len, double ratio) {
    int lo = (int)(len * (1.0 - ratio)), hi = (int)(len * (1.0 + ratio));
    if (lo < 1) lo = 1;
    if (hi < lo) hi = lo;
    return lo + (int)(ds_rng_u64(r) % (uint64_t)(hi - lo + 1));
}

static inline float ds_rng_gauss(ds_rng *r) {
    double u = ds_rng_uniform(r) + 1e-300, v = ds_rng_uniform(r);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

#endif
