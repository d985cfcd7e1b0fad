/* decoquant_test — the KV page codec: bit packing, byte accounting, exactness of the MPO step,
 * error bounds of every method, and clear errors for invalid formats. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <lapacke.h>

#include "common/half.h"
#include "common/rng.h"
#include "kvcache/decoquant.h"

/* Tests are seeded and repeatable. */
static ds_rng g_rng;

/* A key-like fp16 page: Gaussian with a few outlier channels 10-50x larger. */
static void make_page(uint16_t *page, int T, int D, int outliers) {
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++) {
            float scale = (outliers && c % 37 == 5) ? 10.0f + (float)(c % 41) : 1.0f;
            page[t * D + c] = ds_float_to_half(ds_rng_gauss(&g_rng) * scale);
        }
}

static double rel_error(const uint16_t *ref, const float *got, int n) {
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        double r = ds_half_to_float(ref[i]);
        num += (got[i] - r) * (got[i] - r);
        den += r * r;
    }
    return sqrt(num / den);
}

typedef struct codec {
    dq_format fmt;
    uint8_t *page;
    void *work;
} codec;

static codec codec_make(dq_config cfg, dq_role role) {
    codec c;
    char msg[160];
    assert_int_equal(dq_format_init(&c.fmt, &cfg, role, msg, sizeof msg), DS_OK);
    c.page = malloc(dq_page_bytes(&c.fmt));
    c.work = aligned_alloc(16, dq_workspace_bytes(&c.fmt));
    assert_non_null(c.page);
    assert_non_null(c.work);
    return c;
}
static void codec_free(codec *c) {
    free(c->page);
    free(c->work);
}

/* Compresses then decompresses one page and returns the relative Frobenius error. */
static double round_trip(codec *c, const uint16_t *src, float *out) {
    dq_compress_page(&c->fmt, src, (size_t)c->fmt.D, c->page, c->work);
    dq_decompress_page(&c->fmt, c->page, out, (size_t)c->fmt.D, c->work);
    return rel_error(src, out, c->fmt.T * c->fmt.D);
}

static void test_pack_round_trip(void **state) {
    (void)state;
    g_rng.state = 1;
    int bits_list[] = {2, 3, 4, 8};
    for (int b = 0; b < 4; b++) {
        int bits = bits_list[b], n = 1000;
        uint8_t codes[1000], packed[1000], back[1000];
        for (int i = 0; i < n; i++)
            codes[i] = (uint8_t)(ds_rng_u64(&g_rng) & ((1u << bits) - 1));
        dq_pack_codes(codes, n, bits, packed);
        dq_unpack_codes(packed, n, bits, back);
        assert_memory_equal(codes, back, (size_t)n);
        /* Layout: code k sits at bit offset k*bits, least significant first. */
        for (int k = 0; k < n; k++) {
            int bit = k * bits;
            int v = packed[bit / 8] | (bit % 8 + bits > 8 ? packed[bit / 8 + 1] << 8 : 0);
            assert_int_equal((v >> (bit % 8)) & ((1 << bits) - 1), codes[k]);
        }
    }
}

/* Byte accounting computed by hand for a 32 x 128 page, g = 64. */
static void test_exact_bytes(void **state) {
    (void)state;
    struct {
        dq_method method;
        int bits;
        dq_role role;
        size_t bytes;
    } cases[] = {
        {DQ_FP16, 16, DQ_KEYS, 32 * 128 * 2},
        /* small 8x8 fp16 = 128; 8x512 values / 64 = 64 groups x 4 B = 256; 4096 x 4 bit = 2048 */
        {DQ_DECOQUANT, 4, DQ_KEYS, 128 + 256 + 2048},
        {DQ_DECOQUANT, 2, DQ_VALUES, 128 + 256 + 1024},
        {DQ_DECOQUANT, 8, DQ_KEYS, 128 + 256 + 4096},
        /* per-token: 2 groups of 64 per token -> 64 groups x 4 B */
        {DQ_RTN, 4, DQ_KEYS, 256 + 2048},
        {DQ_RTN, 2, DQ_VALUES, 256 + 1024},
        /* KIVI keys: per-channel groups of 32 tokens (the page) -> 128 groups x 4 B */
        {DQ_KIVI, 4, DQ_KEYS, 512 + 2048},
        {DQ_KIVI, 4, DQ_VALUES, 256 + 2048},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dq_config cfg = {.method = cases[i].method,
                         .bits = cases[i].bits,
                         .block_size = 32,
                         .head_dim = 128,
                         .group_size = 64};
        dq_format f;
        char msg[160];
        assert_int_equal(dq_format_init(&f, &cfg, cases[i].role, msg, sizeof msg), DS_OK);
        assert_int_equal(dq_page_bytes(&f), cases[i].bytes);
        assert_true(fabs(dq_bytes_per_token(&f) - (double)cases[i].bytes / 32) < 1e-12);
    }
    /* Sections are 16-byte aligned and the padding is counted: head_dim 64, t1=1, d1=3 is not
     * allowed (64 % 3), but rank 3 of d1=4 gives a 4x3 small tensor of 24 bytes -> 32. */
    dq_config cfg = {.method = DQ_DECOQUANT,
                     .bits = 4,
                     .block_size = 32,
                     .head_dim = 64,
                     .group_size = 64,
                     .rank = 3};
    dq_format f;
    assert_int_equal(dq_format_init(&f, &cfg, DQ_KEYS, NULL, 0), DS_OK);
    assert_int_equal(f.params_offset, 32);
    /* 3 x 512 values / 64 = 24 groups -> 96 B -> payload at 128; 1536 x 4 bit = 768 B. */
    assert_int_equal(f.payload_offset, 128);
    assert_int_equal(dq_page_bytes(&f), 128 + 768);
}

