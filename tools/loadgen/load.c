/* tools/loadgen/load.c — the completion-queue loop of a load run.
 *
 * Every Generate call has three tags on the one queue, one per batch it can have in flight:
 *   SEND    {SEND_INITIAL_METADATA, SEND_MESSAGE, SEND_CLOSE_FROM_CLIENT, RECV_INITIAL_METADATA}
 *   STATUS  {RECV_STATUS_ON_CLIENT}, posted with SEND so that the end is seen whenever it comes
 *   RECV    {RECV_MESSAGE}, posted after SEND and again after each message, until the stream ends
 *           or the call is cancelled
 * A call is over once none of its batches is in flight. Unary calls (ModelInfo, Tokenize,
 * GetStats) go through the same queue while no stream is open. */
#include "tools/loadgen/load.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/clock.h"
#include "common/file.h"
#include "server/pb_buffer.h"

enum { UNARY_DEADLINE_S = 30, DRAIN_POLL_MS = 50, TOKENIZE_CHUNK = 1 << 20 };

static const char *const GENERATE = "/decoserve.v1.Decoserve/Generate";

static gpr_timespec deadline_in(double seconds) {
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_micros((int64_t)(seconds * 1e6), GPR_TIMESPAN));
}

typedef enum op_kind { OP_SEND, OP_STATUS, OP_RECV, N_OPS } op_kind;

typedef struct stream stream;

typedef struct stream_tag {
    stream *s;
    op_kind kind;
} stream_tag;

/* One Generate call in flight. */
struct stream {
    int index; /* into the workload */
    grpc_call *call;
    stream_tag tags[N_OPS];
    int n_batches; /* in flight */
    int cancelled; /* grpc_call_cancel was called (by the workload or for error) */
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
    double t_end;
    lg_timing timing;
    int prompt_tokens, finish_reason; /* from the latest message that carried them */
    char error[160];                  /* the stream was malformed */
};

typedef struct loader {
    const lg_load_options *o;
    grpc_channel *channel;
    grpc_completion_queue *cq;
    lg_workload workload;
    size_t *itl_offset; /* [n]: each request's ITLs in run->itl */
    lg_run *run;
    int ignore_eos;
    int next, in_flight, done, n_ok, n_cancelled, n_failed;
    long long tokens_received;
    double t0, t_progress;
} loader;

/* ---- unary calls ---- */

/* One unary call on the loader's queue; *reply is the response (free with
 * protobuf_c_message_free_unpacked). Errors: "METHOD: STATUS: details". */
