/* engine/cuda/forward_ops.h — the device ops of the CUDA forward pass that kernels/ does not
 * provide: the backend keeps the residual stream in fp32 (as the CPU reference does; the output
 * and down GEMMs add into it with beta = 1), so it gathers embeddings into fp32 and normalises
 * fp32 rows into the GEMM type; it converts between dtypes where bf16 weights meet the fp16-only
 * kernels; and it fills weights with seeded random numbers for --random-weights. Launchers
 * enqueue on `stream` and return DS_EINTERNAL naming the failed launch (kernels/cuda_check.h).
 * CPU references: kernels/ops.h (ops_embedding_ref, ops_rmsnorm_ref, ops_swiglu_ref). */
#ifndef DS_ENGINE_CUDA_FORWARD_OPS_H
#define DS_ENGINE_CUDA_FORWARD_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h" /* C linkage: the header itself has no guard */

typedef enum fwd_dtype { FWD_F32 = 0, FWD_F16, FWD_BF16 } fwd_dtype;

/* x[i][:] = table[ids[i]][:] as fp32; table [vocab][dim] of table_type (F16 or BF16). Ids were
 * validated on the host. */
ds_status fwd_embed_cuda(float *x, const void *table, fwd_dtype table_type, int dim,
                         const int32_t *ids, int n_ids, cudaStream_t stream, char *msg,
                         size_t msg_len);

/* out[i] = x[r] / sqrt(mean(x[r]^2) + eps) * weight, r = rows ? rows[i] : i (sum of squares in
 * double, as ops_rmsnorm_ref); x [..][dim] fp32, out [n_rows][dim] of out_type. */
ds_status fwd_rmsnorm_cuda(void *out, fwd_dtype out_type, const float *x, const int32_t *rows,
                           const float *weight, int n_rows, int dim, float eps, cudaStream_t stream,
                           char *msg, size_t msg_len);

/* dst[i] = src[i] converted (round to nearest even), n values. */
ds_status fwd_convert_cuda(void *dst, fwd_dtype dst_type, const void *src, fwd_dtype src_type,
                           size_t n, cudaStream_t stream, char *msg, size_t msg_len);

/* ops_swiglu_ref on bf16: out[i] = silu(gate[i]) * up[i] (out may alias gate). */
ds_status fwd_swiglu_bf16_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n,
                               cudaStream_t stream, char *msg, size_t msg_len);

/* dst[r][c] (rows x cols, row-major) = mean + std * N(0, 1), a counter-based Gaussian of (seed,
 * g) where g = (row0 + r) * global_cols + col0 + c is the element's index in the whole
 * [.][global_cols] matrix this block is cut from: the same seed gives the same matrix on any GPU
 * and launch shape, and a tensor-parallel rank that fills its slice gets exactly the numbers the
 * unsharded matrix has there. A whole tensor: rows = 1, cols = global_cols = n, row0 = col0 = 0.
 * std = 0 fills with mean. */
typedef struct fwd_fill_block {
    size_t rows, cols, global_cols, row0, col0;
} fwd_fill_block;
ds_status fwd_fill_normal_cuda(void *dst, fwd_dtype type, const fwd_fill_block *block, float mean,
                               float std, uint64_t seed, cudaStream_t stream, char *msg,
                               size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif
