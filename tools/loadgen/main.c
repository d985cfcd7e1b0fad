/* tools/loadgen/main.c — decoserve-loadgen: streams a seeded load of Generate calls at a running
 * `decoserve serve` and reports throughput, latency percentiles and the server's KV cache
 * (load.h, report.h), or sweeps a server flag such as kv-bits across fresh servers (sweep.h).
 * This file only parses the command line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "tools/loadgen/load.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/sweep.h"

static const char *PROG = "decoserve-loadgen";

enum { MAX_LIST = 64 };

typedef struct options {
    lg_load_options load;
    int concurrencies[MAX_LIST];
    int n_concurrencies;
    const char *json;
    /* --sweep */
    char *sweep; /* FLAG=V1,V2,... as given */
    char *values[MAX_LIST];
    int n_values;
    const char *decoserve, *model, *server_cmd, *out_dir;
    float server_timeout_s;
    char **server_args; /* after "--", up to the end of argv */
    int n_server_args;
} options;

static void usage(FILE *out) {
    fprintf(out,
            "usage: decoserve-loadgen --target HOST:PORT [load options] [--json FILE]\n"
            "       decoserve-loadgen --sweep FLAG=V1,V2,... (--decoserve PATH --model PATH |\n"
            "                         --server-cmd CMD) [--out-dir DIR] [load options] [--json "
            "FILE]\n"
            "                         [-- SERVER FLAGS...]\n"
            "load options:\n"
            "  --concurrency N        closed loop: N calls in flight (default 8); with --sweep a\n"
            "                         list, e.g. 1,4,16,64\n"
            "  --rate R               Poisson arrivals at R requests/s (seeded); with "
            "--concurrency,\n"
            "                         at most N in flight (default: no limit)\n"
            "  --num-requests N       requests (default 64)\n"
            "  --input-len N          prompt tokens (default 256)\n"
            "  --output-len N         max_tokens per request (default 64)\n"
            "  --range-ratio F        lengths uniform in [len*(1-F), len*(1+F)] (default 0)\n"
            "  --prompt-file PATH     prompts are slices of this text, tokenized by the server\n"
            "                         (default: random token ids, EOS ignored)\n"
            "  --ignore-eos           --prompt-file prompts: generate past EOS too\n"
            "  --cancel-fraction F    cancel this share of the streams, each after a random "
            "number\n"
            "                         of tokens in [0, max_tokens) (default 0)\n"
            "  --seed N               prompts, lengths, arrivals, cancel points (default 0)\n"
            "  --drain-timeout S      seconds to wait for the KV pools to be whole again after "
            "the\n"
            "                         load (default 30)\n"
            "  --json FILE            the report as JSON (with --sweep: an array of the points)\n"
            "sweep (one fresh server per value and concurrency, started with --FLAG VALUE --port "
            "0):\n"
            "  --sweep FLAG=V1,...    e.g. kv-bits=16,8,4,2\n"
            "  --decoserve PATH       the decoserve binary, run as `PATH serve --model MODEL`\n"
            "  --model PATH           the model it serves\n"
            "  --server-cmd CMD       or a shell command that starts a server printing "
            "\"listening on\n"
            "                         HOST:PORT\" on stderr (the sweep's flags are appended)\n"
            "  --out-dir DIR          CSV, plots, per-point JSON and server logs (default\n"
            "                         loadgen-sweep)\n"
            "  --server-timeout S     seconds to wait for a server to listen (default 300)\n"
            "  -- FLAGS...            passed to every server, e.g. -- --kv-memory 300M\n"
            "Exit: 0 if every request succeeded or was cancelled by the load generator and the "
            "KV\npools were whole again afterwards; 1 otherwise or on a runtime error; 2 "
            "usage.\n");
}

