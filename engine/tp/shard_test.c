/* shard_test — the tensor-parallel split is exact: a CPU simulation of N ranks (each rank runs its
 * slices and KV heads, the row-parallel outputs are summed where the all-reduce goes) gives the
 * logits of the unsharded CPU engine (engine/llama.h), on the tiny synthetic shape for N = 1, 2. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/half.h"
#include "engine/llama.h"
#include "engine/loader/synthetic.h"
#include "engine/tp/shard.h"
#include "kernels/ops.h"

enum { MAX_RANKS = 2, MAX_TOKENS = 40 };

static llama_model g_model;

static int setup(void **state) {
    (void)state;
    char msg[200];
    if (synthetic_shape("tiny", &g_model.config, msg, sizeof msg) != DS_OK) return -1;
    if (llama_model_alloc(&g_model, msg, sizeof msg) != DS_OK) return -1;
    synthetic_fill_weights(&g_model, 7);
    /* N(0, 0.02) barely moves the residual stream in 2 layers; N(0, 0.1) makes every projection
     * (and so every misplaced slice) visible in the logits. */
    const llama_config *c = &g_model.config;
    const size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
                 kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff;
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &g_model.layers[l];
        struct {
            float *w;
            size_t n;
        } all[] = {{L->wq, q * d},      {L->wk, kv * d},   {L->wv, kv * d},    {L->wo, d * q},
                   {L->w_gate, ff * d}, {L->w_up, ff * d}, {L->w_down, d * ff}};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            for (size_t j = 0; j < all[i].n; j++)
                all[i].w[j] *= 5.0f;
    }
    return 0;
}
static int teardown(void **state) {
    (void)state;
    llama_model_free(&g_model);
    return 0;
}

/* y[o] (+)= Σ_i w[o][i] x[i]; w is [n_out][n_in] */
static void linear(float *y, const float *x, const float *w, int n_in, int n_out, int accumulate) {
    for (int o = 0; o < n_out; o++) {
        double acc = 0;
        for (int i = 0; i < n_in; i++)
            acc += (double)x[i] * w[(size_t)o * n_in + i];
        y[o] = (float)(accumulate ? y[o] + acc : acc);
    }
}
static void rope(float *x, int n_heads, int hd, int pos, float theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            const double a = pos * pow(theta, -2.0 * i / hd);
            float *p = x + (size_t)h * hd;
            const float x0 = p[i], x1 = p[i + hd / 2];
            p[i] = (float)(x0 * cos(a) - x1 * sin(a));
            p[i + hd / 2] = (float)(x1 * cos(a) + x0 * sin(a));
        }
}

/* The last token's logits of tokens[0..n) through n_ranks simulated ranks. Each rank attends with
 * its own query and KV heads (K/V rounded to fp16 as the cache stores them); `partial` holds the
 * sum of the ranks' wo (then w_down) outputs, which is what the all-reduce delivers to every
 * rank. skip_rank >= 0 leaves that rank out of the sums (a broken all-reduce, to show the test
 * can fail). */
