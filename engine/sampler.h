/* engine/sampler.h — one sequence's sampling: its parameters (temperature, top-k, top-p, seed)
 * and its own generator (xoshiro256**, seeded by splitmix64), so the same seed gives the same
 * tokens whatever else is in the batch. The arithmetic (temperature, top-k, top-p, the draw) is
 * kernels/sample.h's: the CPU backend runs its C reference here (sampler_sample), a GPU backend
 * its kernel on rows that sampler_next_row fills, and both pick the same token from the same
 * logits. Called by the engine thread once per sequence per step; nothing allocates (the caller
 * owns a scratch buffer, one per thread). */
#ifndef DS_ENGINE_SAMPLER_H
#define DS_ENGINE_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/sample.h"

#define SAMPLER_SEED_RANDOM (-1) /* seed picked from the clock; see sampler.seed_used */

typedef struct sampler_params {
    float temperature; /* >= 0; 0 = greedy (argmax, ties -> lowest id) */
    int top_k;         /* >= 0; 0 = off; >= vocab is off */
    float top_p;       /* in (0, 1]; 1 = off */
    int64_t seed;      /* >= 0, or SAMPLER_SEED_RANDOM */
} sampler_params;

/* Per-sequence state: copy of the params and the RNG (xoshiro256**, seeded by splitmix64).
 * Plain value, no resources: embed it in the sequence, no destroy needed. */
typedef struct sampler {
    sampler_params params;
    uint64_t seed_used; /* the seed actually used (the clock's when params.seed was -1) */
    uint64_t rng[4];
} sampler;

/* temperature 1, top_k 0, top_p 1, seed SAMPLER_SEED_RANDOM (plain sampling). */
sampler_params sampler_params_default(void);

/* DS_EINVAL naming the first bad field: "top_p = 1.5: must be in (0, 1]". */
ds_status sampler_params_validate(const sampler_params *params, char *msg, size_t msg_len);

/* Validates params and seeds the RNG. */
ds_status sampler_init(sampler *s, const sampler_params *params, char *msg, size_t msg_len);

/* Bytes of scratch sampler_sample needs for a vocabulary of `vocab` tokens (8 per token). The
 * buffer may be shared by every sequence sampled on the same thread; malloc alignment suffices. */
size_t sampler_scratch_size(int vocab);

/* The next draw's row for kernels/sample.h: the parameters and, unless greedy, the next uniform
 * of the sequence's generator (greedy rows take none, so the generator advances exactly as
 * sampler_sample's does). */
sample_row sampler_next_row(sampler *s);

/* Samples one token id in [0, vocab) from logits [vocab]: sample_row_ref on sampler_next_row.
 * NaN logits are never chosen, +inf ones win. Returns -1 only if no logit is above -inf (every
 * token masked). Cost: O(vocab) exps, plus O(vocab log k) for top-k, or for top-p alone O(vocab)
 * per pre-filter pass and O(c + m log c) to rank the c candidates the pre-filter keeps until the
 * m nucleus tokens are found. */
int sampler_sample(sampler *s, const float *logits, int vocab, void *scratch);

/* argmax of logits [vocab], lowest id on ties, NaN skipped; -1 if none is above -inf. */
int sampler_argmax(const float *logits, int vocab);

#endif
