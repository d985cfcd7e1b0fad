/* kernels/paged_attention_ref.c — the C reference of paged attention (see paged_attention.h):
 * one row at a time, one kv head at a time, each page decoded to fp32 and every score, softmax
 * and output sum in double. Slow and obviously right; the CUDA kernel is checked against it. */
#include "kernels/paged_attention.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"

static ds_status check_format(const kv_page_format *f, const char *what, int D, int T, char *msg,
                              size_t msg_len) {
    if (f->head_dim != D || f->block_size != T)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s format: head_dim %d, block_size %d; the attention has %d, %d", what,
                       f->head_dim, f->block_size, D, T);
    if (f->bits != 16 && f->bits != 8 && f->bits != 4 && f->bits != 2)
        return ds_fail(msg, msg_len, DS_EINVAL, "%s format: bits = %d", what, f->bits);
    if ((f->bits == 16) != (f->method == KV_FP16))
        return ds_fail(msg, msg_len, DS_EINVAL, "%s format: method %d with bits = %d", what,
                       f->method, f->bits);
    if (f->page_bytes == 0 || f->page_bytes % 16)
        return ds_fail(msg, msg_len, DS_EINVAL, "%s format: page_bytes = %u (a multiple of 16)",
                       what, f->page_bytes);
    return DS_OK;
}

ds_status paged_attention_validate(const paged_attention_params *p, char *msg, size_t msg_len) {
    if (p->n_rows < 0 || p->n_q_heads <= 0 || p->n_kv_heads <= 0 || p->head_dim <= 0 ||
        p->block_size <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "paged attention: rows %d, q heads %d, kv heads %d, head_dim %d, "
                       "block_size %d",
                       p->n_rows, p->n_q_heads, p->n_kv_heads, p->head_dim, p->block_size);
    if (p->n_q_heads % p->n_kv_heads)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "paged attention: %d query heads are not a multiple of %d kv heads",
                       p->n_q_heads, p->n_kv_heads);
    if (p->table_stride < p->max_pos / p->block_size + 1)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "paged attention: table_stride %d < %d blocks of max_pos %d",
                       p->table_stride, p->max_pos / p->block_size + 1, p->max_pos);
    ds_status st = check_format(&p->key_format, "key", p->head_dim, p->block_size, msg, msg_len);
    if (st == DS_OK)
        st = check_format(&p->value_format, "value", p->head_dim, p->block_size, msg, msg_len);
    if (st == DS_OK && (p->key_format.is_values || !p->value_format.is_values))
        st = ds_fail(msg, msg_len, DS_EINVAL, "paged attention: key/value formats swapped");
    return st;
}

/* Online softmax over one key/value at a time, in double. */
typedef struct head_acc {
    double m, l;
    double *o; /* [D] */
} head_acc;

static void attend(head_acc *h, const float *q, const float *k, const float *v, int D,
                   double scale) {
    double s = 0.0;
    for (int c = 0; c < D; c++)
        s += (double)q[c] * k[c];
    s *= scale;
    double m = s > h->m ? s : h->m;
    double corr = exp(h->m - m), w = exp(s - m); /* exp(-inf) = 0 on the first key */
    h->l = h->l * corr + w;
    for (int c = 0; c < D; c++)
        h->o[c] = h->o[c] * corr + w * v[c];
    h->m = m;
}

