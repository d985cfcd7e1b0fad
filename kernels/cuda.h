/* kernels/cuda.h — the CUDA kernels' launchers, callable from C (the CUDA backend, tests/gpu/,
 * tools/bench-attention/). Each takes the same parameter struct as its C reference (declared in
 * the family header named beside it), with device pointers, and enqueues on `stream`; nothing
 * allocates or synchronises. Shapes and formats the kernels were not built for return
 * DS_EUNSUPPORTED naming the value; a failed launch returns DS_EINTERNAL with the CUDA error,
 * the statement and file:line (kernels/cuda_check.h).
 *
 * Built with nvcc (tests/gpu/build.sh, or the manual Bazel target //kernels:cuda) for sm_90a
 * with compute_90 PTX; sm_80 builds too (DS_CUDA_ARCHS). */
#ifndef DS_KERNELS_CUDA_H
#define DS_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "common/status.h"
#include "kernels/forward_ops.h"
#include "kernels/gemv.h"
#include "kernels/kv_write.h"
#include "kernels/ops.h"
#include "kernels/paged_attention.h"
#include "kernels/sample.h"

/* ---- paged attention (kernels/paged_attention.h) ----
 * Tensor-core MMAs (fp16 operands, fp32 accumulation) over pages staged in shared memory;
 * quantized pages are dequantized to fp16 in registers, never to memory, so only compressed bytes
 * are read. Split-K (flash-decoding): the keys of each row are cut into up to max_splits ranges
 * whose partial softmax states a second kernel merges; the workspace holds them. Built: head_dim
 * 64 and 128, block_size 16/32/64, up to 8 query heads per kv head, and the page formats fp16,
 * KIVI 8/4/2 (key groups spanning the whole block, value groups of head_dim or head_dim / 2
 * channels) and DecoQuant 8/4/2 in the decomposed domain (t1 = 1, full rank, d2 = 16, chan axis,
 * groups spanning the block: the defaults). RTN pages and other shapes: DS_EUNSUPPORTED.
 * Accuracy against paged_attention_ref: a few fp16 ulps for fp16 pages; quantized pages add one
 * fp16 rounding of every dequantized key and value (tests/gpu/gpu_test.c gives the bounds). */
typedef struct paged_attention_tuning {
    int max_splits;    /* cap on splits per row (0: from the workspace) */
    int ctas_per_sm;   /* split-K aims at this many CTAs per multiprocessor (0: 4) */
    int warps_per_cta; /* 1..8 (0: 4; fewer if the stages do not fit); each streams its pages */
    int stages;        /* pages in flight per warp, 2..8 (0: 2..4, ~56 KB of stages per CTA) */
    /* The device's multiprocessors and opt-in shared memory per CTA (paged_attention_cuda_prepare
     * fills them once; 0: asked of the device at every launch), and 1 once prepare raised the
     * shared-memory limit of the kernel for p's shape and formats (no attribute call per launch,
     * as a CUDA graph capture needs). */
    int n_sms, smem_optin, smem_ready;
    /* CUDA graphs: the grid is sized for p->max_pos, and the kernels read the blocks per split
     * from here at run time (paged_attention_cuda_blocks_per_split for the replay's rows); NULL:
     * fixed at launch. */
    const int32_t *blocks_per_split_dev;
} paged_attention_tuning;

/* Fills t's device fields and raises the shared-memory limit of the kernel p selects (whose
 * n_rows and max_pos do not matter here). Once per backend, on its device. */
ds_status paged_attention_cuda_prepare(const paged_attention_params *p, paged_attention_tuning *t,
                                       char *msg, size_t msg_len);

/* The blocks per split a launch for p would use (t prepared), at most the split count of a
 * launch with t->blocks_per_split_dev for the same rows and a larger max_pos: the value to write
 * to *t->blocks_per_split_dev before a replay. */
int paged_attention_cuda_blocks_per_split(const paged_attention_params *p,
                                          const paged_attention_tuning *t, size_t workspace_bytes);

/* Workspace bytes for rows x q heads x splits partial results (head_dim fp32 + max + sum). */
size_t paged_attention_workspace_bytes(int max_rows, int n_q_heads, int head_dim, int max_splits);

/* Runs paged attention for p (validated with paged_attention_validate); tuning may be NULL. The
 * number of splits is min(max_splits, what the workspace holds, what the shape needs);
 * *n_splits_out (may be NULL) receives it. */
