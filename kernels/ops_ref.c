/* kernels/ops_ref.c — plain-C definitions of RMSNorm, RoPE, SwiGLU and embedding gather.
 * Written for clarity first: these are what the CUDA kernels are compared against, and what the
 * CPU backend runs. */
#include "kernels/ops.h"

#include <math.h>
#include <string.h>

#include "common/log.h"

static const double ops_pi = 3.14159265358979323846;

float ops_rmsnorm_scale(const float *x, int dim, float eps) {
    double sum_sq = 0.0;
    for (int c = 0; c < dim; c++)
        sum_sq += (double)x[c] * x[c];
    return (float)(1.0 / sqrt(sum_sq / dim + eps));
}

void ops_rmsnorm_ref(float *out, const float *x, const float *weight, int n_rows, int dim,
                     float eps) {
    DS_ASSERT(out && x && weight && n_rows >= 0 && dim > 0);
    for (int r = 0; r < n_rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = out + (size_t)r * dim;
        const float scale = ops_rmsnorm_scale(xr, dim, eps);
        /* Element c is read before it is written, so out == x is safe. */
        for (int c = 0; c < dim; c++)
            yr[c] = xr[c] * scale * weight[c];
    }
}

ds_status ops_rope_config_validate(const ops_rope_config *config, char *msg, size_t msg_len) {
    const ops_rope_config *c = config;
    if (c->head_dim <= 0 || c->head_dim % 2 != 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "rope head_dim = %d: must be positive and even",
                       c->head_dim);
    if (!(c->theta > 0.0f) || isinf(c->theta))
        return ds_fail(msg, msg_len, DS_EINVAL, "rope theta = %g: must be finite and > 0",
                       (double)c->theta);
    switch (c->scaling) {
    case OPS_ROPE_NONE: return DS_OK;
    case OPS_ROPE_LINEAR:
    case OPS_ROPE_LLAMA3: break;
    default:
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "rope scaling = %d: unknown",
                       (int)c->scaling);
    }
    if (!(c->factor > 0.0f) || isinf(c->factor))
        return ds_fail(msg, msg_len, DS_EINVAL, "rope factor = %g: must be finite and > 0",
                       (double)c->factor);
    if (c->scaling == OPS_ROPE_LINEAR) return DS_OK;
    if (!(c->low_freq_factor > 0.0f) || isinf(c->low_freq_factor))
        return ds_fail(msg, msg_len, DS_EINVAL, "rope low_freq_factor = %g: must be finite and > 0",
                       (double)c->low_freq_factor);
    if (!(c->high_freq_factor > c->low_freq_factor) || isinf(c->high_freq_factor))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "rope high_freq_factor = %g: must be finite and > low_freq_factor (%g)",
                       (double)c->high_freq_factor, (double)c->low_freq_factor);
    if (c->original_context <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "rope original_context = %d: must be > 0",
                       c->original_context);
    return DS_OK;
}

void ops_rope_inv_freq(const ops_rope_config *config, float *inv_freq) {
    const ops_rope_config *c = config;
    int half = c->head_dim / 2;
    for (int i = 0; i < half; i++) {
        /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), exponent formed in fp32. */
        float exponent = (float)(2 * i) / (float)c->head_dim;
        inv_freq[i] = (float)(1.0 / pow((double)c->theta, (double)exponent));
    }
    if (c->scaling == OPS_ROPE_LINEAR) {
        for (int i = 0; i < half; i++)
            inv_freq[i] /= c->factor;
    } else if (c->scaling == OPS_ROPE_LLAMA3) {
        double factor = c->factor, low = c->low_freq_factor, high = c->high_freq_factor;
        double old_ctx = c->original_context;
        double low_freq_wavelen = old_ctx / low;
        double high_freq_wavelen = old_ctx / high;
        for (int i = 0; i < half; i++) {
            double f = inv_freq[i];
            double wavelen = 2.0 * ops_pi / f;
            if (wavelen < high_freq_wavelen) continue;
            if (wavelen > low_freq_wavelen) {
                inv_freq[i] = (float)(f / factor);
            } else {
                double smooth = (old_ctx / wavelen - low) / (high - low);
                inv_freq[i] = (float)((1.0 - smooth) * f / factor + smooth * f);
            }
        }
    }
}

/* The one place the angle is formed, so the table and the on-the-fly path agree bit for bit. */
static void rope_cos_sin(int32_t pos, float inv_freq, float *cos_a, float *sin_a) {
    float angle = (float)pos * inv_freq; /* fp32, as HF */
    *cos_a = (float)cos((double)angle);
    *sin_a = (float)sin((double)angle);
}

void ops_rope_ref(const ops_rope_params *params) {
    const ops_rope_params *p = params;
    DS_ASSERT(p->head_dim > 0 && p->head_dim % 2 == 0 && p->n_rows >= 0 && p->n_heads >= 0);
    DS_ASSERT(p->row_stride >= (size_t)p->n_heads * p->head_dim);
    int half = p->head_dim / 2;
    for (int r = 0; r < p->n_rows; r++) {
        float *row = p->x + (size_t)r * p->row_stride;
        for (int i = 0; i < half; i++) {
            float c, s;
            rope_cos_sin(p->positions[r], p->inv_freq[i], &c, &s);
            for (int h = 0; h < p->n_heads; h++) {
                float *head = row + (size_t)h * p->head_dim;
                float x0 = head[i], x1 = head[i + half];
                head[i] = x0 * c - x1 * s;
                head[i + half] = x1 * c + x0 * s;
            }
        }
    }
}

void ops_swiglu_ref(float *out, const float *gate, const float *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

ds_status ops_embedding_ref(float *out, const float *table, int vocab, int dim, const int32_t *ids,
                            int n_ids, char *msg, size_t msg_len) {
    DS_ASSERT(vocab > 0 && dim > 0 && n_ids >= 0);
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return ds_fail(msg, msg_len, DS_ERANGE, "token ids[%d] = %d: outside vocab [0, %d)", i,
                           (int)ids[i], vocab);
    for (int i = 0; i < n_ids; i++)
        memcpy(out + (size_t)i * dim, table + (size_t)ids[i] * dim, sizeof(float) * dim);
    return DS_OK;
}
