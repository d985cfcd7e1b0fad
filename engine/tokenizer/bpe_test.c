/* bpe_test — byte-level BPE on hand-built vocabularies (merge order, pre-tokenizer splits,
 * special tokens, invalid UTF-8, streaming decode, tokenizer.json) and, with --model and
 * DECOSERVE_MODEL, SmolLM2's ids from the GGUF against the committed HF fixture. The GGUF is read
 * by a tiny metadata skimmer below (string arrays only), not by the engine's loader. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "common/file.h"
#include "engine/tokenizer/bpe.h"
#include "engine/test_model.h"
#include "engine/tokenizer/pretokenize.h"

#define FIXTURE_PATH "tests/fixtures/tokenizer_smollm2.tsv"

/* ---- a small vocabulary: 3 added tokens, the 256 byte tokens, then merges ------------------ */

static const char *const small_merges[] = {
    "h e",   "l l",    "l o",     "he ll", "hell o", "Ġ w",   "o r",
    "Ġw or", "Ġwor l", "Ġworl d", "1 2",   "Ġ Ġ",    "ĠĠ ĠĠ",
};
#define N_SMALL_MERGES   ((int)(sizeof small_merges / sizeof small_merges[0]))
#define SMALL_FIRST_BYTE 3 /* id of byte 0's token */

static char small_text[3 + 256 + N_SMALL_MERGES][16];
static const char *small_tokens[3 + 256 + N_SMALL_MERGES];
static int32_t small_types[3 + 256 + N_SMALL_MERGES];

/* GPT-2's byte -> code point map, written out independently of bpe.c. */
static int byte_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE) return b;
    int n = 0;
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE)) n++;
    return 256 + n;
}

static void put_cp(char *out, int cp) {
    if (cp < 0x80) {
        out[0] = (char)cp, out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | (cp >> 6)), out[1] = (char)(0x80 | (cp & 0x3F)), out[2] = 0;
    }
}

static bpe_tokenizer *small_tokenizer(const char *pre, bool ignore_merges) {
    int n = 0;
    strcpy(small_text[n], "<|end|>"), small_types[n++] = BPE_TOKEN_CONTROL;
    strcpy(small_text[n], "<|endoftext|>"), small_types[n++] = BPE_TOKEN_CONTROL;
    strcpy(small_text[n], "<tool>"), small_types[n++] = BPE_TOKEN_USER_DEFINED;
    for (int b = 0; b < 256; b++)
        put_cp(small_text[n], byte_cp(b)), small_types[n++] = BPE_TOKEN_BYTE;
    for (int m = 0; m < N_SMALL_MERGES; m++) {
        const char *sp = strchr(small_merges[m], ' ');
        snprintf(small_text[n], sizeof small_text[n], "%.*s%s", (int)(sp - small_merges[m]),
                 small_merges[m], sp + 1);
        small_types[n++] = BPE_TOKEN_NORMAL;
    }
    for (int i = 0; i < n; i++)
        small_tokens[i] = small_text[i];
    bpe_spec spec = {
        .n_tokens = n,
        .tokens = small_tokens,
        .token_types = small_types,
        .n_merges = N_SMALL_MERGES,
        .merges = small_merges,
        .pre = pre,
        .bos_id = 1,
        .eos_id = 0,
        .unk_id = -1,
        .ignore_merges = ignore_merges,
    };
    bpe_tokenizer *tok = NULL;
    char msg[256] = "";
    ds_status st = bpe_create(&spec, &tok, msg, sizeof msg);
    if (st != DS_OK) fail_msg("bpe_create: %s", msg);
    return tok;
}

/* Encodes text and checks the ids spell exactly the given vocabulary texts. */
static void expect_tokens(const bpe_tokenizer *tok, const char *text, size_t len,
                          bool parse_special, const char *const *want, int n_want) {
    int32_t ids[256];
    int n = -1;
    char msg[256] = "";
    assert_int_equal(bpe_encode(tok, text, len, parse_special, ids, 256, &n, msg, sizeof msg),
                     DS_OK);
    for (int i = 0; i < n && i < n_want; i++) {
        if (strcmp(bpe_token_text(tok, ids[i]), want[i]) != 0)
            fail_msg("\"%.*s\": token %d is \"%s\", expected \"%s\"", (int)len, text, i,
                     bpe_token_text(tok, ids[i]), want[i]);
    }
    if (n != n_want) fail_msg("\"%.*s\": %d tokens, expected %d", (int)len, text, n, n_want);
}

#define EXPECT(tok, text, special, ...)                                                            \
    do {                                                                                           \
        static const char *const want_[] = {__VA_ARGS__};                                          \
        expect_tokens(tok, text, strlen(text), special, want_,                                     \
                      (int)(sizeof want_ / sizeof want_[0]));                                      \
    } while (0)

