/* tools/eval/kv_eval.c — synthetic KV, page-wise compression of whole K/V sets, error metrics. */
#include "tools/eval/kv_eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/half.h"
#include "common/rng.h"

/* This thread's CPU time: what a page costs on one core, whatever else shares the machine. */
static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

void kv_set_free(kv_set *s) {
    free(s->keys);
    free(s->values);
    free(s->queries);
    memset(s, 0, sizeof *s);
}

static ds_status set_alloc(kv_set *s, int n_heads, int n_tokens, int head_dim, int n_queries,
                           char *msg, size_t msg_len) {
    memset(s, 0, sizeof *s);
    if (n_heads <= 0 || n_tokens <= 0 || head_dim <= 0 || head_dim % 2 || n_queries <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "kv set: heads = %d, tokens = %d, head_dim = %d (even), queries = %d: "
                       "all must be positive",
                       n_heads, n_tokens, head_dim, n_queries);
    size_t n = (size_t)n_heads * n_tokens * head_dim;
    s->n_heads = n_heads, s->n_tokens = n_tokens, s->head_dim = head_dim, s->n_queries = n_queries;
    s->keys = malloc(n * 2);
    s->values = malloc(n * 2);
    s->queries = malloc((size_t)n_heads * n_queries * head_dim * sizeof(float));
    if (!s->keys || !s->values || !s->queries) {
        kv_set_free(s);
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv set: out of memory");
    }
    return DS_OK;
}

/* One key-like vector: latent mix + noise, outlier channels scaled and offset, then RoPE. */
static void synth_key(ds_rng *r, const float *basis, int rank, const float *chan_scale,
                      const float *chan_mean, int D, int pos, float *out) {
    float z[16];
    for (int k = 0; k < rank; k++)
        z[k] = ds_rng_gauss(r);
    for (int c = 0; c < D; c++) {
        float x = 0.5f * ds_rng_gauss(r);
        for (int k = 0; k < rank; k++)
            x += z[k] * basis[k * D + c];
        out[c] = x * chan_scale[c] + chan_mean[c];
    }
    for (int i = 0; i < D / 2; i++) { /* HF-style rotate_half pairs (i, i + D/2) */
        double angle = pos * pow(10000.0, -2.0 * i / D);
        float a = out[i], b = out[i + D / 2], cs = (float)cos(angle), sn = (float)sin(angle);
        out[i] = a * cs - b * sn;
        out[i + D / 2] = a * sn + b * cs;
    }
}

ds_status kv_synth(kv_set *s, int n_heads, int n_tokens, int head_dim, int n_queries, uint64_t seed,
                   char *msg, size_t msg_len) {
    ds_status st = set_alloc(s, n_heads, n_tokens, head_dim, n_queries, msg, msg_len);
    if (st != DS_OK) return st;
    const int D = head_dim, rank = 8;
    ds_rng r = {seed * 0x2545f4914f6cdd1dull + 1};
    float *basis = malloc((size_t)rank * D * sizeof(float) * 2);
    float *scale = malloc((size_t)D * sizeof(float) * 3), *mean = scale + D, *vec = scale + 2 * D;
    float *vbasis = basis + rank * D;
    if (!basis || !scale) {
        free(basis), free(scale), kv_set_free(s);
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv synth: out of memory");
    }
    for (int h = 0; h < n_heads; h++) {
        for (int i = 0; i < rank * D; i++)
            basis[i] = ds_rng_gauss(&r) * 0.35f;
        for (int i = 0; i < rank * D; i++)
            vbasis[i] = ds_rng_gauss(&r) * 0.35f;
        for (int c = 0; c < D; c++)
            scale[c] = 1.0f, mean[c] = 0.1f * ds_rng_gauss(&r);
        int n_out = D / 32 > 1 ? D / 32 : 1;
        for (int k = 0; k < n_out; k++) { /* outliers in the slow-rotating upper half of pairs */
            int c = D / 4 + (int)(ds_rng_u64(&r) % (uint64_t)(D / 4));
            if (ds_rng_u64(&r) & 1) c += D / 2;
            scale[c] = 10.0f + 40.0f * (float)ds_rng_uniform(&r);
            mean[c] = scale[c] * 0.5f * ds_rng_gauss(&r);
        }
        for (int t = 0; t < n_tokens; t++) {
            size_t row = ((size_t)h * n_tokens + t) * D;
            synth_key(&r, basis, rank, scale, mean, D, t, vec);
            for (int c = 0; c < D; c++)
                s->keys[row + c] = ds_float_to_half(vec[c]);
            float tok = (float)exp(0.5 * ds_rng_gauss(&r)), z[8];
            for (int k = 0; k < rank; k++)
                z[k] = ds_rng_gauss(&r);
            for (int c = 0; c < D; c++) {
                float x = 0.5f * ds_rng_gauss(&r);
                for (int k = 0; k < rank; k++)
                    x += z[k] * vbasis[k * D + c];
                s->values[row + c] = ds_float_to_half(x * tok);
            }
        }
        for (int q = 0; q < n_queries; q++) {
            int pos = n_tokens + (int)(ds_rng_u64(&r) % 16);
            synth_key(&r, basis, rank, scale, mean, D, pos, vec);
            for (int c = 0; c < D; c++)
                s->queries[((size_t)h * n_queries + q) * D + c] = vec[c] / scale[c] * 2.0f;
        }
    }
    free(basis);
    free(scale);
    return DS_OK;
}

