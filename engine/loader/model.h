/* engine/loader/model.h — a Llama-family model in memory: its configuration and its weights,
 * dequantized at load to fp32 (the CPU compute dtype), plus the file's own 4-bit blocks of the
 * matrices a GGUF stores as Q4_0 / Q4_1 (the CPU multiplies those natively). Filled by the GGUF
 * loader (engine/loader/llama_gguf.c) or the safetensors loader (engine/loader/safetensors.c); read
 * by the backends. The model owns every weight buffer; llama_model_free releases them.
 *
 * Weight matrices are row-major [n_out][n_in] (y = W x, one row per output feature), which is
 * GGUF's and HF's natural order. Q and K rows are in HF order: rotary pairs are (i, i + hd/2)
 * within each head ("neox" / rotate_half style); the GGUF loader undoes llama.cpp's
 * interleaving permutation of attn_q / attn_k so both loaders agree. */
#ifndef DS_ENGINE_LOADER_MODEL_H
#define DS_ENGINE_LOADER_MODEL_H

#include <stddef.h>

#include "common/status.h"

typedef enum llama_rope_scaling {
    LLAMA_ROPE_NONE = 0,
    LLAMA_ROPE_LINEAR, /* positions divided by factor */
    LLAMA_ROPE_LLAMA3, /* Llama-3.1 frequency-dependent scaling */
} llama_rope_scaling;

typedef struct llama_config {
    char architecture[32]; /* "llama" */
    int n_layers;
    int d_model;    /* embedding width */
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads (GQA: n_heads % n_kv_heads == 0) */
    int head_dim;   /* d_model / n_heads unless the checkpoint says otherwise */
    int d_ff;       /* SwiGLU hidden width */
    int vocab_size;
    int context_length; /* trained context */
    float rms_eps;
    float rope_theta;
    llama_rope_scaling rope_scaling;
    float rope_factor;           /* LINEAR and LLAMA3 */
    float rope_low_freq_factor;  /* LLAMA3 */
    float rope_high_freq_factor; /* LLAMA3 */
    int rope_original_context;   /* LLAMA3 */
    int tied_embeddings;         /* output projection shares tok_embd */
} llama_config;

/* A matrix as the GGUF file stores it, when that is ggml Q4_0 or Q4_1 blocks (18 / 20 bytes per
 * 32 values, kernels/qmatmul.h); rows in the same (HF) order as the fp32 copy. */
typedef enum llama_blocks_type {
    LLAMA_BLOCKS_NONE = 0,
    LLAMA_BLOCKS_Q4_0,
    LLAMA_BLOCKS_Q4_1
} llama_blocks_type;

typedef struct llama_file_blocks {
    llama_blocks_type type;
    void *data; /* [rows][cols / 32] blocks; NULL for LLAMA_BLOCKS_NONE */
} llama_file_blocks;

typedef struct llama_layer {
    float *attn_norm; /* [d_model] */
    float *wq;        /* [n_heads * head_dim][d_model] */
    float *wk;        /* [n_kv_heads * head_dim][d_model] */
    float *wv;        /* [n_kv_heads * head_dim][d_model] */
    float *wo;        /* [d_model][n_heads * head_dim] */
    float *ffn_norm;  /* [d_model] */
    float *w_gate;    /* [d_ff][d_model] */
    float *w_up;      /* [d_ff][d_model] */
    float *w_down;    /* [d_model][d_ff] */
    struct {
        llama_file_blocks wq, wk, wv, wo, w_gate, w_up, w_down;
    } file; /* the same matrices' file blocks, where 4-bit */
} llama_layer;

typedef struct llama_model {
    llama_config config;
    float *tok_embd;    /* [vocab_size][d_model] */
    float *output_norm; /* [d_model] */
    float *output;      /* [vocab_size][d_model]; == tok_embd when tied (not freed twice) */
    llama_file_blocks output_file; /* output's (or the tied tok_embd's) file blocks, where 4-bit */
    llama_layer *layers;           /* [n_layers] */
} llama_model;

/* Checks the configuration for consistency (positive sizes, GQA divisibility, head_dim even)
 * and names the first bad field in msg. */
ds_status llama_config_validate(const llama_config *config, char *msg, size_t msg_len);

/* Allocates zeroed weight buffers for model->config (already validated). DS_ENOMEM on failure,
 * with everything allocated so far released. */
ds_status llama_model_alloc(llama_model *model, char *msg, size_t msg_len);

/* Releases every weight buffer; the struct is zeroed and may be reused. NULL-safe. */
void llama_model_free(llama_model *model);

#endif