static void test_merges_by_rank(void **state) {
    (void)state;
    bpe_tokenizer *tok = small_tokenizer("gpt2", false);
    /* he, ll, hell, hello: "l o" (rank 2) never fires because "l l" (rank 1) took the l. */
    EXPECT(tok, "hello", false, "hello");
    EXPECT(tok, "hello world", false, "hello", "Ġworld");
    /* Equal ranks go leftmost first: "lll o" -> ll + lo, not l + ll + o. */
    EXPECT(tok, "lllo", false, "ll", "lo");
    EXPECT(tok, "hel", false, "he", "l");
    /* "    x" splits as "   " + " x": ĠĠ + Ġ (no "ĠĠ Ġ" merge), then Ġ + x (no "Ġ x"). */
    EXPECT(tok, "    x", false, "ĠĠ", "Ġ", "Ġ", "x");
    EXPECT(tok, "     ", false, "ĠĠĠĠ", "Ġ");
    /* Exact ids: byte tokens sit at SMALL_FIRST_BYTE + GPT-2 order. */
    int32_t ids[8];
    int n;
    assert_int_equal(bpe_encode(tok, "A!", 2, false, ids, 8, &n, NULL, 0), DS_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], SMALL_FIRST_BYTE + 'A');
    assert_int_equal(ids[1], SMALL_FIRST_BYTE + '!');
    assert_int_equal(bpe_token_id(tok, "hello", 5), 3 + 256 + 4);
    assert_int_equal(bpe_token_id(tok, "nope", 4), -1);
    assert_int_equal(bpe_vocab_size(tok), 3 + 256 + N_SMALL_MERGES);
    size_t len;
    const char *bytes = bpe_token_bytes(tok, bpe_token_id(tok, "Ġworld", strlen("Ġworld")), &len);
    assert_int_equal(len, 6);
    assert_memory_equal(bytes, " world", 6);
    assert_null(bpe_token_bytes(tok, -1, &len));
    assert_null(bpe_token_bytes(tok, bpe_vocab_size(tok), &len));
    bpe_destroy(tok);
}

static void test_ignore_merges_and_digits(void **state) {
    (void)state;
    bpe_tokenizer *gpt2 = small_tokenizer("gpt2", false);
    bpe_tokenizer *smollm = small_tokenizer("smollm", false);
    EXPECT(gpt2, "x12", false, "x", "12");
    EXPECT(smollm, "x12", false, "x", "1", "2"); /* digits isolated before merging */
    bpe_destroy(gpt2);
    bpe_destroy(smollm);
    /* ignore_merges: a pre-token in the vocab wins outright; "Ġworld" is one token either way,
     * and "hello" too, but "helloo" is not in the vocab and still merges. */
    bpe_tokenizer *l3 = small_tokenizer("llama3", true);
    EXPECT(l3, "hello world", false, "hello", "Ġworld");
    EXPECT(l3, "helloo", false, "hello", "o");
    bpe_destroy(l3);
}

typedef struct split_case {
    const char *text;
    const char *pieces[12];
} split_case;

static void check_splits(pretok_kind kind, const split_case *cases, int n_cases) {
    for (int c = 0; c < n_cases; c++) {
        pretok_iter it;
        pretok_iter_init(&it, kind, cases[c].text, strlen(cases[c].text));
        size_t a, b;
        int k = 0;
        while (pretok_iter_next(&it, &a, &b)) {
            const char *want = cases[c].pieces[k];
            if (!want || strlen(want) != b - a || memcmp(cases[c].text + a, want, b - a) != 0)
                fail_msg("%s \"%s\": piece %d is \"%.*s\", expected \"%s\"", pretok_kind_name(kind),
                         cases[c].text, k, (int)(b - a), cases[c].text + a, want ? want : "(end)");
            k++;
        }
        if (cases[c].pieces[k])
            fail_msg("%s \"%s\": ended before piece %d \"%s\"", pretok_kind_name(kind),
                     cases[c].text, k, cases[c].pieces[k]);
    }
}

