/* kvcache/decoquant.c — C reference of the KV page codec (DecoQuant and the RTN/KIVI/fp16
 * baselines). The format and the math are documented in decoquant.h; this file keeps to plain
 * loops so that the CUDA kernels can be checked against it line by line. */
#include "kvcache/decoquant.h"

#include <math.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"

enum { DQ_MAX_DIM = 1024, DQ_MAX_M = 64, DQ_ALIGN = 16 };

static size_t align_up(size_t n) { return (n + DQ_ALIGN - 1) / DQ_ALIGN * DQ_ALIGN; }

static const char *const method_names[DQ_N_METHODS] = {"fp16", "decoquant",    "rtn",
                                                       "kivi", "hadamard-rtn", "decoquant-hv"};

const char *dq_method_name(dq_method method) {
    return (unsigned)method < DQ_N_METHODS ? method_names[method] : "unknown";
}

ds_status dq_method_from_name(const char *name, dq_method *out, char *msg, size_t msg_len) {
    for (int i = 0; i < DQ_N_METHODS; i++) {
        if (!strcmp(name, method_names[i])) {
            *out = (dq_method)i;
            return DS_OK;
        }
    }
    return ds_fail(msg, msg_len, DS_EINVAL,
                   "kv method '%s': expected fp16, decoquant, rtn, kivi, "
                   "hadamard-rtn or decoquant-hv",
                   name);
}

dq_config dq_config_defaults(dq_method method, int bits) {
    return (dq_config){
        .method = method, .bits = bits, .group_size = 64, .axis = DQ_AXIS_CHAN, .refit = 1};
}

/* ---- format ---------------------------------------------------------------------------- */

/* A preset method -> its page method for this role, with its knobs (decoquant.h, "Presets").
 * Fields the caller set are kept, except the ones that define the preset. */
static dq_config resolve_preset(dq_config c, dq_role role) {
    if (c.method == DQ_HADAMARD_RTN) {
        c.method = DQ_RTN;
        c.rotate = 1;
    } else if (c.method == DQ_DECOQUANT_HV && role == DQ_KEYS) {
        c.method = DQ_DECOQUANT;
        c.axis = DQ_AXIS_CHAN, c.refit = 1, c.clip = 1;
        if (!c.outliers) c.outliers = DQ_HV_KEY_OUTLIERS;
    } else if (c.method == DQ_DECOQUANT_HV) {
        c.method = DQ_RTN;
        c.rotate = 1, c.symmetric = 1, c.clip = 1;
    }
    return c;
}

/* Length of the axis that quantization groups run along, for the resolved method and role. */
static int group_axis_len(const dq_format *f) {
    switch (f->cfg.method) {
    case DQ_DECOQUANT: return f->cfg.axis == DQ_AXIS_ROW ? f->n : f->t2;
    case DQ_KIVI: return f->role == DQ_KEYS ? f->T : f->D;
    default: return f->D;
    }
}

