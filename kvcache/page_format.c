/* kvcache/page_format.c — dq_format to kv_page_format (see page_format.h). */
#include "kvcache/page_format.h"

#include "common/log.h"

/* The codec's method as the kernels name it. No default: -Wswitch (an error here) flags a
 * dq_method added without a kv_method, so the two enums cannot drift apart silently. */
static kv_method kv_method_from_dq(dq_method method) {
    switch (method) {
    case DQ_FP16: return KV_FP16;
    case DQ_DECOQUANT: return KV_DECOQUANT;
    case DQ_RTN: return KV_RTN;
    case DQ_KIVI: return KV_KIVI;
    case DQ_HADAMARD_RTN: /* presets: dq_format_init resolved them to the methods above */
    case DQ_DECOQUANT_HV:
    case DQ_N_METHODS: break;
    }
    DS_ASSERT(!"kv_page_format_from_dq: a dq_format holds a valid dq_method");
}

kv_page_format kv_page_format_from_dq(const dq_format *f) {
    return (kv_page_format){
        .method = kv_method_from_dq(f->cfg.method),
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
