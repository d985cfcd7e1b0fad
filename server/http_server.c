/* server/http_server.c — routing, request bodies, and the two ways a completion goes out: whole
 * (the handler waits on the stream, then answers with the status the finish calls for) or as
 * server-sent events (a content reader that waits on the stream and writes each output as one
 * `data:` event, then `data: [DONE]`). libmicrohttpd calls the handler once for the headers, once
 * per piece of body, and once more when the body is complete. */
#include "server/http_server.h"

#include <errno.h>
#include <netdb.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <gnutls/gnutls.h>
#include <microhttpd.h>

#include "common/clock.h"
#include "common/log.h"
#include "server/chat_template.h"
#include "server/metrics.h"
#include "server/openai_api.h"

enum { WAIT_SLICE_MS = 100, DESTROY_WAIT_S = 5 };

struct ds_http_server {
    lifecycle *life;          /* borrowed */
    const security *security; /* borrowed; NULL: plaintext, no API key */
    int client_ca;            /* mutual TLS: every request's connection must have a certificate */
    serving *engine;          /* set by ds_http_server_attach, before the lifecycle publishes it */
    struct MHD_Daemon *daemon;
    int port;
    size_t max_body_bytes;
    int template_named; /* --chat-template given: not recognised from the model */
    chat_template template;
    int32_t end_of_turn_id; /* the template's end-of-turn token, -1 if the vocabulary lacks it */
    char model[256];        /* the name /v1/models shows */
    long long created;      /* server start, Unix time */
    atomic_int completions; /* submitted and not yet answered in full */
};

/* One request: its body as it arrives. */
typedef struct http_call {
    char *body;
    size_t len, cap;
    int too_large;
    int counted; /* in srv->completions */
} http_call;

/* A streamed completion, owned by its libmicrohttpd response. */
typedef struct sse_stream {
    struct MHD_Connection *connection;
    serving_stream *stream;
    openai_request request;
    char id[48];
    openai_response_meta meta;
    serving_output output;
    int first, done;
    char *pending; /* the events not yet written */
    size_t pending_len, pending_off;
} sse_stream;

void ds_http_server_options_default(ds_http_server_options *o) {
    *o = (ds_http_server_options){.host = "127.0.0.1", .port = 8000, .max_body_bytes = 4 << 20};
}

/* ---- responses ---- */

static enum MHD_Result send_body(struct MHD_Connection *c, unsigned status, char *body,
                                 const char *content_type) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, char *json) {
    return send_body(c, status, json, "application/json");
}

static enum MHD_Result send_error(struct MHD_Connection *c, const openai_error *err) {
    return send_json(c, (unsigned)err->http_status, openai_error_json(err));
}

/* ---- the client ---- */

