/* server/security_test.c — the API key check lets in exactly "Bearer KEY" for a configured key
 * (from the flag or the file), whatever else a client sends; the flag combinations and the files
 * fail with messages naming them. TLS itself is checked end to end by tests/grpc/security_test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/security.h"

typedef struct tmp_path {
    char s[512];
} tmp_path;

static tmp_path write_tmp(const char *name, const char *text) {
    tmp_path path;
    const char *dir = getenv("TEST_TMPDIR");
    snprintf(path.s, sizeof path.s, "%s/%s", dir ? dir : "/tmp", name);
    FILE *fp = fopen(path.s, "w");
    assert_non_null(fp);
    fputs(text, fp);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static int authorized(const security *s, const char *header) {
    return security_authorized(s, header, header ? strlen(header) : 0);
}

static security *create_ok(const security_options *o) {
    security *s = NULL;
    char msg[512];
    if (security_create(o, &s, msg, sizeof msg) != DS_OK) fail_msg("security_create: %s", msg);
    return s;
}

static void expect_create_error(const security_options *o, ds_status want, const char *fragment) {
    security *s = NULL;
    char msg[512] = "";
    ds_status got = security_create(o, &s, msg, sizeof msg);
    if (got != want || !strstr(msg, fragment))
        fail_msg("want status %d naming '%s', got %d: '%s'", want, fragment, got, msg);
    assert_null(s);
}

static void test_no_options_lets_everyone_in(void **state) {
    (void)state;
    security_options o = {0};
    security *s = create_ok(&o);
    assert_false(security_tls(s));
    assert_false(security_requires_key(s));
    assert_true(authorized(s, NULL));
    assert_true(authorized(s, "Bearer anything"));
    security_destroy(s);
}

static void test_keys(void **state) {
    (void)state;
    tmp_path file = write_tmp("keys.txt", "# the team's keys\n\n  key-from-file-1  \r\n"
                                          "key2\n# key3 is a comment\n");
    security_options o = {.api_key = "flag-key-0123", .api_key_file = file.s};
    security *s = create_ok(&o);
    assert_true(security_requires_key(s));
    const char *good[] = {"Bearer flag-key-0123", "Bearer key-from-file-1", "Bearer key2",
                          "bearer key2", "BEARER key2"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!authorized(s, good[i])) fail_msg("'%s' refused", good[i]);
    const char *bad[] = {NULL,
                         "",
                         "flag-key-0123",         /* no scheme */
                         "Bearer ",               /* no key */
                         "Bearer flag-key-012",   /* a prefix */
                         "Bearer flag-key-01234", /* longer */
                         "Bearer flag-key-0124",  /* one byte off */
                         "Basic flag-key-0123",
                         "Bearer  key2", /* two spaces */
                         "Bearer key3",
                         "Bearer # the team's keys",
                         "Bearer key2\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (authorized(s, bad[i])) fail_msg("'%s' let in", bad[i] ? bad[i] : "(none)");
    /* the length given counts, not a NUL */
    assert_false(security_authorized(s, "Bearer key2", 10));
    assert_true(security_authorized(s, "Bearer key2x", 11));
    security_destroy(s);
}

static void test_option_errors(void **state) {
    (void)state;
    tmp_path pem =
        write_tmp("x.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    tmp_path not_pem = write_tmp("plain.txt", "hello\n");
    tmp_path empty_keys = write_tmp("empty.keys", "# nothing\n\n");
    tmp_path bad_keys = write_tmp("bad.keys", "good\nwith space\n");
    security_options cert_only = {.tls_cert = pem.s};
    expect_create_error(&cert_only, DS_EINVAL, "--tls-cert and --tls-key");
    security_options key_only = {.tls_key = pem.s};
    expect_create_error(&key_only, DS_EINVAL, "--tls-cert and --tls-key");
    security_options ca_only = {.tls_client_ca = pem.s};
    expect_create_error(&ca_only, DS_EINVAL, "--tls-client-ca");
    char msg[256];
    assert_int_equal(security_options_check(&ca_only, msg, sizeof msg), DS_EINVAL);
    security_options missing = {.tls_cert = "/nonexistent/cert.pem", .tls_key = pem.s};
    expect_create_error(&missing, DS_ENOTFOUND, "/nonexistent/cert.pem");
    security_options garbage = {.tls_cert = pem.s, .tls_key = not_pem.s};
    expect_create_error(&garbage, DS_EINVAL, "plain.txt: no PEM block");
    security_options no_keys = {.api_key_file = empty_keys.s};
    expect_create_error(&no_keys, DS_EINVAL, "empty.keys: no API key");
    security_options spaced = {.api_key_file = bad_keys.s};
    expect_create_error(&spaced, DS_EINVAL, "bad.keys:2: API key byte 4");
    security_options empty_flag = {.api_key = ""};
    expect_create_error(&empty_flag, DS_EINVAL, "--api-key: empty");
    security_options tls = {.tls_cert = pem.s, .tls_key = pem.s, .tls_client_ca = pem.s};
    security *s = create_ok(&tls);
    assert_true(security_tls(s));
    assert_false(security_requires_key(s));
    security_destroy(s);
}

static void test_flags(void **state) {
    (void)state;
    security_options o = {0};
    assert_int_equal(security_flag("--tls-cert", "c", &o), 1);
    assert_int_equal(security_flag("--tls-key", "k", &o), 1);
    assert_int_equal(security_flag("--tls-client-ca", "ca", &o), 1);
    assert_int_equal(security_flag("--api-key", "a", &o), 1);
    assert_int_equal(security_flag("--api-key-file", "f", &o), 1);
    assert_int_equal(security_flag("--port", "1", &o), 0);
    assert_string_equal(o.tls_cert, "c");
    assert_string_equal(o.tls_key, "k");
    assert_string_equal(o.tls_client_ca, "ca");
    assert_string_equal(o.api_key, "a");
    assert_string_equal(o.api_key_file, "f");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_options_lets_everyone_in),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_option_errors),
        cmocka_unit_test(test_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
