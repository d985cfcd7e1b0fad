/* scheduler/scheduler_test.c — property tests of the scheduler and the block manager: random
 * requests (many sharing prefixes), random cancellations and pools small enough to force
 * preemption. No model runs: a step "computes" by committing its reservations and samples a
 * token from the test's RNG. After every step sched_check verifies that no block is both free and
 * held, every reference count equals the tables holding the block, and the queues are sound; at
 * the end every request has finished, been cancelled or been reported unfittable, and both
 * pools are full again. The async variant schedules every step before the previous one's tokens
 * are known (placeholders resolved while the next step is in its batch, some of them stopping
 * there, as an EOS would), as engine/serving.c's --async-scheduling does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/rng.h"
#include "scheduler/scheduler.h"

typedef struct req {
    sched_seq seq;
    int out_len; /* tokens to generate */
    int done;    /* 1 finished, 2 cancelled, 3 failed, 4 stopped early (async: mid-step) */
    int n_steps; /* steps it was in a batch */
} req;

typedef struct prop_config {
    uint64_t seed;
    int n_requests, block_size, n_full, max_seqs, max_batched_tokens, prefix_cache;
    int max_prompt, max_out;
    double cancel_rate; /* per step, chance to cancel one random live request */
    int async;          /* sampled tokens arrive one step late, as placeholders until then */
    double stop_rate;   /* async: chance that an arriving token ends its request */
} prop_config;

static kv_cache *make_cache(int block_size, int n_open, int n_full, int prefix_cache) {
    kv_cache_config c = {.n_layers = 1,
                         .n_kv_heads = 1,
                         .head_dim = 8,
                         .block_size = block_size,
                         .n_open_blocks = n_open,
                         .n_full_blocks = n_full,
                         .prefix_cache = prefix_cache};
    c.key_codec = dq_config_defaults(DQ_FP16, 16);
    c.value_codec = c.key_codec;
    kv_cache *kc = NULL;
    char msg[256];
    assert_int_equal(kv_cache_create(&c, &kc, msg, sizeof msg), DS_OK);
    return kc;
}

typedef struct run_result {
    int finished, cancelled, failed, stopped;
    int recompute_handoffs; /* async: placeholders a recompute chunk (not a decode) ended at */
    int64_t preemptions, prefix_hits;
    int peak_running;
} run_result;

