/* llama_model_test — the correctness anchor of the CPU forward pass: the real SmolLM2 GGUF
 * (DECOSERVE_MODEL), three prompts replayed as token ids from tests/fixtures/smollm2_logits.txt
 * (written by tools/reference_logits.py with PyTorch transformers, fp32), prefill + 64 greedy
 * steps with our own argmax. fp16 KV: recorded logits within tolerance and all greedy tokens
 * equal to HF's. 8-bit DecoQuant KV: agreement is reported, with only a loose sanity bound. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/llama.h"
#include "engine/loader/llama_gguf.h"
#include "engine/test_model.h"

#define FIXTURE    "tests/fixtures/smollm2_logits.txt"
#define N_PROMPTS  3
#define N_GEN      64
#define MAX_PROMPT 256
#define MAX_STEPS  8
#define N_PAIRS    40

/* Absolute logit tolerance against HF, fp16 KV; logits span about [-20, 35]. Our K/V are stored
 * as fp16, HF's as fp32, and fp16 rounding turns fp32 noise into ~1e-2 logit noise: HF itself,
 * with K/V rounded to fp16, differs by up to 8e-3 between fp32 and fp64 compute (2e-5 with fp32
 * K/V). We see 5e-3 .. 1.1e-2 depending on the build (-O2 vs ASan). 3e-2 is 1e-3 of the logit
 * scale; a real bug (RoPE pairing, eps, a transposed weight) moves logits by whole units. */
#define LOGIT_TOL 3e-2

typedef struct ref_step {
    int step;
    double mean, max;
    int top_id[N_PAIRS], rand_id[N_PAIRS];
    double top_val[N_PAIRS], rand_val[N_PAIRS];
} ref_step;

typedef struct ref_prompt {
    int n_prompt;
    int32_t prompt[MAX_PROMPT];
    int32_t greedy[N_GEN];
    double margin[N_GEN]; /* HF's top-1 minus top-2 logit per step */
    ref_step steps[MAX_STEPS];
    int n_steps;
} ref_prompt;

static ref_prompt g_ref[N_PROMPTS];
static llama_model g_model;
static int g_have_model;

/* ---- fixture ----------------------------------------------------------------------------------
 */

static ref_step *step_of(ref_prompt *p, int step) {
    for (int i = 0; i < p->n_steps; i++)
        if (p->steps[i].step == step) return &p->steps[i];
    if (p->n_steps == MAX_STEPS) return NULL;
    ref_step *s = &p->steps[p->n_steps++];
    memset(s, 0, sizeof *s);
    s->step = step;
    return s;
}

/* Parses "id:value" pairs. Returns 0 on success. */
static int parse_pairs(char **cur, int n, int *ids, double *vals) {
    for (int i = 0; i < n; i++) {
        char *end;
        long id = strtol(*cur, &end, 10);
        if (end == *cur || *end != ':') return -1;
        *cur = end + 1;
        vals[i] = strtod(*cur, &end);
        if (end == *cur) return -1;
        *cur = end;
        ids[i] = (int)id;
    }
    return 0;
}

static int parse_ints(char **cur, int n, int32_t *out) {
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = (int32_t)strtol(*cur, &end, 10);
        if (end == *cur) return -1;
        *cur = end;
    }
    return 0;
}

static int parse_doubles(char **cur, int n, double *out) {
    for (int i = 0; i < n; i++) {
        char *end;
        out[i] = strtod(*cur, &end);
        if (end == *cur) return -1;
        *cur = end;
    }
    return 0;
}

