/* tools/loadgen/report.c — the table on stdout and the --json document of a load run. */
#include "tools/loadgen/report.h"

#include <stdlib.h>

#include "server/pb_buffer.h"

enum { MAX_FAILURES_SHOWN = 5 };

double lg_run_seqs_per_gib(const lg_run *run) {
    const Decoserve__V1__GetStatsResponse *s = run->stats_after;
    return s->kv_memory_bytes > 0 ? s->peak_running / (s->kv_memory_bytes / 1073741824.0) : 0;
}

long long lg_run_preemptions(const lg_run *run) {
    return (long long)(run->stats_after->preemptions - run->stats_before->preemptions);
}

static const char *outcome_name(lg_outcome o) {
    return o == LG_OK ? "ok" : o == LG_CANCELLED ? "cancelled" : "failed";
}

static const char *finish_name(int reason) {
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&decoserve__v1__finish_reason__descriptor, reason);
    return v ? v->name : "UNKNOWN";
}

/* "fp16" or "kivi 4-bit". */
static void kv_format(const Decoserve__V1__ModelInfoResponse *m, char *out, size_t len) {
    if (m->kv_bits == 16)
        snprintf(out, len, "fp16");
    else
        snprintf(out, len, "%s %d-bit", m->kv_method, m->kv_bits);
}

static void print_load(FILE *out, const lg_load_options *o) {
    const lg_workload_options *w = &o->workload;
    fprintf(out, "load: %d requests, ", w->num_requests);
    if (w->rate > 0)
        fprintf(out, "Poisson arrivals at %g requests/s, %s", w->rate,
                o->concurrency ? "" : "no concurrency limit");
    if (o->concurrency)
        fprintf(out, "%s%d in flight at most", w->rate > 0 ? "" : "closed loop: ", o->concurrency);
    fprintf(out, "; prompts %s, %d tokens, output %d tokens (range ratio %g); seed %llu",
            o->prompt_file ? o->prompt_file : "of random ids", w->input_len, w->output_len,
            w->range_ratio, (unsigned long long)w->seed);
    if (w->cancel_fraction > 0) fprintf(out, "; cancel fraction %g", w->cancel_fraction);
    fprintf(out, "\n");
}

static void print_dist(FILE *out, const char *name, const lg_dist *d) {
    fprintf(out, "  %-22s %10.2f %10.2f %10.2f %10.2f %8d\n", name, d->mean * 1e3, d->p50 * 1e3,
            d->p90 * 1e3, d->p99 * 1e3, d->n);
}

void lg_report_print(FILE *out, const lg_load_options *o, const lg_run *run) {
    const lg_summary *s = &run->summary;
    const Decoserve__V1__ModelInfoResponse *m = run->model;
    const Decoserve__V1__GetStatsResponse *st = run->stats_after;
    char kv[64];
    kv_format(m, kv, sizeof kv);
    fprintf(out, "decoserve-loadgen: %s serving %s on %s (%s KV, block %d, max-seqs %d)\n",
            o->target, m->model, m->device, kv, m->block_size, m->max_seqs);
    print_load(out, o);
    fprintf(out, "\n  %-22s %10d\n", "requests", s->n_requests);
    fprintf(out, "  %-22s %10d\n", "successful", s->n_ok);
    if (s->n_cancel_requested)
        fprintf(out, "  %-22s %10d   (of %d cancels requested; the others finished first)\n",
                "cancelled by loadgen", s->n_cancelled, s->n_cancel_requested);
    fprintf(out, "  %-22s %10d\n", "failed", s->n_failed);
    fprintf(out, "  %-22s", "by status");
    for (int c = 0; c <= LG_N_STATUS; c++)
        if (s->by_status[c])
            fprintf(out, " %s %d", c < LG_N_STATUS ? pb_status_name(c) : "other", s->by_status[c]);
    fprintf(out, "\n");
    for (int i = 0, shown = 0; i < run->n_results && shown < MAX_FAILURES_SHOWN; i++)
        if (run->results[i].outcome == LG_FAILED) {
            fprintf(out, "  failure: request %d: %s: %s\n", i,
                    pb_status_name(run->results[i].status), run->results[i].error);
            shown++;
        }
    fprintf(out, "  %-22s %10.2f\n", "duration (s)", s->duration_s);
    fprintf(out, "  %-22s %10.2f\n", "requests/s", s->requests_per_s);
    fprintf(out, "  %-22s %10.1f   (%lld tokens)\n", "output tokens/s", s->output_tokens_per_s,
            (long long)s->output_tokens);
    fprintf(out, "  %-22s %10.1f   (%lld prompt + output tokens)\n", "total tokens/s",
            s->total_tokens_per_s, (long long)(s->prompt_tokens + s->output_tokens));
    fprintf(out, "\n  %-22s %10s %10s %10s %10s %8s\n", "(ms, successful only)", "mean", "p50",
            "p90", "p99", "n");
    print_dist(out, "TTFT", &s->ttft);
    print_dist(out, "TPOT", &s->tpot);
    print_dist(out, "ITL", &s->itl);
    print_dist(out, "end-to-end latency", &s->latency);
    fprintf(out, "\nKV cache (GetStats after the run):\n");
    fprintf(out, "  %-22s %s, %.0f bytes/token (fp16 %.0f: %.2fx smaller)\n", "format", kv,
            st->kv_bytes_per_token, st->fp16_bytes_per_token, st->compression_ratio);
    fprintf(out, "  %-22s %.1f MiB: %d open (fp16) + %d full blocks\n", "memory",
            st->kv_memory_bytes / 1048576.0, st->open_blocks_total, st->full_blocks_total);
    fprintf(out, "  %-22s %d sequences, %.1f per GiB of KV memory (since the server started)\n",
            "peak running", st->peak_running, lg_run_seqs_per_gib(run));
    fprintf(out, "  %-22s %d of %d (since the server started)\n", "peak full blocks used",
            st->peak_full_blocks_used, st->full_blocks_total);
    fprintf(out, "  %-22s %lld during the run\n", "preemptions", lg_run_preemptions(run));
    fprintf(out,
            "  %-22s %s, %.2f s after the last call: open %d/%d free, full %d/%d free, "
            "running %d, waiting %d\n",
            "pools full again", run->pools_full ? "yes" : "NO", run->drain_s, st->open_blocks_free,
            st->open_blocks_total, st->full_blocks_free, st->full_blocks_total, st->running,
            st->waiting);
}

