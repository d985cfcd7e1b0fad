/* server/grpc_server.c — the completion-queue loop and the life of one call.
 *
 * Every call is an `rpc` with two tags on the one queue: op_tag for its chain of batches (one at a
 * time) and close_tag for RECV_CLOSE_ON_SERVER, posted as soon as the call arrives so that a
 * client's cancel or an expired deadline is seen at any point. The rpc is freed once both are
 * done.
 *
 *   WAIT_CALL     grpc_server_request_call posted
 *   WAIT_REQUEST  {SEND_INITIAL_METADATA, RECV_MESSAGE}, for unknown methods too: a status sent
 *                 before reading the request never reached the client (gRPC 1.51)
 *   STREAMING     Generate: submitted; {SEND_MESSAGE} whenever the stream has news
 *   WATCHING      Health/Watch: {SEND_MESSAGE} whenever the health status changes (checked every
 *                 tick), ended with UNAVAILABLE when the server stops
 *   WAIT_FINISH   {SEND_MESSAGE (reply or last chunk), SEND_STATUS_FROM_SERVER}
 *   DONE
 *
 * The C core has no public way to post our own event to a completion queue, so the engine's
 * notify callback only raises a flag, and the loop waits on the queue with a 1 ms deadline while
 * any stream is open: at each wake-up with the flag up it polls every stream that has no send in
 * flight (and a stream is polled again as soon as its send completes). */
#include "server/grpc_server.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/vendor_check.h"
#include "proto/decoserve.pb-c.h"
#include "proto/health.pb-c.h"
#include "server/lifecycle.h"
#include "server/pb_buffer.h"
#include "server/proto_map.h"

enum { TICK_STREAMING_MS = 1, TICK_IDLE_MS = 100, DETAILS_MAX = 512 };

#define CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A refused gRPC call returns DS_EINTERNAL naming the statement and gRPC's error name. */
#define GRPC_CALL_CHECK(call)                                                                      \
    DS_VENDOR_CHECK(call, grpc_call_error, GRPC_CALL_OK, grpc_call_error_to_string)

typedef struct cq_tag {
    void (*on_done)(struct cq_tag *tag, int ok); /* run by the loop with the event's success */
} cq_tag;

typedef struct rpc rpc;

/* A unary method: fills *reply (a packed response) and returns OK, or returns a status with
 * details naming the field. */
typedef grpc_status_code (*unary_fn)(ds_grpc_server *srv, const ProtobufCMessage *request,
                                     grpc_byte_buffer **reply, char *details, size_t details_len);

/* A server-streaming method: starts sending, or finishes the call. */
typedef void (*stream_fn)(rpc *r, const ProtobufCMessage *request);

typedef struct rpc_method {
    const char *path;
    const ProtobufCMessageDescriptor *request_type;
    unary_fn unary;   /* or */
    stream_fn stream; /* Generate, Health/Watch */
    int open;         /* served without an API key: health probes carry none */
} rpc_method;

typedef enum rpc_state {
    RPC_WAIT_CALL,
    RPC_WAIT_REQUEST,
    RPC_STREAMING,
    RPC_WATCHING,
    RPC_WAIT_FINISH,
    RPC_DONE,
} rpc_state;

struct rpc {
    cq_tag op_tag;
    cq_tag close_tag;
    ds_grpc_server *srv;
    rpc_state state;
    int op_in_flight, close_done;
    int cancelled; /* RECV_CLOSE_ON_SERVER: the client cancelled, timed out or went away */
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array request_md;
    const rpc_method *method;
    grpc_byte_buffer *request; /* received; ours to destroy */
    grpc_byte_buffer *reply;   /* sent; kept until the batch sending it completes */
    grpc_slice status_details;
    /* Generate */
    serving_stream *stream; /* set while the request runs; the rpc is then in srv->streaming */
    serving_output output;
    char *request_id;
    rpc *prev, *next; /* srv->streaming, or for Watch srv->watchers */
    /* Health/Watch */
    int watch_known; /* the service asked about is one we serve */
    int watch_sent;  /* the status last sent, -1 before the first */
};

