/* tests/gpu/gpu_test.c — every CUDA kernel of kernels/cuda.h against its C reference, on a grid of
 * shapes and page formats, on the GPU machine (tests/gpu/run.sh). One line per check:
 *     PASS|FAIL <kernel> <shape> <errors>
 * and a summary; exits 1 if any check failed. Caches come from kernels/kv_fixture (pages written
 * by the C codec, scattered, NaN-poisoned); outputs are poisoned before every launch. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/rng.h"
#include "kvcache/page_format.h"
#include "kernels/cuda.h"
#include "kernels/kv_fixture.h"
#include "tests/gpu/check.h"

static ds_rng g_rng = {0x6a09e667f3bcc908ull};

/* A failing CUDA call ends the run: later checks would only repeat it. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));     \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* A device buffer holding a copy of host (uninitialised if host is NULL). */
static void *dev_copy(const void *host, size_t bytes) {
    void *d;
    CK(cudaMalloc(&d, bytes ? bytes : 16));
    if (host && bytes) CK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    return d;
}

static const char *method_label(dq_method method, int bits, char *buf, size_t n) {
    if (bits == 16) return "fp16";
    snprintf(buf, n, "%s%d", dq_method_name(method), bits);
    return buf;
}

/* ---- paged attention ----------------------------------------------------------------------- */

typedef struct attn_case {
    dq_method method;
    int bits, D, T, H, G;
    int kivi_value_group; /* 0: default (64) */
} attn_case;

/* The reference once, then the kernel under each plan; error per (row, query head) is
 * max |gpu - ref| / max |ref| over its head_dim outputs. */
static void check_attention(const attn_case *c, int n_seqs, const int *first, const int *last,
                            const char *what) {
    dq_config kc = dq_config_defaults(c->method, c->bits), vc = kc;
    if (c->kivi_value_group) vc.group_size = c->kivi_value_group;
    kv_fixture_config cfg = {.head_dim = c->D,
                             .block_size = c->T,
                             .n_kv_heads = c->H,
                             .n_q_heads = c->H * c->G,
                             .key_codec = kc,
                             .value_codec = vc,
                             .n_seqs = n_seqs,
                             .first = first,
                             .last = last,
                             .spare_pages = 7,
                             .seed = ds_rng_u64(&g_rng)};
    kv_fixture *fx;
    char msg[256], label[32], ctx[96] = "";
    if (kv_fixture_create(&cfg, &fx, msg, sizeof msg) != DS_OK) {
        report(0, "attention fixture: %s", msg);
        return;
    }
    for (int s = 0, n = 0; s < n_seqs && n < (int)sizeof ctx - 16; s++)
        n += snprintf(ctx + n, sizeof ctx - n, "%s%d", s ? "," : "", last[s] + 1);
    paged_attention_params hp = fx->params;
    const size_t out_elems = (size_t)hp.n_rows * hp.out_stride;
    paged_attention_ref(&hp);
    uint16_t *want = malloc(out_elems * 2), *got = malloc(out_elems * 2);
    memcpy(want, hp.out, out_elems * 2);

    paged_attention_params dp = hp;
    dp.q = dev_copy(hp.q, (size_t)hp.n_rows * hp.q_stride * 2);
    dp.out = dev_copy(NULL, out_elems * 2);
    dp.row_seq = dev_copy(hp.row_seq, (size_t)hp.n_rows * 4);
    dp.row_pos = dev_copy(hp.row_pos, (size_t)hp.n_rows * 4);
    dp.full_table = dev_copy(hp.full_table, (size_t)n_seqs * hp.table_stride * 4);
    dp.open_table = dev_copy(hp.open_table, (size_t)n_seqs * hp.table_stride * 4);
    dp.cache.full = dev_copy(fx->full, fx->full_bytes);
    dp.cache.open = dev_copy(fx->open, fx->open_elems * 2);
    const size_t ws_bytes =
        paged_attention_workspace_bytes(hp.n_rows, hp.n_q_heads, hp.head_dim, 128);
    void *ws;
    CK(cudaMalloc(&ws, ws_bytes));

    /* exec plans: prompt runs as prefill tiles (the engine's), and every row a tile */
    const size_t ex_words = PAGED_ATTENTION_EXEC_WORDS(hp.n_rows);
    int32_t *ex = malloc(ex_words * 4);
    int32_t *dex[2];
    for (int i = 0; i < 2; i++) {
        paged_attention_exec_build(hp.row_seq, hp.row_pos, hp.n_rows, c->T, i ? 1 : 2, ex);
        dex[i] = dev_copy(ex, ex_words * 4);
    }
    free(ex);
    const paged_attention_tuning plans[] = {
        {0}, {.max_splits = 1}, {.ctas_per_sm = 8, .warps_per_cta = 2, .stages = 3}, {0}, {0}};
    const char *plan_names[] = {"auto", "1split", "2warps", "tiles", "alltiles"};
    for (int pi = 0; pi < 5; pi++) {
        CK(cudaMemset((void *)dp.out, 0xff, out_elems * 2));
        int splits = 0;
        dp.exec = pi >= 3 ? dex[pi - 3] : NULL;
        ds_status st =
            paged_attention_cuda(&dp, &plans[pi], ws, ws_bytes, &splits, 0, msg, sizeof msg);
        if (st != DS_OK) {
            report(0, "attention %s %s D=%d T=%d G=%d: %s", what,
                   method_label(c->method, c->bits, label, sizeof label), c->D, c->T, c->G, msg);
            continue;
        }
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got, dp.out, out_elems * 2, cudaMemcpyDeviceToHost));
        double worst = 0.0;
        int n_bad = 0;
        for (int r = 0; r < hp.n_rows; r++)
            for (int qh = 0; qh < hp.n_q_heads; qh++) {
                double num = 0.0, den = 0.0;
                for (int i = 0; i < c->D; i++) {
                    const size_t x = (size_t)r * hp.out_stride + (size_t)qh * c->D + i;
                    const double a = ds_half_to_float(got[x]), b = ds_half_to_float(want[x]);
                    if (!(a == a)) n_bad++;
                    num = fabs(a - b) > num ? fabs(a - b) : num;
                    den = fabs(b) > den ? fabs(b) : den;
                }
                const double e = num / (den > 0 ? den : 1.0);
                worst = e > worst || e != e ? e : worst;
            }
        /* fp32 accumulation of fp16 operands and an fp16 output: a few fp16 ulps (2^-11) for
         * fp16 pages. Quantized pages enter the tensor cores dequantized to fp16 (one more
         * rounding of every key and value, which the fp32 reference does not have; softmax
         * over peaked scores amplifies the keys' part), so they get twice that. The decode
         * kernel rounds a third time: DecoQuant runs in the decomposed domain, rounding the
         * projected query q A to fp16 (2-bit pages at head_dim 64 reach 1.05e-2), and its
         * MMA-native code path folds the scales into the query (q * scale) and into P
         * (p * scale), each rounded to fp16 (KIVI 4-bit at head_dim 64 reaches 1.10e-2), so it
         * gets 2e-2; the prefill tiles rebuild K and V in fp32 and round once, and keep 1e-2
         * where every row is a tile ("alltiles"). */
        const double tol = c->bits == 16 ? 5e-3 : pi == 4 ? 1e-2 : 2e-2;
        report(n_bad == 0 && worst <= tol,
               "attention %-7s %-10s D=%-3d T=%-2d G=%d H=%d ctx=%s plan=%s splits=%d "
               "max_rel_err=%.2e nan=%d",
               what, method_label(c->method, c->bits, label, sizeof label), c->D, c->T, c->G, c->H,
               ctx, plan_names[pi], splits, worst, n_bad);
    }
    cudaFree((void *)dp.q), cudaFree(dp.out), cudaFree((void *)dp.row_seq);
    cudaFree((void *)dp.row_pos), cudaFree((void *)dp.full_table);
    cudaFree((void *)dp.open_table), cudaFree(dp.cache.full), cudaFree(dp.cache.open);
    cudaFree(ws), cudaFree(dex[0]), cudaFree(dex[1]);
    free(want), free(got);
    kv_fixture_destroy(fx);
}

