/* kvcache/paged_cache.c — CPU storage of the paged, compressed KV cache (see paged_cache.h). */
#include "kvcache/paged_cache.h"

#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"

ds_status kv_cache_block_bytes(const kv_cache_config *c, size_t *open_bytes, size_t *full_bytes,
                               char *msg, size_t msg_len) {
    if (c->n_layers <= 0 || c->n_kv_heads <= 0 || c->head_dim <= 0 || c->block_size <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "kv cache: layers = %d, kv heads = %d, head_dim = %d, block_size = %d: all "
                       "must be positive",
                       c->n_layers, c->n_kv_heads, c->head_dim, c->block_size);
    dq_config kcfg = c->key_codec, vcfg = c->value_codec;
    kcfg.block_size = vcfg.block_size = c->block_size;
    kcfg.head_dim = vcfg.head_dim = c->head_dim;
    dq_format kf, vf;
    ds_status st = dq_format_init(&kf, &kcfg, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&vf, &vcfg, DQ_VALUES, msg, msg_len);
    if (st != DS_OK) return st;
    *open_bytes = (size_t)c->n_layers * 2 * c->block_size * c->n_kv_heads * c->head_dim * 2;
    *full_bytes = (size_t)c->n_layers * c->n_kv_heads * (dq_page_bytes(&kf) + dq_page_bytes(&vf));
    return DS_OK;
}

ds_status kv_cache_size_pools(kv_cache_config *c, int64_t kv_memory_bytes, int n_open_blocks,
                              char *msg, size_t msg_len) {
    size_t open_bytes, full_bytes;
    ds_status st = kv_cache_block_bytes(c, &open_bytes, &full_bytes, msg, msg_len);
    if (st != DS_OK) return st;
    int64_t rest = kv_memory_bytes - (int64_t)n_open_blocks * (int64_t)open_bytes;
    if (n_open_blocks <= 0 || rest < (int64_t)full_bytes)
        return ds_fail(
            msg, msg_len, DS_EINVAL,
            "kv_memory_bytes = %lld bytes: too small for %d open blocks of %zu bytes plus "
            "one full block of %zu bytes",
            (long long)kv_memory_bytes, n_open_blocks, open_bytes, full_bytes);
    int64_t n_full = rest / (int64_t)full_bytes;
    if (n_full > (1 << 30)) n_full = 1 << 30;
    c->n_open_blocks = n_open_blocks;
    c->n_full_blocks = (int)n_full;
    return DS_OK;
}