struct ds_grpc_server {
    lifecycle *life;          /* borrowed: the engine once loaded, and whether to admit */
    const security *security; /* borrowed; NULL: no API key */
    grpc_server *server;
    grpc_completion_queue *cq;
    int port;
    double shutdown_timeout_s, shutdown_grace_s;
    atomic_int outputs_pending; /* raised by the engine thread, lowered by the loop */
    rpc *streaming;             /* Generate calls whose request runs */
    rpc *watchers;              /* Health/Watch calls */
    int n_rpcs;                 /* live rpc objects, the posted WAIT_CALL one included */
    int stopping, stopped;
    int shutdown_notified; /* grpc_server_shutdown_and_notify's tag came back */
    cq_tag shutdown_tag;
};

static const rpc_method *find_method(grpc_slice path);
static void rpc_on_op(cq_tag *tag, int ok);
static void watch_send(rpc *r);
static void rpc_on_close(cq_tag *tag, int ok);

static serving *engine_of(const ds_grpc_server *srv) { return lifecycle_engine(srv->life); }

static grpc_status_code status_from_ds(ds_status status) {
    switch (status) {
    case DS_OK: return GRPC_STATUS_OK;
    case DS_EINVAL:
    case DS_ERANGE: return GRPC_STATUS_INVALID_ARGUMENT;
    case DS_EBUSY:
    case DS_ENOMEM: return GRPC_STATUS_RESOURCE_EXHAUSTED;
    case DS_EUNAVAILABLE: return GRPC_STATUS_UNAVAILABLE;
    case DS_EUNSUPPORTED: return GRPC_STATUS_UNIMPLEMENTED;
    default: return GRPC_STATUS_INTERNAL;
    }
}

/* ---- the life of an rpc ---- */

static void rpc_post_next(ds_grpc_server *srv) {
    rpc *r = calloc(1, sizeof *r);
    DS_ASSERT(r != NULL);
    r->op_tag.on_done = rpc_on_op;
    r->close_tag.on_done = rpc_on_close;
    r->srv = srv;
    r->state = RPC_WAIT_CALL;
    r->status_details = grpc_empty_slice();
    grpc_call_details_init(&r->details);
    grpc_metadata_array_init(&r->request_md);
    srv->n_rpcs++;
    grpc_call_error err = grpc_server_request_call(srv->server, &r->call, &r->details,
                                                   &r->request_md, srv->cq, srv->cq, &r->op_tag);
    /* Only a misuse of the API fails here; the server would accept nothing more. */
    if (err != GRPC_CALL_OK) DS_LOG_E("grpc_server_request_call: grpc_call_error %d", (int)err);
    DS_ASSERT(err == GRPC_CALL_OK);
    r->op_in_flight = 1;
}

static void list_push(rpc **head, rpc *r) {
    r->next = *head;
    if (*head) (*head)->prev = r;
    *head = r;
}

static void list_unlink(rpc **head, rpc *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next) r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void stream_unlink(rpc *r) { list_unlink(&r->srv->streaming, r); }

/* Drops our half of the engine stream; a request still running is cancelled and its blocks come
 * back within one engine step. */
static void stream_end(rpc *r) {
    if (r->stream == NULL) return;
    stream_unlink(r);
    serving_stream_release(r->stream);
    r->stream = NULL;
}

static void rpc_free(rpc *r) {
    DS_ASSERT(r->stream == NULL && !r->op_in_flight);
    if (r->call) grpc_call_unref(r->call);
    grpc_call_details_destroy(&r->details);
    grpc_metadata_array_destroy(&r->request_md);
    if (r->request) grpc_byte_buffer_destroy(r->request);
    if (r->reply) grpc_byte_buffer_destroy(r->reply);
    grpc_slice_unref(r->status_details);
    serving_output_free(&r->output);
    free(r->request_id);
    r->srv->n_rpcs--;
    free(r);
}

static void rpc_maybe_free(rpc *r) {
    if (!r->op_in_flight && r->close_done) rpc_free(r);
}

