/* qmatmul_test — Q8_0 layout and round-trip bound, Q4_0 / Q4_1 blocks as ggml lays them out, and
 * qm_matmul against qm_matmul_ref (and the exact fp32 product) on odd token counts and the
 * SmolLM2-135M shapes, for every block type and every ISA the CPU supports, on a thread pool and
 * without one; a token's outputs independent of its batch. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/half.h"
#include "common/threadpool.h"
#include "kernels/qmatmul.h"

static unsigned g_seed = 1;

static float frand(void) { /* uniform in [-1, 1) */
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

static float grand(void) { /* roughly N(0, 1): sum of 4 uniforms, scaled */
    return (frand() + frand() + frand() + frand()) * 0.866f;
}

static float *alloc_floats(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(p);
    return p;
}

/* A rows x cols matrix of `type` with random weights of scale ~0.05: Q8_0 quantized from
 * Gaussians, Q4_0 / Q4_1 random blocks (nibbles, fp16 scales, Q4_1 minima around -8 d). */
static void make_matrix(qm_matrix *w, qm_type type, int rows, int cols) {
    if (type == QM_Q8_0 || type == QM_F32) {
        float *src = alloc_floats((size_t)rows * cols);
        for (size_t i = 0; i < (size_t)rows * cols; i++)
            src[i] = 0.05f * grand();
        assert_int_equal(qm_create(w, type, src, rows, cols, NULL, 0), DS_OK);
        free(src);
        return;
    }
    const size_t n_blocks = (size_t)rows * cols / 32, block_bytes = qm_bytes(type, 1, 32);
    uint8_t *blocks = malloc(n_blocks * block_bytes);
    assert_non_null(blocks);
    for (size_t b = 0; b < n_blocks; b++) {
        uint8_t *blk = blocks + b * block_bytes;
        const float d = 0.05f / 4.0f * (0.5f + 0.5f * fabsf(frand()));
        uint16_t h[2] = {ds_float_to_half(d), ds_float_to_half(-d * (8.0f + frand()))};
        memcpy(blk, h, type == QM_Q4_1 ? 4 : 2);
        for (int j = 0; j < 16; j++) {
            g_seed = g_seed * 1664525u + 1013904223u;
            blk[(type == QM_Q4_1 ? 4 : 2) + j] = (uint8_t)(g_seed >> 16);
        }
    }
    assert_int_equal(qm_create_blocks(w, type, blocks, rows, cols, NULL, 0), DS_OK);
    assert_memory_equal(w->data, blocks, n_blocks * block_bytes);
    free(blocks);
}

/* Q4 blocks decode as ggml's dequantize_row_q4_0 / _q4_1: value j < 16 from the low nibble of
 * byte j, value j + 16 from its high nibble; Q4_0 subtracts 8, Q4_1 adds the minimum. */
static void test_q4_layout(void **state) {
    (void)state;
    uint8_t q40[18] = {0}, q41[20] = {0};
    uint16_t d = ds_float_to_half(0.5f), m = ds_float_to_half(-1.0f);
    memcpy(q40, &d, 2);
    memcpy(q41, &d, 2);
    memcpy(q41 + 2, &m, 2);
    for (int j = 0; j < 16; j++)
        q40[2 + j] = q41[4 + j] = (uint8_t)(j | (15 - j) << 4);
    qm_matrix w;
    float row[32];
    assert_int_equal(qm_create_blocks(&w, QM_Q4_0, q40, 1, 32, NULL, 0), DS_OK);
    qm_dequantize_row(&w, 0, row);
    for (int j = 0; j < 16; j++) {
        assert_float_equal(row[j], (j - 8) * 0.5f, 0.0f);
        assert_float_equal(row[j + 16], (15 - j - 8) * 0.5f, 0.0f);
    }
    qm_destroy(&w);
    assert_int_equal(qm_create_blocks(&w, QM_Q4_1, q41, 1, 32, NULL, 0), DS_OK);
    qm_dequantize_row(&w, 0, row);
    for (int j = 0; j < 16; j++) {
        assert_float_equal(row[j], j * 0.5f - 1.0f, 0.0f);
        assert_float_equal(row[j + 16], (15 - j) * 0.5f - 1.0f, 0.0f);
    }
    qm_destroy(&w);
    char msg[256];
    assert_int_equal(qm_create_blocks(&w, QM_Q4_1, q41, 1, 48, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "1x48"));
    assert_int_equal(qm_create_blocks(&w, QM_Q8_0, q41, 1, 32, msg, sizeof msg), DS_EINVAL);
    m = 0x7e00; /* fp16 NaN as the minimum */
    memcpy(q41 + 2, &m, 2);
    assert_int_equal(qm_create_blocks(&w, QM_Q4_1, q41, 1, 32, msg, sizeof msg), DS_ERANGE);
    assert_non_null(strstr(msg, "minimum"));
    assert_null(w.data);
    assert_int_equal(qm_bytes(QM_Q4_0, 576, 576), (size_t)576 * 18 * 18);
    assert_int_equal(qm_bytes(QM_Q4_1, 576, 576), (size_t)576 * 18 * 20);
    assert_string_equal(qm_type_name(QM_Q4_1), "q4_1");
}

