/* llama_test — the CPU forward pass over the paged cache: against a dense reference written here,
 * independent of chunking and batching (also with compressed pages), with fp32, Q8_0 and the
 * file's own Q4 weights, and clear errors. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/half.h"
#include "common/rng.h"
#include "engine/llama.h"
#include "engine/loader/gguf.h"
#include "engine/loader/gguf_writer.h"

static ds_rng g_rng = {42};

enum { VOCAB = 101, N_TOKENS = 150 };

static llama_model g_model;
static qm_type g_weight_type = QM_F32;

static void fill(float *p, size_t n, float scale, float bias) {
    for (size_t i = 0; i < n; i++)
        p[i] = bias + scale * ds_rng_gauss(&g_rng);
}

static int setup(void **state) {
    (void)state;
    llama_config c = {.n_layers = 2,
                      .d_model = 64,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .head_dim = 16,
                      .d_ff = 96,
                      .vocab_size = VOCAB,
                      .context_length = 200,
                      .rms_eps = 1e-5f,
                      .rope_theta = 10000.0f,
                      .tied_embeddings = 1};
    g_model.config = c;
    if (llama_model_alloc(&g_model, NULL, 0) != DS_OK) return -1;
    fill(g_model.tok_embd, (size_t)c.vocab_size * c.d_model, 0.5f, 0);
    fill(g_model.output_norm, (size_t)c.d_model, 0.1f, 1);
    for (int l = 0; l < c.n_layers; l++) {
        llama_layer *L = &g_model.layers[l];
        size_t d = (size_t)c.d_model, q = (size_t)c.n_heads * c.head_dim,
               kv = (size_t)c.n_kv_heads * c.head_dim, ff = (size_t)c.d_ff;
        fill(L->attn_norm, d, 0.1f, 1), fill(L->ffn_norm, d, 0.1f, 1);
        fill(L->wq, q * d, 0.15f, 0), fill(L->wk, kv * d, 0.15f, 0), fill(L->wv, kv * d, 0.15f, 0);
        fill(L->wo, d * q, 0.1f, 0), fill(L->w_gate, ff * d, 0.1f, 0);
        fill(L->w_up, ff * d, 0.1f, 0), fill(L->w_down, d * ff, 0.1f, 0);
    }
    return 0;
}
static int teardown(void **state) {
    (void)state;
    llama_model_free(&g_model);
    return 0;
}

/* ---- dense reference: the textbook Llama forward, K/V rounded to fp16 as the cache stores them */

static void ref_rmsnorm(float *out, const float *x, const float *w, int d, float eps) {
    double ss = 0;
    for (int i = 0; i < d; i++)
        ss += (double)x[i] * x[i];
    float r = (float)(1.0 / sqrt(ss / d + eps));
    for (int i = 0; i < d; i++)
        out[i] = x[i] * r * w[i];
}
static void ref_linear(float *y, const float *x, const float *w, int in, int out) {
    for (int o = 0; o < out; o++) {
        double acc = 0;
        for (int i = 0; i < in; i++)
            acc += (double)x[i] * w[(size_t)o * in + i];
        y[o] = (float)acc;
    }
}
static void ref_rope(float *x, int n_heads, int hd, int pos, float theta) {
    for (int h = 0; h < n_heads; h++)
        for (int i = 0; i < hd / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / hd);
            float *p = x + h * hd;
            float x0 = p[i], x1 = p[i + hd / 2];
            p[i] = (float)(x0 * cos(a) - x1 * sin(a));
            p[i + hd / 2] = (float)(x1 * cos(a) + x0 * sin(a));
        }
}

