/* server/proto_map.c — field-by-field copies; the proto's field names follow the engine's, so
 * this file is the one place a renamed field has to be followed. */
#include "server/proto_map.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/utf8.h"

static ds_status check_utf8(const char *name, const char *value, char *msg, size_t msg_len) {
    size_t n = strlen(value), at = ds_utf8_invalid_at(value, n);
    if (at == n) return DS_OK;
    return ds_fail(msg, msg_len, DS_EINVAL, "%s: not valid UTF-8 (byte %zu of %zu)", name, at, n);
}

/* Walks the message's fields through its descriptor, so a string field added to the proto is
 * checked without a change here. Submessages are checked with their field's name in front. */
static ds_status check_strings(const ProtobufCMessage *pb, const char *prefix, char *msg,
                               size_t msg_len) {
    const ProtobufCMessageDescriptor *d = pb->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *field = (const char *)pb + f->offset;
        size_t n = 1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)pb + f->quantifier_offset);
            field = *(const char *const *)field;
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)((const char *)pb + f->quantifier_offset) != f->id) continue;
        }
        for (size_t k = 0; k < n; k++) {
            const void *value = ((const void *const *)field)[k];
            if (value == NULL) continue;
            char name[128];
            if (f->label == PROTOBUF_C_LABEL_REPEATED)
                snprintf(name, sizeof name, "%s%s[%zu]", prefix, f->name, k);
            else
                snprintf(name, sizeof name, "%s%s", prefix, f->name);
            ds_status st;
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                st = check_utf8(name, value, msg, msg_len);
            } else {
                char inner[140];
                snprintf(inner, sizeof inner, "%s.", name);
                st = check_strings(value, inner, msg, msg_len);
            }
            if (st != DS_OK) return st;
        }
    }
    return DS_OK;
}

ds_status proto_map_check_request(const ProtobufCMessage *pb, char *msg, size_t msg_len) {
    ds_status st = check_strings(pb, "", msg, msg_len);
    if (st != DS_OK || pb->descriptor != &decoserve__v1__generate_request__descriptor) return st;
    const Decoserve__V1__GenerateRequest *req = (const Decoserve__V1__GenerateRequest *)pb;
    size_t n = strlen(req->request_id);
    if (n > PROTO_MAP_REQUEST_ID_MAX)
        return ds_fail(msg, msg_len, DS_EINVAL, "request_id: %zu bytes, at most %d", n,
                       PROTO_MAP_REQUEST_ID_MAX);
    return DS_OK;
}

void proto_map_generate_request(const Decoserve__V1__GenerateRequest *pb, serving_request *out) {
    serving_request_default(out);
    if (pb->n_prompt_ids > 0) {
        out->prompt_ids = pb->prompt_ids;
        out->n_prompt_ids = (int)pb->n_prompt_ids; /* a message of at most 4 MiB fits an int */
    }
    if (pb->prompt[0] != '\0' || pb->n_prompt_ids == 0) {
        out->prompt = pb->prompt;
        out->prompt_len = strlen(pb->prompt);
    }
    if (pb->max_tokens_present_case ==
        DECOSERVE__V1__GENERATE_REQUEST__MAX_TOKENS_PRESENT_MAX_TOKENS)
        out->max_tokens = pb->max_tokens;
    if (pb->temperature_present_case ==
        DECOSERVE__V1__GENERATE_REQUEST__TEMPERATURE_PRESENT_TEMPERATURE)
        out->sampling.temperature = pb->temperature;
    out->sampling.top_k = pb->top_k;
    if (pb->top_p_present_case == DECOSERVE__V1__GENERATE_REQUEST__TOP_P_PRESENT_TOP_P)
        out->sampling.top_p = pb->top_p;
    if (pb->seed_present_case == DECOSERVE__V1__GENERATE_REQUEST__SEED_PRESENT_SEED)
        out->sampling.seed = pb->seed;
    out->stop = (const char *const *)pb->stop;
    out->n_stop = (int)pb->n_stop;
    out->stop_ids = pb->stop_token_ids;
    out->n_stop_ids = (int)pb->n_stop_token_ids;
    out->ignore_eos = pb->ignore_eos != 0;
}