/* A hand-made block with d = 1 exactly: q is round-half-away(x), bytes as ggml writes them. */
static void test_q8_0_layout(void **state) {
    (void)state;
    float x[64];
    for (int j = 0; j < 64; j++)
        x[j] = 0.0f;
    x[0] = -127.0f; /* amax = 127 -> d = 1.0 = fp16 0x3c00 */
    x[1] = 1.0f;
    x[2] = 2.5f;  /* -> 3 (half away from zero, as roundf) */
    x[3] = -2.5f; /* -> -3 */
    x[4] = 100.4f;
    x[31] = 126.6f;
    x[32] = 63.5f;  /* block 1: amax = 63.5 -> d = 0.5 = fp16 0x3800 */
    x[33] = -0.25f; /* -0.5 -> -1 */
    x[63] = 10.0f;  /* 20 */
    qm_matrix m;
    char msg[128];
    assert_int_equal(qm_create(&m, QM_Q8_0, x, 1, 64, msg, sizeof msg), DS_OK);
    assert_int_equal(qm_bytes(QM_Q8_0, 1, 64), 68);
    uint8_t expect[68] = {0};
    expect[0] = 0x00, expect[1] = 0x3c; /* little-endian fp16 1.0 */
    expect[2 + 0] = (uint8_t)-127;
    expect[2 + 1] = 1;
    expect[2 + 2] = 3;
    expect[2 + 3] = (uint8_t)-3;
    expect[2 + 4] = 100;
    expect[2 + 31] = 127;
    expect[34] = 0x00, expect[35] = 0x38; /* fp16 0.5 */
    expect[36 + 0] = 127;
    expect[36 + 1] = (uint8_t)-1;
    expect[36 + 31] = 20;
    assert_memory_equal(m.data, expect, sizeof expect);
    float back[64];
    qm_dequantize_row(&m, 0, back);
    assert_float_equal(back[2], 3.0f, 0.0f);
    assert_float_equal(back[33], -0.5f, 0.0f);
    qm_destroy(&m);
    assert_null(m.data);
    qm_destroy(&m); /* twice is fine */
}

/* Every value comes back within half a step of its block: |x - d q| <= d / 2. */
static void test_q8_0_round_trip_bound(void **state) {
    (void)state;
    const int rows = 37, cols = 96;
    float *x = alloc_floats((size_t)rows * cols), *back = alloc_floats(cols);
    for (int i = 0; i < rows * cols; i++) {
        float scale = powf(10.0f, (float)((i / 32) % 7) - 3.0f); /* 1e-3 .. 1e3 per block */
        x[i] = scale * grand();
    }
    x[5] = 0.0f;
    for (int j = 64; j < 96; j++)
        x[j] = 0.0f; /* an all-zero block: d = 0, q = 0 */
    qm_matrix m;
    assert_int_equal(qm_create(&m, QM_Q8_0, x, rows, cols, NULL, 0), DS_OK);
    const qm_block_q8_0 *blocks = m.data;
    for (int r = 0; r < rows; r++) {
        qm_dequantize_row(&m, r, back);
        for (int b = 0; b < cols / 32; b++) {
            const qm_block_q8_0 *blk = &blocks[r * (cols / 32) + b];
            float amax = 0.0f;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[r * cols + b * 32 + j]));
            assert_int_equal(blk->d, ds_float_to_half(amax / 127.0f));
            float d = ds_half_to_float(blk->d);
            for (int j = 0; j < 32; j++) {
                float xi = x[r * cols + b * 32 + j], err = fabsf(xi - back[b * 32 + j]);
                assert_true(err <= d * 0.5f * (1.0f + 1e-6f));
                assert_true(blk->qs[j] >= -127 && blk->qs[j] <= 127);
            }
        }
    }
    qm_destroy(&m);
    free(x);
    free(back);
}

