/* synthetic_test — the random-weight model pieces: every named shape is a valid config with the
 * published sizes, unknown shapes are named in the error, the synthetic tokenizer round-trips
 * text at its learned size and padded to Llama-3's vocabulary (filler ids decode to their
 * names), and the weight fill follows its documented draw order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "common/status.h"
#include "engine/loader/model.h"
#include "engine/loader/synthetic.h"
#include "engine/tokenizer/bpe.h"

static void test_every_shape_validates(void **state) {
    (void)state;
    char msg[256];
    int n = 0;
    for (const char *const *name = synthetic_shape_names; *name; name++, n++) {
        llama_config c;
        memset(&c, 0xAB, sizeof c); /* every field must be written */
        ds_status st = synthetic_shape(*name, &c, msg, sizeof msg);
        if (st != DS_OK) fail_msg("%s: %s", *name, msg);
        st = llama_config_validate(&c, msg, sizeof msg);
        if (st != DS_OK) fail_msg("%s: %s", *name, msg);
        assert_string_equal(c.architecture, "llama");
        /* only llama3.1-8b scales RoPE (Llama-3.1's 128k context) */
        assert_int_equal(c.rope_scaling,
                         strcmp(*name, "llama3.1-8b") ? LLAMA_ROPE_NONE : LLAMA_ROPE_LLAMA3);
        assert_int_equal(c.n_heads * c.head_dim, c.d_model);
    }
    assert_int_equal(n, 6);
}

