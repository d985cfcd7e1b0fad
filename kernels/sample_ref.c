/* kernels/sample_ref.c — C references of the sampling helpers (see sample.h). */
#include "kernels/sample.h"

#include <stddef.h>

void sample_argmax_ref(int32_t *ids, const float *logits, int n_rows, int vocab) {
    for (int r = 0; r < n_rows; r++) {
        const float *x = logits + (size_t)r * vocab;
        int32_t best = 0;
        for (int32_t i = 1; i < vocab; i++)
            if (sample_ranks_before(x[i], i, x[best], best)) best = i;
        ids[r] = best;
    }
}

/* Insertion into a sorted list of at most k entries: O(vocab * k), fine for a reference. */
void sample_topk_ref(float *values, int32_t *ids, const float *logits, int n_rows, int vocab,
                     int k) {
    for (int r = 0; r < n_rows; r++) {
        const float *x = logits + (size_t)r * vocab;
        float *v = values + (size_t)r * k;
        int32_t *id = ids + (size_t)r * k;
        int n = 0;
        for (int32_t i = 0; i < vocab; i++) {
            if (n == k && !sample_ranks_before(x[i], i, v[k - 1], id[k - 1])) continue;
            int j = n < k ? n++ : k - 1;
            for (; j > 0 && sample_ranks_before(x[i], i, v[j - 1], id[j - 1]); j--) {
                v[j] = v[j - 1];
                id[j] = id[j - 1];
            }
            v[j] = x[i];
            id[j] = i;
        }
    }
}
