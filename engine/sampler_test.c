/* sampler_test — greedy and tie-breaking, seeded reproducibility, the drawn distribution against
 * known probabilities, what top-k / top-p / temperature keep and exclude, parameter errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/sampler.h"

static sampler make_sampler(float temperature, int top_k, float top_p, int64_t seed) {
    sampler s;
    sampler_params p = {temperature, top_k, top_p, seed};
    char msg[128];
    assert_int_equal(sampler_init(&s, &p, msg, sizeof msg), DS_OK);
    return s;
}

/* Histogram of n draws; counts [vocab]. */
static void histogram(sampler *s, const float *logits, int vocab, int n, int *counts) {
    void *scratch = malloc(sampler_scratch_size(vocab));
    assert_non_null(scratch);
    memset(counts, 0, sizeof(int) * vocab);
    for (int i = 0; i < n; i++) {
        int t = sampler_sample(s, logits, vocab, scratch);
        assert_true(t >= 0 && t < vocab);
        counts[t]++;
    }
    free(scratch);
}

/* |count - n p| within 5 sigma of the binomial. */
static void assert_matches_probs(const int *counts, const double *probs, int vocab, int n) {
    for (int i = 0; i < vocab; i++) {
        double mean = n * probs[i], sigma = sqrt(n * probs[i] * (1 - probs[i]));
        if (fabs(counts[i] - mean) > 5 * sigma + 1e-9)
            fail_msg("token %d: %d draws, expected %.1f +- %.1f", i, counts[i], mean, sigma);
    }
}

static void test_greedy_is_argmax_lowest_tie(void **state) {
    (void)state;
    float logits[7] = {0.5f, 3.0f, -1.0f, 3.0f, NAN, 2.9f, -INFINITY};
    sampler s = make_sampler(0.0f, 0, 1.0f, 1);
    float scratch[7 * 2];
    assert_true(sampler_scratch_size(7) <= sizeof scratch);
    for (int i = 0; i < 10; i++)
        assert_int_equal(sampler_sample(&s, logits, 7, scratch), 1);
    assert_int_equal(sampler_argmax(logits, 7), 1);
    /* NaN is never chosen; everything masked gives -1 */
    float masked[3] = {-INFINITY, NAN, -INFINITY};
    assert_int_equal(sampler_argmax(masked, 3), -1);
    sampler t = make_sampler(1.0f, 0, 1.0f, 1);
    assert_int_equal(sampler_sample(&t, masked, 3, scratch), -1);
    /* +inf wins even when sampling */
    float inf[4] = {1.0f, INFINITY, 2.0f, NAN};
    for (int i = 0; i < 50; i++)
        assert_int_equal(sampler_sample(&t, inf, 4, scratch), 1);
}

static void test_top_k_one_is_greedy(void **state) {
    (void)state;
    enum { vocab = 1000 };
    float logits[vocab];
    for (int i = 0; i < vocab; i++)
        logits[i] = (float)((i * 7919) % 1000) * 0.001f;
    logits[613] = 2.0f;
    logits[900] = 2.0f; /* tie: lower id */
    void *scratch = malloc(sampler_scratch_size(vocab));
    sampler s = make_sampler(5.0f, 1, 1.0f, 42);
    for (int i = 0; i < 100; i++)
        assert_int_equal(sampler_sample(&s, logits, vocab, scratch), 613);
    free(scratch);
}

