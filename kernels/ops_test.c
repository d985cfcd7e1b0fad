/* ops_test — each reference op against an independent straightforward computation (double
 * precision formulas, explicit 2D rotations, HF numbers computed in Python), with odd sizes and
 * in-place aliasing. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernels/ops.h"

/* Deterministic values in [-scale, scale). */
static uint64_t test_rng = 0x9e3779b97f4a7c15ull;
static float rand_float(float scale) {
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (float)((double)(test_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0) * scale;
}
static void fill_random(float *x, size_t n, float scale) {
    for (size_t i = 0; i < n; i++)
        x[i] = rand_float(scale);
}
static void assert_close(double got, double want, double tol) {
    if (!(fabs(got - want) <= tol)) fail_msg("got %.9g, want %.9g (tol %.3g)", got, want, tol);
}

/* ---- RMSNorm ---- */

static void test_rmsnorm_matches_formula(void **state) {
    (void)state;
    enum { rows = 3, dim = 37 };
    float x[rows * dim], w[dim], y[rows * dim];
    fill_random(x, rows * dim, 3.0f);
    fill_random(w, dim, 2.0f);
    const float eps = 1e-5f;
    ops_rmsnorm_ref(y, x, w, rows, dim, eps);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < dim; c++)
            ss += (double)x[r * dim + c] * x[r * dim + c];
        double rms = sqrt(ss / dim + eps);
        for (int c = 0; c < dim; c++) {
            double want = x[r * dim + c] / rms * w[c];
            assert_close(y[r * dim + c], want, 1e-5 * (fabs(want) + 1e-3));
        }
    }
    /* In place gives the same bits as out of place. */
    ops_rmsnorm_ref(x, x, w, rows, dim, eps);
    assert_memory_equal(x, y, sizeof y);
}

static void test_rmsnorm_eps_dominates_zero_row(void **state) {
    (void)state;
    float x[5] = {0}, w[5] = {1, 1, 1, 1, 1}, y[5];
    ops_rmsnorm_ref(y, x, w, 1, 5, 1e-6f);
    for (int c = 0; c < 5; c++)
        assert_true(y[c] == 0.0f);
    /* Constant row of 2s with unit weight normalises to 1s. */
    for (int c = 0; c < 5; c++)
        x[c] = 2.0f;
    ops_rmsnorm_ref(y, x, w, 1, 5, 0.0f);
    for (int c = 0; c < 5; c++)
        assert_close(y[c], 1.0, 1e-6);
}

/* ---- RoPE ---- */

static void test_rope_inv_freq_none_and_linear(void **state) {
    (void)state;
    ops_rope_config cfg = {.head_dim = 64, .theta = 10000.0f, .scaling = OPS_ROPE_NONE};
    float inv[32], lin[32];
    ops_rope_inv_freq(&cfg, inv);
    for (int i = 0; i < 32; i++)
        assert_close(inv[i], pow(10000.0, -2.0 * i / 64), 2e-7 * inv[i]);
    cfg.scaling = OPS_ROPE_LINEAR;
    cfg.factor = 4.0f;
    ops_rope_inv_freq(&cfg, lin);
    for (int i = 0; i < 32; i++)
        assert_close(lin[i], inv[i] / 4.0, 0.0);
}

/* Numbers from HF transformers' _compute_llama3_parameters (Llama-3.1-8B: head_dim 128,
 * rope_theta 500000, factor 8, low_freq_factor 1, high_freq_factor 4,
 * original_max_position_embeddings 8192), computed in Python with the HF code emulated in numpy
 * float32 (torch's dtype):
 *   inv = 1 / 500000 ** (arange(0,128,2).float32 / 128); wavelen = 2*pi / inv
 *   inv_l = where(wavelen > 8192/1, inv / 8, inv)
 *   s = (8192 / wavelen - 1) / (4 - 1); smoothed = (1 - s) * inv_l / 8 + s * inv_l
 *   out = where(!(wavelen < 8192/4) & !(wavelen > 8192/1), smoothed, inv_l)
 * Index 28 is a kept high frequency, 29-32 are interpolated, 33+ are divided by 8. */
static void test_rope_llama3_inv_freq_matches_hf(void **state) {
    (void)state;
    static const struct {
        int i;
        float inv_freq;
    } hf[] = {
        {0, 1.000000000e+00f},  {20, 1.656044088e-02f}, {28, 3.211446106e-03f},
        {29, 2.166570630e-03f}, {30, 1.371893683e-03f}, {31, 8.567514597e-04f},
        {32, 5.248460220e-04f}, {33, 3.126936499e-04f}, {34, 1.785077911e-04f},
        {40, 3.428102355e-05f}, {63, 3.068925878e-07f},
    };
    ops_rope_config cfg = {.head_dim = 128,
                           .theta = 500000.0f,
                           .scaling = OPS_ROPE_LLAMA3,
                           .factor = 8.0f,
                           .low_freq_factor = 1.0f,
                           .high_freq_factor = 4.0f,
                           .original_context = 8192};
    char msg[128];
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_OK);
    float inv[64];
    ops_rope_inv_freq(&cfg, inv);
    for (size_t k = 0; k < sizeof hf / sizeof hf[0]; k++)
        assert_close(inv[hf[k].i], hf[k].inv_freq, 2e-6 * hf[k].inv_freq);
}

