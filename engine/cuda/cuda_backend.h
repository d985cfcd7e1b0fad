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
 * the caller's buffer; it returns when they are there (with async_steps, launch returns at once
 * and collect waits). Nothing is allocated per step.
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

/* Rows up to which the backend's matrix products use kernels/gemv.h by default (measured on the
 * H200: BENCHMARKS.md §14). */
#define CUDA_GEMV_ROWS 1

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
     * Rank 0 alone plans: its forward broadcasts each step's plan (plan.h's header, then the
     * words) and computes the logits; the other ranks run what it sends through
     * cuda_backend_follow, in lockstep (forward is for rank 0 only). A failure of rank 0's step
     * after the plan went out is DS_EUNAVAILABLE: the ranks are out of step for good. With
     * random_weights each rank draws its slice of the unsharded model's matrices from seed: the
     * same model as without tp. tp must outlive the backend. */
    tp_comm *tp;
    /* CUDA events around every all-reduce (with tp) and the LM head, summed after each step
     * (costs a little; for benchmarks): cuda_backend_part_ms, cuda_tp_part_ms. */
    int time_parts;
    /* 0: decode-only steps sampled on the device run as CUDA graphs, one per padded batch size
     * (1, 2, 4, ... up to min(max_seqs, max_step_tokens)), captured on first use (not with tp or
     * time_parts); 1: every step is launched kernel by kernel (vLLM's --enforce-eager). */
    int enforce_eager;
    /* 1: also offer launch / collect (engine/backend.h) for --async-scheduling: every step's plan,
     * sampling rows and sampled ids in one of two pinned slots, so the host writes step N+1's
     * while step N runs; not with tp (the group steps synchronously). */
    int async_steps;
    /* Steps of at most this many rows multiply by the weights with kernels/gemv.h instead of
     * cuBLAS (0: the default, CUDA_GEMV_ROWS; -1: never; at most GEMV_MAX_ROWS). For benchmarks. */
    int gemv_rows;
} cuda_backend_options;

/* Creates the backend on options->device and fills *out (only on success). Borrows model (read
 * only during creation: the weights are copied to the GPU; with random_weights only
 * model->config is read) and cache (read every step; must outlive the backend). */
ds_status cuda_backend_create(const llama_model *model, kv_cache *cache,
                              const cuda_backend_options *options, engine_backend *out, char *msg,
                              size_t msg_len);

/* Milliseconds of GPU time this rank's all-reduces took so far (each from when the stream reached
 * it to when it finished, so waiting for the slowest rank counts) and its LM head (final norm and
 * GEMM); 0 unless options.time_parts. */
void cuda_backend_part_ms(const engine_backend *rank, double *allreduce_ms, double *lm_head_ms);

/* A rank other than 0 of a group: waits up to the communicator's timeout for rank 0's next header
 * and runs the step it announces (rank 0's forward) on this GPU; *stop = 1 when rank 0 said STOP,
 * and an IDLE header returns DS_OK at once. DS_EUNAVAILABLE when rank 0 stays silent past the
 * deadline or the group fails; DS_ECORRUPT for a header outside this backend's limits. */
ds_status cuda_backend_follow(const engine_backend *rank, int *stop, char *msg, size_t msg_len);

/* Rank 0 of a group of more than one GPU: tells the followers there is no step (stop = 0, so
 * their deadlines restart while the server is idle) or that they are done (stop = 1), and waits
 * until all have it. Not concurrently with forward. */
ds_status cuda_backend_signal(const engine_backend *rank0, int stop, char *msg, size_t msg_len);

/* A tensor-parallel group: `world` GPUs over n_nodes processes (one per host, or several on one
 * host as the tests run it), world / n_nodes GPUs each — devices 0.. of each process; global rank
 * = node_rank * (world / n_nodes) + local device. */
typedef struct cuda_tp_config {
    int world;               /* GPUs in all, at most 8 per node; 1 runs the NCCL path on one GPU */
    int n_nodes, node_rank;  /* 1 and 0: this process alone */
    const char *master_addr; /* node 0's TCP bootstrap (engine/tp/bootstrap.h), n_nodes > 1 */
    int master_port;
    /* Bounds each step's waits and a follower's wait for the next step (node 0 sends IDLE well
     * within it), so a dead peer is an error after this long. Start-up (bootstrap, joining, the
     * settings) waits max(timeout_ms, 10 minutes): nodes load their weights at their own pace. */
    int timeout_ms;
} cuda_tp_config;

/* Node 0 of a group (engine/cuda/tp_backend.c): makes the NCCL id (and hands it to the other
 * nodes over the bootstrap), joins every local GPU on its own thread, sends every rank the
 * settings (model shape, the cache's config, options' limits), creates each GPU's sharded backend
 * (options->device and ->tp are set per rank) and fails if any rank anywhere failed to. Its
 * forward runs rank 0 on the calling thread and broadcasts the plan; the other local GPUs follow
 * on persistent threads, the other nodes in cuda_tp_follow_node. The KV pages are split by KV
 * heads across the GPUs; the host block tables are node 0's. After a step fails with
 * DS_EUNAVAILABLE (a rank died or stopped answering) every later forward fails the same way at
 * once. Errors name the rank and node. */
ds_status cuda_tp_backend_create(const llama_model *model, kv_cache *cache,
                                 const cuda_backend_options *options, const cuda_tp_config *config,
                                 engine_backend *out, char *msg, size_t msg_len);

/* Rank 0's cuda_backend_part_ms, for a backend cuda_tp_backend_create made. */
void cuda_tp_part_ms(const engine_backend *group, double *allreduce_ms, double *lm_head_ms);

/* Any other node: joins node 0's group with this node's GPUs, checks that model has node 0's
 * shape, adopts node 0's cache config and limits (options gives only what node 0 does not send)
 * and runs node 0's steps until node 0 stops the group (DS_OK) or a failure (DS_EUNAVAILABLE when
 * node 0 or a peer goes silent past timeout_ms). Blocks for the life of the group. */
ds_status cuda_tp_follow_node(const llama_model *model, const cuda_backend_options *options,
                              const cuda_tp_config *config, char *msg, size_t msg_len);

/* Free and total memory of a device and its name ("NVIDIA H100 80GB HBM3"; name may be NULL),
 * for sizing --kv-memory from a fraction of what is free. Subtract what the backend itself will
 * take: cuda_layout's weights_bytes + scratch_bytes (engine/cuda/plan.h). */
ds_status cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes, char *name,
                             size_t name_len, char *msg, size_t msg_len);

/* The device-to-device copy rate (bytes read + written per second, the best of a few 1 GiB
 * copies): the physical limit's denominator in benchmarks. */
ds_status cuda_device_copy_rate(int device, double *bytes_per_s, char *msg, size_t msg_len);

#endif
