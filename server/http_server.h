/* server/http_server.h — the HTTP front door of a serving engine, on libmicrohttpd: the OpenAI
 * API (POST /v1/completions, POST /v1/chat/completions, GET /v1/models; server/openai_api.h maps
 * the JSON), GET /metrics in Prometheus' format (server/metrics.h), and the probes GET /health
 * (200 while the process runs) and GET /ready (200 while requests are admitted, 503 while the
 * model loads or the server drains: server/lifecycle.h), beside the gRPC port.
 *
 * Threads: libmicrohttpd's, one per connection; each submits to the engine and waits on its
 * stream (serving_stream_wait), so a slow client holds only its own thread. A client that
 * disconnects (seen within 100 ms while its request runs) has its request cancelled.
 *
 * Security (server/security.h, shared with the gRPC port): with TLS the port speaks HTTPS; with a
 * client CA a request whose connection has no client certificate that verifies against it is 403
 * (every path); with API keys a request without 'Authorization: Bearer KEY' for one of them is 401,
 * except GET /health, /ready and /metrics (probes and scrapers carry no key; vLLM leaves /metrics
 * open too).
 *
 * Statuses: 400 for a body that is not JSON or a field of the wrong type or value (the error's
 * param names OpenAI's field), 401 / 403 as above, 404 for an unknown path, 405 for a known path
 * with the wrong method, 413 for a body over max_body_bytes, 429 when the waiting queue is full,
 * 503 while the model loads or the server drains or shuts down, 500 for an engine failure. Every
 * error is an OpenAI error object. A streamed request that fails after its first chunk ends with
 * a `data: {"error": ...}` event before `data: [DONE]`. */
#ifndef DS_SERVER_HTTP_SERVER_H
#define DS_SERVER_HTTP_SERVER_H

#include <stddef.h>

#include "common/status.h"
#include "engine/serving.h"
#include "server/lifecycle.h"
#include "server/security.h"

typedef struct ds_http_server ds_http_server;

typedef struct ds_http_server_options {
    const char *host;          /* "127.0.0.1" (default); "0.0.0.0" or "::" for every interface */
    int port;                  /* 0: a free port, see ds_http_server_port */
    size_t max_body_bytes;     /* larger bodies answer 413 (default 4 MiB) */
    const char *chat_template; /* "chatml", "llama3", or NULL: recognised in the model's own */
    const security *security;  /* TLS and API keys (borrowed, outliving the server), or NULL */
} ds_http_server_options;

void ds_http_server_options_default(ds_http_server_options *o);

/* Binds host:port and serves on libmicrohttpd's threads until destroyed; the probes answer at
 * once, the rest 503 until the lifecycle has the engine. The lifecycle is borrowed and must
 * outlive the server. Errors name the address or the chat template. */
ds_status ds_http_server_create(lifecycle *life, const ds_http_server_options *options,
                                ds_http_server **out, char *msg, size_t msg_len);

int ds_http_server_port(const ds_http_server *server);

/* The loaded, started engine (the model's name and chat template are read here): call once,
 * before lifecycle_set_engine publishes it. */
void ds_http_server_attach(ds_http_server *server, serving *engine);

/* Lets answers in progress finish (at most 5 s: after the engine's shutdown every request has
 * its final output), stops listening, ends every connection and frees the server. NULL-safe. */
void ds_http_server_destroy(ds_http_server *server);

#endif
