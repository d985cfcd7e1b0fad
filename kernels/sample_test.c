/* sample_test — the sampling references: argmax and top-k against a full sort, with ties (lower
 * id first) and NaNs (never chosen before a number). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/rng.h"
#include "kernels/sample.h"

static const float *sort_keys;
static int by_rank(const void *a, const void *b) {
    const int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    if (sample_ranks_before(sort_keys[ia], ia, sort_keys[ib], ib)) return -1;
    if (sample_ranks_before(sort_keys[ib], ib, sort_keys[ia], ia)) return 1;
    return ia < ib ? -1 : ia > ib; /* two NaNs: by id */
}

static void test_topk_matches_sort(void **state) {
    (void)state;
    enum { rows = 3, vocab = 1000, k = 40 };
    ds_rng rng = {7};
    float *x = malloc(rows * vocab * sizeof(float)), v[rows * k];
    int32_t ids[rows * k], best[rows], order[vocab];
    for (int i = 0; i < rows * vocab; i++)
        x[i] = (float)(ds_rng_u64(&rng) % 50) - 25.0f; /* many ties */
    x[vocab + 3] = NAN, x[2 * vocab] = NAN;
    for (int i = 2 * vocab + 1; i < 3 * vocab; i++)
        x[i] = i % 3 ? NAN : -1.0f; /* mostly NaN */
    sample_topk_ref(v, ids, x, rows, vocab, k);
    sample_argmax_ref(best, x, rows, vocab);
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < vocab; i++)
            order[i] = i;
        sort_keys = x + r * vocab;
        qsort(order, vocab, sizeof order[0], by_rank);
        for (int j = 0; j < k; j++)
            assert_int_equal(ids[r * k + j], order[j]);
        assert_int_equal(best[r], order[0]);
        assert_false(isnan(v[r * k]));
    }
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_topk_matches_sort)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
