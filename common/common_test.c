/* common_test — fp16 conversion (the storage type of every KV page), status helpers and the
 * whole-file / JSON-file readers with the status each kind of failure gets. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "common/file.h"
#include "common/half.h"
#include "common/status.h"
#include "common/utf8.h"

/* Every one of the 65536 half values survives half -> float -> half (NaNs stay NaN). */
static void test_half_round_trip_all(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ds_half_to_float((uint16_t)h);
        uint16_t back = ds_float_to_half(f);
        if (isnan(f)) {
            assert_true(isnan(ds_half_to_float(back)));
        } else {
            assert_int_equal(back, h);
        }
    }
}

static void test_half_known_values(void **state) {
    (void)state;
    assert_int_equal(ds_float_to_half(1.0f), 0x3c00);
    assert_int_equal(ds_float_to_half(-2.0f), 0xc000);
    assert_int_equal(ds_float_to_half(65504.0f), 0x7bff);
    assert_int_equal(ds_float_to_half(1e6f), 0x7c00);                   /* overflow -> inf */
    assert_int_equal(ds_float_to_half(5.960464477539063e-08f), 0x0001); /* smallest subnormal */
    assert_int_equal(ds_float_to_half(1.0f + 1.0f / 2048.0f), 0x3c00);  /* tie -> even */
    assert_int_equal(ds_float_to_half(1.0f + 3.0f / 2048.0f), 0x3c02);  /* tie -> even (up) */
    assert_float_equal(ds_half_to_float(0x3555), 0.333251953125f, 0.0f);
    assert_float_equal(ds_bf16_to_float(0x3f80), 1.0f, 0.0f);
}

/* Rounding error of a normal value is at most half an ulp (2^-11 relative). */
static void test_half_rounding_bound(void **state) {
    (void)state;
    for (int i = 1; i < 100000; i++) {
        float f = (float)i * 0.37f - 12345.0f;
        float r = ds_round_half(f);
        assert_true(fabsf(r - f) <= fabsf(f) * (1.0f / 2048.0f) + 1e-7f);
    }
}

/* The row converters (F16C where present) agree bit for bit with the scalar ones. */
static void test_half_rows_match_scalar(void **state) {
    (void)state;
    enum { N = 65536 + 13 };
    static uint16_t h[N], back[N];
    static float f[N], g[N];
    for (uint32_t i = 0; i < N; i++)
        h[i] = (uint16_t)(i * 40503u);
    ds_half_to_float_n(h, f, N);
    for (uint32_t i = 0; i < N; i++) {
        float want = ds_half_to_float(h[i]);
        if (isnan(want))
            assert_true(isnan(f[i]));
        else
            assert_memory_equal(&f[i], &want, sizeof want);
    }
    for (uint32_t i = 0; i < N; i++)
        g[i] = ((float)i - 30000.5f) * 0.731f * (i % 7 ? 1.0f : 1e-6f);
    ds_float_to_half_n(g, back, N);
    for (uint32_t i = 0; i < N; i++)
        assert_int_equal(back[i], ds_float_to_half(g[i]));
}

static void test_status_messages(void **state) {
    (void)state;
    char msg[64];
    ds_status st = ds_fail(msg, sizeof msg, DS_EINVAL, "bits=%d: expected 2, 4, 8 or 16", 3);
    assert_int_equal(st, DS_EINVAL);
    assert_string_equal(msg, "bits=3: expected 2, 4, 8 or 16");
    assert_string_equal(ds_status_str(DS_ENOMEM), "out of memory");
    assert_int_equal(ds_fail(NULL, 0, DS_ERANGE, "x"), DS_ERANGE);
}

/* Every way a sequence can be invalid is refused at its first byte; valid text of every length
 * passes whole. */
static void test_utf8_invalid_at(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t at;
    } cases[] = {
        {"Hi", 2},
        {"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10}, /* 1 to 4 bytes */
        {"Hi\xff", 2},                                 /* never a lead byte */
        {"\xc0\xaf", 0},                               /* overlong '/' */
        {"x\xe0\x80\xaf", 1},                          /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 0},                       /* overlong, 4 bytes */
        {"ab\xed\xa0\x80", 2},                         /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", 0},                       /* above U+10FFFF */
        {"ok\xe2\x82", 2},                             /* truncated */
        {"\xe2\x28\xa1", 0},                           /* bad continuation */
        {"\x80", 0},                                   /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = ds_utf8_invalid_at(cases[i].s, strlen(cases[i].s));
        if (got != cases[i].at) fail_msg("case %zu: invalid at %zu, want %zu", i, got, cases[i].at);
    }
    assert_int_equal(ds_utf8_invalid_at("", 0), 0);
}

/* ---- whole-file and JSON reads ---- */

static const char *tmp_file(const char *name) {
    static char path[512];
    const char *dir = getenv("TEST_TMPDIR");
    snprintf(path, sizeof path, "%s/%s", dir ? dir : "/tmp", name);
    return path;
}