static void test_create_errors(void **state) {
    (void)state;
    char msg[256];
    float x[128] = {0};
    qm_matrix m;
    assert_int_equal(qm_create(&m, QM_Q8_0, x, 2, 33, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "2x33"));
    assert_null(m.data);
    assert_int_equal(qm_create(&m, QM_F32, x, 0, 4, msg, sizeof msg), DS_EINVAL);
    assert_int_equal(qm_create(&m, (qm_type)7, x, 1, 32, msg, sizeof msg), DS_EINVAL);
    x[40] = NAN;
    assert_int_equal(qm_create(&m, QM_Q8_0, x, 2, 64, msg, sizeof msg), DS_ERANGE);
    assert_non_null(strstr(msg, "[0][40]"));
    x[40] = 1e8f; /* 1e8 / 127 > 65504: the fp16 scale overflows */
    assert_int_equal(qm_create(&m, QM_Q8_0, x, 2, 64, msg, sizeof msg), DS_ERANGE);
    assert_non_null(strstr(msg, "row 0"));
    assert_null(m.data);
    assert_int_equal(qm_bytes(QM_Q8_0, 576, 576), (size_t)576 * 18 * 34);
    assert_int_equal(qm_bytes(QM_F32, 3, 5), 60);
    assert_int_equal(qm_bytes(QM_Q8_0, 3, 40), 0);
    assert_string_equal(qm_type_name(QM_Q8_0), "q8_0");
}

/* Error bound of qm_matmul against qm_matmul_ref for output (t, o): activations are quantized
 * per 32-block with step d_x = amax_x / 127, so each x moves by at most d_x / 2, and the output
 * by at most sum_b (d_x,b / 2) sum_j |W'[o][j]|; plus fp32 accumulation, far below 1e-5 of
 * sum |x||W'|. */
static double act_quant_bound(const float *xt, const float *wrow, int cols, double *abs_dot) {
    double bound = 0.0, abs_sum = 0.0;
    for (int b = 0; b < cols / 32; b++) {
        double amax = 0.0, wsum = 0.0;
        for (int j = 0; j < 32; j++) {
            amax = fmax(amax, fabs(xt[b * 32 + j]));
            wsum += fabs(wrow[b * 32 + j]);
            abs_sum += fabs(xt[b * 32 + j]) * fabs(wrow[b * 32 + j]);
        }
        bound += amax / 254.0 * wsum;
    }
    *abs_dot = abs_sum;
    return bound;
}

typedef struct shape {
    int rows, cols;
} shape;

static const qm_type g_block_types[] = {QM_Q8_0, QM_Q4_0, QM_Q4_1};

/* Runs qm_matmul for every supported ISA, without and with the pool, on a random rows x cols
 * matrix of `type` and n tokens; checks each against the reference on a subsample of rows (the
 * activations' rounding is the only error: the kernels multiply the weights' codes exactly), the
 * ISAs against the scalar path, and pool against no pool (bit-identical). */