/* Reads the whole fixture into g_ref; fails the test naming the line on any malformed record. */
static void load_fixture(void) {
    FILE *fp = fopen(FIXTURE, "r");
    if (!fp) fail_msg("%s: cannot open (run from the workspace or runfiles root)", FIXTURE);
    memset(g_ref, 0, sizeof g_ref);
    char *line = NULL;
    size_t cap = 0;
    int line_no = 0, seen_prompt = 0, seen_greedy = 0;
    while (getline(&line, &cap, fp) > 0) {
        line_no++;
        if (line[0] == '#' || line[0] == '\n') continue;
        char kind[16];
        int p, a, consumed;
        if (sscanf(line, "%15s %d %d%n", kind, &p, &a, &consumed) != 3 || p < 0 || p >= N_PROMPTS)
            fail_msg("%s:%d: malformed record", FIXTURE, line_no);
        char *cur = line + consumed;
        ref_prompt *rp = &g_ref[p];
        int bad;
        if (strcmp(kind, "prompt") == 0) {
            bad = a <= 0 || a > MAX_PROMPT || parse_ints(&cur, a, rp->prompt);
            rp->n_prompt = a;
            seen_prompt++;
        } else if (strcmp(kind, "greedy") == 0) {
            bad = a != N_GEN || parse_ints(&cur, a, rp->greedy);
            seen_greedy++;
        } else if (strcmp(kind, "margin") == 0) {
            bad = a != N_GEN || parse_doubles(&cur, a, rp->margin);
        } else if (strcmp(kind, "stats") == 0 || strcmp(kind, "top") == 0 ||
                   strcmp(kind, "rand") == 0) {
            ref_step *s = a >= 0 && a < N_GEN ? step_of(rp, a) : NULL;
            int k = 0;
            bad = !s;
            if (!bad && kind[0] == 's') {
                double v[2] = {0, 0};
                bad = parse_doubles(&cur, 2, v);
                s->mean = v[0], s->max = v[1];
            } else if (!bad) {
                int top = kind[0] == 't';
                bad = sscanf(cur, "%d%n", &k, &consumed) != 1 || k != N_PAIRS;
                cur += bad ? 0 : consumed;
                bad = bad || parse_pairs(&cur, k, top ? s->top_id : s->rand_id,
                                         top ? s->top_val : s->rand_val);
            }
        } else {
            bad = 1;
        }
        if (bad) fail_msg("%s:%d: malformed %s record", FIXTURE, line_no, kind);
    }
    free(line);
    fclose(fp);
    assert_int_equal(seen_prompt, N_PROMPTS);
    assert_int_equal(seen_greedy, N_PROMPTS);
    for (int p = 0; p < N_PROMPTS; p++)
        assert_int_equal(g_ref[p].n_steps, 4);
}

/* ---- running our engine -----------------------------------------------------------------------
 */

typedef struct run_result {
    int32_t tokens[N_GEN];
    double our_margin[N_GEN];
    double max_diff;             /* over every recorded value of every recorded step */
    int worst_step, worst_id;    /* where max_diff was seen (id -1: mean, -2: max) */
    double step_diff[MAX_STEPS]; /* max diff per recorded step, in fixture order */
} run_result;

static void note(run_result *r, double diff, int k, int step, int id) {
    r->step_diff[k] = fmax(r->step_diff[k], diff);
    if (diff > r->max_diff) r->max_diff = diff, r->worst_step = step, r->worst_id = id;
}

/* Compares recorded step k (fixture order) against our logits. */
static void compare_step(const ref_step *s, int k, const float *logits, int vocab, run_result *r) {
    double sum = 0, mx = -INFINITY;
    for (int i = 0; i < vocab; i++)
        sum += logits[i], mx = fmax(mx, logits[i]);
    note(r, fabs(sum / vocab - s->mean), k, s->step, -1);
    note(r, fabs(mx - s->max), k, s->step, -2);
    for (int i = 0; i < N_PAIRS; i++) {
        note(r, fabs(logits[s->top_id[i]] - s->top_val[i]), k, s->step, s->top_id[i]);
        note(r, fabs(logits[s->rand_id[i]] - s->rand_val[i]), k, s->step, s->rand_id[i]);
    }
}

static void print_step_diffs(const ref_prompt *rp, const run_result *r) {
    char line[256];
    int len = 0;
    for (int k = 0; k < rp->n_steps && len < (int)sizeof line - 32; k++)
        len += snprintf(line + len, sizeof line - len, " step %d: %.3g", rp->steps[k].step,
                        r->step_diff[k]);
    print_message("  max |logit - HF| per step:%s\n", line);
}

static int argmax(const float *x, int n, double *margin) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    double second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best) second = fmax(second, x[i]);
    *margin = x[best] - second;
    return best;
}

/* Prefill + N_GEN greedy steps of prompt p with our argmax, comparing every recorded step. */
static void run_prompt(const ref_prompt *rp, dq_config codec, run_result *r) {
    const llama_config *c = &g_model.config;
    char msg[256];
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = 32,
                          .key_codec = codec,
                          .value_codec = codec,
                          .n_open_blocks = 8,
                          .n_full_blocks = (200 + 31) / 32};
    kv_cache *cache;
    llama_engine *engine;
    if (kv_cache_create(&kc, &cache, msg, sizeof msg) != DS_OK)
        fail_msg("kv_cache_create: %s", msg);
    llama_engine_options opts = {.max_step_tokens = MAX_PROMPT, .weight_type = QM_F32};
    if (llama_engine_create(&g_model, cache, &opts, &engine, msg, sizeof msg) != DS_OK)
        fail_msg("llama_engine_create: %s", msg);
    float *logits = malloc((size_t)c->vocab_size * sizeof *logits);
    assert_non_null(logits);
    memset(r, 0, sizeof *r);
    kv_seq seq;
    kv_seq_init(&seq);
    int32_t next = 0;
    for (int step = 0; step < N_GEN; step++) {
        llama_step_seq s = {.kv = &seq,
                            .tokens = step == 0 ? rp->prompt : &next,
                            .n_tokens = step == 0 ? rp->n_prompt : 1};
        if (llama_engine_step(engine, &s, 1, logits, msg, sizeof msg) != DS_OK)
            fail_msg("step %d: %s", step, msg);
        for (int i = 0; i < rp->n_steps; i++)
            if (rp->steps[i].step == step) compare_step(&rp->steps[i], i, logits, c->vocab_size, r);
        next = argmax(logits, c->vocab_size, &r->our_margin[step]);
        r->tokens[step] = next;
    }
    kv_seq_release(cache, &seq);
    free(logits);
    llama_engine_destroy(engine);
    kv_cache_destroy(cache);
}

