/* engine/serving_test.c — the serving engine end to end on a tiny model made by decoserve-mkmodel
 * (argv[1]) and, when DECOSERVE_MODEL is set, on the real SmolLM2 with real text:
 *  - batching changes nothing: greedy outputs of 16 different prompts run together equal each
 *    prompt run alone, token for token, at kv-bits 16 and at every compressed setting;
 *  - neither does preemption: the same batch in a pool small enough to preempt gives the same
 *    tokens;
 *  - cancellation, request validation, the engine thread and shutdown: every stream gets a final
 *    output and every block returns to the pools;
 *  - async scheduling changes nothing: a mixed workload (prompt lengths, max_tokens from 1,
 *    stop ids, EOS, seeded sampling and greedy, a cancellation mid-run, a pool that preempts)
 *    streams the same tokens with the same finishes as the synchronous engine, alone and
 *    through the engine thread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/backend.h"
#include "engine/serving.h"
#include "engine/test_model.h"

/* MAX_OUT holds the longest completion any test asks for (test_engine_thread_and_shutdown's
 * max_tokens = 200, which a request may reach before the shutdown cancels it). */
enum { N_PROMPTS = 16, MAX_OUT = 256 };

static const char *g_mkmodel;
static char g_tiny[512];

typedef struct completion {
    int32_t ids[MAX_OUT];
    int n;
    serving_finish finish;
} completion;

static serving *make_serving_async(const char *model, int kv_bits, dq_method method,
                                   int64_t kv_memory, int max_seqs, int async) {
    serving_options o;
    serving_options_default(&o);
    o.model_path = model;
    o.kv_bits = kv_bits;
    o.kv_method = method;
    o.block_size = 16;
    o.kv_memory_bytes = kv_memory;
    o.max_seqs = max_seqs;
    o.max_batched_tokens = 64;
    o.n_threads = 2;
    o.async_scheduling = async;
    serving *s = NULL;
    char msg[512];
    if (serving_create(&o, &s, msg, sizeof msg) != DS_OK) fail_msg("serving_create: %s", msg);
    serving_info info;
    serving_get_info(s, &info);
    assert_int_equal(info.async_scheduling, async);
    return s;
}

static serving *make_serving(const char *model, int kv_bits, dq_method method, int64_t kv_memory,
                             int max_seqs) {
    return make_serving_async(model, kv_bits, method, kv_memory, max_seqs, 0);
}

static void run_until_idle(serving *s) {
    char msg[512];
    for (int worked = 1; worked;)
        if (serving_step(s, &worked, msg, sizeof msg) != DS_OK) fail_msg("step: %s", msg);
}

static void blocks_all_free(serving *s) {
    serving_stats st;
    serving_get_stats(s, &st);
    assert_int_equal(st.running + st.waiting, 0);
    assert_int_equal(st.open_blocks_free, st.open_blocks_total);
    assert_int_equal(st.full_blocks_free, st.full_blocks_total);
}

/* Appends what is new on the stream to c. */
static void drain_stream(serving_stream *st, completion *c) {
    serving_output out = {0};
    while (serving_stream_poll(st, &out)) {
        assert_true(c->n + out.n_token_ids <= MAX_OUT);
        if (out.n_token_ids)
            memcpy(c->ids + c->n, out.token_ids, (size_t)out.n_token_ids * sizeof(int32_t));
        c->n += out.n_token_ids;
        if (out.finish) c->finish = out.finish;
    }
    serving_output_free(&out);
}

static void collect(serving_stream *st, completion *c) {
    memset(c, 0, sizeof *c);
    drain_stream(st, c);
    serving_stream_release(st);
}

static serving_stream *submit(serving *s, const serving_request *q) {
    serving_stream *st;
    char msg[512];
    if (serving_submit(s, q, NULL, NULL, &st, msg, sizeof msg) != DS_OK)
        fail_msg("submit: %s", msg);
    return st;
}

/* Greedy completions of requests q[n], either all queued at once or each alone. */
static void complete(serving *s, const serving_request *q, int n, int together, completion *out) {
    serving_stream *st[N_PROMPTS];
    if (together) {
        for (int i = 0; i < n; i++)
            st[i] = submit(s, &q[i]);
        run_until_idle(s);
        for (int i = 0; i < n; i++)
            collect(st[i], &out[i]);
    } else {
        for (int i = 0; i < n; i++) {
            st[i] = submit(s, &q[i]);
            run_until_idle(s);
            collect(st[i], &out[i]);
        }
    }
    blocks_all_free(s);
}