static void check_matmul(qm_type type, int rows, int cols, int n, threadpool *pool) {
    qm_matrix w;
    make_matrix(&w, type, rows, cols);
    float *x = alloc_floats((size_t)n * cols);
    for (size_t i = 0; i < (size_t)n * cols; i++)
        x[i] = grand();
    x[0] = 0.0f; /* a zero in a block and (for n > 1) an all-zero block */
    if (n > 1)
        for (int j = 0; j < 32; j++)
            x[cols + j] = 0.0f;
    size_t scratch_bytes = qm_scratch_bytes(&w, n);
    unsigned char *scratch = malloc(scratch_bytes + 1);
    assert_non_null(scratch);
    float *wrow = alloc_floats(cols), *ref = alloc_floats(n), *y_first = NULL, *y_prev = NULL;
    double wmax = 0.0, *xabs = calloc((size_t)n, sizeof(double));
    assert_non_null(xabs);
    for (int o = 0; o < rows; o++) {
        qm_dequantize_row(&w, o, wrow);
        for (int c = 0; c < cols; c++)
            wmax = fmax(wmax, fabs(wrow[c]));
    }
    for (int t = 0; t < n; t++)
        for (int c = 0; c < cols; c++)
            xabs[t] += fabs(x[(size_t)t * cols + c]);
    const int row_step = rows > 97 ? rows / 97 : 1; /* ~100 rows of the reference per shape */
    const qm_isa best = qm_isa_supported();
    for (int isa = QM_ISA_SCALAR; isa <= (int)best; isa++) {
        for (int use_pool = 0; use_pool <= 1; use_pool++) {
            assert_int_equal(qm_isa_force((qm_isa)isa), (qm_isa)isa);
            float *y = alloc_floats((size_t)n * rows);
            for (size_t i = 0; i < (size_t)n * rows; i++)
                y[i] = NAN; /* every output written */
            memset(scratch, 0xa5, scratch_bytes + 1);
            qm_matmul(y, x, &w, n, use_pool ? pool : NULL, scratch + 1); /* misaligned scratch */
            for (int o = 0; o < rows; o += row_step) {
                qm_matrix row = {type, 1, cols,
                                 (char *)w.data + (size_t)o * qm_bytes(type, 1, cols)};
                qm_dequantize_row(&w, o, wrow);
                for (int t = 0; t < n; t++) {
                    qm_matmul_ref(&ref[t], x + (size_t)t * cols, &row, 1);
                    double abs_dot,
                        bound = act_quant_bound(x + (size_t)t * cols, wrow, cols, &abs_dot);
                    double err = fabs((double)y[(size_t)t * rows + o] - ref[t]);
                    if (!(err <= bound + 1e-5 * abs_dot + 1e-30))
                        fail_msg("%s %dx%d n=%d isa=%s pool=%d: y[%d][%d] = %g, ref %g, bound %g",
                                 qm_type_name(type), rows, cols, n, qm_isa_name((qm_isa)isa),
                                 use_pool, t, o, (double)y[(size_t)t * rows + o], (double)ref[t],
                                 bound);
                }
            }
            for (size_t i = 0; i < (size_t)n * rows; i++)
                assert_false(isnan(y[i]));
            if (use_pool) {
                /* Each output is computed by the same code whichever thread runs it. */
                assert_memory_equal(y, y_prev, sizeof(float) * n * rows);
            } else if (y_first) {
                /* All ISAs compute the same integer block dots and scales; only the fp32
                 * summation order differs: a few ulp of sum |x||W'| <= max|W'| sum|x|. */
                for (size_t i = 0; i < (size_t)n * rows; i++)
                    if (!(fabs((double)y[i] - y_first[i]) <= 1e-5 * wmax * xabs[i / rows]))
                        fail_msg("%s %dx%d n=%d isa=%s: y[%zu] = %.9g, scalar %.9g",
                                 qm_type_name(type), rows, cols, n, qm_isa_name((qm_isa)isa), i,
                                 (double)y[i], (double)y_first[i]);
            }
            if (!y_first) y_first = y;
            if (y_prev != y_first) free(y_prev);
            y_prev = y;
        }
    }
    if (y_prev != y_first) free(y_prev);
    qm_isa_force(best);
    free(y_first);
    free(xabs);
    free(wrow);
    free(ref);
    free(scratch);
    free(x);
    qm_destroy(&w);
}

static void test_matmul_vs_ref(void **state) {
    threadpool *pool = *state;
    const shape shapes[] = {{1, 32}, {5, 64}, {37, 96}, {576, 576}, {1536, 576}, {576, 1536}};
    const int ns[] = {1, 3, 17, 130};
    for (size_t ty = 0; ty < sizeof g_block_types / sizeof g_block_types[0]; ty++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                /* Q4's 130-token runs on the FFN shapes add minutes under ASan and no new path */
                if (g_block_types[ty] != QM_Q8_0 && ns[k] > 17 &&
                    shapes[s].rows * shapes[s].cols > 576 * 576)
                    continue;
                check_matmul(g_block_types[ty], shapes[s].rows, shapes[s].cols, ns[k], pool);
            }
}

