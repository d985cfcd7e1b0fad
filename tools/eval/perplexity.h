/* tools/eval/perplexity.h — sliding-window perplexity of a model over a token stream with the KV
 * cache compressed exactly as when serving (full blocks compressed, the open block fp16).
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

typedef struct ppl_result {
    double ppl;
    double nll_sum;
    long n_scored;
    double seconds;
    double bytes_per_token; /* compressed pool, all layers, K+V */
} ppl_result;

/* device: where the forward pass runs (engine/backend_open.h; cuda 1 keeps the pages in GPU
 * memory; tensor_parallel > 1 shards it over that many GPUs of this process). weight_type applies
 * to the CPU. */
ds_status ppl_evaluate(const llama_model *model, const int32_t *tokens, int n_tokens, int ctx,
                       int stride, int block_size, const dq_config *key_codec,
                       const dq_config *value_codec, qm_type weight_type, int cuda,
                       int tensor_parallel, ppl_result *out, char *msg, size_t msg_len);

#endif