/* Expected pieces are HF tokenizers 0.23.3's pre_tokenize_str output. */
static void test_pretokenize_splits(void **state) {
    (void)state;
    static const split_case gpt2[] = {
        {"I'm  fine\n\n", {"I", "'m", " ", " fine", "\n\n"}},
        {"a 12345 b", {"a", " 12345", " b"}},
        {"  \tx", {"  ", "\t", "x"}},
        {"Hello WORLD's 12345\n\n  x", {"Hello", " WORLD", "'s", " 12345", "\n\n ", " x"}},
        {"DON'T\tstop \r\n\r\n", {"DON", "'", "T", "\t", "stop", " \r\n\r\n"}},
        {"\"Quote\" ¿Qué? 3.14", {"\"", "Quote", "\"", " ¿", "Qué", "?", " 3", ".", "14"}},
        {"x  \n y", {"x", "  \n", " y"}},
    };
    static const split_case smollm[] = {
        {"a 12345 b", {"a", " ", "1", "2", "3", "4", "5", " b"}},
        {"Hello WORLD's 12345\n\n  x",
         {"Hello", " WORLD", "'s", " ", "1", "2", "3", "4", "5", "\n\n ", " x"}},
        {"\"Quote\" ¿Qué? 3.14", {"\"", "Quote", "\"", " ¿", "Qué", "?", " ", "3", ".", "1", "4"}},
        {"x²y", {"x", "²", "y"}},
    };
    static const split_case llama3[] = {
        {"a 12345 b", {"a", " ", "123", "45", " b"}},
        {"  \tx", {"  ", "\tx"}},
        {"Hello WORLD's 12345\n\n  x",
         {"Hello", " WORLD", "'s", " ", "123", "45", "\n\n", " ", " x"}},
        {"DON'T\tstop \r\n\r\n", {"DON", "'T", "\tstop", " \r\n\r\n"}},
        {"\"Quote\" ¿Qué? 3.14", {"\"Quote", "\"", " ¿", "Qué", "?", " ", "3", ".", "14"}},
        {"x  \n y", {"x", "  \n", " y"}},
    };
    check_splits(PRETOK_GPT2, gpt2, (int)(sizeof gpt2 / sizeof gpt2[0]));
    check_splits(PRETOK_SMOLLM, smollm, (int)(sizeof smollm / sizeof smollm[0]));
    check_splits(PRETOK_LLAMA3, llama3, (int)(sizeof llama3 / sizeof llama3[0]));
    pretok_kind k;
    assert_true(pretok_kind_from_name("llama-bpe", &k) && k == PRETOK_LLAMA3);
    assert_false(pretok_kind_from_name("qwen2", &k));
}

static void test_special_tokens(void **state) {
    (void)state;
    bpe_tokenizer *tok = small_tokenizer("smollm", false);
    /* Longest match wins: "<|endoftext|>" is not "<|end" + "oftext|>". */
    EXPECT(tok, "<|end|>hello<|endoftext|>", true, "<|end|>", "hello", "<|endoftext|>");
    /* Without parse_special the control token is plain text; the user-defined one still is one. */
    EXPECT(tok, "<|end|><tool>", false, "<", "|", "e", "n", "d", "|", ">", "<tool>");
    EXPECT(tok, "<|end|><tool>", true, "<|end|>", "<tool>");
    /* Text on both sides of a special is pre-tokenized separately: no "Ġ" joins across it. */
    EXPECT(tok, "he <tool> ll", false, "he", "Ġ", "<tool>", "Ġ", "ll");
    EXPECT(tok, "<|en", true, "<", "|", "e", "n");
    assert_int_equal(bpe_bos_id(tok), 1);
    assert_int_equal(bpe_eos_id(tok), 0);
    assert_string_equal(bpe_pre_name(tok), "smollm");
    bpe_destroy(tok);

    /* add_bos prepends; a too-small buffer reports the size needed. */
    const char *tokens[] = {"<s>", "a", "b", "ab"};
    const char *merges[] = {"a b"};
    bpe_spec spec = {.n_tokens = 4,
                     .tokens = tokens,
                     .n_merges = 1,
                     .merges = merges,
                     .pre = "gpt2",
                     .bos_id = 0,
                     .eos_id = -1,
                     .unk_id = -1,
                     .add_bos = true};
    char msg[128];
    assert_int_equal(bpe_create(&spec, &tok, msg, sizeof msg), DS_OK);
    int32_t ids[4];
    int n;
    assert_int_equal(bpe_encode(tok, "abab", 4, false, ids, 4, &n, msg, sizeof msg), DS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[0], 0);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 3);
    assert_int_equal(bpe_encode(tok, "ab a", 4, false, ids, 1, &n, msg, sizeof msg), DS_ERANGE);
    assert_int_equal(n, 3); /* bos ab a: the space has no byte token, dropped as HF does */
    bpe_destroy(tok);
}

static void test_bad_specs(void **state) {
    (void)state;
    const char *tokens[] = {"a", "b", "ab"};
    const char *bad_merge[] = {"a c"};
    const char *no_space[] = {"ab"};
    bpe_spec spec = {.n_tokens = 3,
                     .tokens = tokens,
                     .n_merges = 1,
                     .merges = bad_merge,
                     .pre = "gpt2",
                     .bos_id = -1,
                     .eos_id = -1,
                     .unk_id = -1};
    bpe_tokenizer *tok = (bpe_tokenizer *)1;
    char msg[128] = "";
    assert_int_equal(bpe_create(&spec, &tok, msg, sizeof msg), DS_ECORRUPT);
    assert_null(tok);
    assert_non_null(strstr(msg, "merge 0 \"a c\""));
    spec.merges = no_space;
    assert_int_equal(bpe_create(&spec, &tok, msg, sizeof msg), DS_ECORRUPT);
    spec.n_merges = 0;
    spec.pre = "klingon";
    assert_int_equal(bpe_create(&spec, &tok, msg, sizeof msg), DS_EUNSUPPORTED);
    assert_non_null(strstr(msg, "klingon"));
    spec.pre = "gpt2";
    spec.bos_id = 7;
    assert_int_equal(bpe_create(&spec, &tok, msg, sizeof msg), DS_ERANGE);
}

