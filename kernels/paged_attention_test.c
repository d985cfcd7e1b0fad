/* paged_attention_test — the kernels' C references on the CPU: the page decoder against the codec
 * (bit for bit, every method, role, bit width and DecoQuant option), paged attention against a
 * dense attention over pages decompressed by the codec (decode rows and causal prefill chunks,
 * odd lengths, scattered NaN-poisoned pools), a batch against the same rows run one at a time,
 * shape validation, and reshape_and_cache_ref. The CUDA kernels are checked against these
 * references by tests/gpu/run.sh. */
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
#include "kvcache/page_format.h"
#include "kernels/kv_fixture.h"
#include "kernels/kv_write.h"
#include "kernels/paged_attention.h"

static ds_rng g_rng = {0x5eed};

static void random_page(uint16_t *page, int T, int D) {
    for (int i = 0; i < T * D; i++)
        page[i] = ds_float_to_half(ds_rng_gauss(&g_rng) * (i % 37 == 5 ? 12.0f : 1.0f));
}

/* kv_page_decode_ref reads the codec's bytes exactly as dq_decompress_page does. */
static void check_decode(dq_config cfg, dq_role role) {
    dq_format f;
    char msg[160];
    assert_int_equal(dq_format_init(&f, &cfg, role, msg, sizeof msg), DS_OK);
    kv_page_format kf;
    kf = kv_page_format_from_dq(&f);
    const int n = cfg.block_size * cfg.head_dim;
    uint16_t *src = malloc((size_t)n * 2);
    uint8_t *page = malloc(f.page_bytes);
    float *want = malloc((size_t)n * 4), *got = malloc((size_t)n * 4);
    void *work = aligned_alloc(16, dq_workspace_bytes(&f) + 16);
    random_page(src, cfg.block_size, cfg.head_dim);
    dq_compress_page(&f, src, (size_t)cfg.head_dim, page, work);
    dq_decompress_page(&f, page, want, (size_t)cfg.head_dim, work);
    kv_page_decode_ref(&kf, page, got);
    if (memcmp(want, got, (size_t)n * 4))
        fail_msg("%s %d-bit %s T=%d D=%d: decoder differs from the codec",
                 dq_method_name(cfg.method), cfg.bits, role ? "values" : "keys", cfg.block_size,
                 cfg.head_dim);
    free(src), free(page), free(want), free(got), free(work);
}

static void test_decode_matches_codec(void **state) {
    (void)state;
    const dq_method methods[] = {DQ_FP16, DQ_RTN, DQ_KIVI, DQ_DECOQUANT};
    const int bits[] = {8, 4, 2};
    for (int mi = 0; mi < 4; mi++)
        for (int bi = 0; bi < 3; bi++)
            for (int T = 16; T <= 64; T *= 2)
                for (int D = 64; D <= 128; D *= 2)
                    for (int role = 0; role < 2; role++) {
                        dq_config c = dq_config_defaults(methods[mi], mi ? bits[bi] : 16);
                        c.block_size = T, c.head_dim = D;
                        check_decode(c, (dq_role)role);
                    }
    /* DecoQuant's other options: t1 > 1, truncated rank, row groups, S in the large tensor,
     * small groups. */
    dq_config c = dq_config_defaults(DQ_DECOQUANT, 4);
    c.block_size = 32, c.head_dim = 128;
    dq_config variants[5] = {c, c, c, c, c};
    variants[0].t1 = 2;
    variants[1].rank = 5;
    variants[2].axis = DQ_AXIS_ROW, variants[2].refit = 0;
    variants[3].absorb = DQ_ABSORB_LARGE;
    variants[4].group_size = 8;
    for (int i = 0; i < 5; i++)
        for (int role = 0; role < 2; role++)
            check_decode(variants[i], (dq_role)role);
}

/* Dense attention of one row, kv head h: keys 0..pos from pages decompressed by the codec and
 * the fp16 open block, softmax in double. out: [G][D] doubles. */
