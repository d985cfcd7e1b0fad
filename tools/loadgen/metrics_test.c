/* tools/loadgen/metrics_test.c — TTFT / ITL / TPOT attribution for coalesced messages, numpy's
 * percentiles, and what a run's summary counts (successful requests only). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "tools/loadgen/metrics.h"

static void test_itl_spreads_a_message_over_its_tokens(void **state) {
    (void)state;
    double itl[6];
    lg_timing t;
    lg_timing_start(&t, 10.0, itl, 6);
    assert_int_equal(lg_timing_message(&t, 11.0, 1), 0); /* first token: TTFT 1 s */
    assert_int_equal(lg_timing_message(&t, 11.5, 2), 0); /* two tokens 0.5 s later */
    assert_int_equal(lg_timing_message(&t, 11.7, 0), 0); /* a message without tokens */
    assert_int_equal(lg_timing_message(&t, 12.3, 3), 0); /* three tokens 0.8 s after the last */
    lg_result r;
    memset(&r, 0, sizeof r);
    lg_result_times(&r, &t, 12.5);
    assert_int_equal(r.output_tokens, 6);
    assert_int_equal(r.n_itl, 5);
    const double want[5] = {0.25, 0.25, 0.8 / 3, 0.8 / 3, 0.8 / 3};
    double sum = 0;
    for (int k = 0; k < 5; k++) {
        assert_true(fabs(r.itl[k] - want[k]) < 1e-9);
        sum += r.itl[k];
    }
    assert_true(fabs(sum - (12.3 - 11.0)) < 1e-9); /* ITLs add up to first -> last token */
    assert_true(fabs(r.ttft_s - 1.0) < 1e-9);
    assert_true(fabs(r.latency_s - 2.5) < 1e-9);
    assert_true(fabs(r.tpot_s - 1.5 / 5) < 1e-9);
}

static void test_tokens_with_the_first_count_zero(void **state) {
    (void)state;
    double itl[4];
    lg_timing t;
    lg_timing_start(&t, 0.0, itl, 4);
    assert_int_equal(lg_timing_message(&t, 2.0, 3), 0);
    assert_int_equal(lg_timing_message(&t, 3.0, 1), 0);
    lg_result r;
    memset(&r, 0, sizeof r);
    lg_result_times(&r, &t, 3.0);
    assert_int_equal(r.n_itl, 3);
    assert_true(r.itl[0] == 0.0 && r.itl[1] == 0.0 && fabs(r.itl[2] - 1.0) < 1e-9);
    assert_true(fabs(r.ttft_s - 2.0) < 1e-9);
}

static void test_more_tokens_than_capacity_rejected(void **state) {
    (void)state;
    double itl[2] = {-7, -7};
    lg_timing t;
    lg_timing_start(&t, 0.0, itl, 3);
    assert_int_equal(lg_timing_message(&t, 1.0, 2), 0);
    assert_int_equal(lg_timing_message(&t, 2.0, 2), -1);
    assert_int_equal(t.n_tokens, 2);
    assert_true(itl[1] == -7); /* nothing written past what was accepted */
}

static void test_no_token_and_one_token(void **state) {
    (void)state;
    lg_timing t;
    lg_result r;
    double itl[1];
    lg_timing_start(&t, 5.0, itl, 2);
    lg_result_times(&r, &t, 6.0);
    assert_true(r.ttft_s == -1 && r.tpot_s == -1 && r.n_itl == 0 && r.output_tokens == 0);
    assert_int_equal(lg_timing_message(&t, 5.5, 1), 0);
    lg_result_times(&r, &t, 6.0);
    assert_true(fabs(r.ttft_s - 0.5) < 1e-9 && r.tpot_s == -1 && r.n_itl == 0);
}

