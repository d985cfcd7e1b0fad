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
 *      own block [block_start, p] from the fp16 pool (kv_cache_full_page / kv_cache_open_row);
 *   3. kv_seq_commit: the filled blocks' fp16 slots go back to the pool.
 * So a token always sees every earlier full block compressed and its own block exact, however the
 * prompt was chunked.
 *
 * Sharing: full blocks are immutable, so several sequences may hold the same one (reference
 * counts). With prefix_cache on, every block that fills is registered under a hash of its tokens
 * and of every token before it (the chain of parent hashes); a new sequence whose prompt starts
 * with registered blocks attaches them (kv_seq_attach_prefix) and computes only the rest. A
 * registered block nobody holds stays cached (it counts as free) until the pool needs it: then
 * the least recently released one is evicted. Open blocks are never shared.
 *
 * Ownership: kv_cache owns both pools; a kv_seq owns its tables and holds one reference to each
 * of its full blocks, returned with kv_seq_release. One engine thread uses a cache; nothing here
 * locks. */
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
    int prefix_cache;  /* 1: register full blocks for sharing by later prompts */
    int no_storage;    /* 1: block bookkeeping only; the pages live elsewhere (the GPU), so
                          kv_cache_write / compress_page / load_page / open_row must not be used */
} kv_cache_config;

typedef struct kv_cache {
    kv_cache_config config;
    dq_format key_format, value_format;
    size_t open_block_floats;       /* uint16 values per open block: layers x 2 x T x H x D */
    size_t full_block_bytes;        /* layers x H x (key page + value page) */
    uint16_t *open;                 /* [n_open_blocks][n_layers][2][T][H][D] */
    uint8_t *full;                  /* [n_full_blocks][n_layers][H][key page | value page] */
    int32_t *open_free, *full_free; /* free-id stacks (full: unregistered blocks only) */
    int n_open_free, n_full_free;
    /* Per full block: holders, and for a registered block its hash, its parent's hash and its
     * tokens (so a hash collision can never attach the wrong block). */
    int32_t *full_ref;
    uint8_t *full_registered;
    uint64_t *full_hash, *full_parent;
    int32_t *full_tokens;         /* [n_full_blocks][block_size] */
    int32_t *lru_prev, *lru_next; /* registered blocks with no holder, oldest first */
    int32_t lru_head, lru_tail, n_cached;
    int32_t *map; /* open-addressing table of registered ids, -1 = empty */
    uint32_t map_mask;
} kv_cache;

typedef struct kv_seq {
    int n_tokens;      /* positions whose K/V are committed */
    int n_reserved;    /* positions reserved by the step in flight (>= n_tokens) */
    int n_blocks, cap; /* logical blocks in the tables */
    int32_t *open_id;  /* [cap] fp16 pool id or -1 */
    int32_t *full_id;  /* [cap] compressed pool id or -1 */
    uint64_t *hash;    /* [cap] prefix hash of each block that is (or becomes) full */
    int32_t *tail;     /* [block_size] tokens of the partial last block */
} kv_seq;

/* Bytes of one open (fp16) block and of one full (compressed) block for this configuration
 * (pool sizes are ignored). Errors name the codec field at fault. */
ds_status kv_cache_block_bytes(const kv_cache_config *config, size_t *open_bytes,
                               size_t *full_bytes, char *msg, size_t msg_len);

/* Sizes the pools from a memory budget: n_open_blocks as given (the engine asks for one per
 * running sequence plus a step's prefill chunk), the rest of kv_memory_bytes to full blocks.
 * DS_EINVAL naming --kv-memory if the budget cannot hold the open pool and one full block. */
ds_status kv_cache_size_pools(kv_cache_config *config, int64_t kv_memory_bytes, int n_open_blocks,
                              char *msg, size_t msg_len);

/* DS_EINVAL naming both shapes unless the cache has this many layers, kv heads and head_dim
 * (what every backend checks against its model). */
ds_status kv_cache_check_shape(const kv_cache *cache, int n_layers, int n_kv_heads, int head_dim,
                               char *msg, size_t msg_len);

/* Allocates both pools. Errors name the field (codec settings, sizes) or DS_ENOMEM. */
ds_status kv_cache_create(const kv_cache_config *config, kv_cache **out, char *msg, size_t msg_len);
void kv_cache_destroy(kv_cache *cache);

/* Bytes one token costs in the compressed pool, all layers and heads, K and V. */
double kv_cache_bytes_per_token(const kv_cache *cache);

