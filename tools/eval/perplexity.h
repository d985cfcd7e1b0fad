/* tools/eval/perplexity.h — sliding-window perplexity of a model over a token stream with the KV
 * cache compressed as when serving (full blocks compressed, the open block fp16), read by the
 * engine's attention or through the codec's round trip (tools/eval/kv_forward.h).
 *
 * Protocol (Hugging Face's perplexity recipe, the same as tools/peer_llamacpp.py uses): windows
 * of ctx tokens start at 0, stride, 2*stride, ...; each window is evaluated from an empty cache;
 * it scores the tokens the previous window did not (the first window scores tokens 1..ctx-1: token
 * t is predicted from the logits at t-1); the last window ends at the last token.
 * ppl = exp(sum of negative log-likelihoods / number of scored tokens). */
#ifndef DS_TOOLS_EVAL_PERPLEXITY_H
#define DS_TOOLS_EVAL_PERPLEXITY_H

#include <stdint.h>

#include "common/status.h"
#include "engine/loader/model.h"
#include "kernels/qmatmul.h"
#include "kvcache/decoquant.h"
#include "tools/eval/kv_forward.h"

typedef struct ppl_options {
    int ctx, stride, block_size;
    dq_config key_codec, value_codec;
    kv_read read;    /* how attention reads the compressed cache (tools/eval/kv_forward.h) */
    qm_type weights; /* CPU compute weights */
    /* device: where the forward pass runs (engine/backend_open.h; cuda 1 keeps the pages in GPU
     * memory; tensor_parallel > 1 shards it over that many GPUs of this process) */
    int cuda, tensor_parallel;
    /* Windows [first_window, end_window) of the protocol only (end_window 0: to the last one).
     * Windows start from an empty cache, so shards of one run add up: sum their nll_sum and
     * n_scored. The first k windows of any run are the whole run over its first
     * (k - 1) * stride + ctx tokens. */
    int first_window, end_window;
} ppl_options;

typedef struct ppl_result {
    double ppl;
    double nll_sum;
    long n_scored;
    double seconds;         /* wall time */
    double cpu_seconds;     /* CPU time of the process over the same span (all its threads) */
    double bytes_per_token; /* compressed pool, all layers, K+V */
    kv_read read;           /* as resolved: engine or codec */
    int n_windows;          /* of the whole protocol over these tokens */
    int first_window, end_window;
    int first_scored, end_scored; /* the tokens [first_scored, end_scored) that were scored */
} ppl_result;

/* Windows of the protocol over n_tokens: 1 + ceil((n_tokens - ctx) / stride) (1 if n <= ctx). */
int ppl_window_count(int n_tokens, int ctx, int stride);

ds_status ppl_evaluate(const llama_model *model, const int32_t *tokens, int n_tokens,
                       const ppl_options *options, ppl_result *out, char *msg, size_t msg_len);

#endif
