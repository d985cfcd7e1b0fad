/* kernels/kv_fixture.c — random paged caches for kernel tests (see kv_fixture.h). */
#include "kvcache/page_format.h"
#include "kernels/kv_fixture.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/rng.h"

void kv_fixture_destroy(kv_fixture *fx) {
    if (!fx) return;
    free(fx->full), free(fx->open), free(fx->full_table), free(fx->open_table);
    free(fx->row_seq), free(fx->row_pos), free(fx->q), free(fx->out_buf);
    free(fx);
}

/* A random permutation of 0..n-1. */
static int32_t *shuffled(ds_rng *rng, int n) {
    int32_t *p = malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (!p) return NULL;
    for (int i = 0; i < n; i++)
        p[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(ds_rng_u64(rng) % (uint64_t)(i + 1));
        int32_t t = p[i];
        p[i] = p[j], p[j] = t;
    }
    return p;
}

/* K or V rows of one block [T][H][D] for sequence positions block * T.. (all T rows). */
static void fill_block(ds_rng *rng, uint16_t *slab, int T, int H, int D, int keys) {
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++)
            for (int c = 0; c < D; c++) {
                float x = ds_rng_gauss(rng);
                if (keys && (c * 7 + h) % 29 == 3) x *= 5.0f + (float)((c + h) % 16);
                slab[((size_t)t * H + h) * D + c] = ds_float_to_half(x);
            }
}