static void assert_same(const completion *a, const completion *b, int n, const char *what) {
    for (int i = 0; i < n; i++) {
        if (a[i].n != b[i].n || memcmp(a[i].ids, b[i].ids, (size_t)a[i].n * sizeof(int32_t)))
            fail_msg("%s: prompt %d: %d vs %d tokens, or different tokens", what, i, a[i].n,
                     b[i].n);
        assert_int_equal(a[i].finish, b[i].finish);
    }
}

typedef struct kv_setting {
    int bits;
    dq_method method;
} kv_setting;

static const kv_setting SETTINGS[] = {{16, DQ_FP16},     {8, DQ_KIVI},      {4, DQ_KIVI},
                                      {2, DQ_KIVI},      {8, DQ_DECOQUANT}, {4, DQ_DECOQUANT},
                                      {2, DQ_DECOQUANT}, {4, DQ_RTN}};

/* 16 prompts of 3..90 random ids (so they span several 16-token blocks), 24 greedy tokens. */
static void tiny_requests(serving_request *q, int32_t ids[N_PROMPTS][96]) {
    ds_rng rng = {11};
    for (int i = 0; i < N_PROMPTS; i++) {
        serving_request_default(&q[i]);
        int n = 3 + (int)(ds_rng_u64(&rng) % 88);
        for (int k = 0; k < 96; k++)
            ids[i][k] = (int32_t)(ds_rng_u64(&rng) % 256);
        if (i == 5)
            memcpy(ids[i], ids[4], 40 * sizeof(int32_t)), n = n < 41 ? 41 : n; /* shared prefix */
        q[i].prompt_ids = ids[i];
        q[i].n_prompt_ids = n;
        q[i].max_tokens = 24;
        q[i].ignore_eos = 1;
        q[i].sampling.temperature = 0.0f;
    }
}

static void test_batch_equals_alone_tiny(void **state) {
    (void)state;
    serving_request q[N_PROMPTS];
    int32_t ids[N_PROMPTS][96];
    tiny_requests(q, ids);
    for (size_t k = 0; k < sizeof SETTINGS / sizeof SETTINGS[0]; k++) {
        serving *s = make_serving(g_tiny, SETTINGS[k].bits, SETTINGS[k].method, 64 << 20, 16);
        completion alone[N_PROMPTS], batch[N_PROMPTS];
        complete(s, q, N_PROMPTS, 0, alone);
        complete(s, q, N_PROMPTS, 1, batch);
        for (int i = 0; i < N_PROMPTS; i++) {
            assert_int_equal(alone[i].n, 24);
            assert_int_equal(alone[i].finish, SERVING_LENGTH);
        }
        char what[64];
        snprintf(what, sizeof what, "kv %d-bit method %d", SETTINGS[k].bits, SETTINGS[k].method);
        assert_same(alone, batch, N_PROMPTS, what);
        serving_destroy(s);
    }
}

/* The same batch in pools so small that sequences preempt each other gives the same tokens. */
static void test_preemption_changes_nothing(void **state) {
    (void)state;
    serving_request q[N_PROMPTS];
    int32_t ids[N_PROMPTS][96];
    tiny_requests(q, ids);
    for (int bits = 16; bits >= 4; bits -= 12) {
        serving *roomy = make_serving(g_tiny, bits, DQ_KIVI, 64 << 20, 16);
        completion ref[N_PROMPTS], squeezed[N_PROMPTS];
        complete(roomy, q, N_PROMPTS, 1, ref);
        serving_destroy(roomy);
        /* tiny fp16 block: 2 layers x 2 x 16 x 2 x 16 x 2 bytes = 4 KiB; open pool 16+4+1 */
        serving *tight = make_serving(g_tiny, bits, DQ_KIVI, 21 * 4096 + 12 * 4096, 16);
        complete(tight, q, N_PROMPTS, 1, squeezed);
        serving_stats st;
        serving_get_stats(tight, &st);
        assert_true(st.preemptions > 0);
        assert_same(ref, squeezed, N_PROMPTS, "preempted");
        serving_destroy(tight);
    }
}

