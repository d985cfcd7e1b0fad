/* kernels/kv_pages_ref.c — plain-C decoder of a KV page from its bytes (see kv_pages.h): the
 * kernels' own reading of kvcache/decoquant.h's format, checked against the codec by
 * kernels/paged_attention_test. */
#include "kernels/kv_pages.h"

#include "common/half.h"

/* Code k of the payload: bits [k * bits, (k + 1) * bits), least significant first (a 3-bit code
 * may straddle two bytes). */
static unsigned code_at(const uint8_t *payload, int k, int bits) {
    size_t bit = (size_t)k * bits;
    unsigned v = payload[bit / 8];
    if (bit % 8 + (size_t)bits > 8) v |= (unsigned)payload[bit / 8 + 1] << 8;
    return (v >> (bit % 8)) & ((1u << bits) - 1);
}

/* Dequantized value at storage index k (group = k / group_len). */
static float value_at(const kv_page_format *f, const uint8_t *page, int k) {
    const uint16_t *params = (const uint16_t *)(page + f->params_offset);
    int g = k / f->group_len;
    float scale = ds_half_to_float(params[2 * g]), mn = ds_half_to_float(params[2 * g + 1]);
    return (float)code_at(page + f->payload_offset, k, f->bits) * scale + mn;
}

void kv_page_decode_ref(const kv_page_format *f, const uint8_t *page, float *out) {
    const int T = f->block_size, D = f->head_dim;
    if (f->method == KV_FP16) {
        const uint16_t *h = (const uint16_t *)page;
        for (int i = 0; i < T * D; i++)
            out[i] = ds_half_to_float(h[i]);
        return;
    }
    if (f->method != KV_DECOQUANT) {
        for (int t = 0; t < T; t++)
            for (int c = 0; c < D; c++)
                out[t * D + c] = value_at(f, page, kv_storage_index(f, t, c));
        return;
    }
    /* M'[(t1i,c1), (t2i,c2)] = sum_r A[(t1i,c1), r] B[r, (t2i,c2)], each element summed in order
     * of r from 0.0f as the codec's mpo_product does; B decoded once per element. */
    const uint16_t *small = (const uint16_t *)(page + f->small_offset);
    for (int i = 0; i < T * D; i++)
        out[i] = 0.0f;
    for (int r = 0; r < f->rank; r++)
        for (int j = 0; j < f->n; j++) {
            const float b = value_at(f, page, kv_storage_index(f, r, j));
            const int t2i = j / f->d2, c2 = j % f->d2;
            for (int t1i = 0; t1i < f->t1; t1i++)
                for (int c1 = 0; c1 < f->d1; c1++) {
                    const float a = ds_half_to_float(small[(t1i * f->d1 + c1) * f->rank + r]);
                    out[(t1i * f->t2 + t2i) * D + c1 * f->d2 + c2] += a * b;
                }
        }
}
