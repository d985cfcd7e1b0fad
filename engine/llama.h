/* engine/llama.h — the Llama forward pass on the CPU over the paged, compressed KV cache: GQA,
 * RoPE, RMSNorm, SwiGLU, tied embeddings. One call runs one scheduler step: a batch of sequences,
 * each with a chunk of new tokens (a prefill chunk or one decode token), through every layer.
 *
 * Attention of a token at position p reads every earlier full block from the compressed pool and
 * its own block from the fp16 pool (kvcache/paged_cache.h), so results do not depend on how the
 * prompt was chunked or what else was in the batch.
 *
 * The engine borrows the model and the cache (both must outlive it) and owns its scratch, sized
 * at creation for max_step_tokens rows and the model's context, its thread pool and, for Q8_0,
 * the quantized weights; a step allocates nothing. */
#ifndef DS_ENGINE_LLAMA_H
#define DS_ENGINE_LLAMA_H

#include <stdint.h>

#include "common/status.h"
#include "engine/loader/model.h"
#include "kernels/ops.h"
#include "kernels/qmatmul.h"
#include "kvcache/paged_cache.h"

typedef struct llama_engine llama_engine;

typedef enum llama_logits {
    LLAMA_LOGITS_LAST = 0, /* logits of the last new token (sampling) */
    LLAMA_LOGITS_ALL,      /* of every new token (perplexity) */
    LLAMA_LOGITS_NONE      /* none (a prefill chunk that does not reach the prompt's end) */
} llama_logits;

typedef struct llama_step_seq {
    kv_seq *kv;            /* the sequence's cache state; positions continue from kv->n_tokens */
    const int32_t *tokens; /* [n_tokens] new tokens */
    int n_tokens;
    llama_logits logits;
} llama_step_seq;

typedef struct llama_engine_options {
    int max_step_tokens; /* rows one step may carry (prefill chunk + decodes) */
    qm_type weight_type; /* QM_F32: the model's own buffers (no copy); QM_Q8_0: quantized copies
                            of every projection and the LM head (4x fewer bytes per token);
                            QM_Q4_0 or QM_Q4_1 (either: "q4"): copies of the blocks of every
                            matrix the file stores as Q4_0 / Q4_1 (llama_model's file blocks,
                            ~6.4x fewer bytes), Q8_0 for the others */
    int n_threads;       /* Q8_0 GEMM threads; 0: DECOSERVE_THREADS or the online CPUs */
} llama_engine_options;

/* The weight_type of a --weights value: "f32", "q8_0" or "q4" (QM_Q4_0, the file's 4-bit
 * blocks). DS_EINVAL naming the value otherwise. */
ds_status llama_weights_from_name(const char *name, qm_type *out, char *msg, size_t msg_len);

ds_status llama_engine_create(const llama_model *model, kv_cache *cache,
                              const llama_engine_options *options, llama_engine **out, char *msg,
                              size_t msg_len);
void llama_engine_destroy(llama_engine *engine);

/* Analysis hook (decoserve-eval): called in every layer of every step, per sequence, with the
 * post-RoPE rows of the step's new tokens: q [n][n_heads*head_dim], k and v
 * [n][n_kv_heads*head_dim], positions first_pos.. . NULL disables it. */
typedef void (*llama_qkv_tap)(void *ctx, int seq_index, int layer, int first_pos, int n,
                              const float *q, const float *k, const float *v);
void llama_engine_set_tap(llama_engine *engine, llama_qkv_tap tap, void *ctx);

/* Rows of logits a step produces for this batch (what `logits` must hold, times vocab_size). */
int llama_step_logit_rows(const llama_step_seq *seqs, int n_seqs);

/* Runs the batch: reserves KV blocks for every sequence (DS_ENOMEM with nothing reserved if the
 * pools cannot hold the whole batch), then llama_engine_forward, then commits (or rolls back on
 * error). logits [rows][vocab] in batch order. Errors: token id out of range, too many tokens for
 * the step or the context (DS_ERANGE / DS_EINVAL naming the sequence), pools exhausted
 * (DS_ENOMEM). */
ds_status llama_engine_step(llama_engine *engine, const llama_step_seq *seqs, int n_seqs,
                            float *logits, char *msg, size_t msg_len);

/* The forward pass alone, for a caller that manages blocks itself (the scheduler): every
 * sequence's new positions must already be reserved (kv_seq_reserve with exactly its tokens);
 * writes and compresses K/V (all blocks that fill, in one batched call per layer), attends, and
 * leaves the commit or rollback to the caller. */
ds_status llama_engine_forward(llama_engine *engine, const llama_step_seq *seqs, int n_seqs,
                               float *logits, char *msg, size_t msg_len);

/* The model's RoPE settings as the kernels take them (CPU and CUDA forward passes alike). */
static inline ops_rope_config llama_rope_config(const llama_config *c) {
    return (ops_rope_config){.head_dim = c->head_dim,
                             .theta = c->rope_theta,
                             .scaling = (ops_rope_scaling)c->rope_scaling,
                             .factor = c->rope_factor,
                             .low_freq_factor = c->rope_low_freq_factor,
                             .high_freq_factor = c->rope_high_freq_factor,
                             .original_context = c->rope_original_context};
}

#endif
