/* kvcache/paged_cache_test.c — the block manager of the paged KV cache, with exact pool counts
 * and kv_cache_check after every operation: prefix blocks shared and registered, blocks with equal
 * prefix hashes and other tokens (built from kv_prefix_hash's structure) never taken for each
 * other, LRU eviction of cached unheld blocks, reference counts across holders and release
 * orders, pools running dry with DS_ENOMEM and nothing changed, 100 sequences on one prefix, a
 * reserved decode's token rewritten before its commit.
 * Bookkeeping only (no_storage): the pages themselves are checked through the forward pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "kvcache/paged_cache.h"

enum { MAX_SEQS = 128 };

/* A cache and every sequence a test uses (unused ones are empty, which kv_cache_check allows). */
typedef struct world {
    kv_cache *kc;
    kv_seq seq[MAX_SEQS];
    char msg[256]; /* the last kv_seq_reserve's error */
} world;

static world *world_create(int block_size, int n_open, int n_full, int prefix_cache) {
    world *w = calloc(1, sizeof *w);
    assert_non_null(w);
    kv_cache_config c = {.n_layers = 1,
                         .n_kv_heads = 1,
                         .head_dim = 8,
                         .block_size = block_size,
                         .n_open_blocks = n_open,
                         .n_full_blocks = n_full,
                         .prefix_cache = prefix_cache,
                         .no_storage = 1};
    c.key_codec = dq_config_defaults(DQ_FP16, 16);
    c.value_codec = c.key_codec;
    if (kv_cache_create(&c, &w->kc, w->msg, sizeof w->msg) != DS_OK)
        fail_msg("kv_cache_create: %s", w->msg);
    for (int i = 0; i < MAX_SEQS; i++)
        kv_seq_init(&w->seq[i]);
    return w;
}

static void world_check(const world *w) {
    const kv_seq *seqs[MAX_SEQS];
    for (int i = 0; i < MAX_SEQS; i++)
        seqs[i] = &w->seq[i];
    char msg[256];
    if (kv_cache_check(w->kc, seqs, MAX_SEQS, msg, sizeof msg) != 0)
        fail_msg("kv_cache_check: %s", msg);
}

/* Releases every sequence: then both pools must be whole again. */
static void world_destroy(world *w) {
    for (int i = 0; i < MAX_SEQS; i++)
        kv_seq_release(w->kc, &w->seq[i]);
    world_check(w);
    assert_int_equal(kv_cache_open_free(w->kc), w->kc->config.n_open_blocks);
    assert_int_equal(kv_cache_full_free(w->kc), w->kc->config.n_full_blocks);
    kv_cache_destroy(w->kc);
    free(w);
}

/* ---- the operations, each followed by the invariant check ---- */

static int attach(world *w, int s, const int32_t *tokens, int n) {
    int cached = kv_seq_attach_prefix(w->kc, &w->seq[s], tokens, n);
    world_check(w);
    return cached;
}

static ds_status reserve(world *w, int s, const int32_t *tokens, int n_new) {
    w->msg[0] = '\0';
    ds_status st = kv_seq_reserve(w->kc, &w->seq[s], tokens, n_new, w->msg, sizeof w->msg);
    world_check(w);
    return st;
}

static void commit(world *w, int s) {
    kv_seq_commit(w->kc, &w->seq[s]);
    world_check(w);
}

static void rollback(world *w, int s) {
    kv_seq_rollback(w->kc, &w->seq[s]);
    world_check(w);
}

static void release(world *w, int s) {
    kv_seq_release(w->kc, &w->seq[s]);
    world_check(w);
}

/* A prompt's prefill: attach what the cache holds of tokens[n], reserve and commit the rest.
 * Returns the positions attached. */
static int prefill(world *w, int s, const int32_t *tokens, int n) {
    int cached = attach(w, s, tokens, n);
    assert_true(cached >= 0);
    if (reserve(w, s, tokens + cached, n - cached) != DS_OK) fail_msg("reserve: %s", w->msg);
    commit(w, s);
    return cached;
}

/* ---- exact expectations (the line is the caller's) ---- */

