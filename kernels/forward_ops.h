/* kernels/forward_ops.h — the ops the CUDA forward pass runs around its GEMMs, on mixed dtypes: the
 * backend keeps the residual stream in fp32 (as the CPU pass does; the output and down GEMMs add
 * into it with beta = 1), so it gathers embeddings into fp32 and normalises fp32 rows into the
 * GEMM type; it converts between dtypes where bf16 weights meet the fp16-only kernels; and it
 * fills weights with seeded random numbers for --random-weights. The `_ref` functions here are
 * plain C and the definition of correct; the CUDA launchers (fwd_*_cuda, same arguments, device
 * pointers) are in kernels/cuda.h and tests/gpu/ compares the two. Tensors are row-major and
 * caller-owned; nothing here allocates or keeps a pointer. */
#ifndef DS_KERNELS_FORWARD_OPS_H
#define DS_KERNELS_FORWARD_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Element types; fp16 and bf16 are stored as uint16_t bits. */
typedef enum fwd_dtype { FWD_F32 = 0, FWD_F16, FWD_BF16 } fwd_dtype;

size_t fwd_dtype_bytes(fwd_dtype type);

/* Element i of p as fp32 (exact), and v stored into element i (round to nearest even; overflow
 * to infinity, NaN stays NaN): the conversions of every reference below. */
float fwd_load(const void *p, fwd_dtype type, size_t i);
void fwd_store(void *p, fwd_dtype type, size_t i, float v);

/* ---- embedding into the fp32 residual ----
 * x[i][:] = table[ids[i]][:] as fp32; table [vocab][dim] of table_type, x [n_ids][dim]. The caller
 * validates ids against vocab (the CUDA backend does so when it plans the step); here they are
 * trusted. */
void fwd_embed_ref(float *x, const void *table, fwd_dtype table_type, int dim, const int32_t *ids,
                   int n_ids);

/* ---- RMSNorm of fp32 rows into the GEMM type, with an optional row gather ----
 * out[i][c] = x[r][c] * s * weight[c], r = rows ? rows[i] : i, s = ops_rmsnorm_scale(x[r]) (the
 * sum of squares in double), the products in fp32, one rounding into out_type. Rows that are not
 * gathered are never read. The LM head uses the gather: only the rows that sample. */
typedef struct fwd_rmsnorm_params {
    void *out;           /* [n_rows][dim] of out_type */
    fwd_dtype out_type;  /* F32, F16 or BF16 */
    const float *x;      /* [.][dim]: rows[i] < its rows (or [n_rows][dim] without rows) */
    const int32_t *rows; /* [n_rows] or NULL (row i of x) */
    const float *weight; /* [dim] */
    int n_rows, dim;
    float eps;
} fwd_rmsnorm_params;

void fwd_rmsnorm_ref(const fwd_rmsnorm_params *p);

/* ---- dtype conversion ----
 * dst[i] = src[i] converted (fwd_load then fwd_store), n values. */
void fwd_convert_ref(void *dst, fwd_dtype dst_type, const void *src, fwd_dtype src_type, size_t n);

/* ---- SwiGLU on bf16 ----
 * ops_swiglu_ref on the bf16 values in fp32, rounded to bf16: out[i] = silu(gate[i]) * up[i].
 * out may alias gate or up. (fp16: ops_swiglu_cuda, kernels/cuda.h.) */
void fwd_swiglu_bf16_ref(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n);

/* ---- seeded Gaussian fill ----
 * dst[r][c] (rows x cols, row-major) = mean + std * z(g), with g = (row0 + r) * global_cols +
 * col0 + c the element's index in the whole [.][global_cols] matrix this block is cut from, so
 * the same seed gives the same matrix on any GPU and launch shape, and a tensor-parallel rank that
 * fills its slice gets exactly the numbers the unsharded matrix has there. A whole tensor: rows =
 * 1, cols = global_cols = n, row0 = col0 = 0. std = 0 fills with mean.
 *   h  = splitmix64 at state seed + 0x9e3779b97f4a7c15 * g (common/rng.h's ds_rng_u64 from it)
 *   u1 = ((float)(h >> 32) + 1) * 2^-32,  u2 = (float)(uint32_t)h * 2^-32     (fp32, u1 in (0, 1])
 *   z  = sqrt(-2 ln u1) cos(2 pi u2)                                          (Box-Muller)
 * The reference evaluates z and mean + std * z in double; the kernel in fp32 (a few fp32 ulps). */
typedef struct fwd_fill_block {
    size_t rows, cols, global_cols, row0, col0;
} fwd_fill_block;

void fwd_fill_normal_ref(void *dst, fwd_dtype type, const fwd_fill_block *block, float mean,
                         float std, uint64_t seed);

#endif