static void test_rope_config_validation_names_field(void **state) {
    (void)state;
    char msg[128];
    ops_rope_config cfg = {.head_dim = 63, .theta = 10000.0f};
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "head_dim = 63"));
    cfg.head_dim = 64;
    cfg.theta = 0.0f;
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "theta"));
    cfg.theta = 10000.0f;
    cfg.scaling = OPS_ROPE_LLAMA3;
    cfg.factor = 8.0f;
    cfg.low_freq_factor = 4.0f;
    cfg.high_freq_factor = 4.0f; /* would divide by zero */
    cfg.original_context = 8192;
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "high_freq_factor = 4"));
    cfg.high_freq_factor = 8.0f;
    cfg.original_context = 0;
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "original_context = 0"));
    cfg.scaling = OPS_ROPE_LINEAR;
    cfg.factor = -1.0f;
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "factor = -1"));
    cfg.scaling = (ops_rope_scaling)7;
    assert_int_equal(ops_rope_config_validate(&cfg, msg, sizeof msg), DS_EUNSUPPORTED);
}

/* Rotate explicit 2D pairs (x[i], x[i+hd/2]) by pos * theta^(-2i/hd) in double; odd head count,
 * padded row stride (the padding must stay untouched), scattered positions. */
static void test_rope_rotates_pairs(void **state) {
    (void)state;
    enum { rows = 4, heads = 3, hd = 10, half = hd / 2, stride = heads * hd + 3 };
    const double theta = 10000.0;
    const int32_t pos[rows] = {0, 7, 1000, 3};
    float x[rows * stride], orig[rows * stride], inv[half];
    fill_random(x, rows * stride, 1.0f);
    memcpy(orig, x, sizeof x);
    ops_rope_config cfg = {.head_dim = hd, .theta = (float)theta};
    ops_rope_inv_freq(&cfg, inv);
    ops_rope_params p = {.x = x,
                         .positions = pos,
                         .inv_freq = inv,
                         .n_rows = rows,
                         .n_heads = heads,
                         .head_dim = hd,
                         .row_stride = stride};
    ops_rope_ref(&p);
    for (int r = 0; r < rows; r++) {
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < half; i++) {
                const float *o = orig + r * stride + h * hd;
                const float *g = x + r * stride + h * hd;
                double a = pos[r] * pow(theta, -2.0 * i / hd);
                double want0 = o[i] * cos(a) - o[i + half] * sin(a);
                double want1 = o[i] * sin(a) + o[i + half] * cos(a);
                /* fp32 angle: error grows with pos * inv_freq ulp */
                double tol = 1e-6 + 2e-7 * fabs(a);
                assert_close(g[i], want0, tol);
                assert_close(g[i + half], want1, tol);
            }
        /* padding between rows untouched; position 0 is the identity */
        assert_memory_equal(x + r * stride + heads * hd, orig + r * stride + heads * hd,
                            3 * sizeof(float));
    }
    assert_memory_equal(x, orig, heads * hd * sizeof(float));
}

/* ---- SwiGLU ---- */

static void test_swiglu(void **state) {
    (void)state;
    enum { n = 41 };
    float g[n], u[n], y[n];
    fill_random(g, n, 8.0f);
    fill_random(u, n, 2.0f);
    g[0] = -200.0f; /* exp(200) overflows: silu must give -0, not NaN */
    g[1] = 200.0f;
    ops_swiglu_ref(y, g, u, n);
    for (int i = 0; i < n; i++) {
        double want = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        assert_false(isnan(y[i]));
        assert_close(y[i], want, 1e-6 * (fabs(want) + 1e-6));
    }
    /* out aliasing gate, then up */
    float g2[n], u2[n];
    memcpy(g2, g, sizeof g);
    memcpy(u2, u, sizeof u);
    ops_swiglu_ref(g2, g2, u, n);
    assert_memory_equal(g2, y, sizeof y);
    ops_swiglu_ref(u2, g, u2, n);
    assert_memory_equal(u2, y, sizeof y);
}

/* ---- Softmax ---- */

/* ---- Embedding ---- */

static void test_embedding_gather(void **state) {
    (void)state;
    enum { vocab = 11, dim = 7 };
    float table[vocab * dim], out[4 * dim];
    for (int i = 0; i < vocab * dim; i++)
        table[i] = (float)i;
    const int32_t ids[4] = {10, 0, 3, 10};
    char msg[128];
    assert_int_equal(ops_embedding_ref(out, table, vocab, dim, ids, 4, msg, sizeof msg), DS_OK);
    for (int k = 0; k < 4; k++)
        for (int c = 0; c < dim; c++)
            assert_true(out[k * dim + c] == (float)(ids[k] * dim + c));
    const int32_t bad[3] = {1, 11, 2};
    assert_int_equal(ops_embedding_ref(out, table, vocab, dim, bad, 3, msg, sizeof msg), DS_ERANGE);
    assert_string_equal(msg, "token ids[1] = 11: outside vocab [0, 11)");
    const int32_t neg[1] = {-1};
    assert_int_equal(ops_embedding_ref(out, table, vocab, dim, neg, 1, msg, sizeof msg), DS_ERANGE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rmsnorm_matches_formula),
        cmocka_unit_test(test_rmsnorm_eps_dominates_zero_row),
        cmocka_unit_test(test_rope_inv_freq_none_and_linear),
        cmocka_unit_test(test_rope_llama3_inv_freq_matches_hf),
        cmocka_unit_test(test_rope_config_validation_names_field),
        cmocka_unit_test(test_rope_rotates_pairs),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_embedding_gather),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