/* "a,b,c" split in place into list (at most MAX_LIST); -1 after printing the error. */
static int split_list(const char *flag, char *v, char **list, int *n) {
    *n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*n == MAX_LIST) {
            fprintf(stderr, "%s: %s: at most %d values\n", PROG, flag, MAX_LIST);
            return -1;
        }
        list[(*n)++] = tok;
    }
    if (*n == 0) {
        fprintf(stderr, "%s: %s: expected one or more comma-separated values\n", PROG, flag);
        return -1;
    }
    return 0;
}

static int parse(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    lg_workload_options *w = &o->load.workload;
    w->num_requests = 64, w->input_len = 256, w->output_len = 64;
    o->load.drain_timeout_s = 30;
    o->load.progress = 1;
    o->out_dir = "loadgen-sweep";
    o->server_timeout_s = 300;
    int concurrency_given = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--")) {
            o->server_args = argv + i + 1;
            o->n_server_args = argc - i - 1;
            break;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->load.ignore_eos = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s: missing value or unknown flag (see --help)\n", PROG, a);
            return -1;
        }
        char *v = argv[++i];
        int r = 0;
        float f;
        if (!strcmp(a, "--target")) {
            o->load.target = v;
        } else if (!strcmp(a, "--concurrency")) {
            char *items[MAX_LIST];
            concurrency_given = 1;
            r = split_list(a, v, items, &o->n_concurrencies);
            for (int k = 0; r == 0 && k < o->n_concurrencies; k++)
                r = cli_int(PROG, a, items[k], 1, 1 << 20, &o->concurrencies[k]);
        } else if (!strcmp(a, "--rate")) {
            r = cli_float(PROG, a, v, 1e-6, 1e9, &f);
            w->rate = f;
        } else if (!strcmp(a, "--num-requests")) {
            r = cli_int(PROG, a, v, 1, 1 << 24, &w->num_requests);
        } else if (!strcmp(a, "--input-len")) {
            r = cli_int(PROG, a, v, 1, 1 << 20, &w->input_len);
        } else if (!strcmp(a, "--output-len")) {
            r = cli_int(PROG, a, v, 1, 1 << 20, &w->output_len);
        } else if (!strcmp(a, "--range-ratio")) {
            r = cli_float(PROG, a, v, 0.0, 0.99, &f);
            w->range_ratio = f;
        } else if (!strcmp(a, "--prompt-file")) {
            o->load.prompt_file = v;
        } else if (!strcmp(a, "--cancel-fraction")) {
            r = cli_float(PROG, a, v, 0.0, 1.0, &f);
            w->cancel_fraction = f;
        } else if (!strcmp(a, "--seed")) {
            long long seed;
            r = cli_i64(PROG, a, v, 0, 1ll << 62, &seed);
            w->seed = (uint64_t)seed;
        } else if (!strcmp(a, "--drain-timeout")) {
            r = cli_float(PROG, a, v, 0.0, 86400.0, &f);
            o->load.drain_timeout_s = f;
        } else if (!strcmp(a, "--json")) {
            o->json = v;
        } else if (!strcmp(a, "--sweep")) {
            o->sweep = v;
        } else if (!strcmp(a, "--decoserve")) {
            o->decoserve = v;
        } else if (!strcmp(a, "--model")) {
            o->model = v;
        } else if (!strcmp(a, "--server-cmd")) {
            o->server_cmd = v;
        } else if (!strcmp(a, "--out-dir")) {
            o->out_dir = v;
        } else if (!strcmp(a, "--server-timeout")) {
            r = cli_float(PROG, a, v, 1.0, 86400.0, &o->server_timeout_s);
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    if (!concurrency_given) {
        o->n_concurrencies = 1;
        o->concurrencies[0] = w->rate > 0 ? 0 : 8; /* --rate alone: no limit */
    }
    o->load.concurrency = o->concurrencies[0];
    if (!o->sweep) {
        if (!o->load.target) {
            fprintf(stderr, "%s: --target HOST:PORT is required (or --sweep)\n", PROG);
            return -1;
        }
        if (o->n_concurrencies > 1) {
            fprintf(stderr, "%s: --concurrency: a list needs --sweep\n", PROG);
            return -1;
        }
        if (o->decoserve || o->model || o->server_cmd || o->n_server_args) {
            fprintf(stderr, "%s: --decoserve, --model, --server-cmd and -- need --sweep\n", PROG);
            return -1;
        }
        return 0;
    }
    if (o->load.target) {
        fprintf(stderr, "%s: --target: the sweep starts its own servers\n", PROG);
        return -1;
    }
    char *eq = strchr(o->sweep, '=');
    if (!eq || eq == o->sweep || eq[1] == '\0') {
        fprintf(stderr, "%s: --sweep = '%s': expected FLAG=V1,V2,... such as kv-bits=16,8,4,2\n",
                PROG, o->sweep);
        return -1;
    }
    *eq = '\0';
    if (split_list("--sweep", eq + 1, o->values, &o->n_values) < 0) return -1;
    int own = o->decoserve && o->model && !o->server_cmd;
    int cmd = o->server_cmd && !o->decoserve && !o->model;
    if (!own && !cmd) {
        fprintf(stderr, "%s: --sweep needs --decoserve PATH with --model PATH, or --server-cmd\n",
                PROG);
        return -1;
    }
    if (o->concurrencies[0] == 0) {
        fprintf(stderr,
                "%s: --sweep needs --concurrency (with --rate it caps the calls in "
                "flight)\n",
                PROG);
        return -1;
    }
    return 0;
}

