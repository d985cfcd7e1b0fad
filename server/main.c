/* server/main.c — the `decoserve` binary: dispatches to its subcommands. */
#include <stdio.h>
#include <string.h>

#include "server/commands.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: decoserve <command> [options]\n"
            "commands:\n"
            "  generate       one completion on the CPU, streamed to stdout\n"
            "  bench-offline  offline throughput: N requests through the scheduler\n"
            "  serve          the gRPC server (decoserve.v1, grpc.health.v1)\n"
            "  client         calls a running server: generate, tokenize, info, stats, health\n"
            "Run `decoserve <command> --help` for its options.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "generate")) return cmd_generate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "bench-offline")) return cmd_bench_offline(argc - 2, argv + 2);
    if (!strcmp(argv[1], "serve")) return cmd_serve(argc - 2, argv + 2);
    if (!strcmp(argv[1], "client")) return cmd_client(argc - 2, argv + 2);
    fprintf(stderr, "decoserve: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