static ds_status start_batch(rpc *r, const grpc_op *ops, size_t n_ops, cq_tag *tag, char *msg,
                             size_t msg_len) {
    GRPC_CALL_CHECK(grpc_call_start_batch(r->call, ops, n_ops, tag, NULL));
    return DS_OK;
}

/* Starts the rpc's next batch. Only a misuse of the API is refused; the call is then cancelled,
 * so that its close still arrives and frees the rpc. */
static void rpc_start_ops(rpc *r, const grpc_op *ops, size_t n_ops) {
    char msg[256];
    if (start_batch(r, ops, n_ops, &r->op_tag, msg, sizeof msg) != DS_OK) {
        DS_LOG_E("%s", msg);
        grpc_call_cancel_with_status(r->call, GRPC_STATUS_INTERNAL, "server: batch refused", NULL);
        return;
    }
    r->op_in_flight = 1;
}

/* Sends r->reply (if any) and the status; the call ends when the batch completes. */
static void rpc_finish(rpc *r, grpc_status_code status, const char *details) {
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (r->reply != NULL) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = r->reply;
    }
    grpc_slice_unref(r->status_details);
    r->status_details = grpc_slice_from_copied_string(details);
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = status;
    ops[n++].data.send_status_from_server.status_details = &r->status_details;
    r->state = RPC_WAIT_FINISH;
    rpc_start_ops(r, ops, n);
}

/* Sends whatever the engine pushed onto the stream since the last send: a chunk, or the last
 * message and the status. */
static void stream_send(rpc *r) {
    if (r->state != RPC_STREAMING || r->op_in_flight || r->close_done) return;
    if (!serving_stream_poll(r->stream, &r->output)) return;
    Decoserve__V1__GenerateResponse pb;
    Decoserve__V1__Usage usage;
    proto_map_generate_response(&r->output, r->request_id, &pb, &usage);
    if (r->reply) grpc_byte_buffer_destroy(r->reply); /* its batch has completed */
    r->reply = pb_buffer_pack(&pb.base);
    if (r->reply == NULL) {
        stream_end(r);
        rpc_finish(r, GRPC_STATUS_INTERNAL, "server: cannot pack a GenerateResponse");
        return;
    }
    if (r->output.finish == SERVING_RUNNING) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_SEND_MESSAGE;
        op.data.send_message.send_message = r->reply;
        rpc_start_ops(r, &op, 1);
        return;
    }
    stream_end(r);
    switch (r->output.finish) {
    case SERVING_CANCELLED:
        rpc_finish(r, GRPC_STATUS_UNAVAILABLE, "request cancelled: the server is shutting down");
        break;
    case SERVING_ERROR: rpc_finish(r, GRPC_STATUS_INTERNAL, r->output.error); break;
    case SERVING_UNAVAILABLE: rpc_finish(r, GRPC_STATUS_UNAVAILABLE, r->output.error); break;
    default: rpc_finish(r, GRPC_STATUS_OK, ""); break;
    }
}

static void on_engine_output(void *ctx) {
    ds_grpc_server *srv = ctx;
    atomic_store_explicit(&srv->outputs_pending, 1, memory_order_release);
}

static void generate_begin(rpc *r, const ProtobufCMessage *request) {
    const Decoserve__V1__GenerateRequest *req = (const Decoserve__V1__GenerateRequest *)request;
    ds_grpc_server *srv = r->srv;
    if (lifecycle_get_phase(srv->life) != LIFECYCLE_SERVING) {
        rpc_finish(r, GRPC_STATUS_UNAVAILABLE, lifecycle_refusal(srv->life));
        return;
    }
    serving_request sr;
    proto_map_generate_request(req, &sr);
    char msg[DETAILS_MAX];
    ds_status st =
        serving_submit(engine_of(srv), &sr, on_engine_output, srv, &r->stream, msg, sizeof msg);
    if (st != DS_OK) {
        r->stream = NULL;
        rpc_finish(r, status_from_ds(st), msg);
        return;
    }
    if (req->request_id[0] != '\0') {
        r->request_id = strdup(req->request_id);
    } else {
        char id[32];
        snprintf(id, sizeof id, "req-%lld", (long long)serving_stream_id(r->stream));
        r->request_id = strdup(id);
    }
    DS_ASSERT(r->request_id != NULL);
    list_push(&srv->streaming, r);
    r->state = RPC_STREAMING;
    stream_send(r);
}