void paged_attention_ref(const paged_attention_params *p) {
    const int D = p->head_dim, T = p->block_size, H = p->n_kv_heads;
    const int G = p->n_q_heads / H;
    const size_t pk = p->key_format.page_bytes, pv = p->value_format.page_bytes;
    float *kbuf = malloc((size_t)T * D * sizeof(float));
    float *vbuf = malloc((size_t)T * D * sizeof(float));
    float *q = malloc((size_t)G * D * sizeof(float));
    float *krow = malloc((size_t)D * sizeof(float)), *vrow = malloc((size_t)D * sizeof(float));
    double *o = malloc((size_t)G * D * sizeof(double));
    head_acc *acc = malloc((size_t)G * sizeof(head_acc));
    DS_ASSERT(kbuf && vbuf && q && krow && vrow && o && acc);

    for (int r = 0; r < p->n_rows; r++) {
        const int seq = p->row_seq[r], pos = p->row_pos[r], n_full = pos / T;
        const int32_t *full = p->full_table + (size_t)seq * p->table_stride;
        const int32_t open = p->open_table[(size_t)seq * p->table_stride + n_full];
        for (int h = 0; h < H; h++) {
            for (int g = 0; g < G; g++) {
                ds_half_to_float_n(p->q + (size_t)r * p->q_stride + (size_t)(h * G + g) * D,
                                   q + (size_t)g * D, (size_t)D);
                acc[g] = (head_acc){.m = -INFINITY, .l = 0.0, .o = o + (size_t)g * D};
                memset(acc[g].o, 0, (size_t)D * sizeof(double));
            }
            for (int b = 0; b < n_full; b++) {
                const uint8_t *page = p->cache.full + (size_t)full[b] * p->cache.full_block_stride +
                                      (size_t)h * (pk + pv);
                kv_page_decode_ref(&p->key_format, page, kbuf);
                kv_page_decode_ref(&p->value_format, page + pk, vbuf);
                for (int g = 0; g < G; g++)
                    for (int t = 0; t < T; t++)
                        attend(&acc[g], q + (size_t)g * D, kbuf + (size_t)t * D,
                               vbuf + (size_t)t * D, D, p->scale);
            }
            const uint16_t *blk = p->cache.open + (size_t)open * p->cache.open_block_stride;
            for (int t = n_full * T; t <= pos; t++) {
                const size_t off = ((size_t)(t % T) * H + h) * D;
                ds_half_to_float_n(blk + off, krow, (size_t)D);
                ds_half_to_float_n(blk + (size_t)T * H * D + off, vrow, (size_t)D);
                for (int g = 0; g < G; g++)
                    attend(&acc[g], q + (size_t)g * D, krow, vrow, D, p->scale);
            }
            for (int g = 0; g < G; g++) {
                uint16_t *out = p->out + (size_t)r * p->out_stride + (size_t)(h * G + g) * D;
                for (int c = 0; c < D; c++)
                    out[c] = ds_float_to_half((float)(acc[g].o[c] / acc[g].l));
            }
        }
    }
    free(kbuf), free(vbuf), free(q), free(krow), free(vrow), free(o), free(acc);
}

double paged_attention_min_bytes(const paged_attention_params *p, const int32_t *row_pos) {
    const int T = p->block_size, D = p->head_dim;
    const double pages = (double)p->key_format.page_bytes + p->value_format.page_bytes;
    double bytes = 0.0;
    for (int r = 0; r < p->n_rows; r++) {
        const int n_full = row_pos[r] / T, n_own = row_pos[r] - n_full * T + 1;
        bytes += p->n_kv_heads * (n_full * pages + 2.0 * n_own * D * 2);
    }
    return bytes + 2.0 * p->n_rows * p->n_q_heads * D * 2; /* q in, out */
}

void paged_attention_exec_build(const int32_t *row_seq, const int32_t *row_pos, int n_rows,
                                int block_size, int min_tile_rows, int32_t *exec) {
    int32_t *tiles = exec + 2, *list = exec + 2 + 2 * (size_t)n_rows;
    int n_tiles = 0, n_list = 0;
    for (int r = 0; r < n_rows;) {
        int e = r + 1; /* the run [r, e): same sequence, next position, same block */
        while (e < n_rows && row_seq[e] == row_seq[r] && row_pos[e] == row_pos[e - 1] + 1 &&
               row_pos[e] / block_size == row_pos[r] / block_size)
            e++;
        if (e - r >= min_tile_rows) {
            tiles[2 * n_tiles] = r, tiles[2 * n_tiles + 1] = e - r;
            n_tiles++;
        } else {
            for (int i = r; i < e; i++)
                list[n_list++] = i;
        }
        r = e;
    }
    exec[0] = n_tiles, exec[1] = n_list;
}