/* Free open blocks, never-registered free full blocks, cached (registered, unheld) full blocks. */
static void expect_pools_at(const world *w, int open_free, int full_free, int cached, int line) {
    const kv_cache *kc = w->kc;
    if (kv_cache_open_free(kc) != open_free || kc->n_full_free != full_free ||
        kc->n_cached != cached || kv_cache_full_free(kc) != full_free + cached)
        fail_msg("line %d: %d open free, %d full free, %d cached (full_free() %d); want %d, %d, %d",
                 line, kv_cache_open_free(kc), kc->n_full_free, kc->n_cached,
                 kv_cache_full_free(kc), open_free, full_free, cached);
}
#define expect_pools(w, open_free, full_free, cached)                                              \
    expect_pools_at(w, open_free, full_free, cached, __LINE__)

static void expect_block_at(const world *w, int id, int ref, int registered, int line) {
    const kv_cache *kc = w->kc;
    if (kc->full_ref[id] != ref || kc->full_registered[id] != registered)
        fail_msg("line %d: full block %d: refcount %d, registered %d; want %d, %d", line, id,
                 kc->full_ref[id], kc->full_registered[id], ref, registered);
}
#define expect_block(w, id, ref, registered) expect_block_at(w, id, ref, registered, __LINE__)

/* The cached blocks, oldest (next to be evicted) first. */
static void expect_lru_at(const world *w, const int32_t *ids, int n, int line) {
    const kv_cache *kc = w->kc;
    int i = 0;
    for (int32_t id = kc->lru_head; id >= 0; id = kc->lru_next[id], i++)
        if (i >= n || id != ids[i])
            fail_msg("line %d: LRU position %d holds block %d", line, i, id);
    if (i != n) fail_msg("line %d: LRU holds %d blocks, want %d", line, i, n);
}
#define expect_lru(w, ...)                                                                         \
    expect_lru_at(w, (const int32_t[]){__VA_ARGS__},                                               \
                  (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t)), __LINE__)

static void fill(int32_t *tokens, int n, int32_t first) {
    for (int i = 0; i < n; i++)
        tokens[i] = first + i;
}

/* ---- tests ---- */

/* A later prompt attaches the registered blocks it starts with, always leaving its last token
 * to compute; with prefix_cache off nothing is registered or attached. */
static void test_prefix_attach(void **state) {
    (void)state;
    enum { T = 5, N = 17 }; /* 3 full blocks + 2 tokens */
    world *w = world_create(T, 8, 16, 1);
    int32_t p[N], q[N];
    fill(p, N, 100);
    memcpy(q, p, sizeof q);
    q[7] = -1; /* q differs from p in its second block */

    assert_int_equal(attach(w, 0, p, N), 0);
    assert_int_equal(reserve(w, 0, p, N), DS_OK);
    expect_pools(w, 8 - 4, 16 - 3, 0);
    for (int b = 0; b < 3; b++) {
        assert_int_equal(w->seq[0].full_id[b], b); /* lowest ids first */
        expect_block(w, b, 1, 0);                  /* registered at commit, not before */
    }
    commit(w, 0);
    expect_pools(w, 8 - 1, 16 - 3, 0); /* full blocks gave their fp16 slots back */
    for (int b = 0; b < 3; b++)
        expect_block(w, b, 1, 1);

    assert_int_equal(prefill(w, 1, p, N), 15);
    assert_int_equal(attach(w, 2, p, 15), 10); /* 3 whole blocks: the last one is computed */
    assert_int_equal(attach(w, 3, q, N), 5);
    for (int b = 0; b < 3; b++)
        assert_int_equal(w->seq[1].full_id[b], b);
    expect_block(w, 0, 4, 1);
    expect_block(w, 1, 3, 1);
    expect_block(w, 2, 2, 1);
    expect_pools(w, 8 - 2, 16 - 3, 0);

    release(w, 0);
    expect_block(w, 0, 3, 1);
    expect_pools(w, 8 - 1, 16 - 3, 0);
    release(w, 3);
    release(w, 2);
    release(w, 1);
    expect_pools(w, 8, 16 - 3, 3); /* registered blocks nobody holds stay cached */
    world_destroy(w);

    w = world_create(T, 8, 16, 0);
    assert_int_equal(prefill(w, 0, p, N), 0);
    assert_int_equal(attach(w, 1, p, N), 0);
    for (int b = 0; b < 3; b++)
        expect_block(w, b, 1, 0);
    release(w, 0);
    expect_pools(w, 8, 16, 0); /* unregistered blocks go straight back to the free list */
    world_destroy(w);
}

typedef struct first_state {
    uint32_t high; /* high half of the hash state after the token */
    int32_t token;
} first_state;