ds_status kv_cache_create(const kv_cache_config *config, kv_cache **out, char *msg,
                          size_t msg_len) {
    *out = NULL;
    const kv_cache_config *c = config;
    size_t open_bytes, full_bytes;
    ds_status st = kv_cache_block_bytes(c, &open_bytes, &full_bytes, msg, msg_len);
    if (st != DS_OK) return st;
    if (c->n_open_blocks <= 0 || c->n_full_blocks < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "kv cache: pools of %d open / %d full blocks",
                       c->n_open_blocks, c->n_full_blocks);
    kv_cache *kc = calloc(1, sizeof *kc);
    if (!kc) return ds_fail(msg, msg_len, DS_ENOMEM, "kv cache: out of memory");
    kc->config = *c;
    dq_config kcfg = c->key_codec, vcfg = c->value_codec;
    kcfg.block_size = vcfg.block_size = c->block_size;
    kcfg.head_dim = vcfg.head_dim = c->head_dim;
    st = dq_format_init(&kc->key_format, &kcfg, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&kc->value_format, &vcfg, DQ_VALUES, msg, msg_len);
    DS_ASSERT(st == DS_OK); /* validated by kv_cache_block_bytes */
    kc->open_block_floats = open_bytes / sizeof(uint16_t);
    kc->full_block_bytes = full_bytes;
    const size_t nf = (size_t)(c->n_full_blocks ? c->n_full_blocks : 1);
    uint32_t map_size = 16;
    while (map_size < 2 * nf)
        map_size *= 2;
    kc->map_mask = map_size - 1;
    if (!c->no_storage) {
        kc->open = malloc((size_t)c->n_open_blocks * open_bytes);
        kc->full = malloc(nf * full_bytes);
    }
    kc->open_free = malloc((size_t)c->n_open_blocks * sizeof(int32_t));
    kc->full_free = malloc(nf * sizeof(int32_t));
    kc->full_ref = calloc(nf, sizeof(int32_t));
    kc->full_registered = calloc(nf, 1);
    kc->full_hash = calloc(nf, sizeof(uint64_t));
    kc->full_parent = calloc(nf, sizeof(uint64_t));
    kc->full_tokens = malloc(nf * (size_t)c->block_size * sizeof(int32_t));
    kc->lru_prev = malloc(nf * sizeof(int32_t));
    kc->lru_next = malloc(nf * sizeof(int32_t));
    kc->map = malloc((size_t)map_size * sizeof(int32_t));
    if ((!c->no_storage && (!kc->open || !kc->full)) || !kc->open_free || !kc->full_free ||
        !kc->full_ref || !kc->full_registered || !kc->full_hash || !kc->full_parent ||
        !kc->full_tokens || !kc->lru_prev || !kc->lru_next || !kc->map) {
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
    memset(kc->map, 0xff, (size_t)map_size * sizeof(int32_t));
    kc->lru_head = kc->lru_tail = -1;
    *out = kc;
    return DS_OK;
}

ds_status kv_cache_check_shape(const kv_cache *kc, int n_layers, int n_kv_heads, int head_dim,
                               char *msg, size_t msg_len) {
    const kv_cache_config *c = &kc->config;
    if (c->n_layers == n_layers && c->n_kv_heads == n_kv_heads && c->head_dim == head_dim)
        return DS_OK;
    return ds_fail(msg, msg_len, DS_EINVAL,
                   "kv cache shape (%d layers, %d kv heads, head_dim %d) does not match the "
                   "model (%d, %d, %d)",
                   c->n_layers, c->n_kv_heads, c->head_dim, n_layers, n_kv_heads, head_dim);
}

void kv_cache_destroy(kv_cache *kc) {
    if (!kc) return;
    free(kc->open);
    free(kc->full);
    free(kc->open_free);
    free(kc->full_free);
    free(kc->full_ref);
    free(kc->full_registered);
    free(kc->full_hash);
    free(kc->full_parent);
    free(kc->full_tokens);
    free(kc->lru_prev);
    free(kc->lru_next);
    free(kc->map);
    free(kc);
}

double kv_cache_bytes_per_token(const kv_cache *kc) {
    return (double)kc->full_block_bytes / kc->config.block_size;
}

int kv_cache_open_free(const kv_cache *kc) { return kc->n_open_free; }

int kv_cache_full_free(const kv_cache *kc) { return kc->n_full_free + kc->n_cached; }

/* --- prefix hashing and the registry of full blocks ------------------------------------------ */

static const uint64_t ROOT_HASH = 0x243f6a8885a308d3ull; /* parent of a sequence's first block */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

uint64_t kv_prefix_hash(uint64_t parent, const int32_t *tokens, int n) {
    uint64_t h = mix64(parent);
    for (int i = 0; i < n; i++)
        h = mix64(h ^ (uint32_t)tokens[i]);
    return h;
}

static int32_t map_find(const kv_cache *kc, uint64_t hash, uint64_t parent, const int32_t *tokens) {
    const int T = kc->config.block_size;
    for (uint32_t i = (uint32_t)hash & kc->map_mask;; i = (i + 1) & kc->map_mask) {
        int32_t id = kc->map[i];
        if (id < 0) return -1;
        if (kc->full_hash[id] == hash && kc->full_parent[id] == parent &&
            !memcmp(kc->full_tokens + (size_t)id * T, tokens, (size_t)T * sizeof(int32_t)))
            return id;
    }
}

static void map_insert(kv_cache *kc, int32_t id) {
    uint32_t i = (uint32_t)kc->full_hash[id] & kc->map_mask;
    while (kc->map[i] >= 0)
        i = (i + 1) & kc->map_mask;
    kc->map[i] = id;
}

/* Linear-probing delete with backward shift, so lookups never need tombstones. */
static void map_remove(kv_cache *kc, int32_t id) {
    uint32_t i = (uint32_t)kc->full_hash[id] & kc->map_mask;
    while (kc->map[i] != id)
        i = (i + 1) & kc->map_mask;
    for (uint32_t j = (i + 1) & kc->map_mask; kc->map[j] >= 0; j = (j + 1) & kc->map_mask) {
        uint32_t home = (uint32_t)kc->full_hash[kc->map[j]] & kc->map_mask;
        /* Move map[j] into the hole at i unless its home lies cyclically in (i, j]. */
        int between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            kc->map[i] = kc->map[j];
            i = j;
        }
    }
    kc->map[i] = -1;
}