static void test_published_sizes(void **state) {
    (void)state;
    char msg[256];
    llama_config c;
    assert_int_equal(synthetic_shape("llama3-8b", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.n_layers, 32);
    assert_int_equal(c.n_kv_heads, 8);
    assert_int_equal(c.d_ff, 14336);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.context_length, 8192);
    assert_true(c.rope_theta == 500000.0f);
    assert_false(c.tied_embeddings);
    assert_int_equal(synthetic_shape("llama3.1-8b", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.context_length, 131072);
    assert_int_equal(c.rope_scaling, LLAMA_ROPE_LLAMA3);
    assert_true(c.rope_factor == 8.0f && c.rope_high_freq_factor == 4.0f);
    assert_int_equal(c.rope_original_context, 8192);
    assert_int_equal(synthetic_shape("llama2-7b", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.n_kv_heads, 32);
    assert_int_equal(c.d_ff, 11008);
    assert_int_equal(c.vocab_size, 32000);
    assert_int_equal(c.context_length, 4096);
    assert_int_equal(synthetic_shape("llama3-70b", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.n_layers, 80);
    assert_int_equal(c.d_model, 8192);
    assert_int_equal(c.n_heads, 64);
    assert_int_equal(c.d_ff, 28672);
    assert_int_equal(synthetic_shape("smollm2-135m", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.vocab_size, 49152);
    assert_true(c.tied_embeddings);

    /* tiny is sized to the learned vocabulary exactly: no filler. */
    synthetic_vocab v;
    assert_int_equal(synthetic_vocab_build(0, &v, msg, sizeof msg), DS_OK);
    assert_int_equal(synthetic_shape("tiny", &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.vocab_size, v.n_tokens);
    assert_true(v.n_tokens > 3 + 256 && v.n_merges > 0);
    for (int32_t i = 0; i < v.n_tokens; i++)
        assert_int_not_equal(v.types[i], BPE_TOKEN_UNUSED);
    synthetic_vocab_free(&v);
}

static void test_unknown_shape_is_named(void **state) {
    (void)state;
    char msg[256] = "";
    llama_config c;
    assert_int_equal(synthetic_shape("llama4-400b", &c, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "llama4-400b"));
    for (const char *const *name = synthetic_shape_names; *name; name++)
        if (!strstr(msg, *name)) fail_msg("'%s' does not list %s", msg, *name);
}

static void test_bad_vocab_size(void **state) {
    (void)state;
    char msg[256] = "";
    bpe_tokenizer *tok = (bpe_tokenizer *)&tok; /* poison: must come back NULL */
    assert_int_equal(synthetic_tokenizer(300, &tok, msg, sizeof msg), DS_EINVAL);
    assert_null(tok);
    assert_non_null(strstr(msg, "300"));
    assert_int_equal(synthetic_tokenizer(-1, &tok, msg, sizeof msg), DS_EINVAL);
    synthetic_vocab v;
    assert_int_equal(synthetic_vocab_build(-5, &v, msg, sizeof msg), DS_EINVAL);
    assert_int_equal(v.n_tokens, 0);
    assert_null(v.tokens);
}

/* Encodes text and decodes it back, with and without special-token parsing. */
static void assert_round_trip(const bpe_tokenizer *tok, const char *text) {
    char msg[256], out[1024];
    int32_t ids[1024];
    for (int special = 0; special < 2; special++) {
        int n_ids;
        size_t n_out;
        ds_status st =
            bpe_encode(tok, text, strlen(text), special, ids, 1024, &n_ids, msg, sizeof msg);
        if (st != DS_OK) fail_msg("encode '%s': %s", text, msg);
        st = bpe_decode(tok, ids, n_ids, out, sizeof out, &n_out, msg, sizeof msg);
        if (st != DS_OK) fail_msg("decode '%s': %s", text, msg);
        assert_int_equal(n_out, strlen(text));
        assert_memory_equal(out, text, n_out);
    }
}

static const char *const samples[] = {
    "The river wound slowly through the valley.",
    "  leading spaces, tabs\tand\nnew lines\n\n",
    "numbers 1234567890 and 3.14159, punctuation: !?;()[]{}<>",
    "UTF-8: caf\xc3\xa9, na\xc3\xafve, \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e, \xf0\x9f\x99\x82",
    "bytes \x01\x02\x7f\xff\xfe",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
    "Clara followed the river to its source.",
};

static void check_tokenizer(int vocab_size) {
    char msg[256];
    bpe_tokenizer *tok;
    ds_status st = synthetic_tokenizer(vocab_size, &tok, msg, sizeof msg);
    if (st != DS_OK) fail_msg("vocab %d: %s", vocab_size, msg);
    synthetic_vocab v;
    assert_int_equal(synthetic_vocab_build(vocab_size, &v, msg, sizeof msg), DS_OK);
    assert_int_equal(bpe_vocab_size(tok), v.n_tokens);
    if (vocab_size) assert_int_equal(v.n_tokens, vocab_size);
    assert_int_equal(bpe_bos_id(tok), SYNTHETIC_BOS_ID);
    assert_int_equal(bpe_eos_id(tok), SYNTHETIC_EOS_ID);
    assert_string_equal(bpe_token_text(tok, SYNTHETIC_EOS_ID), "<|im_end|>");
    assert_string_equal(bpe_pre_name(tok), SYNTHETIC_PRE);
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        assert_round_trip(tok, samples[i]);

    /* The learned merges apply: corpus words take fewer tokens than bytes. */
    const char *text = "the river and the village";
    int32_t ids[64];
    int n_ids;
    assert_int_equal(bpe_encode(tok, text, strlen(text), false, ids, 64, &n_ids, msg, sizeof msg),
                     DS_OK);
    assert_true(n_ids <= 8);

    /* Control tokens are one id each with parse_special. */
    assert_int_equal(bpe_encode(tok, "<|im_start|>", 12, true, ids, 64, &n_ids, msg, sizeof msg),
                     DS_OK);
    assert_int_equal(n_ids, 1);
    assert_int_equal(ids[0], SYNTHETIC_BOS_ID);
    synthetic_vocab_free(&v);
    bpe_destroy(tok);
}

static void test_tokenizer_learned_vocab(void **state) {
    (void)state;
    check_tokenizer(0);
}

static void test_tokenizer_llama3_vocab(void **state) {
    (void)state;
    check_tokenizer(128256);
}

static void test_filler_decodes_to_its_name(void **state) {
    (void)state;
    char msg[256], out[64];
    synthetic_vocab learned;
    assert_int_equal(synthetic_vocab_build(0, &learned, msg, sizeof msg), DS_OK);
    bpe_tokenizer *tok;
    assert_int_equal(synthetic_tokenizer(128256, &tok, msg, sizeof msg), DS_OK);
    const int32_t ids[] = {learned.n_tokens, learned.n_tokens + 1, 4096, 128255};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char want[32];
        size_t n_out;
        snprintf(want, sizeof want, "<|unused_%d|>", ids[i]);
        assert_int_equal(bpe_token_type(tok, ids[i]), BPE_TOKEN_UNUSED);
        assert_string_equal(bpe_token_text(tok, ids[i]), want);
        assert_int_equal(bpe_decode(tok, &ids[i], 1, out, sizeof out, &n_out, msg, sizeof msg),
                         DS_OK);
        assert_int_equal(n_out, strlen(want));
        assert_memory_equal(out, want, n_out);
    }
    assert_int_equal(bpe_token_type(tok, learned.n_tokens - 1), BPE_TOKEN_NORMAL);
    synthetic_vocab_free(&learned);
    bpe_destroy(tok);
}

typedef struct drawn_matrix {
    const float *w;
    size_t n; /* draws it takes */
} drawn_matrix;

/* The header's draw order, walked independently: tok_embd, output (untied), then per layer
 * wq, wk, wv, wo, w_gate, w_up, w_down; norms are 1 and take no draws. */
static void test_fill_order_and_values(void **state) {
    (void)state;
    char msg[256];
    llama_model m = {0};
    assert_int_equal(synthetic_shape("tiny", &m.config, msg, sizeof msg), DS_OK);
    assert_int_equal(llama_model_alloc(&m, msg, sizeof msg), DS_OK);
    synthetic_fill_weights(&m, 7);
    const llama_config *c = &m.config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff,
           v = (size_t)c->vocab_size;
    ds_rng rng = {7};
    assert_int_equal(c->n_layers, 2); /* order[] has room for two */
    drawn_matrix order[2 + 7 * 2];
    int n_order = 0;
    order[n_order++] = (drawn_matrix){m.tok_embd, v * d};
    order[n_order++] = (drawn_matrix){m.output, v * d};
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m.layers[l];
        order[n_order++] = (drawn_matrix){L->wq, q * d};
        order[n_order++] = (drawn_matrix){L->wk, kv * d};
        order[n_order++] = (drawn_matrix){L->wv, kv * d};
        order[n_order++] = (drawn_matrix){L->wo, d * q};
        order[n_order++] = (drawn_matrix){L->w_gate, ff * d};
        order[n_order++] = (drawn_matrix){L->w_up, ff * d};
        order[n_order++] = (drawn_matrix){L->w_down, d * ff};
    }
    for (int k = 0; k < n_order; k++)
        for (size_t i = 0; i < order[k].n; i++)
            if (order[k].w[i] != 0.02f * ds_rng_gauss(&rng))
                fail_msg("matrix %d of the draw order, element %zu: not the next draw", k, i);
    for (size_t i = 0; i < d; i++)
        assert_true(m.output_norm[i] == 1.0f && m.layers[1].attn_norm[i] == 1.0f &&
                    m.layers[1].ffn_norm[i] == 1.0f);

    llama_model other = {.config = m.config};
    assert_int_equal(llama_model_alloc(&other, msg, sizeof msg), DS_OK);
    synthetic_fill_weights(&other, 8);
    assert_memory_not_equal(other.tok_embd, m.tok_embd, v * d * sizeof(float));
    llama_model_free(&other);
    llama_model_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_shape_validates),
        cmocka_unit_test(test_published_sizes),
        cmocka_unit_test(test_unknown_shape_is_named),
        cmocka_unit_test(test_bad_vocab_size),
        cmocka_unit_test(test_tokenizer_learned_vocab),
        cmocka_unit_test(test_tokenizer_llama3_vocab),
        cmocka_unit_test(test_filler_decodes_to_its_name),
        cmocka_unit_test(test_fill_order_and_values),
    };
    return cmocka_run_group_tests_name("synthetic", tests, NULL, NULL);
}