/* The call's authorization metadata passes the API key check (security.h). */
static int rpc_authorized(const rpc *r) {
    const security *sec = r->srv->security;
    if (sec == NULL || !security_requires_key(sec)) return 1;
    for (size_t i = 0; i < r->request_md.count; i++) {
        const grpc_metadata *md = &r->request_md.metadata[i];
        if (grpc_slice_str_cmp(md->key, "authorization") == 0)
            return security_authorized(sec, (const char *)GRPC_SLICE_START_PTR(md->value),
                                       GRPC_SLICE_LENGTH(md->value));
    }
    return security_authorized(sec, NULL, 0);
}

static void rpc_on_request(rpc *r, int ok) {
    if (r->close_done) { /* cancelled before its message was handled */
        r->state = RPC_DONE;
        return;
    }
    if (!(r->method && r->method->open) && !rpc_authorized(r)) {
        rpc_finish(r, GRPC_STATUS_UNAUTHENTICATED,
                   "authorization: missing or not a valid API key (send 'authorization: Bearer "
                   "KEY')");
        return;
    }
    if (r->method == NULL) {
        char *path = grpc_slice_to_c_string(r->details.method);
        char details[DETAILS_MAX];
        snprintf(details, sizeof details, "method %s: not served here", path);
        gpr_free(path);
        rpc_finish(r, GRPC_STATUS_UNIMPLEMENTED, details);
        return;
    }
    const ProtobufCMessageDescriptor *type = r->method->request_type;
    ProtobufCMessage *req = ok ? pb_buffer_unpack(type, r->request) : NULL;
    char details[DETAILS_MAX] = "";
    if (req == NULL) {
        snprintf(details, sizeof details, "request: %s %s message",
                 ok && r->request ? "not a valid" : "no", type->name);
        rpc_finish(r, GRPC_STATUS_INVALID_ARGUMENT, details);
        return;
    }
    if (proto_map_check_request(req, details, sizeof details) != DS_OK) {
        rpc_finish(r, GRPC_STATUS_INVALID_ARGUMENT, details);
    } else if (r->method->stream != NULL) {
        r->method->stream(r, req);
    } else {
        grpc_status_code status = r->method->unary(r->srv, req, &r->reply, details, sizeof details);
        rpc_finish(r, status, details);
    }
    protobuf_c_message_free_unpacked(req, NULL);
}

/* A call arrived: watch for its end, then read its request. */
static void rpc_begin(rpc *r) {
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &r->cancelled;
    char msg[256];
    if (start_batch(r, &op, 1, &r->close_tag, msg, sizeof msg) != DS_OK) {
        DS_LOG_E("%s", msg);
        r->close_done = 1; /* no close will come: the rpc is freed after its last batch */
    }
    r->method = find_method(r->details.method);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &r->request;
    r->state = RPC_WAIT_REQUEST;
    rpc_start_ops(r, ops, 2);
}

static void rpc_on_op(cq_tag *tag, int ok) {
    rpc *r = CONTAINER_OF(tag, rpc, op_tag);
    ds_grpc_server *srv = r->srv;
    r->op_in_flight = 0;
    switch (r->state) {
    case RPC_WAIT_CALL:
        if (!ok) { /* the server is shutting down: no call came */
            rpc_free(r);
            return;
        }
        if (!srv->stopping) rpc_post_next(srv);
        rpc_begin(r);
        break;
    case RPC_WAIT_REQUEST: rpc_on_request(r, ok); break;
    case RPC_STREAMING:
        if (ok) stream_send(r); /* else the call broke; its close follows */
        break;
    case RPC_WATCHING:
        if (ok) watch_send(r);
        break;
    case RPC_WAIT_FINISH: r->state = RPC_DONE; break;
    case RPC_DONE: DS_ASSERT(!"batch completed on a finished call");
    }
    rpc_maybe_free(r);
}