/* Any bytes at all: encode never crashes, and decode gives them back. */
static void test_invalid_utf8_round_trip(void **state) {
    (void)state;
    const char *kinds[] = {"gpt2", "smollm", "llama3"};
    uint32_t seed = 12345;
    for (int k = 0; k < 3; k++) {
        bpe_tokenizer *tok = small_tokenizer(kinds[k], k == 2);
        static const char fixed[] =
            "\xff\xfe abc \xc3 \xe2\x82 12\xf0\x9f\xa4 'S \xed\xa0\x80 \xc3";
        char text[300], back[300];
        int32_t ids[300];
        for (int trial = 0; trial < 500; trial++) {
            size_t len = sizeof fixed - 1;
            if (trial == 0) {
                memcpy(text, fixed, len);
            } else {
                len = (seed = seed * 1103515245u + 12345u) >> 24;
                for (size_t i = 0; i < len; i++) {
                    seed = seed * 1103515245u + 12345u;
                    uint8_t b = (uint8_t)(seed >> 16); /* bias toward text-like bytes */
                    text[i] = (char)((seed >> 30) ? b : " a1'\n\xc3\xa9\xf0"[b & 7]);
                }
            }
            int n;
            size_t n_back;
            assert_int_equal(bpe_encode(tok, text, len, true, ids, 300, &n, NULL, 0), DS_OK);
            assert_int_equal(bpe_decode(tok, ids, n, back, sizeof back, &n_back, NULL, 0), DS_OK);
            assert_int_equal(n_back, len);
            assert_memory_equal(back, text, len);
        }
        bpe_destroy(tok);
    }
}

/* ---- fixture -------------------------------------------------------------------------------- */

typedef struct sample {
    bool parse_special;
    char *text;
    size_t len;
    int32_t *ids;
    int n_ids;
} sample;