/* Full rank, no quantization: small x large reproduces the page to float precision, for several
 * factorisations and both placements of S. Absorbing S into the small tensor leaves the large
 * tensor with orthonormal rows. */
static void test_mpo_exact(void **state) {
    (void)state;
    g_rng.state = 7;
    int factors[][4] = {{32, 128, 1, 8}, {32, 128, 2, 4}, {32, 128, 4, 8}, {16, 64, 1, 4},
                        {64, 64, 2, 2},  {32, 64, 1, 1},  {8, 128, 8, 8}};
    for (size_t fi = 0; fi < sizeof factors / sizeof factors[0]; fi++) {
        for (int absorb = 0; absorb < 2; absorb++) {
            int T = factors[fi][0], D = factors[fi][1];
            dq_config cfg = {.method = DQ_DECOQUANT,
                             .bits = 4,
                             .block_size = T,
                             .head_dim = D,
                             .t1 = factors[fi][2],
                             .d1 = factors[fi][3],
                             .absorb = absorb};
            codec c = codec_make(cfg, DQ_KEYS);
            const dq_format *f = &c.fmt;
            uint16_t *src = malloc((size_t)T * D * 2);
            float *page = malloc((size_t)T * D * 4), *back = malloc((size_t)T * D * 4);
            float *small = malloc((size_t)f->m * f->rank * 4), *large = malloc((size_t)T * D * 4);
            float sv[64];
            make_page(src, T, D, 1);
            for (int i = 0; i < T * D; i++)
                page[i] = ds_half_to_float(src[i]);
            dq_mpo_decompose(f, page, small, large, sv, c.work);
            dq_mpo_reconstruct(f, small, large, back, c.work);
            double err = rel_error(src, back, T * D);
            assert_true(err < 2e-6);
            for (int k = 1; k < f->rank; k++)
                assert_true(sv[k] <= sv[k - 1]);
            if (absorb == DQ_ABSORB_SMALL) {
                for (int a = 0; a < f->rank && sv[a] > 1e-3f * sv[0]; a++)
                    for (int b = 0; b < f->rank && sv[b] > 1e-3f * sv[0]; b++) {
                        double dot = 0;
                        for (int j = 0; j < f->n; j++)
                            dot += (double)large[a * f->n + j] * large[b * f->n + j];
                        assert_true(fabs(dot - (a == b)) < 1e-4);
                    }
            }
            free(src), free(page), free(back), free(small), free(large);
            codec_free(&c);
        }
    }
}

/* Singular values from the Jacobi-on-Gram path agree with LAPACK's SVD of the regrouped page,
 * built here independently from the documented index formula. */
static void test_singular_values_match_lapack(void **state) {
    (void)state;
    g_rng.state = 11;
    const int T = 32, D = 128, t1 = 2, d1 = 4, t2 = T / t1, d2 = D / d1, m = t1 * d1, n = t2 * d2;
    dq_config cfg = {
        .method = DQ_DECOQUANT, .bits = 4, .block_size = T, .head_dim = D, .t1 = t1, .d1 = d1};
    codec c = codec_make(cfg, DQ_KEYS);
    uint16_t src[32 * 128];
    float page[32 * 128], mp[32 * 128], small[64], large[32 * 128], sv[8], ref[8], u[1], vt[1],
        superb[8];
    make_page(src, T, D, 1);
    for (int t = 0; t < T; t++)
        for (int ch = 0; ch < D; ch++) {
            page[t * D + ch] = ds_half_to_float(src[t * D + ch]);
            int row = (t / t2) * d1 + ch / d2, col = (t % t2) * d2 + ch % d2;
            mp[row * n + col] = page[t * D + ch];
        }
    dq_mpo_decompose(&c.fmt, page, small, large, sv, c.work);
    assert_int_equal(
        LAPACKE_sgesvd(LAPACK_ROW_MAJOR, 'N', 'N', m, n, mp, n, ref, u, 1, vt, 1, superb), 0);
    for (int k = 0; k < m; k++)
        assert_true(fabsf(sv[k] - ref[k]) <= 1e-4f * ref[0]);
    codec_free(&c);
}

/* Eckart-Young: truncating to rank r leaves exactly the energy of the dropped directions. */
static void test_rank_truncation(void **state) {
    (void)state;
    g_rng.state = 13;
    const int T = 32, D = 64;
    dq_config full_cfg = {
        .method = DQ_DECOQUANT, .bits = 8, .block_size = T, .head_dim = D, .d1 = 8};
    codec full = codec_make(full_cfg, DQ_VALUES);
    uint16_t src[32 * 64];
    float page[32 * 64], small[64], large[32 * 64], back[32 * 64], sv[8], sv_r[8];
    make_page(src, T, D, 0);
    for (int i = 0; i < T * D; i++)
        page[i] = ds_half_to_float(src[i]);
    dq_mpo_decompose(&full.fmt, page, small, large, sv, full.work);
    for (int r = 1; r <= 8; r++) {
        dq_config cfg = full_cfg;
        cfg.rank = r;
        codec c = codec_make(cfg, DQ_VALUES);
        dq_mpo_decompose(&c.fmt, page, small, large, sv_r, c.work);
        dq_mpo_reconstruct(&c.fmt, small, large, back, c.work);
        double dropped = 0, total = 0;
        for (int k = 0; k < 8; k++) {
            total += (double)sv[k] * sv[k];
            if (k >= r) dropped += (double)sv[k] * sv[k];
        }
        double expect = sqrt(dropped / total), got = rel_error(src, back, T * D);
        assert_true(fabs(got - expect) < 1e-4);
        codec_free(&c);
    }
    codec_free(&full);
}

/* Every method at 8 bits is near-lossless; error grows as bits shrink; fp16 is bit exact. */
static void test_error_bounds(void **state) {
    (void)state;
    g_rng.state = 17;
    const int T = 32, D = 128;
    uint16_t src[32 * 128];
    float out[32 * 128];
    make_page(src, T, D, 1);
    dq_method methods[] = {DQ_DECOQUANT, DQ_RTN, DQ_KIVI};
    for (int mi = 0; mi < 3; mi++) {
        for (int role = 0; role < 2; role++) {
            double errs[4];
            int bits[] = {8, 4, 3, 2};
            for (int b = 0; b < 4; b++) {
                dq_config cfg = {.method = methods[mi],
                                 .bits = bits[b],
                                 .block_size = T,
                                 .head_dim = D,
                                 .group_size = 64};
                codec c = codec_make(cfg, (dq_role)role);
                errs[b] = round_trip(&c, src, out);
                codec_free(&c);
            }
            print_message("%-9s %-6s rel err 8/4/3/2 bits: %.4f %.4f %.4f %.4f\n",
                          dq_method_name(methods[mi]), role ? "values" : "keys", errs[0], errs[1],
                          errs[2], errs[3]);
            assert_true(errs[0] < 0.015);
            assert_true(errs[0] < errs[1] && errs[1] < errs[2] && errs[2] < errs[3]);
            assert_true(errs[3] < 1.0);
        }
    }
    dq_config cfg = {.method = DQ_DECOQUANT, .bits = 16, .block_size = T, .head_dim = D};
    codec c = codec_make(cfg, DQ_KEYS);
    assert_int_equal(c.fmt.cfg.method, DQ_FP16);
    assert_true(round_trip(&c, src, out) == 0.0);
    codec_free(&c);
}

