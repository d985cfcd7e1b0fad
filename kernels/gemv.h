/* kernels/gemv.h — the decode step's matrix products at small batch: Y = X W^T for a few rows
 * of X against a whole weight matrix, which only streams W once from memory. cuBLAS picks GEMM
 * tiles built for many rows and reaches ~60% of HBM on them; this kernel keeps the rows in
 * registers, reads W with 16-byte loads, one warp per few output columns, and is what the CUDA
 * backend runs for steps of at most GEMV_MAX_ROWS rows (kernels/cuda.h: gemv_cuda). The C
 * reference here defines the result (fp32 accumulation; order may differ, so the kernel agrees
 * within float rounding).
 *
 *   y[r][j] = sum_k x[r][k] w[j][k]          j < n_out, r < n_rows
 *   out     = beta * out + y                 fp32 output (the residual stream), beta 0 or 1
 *   out     = round(y)                       fp16 / bf16 output
 * Column j < split goes to out + r * ldo + j, column j >= split to out + split_stride + r * ldo
 * + (j - split): two matrices stacked in W (gate and up) land in two buffers. */
#ifndef DS_KERNELS_GEMV_H
#define DS_KERNELS_GEMV_H

#include <stddef.h>
#include <stdint.h>

#define GEMV_MAX_ROWS 8

typedef enum gemv_type { GEMV_F32 = 0, GEMV_F16, GEMV_BF16 } gemv_type;

typedef struct gemv_params {
    const uint16_t *w; /* [n_out][k] fp16 or bf16 (w_type) */
    const uint16_t *x; /* [n_rows][ldx] in w_type */
    void *out;         /* out_type, see above */
    gemv_type w_type, out_type;
    int n_rows, n_out, k; /* n_rows <= GEMV_MAX_ROWS, k a multiple of 8 */
    size_t ldx, ldo;
    int split;           /* columns before the second output (n_out: none) */
    size_t split_stride; /* elements from the first output to the second */
    float beta;          /* fp32 output only: 0 or 1 */
} gemv_params;

/* The reference (plain C, fp32 math, double-free). */
void gemv_ref(const gemv_params *p);

#endif