static int unhex(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static sample *load_fixture(int *n_samples) {
    FILE *f = fopen(FIXTURE_PATH, "rb");
    if (!f) fail_msg("%s: cannot open (run from the runfiles root)", FIXTURE_PATH);
    sample *samples = NULL;
    int n = 0, cap = 0;
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    while ((got = getline(&line, &line_cap, f)) > 0) {
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        assert_non_null(tab2);
        if (n == cap) samples = realloc(samples, sizeof *samples * (size_t)(cap = cap * 2 + 64));
        sample *s = &samples[n++];
        s->parse_special = line[0] == '1';
        s->text = malloc((size_t)(tab2 - tab1));
        s->len = 0;
        for (char *p = tab1 + 1; p < tab2; p++) {
            if (*p != '\\') {
                s->text[s->len++] = *p;
                continue;
            }
            p++;
            switch (*p) {
            case 'n': s->text[s->len++] = '\n'; break;
            case 't': s->text[s->len++] = '\t'; break;
            case 'r': s->text[s->len++] = '\r'; break;
            case '\\': s->text[s->len++] = '\\'; break;
            case 'x':
                s->text[s->len++] = (char)(unhex(p[1]) * 16 + unhex(p[2]));
                p += 2;
                break;
            default: fail_msg("%s line %d: bad escape \\%c", FIXTURE_PATH, n, *p);
            }
        }
        s->ids = malloc(sizeof(int32_t) * (size_t)(strlen(tab2) / 2 + 1));
        s->n_ids = 0;
        for (char *p = tab2 + 1; *p && *p != '\n';) {
            char *end;
            s->ids[s->n_ids++] = (int32_t)strtol(p, &end, 10);
            p = *end == ' ' ? end + 1 : end;
        }
    }
    free(line);
    fclose(f);
    assert_true(n >= 150);
    *n_samples = n;
    return samples;
}

static void free_fixture(sample *samples, int n) {
    for (int i = 0; i < n; i++) {
        free(samples[i].text);
        free(samples[i].ids);
    }
    free(samples);
}

/* decode(encode(x)) == x on every fixture text, through the small complete-byte vocabulary. */
static void test_fixture_round_trip(void **state) {
    (void)state;
    int n;
    sample *samples = load_fixture(&n);
    bpe_tokenizer *tok = small_tokenizer("smollm", false);
    for (int i = 0; i < n; i++) {
        int32_t *ids = malloc(sizeof(int32_t) * (samples[i].len + 1));
        char *back = malloc(samples[i].len + 1);
        int n_ids;
        size_t n_back;
        assert_int_equal(bpe_encode(tok, samples[i].text, samples[i].len, true, ids,
                                    (int)samples[i].len + 1, &n_ids, NULL, 0),
                         DS_OK);
        assert_int_equal(bpe_decode(tok, ids, n_ids, back, samples[i].len + 1, &n_back, NULL, 0),
                         DS_OK);
        if (n_back != samples[i].len || memcmp(back, samples[i].text, n_back) != 0)
            fail_msg("sample %d \"%.40s\": round trip differs", i, samples[i].text);
        free(ids);
        free(back);
    }
    bpe_destroy(tok);
    free_fixture(samples, n);
}

/* ---- streaming decoder ---------------------------------------------------------------------- */

static int32_t byte_id(uint8_t b) { return SMALL_FIRST_BYTE + b; }

static void push_expect(bpe_decoder *dec, int32_t id, const char *want) {
    const char *text;
    size_t len;
    assert_int_equal(bpe_decoder_push(dec, id, &text, &len, NULL, 0), DS_OK);
    if (len != strlen(want) || memcmp(text, want, len) != 0)
        fail_msg("push %d: got \"%.*s\" (%zu bytes), expected \"%s\"", id, (int)len, text, len,
                 want);
}

static void test_stream_decoder(void **state) {
    (void)state;
    bpe_tokenizer *tok = small_tokenizer("gpt2", false);
    bpe_decoder *dec;
    assert_int_equal(bpe_decoder_create(tok, true, &dec, NULL, 0), DS_OK);
    /* 🤗 = F0 9F A4 97 arrives one byte per token: nothing until the fourth. */
    push_expect(dec, bpe_token_id(tok, "hello", 5), "hello");
    push_expect(dec, byte_id(0xF0), "");
    push_expect(dec, byte_id(0x9F), "");
    push_expect(dec, byte_id(0xA4), "");
    push_expect(dec, byte_id(0x97), "\xF0\x9F\xA4\x97");
    push_expect(dec, bpe_token_id(tok, "Ġworld", strlen("Ġworld")), " world");
    /* A control token is skipped and does not disturb a held-back prefix. */
    push_expect(dec, byte_id(0xC3), "");
    push_expect(dec, 0, "");
    push_expect(dec, byte_id(0xA9), "\xC3\xA9");
    /* Bytes that can never be UTF-8 come out as U+FFFD at once. */
    push_expect(dec, byte_id(0xFF), "\xEF\xBF\xBD");
    push_expect(dec, byte_id(0x80), "\xEF\xBF\xBD");
    /* A started character broken by ASCII: one U+FFFD for the broken part, then the ASCII. */
    push_expect(dec, byte_id(0xF0), "");
    push_expect(dec, byte_id(0x9F), "");
    push_expect(dec, byte_id('a'),
                "\xEF\xBF\xBD"
                "a");
    /* Surrogates (ED A0..) are invalid from the second byte on. */
    push_expect(dec, byte_id(0xED), "");
    push_expect(dec, byte_id(0xA0), "\xEF\xBF\xBD\xEF\xBF\xBD");
    /* Flush turns an unfinished character into U+FFFD and empties the decoder. */
    push_expect(dec, byte_id(0xE2), "");
    push_expect(dec, byte_id(0x82), "");
    const char *text;
    size_t len;
    bpe_decoder_flush(dec, &text, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(text, "\xEF\xBF\xBD", 3);
    bpe_decoder_flush(dec, &text, &len);
    assert_int_equal(len, 0);
    assert_int_equal(bpe_decoder_push(dec, -3, &text, &len, NULL, 0), DS_EINVAL);
    bpe_decoder_destroy(dec);

    /* Without skip_control the control token's text comes out. */
    assert_int_equal(bpe_decoder_create(tok, false, &dec, NULL, 0), DS_OK);
    push_expect(dec, 0, "<|end|>");
    bpe_decoder_destroy(dec);
    bpe_destroy(tok);
}

/* ---- tokenizer.json ------------------------------------------------------------------------- */

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* TEST_TMPDIR/tokenizer.json and the tokenizer_config.json path beside it. */
static void tokenizer_paths(char json_path[512], char config_path[512]) {
    const char *dir = getenv("TEST_TMPDIR");
    snprintf(json_path, 512, "%s/tokenizer.json", dir ? dir : "/tmp");
    snprintf(config_path, 512, "%s/tokenizer_config.json", dir ? dir : "/tmp");
}

/* Both merge spellings, an added special and a non-special token, SmolLM2's pre-tokenizer. */
static void write_tokenizer_json(const char *path) {
    write_file(path,
               "{\"version\": \"1.0\", \"normalizer\": null,"
               " \"added_tokens\": [{\"id\": 0, \"content\": \"<|im_end|>\", \"special\": true},"
               "                    {\"id\": 9, \"content\": \"<x y>\", \"special\": false}],"
               " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": ["
               "   {\"type\": \"Digits\", \"individual_digits\": true},"
               "   {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,"
               "    \"use_regex\": true}]},"
               " \"decoder\": {\"type\": \"ByteLevel\"},"
               " \"model\": {\"type\": \"BPE\", \"unk_token\": null, \"byte_fallback\": false,"
               "   \"vocab\": {\"<|im_end|>\": 0, \"a\": 1, \"b\": 2, \"\\u0120\": 3, \"ab\": 4,"
               "               \"\\u0120ab\": 5, \"1\": 6, \"2\": 7, \"12\": 8},"
               "   \"merges\": [\"a b\", [\"\\u0120\", \"ab\"], \"1 2\"]}}");
}

static void test_tokenizer_json(void **state) {
    (void)state;
    char json_path[512], config_path[512];
    tokenizer_paths(json_path, config_path);
    write_tokenizer_json(json_path);
    write_file(config_path, "{\"eos_token\": \"<|im_end|>\", \"bos_token\": {\"content\": \"a\"}}");
    bpe_tokenizer *tok = NULL;
    char msg[1024] = "";
    ds_status st = bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg);
    if (st != DS_OK) fail_msg("load: %s", msg);
    assert_int_equal(bpe_vocab_size(tok), 10);
    EXPECT(tok, "ab abab<|im_end|>12<x y>", true, "ab", "Ġab", "ab", "<|im_end|>", "1", "2",
           "<x y>");
    size_t len;
    const char *bytes = bpe_token_bytes(tok, 9, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(bytes, "<x y>", 5); /* raw space: not in the byte alphabet, kept as is */
    assert_int_equal(bpe_token_type(tok, 0), BPE_TOKEN_CONTROL);
    assert_int_equal(bpe_token_type(tok, 9), BPE_TOKEN_USER_DEFINED);
    assert_int_equal(bpe_eos_id(tok), 0);
    assert_int_equal(bpe_bos_id(tok), 1);
    assert_string_equal(bpe_pre_name(tok), "smollm");
    bpe_destroy(tok);
    remove(config_path);

    write_file(json_path, "{\"pre_tokenizer\": {\"type\": \"Metaspace\"},"
                          " \"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}");
    assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_EUNSUPPORTED);
    assert_non_null(strstr(msg, "pre_tokenizer"));
    write_file(json_path, "{\"model\": ");
    assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_ECORRUPT);
    assert_non_null(strstr(msg, json_path));
    assert_non_null(strstr(msg, "invalid JSON at line 1, column 11"));
    remove(json_path);
    assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_ENOTFOUND);
    assert_non_null(strstr(msg, json_path));
}

