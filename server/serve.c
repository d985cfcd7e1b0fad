/* server/serve.c — `decoserve serve`: listens on the gRPC port (and, with --http-port, the OpenAI
 * HTTP API) at once, answering NOT_SERVING / 503 while a loader thread loads the model and starts
 * the engine; serves until SIGTERM or SIGINT; then drains (no new requests, in-flight ones get
 * --shutdown-timeout), ends every open stream with a status and exits 0. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/log.h"
#include "engine/serving.h"
#include "server/commands.h"
#include "server/engine_flags.h"
#include "server/grpc_server.h"
#include "server/http_server.h"
#include "server/lifecycle.h"
#include "server/security.h"

static const char *PROG = "decoserve serve";

static volatile sig_atomic_t g_stop;

static void on_stop_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

static void usage(FILE *out) {
    fprintf(out, "usage: decoserve serve --model PATH [--host H] [--port N] [options]\n"
                 "  --host H                 address to listen on (default 127.0.0.1; 0.0.0.0 "
                 "for all)\n"
                 "  --port N                 TCP port (default 50051; 0 picks a free one)\n"
                 "  --http-port N            also serve the OpenAI API over HTTP on port N (0 "
                 "picks a free one)\n"
                 "  --chat-template NAME     chatml or llama3 for /v1/chat/completions (default: "
                 "the model's own)\n"
                 "  --max-message-bytes N    larger requests answer RESOURCE_EXHAUSTED / 413 "
                 "(default 4194304)\n"
                 "  --shutdown-timeout S     on SIGTERM, seconds in-flight requests get to finish "
                 "(default 30)\n"
                 "  --shutdown-grace S       then, seconds before calls still open are cut "
                 "(default 5)\n"
                 "Per connection:\n"
                 "  --max-streams-per-connection N  calls open at once (default 100)\n"
                 "  --idle-timeout S         close a connection with no call for S seconds "
                 "(default 300)\n"
                 "  --handshake-timeout S    a new connection must finish TLS and the HTTP/2 "
                 "preface in S (default 10)\n"
                 "  --keepalive S            ping every S seconds (default 60); no answer within\n"
                 "  --keepalive-timeout S    S seconds (default 20) closes the connection\n"
                 "TLS and API keys:\n");
    security_usage(out);
    engine_flags_usage(out);
    fprintf(out, "Prints \"loading the model; gRPC on HOST:PORT\" (\", HTTP on http://HOST:PORT\") "
                 "on stderr once it listens, \"listening on HOST:PORT\" (and \"OpenAI API on "
                 "http://HOST:PORT\") once it serves, https:// with TLS; SIGTERM or SIGINT stop "
                 "it (exit 0).\n");
}

/* A duration flag, lo to hi seconds. */
static int seconds(const char *flag, const char *v, double lo, double hi, double *out) {
    float s;
    int r = cli_float(PROG, flag, v, lo, hi, &s);
    *out = s;
    return r;
}