static run_result run_property(const prop_config *pc) {
    ds_rng rng = {pc->seed};
    const int T = pc->block_size;
    const int n_open = pc->max_seqs + pc->max_batched_tokens / T + 1;
    kv_cache *kc = make_cache(T, n_open, pc->n_full, pc->prefix_cache);
    sched_config sc = {.max_seqs = pc->max_seqs, .max_batched_tokens = pc->max_batched_tokens};
    sched *s = NULL;
    char msg[512];
    assert_int_equal(sched_create(&sc, kc, &s, msg, sizeof msg), DS_OK);
    req *reqs = calloc((size_t)pc->n_requests, sizeof *reqs);
    int32_t bases[4][64];
    for (int b = 0; b < 4; b++)
        for (int i = 0; i < 64; i++)
            bases[b][i] = (int32_t)(ds_rng_u64(&rng) % 1000);
    int32_t prompt[256];
    int submitted = 0, closed = 0;
    run_result rr = {0};
    int64_t steps = 0, idle = 0;
    while (closed < pc->n_requests) {
        /* arrivals */
        int arrivals = (int)(ds_rng_u64(&rng) % 4);
        for (int a = 0; a < arrivals && submitted < pc->n_requests; a++, submitted++) {
            req *r = &reqs[submitted];
            int n = 1 + (int)(ds_rng_u64(&rng) % (uint64_t)pc->max_prompt);
            int shared = (ds_rng_u64(&rng) % 2) ? (int)(ds_rng_u64(&rng) % 64) : 0;
            const int32_t *base = bases[ds_rng_u64(&rng) % 4];
            for (int i = 0; i < n; i++)
                prompt[i] = i < shared ? base[i] : (int32_t)(ds_rng_u64(&rng) % 1000);
            r->out_len = 1 + (int)(ds_rng_u64(&rng) % (uint64_t)pc->max_out);
            assert_int_equal(sched_seq_init(&r->seq, submitted, prompt, n, r, msg, sizeof msg),
                             DS_OK);
            sched_add(s, &r->seq);
        }
        /* a cancellation at a random point of a random live request */
        if (submitted > closed && ds_rng_uniform(&rng) < pc->cancel_rate) {
            req *r = &reqs[ds_rng_u64(&rng) % (uint64_t)submitted];
            if (!r->done) {
                sched_remove(s, &r->seq, SCHED_CANCELLED);
                r->done = 2;
                closed++;
            }
        }
        sched_batch *b;
        assert_int_equal(sched_schedule(s, &b, msg, sizeof msg), DS_OK);
        for (int i = 0; i < b->n_failed; i++) {
            req *r = b->failed[i]->user;
            /* only a request that cannot fit even alone may fail */
            assert_true((r->seq.n_prompt + r->out_len - 1) / T > pc->n_full);
            sched_remove(s, &r->seq, SCHED_CANCELLED);
            r->done = 3;
            closed++;
        }
        assert_true(b->n_tokens <= pc->max_batched_tokens);
        int tokens = 0;
        for (int i = 0; i < b->n_items; i++) {
            tokens += b->items[i].n;
            assert_int_equal(b->items[i].first, b->items[i].seq->n_computed);
            assert_int_equal(b->items[i].seq->kv.n_reserved, b->items[i].first + b->items[i].n);
        }
        assert_int_equal(tokens, b->n_tokens);
        if (sched_check(s, msg, sizeof msg))
            fail_msg("step %lld (scheduled): %s", (long long)steps, msg);
        /* async: the previous step's tokens arrive now, while this one is in its batch */
        for (int i = 0; pc->async && i < submitted; i++) {
            req *r = &reqs[i];
            if (r->done || !r->seq.last_unknown) continue;
            if (ds_rng_uniform(&rng) < pc->stop_rate) {
                sched_remove(s, &r->seq, SCHED_FINISHED);
                r->done = 4;
                closed++;
            } else {
                rr.recompute_handoffs += r->seq.item >= 0 && b->items[r->seq.item].n > 1;
                sched_seq_resolve(s, &r->seq, (int32_t)(ds_rng_u64(&rng) % 1000));
            }
        }
        if (pc->async && sched_check(s, msg, sizeof msg))
            fail_msg("step %lld (tokens arrived): %s", (long long)steps, msg);
        const int n_items = b->n_items;
        sched_commit(s);
        for (int i = 0; i < n_items; i++) {
            sched_item it = b->items[i];
            req *r = it.seq->user;
            r->n_steps++;
            if (!it.sample) continue;
            int generated = r->seq.n_tokens - r->seq.n_prompt;
            if (generated + 1 >= r->out_len) { /* this sample is the last token */
                sched_remove(s, &r->seq, SCHED_FINISHED);
                r->done = 1;
                closed++;
                continue;
            }
            if (pc->async)
                assert_int_equal(sched_seq_append_unknown(&r->seq), DS_OK);
            else
                assert_int_equal(sched_seq_append(&r->seq, (int32_t)(ds_rng_u64(&rng) % 1000)),
                                 DS_OK);
        }
        if (sched_check(s, msg, sizeof msg))
            fail_msg("step %lld (committed): %s", (long long)steps, msg);
        steps++;
        /* progress: a step with work available must schedule something */
        if (n_items == 0 && b->n_failed == 0 && sched_n_live(s) > 0) {
            if (++idle > 2)
                fail_msg("step %lld: %d live requests but nothing scheduled", (long long)steps,
                         sched_n_live(s));
        } else {
            idle = 0;
        }
        assert_true(steps < 2000000);
    }
    assert_int_equal(sched_n_live(s), 0);
    assert_int_equal(kv_cache_open_free(kc), n_open);
    assert_int_equal(kv_cache_full_free(kc), pc->n_full);
    assert_int_equal(sched_check(s, msg, sizeof msg), 0);
    sched_stats st;
    sched_get_stats(s, &st);
    rr.preemptions = st.preemptions;
    rr.prefix_hits = st.prefix_hits;
    rr.peak_running = st.peak_running;
    for (int i = 0; i < pc->n_requests; i++) {
        req *r = &reqs[i];
        rr.finished += r->done == 1, rr.cancelled += r->done == 2, rr.failed += r->done == 3;
        rr.stopped += r->done == 4;
        if (r->done == 1) assert_int_equal(r->seq.n_tokens, r->seq.n_prompt + r->out_len - 1);
        sched_seq_free(&r->seq);
    }
    free(reqs);
    sched_destroy(s);
    kv_cache_destroy(kc);
    return rr;
}