static const struct {
    dq_method method;
    int bits;
} k_formats[] = {{DQ_FP16, 16},     {DQ_KIVI, 8},      {DQ_KIVI, 4},     {DQ_KIVI, 2},
                 {DQ_DECOQUANT, 8}, {DQ_DECOQUANT, 4}, {DQ_DECOQUANT, 2}};
enum { N_FORMATS = sizeof k_formats / sizeof k_formats[0] };

static void attention_grid(void) {
    const int groups[] = {1, 3, 4, 8};
    int n = 0;
    for (int D = 64; D <= 128; D *= 2)
        for (int T = 16; T <= 64; T *= 2)
            for (int f = 0; f < N_FORMATS; f++, n++) {
                const attn_case c = {
                    k_formats[f].method, k_formats[f].bits, D, T, 2, groups[n % 4], 0};
                /* 1 token, around block edges, a few blocks, a few hundred tokens */
                const int len[] = {1,     T - 1,     T,
                                   T + 1, 5 * T + 7, 300 + (int)(ds_rng_u64(&g_rng) % 200)};
                int last[6];
                for (int i = 0; i < 6; i++)
                    last[i] = len[i] - 1;
                check_attention(&c, 6, last, last, "decode");
                /* prompt chunks: from 0 across blocks, from mid-block, a chunk far in */
                const int first[] = {0, 3 * T - 5, 300}, chunk_last[] = {2 * T + 5, 5 * T + 3, 340};
                check_attention(&c, 3, first, chunk_last, "prefill");
            }
    /* KIVI value groups spanning head_dim 128 (group_size 128). */
    const attn_case wide = {DQ_KIVI, 4, 128, 32, 2, 4, 128};
    const int last[] = {0, 100, 1000};
    check_attention(&wide, 3, last, last, "decode");
}

/* Llama-3-8B heads (8 kv heads, 4 query heads each, head_dim 128, block 32) up to 32k tokens,
 * and prefill chunks (rows at consecutive positions, crossing blocks). */
static void attention_long_and_prefill(void) {
    for (int f = 0; f < N_FORMATS; f++) {
        const attn_case c = {k_formats[f].method, k_formats[f].bits, 128, 32, 8, 4, 0};
        const int last[] = {999, 4096, 32767};
        check_attention(&c, 3, last, last, "decode");
        const int first[] = {1000, 0, 4090}, chunk_last[] = {1000 + 63, 40, 4130};
        check_attention(&c, 3, first, chunk_last, "prefill");
    }
    const attn_case g8 = {DQ_KIVI, 4, 128, 32, 2, 8, 0};
    const int last[] = {32767};
    check_attention(&g8, 1, last, last, "decode");
}

/* A format the kernels are not built for says so instead of computing garbage. */
static void attention_unsupported(void) {
    dq_config rtn = dq_config_defaults(DQ_RTN, 4);
    const int last[] = {40};
    kv_fixture_config cfg = {.head_dim = 64,
                             .block_size = 16,
                             .n_kv_heads = 1,
                             .n_q_heads = 1,
                             .key_codec = rtn,
                             .value_codec = rtn,
                             .n_seqs = 1,
                             .first = last,
                             .last = last,
                             .seed = 1};
    kv_fixture *fx;
    char msg[256];
    if (kv_fixture_create(&cfg, &fx, msg, sizeof msg) != DS_OK) {
        report(0, "attention fixture: %s", msg);
        return;
    }
    ds_status st = paged_attention_cuda(&fx->params, NULL, NULL, 0, NULL, 0, msg, sizeof msg);
    report(st == DS_EUNSUPPORTED && strstr(msg, "rtn"), "attention rtn4 -> %s: %s",
           ds_status_str(st), msg);
    kv_fixture_destroy(fx);
}

/* ---- KV writes --------------------------------------------------------------------------------
 */

