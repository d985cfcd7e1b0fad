/* tools/eval/kv_forward.h — the model's forward pass over one sequence at a time with its KV
 * cache compressed by a chosen codec, read one of two ways (decoserve-eval's ppl and greedy):
 *
 *   KV_READ_ENGINE  the cache holds the codec's pages and the forward pass reads them as when
 *                   serving (the backend's attention over compressed pages);
 *   KV_READ_CODEC   the cache holds fp16 pages and every page of a block that fills is replaced
 *                   by the codec's round trip (dq_compress_page, dq_decompress_page, rounded back
 *                   to fp16) before any later token reads it: steps are cut at block boundaries,
 *                   so a token sees every earlier full block through the codec and its own block
 *                   exact, the engine's protocol (kvcache/paged_cache.h). This reads formats the
 *                   serving attention does not (the decoquant-hv and hadamard-rtn presets) through
 *                   the C reference decoder; it differs from KV_READ_ENGINE by the fp16 rounding
 *                   of decoded values (relative 2^-11 at most, below every codec's error);
 *   KV_READ_AUTO    the engine where it accepts the format, the codec where it refuses it
 *                   (DS_EUNSUPPORTED) and the forward pass runs on the CPU, and for 3 bits,
 *                   which the engine accepts but its CPU attention does not read (KV_READ_ENGINE
 *                   refuses them).
 *
 * Lifetime: kv_forward_open borrows the model (it must outlive the kv_forward) and owns the
 * cache, the backend and the round-trip scratch until kv_forward_close. One thread. */
#ifndef DS_TOOLS_EVAL_KV_FORWARD_H
#define DS_TOOLS_EVAL_KV_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/backend.h"
#include "engine/loader/model.h"
#include "kernels/qmatmul.h"
#include "kvcache/decoquant.h"
#include "kvcache/paged_cache.h"

typedef enum kv_read { KV_READ_AUTO = 0, KV_READ_ENGINE, KV_READ_CODEC } kv_read;

/* "auto", "engine", "codec"; DS_EINVAL naming the value otherwise. */
ds_status kv_read_from_name(const char *name, kv_read *out, char *msg, size_t msg_len);
const char *kv_read_name(kv_read read);

typedef struct kv_forward_options {
    dq_config key_codec, value_codec; /* block_size and head_dim are filled in */
    int block_size;
    int max_seq_tokens;  /* longest sequence the cache must hold */
    int max_step_tokens; /* most tokens one step carries, all its sequences together */
    int max_seqs;        /* sequences one kv_forward_batch carries (0: 1) */
    kv_read read;
    qm_type weights; /* CPU compute weights */
    int cuda, tensor_parallel;
} kv_forward_options;

typedef struct kv_forward {
    const llama_model *model;
    kv_cache *cache;
    engine_backend backend;
    kv_read read;    /* as resolved: KV_READ_ENGINE or KV_READ_CODEC */
    int block_steps; /* 1: no step may cross a block boundary (codec reading, a compressed
                        format: the round trip happens between steps) */
    dq_format key_format, value_format; /* the codec's (what the table's bytes/token count) */
    double bytes_per_token;             /* the codec's, all layers, K+V */
    uint8_t *page;                      /* KV_READ_CODEC scratch: one compressed page, */
    float *decoded;                     /* its decoding [T][D] */
    void *work;                         /* and the codec's workspace */
} kv_forward;

ds_status kv_forward_open(kv_forward *f, const llama_model *model, const kv_forward_options *o,
                          char *msg, size_t msg_len);
void kv_forward_close(kv_forward *f);

/* Appends n tokens (n <= max_step_tokens) to seq and runs them (reserve, forward, commit; the
 * round trip of blocks that fill with KV_READ_CODEC). logits as llama_step_seq's mode: ALL fills
 * [n][vocab], LAST [1][vocab], NONE nothing. On error seq keeps the tokens of the pieces run
 * before the failing one (KV_READ_CODEC runs a step as one piece per block). */
ds_status kv_forward_step(kv_forward *f, kv_seq *seq, const int32_t *tokens, int n,
                          llama_logits mode, float *logits, char *msg, size_t msg_len);

/* One step of several sequences (each seqs[i].kv continues from its committed tokens; logits as
 * llama_engine_forward fills them, in batch order): reserve, forward, commit, and with
 * KV_READ_CODEC the round trip of the blocks that fill. With KV_READ_CODEC no sequence's new
 * tokens may cross a block boundary (DS_EINVAL). On error nothing is committed. */
ds_status kv_forward_batch(kv_forward *f, const llama_step_seq *seqs, int n_seqs, float *logits,
                           char *msg, size_t msg_len);

#endif