static void tp_forward(const tp_shard *shards, int n_ranks, int skip_rank, const int32_t *tokens,
                       int n, float *logits) {
    const llama_config *c = &g_model.config;
    const int d = c->d_model, hd = c->head_dim, group = c->n_heads / c->n_kv_heads;
    const int qd = shards[0].dims.n_heads * hd, kvd = shards[0].dims.n_kv_heads * hd;
    const int ff = shards[0].dims.d_ff;
    float *x = calloc((size_t)n * d, sizeof(float)), *partial = calloc((size_t)n * d, 4);
    float *xn = malloc((size_t)d * 4), *Q = malloc((size_t)n * qd * 4);
    float *K = malloc((size_t)n * kvd * 4), *V = malloc((size_t)n * kvd * 4);
    float *att = malloc((size_t)qd * 4), *gate = malloc((size_t)ff * 4),
          *up = malloc((size_t)ff * 4);
    assert_true(x && partial && xn && Q && K && V && att && gate && up);
    for (int t = 0; t < n; t++)
        memcpy(x + (size_t)t * d, g_model.tok_embd + (size_t)tokens[t] * d, (size_t)d * 4);
    for (int l = 0; l < c->n_layers; l++) {
        memset(partial, 0, (size_t)n * d * 4);
        for (int r = 0; r < n_ranks; r++) {
            if (r == skip_rank) continue;
            const tp_layer_shard *S = &shards[r].layers[l];
            for (int t = 0; t < n; t++) {
                ops_rmsnorm_ref(xn, x + (size_t)t * d, S->attn_norm, 1, d, c->rms_eps);
                linear(Q + (size_t)t * qd, xn, S->wq, d, qd, 0);
                linear(K + (size_t)t * kvd, xn, S->wk, d, kvd, 0);
                linear(V + (size_t)t * kvd, xn, S->wv, d, kvd, 0);
                rope(Q + (size_t)t * qd, qd / hd, hd, t, c->rope_theta);
                rope(K + (size_t)t * kvd, kvd / hd, hd, t, c->rope_theta);
                for (int i = 0; i < kvd; i++) {
                    K[(size_t)t * kvd + i] = ds_round_half(K[(size_t)t * kvd + i]);
                    V[(size_t)t * kvd + i] = ds_round_half(V[(size_t)t * kvd + i]);
                }
            }
            for (int t = 0; t < n; t++) {
                for (int h = 0; h < qd / hd; h++) {
                    const int kh = h / group; /* local KV head: the group never straddles ranks */
                    double w[MAX_TOKENS], mx = -INFINITY, sum = 0;
                    for (int s = 0; s <= t; s++) {
                        double dot = 0;
                        for (int i = 0; i < hd; i++)
                            dot += (double)Q[(size_t)t * qd + h * hd + i] *
                                   K[(size_t)s * kvd + kh * hd + i];
                        w[s] = dot / sqrt((double)hd);
                        mx = w[s] > mx ? w[s] : mx;
                    }
                    for (int s = 0; s <= t; s++)
                        sum += (w[s] = exp(w[s] - mx));
                    for (int i = 0; i < hd; i++) {
                        double acc = 0;
                        for (int s = 0; s <= t; s++)
                            acc += w[s] * V[(size_t)s * kvd + kh * hd + i];
                        att[h * hd + i] = (float)(acc / sum);
                    }
                }
                linear(partial + (size_t)t * d, att, S->wo, qd, d, 1);
            }
        }
        for (size_t i = 0; i < (size_t)n * d; i++) /* the all-reduce after wo */
            x[i] += partial[i];
        memset(partial, 0, (size_t)n * d * 4);
        for (int r = 0; r < n_ranks; r++) {
            if (r == skip_rank) continue;
            const tp_layer_shard *S = &shards[r].layers[l];
            for (int t = 0; t < n; t++) {
                ops_rmsnorm_ref(xn, x + (size_t)t * d, S->ffn_norm, 1, d, c->rms_eps);
                linear(gate, xn, S->w_gate, d, ff, 0);
                linear(up, xn, S->w_up, d, ff, 0);
                for (int i = 0; i < ff; i++)
                    gate[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
                linear(partial + (size_t)t * d, gate, S->w_down, ff, d, 1);
            }
        }
        for (size_t i = 0; i < (size_t)n * d; i++) /* the all-reduce after w_down */
            x[i] += partial[i];
    }
    /* the LM head is replicated: any rank's copy gives the logits */
    ops_rmsnorm_ref(xn, x + (size_t)(n - 1) * d, g_model.output_norm, 1, d, c->rms_eps);
    linear(logits, xn, shards[0].model->output, d, c->vocab_size, 0);
    free(x), free(partial), free(xn), free(Q), free(K), free(V), free(att), free(gate), free(up);
}

/* The unsharded CPU engine's last-token logits, fp16 pages (what the simulation rounds to). */
static void engine_forward(const int32_t *tokens, int n, float *logits) {
    const llama_config *c = &g_model.config;
    char msg[200];
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = 16,
                          .n_open_blocks = 4,
                          .n_full_blocks = 4};
    kc.key_codec = (dq_config){.method = DQ_FP16, .bits = 16};
    kc.value_codec = kc.key_codec;
    kv_cache *cache;
    llama_engine *engine;
    assert_int_equal(kv_cache_create(&kc, &cache, msg, sizeof msg), DS_OK);
    llama_engine_options opts = {.max_step_tokens = MAX_TOKENS, .weight_type = QM_F32};
    assert_int_equal(llama_engine_create(&g_model, cache, &opts, &engine, msg, sizeof msg), DS_OK);
    kv_seq seq;
    kv_seq_init(&seq);
    llama_step_seq s = {.kv = &seq, .tokens = tokens, .n_tokens = n};
    assert_int_equal(llama_engine_step(engine, &s, 1, logits, msg, sizeof msg), DS_OK);
    kv_seq_release(cache, &seq);
    llama_engine_destroy(engine);
    kv_cache_destroy(cache);
}