static void rpc_on_close(cq_tag *tag, int ok) {
    (void)ok;
    rpc *r = CONTAINER_OF(tag, rpc, close_tag);
    r->close_done = 1;
    if (r->stream != NULL && r->cancelled) DS_LOG_D("%s: cancelled by the client", r->request_id);
    stream_end(r);
    if (r->state == RPC_WATCHING) {
        list_unlink(&r->srv->watchers, r);
        r->state = RPC_DONE;
    }
    rpc_maybe_free(r);
}

/* ---- methods ---- */

static grpc_status_code pack_reply(const ProtobufCMessage *msg, grpc_byte_buffer **reply,
                                   char *details, size_t details_len) {
    *reply = pb_buffer_pack(msg);
    if (*reply != NULL) return GRPC_STATUS_OK;
    snprintf(details, details_len, "server: cannot pack a %s", msg->descriptor->name);
    return GRPC_STATUS_INTERNAL;
}

/* A method that needs the engine, called while the model loads. */
static grpc_status_code not_loaded(ds_grpc_server *srv, char *details, size_t details_len) {
    snprintf(details, details_len, "%s", lifecycle_refusal(srv->life));
    return GRPC_STATUS_UNAVAILABLE;
}

static grpc_status_code tokenize(ds_grpc_server *srv, const ProtobufCMessage *request,
                                 grpc_byte_buffer **reply, char *details, size_t details_len) {
    const Decoserve__V1__TokenizeRequest *req = (const Decoserve__V1__TokenizeRequest *)request;
    serving *engine = engine_of(srv);
    if (engine == NULL) return not_loaded(srv, details, details_len);
    int32_t *ids = NULL;
    int n_ids = 0;
    ds_status st =
        serving_tokenize(engine, req->text, strlen(req->text), &ids, &n_ids, details, details_len);
    if (st != DS_OK) return status_from_ds(st);
    ProtobufCBinaryData *pieces = calloc((size_t)n_ids + 1, sizeof *pieces);
    DS_ASSERT(pieces != NULL);
    for (int i = 0; i < n_ids; i++)
        pieces[i].data = (uint8_t *)serving_token_bytes(engine, ids[i], &pieces[i].len);
    Decoserve__V1__TokenizeResponse pb = DECOSERVE__V1__TOKENIZE_RESPONSE__INIT;
    pb.token_ids = ids;
    pb.n_token_ids = (size_t)n_ids;
    pb.pieces = pieces;
    pb.n_pieces = (size_t)n_ids;
    grpc_status_code status = pack_reply(&pb.base, reply, details, details_len);
    free(pieces);
    free(ids);
    return status;
}

static grpc_status_code model_info(ds_grpc_server *srv, const ProtobufCMessage *request,
                                   grpc_byte_buffer **reply, char *details, size_t details_len) {
    (void)request;
    serving *engine = engine_of(srv);
    if (engine == NULL) return not_loaded(srv, details, details_len);
    serving_info info;
    serving_get_info(engine, &info);
    const char *slash = strrchr(info.model_path, '/');
    const char *model = slash && slash[1] ? slash + 1 : info.model_path;
    Decoserve__V1__ModelInfoResponse pb;
    proto_map_model_info(&info, model, &pb);
    return pack_reply(&pb.base, reply, details, details_len);
}

static grpc_status_code get_stats(ds_grpc_server *srv, const ProtobufCMessage *request,
                                  grpc_byte_buffer **reply, char *details, size_t details_len) {
    (void)request;
    serving *engine = engine_of(srv);
    if (engine == NULL) return not_loaded(srv, details, details_len);
    serving_stats stats;
    serving_get_stats(engine, &stats);
    Decoserve__V1__GetStatsResponse pb;
    proto_map_stats(&stats, &pb);
    return pack_reply(&pb.base, reply, details, details_len);
}

/* The whole server ("") or the decoserve service. */
static int known_service(const char *service) {
    return service[0] == '\0' || !strcmp(service, decoserve__v1__decoserve__descriptor.name);
}

