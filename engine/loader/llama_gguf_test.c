/* llama_gguf_test — the Llama GGUF loader: a tiny model written through the writer (with the
 * Q/K permutation) loads back to the exact weights; the permutation in the file matches
 * llama.cpp's converter; missing tensors, wrong shapes and bad keys give named errors.
 * With --real-model (target llama_gguf_model_test, DECOSERVE_MODEL=path): SmolLM2-135M loads with
 * its known configuration and dequantized values match tests/fixtures/gguf_ref.txt, which the
 * Python gguf package produced (tools/gguf_fixture.py). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/status.h"
#include "engine/loader/gguf.h"
#include "engine/loader/gguf_writer.h"
#include "engine/loader/loader_test_util.h"
#include "engine/loader/llama_gguf.h"
#include "engine/loader/model.h"
#include "engine/test_model.h"

static uint64_t rng = 42;
static float rand_weight(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(rng >> 40) / (float)(1 << 24) - 0.5f) * 0.1f;
}

static void fill(float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        x[i] = rand_weight();
}

static llama_config tiny_config(int tied) {
    llama_config c = {.architecture = "llama",
                      .n_layers = 2,
                      .d_model = 64,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .head_dim = 16,
                      .d_ff = 128,
                      .vocab_size = 96,
                      .context_length = 256,
                      .rms_eps = 1e-5f,
                      .rope_theta = 10000.0f,
                      .tied_embeddings = tied};
    return c;
}

static void make_model(llama_model *m, llama_config c) {
    memset(m, 0, sizeof *m);
    m->config = c;
    OK(llama_config_validate(&m->config, M));
    OK(llama_model_alloc(m, M));
    size_t d = (size_t)c.d_model, q = (size_t)c.n_heads * c.head_dim,
           kv = (size_t)c.n_kv_heads * c.head_dim, ff = (size_t)c.d_ff, v = (size_t)c.vocab_size;
    fill(m->tok_embd, v * d);
    fill(m->output_norm, d);
    if (!c.tied_embeddings) fill(m->output, v * d);
    for (int l = 0; l < c.n_layers; l++) {
        llama_layer *L = &m->layers[l];
        fill(L->attn_norm, d);
        fill(L->wq, q * d);
        fill(L->wk, kv * d);
        fill(L->wv, kv * d);
        fill(L->wo, d * q);
        fill(L->ffn_norm, d);
        fill(L->w_gate, ff * d);
        fill(L->w_up, ff * d);
        fill(L->w_down, d * ff);
    }
}

static void write_model(const char *path, const llama_model *m, gguf_ggml_type type) {
    gguf_writer *w = gguf_writer_create();
    assert_non_null(w);
    OK(llama_gguf_add_model(w, m, type, M));
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
}

/* Compares every weight buffer; tol = 0 means bit-exact. */
static void assert_same_weights(const llama_model *a, const llama_model *b, float tol) {
    const llama_config *c = &a->config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff,
           v = (size_t)c->vocab_size;
    typedef struct {
        const char *name;
        const float *x, *y;
        size_t n;
    } buf_view;
    buf_view bufs[3 + 9 * 8];
    size_t k = 0;
    bufs[k++] = (buf_view){"tok_embd", a->tok_embd, b->tok_embd, v * d};
    bufs[k++] = (buf_view){"output_norm", a->output_norm, b->output_norm, d};
    bufs[k++] = (buf_view){"output", a->output, b->output, v * d};
    for (int l = 0; l < c->n_layers && l < 8; l++) {
        const llama_layer *A = &a->layers[l], *B = &b->layers[l];
        bufs[k++] = (buf_view){"attn_norm", A->attn_norm, B->attn_norm, d};
        bufs[k++] = (buf_view){"wq", A->wq, B->wq, q * d};
        bufs[k++] = (buf_view){"wk", A->wk, B->wk, kv * d};
        bufs[k++] = (buf_view){"wv", A->wv, B->wv, kv * d};
        bufs[k++] = (buf_view){"wo", A->wo, B->wo, d * q};
        bufs[k++] = (buf_view){"ffn_norm", A->ffn_norm, B->ffn_norm, d};
        bufs[k++] = (buf_view){"w_gate", A->w_gate, B->w_gate, ff * d};
        bufs[k++] = (buf_view){"w_up", A->w_up, B->w_up, ff * d};
        bufs[k++] = (buf_view){"w_down", A->w_down, B->w_down, d * ff};
    }
    for (size_t i = 0; i < k; i++)
        for (size_t j = 0; j < bufs[i].n; j++)
            if (!(fabsf(bufs[i].x[j] - bufs[i].y[j]) <= tol))
                fail_msg("%s[%zu]: %g vs %g (tol %g)", bufs[i].name, j, bufs[i].x[j], bufs[i].y[j],
                         tol);
}