static ds_status unary(loader *L, const char *method, const ProtobufCMessage *request,
                       const ProtobufCMessageDescriptor *type, ProtobufCMessage **reply, char *msg,
                       size_t msg_len) {
    *reply = NULL;
    grpc_byte_buffer *send = pb_buffer_pack(request);
    if (send == NULL) return ds_fail(msg, msg_len, DS_EINTERNAL, "%s: cannot pack", method);
    grpc_call *call = grpc_channel_create_call(L->channel, NULL, GRPC_PROPAGATE_DEFAULTS, L->cq,
                                               grpc_slice_from_static_string(method), NULL,
                                               deadline_in(UNARY_DEADLINE_S), NULL);
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_byte_buffer *recv = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int tag;
    ds_status st = DS_OK;
    grpc_call_error err = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (err != GRPC_CALL_OK) {
        st = ds_fail(msg, msg_len, DS_EINTERNAL, "%s: batch refused: %s", method,
                     grpc_call_error_to_string(err));
    } else {
        /* Nothing else is in flight on the queue while unary calls run. */
        grpc_event ev;
        do {
            ev = grpc_completion_queue_next(L->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &tag);
        if (status != GRPC_STATUS_OK) {
            char *text = grpc_slice_to_c_string(details);
            st = ds_fail(msg, msg_len, status == GRPC_STATUS_UNAVAILABLE ? DS_EUNAVAILABLE : DS_EIO,
                         "%s: %s: %s", method, pb_status_name(status), text);
            gpr_free(text);
        } else if ((*reply = pb_buffer_unpack(type, recv)) == NULL) {
            st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: no or malformed %s", method, type->name);
        }
    }
    if (recv) grpc_byte_buffer_destroy(recv);
    grpc_byte_buffer_destroy(send);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    return st;
}

static ds_status get_stats(loader *L, Decoserve__V1__GetStatsResponse **out, char *msg,
                           size_t msg_len) {
    Decoserve__V1__GetStatsRequest q = DECOSERVE__V1__GET_STATS_REQUEST__INIT;
    return unary(L, "/decoserve.v1.Decoserve/GetStats", &q.base,
                 &decoserve__v1__get_stats_response__descriptor, (ProtobufCMessage **)out, msg,
                 msg_len);
}

/* The --prompt-file tokenized by the server, into *ids (malloc'ed). The text goes in pieces of at
 * most TOKENIZE_CHUNK bytes cut after a newline or space (where byte-level BPE pre-tokenization
 * splits anyway), so files over the server's message limit work too. */
static ds_status tokenize_file(loader *L, const char *path, int32_t **ids, int *n, char *msg,
                               size_t msg_len) {
    *ids = NULL;
    *n = 0;
    char *text;
    size_t got;
    char why[256];
    if (ds_read_file(path, (size_t)1 << 26, &text, &got, why, sizeof why) != DS_OK)
        return ds_fail(msg, msg_len, DS_EIO, "--prompt-file %s", why);
    ds_status st = DS_OK;
    size_t cap = 0;
    for (size_t at = 0; at < got && st == DS_OK;) {
        size_t len = got - at < TOKENIZE_CHUNK ? got - at : TOKENIZE_CHUNK;
        for (size_t cut = len; at + len < got && cut > TOKENIZE_CHUNK / 2; cut--)
            if (text[at + cut - 1] == '\n' || text[at + cut - 1] == ' ') {
                len = cut;
                break;
            }
        char saved = text[at + len];
        text[at + len] = '\0';
        Decoserve__V1__TokenizeRequest q = DECOSERVE__V1__TOKENIZE_REQUEST__INIT;
        q.text = text + at;
        Decoserve__V1__TokenizeResponse *r = NULL;
        st = unary(L, "/decoserve.v1.Decoserve/Tokenize", &q.base,
                   &decoserve__v1__tokenize_response__descriptor, (ProtobufCMessage **)&r, why,
                   sizeof why);
        text[at + len] = saved;
        at += len;
        if (st != DS_OK) {
            st = ds_fail(msg, msg_len, DS_EINVAL, "--prompt-file %s: %s", path, why);
            break;
        }
        if ((size_t)*n + r->n_token_ids > cap) {
            cap = 2 * cap + r->n_token_ids;
            int32_t *grown = cap < (size_t)INT32_MAX ? realloc(*ids, cap * sizeof **ids) : NULL;
            if (grown == NULL)
                st = ds_fail(msg, msg_len, DS_ENOMEM, "--prompt-file %s: out of memory", path);
            else
                *ids = grown;
        }
        if (st == DS_OK) {
            memcpy(*ids + *n, r->token_ids, r->n_token_ids * sizeof **ids);
            *n += (int)r->n_token_ids;
        }
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    free(text);
    if (st == DS_OK && *n == 0)
        st = ds_fail(msg, msg_len, DS_EINVAL, "--prompt-file %s: no tokens", path);
    return st;
}

/* ---- streams ---- */

static void stream_cancel(stream *s) {
    if (s->cancelled) return;
    s->cancelled = 1;
    grpc_call_cancel(s->call, NULL);
}

/* The call is over: its result, and the stream freed. */
static void stream_end(loader *L, stream *s) {
    const lg_request *q = &L->workload.requests[s->index];
    lg_result *r = &L->run->results[s->index];
    r->status = (int)s->status;
    r->cancel_requested = q->cancel_after_tokens >= 0;
    r->prompt_tokens = s->prompt_tokens;
    r->max_tokens = q->max_tokens;
    r->finish_reason = s->finish_reason;
    r->start_s = s->timing.t_start - L->t0;
    lg_result_times(r, &s->timing, s->t_end);
    if (s->error[0]) {
        r->outcome = LG_FAILED;
        snprintf(r->error, sizeof r->error, "%s", s->error);
    } else if (s->status == GRPC_STATUS_OK && s->finish_reason == 0) {
        r->outcome = LG_FAILED;
        snprintf(r->error, sizeof r->error, "status OK but no message carried a finish_reason");
    } else if (s->status == GRPC_STATUS_OK) {
        r->outcome = LG_OK; /* a cancel, if requested, came too late */
    } else if (s->status == GRPC_STATUS_CANCELLED && r->cancel_requested) {
        r->outcome = LG_CANCELLED;
    } else {
        r->outcome = LG_FAILED;
        char *text = grpc_slice_to_c_string(s->details);
        snprintf(r->error, sizeof r->error, "%s", text);
        gpr_free(text);
    }
    L->n_ok += r->outcome == LG_OK;
    L->n_cancelled += r->outcome == LG_CANCELLED;
    L->n_failed += r->outcome == LG_FAILED;
    if (s->send) grpc_byte_buffer_destroy(s->send);
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial);
    grpc_metadata_array_destroy(&s->trailing);
    grpc_call_unref(s->call);
    free(s);
    L->in_flight--;
    L->done++;
}

/* A refused batch ends the request as failed, naming gRPC's reason. */
static void stream_refused(stream *s, const char *batch, grpc_call_error err) {
    snprintf(s->error, sizeof s->error, "%s batch refused: %s", batch,
             grpc_call_error_to_string(err));
    stream_cancel(s);
}

static void stream_start_recv(stream *s) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &s->recv;
    grpc_call_error err = grpc_call_start_batch(s->call, &op, 1, &s->tags[OP_RECV], NULL);
    if (err == GRPC_CALL_OK)
        s->n_batches++;
    else
        stream_refused(s, "RECV_MESSAGE", err);
}

