/* server/grpc_server.h — the gRPC front door of a serving engine: decoserve.v1.Decoserve
 * (Generate, streamed; Tokenize; ModelInfo; GetStats) and grpc.health.v1.Health (Check, and Watch
 * streaming each change), on the gRPC C core. It listens before the model has loaded
 * (server/lifecycle.h): NOT_SERVING and UNAVAILABLE until the engine is there.
 *
 * One completion queue, driven by the thread that calls ds_grpc_server_run: it parses and checks
 * requests, submits them to the engine (whose own thread steps them) and streams each request's
 * outputs back as the engine pushes them, one message in flight per call, coalescing whatever
 * arrived meanwhile. A client that cancels, or whose deadline expires, has its request cancelled in
 * the engine, which frees its blocks within one step.
 *
 * Statuses: a malformed message or a bad field is INVALID_ARGUMENT with the engine's message naming
 * the field (strings that are not UTF-8 and a request_id over 256 bytes included); a call without
 * a configured API key (security.h) is UNAUTHENTICATED, Health/Check and Health/Watch excepted; a
 * full waiting queue or a message over max_message_bytes is RESOURCE_EXHAUSTED; a request while
 * loading or draining, or one that meets the shutdown, is UNAVAILABLE with why; an engine failure
 * mid-request is INTERNAL.
 *
 * (The prefix is ds_grpc_server_ because the gRPC library owns grpc_server_.) */
#ifndef DS_SERVER_GRPC_SERVER_H
#define DS_SERVER_GRPC_SERVER_H

#include <signal.h>
#include <stddef.h>

#include "common/status.h"
#include "engine/serving.h"
#include "server/lifecycle.h"
#include "server/security.h"

typedef struct ds_grpc_server ds_grpc_server;

typedef struct ds_grpc_server_options {
    const char *host;          /* "127.0.0.1" (default); "0.0.0.0" or "::" for every interface */
    int port;                  /* 0: a free port, see ds_grpc_server_port */
    int max_message_bytes;     /* larger requests answer RESOURCE_EXHAUSTED (default 4 MiB) */
    double shutdown_timeout_s; /* the drain: in-flight requests get this long (default 30) */
    double shutdown_grace_s;   /* calls still open this long after the drain are cut (default 5) */
    /* Per connection, through the C core's channel args (so a client cannot hold a connection,
     * or a connection's worth of calls, for free): */
    int max_streams_per_connection; /* calls open at once on one connection (default 100); the
                                       client queues the rest (HTTP/2 MAX_CONCURRENT_STREAMS) */
    double idle_timeout_s;          /* a connection with no call open this long is closed
                                       (GOAWAY; default 300) */
    double handshake_timeout_s;     /* a new connection must finish the TLS handshake and send
                                       its HTTP/2 preface and SETTINGS within this (default 10) */
    double keepalive_s;             /* the server pings each connection this often (default 60)
                                       and closes it when the ping is not answered within
                                       keepalive_timeout_s (default 20); a client may ping every
                                       10 s at most, else it gets GOAWAY (too_many_pings) */
    double keepalive_timeout_s;
    const security *security; /* borrowed, outlives the server; NULL: plaintext, no API key */
} ds_grpc_server_options;

void ds_grpc_server_options_default(ds_grpc_server_options *o);

/* Binds host:port and starts accepting calls (served once ds_grpc_server_run runs). The
 * lifecycle is borrowed and gives the engine once it is loaded and started; both must outlive the
 * server. Errors name the address ("127.0.0.1:50051: cannot bind (in use?)"). */
ds_status ds_grpc_server_create(lifecycle *life, const ds_grpc_server_options *options,
                                ds_grpc_server **out, char *msg, size_t msg_len);

/* The port bound (the one picked when options.port was 0). */
int ds_grpc_server_port(const ds_grpc_server *server);

/* Serves on the calling thread until *stop becomes nonzero (a signal handler may set it; it is
 * checked at least every 100 ms) or the lifecycle turns STOPPED (the model failed to load). Then
 * drains: the lifecycle turns DRAINING (health NOT_SERVING, new requests UNAVAILABLE, on HTTP too)
 * while the listener keeps answering, and the requests in flight run to their end for at most
 * shutdown_timeout_s; then the engine shuts down without draining (serving_shutdown), so that
 * every stream still open ends with its last message and UNAVAILABLE, Watch calls end, the calls
 * end (those still open after shutdown_grace_s are cut), the lifecycle turns STOPPED, and it
 * returns. */
void ds_grpc_server_run(ds_grpc_server *server, const volatile sig_atomic_t *stop);

/* Frees the server; call after ds_grpc_server_run returned, or instead of it. */
void ds_grpc_server_destroy(ds_grpc_server *server);

#endif
