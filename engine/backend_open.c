/* engine/backend_open.c — the CPU or CUDA forward pass behind engine_backend (backend_open.h).
 *
 * With async_steps the CPU backend also offers launch / collect, synchronously: launch runs the
 * forward pass and samples every row with kernels/sample.h's reference (what engine/sampler.h
 * runs for the synchronous engine, so the tokens are the same), keeping the ids of the last two
 * launches; collect hands the oldest back. The hand-off (prev_row) reads the previous launch's
 * ids as the GPU does, so the engine's async logic runs the same on either device. */
#include "engine/backend_open.h"

#include <stdlib.h>
#include <string.h>

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/plan.h"
#include "engine/llama.h"

typedef struct cpu_backend {
    llama_engine *engine;
    /* async_steps only (NULL otherwise) */
    int max_seqs, max_rows, vocab;
    float *logits;        /* [max_seqs][vocab] */
    void *scratch;        /* sample_row_ref's */
    llama_step_seq *seqs; /* [max_seqs]: the step with handed-over tokens */
    int32_t *handed;      /* [max_step_tokens]: the chunks that end with one */
    int32_t *ids[2];      /* [max_seqs] each: the sampled ids of two launches */
    float *logprobs[2];   /* the same rows' log-probabilities */
    int n_rows[2];        /* rows each launch sampled */
    int head, n_launched; /* the oldest uncollected launch; how many */
    int last;             /* the latest launch's slot (-1: none yet) */
} cpu_backend;

static ds_status cpu_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                             char *msg, size_t msg_len) {
    const cpu_backend *b = impl;
    return llama_engine_forward(b->engine, seqs, n_seqs, logits, msg, msg_len);
}

static ds_status cpu_launch(void *impl, const llama_step_seq *seqs, int n_seqs,
                            const sample_row *rows, const int32_t *prev_row, char *msg,
                            size_t msg_len) {
    cpu_backend *b = impl;
    if (b->n_launched == 2)
        return ds_fail(msg, msg_len, DS_EINVAL, "cpu launch: two steps launched, none collected");
    if (n_seqs > b->max_seqs)
        return ds_fail(msg, msg_len, DS_EINVAL, "cpu launch: %d sequences, at most %d", n_seqs,
                       b->max_seqs);
    const int slot = (b->head + b->n_launched) % 2;
    int n_rows = 0, n_handed = 0;
    for (int i = 0; i < n_seqs; i++) {
        b->seqs[i] = seqs[i];
        if (seqs[i].logits != LLAMA_LOGITS_LAST && seqs[i].logits != LLAMA_LOGITS_NONE)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "sequence %d: launch takes its last row's logits or none", i);
        n_rows += seqs[i].logits == LLAMA_LOGITS_LAST;
        if (!prev_row || prev_row[i] < 0) continue;
        const int n = seqs[i].n_tokens;
        if (b->last < 0 || prev_row[i] >= b->n_rows[b->last] || n_handed + n > b->max_rows)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "sequence %d: hand-off of row %d (the last launch sampled %d rows)", i,
                           prev_row[i], b->last < 0 ? 0 : b->n_rows[b->last]);
        int32_t *t = b->handed + n_handed;
        memcpy(t, seqs[i].tokens, (size_t)(n - 1) * sizeof *t);
        t[n - 1] = sample_handoff_id(b->ids[b->last], prev_row[i]);
        b->seqs[i].tokens = t;
        n_handed += n;
    }
    ds_status st = llama_engine_forward(b->engine, b->seqs, n_seqs, b->logits, msg, msg_len);
    if (st != DS_OK) return st;
    for (int r = 0; r < n_rows; r++)
        b->ids[slot][r] = sample_row_ref(b->logits + (size_t)r * b->vocab, b->vocab, &rows[r],
                                         b->scratch, &b->logprobs[slot][r]);
    b->n_rows[slot] = n_rows;
    b->last = slot;
    b->n_launched++;
    return DS_OK;
}

static ds_status cpu_collect(void *impl, int32_t *tokens, float *logprobs, char *msg,
                             size_t msg_len) {
    cpu_backend *b = impl;
    if (b->n_launched == 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "cpu collect: no step launched");
    const int slot = b->head, n = b->n_rows[slot];
    memcpy(tokens, b->ids[slot], (size_t)n * sizeof *tokens);
    if (logprobs) memcpy(logprobs, b->logprobs[slot], (size_t)n * sizeof *logprobs);
    b->head = (b->head + 1) % 2;
    b->n_launched--;
    return DS_OK;
}

static void cpu_destroy(void *impl) {
    cpu_backend *b = impl;
    llama_engine_destroy(b->engine);
    free(b->logits), free(b->scratch), free(b->seqs), free(b->handed);
    for (int i = 0; i < 2; i++)
        free(b->ids[i]), free(b->logprobs[i]);
    free(b);
}