/* A tokenizer_config.json that is there must be readable and a JSON object: the error names it.
 * One that is absent is fine (bos/eos then come from tokenizer.json alone). */
static void test_tokenizer_config_malformed(void **state) {
    (void)state;
    char json_path[512], config_path[512], msg[1024];
    tokenizer_paths(json_path, config_path);
    write_tokenizer_json(json_path);
    static const struct {
        const char *text, *needle;
    } bad[] = {
        {"{\"eos_token\": ", "invalid JSON at line 1, column 15"},
        {"{\"eos_token\": \"<|im_end|>\"} x", "invalid JSON at line 1, column 29"},
        {"[\"<|im_end|>\"]", "not a JSON object"},
    };
    bpe_tokenizer *tok;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(config_path, bad[i].text);
        assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_ECORRUPT);
        assert_null(tok);
        if (!strstr(msg, config_path) || !strstr(msg, bad[i].needle))
            fail_msg("config %s: message '%s' lacks the path or '%s'", bad[i].text, msg,
                     bad[i].needle);
    }
    remove(config_path);
    assert_int_equal(mkdir(config_path, 0755), 0); /* there, but not a readable file */
    assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_EIO);
    assert_null(tok);
    assert_non_null(strstr(msg, config_path));
    rmdir(config_path);

    assert_int_equal(bpe_load_tokenizer_json(json_path, &tok, msg, sizeof msg), DS_OK);
    assert_int_equal(bpe_eos_id(tok), -1);
    assert_int_equal(bpe_bos_id(tok), -1);
    bpe_destroy(tok);
    remove(json_path);
}

/* ---- GGUF metadata skimmer (test only): reads the tokenizer.ggml.* keys, skips the rest ---- */

typedef struct gguf_vocab {
    char **tokens;
    size_t *token_lens;
    int32_t *types;
    char **merges;
    size_t *merge_lens;
    int32_t n_tokens, n_types, n_merges;
    char pre[64];
    int32_t bos, eos, unk;
    bool add_bos;
} gguf_vocab;

static bool rd(FILE *f, void *p, size_t n) { return fread(p, 1, n, f) == n; }

static uint64_t rd_u64(FILE *f) {
    uint64_t v = 0;
    assert_true(rd(f, &v, 8));
    return v;
}

static uint32_t rd_u32(FILE *f) {
    uint32_t v = 0;
    assert_true(rd(f, &v, 4));
    return v;
}

