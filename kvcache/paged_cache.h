/* kvcache/paged_cache.h — the paged KV cache's storage on the CPU: an fp16 pool of open (filling)
 * blocks and a compressed pool of full blocks, block ids from free lists, and per-sequence block
 * tables. A block is block_size tokens of every layer and every kv head of this rank (one id
 * serves all layers, as in vLLM).
 *
 * Step protocol (what makes results independent of chunking and batching):
 *   1. kv_seq_reserve(n_new): open blocks for the new positions, and a compressed-pool id for every
 *      block that becomes full in this step;
 *   2. per layer: kv_cache_write the new K/V rows, then kv_cache_compress_filled, then attention
 *      where a query at position p reads blocks before its own from the compressed pool and its
 *      own block [block_start, p] from the fp16 pool (kv_cache_load_page /
 * kv_cache_open_row);
 *   3. kv_seq_commit: the filled blocks' fp16 slots go back to the pool.
 * So a token always sees every earlier full block compressed and its own block exact, however the
 * prompt was chunked.
 *
 * Ownership: kv_cache owns both pools; a kv_seq owns its tables and returns its blocks with
 * kv_seq_release. One engine thread uses a cache; nothing here locks. */
#ifndef DS_KVCACHE_PAGED_CACHE_H
#define DS_KVCACHE_PAGED_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kvcache/decoquant.h"

typedef struct kv_cache_config {
    int n_layers;
    int n_kv_heads;
    int head_dim;
    int block_size;
    dq_config key_codec; /* block_size/head_dim are filled in from the fields above */
    dq_config value_codec;
    int n_open_blocks; /* fp16 pool capacity */
    int n_full_blocks; /* compressed pool capacity */
} kv_cache_config;

typedef struct kv_cache {
    kv_cache_config config;
    dq_format key_format, value_format;
    size_t open_block_floats;       /* uint16 values per open block: layers x 2 x T x H x D */
    size_t full_block_bytes;        /* layers x H x (key page + value page) */
    uint16_t *open;                 /* [n_open_blocks][n_layers][2][T][H][D] */
    uint8_t *full;                  /* [n_full_blocks][n_layers][H][key page | value page] */
    int32_t *open_free, *full_free; /* free-id stacks */
    int n_open_free, n_full_free;
    void *work; /* codec workspace */
} kv_cache;

typedef struct kv_seq {
    int n_tokens;      /* positions whose K/V are committed */
    int n_reserved;    /* positions reserved by the step in flight (>= n_tokens) */
    int n_blocks, cap; /* logical blocks in the tables */
    int32_t *open_id;  /* [cap] fp16 pool id or -1 */
    int32_t *full_id;  /* [cap] compressed pool id or -1 */
} kv_seq;

/* Allocates both pools. Errors name the field (codec settings, sizes) or DS_ENOMEM. */
ds_status kv_cache_create(const kv_cache_config *config, kv_cache **out, char *msg, size_t msg_len);
void kv_cache_destroy(kv_cache *cache);

/* Bytes one token costs in the compressed pool, all layers and heads, K and V. */
double kv_cache_bytes_per_token(const kv_cache *cache);

void kv_seq_init(kv_seq *seq);
/* Reserves room for n_new more positions. DS_ENOMEM (nothing changed) if a pool runs dry. */
ds_status kv_seq_reserve(kv_cache *cache, kv_seq *seq, int n_new, char *msg, size_t msg_len);
/* Undoes kv_seq_reserve (a batch that could not be placed whole). */
void kv_seq_rollback(kv_cache *cache, kv_seq *seq);
/* Ends the step: committed = reserved; fp16 slots of blocks that are now full are freed. */
void kv_seq_commit(kv_cache *cache, kv_seq *seq);
/* Returns every block of the sequence to the pools and empties it. */
void kv_seq_release(kv_cache *cache, kv_seq *seq);

/* Writes K/V rows [n][H*D] (fp32, rounded to fp16) of positions first_pos.. into the open blocks of
 * layer. The positions must lie in [n_tokens, n_reserved). */
void kv_cache_write(kv_cache *cache, const kv_seq *seq, int layer, int first_pos, int n,
                    const float *k, const float *v);

/* Compresses, for one layer, every block of seq that is full once the reserved positions are
 * written and has not been compressed in an earlier step. */
void kv_cache_compress_filled(kv_cache *cache, const kv_seq *seq, int layer);

/* Scratch one kv_cache_load_page call needs; callers on several threads each bring their own. */
size_t kv_cache_workspace_bytes(const kv_cache *cache);

/* Decompresses K and V of full block `block` of (layer, kv head) into k_out/v_out [T][D]. Only a
 * block with a compressed page may be asked for. Safe to call from several threads at once with
 * distinct outputs and workspaces. */
void kv_cache_load_page(const kv_cache *cache, const kv_seq *seq, int layer, int head, int block,
                        float *k_out, float *v_out, void *workspace);

/* fp16 K (which = 0) or V (which = 1) row of position pos (in its open block), for one head. */
const uint16_t *kv_cache_open_row(const kv_cache *cache, const kv_seq *seq, int layer, int head,
                                  int which, int pos);

#endif