static void check_compress(dq_config kc, dq_config vc, int D, int T, const char *what) {
    const int H = 2, n_blocks = 3, n_open = 5, n_full = 6;
    kc.block_size = vc.block_size = T;
    kc.head_dim = vc.head_dim = D;
    dq_format kf, vf;
    char msg[256], label[32];
    if (dq_format_init(&kf, &kc, DQ_KEYS, msg, sizeof msg) != DS_OK ||
        dq_format_init(&vf, &vc, DQ_VALUES, msg, sizeof msg) != DS_OK) {
        report(0, "compress format: %s", msg);
        return;
    }
    const size_t slab = (size_t)T * H * D, pair = kf.page_bytes + vf.page_bytes;
    uint16_t *open = malloc(n_open * 2 * slab * 2);
    for (size_t i = 0; i < n_open * 2 * slab; i++)
        open[i] = ds_float_to_half(ds_rng_gauss(&g_rng) * (i % 41 == 7 ? 20.0f : 1.0f));
    uint8_t *want = malloc(n_full * H * pair), *got = malloc(n_full * H * pair);
    memset(want, 0xff, n_full * H * pair);
    const int32_t open_ids[] = {3, 0, 4}, full_ids[] = {5, 1, 2};
    const size_t wk = dq_workspace_bytes(&kf), wv = dq_workspace_bytes(&vf);
    void *work = aligned_alloc(16, (wk > wv ? wk : wv) + 16);
    for (int b = 0; b < n_blocks; b++)
        for (int h = 0; h < H; h++)
            for (int which = 0; which < 2; which++)
                dq_compress_page(
                    which ? &vf : &kf, open + (size_t)open_ids[b] * 2 * slab + which * slab + h * D,
                    (size_t)H * D,
                    want + (size_t)full_ids[b] * H * pair + h * pair + (which ? kf.page_bytes : 0),
                    work);
    kv_compress_params p = {.n_blocks = n_blocks, .n_kv_heads = H};
    p.key_format = kv_page_format_from_dq(&kf);
    p.value_format = kv_page_format_from_dq(&vf);
    p.open_ids = dev_copy(open_ids, sizeof open_ids);
    p.full_ids = dev_copy(full_ids, sizeof full_ids);
    p.cache.open = dev_copy(open, n_open * 2 * slab * 2);
    p.cache.open_block_stride = 2 * slab;
    p.cache.full = dev_copy(want, n_full * H * pair); /* untouched pages must stay as they are */
    p.cache.full_block_stride = (size_t)H * pair;
    CK(cudaMemset(p.cache.full + full_ids[0] * H * pair, 0xa5, H * pair));
    ds_status st = kv_compress_cuda(&p, 0, msg, sizeof msg);
    if (st != DS_OK) {
        report(0, "compress %s: %s", what, msg);
    } else {
        CK(cudaDeviceSynchronize());
        CK(cudaMemcpy(got, p.cache.full, n_full * H * pair, cudaMemcpyDeviceToHost));
        size_t diff = 0;
        for (size_t i = 0; i < n_full * H * pair; i++)
            diff += got[i] != want[i];
        /* If bytes differ, the pages must still be as good: reconstruction error vs the input. */
        double err_got = 0, err_want = 0, den = 0;
        float *dec = malloc((size_t)T * D * 4);
        for (int b = 0; b < n_blocks && diff; b++)
            for (int h = 0; h < H; h++)
                for (int which = 0; which < 2; which++) {
                    const dq_format *f = which ? &vf : &kf;
                    const uint16_t *src =
                        open + (size_t)open_ids[b] * 2 * slab + which * slab + h * D;
                    const size_t off =
                        (size_t)full_ids[b] * H * pair + h * pair + (which ? kf.page_bytes : 0);
                    for (int pass = 0; pass < 2; pass++) {
                        dq_decompress_page(f, (pass ? got : want) + off, dec, (size_t)D, work);
                        for (int t = 0; t < T; t++)
                            for (int ch = 0; ch < D; ch++) {
                                const double x = ds_half_to_float(src[(size_t)t * H * D + ch]);
                                const double e = dec[t * D + ch] - x;
                                *(pass ? &err_got : &err_want) += e * e;
                                if (!pass) den += x * x;
                            }
                    }
                }
        free(dec);
        const int ok = diff == 0 || err_got <= err_want * 1.05 + 1e-12 * den;
        report(ok, "compress  %-10s %-18s D=%-3d T=%-2d bytes_differing=%zu%s", what,
               method_label(kc.method, kc.bits, label, sizeof label), D, T, diff,
               diff ? (ok ? " (reconstruction error within 5% of the codec's)" : " (worse)")
                    : " (identical to the C codec)");
        if (diff)
            printf("     rms rel error: gpu %.4e codec %.4e\n", sqrt(err_got / den),
                   sqrt(err_want / den));
    }
    cudaFree((void *)p.open_ids), cudaFree((void *)p.full_ids), cudaFree(p.cache.open);
    cudaFree(p.cache.full);
    free(open), free(want), free(got), free(work);
}

static void compress_grid(void) {
    const dq_method methods[] = {DQ_FP16, DQ_RTN, DQ_KIVI, DQ_DECOQUANT};
    for (int D = 64; D <= 128; D *= 2)
        for (int T = 16; T <= 64; T *= 2)
            for (int m = 0; m < 4; m++)
                for (int bits = 8; bits >= 2; bits /= 2) {
                    dq_config c = dq_config_defaults(methods[m], m ? bits : 16);
                    check_compress(c, c, D, T, "default");
                    if (!m) break;
                }
    dq_config c = dq_config_defaults(DQ_DECOQUANT, 4), v[5];
    const char *names[] = {"t1=2", "rank=5", "row,norefit", "absorb=large", "group=8"};
    for (int i = 0; i < 5; i++)
        v[i] = c;
    v[0].t1 = 2, v[1].rank = 5, v[2].axis = DQ_AXIS_ROW, v[2].refit = 0;
    v[3].absorb = DQ_ABSORB_LARGE, v[4].group_size = 8;
    for (int i = 0; i < 5; i++)
        check_compress(v[i], v[i], 128, 32, names[i]);
}

static void check_reshape_and_cache(void) {
    const int T = 32, H = 8, D = 128, n_open = 6, rows = 40;
    const size_t slab = (size_t)T * H * D, pool = n_open * 2 * slab;
    uint16_t *open = malloc(pool * 2), *got = malloc(pool * 2), *k = malloc(rows * H * D * 2),
             *v = malloc(rows * H * D * 2);
    int32_t slots[40];
    for (size_t i = 0; i < pool; i++)
        open[i] = 0x7e00;
    for (int i = 0; i < rows * H * D; i++)
        k[i] = (uint16_t)ds_rng_u64(&g_rng), v[i] = (uint16_t)ds_rng_u64(&g_rng);
    for (int r = 0; r < rows; r++)
        slots[r] = r % 7 == 3 ? -1 : (int32_t)((r * 5 % n_open) * T + r % T);
    reshape_and_cache_params p = {.k_stride = (size_t)H * D,
                                  .v_stride = (size_t)H * D,
                                  .n_rows = rows,
                                  .n_kv_heads = H,
                                  .head_dim = D,
                                  .block_size = T};
    p.k = dev_copy(k, rows * H * D * 2);
    p.v = dev_copy(v, rows * H * D * 2);
    p.slots = dev_copy(slots, sizeof slots);
    p.cache.open = dev_copy(open, pool * 2);
    p.cache.open_block_stride = 2 * slab;
    char msg[256];
    ds_status st = reshape_and_cache_cuda(&p, 0, msg, sizeof msg);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(got, p.cache.open, pool * 2, cudaMemcpyDeviceToHost));
    reshape_and_cache_params hp = p;
    hp.k = k, hp.v = v, hp.slots = slots, hp.cache.open = open;
    reshape_and_cache_ref(&hp);
    size_t diff = 0;
    for (size_t i = 0; i < pool; i++)
        diff += got[i] != open[i];
    report(st == DS_OK && diff == 0, "reshape_and_cache T=%d H=%d D=%d rows=%d differing=%zu %s", T,
           H, D, rows, diff, st == DS_OK ? "" : msg);
    cudaFree((void *)p.k), cudaFree((void *)p.v), cudaFree((void *)p.slots), cudaFree(p.cache.open);
    free(open), free(got), free(k), free(v);
}

/* ---- element-wise and row-wise ops -------------------------------------------------------- */