ds_status dq_format_init(dq_format *f, const dq_config *cfg, dq_role role, char *msg,
                         size_t msg_len) {
    memset(f, 0, sizeof *f);
    if ((unsigned)cfg->method >= DQ_N_METHODS)
        return ds_fail(msg, msg_len, DS_EINVAL, "kv method = %d: unknown", (int)cfg->method);
    dq_config c = resolve_preset(*cfg, role);
    if (c.bits != 2 && c.bits != 3 && c.bits != 4 && c.bits != 8 && c.bits != 16)
        return ds_fail(msg, msg_len, DS_EINVAL, "bits = %d: expected 2, 3, 4, 8 or 16", c.bits);
    if (c.method == DQ_FP16 && c.bits != 16)
        return ds_fail(msg, msg_len, DS_EINVAL, "kv method fp16 stores 16 bits, not bits = %d",
                       c.bits);
    if (c.block_size <= 0 || c.block_size > DQ_MAX_DIM)
        return ds_fail(msg, msg_len, DS_EINVAL, "block_size = %d: must be in 1..%d", c.block_size,
                       DQ_MAX_DIM);
    if (c.head_dim <= 0 || c.head_dim > DQ_MAX_DIM)
        return ds_fail(msg, msg_len, DS_EINVAL, "head_dim = %d: must be in 1..%d", c.head_dim,
                       DQ_MAX_DIM);
    if (c.group_size < 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "group_size = %d: must be positive (0: default)",
                       c.group_size);
    if (role != DQ_KEYS && role != DQ_VALUES)
        return ds_fail(msg, msg_len, DS_EINVAL, "role = %d: expected keys or values", (int)role);
    if (c.outliers < 0 || c.outliers > DQ_MAX_OUTLIERS)
        return ds_fail(msg, msg_len, DS_EINVAL, "outliers = %d: must be in 0..%d", c.outliers,
                       DQ_MAX_OUTLIERS);
    if (c.outliers && (size_t)c.block_size * c.head_dim > 0xffff)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "outliers: a page of %d x %d values does not fit 16-bit indices",
                       c.block_size, c.head_dim);
    if (c.rotate && (c.head_dim & (c.head_dim - 1)))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "rotate: head_dim = %d is not a power of two (Hadamard transform)",
                       c.head_dim);
    if (c.bits == 16) c.method = DQ_FP16; /* 16 bits means no compression, whatever the method */
    if (c.group_size == 0) c.group_size = 64;

    f->role = role;
    f->T = c.block_size;
    f->D = c.head_dim;
    if (c.method == DQ_FP16) {
        f->cfg = c;
        f->page_bytes = align_up((size_t)f->T * f->D * sizeof(uint16_t));
        f->payload_offset = 0;
        return DS_OK;
    }

    f->n_values = f->T * f->D;
    if (c.method == DQ_DECOQUANT) {
        if (c.t1 == 0) c.t1 = 1;
        if (c.d1 == 0) c.d1 = c.head_dim >= 128 ? 8 : 4;
        if (c.t1 < 0 || f->T % c.t1)
            return ds_fail(msg, msg_len, DS_EINVAL, "block_size = %d is not divisible by t1 = %d",
                           f->T, c.t1);
        if (c.d1 <= 0 || f->D % c.d1)
            return ds_fail(msg, msg_len, DS_EINVAL, "head_dim = %d is not divisible by d1 = %d",
                           f->D, c.d1);
        f->m = c.t1 * c.d1;
        if (f->m > DQ_MAX_M)
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "t1*d1 = %d: at most %d supported", f->m,
                           DQ_MAX_M);
        if (c.rank < 0 || c.rank > f->m)
            return ds_fail(msg, msg_len, DS_EINVAL, "rank = %d: must be in 0..t1*d1 = %d", c.rank,
                           f->m);
        if (c.absorb != DQ_ABSORB_SMALL && c.absorb != DQ_ABSORB_LARGE)
            return ds_fail(msg, msg_len, DS_EINVAL, "absorb = %d: expected small or large",
                           (int)c.absorb);
        if (c.axis != DQ_AXIS_ROW && c.axis != DQ_AXIS_CHAN)
            return ds_fail(msg, msg_len, DS_EINVAL, "axis = %d: expected row or chan", (int)c.axis);
        f->t2 = f->T / c.t1;
        f->d2 = f->D / c.d1;
        f->n = f->t2 * f->d2;
        f->rank = c.rank ? c.rank : f->m;
        f->n_values = f->rank * f->n;
    }
    f->cfg = c;

    int axis_len = group_axis_len(f);
    f->group_len = c.group_size < axis_len ? c.group_size : axis_len;
    if (axis_len % f->group_len)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "group_size = %d does not divide the %s group axis of length %d",
                       c.group_size, dq_method_name(c.method), axis_len);
    f->n_groups = f->n_values / f->group_len;

    size_t off = 0;
    if (c.method == DQ_DECOQUANT) {
        f->small_offset = 0;
        off = align_up((size_t)f->m * f->rank * sizeof(uint16_t));
    }
    f->params_offset = off;
    off = align_up(off + (size_t)f->n_groups * (c.symmetric ? 1 : 2) * sizeof(uint16_t));
    f->payload_offset = off;
    off = align_up(off + ((size_t)f->n_values * c.bits + 7) / 8);
    f->outlier_offset = off;
    off = align_up(off + (size_t)c.outliers * 2 * sizeof(uint16_t));
    f->page_bytes = off;
    return DS_OK;
}

/* ---- workspace --------------------------------------------------------------------------- */

typedef struct workspace {
    float *mat;     /* [T*D]   page as fp32, then M' */
    float *large;   /* [m*n]   large tensor B (== T*D floats) */
    float *vals;    /* [T*D]   values in storage order */
    double *gram;   /* [m*m] */
    double *vecs;   /* [m*m] */
    double *aux;    /* [m*m] refit: B B^T */
    double *rhs;    /* [m*m] refit: M' B^T, then the solved A */
    float *small;   /* [m*m]   A in fp32 */
    uint8_t *codes; /* [T*D] */
    uint8_t *mark;  /* [T*D]   outliers: taken out of their group */
    float *gain;    /* [T*D]   outliers: per group, range^2 saved by taking out one end */
    int32_t *end;   /* [T*D]   outliers: per group, the index of that end */
} workspace;

size_t dq_workspace_bytes(const dq_format *f) {
    size_t td = (size_t)f->T * f->D, mm = (size_t)f->m * f->m;
    return 5 * align_up(td * sizeof(float)) + 4 * align_up(mm * sizeof(double)) +
           align_up(mm * sizeof(float)) + 2 * align_up(td);
}