static void lru_unlink(kv_cache *kc, int32_t id) {
    int32_t p = kc->lru_prev[id], n = kc->lru_next[id];
    if (p >= 0)
        kc->lru_next[p] = n;
    else
        kc->lru_head = n;
    if (n >= 0)
        kc->lru_prev[n] = p;
    else
        kc->lru_tail = p;
    kc->n_cached--;
}

static void lru_push(kv_cache *kc, int32_t id) {
    kc->lru_prev[id] = kc->lru_tail;
    kc->lru_next[id] = -1;
    if (kc->lru_tail >= 0)
        kc->lru_next[kc->lru_tail] = id;
    else
        kc->lru_head = id;
    kc->lru_tail = id;
    kc->n_cached++;
}

/* A full block for a new page: a never-registered free one, else the oldest cached one. */
static int32_t full_take(kv_cache *kc) {
    int32_t id;
    if (kc->n_full_free > 0) {
        id = kc->full_free[--kc->n_full_free];
    } else {
        id = kc->lru_head;
        DS_ASSERT(id >= 0);
        lru_unlink(kc, id);
        map_remove(kc, id);
        kc->full_registered[id] = 0;
    }
    kc->full_ref[id] = 1;
    return id;
}

static void full_unref(kv_cache *kc, int32_t id) {
    DS_ASSERT(kc->full_ref[id] > 0);
    if (--kc->full_ref[id] > 0) return;
    if (kc->full_registered[id])
        lru_push(kc, id);
    else
        kc->full_free[kc->n_full_free++] = id;
}

/* --- sequences -------------------------------------------------------------------------------- */

void kv_seq_init(kv_seq *seq) { memset(seq, 0, sizeof *seq); }

static int grow_tables(kv_seq *seq, int need, int block_size) {
    if (!seq->tail && !(seq->tail = malloc((size_t)block_size * sizeof(int32_t)))) return 0;
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
    uint64_t *h = realloc(seq->hash, (size_t)cap * sizeof *h);
    if (!h) return 0;
    seq->hash = h;
    seq->cap = cap;
    return 1;
}

void kv_seq_blocks_needed(const kv_cache *kc, const kv_seq *seq, int n_new, int *open_blocks,
                          int *full_blocks) {
    const int T = kc->config.block_size;
    int end = seq->n_reserved + n_new;
    *open_blocks = (end + T - 1) / T - seq->n_blocks;
    *full_blocks = end / T - seq->n_reserved / T;
}

int kv_seq_attach_prefix(kv_cache *kc, kv_seq *seq, const int32_t *tokens, int n) {
    DS_ASSERT(seq->n_tokens == 0 && seq->n_reserved == 0 && seq->n_blocks == 0);
    const int T = kc->config.block_size;
    if (!kc->config.prefix_cache || n < 1) return 0;
    int max_blocks = (n - 1) / T;
    if (!grow_tables(seq, max_blocks > 0 ? max_blocks : 1, T)) return -1;
    uint64_t parent = ROOT_HASH;
    int b = 0;
    for (; b < max_blocks; b++) {
        const int32_t *bt = tokens + (size_t)b * T;
        uint64_t h = kv_prefix_hash(parent, bt, T);
        int32_t id = map_find(kc, h, parent, bt);
        if (id < 0) break;
        if (kc->full_ref[id]++ == 0) lru_unlink(kc, id);
        seq->open_id[b] = -1;
        seq->full_id[b] = id;
        seq->hash[b] = h;
        parent = h;
    }
    seq->n_blocks = b;
    seq->n_tokens = seq->n_reserved = b * T;
    return b * T;
}