static void dense_row(const kv_fixture *fx, int r, int h, double *out) {
    const paged_attention_params *p = &fx->params;
    const int D = p->head_dim, T = p->block_size, H = p->n_kv_heads, G = p->n_q_heads / H;
    const int seq = p->row_seq[r], pos = p->row_pos[r], n_full = pos / T;
    float *k = malloc((size_t)(pos + 1) * D * 4), *v = malloc((size_t)(pos + 1) * D * 4);
    const size_t pk = fx->dq_key.page_bytes, pair = pk + fx->dq_value.page_bytes;
    void *work =
        aligned_alloc(16, dq_workspace_bytes(&fx->dq_key) + dq_workspace_bytes(&fx->dq_value) + 16);
    for (int b = 0; b < n_full; b++) {
        const uint8_t *page =
            p->cache.full +
            (size_t)p->full_table[seq * p->table_stride + b] * p->cache.full_block_stride +
            h * pair;
        dq_decompress_page(&fx->dq_key, page, k + (size_t)b * T * D, (size_t)D, work);
        dq_decompress_page(&fx->dq_value, page + pk, v + (size_t)b * T * D, (size_t)D, work);
    }
    const uint16_t *blk = p->cache.open + (size_t)p->open_table[seq * p->table_stride + n_full] *
                                              p->cache.open_block_stride;
    for (int t = n_full * T; t <= pos; t++) {
        ds_half_to_float_n(blk + ((size_t)(t % T) * H + h) * D, k + (size_t)t * D, (size_t)D);
        ds_half_to_float_n(blk + ((size_t)(T + t % T) * H + h) * D, v + (size_t)t * D, (size_t)D);
    }
    double *s = malloc((size_t)(pos + 1) * sizeof(double));
    for (int g = 0; g < G; g++) {
        const uint16_t *q = p->q + (size_t)r * p->q_stride + (size_t)(h * G + g) * D;
        double mx = -INFINITY, sum = 0.0;
        for (int t = 0; t <= pos; t++) {
            s[t] = 0.0;
            for (int c = 0; c < D; c++)
                s[t] += (double)ds_half_to_float(q[c]) * k[(size_t)t * D + c];
            s[t] *= p->scale;
            mx = s[t] > mx ? s[t] : mx;
        }
        for (int c = 0; c < D; c++)
            out[g * D + c] = 0.0;
        for (int t = 0; t <= pos; t++) {
            const double w = exp(s[t] - mx);
            sum += w;
            for (int c = 0; c < D; c++)
                out[g * D + c] += w * v[(size_t)t * D + c];
        }
        for (int c = 0; c < D; c++)
            out[g * D + c] /= sum;
    }
    free(k), free(v), free(work), free(s);
}

static kv_fixture *make_fixture(dq_method method, int bits, int D, int T, int H, int G, int n_seqs,
                                const int *first, const int *last) {
    kv_fixture_config cfg = {.head_dim = D,
                             .block_size = T,
                             .n_kv_heads = H,
                             .n_q_heads = H * G,
                             .key_codec = dq_config_defaults(method, bits),
                             .value_codec = dq_config_defaults(method, bits),
                             .n_seqs = n_seqs,
                             .first = first,
                             .last = last,
                             .spare_pages = 5,
                             .seed = ds_rng_u64(&g_rng)};
    kv_fixture *fx;
    char msg[160];
    ds_status st = kv_fixture_create(&cfg, &fx, msg, sizeof msg);
    if (st != DS_OK) fail_msg("%s", msg);
    return fx;
}