/* Logits of the last position of tokens[0..n). */
static void ref_forward(const int32_t *tokens, int n, float *logits) {
    const llama_config *c = &g_model.config;
    int d = c->d_model, hd = c->head_dim, qd = c->n_heads * hd, kvd = c->n_kv_heads * hd;
    float *x = calloc((size_t)n * d, 4), *xn = calloc((size_t)d, 4), *q = calloc((size_t)qd, 4);
    float *K = calloc((size_t)n * kvd, 4), *V = calloc((size_t)n * kvd, 4);
    float *att = calloc((size_t)n * qd, 4), *tmp = calloc((size_t)c->d_ff * 2 + d, 4);
    float *Q = calloc((size_t)n * qd, 4);
    for (int t = 0; t < n; t++)
        memcpy(x + t * d, g_model.tok_embd + tokens[t] * d, (size_t)d * 4);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &g_model.layers[l];
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xn, x + t * d, L->attn_norm, d, c->rms_eps);
            ref_linear(Q + t * qd, xn, L->wq, d, qd);
            ref_linear(K + t * kvd, xn, L->wk, d, kvd);
            ref_linear(V + t * kvd, xn, L->wv, d, kvd);
            ref_rope(Q + t * qd, c->n_heads, hd, t, c->rope_theta);
            ref_rope(K + t * kvd, c->n_kv_heads, hd, t, c->rope_theta);
            for (int i = 0; i < kvd; i++) {
                K[t * kvd + i] = ds_round_half(K[t * kvd + i]);
                V[t * kvd + i] = ds_round_half(V[t * kvd + i]);
            }
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < c->n_heads; h++) {
                int kh = h / (c->n_heads / c->n_kv_heads);
                double w[256], mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += (double)Q[t * qd + h * hd + i] * K[s * kvd + kh * hd + i];
                    w[s] = dot / sqrt((double)hd);
                    mx = w[s] > mx ? w[s] : mx;
                }
                for (int s = 0; s <= t; s++)
                    sum += (w[s] = exp(w[s] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int s = 0; s <= t; s++)
                        acc += w[s] * V[s * kvd + kh * hd + i];
                    att[t * qd + h * hd + i] = (float)(acc / sum);
                }
            }
        for (int t = 0; t < n; t++) {
            ref_linear(tmp, att + t * qd, L->wo, qd, d);
            for (int i = 0; i < d; i++)
                x[t * d + i] += tmp[i];
            ref_rmsnorm(xn, x + t * d, L->ffn_norm, d, c->rms_eps);
            float *g = tmp, *u = tmp + c->d_ff;
            ref_linear(g, xn, L->w_gate, d, c->d_ff);
            ref_linear(u, xn, L->w_up, d, c->d_ff);
            for (int i = 0; i < c->d_ff; i++)
                g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
            ref_linear(xn, g, L->w_down, c->d_ff, d);
            for (int i = 0; i < d; i++)
                x[t * d + i] += xn[i];
        }
    }
    ref_rmsnorm(xn, x + (n - 1) * d, g_model.output_norm, d, c->rms_eps);
    ref_linear(logits, xn, g_model.output, d, c->vocab_size);
    free(x), free(xn), free(q), free(K), free(V), free(att), free(tmp), free(Q);
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

typedef struct rig {
    kv_cache *cache;
    llama_engine *engine;
} rig;

static rig rig_make(int bits, dq_method method, int block_size, int n_open, int n_full) {
    rig r;
    char msg[200];
    kv_cache_config kc = {.n_layers = 2,
                          .n_kv_heads = 2,
                          .head_dim = 16,
                          .block_size = block_size,
                          .n_open_blocks = n_open,
                          .n_full_blocks = n_full};
    kc.key_codec = (dq_config){.method = method, .bits = bits, .group_size = 16};
    kc.value_codec = kc.key_codec;
    assert_int_equal(kv_cache_create(&kc, &r.cache, msg, sizeof msg), DS_OK);
    llama_engine_options opts = {.max_step_tokens = 64, .weight_type = g_weight_type};
    assert_int_equal(llama_engine_create(&g_model, r.cache, &opts, &r.engine, msg, sizeof msg),
                     DS_OK);
    return r;
}
static void rig_free(rig *r) {
    llama_engine_destroy(r->engine);
    kv_cache_destroy(r->cache);
}

/* Runs tokens through one sequence in chunks of `chunk`, collecting every token's logits
 * [n][vocab] (LLAMA_LOGITS_ALL), so that a difference in any row shows, not only in the last. */
static void run_chunked(rig *r, const int32_t *tokens, int n, int chunk, float *logits) {
    kv_seq seq;
    kv_seq_init(&seq);
    char msg[200];
    for (int i = 0; i < n; i += chunk) {
        int len = n - i < chunk ? n - i : chunk;
        llama_step_seq s = {
            .kv = &seq, .tokens = tokens + i, .n_tokens = len, .logits = LLAMA_LOGITS_ALL};
        assert_int_equal(
            llama_engine_step(r->engine, &s, 1, logits + (size_t)i * VOCAB, msg, sizeof msg),
            DS_OK);
    }
    kv_seq_release(r->cache, &seq);
}