static char *rd_string(FILE *f, size_t *len) {
    uint64_t n = rd_u64(f);
    assert_true(n < (1u << 24));
    char *s = malloc(n + 1);
    assert_true(rd(f, s, n));
    s[n] = 0;
    if (len) *len = n;
    return s;
}

static void skip_value(FILE *f, uint32_t type) {
    static const int size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    assert_true(type <= 12);
    if (type == 8) {
        free(rd_string(f, NULL));
    } else if (type == 9) {
        uint32_t et = rd_u32(f);
        uint64_t n = rd_u64(f);
        for (uint64_t i = 0; i < n; i++)
            skip_value(f, et);
    } else {
        assert_int_equal(fseek(f, size[type], SEEK_CUR), 0);
    }
}

static int64_t rd_int(FILE *f, uint32_t type) {
    int64_t v = 0;
    switch (type) {
    case 4: v = rd_u32(f); break;
    case 5: v = (int32_t)rd_u32(f); break;
    case 10:
    case 11: v = (int64_t)rd_u64(f); break;
    default: fail_msg("gguf: integer key of type %u", type);
    }
    return v;
}

static void load_gguf_vocab(const char *path, gguf_vocab *v) {
    memset(v, 0, sizeof *v);
    v->bos = v->eos = v->unk = -1;
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: cannot open", path);
    char magic[4];
    assert_true(rd(f, magic, 4) && memcmp(magic, "GGUF", 4) == 0);
    uint32_t version = rd_u32(f);
    assert_true(version >= 2);
    rd_u64(f); /* tensor count */
    uint64_t n_kv = rd_u64(f);
    for (uint64_t k = 0; k < n_kv; k++) {
        char *key = rd_string(f, NULL);
        uint32_t type = rd_u32(f);
        bool is_tokens = !strcmp(key, "tokenizer.ggml.tokens");
        bool is_merges = !strcmp(key, "tokenizer.ggml.merges");
        if ((is_tokens || is_merges) && type == 9) {
            assert_int_equal(rd_u32(f), 8);
            uint64_t n = rd_u64(f);
            char **s = malloc(sizeof(char *) * n);
            size_t *lens = malloc(sizeof(size_t) * n);
            for (uint64_t i = 0; i < n; i++)
                s[i] = rd_string(f, &lens[i]);
            if (is_tokens)
                v->tokens = s, v->token_lens = lens, v->n_tokens = (int32_t)n;
            else
                v->merges = s, v->merge_lens = lens, v->n_merges = (int32_t)n;
        } else if (!strcmp(key, "tokenizer.ggml.token_type") && type == 9) {
            assert_int_equal(rd_u32(f), 5);
            uint64_t n = rd_u64(f);
            v->types = malloc(sizeof(int32_t) * n);
            assert_true(rd(f, v->types, 4 * n));
            v->n_types = (int32_t)n;
        } else if (!strcmp(key, "tokenizer.ggml.pre") && type == 8) {
            char *s = rd_string(f, NULL);
            snprintf(v->pre, sizeof v->pre, "%s", s);
            free(s);
        } else if (!strcmp(key, "tokenizer.ggml.bos_token_id")) {
            v->bos = (int32_t)rd_int(f, type);
        } else if (!strcmp(key, "tokenizer.ggml.eos_token_id")) {
            v->eos = (int32_t)rd_int(f, type);
        } else if (!strcmp(key, "tokenizer.ggml.unknown_token_id")) {
            v->unk = (int32_t)rd_int(f, type);
        } else if (!strcmp(key, "tokenizer.ggml.add_bos_token") && type == 7) {
            uint8_t b;
            assert_true(rd(f, &b, 1));
            v->add_bos = b != 0;
        } else {
            skip_value(f, type);
        }
        free(key);
    }
    fclose(f);
    assert_int_equal(v->n_types, v->n_tokens);
}

static void free_gguf_vocab(gguf_vocab *v) {
    for (int32_t i = 0; i < v->n_tokens; i++)
        free(v->tokens[i]);
    for (int32_t i = 0; i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tokens);
    free(v->token_lens);
    free(v->merges);
    free(v->merge_lens);
    free(v->types);
}

static bpe_tokenizer *smollm2_from_gguf(const char *path) {
    gguf_vocab v;
    load_gguf_vocab(path, &v);
    bpe_spec spec = {
        .n_tokens = v.n_tokens,
        .tokens = (const char *const *)v.tokens,
        .token_lens = v.token_lens,
        .token_types = v.types,
        .n_merges = v.n_merges,
        .merges = (const char *const *)v.merges,
        .merge_lens = v.merge_lens,
        .pre = v.pre,
        .bos_id = v.bos,
        .eos_id = v.eos,
        .unk_id = v.unk,
        .add_bos = v.add_bos,
    };
    bpe_tokenizer *tok = NULL;
    char msg[256] = "";
    ds_status st = bpe_create(&spec, &tok, msg, sizeof msg);
    free_gguf_vocab(&v);
    if (st != DS_OK) fail_msg("%s: bpe_create: %s", path, msg);
    return tok;
}

