/* tools/eval/perplexity.c — sliding-window perplexity through the engine (see perplexity.h). */
#include "tools/eval/perplexity.h"

#include <math.h>
#include <stdlib.h>
#include <time.h>

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

int ppl_window_count(int n_tokens, int ctx, int stride) {
    return n_tokens <= ctx ? 1 : 1 + (n_tokens - ctx + stride - 1) / stride;
}

ds_status ppl_evaluate(const llama_model *model, const int32_t *tokens, int n_tokens,
                       const ppl_options *o, ppl_result *out, char *msg, size_t msg_len) {
    *out = (ppl_result){0};
    const llama_config *c = &model->config;
    const int ctx = o->ctx, stride = o->stride;
    if (ctx < 2 || ctx > c->context_length || stride < 1 || stride > ctx || n_tokens < 2)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "perplexity: ctx = %d (2..%d), stride = %d (1..ctx), tokens = %d (>= 2)",
                       ctx, c->context_length, stride, n_tokens);
    const int n_windows = ppl_window_count(n_tokens, ctx, stride);
    const int first = o->first_window, last = o->end_window ? o->end_window : n_windows;
    if (first < 0 || first >= last || last > n_windows)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "perplexity: windows %d:%d: %d tokens, ctx %d and stride %d make windows "
                       "0:%d",
                       first, last, n_tokens, ctx, stride, n_windows);
    kv_forward_options fo = {.key_codec = o->key_codec,
                             .value_codec = o->value_codec,
                             .block_size = o->block_size,
                             .max_seq_tokens = ctx,
                             .max_step_tokens = CHUNK,
                             .read = o->read,
                             .weights = o->weights,
                             .cuda = o->cuda,
                             .tensor_parallel = o->tensor_parallel};
    kv_forward f;
    float *logits = malloc((size_t)CHUNK * c->vocab_size * sizeof(float));
    ds_status st = logits ? kv_forward_open(&f, model, &fo, msg, msg_len)
                          : ds_fail(msg, msg_len, DS_ENOMEM, "perplexity: out of memory");
    if (st != DS_OK) {
        free(logits);
        return st;
    }
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    /* The end of the window before `first` (what it scored up to). */
    int prev_end = first ? (first - 1) * stride + ctx : 0;
    prev_end = prev_end < n_tokens ? prev_end : n_tokens;
    out->first_scored = prev_end > first * stride + 1 ? prev_end : first * stride + 1;
    for (int w = first; st == DS_OK && w < last; w++) {
        int begin = w * stride, end = begin + ctx < n_tokens ? begin + ctx : n_tokens;
        /* Positions whose logits score a token: t in [first_scored - 1, end - 1). */
        int first_scored = prev_end > begin + 1 ? prev_end : begin + 1;
        kv_seq seq;
        kv_seq_init(&seq);
        for (int i = begin; st == DS_OK && i < end; i += CHUNK) {
            int n = end - i < CHUNK ? end - i : CHUNK;
            /* a chunk whose rows score nothing needs no logits */
            int scores = i + n >= first_scored;
            st = kv_forward_step(&f, &seq, tokens + i, n,
                                 scores ? LLAMA_LOGITS_ALL : LLAMA_LOGITS_NONE, logits, msg,
                                 msg_len);
            for (int r = 0; st == DS_OK && scores && r < n; r++) {
                int target = i + r + 1;
                if (target < first_scored || target >= end) continue;
                out->nll_sum +=
                    nll(logits + (size_t)r * c->vocab_size, c->vocab_size, tokens[target]);
                out->n_scored++;
            }
        }
        kv_seq_release(f.cache, &seq);
        prev_end = end;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    if (st == DS_OK) {
        out->ppl = exp(out->nll_sum / (double)out->n_scored);
        out->seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
        out->cpu_seconds = (double)(c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9;
        out->bytes_per_token = f.bytes_per_token;
        out->read = f.read;
        out->n_windows = n_windows;
        out->first_window = first, out->end_window = last;
        out->end_scored = prev_end;
    }
    kv_forward_close(&f);
    free(logits);
    return st;
}