ds_status kv_seq_reserve(kv_cache *kc, kv_seq *seq, const int32_t *tokens, int n_new, char *msg,
                         size_t msg_len) {
    DS_ASSERT(seq->n_reserved == seq->n_tokens && n_new >= 0);
    const int T = kc->config.block_size;
    int new_open, new_full;
    kv_seq_blocks_needed(kc, seq, n_new, &new_open, &new_full);
    if (new_open > kc->n_open_free || new_full > kv_cache_full_free(kc))
        return ds_fail(msg, msg_len, DS_ENOMEM,
                       "kv cache: need %d open + %d full blocks, %d + %d free", new_open, new_full,
                       kc->n_open_free, kv_cache_full_free(kc));
    int end = seq->n_tokens + n_new, blocks_needed = (end + T - 1) / T;
    if (!grow_tables(seq, blocks_needed, T))
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv cache: block table: out of memory");
    for (int b = seq->n_blocks; b < blocks_needed; b++) {
        seq->open_id[b] = kc->open_free[--kc->n_open_free];
        seq->full_id[b] = -1;
    }
    seq->n_blocks = blocks_needed;
    /* Walk the new tokens through the partial-block buffer; every block they complete gets a
     * compressed page and its prefix hash. */
    for (int pos = seq->n_tokens, i = 0; i < n_new; i++, pos++) {
        seq->tail[pos % T] = tokens[i];
        if ((pos + 1) % T) continue;
        int b = pos / T;
        DS_ASSERT(seq->full_id[b] < 0);
        seq->full_id[b] = full_take(kc);
        seq->hash[b] = kv_prefix_hash(b ? seq->hash[b - 1] : ROOT_HASH, seq->tail, T);
        memcpy(kc->full_tokens + (size_t)seq->full_id[b] * T, seq->tail,
               (size_t)T * sizeof(int32_t));
    }
    seq->n_reserved = end;
    return DS_OK;
}

void kv_seq_set_last_token(kv_cache *kc, kv_seq *seq, int32_t token) {
    DS_ASSERT(seq->n_reserved > seq->n_tokens);
    const int T = kc->config.block_size, pos = seq->n_reserved - 1, b = pos / T;
    seq->tail[pos % T] = token;
    if ((pos + 1) % T) return;
    /* tail[] holds block b whole: every position of it was reserved through tail[]. */
    seq->hash[b] = kv_prefix_hash(b ? seq->hash[b - 1] : ROOT_HASH, seq->tail, T);
    kc->full_tokens[(size_t)seq->full_id[b] * T + T - 1] = token;
}

void kv_seq_rollback(kv_cache *kc, kv_seq *seq) {
    const int T = kc->config.block_size;
    for (int b = seq->n_tokens / T; b < seq->n_reserved / T; b++) {
        full_unref(kc, seq->full_id[b]);
        seq->full_id[b] = -1;
    }
    int keep = (seq->n_tokens + T - 1) / T;
    for (int b = keep; b < seq->n_blocks; b++)
        kc->open_free[kc->n_open_free++] = seq->open_id[b];
    seq->n_blocks = keep;
    seq->n_reserved = seq->n_tokens;
    /* tail[] beyond n_tokens % T is stale but is always rewritten before it is read. */
}

void kv_seq_commit(kv_cache *kc, kv_seq *seq) {
    const int T = kc->config.block_size;
    for (int b = seq->n_tokens / T; b < seq->n_reserved / T; b++) {
        kc->open_free[kc->n_open_free++] = seq->open_id[b];
        seq->open_id[b] = -1;
        int32_t id = seq->full_id[b];
        if (!kc->config.prefix_cache) continue;
        uint64_t parent = b ? seq->hash[b - 1] : ROOT_HASH;
        const int32_t *bt = kc->full_tokens + (size_t)id * T;
        /* A twin computed by another sequence in the same step stays private. */
        if (map_find(kc, seq->hash[b], parent, bt) >= 0) continue;
        kc->full_hash[id] = seq->hash[b];
        kc->full_parent[id] = parent;
        kc->full_registered[id] = 1;
        map_insert(kc, id);
    }
    seq->n_tokens = seq->n_reserved;
}

void kv_seq_release(kv_cache *kc, kv_seq *seq) {
    DS_ASSERT(seq->n_reserved == seq->n_tokens);
    for (int b = 0; b < seq->n_blocks; b++) {
        if (seq->open_id[b] >= 0) kc->open_free[kc->n_open_free++] = seq->open_id[b];
        if (seq->full_id[b] >= 0) full_unref(kc, seq->full_id[b]);
    }
    free(seq->open_id);
    free(seq->full_id);
    free(seq->hash);
    free(seq->tail);
    kv_seq_init(seq);
}