ds_status kv_from_arrays(kv_set *s, const float *keys, const float *values, int n_heads,
                         int n_tokens, int head_dim, int n_queries, uint64_t seed, char *msg,
                         size_t msg_len) {
    ds_status st = set_alloc(s, n_heads, n_tokens, head_dim, n_queries, msg, msg_len);
    if (st != DS_OK) return st;
    size_t n = (size_t)n_heads * n_tokens * head_dim;
    for (size_t i = 0; i < n; i++) {
        s->keys[i] = ds_float_to_half(keys[i]);
        s->values[i] = ds_float_to_half(values[i]);
    }
    ds_rng r = {seed + 1};
    for (int h = 0; h < n_heads; h++)
        for (int q = 0; q < n_queries; q++) {
            int t = (int)(ds_rng_u64(&r) % (uint64_t)n_tokens);
            for (int c = 0; c < head_dim; c++)
                s->queries[((size_t)h * n_queries + q) * head_dim + c] =
                    keys[((size_t)h * n_tokens + t) * head_dim + c];
        }
    return DS_OK;
}

/* Reconstructs one head's matrix through the codec: full pages compressed, the tail fp16.
 * Returns the summed compression time. */
static double reconstruct(const dq_format *f, const uint16_t *src, int n_tokens, uint8_t *page,
                          void *work, float *out) {
    const int T = f->T, D = f->D;
    double us = 0.0;
    int t = 0;
    for (; t + T <= n_tokens; t += T) {
        double t0 = now_us();
        dq_compress_page(f, src + (size_t)t * D, (size_t)D, page, work);
        us += now_us() - t0;
        dq_decompress_page(f, page, out + (size_t)t * D, (size_t)D, work);
    }
    for (; t < n_tokens; t++)
        for (int c = 0; c < D; c++)
            out[(size_t)t * D + c] = ds_half_to_float(src[(size_t)t * D + c]);
    return us;
}

/* softmax(q K^T / sqrt(D)) V for one query into out [D]; scores scratch [n]. */
static void attend(const float *q, const float *k, const float *v, int n, int D, float *scores,
                   double *out) {
    double scale = 1.0 / sqrt((double)D), mx = -INFINITY, sum = 0.0;
    for (int t = 0; t < n; t++) {
        double dot = 0.0;
        for (int c = 0; c < D; c++)
            dot += (double)q[c] * k[(size_t)t * D + c];
        scores[t] = (float)(dot * scale);
        mx = scores[t] > mx ? scores[t] : mx;
    }
    for (int c = 0; c < D; c++)
        out[c] = 0.0;
    for (int t = 0; t < n; t++) {
        double p = exp(scores[t] - mx);
        sum += p;
        for (int c = 0; c < D; c++)
            out[c] += p * v[(size_t)t * D + c];
    }
    for (int c = 0; c < D; c++)
        out[c] /= sum;
}

