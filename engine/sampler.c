/* engine/sampler.c — temperature / top-k / top-p sampling without sorting the vocabulary: top-k
 * is a size-k heap selection (O(vocab log k)); top-p first drops the candidates that cannot be in
 * the nucleus (a mass threshold, O(vocab) per try) and heap-ranks only the rest; plain sampling
 * is a single linear scan. */
#include "engine/sampler.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "common/rng.h"
#include "common/log.h"

/* One candidate in scratch: unnormalised probability and token id. */
typedef struct sampler_candidate {
    float prob;
    int32_t id;
} sampler_candidate;

sampler_params sampler_params_default(void) {
    return (sampler_params){
        .temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = SAMPLER_SEED_RANDOM};
}

ds_status sampler_params_validate(const sampler_params *params, char *msg, size_t msg_len) {
    const sampler_params *p = params;
    if (!(p->temperature >= 0.0f) || isinf(p->temperature))
        return ds_fail(msg, msg_len, DS_EINVAL, "temperature = %g: must be >= 0 and finite",
                       (double)p->temperature);
    if (p->top_k < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "top_k = %d: must be >= 0 (0 = off)", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return ds_fail(msg, msg_len, DS_EINVAL, "top_p = %g: must be in (0, 1]", (double)p->top_p);
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
    return (size_t)vocab * sizeof(sampler_candidate);
}

int sampler_argmax(const float *logits, int vocab) {
    int best = -1;
    float best_logit = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > best_logit) { /* strict: ties keep the lower id; NaN compares false */
            best_logit = logits[i];
            best = i;
        }
    return best;
}

/* Ranking order: higher probability first, then lower id (a strict total order, so top-k and the
 * nucleus are deterministic under ties). */
static int cand_before(sampler_candidate a, sampler_candidate b) {
    return a.prob > b.prob || (a.prob == b.prob && a.id < b.id);
}

/* Binary heap over h[0..n); worst_on_top = 1: the root is the lowest-ranked candidate (top-k
 * selection), 0: the root is the best (popping in ranking order). */
static void heap_sift_down(sampler_candidate *h, int n, int i, int worst_on_top) {
    sampler_candidate v = h[i];
    for (;;) {
        int child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && cand_before(h[child + 1], h[child]) != worst_on_top) child++;
        if (cand_before(h[child], v) == worst_on_top) break;
        h[i] = h[child];
        i = child;
    }
    h[i] = v;
}

/* Draws from c[0..n) with total mass `mass` (summed in this order). */
static int draw(sampler *s, const sampler_candidate *c, int n, double mass) {
    double r = rng_uniform(s->rng) * mass, acc = 0.0;
    int last_positive = c[0].id;
    for (int j = 0; j < n; j++) {
        if (c[j].prob <= 0.0f) continue;
        acc += c[j].prob;
        last_positive = c[j].id;
        if (r < acc) return c[j].id;
    }
    return last_positive; /* r rounded up to mass */
}

/* Top-k: the k best of c[0..n) end up in c[0..k), best first, in O(n log k). */
static void select_top_k(sampler_candidate *c, int n, int k) {
    for (int i = k / 2 - 1; i >= 0; i--)
        heap_sift_down(c, k, i, 1);
    for (int j = k; j < n; j++)
        if (cand_before(c[j], c[0])) {
            sampler_candidate t = c[0];
            c[0] = c[j];
            c[j] = t;
            heap_sift_down(c, k, 0, 1);
        }
    /* Heap-sort: the worst goes to the back each time, leaving c[0..k) best first. */
    for (int end = k - 1; end > 0; end--) {
        sampler_candidate t = c[0];
        c[0] = c[end];
        c[end] = t;
        heap_sift_down(c, end, 0, 1);
    }
}

/* Top-p without top-k: returns m such that c[0..m) is the nucleus, best first, holding at least
 * `target` mass (or everything). Only candidates that can be in it are ranked: for a threshold t
 * whose set {prob >= t} already carries the target mass, the nucleus (a prefix of the ranking)
 * lies inside that set, so the set is compacted to the front and only it is heap-ranked. */
static int select_nucleus(sampler_candidate *c, int n, double target, double *kept) {
    float threshold = 1e-3f; /* relative to the best candidate, whose prob is exactly 1 */
    for (;;) {
        double mass = 0.0;
        for (int i = 0; i < n; i++)
            if (c[i].prob >= threshold) mass += c[i].prob;
        if (mass >= target || threshold == 0.0f) break;
        threshold = threshold > 1e-30f ? threshold * 1e-3f : 0.0f;
    }
    int n_set = 0;
    for (int i = 0; i < n; i++)
        if (c[i].prob >= threshold) c[n_set++] = c[i];
    /* Pop the best one at a time into the tail, c[n_set - 1 - m], until the target is reached. */
    for (int i = n_set / 2 - 1; i >= 0; i--)
        heap_sift_down(c, n_set, i, 0);
    int n_heap = n_set, m = 0;
    double acc = 0.0;
    while (n_heap > 0 && acc < target) {
        sampler_candidate best = c[0];
        c[0] = c[--n_heap];
        heap_sift_down(c, n_heap, 0, 0);
        c[n_set - 1 - m] = best;
        acc += best.prob;
        m++;
    }
    /* The popped tail c[n_set - m .. n_set) is worst first: reverse it, move it to the front. */
    sampler_candidate *tail = c + (n_set - m);
    for (int a = 0, b = m - 1; a < b; a++, b--) {
        sampler_candidate t = tail[a];
        tail[a] = tail[b];
        tail[b] = t;
    }
    memmove(c, tail, sizeof(sampler_candidate) * m);
    *kept = acc;
    return m;
}

int sampler_sample(sampler *s, const float *logits, int vocab, void *scratch) {
    DS_ASSERT(s && logits && vocab > 0 && scratch);
    const sampler_params *p = &s->params;
    int top_k = p->top_k > 0 && p->top_k < vocab ? p->top_k : 0;
    if (p->temperature == 0.0f || top_k == 1) return sampler_argmax(logits, vocab);

    float max = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > max) max = logits[i]; /* NaN compares false */
    if (max == -INFINITY) return -1;
    max = fminf(max, FLT_MAX); /* +inf logits count as FLT_MAX, so (l - max) stays defined */

    sampler_candidate *c = scratch;
    double total = 0.0;
    for (int i = 0; i < vocab; i++) {
        float l = logits[i];
        /* Division, not multiplication by 1/T: a tiny T must not give 0 * inf at the max. */
        float prob = isnan(l) ? 0.0f : expf(((l < FLT_MAX ? l : FLT_MAX) - max) / p->temperature);
        c[i] = (sampler_candidate){prob, i};
        total += prob;
    }
    if (top_k == 0 && p->top_p >= 1.0f) return draw(s, c, vocab, total);
    if (top_k == 0) {
        double kept;
        int m = select_nucleus(c, vocab, (double)p->top_p * total, &kept);
        return draw(s, c, m, kept);
    }
    select_top_k(c, vocab, top_k);
    double kept = 0.0;
    for (int j = 0; j < top_k; j++)
        kept += c[j].prob;
    if (p->top_p >= 1.0f) return draw(s, c, top_k, kept);
    /* The nucleus is cut from the renormalised top-k mass (as HF and vLLM: top-k, then top-p). */
    double nucleus = (double)p->top_p * kept, acc = 0.0;
    int m = 0;
    while (m < top_k && acc < nucleus)
        acc += c[m++].prob;
    return draw(s, c, m, acc);
}
