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

/* The first token window w scores: the end of window w - 1 (what it scored up to), or 1. */
static int first_scored_by(int w, int ctx, int stride, int n_tokens) {
    int prev_end = w ? (w - 1) * stride + ctx : 0;
    prev_end = prev_end < n_tokens ? prev_end : n_tokens;
    return prev_end > w * stride + 1 ? prev_end : w * stride + 1;
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
    /* Windows run GROUP at a time in one batch (each its own sequence), so that steps of one
     * block per window (what the codec's round trip needs) still fill the matrix products. */
    const int group = CHUNK / o->block_size > 1 ? CHUNK / o->block_size : 1;
    kv_forward_options fo = {.key_codec = o->key_codec,
                             .value_codec = o->value_codec,
                             .block_size = o->block_size,
                             .max_seq_tokens = ctx,
                             .max_step_tokens = CHUNK,
                             .max_seqs = group,
                             .read = o->read,
                             .weights = o->weights,
                             .cuda = o->cuda,
                             .tensor_parallel = o->tensor_parallel};
    kv_forward f;
    float *logits = malloc((size_t)CHUNK * c->vocab_size * sizeof(float));
    kv_seq *seqs = malloc((size_t)group * sizeof *seqs);
    llama_step_seq *steps = malloc((size_t)group * sizeof *steps);
    ds_status st = logits && seqs && steps
                       ? kv_forward_open(&f, model, &fo, msg, msg_len)
                       : ds_fail(msg, msg_len, DS_ENOMEM, "perplexity: out of memory");
    if (st != DS_OK) {
        free(logits), free(seqs), free(steps);
        return st;
    }
    struct timespec t0, t1, c0, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    out->first_scored = first_scored_by(first, ctx, stride, n_tokens);
    for (int w0 = first; st == DS_OK && w0 < last; w0 += group) {
        const int n_group = last - w0 < group ? last - w0 : group;
        /* tokens per window and step: one block with the codec's round trip, else a share of
         * the chunk in whole blocks */
        int step = CHUNK / n_group / o->block_size * o->block_size;
        if (f.block_steps || step < o->block_size) step = o->block_size;
        for (int k = 0; k < n_group; k++)
            kv_seq_init(&seqs[k]);
        for (int i = 0; st == DS_OK && i < ctx; i += step) {
            int n_steps = 0;
            for (int k = 0; k < n_group; k++) {
                const int w = w0 + k, begin = w * stride + i;
                const int end = w * stride + ctx < n_tokens ? w * stride + ctx : n_tokens;
                if (begin >= end) continue;
                const int n = end - begin < step ? end - begin : step;
                /* a step whose rows score nothing needs no logits */
                const int scores = begin + n >= first_scored_by(w, ctx, stride, n_tokens);
                steps[n_steps++] =
                    (llama_step_seq){.kv = &seqs[k],
                                     .tokens = tokens + begin,
                                     .n_tokens = n,
                                     .logits = scores ? LLAMA_LOGITS_ALL : LLAMA_LOGITS_NONE};
            }
            if (!n_steps) break;
            st = kv_forward_batch(&f, steps, n_steps, logits, msg, msg_len);
            const float *row = logits;
            for (int k = 0; st == DS_OK && k < n_steps; k++) {
                if (steps[k].logits == LLAMA_LOGITS_NONE) continue;
                const int w = w0 + (int)(steps[k].kv - seqs), begin = w * stride + i;
                const int end = w * stride + ctx < n_tokens ? w * stride + ctx : n_tokens;
                const int first_scored = first_scored_by(w, ctx, stride, n_tokens);
                for (int r = 0; r < steps[k].n_tokens; r++, row += c->vocab_size) {
                    int target = begin + r + 1;
                    if (target < first_scored || target >= end) continue;
                    out->nll_sum += nll(row, c->vocab_size, tokens[target]);
                    out->n_scored++;
                }
            }
        }
        for (int k = 0; k < n_group; k++)
            kv_seq_release(f.cache, &seqs[k]);
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
        int last_end = (last - 1) * stride + ctx;
        out->end_scored = last_end < n_tokens ? last_end : n_tokens;
    }
    kv_forward_close(&f);
    free(logits), free(seqs), free(steps);
    return st;
}