static void assert_same_config(const llama_config *a, const llama_config *b) {
    assert_string_equal(a->architecture, b->architecture);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->d_model, b->d_model);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->d_ff, b->d_ff);
    assert_int_equal(a->vocab_size, b->vocab_size);
    assert_int_equal(a->context_length, b->context_length);
    assert_true(a->rms_eps == b->rms_eps);
    assert_true(a->rope_theta == b->rope_theta);
    assert_int_equal(a->rope_scaling, b->rope_scaling);
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
}

static void test_round_trip_exact(void **state) {
    (void)state;
    for (int tied = 0; tied < 2; tied++) {
        llama_model ref, got;
        make_model(&ref, tiny_config(tied));
        const char *path = tmp_file("tiny.gguf");
        write_model(path, &ref, GGML_TYPE_F32);
        OK(llama_model_load_gguf(path, &got, M));
        assert_same_config(&ref.config, &got.config);
        if (tied)
            assert_ptr_equal(got.output, got.tok_embd);
        else
            assert_ptr_not_equal(got.output, got.tok_embd);
        assert_same_weights(&ref, &got, 0.0f);
        llama_model_free(&got);
        llama_model_free(&ref);
    }
}

/* The file holds Q/K rows in llama.cpp's order: GGUF row h*hd + 2i + s is HF row
 * h*hd + s*hd/2 + i (numpy: w.reshape(n_head, 2, hd/2, n_in).swapaxes(1, 2)). */
static void test_file_has_llama_cpp_permutation(void **state) {
    (void)state;
    llama_model ref;
    make_model(&ref, tiny_config(0));
    const char *path = tmp_file("perm.gguf");
    write_model(path, &ref, GGML_TYPE_F32);
    gguf_file *f;
    OK(gguf_open(path, &f, M));
    const int hd = ref.config.head_dim, d = ref.config.d_model;
    for (int which = 0; which < 2; which++) {
        const char *name = which ? "blk.1.attn_k.weight" : "blk.1.attn_q.weight";
        const float *hf = which ? ref.layers[1].wk : ref.layers[1].wq;
        int n_head = which ? ref.config.n_kv_heads : ref.config.n_heads;
        const gguf_tensor *t = gguf_find_tensor(f, name);
        assert_non_null(t);
        assert_int_equal(t->ne[1], n_head * hd);
        float row[64];
        for (int r = 0; r < n_head * hd; r++) {
            int h = r / hd, j = r % hd, src = h * hd + (j % 2) * (hd / 2) + j / 2;
            memcpy(row, (const float *)t->data + (size_t)r * d, sizeof row);
            assert_memory_equal(row, hf + (size_t)src * d, sizeof row);
        }
        if (n_head * hd > 1) /* and the permutation is not the identity */
            assert_memory_not_equal(t->data, hf, (size_t)n_head * hd * d * sizeof(float));
    }
    gguf_close(f);
    llama_model_free(&ref);
}

typedef struct file_matrix {
    const llama_file_blocks *blocks;
    const float *fp32;
    int64_t n;
} file_matrix;

/* A model loaded from a file of weight type `type` keeps each matrix's own blocks where they are
 * Q4_0 / Q4_1 (none otherwise), rows in HF order: they decode to exactly its fp32 weights. */
static void assert_file_blocks(const llama_model *m, gguf_ggml_type type) {
    const llama_config *c = &m->config;
    const int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim,
                  kv = (int64_t)c->n_kv_heads * c->head_dim, ff = c->d_ff;
    const llama_blocks_type want = type == GGML_TYPE_Q4_0   ? LLAMA_BLOCKS_Q4_0
                                   : type == GGML_TYPE_Q4_1 ? LLAMA_BLOCKS_Q4_1
                                                            : LLAMA_BLOCKS_NONE;
    for (int l = -1; l < c->n_layers; l++) {
        const llama_layer *L = l >= 0 ? &m->layers[l] : NULL;
        file_matrix mats[7] = {{&m->output_file, m->output, (int64_t)c->vocab_size * d}};
        if (L) {
            mats[0] = (file_matrix){&L->file.wq, L->wq, q * d};
            mats[1] = (file_matrix){&L->file.wk, L->wk, kv * d};
            mats[2] = (file_matrix){&L->file.wv, L->wv, kv * d};
            mats[3] = (file_matrix){&L->file.wo, L->wo, d * q};
            mats[4] = (file_matrix){&L->file.w_gate, L->w_gate, ff * d};
            mats[5] = (file_matrix){&L->file.w_up, L->w_up, ff * d};
            mats[6] = (file_matrix){&L->file.w_down, L->w_down, d * ff};
        }
        for (int i = 0; i < (L ? 7 : 1); i++) {
            assert_int_equal(mats[i].blocks->type, want);
            if (want == LLAMA_BLOCKS_NONE) {
                assert_null(mats[i].blocks->data);
                continue;
            }
            float *x = malloc((size_t)mats[i].n * sizeof(float));
            assert_non_null(x);
            assert_int_equal(gguf_dequantize(type, mats[i].blocks->data, x, mats[i].n), DS_OK);
            assert_memory_equal(x, mats[i].fp32, (size_t)mats[i].n * sizeof(float));
            free(x);
        }
    }
}

