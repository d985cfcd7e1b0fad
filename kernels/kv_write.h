/* kernels/kv_write.h — the two writes into the paged KV cache of one layer: new K/V rows into
 * open fp16 blocks (reshape_and_cache, as in vLLM), and compression of the blocks that filled in
 * this step into their full-pool pages (kv_compress). Parameter structs shared with the CUDA
 * kernels (kernels/cuda.h).
 *
 * References: reshape_and_cache_ref below; for compression the reference is the C codec itself,
 * kvcache/decoquant.c's dq_compress_page (this layer cannot include kvcache/), and
 * tests/gpu/ compares the CUDA pages with it byte for byte. */
#ifndef DS_KERNELS_KV_WRITE_H
#define DS_KERNELS_KV_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kv_pages.h"

typedef struct reshape_and_cache_params {
    const uint16_t *k; /* [n_rows][k_stride] fp16; kv head h of row r at k + r * k_stride + h * D */
    const uint16_t *v; /* [n_rows][v_stride] fp16 */
    size_t k_stride, v_stride;
    const int32_t
        *slots; /* [n_rows] open block id * block_size + position % block_size; < 0 skips */
    int n_rows, n_kv_heads, head_dim, block_size;
    kv_layer_view cache;
} reshape_and_cache_params;

void reshape_and_cache_ref(const reshape_and_cache_params *p);

/* Compresses keys and values of every kv head of n_blocks blocks: the fp16 open block
 * open_ids[i] becomes the pages of full block full_ids[i] (K page and V page per head). */
typedef struct kv_compress_params {
    const int32_t *open_ids; /* [n_blocks] */
    const int32_t *full_ids; /* [n_blocks] */
    int n_blocks, n_kv_heads;
    /* kv_compress_cuda only (the reference ignores them): the blocks to compress read from the
     * device (<= n_blocks, for graph replays; NULL: n_blocks), and 1 once
     * kv_compress_cuda_prepare raised the kernel's shared-memory limit on this device (no
     * attribute calls per launch). */
    const int32_t *n_blocks_dev;
    int smem_ready;
    kv_layer_view cache;
    kv_page_format key_format, value_format;
} kv_compress_params;

#endif