/* Pools small enough that sequences preempt each other all the time; async: every step scheduled
 * before the previous one's tokens are known, so sequences also stop inside a step not yet
 * committed and recompute chunks end at a placeholder. The pools end whole. */
static void storm(int async) {
    int64_t preemptions = 0, hits = 0;
    int stopped = 0, recompute_handoffs = 0;
    for (int k = 0; k < 6; k++) {
        prop_config pc = {.seed = (async ? 200 : 100) + k,
                          .n_requests = 600,
                          .block_size = k % 2 ? 4 : 16,
                          .n_full = k % 2 ? 40 : 12,
                          .max_seqs = 8,
                          .max_batched_tokens = k < 3 ? 16 : 64,
                          .prefix_cache = k != 2,
                          .max_prompt = 100,
                          .max_out = 40,
                          .cancel_rate = 0.05,
                          .async = async,
                          .stop_rate = async ? 0.03 : 0.0};
        run_result r = run_property(&pc);
        assert_int_equal(r.finished + r.cancelled + r.failed + r.stopped, pc.n_requests);
        assert_true(r.finished > pc.n_requests / (async ? 4 : 3));
        preemptions += r.preemptions;
        hits += r.prefix_hits;
        stopped += r.stopped;
        recompute_handoffs += r.recompute_handoffs;
    }
    assert_true(preemptions > 100);
    assert_true(hits > 100);
    assert_true(async ? stopped > 20 : stopped == 0);
    assert_true(async ? recompute_handoffs > 0 : recompute_handoffs == 0);
}

static void test_preemption_storm(void **state) {
    (void)state;
    storm(0);
}

static void test_async_preemption_storm(void **state) {
    (void)state;
    storm(1);
}

/* Roomy pools: nothing fails and nothing is preempted; many sequences run at once. */
static void test_roomy_pool_no_preemption(void **state) {
    (void)state;
    prop_config pc = {.seed = 7,
                      .n_requests = 1000,
                      .block_size = 8,
                      .n_full = 100000,
                      .max_seqs = 32,
                      .max_batched_tokens = 256,
                      .prefix_cache = 1,
                      .max_prompt = 64,
                      .max_out = 32,
                      .cancel_rate = 0.1};
    run_result r = run_property(&pc);
    assert_int_equal(r.failed, 0);
    assert_int_equal(r.preemptions, 0);
    assert_int_equal(r.peak_running, 32);
}

/* A request that cannot fit even alone is reported (not retried forever), the rest complete. */
static void test_unfittable_request_fails_cleanly(void **state) {
    (void)state;
    prop_config pc = {.seed = 3,
                      .n_requests = 200,
                      .block_size = 4,
                      .n_full = 10, /* 40 tokens */
                      .max_seqs = 4,
                      .max_batched_tokens = 32,
                      .prefix_cache = 1,
                      .max_prompt = 60,
                      .max_out = 20,
                      .cancel_rate = 0.0};
    run_result r = run_property(&pc);
    assert_true(r.failed > 0);
    assert_true(r.finished > 0);
    assert_int_equal(r.cancelled, 0);
}