static double max_diff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static int32_t g_tokens[N_TOKENS];

static void make_tokens(void) {
    for (int i = 0; i < N_TOKENS; i++)
        g_tokens[i] = (int32_t)((i * 37 + 11) % VOCAB);
}

static float g_logits[3][N_TOKENS * VOCAB]; /* run_chunked outputs */

static void test_matches_dense_reference(void **state) {
    (void)state;
    make_tokens();
    float ref[VOCAB];
    int lengths[] = {1, 5, 16, 17, 40};
    for (int li = 0; li < 5; li++) {
        rig r = rig_make(16, DQ_FP16, 16, 8, 8);
        ref_forward(g_tokens, lengths[li], ref);
        run_chunked(&r, g_tokens, lengths[li], 7, g_logits[0]);
        double diff = max_diff(ref, g_logits[0] + (size_t)(lengths[li] - 1) * VOCAB, VOCAB);
        if (diff > 2e-3) fail_msg("length %d: max logit diff %g", lengths[li], diff);
        rig_free(&r);
    }
}

/* Whatever the chunking, the same tokens give the same logits, compressed pages included. */
static void test_chunking_invariant(void **state) {
    (void)state;
    make_tokens();
    struct {
        int bits;
        dq_method method;
    } codecs[] = {{16, DQ_FP16}, {4, DQ_DECOQUANT}, {2, DQ_DECOQUANT}, {4, DQ_KIVI}, {2, DQ_RTN}};
    enum { N = 100 };
    float fp16[VOCAB];
    float *whole = g_logits[0], *step = g_logits[1], *mixed = g_logits[2];
    const size_t last = (size_t)(N - 1) * VOCAB;
    for (size_t ci = 0; ci < sizeof codecs / sizeof codecs[0]; ci++) {
        rig r = rig_make(codecs[ci].bits, codecs[ci].method, 16, 8, 16);
        run_chunked(&r, g_tokens, N, 64, whole);
        run_chunked(&r, g_tokens, N, 1, step);
        run_chunked(&r, g_tokens, N, 13, mixed);
        if (ci == 0) memcpy(fp16, whole + last, sizeof fp16);
        double effect = max_diff(whole + last, fp16, VOCAB);
        double d1 = max_diff(whole + last, step + last, VOCAB);
        double d13 = max_diff(whole + last, mixed + last, VOCAB);
        double d1_all = max_diff(whole, step, N * VOCAB),
               d13_all = max_diff(whole, mixed, N * VOCAB);
        print_message("%s %d-bit: chunk 64 vs 1: %.2e, vs 13: %.2e (any token: %.2e, %.2e); "
                      "compression effect %.2e\n",
                      dq_method_name(codecs[ci].method), codecs[ci].bits, d1, d13, d1_all, d13_all,
                      effect);
        /* The same pages are written whatever the chunking; what differs is the GEMM summation
         * order for different row counts (1e-6), which can flip a rare rounding of a code. */
        if (g_weight_type != QM_F32) {
            /* Q8_0 / Q4 GEMMs sum each row in a fixed integer order and attention's GEMMs in a
             * fixed float order: bit-identical pages and logits, for every token */
            assert_true(d1_all == 0.0 && d13_all == 0.0);
        } else if (ci == 0) {
            assert_true(d1 < 1e-4 && d13 < 1e-4);
        } else {
            assert_true(effect > 1e-3);
            assert_true(d1 < 0.25 * effect && d13 < 0.25 * effect);
        }
        /* and every block is back in the pools */
        assert_int_equal(r.cache->n_open_free, 8);
        assert_int_equal(r.cache->n_full_free, 16);
        rig_free(&r);
    }
}

/* A batch of sequences, each in one step, gives each the logits it gets alone in chunks of 7, for
 * every token. */