/* Real text through SmolLM2 (DECOSERVE_MODEL): batch of 16 equals each alone. */
static void test_batch_equals_alone_real(void **state) {
    (void)state;
    const char *model = test_model_path("the SmolLM2 batch-equals-alone check");
    static const char *const PROMPTS[N_PROMPTS] = {
        "The capital of France is",
        "It is a truth universally acknowledged, that a single man in possession of a good "
        "fortune, must be in want of a wife.",
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
        "disposition, seemed to unite some of the best blessings of existence;",
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
        "election produced",
        "def fibonacci(n):",
        "Water boils at",
        "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
        "In 1969, the first humans landed on",
        "The quick brown fox",
        "Photosynthesis is the process by which plants",
        "My favourite recipe for a rainy day is",
        "The three laws of motion were formulated by",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "SELECT name FROM users WHERE",
        "The largest planet in the solar system is",
        "To be, or not to be, that is the question:"};
    serving_request q[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++) {
        serving_request_default(&q[i]);
        q[i].prompt = PROMPTS[i];
        q[i].prompt_len = strlen(PROMPTS[i]);
        q[i].max_tokens = 16;
        q[i].sampling.temperature = 0.0f;
    }
    static const kv_setting REAL[] = {
        {16, DQ_FP16}, {4, DQ_KIVI}, {8, DQ_KIVI}, {2, DQ_KIVI}, {4, DQ_DECOQUANT}};
    /* Under ASan (10x slower) the memory checks need only the fp16 and one compressed setting;
     * the plain run checks every setting. */
#if defined(__SANITIZE_ADDRESS__)
    const size_t n_real = 2;
#else
    const size_t n_real = sizeof REAL / sizeof REAL[0];
#endif
    for (size_t k = 0; k < n_real; k++) {
        serving *s = make_serving(model, REAL[k].bits, REAL[k].method, 256 << 20, 16);
        completion alone[N_PROMPTS], batch[N_PROMPTS];
        complete(s, q, N_PROMPTS, 0, alone);
        complete(s, q, N_PROMPTS, 1, batch);
        char what[64];
        snprintf(what, sizeof what, "SmolLM2 kv %d-bit method %d", REAL[k].bits, REAL[k].method);
        assert_same(alone, batch, N_PROMPTS, what);
        serving_destroy(s);
    }
}

static void test_cancel_and_pools_refill(void **state) {
    (void)state;
    serving_request q[N_PROMPTS];
    int32_t ids[N_PROMPTS][96];
    tiny_requests(q, ids);
    serving *s = make_serving(g_tiny, 4, DQ_KIVI, 64 << 20, 8);
    serving_stream *st[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++)
        st[i] = submit(s, &q[i]);
    char msg[256];
    int worked;
    for (int k = 0; k < 5; k++)
        assert_int_equal(serving_step(s, &worked, msg, sizeof msg), DS_OK);
    for (int i = 0; i < N_PROMPTS; i += 3)
        serving_stream_cancel(st[i]); /* running and waiting ones alike */
    run_until_idle(s);
    for (int i = 0; i < N_PROMPTS; i++) {
        completion c;
        collect(st[i], &c);
        assert_int_equal(c.finish, i % 3 ? SERVING_LENGTH : SERVING_CANCELLED);
    }
    blocks_all_free(s);
    serving_stats stats;
    serving_get_stats(s, &stats);
    assert_int_equal(stats.requests_cancelled, (N_PROMPTS + 2) / 3);
    assert_int_equal(stats.requests_finished, N_PROMPTS - (N_PROMPTS + 2) / 3);
    serving_destroy(s);
}

/* The mixed workload: tiny_requests' prompts with max_tokens 1..36, a quarter with stop ids (taken
 * from ref, an unstopped run's output, so they hit), every other one sampled at temperature 0.8
 * with its own seed (some with top-k / top-p), some honouring EOS. */
static void mixed_requests(serving_request *q, int32_t ids[N_PROMPTS][96], const completion *ref,
                           int32_t stop_ids[N_PROMPTS][2]) {
    tiny_requests(q, ids);
    for (int i = 0; i < N_PROMPTS; i++) {
        q[i].max_tokens = i == 3 ? 1 : 8 + (i * 7) % 29;
        q[i].ignore_eos = i % 3 != 0;
        if (i % 2) {
            q[i].sampling.temperature = 0.8f;
            q[i].sampling.seed = 1000 + i;
            q[i].sampling.top_k = i % 4 == 1 ? 20 : 0;
            q[i].sampling.top_p = i % 8 == 3 ? 0.9f : 1.0f;
        }
        if (ref && i % 4 == 2 && ref[i].n > 4) {
            stop_ids[i][0] = ref[i].ids[ref[i].n / 2];
            stop_ids[i][1] = ref[i].ids[ref[i].n - 1];
            q[i].stop_ids = stop_ids[i];
            q[i].n_stop_ids = 2;
        }
    }
}

/* Runs q[n] to the end, polling every stream after each step; request `cancel` is cancelled once
 * it has streamed cancel_after tokens. */
