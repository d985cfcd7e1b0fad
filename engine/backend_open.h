/* engine/backend_open.h — opens the forward pass on the device a command asked for: the CPU
 * (engine/llama.h wrapped as an engine_backend) or a GPU (engine/cuda/cuda_backend.h; in a build
 * without CUDA that answers DS_EUNSUPPORTED). Shared by the serving engine and decoserve-eval. */
#ifndef DS_ENGINE_BACKEND_OPEN_H
#define DS_ENGINE_BACKEND_OPEN_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/backend.h"
#include "engine/loader/model.h"
#include "kernels/qmatmul.h"
#include "kvcache/paged_cache.h"

typedef struct engine_backend_options {
    int cuda; /* 0: the CPU, 1: CUDA device device_index */
    int device_index;
    int max_step_tokens;     /* rows one step may carry */
    int max_seqs;            /* sequences one step may carry */
    qm_type cpu_weights;     /* CPU compute weights (QM_Q4_0, QM_Q8_0 or QM_F32) */
    int n_threads;           /* CPU threads; 0: DECOSERVE_THREADS or the online CPUs */
    int gpu_bf16;            /* CUDA: bf16 weights instead of fp16 */
    int tensor_parallel;     /* CUDA: GPUs in all (1: one GPU, device_index), tensor_parallel /
                                n_nodes of them (0..) in this process */
    int n_nodes, node_rank;  /* CUDA tensor parallelism over processes (1 and 0: this one alone) */
    const char *master_addr; /* node 0's bootstrap address and port, with n_nodes > 1 */
    int master_port;
    int tp_timeout_ms;  /* bounds every tensor-parallel wait (cuda_tp_config.timeout_ms) */
    int random_weights; /* CUDA: draw the weights on the GPU (the model holds only its config) */
    int enforce_eager;  /* CUDA: no graphs (cuda_backend_options.enforce_eager) */
    int async_steps;    /* offer launch / collect (engine/backend.h), where the device can */
    uint64_t seed;
} engine_backend_options;

/* Fills *out on success; the model and the cache (with no_storage for CUDA) must outlive it;
 * out->destroy(out->impl) frees it. */
ds_status engine_backend_open(const llama_model *model, kv_cache *cache,
                              const engine_backend_options *options, engine_backend *out, char *msg,
                              size_t msg_len);

/* A node other than 0 of a tensor-parallel group: follows node 0's steps on this process's GPUs
 * until node 0 stops (cuda_tp_follow_node); node 0's settings (KV cache, limits) win over this
 * process's. DS_EUNSUPPORTED without CUDA. */
ds_status engine_backend_follow(const llama_model *model, const engine_backend_options *options,
                                char *msg, size_t msg_len);

/* KV memory for a GPU run whose --kv-memory is unset: utilization of the device's free memory,
 * less the backend's weights and step scratch (engine/cuda/plan.h's layout for block_size) and
 * 1 GiB for cuBLAS and the CUDA context. With tensor parallelism each GPU holds 1/N of the
 * layers' weights (embedding and LM head whole) and 1/N of every KV page, so the pools may hold N
 * times one GPU's budget. DS_ENOMEM naming the sizes when nothing is left; DS_EUNSUPPORTED
 * without CUDA. */
ds_status engine_backend_gpu_kv_budget(const llama_config *config,
                                       const engine_backend_options *options, int block_size,
                                       double utilization, int64_t *kv_memory_bytes, char *msg,
                                       size_t msg_len);

#endif