static int parse(int argc, char **argv, serving_options *engine, ds_grpc_server_options *server,
                 ds_http_server_options *http, int *http_on, security_options *sec) {
    if (engine_flags_defaults(PROG, engine) < 0) return -1;
    ds_grpc_server_options_default(server);
    ds_http_server_options_default(http);
    *http_on = 0;
    memset(sec, 0, sizeof *sec);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        int e = engine_flags_next(PROG, argc, argv, &i, engine, usage, &v);
        if (e < 0) return -1;
        if (e == 0) continue;
        int r = 0;
        if (security_flag(a, v, sec)) {
            continue;
        } else if (!strcmp(a, "--host")) {
            server->host = v;
        } else if (!strcmp(a, "--port")) {
            r = cli_int(PROG, a, v, 0, 65535, &server->port);
        } else if (!strcmp(a, "--http-port")) {
            r = cli_int(PROG, a, v, 0, 65535, &http->port);
            *http_on = 1;
        } else if (!strcmp(a, "--chat-template")) {
            http->chat_template = v;
        } else if (!strcmp(a, "--max-message-bytes")) {
            r = cli_int(PROG, a, v, 1024, 1 << 30, &server->max_message_bytes);
        } else if (!strcmp(a, "--shutdown-timeout")) {
            r = seconds(a, v, 0.0, 86400.0, &server->shutdown_timeout_s);
        } else if (!strcmp(a, "--shutdown-grace")) {
            r = seconds(a, v, 0.0, 3600.0, &server->shutdown_grace_s);
        } else if (!strcmp(a, "--max-streams-per-connection")) {
            r = cli_int(PROG, a, v, 1, 1 << 20, &server->max_streams_per_connection);
        } else if (!strcmp(a, "--idle-timeout")) {
            r = seconds(a, v, 0.001, 3600.0, &server->idle_timeout_s);
        } else if (!strcmp(a, "--handshake-timeout")) {
            r = seconds(a, v, 0.001, 3600.0, &server->handshake_timeout_s);
        } else if (!strcmp(a, "--keepalive")) {
            r = seconds(a, v, 0.001, 3600.0, &server->keepalive_s);
        } else if (!strcmp(a, "--keepalive-timeout")) {
            r = seconds(a, v, 0.001, 3600.0, &server->keepalive_timeout_s);
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    http->host = server->host;
    http->max_body_bytes = (size_t)server->max_message_bytes;
    char msg[256];
    if (security_options_check(sec, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return -1;
    }
    return engine_flags_check(PROG, engine);
}

/* What the loader thread needs and leaves behind. */
typedef struct loader {
    const serving_options *options;
    lifecycle *life;
    ds_http_server *http;           /* or NULL */
    const char *host, *http_scheme; /* "http://" or, with TLS, "https://" */
    int bracket, grpc_port;
    serving *engine; /* once loaded and started */
} loader;

static void print_address(const char *what, const char *scheme, const loader *l, int port) {
    fprintf(stderr, l->bracket ? "%s: %s %s[%s]:%d\n" : "%s: %s %s%s:%d\n", PROG, what, scheme,
            l->host, port);
}

/* Loads the model and starts the engine, then publishes it (the servers start admitting). A
 * failure stops the lifecycle, which ends the serve loop. */
static void *load_main(void *arg) {
    loader *l = arg;
    char msg[512];
    serving *engine = engine_flags_open(PROG, l->options);
    if (engine && serving_start(engine, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        serving_destroy(engine);
        engine = NULL;
    }
    if (engine == NULL) {
        lifecycle_stop(l->life);
        return NULL;
    }
    l->engine = engine;
    if (l->http) ds_http_server_attach(l->http, engine);
    lifecycle_set_engine(l->life, engine);
    print_address("listening on", "", l, l->grpc_port);
    if (l->http) print_address("OpenAI API on", l->http_scheme, l, ds_http_server_port(l->http));
    return NULL;
}

int cmd_serve(int argc, char **argv) {
    serving_options engine_options;
    ds_grpc_server_options server_options;
    ds_http_server_options http_options;
    int http_on;
    security_options security_options;
    if (parse(argc, argv, &engine_options, &server_options, &http_options, &http_on,
              &security_options) < 0)
        return 2;
    char msg[512];
    security *sec = NULL;
    ds_status st = security_create(&security_options, &sec, msg, sizeof msg);
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    server_options.security = sec;
    http_options.security = sec;

    /* Installed before the model loads, so a stop during loading still exits cleanly. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (engine_options.node_rank > 0) { /* a follower serves nothing: it exits in here */
        security_destroy(sec);
        serving_destroy(engine_flags_open(PROG, &engine_options));
        return 1;
    }
    lifecycle *life = lifecycle_create();
    ds_grpc_server *server = NULL;
    ds_http_server *http = NULL;
    st = ds_grpc_server_create(life, &server_options, &server, msg, sizeof msg);
    if (st == DS_OK && http_on)
        st = ds_http_server_create(life, &http_options, &http, msg, sizeof msg);
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        ds_grpc_server_destroy(server);
        lifecycle_destroy(life);
        security_destroy(sec);
        return 1;
    }
    const char *host = server_options.host;
    loader l = {.options = &engine_options,
                .life = life,
                .http = http,
                .host = host,
                .http_scheme = security_tls(sec) ? "https://" : "http://",
                .bracket = strchr(host, ':') != NULL && host[0] != '[',
                .grpc_port = ds_grpc_server_port(server)};
    if (http)
        fprintf(stderr,
                l.bracket ? "%s: loading the model; gRPC on [%s]:%d, HTTP on %s[%s]:%d\n"
                          : "%s: loading the model; gRPC on %s:%d, HTTP on %s%s:%d\n",
                PROG, host, l.grpc_port, l.http_scheme, host, ds_http_server_port(http));
    else
        fprintf(stderr,
                l.bracket ? "%s: loading the model; gRPC on [%s]:%d\n"
                          : "%s: loading the model; gRPC on %s:%d\n",
                PROG, host, l.grpc_port);
    pthread_t loader_thread;
    int rc = pthread_create(&loader_thread, NULL, load_main, &l);
    DS_ASSERT(rc == 0);
    ds_grpc_server_run(server, &g_stop);
    pthread_join(loader_thread, NULL); /* a stop while loading waits for the load to end */
    ds_http_server_destroy(http);
    ds_grpc_server_destroy(server);
    lifecycle_destroy(life);
    security_destroy(sec);
    if (l.engine == NULL) return 1;
    serving_destroy(l.engine);
    fprintf(stderr, "%s: stopped\n", PROG);
    return 0;
}