static workspace carve(const dq_format *f, void *base) {
    size_t td = (size_t)f->T * f->D, mm = (size_t)f->m * f->m;
    uint8_t *p = base;
    workspace w;
    w.mat = (float *)p, p += align_up(td * sizeof(float));
    w.large = (float *)p, p += align_up(td * sizeof(float));
    w.vals = (float *)p, p += align_up(td * sizeof(float));
    w.gram = (double *)p, p += align_up(mm * sizeof(double));
    w.vecs = (double *)p, p += align_up(mm * sizeof(double));
    w.aux = (double *)p, p += align_up(mm * sizeof(double));
    w.rhs = (double *)p, p += align_up(mm * sizeof(double));
    w.small = (float *)p, p += align_up(mm * sizeof(float));
    w.codes = p, p += align_up(td);
    w.mark = p, p += align_up(td);
    w.gain = (float *)p, p += align_up(td * sizeof(float));
    w.end = (int32_t *)p;
    return w;
}

/* ---- bit packing ------------------------------------------------------------------------- */

/* 3-bit codes straddle bytes: code k sits at bits [3k, 3k+3) of the little-endian bit stream. */
static void pack_bits(const uint8_t *codes, int n, int bits, uint8_t *out) {
    memset(out, 0, ((size_t)n * bits + 7) / 8);
    for (int k = 0; k < n; k++) {
        size_t bit = (size_t)k * bits;
        unsigned v = (unsigned)codes[k] << (bit % 8);
        out[bit / 8] |= (uint8_t)v;
        if (bit % 8 + bits > 8) out[bit / 8 + 1] |= (uint8_t)(v >> 8);
    }
}

static void unpack_bits(const uint8_t *packed, int n, int bits, uint8_t *codes) {
    const unsigned mask = (1u << bits) - 1;
    for (int k = 0; k < n; k++) {
        size_t bit = (size_t)k * bits;
        unsigned v = packed[bit / 8];
        if (bit % 8 + bits > 8) v |= (unsigned)packed[bit / 8 + 1] << 8;
        codes[k] = (uint8_t)((v >> (bit % 8)) & mask);
    }
}

void dq_pack_codes(const uint8_t *codes, int n, int bits, uint8_t *out) {
    if (bits == 8) {
        memcpy(out, codes, (size_t)n);
        return;
    }
    if (8 % bits) {
        pack_bits(codes, n, bits, out);
        return;
    }
    int per_byte = 8 / bits;
    memset(out, 0, ((size_t)n * bits + 7) / 8);
    for (int k = 0; k < n; k++)
        out[k / per_byte] |= (uint8_t)(codes[k] << ((k % per_byte) * bits));
}

void dq_unpack_codes(const uint8_t *packed, int n, int bits, uint8_t *codes) {
    int k = 0;
    switch (bits) {
    case 8: memcpy(codes, packed, (size_t)n); return;
    case 4:
        for (; k + 2 <= n; k += 2) {
            uint8_t b = packed[k / 2];
            codes[k] = b & 0xf;
            codes[k + 1] = b >> 4;
        }
        break;
    case 2:
        for (; k + 4 <= n; k += 4) {
            uint8_t b = packed[k / 4];
            codes[k] = b & 3;
            codes[k + 1] = (b >> 2) & 3;
            codes[k + 2] = (b >> 4) & 3;
            codes[k + 3] = b >> 6;
        }
        break;
    default: unpack_bits(packed, n, bits, codes); return;
    }
    int per_byte = 8 / bits; /* the tail of an odd count */
    uint8_t mask = (uint8_t)((1u << bits) - 1);
    for (; k < n; k++)
        codes[k] = (packed[k / per_byte] >> ((k % per_byte) * bits)) & mask;
}

/* ---- group quantizer ----------------------------------------------------------------------- */

/* Squared error of group v[g] on the grid (scale, min), quantized exactly as the encoder does. */
static double group_sq_err(const float *v, int g, int qmax, float scale, float mn) {
    float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
    double err = 0.0;
    for (int i = 0; i < g; i++) {
        float y = (v[i] - mn) * inv + 0.5f;
        int q = (int)(y < 0.0f ? 0.0f : y);
        q = q > qmax ? qmax : q;
        double d = (double)v[i] - ((float)q * scale + mn);
        err += d * d;
    }
    return err;
}

/* (scale, min) in fp16 for one group. search = 0: the group's min/max. search = 1: the least
 * squared error over ranges clipped at either end by 0, 1, 2, 4 or 6 32ths of the range (min/max
 * is a candidate, so the search never loses to it), then one least-squares refit of (scale, min)
 * to the codes of the best (the uniform-grid Lloyd step), kept if it lowers the error. The decoder
 * is unchanged: it only ever reads (scale, min). */