/* Every output element equals the dense attention rounded to fp16 (one ulp of slack). */
static void check_against_dense(const kv_fixture *fx) {
    const paged_attention_params *p = &fx->params;
    const int D = p->head_dim, H = p->n_kv_heads, G = p->n_q_heads / H;
    double *want = malloc((size_t)G * D * sizeof(double));
    for (int r = 0; r < p->n_rows; r++)
        for (int h = 0; h < H; h++) {
            dense_row(fx, r, h, want);
            for (int i = 0; i < G * D; i++) {
                const float got =
                    ds_half_to_float(p->out[(size_t)r * p->out_stride + (size_t)h * G * D + i]);
                if (!(fabs(got - want[i]) <= fabs(want[i]) * (1.0 / 1024) + 1e-7))
                    fail_msg("%s %d-bit D=%d T=%d row %d (pos %d) head %d elem %d: got %.7g, "
                             "want %.7g",
                             dq_method_name(fx->dq_key.cfg.method), p->key_format.bits, D,
                             p->block_size, r, p->row_pos[r], h * G + i / D, i % D, got, want[i]);
            }
        }
    free(want);
}

static void test_decode_rows_match_dense(void **state) {
    (void)state;
    const struct {
        dq_method method;
        int bits, D, T, G;
    } cases[] = {
        {DQ_FP16, 16, 64, 16, 1},      {DQ_FP16, 16, 128, 32, 4},    {DQ_KIVI, 8, 64, 32, 8},
        {DQ_KIVI, 4, 128, 32, 4},      {DQ_KIVI, 2, 128, 64, 1},     {DQ_RTN, 4, 64, 16, 4},
        {DQ_DECOQUANT, 8, 128, 16, 8}, {DQ_DECOQUANT, 4, 64, 32, 4}, {DQ_DECOQUANT, 2, 128, 32, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* Lengths around block edges: 1, T-1, T, T+1 and a few blocks plus a bit. */
        const int T = cases[i].T;
        const int last[] = {0, T - 2, T - 1, T, 3 * T + 5};
        kv_fixture *fx = make_fixture(cases[i].method, cases[i].bits, cases[i].D, T, 2, cases[i].G,
                                      5, last, last);
        paged_attention_ref(&fx->params);
        check_against_dense(fx);
        kv_fixture_destroy(fx);
    }
}

/* A prefill chunk: rows at consecutive positions, each attending causally; the chunk starts
 * mid-block and crosses two block boundaries. */
static void test_prefill_chunk_is_causal(void **state) {
    (void)state;
    const int first[] = {21, 0}, last[] = {21 + 40, 6};
    kv_fixture *fx = make_fixture(DQ_KIVI, 4, 64, 16, 2, 4, 2, first, last);
    paged_attention_ref(&fx->params);
    check_against_dense(fx);
    kv_fixture_destroy(fx);
}

/* The batch gives the bits of its rows run one at a time. */
static void test_batch_equals_single_rows(void **state) {
    (void)state;
    const int last[] = {70, 3, 200, 31};
    kv_fixture *fx = make_fixture(DQ_DECOQUANT, 4, 64, 32, 2, 4, 4, last, last);
    paged_attention_params p = fx->params;
    paged_attention_ref(&p);
    const size_t row_elems = p.out_stride;
    uint16_t *single = malloc(row_elems * sizeof(uint16_t));
    for (int r = 0; r < p.n_rows; r++) {
        paged_attention_params one = p;
        one.n_rows = 1;
        one.q = p.q + r * p.q_stride;
        one.row_seq = p.row_seq + r;
        one.row_pos = p.row_pos + r;
        one.out = single;
        paged_attention_ref(&one);
        assert_memory_equal(single, p.out + r * row_elems, row_elems * sizeof(uint16_t));
    }
    free(single);
    kv_fixture_destroy(fx);
}

static void test_validate_names_the_field(void **state) {
    (void)state;
    const int last[] = {40};
    kv_fixture *fx = make_fixture(DQ_KIVI, 4, 64, 16, 2, 4, 1, last, last);
    char msg[200];
    paged_attention_params p = fx->params;
    assert_int_equal(paged_attention_validate(&p, msg, sizeof msg), DS_OK);
    p.n_q_heads = 7;
    assert_int_equal(paged_attention_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "7 query heads"));
    p = fx->params;
    p.key_format.head_dim = 128;
    assert_int_equal(paged_attention_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "key format"));
    p = fx->params;
    p.table_stride = 2;
    assert_int_equal(paged_attention_validate(&p, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "table_stride"));
    kv_fixture_destroy(fx);
}