/* max |got - want| / (|want| + floor) over n: fp16 outputs of fp32 math. */
static double rel_err_f16(const uint16_t *got, const float *want, size_t n, double floor) {
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double g = ds_half_to_float(got[i]);
        const double e = fabs(g - want[i]) / (fabs(want[i]) + floor);
        worst = e > worst || e != e ? e : worst;
    }
    return worst;
}

static uint16_t *random_half(size_t n, float scale, float *as_float) {
    uint16_t *h = malloc(n * 2);
    for (size_t i = 0; i < n; i++) {
        h[i] = ds_float_to_half(ds_rng_gauss(&g_rng) * scale);
        as_float[i] = ds_half_to_float(h[i]);
    }
    return h;
}

static void check_ops(void) {
    char msg[256];
    /* one fp16 ulp (2^-11 relative) plus the fp32-vs-double slack */
    const double tol = 1.0 / 1024;
    {
        const int rows = 5, heads = 12, hd = 128;
        const size_t stride = (size_t)(heads + 4) * hd; /* heads inside a wider fused row */
        ops_rope_config rc = {.head_dim = hd,
                              .theta = 500000.0f,
                              .scaling = OPS_ROPE_LLAMA3,
                              .factor = 8.0f,
                              .low_freq_factor = 1.0f,
                              .high_freq_factor = 4.0f,
                              .original_context = 8192};
        float inv[64], *x = malloc(rows * stride * 4);
        ops_rope_inv_freq(&rc, inv);
        const int32_t pos[] = {0, 1, 777, 32767, 131071};
        uint16_t *xh = random_half(rows * stride, 1.0f, x), *got = malloc(rows * stride * 2);
        ops_rope_cuda_params p = {
            .n_rows = rows, .n_heads = heads, .head_dim = hd, .row_stride = stride};
        p.x = dev_copy(xh, rows * stride * 2);
        p.positions = dev_copy(pos, sizeof pos);
        p.inv_freq = dev_copy(inv, sizeof inv);
        ds_status st = ops_rope_cuda(&p, 0, msg, sizeof msg);
        CK(cudaMemcpy(got, p.x, rows * stride * 2, cudaMemcpyDeviceToHost));
        ops_rope_ref(&(ops_rope_params){.x = x,
                                        .positions = pos,
                                        .inv_freq = inv,
                                        .n_rows = rows,
                                        .n_heads = heads,
                                        .head_dim = hd,
                                        .row_stride = stride});
        const double e = rel_err_f16(got, x, rows * stride, 1e-2);
        report(st == DS_OK && e <= tol, "rope llama3 rows=%d heads=%d stride=%zu max_rel_err=%.2e",
               rows, heads, stride, e);
        cudaFree(p.x), cudaFree((void *)p.positions), cudaFree((void *)p.inv_freq);
        free(x), free(xh), free(got);
    }
    {
        const size_t n = 100003;
        float *g = malloc(n * 4), *u = malloc(n * 4), *y = malloc(n * 4);
        uint16_t *gh = random_half(n, 4.0f, g), *uh = random_half(n, 1.0f, u), *got = malloc(n * 2);
        uint16_t *dg = dev_copy(gh, n * 2), *du = dev_copy(uh, n * 2), *dy = dev_copy(NULL, n * 2);
        ds_status st = ops_swiglu_cuda(dy, dg, du, n, 0, msg, sizeof msg);
        CK(cudaMemcpy(got, dy, n * 2, cudaMemcpyDeviceToHost));
        ops_swiglu_ref(y, g, u, n);
        const double e = rel_err_f16(got, y, n, 1e-3);
        report(st == DS_OK && e <= tol, "swiglu n=%zu max_rel_err=%.2e", n, e);
        cudaFree(dg), cudaFree(du), cudaFree(dy), free(g), free(u), free(y), free(gh), free(uh);
        free(got);
    }
}

/* ---- the forward pass's mixed-dtype ops (kernels/forward_ops.h) -------------------------------
 * Outputs are allocated with a tail past what the op writes; output and tail are 0xff (NaN)
 * before the launch and the tail must still be after it. */

static const char *dtype_name(fwd_dtype type) {
    return type == FWD_F32 ? "f32" : type == FWD_F16 ? "f16" : "bf16";
}

static int is_nan_at(const void *p, fwd_dtype type, size_t i) {
    const float v = fwd_load(p, type, i);
    return v != v;
}

/* Distance in units in the last place of the type between element i of got and want (the bit
 * patterns as ordered integers); 0 if both are NaN, a huge number if only one is. */
static long ulp_diff(const void *got, const void *want, fwd_dtype type, size_t i) {
    const int a_nan = is_nan_at(got, type, i), b_nan = is_nan_at(want, type, i);
    if (a_nan || b_nan) return a_nan && b_nan ? 0 : 1L << 40;
    int64_t a, b;
    if (type == FWD_F32) {
        uint32_t x, y;
        memcpy(&x, (const float *)got + i, 4), memcpy(&y, (const float *)want + i, 4);
        a = x >> 31 ? -(int64_t)(x & 0x7fffffffu) : (int64_t)x;
        b = y >> 31 ? -(int64_t)(y & 0x7fffffffu) : (int64_t)y;
    } else {
        const uint16_t x = ((const uint16_t *)got)[i], y = ((const uint16_t *)want)[i];
        a = x >> 15 ? -(int64_t)(x & 0x7fffu) : (int64_t)x;
        b = y >> 15 ? -(int64_t)(y & 0x7fffu) : (int64_t)y;
    }
    return (long)(a > b ? a - b : b - a);
}

static long max_ulp_diff(const void *got, const void *want, fwd_dtype type, size_t n) {
    long worst = 0;
    for (size_t i = 0; i < n; i++) {
        const long d = ulp_diff(got, want, type, i);
        worst = d > worst ? d : worst;
    }
    return worst;
}

/* Host values of a type: Gaussian * scale, rounded into it. */
static void *random_values(fwd_dtype type, size_t n, float scale) {
    void *p = malloc(n * fwd_dtype_bytes(type));
    for (size_t i = 0; i < n; i++)
        fwd_store(p, type, i, ds_rng_gauss(&g_rng) * scale);
    return p;
}

/* A poisoned device output of body + tail bytes. */
static void *dev_poisoned(size_t bytes) {
    void *d = dev_copy(NULL, bytes);
    CK(cudaMemset(d, 0xff, bytes));
    return d;
}