static void test_percentiles_as_numpy(void **state) {
    (void)state;
    double v[5] = {5, 3, 1, 4, 2};
    lg_dist d;
    lg_dist_compute(v, 5, &d);
    assert_int_equal(d.n, 5);
    assert_true(fabs(d.mean - 3.0) < 1e-12);
    assert_true(fabs(d.p50 - 3.0) < 1e-12);
    assert_true(fabs(d.p90 - 4.6) < 1e-12);  /* numpy.percentile([1..5], 90) */
    assert_true(fabs(d.p99 - 4.96) < 1e-12); /* numpy.percentile([1..5], 99) */
    double one = 7;
    lg_dist_compute(&one, 1, &d);
    assert_true(d.p50 == 7 && d.p99 == 7 && d.mean == 7);
    lg_dist_compute(NULL, 0, &d);
    assert_true(d.n == 0 && d.mean == 0);
}

static void test_summary_counts_successes_only(void **state) {
    (void)state;
    double itl_a[2] = {0.1, 0.3}, itl_c[1] = {9.0};
    lg_result r[4];
    memset(r, 0, sizeof r);
    r[0] = (lg_result){.outcome = LG_OK,
                       .status = 0,
                       .prompt_tokens = 10,
                       .output_tokens = 3,
                       .ttft_s = 1.0,
                       .latency_s = 2.0,
                       .tpot_s = 0.5,
                       .itl = itl_a,
                       .n_itl = 2};
    r[1] = (lg_result){.outcome = LG_OK,
                       .status = 0,
                       .prompt_tokens = 20,
                       .output_tokens = 1,
                       .ttft_s = 3.0,
                       .latency_s = 3.0,
                       .tpot_s = -1};
    r[2] = (lg_result){.outcome = LG_CANCELLED,
                       .status = 1,
                       .cancel_requested = 1,
                       .prompt_tokens = 30,
                       .output_tokens = 2,
                       .ttft_s = 0.1,
                       .latency_s = 0.2,
                       .tpot_s = 0.1,
                       .itl = itl_c,
                       .n_itl = 1};
    r[3] = (lg_result){.outcome = LG_FAILED, .status = 14, .ttft_s = -1, .tpot_s = -1};
    lg_summary s;
    assert_int_equal(lg_summarize(r, 4, 4.0, &s, NULL, 0), DS_OK);
    assert_int_equal(s.n_requests, 4);
    assert_int_equal(s.n_ok, 2);
    assert_int_equal(s.n_cancelled, 1);
    assert_int_equal(s.n_failed, 1);
    assert_int_equal(s.n_cancel_requested, 1);
    assert_int_equal(s.by_status[0], 2);
    assert_int_equal(s.by_status[1], 1);
    assert_int_equal(s.by_status[14], 1);
    assert_int_equal(s.prompt_tokens, 30);
    assert_int_equal(s.output_tokens, 4);
    assert_true(fabs(s.requests_per_s - 0.5) < 1e-12);
    assert_true(fabs(s.output_tokens_per_s - 1.0) < 1e-12);
    assert_true(fabs(s.total_tokens_per_s - 34.0 / 4) < 1e-12);
    assert_int_equal(s.ttft.n, 2);
    assert_true(fabs(s.ttft.mean - 2.0) < 1e-12);
    assert_int_equal(s.tpot.n, 1); /* a 1-token request has no TPOT */
    assert_int_equal(s.itl.n, 2);  /* the cancelled request's ITL is left out */
    assert_true(fabs(s.itl.mean - 0.2) < 1e-12);
    assert_true(fabs(s.latency.p50 - 2.5) < 1e-12);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_itl_spreads_a_message_over_its_tokens),
        cmocka_unit_test(test_tokens_with_the_first_count_zero),
        cmocka_unit_test(test_more_tokens_than_capacity_rejected),
        cmocka_unit_test(test_no_token_and_one_token),
        cmocka_unit_test(test_percentiles_as_numpy),
        cmocka_unit_test(test_summary_counts_successes_only),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