/* The refit re-solves the small tensor by least squares: never worse than the plain codec. */
static void test_refit_not_worse(void **state) {
    (void)state;
    g_rng.state = 19;
    uint16_t src[32 * 128];
    float out[32 * 128];
    for (int trial = 0; trial < 20; trial++) {
        make_page(src, 32, 128, trial % 2);
        for (int bits = 2; bits <= 4; bits += 2) {
            dq_config cfg = {.method = DQ_DECOQUANT,
                             .bits = bits,
                             .block_size = 32,
                             .head_dim = 128,
                             .axis = (dq_axis)(trial % 2)};
            codec plain = codec_make(cfg, DQ_KEYS);
            cfg.refit = 1;
            codec refit = codec_make(cfg, DQ_KEYS);
            double e_plain = round_trip(&plain, src, out), e_refit = round_trip(&refit, src, out);
            assert_true(e_refit <= e_plain * 1.001);
            codec_free(&plain);
            codec_free(&refit);
        }
    }
}

/* The presets at head_dim 64 (SmolLM2): decoquant-hv costs exactly KIVI's bytes at 4, 3 and 2 bits
 * (keys: 4x4 small 32 B + 64 channel groups x 4 B + payload + 8 outliers x 4 B; values: 32
 * symmetric scales x 2 B + payload), hadamard-rtn exactly RTN's. */
static void test_preset_bytes(void **state) {
    (void)state;
    for (int bits = 2; bits <= 4; bits++) {
        size_t bytes[DQ_N_METHODS][2];
        for (int mth = DQ_RTN; mth < DQ_N_METHODS; mth++)
            for (int role = 0; role < 2; role++) {
                dq_config cfg = {.method = (dq_method)mth,
                                 .bits = bits,
                                 .block_size = 32,
                                 .head_dim = 64,
                                 .group_size = 64};
                dq_format f;
                assert_int_equal(dq_format_init(&f, &cfg, (dq_role)role, NULL, 0), DS_OK);
                assert_true(f.cfg.method <= DQ_KIVI); /* a format never holds a preset */
                bytes[mth][role] = dq_page_bytes(&f);
            }
        size_t payload = (size_t)32 * 64 * bits / 8;
        assert_int_equal(bytes[DQ_DECOQUANT_HV][DQ_KEYS], 32 + 256 + payload + 32);
        assert_int_equal(bytes[DQ_DECOQUANT_HV][DQ_VALUES], 64 + payload);
        assert_int_equal(bytes[DQ_DECOQUANT_HV][0] + bytes[DQ_DECOQUANT_HV][1],
                         bytes[DQ_KIVI][0] + bytes[DQ_KIVI][1]);
        assert_int_equal(bytes[DQ_HADAMARD_RTN][0], bytes[DQ_RTN][0]);
        assert_int_equal(bytes[DQ_HADAMARD_RTN][1], bytes[DQ_RTN][1]);
    }
}

/* The Hadamard rotation is exact at 8 bits up to quantization, and per token it spreads an
 * outlier channel over all channels, so rotated per-token RTN beats plain RTN on outlier keys. */
static void test_rotation(void **state) {
    (void)state;
    g_rng.state = 29;
    uint16_t src[32 * 128];
    float out[32 * 128];
    make_page(src, 32, 128, 1);
    double err[2][2];
    for (int rotate = 0; rotate < 2; rotate++)
        for (int b = 0; b < 2; b++) {
            dq_config cfg = {.method = DQ_RTN,
                             .bits = b ? 4 : 8,
                             .block_size = 32,
                             .head_dim = 128,
                             .group_size = 128,
                             .rotate = rotate};
            codec c = codec_make(cfg, DQ_KEYS);
            err[rotate][b] = round_trip(&c, src, out);
            codec_free(&c);
        }
    print_message("rtn rel err 8/4 bits: plain %.4f %.4f, rotated %.4f %.4f\n", err[0][0],
                  err[0][1], err[1][0], err[1][1]);
    assert_true(err[1][0] < 0.01);
    assert_true(err[1][1] < 0.7 * err[0][1]);
}

/* Outliers: the k values that widen their groups most come back exact (fp16), the rest of the
 * page gets finer grids; unused slots (a page without outliers to take) are marked 0xffff. */