static void test_round_trip_quantized(void **state) {
    (void)state;
    const gguf_ggml_type types[] = {GGML_TYPE_F16, GGML_TYPE_BF16, GGML_TYPE_Q8_0, GGML_TYPE_Q4_0,
                                    GGML_TYPE_Q4_1};
    /* Weights are uniform in [-0.05, 0.05]: a bound per type of the quantization error. */
    const float tol[] = {1e-4f, 4e-4f, 5e-4f, 1e-2f, 5e-3f};
    for (int t = 0; t < 5; t++) {
        llama_config c = tiny_config(1);
        c.rope_scaling = LLAMA_ROPE_LLAMA3;
        c.rope_factor = 8.0f;
        c.rope_low_freq_factor = 1.0f;
        c.rope_high_freq_factor = 4.0f;
        c.rope_original_context = 128;
        llama_model ref, got;
        make_model(&ref, c);
        const char *path = tmp_file("tiny-q.gguf");
        write_model(path, &ref, types[t]);
        OK(llama_model_load_gguf(path, &got, M));
        assert_same_config(&ref.config, &got.config);
        assert_true(got.config.rope_factor == 8.0f);
        assert_true(got.config.rope_high_freq_factor == 4.0f);
        assert_int_equal(got.config.rope_original_context, 128);
        assert_same_weights(&ref, &got, tol[t]);
        assert_file_blocks(&got, types[t]);
        /* Norms are stored in F32 whatever the weight type. */
        assert_memory_equal(ref.layers[0].attn_norm, got.layers[0].attn_norm, 64 * sizeof(float));
        llama_model_free(&got);
        llama_model_free(&ref);
    }
}

/* ---- hand-made files: missing pieces and wrong shapes ---- */

typedef struct variant {
    const char *skip_tensor; /* omit this tensor */
    const char *bad_tensor;  /* write this tensor as bad_ne0 x bad_ne1 */
    int64_t bad_ne0, bad_ne1;
    const char *skip_key; /* omit this key */
    const char *arch;     /* general.architecture (default llama) */
    int n_kv_heads;       /* override */
    int tokens_only;      /* vocabulary from tokenizer.ggml.tokens, no llama.vocab_size */
} variant;

/* Writes a Llama GGUF by hand (independent of llama_gguf_add_model), unpermuted. */
static void write_variant(const char *path, const variant *var) {
    llama_config c = tiny_config(0);
    gguf_writer *w = gguf_writer_create();
    struct {
        const char *key;
        uint32_t value;
    } keys[] = {
        {"llama.block_count", (uint32_t)c.n_layers},
        {"llama.context_length", (uint32_t)c.context_length},
        {"llama.embedding_length", (uint32_t)c.d_model},
        {"llama.feed_forward_length", (uint32_t)c.d_ff},
        {"llama.attention.head_count", (uint32_t)c.n_heads},
        {"llama.attention.head_count_kv", (uint32_t)(var->n_kv_heads ? var->n_kv_heads : 2)},
        {"llama.vocab_size", var->tokens_only ? 0 : (uint32_t)c.vocab_size},
    };
    OK(gguf_writer_add_str(w, "general.architecture", var->arch ? var->arch : "llama", M));
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (!(var->skip_key && strcmp(var->skip_key, keys[i].key) == 0) && keys[i].value)
            OK(gguf_writer_add_u32(w, keys[i].key, keys[i].value, M));
    if (var->tokens_only) {
        const char *toks[96];
        char names[96][16];
        for (int i = 0; i < 96; i++) {
            snprintf(names[i], sizeof names[i], "t%d", i);
            toks[i] = names[i];
        }
        OK(gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 96, M));
    }
    char names[32][48];
    int64_t shapes[32][2];
    int n = 0;