/* Free blocks: open pool, and full pool counting cached blocks nobody holds (evictable). */
int kv_cache_open_free(const kv_cache *cache);
int kv_cache_full_free(const kv_cache *cache);

/* Open and full blocks that reserving n_new more positions for seq would take. */
void kv_seq_blocks_needed(const kv_cache *cache, const kv_seq *seq, int n_new, int *open_blocks,
                          int *full_blocks);

void kv_seq_init(kv_seq *seq);
/* Attaches to an empty sequence the longest run of registered full blocks that starts its
 * prompt tokens[n], leaving at least the last token to compute (its logits are needed). Returns
 * the positions now cached (a multiple of block_size; 0 with prefix_cache off or no match), or
 * -1 if the tables cannot be allocated. */
int kv_seq_attach_prefix(kv_cache *cache, kv_seq *seq, const int32_t *tokens, int n);
/* Reserves room for the n_new tokens that follow the committed ones. DS_ENOMEM (nothing changed)
 * if a pool runs dry; evicts cached blocks before giving up. */
ds_status kv_seq_reserve(kv_cache *cache, kv_seq *seq, const int32_t *tokens, int n_new, char *msg,
                         size_t msg_len);
/* Rewrites the token at the last reserved position (n_reserved > n_tokens): async scheduling
 * reserves a decode before the device has returned its id, so the partial-block buffer and, if
 * that position completes its block, the block's prefix hash and tokens are redone before the
 * commit registers them. */
void kv_seq_set_last_token(kv_cache *cache, kv_seq *seq, int32_t token);
/* Undoes kv_seq_reserve (a batch that could not be placed whole). */
void kv_seq_rollback(kv_cache *cache, kv_seq *seq);
/* Ends the step: committed = reserved; blocks that are now full lose their fp16 slot and, with
 * prefix_cache on, are registered for sharing. */
void kv_seq_commit(kv_cache *cache, kv_seq *seq);
/* Drops the sequence's references, returns its open blocks and empties it. */
void kv_seq_release(kv_cache *cache, kv_seq *seq);

/* The prefix hash of a block of n tokens whose predecessor's hash is parent: h = mix(parent), then
 * h = mix(h ^ (uint32_t)token) for each token, mix being splitmix64's finalizer (a bijection).
 * Public only as a test seam: paged_cache_test builds from it blocks with equal hashes and other
 * tokens. */
uint64_t kv_prefix_hash(uint64_t parent, const int32_t *tokens, int n);

/* Invariant check for tests: given every live sequence, verifies that no block is both free and
 * held, each full block's reference count equals the number of tables holding it, open blocks
 * have exactly one holder, cached blocks are registered and unheld, and free + held + cached
 * accounts for every block. 0, or -1 with the first violation in msg. */
int kv_cache_check(const kv_cache *cache, const kv_seq *const *seqs, int n_seqs, char *msg,
                   size_t msg_len);

/* Writes K/V rows [n][H*D] (fp32, rounded to fp16) of positions first_pos.. into the open blocks of
 * layer. The positions must lie in [n_tokens, n_reserved). */
void kv_cache_write(kv_cache *cache, const kv_seq *seq, int layer, int first_pos, int n,
                    const float *k, const float *v);

/* Blocks of seq that fill in the step in flight (reserved but not committed): [*first, *end). */
void kv_seq_filling(const kv_cache *cache, const kv_seq *seq, int *first, int *end);

/* Compresses K (which = 0) or V (which = 1) of (layer, head) of logical block `block` of seq from
 * its open block into its compressed page. Safe from several threads at once for distinct pages,
 * each with its own workspace (kv_cache_workspace_bytes). */
void kv_cache_compress_page(const kv_cache *cache, const kv_seq *seq, int layer, int block,
                            int head, int which, void *workspace);

/* Scratch one kv_cache_compress_page call needs; callers on several threads each bring their
 * own. */
size_t kv_cache_workspace_bytes(const kv_cache *cache);

/* The compressed K (which = 0) or V (which = 1) page of full block `block` of (layer, kv head),
 * in key_format / value_format (attention reads it in place: kernels/kv_page_dot.h). Only a
 * block with a compressed page may be asked for. */
const uint8_t *kv_cache_full_page(const kv_cache *cache, const kv_seq *seq, int layer, int head,
                                  int block, int which);

/* fp16 K (which = 0) or V (which = 1) row of position pos (in its open block), for one head. */
const uint16_t *kv_cache_open_row(const kv_cache *cache, const kv_seq *seq, int layer, int head,
                                  int which, int pos);

#endif