static int by_high(const void *a, const void *b) {
    const first_state *x = a, *y = b;
    if (x->high != y->high) return x->high < y->high ? -1 : 1;
    return (x->token > y->token) - (x->token < y->token);
}

/* Two 3-token blocks a != b with kv_prefix_hash(parent, a) == kv_prefix_hash(parent, b). The
 * state after the first token x is g(x) = kv_prefix_hash(parent, &x, 1) and the next token is
 * XORed into its low 32 bits before a bijective mix, so tokens x != x2 whose states agree in the
 * high 32 bits collide once the second tokens cancel the low halves' difference. A birthday search
 * over 2^18 first tokens finds such a pair (about 8 expected). */
static void colliding_blocks(uint64_t parent, int32_t a[3], int32_t b[3]) {
    enum { N_CANDIDATES = 1 << 18 };
    first_state *c = malloc(N_CANDIDATES * sizeof *c);
    assert_non_null(c);
    for (int32_t x = 0; x < N_CANDIDATES; x++)
        c[x] = (first_state){(uint32_t)(kv_prefix_hash(parent, &x, 1) >> 32), x};
    qsort(c, N_CANDIDATES, sizeof *c, by_high);
    int i = 0;
    while (i + 1 < N_CANDIDATES && c[i].high != c[i + 1].high)
        i++;
    assert_true(i + 1 < N_CANDIDATES);
    int32_t x = c[i].token, x2 = c[i + 1].token;
    free(c);
    uint32_t low = (uint32_t)kv_prefix_hash(parent, &x, 1);
    uint32_t low2 = (uint32_t)kv_prefix_hash(parent, &x2, 1);
    a[0] = x, a[1] = 7, a[2] = 5;
    b[0] = x2, b[1] = (int32_t)(7u ^ low ^ low2), b[2] = 5;
    assert_memory_not_equal(a, b, 3 * sizeof(int32_t));
    assert_true(kv_prefix_hash(parent, a, 3) == kv_prefix_hash(parent, b, 3));
}

/* Blocks with equal hashes, equal parents and other tokens: both are registered, each prompt
 * attaches its own, and evicting one leaves the other findable. */
/* A decode reserved with a placeholder id and given its real one before the commit (async
 * scheduling) registers the block exactly as one reserved with the real id: a later prompt
 * attaches it, one with the placeholder does not. */
static void test_last_token_rewritten(void **state) {
    (void)state;
    world *w = world_create(4, 8, 16, 1); /* 2 full blocks + 1 token */
    int32_t p[9];
    fill(p, 9, 10);
    assert_int_equal(prefill(w, 0, p, 3), 0);
    const int32_t unknown = -1;
    assert_int_equal(reserve(w, 0, &unknown, 1), DS_OK); /* completes block 0 */
    kv_seq_set_last_token(w->kc, &w->seq[0], p[3]);
    commit(w, 0);
    assert_int_equal(reserve(w, 0, p + 4, 2), DS_OK); /* not at a block's end: only tail[] */
    kv_seq_set_last_token(w->kc, &w->seq[0], p[5]);
    commit(w, 0);
    assert_int_equal(reserve(w, 0, p + 6, 2), DS_OK);
    commit(w, 0);
    expect_block(w, w->seq[0].full_id[0], 1, 1);
    expect_block(w, w->seq[0].full_id[1], 1, 1);
    assert_int_equal(attach(w, 1, p, 9), 8); /* both blocks: the rewritten ids count */
    p[3] = unknown;
    assert_int_equal(attach(w, 2, p, 9), 0);
    world_destroy(w);
}

