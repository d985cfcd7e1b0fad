/* kvcache/page_format.c — dq_format to kv_page_format (see page_format.h). */
#include "kvcache/page_format.h"

kv_page_format kv_page_format_from_dq(const dq_format *f) {
    return (kv_page_format){
        .method = (int)f->cfg.method,
        .is_values = f->role == DQ_VALUES,
        .bits = f->cfg.bits,
        .block_size = f->T,
        .head_dim = f->D,
        .group_len = f->group_len,
        .n_groups = f->n_groups,
        .n_values = f->n_values,
        .t1 = f->cfg.t1,
        .d1 = f->cfg.d1,
        .m = f->m,
        .n = f->n,
        .rank = f->rank,
        .t2 = f->t2,
        .d2 = f->d2,
        .absorb_large = f->cfg.absorb == DQ_ABSORB_LARGE,
        .axis_chan = f->cfg.axis == DQ_AXIS_CHAN,
        .refit = f->cfg.refit,
        .small_offset = (uint32_t)f->small_offset,
        .params_offset = (uint32_t)f->params_offset,
        .payload_offset = (uint32_t)f->payload_offset,
        .page_bytes = (uint32_t)f->page_bytes,
    };
}