ds_status paged_attention_cuda(const paged_attention_params *p,
                               const paged_attention_tuning *tuning, void *workspace,
                               size_t workspace_bytes, int *n_splits_out, cudaStream_t stream,
                               char *msg, size_t msg_len);

/* ---- KV writes (kernels/kv_write.h) ---- */
ds_status reshape_and_cache_cuda(const reshape_and_cache_params *p, cudaStream_t stream, char *msg,
                                 size_t msg_len);

/* One CTA per (block, kv head, K or V) page: fp16 copy, RTN, KIVI and DecoQuant (every option of
 * the codec), arithmetic ordered as kvcache/decoquant.c so the pages match it byte for byte. */
ds_status kv_compress_cuda(const kv_compress_params *p, cudaStream_t stream, char *msg,
                           size_t msg_len);
/* Once per device and formats (a backend at start-up): checks p's formats fit the device's shared
 * memory, raises the kernel's limit and sets p->smem_ready, so that launches with p's formats
 * make no attribute calls (as a CUDA graph capture needs). */
ds_status kv_compress_cuda_prepare(kv_compress_params *p, char *msg, size_t msg_len);

/* ---- element-wise ops (references in kernels/ops.h), fp16 tensors, fp32 math ---- */

/* ops_rope_ref on fp16 rows: x [n_rows][row_stride] rotated in place, heads at h * head_dim. */
typedef struct ops_rope_cuda_params {
    uint16_t *x;
    const int32_t *positions; /* [n_rows] */
    const float *inv_freq;    /* [head_dim / 2] from ops_rope_inv_freq */
    int n_rows, n_heads, head_dim;
    size_t row_stride;
} ops_rope_cuda_params;
ds_status ops_rope_cuda(const ops_rope_cuda_params *p, cudaStream_t stream, char *msg,
                        size_t msg_len);

ds_status ops_swiglu_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n,
                          cudaStream_t stream, char *msg, size_t msg_len);

/* ---- the forward pass's mixed-dtype ops (references in kernels/forward_ops.h) ----
 * RMSNorm sums squares in double as its reference; the conversions round to nearest even as
 * fwd_store; SwiGLU and the fill compute in fp32 (tests/gpu/gpu_test.c gives the bounds). */
ds_status fwd_embed_cuda(float *x, const void *table, fwd_dtype table_type, int dim,
                         const int32_t *ids, int n_ids, cudaStream_t stream, char *msg,
                         size_t msg_len);
ds_status fwd_rmsnorm_cuda(const fwd_rmsnorm_params *p, cudaStream_t stream, char *msg,
                           size_t msg_len);
ds_status fwd_convert_cuda(void *dst, fwd_dtype dst_type, const void *src, fwd_dtype src_type,
                           size_t n, cudaStream_t stream, char *msg, size_t msg_len);
ds_status fwd_swiglu_bf16_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n,
                               cudaStream_t stream, char *msg, size_t msg_len);
ds_status fwd_fill_normal_cuda(void *dst, fwd_dtype type, const fwd_fill_block *block, float mean,
                               float std, uint64_t seed, cudaStream_t stream, char *msg,
                               size_t msg_len);

/* ---- small-batch matrix products (kernels/gemv.h) ----
 * DS_EINVAL for more than GEMV_MAX_ROWS rows, k or ldx not a multiple of 8 (16-byte loads). */
ds_status gemv_cuda(const gemv_params *p, cudaStream_t stream, char *msg, size_t msg_len);

/* ---- sampling (kernels/sample.h) ----
 * One CTA per row: the token of sample_row_ref for each row's parameters and uniform, and its
 * log-probability; only ids and log-probabilities are written, p->probs is the workspace. Rows at
 * or past *p->n_rows_dev (when set) are skipped, so a graph captured for n_rows replays smaller
 * batches. */
ds_status sample_cuda(const sample_params *p, cudaStream_t stream, char *msg, size_t msg_len);
/* Async scheduling's hand-off on the device: tokens[i] = sample_handoff_id(ids, src[i]) for every
 * i < n_rows with src[i] >= 0 (the others keep their token). ids: the previous step's sampled
 * ids, still in device memory. */
ds_status sample_handoff_cuda(int32_t *tokens, const int32_t *src, const int32_t *ids, int n_rows,
                              cudaStream_t stream, char *msg, size_t msg_len);

#ifdef __cplusplus
}
#endif

#endif