/* Starts request i of the workload. */
static void stream_start(loader *L, int i) {
    const lg_request *q = &L->workload.requests[i];
    stream *s = calloc(1, sizeof *s);
    if (s == NULL) {
        lg_result *r = &L->run->results[i];
        r->outcome = LG_FAILED;
        r->status = GRPC_STATUS_UNKNOWN;
        r->max_tokens = q->max_tokens;
        r->ttft_s = r->tpot_s = -1;
        snprintf(r->error, sizeof r->error, "loadgen: out of memory");
        L->n_failed++;
        L->done++;
        return;
    }
    s->index = i;
    for (int k = 0; k < N_OPS; k++)
        s->tags[k] = (stream_tag){s, (op_kind)k};
    grpc_metadata_array_init(&s->initial);
    grpc_metadata_array_init(&s->trailing);
    s->details = grpc_empty_slice();
    s->status = GRPC_STATUS_UNKNOWN;
    s->prompt_tokens = q->n_prompt_ids;

    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    req.prompt_ids = (int32_t *)q->prompt_ids;
    req.n_prompt_ids = (size_t)q->n_prompt_ids;
    req.max_tokens_present_case = DECOSERVE__V1__GENERATE_REQUEST__MAX_TOKENS_PRESENT_MAX_TOKENS;
    req.max_tokens = q->max_tokens;
    req.temperature_present_case = DECOSERVE__V1__GENERATE_REQUEST__TEMPERATURE_PRESENT_TEMPERATURE;
    req.temperature = 0.0f;
    req.ignore_eos = L->ignore_eos;
    char id[32];
    snprintf(id, sizeof id, "loadgen-%d", i);
    req.request_id = id;
    s->send = pb_buffer_pack(&req.base);
    s->call = grpc_channel_create_call(L->channel, NULL, GRPC_PROPAGATE_DEFAULTS, L->cq,
                                       grpc_slice_from_static_string(GENERATE), NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    lg_timing_start(&s->timing, ds_now_s(), L->run->itl + L->itl_offset[i], q->max_tokens);
    s->t_end = s->timing.t_start;
    L->in_flight++;
    if (s->send == NULL) {
        snprintf(s->error, sizeof s->error, "loadgen: cannot pack the GenerateRequest");
        stream_end(L, s);
        return;
    }

    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->initial;
    grpc_call_error err = grpc_call_start_batch(s->call, ops, 4, &s->tags[OP_SEND], NULL);
    if (err != GRPC_CALL_OK) {
        snprintf(s->error, sizeof s->error, "SEND batch refused: %s",
                 grpc_call_error_to_string(err));
        stream_end(L, s);
        return;
    }
    s->n_batches++;
    grpc_op status;
    memset(&status, 0, sizeof status);
    status.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status.data.recv_status_on_client.trailing_metadata = &s->trailing;
    status.data.recv_status_on_client.status = &s->status;
    status.data.recv_status_on_client.status_details = &s->details;
    err = grpc_call_start_batch(s->call, &status, 1, &s->tags[OP_STATUS], NULL);
    if (err == GRPC_CALL_OK)
        s->n_batches++;
    else
        stream_refused(s, "RECV_STATUS_ON_CLIENT", err);
    if (q->cancel_after_tokens == 0) stream_cancel(s);
}

/* A RECV_MESSAGE completed: account its tokens, then cancel, read on, or stop at the end. */
static void stream_on_message(loader *L, stream *s, double now) {
    if (s->recv == NULL) return; /* the stream ended */
    Decoserve__V1__GenerateResponse *m = (Decoserve__V1__GenerateResponse *)pb_buffer_unpack(
        &decoserve__v1__generate_response__descriptor, s->recv);
    grpc_byte_buffer_destroy(s->recv);
    s->recv = NULL;
    if (m == NULL) {
        snprintf(s->error, sizeof s->error, "malformed GenerateResponse");
        stream_cancel(s);
        return;
    }
    if (lg_timing_message(&s->timing, now, (int)m->n_token_ids) < 0) {
        snprintf(s->error, sizeof s->error, "%d tokens, more than max_tokens = %d",
                 s->timing.n_tokens + (int)m->n_token_ids, s->timing.capacity);
        stream_cancel(s);
    }
    L->tokens_received += (long long)m->n_token_ids;
    if (m->usage) s->prompt_tokens = m->usage->prompt_tokens;
    if (m->finish_reason) s->finish_reason = m->finish_reason;
    protobuf_c_message_free_unpacked(&m->base, NULL);
    int cancel_at = L->workload.requests[s->index].cancel_after_tokens;
    if (cancel_at >= 0 && s->timing.n_tokens >= cancel_at) stream_cancel(s);
    if (!s->cancelled) stream_start_recv(s); /* until the stream ends (recv == NULL) */
}

static void on_event(loader *L, stream_tag *tag, int ok) {
    stream *s = tag->s;
    double now = ds_now_s();
    s->n_batches--;
    switch (tag->kind) {
    case OP_SEND:
        grpc_byte_buffer_destroy(s->send);
        s->send = NULL;
        if (ok && !s->cancelled) stream_start_recv(s);
        break;
    case OP_STATUS: s->t_end = now; break;
    case OP_RECV: stream_on_message(L, s, now); break;
    case N_OPS: break;
    }
    if (s->n_batches == 0) stream_end(L, s);
}

/* ---- the run ---- */

static void progress(loader *L, int final) {
    double now = ds_now_s();
    int tty = isatty(STDERR_FILENO);
    if (!L->o->progress || (!final && now < L->t_progress)) return;
    L->t_progress = now + (tty ? 0.5 : 10.0);
    fprintf(stderr,
            "%s[decoserve-loadgen] %d/%d done (%d ok, %d cancelled, %d failed), %d in flight, "
            "%lld tokens, %.1f s%s",
            tty ? "\r" : "", L->done, L->workload.n_requests, L->n_ok, L->n_cancelled, L->n_failed,
            L->in_flight, L->tokens_received, now - L->t0, tty && !final ? "   " : "\n");
    fflush(stderr);
}

/* Starts every request whose arrival time has come while a slot is free; returns the seconds until
 * the next one is due (1 s when none can start before a call ends). */
static double start_due(loader *L) {
    int n = L->workload.n_requests, cap = L->o->concurrency;
    while (L->next < n && (cap == 0 || L->in_flight < cap)) {
        double due = L->workload.requests[L->next].arrival_s - (ds_now_s() - L->t0);
        if (due > 0) return due;
        stream_start(L, L->next++);
    }
    return 1.0;
}

static void run_load(loader *L) {
    L->t0 = ds_now_s();
    L->t_progress = L->t0 + (isatty(STDERR_FILENO) ? 0.5 : 10.0);
    while (L->done < L->workload.n_requests) {
        double wait = start_due(L);
        double tick = L->t_progress - ds_now_s();
        if (L->o->progress && tick < wait) wait = tick > 0 ? tick : 0;
        grpc_event ev = grpc_completion_queue_next(L->cq, deadline_in(wait), NULL);
        if (ev.type == GRPC_OP_COMPLETE) on_event(L, ev.tag, ev.success);
        progress(L, 0);
    }
    progress(L, 1);
}

/* GetStats until the server is idle with whole pools, or the timeout. */
static ds_status drain(loader *L, double t_last_end, char *msg, size_t msg_len) {
    lg_run *run = L->run;
    double give_up = ds_now_s() + L->o->drain_timeout_s;
    for (;;) {
        if (run->stats_after) protobuf_c_message_free_unpacked(&run->stats_after->base, NULL);
        run->stats_after = NULL;
        ds_status st = get_stats(L, &run->stats_after, msg, msg_len);
        if (st != DS_OK) return st;
        const Decoserve__V1__GetStatsResponse *s = run->stats_after;
        run->pools_full = s->running == 0 && s->waiting == 0 &&
                          s->open_blocks_free == s->open_blocks_total &&
                          s->full_blocks_free == s->full_blocks_total;
        run->drain_s = ds_now_s() - t_last_end;
        if (run->pools_full || ds_now_s() >= give_up) return DS_OK;
        nanosleep(&(struct timespec){0, DRAIN_POLL_MS * 1000000L}, NULL);
    }
}

static ds_status load(loader *L, char *msg, size_t msg_len) {
    const lg_load_options *o = L->o;
    lg_run *run = L->run;
    char why[512];
    Decoserve__V1__ModelInfoRequest qi = DECOSERVE__V1__MODEL_INFO_REQUEST__INIT;
    ds_status st = unary(L, "/decoserve.v1.Decoserve/ModelInfo", &qi.base,
                         &decoserve__v1__model_info_response__descriptor,
                         (ProtobufCMessage **)&run->model, why, sizeof why);
    if (st != DS_OK) return ds_fail(msg, msg_len, st, "--target %s: %s", o->target, why);

    lg_workload_options wo = o->workload;
    wo.vocab_size = run->model->vocab_size;
    int32_t *corpus = NULL;
    if (o->prompt_file) {
        st = tokenize_file(L, o->prompt_file, &corpus, &wo.n_corpus, msg, msg_len);
        if (st != DS_OK) {
            free(corpus);
            return st;
        }
        wo.corpus = corpus;
    }
    int in = lg_workload_max_len(wo.input_len, wo.range_ratio);
    int out = lg_workload_max_len(wo.output_len, wo.range_ratio);
    if (in + out > run->model->context_length)
        st = ds_fail(msg, msg_len, DS_EINVAL,
                     "--input-len %d and --output-len %d with --range-ratio %g reach %d + %d "
                     "tokens, over the model's context of %d",
                     wo.input_len, wo.output_len, wo.range_ratio, in, out,
                     run->model->context_length);
    if (st == DS_OK) st = lg_workload_create(&wo, &L->workload, msg, msg_len);
    free(corpus);
    if (st != DS_OK) return st;

    int n = L->workload.n_requests;
    size_t n_itl = 0;
    L->itl_offset = malloc((size_t)n * sizeof *L->itl_offset);
    for (int i = 0; L->itl_offset && i < n; i++) {
        L->itl_offset[i] = n_itl;
        n_itl += (size_t)L->workload.requests[i].max_tokens;
    }
    run->results = calloc((size_t)n, sizeof *run->results);
    run->itl = malloc((n_itl + 1) * sizeof *run->itl);
    if (!L->itl_offset || !run->results || !run->itl)
        return ds_fail(msg, msg_len, DS_ENOMEM, "--num-requests %d: out of memory", n);
    run->n_results = n;

    st = get_stats(L, &run->stats_before, why, sizeof why);
    if (st != DS_OK) return ds_fail(msg, msg_len, st, "--target %s: %s", o->target, why);
    run_load(L);

    double first = 0, last = 0;
    for (int i = 0; i < n; i++) {
        double start = run->results[i].start_s, end = start + run->results[i].latency_s;
        if (i == 0 || start < first) first = start;
        if (i == 0 || end > last) last = end;
    }
    st = lg_summarize(run->results, n, last > first ? last - first : 1e-9, &run->summary, msg,
                      msg_len);
    if (st != DS_OK) return st;
    st = drain(L, L->t0 + last, why, sizeof why);
    if (st != DS_OK) return ds_fail(msg, msg_len, st, "--target %s: %s", o->target, why);
    return DS_OK;
}

ds_status lg_load_run(const lg_load_options *o, lg_run *run, char *msg, size_t msg_len) {
    memset(run, 0, sizeof *run);
    loader L;
    memset(&L, 0, sizeof L);
    L.o = o;
    L.run = run;
    L.ignore_eos = o->prompt_file == NULL || o->ignore_eos;
    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    /* A Tokenize reply (ids and the bytes of every token) may outgrow the default 4 MiB. */
    grpc_arg arg = {
        .type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = -1};
    grpc_channel_args args = {1, &arg};
    L.channel = grpc_channel_create(o->target, creds, &args);
    grpc_channel_credentials_release(creds);
    L.cq = grpc_completion_queue_create_for_next(NULL);

    ds_status st = load(&L, msg, msg_len);

    grpc_completion_queue_shutdown(L.cq);
    while (grpc_completion_queue_next(L.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(L.cq);
    grpc_channel_destroy(L.channel);
    grpc_shutdown();
    lg_workload_destroy(&L.workload);
    free(L.itl_offset);
    if (st != DS_OK) lg_run_destroy(run);
    return st;
}

void lg_run_destroy(lg_run *run) {
    if (run->model) protobuf_c_message_free_unpacked(&run->model->base, NULL);
    if (run->stats_before) protobuf_c_message_free_unpacked(&run->stats_before->base, NULL);
    if (run->stats_after) protobuf_c_message_free_unpacked(&run->stats_after->base, NULL);
    free(run->results);
    free(run->itl);
    memset(run, 0, sizeof *run);
}