static void test_matmul_lm_head(void **state) {
    threadpool *pool = *state;
    check_matmul(QM_Q8_0, 49152, 576, 1, pool);
    check_matmul(QM_Q8_0, 49152, 576, 3, pool);
}

/* A token's outputs are the same bits whatever the batch around it: its row of an n-token call
 * (every position of the 4 x 2 / 4 x 4 tiles and their remainders, rows split into tasks and, for
 * n >= 8, tokens too) equals the call for that token alone, for every ISA, with and without the
 * pool. The engine's batch- and chunk-invariant logits rest on it. */
static void test_matmul_rows_independent_of_batch(void **state) {
    threadpool *pool = *state;
    const shape shapes[] = {{13, 64}, {576, 576}, {1536, 576}};
    const int ns[] = {2, 3, 4, 5, 7, 9, 16, 33, 64};
    enum { N_MAX = 64 };
    for (size_t st = 0; st < 3 * sizeof shapes / sizeof shapes[0]; st++) {
        const qm_type type = g_block_types[st % 3];
        const int rows = shapes[st / 3].rows, cols = shapes[st / 3].cols;
        float *x = alloc_floats((size_t)N_MAX * cols);
        float *y = alloc_floats((size_t)N_MAX * rows), *alone = alloc_floats((size_t)rows);
        for (size_t i = 0; i < (size_t)N_MAX * cols; i++)
            x[i] = grand();
        qm_matrix w;
        make_matrix(&w, type, rows, cols);
        void *scratch = malloc(qm_scratch_bytes(&w, N_MAX));
        assert_non_null(scratch);
        for (int isa = QM_ISA_SCALAR; isa <= (int)qm_isa_supported(); isa++)
            for (int use_pool = 0; use_pool <= 1; use_pool++) {
                qm_isa_force((qm_isa)isa);
                for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
                    const int n = ns[k], t0 = N_MAX - n; /* tokens t0.. of x */
                    qm_matmul(y, x + (size_t)t0 * cols, &w, n, use_pool ? pool : NULL, scratch);
                    for (int t = 0; t < n; t++) {
                        qm_matmul(alone, x + (size_t)(t0 + t) * cols, &w, 1, NULL, scratch);
                        if (memcmp(alone, y + (size_t)t * rows, sizeof(float) * rows))
                            fail_msg("%s %dx%d isa=%s pool=%d: token %d of n=%d differs from "
                                     "alone",
                                     qm_type_name(type), rows, cols, qm_isa_name((qm_isa)isa),
                                     use_pool, t, n);
                    }
                }
            }
        qm_isa_force(qm_isa_supported());
        free(scratch);
        qm_destroy(&w);
        free(x), free(y), free(alone);
    }
}

/* Q8_0 against the exact fp32 product with the original weights. Rigorous: per 32-block each
 * weight moves by <= d_w / 2 and each activation by <= d_x / 2 (d = amax / 127), so
 * |err| <= sum_b [ (d_x/2) sum|W'| + (d_w/2) sum|x| ] (+ fp32 rounding). Typical: with both
 * operands' rounding errors uniform in +-d/2 and d ~ 2.5 sigma / 127 for 32 Gaussians, each
 * relative error is ~ (2.5 / 127) / sqrt(12) = 0.57%, and the product's ~ sqrt(2) x that = 0.8%;
 * we require the relative Frobenius error to be below 1.5% and above 0.1% (it is not exact). */
