/* server/serve.c — `decoserve serve`: loads the model, starts the engine thread and serves the
 * gRPC API (and, with --http-port, the OpenAI HTTP API) until SIGTERM or SIGINT; then stops
 * accepting, ends every open stream with a status and exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "engine/serving.h"
#include "server/commands.h"
#include "server/engine_flags.h"
#include "server/grpc_server.h"
#include "server/http_server.h"

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
                 "  --shutdown-grace S       on SIGTERM, seconds before calls still open are cut "
                 "(default 5)\n");
    engine_flags_usage(out);
    fprintf(out, "Prints \"listening on HOST:PORT\" on stderr once it serves (and \"OpenAI API on "
                 "http://HOST:PORT\"); SIGTERM or SIGINT stop it (exit 0).\n");
}

static int parse(int argc, char **argv, serving_options *engine, ds_grpc_server_options *server,
                 ds_http_server_options *http, int *http_on) {
    if (engine_flags_defaults(PROG, engine) < 0) return -1;
    ds_grpc_server_options_default(server);
    ds_http_server_options_default(http);
    *http_on = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        int e = engine_flags_next(PROG, argc, argv, &i, engine, usage, &v);
        if (e < 0) return -1;
        if (e == 0) continue;
        int r = 0;
        if (!strcmp(a, "--host")) {
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
        } else if (!strcmp(a, "--shutdown-grace")) {
            float s;
            r = cli_float(PROG, a, v, 0.0, 3600.0, &s);
            server->shutdown_grace_s = s;
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    http->host = server->host;
    http->max_body_bytes = (size_t)server->max_message_bytes;
    return engine_flags_check(PROG, engine);
}

int cmd_serve(int argc, char **argv) {
    serving_options engine_options;
    ds_grpc_server_options server_options;
    ds_http_server_options http_options;
    int http_on;
    if (parse(argc, argv, &engine_options, &server_options, &http_options, &http_on) < 0) return 2;

    /* Installed before the model loads, so a stop during loading still exits cleanly. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char msg[512];
    serving *engine = engine_flags_open(PROG, &engine_options);
    if (!engine) return 1;
    ds_grpc_server *server = NULL;
    ds_http_server *http = NULL;
    ds_status st = serving_start(engine, msg, sizeof msg);
    if (st == DS_OK) st = ds_grpc_server_create(engine, &server_options, &server, msg, sizeof msg);
    if (st == DS_OK && http_on)
        st = ds_http_server_create(engine, &http_options, &http, msg, sizeof msg);
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        ds_grpc_server_destroy(server);
        serving_destroy(engine);
        return 1;
    }
    const char *host = server_options.host;
    int bracket = strchr(host, ':') != NULL && host[0] != '[';
    fprintf(stderr, bracket ? "%s: listening on [%s]:%d\n" : "%s: listening on %s:%d\n", PROG, host,
            ds_grpc_server_port(server));
    if (http)
        fprintf(stderr,
                bracket ? "%s: OpenAI API on http://[%s]:%d\n" : "%s: OpenAI API on http://%s:%d\n",
                PROG, host, ds_http_server_port(http));
    ds_grpc_server_run(server, &g_stop);
    ds_http_server_destroy(http);
    ds_grpc_server_destroy(server);
    serving_destroy(engine);
    fprintf(stderr, "%s: stopped\n", PROG);
    return 0;
}