static void fit_group(const float *v, int g, int qmax, int search, uint16_t *scale_out,
                      uint16_t *min_out) {
    float lo = v[0], hi = v[0];
    for (int i = 1; i < g; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    uint16_t best_s = ds_float_to_half((hi - lo) / (float)qmax), best_m = ds_float_to_half(lo);
    *scale_out = best_s, *min_out = best_m;
    if (!search || !(hi > lo)) return;
    static const int cut[5] = {0, 1, 2, 4, 6};
    double best = group_sq_err(v, g, qmax, ds_half_to_float(best_s), ds_half_to_float(best_m));
    const float step = (hi - lo) / 32.0f;
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 5; j++) {
            if (!i && !j) continue;
            float a = lo + (float)cut[i] * step, b = hi - (float)cut[j] * step;
            uint16_t sh = ds_float_to_half((b - a) / (float)qmax), mh = ds_float_to_half(a);
            double e = group_sq_err(v, g, qmax, ds_half_to_float(sh), ds_half_to_float(mh));
            if (e < best) best = e, best_s = sh, best_m = mh;
        }
    /* least-squares (s, m) for the codes of the best grid: x ~ q * s + m */
    float sf = ds_half_to_float(best_s), mf = ds_half_to_float(best_m);
    float inv = sf > 0.0f ? 1.0f / sf : 0.0f;
    double sq = 0, sqq = 0, sx = 0, sqx = 0;
    for (int k = 0; k < g; k++) {
        float y = (v[k] - mf) * inv + 0.5f;
        int q = (int)(y < 0.0f ? 0.0f : y);
        q = q > qmax ? qmax : q;
        sq += q, sqq += (double)q * q, sx += v[k], sqx += (double)q * v[k];
    }
    double det = g * sqq - sq * sq;
    if (det > 0.0) {
        double ns = (g * sqx - sq * sx) / det;
        uint16_t sh = ds_float_to_half((float)ns),
                 mh = ds_float_to_half((float)((sx - ns * sq) / g));
        if (ns > 0.0 && group_sq_err(v, g, qmax, ds_half_to_float(sh), ds_half_to_float(mh)) < best)
            best_s = sh, best_m = mh;
    }
    *scale_out = best_s, *min_out = best_m;
}

/* The lowest level of a symmetric grid of qmax + 1 levels, (q - qmax/2) * scale. */
static float symmetric_min(int qmax, float scale) { return -0.5f * (float)qmax * scale; }

/* fp16 scale of a symmetric grid for one group: max |v| spread over qmax/2 steps each side;
 * search = 1 also tries that range cut by 1, 2, 4, 6 or 8 32ths, then one least-squares refit
 * of the scale to the codes of the best, each kept only if it lowers the squared error. */
static uint16_t fit_group_symmetric(const float *v, int g, int qmax, int search) {
    float amax = 0.0f;
    for (int i = 0; i < g; i++)
        amax = fabsf(v[i]) > amax ? fabsf(v[i]) : amax;
    uint16_t best_s = ds_float_to_half(amax / (0.5f * (float)qmax));
    if (!search || !(amax > 0.0f)) return best_s;
    static const int cut[5] = {1, 2, 4, 6, 8};
    float s0 = ds_half_to_float(best_s);
    double best = group_sq_err(v, g, qmax, s0, symmetric_min(qmax, s0));
    for (int i = 0; i < 5; i++) {
        uint16_t sh = ds_float_to_half(amax * (1.0f - (float)cut[i] / 32.0f) / (0.5f * qmax));
        float sf = ds_half_to_float(sh);
        double e = group_sq_err(v, g, qmax, sf, symmetric_min(qmax, sf));
        if (e < best) best = e, best_s = sh;
    }
    /* least-squares s for the codes of the best grid: x ~ (q - qmax/2) * s */
    float sf = ds_half_to_float(best_s), mn = symmetric_min(qmax, sf), inv = 1.0f / sf;
    double num = 0.0, den = 0.0;
    for (int k = 0; k < g; k++) {
        float y = (v[k] - mn) * inv + 0.5f;
        int q = (int)(y < 0.0f ? 0.0f : y);
        q = q > qmax ? qmax : q;
        double l = q - 0.5 * qmax;
        num += l * v[k], den += l * l;
    }
    if (den > 0.0 && num > 0.0) {
        uint16_t sh = ds_float_to_half((float)(num / den));
        float s1 = ds_half_to_float(sh);
        if (group_sq_err(v, g, qmax, s1, symmetric_min(qmax, s1)) < best) best_s = sh;
    }
    return best_s;
}

/* Quantizes n_groups groups of g consecutive values of x to codes, writing the grid of each in
 * fp16 to params ((scale, min) pairs, or one scale per group if symmetric) and the dequantized
 * values back into x (what the decoder will see). */
static void quantize_groups(float *x, int n_groups, int g, int bits, int search, int symmetric,
                            uint16_t *params, uint8_t *codes) {
    const int qmax = (1 << bits) - 1;
    for (int gi = 0; gi < n_groups; gi++) {
        float *v = x + (size_t)gi * g;
        float scale, mn;
        if (symmetric) {
            params[gi] = fit_group_symmetric(v, g, qmax, search);
            scale = ds_half_to_float(params[gi]), mn = symmetric_min(qmax, scale);
        } else {
            fit_group(v, g, qmax, search, &params[2 * gi], &params[2 * gi + 1]);
            scale = ds_half_to_float(params[2 * gi]), mn = ds_half_to_float(params[2 * gi + 1]);
        }
        uint8_t *c = codes + (size_t)gi * g;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        for (int i = 0; i < g; i++) {
            /* round half up of a value clamped to [0, qmax]; +0.5 then truncation */
            float y = (v[i] - mn) * inv + 0.5f;
            int q = (int)(y < 0.0f ? 0.0f : y);
            q = q > qmax ? qmax : q;
            c[i] = (uint8_t)q;
            v[i] = (float)q * scale + mn;
        }
    }
}