/* Copies body + tail bytes back into host (the body); 1 if the tail is still all 0xff. */
static int fetch_tail_untouched(void *host, const void *dev, size_t body, size_t tail) {
    uint8_t *t = malloc(tail);
    CK(cudaDeviceSynchronize());
    CK(cudaMemcpy(host, dev, body, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(t, (const uint8_t *)dev + body, tail, cudaMemcpyDeviceToHost));
    int ok = 1;
    for (size_t i = 0; i < tail; i++)
        ok &= t[i] == 0xff;
    free(t);
    return ok;
}

/* Rows of an fp16 / bf16 table into fp32: a widening, so exact; every finite bit pattern. */
static void check_fwd_embed(void) {
    const int vocab = 1000, dim = 1029, n = 9;
    const int32_t ids[] = {0, 999, 5, 5, 123, 1, 998, 500, 42};
    const fwd_dtype types[] = {FWD_F16, FWD_BF16};
    char msg[256];
    for (int t = 0; t < 2; t++) {
        const size_t n_table = (size_t)vocab * dim, body = (size_t)n * dim * 4, tail = dim * 4;
        uint16_t *table = malloc(n_table * 2);
        for (size_t i = 0; i < n_table; i++)
            do
                table[i] = (uint16_t)ds_rng_u64(&g_rng);
            while (is_nan_at(table, types[t], i) || isinf(fwd_load(table, types[t], i)));
        float *want = malloc(body), *got = malloc(body);
        fwd_embed_ref(want, table, types[t], dim, ids, n);
        void *dt = dev_copy(table, n_table * 2);
        int32_t *di = dev_copy(ids, sizeof ids);
        float *dx = dev_poisoned(body + tail);
        ds_status st = fwd_embed_cuda(dx, dt, types[t], dim, di, n, 0, msg, sizeof msg);
        const int tail_ok = fetch_tail_untouched(got, dx, body, tail);
        const int exact = !memcmp(got, want, body);
        report(st == DS_OK && exact && tail_ok,
               "fwd_embed table=%-4s vocab=%d dim=%d ids=%d exact=%d tail_untouched=%d %s",
               dtype_name(types[t]), vocab, dim, n, exact, tail_ok, st == DS_OK ? "" : msg);
        cudaFree(dt), cudaFree(di), cudaFree(dx), free(table), free(want), free(got);
    }
}

/* fp32 rows into each type, all rows or a gather; every row of x that the op should not read is
 * NaN, so reading one shows. Tolerance: one ulp of a 16-bit output (the same fp32 value may
 * round the other way if the double sums, added in another order, give another fp32 scale);
 * two for fp32 (that scale's ulp, then the products' rounding). */
static void check_fwd_rmsnorm(void) {
    const int n_x = 13, n_gather = 5, n_plain = 7;
    const int32_t gather[] = {12, 0, 5, 5, 9};
    const int dims[] = {576, 4096};
    const fwd_dtype types[] = {FWD_F16, FWD_BF16, FWD_F32};
    char msg[256];
    for (int di = 0; di < 2; di++)
        for (int gi = 0; gi < 2; gi++) {
            const int dim = dims[di], n = gi ? n_gather : n_plain;
            float *x = malloc((size_t)n_x * dim * 4), *w = malloc(dim * 4);
            for (int r = 0; r < n_x; r++) {
                int used = !gi && r < n_plain;
                for (int i = 0; gi && i < n_gather; i++)
                    used |= gather[i] == r;
                for (int c = 0; c < dim; c++)
                    x[(size_t)r * dim + c] = used ? ds_rng_gauss(&g_rng) * 3.0f : NAN;
            }
            for (int c = 0; c < dim; c++)
                w[c] = 1.0f + 0.1f * ds_rng_gauss(&g_rng);
            float *dx = dev_copy(x, (size_t)n_x * dim * 4), *dw = dev_copy(w, dim * 4);
            int32_t *drows = dev_copy(gather, sizeof gather);
            for (int t = 0; t < 3; t++) {
                const size_t esize = fwd_dtype_bytes(types[t]);
                const size_t body = (size_t)n * dim * esize, tail = dim * esize;
                void *want = malloc(body), *got = malloc(body), *dout = dev_poisoned(body + tail);
                fwd_rmsnorm_params p = {.out = want,
                                        .out_type = types[t],
                                        .x = x,
                                        .rows = gi ? gather : NULL,
                                        .weight = w,
                                        .n_rows = n,
                                        .dim = dim,
                                        .eps = 1e-5f};
                fwd_rmsnorm_ref(&p);
                p.out = dout, p.x = dx, p.rows = gi ? drows : NULL, p.weight = dw;
                ds_status st = fwd_rmsnorm_cuda(&p, 0, msg, sizeof msg);
                const int tail_ok = fetch_tail_untouched(got, dout, body, tail);
                size_t n_nan = 0;
                for (size_t i = 0; i < (size_t)n * dim; i++)
                    n_nan += is_nan_at(got, types[t], i);
                const long ulps = max_ulp_diff(got, want, types[t], (size_t)n * dim);
                const long tol = types[t] == FWD_F32 ? 2 : 1;
                report(st == DS_OK && n_nan == 0 && ulps <= tol && tail_ok,
                       "fwd_rmsnorm out=%-4s rows=%s dim=%-4d max_ulp=%ld (tol %ld) nan=%zu "
                       "tail_untouched=%d %s",
                       dtype_name(types[t]), gi ? "gathered(5 of 13)" : "0..6 of 13", dim, ulps,
                       tol, n_nan, tail_ok, st == DS_OK ? "" : msg);
                cudaFree(dout), free(want), free(got);
            }
            cudaFree(dx), cudaFree(dw), cudaFree(drows), free(x), free(w);
        }
}

/* Every pair of types, round to nearest even: bit-exact (NaN for NaN, whatever its payload; -0
 * is not +0). The
 * 16-bit sources are every bit pattern at random (NaN, inf, subnormals); fp32 sources are random
 * bits and Gaussians across 2^-30..2^20 (fp16 overflow and subnormals, bf16 ties). n is past
 * the kernel's grid (8192 x 256 threads), so the grid-stride loop runs. */
static void check_fwd_convert(void) {
    const size_t n = 2500009, tail = 64;
    const fwd_dtype types[] = {FWD_F32, FWD_F16, FWD_BF16};
    char msg[256];
    for (int si = 0; si < 3; si++) {
        const fwd_dtype src_type = types[si];
        void *src = malloc(n * fwd_dtype_bytes(src_type));
        for (size_t i = 0; i < n; i++) {
            if (src_type != FWD_F32) {
                ((uint16_t *)src)[i] = (uint16_t)ds_rng_u64(&g_rng);
            } else if (i % 4 == 0) {
                const uint32_t bits = (uint32_t)ds_rng_u64(&g_rng);
                memcpy((float *)src + i, &bits, 4);
            } else {
                const int e = (int)(ds_rng_u64(&g_rng) % 51) - 30;
                ((float *)src)[i] = ldexpf(ds_rng_gauss(&g_rng), e);
            }
        }
        void *dsrc = dev_copy(src, n * fwd_dtype_bytes(src_type));
        for (int ti = 0; ti < 3; ti++) {
            const fwd_dtype dst_type = types[ti];
            if (dst_type == src_type) continue;
            const size_t body = n * fwd_dtype_bytes(dst_type);
            void *want = malloc(body), *got = malloc(body), *ddst = dev_poisoned(body + tail);
            fwd_convert_ref(want, dst_type, src, src_type, n);
            ds_status st = fwd_convert_cuda(ddst, dst_type, dsrc, src_type, n, 0, msg, sizeof msg);
            const int tail_ok = fetch_tail_untouched(got, ddst, body, tail);
            const size_t esize = fwd_dtype_bytes(dst_type);
            size_t differing = 0;
            for (size_t i = 0; i < n; i++)
                differing +=
                    memcmp((uint8_t *)got + i * esize, (uint8_t *)want + i * esize, esize) &&
                    !(is_nan_at(got, dst_type, i) && is_nan_at(want, dst_type, i));
            report(st == DS_OK && differing == 0 && tail_ok,
                   "fwd_convert %s->%-4s n=%zu differing=%zu tail_untouched=%d %s",
                   dtype_name(src_type), dtype_name(dst_type), n, differing, tail_ok,
                   st == DS_OK ? "" : msg);
            cudaFree(ddst), free(want), free(got);
        }
        cudaFree(dsrc), free(src);
    }
}

/* bf16 in and out, fp32 math: one bf16 ulp (expf on the GPU and in libm may differ in the last
 * fp32 bit, which can move the result across a bf16 rounding boundary). Out separate and out
 * aliasing gate (as the backend runs it); n past the grid. */
static void check_fwd_swiglu_bf16(void) {
    const size_t n = 3000017, body = n * 2, tail = 64;
    char msg[256];
    uint16_t *gate = random_values(FWD_BF16, n, 4.0f), *up = random_values(FWD_BF16, n, 1.0f);
    uint16_t *want = malloc(body), *got = malloc(body);
    fwd_swiglu_bf16_ref(want, gate, up, n);
    uint16_t *du = dev_copy(up, body);
    for (int alias = 0; alias < 2; alias++) {
        uint16_t *dg = dev_poisoned(body + tail);
        CK(cudaMemcpy(dg, gate, body, cudaMemcpyHostToDevice));
        uint16_t *dout = alias ? dg : dev_poisoned(body + tail);
        ds_status st = fwd_swiglu_bf16_cuda(dout, dg, du, n, 0, msg, sizeof msg);
        const int tail_ok = fetch_tail_untouched(got, dout, body, tail);
        const long ulps = max_ulp_diff(got, want, FWD_BF16, n);
        report(st == DS_OK && ulps <= 1 && tail_ok,
               "fwd_swiglu_bf16 n=%zu out=%s max_ulp=%ld (tol 1) tail_untouched=%d %s", n,
               alias ? "gate" : "own", ulps, tail_ok, st == DS_OK ? "" : msg);
        if (!alias) cudaFree(dout);
        cudaFree(dg);
    }
    cudaFree(du), free(gate), free(up), free(want), free(got);
}

/* The seeded fill against its double-precision reference: a whole tensor past the grid, and a
 * block cut out of a wider matrix (what a tensor-parallel rank fills). Tolerance: 8 fp32 ulps
 * (logf, sqrtf, cospif and the product in fp32, each within an ulp or two) and one ulp of a
 * 16-bit output (a rounding boundary between the two). */
static void check_fwd_fill_normal(void) {
    const fwd_fill_block blocks[] = {
        {.rows = 1, .cols = 3000017, .global_cols = 3000017},
        {.rows = 37, .cols = 129, .global_cols = 1000, .row0 = 11, .col0 = 300}};
    const float means[] = {0.0f, 1.0f}, stds[] = {0.02f, 0.1f};
    const fwd_dtype types[] = {FWD_F32, FWD_F16, FWD_BF16};
    char msg[256];
    for (int bi = 0; bi < 2; bi++)
        for (int t = 0; t < 3; t++) {
            const fwd_fill_block *b = &blocks[bi];
            const size_t n = b->rows * b->cols, body = n * fwd_dtype_bytes(types[t]), tail = 64;
            const uint64_t seed = ds_rng_u64(&g_rng);
            void *want = malloc(body), *got = malloc(body), *d = dev_poisoned(body + tail);
            fwd_fill_normal_ref(want, types[t], b, means[bi], stds[bi], seed);
            ds_status st =
                fwd_fill_normal_cuda(d, types[t], b, means[bi], stds[bi], seed, 0, msg, sizeof msg);
            const int tail_ok = fetch_tail_untouched(got, d, body, tail);
            size_t n_nan = 0;
            for (size_t i = 0; i < n; i++)
                n_nan += is_nan_at(got, types[t], i);
            const long ulps = max_ulp_diff(got, want, types[t], n);
            const long tol = types[t] == FWD_F32 ? 8 : 1;
            report(st == DS_OK && n_nan == 0 && ulps <= tol && tail_ok,
                   "fwd_fill_normal %-4s %zux%zu of [.][%zu] at (%zu,%zu) mean=%g std=%g "
                   "max_ulp=%ld (tol %ld) nan=%zu tail_untouched=%d %s",
                   dtype_name(types[t]), b->rows, b->cols, b->global_cols, b->row0, b->col0,
                   (double)means[bi], (double)stds[bi], ulps, tol, n_nan, tail_ok,
                   st == DS_OK ? "" : msg);
            cudaFree(d), free(want), free(got);
        }
}

static void check_forward_ops(void) {
    check_fwd_embed();
    check_fwd_rmsnorm();
    check_fwd_convert();
    check_fwd_swiglu_bf16();
    check_fwd_fill_normal();
}

/* ---- small-batch matrix products -------------------------------------------------------- */

/* gemv_cuda against gemv_ref: every output within 1e-3 of the largest |y| (fp32 outputs; fp16 /
 * bf16 outputs add their rounding), the fp32 residual form (beta 1) adding to what was there,
 * the split form landing in two buffers; and the weight-streaming rate at batch 1 and 8. */
static double gemv_value(const uint8_t *v, size_t i, gemv_type t) {
    return t == GEMV_F32    ? ((const float *)v)[i]
           : t == GEMV_BF16 ? ds_bf16_to_float(((const uint16_t *)v)[i])
                            : ds_half_to_float(((const uint16_t *)v)[i]);
}

static void check_gemv_case(int rows, int n_out, int k, gemv_type wt, gemv_type ot, int split,
                            float beta) {
    char msg[256];
    const size_t nw = (size_t)n_out * k, nx = (size_t)rows * k;
    /* both halves of a split output use ldo = split: the second may not be wider */
    const size_t split_stride = split < n_out ? (size_t)rows * split + 64 : 0;
    const size_t no = split < n_out ? split_stride + (size_t)rows * split : (size_t)rows * n_out;
    const size_t esz = ot == GEMV_F32 ? 4 : 2;
    uint16_t *w = malloc(nw * 2), *x = malloc(nx * 2);
    for (size_t i = 0; i < nw; i++) {
        const float v = ds_rng_gauss(&g_rng) * 0.05f;
        w[i] = wt == GEMV_BF16 ? ds_float_to_bf16(v) : ds_float_to_half(v);
    }
    for (size_t i = 0; i < nx; i++) {
        const float v = ds_rng_gauss(&g_rng);
        x[i] = wt == GEMV_BF16 ? ds_float_to_bf16(v) : ds_float_to_half(v);
    }
    uint8_t *init = malloc(no * esz), *want = malloc(no * esz), *got = malloc(no * esz);
    for (size_t i = 0; i < no; i++) {
        if (ot == GEMV_F32)
            ((float *)init)[i] = ds_rng_gauss(&g_rng);
        else
            ((uint16_t *)init)[i] = 0; /* the gap between split halves stays 0 */
    }
    memcpy(want, init, no * esz);
    gemv_params p = {.w = w,
                     .x = x,
                     .out = want,
                     .w_type = wt,
                     .out_type = ot,
                     .n_rows = rows,
                     .n_out = n_out,
                     .k = k,
                     .ldx = (size_t)k,
                     .ldo = (size_t)split,
                     .split = split,
                     .split_stride = split_stride,
                     .beta = beta};
    gemv_ref(&p);
    uint16_t *dw = dev_copy(w, nw * 2), *dx = dev_copy(x, nx * 2);
    void *dout = dev_copy(init, no * esz);
    gemv_params d = p;
    d.w = dw, d.x = dx, d.out = dout;
    ds_status st = gemv_cuda(&d, 0, msg, sizeof msg);
    CK(cudaMemcpy(got, dout, no * esz, cudaMemcpyDeviceToHost));
    double scale = 0.0, worst = 0.0;
    for (size_t i = 0; i < no; i++)
        scale = fmax(scale, fabs(gemv_value(want, i, ot)));
    for (size_t i = 0; i < no; i++) {
        const double e = fabs(gemv_value(want, i, ot) - gemv_value(got, i, ot)) / scale;
        worst = e > worst || e != e ? e : worst;
    }
    const double tol = ot == GEMV_F32 ? 1e-3 : ot == GEMV_F16 ? 2e-3 : 1e-2;
    report(st == DS_OK && worst <= tol,
           "gemv rows=%d n_out=%d k=%d w=%s out=%s split=%d beta=%g max_err/scale=%.2e (%s)", rows,
           n_out, k, wt == GEMV_BF16 ? "bf16" : "fp16",
           ot == GEMV_F32   ? "f32"
           : ot == GEMV_F16 ? "f16"
                            : "bf16",
           split, (double)beta, worst, st == DS_OK ? "ok" : msg);
    if (rows == 1 || rows == 8) { /* weight-streaming rate */
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        CK(cudaEventRecord(e0, 0));
        for (int i = 0; i < 20; i++)
            (void)gemv_cuda(&d, 0, msg, sizeof msg);
        CK(cudaEventRecord(e1, 0));
        CK(cudaEventSynchronize(e1));
        float ms;
        CK(cudaEventElapsedTime(&ms, e0, e1));
        printf("INFO gemv rows=%d n_out=%d k=%d: %.1f us, weights at %.0f GB/s\n", rows, n_out, k,
               ms * 50.0f, (double)nw * 2 * 20 / (ms * 1e-3) / 1e9);
        cudaEventDestroy(e0), cudaEventDestroy(e1);
    }
    cudaFree(dw), cudaFree(dx), cudaFree(dout);
    free(w), free(x), free(init), free(want), free(got);
}

static void check_gemv(void) {
    check_gemv_case(1, 4096, 4096, GEMV_F16, GEMV_F32, 4096, 1.0f);    /* O: into the residual */
    check_gemv_case(3, 6144, 4096, GEMV_F16, GEMV_F16, 6144, 0.0f);    /* QKV */
    check_gemv_case(8, 4096, 14336, GEMV_F16, GEMV_F32, 4096, 1.0f);   /* down */
    check_gemv_case(5, 2 * 1536, 576, GEMV_F16, GEMV_F16, 1536, 0.0f); /* gate|up, split */
    check_gemv_case(2, 2 * 1536, 576, GEMV_BF16, GEMV_BF16, 1536, 0.0f);
    check_gemv_case(7, 6144, 4096, GEMV_BF16, GEMV_F32, 6144, 0.0f);  /* bf16 QKV in fp32 */
    check_gemv_case(1, 28672, 4096, GEMV_F16, GEMV_F16, 14336, 0.0f); /* Llama-3-8B gate|up */
    check_gemv_case(8, 28672, 4096, GEMV_F16, GEMV_F16, 14336, 0.0f);
    check_gemv_case(1, 128256, 4096, GEMV_F16, GEMV_F32, 128256, 0.0f); /* LM head */
    char msg[256];
    const gemv_params bad = {.n_rows = 9, .n_out = 8, .k = 8, .w_type = GEMV_F16};
    report(gemv_cuda(&bad, 0, msg, sizeof msg) == DS_EINVAL && strstr(msg, "9 rows"),
           "gemv refuses 9 rows: %s", msg);
}

/* ---- sampling ------------------------------------------------------------------------------ */

/* Logits for row r: a smooth spread, many ties, NaN and -inf sprinkled, +inf present, one
 * dominant token, or all masked. */
static void sample_logits(float *x, int vocab, int r) {
    const int kind = (r + r / 8) % 6;
    for (int i = 0; i < vocab; i++) {
        const double g = (double)(ds_rng_u64(&g_rng) >> 11) * 0x1.0p-53;
        x[i] = kind == 1 ? (float)(ds_rng_u64(&g_rng) % 16) * 0.5f : (float)(12.0 * g - 6.0);
        if (kind == 2 && i % 5 == 1) x[i] = i % 2 ? NAN : -INFINITY;
        if (kind == 5) x[i] = i % 3 ? -INFINITY : NAN;
    }
    if (kind == 3) x[vocab / 5] = INFINITY, x[vocab / 2] = INFINITY;
    if (kind == 4) x[vocab - 2] = 30.0f;
}

/* Parameters for row r: greedy, plain, top-k, top-p, both, tiny top-p, top-k >= vocab. */
static sample_row sample_params_for(int r, int vocab) {
    static const struct {
        float t;
        int k;
        float p;
    } grid[] = {
        {0.0f, 0, 1.0f},  {0.7f, 0, 1.0f},  {1.0f, 40, 1.0f}, {1.0f, 0, 0.9f},
        {0.8f, 50, 0.8f}, {1.3f, 0, 0.01f}, {1.5f, 0, 1.0f},  {1.0f, 1, 1.0f},
    };
    const int g = r % 8;
    sample_row row = {.temperature = grid[g].t, .top_k = grid[g].k, .top_p = grid[g].p};
    if (r % 11 == 10) row.top_k = vocab;
    row.u = (double)(ds_rng_u64(&g_rng) >> 11) * 0x1.0p-53;
    return row;
}

/* sample_cuda against sample_row_ref (which the CPU backend's sampler runs): the same token on
 * every row, the log-probability within 1e-4; the same ids again on a second run, for each row
 * alone, and with n_rows_dev cutting the batch (rows past it untouched). */
static void check_sample(int vocab, int rows) {
    char msg[256];
    float *x = malloc((size_t)rows * vocab * 4), *lp = malloc(rows * 4), *got_lp = malloc(rows * 4);
    sample_row *sr = malloc(rows * sizeof *sr);
    int32_t *want = malloc(rows * 4), *got = malloc(rows * 4), *again = malloc(rows * 4);
    void *scratch = malloc(sample_ref_scratch_bytes(vocab));
    for (int r = 0; r < rows; r++) {
        sample_logits(x + (size_t)r * vocab, vocab, r);
        sr[r] = sample_params_for(r, vocab);
        want[r] = sample_row_ref(x + (size_t)r * vocab, vocab, &sr[r], scratch, &lp[r]);
    }
    float *dx = dev_copy(x, (size_t)rows * vocab * 4),
          *dprobs = dev_copy(NULL, (size_t)rows * vocab * 4);
    float *dlp = dev_copy(NULL, rows * 4);
    sample_row *dsr = dev_copy(sr, rows * sizeof *sr);
    int32_t *dids = dev_copy(NULL, rows * 4), *dn = dev_copy(NULL, 4);
    sample_params p = {.logits = dx,
                       .rows = dsr,
                       .ids = dids,
                       .logprobs = dlp,
                       .probs = dprobs,
                       .n_rows = rows,
                       .vocab = vocab};
    ds_status st = sample_cuda(&p, 0, msg, sizeof msg);
    CK(cudaMemcpy(got, dids, rows * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(got_lp, dlp, rows * 4, cudaMemcpyDeviceToHost));
    int same = 0, lp_ok = 0, drawn = 0;
    for (int r = 0; r < rows; r++) {
        same += got[r] == want[r];
        lp_ok += (isnan(lp[r]) && isnan(got_lp[r])) || fabsf(lp[r] - got_lp[r]) <= 1e-4f;
        drawn += !sample_is_greedy(&sr[r]) && want[r] >= 0;
        if (got[r] != want[r])
            printf("  row %d (T %g, top_k %d, top_p %g, u %.17g): gpu %d, ref %d\n", r,
                   (double)sr[r].temperature, sr[r].top_k, (double)sr[r].top_p, sr[r].u, got[r],
                   want[r]);
    }
    report(st == DS_OK && same == rows && lp_ok == rows && drawn > rows / 2,
           "sample vocab=%d rows=%d (%d drawn) same=%d/%d logprob_ok=%d/%d (%s)", vocab, rows,
           drawn, same, rows, lp_ok, rows, st == DS_OK ? "ok" : msg);
    /* repeatable, and each row alone gives the batch's token */
    st = sample_cuda(&p, 0, msg, sizeof msg);
    CK(cudaMemcpy(again, dids, rows * 4, cudaMemcpyDeviceToHost));
    int alone_same = 0;
    for (int r = 0; r < rows; r++) {
        sample_params one = p;
        one.logits = dx + (size_t)r * vocab, one.rows = dsr + r, one.ids = dids + r;
        one.logprobs = dlp + r, one.probs = dprobs, one.n_rows = 1;
        if (sample_cuda(&one, 0, msg, sizeof msg) != DS_OK) break;
    }
    CK(cudaMemcpy(got, dids, rows * 4, cudaMemcpyDeviceToHost));
    for (int r = 0; r < rows; r++)
        alone_same += got[r] == again[r];
    report(st == DS_OK && !memcmp(again, want, rows * 4) && alone_same == rows,
           "sample vocab=%d repeat_same=%d alone_same=%d/%d", vocab, !memcmp(again, want, rows * 4),
           alone_same, rows);
    /* a padded batch: only the first n rows are sampled */
    const int n = rows / 3;
    CK(cudaMemcpy(dn, &n, 4, cudaMemcpyHostToDevice));
    CK(cudaMemset(dids, 0xff, rows * 4));
    p.n_rows_dev = dn;
    st = sample_cuda(&p, 0, msg, sizeof msg);
    CK(cudaMemcpy(got, dids, rows * 4, cudaMemcpyDeviceToHost));
    int cut_ok = 1;
    for (int r = 0; r < rows; r++)
        cut_ok &= r < n ? got[r] == want[r] : got[r] == -1;
    report(st == DS_OK && cut_ok, "sample vocab=%d n_rows_dev=%d of %d rows: ok=%d", vocab, n, rows,
           cut_ok);
    /* time a decode batch's sampling with top-p (the slowest path), for the record */
    for (int r = 0; r < rows; r++)
        sr[r] = (sample_row){.temperature = 0.8f, .top_p = 0.95f, .u = 0.5};
    CK(cudaMemcpy(dsr, sr, rows * sizeof *sr, cudaMemcpyHostToDevice));
    p.n_rows_dev = NULL;
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaEventRecord(e0, 0));
    for (int i = 0; i < 10; i++)
        (void)sample_cuda(&p, 0, msg, sizeof msg);
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    printf("INFO sample vocab=%d rows=%d top_p=0.95: %.1f us per batch\n", vocab, rows,
           ms * 100.0f);
    cudaEventDestroy(e0), cudaEventDestroy(e1);
    cudaFree(dx), cudaFree(dprobs), cudaFree(dlp), cudaFree(dsr), cudaFree(dids), cudaFree(dn);
    free(x), free(lp), free(got_lp), free(sr), free(want), free(got), free(again), free(scratch);
}

int main(int argc, char **argv) {
    const char *only =
        argc > 1 ? argv[1] : "all"; /* attention | compress | ops | gemv | sample | all */
    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("gpu_test on %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    if (!strcmp(only, "all") || !strcmp(only, "ops")) {
        check_ops();
        check_forward_ops();
        check_reshape_and_cache();
    }
    if (!strcmp(only, "all") || !strcmp(only, "gemv")) check_gemv();
    if (!strcmp(only, "all") || !strcmp(only, "sample")) {
        check_sample(128256, 64);
        check_sample(49152, 96);
        check_sample(1000, 7);
    }
    if (!strcmp(only, "all") || !strcmp(only, "compress")) compress_grid();
    if (!strcmp(only, "all") || !strcmp(only, "attention")) {
        attention_unsupported();
        attention_grid();
        attention_long_and_prefill();
    }
    return report_summary("gpu_test");
}