static void check_fixture_ids(const bpe_tokenizer *tok, const char *source) {
    int n;
    sample *samples = load_fixture(&n);
    for (int i = 0; i < n; i++) {
        const sample *s = &samples[i];
        int32_t *ids = malloc(sizeof(int32_t) * (s->len + 2));
        int n_ids;
        char msg[256] = "";
        ds_status st = bpe_encode(tok, s->text, s->len, s->parse_special, ids, (int)s->len + 2,
                                  &n_ids, msg, sizeof msg);
        if (st != DS_OK) fail_msg("%s: sample %d: %s", source, i, msg);
        for (int k = 0; k < n_ids || k < s->n_ids; k++) {
            int32_t got = k < n_ids ? ids[k] : -1, want = k < s->n_ids ? s->ids[k] : -1;
            if (got == want) continue;
            fail_msg("%s: sample %d (line %d) \"%.60s\": id %d is %d \"%s\", HF has %d \"%s\" "
                     "(%d ids vs %d)",
                     source, i, i + 1, s->text, k, got, got >= 0 ? bpe_token_text(tok, got) : "",
                     want, want >= 0 ? bpe_token_text(tok, want) : "", n_ids, s->n_ids);
        }
        free(ids);
    }
    free_fixture(samples, n);
}

static void test_model_fixture_ids(void **state) {
    (void)state;
    const char *path = test_model_path("SmolLM2's token ids against the fixture");
    bpe_tokenizer *tok = smollm2_from_gguf(path);
    assert_int_equal(bpe_vocab_size(tok), 49152);
    assert_string_equal(bpe_pre_name(tok), "smollm");
    assert_int_equal(bpe_token_id(tok, "<|im_start|>", 12), 1);
    check_fixture_ids(tok, path);
    bpe_destroy(tok);

    /* The tokenizer.json tools/tokenizer_fixture.py saved from the same GGUF, if given. */
    const char *json = getenv("DECOSERVE_TOKENIZER_JSON");
    if (json) {
        char msg[256] = "";
        if (bpe_load_tokenizer_json(json, &tok, msg, sizeof msg) != DS_OK) fail_msg("%s", msg);
        check_fixture_ids(tok, json);
        bpe_destroy(tok);
    }
}

static void test_model_encode_rate(void **state) {
    (void)state;
    const char *path = test_model_path("SmolLM2's encode rate");
    const char *corpus = getenv("DECOSERVE_CORPUS");
    if (!corpus) corpus = "/work/shared/corpora/janeausten/emma.txt";
    char *text, msg[512];
    size_t len;
    if (ds_read_file(corpus, 1u << 30, &text, &len, msg, sizeof msg) != DS_OK) {
        print_message("%s (set DECOSERVE_CORPUS): no timing\n", msg);
        skip();
    }
    bpe_tokenizer *tok = smollm2_from_gguf(path);
    int32_t *ids = malloc(sizeof(int32_t) * len);
    int n_ids;
    double t0 = ds_now_s();
    assert_int_equal(bpe_encode(tok, text, len, false, ids, (int)len, &n_ids, NULL, 0), DS_OK);
    double dt = ds_now_s() - t0;
    print_message("encoded %s: %zu bytes -> %d tokens in %.3f s (%.1f MB/s, %.0f tokens/s)\n",
                  corpus, len, n_ids, dt, (double)len / dt / 1e6, n_ids / dt);
    char *back = malloc(len);
    size_t n_back;
    assert_int_equal(bpe_decode(tok, ids, n_ids, back, len, &n_back, NULL, 0), DS_OK);
    assert_int_equal(n_back, len);
    assert_memory_equal(back, text, len);
    assert_true(dt < 10.0); /* about 0.2 s in an optimized build; sanitizers are slower */
    free(back);
    free(ids);
    free(text);
    bpe_destroy(tok);
}

int main(int argc, char **argv) {
    const struct CMUnitTest unit[] = {
        cmocka_unit_test(test_merges_by_rank),
        cmocka_unit_test(test_ignore_merges_and_digits),
        cmocka_unit_test(test_pretokenize_splits),
        cmocka_unit_test(test_special_tokens),
        cmocka_unit_test(test_bad_specs),
        cmocka_unit_test(test_invalid_utf8_round_trip),
        cmocka_unit_test(test_fixture_round_trip),
        cmocka_unit_test(test_stream_decoder),
        cmocka_unit_test(test_tokenizer_json),
        cmocka_unit_test(test_tokenizer_config_malformed),
    };
    const struct CMUnitTest model[] = {
        cmocka_unit_test(test_model_fixture_ids),
        cmocka_unit_test(test_model_encode_rate),
    };
    if (argc > 1 && strcmp(argv[1], "--model") == 0)
        return cmocka_run_group_tests_name("bpe_model", model, NULL, NULL);
    return cmocka_run_group_tests_name("bpe", unit, NULL, NULL);
}