/* SERVING while requests are admitted (not while loading, draining, or after a device failure). */
static Grpc__Health__V1__HealthCheckResponse__ServingStatus health_status(ds_grpc_server *srv) {
    return lifecycle_refusal(srv->life) == NULL && !srv->stopping
               ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
               : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
}

static grpc_status_code health_check(ds_grpc_server *srv, const ProtobufCMessage *request,
                                     grpc_byte_buffer **reply, char *details, size_t details_len) {
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    if (!known_service(req->service)) {
        snprintf(details, details_len, "service = '%s': unknown (serve '' or '%s')", req->service,
                 decoserve__v1__decoserve__descriptor.name);
        return GRPC_STATUS_NOT_FOUND;
    }
    Grpc__Health__V1__HealthCheckResponse pb = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    pb.status = health_status(srv);
    return pack_reply(&pb.base, reply, details, details_len);
}

/* Sends the health status if it changed since the last send (an unknown service is
 * SERVICE_UNKNOWN for good, as the health protocol says); once the server stops and NOT_SERVING
 * went out, ends the call with UNAVAILABLE. */
static void watch_send(rpc *r) {
    if (r->state != RPC_WATCHING || r->op_in_flight || r->close_done) return;
    ds_grpc_server *srv = r->srv;
    int status = r->watch_known
                     ? (int)health_status(srv)
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    if (r->reply) grpc_byte_buffer_destroy(r->reply); /* its batch has completed */
    r->reply = NULL;
    if (status == r->watch_sent) {
        if (srv->stopping) {
            list_unlink(&srv->watchers, r);
            rpc_finish(r, GRPC_STATUS_UNAVAILABLE, "the server has stopped");
        }
        return;
    }
    Grpc__Health__V1__HealthCheckResponse pb = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    pb.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    r->reply = pb_buffer_pack(&pb.base);
    if (r->reply == NULL) {
        list_unlink(&srv->watchers, r);
        rpc_finish(r, GRPC_STATUS_INTERNAL, "server: cannot pack a HealthCheckResponse");
        return;
    }
    r->watch_sent = status;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = r->reply;
    rpc_start_ops(r, &op, 1);
}

static void watch_begin(rpc *r, const ProtobufCMessage *request) {
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    r->watch_known = known_service(req->service);
    r->watch_sent = -1;
    list_push(&r->srv->watchers, r);
    r->state = RPC_WATCHING;
    watch_send(r);
}

static const rpc_method METHODS[] = {
    {"/decoserve.v1.Decoserve/Generate", &decoserve__v1__generate_request__descriptor, NULL,
     generate_begin, 0},
    {"/decoserve.v1.Decoserve/Tokenize", &decoserve__v1__tokenize_request__descriptor, tokenize,
     NULL, 0},
    {"/decoserve.v1.Decoserve/ModelInfo", &decoserve__v1__model_info_request__descriptor,
     model_info, NULL, 0},
    {"/decoserve.v1.Decoserve/GetStats", &decoserve__v1__get_stats_request__descriptor, get_stats,
     NULL, 0},
    {"/grpc.health.v1.Health/Check", &grpc__health__v1__health_check_request__descriptor,
     health_check, NULL, 1},
    {"/grpc.health.v1.Health/Watch", &grpc__health__v1__health_check_request__descriptor, NULL,
     watch_begin, 1},
};

static const rpc_method *find_method(grpc_slice path) {
    for (size_t i = 0; i < sizeof METHODS / sizeof METHODS[0]; i++)
        if (grpc_slice_str_cmp(path, METHODS[i].path) == 0) return &METHODS[i];
    return NULL;
}

/* ---- the server ---- */

void ds_grpc_server_options_default(ds_grpc_server_options *o) {
    *o = (ds_grpc_server_options){.host = "127.0.0.1",
                                  .port = 50051,
                                  .max_message_bytes = 4 << 20,
                                  .shutdown_timeout_s = 30.0,
                                  .shutdown_grace_s = 5.0,
                                  .max_streams_per_connection = 100,
                                  .idle_timeout_s = 300.0,
                                  .handshake_timeout_s = 10.0,
                                  .keepalive_s = 60.0,
                                  .keepalive_timeout_s = 20.0};
}