static void test_outliers(void **state) {
    (void)state;
    g_rng.state = 31;
    const int T = 32, D = 64, k = 8;
    uint16_t src[32 * 64];
    float out[32 * 64];
    make_page(src, T, D, 0);
    int spikes[8];
    for (int j = 0; j < k; j++) {
        spikes[j] = (j * 263 + 17) % (T * D);
        src[spikes[j]] = ds_float_to_half((j % 2 ? -1.0f : 1.0f) * (200.0f + 10.0f * (float)j));
    }
    for (int mth = DQ_DECOQUANT; mth <= DQ_KIVI; mth++) {
        double err[2];
        for (int use = 0; use < 2; use++) {
            dq_config cfg = {.method = (dq_method)mth,
                             .bits = 4,
                             .block_size = T,
                             .head_dim = D,
                             .group_size = 64,
                             .outliers = use ? k : 0};
            codec c = codec_make(cfg, DQ_KEYS);
            assert_int_equal(dq_page_bytes(&c.fmt) - c.fmt.outlier_offset, use ? 4 * k : 0);
            err[use] = round_trip(&c, src, out);
            if (use && mth != DQ_DECOQUANT)
                for (int j = 0; j < k; j++)
                    assert_true(out[spikes[j]] == ds_half_to_float(src[spikes[j]]));
            codec_free(&c);
        }
        print_message("%-9s 4-bit rel err with 8 spikes: %.4f, 8 outliers kept: %.4f\n",
                      dq_method_name((dq_method)mth), err[0], err[1]);
        assert_true(err[1] < 0.5 * err[0]);
    }
    for (int i = 0; i < T * D; i++)
        src[i] = ds_float_to_half(1.0f);
    dq_config cfg = {.method = DQ_RTN, .bits = 2, .block_size = T, .head_dim = D, .outliers = 4};
    codec c = codec_make(cfg, DQ_KEYS);
    assert_true(round_trip(&c, src, out) == 0.0);
    const uint16_t *slots = (const uint16_t *)(c.page + c.fmt.outlier_offset);
    for (int j = 0; j < 4; j++)
        assert_int_equal(slots[2 * j], 0xffff);
    codec_free(&c);
}

/* The least-squares grid search keeps min/max as a candidate per group: RTN and KIVI pages
 * (whose groups are the page's own values) never get worse, symmetric grids included. */
static void test_clip_not_worse(void **state) {
    (void)state;
    g_rng.state = 37;
    uint16_t src[32 * 64];
    float out[32 * 64];
    for (int trial = 0; trial < 8; trial++) {
        make_page(src, 32, 64, trial % 2);
        for (int mth = DQ_RTN; mth <= DQ_KIVI; mth++)
            for (int bits = 2; bits <= 8; bits *= 2) {
                dq_config cfg = {.method = (dq_method)mth,
                                 .bits = bits,
                                 .block_size = 32,
                                 .head_dim = 64,
                                 .symmetric = trial / 4};
                codec plain = codec_make(cfg, (dq_role)(trial % 2));
                cfg.clip = 1;
                codec clip = codec_make(cfg, (dq_role)(trial % 2));
                double e_plain = round_trip(&plain, src, out), e_clip = round_trip(&clip, src, out);
                assert_true(e_clip <= e_plain * (1.0 + 1e-9));
                if (bits == 2) assert_true(e_clip < 0.95 * e_plain);
                codec_free(&plain);
                codec_free(&clip);
            }
    }
}

/* Strided input (a page inside an open block of several heads) and determinism. */
static void test_strided_and_deterministic(void **state) {
    (void)state;
    g_rng.state = 23;
    const int T = 16, D = 64, heads = 3, stride = heads * D;
    uint16_t block[16 * 3 * 64], page_src[16 * 64];
    make_page(block, T, stride, 1);
    for (int t = 0; t < T; t++)
        memcpy(page_src + t * D, block + t * stride + D, D * 2);
    dq_config cfg = {
        .method = DQ_DECOQUANT, .bits = 4, .block_size = T, .head_dim = D, .group_size = 32};
    codec a = codec_make(cfg, DQ_KEYS), b = codec_make(cfg, DQ_KEYS);
    dq_compress_page(&a.fmt, block + D, (size_t)stride, a.page, a.work);
    dq_compress_page(&b.fmt, page_src, (size_t)D, b.page, b.work);
    assert_memory_equal(a.page, b.page, dq_page_bytes(&a.fmt));
    float out[3 * 16 * 64];
    for (int i = 0; i < 3 * 16 * 64; i++)
        out[i] = NAN;
    dq_decompress_page(&a.fmt, a.page, out + D, (size_t)stride, a.work);
    for (int t = 0; t < T; t++)
        for (int c = 0; c < stride; c++)
            assert_true((c >= D && c < 2 * D) ? !isnan(out[t * stride + c])
                                              : isnan(out[t * stride + c]));
    codec_free(&a);
    codec_free(&b);
}