ds_status kv_evaluate(const kv_set *s, const dq_config *key_cfg, const dq_config *value_cfg,
                      kv_metrics *m, char *msg, size_t msg_len) {
    memset(m, 0, sizeof *m);
    dq_format fk, fv;
    ds_status st = dq_format_init(&fk, key_cfg, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&fv, value_cfg, DQ_VALUES, msg, msg_len);
    if (st != DS_OK) return st;
    if (fk.D != s->head_dim || fv.D != s->head_dim || fk.T != fv.T)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "kv evaluate: head_dim %d / block sizes %d, %d do not match the data "
                       "(head_dim %d)",
                       fk.D, fk.T, fv.T, s->head_dim);
    const int N = s->n_tokens, D = s->head_dim;
    size_t per_head = (size_t)N * D;
    size_t work_bytes = dq_workspace_bytes(&fk) > dq_workspace_bytes(&fv) ? dq_workspace_bytes(&fk)
                                                                          : dq_workspace_bytes(&fv);
    float *k0 = malloc(per_head * sizeof(float) * 4), *v0 = k0 + per_head, *k1 = v0 + per_head,
          *v1 = k1 + per_head, *scores = malloc((size_t)N * sizeof(float));
    double *o0 = malloc((size_t)D * 2 * sizeof(double)), *o1 = o0 + D;
    uint8_t *page = malloc(dq_page_bytes(&fk) + dq_page_bytes(&fv));
    void *work = aligned_alloc(16, (work_bytes + 15) / 16 * 16);
    if (!k0 || !scores || !o0 || !page || !work) {
        free(k0), free(scores), free(o0), free(page), free(work);
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv evaluate: out of memory");
    }
    double kerr = 0, kref = 0, verr = 0, vref = 0, aerr = 0, aref = 0, key_us = 0, value_us = 0;
    long n_pages = 0;
    for (int h = 0; h < s->n_heads; h++) {
        const uint16_t *kh = s->keys + h * per_head, *vh = s->values + h * per_head;
        for (size_t i = 0; i < per_head; i++) {
            k0[i] = ds_half_to_float(kh[i]);
            v0[i] = ds_half_to_float(vh[i]);
        }
        key_us += reconstruct(&fk, kh, N, page, work, k1);
        value_us += reconstruct(&fv, vh, N, page, work, v1);
        n_pages += N / fk.T;
        for (size_t i = 0; i < per_head; i++) {
            double dk = k1[i] - k0[i], dv = v1[i] - v0[i];
            kerr += dk * dk, kref += (double)k0[i] * k0[i];
            verr += dv * dv, vref += (double)v0[i] * v0[i];
            m->key_max_abs = fmax(m->key_max_abs, fabs(dk));
            m->value_max_abs = fmax(m->value_max_abs, fabs(dv));
        }
        for (int q = 0; q < s->n_queries; q++) {
            const float *qv = s->queries + ((size_t)h * s->n_queries + q) * D;
            attend(qv, k0, v0, N, D, scores, o0);
            attend(qv, k1, v1, N, D, scores, o1);
            for (int c = 0; c < D; c++) {
                aerr += (o1[c] - o0[c]) * (o1[c] - o0[c]);
                aref += o0[c] * o0[c];
            }
        }
    }
    m->bytes_per_token = dq_bytes_per_token(&fk) + dq_bytes_per_token(&fv);
    m->bits_per_value = (dq_bits_per_value(&fk) + dq_bits_per_value(&fv)) / 2;
    m->ratio_vs_fp16 = 4.0 * D / m->bytes_per_token;
    m->key_rel_err = kref > 0 ? sqrt(kerr / kref) : 0;
    m->value_rel_err = vref > 0 ? sqrt(verr / vref) : 0;
    m->attn_rel_err = aref > 0 ? sqrt(aerr / aref) : 0;
    m->key_us_per_page = n_pages ? key_us / n_pages : 0;
    m->value_us_per_page = n_pages ? value_us / n_pages : 0;
    free(k0), free(scores), free(o0), free(page), free(work);
    return DS_OK;
}
