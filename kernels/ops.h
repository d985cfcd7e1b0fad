/* kernels/ops.h — the element-wise and row-wise ops of the Llama forward pass (RMSNorm, RoPE,
 * SwiGLU, embedding gather): what the CPU pass runs around its matrix products. The `_ref`
 * functions are plain C and are the definition of correct: the fp16 CUDA RoPE and SwiGLU
 * (kernels/cuda.h) must match them (tests/gpu/ compares), and kernels/forward_ops.h builds the CUDA
 * pass's mixed-dtype ops on them. All tensors are fp32, row-major, caller-owned; nothing here
 * allocates or keeps a pointer. */
#ifndef DS_KERNELS_OPS_H
#define DS_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ---- RMSNorm ----
 * out[r][c] = x[r][c] / sqrt(mean_c(x[r][c]^2) + eps) * weight[c]   (sum of squares in double).
 * x, out: [n_rows][dim]; weight: [dim]. out may alias x (in place). */
void ops_rmsnorm_ref(float *out, const float *x, const float *weight, int n_rows, int dim,
                     float eps);

/* The factor of one row [dim]: 1 / sqrt(mean_c(x[c]^2) + eps), the sum of squares in double. */
float ops_rmsnorm_scale(const float *x, int dim, float eps);

/* ---- RoPE (HF / "neox" layout) ----
 * Within each head of head_dim values, pair i (0 <= i < head_dim/2) is (x[i], x[i + head_dim/2]),
 * rotated by angle a = pos * inv_freq[i]:
 *   x'[i]        = x[i] cos a - x[i + hd/2] sin a
 *   x'[i + hd/2] = x[i + hd/2] cos a + x[i] sin a
 * inv_freq[i] = theta^(-2i/head_dim), then scaled:
 *   NONE:   unchanged;
 *   LINEAR: inv_freq / factor (same as positions / factor);
 *   LLAMA3: as HF transformers' _compute_llama3_parameters (Llama 3.1): with
 *           wavelen = 2 pi / inv_freq, low_wl = original_context / low_freq_factor,
 *           high_wl = original_context / high_freq_factor:
 *             wavelen < high_wl  -> inv_freq                       (high frequencies kept)
 *             wavelen > low_wl   -> inv_freq / factor              (low frequencies stretched)
 *             otherwise          -> (1 - s) inv_freq / factor + s inv_freq,
 *                                   s = (original_context / wavelen - low) / (high - low).
 * As in HF, the angle pos * inv_freq[i] is formed in fp32 before cos/sin. */
typedef enum ops_rope_scaling {
    OPS_ROPE_NONE = 0,
    OPS_ROPE_LINEAR,
    OPS_ROPE_LLAMA3,
} ops_rope_scaling;

typedef struct ops_rope_config {
    int head_dim; /* even */
    float theta;  /* base, e.g. 10000 or 500000 */
    ops_rope_scaling scaling;
    float factor;           /* LINEAR and LLAMA3, > 0 */
    float low_freq_factor;  /* LLAMA3 */
    float high_freq_factor; /* LLAMA3, > low_freq_factor */
    int original_context;   /* LLAMA3, > 0 */
} ops_rope_config;

/* Checks the fields the chosen scaling uses; names the first bad one in msg. */
ds_status ops_rope_config_validate(const ops_rope_config *config, char *msg, size_t msg_len);

/* Fills inv_freq [head_dim/2] for a validated config (computed once per model). */
void ops_rope_inv_freq(const ops_rope_config *config, float *inv_freq);

typedef struct ops_rope_params {
    float *x;                 /* [n_rows][row_stride], heads at x + r*row_stride + h*head_dim */
    const int32_t *positions; /* [n_rows], >= 0 */
    const float *inv_freq;    /* [head_dim/2], from ops_rope_inv_freq */
    int n_rows;               /* tokens */
    int n_heads;              /* heads to rotate in each row */
    int head_dim;             /* even */
    size_t row_stride;        /* floats between rows, >= n_heads * head_dim (fused QKV rows) */
} ops_rope_params;

/* Rotates every head of every row in place. */
void ops_rope_ref(const ops_rope_params *params);

/* ---- SwiGLU ----
 * out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate or up. */
void ops_swiglu_ref(float *out, const float *gate, const float *up, size_t n);

/* ---- Embedding gather ----
 * out[i][:] = table[ids[i]][:], table [vocab][dim], out [n_ids][dim]. DS_ERANGE naming the
 * position and id if an id is outside [0, vocab) (ids can come from a request). */
ds_status ops_embedding_ref(float *out, const float *table, int vocab, int dim, const int32_t *ids,
                            int n_ids, char *msg, size_t msg_len);

#endif
