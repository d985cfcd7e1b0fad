/* kv_page_dot_test — scores and value sums read straight from pages written by the C codec agree
 * with the reference path (the page decoded by kv_page_decode_ref, products in double) for every
 * method, bit width and DecoQuant variant, on SmolLM2's page shape and odd ones, with the AVX2
 * kernels and the plain-C ones; the same bits every time they are asked, and the same bits for a
 * vector whatever other vectors share the call (a prompt chunk's rows against decode's one). */
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
#include "kernels/kv_page_dot.h"
#include "kernels/qmatmul.h"
#include "kvcache/decoquant.h"
#include "kvcache/page_format.h"

static ds_rng g_rng = {7};

typedef struct page_case {
    const char *name;
    dq_config codec; /* block_size and head_dim from the shape */
} page_case;

/* Keys and values Gaussian, a few channels 10x larger (the outliers KIVI's channel groups are
 * for), rounded to fp16 as the open pool holds them. */
static void fill_page(uint16_t *src, int T, int D) {
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++)
            src[t * D + c] =
                ds_float_to_half((c % 7 == 3 ? 10.0f : 1.0f) * (float)ds_rng_gauss(&g_rng));
}

/* Bound on |kernel - reference| for one output: rel times the largest term magnitude the sums
 * can hold, sum_i |u_i| x 3 max|x| (a code times its scale is at most |x| + |min|, the min at
 * most max|x|; for DecoQuant, the page's max|A| x max|B| x rank stands for max|x|). rel = 1e-6
 * is ~16 float ulps (the worst seen is ~1e-7); one code off by one step moves an output by ~1e-3
 * of that magnitude. */
static double bound(const float *u, int n, double xmax) {
    double s = 0.0;
    for (int i = 0; i < n; i++)
        s += fabs(u[i]);
    return 1e-6 * s * 3.0 * xmax + 1e-30;
}

/* The magnitude of one page's values as its sums see them. */
static double page_xmax(const kv_page_format *f, const uint8_t *page, const float *decoded) {
    double xmax = 0.0;
    for (int i = 0; i < f->block_size * f->head_dim; i++)
        xmax = fmax(xmax, fabs(decoded[i]));
    if (f->method != KV_DECOQUANT) return xmax;
    const uint16_t *small = (const uint16_t *)(page + f->small_offset);
    double amax = 0.0;
    for (int i = 0; i < f->m * f->rank; i++)
        amax = fmax(amax, fabs(ds_half_to_float(small[i])));
    const uint16_t *params = (const uint16_t *)(page + f->params_offset);
    double bmax = 0.0;
    for (int g = 0; g < f->n_groups; g++) {
        const double sc = ds_half_to_float(params[2 * g]), mn = ds_half_to_float(params[2 * g + 1]);
        bmax = fmax(bmax, fmax(fabs(mn), fabs(mn + sc * ((1 << f->bits) - 1))));
    }
    return fmax(xmax, amax * bmax * f->rank);
}

enum { MAX_VECTORS = 13 }; /* a full 8-lane block, then 5; and 11: then 3 */

/* The products of n vectors in one call: u, y [MAX_VECTORS][len]; values start at 1. */
static void products(const kv_page_format *f, const float *tile, int role, int n, const float *u,
                     float *y, int len, float *scratch) {
    for (int k = 0; k < n * len; k++)
        y[k] = role ? 1.0f : 0.0f;
    if (role)
        kv_page_values(f, tile, n, u, (size_t)len, y, (size_t)len, scratch);
    else
        kv_page_scores(f, tile, n, u, (size_t)len, 0.125f, y, (size_t)len, scratch);
}

/* One case: several pages, each with fresh queries and softmax-like weights. Each vector alone
 * is checked against the reference (scores: s[t] = 0.125 q . k_t; values: out[c] = 1 + sum_t p_t
 * v_t[c]); then 13, 11 and 2 vectors in one call must give each vector's bits alone. */
