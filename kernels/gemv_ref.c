/* kernels/gemv_ref.c — the C reference of the small-batch matrix product (see gemv.h). */
#include "kernels/gemv.h"

#include "common/half.h"

static float load(const uint16_t *v, size_t i, gemv_type t) {
    return t == GEMV_BF16 ? ds_bf16_to_float(v[i]) : ds_half_to_float(v[i]);
}

void gemv_ref(const gemv_params *p) {
    for (int r = 0; r < p->n_rows; r++)
        for (int j = 0; j < p->n_out; j++) {
            float y = 0.0f;
            for (int k = 0; k < p->k; k++)
                y += load(p->x, (size_t)r * p->ldx + k, p->w_type) *
                     load(p->w, (size_t)j * p->k + k, p->w_type);
            const size_t at = j < p->split ? (size_t)r * p->ldo + j
                                           : p->split_stride + (size_t)r * p->ldo + (j - p->split);
            if (p->out_type == GEMV_F32) {
                float *o = p->out;
                o[at] = (p->beta != 0.0f ? p->beta * o[at] : 0.0f) + y;
            } else {
                uint16_t *o = p->out;
                o[at] = p->out_type == GEMV_BF16 ? ds_float_to_bf16(y) : ds_float_to_half(y);
            }
        }
}