enum { CLIENT_PING_MIN_MS = 10000 };

static int ms_of(double s) { return s >= 2e6 ? 2000000000 : (int)(s * 1000.0 + 0.5); }

static grpc_arg int_arg(const char *key, int value) {
    return (grpc_arg){.type = GRPC_ARG_INTEGER, .key = (char *)key, .value.integer = value};
}

static ds_status check_options(const ds_grpc_server_options *o, char *msg, size_t msg_len) {
    if (o->port < 0 || o->port > 65535)
        return ds_fail(msg, msg_len, DS_EINVAL, "port = %d: expected 0 to 65535", o->port);
    if (o->max_message_bytes < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_message_bytes = %d: expected >= 1",
                       o->max_message_bytes);
    if (o->max_streams_per_connection < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_streams_per_connection = %d: expected >= 1",
                       o->max_streams_per_connection);
    const struct {
        const char *name;
        double value;
    } times[] = {{"idle_timeout_s", o->idle_timeout_s},
                 {"handshake_timeout_s", o->handshake_timeout_s},
                 {"keepalive_s", o->keepalive_s},
                 {"keepalive_timeout_s", o->keepalive_timeout_s}};
    for (size_t i = 0; i < sizeof times / sizeof times[0]; i++)
        if (!(times[i].value >= 0.001 && times[i].value <= 1e6))
            return ds_fail(msg, msg_len, DS_EINVAL, "%s = %.9g: expected 0.001 to 1e6 seconds",
                           times[i].name, times[i].value);
    return DS_OK;
}

static void on_shutdown_notified(cq_tag *tag, int ok) {
    (void)ok;
    CONTAINER_OF(tag, ds_grpc_server, shutdown_tag)->shutdown_notified = 1;
}

ds_status ds_grpc_server_create(lifecycle *life, const ds_grpc_server_options *options,
                                ds_grpc_server **out, char *msg, size_t msg_len) {
    *out = NULL;
    char addr[300];
    int bracket = strchr(options->host, ':') != NULL && options->host[0] != '[';
    snprintf(addr, sizeof addr, bracket ? "[%s]:%d" : "%s:%d", options->host, options->port);
    ds_status st = check_options(options, msg, msg_len);
    if (st != DS_OK) return st;

    grpc_init();
    ds_grpc_server *srv = calloc(1, sizeof *srv);
    DS_ASSERT(srv != NULL);
    srv->life = life;
    srv->security = options->security;
    srv->shutdown_timeout_s = options->shutdown_timeout_s;
    srv->shutdown_grace_s = options->shutdown_grace_s;
    srv->shutdown_tag.on_done = on_shutdown_notified;
    atomic_init(&srv->outputs_pending, 0);
    grpc_arg args[] = {
        int_arg(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, options->max_message_bytes),
        /* a second server on a busy port must fail, not share it */
        int_arg(GRPC_ARG_ALLOW_REUSEPORT, 0),
        int_arg(GRPC_ARG_MAX_CONCURRENT_STREAMS, options->max_streams_per_connection),
        int_arg(GRPC_ARG_MAX_CONNECTION_IDLE_MS, ms_of(options->idle_timeout_s)),
        int_arg(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, ms_of(options->handshake_timeout_s)),
        int_arg(GRPC_ARG_KEEPALIVE_TIME_MS, ms_of(options->keepalive_s)),
        int_arg(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms_of(options->keepalive_timeout_s)),
        int_arg(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, CLIENT_PING_MIN_MS),
        int_arg(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1),
    };
    grpc_channel_args channel_args = {.num_args = sizeof args / sizeof args[0], .args = args};
    srv->server = grpc_server_create(&channel_args, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    grpc_server_credentials *creds = options->security
                                         ? security_grpc_credentials(options->security)
                                         : grpc_insecure_server_credentials_create();
    srv->port = grpc_server_add_http2_port(srv->server, addr, creds);
    grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        grpc_completion_queue_destroy(srv->cq);
        free(srv);
        grpc_shutdown();
        return ds_fail(msg, msg_len, DS_EIO, "%s: cannot bind (address in use or not local?%s)",
                       addr,
                       options->security && security_tls(options->security)
                           ? " or the TLS certificate and key rejected: see the log above"
                           : "");
    }
    grpc_server_start(srv->server);
    rpc_post_next(srv);
    *out = srv;
    return DS_OK;
}

