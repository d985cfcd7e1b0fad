/* engine/tp/shard.h — the Megatron-style tensor-parallel split of a llama_model: what rank r of N
 * holds. Called once at start-up by each rank's backend (engine/cuda/ for the GPUs); the scheduler
 * stays single and every rank runs the same step with the same block ids on its own KV heads.
 *
 * Weights are [n_out][n_in] row-major (engine/loader/model.h). With n = N ranks, rank r keeps:
 *   wq       rows of query heads  [r*H/n, (r+1)*H/n)        column-parallel (split outputs)
 *   wk, wv   rows of KV heads     [r*Hkv/n, (r+1)*Hkv/n)    whole KV heads, so GQA groups stay
 *                                                           on one rank with their queries
 *   w_gate, w_up  rows [r*F/n, (r+1)*F/n) of d_ff           column-parallel
 *   wo       columns of its query heads   [d_model][H/n*hd] row-parallel (split inputs)
 *   w_down   columns [r*F/n, (r+1)*F/n)   [d_model][F/n]    row-parallel
 * and every layer's output is the sum over ranks of the row-parallel products, the one
 * all-reduce after each of wo and w_down:
 *   x += Σ_r wo_r · attn_r(rmsnorm(x))      x += Σ_r down_r · swiglu(gate_r·xn, up_r·xn).
 * Everything else is replicated, not split: token embedding, norms, LM head (so each rank can
 * compute the logits alone; a vocabulary-parallel head is a later measurement).
 *
 * A tp_shard owns copies of its slices (contiguous, so a GPU upload is one copy per matrix) and
 * borrows the model for the replicated tensors; the model must outlive it. */
#ifndef DS_ENGINE_TP_SHARD_H
#define DS_ENGINE_TP_SHARD_H

#include <stddef.h>

#include "common/status.h"
#include "engine/loader/model.h"

/* The per-rank sizes and where the rank's slices start in the unsharded model. */
typedef struct tp_dims {
    int rank, n_ranks;
    int n_heads;    /* query heads on this rank: n_heads / n_ranks */
    int n_kv_heads; /* KV heads on this rank: n_kv_heads / n_ranks */
    int d_ff;       /* SwiGLU width on this rank: d_ff / n_ranks */
    int head0;      /* first query head (global index) */
    int kv_head0;   /* first KV head */
    int ff0;        /* first d_ff feature */
} tp_dims;

/* The split of config for rank of n_ranks. DS_EINVAL naming the values when n_ranks < 1, rank is
 * outside [0, n_ranks), or n_ranks does not divide n_kv_heads or d_ff (whole KV heads per rank;
 * n_heads then divides too, by GQA). */
ds_status tp_dims_make(const llama_config *config, int rank, int n_ranks, tp_dims *out, char *msg,
                       size_t msg_len);

/* One layer's slices; the norms are the model's (borrowed). */
typedef struct tp_layer_shard {
    const float *attn_norm; /* [d_model] */
    float *wq;              /* [dims.n_heads * head_dim][d_model] */
    float *wk;              /* [dims.n_kv_heads * head_dim][d_model] */
    float *wv;              /* [dims.n_kv_heads * head_dim][d_model] */
    float *wo;              /* [d_model][dims.n_heads * head_dim] */
    const float *ffn_norm;  /* [d_model] */
    float *w_gate;          /* [dims.d_ff][d_model] */
    float *w_up;            /* [dims.d_ff][d_model] */
    float *w_down;          /* [d_model][dims.d_ff] */
} tp_layer_shard;

typedef struct tp_shard {
    tp_dims dims;
    const llama_model *model; /* borrowed: config, tok_embd, output_norm, output (replicated) */
    tp_layer_shard *layers;   /* [config.n_layers], owned */
} tp_shard;

/* Copies rank's slices of every layer of model into *out. Errors as tp_dims_make, DS_ENOMEM
 * with nothing left allocated. */
ds_status tp_shard_create(const llama_model *model, int rank, int n_ranks, tp_shard *out, char *msg,
                          size_t msg_len);

/* Releases the slices and zeroes the struct. NULL-safe. */
void tp_shard_destroy(tp_shard *shard);

#endif