/* A constant or all-zero page must not divide by zero anywhere. */
static void test_degenerate_pages(void **state) {
    (void)state;
    uint16_t src[32 * 64];
    float out[32 * 64];
    uint16_t values[] = {0, ds_float_to_half(3.5f)};
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 32 * 64; i++)
            src[i] = values[v];
        for (int mth = DQ_DECOQUANT; mth < DQ_N_METHODS; mth++) {
            for (int refit = 0; refit < 2; refit++) {
                dq_config cfg = {.method = (dq_method)mth,
                                 .bits = 2,
                                 .block_size = 32,
                                 .head_dim = 64,
                                 .refit = refit};
                codec c = codec_make(cfg, DQ_KEYS);
                dq_compress_page(&c.fmt, src, 64, c.page, c.work);
                dq_decompress_page(&c.fmt, c.page, out, 64, c.work);
                for (int i = 0; i < 32 * 64; i++)
                    assert_true(fabsf(out[i] - ds_half_to_float(values[v])) < 1e-2f);
                codec_free(&c);
            }
        }
    }
}

static void expect_invalid(dq_config cfg, const char *needle) {
    dq_format f;
    char msg[160] = "";
    ds_status st = dq_format_init(&f, &cfg, DQ_KEYS, msg, sizeof msg);
    assert_int_not_equal(st, DS_OK);
    if (!strstr(msg, needle)) fail_msg("message '%s' lacks '%s'", msg, needle);
}

static void test_invalid_formats(void **state) {
    (void)state;
    dq_config ok = {.method = DQ_DECOQUANT, .bits = 4, .block_size = 32, .head_dim = 128};
    dq_config c;
    c = ok, c.bits = 5, expect_invalid(c, "bits = 5");
    c = ok, c.bits = 0, expect_invalid(c, "bits = 0");
    c = ok, c.block_size = 0, expect_invalid(c, "block_size = 0");
    c = ok, c.head_dim = 0, expect_invalid(c, "head_dim = 0");
    c = ok, c.head_dim = -4, expect_invalid(c, "head_dim = -4");
    c = ok, c.t1 = 3, expect_invalid(c, "t1 = 3");
    c = ok, c.head_dim = 100, c.d1 = 8, expect_invalid(c, "d1 = 8");
    c = ok, c.rank = 9, expect_invalid(c, "rank = 9");
    c = ok, c.t1 = 32, c.d1 = 16, expect_invalid(c, "t1*d1 = 512");
    c = ok, c.group_size = 48, expect_invalid(c, "group_size = 48");
    c = ok, c.group_size = -1, expect_invalid(c, "group_size = -1");
    c = ok, c.method = DQ_FP16, expect_invalid(c, "fp16");
    c = ok, c.method = (dq_method)42, expect_invalid(c, "method");
    c = ok, c.method = DQ_RTN, c.head_dim = 96, c.group_size = 64, expect_invalid(c, "group_size");
    c = ok, c.outliers = -1, expect_invalid(c, "outliers = -1");
    c = ok, c.outliers = DQ_MAX_OUTLIERS + 1, expect_invalid(c, "outliers = 257");
    c = ok, c.method = DQ_HADAMARD_RTN, c.head_dim = 96, c.group_size = 32;
    expect_invalid(c, "head_dim = 96 is not a power of two");
    dq_method mth;
    char msg[128];
    assert_int_equal(dq_method_from_name("kivi", &mth, msg, sizeof msg), DS_OK);
    assert_int_equal(mth, DQ_KIVI);
    assert_int_equal(dq_method_from_name("decoquant-hv", &mth, msg, sizeof msg), DS_OK);
    assert_int_equal(mth, DQ_DECOQUANT_HV);
    assert_int_equal(dq_method_from_name("gptq", &mth, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "gptq"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pack_round_trip),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_mpo_exact),
        cmocka_unit_test(test_singular_values_match_lapack),
        cmocka_unit_test(test_rank_truncation),
        cmocka_unit_test(test_error_bounds),
        cmocka_unit_test(test_refit_not_worse),
        cmocka_unit_test(test_preset_bytes),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_outliers),
        cmocka_unit_test(test_clip_not_worse),
        cmocka_unit_test(test_strided_and_deterministic),
        cmocka_unit_test(test_degenerate_pages),
        cmocka_unit_test(test_invalid_formats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