static void test_seed_reproducible(void **state) {
    (void)state;
    enum { vocab = 50, n = 200 };
    float logits[vocab];
    for (int i = 0; i < vocab; i++)
        logits[i] = sinf((float)i);
    float scratch[vocab * 2];
    int a[n], b[n], c[n];
    for (int cfg = 0; cfg < 3; cfg++) {
        int top_k = cfg == 1 ? 10 : 0;
        float top_p = cfg == 2 ? 0.8f : 1.0f;
        sampler s1 = make_sampler(1.0f, top_k, top_p, 1234);
        sampler s2 = make_sampler(1.0f, top_k, top_p, 1234);
        sampler s3 = make_sampler(1.0f, top_k, top_p, 1235);
        for (int i = 0; i < n; i++) {
            a[i] = sampler_sample(&s1, logits, vocab, scratch);
            b[i] = sampler_sample(&s2, logits, vocab, scratch);
            c[i] = sampler_sample(&s3, logits, vocab, scratch);
        }
        assert_memory_equal(a, b, sizeof a);
        assert_memory_not_equal(a, c, sizeof a);
    }
    /* Clock seeds differ from one sampler to the next and are reported. */
    sampler r1 = make_sampler(1.0f, 0, 1.0f, SAMPLER_SEED_RANDOM);
    sampler r2 = make_sampler(1.0f, 0, 1.0f, SAMPLER_SEED_RANDOM);
    assert_true(r1.seed_used != r2.seed_used);
    assert_true(r1.seed_used <= (uint64_t)INT64_MAX);
    /* Replaying the reported seed gives the same stream. */
    sampler replay = make_sampler(1.0f, 0, 1.0f, (int64_t)r1.seed_used);
    for (int i = 0; i < n; i++)
        assert_int_equal(sampler_sample(&r1, logits, vocab, scratch),
                         sampler_sample(&replay, logits, vocab, scratch));
}

static void test_distribution_matches(void **state) {
    (void)state;
    const double probs[5] = {0.5, 0.2, 0.15, 0.1, 0.05};
    float logits[5];
    for (int i = 0; i < 5; i++)
        logits[i] = (float)log(probs[i]) + 3.0f; /* shift-invariant */
    int counts[5];
    sampler s = make_sampler(1.0f, 0, 1.0f, 7);
    histogram(&s, logits, 5, 20000, counts);
    assert_matches_probs(counts, probs, 5, 20000);
    /* top_k = vocab and top_p = 1 are "off": same distribution through the heap path too */
    sampler h = make_sampler(1.0f, 5, 1.0f, 8);
    histogram(&h, logits, 5, 20000, counts);
    assert_matches_probs(counts, probs, 5, 20000);
}

static void test_temperature_scaling(void **state) {
    (void)state;
    /* p ~ exp(l / T): logits {0, ln 2} at T=1 give 1/3, 2/3; at T=0.5, 1/5, 4/5; at T=2,
     * 1/(1+sqrt 2), sqrt 2/(1+sqrt 2). */
    float logits[2] = {0.0f, (float)log(2.0)};
    int counts[2];
    const double t1[2] = {1.0 / 3, 2.0 / 3}, t05[2] = {0.2, 0.8};
    const double t2[2] = {1 / (1 + sqrt(2.0)), sqrt(2.0) / (1 + sqrt(2.0))};
    sampler a = make_sampler(1.0f, 0, 1.0f, 11);
    histogram(&a, logits, 2, 20000, counts);
    assert_matches_probs(counts, t1, 2, 20000);
    sampler b = make_sampler(0.5f, 0, 1.0f, 12);
    histogram(&b, logits, 2, 20000, counts);
    assert_matches_probs(counts, t05, 2, 20000);
    sampler c = make_sampler(2.0f, 0, 1.0f, 13);
    histogram(&c, logits, 2, 20000, counts);
    assert_matches_probs(counts, t2, 2, 20000);
    /* A tiny temperature is (almost) greedy and never NaN. */
    sampler d = make_sampler(1e-30f, 0, 1.0f, 14);
    histogram(&d, logits, 2, 1000, counts);
    assert_int_equal(counts[1], 1000);
}