/* Rows land at their slots of their open blocks; slot -1 is skipped; nothing else changes. */
/* The exec plan splits rows into tiles (runs of one sequence, consecutive positions, one block)
 * and the decode list; min_tile_rows sends short runs to the list. */
static void test_exec_build(void **state) {
    (void)state;
    /* seq 3 decodes at 70; seq 1 prefills 5..20 (blocks of 8: 5-7, 8-15, 16-20); seq 3 again
     * at 71 is another sequence's row only by order; seq 2 rows 9 and 11 are not consecutive. */
    const int32_t seq[] = {3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2};
    const int32_t pos[] = {70, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 9, 11};
    enum { N = sizeof seq / sizeof seq[0] };
    int32_t ex[PAGED_ATTENTION_EXEC_WORDS(N)];
    paged_attention_exec_build(seq, pos, N, 8, 2, ex);
    assert_int_equal(ex[0], 3);
    const int32_t tiles[] = {1, 3, 4, 8, 12, 5};
    assert_memory_equal(ex + 2, tiles, sizeof tiles);
    assert_int_equal(ex[1], 3);
    const int32_t list[] = {0, 17, 18};
    assert_memory_equal(ex + 2 + 2 * N, list, sizeof list);
    /* runs shorter than 4 rows go to the list */
    paged_attention_exec_build(seq, pos, N, 8, 4, ex);
    assert_int_equal(ex[0], 2);
    assert_int_equal(ex[1], 6);
    const int32_t list4[] = {0, 1, 2, 3, 17, 18};
    assert_memory_equal(ex + 2 + 2 * N, list4, sizeof list4);
}

static void test_reshape_and_cache_ref(void **state) {
    (void)state;
    enum { T = 16, H = 3, D = 8, blocks = 4, rows = 5 };
    static uint16_t open[blocks * 2 * T * H * D], k[rows * H * D], v[rows * H * D];
    for (size_t i = 0; i < sizeof open / 2; i++)
        open[i] = 0xffff;
    for (int i = 0; i < rows * H * D; i++)
        k[i] = (uint16_t)i, v[i] = (uint16_t)(10000 + i);
    const int32_t slots[rows] = {2 * T + 5, -1, 0, 3 * T + 15, 2 * T + 6};
    reshape_and_cache_params p = {.k = k,
                                  .v = v,
                                  .k_stride = H * D,
                                  .v_stride = H * D,
                                  .slots = slots,
                                  .n_rows = rows,
                                  .n_kv_heads = H,
                                  .head_dim = D,
                                  .block_size = T,
                                  .cache = {.open = open, .open_block_stride = 2 * T * H * D}};
    reshape_and_cache_ref(&p);
    int written = 0;
    for (int b = 0; b < blocks; b++)
        for (int which = 0; which < 2; which++)
            for (int t = 0; t < T; t++) {
                const uint16_t *row = open + ((size_t)(b * 2 + which) * T + t) * H * D;
                int r = -1;
                for (int i = 0; i < rows; i++)
                    if (slots[i] == b * T + t) r = i;
                for (int x = 0; x < H * D; x++) {
                    uint16_t want = r < 0 ? 0xffff : (which ? v : k)[r * H * D + x];
                    assert_int_equal(row[x], want);
                }
                written += r >= 0;
            }
    assert_int_equal(written, 2 * 4);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_matches_codec),
        cmocka_unit_test(test_decode_rows_match_dense),
        cmocka_unit_test(test_prefill_chunk_is_causal),
        cmocka_unit_test(test_batch_equals_single_rows),
        cmocka_unit_test(test_validate_names_the_field),
        cmocka_unit_test(test_exec_build),
        cmocka_unit_test(test_reshape_and_cache_ref),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
