/* engine/sampler.c — per-sequence sampling state: parameters, validation and the seeded generator
 * whose uniforms drive kernels/sample.h's draw (sample_row_ref here, sample_cuda on a GPU). */
#include "engine/sampler.h"

#include <math.h>
#include <stdatomic.h>
#include <time.h>

#include "common/rng.h"
#include "common/log.h"

sampler_params sampler_params_default(void) {
    return (sampler_params){
        .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = SAMPLER_SEED_RANDOM};
}

ds_status sampler_params_validate(const sampler_params *params, char *msg, size_t msg_len) {
    const sampler_params *p = params;
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return ds_fail(msg, msg_len, DS_EINVAL, "temperature = %.9g: must be >= 0 and finite",
                       (double)p->temperature);
    if (p->top_k < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "top_k = %d: must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ds_fail(msg, msg_len, DS_EINVAL, "top_p = %.9g: must be in (0, 1]",
                       (double)p->top_p);
    if (p->seed < SAMPLER_SEED_RANDOM)
        return ds_fail(msg, msg_len, DS_EINVAL, "seed = %lld: must be >= 0 or -1 (random)",
                       (long long)p->seed);
    return DS_OK;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** (Blackman & Vigna). */
static uint64_t rng_next(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t s[4]) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* Distinct per call even within one clock tick (the counter), and across processes (the clock). */
static uint64_t seed_from_clock(void) {
    static atomic_uint_fast64_t counter;
    struct timespec real, mono;
    clock_gettime(CLOCK_REALTIME, &real);
    clock_gettime(CLOCK_MONOTONIC, &mono);
    uint64_t x = (uint64_t)real.tv_sec * 1000000000ull + (uint64_t)real.tv_nsec;
    x ^= rotl((uint64_t)mono.tv_nsec, 32) ^ atomic_fetch_add(&counter, 1) * 0xd1b54a32d192ed03ull;
    ds_rng mix = {x};
    return ds_rng_u64(&mix);
}

ds_status sampler_init(sampler *s, const sampler_params *params, char *msg, size_t msg_len) {
    ds_status st = sampler_params_validate(params, msg, msg_len);
    if (st != DS_OK) return st;
    s->params = *params;
    /* Kept below 2^63 so it can be reported and passed back as params.seed to replay. */
    s->seed_used = params->seed == SAMPLER_SEED_RANDOM ? seed_from_clock() & (uint64_t)INT64_MAX
                                                       : (uint64_t)params->seed;
    ds_rng seeder = {s->seed_used};
    for (int i = 0; i < 4; i++)
        s->rng[i] = ds_rng_u64(&seeder);
    return DS_OK;
}

size_t sampler_scratch_size(int vocab) {
    DS_ASSERT(vocab > 0);
    return sample_ref_scratch_bytes(vocab);
}

int sampler_argmax(const float *logits, int vocab) { return sample_argmax_ref(logits, vocab); }

sample_row sampler_next_row(sampler *s) {
    const sampler_params *p = &s->params;
    sample_row row = {.temperature = p->temperature, .top_k = p->top_k, .top_p = p->top_p};
    if (!sample_is_greedy(&row)) row.u = rng_uniform(s->rng);
    return row;
}

int sampler_sample(sampler *s, const float *logits, int vocab, void *scratch) {
    DS_ASSERT(s && logits && vocab > 0 && scratch);
    const sample_row row = sampler_next_row(s);
    return sample_row_ref(logits, vocab, &row, scratch, NULL);
}