int ds_grpc_server_port(const ds_grpc_server *srv) { return srv->port; }

/* Waits for the next event (or a tick), runs its tag, then sends what the engine pushed. */
static void serve_once(ds_grpc_server *srv) {
    int tick_ms = srv->streaming ? TICK_STREAMING_MS : TICK_IDLE_MS;
    gpr_timespec deadline =
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(tick_ms, GPR_TIMESPAN));
    grpc_event ev = grpc_completion_queue_next(srv->cq, deadline, NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
        cq_tag *tag = ev.tag;
        tag->on_done(tag, ev.success);
    }
    rpc *next;
    if (atomic_exchange_explicit(&srv->outputs_pending, 0, memory_order_acq_rel)) {
        for (rpc *r = srv->streaming; r != NULL; r = next) {
            next = r->next; /* stream_send may unlink r */
            stream_send(r);
        }
    }
    for (rpc *r = srv->watchers; r != NULL; r = next) {
        next = r->next; /* watch_send may unlink r */
        watch_send(r);
    }
}

/* Stops accepting; with shutdown_engine, ends every request in the engine (each stream gets its
 * last output); serves until every call has ended, cutting the rest after the grace period;
 * then empties and closes the queue. */
static void server_stop(ds_grpc_server *srv, int shutdown_engine, double grace_s) {
    if (srv->stopped) return;
    srv->stopping = 1;
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    if (shutdown_engine) serving_shutdown(engine_of(srv), 0);
    double cut_at = ds_now_s() + grace_s;
    int cut = 0;
    while (!srv->shutdown_notified) {
        if (!cut && ds_now_s() >= cut_at) {
            if (srv->n_rpcs > 0) DS_LOG_W("shutdown: cutting %d calls still open", srv->n_rpcs);
            grpc_server_cancel_all_calls(srv->server);
            cut = 1;
        }
        serve_once(srv);
    }
    grpc_completion_queue_shutdown(srv->cq);
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type == GRPC_OP_COMPLETE) ((cq_tag *)ev.tag)->on_done(ev.tag, ev.success);
    }
    DS_ASSERT(srv->n_rpcs == 0);
    srv->stopped = 1;
}

static int count_streams(const ds_grpc_server *srv) {
    int n = 0;
    for (const rpc *r = srv->streaming; r != NULL; r = r->next)
        n++;
    return n;
}

/* Requests in flight on either front door: the engine's, and Generate calls still sending. */
static int in_flight(const ds_grpc_server *srv) {
    serving *engine = engine_of(srv);
    if (engine == NULL) return 0;
    serving_stats stats;
    serving_get_stats(engine, &stats);
    return stats.running + stats.waiting + count_streams(srv);
}

void ds_grpc_server_run(ds_grpc_server *srv, const volatile sig_atomic_t *stop) {
    while (!*stop && lifecycle_get_phase(srv->life) != LIFECYCLE_STOPPED)
        serve_once(srv);
    lifecycle_drain(srv->life);
    DS_LOG_I("draining: %d requests in flight, at most %g s", in_flight(srv),
             srv->shutdown_timeout_s);
    const double until = ds_now_s() + srv->shutdown_timeout_s;
    while (in_flight(srv) > 0 && ds_now_s() < until)
        serve_once(srv);
    DS_LOG_I("shutting down: cancelling %d open streams", count_streams(srv));
    server_stop(srv, engine_of(srv) != NULL, srv->shutdown_grace_s);
    lifecycle_stop(srv->life);
}

void ds_grpc_server_destroy(ds_grpc_server *srv) {
    if (srv == NULL) return;
    server_stop(srv, 0, 0.0);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    free(srv);
    grpc_shutdown();
}
