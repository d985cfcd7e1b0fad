/* forward_ops_test — the mixed-dtype references against what defines them: rounding to nearest
 * even at known halfway points, overflow and subnormals; exact round trips of every fp16 and bf16
 * value; RMSNorm and embedding against kernels/ops.h's fp32 ops with gathered rows next to
 * NaN rows that must not be read; the seeded fill's distribution and its sharding property (a
 * block is exactly the slice of the whole matrix). */
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
#include "kernels/forward_ops.h"
#include "kernels/ops.h"

static ds_rng g_rng = {0x243f6a8885a308d3ull};

/* v stored as fp16 or bf16: the bits. */
static uint16_t rounded(fwd_dtype type, float v) {
    uint16_t out;
    fwd_store(&out, type, 0, v);
    return out;
}

static uint32_t bits32(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ---- conversions ---- */

static void test_store_rounds_to_nearest_even(void **state) {
    (void)state;
    /* bf16 keeps 7 mantissa bits: 1 + 2^-8 is halfway between 0x3f80 and 0x3f81. */
    assert_int_equal(rounded(FWD_BF16, 1.0f + 0x1p-8f), 0x3f80);
    assert_int_equal(rounded(FWD_BF16, 1.0f + 3 * 0x1p-8f), 0x3f82);
    assert_int_equal(rounded(FWD_BF16, 1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
    assert_int_equal(rounded(FWD_BF16, -2.0f), 0xc000);
    assert_int_equal(rounded(FWD_BF16, 3.4028235e38f), 0x7f80); /* FLT_MAX rounds up: inf */
    assert_true(isnan(ds_bf16_to_float(rounded(FWD_BF16, -NAN))));
    /* fp16: 10 mantissa bits, largest finite 65504, smallest subnormal 2^-24. */
    assert_int_equal(rounded(FWD_F16, 1.0f + 0x1p-11f), 0x3c00);
    assert_int_equal(rounded(FWD_F16, 1.0f + 3 * 0x1p-11f), 0x3c02);
    assert_int_equal(rounded(FWD_F16, 65519.0f), 0x7bff);
    assert_int_equal(rounded(FWD_F16, 65520.0f), 0x7c00);
    assert_int_equal(rounded(FWD_F16, 0x1p-24f), 0x0001);
    assert_int_equal(rounded(FWD_F16, 0x1p-25f), 0x0000);
    assert_int_equal(rounded(FWD_F16, 3 * 0x1p-25f), 0x0002);
    assert_true(isnan(ds_half_to_float(rounded(FWD_F16, NAN))));
    float f;
    fwd_store(&f, FWD_F32, 0, 0x1p-140f); /* fp32 stores as is, subnormals too */
    assert_int_equal(bits32(f), bits32(0x1p-140f));
    assert_int_equal(fwd_dtype_bytes(FWD_F32), 4);
    assert_int_equal(fwd_dtype_bytes(FWD_F16), 2);
    assert_int_equal(fwd_dtype_bytes(FWD_BF16), 2);
}

/* Every non-NaN fp16 and bf16 value survives fp32 and back; and a widening conversion followed by
 * the narrowing one is what rounding each fp32 value directly gives. */
static void test_convert_round_trips(void **state) {
    (void)state;
    enum { N = 65536 };
    uint16_t *src = malloc(N * 2), *back = malloc(N * 2), *bf = malloc(N * 2);
    float *wide = malloc(N * 4);
    assert_true(src && back && bf && wide);
    for (int i = 0; i < N; i++)
        src[i] = (uint16_t)i;
    const fwd_dtype types[] = {FWD_F16, FWD_BF16};
    for (int t = 0; t < 2; t++) {
        fwd_convert_ref(wide, FWD_F32, src, types[t], N);
        fwd_convert_ref(back, types[t], wide, FWD_F32, N);
        for (int i = 0; i < N; i++) {
            if (isnan(wide[i])) {
                assert_true(isnan(fwd_load(back, types[t], i)));
                continue;
            }
            if (back[i] != src[i]) fail_msg("type %d: 0x%04x came back as 0x%04x", t, i, back[i]);
        }
    }
    /* fp16 -> bf16 (what the backend does to attention outputs) equals rounding the fp32 value. */
    fwd_convert_ref(bf, FWD_BF16, src, FWD_F16, N);
    fwd_convert_ref(wide, FWD_F32, src, FWD_F16, N);
    for (int i = 0; i < N; i++)
        if (!isnan(wide[i])) assert_int_equal(bf[i], rounded(FWD_BF16, wide[i]));
    free(src), free(back), free(bf), free(wide);
}

/* ---- embedding ---- */

static void test_embed_gathers_rows_exactly(void **state) {
    (void)state;
    enum { vocab = 11, dim = 7, n = 5 };
    const int32_t ids[n] = {10, 0, 3, 3, 7};
    const fwd_dtype types[] = {FWD_F16, FWD_BF16, FWD_F32};
    for (int t = 0; t < 3; t++) {
        float table32[vocab * dim], x[(n + 1) * dim];
        uint8_t table[vocab * dim * 4];
        for (int i = 0; i < vocab * dim; i++)
            fwd_store(table, types[t], i, ds_rng_gauss(&g_rng) * 10.0f);
        fwd_convert_ref(table32, FWD_F32, table, types[t], vocab * dim);
        memset(x, 0xff, sizeof x);
        fwd_embed_ref(x, table, types[t], dim, ids, n);
        float want[n * dim];
        char msg[128];
        assert_int_equal(ops_embedding_ref(want, table32, vocab, dim, ids, n, msg, sizeof msg),
                         DS_OK);
        assert_memory_equal(x, want, sizeof want);
        for (int c = 0; c < dim; c++) /* nothing written past n rows */
            assert_int_equal(bits32(x[n * dim + c]), 0xffffffffu);
    }
}

/* ---- RMSNorm ---- */

static void test_rmsnorm_gathers_rows_into_each_type(void **state) {
    (void)state;
    enum { n_x = 9, dim = 37, n = 4 };
    const int32_t rows[n] = {8, 2, 2, 5};
    float x[n_x * dim], w[dim], gathered[n * dim], want[n * dim], got32[n * dim];
    for (int i = 0; i < n_x * dim; i++)
        x[i] = NAN; /* rows nobody gathers: reading one shows as NaN */
    for (int i = 0; i < n; i++)
        for (int c = 0; c < dim; c++)
            x[rows[i] * dim + c] = ds_rng_gauss(&g_rng) * 3.0f;
    for (int i = 0; i < n; i++)
        memcpy(gathered + i * dim, x + rows[i] * dim, sizeof(float) * dim);
    for (int c = 0; c < dim; c++)
        w[c] = 1.0f + 0.3f * ds_rng_gauss(&g_rng);
    ops_rmsnorm_ref(want, gathered, w, n, dim, 1e-5f);

    fwd_rmsnorm_params p = {.out = got32,
                            .out_type = FWD_F32,
                            .x = x,
                            .rows = rows,
                            .weight = w,
                            .n_rows = n,
                            .dim = dim,
                            .eps = 1e-5f};
    fwd_rmsnorm_ref(&p);
    assert_memory_equal(got32, want, sizeof want); /* the same fp32 arithmetic, bit for bit */
    const fwd_dtype narrow[] = {FWD_F16, FWD_BF16};
    for (int t = 0; t < 2; t++) {
        uint16_t got[n * dim];
        p.out = got, p.out_type = narrow[t];
        fwd_rmsnorm_ref(&p);
        for (int i = 0; i < n * dim; i++) /* one rounding of the fp32 result */
            assert_int_equal(got[i], rounded(narrow[t], want[i]));
    }
    /* Without rows: row i of x. */
    p.x = gathered, p.rows = NULL, p.out = got32, p.out_type = FWD_F32;
    fwd_rmsnorm_ref(&p);
    assert_memory_equal(got32, want, sizeof want);
}

/* ---- SwiGLU ---- */

static void test_swiglu_bf16_matches_formula(void **state) {
    (void)state;
    enum { n = 1001 };
    uint16_t g[n], u[n], y[n], y_in_place[n];
    for (int i = 0; i < n; i++) {
        g[i] = rounded(FWD_BF16, ds_rng_gauss(&g_rng) * 4.0f);
        u[i] = rounded(FWD_BF16, ds_rng_gauss(&g_rng));
    }
    g[0] = rounded(FWD_BF16, 0.0f);
    fwd_swiglu_bf16_ref(y, g, u, n);
    for (int i = 0; i < n; i++) {
        const double gd = ds_bf16_to_float(g[i]), ud = ds_bf16_to_float(u[i]);
        const double want = gd / (1.0 + exp(-gd)) * ud, got = ds_bf16_to_float(y[i]);
        /* half a bf16 ulp (2^-8 relative) of rounding, plus fp32 slack */
        if (!(fabs(got - want) <= fabs(want) * (0x1p-8 + 1e-6) + 1e-30))
            fail_msg("silu(%g) * %g: got %.9g, want %.9g", gd, ud, got, want);
    }
    assert_int_equal(y[0] & 0x7fff, 0); /* silu(0) = 0 */
    memcpy(y_in_place, g, sizeof g);
    fwd_swiglu_bf16_ref(y_in_place, y_in_place, u, n); /* out aliasing gate, as the backend runs */
    assert_memory_equal(y_in_place, y, sizeof y);
}

/* ---- seeded fill ---- */

static void test_fill_normal_is_gaussian_and_seeded(void **state) {
    (void)state;
    enum { n = 200000 };
    float *a = malloc(n * 4), *b = malloc(n * 4);
    assert_true(a && b);
    const fwd_fill_block whole = {.rows = 1, .cols = n, .global_cols = n};
    fwd_fill_normal_ref(a, FWD_F32, &whole, 0.5f, 2.0f, 42);
    double sum = 0, sum_sq = 0;
    int within_1 = 0;
    for (int i = 0; i < n; i++) {
        assert_true(isfinite(a[i]));
        sum += a[i], sum_sq += (double)a[i] * a[i];
        within_1 += fabs(a[i] - 0.5) < 2.0;
    }
    const double mean = sum / n, sd = sqrt(sum_sq / n - mean * mean);
    assert_true(fabs(mean - 0.5) < 4 * 2.0 / sqrt(n)); /* 4 standard errors */
    assert_true(fabs(sd - 2.0) < 0.02);
    assert_true(fabs((double)within_1 / n - 0.6827) < 0.005); /* the shape, not only moments */
    fwd_fill_normal_ref(b, FWD_F32, &whole, 0.5f, 2.0f, 42);
    assert_memory_equal(a, b, (size_t)n * 4);
    fwd_fill_normal_ref(b, FWD_F32, &whole, 0.5f, 2.0f, 43);
    int same = 0;
    for (int i = 0; i < n; i++)
        same += a[i] == b[i];
    assert_true(same < 10);
    fwd_fill_normal_ref(b, FWD_F32, &whole, 1.0f, 0.0f, 42);
    for (int i = 0; i < n; i++)
        assert_true(b[i] == 1.0f);
    free(a), free(b);
}

/* A tensor-parallel rank filling its block gets the unsharded matrix's numbers there. */
static void test_fill_normal_block_is_slice_of_whole(void **state) {
    (void)state;
    enum { R = 6, C = 50 };
    float whole[R * C], block[3 * 20];
    const fwd_fill_block all = {.rows = R, .cols = C, .global_cols = C};
    const fwd_fill_block part = {.rows = 3, .cols = 20, .global_cols = C, .row0 = 2, .col0 = 10};
    fwd_fill_normal_ref(whole, FWD_F32, &all, 0.0f, 0.02f, 7);
    fwd_fill_normal_ref(block, FWD_F32, &part, 0.0f, 0.02f, 7);
    for (int r = 0; r < 3; r++)
        assert_memory_equal(block + r * 20, whole + (r + 2) * C + 10, 20 * 4);
    /* The same numbers as one row of R * C values. */
    float flat[R * C];
    const fwd_fill_block row = {.rows = 1, .cols = R * C, .global_cols = R * C};
    fwd_fill_normal_ref(flat, FWD_F32, &row, 0.0f, 0.02f, 7);
    assert_memory_equal(flat, whole, sizeof whole);
    /* Narrow types hold the rounded fp32 numbers. */
    uint16_t half[3 * 20];
    fwd_fill_normal_ref(half, FWD_BF16, &part, 0.0f, 0.02f, 7);
    for (int i = 0; i < 3 * 20; i++)
        assert_int_equal(half[i], rounded(FWD_BF16, block[i]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_rounds_to_nearest_even),
        cmocka_unit_test(test_convert_round_trips),
        cmocka_unit_test(test_embed_gathers_rows_exactly),
        cmocka_unit_test(test_rmsnorm_gathers_rows_into_each_type),
        cmocka_unit_test(test_swiglu_bf16_matches_formula),
        cmocka_unit_test(test_fill_normal_is_gaussian_and_seeded),
        cmocka_unit_test(test_fill_normal_block_is_slice_of_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