static void run_workload(serving *s, const serving_request *q, int n, int cancel, int cancel_after,
                         completion *out) {
    serving_stream *st[N_PROMPTS];
    for (int i = 0; i < n; i++) {
        st[i] = submit(s, &q[i]);
        memset(&out[i], 0, sizeof out[i]);
    }
    char msg[512];
    for (int worked = 1, cancelled = cancel < 0; worked;) {
        if (serving_step(s, &worked, msg, sizeof msg) != DS_OK) fail_msg("step: %s", msg);
        for (int i = 0; i < n; i++)
            drain_stream(st[i], &out[i]);
        if (!cancelled && out[cancel].n >= cancel_after) {
            serving_stream_cancel(st[cancel]);
            cancelled = 1;
        }
    }
    for (int i = 0; i < n; i++) {
        drain_stream(st[i], &out[i]);
        serving_stream_release(st[i]);
    }
    blocks_all_free(s);
}

enum { CANCEL = 9, CANCEL_AFTER = 5 };

/* q[N_PROMPTS] through the synchronous and the async engine at kv `bits` in a pool small enough to
 * preempt: the same tokens and finishes, the pools whole. same_batches: q ends only by length, so
 * the async engine must run the synchronous engine's very batches (what tests/gpu's model_test
 * relies on): it cancels once CANCEL has streamed one token less (the next is then in flight, and
 * dropped: the same step as the synchronous cancel), and the step, preemption and prefix-hit
 * counts agree. */
static void compare_orders(const serving_request *q, int bits, int same_batches, completion *sync,
                           completion *async) {
    const int64_t tight = 21 * 4096 + 12 * 4096; /* test_preemption_changes_nothing's pool */
    serving *a = make_serving_async(g_tiny, bits, DQ_KIVI, tight, 16, 0);
    serving *b = make_serving_async(g_tiny, bits, DQ_KIVI, tight, 16, 1);
    run_workload(a, q, N_PROMPTS, CANCEL, CANCEL_AFTER, sync);
    run_workload(b, q, N_PROMPTS, CANCEL, CANCEL_AFTER - same_batches, async);
    for (int i = 0; i < N_PROMPTS; i++) {
        const int n = sync[i].n - (same_batches && i == CANCEL);
        if (async[i].n != n || memcmp(sync[i].ids, async[i].ids, (size_t)n * sizeof(int32_t)) ||
            sync[i].finish != async[i].finish)
            fail_msg("kv %d-bit%s: request %d: sync %d tokens (%s), async %d tokens (%s)", bits,
                     same_batches ? " (length only)" : "", i, sync[i].n,
                     serving_finish_name(sync[i].finish), async[i].n,
                     serving_finish_name(async[i].finish));
    }
    assert_int_equal(sync[CANCEL].finish, SERVING_CANCELLED);
    assert_int_equal(sync[CANCEL].n, CANCEL_AFTER);
    serving_stats sa, sb;
    serving_get_stats(a, &sa);
    serving_get_stats(b, &sb);
    assert_true(sa.preemptions > 0 && sb.preemptions > 0);
    if (same_batches) {
        assert_int_equal(sa.steps, sb.steps);
        assert_int_equal(sa.preemptions, sb.preemptions);
        assert_int_equal(sa.prefix_cache_hits, sb.prefix_cache_hits);
    } else {
        assert_int_equal(sa.generated_tokens, sb.generated_tokens);
    }
    serving_destroy(a);
    serving_destroy(b);
}

/* The mixed workload, synchronous and async, at kv 16 and 4; then ended by length alone (the same
 * batches); then once more through the engine thread. */