/* Every scalar field of a flat message, under its proto name. */
static cJSON *message_json(const ProtobufCMessage *m) {
    cJSON *obj = cJSON_CreateObject();
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; obj && i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = (const char *)m + f->offset;
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32:
            cJSON_AddNumberToObject(obj, f->name, *(const int32_t *)p);
            break;
        case PROTOBUF_C_TYPE_INT64:
            cJSON_AddNumberToObject(obj, f->name, (double)*(const int64_t *)p);
            break;
        case PROTOBUF_C_TYPE_DOUBLE:
            cJSON_AddNumberToObject(obj, f->name, *(const double *)p);
            break;
        case PROTOBUF_C_TYPE_STRING:
            cJSON_AddStringToObject(obj, f->name, *(char *const *)p);
            break;
        default: break; /* ModelInfo and GetStats hold no other types */
        }
    }
    return obj;
}

static cJSON *dist_json(const lg_dist *d) {
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddNumberToObject(obj, "mean", d->mean);
    cJSON_AddNumberToObject(obj, "p50", d->p50);
    cJSON_AddNumberToObject(obj, "p90", d->p90);
    cJSON_AddNumberToObject(obj, "p99", d->p99);
    cJSON_AddNumberToObject(obj, "n", d->n);
    return obj;
}

static cJSON *load_json(const lg_load_options *o) {
    const lg_workload_options *w = &o->workload;
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddStringToObject(obj, "target", o->target);
    cJSON_AddNumberToObject(obj, "num_requests", w->num_requests);
    cJSON_AddNumberToObject(obj, "concurrency", o->concurrency);
    cJSON_AddNumberToObject(obj, "rate", w->rate);
    cJSON_AddNumberToObject(obj, "input_len", w->input_len);
    cJSON_AddNumberToObject(obj, "output_len", w->output_len);
    cJSON_AddNumberToObject(obj, "range_ratio", w->range_ratio);
    cJSON_AddNumberToObject(obj, "seed", (double)w->seed);
    cJSON_AddNumberToObject(obj, "cancel_fraction", w->cancel_fraction);
    if (o->prompt_file)
        cJSON_AddStringToObject(obj, "prompt_file", o->prompt_file);
    else
        cJSON_AddNullToObject(obj, "prompt_file");
    cJSON_AddBoolToObject(obj, "ignore_eos", o->prompt_file == NULL || o->ignore_eos);
    return obj;
}

static cJSON *request_json(int i, const lg_result *r) {
    cJSON *obj = cJSON_CreateObject();
    cJSON_AddNumberToObject(obj, "index", i);
    cJSON_AddStringToObject(obj, "outcome", outcome_name(r->outcome));
    cJSON_AddStringToObject(obj, "status", pb_status_name(r->status));
    cJSON_AddBoolToObject(obj, "cancel_requested", r->cancel_requested);
    cJSON_AddNumberToObject(obj, "prompt_tokens", r->prompt_tokens);
    cJSON_AddNumberToObject(obj, "max_tokens", r->max_tokens);
    cJSON_AddNumberToObject(obj, "output_tokens", r->output_tokens);
    cJSON_AddStringToObject(obj, "finish_reason", finish_name(r->finish_reason));
    cJSON_AddNumberToObject(obj, "start_s", r->start_s);
    cJSON_AddNumberToObject(obj, "ttft_s", r->ttft_s);
    cJSON_AddNumberToObject(obj, "tpot_s", r->tpot_s);
    cJSON_AddNumberToObject(obj, "latency_s", r->latency_s);
    cJSON_AddStringToObject(obj, "error", r->error);
    return obj;
}