static void test_hash_collision(void **state) {
    (void)state;
    enum { T = 3 };
    world *w = world_create(T, 8, 5, 1);
    const int32_t head[4] = {1, 2, 3, 42}; /* the shared block 0, then a token */
    assert_int_equal(prefill(w, 0, head, 4), 0);
    uint64_t parent = w->seq[0].hash[0];
    assert_true(w->kc->full_hash[0] == parent);

    int32_t a[7] = {1, 2, 3, 0, 0, 0, 9}, b[7] = {1, 2, 3, 0, 0, 0, 9};
    colliding_blocks(parent, a + 3, b + 3);
    assert_int_equal(prefill(w, 1, a, 7), 3);
    assert_int_equal(w->seq[1].full_id[1], 1);
    assert_int_equal(prefill(w, 2, b, 7), 3); /* not 6: same hash, other tokens */
    assert_int_equal(w->seq[2].full_id[0], 0);
    assert_int_equal(w->seq[2].full_id[1], 2);
    expect_block(w, 1, 1, 1);
    expect_block(w, 2, 1, 1); /* registered beside its twin in hash only */
    assert_true(w->kc->full_hash[1] == w->kc->full_hash[2]);
    assert_true(w->kc->full_parent[1] == w->kc->full_parent[2]);

    assert_int_equal(attach(w, 3, a, 7), 6);
    assert_int_equal(w->seq[3].full_id[1], 1);
    assert_int_equal(attach(w, 4, b, 7), 6);
    assert_int_equal(w->seq[4].full_id[1], 2);
    expect_block(w, 0, 5, 1);

    release(w, 3);
    release(w, 1);
    release(w, 4);
    release(w, 2);
    expect_lru(w, 1, 2);
    expect_pools(w, 8 - 1, 2, 2);

    /* Three new blocks: the two never used, then the oldest cached one, a's. */
    int32_t d[10];
    fill(d, 10, 50);
    assert_int_equal(attach(w, 5, d, 10), 0);
    assert_int_equal(reserve(w, 5, d, 10), DS_OK);
    assert_int_equal(w->seq[5].full_id[0], 3);
    assert_int_equal(w->seq[5].full_id[1], 4);
    assert_int_equal(w->seq[5].full_id[2], 1);
    expect_block(w, 1, 1, 0);
    expect_pools(w, 8 - 1 - 4, 0, 1);
    assert_int_equal(attach(w, 6, b, 7), 6); /* b's block survives its twin's removal */
    assert_int_equal(w->seq[6].full_id[1], 2);
    assert_int_equal(attach(w, 7, a, 7), 3);
    commit(w, 5);

    /* Evict b's block as well: then b finds only the shared block. */
    release(w, 6);
    expect_lru(w, 2);
    assert_int_equal(prefill(w, 8, head + 1, 3), 0); /* {2, 3, 42}: one new block */
    assert_int_equal(w->seq[8].full_id[0], 2);
    assert_int_equal(attach(w, 9, b, 7), 3);
    expect_pools(w, 8 - 2, 0, 0);
    world_destroy(w);
}

/* Cached blocks are evicted least recently released first, after the never-used ones; attaching
 * one and releasing it again makes it the newest; a rolled-back reserve does not bring an evicted
 * block back. */
static void test_eviction_order(void **state) {
    (void)state;
    enum { T = 2 };
    world *w = world_create(T, 8, 4, 1);
    int32_t p[6][3];
    for (int i = 0; i < 6; i++)
        fill(p[i], 3, 10 * i + 1); /* one full block and a token each */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(prefill(w, i, p[i], 3), 0);
        assert_int_equal(w->seq[i].full_id[0], i);
    }
    expect_pools(w, 8 - 3, 1, 0);
    release(w, 1);
    release(w, 2);
    release(w, 0);
    expect_lru(w, 1, 2, 0);
    expect_pools(w, 8, 1, 3);
    assert_int_equal(attach(w, 3, p[2], 3), 2);
    expect_lru(w, 1, 0);
    release(w, 3);
    expect_lru(w, 1, 0, 2);

    assert_int_equal(prefill(w, 4, p[3], 3), 0);
    assert_int_equal(w->seq[4].full_id[0], 3); /* the never-used block before any cached one */
    expect_lru(w, 1, 0, 2);
    expect_pools(w, 8 - 1, 0, 3);
    assert_int_equal(prefill(w, 5, p[4], 3), 0);
    assert_int_equal(w->seq[5].full_id[0], 1); /* the oldest cached */
    expect_lru(w, 0, 2);
    assert_int_equal(attach(w, 6, p[1], 3), 0);

    /* Two blocks in one reserve: 0 then 2. Rolled back, they come back unregistered. */
    assert_int_equal(attach(w, 7, p[5], 3), 0);
    const int32_t four[4] = {7, 7, 8, 8};
    assert_int_equal(reserve(w, 7, four, 4), DS_OK);
    assert_int_equal(w->seq[7].full_id[0], 0);
    assert_int_equal(w->seq[7].full_id[1], 2);
    expect_pools(w, 8 - 2 - 2, 0, 0);
    rollback(w, 7);
    expect_pools(w, 8 - 2, 2, 0);
    expect_block(w, 0, 0, 0);
    expect_block(w, 2, 0, 0);
    assert_int_equal(attach(w, 8, p[0], 3), 0);
    assert_int_equal(attach(w, 9, p[2], 3), 0);
    world_destroy(w);
}