static void test_async_scheduling_changes_nothing(void **state) {
    (void)state;
    serving_request q[N_PROMPTS], by_length[N_PROMPTS];
    int32_t ids[N_PROMPTS][96], stop_ids[N_PROMPTS][2];
    completion ref[N_PROMPTS], sync[N_PROMPTS], async[N_PROMPTS], async4[N_PROMPTS];
    serving *roomy = make_serving(g_tiny, 16, DQ_FP16, 64 << 20, 16);
    mixed_requests(q, ids, NULL, stop_ids);
    run_workload(roomy, q, N_PROMPTS, -1, 0, ref);
    serving_destroy(roomy);
    mixed_requests(q, ids, ref, stop_ids);
    assert_true(q[CANCEL].max_tokens > CANCEL_AFTER + 1);
    compare_orders(q, 16, 0, sync, async);
    compare_orders(q, 4, 0, sync, async4);
    int stopped = 0, length = 0;
    for (int i = 0; i < N_PROMPTS; i++)
        stopped += sync[i].finish == SERVING_STOP, length += sync[i].finish == SERVING_LENGTH;
    assert_int_equal(sync[3].n, 1);
    assert_true(stopped >= 3 && length >= 6);
    memcpy(by_length, q, sizeof by_length);
    for (int i = 0; i < N_PROMPTS; i++)
        by_length[i].ignore_eos = 1, by_length[i].n_stop_ids = 0;
    compare_orders(by_length, 4, 1, sync, async);
    /* the engine thread: no cancellation (its timing is the thread's), the same tokens */
    serving *t = make_serving_async(g_tiny, 4, DQ_KIVI, 21 * 4096 + 12 * 4096, 16, 1);
    char msg[256];
    assert_int_equal(serving_start(t, msg, sizeof msg), DS_OK);
    serving_stream *st[N_PROMPTS];
    for (int i = 0; i < N_PROMPTS; i++)
        st[i] = submit(t, &q[i]);
    for (int i = 0; i < N_PROMPTS; i++) {
        completion c = {0};
        serving_output out = {0};
        while (!c.finish && serving_stream_wait(st[i], &out, 30.0)) {
            memcpy(c.ids + c.n, out.token_ids, (size_t)out.n_token_ids * sizeof(int32_t));
            c.n += out.n_token_ids;
            c.finish = out.finish;
        }
        serving_output_free(&out);
        serving_stream_release(st[i]);
        if (i != CANCEL) assert_same(&async4[i], &c, 1, "engine thread");
    }
    serving_shutdown(t, 1);
    blocks_all_free(t);
    serving_destroy(t);
}

static void expect_reject(serving *s, const serving_request *q, ds_status want, const char *field) {
    serving_stream *st = NULL;
    char msg[512] = "";
    ds_status got = serving_submit(s, q, NULL, NULL, &st, msg, sizeof msg);
    if (got != want || !strstr(msg, field))
        fail_msg("want status %d naming '%s', got %d: %s", want, field, got, msg);
    if (strstr(msg, "--")) fail_msg("a request error names a CLI flag: %s", msg);
    assert_null(st);
}

static void test_bad_requests(void **state) {
    (void)state;
    serving *s = make_serving(g_tiny, 16, DQ_FP16, 1 << 20, 4);
    int32_t ids[3] = {1, 2, 3}, bad[2] = {1, 100000};
    serving_request q;
    serving_request_default(&q);
    expect_reject(s, &q, DS_EINVAL, "prompt");
    q.prompt = "";
    expect_reject(s, &q, DS_EINVAL, "prompt: empty");
    q.prompt = "hi", q.prompt_len = 2, q.prompt_ids = ids, q.n_prompt_ids = 3;
    expect_reject(s, &q, DS_EINVAL, "both");
    q.prompt = NULL, q.prompt_ids = bad, q.n_prompt_ids = 2;
    expect_reject(s, &q, DS_ERANGE, "prompt_ids[1]");
    q.prompt_ids = ids, q.n_prompt_ids = 3;
    q.max_tokens = 0;
    expect_reject(s, &q, DS_EINVAL, "max_tokens");
    q.max_tokens = 254;
    expect_reject(s, &q, DS_ERANGE, "context");
    q.max_tokens = 4;
    q.sampling.temperature = -1;
    expect_reject(s, &q, DS_EINVAL, "temperature");
    q.sampling.temperature = 0, q.sampling.top_p = 0;
    expect_reject(s, &q, DS_EINVAL, "top_p");
    /* enough digits that the value shown is the value refused (the next float above 1) */
    q.sampling.top_p = 1.0000001f;
    expect_reject(s, &q, DS_EINVAL, "top_p = 1.00000012: must be in (0, 1]");
    q.sampling.top_p = 1, q.sampling.temperature = -0.1f;
    expect_reject(s, &q, DS_EINVAL, "temperature = -0.100000001: must be >= 0");
    q.sampling.temperature = 0;
    q.sampling.top_p = 1, q.sampling.top_k = -2;
    expect_reject(s, &q, DS_EINVAL, "top_k");
    q.sampling.top_k = 0;
    const char *stops[17];
    for (int i = 0; i < 17; i++)
        stops[i] = "x";
    q.stop = stops, q.n_stop = 17;
    expect_reject(s, &q, DS_EINVAL, "stop");
    q.n_stop = 1, stops[0] = "";
    expect_reject(s, &q, DS_EINVAL, "stop");
    q.n_stop = 0;
    int32_t stop_ids[1] = {-1};
    q.stop_ids = stop_ids, q.n_stop_ids = 1;
    expect_reject(s, &q, DS_ERANGE, "stop_token_ids[0]");
    q.n_stop_ids = 0;
    /* a valid request still runs after all that */
    completion c;
    serving_stream *st = submit(s, &q);
    run_until_idle(s);
    collect(st, &c);
    assert_true(c.finish == SERVING_LENGTH || c.finish == SERVING_STOP);
    serving_destroy(s);
    /* a pool of 5 full blocks (80 tokens) cannot hold 3 + 100 tokens; open pool 4 + 64/16 + 1 */
    serving *small = make_serving(g_tiny, 16, DQ_FP16, (9 + 5) * 4096, 4);
    q.max_tokens = 100;
    expect_reject(small, &q, DS_ERANGE, "kv_memory_bytes");
    serving_destroy(small);
}