/* The server command of the sweep, before the flags it appends (NULL-terminated, malloc'ed). */
static char **server_argv(const options *o) {
    char **argv = calloc((size_t)o->n_server_args + 6, sizeof *argv);
    if (!argv) return NULL;
    int n = 0;
    if (o->server_cmd) {
        /* sh -c 'CMD "$@"' sh ARGS...: the appended flags reach CMD as its arguments. */
        static char sh[] = "sh", dash_c[] = "-c";
        size_t len = strlen(o->server_cmd) + 8;
        char *script = malloc(len);
        if (!script) {
            free(argv);
            return NULL;
        }
        snprintf(script, len, "%s \"$@\"", o->server_cmd);
        argv[n++] = sh;
        argv[n++] = dash_c;
        argv[n++] = script;
        argv[n++] = sh;
    } else {
        static char serve[] = "serve", model_flag[] = "--model";
        argv[n++] = (char *)o->decoserve;
        argv[n++] = serve;
        argv[n++] = model_flag;
        argv[n++] = (char *)o->model;
    }
    for (int k = 0; k < o->n_server_args; k++)
        argv[n++] = o->server_args[k];
    return argv;
}

static int run_once(const options *o) {
    lg_run run;
    char msg[1024];
    if (lg_load_run(&o->load, &run, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    lg_report_print(stdout, &o->load, &run);
    int rc = run.summary.n_failed > 0 || !run.pools_full;
    if (o->json) {
        cJSON *json = lg_report_json(&o->load, &run);
        if (lg_report_write_json(o->json, json, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: %s\n", PROG, msg);
            rc = 1;
        }
        cJSON_Delete(json);
    }
    lg_run_destroy(&run);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    if (parse(argc, argv, &o) < 0) return 2;
    if (!o.sweep) return run_once(&o);
    lg_sweep_options s = {.flag = o.sweep,
                          .values = o.values,
                          .n_values = o.n_values,
                          .concurrencies = o.concurrencies,
                          .n_concurrencies = o.n_concurrencies,
                          .server_argv = server_argv(&o),
                          .out_dir = o.out_dir,
                          .server_timeout_s = o.server_timeout_s,
                          .load = o.load};
    if (!s.server_argv) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    int rc = lg_sweep_run(&s, o.json);
    if (o.server_cmd) free(s.server_argv[2]);
    free(s.server_argv);
    return rc;
}