static void dequantize_groups(const uint8_t *codes, int n_groups, int g, int bits, int symmetric,
                              const uint16_t *params, float *x) {
    for (int gi = 0; gi < n_groups; gi++) {
        float scale = ds_half_to_float(params[symmetric ? gi : 2 * gi]);
        float mn = symmetric ? symmetric_min((1 << bits) - 1, scale)
                             : ds_half_to_float(params[2 * gi + 1]);
        for (int i = 0; i < g; i++)
            x[(size_t)gi * g + i] = (float)codes[(size_t)gi * g + i] * scale + mn;
    }
}

/* ---- outliers ----------------------------------------------------------------------------- */

/* Range of group v[g] without its marked values, and the range-squared saved by also taking out
 * its smallest (*end = lo index) or largest (*end = hi index) value, whichever saves more. */
static float outlier_gain(const float *v, const uint8_t *mark, int g, int32_t *end) {
    int lo = -1, lo2 = -1, hi = -1, hi2 = -1, left = 0;
    for (int i = 0; i < g; i++) {
        if (mark[i]) continue;
        left++;
        if (lo < 0 || v[i] < v[lo])
            lo2 = lo, lo = i;
        else if (lo2 < 0 || v[i] < v[lo2])
            lo2 = i;
        if (hi < 0 || v[i] > v[hi])
            hi2 = hi, hi = i;
        else if (hi2 < 0 || v[i] > v[hi2])
            hi2 = i;
    }
    if (left < 3) return 0.0f;
    float r = v[hi] - v[lo], r_lo = v[hi] - v[lo2], r_hi = v[hi2] - v[lo];
    *end = r_lo < r_hi ? lo : hi;
    float rest = r_lo < r_hi ? r_lo : r_hi;
    return r * r - rest * rest;
}

/* Takes the k values out of x[n_groups * g] whose removal shrinks the quantization grids most
 * (greedy: each time the group whose range^2 drops most loses its farthest end), records them as
 * (storage index, fp16 value) in out[2k] (unused slots: index 0xffff) and parks each at its
 * group's new extreme so that it no longer widens the range; restore_outliers puts them back. */
static void take_outliers(float *x, int n_groups, int g, int k, uint8_t *mark, float *gain,
                          int32_t *end, uint16_t *out) {
    memset(mark, 0, (size_t)n_groups * g);
    for (int gi = 0; gi < n_groups; gi++)
        gain[gi] = outlier_gain(x + (size_t)gi * g, mark + (size_t)gi * g, g, &end[gi]);
    for (int j = 0; j < k; j++) {
        int best = 0;
        for (int gi = 1; gi < n_groups; gi++)
            best = gain[gi] > gain[best] ? gi : best;
        if (!(gain[best] > 0.0f)) {
            for (; j < k; j++)
                out[2 * j] = 0xffff, out[2 * j + 1] = 0;
            return;
        }
        float *v = x + (size_t)best * g;
        uint8_t *mk = mark + (size_t)best * g;
        int e = end[best];
        out[2 * j] = (uint16_t)((size_t)best * g + e);
        out[2 * j + 1] = ds_float_to_half(v[e]);
        mk[e] = 1;
        float park = 0.0f;
        int have = 0;
        for (int i = 0; i < g; i++) /* nearest unmarked value: inside the new range */
            if (!mk[i] && (!have || fabsf(v[i] - v[e]) < fabsf(park - v[e]))) park = v[i], have = 1;
        v[e] = park;
        gain[best] = outlier_gain(v, mk, g, &end[best]);
    }
}

/* x[index] = value for every used slot of the outlier section (what the decoder sees). */
static void restore_outliers(const uint16_t *outliers, int k, float *x) {
    for (int j = 0; j < k; j++)
        if (outliers[2 * j] != 0xffff) x[outliers[2 * j]] = ds_half_to_float(outliers[2 * j + 1]);
}

/* ---- storage order ------------------------------------------------------------------------- */

/* mat is the page [T][D] (RTN, KIVI) or the large tensor [rank][n] (DecoQuant). */
static void to_storage(const dq_format *f, const float *mat, float *x) {
    if (f->cfg.method == DQ_KIVI && f->role == DQ_KEYS) {
        for (int t = 0; t < f->T; t++)
            for (int c = 0; c < f->D; c++)
                x[c * f->T + t] = mat[t * f->D + c];
    } else if (f->cfg.method == DQ_DECOQUANT && f->cfg.axis == DQ_AXIS_CHAN) {
        for (int r = 0; r < f->rank; r++)
            for (int t2i = 0; t2i < f->t2; t2i++)
                for (int c2 = 0; c2 < f->d2; c2++)
                    x[(r * f->d2 + c2) * f->t2 + t2i] = mat[r * f->n + t2i * f->d2 + c2];
    } else {
        memcpy(x, mat, (size_t)f->n_values * sizeof(float));
    }
}