/* serving_create refuses bad options naming the serving_options field, not a CLI flag. */
static void expect_create_error(const serving_options *o, const char *field) {
    serving *s = NULL;
    char msg[512] = "";
    ds_status got = serving_create(o, &s, msg, sizeof msg);
    if (got != DS_EINVAL || !strstr(msg, field) || strstr(msg, "--"))
        fail_msg("want DS_EINVAL naming '%s' (no flag), got %d: %s", field, got, msg);
    assert_null(s);
}

static void test_create_errors_name_options(void **state) {
    (void)state;
    serving_options o;
    serving_options_default(&o);
    o.model_path = g_tiny, o.random_weights = "tiny";
    expect_create_error(&o, "model_path, random_weights: give exactly one");
    o.random_weights = NULL, o.kv_bits = 3;
    expect_create_error(&o, "kv_bits = 3");
    o.kv_bits = 16, o.tensor_parallel = 2;
    expect_create_error(&o, "tensor_parallel = 2, n_nodes = 1");
    o.tensor_parallel = 1, o.max_waiting = 0;
    expect_create_error(&o, "max_waiting = 0");
    /* the evaluator's presets: pages the serving attention does not read (DS_EUNSUPPORTED) */
    const struct {
        dq_method method;
        const char *want;
    } presets[] = {{DQ_DECOQUANT_HV, "kv_method decoquant-hv: its key pages (with outliers groups)"
                                     " are read by decoserve-eval only"},
                   {DQ_HADAMARD_RTN, "kv_method hadamard-rtn: its key pages (Hadamard-rotated "}};
    for (int i = 0; i < 2; i++) {
        o.max_waiting = 64, o.kv_bits = 4, o.kv_method = presets[i].method;
        serving *s = NULL;
        char msg[512] = "";
        const ds_status got = serving_create(&o, &s, msg, sizeof msg);
        if (got != DS_EUNSUPPORTED || !strstr(msg, presets[i].want))
            fail_msg("want DS_EUNSUPPORTED with '%s', got %d: %s", presets[i].want, got, msg);
        assert_null(s);
    }
}

/* Automatic sizing (kv_memory_bytes 0: 1 GiB on the CPU): info reports the pools as sized. */
static void test_info_automatic_kv_memory(void **state) {
    (void)state;
    serving *s = make_serving(g_tiny, 16, DQ_FP16, 0, 4);
    serving_info info;
    serving_stats stats;
    serving_get_info(s, &info);
    serving_get_stats(s, &stats);
    assert_true(info.kv_memory_bytes > (int64_t)1 << 29);
    assert_true(info.kv_memory_bytes <= (int64_t)1 << 30);
    assert_int_equal(info.kv_memory_bytes, stats.kv_memory_bytes);
    serving_destroy(s);
}

/* Queue limit: submit answers DS_EBUSY once max_waiting requests wait. */
static void test_queue_full(void **state) {
    (void)state;
    serving_options o;
    serving_options_default(&o);
    o.model_path = g_tiny;
    o.max_waiting = 3;
    o.kv_memory_bytes = 16 << 20;
    serving *s;
    char msg[256];
    assert_int_equal(serving_create(&o, &s, msg, sizeof msg), DS_OK);
    int32_t ids[2] = {5, 6};
    serving_request q;
    serving_request_default(&q);
    q.prompt_ids = ids, q.n_prompt_ids = 2;
    serving_stream *st[4];
    for (int i = 0; i < 3; i++)
        st[i] = submit(s, &q);
    expect_reject(s, &q, DS_EBUSY, "max_waiting");
    /* a cancelled request gives its place back at once, before any step runs */
    serving_stream_cancel(st[1]);
    st[3] = submit(s, &q);
    expect_reject(s, &q, DS_EBUSY, "3 requests already waiting");
    /* once they run, they no longer wait */
    int worked;
    assert_int_equal(serving_step(s, &worked, msg, sizeof msg), DS_OK);
    serving_stream *more = submit(s, &q);
    run_until_idle(s);
    completion c;
    collect(more, &c);
    collect(st[1], &c);
    assert_int_equal(c.finish, SERVING_CANCELLED);
    for (int i = 0; i < 4; i++) {
        if (i == 1) continue;
        collect(st[i], &c);
        assert_int_not_equal(c.finish, SERVING_CANCELLED);
    }
    blocks_all_free(s);
    serving_destroy(s);
}