static double max_diff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* TP = 1 and TP = 2 reproduce the engine's logits; leaving a rank out of the sums does not. */
static void test_sharded_forward_matches_engine(void **state) {
    (void)state;
    const int vocab = g_model.config.vocab_size;
    int32_t tokens[MAX_TOKENS];
    for (int i = 0; i < MAX_TOKENS; i++)
        tokens[i] = (int32_t)((i * 37 + 11) % vocab);
    float *ref = malloc((size_t)vocab * 4), *tp1 = malloc((size_t)vocab * 4);
    float *tp2 = malloc((size_t)vocab * 4), *broken = malloc((size_t)vocab * 4);
    assert_true(ref && tp1 && tp2 && broken);
    char msg[200];
    tp_shard one, two[MAX_RANKS];
    assert_int_equal(tp_shard_create(&g_model, 0, 1, &one, msg, sizeof msg), DS_OK);
    for (int r = 0; r < 2; r++)
        assert_int_equal(tp_shard_create(&g_model, r, 2, &two[r], msg, sizeof msg), DS_OK);
    const int lengths[] = {1, 17, MAX_TOKENS};
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        const int n = lengths[li];
        engine_forward(tokens, n, ref);
        tp_forward(&one, 1, -1, tokens, n, tp1);
        tp_forward(two, 2, -1, tokens, n, tp2);
        tp_forward(two, 2, 1, tokens, n, broken);
        double scale = 0;
        for (int i = 0; i < vocab; i++)
            scale = fmax(scale, fabs((double)ref[i]));
        const double d1 = max_diff(ref, tp1, vocab), d2 = max_diff(ref, tp2, vocab);
        const double d12 = max_diff(tp1, tp2, vocab), dbroken = max_diff(ref, broken, vocab);
        print_message("%d tokens: max |logit| %.3f; engine vs TP=1 %.2e, vs TP=2 %.2e; TP=1 vs "
                      "TP=2 %.2e; without rank 1 %.2e\n",
                      n, scale, d1, d2, d12, dbroken);
        /* fp32 GEMMs vs double sums (seen < 4e-7); TP=1 vs 2 differ only in summation order */
        assert_true(d1 < 1e-4 && d2 < 1e-4);
        assert_true(d12 < 1e-5);
        assert_true(dbroken > 0.1 * scale);
    }
    tp_shard_destroy(&one);
    for (int r = 0; r < 2; r++)
        tp_shard_destroy(&two[r]);
    free(ref), free(tp1), free(tp2), free(broken);
}

/* TP = 1 is the model itself, and rank r's slices sit where the header says. */
static void test_slices(void **state) {
    (void)state;
    const llama_config *c = &g_model.config;
    const size_t d = (size_t)c->d_model, hd = (size_t)c->head_dim, ff = (size_t)c->d_ff;
    const size_t qd = (size_t)c->n_heads * hd;
    char msg[200];
    tp_shard one, rank1;
    assert_int_equal(tp_shard_create(&g_model, 0, 1, &one, msg, sizeof msg), DS_OK);
    assert_int_equal(tp_shard_create(&g_model, 1, 2, &rank1, msg, sizeof msg), DS_OK);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &g_model.layers[l];
        const tp_layer_shard *S = &one.layers[l], *R = &rank1.layers[l];
        assert_memory_equal(S->wq, L->wq, qd * d * 4);
        assert_memory_equal(S->wo, L->wo, d * qd * 4);
        assert_memory_equal(S->w_down, L->w_down, d * ff * 4);
        assert_ptr_equal(S->attn_norm, L->attn_norm);
        /* rank 1 of 2: second half of the heads and of d_ff */
        assert_memory_equal(R->wq, L->wq + qd / 2 * d, qd / 2 * d * 4);
        assert_memory_equal(R->w_up, L->w_up + ff / 2 * d, ff / 2 * d * 4);
        for (size_t i = 0; i < d; i++) {
            assert_memory_equal(R->wo + i * qd / 2, L->wo + i * qd + qd / 2, qd / 2 * 4);
            assert_memory_equal(R->w_down + i * ff / 2, L->w_down + i * ff + ff / 2, ff / 2 * 4);
        }
    }
    assert_int_equal(rank1.dims.n_heads, c->n_heads / 2);
    assert_int_equal(rank1.dims.kv_head0, c->n_kv_heads / 2);
    assert_int_equal(rank1.dims.ff0, c->d_ff / 2);
    tp_shard_destroy(&one);
    tp_shard_destroy(&rank1);
}

static void test_errors(void **state) {
    (void)state;
    char msg[200];
    tp_shard shard;
    /* tiny has 2 KV heads: 3 ranks cannot hold whole heads */
    assert_int_equal(tp_shard_create(&g_model, 0, 3, &shard, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "tensor-parallel size 3"));
    assert_non_null(strstr(msg, "n_kv_heads = 2"));
    assert_null(shard.layers);
    assert_int_equal(tp_shard_create(&g_model, 2, 2, &shard, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "rank 2"));
    assert_int_equal(tp_shard_create(&g_model, 0, 0, &shard, msg, sizeof msg), DS_EINVAL);
    llama_config c = g_model.config;
    c.d_ff = 130;
    tp_dims dims;
    assert_int_equal(tp_dims_make(&c, 0, 4, &dims, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "n_kv_heads = 2"));
    assert_int_equal(tp_dims_make(&c, 0, 2, &dims, msg, sizeof msg), DS_OK);
    c.d_ff = 129;
    assert_int_equal(tp_dims_make(&c, 1, 2, &dims, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "d_ff = 129"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sharded_forward_matches_engine),
        cmocka_unit_test(test_slices),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
