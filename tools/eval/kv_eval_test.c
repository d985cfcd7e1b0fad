/* kv_eval_test — pins what we measured on synthetic outlier KV (block 32, head_dim 128, g = 64),
 * so a codec change that moves the comparison shows up here; and the .npy reader's errors.
 * Measured (README "KV codec quality"): at equal bits DecoQuant is level with the baselines on
 * synthetic data, not better: row-grouped DecoQuant ~ per-token RTN on keys, channel-grouped
 * DecoQuant ~ KIVI on keys; per-token RTN beats DecoQuant on values; the least-squares refit of
 * the small tensor cuts the 2-bit key error by about a quarter; decoquant-hv beats KIVI-style on
 * keys and on attention output for one byte per token more. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/half.h"
#include "tools/eval/kv_eval.h"
#include "tools/eval/npy.h"

static kv_set g_set;

static int setup(void **state) {
    (void)state;
    char msg[128];
    return kv_synth(&g_set, 4, 512, 128, 16, 1, msg, sizeof msg) == DS_OK ? 0 : -1;
}
static int teardown(void **state) {
    (void)state;
    kv_set_free(&g_set);
    return 0;
}

static kv_metrics eval(dq_method method, int bits, dq_axis axis, int refit) {
    dq_config cfg = {.method = method,
                     .bits = bits,
                     .block_size = 32,
                     .head_dim = 128,
                     .group_size = 64,
                     .axis = axis,
                     .refit = refit};
    kv_metrics m;
    char msg[128];
    assert_int_equal(kv_evaluate(&g_set, &cfg, &cfg, &m, msg, sizeof msg), DS_OK);
    return m;
}

static void test_fp16_is_exact(void **state) {
    (void)state;
    kv_metrics m = eval(DQ_FP16, 16, DQ_AXIS_ROW, 0);
    assert_true(m.key_rel_err == 0.0 && m.value_rel_err == 0.0 && m.attn_rel_err == 0.0);
    assert_true(m.bytes_per_token == 512.0 && m.ratio_vs_fp16 == 1.0);
}

static void test_bytes_per_token(void **state) {
    (void)state;
    assert_true(eval(DQ_DECOQUANT, 4, DQ_AXIS_ROW, 0).bytes_per_token == 152.0);
    assert_true(eval(DQ_RTN, 4, DQ_AXIS_ROW, 0).bytes_per_token == 144.0);
    assert_true(eval(DQ_KIVI, 2, DQ_AXIS_ROW, 0).bytes_per_token == 88.0);
    assert_true(eval(DQ_DECOQUANT, 2, DQ_AXIS_CHAN, 0).bytes_per_token == 104.0);
}

static void test_measured_comparison(void **state) {
    (void)state;
    kv_metrics dq_row = eval(DQ_DECOQUANT, 4, DQ_AXIS_ROW, 0);
    kv_metrics dq_chan = eval(DQ_DECOQUANT, 4, DQ_AXIS_CHAN, 0);
    kv_metrics rtn = eval(DQ_RTN, 4, DQ_AXIS_ROW, 0);
    kv_metrics kivi = eval(DQ_KIVI, 4, DQ_AXIS_ROW, 0);
    print_message("4-bit key err: decoquant row %.4f chan %.4f, rtn %.4f, kivi %.4f\n",
                  dq_row.key_rel_err, dq_chan.key_rel_err, rtn.key_rel_err, kivi.key_rel_err);
    print_message("4-bit value err: decoquant row %.4f, rtn %.4f\n", dq_row.value_rel_err,
                  rtn.value_rel_err);
    double r1 = dq_row.key_rel_err / rtn.key_rel_err, r2 = dq_chan.key_rel_err / kivi.key_rel_err;
    assert_true(r1 > 0.8 && r1 < 1.1);                     /* level with per-token RTN */
    assert_true(r2 > 0.9 && r2 < 1.1);                     /* level with KIVI */
    assert_true(kivi.key_rel_err < 0.6 * rtn.key_rel_err); /* per-channel wins on outlier keys */
    assert_true(rtn.value_rel_err < dq_row.value_rel_err); /* per-token wins on values */

    kv_metrics plain2 = eval(DQ_DECOQUANT, 2, DQ_AXIS_ROW, 0);
    kv_metrics refit2 = eval(DQ_DECOQUANT, 2, DQ_AXIS_ROW, 1);
    print_message("2-bit key err: decoquant row %.4f, with refit %.4f\n", plain2.key_rel_err,
                  refit2.key_rel_err);
    assert_true(refit2.key_rel_err < 0.85 * plain2.key_rel_err);
    assert_true(refit2.bytes_per_token == plain2.bytes_per_token);
}