/* Steps where our greedy token equals HF's, and the first that differs (-1: none). */
static int count_matches(const ref_prompt *rp, const run_result *r, int *first_diff) {
    int n = 0;
    *first_diff = -1;
    for (int i = 0; i < N_GEN; i++) {
        if (r->tokens[i] == rp->greedy[i])
            n++;
        else if (*first_diff < 0)
            *first_diff = i;
    }
    return n;
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static int setup(void **state) {
    (void)state;
    const char *path = getenv("DECOSERVE_MODEL");
    if (!path || !*path) return 0;
    char msg[512];
    if (llama_model_load_gguf(path, &g_model, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "llama_model_test: %s\n", msg);
        return -1;
    }
    g_have_model = 1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    llama_model_free(&g_model);
    return 0;
}

static void require_model(void) {
    test_model_path("the SmolLM2 reference test");
    assert_true(g_have_model);
    assert_int_equal(g_model.config.vocab_size, 49152);
    load_fixture();
}

static void test_fp16_kv_matches_transformers(void **state) {
    (void)state;
    require_model();
    dq_config fp16 = {.method = DQ_FP16, .bits = 16};
    int failures = 0;
    for (int p = 0; p < N_PROMPTS; p++) {
        const ref_prompt *rp = &g_ref[p];
        run_result r;
        run_prompt(rp, fp16, &r);
        int first_diff, matches = count_matches(rp, &r, &first_diff);
        print_message("fp16 kv, prompt %d (%d tokens): max |logit - HF| = %.3g (step %d, id %d), "
                      "greedy %d/%d equal\n",
                      p, rp->n_prompt, r.max_diff, r.worst_step, r.worst_id, matches, N_GEN);
        print_step_diffs(rp, &r);
        int tight = 0;
        for (int i = 1; i < N_GEN; i++)
            if (rp->margin[i] < rp->margin[tight]) tight = i;
        print_message("  closest greedy call: step %d, top-2 margin HF %.4g, ours %.4g\n", tight,
                      rp->margin[tight], r.our_margin[tight]);
        if (r.max_diff > LOGIT_TOL) {
            print_message("  prompt %d: logit diff %.3g exceeds %.3g\n", p, r.max_diff, LOGIT_TOL);
            failures++;
        }
        if (first_diff >= 0) {
            print_message("  prompt %d: greedy diverges at step %d: ours %d, HF %d; HF top-2 "
                          "margin %.4g, ours %.4g\n",
                          p, first_diff, r.tokens[first_diff], rp->greedy[first_diff],
                          rp->margin[first_diff], r.our_margin[first_diff]);
            failures++;
        }
    }
    if (failures) fail_msg("%d mismatches against transformers (see above)", failures);
}

static void test_decoquant8_kv_tracks_transformers(void **state) {
    (void)state;
    require_model();
    dq_config dq8 = {.method = DQ_DECOQUANT, .bits = 8};
    int total = 0;
    for (int p = 0; p < N_PROMPTS; p++) {
        const ref_prompt *rp = &g_ref[p];
        run_result r;
        run_prompt(rp, dq8, &r);
        int first_diff, matches = count_matches(rp, &r, &first_diff);
        print_message("decoquant-8 kv, prompt %d: max |logit - HF| = %.3g (step %d), greedy "
                      "%d/%d equal, first difference at step %d\n",
                      p, r.max_diff, r.worst_step, matches, N_GEN, first_diff);
        print_step_diffs(rp, &r);
        /* Sanity only: 8-bit pages must not wreck the model (seen: <= 0.23, all tokens equal). */
        if (r.max_diff > 1.0)
            fail_msg("prompt %d: logit diff %.3g with 8-bit pages", p, r.max_diff);
        assert_int_equal(r.tokens[0], rp->greedy[0]);
        total += matches;
    }
    assert_true(total >= N_PROMPTS * N_GEN / 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_kv_matches_transformers),
        cmocka_unit_test(test_decoquant8_kv_tracks_transformers),
    };
    return cmocka_run_group_tests_name("llama_model", tests, setup, teardown);
}
