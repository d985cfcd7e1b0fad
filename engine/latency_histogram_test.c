/* engine/latency_histogram_test.c — bucket edges (an observation equal to a bound counts in
 * that bucket, as Prometheus' `le` says), +Inf, sum and count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/latency_histogram.h"

static void test_buckets_are_le(void **state) {
    (void)state;
    latency_histogram h;
    latency_histogram_init(&h, LATENCY_TTFT);
    assert_true(h.n_bounds > 2);
    assert_true(h.n_bounds <= LATENCY_HISTOGRAM_MAX_BOUNDS);
    latency_histogram_observe(&h, 0.0);         /* below the first bound */
    latency_histogram_observe(&h, h.bounds[0]); /* equal: still the first bucket */
    latency_histogram_observe(&h, h.bounds[1]); /* the second */
    latency_histogram_observe(&h, 1e9);         /* over every bound: +Inf */
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[h.n_bounds], 1);
    assert_int_equal(h.count, 4);
    assert_true(h.sum_s > 1e9 && h.sum_s < 1e9 + 1);
}

static void test_bounds_ascend(void **state) {
    (void)state;
    latency_histogram_kind kinds[] = {LATENCY_TTFT, LATENCY_INTER_TOKEN, LATENCY_E2E};
    for (int k = 0; k < 3; k++) {
        latency_histogram h;
        latency_histogram_init(&h, kinds[k]);
        for (int i = 1; i < h.n_bounds; i++)
            assert_true(h.bounds[i] > h.bounds[i - 1]);
        assert_int_equal(h.count, 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_are_le),
        cmocka_unit_test(test_bounds_ascend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
