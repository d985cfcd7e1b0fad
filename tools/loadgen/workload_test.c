/* tools/loadgen/workload_test.c — the seeded workload: repeatable, lengths in range, exactly the
 * asked share cancelled, Poisson gaps of the right mean, prompts independent of rate and
 * cancellations, corpus slices, errors naming the flag. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "tools/loadgen/workload.h"

static lg_workload_options base(void) {
    return (lg_workload_options){.num_requests = 200,
                                 .input_len = 40,
                                 .output_len = 20,
                                 .range_ratio = 0.5,
                                 .seed = 11,
                                 .vocab_size = 1000};
}

static int same_prompts(const lg_workload *a, const lg_workload *b) {
    if (a->n_requests != b->n_requests) return 0;
    for (int i = 0; i < a->n_requests; i++) {
        const lg_request *p = &a->requests[i], *q = &b->requests[i];
        if (p->n_prompt_ids != q->n_prompt_ids || p->max_tokens != q->max_tokens ||
            memcmp(p->prompt_ids, q->prompt_ids, (size_t)p->n_prompt_ids * sizeof(int32_t)))
            return 0;
    }
    return 1;
}

static void test_seeded_and_in_range(void **state) {
    (void)state;
    lg_workload_options o = base();
    lg_workload a, b, c;
    assert_int_equal(lg_workload_create(&o, &a, NULL, 0), DS_OK);
    assert_int_equal(lg_workload_create(&o, &b, NULL, 0), DS_OK);
    o.seed = 12;
    assert_int_equal(lg_workload_create(&o, &c, NULL, 0), DS_OK);
    assert_true(same_prompts(&a, &b));
    assert_false(same_prompts(&a, &c));
    int lo_in = 40, hi_in = 0;
    for (int i = 0; i < a.n_requests; i++) {
        const lg_request *q = &a.requests[i];
        assert_in_range(q->n_prompt_ids, 20, 60);
        assert_in_range(q->max_tokens, 10, 30);
        for (int k = 0; k < q->n_prompt_ids; k++)
            assert_in_range(q->prompt_ids[k], 0, 999);
        assert_true(q->arrival_s == 0.0);
        assert_int_equal(q->cancel_after_tokens, -1);
        lo_in = q->n_prompt_ids < lo_in ? q->n_prompt_ids : lo_in;
        hi_in = q->n_prompt_ids > hi_in ? q->n_prompt_ids : hi_in;
    }
    assert_true(lo_in < 25 && hi_in > 55); /* the whole range is used */
    assert_int_equal(lg_workload_max_len(40, 0.5), 60);
    lg_workload_destroy(&a);
    lg_workload_destroy(&b);
    lg_workload_destroy(&c);
}

static void test_exact_cancel_share_and_points(void **state) {
    (void)state;
    lg_workload_options o = base();
    o.cancel_fraction = 0.25;
    lg_workload w, plain;
    assert_int_equal(lg_workload_create(&o, &w, NULL, 0), DS_OK);
    int n_cancel = 0, n_zero = 0;
    for (int i = 0; i < w.n_requests; i++) {
        int k = w.requests[i].cancel_after_tokens;
        if (k < 0) continue;
        n_cancel++;
        n_zero += k == 0;
        assert_in_range(k, 0, w.requests[i].max_tokens - 1);
    }
    assert_int_equal(n_cancel, 50);
    assert_true(n_zero < n_cancel);
    o.cancel_fraction = 0;
    assert_int_equal(lg_workload_create(&o, &plain, NULL, 0), DS_OK);
    assert_true(same_prompts(&w, &plain)); /* cancellations do not move the prompts */
    lg_workload_destroy(&w);
    lg_workload_destroy(&plain);
    o.num_requests = 7, o.cancel_fraction = 1.0;
    assert_int_equal(lg_workload_create(&o, &w, NULL, 0), DS_OK);
    for (int i = 0; i < w.n_requests; i++)
        assert_true(w.requests[i].cancel_after_tokens >= 0);
    lg_workload_destroy(&w);
}

static void test_poisson_arrivals(void **state) {
    (void)state;
    lg_workload_options o = base();
    o.num_requests = 4000;
    o.rate = 8.0;
    lg_workload w, closed;
    assert_int_equal(lg_workload_create(&o, &w, NULL, 0), DS_OK);
    double prev = 0, sum_sq = 0;
    for (int i = 0; i < w.n_requests; i++) {
        double gap = w.requests[i].arrival_s - prev;
        assert_true(gap >= 0);
        sum_sq += gap * gap;
        prev = w.requests[i].arrival_s;
    }
    double mean = prev / w.n_requests, var = sum_sq / w.n_requests - mean * mean;
    assert_true(fabs(mean - 1.0 / 8) < 0.05 / 8);     /* exponential: mean 1 / rate */
    assert_true(fabs(sqrt(var) - 1.0 / 8) < 0.1 / 8); /* and standard deviation 1 / rate */
    o.rate = 0;
    assert_int_equal(lg_workload_create(&o, &closed, NULL, 0), DS_OK);
    assert_true(same_prompts(&w, &closed)); /* the rate does not move the prompts */
    lg_workload_destroy(&w);
    lg_workload_destroy(&closed);
}

static void test_corpus_slices(void **state) {
    (void)state;
    int32_t corpus[50];
    for (int k = 0; k < 50; k++)
        corpus[k] = 1000 + k;
    lg_workload_options o = base();
    o.corpus = corpus;
    o.n_corpus = 50;
    lg_workload w;
    assert_int_equal(lg_workload_create(&o, &w, NULL, 0), DS_OK);
    int shortened = 0;
    for (int i = 0; i < w.n_requests; i++) {
        const lg_request *q = &w.requests[i];
        assert_in_range(q->n_prompt_ids, 20, 50);
        shortened += q->n_prompt_ids == 50;
        for (int k = 1; k < q->n_prompt_ids; k++)
            assert_int_equal(q->prompt_ids[k], q->prompt_ids[k - 1] + 1); /* one contiguous slice */
        assert_in_range(q->prompt_ids[0], 1000, 1049);
    }
    assert_true(shortened > 0); /* draws over 50 tokens take the whole corpus */
    lg_workload_destroy(&w);
}

static void test_errors_name_the_flag(void **state) {
    (void)state;
    char msg[128];
    lg_workload w;
    lg_workload_options o = base();
    o.num_requests = 0;
    assert_int_equal(lg_workload_create(&o, &w, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "--num-requests"));
    o = base();
    int32_t none[1] = {0};
    o.corpus = none;
    o.n_corpus = 0;
    assert_int_equal(lg_workload_create(&o, &w, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "--prompt-file"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seeded_and_in_range),
        cmocka_unit_test(test_exact_cancel_share_and_points),
        cmocka_unit_test(test_poisson_arrivals),
        cmocka_unit_test(test_corpus_slices),
        cmocka_unit_test(test_errors_name_the_flag),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