#define T(name_, ne0_, ne1_)                                                                       \
    do {                                                                                           \
        snprintf(names[n], sizeof names[n], "%s", name_);                                          \
        shapes[n][0] = ne0_;                                                                       \
        shapes[n][1] = ne1_;                                                                       \
        n++;                                                                                       \
    } while (0)
    T("token_embd.weight", 64, 96);
    T("output_norm.weight", 64, 0);
    T("output.weight", 64, 96);
    for (int l = 0; l < 2; l++) {
        const char *parts[9] = {"attn_norm", "attn_q",   "attn_k", "attn_v",  "attn_output",
                                "ffn_norm",  "ffn_gate", "ffn_up", "ffn_down"};
        const int64_t ne[9][2] = {{64, 0}, {64, 64},  {64, 32},  {64, 32}, {64, 64},
                                  {64, 0}, {64, 128}, {64, 128}, {128, 64}};
        for (int j = 0; j < 9; j++) {
            char name[48];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, parts[j]);
            T(name, ne[j][0], ne[j][1]);
        }
    }
#undef T
    static float values[96 * 128];
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        values[i] = (float)(i % 17);
    for (int i = 0; i < n; i++) {
        if (var->skip_tensor && strcmp(var->skip_tensor, names[i]) == 0) continue;
        int64_t ne[2] = {shapes[i][0], shapes[i][1]};
        if (var->bad_tensor && strcmp(var->bad_tensor, names[i]) == 0) {
            ne[0] = var->bad_ne0;
            ne[1] = var->bad_ne1;
        }
        OK(gguf_writer_add_tensor(w, names[i], GGML_TYPE_F32, ne[1] ? 2 : 1, ne, values, M));
    }
    OK(gguf_writer_write(w, path, M));
    gguf_writer_destroy(w);
}

static void expect_load_error(const variant *var, ds_status want, const char *needle) {
    const char *path = tmp_file("variant.gguf");
    write_variant(path, var);
    llama_model m;
    char msg[512] = "";
    ds_status st = llama_model_load_gguf(path, &m, msg, sizeof msg);
    if (st != want)
        fail_msg("expected %s, got %s: %s", ds_status_str(want), ds_status_str(st), msg);
    assert_contains(msg, path);
    assert_contains(msg, needle);
    assert_null(m.layers); /* nothing left allocated */
    assert_null(m.tok_embd);
}

static void test_hand_made_file_loads(void **state) {
    (void)state;
    const char *path = tmp_file("variant.gguf");
    variant ok = {0};
    write_variant(path, &ok);
    llama_model m;
    OK(llama_model_load_gguf(path, &m, M));
    assert_int_equal(m.config.vocab_size, 96);
    assert_int_equal(m.config.head_dim, 16);
    assert_true(m.config.rope_theta == 10000.0f); /* defaults when keys are absent */
    assert_true(m.config.rms_eps == 1e-5f);
    assert_int_equal(m.config.tied_embeddings, 0);
    assert_true(m.layers[1].w_down[18] == 1.0f); /* values i % 17, no permutation of ffn */
    llama_model_free(&m);

    variant tokens = {.tokens_only = 1};
    write_variant(path, &tokens);
    OK(llama_model_load_gguf(path, &m, M));
    assert_int_equal(m.config.vocab_size, 96);
    llama_model_free(&m);

    variant tied = {.skip_tensor = "output.weight"};
    write_variant(path, &tied);
    OK(llama_model_load_gguf(path, &m, M));
    assert_int_equal(m.config.tied_embeddings, 1);
    assert_ptr_equal(m.output, m.tok_embd);
    llama_model_free(&m);
}

