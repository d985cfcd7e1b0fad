/* tools/eval/perplexity.c — sliding-window perplexity through the engine (see perplexity.h). */
#include "tools/eval/perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

#include "engine/backend_open.h"
#include "kvcache/paged_cache.h"

enum { CHUNK = 256 };

/* -log softmax(logits)[target], in double. */
static double nll(const float *logits, int vocab, int target) {
    float mx = logits[0];
    for (int i = 1; i < vocab; i++)
        mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0.0;
    for (int i = 0; i < vocab; i++)
        sum += exp((double)logits[i] - mx);
    return log(sum) + mx - logits[target];
}

ds_status ppl_evaluate(const llama_model *model, const int32_t *tokens, int n_tokens, int ctx,
                       int stride, int block_size, const dq_config *key_codec,
                       const dq_config *value_codec, qm_type weight_type, int cuda,
                       int tensor_parallel, ppl_result *out, char *msg, size_t msg_len) {
    *out = (ppl_result){0};
    const llama_config *c = &model->config;
    if (ctx < 2 || ctx > c->context_length || stride < 1 || stride > ctx || n_tokens < 2)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "perplexity: ctx = %d (2..%d), stride = %d (1..ctx), tokens = %d (>= 2)",
                       ctx, c->context_length, stride, n_tokens);
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = block_size,
                          .key_codec = *key_codec,
                          .value_codec = *value_codec,
                          .n_open_blocks = CHUNK / block_size + 2,
                          .n_full_blocks = ctx / block_size + 1,
                          .no_storage = cuda};
    kv_cache *cache = NULL;
    engine_backend be = {0};
    float *logits = malloc((size_t)CHUNK * c->vocab_size * sizeof(float));
    ds_status st = logits ? kv_cache_create(&kc, &cache, msg, msg_len)
                          : ds_fail(msg, msg_len, DS_ENOMEM, "perplexity: out of memory");
    engine_backend_options bo = {.cuda = cuda,
                                 .max_step_tokens = CHUNK,
                                 .max_seqs = 1,
                                 .cpu_weights = weight_type,
                                 .tensor_parallel = tensor_parallel,
                                 .n_nodes = 1,
                                 .tp_timeout_ms = 60000};
    if (st == DS_OK) st = engine_backend_open(model, cache, &bo, &be, msg, msg_len);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int prev_end = 0;
    for (int begin = 0; st == DS_OK && prev_end < n_tokens; begin += stride) {
        int end = begin + ctx < n_tokens ? begin + ctx : n_tokens;
        /* Positions whose logits score a token: t in [first_scored - 1, end - 1). */
        int first_scored = prev_end > begin + 1 ? prev_end : begin + 1;
        kv_seq seq;
        kv_seq_init(&seq);
        for (int i = begin; st == DS_OK && i < end; i += CHUNK) {
            int n = end - i < CHUNK ? end - i : CHUNK;
            llama_step_seq s = {
                .kv = &seq, .tokens = tokens + i, .n_tokens = n, .logits = LLAMA_LOGITS_ALL};
            st = kv_seq_reserve(cache, &seq, s.tokens, n, msg, msg_len);
            if (st == DS_OK) st = be.forward(be.impl, &s, 1, logits, msg, msg_len);
            if (st == DS_OK)
                kv_seq_commit(cache, &seq);
            else if (seq.n_reserved > seq.n_tokens)
                kv_seq_rollback(cache, &seq);
            for (int r = 0; st == DS_OK && r < n; r++) {
                int target = i + r + 1;
                if (target < first_scored || target >= end) continue;
                out->nll_sum +=
                    nll(logits + (size_t)r * c->vocab_size, c->vocab_size, tokens[target]);
                out->n_scored++;
            }
        }
        kv_seq_release(cache, &seq);
        prev_end = end;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (st == DS_OK) {
        out->ppl = exp(out->nll_sum / (double)out->n_scored);
        out->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        out->bytes_per_token = kv_cache_bytes_per_token(cache);
    }
    if (be.destroy) be.destroy(be.impl);
    kv_cache_destroy(cache);
    free(logits);
    return st;
}