/* A shared block lives while any holder does, whichever releases first; held blocks are never
 * evicted; several holders of a cached block take it off the LRU once and put it back once. */
static void test_refcount_edges(void **state) {
    (void)state;
    enum { T = 4, N = 9 }; /* two full blocks and a token */
    world *w = world_create(T, 8, 6, 1);
    int32_t p[N], big[21];
    fill(p, N, 1);
    fill(big, 21, 100);

    assert_int_equal(prefill(w, 0, p, N), 0);
    assert_int_equal(attach(w, 1, p, N), 8);
    expect_block(w, 0, 2, 1);
    expect_block(w, 1, 2, 1);
    release(w, 0); /* the creator first */
    expect_block(w, 0, 1, 1);
    expect_block(w, 1, 1, 1);
    expect_pools(w, 8, 4, 0);

    /* Five full blocks would need the two that seq 1 holds: refused, nothing changed. */
    assert_int_equal(reserve(w, 2, big, 21), DS_ENOMEM);
    assert_string_equal(w->msg, "kv cache: need 6 open + 5 full blocks, 8 + 4 free");
    assert_int_equal(w->seq[2].n_blocks, 0);
    expect_pools(w, 8, 4, 0);
    assert_int_equal(reserve(w, 2, big, 17), DS_OK);
    commit(w, 2);
    expect_pools(w, 8 - 1, 0, 0);
    release(w, 1);
    expect_lru(w, 0, 1);
    expect_pools(w, 8 - 1, 0, 2);

    /* Two holders at once, the later one released first. */
    assert_int_equal(attach(w, 3, p, N), 8);
    assert_int_equal(attach(w, 4, p, N), 8);
    expect_block(w, 0, 2, 1);
    expect_pools(w, 8 - 1, 0, 0);
    release(w, 4);
    expect_block(w, 0, 1, 1);
    expect_pools(w, 8 - 1, 0, 0);
    release(w, 3);
    expect_lru(w, 0, 1);
    expect_pools(w, 8 - 1, 0, 2);
    world_destroy(w);
}

/* Two sequences computing the same block in one step: the first to commit registers it, the
 * other's copy stays private and goes back to the free list, not the cache. */
static void test_twins_stay_private(void **state) {
    (void)state;
    enum { T = 4 };
    world *w = world_create(T, 4, 4, 1);
    int32_t q[5];
    fill(q, 5, 30);
    assert_int_equal(attach(w, 0, q, 5), 0);
    assert_int_equal(attach(w, 1, q, 5), 0);
    assert_int_equal(reserve(w, 0, q, 5), DS_OK);
    assert_int_equal(reserve(w, 1, q, 5), DS_OK);
    commit(w, 0);
    commit(w, 1);
    expect_block(w, 0, 1, 1);
    expect_block(w, 1, 1, 0);
    assert_true(w->seq[0].hash[0] == w->seq[1].hash[0]);
    assert_int_equal(attach(w, 2, q, 5), 4);
    assert_int_equal(w->seq[2].full_id[0], 0);
    release(w, 1);
    expect_pools(w, 4 - 1, 3, 0);
    release(w, 0);
    release(w, 2);
    expect_pools(w, 4, 3, 1);
    world_destroy(w);
}

/* Either pool running dry fails the reserve with DS_ENOMEM and a message with the counts, and
 * changes nothing; a cached block counts as free. */
