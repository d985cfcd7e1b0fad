/* engine/loader/model.c — configuration checks and weight-buffer lifetime shared by the loaders. */
#include "engine/loader/model.h"

#include <stdlib.h>
#include <string.h>

ds_status llama_config_validate(const llama_config *c, char *msg, size_t msg_len) {
    struct {
        const char *name;
        int value;
    } sizes[] = {
        {"n_layers", c->n_layers},     {"d_model", c->d_model},
        {"n_heads", c->n_heads},       {"n_kv_heads", c->n_kv_heads},
        {"head_dim", c->head_dim},     {"d_ff", c->d_ff},
        {"vocab_size", c->vocab_size}, {"context_length", c->context_length},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value <= 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "config: %s = %d: must be positive",
                           sizes[i].name, sizes[i].value);
    if (c->n_heads % c->n_kv_heads)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "config: n_heads = %d is not a multiple of n_kv_heads = %d", c->n_heads,
                       c->n_kv_heads);
    if (c->head_dim % 2)
        return ds_fail(msg, msg_len, DS_EINVAL, "config: head_dim = %d: must be even for RoPE",
                       c->head_dim);
    if (!(c->rms_eps > 0.0f) || !(c->rope_theta > 0.0f))
        return ds_fail(msg, msg_len, DS_EINVAL, "config: rms_eps and rope_theta must be positive");
    if (c->rope_scaling != LLAMA_ROPE_NONE && !(c->rope_factor > 0.0f))
        return ds_fail(msg, msg_len, DS_EINVAL, "config: rope scaling factor must be positive");
    return DS_OK;
}

ds_status llama_model_alloc(llama_model *m, char *msg, size_t msg_len) {
    const llama_config *c = &m->config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff,
           v = (size_t)c->vocab_size;
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    m->tok_embd = calloc(v * d, sizeof(float));
    m->output_norm = calloc(d, sizeof(float));
    m->output = c->tied_embeddings ? m->tok_embd : calloc(v * d, sizeof(float));
    int ok = m->layers && m->tok_embd && m->output_norm && m->output;
    for (int l = 0; ok && l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        L->attn_norm = calloc(d, sizeof(float));
        L->wq = calloc(q * d, sizeof(float));
        L->wk = calloc(kv * d, sizeof(float));
        L->wv = calloc(kv * d, sizeof(float));
        L->wo = calloc(d * q, sizeof(float));
        L->ffn_norm = calloc(d, sizeof(float));
        L->w_gate = calloc(ff * d, sizeof(float));
        L->w_up = calloc(ff * d, sizeof(float));
        L->w_down = calloc(d * ff, sizeof(float));
        ok = L->attn_norm && L->wq && L->wk && L->wv && L->wo && L->ffn_norm && L->w_gate &&
             L->w_up && L->w_down;
    }
    if (ok) return DS_OK;
    llama_model_free(m);
    return ds_fail(msg, msg_len, DS_ENOMEM, "model weights: out of memory");
}

void llama_model_free(llama_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int l = 0; l < m->config.n_layers; l++) {
            llama_layer *L = &m->layers[l];
            free(L->attn_norm);
            free(L->wq);
            free(L->wk);
            free(L->wv);
            free(L->wo);
            free(L->ffn_norm);
            free(L->w_gate);
            free(L->w_up);
            free(L->w_down);
            llama_file_blocks *blocks[] = {&L->file.wq,    &L->file.wk,     &L->file.wv,
                                           &L->file.wo,    &L->file.w_gate, &L->file.w_up,
                                           &L->file.w_down};
            for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++)
                free(blocks[i]->data);
        }
    }
    if (m->output != m->tok_embd) free(m->output);
    free(m->tok_embd);
    free(m->output_norm);
    free(m->output_file.data);
    free(m->layers);
    memset(m, 0, sizeof *m);
}