ds_status kv_fixture_create(const kv_fixture_config *cfg, kv_fixture **out, char *msg,
                            size_t msg_len) {
    *out = NULL;
    const int D = cfg->head_dim, T = cfg->block_size, H = cfg->n_kv_heads;
    kv_fixture *fx = calloc(1, sizeof *fx);
    if (!fx) return ds_fail(msg, msg_len, DS_ENOMEM, "kv fixture: out of memory");
    dq_config kc = cfg->key_codec, vc = cfg->value_codec;
    kc.block_size = vc.block_size = T;
    kc.head_dim = vc.head_dim = D;
    ds_status st = dq_format_init(&fx->dq_key, &kc, DQ_KEYS, msg, msg_len);
    if (st == DS_OK) st = dq_format_init(&fx->dq_value, &vc, DQ_VALUES, msg, msg_len);
    if (st != DS_OK) {
        kv_fixture_destroy(fx);
        return st;
    }
    paged_attention_params *p = &fx->params;
    p->key_format = kv_page_format_from_dq(&fx->dq_key);
    p->value_format = kv_page_format_from_dq(&fx->dq_value);
    const size_t pk = fx->dq_key.page_bytes, pv = fx->dq_value.page_bytes, pair = pk + pv;
    const size_t slab = (size_t)T * H * D; /* fp16 values of K (or V) of one block */

    int n_rows = 0, max_pos = 0, n_full = 0, n_open = 0, table_stride = 1;
    for (int s = 0; s < cfg->n_seqs; s++) {
        const int last = cfg->last[s];
        n_rows += last - cfg->first[s] + 1;
        n_full += last / T;
        n_open += last / T - cfg->first[s] / T + 1;
        max_pos = last > max_pos ? last : max_pos;
        table_stride = last / T + 1 > table_stride ? last / T + 1 : table_stride;
    }
    fx->n_full_pages = n_full + cfg->spare_pages;
    fx->n_open_blocks = n_open + cfg->spare_pages;
    fx->full_bytes = (size_t)fx->n_full_pages * H * pair;
    fx->open_elems = (size_t)fx->n_open_blocks * 2 * slab;
    fx->full = malloc(fx->full_bytes ? fx->full_bytes : 1);
    fx->open = malloc(fx->open_elems * sizeof(uint16_t));
    fx->full_table = malloc((size_t)cfg->n_seqs * table_stride * sizeof(int32_t));
    fx->open_table = malloc((size_t)cfg->n_seqs * table_stride * sizeof(int32_t));
    fx->row_seq = malloc((size_t)(n_rows ? n_rows : 1) * sizeof(int32_t));
    fx->row_pos = malloc((size_t)(n_rows ? n_rows : 1) * sizeof(int32_t));
    const size_t q_elems = (size_t)n_rows * cfg->n_q_heads * D;
    fx->q = malloc((q_elems ? q_elems : 1) * sizeof(uint16_t));
    fx->out_buf = malloc((q_elems ? q_elems : 1) * sizeof(uint16_t));
    uint16_t *kv = malloc(2 * slab * sizeof(uint16_t));
    const size_t wk = dq_workspace_bytes(&fx->dq_key), wv = dq_workspace_bytes(&fx->dq_value);
    void *work = aligned_alloc(16, (wk > wv ? wk : wv) + 16);
    ds_rng rng = {cfg->seed};
    int32_t *full_ids = shuffled(&rng, fx->n_full_pages);
    int32_t *open_ids = shuffled(&rng, fx->n_open_blocks);
    if (!fx->full || !fx->open || !fx->full_table || !fx->open_table || !fx->row_seq ||
        !fx->row_pos || !fx->q || !fx->out_buf || !kv || !work || !full_ids || !open_ids) {
        free(kv), free(work), free(full_ids), free(open_ids);
        kv_fixture_destroy(fx);
        return ds_fail(msg, msg_len, DS_ENOMEM, "kv fixture: out of memory for %d pages", n_full);
    }
    memset(fx->full, 0xff, fx->full_bytes);
    memset(fx->open, 0xff, fx->open_elems * sizeof(uint16_t));
    memset(fx->full_table, 0xff, (size_t)cfg->n_seqs * table_stride * sizeof(int32_t));
    memset(fx->open_table, 0xff, (size_t)cfg->n_seqs * table_stride * sizeof(int32_t));
    memset(fx->out_buf, 0xff, (q_elems ? q_elems : 1) * sizeof(uint16_t));

    int next_full = 0, next_open = 0, row = 0;
    for (int s = 0; s < cfg->n_seqs; s++) {
        const int first = cfg->first[s], last = cfg->last[s];
        int32_t *ft = fx->full_table + (size_t)s * table_stride;
        int32_t *ot = fx->open_table + (size_t)s * table_stride;
        for (int b = 0; b <= last / T; b++) {
            fill_block(&rng, kv, T, H, D, 1);
            fill_block(&rng, kv + slab, T, H, D, 0);
            if (b < last / T) {
                ft[b] = full_ids[next_full++];
                uint8_t *page = fx->full + (size_t)ft[b] * H * pair;
                for (int h = 0; h < H; h++) {
                    dq_compress_page(&fx->dq_key, kv + (size_t)h * D, (size_t)H * D,
                                     page + h * pair, work);
                    dq_compress_page(&fx->dq_value, kv + slab + (size_t)h * D, (size_t)H * D,
                                     page + h * pair + pk, work);
                }
            }
            if (b >= first / T) {
                ot[b] = open_ids[next_open++];
                uint16_t *blk = fx->open + (size_t)ot[b] * 2 * slab;
                /* Rows past `last` stay NaN: nothing may read them. */
                const int n_rows_here = b == last / T ? last % T + 1 : T;
                for (int which = 0; which < 2; which++)
                    memcpy(blk + which * slab, kv + which * slab,
                           (size_t)n_rows_here * H * D * sizeof(uint16_t));
            }
        }
        for (int pos = first; pos <= last; pos++, row++) {
            fx->row_seq[row] = s;
            fx->row_pos[row] = pos;
        }
    }
    for (size_t i = 0; i < q_elems; i++)
        fx->q[i] = ds_float_to_half(ds_rng_gauss(&rng));
    free(kv), free(work), free(full_ids), free(open_ids);

    *p = (paged_attention_params){
        .q = fx->q,
        .q_stride = (size_t)cfg->n_q_heads * D,
        .out = fx->out_buf,
        .out_stride = (size_t)cfg->n_q_heads * D,
        .row_seq = fx->row_seq,
        .row_pos = fx->row_pos,
        .full_table = fx->full_table,
        .open_table = fx->open_table,
        .table_stride = table_stride,
        .n_rows = n_rows,
        .n_q_heads = cfg->n_q_heads,
        .n_kv_heads = H,
        .head_dim = D,
        .block_size = T,
        .max_pos = max_pos,
        .scale = 1.0f / sqrtf((float)D),
        .cache = {.full = fx->full,
                  .full_block_stride = (size_t)H * pair,
                  .open = fx->open,
                  .open_block_stride = 2 * slab},
        .key_format = p->key_format,
        .value_format = p->value_format,
    };
    *out = fx;
    return DS_OK;
}
