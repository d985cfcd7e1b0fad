/* kernels/sample.h — one token from each row of logits: greedy, temperature, top-k, top-p and a
 * draw with a uniform the caller supplies (each sequence's own seeded generator, engine/sampler.h),
 * on the GPU (sample_cuda, kernels/cuda.h) or in plain C (sample_row_ref: the definition of
 * correct, which the CPU backend's sampler also runs, so both backends pick the same token from
 * the same logits and the same uniform).
 *
 *   p_i  = exp((l_i - max l) / T), NaN -> 0, +inf counted as FLT_MAX (the best token has p = 1)
 *   q_i  = floor(p_i * 2^44): the token's mass as an integer, so every sum is exact and the
 *          same in any order (one thread, or a CTA's atomics): the GPU's draw is deterministic
 *   rank : p descending, then id ascending (a strict total order)
 *   top-k: keep the k first in rank (0, or k >= vocab: off)
 *   top-p: among those, the shortest rank prefix whose mass reaches floor(top_p * kept mass),
 *          at least one token (1: off)
 *   draw : r = floor(u * kept mass) (at most kept - 1); the first token, walking the kept set in
 *          rank order (in id order when neither top-k nor top-p is on), whose running mass
 *          exceeds r
 * Greedy (temperature 0 or top_k 1) is the argmax, lowest id on ties, NaN never; no uniform is
 * used. A row whose every logit is NaN or -inf gives -1. The chosen token's log-probability is
 * that of the raw logits (temperature 1): l - max - log sum_i exp(l_i - max). */
#ifndef DS_KERNELS_SAMPLE_H
#define DS_KERNELS_SAMPLE_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DS_SAMPLE_FN static inline __host__ __device__
#else
#define DS_SAMPLE_FN static inline
#endif

/* What one row asks for. */
typedef struct sample_row {
    float temperature; /* >= 0; 0: greedy */
    int32_t top_k;     /* >= 0; 0: off */
    float top_p;       /* (0, 1]; 1: off */
    int32_t reserved;  /* 0 */
    double u;          /* uniform in [0, 1); unused when greedy */
} sample_row;
#ifdef __cplusplus
static_assert(sizeof(sample_row) == 24, "sample_row is shared by C and CUDA");
#else
_Static_assert(sizeof(sample_row) == 24, "sample_row is shared by C and CUDA");
#endif

typedef struct sample_params {
    const float *logits;       /* [n_rows][vocab] fp32 */
    const sample_row *rows;    /* [n_rows] */
    int32_t *ids;              /* [n_rows] out: the token, or -1 */
    float *logprobs;           /* [n_rows] out, or NULL */
    float *probs;              /* sample_cuda's workspace [n_rows][vocab] fp32 (p_i) */
    const int32_t *n_rows_dev; /* sample_cuda: rows to sample read from the device (<= n_rows, for
                                  graph replays of a padded batch), or NULL: n_rows */
    int n_rows, vocab;
} sample_params;

#define SAMPLE_MASS_ONE 17592186044416.0 /* 2^44: p = 1 as a mass */

DS_SAMPLE_FN int sample_is_greedy(const sample_row *r) {
    return r->temperature == 0.0f || r->top_k == 1;
}

/* p of a logit, given the row's largest logit (clamped to FLT_MAX) and the temperature > 0.
 * Division, not multiplication by 1/T: a tiny T must not give 0 * inf at the max. */
DS_SAMPLE_FN float sample_prob(float logit, float max, float temperature) {
    if (logit != logit) return 0.0f;
    return expf(((logit < FLT_MAX ? logit : FLT_MAX) - max) / temperature);
}

DS_SAMPLE_FN uint64_t sample_mass(float p) { return (uint64_t)((double)p * SAMPLE_MASS_ONE); }

/* floor(x * mass) for x in [0, 1], kept below mass (mass > 0). */
DS_SAMPLE_FN uint64_t sample_scale_mass(double x, uint64_t mass) {
    uint64_t r = (uint64_t)(x * (double)mass);
    return r < mass ? r : mass - 1;
}

/* 1 if (a, ia) ranks before (b, ib): larger value first, then lower id; NaN last. */
DS_SAMPLE_FN int sample_ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != a) return 0;
    if (b != b) return 1;
    return a > b || (a == b && ia < ib);
}

/* Async scheduling's hand-off (engine/backend.h launch): the input id of a decode whose token the
 * previous step sampled at row src of ids. A row that found no token (-1: its sequence stops, so
 * this row's output is dropped) reads as 0, keeping the embedding lookup in bounds. The CPU
 * backend and sample_handoff_cuda both apply it. */
DS_SAMPLE_FN int32_t sample_handoff_id(const int32_t *ids, int32_t src) {
    return ids[src] >= 0 ? ids[src] : 0;
}

/* Bytes of scratch sample_row_ref needs for a vocabulary of `vocab` tokens. */
size_t sample_ref_scratch_bytes(int vocab);

/* The token for one row of logits [vocab] (see the top of this file); *logprob (may be NULL)
 * gets its log-probability. scratch: sample_ref_scratch_bytes(vocab), malloc-aligned. */
int32_t sample_row_ref(const float *logits, int vocab, const sample_row *row, void *scratch,
                       float *logprob);

/* argmax of logits [vocab], lowest id on ties, NaN skipped; -1 if none is above -inf. */
int32_t sample_argmax_ref(const float *logits, int vocab);

#endif