static void test_pool_exhaustion(void **state) {
    (void)state;
    enum { T = 4 };
    world *w = world_create(T, 2, 3, 1);
    int32_t p[13];
    fill(p, 13, 1);

    assert_int_equal(reserve(w, 0, p, 13), DS_ENOMEM);
    assert_string_equal(w->msg, "kv cache: need 4 open + 3 full blocks, 2 + 3 free");
    assert_int_equal(w->seq[0].n_blocks, 0);
    assert_int_equal(w->seq[0].n_reserved, 0);
    expect_pools(w, 2, 3, 0);

    assert_int_equal(reserve(w, 0, p, 5), DS_OK); /* the open pool is now empty */
    expect_pools(w, 0, 2, 0);
    assert_int_equal(reserve(w, 1, p + 8, 1), DS_ENOMEM);
    assert_string_equal(w->msg, "kv cache: need 1 open + 0 full blocks, 0 + 2 free");
    assert_int_equal(w->seq[1].n_blocks, 0);
    commit(w, 0); /* block 0 is full: its open slot is free again */
    expect_pools(w, 1, 2, 0);
    assert_int_equal(reserve(w, 1, p + 8, 1), DS_OK);
    commit(w, 1);

    /* Fill the full pool with held blocks. */
    assert_int_equal(reserve(w, 0, p + 5, 3), DS_OK);
    commit(w, 0);
    assert_int_equal(reserve(w, 1, p + 9, 3), DS_OK);
    commit(w, 1);
    expect_pools(w, 2, 0, 0);
    assert_int_equal(reserve(w, 0, p + 8, 1), DS_OK); /* within a new block: no full block yet */
    commit(w, 0);
    assert_int_equal(reserve(w, 0, p + 9, 3), DS_ENOMEM);
    assert_string_equal(w->msg, "kv cache: need 0 open + 1 full blocks, 1 + 0 free");
    assert_int_equal(w->seq[0].n_reserved, 9);
    expect_pools(w, 1, 0, 0);

    release(w, 1); /* its block is registered, so cached: free for the taking */
    expect_pools(w, 1, 0, 1);
    assert_int_equal(reserve(w, 0, p + 9, 3), DS_OK);
    assert_int_equal(w->seq[0].full_id[2], 2);
    commit(w, 0);
    expect_pools(w, 2, 0, 0);
    world_destroy(w);
}

/* 100 sequences on one 5-block prefix, each with its own block and tail: the prefix is stored
 * once with 100 references, released in a seeded random order one reference at a time. */
static void test_many_sequences_share_prefix(void **state) {
    (void)state;
    enum { T = 7, N_SEQS = 100, N_COMMON = 5 * T, N = N_COMMON + 10, N_FULL = 110 };
    world *w = world_create(T, N_SEQS + 1, N_FULL, 1);
    static int32_t tokens[N_SEQS][N];
    int32_t own_block[N_SEQS];
    for (int s = 0; s < N_SEQS; s++) {
        fill(tokens[s], N_COMMON, 1000);
        fill(tokens[s] + N_COMMON, N - N_COMMON, 100000 * (s + 1));
        assert_int_equal(prefill(w, s, tokens[s], N), s ? N_COMMON : 0);
        for (int b = 0; b < N_COMMON / T; b++)
            assert_int_equal(w->seq[s].full_id[b], b);
        own_block[s] = w->seq[s].full_id[N_COMMON / T];
        expect_block(w, own_block[s], 1, 1);
    }
    for (int b = 0; b < N_COMMON / T; b++)
        expect_block(w, b, N_SEQS, 1);
    expect_pools(w, 1, N_FULL - 5 - N_SEQS, 0);

    int order[N_SEQS];
    for (int s = 0; s < N_SEQS; s++)
        order[s] = s;
    ds_rng rng = {14};
    for (int i = N_SEQS - 1; i > 0; i--) {
        int j = (int)(ds_rng_u64(&rng) % (uint64_t)(i + 1)), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int i = 0; i < N_SEQS; i++) {
        release(w, order[i]);
        expect_block(w, 0, N_SEQS - 1 - i, 1);
        expect_block(w, own_block[order[i]], 0, 1);
        expect_pools(w, 2 + i, N_FULL - 5 - N_SEQS, i + 1 < N_SEQS ? i + 1 : i + 1 + 5);
    }

    /* Everything is cached: sequence 42's prompt again attaches its own block too. */
    assert_int_equal(attach(w, N_SEQS, tokens[42], N), N_COMMON + T);
    assert_int_equal(w->seq[N_SEQS].full_id[N_COMMON / T], own_block[42]);
    world_destroy(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_attach),   cmocka_unit_test(test_last_token_rewritten),
        cmocka_unit_test(test_hash_collision),  cmocka_unit_test(test_eviction_order),
        cmocka_unit_test(test_refcount_edges),  cmocka_unit_test(test_twins_stay_private),
        cmocka_unit_test(test_pool_exhaustion), cmocka_unit_test(test_many_sequences_share_prefix),
    };
    return cmocka_run_group_tests_name("paged_cache", tests, NULL, NULL);
}
