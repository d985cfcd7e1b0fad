/* engine/backend_open.c — the CPU or CUDA forward pass behind engine_backend (backend_open.h). */
#include "engine/backend_open.h"

#include "engine/cuda/cuda_backend.h"
#include "engine/llama.h"

static ds_status cpu_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                             char *msg, size_t msg_len) {
    return llama_engine_forward(impl, seqs, n_seqs, logits, msg, msg_len);
}

static void cpu_destroy(void *impl) { llama_engine_destroy(impl); }

ds_status engine_backend_open(const llama_model *model, kv_cache *cache,
                              const engine_backend_options *o, engine_backend *out, char *msg,
                              size_t msg_len) {
    if (o->cuda) {
        cuda_backend_options co = {.device = o->device_index,
                                   .max_step_tokens = o->max_step_tokens,
                                   .max_seqs = o->max_seqs,
                                   .weight_type =
                                       o->gpu_bf16 ? CUDA_WEIGHTS_BF16 : CUDA_WEIGHTS_F16,
                                   .random_weights = o->random_weights,
                                   .seed = o->seed};
        if (o->tensor_parallel > 1)
            return cuda_tp_backend_create(model, cache, &co, o->tensor_parallel, out, msg, msg_len);
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