static void test_q8_vs_exact_fp32(void **state) {
    threadpool *pool = *state;
    const int rows = 576, cols = 576, n = 17;
    float *src = alloc_floats((size_t)rows * cols), *x = alloc_floats((size_t)n * cols);
    float *y = alloc_floats((size_t)n * rows), *wrow = alloc_floats(cols);
    for (int i = 0; i < rows * cols; i++)
        src[i] = 0.05f * grand();
    for (int i = 0; i < n * cols; i++)
        x[i] = grand();
    qm_matrix w;
    assert_int_equal(qm_create(&w, QM_Q8_0, src, rows, cols, NULL, 0), DS_OK);
    void *scratch = malloc(qm_scratch_bytes(&w, n));
    qm_matmul(y, x, &w, n, pool, scratch);
    double err2 = 0.0, ref2 = 0.0;
    for (int t = 0; t < n; t++)
        for (int o = 0; o < rows; o++) {
            const float *xt = x + (size_t)t * cols, *wo = src + (size_t)o * cols;
            qm_dequantize_row(&w, o, wrow);
            double exact = 0.0, abs_dot, bound = act_quant_bound(xt, wrow, cols, &abs_dot);
            for (int c = 0; c < cols; c++)
                exact += (double)xt[c] * wo[c];
            for (int b = 0; b < cols / 32; b++) {
                double amax = 0.0, xsum = 0.0;
                for (int j = 0; j < 32; j++) {
                    amax = fmax(amax, fabs(wo[b * 32 + j]));
                    xsum += fabs(xt[b * 32 + j]);
                }
                bound += amax / 254.0 * (1.0 + 1e-3) * xsum; /* fp16 d: 2^-11 relative */
            }
            double err = fabs(y[(size_t)t * rows + o] - exact);
            assert_true(err <= bound + 1e-5 * abs_dot);
            err2 += err * err;
            ref2 += exact * exact;
        }
    double rel = sqrt(err2 / ref2);
    assert_true(rel < 0.015);
    assert_true(rel > 0.001);
    free(scratch);
    free(src);
    free(x);
    free(y);
    free(wrow);
    qm_destroy(&w);
}

static void test_f32_matmul(void **state) {
    threadpool *pool = *state;
    const int rows = 192, cols = 576, n = 3;
    float *src = alloc_floats((size_t)rows * cols), *x = alloc_floats((size_t)n * cols);
    float *y = alloc_floats((size_t)n * rows), *ref = alloc_floats((size_t)n * rows);
    for (int i = 0; i < rows * cols; i++)
        src[i] = grand();
    for (int i = 0; i < n * cols; i++)
        x[i] = grand();
    qm_matrix w;
    assert_int_equal(qm_create(&w, QM_F32, src, rows, cols, NULL, 0), DS_OK);
    assert_int_equal(qm_scratch_bytes(&w, n), 0);
    assert_memory_equal(w.data, src, sizeof(float) * rows * cols);
    qm_matmul(y, x, &w, n, pool, NULL);
    qm_matmul_ref(ref, x, &w, n);
    for (int i = 0; i < n * rows; i++)
        assert_float_equal(y[i], ref[i], 1e-3f);
    qm_matmul(y, x, &w, 0, pool, NULL); /* n = 0: nothing to do */
    free(src);
    free(x);
    free(y);
    free(ref);
    qm_destroy(&w);
}

static void test_isa_force(void **state) {
    (void)state;
    qm_isa best = qm_isa_supported();
    assert_int_equal(qm_isa_force(QM_ISA_SCALAR), QM_ISA_SCALAR);
    assert_int_equal(qm_isa_active(), QM_ISA_SCALAR);
    assert_int_equal(qm_isa_force((qm_isa)99), best); /* clamped */
    assert_int_equal(qm_isa_active(), best);
    assert_string_equal(qm_isa_name(QM_ISA_AVX2), "avx2");
}

static int setup_pool(void **state) {
    threadpool *pool = NULL;
    if (threadpool_create(&pool, 3, NULL, 0) != DS_OK) return -1;
    *state = pool;
    return 0;
}

static int teardown_pool(void **state) {
    threadpool_destroy(*state);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_0_layout),
        cmocka_unit_test(test_q8_0_round_trip_bound),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_q4_layout),
        cmocka_unit_test(test_isa_force),
        cmocka_unit_test(test_matmul_vs_ref),
        cmocka_unit_test(test_matmul_lm_head),
        cmocka_unit_test(test_q8_vs_exact_fp32),
        cmocka_unit_test(test_f32_matmul),
        cmocka_unit_test(test_matmul_rows_independent_of_batch),
    };
    return cmocka_run_group_tests(tests, setup_pool, teardown_pool);
}