/* Top-k keeps exactly the k best (renormalised), never another token. */
static void test_top_k_excludes(void **state) {
    (void)state;
    enum { vocab = 3001, n = 20000 };
    static float logits[vocab];
    for (int i = 0; i < vocab; i++)
        logits[i] = (float)(i % 97) * 0.01f; /* many near-ties */
    logits[1500] = 5.0f;
    logits[17] = 4.9f;
    logits[2999] = 4.8f;
    static int counts[vocab];
    sampler s = make_sampler(1.0f, 3, 1.0f, 99);
    histogram(&s, logits, vocab, n, counts);
    double z = exp(5.0) + exp(4.9) + exp(4.8);
    double probs[3] = {exp(5.0) / z, exp(4.9) / z, exp(4.8) / z};
    int kept[3] = {counts[1500], counts[17], counts[2999]};
    assert_int_equal(kept[0] + kept[1] + kept[2], n);
    assert_matches_probs(kept, probs, 3, n);
}

/* Top-p: the nucleus is the shortest prefix of the sorted probabilities reaching top_p. */
static void test_top_p_excludes(void **state) {
    (void)state;
    /* probs 0.4 0.3 0.2 0.1 (shuffled ids). top_p 0.6 -> {0.4, 0.3} (0.4 < 0.6 <= 0.7);
     * top_p 0.75 -> {0.4, 0.3, 0.2}. */
    const double probs[4] = {0.2, 0.4, 0.1, 0.3};
    float logits[4];
    for (int i = 0; i < 4; i++)
        logits[i] = (float)log(probs[i]);
    int counts[4];
    sampler a = make_sampler(1.0f, 0, 0.6f, 21);
    histogram(&a, logits, 4, 20000, counts);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[2], 0);
    const double want_a[4] = {0, 4.0 / 7, 0, 3.0 / 7};
    assert_matches_probs(counts, want_a, 4, 20000);
    sampler b = make_sampler(1.0f, 0, 0.75f, 22);
    histogram(&b, logits, 4, 20000, counts);
    assert_int_equal(counts[2], 0);
    const double want_b[4] = {2.0 / 9, 4.0 / 9, 0, 3.0 / 9};
    assert_matches_probs(counts, want_b, 4, 20000);
    /* Tiny top_p keeps only the top token, in a large vocabulary. */
    enum { vocab = 49152 };
    float *big = malloc(sizeof(float) * vocab);
    for (int i = 0; i < vocab; i++)
        big[i] = (float)((i * 31) % 1009) * 0.001f;
    big[31337] = 1.5f;
    sampler c = make_sampler(1.0f, 0, 1e-6f, 23);
    void *scratch = malloc(sampler_scratch_size(vocab));
    for (int i = 0; i < 200; i++)
        assert_int_equal(sampler_sample(&c, big, vocab, scratch), 31337);
    free(scratch);
    free(big);
}

/* top-k then top-p: the nucleus is cut from the renormalised top-k mass. */
static void test_top_k_then_top_p(void **state) {
    (void)state;
    /* probs .3 .25 .2 .15 .1; top_k 3 -> .3 .25 .2 (mass .75), renormalised .4 .333 .267;
     * top_p 0.7 -> prefix .4, .733 >= .7 -> {.3, .25}. Without top-k, top_p 0.7 would keep 3. */
    const double probs[5] = {0.1, 0.3, 0.15, 0.25, 0.2};
    float logits[5];
    for (int i = 0; i < 5; i++)
        logits[i] = (float)log(probs[i]);
    int counts[5];
    sampler s = make_sampler(1.0f, 3, 0.7f, 31);
    histogram(&s, logits, 5, 20000, counts);
    const double want[5] = {0, 0.3 / 0.55, 0, 0.25 / 0.55, 0};
    assert_int_equal(counts[0] + counts[2] + counts[4], 0);
    assert_matches_probs(counts, want, 5, 20000);
}

/* Equal logits give exactly representable masses, so the boundary is exact: the nucleus stops at
 * the token whose cumulative mass reaches top_p (HF: keep while the mass before it < top_p), and
 * ties are ranked by lower id. */