/* The engine thread: streams read from this thread while it steps; shutdown without drain ends
 * every open stream with CANCELLED and refuses new work. */
static void test_engine_thread_and_shutdown(void **state) {
    (void)state;
    serving *s = make_serving(g_tiny, 4, DQ_KIVI, 64 << 20, 4);
    char msg[256];
    assert_int_equal(serving_start(s, msg, sizeof msg), DS_OK);
    assert_true(serving_ready(s));
    int32_t ids[4] = {1, 2, 3, 4};
    serving_request q;
    serving_request_default(&q);
    q.prompt_ids = ids, q.n_prompt_ids = 4, q.max_tokens = 8, q.ignore_eos = 1;
    serving_stream *a = submit(s, &q);
    serving_output out = {0};
    int n = 0;
    serving_finish fin = SERVING_RUNNING;
    while (!fin && serving_stream_wait(a, &out, 10.0)) {
        n += out.n_token_ids;
        fin = out.finish;
    }
    assert_int_equal(fin, SERVING_LENGTH);
    assert_int_equal(n, 8);
    assert_true(out.ttft_s >= 0);
    serving_stream_release(a);
    q.max_tokens = 200;
    serving_stream *b[8];
    for (int i = 0; i < 8; i++)
        b[i] = submit(s, &q);
    serving_shutdown(s, 0);
    assert_false(serving_ready(s));
    serving_stream *late;
    assert_int_equal(serving_submit(s, &q, NULL, NULL, &late, msg, sizeof msg), DS_EUNAVAILABLE);
    for (int i = 0; i < 8; i++) {
        completion c;
        collect(b[i], &c);
        assert_true(c.finish == SERVING_CANCELLED || c.finish == SERVING_LENGTH);
    }
    serving_output_free(&out);
    blocks_all_free(s);
    serving_destroy(s);
}

/* A device that dies mid-run (a tensor-parallel rank gone: the backend answers
 * DS_EUNAVAILABLE): every running and queued request ends with SERVING_UNAVAILABLE and the
 * reason, the engine stops being ready, and later submits are refused with that reason — no
 * hang, no lost request, no leaked block. */
typedef struct dying_backend {
    engine_backend inner;
    int steps_left; /* forwards that still work; below 0 the device counts as failed */
} dying_backend;

typedef struct dying_ctx {
    int steps;
    dying_backend *made;
} dying_ctx;

static ds_status dying_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                               char *msg, size_t msg_len) {
    dying_backend *d = impl;
    if (d->steps_left-- <= 0)
        return ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                       "tensor-parallel rank 1: waiting for the step: timed out");
    return d->inner.forward(d->inner.impl, seqs, n_seqs, logits, msg, msg_len);
}

static const char *dying_failure(void *impl) {
    dying_backend *d = impl;
    return d->steps_left < 0 ? "tensor-parallel rank 1: keep-alive: timed out" : NULL;
}

static void dying_destroy(void *impl) {
    dying_backend *d = impl;
    d->inner.destroy(d->inner.impl);
    free(d);
}

static ds_status wrap_dying(void *ctx, engine_backend *b, char *msg, size_t msg_len) {
    dying_backend *d = malloc(sizeof *d);
    if (!d) return ds_fail(msg, msg_len, DS_ENOMEM, "out of memory");
    *d = (dying_backend){.inner = *b, .steps_left = ((dying_ctx *)ctx)->steps};
    *b = (engine_backend){.impl = d,
                          .device = d->inner.device,
                          .forward = dying_forward,
                          .destroy = dying_destroy,
                          .failure = dying_failure};
    ((dying_ctx *)ctx)->made = d;
    return DS_OK;
}