static void test_named_errors(void **state) {
    (void)state;
    variant missing = {.skip_tensor = "blk.1.ffn_up.weight"};
    expect_load_error(&missing, DS_ENOTFOUND, "tensor blk.1.ffn_up.weight: not found");
    variant shape = {.bad_tensor = "blk.1.attn_k.weight", .bad_ne0 = 64, .bad_ne1 = 16};
    expect_load_error(&shape, DS_EINVAL, "tensor blk.1.attn_k.weight: expected 64x32, got 64x16");
    variant vec = {.bad_tensor = "blk.0.ffn_norm.weight", .bad_ne0 = 32, .bad_ne1 = 2};
    expect_load_error(&vec, DS_EINVAL, "tensor blk.0.ffn_norm.weight: expected 64, got 32x2");
    variant embd = {.bad_tensor = "token_embd.weight", .bad_ne0 = 64, .bad_ne1 = 95};
    expect_load_error(&embd, DS_EINVAL, "tensor token_embd.weight: expected 64x96, got 64x95");
    variant key = {.skip_key = "llama.block_count"};
    expect_load_error(&key, DS_ENOTFOUND, "key llama.block_count: not found");
    variant arch = {.arch = "qwen2"};
    expect_load_error(&arch, DS_EUNSUPPORTED, "general.architecture: 'qwen2'");
    variant gqa = {.n_kv_heads = 3};
    expect_load_error(&gqa, DS_EINVAL, "n_heads = 4 is not a multiple of n_kv_heads = 3");

    llama_model m;
    char msg[512];
    assert_int_equal(llama_model_load_gguf("/nonexistent/tiny.gguf", &m, msg, sizeof msg),
                     DS_ENOTFOUND);
    assert_contains(msg, "/nonexistent/tiny.gguf");
}

/* ---- the real model ---- */

static void test_real_smollm2(void **state) {
    (void)state;
    const char *path = test_model_path("the SmolLM2 loader test");
    llama_model m;
    OK(llama_model_load_gguf(path, &m, M));
    const llama_config *c = &m.config;
    assert_string_equal(c->architecture, "llama");
    assert_int_equal(c->n_layers, 30);
    assert_int_equal(c->d_model, 576);
    assert_int_equal(c->n_heads, 9);
    assert_int_equal(c->n_kv_heads, 3);
    assert_int_equal(c->head_dim, 64);
    assert_int_equal(c->d_ff, 1536);
    assert_int_equal(c->vocab_size, 49152);
    assert_int_equal(c->context_length, 8192);
    assert_true(c->rope_theta == 100000.0f);
    assert_float_equal(c->rms_eps, 1e-5f, 1e-9f);
    assert_int_equal(c->rope_scaling, LLAMA_ROPE_NONE);
    assert_int_equal(c->tied_embeddings, 1);
    assert_ptr_equal(m.output, m.tok_embd);

    const char *fixture = "tests/fixtures/gguf_ref.txt";
    FILE *fp = fopen(fixture, "r");
    if (!fp) fail_msg("%s: cannot open (run from the workspace or runfiles root)", fixture);
    char line[256];
    int n_checked = 0;
    const size_t d = 576, ff = 1536;
    while (fgets(line, sizeof line, fp)) {
        char name[64];
        long row, col;
        float want;
        if (line[0] == '#' || sscanf(line, "%63s %ld %ld %f", name, &row, &col, &want) != 4)
            continue;
        const float *base = NULL;
        size_t n_in = d;
        if (strcmp(name, "token_embd") == 0)
            base = m.tok_embd;
        else if (strcmp(name, "blk.0.attn_q") == 0)
            base = m.layers[0].wq;
        else if (strcmp(name, "blk.0.attn_k") == 0)
            base = m.layers[0].wk;
        else if (strcmp(name, "blk.29.attn_v") == 0)
            base = m.layers[29].wv;
        else if (strcmp(name, "output_norm") == 0)
            base = m.output_norm;
        else if (strcmp(name, "blk.0.ffn_down") == 0) {
            base = m.layers[0].w_down;
            n_in = ff;
        } else
            fail_msg("%s: unknown tensor %s", fixture, name);
        float got = base[(size_t)row * n_in + (size_t)col];
        if (!(fabsf(got - want) <= 1e-6f))
            fail_msg("%s[%ld][%ld]: loaded %.9g, gguf-py %.9g", name, row, col, got, want);
        n_checked++;
    }
    fclose(fp);
    assert_true(n_checked >= 100);
    llama_model_free(&m);
}

int main(int argc, char **argv) {
    const struct CMUnitTest synthetic[] = {
        cmocka_unit_test(test_round_trip_exact),
        cmocka_unit_test(test_file_has_llama_cpp_permutation),
        cmocka_unit_test(test_round_trip_quantized),
        cmocka_unit_test(test_hand_made_file_loads),
        cmocka_unit_test(test_named_errors),
    };
    const struct CMUnitTest real[] = {cmocka_unit_test(test_real_smollm2)};
    if (argc > 1 && strcmp(argv[1], "--real-model") == 0)
        return cmocka_run_group_tests_name("llama_gguf_real_model", real, NULL, NULL);
    return cmocka_run_group_tests_name("llama_gguf", synthetic, NULL, NULL);
}