/* 1 once the client closed its end (it cannot read the answer any more). */
static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (info == NULL) return 1;
    char byte;
    ssize_t n = recv(info->connect_fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/* With a client CA, whether the connection's TLS client presented a certificate that verifies
 * against it. libmicrohttpd asks for one in the handshake but leaves the verdict to us. */
static int client_certified(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (info == NULL || info->tls_session == NULL) return 0;
    gnutls_session_t session = info->tls_session;
    unsigned n_certs = 0, status = 0;
    if (gnutls_certificate_type_get(session) != GNUTLS_CRT_X509 ||
        gnutls_certificate_get_peers(session, &n_certs) == NULL || n_certs == 0)
        return 0;
    return gnutls_certificate_verify_peers2(session, &status) == GNUTLS_E_SUCCESS && status == 0;
}

/* The API key check (security.h) on the request's Authorization header. */
static int authorized(const ds_http_server *srv, struct MHD_Connection *c) {
    if (srv->security == NULL) return 1;
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    return security_authorized(srv->security, h, h ? strlen(h) : 0);
}

/* ---- completions ---- */

static void make_meta(const ds_http_server *srv, const openai_request *q, serving_stream *stream,
                      char *id, size_t id_len, openai_response_meta *meta) {
    snprintf(id, id_len, "%s-%lld", q->endpoint == OPENAI_CHAT ? "chatcmpl" : "cmpl",
             (long long)serving_stream_id(stream));
    *meta = (openai_response_meta){.id = id, .model = srv->model, .created = (long long)time(NULL)};
}

/* Chat without max_tokens: whatever the context leaves after the prompt. */
static int fill_max_tokens(ds_http_server *srv, openai_request *q, openai_error *err) {
    if (q->endpoint != OPENAI_CHAT || q->max_tokens_given) return 0;
    serving_info info;
    serving_get_info(srv->engine, &info);
    int32_t *ids = NULL;
    int n_ids = 0;
    char msg[256];
    ds_status st = serving_tokenize(srv->engine, q->request.prompt, q->request.prompt_len, &ids,
                                    &n_ids, msg, sizeof msg);
    free(ids);
    if (st != DS_OK) {
        openai_error_from_engine(q->endpoint, st, msg, err);
        return -1;
    }
    q->request.max_tokens = info.context_length > n_ids ? info.context_length - n_ids : 1;
    return 0;
}

/* Waits for the request's end, gathering its text; then the response, or the error its finish
 * calls for. A client that goes away meanwhile cancels the request. */
static enum MHD_Result answer_whole(ds_http_server *srv, struct MHD_Connection *c,
                                    openai_request *q, serving_stream *stream) {
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    DS_ASSERT(f != NULL);
    serving_output out = {0};
    enum MHD_Result ret = MHD_YES;
    int gone = 0;
    while (out.finish == SERVING_RUNNING && !gone) {
        if (serving_stream_wait(stream, &out, WAIT_SLICE_MS / 1000.0))
            fwrite(out.text ? out.text : "", 1, out.text_len, f);
        /* Asked after every wait, not only after an idle one: a request whose tokens come
         * faster than the slice would otherwise never notice its client leaving. */
        gone = out.finish == SERVING_RUNNING && client_gone(c);
    }
    int closed = fclose(f);
    DS_ASSERT(closed == 0);
    if (gone) {
        DS_LOG_D("http: client went away; request cancelled");
        ret = MHD_NO;
    } else if (out.finish == SERVING_STOP || out.finish == SERVING_LENGTH) {
        char id[48];
        openai_response_meta meta;
        make_meta(srv, q, stream, id, sizeof id, &meta);
        ret = send_json(c, MHD_HTTP_OK, openai_response_json(q, &meta, text, text_len, &out));
    } else {
        openai_error err;
        openai_error_from_finish(&out, &err);
        ret = send_error(c, &err);
    }
    serving_stream_release(stream);
    serving_output_free(&out);
    free(text);
    return ret;
}

static void sse_append(FILE *f, char *json) {
    fprintf(f, "data: %s\n\n", json);
    free(json);
}

/* The events for the output just polled. */
static void sse_events(sse_stream *s) {
    size_t len = 0;
    FILE *f = open_memstream(&s->pending, &len);
    DS_ASSERT(f != NULL);
    serving_output *out = &s->output;
    int ended_well = out->finish == SERVING_STOP || out->finish == SERVING_LENGTH;
    if (out->finish == SERVING_RUNNING || ended_well) {
        sse_append(f, openai_chunk_json(&s->request, &s->meta, out, s->first));
        s->first = 0;
    } else {
        openai_error err;
        openai_error_from_finish(out, &err);
        sse_append(f, openai_error_json(&err));
    }
    if (ended_well && s->request.include_usage)
        sse_append(f, openai_usage_chunk_json(&s->request, &s->meta, out));
    if (out->finish != SERVING_RUNNING) {
        fputs("data: [DONE]\n\n", f);
        s->done = 1;
    }
    int closed = fclose(f);
    DS_ASSERT(closed == 0);
    s->pending_len = len, s->pending_off = 0;
}

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    sse_stream *s = cls;
    while (s->pending_off == s->pending_len) {
        free(s->pending);
        s->pending = NULL, s->pending_len = s->pending_off = 0;
        if (s->done) return MHD_CONTENT_READER_END_OF_STREAM;
        if (serving_stream_wait(s->stream, &s->output, WAIT_SLICE_MS / 1000.0))
            sse_events(s);
        else if (client_gone(s->connection))
            return MHD_CONTENT_READER_END_WITH_ERROR; /* the stream's release cancels it */
    }
    size_t n = s->pending_len - s->pending_off < max ? s->pending_len - s->pending_off : max;
    memcpy(buf, s->pending + s->pending_off, n);
    s->pending_off += n;
    return (ssize_t)n;
}

