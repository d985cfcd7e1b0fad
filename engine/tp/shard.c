/* engine/tp/shard.c — copies one rank's slices out of a llama_model (see shard.h). Row slices
 * are one memcpy; column slices (wo, w_down) are one memcpy per output row. */
#include "engine/tp/shard.h"

#include <stdlib.h>
#include <string.h>

ds_status tp_dims_make(const llama_config *c, int rank, int n_ranks, tp_dims *out, char *msg,
                       size_t msg_len) {
    if (n_ranks < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "tensor-parallel size %d: must be at least 1",
                       n_ranks);
    if (rank < 0 || rank >= n_ranks)
        return ds_fail(msg, msg_len, DS_EINVAL, "rank %d: outside [0, %d)", rank, n_ranks);
    if (c->n_kv_heads % n_ranks != 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor-parallel size %d does not divide n_kv_heads = %d (each rank holds "
                       "whole KV heads)",
                       n_ranks, c->n_kv_heads);
    if (c->d_ff % n_ranks != 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "tensor-parallel size %d does not divide d_ff = %d",
                       n_ranks, c->d_ff);
    const int heads = c->n_heads / n_ranks, kv_heads = c->n_kv_heads / n_ranks,
              ff = c->d_ff / n_ranks;
    *out = (tp_dims){.rank = rank,
                     .n_ranks = n_ranks,
                     .n_heads = heads,
                     .n_kv_heads = kv_heads,
                     .d_ff = ff,
                     .head0 = rank * heads,
                     .kv_head0 = rank * kv_heads,
                     .ff0 = rank * ff};
    return DS_OK;
}

/* rows [row0, row0 + n_rows) of a [.][n_cols] matrix */
static float *copy_rows(const float *src, size_t row0, size_t n_rows, size_t n_cols) {
    float *dst = malloc(n_rows * n_cols * sizeof(float));
    if (dst) memcpy(dst, src + row0 * n_cols, n_rows * n_cols * sizeof(float));
    return dst;
}

/* columns [col0, col0 + n) of a [n_rows][n_cols] matrix */
static float *copy_cols(const float *src, size_t n_rows, size_t n_cols, size_t col0, size_t n) {
    float *dst = malloc(n_rows * n * sizeof(float));
    for (size_t i = 0; dst && i < n_rows; i++)
        memcpy(dst + i * n, src + i * n_cols + col0, n * sizeof(float));
    return dst;
}

ds_status tp_shard_create(const llama_model *model, int rank, int n_ranks, tp_shard *out, char *msg,
                          size_t msg_len) {
    const llama_config *c = &model->config;
    memset(out, 0, sizeof *out);
    tp_dims dims;
    ds_status st = tp_dims_make(c, rank, n_ranks, &dims, msg, msg_len);
    if (st != DS_OK) return st;
    out->dims = dims;
    out->model = model;
    out->layers = calloc((size_t)c->n_layers, sizeof *out->layers);
    if (!out->layers) return ds_fail(msg, msg_len, DS_ENOMEM, "tensor-parallel shard: no memory");
    const size_t d = (size_t)c->d_model, hd = (size_t)c->head_dim, qd = (size_t)c->n_heads * hd;
    const size_t q0 = (size_t)dims.head0 * hd, nq = (size_t)dims.n_heads * hd;
    const size_t k0 = (size_t)dims.kv_head0 * hd, nk = (size_t)dims.n_kv_heads * hd;
    const size_t f0 = (size_t)dims.ff0, nf = (size_t)dims.d_ff;
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &model->layers[l];
        tp_layer_shard *S = &out->layers[l];
        S->attn_norm = L->attn_norm;
        S->ffn_norm = L->ffn_norm;
        S->wq = copy_rows(L->wq, q0, nq, d);
        S->wk = copy_rows(L->wk, k0, nk, d);
        S->wv = copy_rows(L->wv, k0, nk, d);
        S->wo = copy_cols(L->wo, d, qd, q0, nq);
        S->w_gate = copy_rows(L->w_gate, f0, nf, d);
        S->w_up = copy_rows(L->w_up, f0, nf, d);
        S->w_down = copy_cols(L->w_down, d, (size_t)c->d_ff, f0, nf);
        if (!S->wq || !S->wk || !S->wv || !S->wo || !S->w_gate || !S->w_up || !S->w_down) {
            tp_shard_destroy(out);
            return ds_fail(msg, msg_len, DS_ENOMEM,
                           "tensor-parallel shard: no memory for rank %d's layer %d", rank, l);
        }
    }
    return DS_OK;
}

void tp_shard_destroy(tp_shard *shard) {
    if (!shard) return;
    for (int l = 0; shard->layers && l < shard->model->config.n_layers; l++) {
        tp_layer_shard *S = &shard->layers[l];
        free(S->wq), free(S->wk), free(S->wv), free(S->wo);
        free(S->w_gate), free(S->w_up), free(S->w_down);
    }
    free(shard->layers);
    memset(shard, 0, sizeof *shard);
}
