/* tools/eval/kv_eval.h — measures a KV page codec on K/V matrices exactly as the cache would
 * store them: full pages of block_size tokens compressed, the trailing partial page kept fp16.
 * Used by decoserve-eval's `kv` mode and by the regression test that pins what we measured.
 *
 * Attention error: for nq queries per head, ||softmax(q K^T/sqrt(D)) V - same with K', V'|| /
 * ||softmax(q K^T/sqrt(D)) V||, summed over queries and heads (K, V the fp16 originals, K', V'
 * the reconstructions). */
#ifndef DS_TOOLS_EVAL_KV_EVAL_H
#define DS_TOOLS_EVAL_KV_EVAL_H

#include <stdint.h>

#include "common/status.h"
#include "kvcache/decoquant.h"

/* K/V of n_heads independent heads, each [n_tokens][head_dim], as fp16 (what the cache holds). */
typedef struct kv_set {
    int n_heads, n_tokens, head_dim;
    uint16_t *keys;   /* [n_heads][n_tokens][head_dim] */
    uint16_t *values; /* same shape */
    float *queries;   /* [n_heads][n_queries][head_dim] */
    int n_queries;
} kv_set;

/* Synthetic KV with the structure of real LLM caches: a low-rank latent component per head plus
 * noise, a few key channels (D/32, in the low-frequency RoPE half) 10-50x larger than the rest
 * with non-zero means, RoPE applied to keys by position, and milder per-token scales on values.
 * Queries follow the key distribution (fresh latent draws, same outlier channels). */
ds_status kv_synth(kv_set *set, int n_heads, int n_tokens, int head_dim, int n_queries,
                   uint64_t seed, char *msg, size_t msg_len);

/* Takes fp32 K and V [n_heads][n_tokens][head_dim] (rounded to fp16 here) and draws queries as
 * rows of K at random positions (a query lives where keys live). */
ds_status kv_from_arrays(kv_set *set, const float *keys, const float *values, int n_heads,
                         int n_tokens, int head_dim, int n_queries, uint64_t seed, char *msg,
                         size_t msg_len);

void kv_set_free(kv_set *set);

typedef struct kv_metrics {
    double bytes_per_token;            /* K + V of one head, scales and small tensors included */
    double bits_per_value;             /* effective, averaged over K and V */
    double ratio_vs_fp16;              /* fp16 bytes / these bytes */
    double key_rel_err, value_rel_err; /* relative Frobenius error over all heads */
    double key_max_abs, value_max_abs;
    double attn_rel_err;
    /* CPU time of one dq_compress_page call on the calling thread (one core), mean over the key
     * pages and over the value pages */
    double key_us_per_page, value_us_per_page;
} kv_metrics;

/* Runs one configuration (the same config for keys and values, each with its own role) over the
 * whole set. block_size and head_dim in cfg must match the set. */
ds_status kv_evaluate(const kv_set *set, const dq_config *key_cfg, const dq_config *value_cfg,
                      kv_metrics *out, char *msg, size_t msg_len);

#endif