static void from_storage(const dq_format *f, const float *x, float *mat) {
    if (f->cfg.method == DQ_KIVI && f->role == DQ_KEYS) {
        for (int t = 0; t < f->T; t++)
            for (int c = 0; c < f->D; c++)
                mat[t * f->D + c] = x[c * f->T + t];
    } else if (f->cfg.method == DQ_DECOQUANT && f->cfg.axis == DQ_AXIS_CHAN) {
        for (int r = 0; r < f->rank; r++)
            for (int t2i = 0; t2i < f->t2; t2i++)
                for (int c2 = 0; c2 < f->d2; c2++)
                    mat[r * f->n + t2i * f->d2 + c2] = x[(r * f->d2 + c2) * f->t2 + t2i];
    } else {
        memcpy(mat, x, (size_t)f->n_values * sizeof(float));
    }
}

/* ---- MPO decomposition --------------------------------------------------------------------- */

/* page [T][D] -> M' [m][n] with M'[(t1i,c1), (t2i,c2)] = page[t1i*t2 + t2i][c1*d2 + c2]: each
 * (t, c1) run of d2 channels is one contiguous run of M'. */
static void regroup(const dq_format *f, const float *page, float *mp) {
    const int d1 = f->cfg.d1, d2 = f->d2, t2 = f->t2, n = f->n;
    for (int t = 0; t < f->T; t++) {
        const int t1i = t / t2, t2i = t % t2;
        for (int c1 = 0; c1 < d1; c1++)
            memcpy(mp + (size_t)(t1i * d1 + c1) * n + t2i * d2, page + (size_t)t * f->D + c1 * d2,
                   (size_t)d2 * sizeof(float));
    }
}

static void ungroup(const dq_format *f, const float *mp, float *page, size_t stride) {
    const int d1 = f->cfg.d1, d2 = f->d2, t2 = f->t2, n = f->n;
    for (int t = 0; t < f->T; t++) {
        const int t1i = t / t2, t2i = t % t2;
        for (int c1 = 0; c1 < d1; c1++)
            memcpy(page + t * stride + c1 * d2, mp + (size_t)(t1i * d1 + c1) * n + t2i * d2,
                   (size_t)d2 * sizeof(float));
    }
}

/* Cyclic Jacobi eigen-decomposition of the symmetric m x m matrix a (destroyed: its diagonal
 * ends as the eigenvalues); v receives the eigenvectors as columns. */
static void jacobi_eigen(double *a, double *v, int m) {
    for (int i = 0; i < m * m; i++)
        v[i] = 0.0;
    for (int i = 0; i < m; i++)
        v[i * m + i] = 1.0;
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0.0, diag = 0.0;
        for (int p = 0; p < m; p++) {
            diag += a[p * m + p] * a[p * m + p];
            for (int q = p + 1; q < m; q++)
                off += a[p * m + q] * a[p * m + q];
        }
        if (off <= 1e-30 * diag || off == 0.0) break;
        for (int p = 0; p < m; p++) {
            for (int q = p + 1; q < m; q++) {
                double apq = a[p * m + q];
                if (apq == 0.0) continue;
                double theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
                double t = (theta >= 0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < m; k++) { /* columns p, q of A */
                    double akp = a[k * m + p], akq = a[k * m + q];
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for (int k = 0; k < m; k++) { /* rows p, q */
                    double apk = a[p * m + k], aqk = a[q * m + k];
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < m; k++) {
                    double vkp = v[k * m + p], vkq = v[k * m + q];
                    v[k * m + p] = c * vkp - s * vkq;
                    v[k * m + q] = s * vkp + c * vkq;
                }
            }
        }
    }
}

/* Dot product with eight float partial sums (vectorisable without -ffast-math), summed in double.
 */
static double dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[k + l] * b[k + l];
    double sum = 0.0;
    for (int l = 0; l < 8; l++)
        sum += acc[l];
    for (; k < n; k++)
        sum += (double)a[k] * b[k];
    return sum;
}