int kv_cache_check(const kv_cache *kc, const kv_seq *const *seqs, int n_seqs, char *msg,
                   size_t msg_len) {
    const int n_open = kc->config.n_open_blocks, n_full = kc->config.n_full_blocks;
    int *open_holders = calloc((size_t)n_open + 1, sizeof(int));
    int *full_holders = calloc((size_t)n_full + 1, sizeof(int));
    char *full_free = calloc((size_t)n_full + 1, 1), *open_free = calloc((size_t)n_open + 1, 1);
    int rc = -1;
    if (!open_holders || !full_holders || !full_free || !open_free) {
        ds_fail(msg, msg_len, DS_ENOMEM, "kv_cache_check: out of memory");
        goto done;
    }
    for (int s = 0; s < n_seqs; s++) {
        const kv_seq *q = seqs[s];
        for (int b = 0; b < q->n_blocks; b++) {
            if (q->open_id[b] >= 0) open_holders[q->open_id[b]]++;
            if (q->full_id[b] >= 0) full_holders[q->full_id[b]]++;
        }
    }
    for (int i = 0; i < kc->n_open_free; i++) {
        int id = kc->open_free[i];
        if (open_free[id]++ || open_holders[id]) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "open block %d: free and held (%d holders)", id,
                    open_holders[id]);
            goto done;
        }
    }
    for (int id = 0; id < n_open; id++) {
        if (open_holders[id] > 1 || (!open_free[id] && !open_holders[id])) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "open block %d: %d holders, %s", id,
                    open_holders[id], open_free[id] ? "free" : "not free");
            goto done;
        }
    }
    for (int i = 0; i < kc->n_full_free; i++) {
        int id = kc->full_free[i];
        if (full_free[id]++ || kc->full_registered[id]) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "full block %d: twice free or free and registered",
                    id);
            goto done;
        }
    }
    int n_lru = 0;
    for (int id = kc->lru_head; id >= 0; id = kc->lru_next[id], n_lru++) {
        if (full_free[id]++ || !kc->full_registered[id] || n_lru > n_full) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "cached block %d: listed twice or unregistered",
                    id);
            goto done;
        }
    }
    if (n_lru != kc->n_cached) {
        ds_fail(msg, msg_len, DS_EINTERNAL, "cached list holds %d blocks, count says %d", n_lru,
                kc->n_cached);
        goto done;
    }
    for (int id = 0; id < n_full; id++) {
        if (full_holders[id] != kc->full_ref[id] || (full_free[id] && full_holders[id]) ||
            (!full_free[id] && !full_holders[id])) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "full block %d: refcount %d, held by %d tables, %s",
                    id, kc->full_ref[id], full_holders[id], full_free[id] ? "free" : "not free");
            goto done;
        }
    }
    rc = 0;
done:
    free(open_holders), free(full_holders), free(full_free), free(open_free);
    return rc;
}

/* --- page data -------------------------------------------------------------------------------- */

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

void kv_seq_filling(const kv_cache *kc, const kv_seq *seq, int *first, int *end) {
    *first = seq->n_tokens / kc->config.block_size;
    *end = seq->n_reserved / kc->config.block_size;
}

void kv_cache_compress_page(const kv_cache *kc, const kv_seq *seq, int layer, int block, int head,
                            int which, void *workspace) {
    const kv_cache_config *c = &kc->config;
    const size_t hd = (size_t)c->n_kv_heads * c->head_dim;
    DS_ASSERT(seq->open_id[block] >= 0 && seq->full_id[block] >= 0);
    const dq_format *f = which ? &kc->value_format : &kc->key_format;
    const uint16_t *src =
        open_slab(kc, seq->open_id[block], layer, which) + (size_t)head * c->head_dim;
    dq_compress_page(f, src, hd, full_page(kc, seq->full_id[block], layer, head, which), workspace);
}

size_t kv_cache_workspace_bytes(const kv_cache *kc) {
    size_t k = dq_workspace_bytes(&kc->key_format), v = dq_workspace_bytes(&kc->value_format);
    return ((k > v ? k : v) + 15) / 16 * 16;
}

const uint8_t *kv_cache_full_page(const kv_cache *kc, const kv_seq *seq, int layer, int head,
                                  int block, int which) {
    DS_ASSERT(seq->full_id[block] >= 0);
    return full_page(kc, seq->full_id[block], layer, head, which);
}

const uint16_t *kv_cache_open_row(const kv_cache *kc, const kv_seq *seq, int layer, int head,
                                  int which, int pos) {
    const int T = kc->config.block_size;
    int32_t id = seq->open_id[pos / T];
    DS_ASSERT(id >= 0);
    return open_slab(kc, id, layer, which) +
           ((size_t)(pos % T) * kc->config.n_kv_heads + head) * kc->config.head_dim;
}
