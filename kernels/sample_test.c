/* sample_test — the sampling reference against the rules of sample.h applied the slow way (a
 * full sort of the vocabulary by rank, then top-k, top-p and the draw walked one token at a
 * time), over rows with ties, NaN, +inf and -inf logits and a grid of temperatures, top-k, top-p
 * and uniforms; and the log-probability against a double-precision softmax. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/rng.h"
#include "kernels/sample.h"

static const float *sort_probs;
static int by_rank(const void *a, const void *b) {
    const int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    if (sample_ranks_before(sort_probs[ia], ia, sort_probs[ib], ib)) return -1;
    return 1; /* a strict total order on probabilities (never NaN) and ids */
}

/* sample.h's rules, the slow way. */
static int32_t slow_sample(const float *x, int vocab, const sample_row *r) {
    float max = -INFINITY;
    for (int i = 0; i < vocab; i++)
        if (x[i] > max) max = x[i];
    if (max == -INFINITY) return -1;
    if (sample_is_greedy(r)) {
        for (int i = 0; i < vocab; i++)
            if (x[i] == max) return i;
    }
    max = max < FLT_MAX ? max : FLT_MAX;
    float *p = malloc(vocab * sizeof *p);
    int32_t *order = malloc(vocab * sizeof *order);
    for (int i = 0; i < vocab; i++)
        p[i] = sample_prob(x[i], max, r->temperature), order[i] = i;
    const int ranked = (r->top_k > 0 && r->top_k < vocab) || r->top_p < 1.0f;
    if (ranked) {
        sort_probs = p;
        qsort(order, vocab, sizeof *order, by_rank);
    }
    int n = r->top_k > 0 && r->top_k < vocab ? r->top_k : vocab;
    uint64_t kept = 0;
    for (int j = 0; j < n; j++)
        kept += sample_mass(p[order[j]]);
    if (r->top_p < 1.0f) {
        const uint64_t target = (uint64_t)((double)r->top_p * (double)kept);
        uint64_t acc = 0;
        int m = 0;
        while (m < n && (m == 0 || acc < target))
            acc += sample_mass(p[order[m++]]);
        n = m, kept = acc;
    }
    const uint64_t pick = sample_scale_mass(r->u, kept);
    uint64_t acc = 0;
    int32_t id = -1;
    for (int j = 0; j < n && id < 0; j++)
        if ((acc += sample_mass(p[order[j]])) > pick) id = order[j];
    free(p), free(order);
    return id;
}

/* Row kinds: 0 smooth, 1 many ties, 2 NaN/-inf sprinkled, 3 +inf present, 4 one dominant, 5 all
 * masked. */
static void fill_row(float *x, int vocab, int kind, ds_rng *rng) {
    for (int i = 0; i < vocab; i++) {
        const double g = (double)(ds_rng_u64(rng) >> 11) * 0x1.0p-53;
        x[i] = kind == 1 ? (float)(ds_rng_u64(rng) % 12) : (float)(8.0 * g - 4.0);
        if (kind == 2 && i % 7 == 3) x[i] = i % 2 ? NAN : -INFINITY;
        if (kind == 5) x[i] = i % 3 ? -INFINITY : NAN;
    }
    if (kind == 3) x[vocab / 3] = INFINITY, x[vocab / 2] = INFINITY;
    if (kind == 4) x[vocab - 1] = 40.0f;
}

static void test_matches_the_rules(void **state) {
    (void)state;
    enum { vocab = 3001 };
    const float temps[] = {0.0f, 0.3f, 1.0f, 2.5f};
    const int ks[] = {0, 1, 7, 50, vocab, vocab + 5};
    const float ps[] = {1.0f, 0.95f, 0.5f, 0.01f};
    ds_rng rng = {11};
    float *x = malloc(vocab * sizeof *x);
    void *scratch = malloc(sample_ref_scratch_bytes(vocab));
    int checked = 0, distinct_ids = 0, last = -2;
    for (int kind = 0; kind < 6; kind++) {
        fill_row(x, vocab, kind, &rng);
        for (size_t t = 0; t < sizeof temps / sizeof *temps; t++)
            for (size_t k = 0; k < sizeof ks / sizeof *ks; k++)
                for (size_t q = 0; q < sizeof ps / sizeof *ps; q++)
                    for (int d = 0; d < 4; d++) {
                        sample_row r = {.temperature = temps[t], .top_k = ks[k], .top_p = ps[q]};
                        r.u = d == 3 ? 0.9999999999 : (double)(ds_rng_u64(&rng) >> 11) * 0x1.0p-53;
                        const int32_t want = slow_sample(x, vocab, &r);
                        const int32_t got = sample_row_ref(x, vocab, &r, scratch, NULL);
                        if (got != want)
                            fail_msg("kind %d T %g top_k %d top_p %g u %.17g: got %d, want %d",
                                     kind, (double)r.temperature, r.top_k, (double)r.top_p, r.u,
                                     got, want);
                        distinct_ids += got != last;
                        last = got;
                        checked++;
                    }
    }
    assert_int_equal(checked, 6 * 4 * 6 * 4 * 4);
    assert_true(distinct_ids > checked / 4); /* the draws really vary */
    free(x), free(scratch);
}

static void test_greedy_and_masked(void **state) {
    (void)state;
    float x[6] = {1.0f, NAN, 3.0f, 3.0f, -INFINITY, 2.0f};
    char scratch[6 * 8];
    sample_row greedy = {.temperature = 0.0f, .top_p = 1.0f};
    assert_int_equal(sample_row_ref(x, 6, &greedy, scratch, NULL), 2); /* lowest id of a tie */
    sample_row top1 = {.temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .u = 0.99};
    assert_int_equal(sample_row_ref(x, 6, &top1, scratch, NULL), 2);
    float masked[3] = {NAN, -INFINITY, NAN};
    float lp = 0.0f;
    assert_int_equal(sample_row_ref(masked, 3, &top1, scratch, &lp), -1);
    assert_true(isnan(lp));
    float inf[3] = {1.0f, INFINITY, 2.0f};
    sample_row hot = {.temperature = 1.0f, .top_p = 1.0f, .u = 0.999};
    assert_int_equal(sample_row_ref(inf, 3, &hot, scratch, NULL), 1); /* +inf takes all mass */
}

static void test_logprob(void **state) {
    (void)state;
    enum { vocab = 500 };
    ds_rng rng = {3};
    float x[vocab];
    char scratch[vocab * 8];
    fill_row(x, vocab, 0, &rng);
    double max = -INFINITY, sum = 0.0;
    for (int i = 0; i < vocab; i++)
        max = x[i] > max ? x[i] : max;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)x[i] - max);
    for (int d = 0; d < 20; d++) {
        sample_row r = {.temperature = 0.7f, .top_k = 0, .top_p = 0.9f};
        r.u = (double)(ds_rng_u64(&rng) >> 11) * 0x1.0p-53;
        float lp;
        const int32_t id = sample_row_ref(x, vocab, &r, scratch, &lp);
        assert_true(id >= 0);
        assert_true(fabs(lp - ((double)x[id] - max - log(sum))) < 1e-5);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_the_rules),
        cmocka_unit_test(test_greedy_and_masked),
        cmocka_unit_test(test_logprob),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