cJSON *lg_report_json(const lg_load_options *o, const lg_run *run) {
    const lg_summary *s = &run->summary;
    const Decoserve__V1__GetStatsResponse *st = run->stats_after;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "load", load_json(o));
    cJSON_AddNumberToObject(root, "requests", s->n_requests);
    cJSON_AddNumberToObject(root, "ok", s->n_ok);
    cJSON_AddNumberToObject(root, "cancelled", s->n_cancelled);
    cJSON_AddNumberToObject(root, "failed", s->n_failed);
    cJSON_AddNumberToObject(root, "cancel_requested", s->n_cancel_requested);
    cJSON *by_status = cJSON_AddObjectToObject(root, "by_status");
    for (int c = 0; c <= LG_N_STATUS; c++)
        if (s->by_status[c])
            cJSON_AddNumberToObject(by_status, c < LG_N_STATUS ? pb_status_name(c) : "other",
                                    s->by_status[c]);
    cJSON_AddNumberToObject(root, "duration_s", s->duration_s);
    cJSON_AddNumberToObject(root, "requests_per_s", s->requests_per_s);
    cJSON_AddNumberToObject(root, "output_tokens_per_s", s->output_tokens_per_s);
    cJSON_AddNumberToObject(root, "total_tokens_per_s", s->total_tokens_per_s);
    cJSON_AddNumberToObject(root, "prompt_tokens", (double)s->prompt_tokens);
    cJSON_AddNumberToObject(root, "output_tokens", (double)s->output_tokens);
    cJSON_AddItemToObject(root, "ttft_s", dist_json(&s->ttft));
    cJSON_AddItemToObject(root, "tpot_s", dist_json(&s->tpot));
    cJSON_AddItemToObject(root, "itl_s", dist_json(&s->itl));
    cJSON_AddItemToObject(root, "latency_s", dist_json(&s->latency));
    cJSON *kv = cJSON_AddObjectToObject(root, "kv");
    cJSON_AddStringToObject(kv, "kv_method", run->model->kv_method);
    cJSON_AddNumberToObject(kv, "kv_bits", run->model->kv_bits);
    cJSON_AddNumberToObject(kv, "bytes_per_token", st->kv_bytes_per_token);
    cJSON_AddNumberToObject(kv, "fp16_bytes_per_token", st->fp16_bytes_per_token);
    cJSON_AddNumberToObject(kv, "compression_ratio", st->compression_ratio);
    cJSON_AddNumberToObject(kv, "kv_memory_bytes", (double)st->kv_memory_bytes);
    cJSON_AddNumberToObject(kv, "peak_running", st->peak_running);
    cJSON_AddNumberToObject(kv, "peak_running_per_gib", lg_run_seqs_per_gib(run));
    cJSON_AddNumberToObject(kv, "peak_full_blocks_used", st->peak_full_blocks_used);
    cJSON_AddNumberToObject(kv, "full_blocks_total", st->full_blocks_total);
    cJSON_AddNumberToObject(kv, "open_blocks_total", st->open_blocks_total);
    cJSON_AddNumberToObject(kv, "preemptions", (double)lg_run_preemptions(run));
    cJSON_AddBoolToObject(kv, "pools_full", run->pools_full);
    cJSON_AddNumberToObject(kv, "drain_s", run->drain_s);
    cJSON_AddItemToObject(root, "model", message_json(&run->model->base));
    cJSON_AddItemToObject(root, "server_stats", message_json(&st->base));
    cJSON_AddItemToObject(root, "server_stats_before", message_json(&run->stats_before->base));
    cJSON *requests = cJSON_AddArrayToObject(root, "per_request");
    for (int i = 0; i < run->n_results; i++)
        cJSON_AddItemToArray(requests, request_json(i, &run->results[i]));
    return root;
}

ds_status lg_report_write_json(const char *path, const cJSON *json, char *msg, size_t msg_len) {
    char *text = json ? cJSON_Print(json) : NULL;
    if (text == NULL) return ds_fail(msg, msg_len, DS_ENOMEM, "--json %s: out of memory", path);
    FILE *fp = fopen(path, "w");
    int ok = fp && fputs(text, fp) >= 0 && fputc('\n', fp) != EOF;
    if (fp && fclose(fp) != 0) ok = 0;
    free(text);
    return ok ? DS_OK : ds_fail(msg, msg_len, DS_EIO, "--json %s: cannot write", path);
}
