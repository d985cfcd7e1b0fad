/* stop_test — stop strings split across deltas, overlapping prefixes, several strings, UTF-8,
 * flush at the end, limits; and a seeded random comparison against a brute-force search over the
 * whole text, for random splits into deltas. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/stop.h"

typedef struct stream {
    stop_matcher m;
    char text[4096]; /* everything emitted so far */
    size_t len;
    int stop; /* last return of stop_feed */
} stream;

static void stream_init(stream *s, const char *const *stops, int n, int include_stop) {
    char msg[128];
    memset(s, 0, sizeof *s);
    assert_int_equal(stop_init(&s->m, stops, n, include_stop, msg, sizeof msg), DS_OK);
    s->stop = STOP_NONE;
}

/* Feeds delta; returns the bytes emitted by this call (checked to fit the documented bound). */
static size_t stream_feed(stream *s, const char *delta, size_t n) {
    char out[STOP_OUT_CAP(64)];
    assert_true(n <= 64);
    size_t n_out = 12345;
    s->stop = stop_feed(&s->m, delta, n, out, sizeof out, &n_out);
    assert_true(n_out <= STOP_OUT_CAP(n));
    assert_true(s->len + n_out < sizeof s->text);
    memcpy(s->text + s->len, out, n_out);
    s->len += n_out;
    s->text[s->len] = '\0';
    return n_out;
}

static void stream_feed_str(stream *s, const char *delta) { stream_feed(s, delta, strlen(delta)); }

static void stream_flush(stream *s) {
    char out[STOP_MAX_LEN];
    size_t n = stop_flush(&s->m, out, sizeof out);
    memcpy(s->text + s->len, out, n);
    s->len += n;
    s->text[s->len] = '\0';
}

static void test_no_stop_strings_pass_through(void **state) {
    (void)state;
    stream s;
    stream_init(&s, NULL, 0, 0);
    assert_int_equal(stream_feed(&s, "hello", 5), 5);
    assert_int_equal(stream_feed(&s, "", 0), 0);
    assert_int_equal(s.stop, STOP_NONE);
    stream_flush(&s);
    assert_string_equal(s.text, "hello");
}

static void test_split_across_many_deltas(void **state) {
    (void)state;
    const char *stops[] = {"<|im_end|>"};
    stream s;
    stream_init(&s, stops, 1, 0);
    assert_int_equal(stream_feed(&s, "Hello", 5), 5);
    /* Byte by byte: everything from '<' on is held back until it matches. */
    const char *rest = "<|im_end|> ignored";
    for (size_t i = 0; i < 9; i++) {
        assert_int_equal(stream_feed(&s, rest + i, 1), 0);
        assert_int_equal(s.stop, STOP_NONE);
    }
    stream_feed(&s, rest + 9, 1);
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "Hello");
    /* After the stop, nothing more comes out. */
    assert_int_equal(stream_feed(&s, "more", 4), 0);
    assert_int_equal(s.stop, 0);
    stream_flush(&s);
    assert_string_equal(s.text, "Hello");
}

static void test_held_prefix_released_when_it_diverges(void **state) {
    (void)state;
    const char *stops[] = {"<|im_end|>"};
    stream s;
    stream_init(&s, stops, 1, 0);
    assert_int_equal(stream_feed(&s, "a <|im", 6), 2);
    assert_int_equal(stream_feed(&s, "_start", 6), 10); /* no longer a prefix: all released */
    assert_string_equal(s.text, "a <|im_start");
}

static void test_overlapping_prefixes(void **state) {
    (void)state;
    /* "abab" in "ababab": the first occurrence (offset 0) ends first. */
    const char *abab[] = {"abab"};
    stream s;
    stream_init(&s, abab, 1, 0);
    stream_feed_str(&s, "x");
    for (const char *p = "ababab"; *p && s.stop == STOP_NONE; p++)
        stream_feed(&s, p, 1);
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "x");
    /* "abac" in "ababac": a naive matcher that restarts after the mismatch at offset 3 misses it;
     * "ab" must be released and "abac" found at offset 2. */
    const char *abac[] = {"abac"};
    stream_init(&s, abac, 1, 0);
    stream_feed_str(&s, "a");
    stream_feed_str(&s, "b");
    stream_feed_str(&s, "a");
    assert_int_equal(stream_feed(&s, "b", 1), 2); /* "ab" can no longer start "abac" */
    stream_feed_str(&s, "a");
    stream_feed_str(&s, "c");
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "ab");
}