static void check_case(const page_case *pc, int T, int D, double *worst) {
    dq_config cfg = pc->codec;
    cfg.block_size = T, cfg.head_dim = D;
    char msg[200];
    const int len = T > D ? T : D;
    for (int role = 0; role < 2; role++) {
        dq_format fmt;
        if (dq_format_init(&fmt, &cfg, role ? DQ_VALUES : DQ_KEYS, msg, sizeof msg) != DS_OK) {
            assert_true(pc->codec.group_size > 0); /* only a fixed group may not fit a shape */
            return;
        }
        const kv_page_format f = kv_page_format_from_dq(&fmt);
        const int n_in = role ? T : D, n_out = role ? D : T;
        uint16_t *src = malloc((size_t)T * D * sizeof *src);
        uint8_t *page = aligned_alloc(16, fmt.page_bytes);
        void *work = aligned_alloc(16, dq_workspace_bytes(&fmt) + 16);
        float *decoded = malloc((size_t)T * D * sizeof(float));
        float *scratch = malloc((kv_page_dot_scratch_floats(&f, MAX_VECTORS) + 1) * sizeof(float));
        float *tile = malloc(kv_page_tile_floats(&f) * sizeof(float));
        float *u = malloc((size_t)MAX_VECTORS * len * sizeof(float));
        float *y = malloc((size_t)MAX_VECTORS * len * sizeof(float));
        float *y2 = malloc((size_t)MAX_VECTORS * len * sizeof(float));
        assert_true(src && page && work && decoded && scratch && tile && u && y && y2);
        for (int rep = 0; rep < 4; rep++) {
            fill_page(src, T, D);
            dq_compress_page(&fmt, src, (size_t)D, page, work);
            kv_page_decode_ref(&f, page, decoded);
            const double xmax = page_xmax(&f, page, decoded);
            for (int k = 0; k < MAX_VECTORS * len; k++)
                u[k] = role ? (float)fabs(ds_rng_gauss(&g_rng)) / (float)T
                            : (float)ds_rng_gauss(&g_rng);
            for (int isa = QM_ISA_SCALAR; isa <= (int)qm_isa_supported(); isa++) {
                qm_isa_force((qm_isa)isa);
                const char *isa_name = qm_isa_name((qm_isa)isa);
                kv_page_unpack(&f, page, tile);
                for (int k = 0; k < MAX_VECTORS; k++) {
                    const float *uk = u + (size_t)k * len;
                    float *yk = y + (size_t)k * len;
                    products(&f, tile, role, 1, uk, yk, len, scratch);
                    products(&f, tile, role, 1, uk, y2, len, scratch);
                    assert_memory_equal(yk, y2, (size_t)n_out * sizeof(float));
                    const double b = role ? bound(uk, T, xmax) + 1e-6 : 0.125 * bound(uk, D, xmax);
                    for (int o = 0; o < n_out; o++) {
                        double ref = role ? 1.0 : 0.0;
                        for (int i = 0; i < n_in; i++)
                            ref += (double)uk[i] * (role ? decoded[i * D + o] : decoded[o * D + i]);
                        if (!role) ref *= 0.125;
                        const double err = fabs(yk[o] - ref);
                        *worst = fmax(*worst, err / b * 1e-6);
                        if (!(err <= b))
                            fail_msg("%s T=%d D=%d isa=%s: %s[%d] = %.9g, ref %.9g (bound %g)",
                                     pc->name, T, D, isa_name, role ? "out" : "s", o, (double)yk[o],
                                     ref, b);
                    }
                }
                const int counts[] = {MAX_VECTORS, 11, 2};
                for (size_t ci = 0; ci < sizeof counts / sizeof counts[0]; ci++) {
                    products(&f, tile, role, counts[ci], u, y2, len, scratch);
                    for (int k = 0; k < counts[ci]; k++)
                        if (memcmp(y + (size_t)k * len, y2 + (size_t)k * len,
                                   (size_t)n_out * sizeof(float)))
                            fail_msg("%s T=%d D=%d isa=%s %s: vector %d of %d in one call "
                                     "differs from it alone",
                                     pc->name, T, D, isa_name, role ? "values" : "scores", k,
                                     counts[ci]);
                }
            }
            qm_isa_force(qm_isa_supported());
        }
        free(src), free(page), free(work), free(decoded), free(scratch), free(tile), free(u),
            free(y), free(y2);
    }
}

static void test_pages_match_reference(void **state) {
    (void)state;
    const page_case cases[] = {
        {"fp16", {.method = DQ_FP16, .bits = 16}},
        {"rtn 8", {.method = DQ_RTN, .bits = 8}},
        {"rtn 4 g16", {.method = DQ_RTN, .bits = 4, .group_size = 16}},
        {"rtn 2", {.method = DQ_RTN, .bits = 2}},
        {"kivi 8", {.method = DQ_KIVI, .bits = 8}},
        {"kivi 4", {.method = DQ_KIVI, .bits = 4}},
        {"kivi 2 g8", {.method = DQ_KIVI, .bits = 2, .group_size = 8}},
        {"decoquant 4 (defaults)", dq_config_defaults(DQ_DECOQUANT, 4)},
        {"decoquant 8 (defaults)", dq_config_defaults(DQ_DECOQUANT, 8)},
        {"decoquant 2 (defaults)", dq_config_defaults(DQ_DECOQUANT, 2)},
        {"decoquant 4 row", {.method = DQ_DECOQUANT, .bits = 4}},
        {"decoquant 4 t1=2 rank 3 absorb large",
         {.method = DQ_DECOQUANT,
          .bits = 4,
          .t1 = 2,
          .d1 = 4,
          .rank = 3,
          .absorb = DQ_ABSORB_LARGE,
          .axis = DQ_AXIS_CHAN}},
    };
    /* SmolLM2's, a wide one, and one whose widths are not multiples of 8 (plain C only) */
    const int shapes[][2] = {{32, 64}, {16, 48}, {8, 128}, {12, 20}};
    double worst = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            check_case(&cases[i], shapes[s][0], shapes[s][1], &worst);
    print_message("worst error: %.3g of the largest term magnitude (bound 1e-6)\n", worst);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages_match_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
