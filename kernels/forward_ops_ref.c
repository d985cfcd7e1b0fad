/* kernels/forward_ops_ref.c — plain-C definitions of the CUDA forward pass's mixed-dtype ops (see
 * forward_ops.h): what tests/gpu/ compares forward_ops.cu with. The arithmetic is ops_ref.c's
 * wherever an fp32 op exists; what is added here is the dtype at either end. */
#include "kernels/forward_ops.h"

#include <math.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "common/rng.h"
#include "kernels/ops.h"

static const double fwd_pi = 3.14159265358979323846;

size_t fwd_dtype_bytes(fwd_dtype type) {
    switch (type) {
    case FWD_F32: return 4;
    case FWD_F16:
    case FWD_BF16: return 2;
    }
    DS_ASSERT(!"fwd_dtype_bytes: unknown fwd_dtype");
}

/* Round to nearest even; a NaN keeps its sign and becomes quiet. */
static uint16_t float_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float fwd_load(const void *p, fwd_dtype type, size_t i) {
    switch (type) {
    case FWD_F32: return ((const float *)p)[i];
    case FWD_F16: return ds_half_to_float(((const uint16_t *)p)[i]);
    case FWD_BF16: return ds_bf16_to_float(((const uint16_t *)p)[i]);
    }
    DS_ASSERT(!"fwd_load: unknown fwd_dtype");
}

void fwd_store(void *p, fwd_dtype type, size_t i, float v) {
    switch (type) {
    case FWD_F32: ((float *)p)[i] = v; return;
    case FWD_F16: ((uint16_t *)p)[i] = ds_float_to_half(v); return;
    case FWD_BF16: ((uint16_t *)p)[i] = float_to_bf16(v); return;
    }
    DS_ASSERT(!"fwd_store: unknown fwd_dtype");
}

void fwd_embed_ref(float *x, const void *table, fwd_dtype table_type, int dim, const int32_t *ids,
                   int n_ids) {
    DS_ASSERT(x && table && ids && dim > 0 && n_ids >= 0);
    for (int i = 0; i < n_ids; i++) {
        DS_ASSERT(ids[i] >= 0);
        for (int c = 0; c < dim; c++)
            x[(size_t)i * dim + c] = fwd_load(table, table_type, (size_t)ids[i] * dim + c);
    }
}

void fwd_rmsnorm_ref(const fwd_rmsnorm_params *p) {
    DS_ASSERT(p->out && p->x && p->weight && p->n_rows >= 0 && p->dim > 0);
    for (int i = 0; i < p->n_rows; i++) {
        const float *xr = p->x + (size_t)(p->rows ? p->rows[i] : i) * p->dim;
        const float scale = ops_rmsnorm_scale(xr, p->dim, p->eps);
        for (int c = 0; c < p->dim; c++)
            fwd_store(p->out, p->out_type, (size_t)i * p->dim + c, xr[c] * scale * p->weight[c]);
    }
}

void fwd_convert_ref(void *dst, fwd_dtype dst_type, const void *src, fwd_dtype src_type, size_t n) {
    for (size_t i = 0; i < n; i++)
        fwd_store(dst, dst_type, i, fwd_load(src, src_type, i));
}

void fwd_swiglu_bf16_ref(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float g = ds_bf16_to_float(gate[i]), u = ds_bf16_to_float(up[i]);
        float y;
        ops_swiglu_ref(&y, &g, &u, 1);
        out[i] = float_to_bf16(y);
    }
}

/* cos(pi x) for x in [0, 2] through sin of an exact reduced argument, so that its zeros are exact
 * (as CUDA's cospif) and it is accurate to the last bit of a float near them. */
static double cos_pi(double x) {
    return x <= 1.0 ? sin(fwd_pi * (0.5 - x)) : sin(fwd_pi * (x - 1.5));
}

void fwd_fill_normal_ref(void *dst, fwd_dtype type, const fwd_fill_block *block, float mean,
                         float std, uint64_t seed) {
    const fwd_fill_block *b = block;
    DS_ASSERT(dst && b->col0 + b->cols <= b->global_cols);
    for (size_t i = 0; i < b->rows * b->cols; i++) {
        const size_t g = (b->row0 + i / b->cols) * b->global_cols + b->col0 + i % b->cols;
        ds_rng rng = {seed + 0x9e3779b97f4a7c15ull * g};
        const uint64_t h = ds_rng_u64(&rng);
        const float u1 = ((float)(uint32_t)(h >> 32) + 1.0f) * 0x1p-32f;
        const float u2 = (float)(uint32_t)h * 0x1p-32f;
        const double z = sqrt(-2.0 * log((double)u1)) * cos_pi(2.0 * u2);
        fwd_store(dst, type, i, (float)(mean + std * z));
    }
}
