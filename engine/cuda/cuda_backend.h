/* engine/cuda/cuda_backend.h — the Llama forward pass on one NVIDIA GPU, as an engine_backend
 * (engine/backend.h) with llama_engine_forward's contract: weights in fp16 or bf16, GEMMs on
 * cuBLAS (fp32 accumulation), the residual stream in fp32, the paged KV cache in per-layer GPU
 * pools (kernels/kv_pages.h) whose block ids are the host kv_cache's (kvcache/paged_cache.h, best
 * created with no_storage = 1: the host keeps only the bookkeeping).
 *
 * Start-up allocates everything: weights, KV pools sized from cache->config, activations for
 * max_step_tokens rows, the pinned plan and logits buffers, the cuBLAS handle and workspace, one
 * stream. A step then builds its plan on the host (engine/cuda/plan.h), copies it once, runs
 * every layer (RMSNorm, QKV GEMM, RoPE, reshape_and_cache, kv_compress of the blocks that fill,
 * paged attention over all rows, O GEMM + residual, RMSNorm, gate/up GEMM, SwiGLU, down GEMM +
 * residual), then the final norm and LM head for the rows that want logits, and copies those to
 * the caller's buffer; it returns when they are there. Nothing is allocated per step.
 *
 * Builds without CUDA link engine/cuda/cuda_backend_none.c instead, whose functions answer
 * DS_EUNSUPPORTED. Errors: DS_ENOMEM naming what did not fit in GPU memory and how much was
 * free; DS_EUNSUPPORTED for a shape or KV format the kernels were not built for; DS_EINTERNAL
 * with the failing CUDA/cuBLAS call, its file:line and, in a step, the layer. */
#ifndef DS_ENGINE_CUDA_CUDA_BACKEND_H
#define DS_ENGINE_CUDA_CUDA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/loader/model.h"
#include "kvcache/paged_cache.h"

/* engine/backend.h defines it; callers include that header to call through it. Declared here so
 * builds without CUDA need nothing beyond this header. */
typedef struct engine_backend engine_backend;
typedef struct tp_comm tp_comm; /* engine/cuda/tp_comm.h */

typedef enum cuda_weight_type { CUDA_WEIGHTS_F16 = 0, CUDA_WEIGHTS_BF16 } cuda_weight_type;

typedef struct cuda_backend_options {
    int device;          /* CUDA device index */
    int max_step_tokens; /* rows one step may carry (prefill chunks + decodes) */
    int max_seqs;        /* sequences one step may carry */
    cuda_weight_type weight_type;
    /* 1: ignore the model's weight pointers (they may be NULL) and draw every matrix from
     * N(0, 0.02) on the GPU, seeded; norms are 1. Same speed as real weights, no checkpoint. */
    int random_weights;
    uint64_t seed;
    /* Tensor parallelism (engine/tp/shard.h), NULL: the whole model, no NCCL. Otherwise this
     * backend is rank tp_comm_rank(tp) of tp_comm_size(tp) on options->device (the device tp was
     * created on) and holds only its shard: its query and KV heads (its KV pools keep those heads
     * under the cache's block ids, so every rank reads the same block tables) and its d_ff
     * features; after the O and down GEMMs it sums the fp32 residual stream over the group
     * (ncclAllReduce), and waits through tp_comm_wait, so a dead peer is an error, not a hang.
     * Only rank 0 computes logits; the other ranks' forward leaves `logits` alone (may be NULL).
     * With random_weights each rank draws its shard from seed: a model of the same shape and
     * speed, not the same numbers as without tp. tp must outlive the backend. */
    tp_comm *tp;
} cuda_backend_options;

/* Creates the backend on options->device and fills *out (only on success). Borrows model (read
 * only during creation: the weights are copied to the GPU; with random_weights only
 * model->config is read) and cache (read every step; must outlive the backend). */
ds_status cuda_backend_create(const llama_model *model, kv_cache *cache,
                              const cuda_backend_options *options, engine_backend *out, char *msg,
                              size_t msg_len);

/* Tensor parallelism in one process on GPUs 0 .. n_ranks-1 (1 <= n_ranks <= 8; 1 runs the NCCL
 * path on one GPU, for tests): makes the NCCL
 * id, then on a thread per GPU joins the group (tp_comm_create) and creates that rank's sharded
 * backend (options->tp is set per rank; options->device is ignored); each forward runs every
 * rank's step on its own thread and returns rank 0's logits. The KV cache's pages are split by KV
 * heads across the GPUs; the host block tables are shared. Errors name the rank. */
ds_status cuda_tp_backend_create(const llama_model *model, kv_cache *cache,
                                 const cuda_backend_options *options, int n_ranks,
                                 engine_backend *out, char *msg, size_t msg_len);

/* Free and total memory of a device and its name ("NVIDIA H100 80GB HBM3"; name may be NULL),
 * for sizing --kv-memory from a fraction of what is free. Subtract what the backend itself will
 * take: cuda_layout's weights_bytes + scratch_bytes (engine/cuda/plan.h). */
ds_status cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes, char *name,
                             size_t name_len, char *msg, size_t msg_len);

#endif