/* A prompt that repeats a finished one attaches its full blocks and computes only the rest. */
static void test_prefix_cache_attach(void **state) {
    (void)state;
    kv_cache *kc = make_cache(4, 8, 16, 1);
    sched_config sc = {.max_seqs = 4, .max_batched_tokens = 64};
    sched *s;
    char msg[256];
    assert_int_equal(sched_create(&sc, kc, &s, msg, sizeof msg), DS_OK);
    int32_t prompt[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    sched_seq a, b;
    assert_int_equal(sched_seq_init(&a, 1, prompt, 11, NULL, msg, sizeof msg), DS_OK);
    sched_add(s, &a);
    sched_batch *batch;
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    assert_int_equal(batch->n_items, 1);
    assert_int_equal(batch->items[0].n, 11);
    sched_commit(s);
    sched_remove(s, &a, SCHED_FINISHED);
    assert_int_equal(kv_cache_full_free(kc), 16); /* cached blocks count as free */
    prompt[10] = 99;                              /* same first 8 tokens, different tail */
    assert_int_equal(sched_seq_init(&b, 2, prompt, 11, NULL, msg, sizeof msg), DS_OK);
    sched_add(s, &b);
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    assert_int_equal(batch->items[0].first, 8);
    assert_int_equal(batch->items[0].n, 3);
    assert_int_equal(sched_check(s, msg, sizeof msg), 0);
    sched_commit(s);
    /* a prompt of exactly 8 shared tokens keeps its last block to compute (logits) */
    sched_seq c;
    assert_int_equal(sched_seq_init(&c, 3, prompt, 8, NULL, msg, sizeof msg), DS_OK);
    sched_add(s, &c);
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    for (int i = 0; i < batch->n_items; i++)
        if (batch->items[i].seq == &c) assert_int_equal(batch->items[i].first, 4);
    sched_commit(s);
    assert_int_equal(kc->full_ref[b.kv.full_id[0]], 2);
    assert_int_equal(sched_check(s, msg, sizeof msg), 0);
    sched_remove(s, &b, SCHED_FINISHED);
    sched_remove(s, &c, SCHED_CANCELLED);
    assert_int_equal(kv_cache_full_free(kc), 16);
    assert_int_equal(kv_cache_open_free(kc), 8);
    sched_seq_free(&a), sched_seq_free(&b), sched_seq_free(&c);
    sched_destroy(s);
    kv_cache_destroy(kc);
}

/* Decodes go first; prefill chunks fill what is left of the token budget. */
static void test_decodes_first_then_chunks(void **state) {
    (void)state;
    kv_cache *kc = make_cache(4, 16, 64, 0);
    sched_config sc = {.max_seqs = 4, .max_batched_tokens = 10};
    sched *s;
    char msg[256];
    assert_int_equal(sched_create(&sc, kc, &s, msg, sizeof msg), DS_OK);
    int32_t p[30] = {0};
    sched_seq a, b;
    assert_int_equal(sched_seq_init(&a, 1, p, 3, NULL, msg, sizeof msg), DS_OK);
    assert_int_equal(sched_seq_init(&b, 2, p, 30, NULL, msg, sizeof msg), DS_OK);
    sched_add(s, &a);
    sched_batch *batch;
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    assert_int_equal(batch->n_items, 1); /* a's whole prompt */
    sched_commit(s);
    assert_int_equal(sched_seq_append(&a, 5), DS_OK);
    sched_add(s, &b);
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    assert_int_equal(batch->n_items, 2);
    assert_ptr_equal(batch->items[0].seq, &a); /* the decode */
    assert_int_equal(batch->items[0].n, 1);
    assert_int_equal(batch->items[0].sample, 1);
    assert_int_equal(batch->items[1].n, 9); /* b's first chunk: the rest of the budget */
    assert_int_equal(batch->items[1].sample, 0);
    sched_commit(s);
    assert_int_equal(sched_seq_append(&a, 6), DS_OK);
    assert_int_equal(sched_schedule(s, &batch, msg, sizeof msg), DS_OK);
    assert_int_equal(batch->items[1].first, 9);
    assert_int_equal(batch->items[1].n, 9);
    sched_commit(s);
    sched_remove(s, &a, SCHED_FINISHED);
    sched_remove(s, &b, SCHED_CANCELLED);
    sched_seq_free(&a), sched_seq_free(&b);
    sched_destroy(s);
    kv_cache_destroy(kc);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preemption_storm),
        cmocka_unit_test(test_async_preemption_storm),
        cmocka_unit_test(test_roomy_pool_no_preemption),
        cmocka_unit_test(test_unfittable_request_fails_cleanly),
        cmocka_unit_test(test_prefix_cache_attach),
        cmocka_unit_test(test_decodes_first_then_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
