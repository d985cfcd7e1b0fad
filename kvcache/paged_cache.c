/* kvcache/paged_cache.c — CPU storage of the paged, compressed KV cache (see paged_cache.h). */
#include "kvcache/paged_cache.h"

#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"

ds_status kv_cache_create(const kv_cache_config *config, kv_cache **out, char *msg,
                          size_t msg_len) {
    *out = NULL;
    const kv_cache_config *c = config;
    if (c->n_layers <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->block_size <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "kv cache: layers = %d, kv heads = %d, head_dim = %d, block_size = %d: all "
                       "must be positive",
                       c->n_layers, c->n_kv_heads, c->head_dim, c->block_size);
    if (c->n_open_blocks <= 0 || c->n_full_blocks < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "kv cache: pools of %d open / %d full blocks",
                       c->n_open_blocks, c->n_full_blocks);
    kv_cache *kc = calloc(1, sizeof *kc);
    if (!kc) return ds_fail(msg, msg_len, DS_ENOMEM, "kv cache: out of memory");
    kc->config = *c;
    dq_config kcfg = c->key_codec, vcfg = c->value_codec;
    kcfg.block_size = vcfg.block_size = c->block_size;
    kcfg.head_dim = vcfg.head_dim = c->head_dim;
    ds_status st = dq_format_init(&kc->key_format, &kcfg, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&kc->value_format, &vcfg, DQ_VALUES, msg, msg_len);
    if (st != DS_OK) {
        free(kc);
        return st;
    }
    size_t hd = (size_t)c->n_kv_heads * c->head_dim;
    kc->open_block_floats = (size_t)c->n_layers * 2 * c->block_size * hd;
    kc->full_block_bytes = (size_t)c->n_layers * c->n_kv_heads *
                           (dq_page_bytes(&kc->key_format) + dq_page_bytes(&kc->value_format));
    size_t work = kv_cache_workspace_bytes(kc);
    kc->open = malloc((size_t)c->n_open_blocks * kc->open_block_floats * sizeof(uint16_t));
    kc->full = malloc((size_t)(c->n_full_blocks ? c->n_full_blocks : 1) * kc->full_block_bytes);
    kc->open_free = malloc((size_t)c->n_open_blocks * sizeof(int32_t));
    kc->full_free = malloc((size_t)(c->n_full_blocks ? c->n_full_blocks : 1) * sizeof(int32_t));
    kc->work = aligned_alloc(16, work);
    if (!kc->open || !kc->full || !kc->open_free || !kc->full_free || !kc->work) {
        kv_cache_destroy(kc);
        return ds_fail(msg, msg_len, DS_ENOMEM,
                       "kv cache: out of memory for %d open + %d full blocks", c->n_open_blocks,
                       c->n_full_blocks);
    }
    /* Ids are handed out lowest first. */
    for (int i = 0; i < c->n_open_blocks; i++)
        kc->open_free[i] = c->n_open_blocks - 1 - i;
    for (int i = 0; i < c->n_full_blocks; i++)
        kc->full_free[i] = c->n_full_blocks - 1 - i;
    kc->n_open_free = c->n_open_blocks;
    kc->n_full_free = c->n_full_blocks;
    *out = kc;
    return DS_OK;
}

void kv_cache_destroy(kv_cache *kc) {
    if (!kc) return;
    free(kc->open);
    free(kc->full);
    free(kc->open_free);
    free(kc->full_free);
    free(kc->work);
    free(kc);
}

double kv_cache_bytes_per_token(const kv_cache *kc) {
    return (double)kc->full_block_bytes / kc->config.block_size;
}

void kv_seq_init(kv_seq *seq) { memset(seq, 0, sizeof *seq); }

static int grow_tables(kv_seq *seq, int need) {
    if (need <= seq->cap) return 1;
    int cap = seq->cap ? seq->cap : 8;
    while (cap < need)
        cap *= 2;
    int32_t *o = realloc(seq->open_id, (size_t)cap * sizeof *o);
    if (!o) return 0;
    seq->open_id = o;
    int32_t *f = realloc(seq->full_id, (size_t)cap * sizeof *f);
    if (!f) return 0;
    seq->full_id = f;
    seq->cap = cap;
    return 1;
}

ds_status kv_seq_reserve(kv_cache *kc, kv_seq *seq, int n_new, char *msg, size_t msg_len) {
    DS_ASSERT(seq->n_reserved == seq->n_tokens && n_new >= 0);
    const int T = kc->config.block_size;
    int end = seq->n_tokens + n_new;
    int blocks_needed = (end + T - 1) / T;
    int new_blocks = blocks_needed - seq->n_blocks;
    /* Blocks that become full in this step need a compressed page. */
    int full_before = seq->n_tokens / T, full_after = end / T;
    int new_full = full_after - full_before;
    if (new_blocks > kc->n_open_free || new_full > kc->n_full_free)
        return ds_fail(msg, msg_len, DS_ENOMEM,
                       "kv cache: need %d open + %d full blocks, %d + %d free", new_blocks,
                       new_full, kc->n_open_free, kc->n_full_free);
    if (!grow_tables(seq, blocks_needed))
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv cache: block table: out of memory");
    for (int b = seq->n_blocks; b < blocks_needed; b++) {
        seq->open_id[b] = kc->open_free[--kc->n_open_free];
        seq->full_id[b] = -1;
    }
    seq->n_blocks = blocks_needed;
    for (int b = full_before; b < full_after; b++) {
        DS_ASSERT(seq->full_id[b] < 0);
        seq->full_id[b] = kc->full_free[--kc->n_full_free];
    }
    seq->n_reserved = end;
    return DS_OK;
}

