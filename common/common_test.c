/* common_test — fp16 conversion (the storage type of every KV page) and status helpers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/half.h"
#include "common/status.h"

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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_round_trip_all), cmocka_unit_test(test_half_known_values),
        cmocka_unit_test(test_half_rounding_bound), cmocka_unit_test(test_half_rows_match_scalar),
        cmocka_unit_test(test_status_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