Decoserve__V1__FinishReason proto_map_finish_reason(serving_finish finish) {
    switch (finish) {
    case SERVING_RUNNING: return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
    case SERVING_STOP: return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_STOP;
    case SERVING_LENGTH: return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case SERVING_CANCELLED: return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    case SERVING_ERROR:
    case SERVING_UNAVAILABLE: return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR;
    }
    return DECOSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR;
}

void proto_map_generate_response(const serving_output *out, const char *request_id,
                                 Decoserve__V1__GenerateResponse *pb, Decoserve__V1__Usage *usage) {
    decoserve__v1__generate_response__init(pb);
    decoserve__v1__usage__init(usage);
    pb->request_id = (char *)request_id;
    pb->token_ids = out->token_ids;
    pb->n_token_ids = (size_t)out->n_token_ids;
    pb->text = out->text != NULL ? out->text : "";
    pb->finish_reason = proto_map_finish_reason(out->finish);
    if (out->finish == SERVING_ERROR || out->finish == SERVING_UNAVAILABLE)
        pb->error = (char *)out->error;
    usage->prompt_tokens = out->prompt_tokens;
    usage->cached_prompt_tokens = out->cached_prompt_tokens;
    usage->completion_tokens = out->completion_tokens;
    usage->preemptions = out->preemptions;
    usage->time_to_first_token_s = out->ttft_s;
    pb->usage = usage;
}

void proto_map_model_info(const serving_info *info, const char *model,
                          Decoserve__V1__ModelInfoResponse *pb) {
    decoserve__v1__model_info_response__init(pb);
    pb->architecture = (char *)info->architecture;
    pb->model = (char *)model;
    pb->context_length = info->context_length;
    pb->vocab_size = info->vocab_size;
    pb->n_layers = info->n_layers;
    pb->n_heads = info->n_heads;
    pb->n_kv_heads = info->n_kv_heads;
    pb->head_dim = info->head_dim;
    pb->d_model = info->d_model;
    pb->bos_id = info->bos_id;
    pb->eos_id = info->eos_id;
    pb->kv_bits = info->kv_bits;
    pb->kv_method = (char *)info->kv_method;
    pb->block_size = info->block_size;
    pb->kv_memory_bytes = info->kv_memory_bytes;
    pb->device = (char *)info->device;
    pb->tensor_parallel_size = info->tensor_parallel;
    pb->max_seqs = info->max_seqs;
    pb->max_batched_tokens = info->max_batched_tokens;
}

void proto_map_stats(const serving_stats *st, Decoserve__V1__GetStatsResponse *pb) {
    decoserve__v1__get_stats_response__init(pb);
    pb->running = st->running;
    pb->waiting = st->waiting;
    pb->preempted_waiting = st->preempted_waiting;
    pb->peak_running = st->peak_running;
    pb->open_blocks_total = st->open_blocks_total;
    pb->open_blocks_free = st->open_blocks_free;
    pb->full_blocks_total = st->full_blocks_total;
    pb->full_blocks_free = st->full_blocks_free;
    pb->full_blocks_cached = st->full_blocks_cached;
    pb->peak_full_blocks_used = st->peak_full_blocks_used;
    pb->kv_bytes_per_token = st->kv_bytes_per_token;
    pb->fp16_bytes_per_token = st->fp16_bytes_per_token;
    pb->compression_ratio = st->compression_ratio;
    pb->kv_memory_bytes = st->kv_memory_bytes;
    pb->preemptions = st->preemptions;
    pb->prefix_cache_queries = st->prefix_cache_queries;
    pb->prefix_cache_hits = st->prefix_cache_hits;
    pb->requests_submitted = st->requests_submitted;
    pb->requests_finished = st->requests_finished;
    pb->requests_cancelled = st->requests_cancelled;
    pb->requests_failed = st->requests_failed;
    pb->prompt_tokens = st->prompt_tokens;
    pb->generated_tokens = st->generated_tokens;
    pb->steps = st->steps;
    pb->busy_s = st->busy_s;
    pb->prompt_tokens_per_s = st->prompt_tokens_per_s;
    pb->generated_tokens_per_s = st->generated_tokens_per_s;
}
