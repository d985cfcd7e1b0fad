/* kernels/sample.h — the device side of sampling: greedy argmax and the k largest logits of each
 * row (the engine's sampler then draws among those k on the host with its temperature, top-p and
 * seeded generator, engine/sampler.h). References here; CUDA launchers in kernels/cuda.h.
 * Ties go to the lower token id, so the GPU and the reference agree exactly. */
#ifndef DS_KERNELS_SAMPLE_H
#define DS_KERNELS_SAMPLE_H

#include <stdint.h>

#ifdef __CUDACC__
#define DS_SAMPLE_FN static inline __host__ __device__
#else
#define DS_SAMPLE_FN static inline
#endif

/* ids[r] = the index of the largest logits[r][:] (lowest index on ties; NaN never wins).
 * logits [n_rows][vocab] fp32. */
void sample_argmax_ref(int32_t *ids, const float *logits, int n_rows, int vocab);

/* The k largest logits of each row, in descending order (ties: lower id first): values and ids
 * [n_rows][k], 1 <= k <= vocab. NaNs rank below every number. */
void sample_topk_ref(float *values, int32_t *ids, const float *logits, int n_rows, int vocab,
                     int k);

/* 1 if (a, ia) ranks before (b, ib): larger value first, then lower id; NaN last. */
DS_SAMPLE_FN int sample_ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != a) return 0;
    if (b != b) return 1;
    return a > b || (a == b && ia < ib);
}

#endif