/* M' (in w->mat) -> A (w->small, [m][rank]) and B (w->large, [rank][n]); singular values out. */
static void mpo_factor(const dq_format *f, workspace *w, float *singular) {
    const int m = f->m, n = f->n, r = f->rank;
    const float *mp = w->mat;
    for (int i = 0; i < m; i++) {
        for (int j = i; j < m; j++) {
            w->gram[i * m + j] = w->gram[j * m + i] =
                dot_f32(mp + (size_t)i * n, mp + (size_t)j * n, n);
        }
    }
    jacobi_eigen(w->gram, w->vecs, m);

    /* Selection sort of eigenpairs by descending eigenvalue (m <= 64). */
    int order[DQ_MAX_M];
    for (int i = 0; i < m; i++)
        order[i] = i;
    for (int i = 0; i < m; i++) {
        int best = i;
        for (int j = i + 1; j < m; j++)
            if (w->gram[order[j] * m + order[j]] > w->gram[order[best] * m + order[best]]) best = j;
        int tmp = order[i];
        order[i] = order[best];
        order[best] = tmp;
    }
    double s0 = sqrt(fmax(w->gram[order[0] * m + order[0]], 0.0));
    for (int k = 0; k < r; k++) {
        int e = order[k];
        double s = sqrt(fmax(w->gram[e * m + e], 0.0));
        /* Directions with negligible energy are dropped: U U^T M' loses only them. */
        int keep = s > 1e-30 && s > 1e-7 * s0;
        double scale_b = f->cfg.absorb == DQ_ABSORB_SMALL ? (keep ? 1.0 / s : 0.0) : 1.0;
        double scale_a = f->cfg.absorb == DQ_ABSORB_SMALL ? s : 1.0;
        if (singular) singular[k] = (float)s;
        for (int i = 0; i < m; i++)
            w->small[i * r + k] = (float)(w->vecs[i * m + e] * scale_a);
        float *row = w->large + (size_t)k * n;
        for (int j = 0; j < n; j++)
            row[j] = 0.0f;
        for (int i = 0; i < m; i++) { /* row = scale_b * u_e^T M', vectorised along n */
            float u = (float)(w->vecs[i * m + e] * scale_b);
            const float *src = mp + (size_t)i * n;
            for (int j = 0; j < n; j++)
                row[j] += u * src[j];
        }
    }
}

/* A = M' B^T (B B^T)^-1 for the dequantized B in w->large, by Cholesky with a tiny ridge. Leaves
 * w->small untouched if the system is singular beyond the ridge. */
static void refit_small(const dq_format *f, workspace *w) {
    const int m = f->m, n = f->n, r = f->rank;
    double *h = w->aux, *rhs = w->rhs, trace = 0.0;
    for (int i = 0; i < r; i++) {
        for (int j = i; j < r; j++) {
            h[i * r + j] = h[j * r + i] =
                dot_f32(w->large + (size_t)i * n, w->large + (size_t)j * n, n);
        }
        trace += h[i * r + i];
    }
    if (!(trace > 0.0)) return;
    for (int i = 0; i < r; i++)
        h[i * r + i] += 1e-9 * trace / r;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < r; j++) {
            rhs[i * r + j] = dot_f32(w->mat + (size_t)i * n, w->large + (size_t)j * n, n);
        }
    }
    /* In-place Cholesky h = L L^T (lower triangle). */
    for (int j = 0; j < r; j++) {
        double d = h[j * r + j];
        for (int k = 0; k < j; k++)
            d -= h[j * r + k] * h[j * r + k];
        if (!(d > 0.0)) return;
        d = sqrt(d);
        h[j * r + j] = d;
        for (int i = j + 1; i < r; i++) {
            double s = h[i * r + j];
            for (int k = 0; k < j; k++)
                s -= h[i * r + k] * h[j * r + k];
            h[i * r + j] = s / d;
        }
    }
    /* Each row a of A solves a H = rhs_row, i.e. H a^T = rhs_row^T (H symmetric). */
    for (int i = 0; i < m; i++) {
        double *x = rhs + (size_t)i * r;
        for (int j = 0; j < r; j++) { /* L y = b */
            double s = x[j];
            for (int k = 0; k < j; k++)
                s -= h[j * r + k] * x[k];
            x[j] = s / h[j * r + j];
        }
        for (int j = r - 1; j >= 0; j--) { /* L^T a = y */
            double s = x[j];
            for (int k = j + 1; k < r; k++)
                s -= h[k * r + j] * x[k];
            x[j] = s / h[j * r + j];
        }
    }
    for (int i = 0; i < m * r; i++)
        w->small[i] = (float)rhs[i];
}

void dq_mpo_decompose(const dq_format *f, const float *page, float *small, float *large,
                      float *singular, void *workspace_mem) {
    DS_ASSERT(f->cfg.method == DQ_DECOQUANT);
    workspace w = carve(f, workspace_mem);
    regroup(f, page, w.mat);
    mpo_factor(f, &w, singular);
    memcpy(small, w.small, (size_t)f->m * f->rank * sizeof(float));
    memcpy(large, w.large, (size_t)f->rank * f->n * sizeof(float));
}

/* M' [m][n] = A [m][r] x B [r][n]. */
static void mpo_product(const dq_format *f, const float *restrict small,
                        const float *restrict large, float *restrict mp) {
    const int m = f->m, n = f->n, r = f->rank;
    for (int i = 0; i < m; i++) {
        float *row = mp + (size_t)i * n;
        for (int j = 0; j < n; j++)
            row[j] = 0.0f;
        for (int k = 0; k < r; k++) {
            float a = small[i * r + k];
            const float *b = large + (size_t)k * n;
            for (int j = 0; j < n; j++)
                row[j] += a * b[j];
        }
    }
}

void dq_mpo_reconstruct(const dq_format *f, const float *small, const float *large, float *page,
                        void *workspace_mem) {
    DS_ASSERT(f->cfg.method == DQ_DECOQUANT);
    workspace w = carve(f, workspace_mem);
    mpo_product(f, small, large, w.mat);
    ungroup(f, w.mat, page, (size_t)f->D);
}