static void sse_free(void *cls) {
    sse_stream *s = cls;
    serving_stream_release(s->stream);
    serving_output_free(&s->output);
    openai_request_free(&s->request);
    free(s->pending);
    free(s);
}

static enum MHD_Result answer_streamed(ds_http_server *srv, struct MHD_Connection *c,
                                       openai_request *q, serving_stream *stream) {
    sse_stream *s = calloc(1, sizeof *s);
    DS_ASSERT(s != NULL);
    s->connection = c;
    s->stream = stream;
    s->request = *q; /* the stream owns the request from here */
    memset(q, 0, sizeof *q);
    s->first = 1;
    make_meta(srv, &s->request, stream, s->id, sizeof s->id, &s->meta);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024, sse_read, s, sse_free);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result completion(ds_http_server *srv, struct MHD_Connection *c,
                                  openai_endpoint endpoint, http_call *call) {
    openai_request q;
    openai_error err;
    if (lifecycle_get_phase(srv->life) != LIFECYCLE_SERVING) {
        openai_error_set(&err, 503, "", "%s", lifecycle_refusal(srv->life));
        return send_error(c, &err);
    }
    if (openai_request_parse(endpoint, call->body ? call->body : "", call->len, &srv->template,
                             srv->end_of_turn_id, &q, &err) < 0 ||
        fill_max_tokens(srv, &q, &err) < 0) {
        openai_request_free(&q);
        return send_error(c, &err);
    }
    serving_stream *stream = NULL;
    char msg[512];
    ds_status st = serving_submit(srv->engine, &q.request, NULL, NULL, &stream, msg, sizeof msg);
    enum MHD_Result ret;
    if (st != DS_OK) {
        openai_error_from_engine(endpoint, st, msg, &err);
        ret = send_error(c, &err);
    } else if (q.stream) {
        call->counted = 1;
        atomic_fetch_add(&srv->completions, 1);
        ret = answer_streamed(srv, c, &q, stream);
    } else {
        call->counted = 1;
        atomic_fetch_add(&srv->completions, 1);
        ret = answer_whole(srv, c, &q, stream);
    }
    openai_request_free(&q);
    return ret;
}

/* ---- routing ---- */

typedef enum route_id {
    ROUTE_COMPLETIONS,
    ROUTE_CHAT,
    ROUTE_MODELS,
    ROUTE_METRICS,
    ROUTE_HEALTH,
    ROUTE_READY,
} route_id;

typedef struct route {
    const char *path, *method;
    route_id id;
    int open; /* served without an API key: probes and scrapers carry none (as vLLM's /metrics) */
} route;

static const route ROUTES[] = {
    {"/v1/completions", MHD_HTTP_METHOD_POST, ROUTE_COMPLETIONS, 0},
    {"/v1/chat/completions", MHD_HTTP_METHOD_POST, ROUTE_CHAT, 0},
    {"/v1/models", MHD_HTTP_METHOD_GET, ROUTE_MODELS, 0},
    {"/metrics", MHD_HTTP_METHOD_GET, ROUTE_METRICS, 1},
    {"/health", MHD_HTTP_METHOD_GET, ROUTE_HEALTH, 1},
    {"/ready", MHD_HTTP_METHOD_GET, ROUTE_READY, 1},
};

/* The route for url, or NULL with err set (404, or 405 for the wrong method). */
static const route *find_route(const char *url, const char *method, openai_error *err) {
    for (size_t i = 0; i < sizeof ROUTES / sizeof ROUTES[0]; i++) {
        if (strcmp(url, ROUTES[i].path)) continue;
        if (!strcmp(method, ROUTES[i].method)) return &ROUTES[i];
        openai_error_set(err, 405, "", "%s %s: use %s", method, url, ROUTES[i].method);
        return NULL;
    }
    openai_error_set(err, 404, "", "%s %s: no such endpoint", method, url);
    return NULL;
}

