/* tools/loadgen/sweep.h — `--sweep FLAG=V1,V2,...`: throughput against memory.
 *
 * For every value and every concurrency a fresh server is started (its command plus
 * `--FLAG VALUE --port 0`, so every point begins with empty pools and its own peak counters), the
 * same seeded load is run against it (lg_load_run), and the server is stopped with SIGTERM. Into
 * out_dir go:
 *   sweep.csv            one row per point: throughput, latency percentiles, KV stats
 *   plots.gp             the gnuplot script, with the data inline (re-run: cd out_dir && gnuplot
 * plots.gp) throughput.png       output tokens/s against concurrency, one line per value
 *   seqs_per_gib.png     peak running sequences per GiB of KV memory for each value (the highest
 *                        over the concurrencies)
 *   point-FLAG-VALUE-cN.json, server-FLAG-VALUE-cN.log   each point's report and server log
 * and a table of the points to stdout. */
#ifndef DS_TOOLS_LOADGEN_SWEEP_H
#define DS_TOOLS_LOADGEN_SWEEP_H

#include "tools/loadgen/load.h"

typedef struct lg_sweep_options {
    const char *flag; /* a server flag without its dashes, e.g. "kv-bits" */
    char **values;    /* [n_values] */
    int n_values;
    const int *concurrencies; /* [n_concurrencies], each >= 1 */
    int n_concurrencies;
    char **server_argv; /* the server command, NULL-terminated; the sweep appends its flags */
    const char *out_dir;
    double server_timeout_s; /* to wait for "listening on" */
    lg_load_options load;    /* everything but target and concurrency */
} lg_sweep_options;

/* Runs the sweep; json_path (may be NULL) gets every point's report as one JSON array. A point
 * whose server does not start or whose load cannot run ends the sweep (the CSV and plots still get
 * the points before it). Returns the exit code: 0 if every point ran with no failed request, whole
 * pools at the end and a server that exited 0 on SIGTERM; 1 otherwise (errors are printed to
 * stderr, naming the point). */
int lg_sweep_run(const lg_sweep_options *o, const char *json_path);

#endif