/* ---- rotation ---------------------------------------------------------------------------- */

/* x[D] <- H x / sqrt(D), the orthonormal Walsh-Hadamard transform (its own inverse), in place:
 * log2(D) butterfly passes, then one scale. D is a power of two (dq_format_init checks). */
static void hadamard(float *x, int D) {
    for (int len = 1; len < D; len *= 2)
        for (int i = 0; i < D; i += 2 * len)
            for (int j = i; j < i + len; j++) {
                float a = x[j], b = x[j + len];
                x[j] = a + b;
                x[j + len] = a - b;
            }
    const float norm = 1.0f / sqrtf((float)D);
    for (int c = 0; c < D; c++)
        x[c] *= norm;
}

/* ---- compress / decompress ------------------------------------------------------------------ */

/* Storage-order values x -> the page's outlier section, group params and w->codes; x ends as
 * what the decoder will see. */
static void quantize_storage(const dq_format *f, float *x, uint8_t *page, workspace *w) {
    uint16_t *outliers = (uint16_t *)(page + f->outlier_offset);
    if (f->cfg.outliers)
        take_outliers(x, f->n_groups, f->group_len, f->cfg.outliers, w->mark, w->gain, w->end,
                      outliers);
    quantize_groups(x, f->n_groups, f->group_len, f->cfg.bits, f->cfg.clip, f->cfg.symmetric,
                    (uint16_t *)(page + f->params_offset), w->codes);
    restore_outliers(outliers, f->cfg.outliers, x);
}

void dq_compress_page(const dq_format *f, const uint16_t *src, size_t src_stride, uint8_t *page,
                      void *workspace_mem) {
    if (f->cfg.method == DQ_FP16) {
        for (int t = 0; t < f->T; t++)
            memcpy(page + (size_t)t * f->D * 2, src + t * src_stride, (size_t)f->D * 2);
        memset(page + (size_t)f->T * f->D * 2, 0, f->page_bytes - (size_t)f->T * f->D * 2);
        return;
    }
    workspace w = carve(f, workspace_mem);
    memset(page, 0, f->page_bytes);
    float *input = w.vals; /* page as fp32 [T][D] */
    for (int t = 0; t < f->T; t++)
        ds_half_to_float_n(src + t * src_stride, input + (size_t)t * f->D, (size_t)f->D);
    if (f->cfg.rotate)
        for (int t = 0; t < f->T; t++)
            hadamard(input + (size_t)t * f->D, f->D);

    if (f->cfg.method != DQ_DECOQUANT) {
        to_storage(f, input, w.large);
        quantize_storage(f, w.large, page, &w);
    } else {
        regroup(f, input, w.mat);
        mpo_factor(f, &w, NULL);
        to_storage(f, w.large, w.vals);
        quantize_storage(f, w.vals, page, &w);
        if (f->cfg.refit) {
            from_storage(f, w.vals, w.large); /* dequantized B */
            refit_small(f, &w);
        }
        uint16_t *small = (uint16_t *)(page + f->small_offset);
        for (int i = 0; i < f->m * f->rank; i++)
            small[i] = ds_float_to_half(w.small[i]);
    }
    dq_pack_codes(w.codes, f->n_values, f->cfg.bits, page + f->payload_offset);
}

void dq_decompress_page(const dq_format *f, const uint8_t *page, float *out, size_t out_stride,
                        void *workspace_mem) {
    if (f->cfg.method == DQ_FP16) {
        const uint16_t *h = (const uint16_t *)page;
        for (int t = 0; t < f->T; t++)
            ds_half_to_float_n(h + (size_t)t * f->D, out + t * out_stride, (size_t)f->D);
        return;
    }
    workspace w = carve(f, workspace_mem);
    const uint16_t *params = (const uint16_t *)(page + f->params_offset);
    dq_unpack_codes(page + f->payload_offset, f->n_values, f->cfg.bits, w.codes);
    dequantize_groups(w.codes, f->n_groups, f->group_len, f->cfg.bits, f->cfg.symmetric, params,
                      w.vals);
    restore_outliers((const uint16_t *)(page + f->outlier_offset), f->cfg.outliers, w.vals);
    if (f->cfg.method != DQ_DECOQUANT) {
        from_storage(f, w.vals, w.mat);
        for (int t = 0; t < f->T; t++)
            memcpy(out + t * out_stride, w.mat + (size_t)t * f->D, (size_t)f->D * sizeof(float));
    } else {
        const uint16_t *small = (const uint16_t *)(page + f->small_offset);
        for (int i = 0; i < f->m * f->rank; i++)
            w.small[i] = ds_half_to_float(small[i]);
        from_storage(f, w.vals, w.large);
        mpo_product(f, w.small, w.large, w.mat);
        ungroup(f, w.mat, out, out_stride);
    }
    if (f->cfg.rotate)
        for (int t = 0; t < f->T; t++)
            hadamard(out + t * out_stride, f->D);
}
