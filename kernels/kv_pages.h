/* kernels/kv_pages.h — the paged KV cache as the kernels see it: where one layer's pages live
 * (kv_layer_view) and how a page's bytes are laid out (kv_page_format). Shared by the CUDA kernels
 * and their C references; plain C, no allocation, no CUDA headers.
 *
 * GPU cache layout: one pair of pools per layer, so that a launch for layer l reads one region,
 * and the key and value pages of one (block, kv head) are adjacent (one copy fetches both):
 *     full pool of layer l  [n_full_blocks][n_kv_heads][key page | value page]       bytes
 *     open pool of layer l  [n_open_blocks][2 (K, V)][block_size][n_kv_heads][head_dim] fp16
 * The view only needs each pool's base and block stride, so it also addresses the CPU cache of
 * kvcache/paged_cache.h ([block][layer][...]: base at the layer, stride of a whole block).
 *
 * Page formats: a page holds one full block of one (kv head, K or V), T = block_size tokens x
 * D = head_dim channels, with exactly the bytes of kvcache/decoquant.h (small tensor, fp16
 * (scale, min) group params, packed codes, each section 16-byte aligned; fp16 pages are [T][D]).
 * So pages written by the C codec are valid kernel input and the other way round.
 * kv_page_format carries the resolved geometry of a dq_format (the kernels sit below kvcache/ and
 * never include it); whoever owns both (the engine, the tests) copies the fields over. */
#ifndef DS_KERNELS_KV_PAGES_H
#define DS_KERNELS_KV_PAGES_H

#include <stddef.h>
#include <stdint.h>

/* The page methods of kvcache/decoquant.h's dq_method; kvcache/page_format.c maps one onto the
 * other case by case: the values need not agree, and a dq_method added without a kv_method is a
 * compile error there. */
typedef enum kv_method { KV_FP16 = 0, KV_DECOQUANT = 1, KV_RTN = 2, KV_KIVI = 3 } kv_method;

typedef struct kv_page_format {
    int method;               /* kv_method; 16 bits is always KV_FP16 */
    int is_values;            /* 0: key page, 1: value page (KIVI stores them differently) */
    int bits;                 /* 16, 8, 4 or 2 */
    int block_size, head_dim; /* T, D */
    int group_len, n_groups, n_values;
    /* DecoQuant: M'[(t1i,c1), (t2i,c2)], m = t1*d1 rows, n = t2*d2 columns, rank kept. */
    int t1, d1, m, n, rank, t2, d2;
    int absorb_large, axis_chan, refit; /* DecoQuant options (the compressor reads them) */
    uint32_t small_offset, params_offset, payload_offset, page_bytes;
} kv_page_format;

/* One layer of the cache. Attention only reads through it; reshape_and_cache writes the open
 * pool and compression reads the open pool and writes the full pool. */
typedef struct kv_layer_view {
    uint8_t *full;            /* page of (block b, kv head h): full + b * full_block_stride +
                                 h * (key page_bytes + value page_bytes), key page first */
    size_t full_block_stride; /* bytes */
    uint16_t *open;           /* row (block b, K=0/V=1 which, token t, kv head h):
                                 open + b * open_block_stride + ((which * T + t) * H + h) * D */
    size_t open_block_stride; /* fp16 elements */
} kv_layer_view;

/* Storage index (position in the quantized value order) of element (t, c) of a key/value page of
 * RTN or KIVI, or of large-tensor element (r, j) of a DecoQuant page (j = t2i * d2 + c2). */
static inline int kv_storage_index(const kv_page_format *f, int row, int col) {
    if (f->method == KV_DECOQUANT) {
        if (!f->axis_chan) return row * f->n + col;
        return (row * f->d2 + col % f->d2) * f->t2 + col / f->d2;
    }
    if (f->method == KV_KIVI && !f->is_values) return col * f->block_size + row;
    return row * f->head_dim + col;
}

/* Decodes a page into out[t * D + c] as fp32, reading the bytes directly (no workspace). The
 * arithmetic follows kvcache/decoquant.c's decoder operation for operation, so the result is
 * bit-identical to dq_decompress_page. */
void kv_page_decode_ref(const kv_page_format *f, const uint8_t *page, float *out);

#endif