/* The CPU backend around an engine (which it then owns); the async buffers with async_steps. */
static ds_status cpu_backend_create(llama_engine *e, const llama_model *model,
                                    const engine_backend_options *o, engine_backend *out, char *msg,
                                    size_t msg_len) {
    cpu_backend *b = calloc(1, sizeof *b);
    if (!b) {
        llama_engine_destroy(e);
        return ds_fail(msg, msg_len, DS_ENOMEM, "cpu backend: out of memory");
    }
    b->engine = e;
    b->last = -1;
    *out = (engine_backend){
        .impl = b, .device = "cpu", .forward = cpu_forward, .destroy = cpu_destroy};
    if (!o->async_steps) return DS_OK;
    const size_t n = (size_t)o->max_seqs, V = (size_t)model->config.vocab_size;
    b->max_seqs = o->max_seqs, b->max_rows = o->max_step_tokens;
    b->vocab = model->config.vocab_size;
    b->logits = malloc(n * V * sizeof *b->logits);
    b->scratch = malloc(sample_ref_scratch_bytes(b->vocab));
    b->seqs = malloc(n * sizeof *b->seqs);
    b->handed = malloc((size_t)o->max_step_tokens * sizeof *b->handed);
    int ok = b->logits && b->scratch && b->seqs && b->handed;
    for (int i = 0; i < 2; i++) {
        b->ids[i] = malloc(n * sizeof *b->ids[i]);
        b->logprobs[i] = malloc(n * sizeof *b->logprobs[i]);
        ok = ok && b->ids[i] && b->logprobs[i];
    }
    if (!ok) {
        cpu_destroy(b);
        return ds_fail(msg, msg_len, DS_ENOMEM, "cpu backend: async buffers: out of memory");
    }
    out->launch = cpu_launch, out->collect = cpu_collect;
    return DS_OK;
}

static cuda_backend_options cuda_options(const engine_backend_options *o) {
    return (cuda_backend_options){.device = o->device_index,
                                  .max_step_tokens = o->max_step_tokens,
                                  .max_seqs = o->max_seqs,
                                  .weight_type = o->gpu_bf16 ? CUDA_WEIGHTS_BF16 : CUDA_WEIGHTS_F16,
                                  .random_weights = o->random_weights,
                                  .enforce_eager = o->enforce_eager,
                                  .async_steps = o->async_steps,
                                  .seed = o->seed};
}

static cuda_tp_config tp_config(const engine_backend_options *o) {
    return (cuda_tp_config){.world = o->tensor_parallel,
                            .n_nodes = o->n_nodes > 0 ? o->n_nodes : 1,
                            .node_rank = o->node_rank,
                            .master_addr = o->master_addr,
                            .master_port = o->master_port,
                            .timeout_ms = o->tp_timeout_ms};
}

ds_status engine_backend_open(const llama_model *model, kv_cache *cache,
                              const engine_backend_options *o, engine_backend *out, char *msg,
                              size_t msg_len) {
    if (o->cuda) {
        const cuda_backend_options co = cuda_options(o);
        if (o->tensor_parallel > 1 || o->n_nodes > 1) {
            const cuda_tp_config tc = tp_config(o);
            return cuda_tp_backend_create(model, cache, &co, &tc, out, msg, msg_len);
        }
        return cuda_backend_create(model, cache, &co, out, msg, msg_len);
    }
    llama_engine_options eo = {.max_step_tokens = o->max_step_tokens,
                               .weight_type = o->cpu_weights,
                               .n_threads = o->n_threads};
    llama_engine *e;
    ds_status st = llama_engine_create(model, cache, &eo, &e, msg, msg_len);
    return st == DS_OK ? cpu_backend_create(e, model, o, out, msg, msg_len) : st;
}

ds_status engine_backend_follow(const llama_model *model, const engine_backend_options *o,
                                char *msg, size_t msg_len) {
    const cuda_backend_options co = cuda_options(o);
    const cuda_tp_config tc = tp_config(o);
    return cuda_tp_follow_node(model, &co, &tc, msg, msg_len);
}

ds_status engine_backend_gpu_kv_budget(const llama_config *c, const engine_backend_options *o,
                                       int block_size, double utilization, int64_t *out, char *msg,
                                       size_t msg_len) {
    size_t free_bytes, total_bytes;
    ds_status st =
        cuda_device_memory(o->device_index, &free_bytes, &total_bytes, NULL, 0, msg, msg_len);
    if (st != DS_OK) return st;
    cuda_layout lay;
    cuda_layout_options lo = {
        .max_rows = o->max_step_tokens, .max_seqs = o->max_seqs, .block_size = block_size};
    cuda_layout_compute(c, &lo, &lay);
    const double GiB = 1024.0 * 1024 * 1024;
    const int n = o->tensor_parallel > 1 ? o->tensor_parallel : 1;
    const double whole = (double)c->vocab_size * c->d_model * 2 * (c->tied_embeddings ? 1 : 2);
    const double weights = ((double)lay.weights_bytes - whole) / n + whole;
    double budget = (double)free_bytes * utilization - weights - (double)lay.scratch_bytes - GiB;
    if (budget <= 0)
        return ds_fail(msg, msg_len, DS_ENOMEM,
                       "GPU %d: %.2f GiB free; the weights (%.2f GiB) and scratch (%.2f GiB) leave "
                       "nothing for the KV cache",
                       o->device_index, free_bytes / GiB, weights / GiB, lay.scratch_bytes / GiB);
    *out = (int64_t)(budget * n);
    return DS_OK;
}