/* The match that ends first wins, independent of delta boundaries and list order. */
static void test_several_strings_earliest_end(void **state) {
    (void)state;
    const char *stops[] = {"abcd", "bc"};
    stream s;
    stream_init(&s, stops, 2, 0);
    stream_feed_str(&s, "xabcdy");
    assert_int_equal(s.stop, 1);
    assert_string_equal(s.text, "xa");
    stream_init(&s, stops, 2, 0);
    for (const char *p = "xabcdy"; *p; p++)
        stream_feed(&s, p, 1);
    assert_int_equal(s.stop, 1);
    assert_string_equal(s.text, "xa");
    /* Same end: the longer string (earlier start) wins. */
    const char *same_end[] = {"c", "abc"};
    stream_init(&s, same_end, 2, 0);
    stream_feed_str(&s, "zabc");
    assert_int_equal(s.stop, 1);
    assert_string_equal(s.text, "z");
}

static void test_include_stop(void **state) {
    (void)state;
    const char *stops[] = {"STOP"};
    stream s;
    stream_init(&s, stops, 1, 1);
    stream_feed_str(&s, "go ST");
    stream_feed_str(&s, "OP now");
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "go STOP");
}

/* Multi-byte characters: chunks split inside characters, cuts land on character boundaries. */
static void test_utf8(void **state) {
    (void)state;
    const char *stops[] = {"\xe3\x80\x82", "\xe4\xb8\x96\xe7\x95\x8c"}; /* "。", "世界" */
    stream s;
    stream_init(&s, stops, 2, 0);
    /* "你好世" then "间": "世" is held (could start "世界"), then released with "间". */
    stream_feed_str(&s, "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96");
    assert_string_equal(s.text, "\xe4\xbd\xa0\xe5\xa5\xbd");
    stream_feed_str(&s, "\xe9\x97\xb4");
    assert_string_equal(s.text, "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe9\x97\xb4");
    /* "ok。" fed one byte at a time, the stop's bytes split over three deltas. */
    stream_init(&s, stops, 2, 0);
    const char *text = "ok\xe3\x80\x82tail";
    for (size_t i = 0; text[i] && s.stop == STOP_NONE; i++)
        stream_feed(&s, text + i, 1);
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "ok");
}

static void test_flush_at_end(void **state) {
    (void)state;
    const char *stops[] = {"<|im_end|>", "\n\nUser:"};
    stream s;
    stream_init(&s, stops, 2, 0);
    stream_feed_str(&s, "Hello <|im");
    assert_string_equal(s.text, "Hello ");
    stream_feed_str(&s, "_e");
    stream_feed_str(&s, "\n");
    assert_string_equal(s.text, "Hello <|im_e"); /* "\n" could start "\n\nUser:" */
    stream_flush(&s);
    assert_string_equal(s.text, "Hello <|im_e\n");
    assert_int_equal(s.stop, STOP_NONE);
}