void kv_seq_rollback(kv_cache *kc, kv_seq *seq) {
    const int T = kc->config.block_size;
    for (int b = seq->n_tokens / T; b < seq->n_reserved / T; b++) {
        kc->full_free[kc->n_full_free++] = seq->full_id[b];
        seq->full_id[b] = -1;
    }
    int keep = (seq->n_tokens + T - 1) / T;
    for (int b = keep; b < seq->n_blocks; b++)
        kc->open_free[kc->n_open_free++] = seq->open_id[b];
    seq->n_blocks = keep;
    seq->n_reserved = seq->n_tokens;
}

void kv_seq_commit(kv_cache *kc, kv_seq *seq) {
    const int T = kc->config.block_size;
    for (int b = seq->n_tokens / T; b < seq->n_reserved / T; b++) {
        kc->open_free[kc->n_open_free++] = seq->open_id[b];
        seq->open_id[b] = -1;
    }
    seq->n_tokens = seq->n_reserved;
}

void kv_seq_release(kv_cache *kc, kv_seq *seq) {
    for (int b = 0; b < seq->n_blocks; b++) {
        if (seq->open_id[b] >= 0) kc->open_free[kc->n_open_free++] = seq->open_id[b];
        if (seq->full_id[b] >= 0) kc->full_free[kc->n_full_free++] = seq->full_id[b];
    }
    free(seq->open_id);
    free(seq->full_id);
    kv_seq_init(seq);
}

/* fp16 block of (layer, K or V) inside open block id: [T][H][D]. */
static uint16_t *open_slab(const kv_cache *kc, int32_t id, int layer, int which) {
    const kv_cache_config *c = &kc->config;
    size_t slab = (size_t)c->block_size * c->n_kv_heads * c->head_dim;
    return kc->open + (size_t)id * kc->open_block_floats + ((size_t)layer * 2 + which) * slab;
}

/* Compressed page of (layer, head, K or V) inside full block id. */
static uint8_t *full_page(const kv_cache *kc, int32_t id, int layer, int head, int which) {
    size_t pk = dq_page_bytes(&kc->key_format), pv = dq_page_bytes(&kc->value_format);
    uint8_t *p = kc->full + (size_t)id * kc->full_block_bytes +
                 ((size_t)layer * kc->config.n_kv_heads + head) * (pk + pv);
    return which ? p + pk : p;
}

void kv_cache_write(kv_cache *kc, const kv_seq *seq, int layer, int first_pos, int n,
                    const float *k, const float *v) {
    const int T = kc->config.block_size;
    const size_t hd = (size_t)kc->config.n_kv_heads * kc->config.head_dim;
    DS_ASSERT(first_pos >= seq->n_tokens && first_pos + n <= seq->n_reserved);
    for (int i = 0; i < n; i++) {
        int pos = first_pos + i;
        int32_t id = seq->open_id[pos / T];
        DS_ASSERT(id >= 0);
        uint16_t *kd = open_slab(kc, id, layer, 0) + (size_t)(pos % T) * hd;
        uint16_t *vd = open_slab(kc, id, layer, 1) + (size_t)(pos % T) * hd;
        ds_float_to_half_n(k + i * hd, kd, hd);
        ds_float_to_half_n(v + i * hd, vd, hd);
    }
}

void kv_cache_compress_filled(kv_cache *kc, const kv_seq *seq, int layer) {
    const kv_cache_config *c = &kc->config;
    const int T = c->block_size;
    const size_t hd = (size_t)c->n_kv_heads * c->head_dim;
    for (int b = seq->n_tokens / T; b < seq->n_reserved / T; b++) {
        for (int h = 0; h < c->n_kv_heads; h++) {
            for (int which = 0; which < 2; which++) {
                const dq_format *f = which ? &kc->value_format : &kc->key_format;
                const uint16_t *src =
                    open_slab(kc, seq->open_id[b], layer, which) + (size_t)h * c->head_dim;
                dq_compress_page(f, src, hd, full_page(kc, seq->full_id[b], layer, h, which),
                                 kc->work);
            }
        }
    }
}

size_t kv_cache_workspace_bytes(const kv_cache *kc) {
    size_t k = dq_workspace_bytes(&kc->key_format), v = dq_workspace_bytes(&kc->value_format);
    return ((k > v ? k : v) + 15) / 16 * 16;
}

void kv_cache_load_page(const kv_cache *kc, const kv_seq *seq, int layer, int head, int block,
                        float *k_out, float *v_out, void *workspace) {
    const size_t D = (size_t)kc->config.head_dim;
    DS_ASSERT(seq->full_id[block] >= 0);
    dq_decompress_page(&kc->key_format, full_page(kc, seq->full_id[block], layer, head, 0), k_out,
                       D, workspace);
    dq_decompress_page(&kc->value_format, full_page(kc, seq->full_id[block], layer, head, 1), v_out,
                       D, workspace);
}

const uint16_t *kv_cache_open_row(const kv_cache *kc, const kv_seq *seq, int layer, int head,
                                  int which, int pos) {
    const int T = kc->config.block_size;
    int32_t id = seq->open_id[pos / T];
    DS_ASSERT(id >= 0);
    return open_slab(kc, id, layer, which) +
           ((size_t)(pos % T) * kc->config.n_kv_heads + head) * kc->config.head_dim;
}