/* decoquant-hv (keys: channel-grouped DecoQuant, clipped grids, 8 fp16 outliers; values:
 * Hadamard-rotated per-token, symmetric clipped grids) at head_dim 128: one byte per token above
 * KIVI (the 8x8 small tensor), lower key and attention error than KIVI at 4 and 2 bits. On this
 * synthetic data Hadamard-rotated RTN is better still at 4 bits (0.18 vs 0.23 attention error);
 * on real KV it is not (kv_real_test). */
static void test_decoquant_hv(void **state) {
    (void)state;
    for (int bits = 2; bits <= 4; bits += 2) {
        kv_metrics hv = eval(DQ_DECOQUANT_HV, bits, DQ_AXIS_CHAN, 1);
        kv_metrics kivi = eval(DQ_KIVI, bits, DQ_AXIS_ROW, 0);
        print_message("%d-bit: decoquant-hv K %.4f attn %.4f, kivi K %.4f attn %.4f\n", bits,
                      hv.key_rel_err, hv.attn_rel_err, kivi.key_rel_err, kivi.attn_rel_err);
        assert_true(hv.bytes_per_token == kivi.bytes_per_token + 1.0);
        assert_true(hv.key_rel_err < 0.85 * kivi.key_rel_err);
        assert_true(hv.attn_rel_err < 0.9 * kivi.attn_rel_err);
    }
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, n, fp), n);
    fclose(fp);
}

/* A .npy v1 file: magic, version, header padded so data starts at a multiple of 64. */
static size_t make_npy(unsigned char *buf, const char *descr, const char *shape, const void *data,
                       size_t data_bytes) {
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((len + pad + 1) & 0xff);
    buf[9] = (unsigned char)((len + pad + 1) >> 8);
    memcpy(buf + 10, header, (size_t)len);
    memset(buf + 10 + len, ' ', (size_t)pad);
    buf[10 + len + pad] = '\n';
    memcpy(buf + total + pad, data, data_bytes);
    return (size_t)(total + pad) + data_bytes;
}

static void test_npy_reader(void **state) {
    (void)state;
    char dir[] = "/tmp/npytestXXXXXX", path[64], msg[200];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a.npy", dir);
    unsigned char buf[512];
    float f32[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    uint16_t f16[6];
    for (int i = 0; i < 6; i++)
        f16[i] = ds_float_to_half(f32[i]);
    npy_array a;

    write_file(path, buf, make_npy(buf, "<f4", "(2, 3)", f32, sizeof f32));
    assert_int_equal(npy_read(path, &a, msg, sizeof msg), DS_OK);
    assert_int_equal(a.n_dims, 2);
    assert_true(a.shape[0] == 2 && a.shape[1] == 3 && a.n_elements == 6);
    assert_memory_equal(a.data, f32, sizeof f32);
    npy_free(&a);

    write_file(path, buf, make_npy(buf, "<f2", "(1, 2, 3)", f16, sizeof f16));
    assert_int_equal(npy_read(path, &a, msg, sizeof msg), DS_OK);
    for (int i = 0; i < 6; i++)
        assert_float_equal(a.data[i], ds_half_to_float(f16[i]), 0.0f);
    npy_free(&a);

    size_t n = make_npy(buf, "<f8", "(6,)", f32, sizeof f32);
    write_file(path, buf, n);
    assert_int_equal(npy_read(path, &a, msg, sizeof msg), DS_EUNSUPPORTED);
    assert_non_null(strstr(msg, "<f8"));

    n = make_npy(buf, "<f4", "(2, 3)", f32, sizeof f32);
    write_file(path, buf, n - 5);
    assert_int_equal(npy_read(path, &a, msg, sizeof msg), DS_ECORRUPT);
    assert_non_null(strstr(msg, "truncated"));
    assert_non_null(strstr(msg, path));

    buf[0] = 'X';
    write_file(path, buf, n);
    assert_int_equal(npy_read(path, &a, msg, sizeof msg), DS_ECORRUPT);
    assert_non_null(strstr(msg, "magic"));

    assert_int_equal(npy_read("/nonexistent/k.npy", &a, msg, sizeof msg), DS_ENOTFOUND);
    assert_non_null(strstr(msg, "/nonexistent/k.npy"));
    remove(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp16_is_exact),       cmocka_unit_test(test_bytes_per_token),
        cmocka_unit_test(test_measured_comparison), cmocka_unit_test(test_decoquant_hv),
        cmocka_unit_test(test_npy_reader),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