static void test_batch_equals_single(void **state) {
    (void)state;
    make_tokens();
    rig r = rig_make(4, DQ_DECOQUANT, 16, 16, 32);
    int lens[3] = {37, 5, 20};
    const int32_t *starts[3] = {g_tokens, g_tokens + 50, g_tokens + 90};
    static float batch[(37 + 5 + 20) * VOCAB];
    for (int s = 0; s < 3; s++)
        run_chunked(&r, starts[s], lens[s], 7, g_logits[s]);
    kv_seq seqs[3];
    llama_step_seq step[3];
    char msg[200];
    for (int s = 0; s < 3; s++) {
        kv_seq_init(&seqs[s]);
        step[s] = (llama_step_seq){.kv = &seqs[s],
                                   .tokens = starts[s],
                                   .n_tokens = lens[s],
                                   .logits = s == 1 ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_ALL};
    }
    assert_int_equal(llama_step_logit_rows(step, 3), 37 + 1 + 20);
    assert_int_equal(llama_engine_step(r.engine, step, 3, batch, msg, sizeof msg), DS_OK);
    for (int s = 0, row = 0; s < 3; s++) {
        /* sequence 1 asks for its last token's logits only */
        const int from = s == 1 ? lens[s] - 1 : 0, n = lens[s] - from;
        const double diff =
            max_diff(g_logits[s] + (size_t)from * VOCAB, batch + (size_t)row * VOCAB, n * VOCAB);
        print_message("sequence %d: batch vs alone max logit diff %.2e\n", s, diff);
        assert_true(diff < 1e-2);
        if (g_weight_type != QM_F32) assert_true(diff == 0.0);
        row += n;
        kv_seq_release(r.cache, &seqs[s]);
    }
    rig_free(&r);
}

static void test_errors(void **state) {
    (void)state;
    make_tokens();
    rig r = rig_make(16, DQ_FP16, 16, 2, 1);
    kv_seq seq;
    kv_seq_init(&seq);
    float logits[101];
    char msg[200];
    int32_t bad[2] = {3, 101};
    llama_step_seq s = {.kv = &seq, .tokens = bad, .n_tokens = 2};
    assert_int_equal(llama_engine_step(r.engine, &s, 1, logits, msg, sizeof msg), DS_ERANGE);
    assert_non_null(strstr(msg, "101"));
    /* 40 tokens need 3 open blocks: only 2 exist -> DS_ENOMEM, nothing held. */
    s = (llama_step_seq){.kv = &seq, .tokens = g_tokens, .n_tokens = 40};
    assert_int_equal(llama_engine_step(r.engine, &s, 1, logits, msg, sizeof msg), DS_ENOMEM);
    assert_int_equal(r.cache->n_open_free, 2);
    assert_int_equal(r.cache->n_full_free, 1);
    /* a second sequence that does not fit rolls back the first one's reservation */
    kv_seq other;
    kv_seq_init(&other);
    llama_step_seq two[2] = {{.kv = &seq, .tokens = g_tokens, .n_tokens = 10},
                             {.kv = &other, .tokens = g_tokens, .n_tokens = 20}};
    assert_int_equal(llama_engine_step(r.engine, two, 2, logits, msg, sizeof msg), DS_ENOMEM);
    assert_int_equal(r.cache->n_open_free, 2);
    assert_int_equal(seq.n_reserved, 0);
    s = (llama_step_seq){.kv = &seq, .tokens = g_tokens, .n_tokens = 65};
    assert_int_equal(llama_engine_step(r.engine, &s, 1, logits, msg, sizeof msg), DS_EINVAL);
    kv_seq_release(r.cache, &seq);
    kv_seq_release(r.cache, &other);
    rig_free(&r);
}

/* Q8_0 weights: the same invariances, and logits close to the fp32 weights' ones. */
static void test_q8_weights(void **state) {
    make_tokens();
    const float *f32 = g_logits[0] + 39 * VOCAB, *q8 = g_logits[1] + 39 * VOCAB;
    rig a = rig_make(16, DQ_FP16, 16, 8, 8);
    run_chunked(&a, g_tokens, 40, 64, g_logits[0]);
    rig_free(&a);
    g_weight_type = QM_Q8_0;
    rig b = rig_make(16, DQ_FP16, 16, 8, 8);
    run_chunked(&b, g_tokens, 40, 64, g_logits[1]);
    rig_free(&b);
    double diff = max_diff(f32, q8, VOCAB), scale = 0;
    for (int i = 0; i < VOCAB; i++)
        scale = fmax(scale, fabs(f32[i]));
    print_message("q8_0 vs f32 weights: max logit diff %.3g (max |logit| %.3g)\n", diff, scale);
    assert_true(diff > 0.0 && diff < 0.05 * scale);
    test_chunking_invariant(state);
    test_batch_equals_single(state);
    g_weight_type = QM_F32;
}