static void test_limits(void **state) {
    (void)state;
    stop_matcher m;
    char msg[128];
    const char *many[STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= STOP_MAX_STRINGS; i++)
        many[i] = "x";
    assert_int_equal(stop_init(&m, many, STOP_MAX_STRINGS, 0, msg, sizeof msg), DS_OK);
    assert_int_equal(stop_init(&m, many, STOP_MAX_STRINGS + 1, 0, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "stop: 17 strings: at most 16 allowed");
    static char longest[STOP_MAX_LEN + 2];
    memset(longest, 'a', STOP_MAX_LEN);
    const char *ok[] = {"b", longest};
    assert_int_equal(stop_init(&m, ok, 2, 0, msg, sizeof msg), DS_OK);
    longest[STOP_MAX_LEN] = 'a';
    assert_int_equal(stop_init(&m, ok, 2, 0, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "stop[1]: longer than 256 bytes");
    const char *empty[] = {"a", "b", ""};
    assert_int_equal(stop_init(&m, empty, 3, 0, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "stop[2]: empty string");
    const char *bad_utf8[] = {"\xe4\xb8"}; /* truncated */
    assert_int_equal(stop_init(&m, bad_utf8, 1, 0, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, "stop[0]: not valid UTF-8");
    const char *overlong[] = {"\xc0\xaf"};
    assert_int_equal(stop_init(&m, overlong, 1, 0, msg, sizeof msg), DS_EINVAL);
}

/* A 256-byte stop string split over deltas: at most 255 bytes are ever held. */
static void test_longest_string(void **state) {
    (void)state;
    static char big[STOP_MAX_LEN + 1];
    memset(big, 'q', STOP_MAX_LEN);
    const char *stops[] = {big};
    static stream s;
    stream_init(&s, stops, 1, 0);
    stream_feed_str(&s, "start ");
    for (int i = 0; i < 300 && s.stop == STOP_NONE; i += 10) {
        stream_feed(&s, big, 10);
        assert_true(s.m.n_held < STOP_MAX_LEN);
    }
    assert_int_equal(s.stop, 0);
    assert_string_equal(s.text, "start ");
}

/* Brute force: the earliest-ending (then longest) occurrence in the whole text. */
static size_t reference_cut(const char *text, size_t len, char stops[][8], int n, int *which) {
    for (size_t end = 1; end <= len; end++)
        for (size_t l = end; l >= 1; l--)
            for (int s = 0; s < n; s++)
                if (strlen(stops[s]) == l && memcmp(text + end - l, stops[s], l) == 0) {
                    *which = s;
                    return end - l;
                }
    *which = STOP_NONE;
    return len;
}

static void test_random_against_brute_force(void **state) {
    (void)state;
    uint64_t rng = 12345;
#define NEXT() (rng = rng * 6364136223846793005ull + 1442695040888963407ull, (rng >> 33))
    for (int iter = 0; iter < 3000; iter++) {
        int n = (int)(NEXT() % 4);
        char stops[4][8];
        const char *ptrs[4];
        for (int s = 0; s < n; s++) {
            int l = 1 + (int)(NEXT() % 5);
            for (int c = 0; c < l; c++)
                stops[s][c] = (char)('a' + NEXT() % 3);
            stops[s][l] = '\0';
            ptrs[s] = stops[s];
        }
        char text[64];
        size_t len = NEXT() % sizeof text;
        for (size_t c = 0; c < len; c++)
            text[c] = (char)('a' + NEXT() % 3);
        int want_stop;
        size_t cut = reference_cut(text, len, stops, n, &want_stop);

        stream s;
        stream_init(&s, ptrs, n, 0);
        for (size_t pos = 0; pos < len && s.stop == STOP_NONE;) {
            size_t d = 1 + NEXT() % 6;
            if (d > len - pos) d = len - pos;
            stream_feed(&s, text + pos, d);
            pos += d;
        }
        if (s.stop == STOP_NONE) stream_flush(&s);
        if (s.stop != want_stop || s.len != cut || memcmp(s.text, text, cut) != 0)
            fail_msg("iter %d: text '%.*s', got stop %d len %zu, want stop %d len %zu", iter,
                     (int)len, text, s.stop, s.len, want_stop, cut);
    }
#undef NEXT
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_stop_strings_pass_through),
        cmocka_unit_test(test_split_across_many_deltas),
        cmocka_unit_test(test_held_prefix_released_when_it_diverges),
        cmocka_unit_test(test_overlapping_prefixes),
        cmocka_unit_test(test_several_strings_earliest_end),
        cmocka_unit_test(test_include_stop),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_flush_at_end),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_longest_string),
        cmocka_unit_test(test_random_against_brute_force),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
