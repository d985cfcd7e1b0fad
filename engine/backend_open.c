/* engine/backend_open.c — the CPU or CUDA forward pass behind engine_backend (backend_open.h). */
#include "engine/backend_open.h"

#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/plan.h"
#include "engine/llama.h"

static ds_status cpu_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                             char *msg, size_t msg_len) {
    return llama_engine_forward(impl, seqs, n_seqs, logits, msg, msg_len);
}

static void cpu_destroy(void *impl) { llama_engine_destroy(impl); }

static cuda_backend_options cuda_options(const engine_backend_options *o) {
    return (cuda_backend_options){.device = o->device_index,
                                  .max_step_tokens = o->max_step_tokens,
                                  .max_seqs = o->max_seqs,
                                  .weight_type = o->gpu_bf16 ? CUDA_WEIGHTS_BF16 : CUDA_WEIGHTS_F16,
                                  .random_weights = o->random_weights,
                                  .enforce_eager = o->enforce_eager,
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
    if (st == DS_OK)
        *out = (engine_backend){
            .impl = e, .device = "cpu", .forward = cpu_forward, .destroy = cpu_destroy};
    return st;
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