static void test_top_p_exact_boundary(void **state) {
    (void)state;
    const float logits[5] = {0, 0, 0, 0, 0};
    int counts[5];
    const double half[5] = {0.5, 0.5, 0, 0, 0};
    const float four[5] = {0, 0, 0, 0, -INFINITY}; /* masses 1, 1, 1, 1, 0: total 4 */
    sampler a = make_sampler(1.0f, 0, 0.5f, 41);   /* nucleus mass exactly 2 */
    histogram(&a, four, 5, 4000, counts);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);
    assert_matches_probs(counts, half, 5, 4000);
    sampler b = make_sampler(1.0f, 4, 0.5f, 42); /* top-4 then exactly half of it: ids 0, 1 */
    histogram(&b, logits, 5, 4000, counts);
    assert_int_equal(counts[2] + counts[3] + counts[4], 0);
    assert_matches_probs(counts, half, 5, 4000);
    sampler c = make_sampler(1.0f, 4, 1.0f, 43); /* top-4 with ties: ids 0..3 */
    histogram(&c, logits, 5, 4000, counts);
    assert_int_equal(counts[4], 0);
}

/* A long flat tail that the nucleus must reach into (the candidate pre-filter has to widen):
 * one token at logit 10, 49151 at logit 0; top_p 0.5 keeps the big one plus the lowest-id tied
 * tokens up to the boundary, and nothing past it. */
static void test_top_p_long_tail(void **state) {
    (void)state;
    /* 4000 draws: each is ~31 passes over the 49152-token row in exact integer masses, and
     * 20000 took minutes under ASan on a loaded 2-core machine; the check is 5 sigma at any n. */
    enum { vocab = 49152, n = 4000 };
    float *logits = malloc(sizeof(float) * vocab);
    int *counts = malloc(sizeof(int) * vocab);
    assert_non_null(logits);
    assert_non_null(counts);
    for (int i = 0; i < vocab; i++)
        logits[i] = 0.0f;
    logits[vocab - 1] = 10.0f;
    double q = expf(-10.0f), total = 1.0 + (vocab - 1) * q;
    int k = (int)ceil((0.5 * total - 1.0) / q); /* tied tokens in the nucleus */
    sampler s = make_sampler(1.0f, 0, 0.5f, 51);
    histogram(&s, logits, vocab, n, counts);
    int beyond = 0, low_half = 0, high_half = 0;
    for (int i = k + 1; i < vocab - 1; i++)
        beyond += counts[i];
    for (int i = 0; i < k / 2; i++)
        low_half += counts[i];
    for (int i = k / 2; i < k; i++)
        high_half += counts[i];
    assert_int_equal(beyond, 0);
    double p_big = 1.0 / (1.0 + k * q);
    const double probs[3] = {p_big, (1 - p_big) / 2, (1 - p_big) / 2};
    const int got[3] = {counts[vocab - 1], low_half, high_half};
    assert_matches_probs(got, probs, 3, n);
    free(logits);
    free(counts);
}

static void test_invalid_params_named(void **state) {
    (void)state;
    char msg[128];
    sampler_params p = sampler_params_default();
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_OK);
    p.top_p = 1.5f;
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "top_p = 1.5: must be in (0, 1]");
    p.top_p = 0.0f;
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "top_p = 0: must be in (0, 1]");
    p.top_p = 1.0f;
    p.temperature = -0.5f;
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "temperature = -0.5: must be >= 0 and finite");
    p.temperature = NAN;
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "temperature"));
    p.temperature = 0.7f;
    p.top_k = -3;
    sampler s;
    assert_int_equal(sampler_init(&s, &p, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "top_k = -3: must be >= 0 (0 = off)");
    p.top_k = 0;
    p.seed = -2;
    assert_int_equal(sampler_params_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "seed = -2: must be >= 0 or -1 (random)");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax_lowest_tie),
        cmocka_unit_test(test_top_k_one_is_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_distribution_matches),
        cmocka_unit_test(test_temperature_scaling),
        cmocka_unit_test(test_top_k_excludes),
        cmocka_unit_test(test_top_p_excludes),
        cmocka_unit_test(test_top_k_then_top_p),
        cmocka_unit_test(test_top_p_exact_boundary),
        cmocka_unit_test(test_top_p_long_tail),
        cmocka_unit_test(test_invalid_params_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