/* g_model with every layer matrix rounded to 4 bits as a GGUF would store it (Q4_0 and Q4_1 in
 * turn): the fp32 weights are the blocks' values and the blocks are its file blocks; the tied
 * LM head keeps fp32 only (as SmolLM2's file, whose head is Q8_0). */
static void make_q4_model(llama_model *q4) {
    const llama_config *c = &g_model.config;
    q4->config = *c;
    assert_int_equal(llama_model_alloc(q4, NULL, 0), DS_OK);
    const size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
                 kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff;
    memcpy(q4->tok_embd, g_model.tok_embd, (size_t)c->vocab_size * d * sizeof(float));
    memcpy(q4->output_norm, g_model.output_norm, d * sizeof(float));
    for (int l = 0, i = 0; l < c->n_layers; l++) {
        const llama_layer *A = &g_model.layers[l];
        llama_layer *B = &q4->layers[l];
        memcpy(B->attn_norm, A->attn_norm, d * sizeof(float));
        memcpy(B->ffn_norm, A->ffn_norm, d * sizeof(float));
        struct {
            const float *src;
            float *dst;
            llama_file_blocks *file;
            size_t n;
        } mats[] = {{A->wq, B->wq, &B->file.wq, q * d},
                    {A->wk, B->wk, &B->file.wk, kv * d},
                    {A->wv, B->wv, &B->file.wv, kv * d},
                    {A->wo, B->wo, &B->file.wo, d * q},
                    {A->w_gate, B->w_gate, &B->file.w_gate, ff * d},
                    {A->w_up, B->w_up, &B->file.w_up, ff * d},
                    {A->w_down, B->w_down, &B->file.w_down, d * ff}};
        for (size_t k = 0; k < sizeof mats / sizeof mats[0]; k++, i++) {
            const int q4_1 = i % 2;
            void *blocks = malloc(mats[k].n / 32 * (q4_1 ? 20 : 18));
            assert_non_null(blocks);
            if (q4_1)
                gguf_quantize_q4_1(mats[k].src, blocks, (int64_t)mats[k].n);
            else
                gguf_quantize_q4_0(mats[k].src, blocks, (int64_t)mats[k].n);
            assert_int_equal(gguf_dequantize(q4_1 ? GGML_TYPE_Q4_1 : GGML_TYPE_Q4_0, blocks,
                                             mats[k].dst, (int64_t)mats[k].n),
                             DS_OK);
            *mats[k].file =
                (llama_file_blocks){q4_1 ? LLAMA_BLOCKS_Q4_1 : LLAMA_BLOCKS_Q4_0, blocks};
        }
    }
}

/* q4 weights (the file's blocks, Q8_0 for the head): logits close to the fp32 engine on the same
 * 4-bit weights, not those of Q8_0 re-quantization, and the same invariances as Q8_0. */
static void test_q4_weights(void **state) {
    make_tokens();
    llama_model q4 = {0}, saved = g_model;
    make_q4_model(&q4);
    g_model = q4;
    const qm_type types[3] = {QM_F32, QM_Q8_0, QM_Q4_0};
    for (int k = 0; k < 3; k++) {
        g_weight_type = types[k];
        rig r = rig_make(16, DQ_FP16, 16, 8, 8);
        run_chunked(&r, g_tokens, 40, 64, g_logits[k]);
        rig_free(&r);
    }
    const float *f32 = g_logits[0] + 39 * VOCAB, *q8 = g_logits[1] + 39 * VOCAB,
                *q4_logits = g_logits[2] + 39 * VOCAB;
    double diff = max_diff(f32, q4_logits, VOCAB), diff_q8 = max_diff(f32, q8, VOCAB), scale = 0;
    for (int i = 0; i < VOCAB; i++)
        scale = fmax(scale, fabs(f32[i]));
    print_message("q4 vs f32 weights: max logit diff %.3g (q8_0: %.3g; max |logit| %.3g)\n", diff,
                  diff_q8, scale);
    assert_true(diff > 0.0 && diff < 0.05 * scale);
    assert_true(max_diff(q8, q4_logits, VOCAB) > 0.0);
    g_weight_type = QM_Q4_0;
    test_chunking_invariant(state);
    test_batch_equals_single(state);
    g_weight_type = QM_F32;
    g_model = saved;
    llama_model_free(&q4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_dense_reference),
        cmocka_unit_test(test_chunking_invariant),
        cmocka_unit_test(test_batch_equals_single),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_q8_weights),
        cmocka_unit_test(test_q4_weights),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