static void test_device_failure(void **state) {
    (void)state;
    serving_options o;
    serving_options_default(&o);
    o.model_path = g_tiny;
    o.kv_memory_bytes = 32 << 20;
    o.max_seqs = 2; /* two run, two wait in the queue */
    o.max_batched_tokens = 64;
    o.n_threads = 2;
    dying_ctx ctx = {.steps = 5};
    o.wrap_backend = wrap_dying, o.wrap_ctx = &ctx;
    serving *s;
    char msg[256];
    assert_int_equal(serving_create(&o, &s, msg, sizeof msg), DS_OK);
    int32_t ids[4] = {1, 2, 3, 4};
    serving_request q;
    serving_request_default(&q);
    q.prompt_ids = ids, q.n_prompt_ids = 4, q.max_tokens = 100, q.ignore_eos = 1;
    serving_stream *st[4];
    for (int i = 0; i < 4; i++) /* all queued before the first step */
        st[i] = submit(s, &q);
    assert_int_equal(serving_start(s, msg, sizeof msg), DS_OK);
    serving_output out = {0};
    for (int i = 0; i < 4; i++) {
        serving_finish fin = SERVING_RUNNING;
        int n = 0;
        while (!fin && serving_stream_wait(st[i], &out, 30.0)) {
            n += out.n_token_ids;
            fin = out.finish;
        }
        assert_int_equal(fin, SERVING_UNAVAILABLE);
        assert_non_null(strstr(out.error, "rank 1: waiting for the step: timed out"));
        assert_true(n <= 5); /* one token a step, and it died after 5 */
        serving_stream_release(st[i]);
    }
    serving_output_free(&out);
    assert_false(serving_ready(s));
    serving_stream *late;
    assert_int_equal(serving_submit(s, &q, NULL, NULL, &late, msg, sizeof msg), DS_EUNAVAILABLE);
    assert_non_null(strstr(msg, "device failed"));
    assert_non_null(strstr(msg, "timed out"));
    serving_shutdown(s, 0); /* joins the engine thread: its last stats snapshot is taken */
    serving_stats stats;
    serving_get_stats(s, &stats);
    assert_int_equal(stats.requests_failed, 4);
    blocks_all_free(s);
    serving_destroy(s);
}

/* A device that fails while the engine is idle (node 0's keep-alive noticed a dead peer): not
 * ready, so health says NOT_SERVING, and submits are refused with the reason before any step. */
static void test_idle_device_failure(void **state) {
    (void)state;
    serving_options o;
    serving_options_default(&o);
    o.model_path = g_tiny;
    o.kv_memory_bytes = 16 << 20;
    dying_ctx ctx = {.steps = 1000};
    o.wrap_backend = wrap_dying, o.wrap_ctx = &ctx;
    serving *s;
    char msg[256];
    assert_int_equal(serving_create(&o, &s, msg, sizeof msg), DS_OK);
    assert_int_equal(serving_start(s, msg, sizeof msg), DS_OK);
    assert_true(serving_ready(s));
    ctx.made->steps_left = -1;
    assert_false(serving_ready(s));
    int32_t ids[2] = {1, 2};
    serving_request q;
    serving_request_default(&q);
    q.prompt_ids = ids, q.n_prompt_ids = 2;
    serving_stream *st;
    assert_int_equal(serving_submit(s, &q, NULL, NULL, &st, msg, sizeof msg), DS_EUNAVAILABLE);
    assert_non_null(strstr(msg, "keep-alive: timed out"));
    serving_destroy(s);
}

static int make_tiny(void **state) {
    (void)state;
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(g_tiny, sizeof g_tiny, "%s/serving_tiny.gguf", tmp ? tmp : "/tmp");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "'%s' --out '%s' --shape tiny --seed 5 --type f32 >/dev/null 2>&1",
             g_mkmodel, g_tiny);
    return system(cmd) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: serving_test PATH/TO/decoserve-mkmodel\n");
        return 2;
    }
    g_mkmodel = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_equals_alone_tiny),
        cmocka_unit_test(test_preemption_changes_nothing),
        cmocka_unit_test(test_batch_equals_alone_real),
        cmocka_unit_test(test_cancel_and_pools_refill),
        cmocka_unit_test(test_async_scheduling_changes_nothing),
        cmocka_unit_test(test_bad_requests),
        cmocka_unit_test(test_create_errors_name_options),
        cmocka_unit_test(test_queue_full),
        cmocka_unit_test(test_info_automatic_kv_memory),
        cmocka_unit_test(test_engine_thread_and_shutdown),
        cmocka_unit_test(test_device_failure),
        cmocka_unit_test(test_idle_device_failure),
    };
    return cmocka_run_group_tests(tests, make_tiny, NULL);
}