static const char *write_tmp(const char *name, const void *data, size_t len) {
    const char *path = tmp_file(name);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static void assert_contains(const char *haystack, const char *needle) {
    if (!strstr(haystack, needle)) fail_msg("message '%s' does not mention '%s'", haystack, needle);
}

/* A file of exactly max_bytes is read whole (bytes after a NUL too); one byte more is DS_ERANGE. */
static void test_read_file_limit(void **state) {
    (void)state;
    static const char data[] = "line one\n\0binary\xff tail";
    const char *path = write_tmp("limit.bin", data, sizeof data - 1);
    char msg[256], *text;
    size_t len;
    assert_int_equal(ds_read_file(path, sizeof data - 1, &text, &len, msg, sizeof msg), DS_OK);
    assert_int_equal(len, sizeof data - 1);
    assert_memory_equal(text, data, sizeof data); /* and the NUL after it */
    free(text);
    assert_int_equal(ds_read_file(path, sizeof data - 2, &text, &len, msg, sizeof msg), DS_ERANGE);
    assert_null(text);
    assert_contains(msg, path);
    assert_contains(msg, "larger than");

    path = write_tmp("empty.txt", "", 0);
    assert_int_equal(ds_read_file(path, 0, &text, &len, msg, sizeof msg), DS_OK);
    assert_int_equal(len, 0);
    assert_string_equal(text, "");
    free(text);
}

/* A pipe has no size to go by: the buffer grows, and the limit still holds. */
static void test_read_file_pipe(void **state) {
    (void)state;
    enum { N = 60000 }; /* fits in a pipe's buffer, so one thread can write it all first */
    static char data[N];
    for (int i = 0; i < N; i++)
        data[i] = (char)('a' + i * 7 % 26);
    for (int limit = N; limit >= N - 1; limit--) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        assert_int_equal(write(fds[1], data, N), N);
        close(fds[1]);
        char path[64], msg[256], *text;
        size_t len;
        snprintf(path, sizeof path, "/dev/fd/%d", fds[0]);
        ds_status st = ds_read_file(path, (size_t)limit, &text, &len, msg, sizeof msg);
        close(fds[0]);
        if (limit == N) {
            assert_int_equal(st, DS_OK);
            assert_int_equal(len, N);
            assert_memory_equal(text, data, N);
            free(text);
        } else {
            assert_int_equal(st, DS_ERANGE);
            assert_null(text);
        }
    }
}

static void test_read_file_errors(void **state) {
    (void)state;
    char msg[256], *text;
    size_t len;
    const char *missing = tmp_file("no-such-file.txt");
    assert_int_equal(ds_read_file(missing, 100, &text, &len, msg, sizeof msg), DS_ENOTFOUND);
    assert_null(text);
    assert_contains(msg, missing);
    assert_contains(msg, "cannot open");
    /* A directory opens but cannot be read. */
    const char *dir = tmp_file("");
    assert_int_equal(ds_read_file(dir, 100, &text, &len, msg, sizeof msg), DS_EIO);
    assert_null(text);
    assert_contains(msg, dir);
}

static void test_read_json(void **state) {
    (void)state;
    static const char good[] = "{\"a\": [1, 2]}\n";
    const char *path = write_tmp("good.json", good, sizeof good - 1);
    char msg[256];
    cJSON *root;
    assert_int_equal(ds_read_json(path, 100, &root, msg, sizeof msg), DS_OK);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "a")), 2);
    cJSON_Delete(root);
    assert_int_equal(ds_read_json(path, 4, &root, msg, sizeof msg), DS_ERANGE);
    assert_null(root);
    assert_int_equal(ds_read_json(tmp_file("none.json"), 100, &root, msg, sizeof msg),
                     DS_ENOTFOUND);

    static const struct {
        const char *text, *where;
    } bad[] = {
        {"{\n  \"a\": 1,\n  \"b\" 2\n}\n", "line 3, column 7"}, /* ':' missing before the 2 */
        {"", "line 1, column 1"},
        {"{\"a\": [1, 2}", "line 1, column 12"},
        {"{} {}", "line 1, column 4"}, /* text after the value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        path = write_tmp("bad.json", bad[i].text, strlen(bad[i].text));
        assert_int_equal(ds_read_json(path, 100, &root, msg, sizeof msg), DS_ECORRUPT);
        assert_null(root);
        assert_contains(msg, path);
        assert_contains(msg, "invalid JSON");
        assert_contains(msg, bad[i].where);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_round_trip_all), cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_half_rounding_bound), cmocka_unit_test(test_half_rows_match_scalar),
        cmocka_unit_test(test_status_messages),     cmocka_unit_test(test_read_file_limit),
        cmocka_unit_test(test_read_file_pipe),      cmocka_unit_test(test_read_file_errors),
        cmocka_unit_test(test_read_json),           cmocka_unit_test(test_utf8_invalid_at),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