static enum MHD_Result dispatch(ds_http_server *srv, struct MHD_Connection *c, const route *rt,
                                http_call *call) {
    openai_error err;
    const char *refusal = lifecycle_refusal(srv->life);
    if (rt->id == ROUTE_HEALTH) /* alive: the process answers */
        return send_json(c, MHD_HTTP_OK, strdup("{\"status\":\"ok\"}"));
    if (rt->id == ROUTE_READY && refusal == NULL)
        return send_json(c, MHD_HTTP_OK, strdup("{\"status\":\"ready\"}"));
    if (rt->id == ROUTE_READY || lifecycle_engine(srv->life) == NULL) {
        openai_error_set(&err, 503, "", "%s", refusal);
        return send_error(c, &err);
    }
    switch (rt->id) {
    case ROUTE_COMPLETIONS: return completion(srv, c, OPENAI_COMPLETIONS, call);
    case ROUTE_CHAT: return completion(srv, c, OPENAI_CHAT, call);
    case ROUTE_MODELS: {
        serving_info info;
        serving_get_info(srv->engine, &info);
        return send_json(c, MHD_HTTP_OK,
                         openai_models_json(srv->model, srv->created, info.context_length));
    }
    case ROUTE_METRICS: {
        serving_stats stats;
        serving_info info;
        serving_get_stats(srv->engine, &stats);
        serving_get_info(srv->engine, &info);
        return send_body(c, MHD_HTTP_OK, metrics_render(&stats, &info, srv->model, refusal == NULL),
                         "text/plain; version=0.0.4; charset=utf-8");
    }
    case ROUTE_HEALTH:
    case ROUTE_READY: break;
    }
    return MHD_NO;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls) {
    (void)version;
    ds_http_server *srv = cls;
    http_call *call = *con_cls;
    if (call == NULL) { /* the headers: check the route and the declared size first */
        call = calloc(1, sizeof *call);
        DS_ASSERT(call != NULL);
        *con_cls = call;
        const char *length =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > srv->max_body_bytes) call->too_large = 1;
        return MHD_YES;
    }
    if (*upload_data_size > 0) { /* a piece of the body */
        if (!call->too_large && call->len + *upload_data_size > srv->max_body_bytes)
            call->too_large = 1;
        if (!call->too_large) {
            if (call->len + *upload_data_size + 1 > call->cap) {
                call->cap = (call->len + *upload_data_size + 1) * 2;
                call->body = realloc(call->body, call->cap);
                DS_ASSERT(call->body != NULL);
            }
            memcpy(call->body + call->len, upload_data, *upload_data_size);
            call->len += *upload_data_size;
            call->body[call->len] = '\0';
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    openai_error err;
    if (srv->client_ca && !client_certified(c)) {
        openai_error_set(&err, 403, "",
                         "TLS client certificate: none, or not signed by the client CA");
        return send_error(c, &err);
    }
    const route *rt = find_route(url, method, &err);
    if (!(rt && rt->open) && !authorized(srv, c)) { /* an unknown path learns nothing either */
        openai_error_set(&err, 401, "",
                         "authorization: missing or not a valid API key (send 'Authorization: "
                         "Bearer KEY')");
        return send_error(c, &err);
    }
    if (call->too_large) {
        openai_error_set(&err, 413, "",
                         "request body: over the limit of %zu bytes (max_body_bytes)",
                         srv->max_body_bytes);
        return send_error(c, &err);
    }
    if (rt == NULL) return send_error(c, &err);
    return dispatch(srv, c, rt, call);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
    (void)c, (void)why;
    ds_http_server *srv = cls;
    http_call *call = *con_cls;
    if (call == NULL) return;
    if (call->counted) atomic_fetch_sub(&srv->completions, 1);
    free(call->body);
    free(call);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    line[strcspn(line, "\n")] = '\0';
    DS_LOG_D("libmicrohttpd: %s", line);
}

/* ---- the server ---- */

/* Without a named template, the model's own if it is a family we know. */
static void recognise_template(ds_http_server *srv, const serving_info *info) {
    if (srv->template_named) return;
    chat_template_detect(info->chat_template, &srv->template);
    if (srv->template.kind == CHAT_TEMPLATE_NONE)
        DS_LOG_W("the model's chat template is %s: /v1/chat/completions answers 400 (pass "
                 "--chat-template chatml or llama3)",
                 info->chat_template ? "neither ChatML nor Llama-3" : "missing");
}

/* The end-of-turn marker's token id, if the vocabulary has it as one token. */
static void find_end_of_turn(ds_http_server *srv) {
    srv->end_of_turn_id = -1;
    if (srv->template.kind == CHAT_TEMPLATE_NONE) return;
    const char *marker = chat_template_end_of_turn(&srv->template);
    int32_t *ids = NULL;
    int n = 0;
    if (serving_tokenize(srv->engine, marker, strlen(marker), &ids, &n, NULL, 0) == DS_OK) {
        size_t len;
        const char *bytes = n > 0 ? serving_token_bytes(srv->engine, ids[n - 1], &len) : NULL;
        if (bytes && len == strlen(marker) && !memcmp(bytes, marker, len))
            srv->end_of_turn_id = ids[n - 1];
    }
    free(ids);
}

static ds_status resolve_address(const char *host, int port, struct sockaddr_storage *addr,
                                 char *msg, size_t msg_len) {
    struct addrinfo hints = {.ai_flags = AI_NUMERICHOST | AI_PASSIVE, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char port_str[16];
    snprintf(port_str, sizeof port_str, "%d", port);
    int rc = getaddrinfo(host, port_str, &hints, &res);
    if (rc != 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "host = '%s': not a numeric address (%s)", host,
                       gai_strerror(rc));
    memset(addr, 0, sizeof *addr);
    memcpy(addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return DS_OK;
}

ds_status ds_http_server_create(lifecycle *life, const ds_http_server_options *options,
                                ds_http_server **out, char *msg, size_t msg_len) {
    *out = NULL;
    if (options->port < 0 || options->port > 65535)
        return ds_fail(msg, msg_len, DS_EINVAL, "http_port = %d: expected 0 to 65535",
                       options->port);
    struct sockaddr_storage addr;
    ds_status st = resolve_address(options->host, options->port, &addr, msg, msg_len);
    if (st != DS_OK) return st;
    ds_http_server *srv = calloc(1, sizeof *srv);
    DS_ASSERT(srv != NULL);
    srv->life = life;
    srv->max_body_bytes = options->max_body_bytes;
    srv->created = (long long)time(NULL);
    srv->end_of_turn_id = -1;
    atomic_init(&srv->completions, 0);
    if (options->chat_template) {
        srv->template_named = 1;
        st = chat_template_by_name(options->chat_template, &srv->template, msg, msg_len);
        if (st != DS_OK) {
            free(srv);
            return st;
        }
    }
    srv->security = options->security;
    const char *cert = NULL, *key = NULL, *client_ca = NULL;
    if (srv->security) security_tls_pem(srv->security, &cert, &key, &client_ca);
    srv->client_ca = client_ca != NULL;
    /* TLS (GnuTLS, which Debian's libmicrohttpd is built with) from the PEM texts; a client CA
     * makes the handshake ask for a client certificate, which client_certified checks. */
    struct MHD_OptionItem tls[4];
    int n_tls = 0;
    if (cert) {
        tls[n_tls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, (void *)cert};
        tls[n_tls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, (void *)key};
    }
    if (client_ca)
        tls[n_tls++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_TRUST, 0, (void *)client_ca};
    tls[n_tls] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    if (cert && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
        free(srv);
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "HTTP port: this libmicrohttpd was built without TLS");
    }
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_ERROR_LOG | (addr.ss_family == AF_INET6 ? MHD_USE_IPv6 : 0) |
                     (cert ? MHD_USE_TLS : 0);
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)options->port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        free(srv);
        return ds_fail(msg, msg_len, DS_EIO,
                       "%s port %d: cannot listen for HTTP (address in use or not local?%s)",
                       options->host, options->port,
                       cert ? " or the TLS certificate and key rejected" : "");
    }
    const union MHD_DaemonInfo *bound = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = bound ? bound->port : options->port;
    *out = srv;
    return DS_OK;
}

int ds_http_server_port(const ds_http_server *srv) { return srv->port; }

void ds_http_server_attach(ds_http_server *srv, serving *engine) {
    srv->engine = engine;
    serving_info info;
    serving_get_info(engine, &info);
    const char *slash = strrchr(info.model_path, '/');
    snprintf(srv->model, sizeof srv->model, "%s", slash && slash[1] ? slash + 1 : info.model_path);
    recognise_template(srv, &info);
    find_end_of_turn(srv);
}

void ds_http_server_destroy(ds_http_server *srv) {
    if (srv == NULL) return;
    /* Answers whose request has ended are still being written: let them finish. */
    const double until = ds_now_s() + DESTROY_WAIT_S;
    while (atomic_load(&srv->completions) > 0 && ds_now_s() < until) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
