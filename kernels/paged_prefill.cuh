/* kernels/paged_prefill.cuh — the tiled prefill kernel of paged attention (paged_prefill.cu), as
 * paged_attention.cu's launcher calls it: internal to the two files. fmt is the kernel family
 * classify() picked (0 fp16, 1 KIVI, 2 DecoQuant); p->exec holds the tiles. */
#ifndef DS_KERNELS_PAGED_PREFILL_CUH
#define DS_KERNELS_PAGED_PREFILL_CUH

#include <cuda_runtime.h>

#include "kernels/paged_attention.h"

/* Checks the shape is built and fits smem_optin, and raises the kernel's shared-memory limit. */
ds_status paged_prefill_cuda_setup(const paged_attention_params *p, int fmt, int smem_optin,
                                   char *msg, size_t msg_len);

/* Launches the tiles of p->exec (grid sized for p->n_rows tiles; the extra CTAs return). */
ds_status paged_prefill_cuda_launch(const paged_attention_params *p, int fmt, cudaStream_t stream,
                                    char *msg, size_t msg_len);

#endif
