/* engine/loader/synthetic.h — a random-weight Llama without a file: named shapes (the configs of
 * real checkpoints), a small byte-level BPE vocabulary learned from built-in English text, and
 * the seeded weight fill. decoserve-mkmodel writes these pieces to GGUF / HF folders; the serving
 * engine uses them in memory for --random-weights (the CUDA backend fills the GPU weights itself,
 * so the host needs only the config and the tokenizer). Everything here is deterministic: the
 * same shape, vocab_size and seed give the same model on every machine.
 *
 * The vocabulary is the same for every shape: 3 control tokens (ids 0-2: <|endoftext|>,
 * <|im_start|>, <|im_end|>), the 256 byte tokens in GPT-2's bytes_to_unicode alphabet, the tokens
 * of the greedily learned merges, then "<|unused_N|>" filler tokens (N = the id) up to the shape's
 * vocab_size. It tokenizes like SmolLM2 (pre-tokenizer "smollm"), not like the real model the
 * shape is named after; any text round-trips because every byte has a token. */
#ifndef DS_ENGINE_LOADER_SYNTHETIC_H
#define DS_ENGINE_LOADER_SYNTHETIC_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/loader/model.h"
#include "engine/tokenizer/bpe.h"

/* Token ids and pre-tokenizer of the synthetic tokenizer (what mkmodel writes to GGUF as
 * tokenizer.ggml.bos_token_id / eos_token_id / padding_token_id = eos / pre). It adds no BOS. */
#define SYNTHETIC_BOS_ID 1 /* <|im_start|> */
#define SYNTHETIC_EOS_ID 2 /* <|im_end|> */
#define SYNTHETIC_PRE    "smollm"

/* The known shape names, NULL-terminated, in the order help text lists them:
 *   tiny          2 layers, d_model 64, 4 heads / 2 kv heads of 16, d_ff 128, context 256,
 *                 vocab = the learned vocabulary alone; for unit tests
 *   smollm2-135m  SmolLM2-135M: 30 layers, 576, 9/3 heads of 64, d_ff 1536, vocab 49152,
 *                 context 8192, rope theta 100000, tied embeddings
 *   llama2-7b     Llama-2-7B: 32 layers, 4096, 32/32 heads of 128, d_ff 11008, vocab 32000,
 *                 context 4096, theta 10000
 *   llama3-8b     Llama-3-8B (not 3.1: context 8192, theta 500000, no rope scaling): 32 layers,
 *                 4096, 32/8 heads of 128, d_ff 14336, vocab 128256
 *   llama3.1-8b   Llama-3.1-8B: llama3-8b's shape with context 131072 by Llama-3.1 RoPE scaling
 *                 (factor 8, low/high frequency factors 1/4, original context 8192)
 *   llama3-70b    Llama-3-70B: 80 layers, 8192, 64/8 heads of 128, d_ff 28672, vocab 128256,
 *                 context 8192, theta 500000
 * All use rms_eps 1e-5 and architecture "llama"; only smollm2-135m ties its embeddings. */
extern const char *const synthetic_shape_names[];

/* Fills *out with the named shape's configuration, which passes llama_config_validate. For tiny
 * this learns the vocabulary to size it (a few milliseconds). DS_EINVAL naming the shape and
 * listing the known ones for an unknown name; DS_ENOMEM. */
ds_status synthetic_shape(const char *name, llama_config *out, char *msg, size_t msg_len);

/* The vocabulary as plain arrays, for writers that store it (GGUF tokenizer.ggml.*, HF
 * tokenizer.json). Owned by the struct; release with synthetic_vocab_free. */
typedef struct synthetic_vocab {
    int32_t n_tokens;
    char **tokens;  /* [n_tokens] text in the byte-level alphabet ("Ġthe"), NUL-terminated */
    int32_t *types; /* [n_tokens] BPE_TOKEN_CONTROL (ids 0-2), _NORMAL, or _UNUSED (filler) */
    int32_t n_merges;
    char **merges; /* [n_merges] "left right"; rank = index */
} synthetic_vocab;

/* Builds the vocabulary padded with filler tokens to vocab_size entries; vocab_size 0 means the
 * learned tokens alone. DS_EINVAL if vocab_size is negative or smaller than the learned
 * vocabulary, DS_ENOMEM; on error *out is left empty (safe to free). */
ds_status synthetic_vocab_build(int vocab_size, synthetic_vocab *out, char *msg, size_t msg_len);

/* Releases the arrays and zeroes the struct. NULL-safe. */
void synthetic_vocab_free(synthetic_vocab *vocab);

/* The tokenizer over synthetic_vocab_build(vocab_size): the same one the GGUF loader builds from
 * a file decoserve-mkmodel wrote with that vocabulary. The caller owns *out (bpe_destroy); it is
 * NULL on error. Errors as synthetic_vocab_build. */
ds_status synthetic_tokenizer(int vocab_size, bpe_tokenizer **out, char *msg, size_t msg_len);

/* Fills every weight of m (allocated by llama_model_alloc for m->config): matrices and embeddings
 * with N(0, 0.02) draws, norms with 1. The draws come from one ds_rng seeded with seed, in the
 * order tok_embd, output (untied only), then per layer wq, wk, wv, wo, w_gate, w_up, w_down, so
 * a seed gives the same weights as every earlier decoserve-mkmodel. */
void synthetic_fill_weights(llama_model *m, uint64_t seed);

#endif
