/* tools/loadgen/sweep.c — one server per point, the CSV, and the gnuplot plots. */
#include "tools/loadgen/sweep.h"

#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "tools/loadgen/report.h"
#include "tools/loadgen/server_proc.h"

extern char **environ;

enum { STOP_GRACE_S = 30 };

static const char *PROG = "decoserve-loadgen";

/* What the CSV and the plots need of one point. */
typedef struct point {
    const char *value;
    int concurrency;
    char model[128]; /* as ModelInfo names it */
    lg_summary summary;
    double kv_bytes_per_token, compression_ratio, seqs_per_gib;
    long long kv_memory_bytes, preemptions;
    int peak_running, peak_full_blocks_used, full_blocks_total, pools_full;
    int clean; /* the server exited 0 on SIGTERM and the point's JSON was written */
} point;

static void point_from_run(point *p, const lg_run *run) {
    const Decoserve__V1__GetStatsResponse *st = run->stats_after;
    p->summary = run->summary;
    p->kv_bytes_per_token = st->kv_bytes_per_token;
    p->compression_ratio = st->compression_ratio;
    p->seqs_per_gib = lg_run_seqs_per_gib(run);
    p->kv_memory_bytes = (long long)st->kv_memory_bytes;
    p->preemptions = lg_run_preemptions(run);
    p->peak_running = st->peak_running;
    p->peak_full_blocks_used = st->peak_full_blocks_used;
    p->full_blocks_total = st->full_blocks_total;
    p->pools_full = run->pools_full;
}

/* Runs one point: server up, load, server down. Returns 0 with *p filled (p->clean tells whether
 * its server stopped cleanly and its JSON was written), or 1 after printing why the point has no
 * results. */
static int run_point(const lg_sweep_options *o, const char *value, int concurrency, point *p,
                     cJSON *all) {
    char log_path[1024], json_path[1024], msg[2048];
    snprintf(log_path, sizeof log_path, "%s/server-%s-%s-c%d.log", o->out_dir, o->flag, value,
             concurrency);
    snprintf(json_path, sizeof json_path, "%s/point-%s-%s-c%d.json", o->out_dir, o->flag, value,
             concurrency);
    int n_base = 0;
    while (o->server_argv[n_base])
        n_base++;
    char **argv = calloc((size_t)n_base + 5, sizeof *argv);
    char flag[128];
    snprintf(flag, sizeof flag, "--%s", o->flag);
    if (!argv) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    memcpy(argv, o->server_argv, (size_t)n_base * sizeof *argv);
    argv[n_base] = flag;
    argv[n_base + 1] = (char *)value;
    argv[n_base + 2] = "--port";
    argv[n_base + 3] = "0";
    fprintf(stderr, "[%s] %s %s, concurrency %d: starting the server (log %s)\n", PROG, flag, value,
            concurrency, log_path);
    lg_server server;
    ds_status st = lg_server_start(argv, log_path, o->server_timeout_s, &server, msg, sizeof msg);
    free(argv);
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s %s: %s\n", PROG, flag, value, msg);
        return 1;
    }
    lg_load_options load = o->load;
    load.target = server.address;
    load.concurrency = concurrency;
    lg_run run;
    st = lg_load_run(&load, &run, msg, sizeof msg);
    int code = lg_server_stop(&server, STOP_GRACE_S);
    if (st != DS_OK) {
        fprintf(stderr, "%s: %s %s, concurrency %d: %s\n", PROG, flag, value, concurrency, msg);
        return 1;
    }
    if (code != 0)
        fprintf(stderr, "%s: %s %s: the server exited with %d (see %s)\n", PROG, flag, value, code,
                log_path);
    p->value = value;
    p->concurrency = concurrency;
    snprintf(p->model, sizeof p->model, "%s", run.model->model);
    point_from_run(p, &run);
    cJSON *json = lg_report_json(&load, &run);
    cJSON *sweep = cJSON_AddObjectToObject(json, "sweep");
    cJSON_AddStringToObject(sweep, "flag", o->flag);
    cJSON_AddStringToObject(sweep, "value", value);
    cJSON_AddNumberToObject(sweep, "concurrency", concurrency);
    st = lg_report_write_json(json_path, json, msg, sizeof msg);
    if (st != DS_OK) fprintf(stderr, "%s: %s\n", PROG, msg);
    if (json) cJSON_AddItemToArray(all, json);
    fprintf(stderr,
            "[%s] %s %s, concurrency %d: %d ok, %d cancelled, %d failed; %.1f output tokens/s; "
            "peak running %d; pools full %s\n",
            PROG, flag, value, concurrency, run.summary.n_ok, run.summary.n_cancelled,
            run.summary.n_failed, run.summary.output_tokens_per_s, p->peak_running,
            run.pools_full ? "yes" : "NO");
    lg_run_destroy(&run);
    p->clean = st == DS_OK && code == 0;
    return 0;
}

static int write_csv(const lg_sweep_options *o, const point *pts, int n, const char *path) {
    FILE *fp = fopen(path, "w");
    if (!fp) {
        fprintf(stderr, "%s: %s: cannot write: %s\n", PROG, path, strerror(errno));
        return 1;
    }
    for (const char *c = o->flag; *c; c++)
        fputc(*c == '-' ? '_' : *c, fp);
    fprintf(fp, ",concurrency,requests,ok,cancelled,failed,duration_s,requests_per_s,"
                "output_tokens_per_s,total_tokens_per_s,ttft_mean_ms,ttft_p50_ms,ttft_p90_ms,"
                "ttft_p99_ms,tpot_mean_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_mean_ms,"
                "itl_p50_ms,itl_p90_ms,itl_p99_ms,kv_bytes_per_token,compression_ratio,"
                "kv_memory_bytes,peak_running,peak_running_per_gib,peak_full_blocks_used,"
                "full_blocks_total,preemptions,pools_full\n");
    for (int i = 0; i < n; i++) {
        const point *p = &pts[i];
        const lg_summary *s = &p->summary;
        fprintf(fp, "%s,%d,%d,%d,%d,%d,%.3f,%.3f,%.2f,%.2f", p->value, p->concurrency,
                s->n_requests, s->n_ok, s->n_cancelled, s->n_failed, s->duration_s,
                s->requests_per_s, s->output_tokens_per_s, s->total_tokens_per_s);
        const lg_dist *d[3] = {&s->ttft, &s->tpot, &s->itl};
        for (int k = 0; k < 3; k++)
            fprintf(fp, ",%.2f,%.2f,%.2f,%.2f", d[k]->mean * 1e3, d[k]->p50 * 1e3, d[k]->p90 * 1e3,
                    d[k]->p99 * 1e3);
        fprintf(fp, ",%.1f,%.3f,%lld,%d,%.2f,%d,%d,%lld,%d\n", p->kv_bytes_per_token,
                p->compression_ratio, p->kv_memory_bytes, p->peak_running, p->seqs_per_gib,
                p->peak_full_blocks_used, p->full_blocks_total, p->preemptions, p->pools_full);
    }
    if (fclose(fp) != 0) {
        fprintf(stderr, "%s: %s: cannot write\n", PROG, path);
        return 1;
    }
    return 0;
}

/* The gnuplot script, its data inline; then gnuplot run on it in out_dir. */
static int plot(const lg_sweep_options *o, const point *pts, int n) {
    const char *model = pts[0].model;
    char path[1024];
    snprintf(path, sizeof path, "%s/plots.gp", o->out_dir);
    FILE *fp = fopen(path, "w");
    if (!fp) {
        fprintf(stderr, "%s: %s: cannot write: %s\n", PROG, path, strerror(errno));
        return 1;
    }
    fprintf(fp, "# Written by decoserve-loadgen --sweep %s; run with: gnuplot plots.gp\n", o->flag);
    for (int v = 0; v < o->n_values; v++) {
        fprintf(fp, "$d%d << EOD\n", v);
        for (int i = 0; i < n; i++)
            if (!strcmp(pts[i].value, o->values[v]))
                fprintf(fp, "%d %.3f\n", pts[i].concurrency, pts[i].summary.output_tokens_per_s);
        fprintf(fp, "EOD\n");
    }
    fprintf(fp, "$seqs << EOD\n");
    for (int v = 0; v < o->n_values; v++) {
        const point *best = NULL;
        for (int i = 0; i < n; i++)
            if (!strcmp(pts[i].value, o->values[v]) &&
                (!best || pts[i].seqs_per_gib > best->seqs_per_gib))
                best = &pts[i];
        if (best)
            fprintf(fp, "\"%s\" %.3f %d\n", o->values[v], best->seqs_per_gib, best->peak_running);
    }
    fprintf(fp, "EOD\n");
    fprintf(fp,
            "set terminal pngcairo size 900,560 font 'sans,11'\n"
            "set grid\n"
            "set output 'throughput.png'\n"
            "set title \"%s: output tokens/s against concurrency, %.4g MiB of KV memory\" "
            "noenhanced\n"
            "set xlabel 'concurrency (requests in flight)'\n"
            "set ylabel 'output tokens/s'\n"
            "set logscale x 2\n"
            "set yrange [0:*]\n"
            "set key outside right top\n"
            "plot ",
            model, pts[0].kv_memory_bytes / 1048576.0);
    for (int v = 0; v < o->n_values; v++)
        fprintf(fp, "%s$d%d using 1:2 with linespoints lw 2 pt 7 title '%s %s'",
                v ? ", \\\n     " : "", v, o->flag, o->values[v]);
    fprintf(fp,
            "\n\nset output 'seqs_per_gib.png'\n"
            "set title \"%s: peak running sequences per GiB of KV memory (most over the "
            "concurrencies)\" noenhanced\n"
            "unset logscale x\n"
            "set xlabel '%s'\n"
            "set ylabel 'peak running sequences per GiB'\n"
            "set style fill solid 0.6\n"
            "set boxwidth 0.6\n"
            "set xrange [-0.6:%d.6]\n"
            "set yrange [0:*]\n"
            "set offsets 0, 0, graph 0.1, 0\n"
            "plot $seqs using 0:2:xtic(1) with boxes notitle, \\\n"
            "     $seqs using 0:2:(sprintf('%%.1f/GiB (%%d seqs)', $2, $3)) with labels offset "
            "0,1 notitle\n",
            model, o->flag, o->n_values - 1);
    if (fclose(fp) != 0) {
        fprintf(stderr, "%s: %s: cannot write\n", PROG, path);
        return 1;
    }
    char *argv[] = {"sh", "-c", "cd \"$1\" && exec gnuplot plots.gp", "sh", (char *)o->out_dir,
                    NULL};
    pid_t pid;
    int err = posix_spawnp(&pid, "sh", NULL, NULL, argv, environ), status = 0;
    if (err == 0) waitpid(pid, &status, 0);
    if (err != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr,
                "%s: gnuplot failed on %s (apt-get install gnuplot-nox); the CSV is written\n",
                PROG, path);
        return 1;
    }
    return 0;
}

static void print_table(const lg_sweep_options *o, const point *pts, int n) {
    printf("%-8s %5s %9s %10s %10s %9s %9s %9s %9s %8s %8s %9s %7s %5s\n", o->flag, "conc",
           "ok/req", "out tok/s", "tot tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "ITL p99",
           "B/token", "peak run", "seqs/GiB", "preempt", "full");
    for (int i = 0; i < n; i++) {
        const point *p = &pts[i];
        const lg_summary *s = &p->summary;
        char ok[32];
        snprintf(ok, sizeof ok, "%d/%d", s->n_ok, s->n_requests);
        printf("%-8s %5d %9s %10.1f %10.1f %9.1f %9.1f %9.1f %9.1f %8.0f %8d %9.1f %7lld %5s\n",
               p->value, p->concurrency, ok, s->output_tokens_per_s, s->total_tokens_per_s,
               s->ttft.p50 * 1e3, s->ttft.p99 * 1e3, s->tpot.p50 * 1e3, s->itl.p99 * 1e3,
               p->kv_bytes_per_token, p->peak_running, p->seqs_per_gib, p->preemptions,
               p->pools_full ? "yes" : "NO");
    }
    printf("(latencies in ms; peak run: peak running sequences; full: both KV pools whole again "
           "after the load)\n");
}

int lg_sweep_run(const lg_sweep_options *o, const char *json_path) {
    if (mkdir(o->out_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "%s: --out-dir %s: cannot create: %s\n", PROG, o->out_dir, strerror(errno));
        return 1;
    }
    int n_points = o->n_values * o->n_concurrencies, n = 0, rc = 0;
    point *pts = calloc((size_t)n_points, sizeof *pts);
    cJSON *all = cJSON_CreateArray();
    if (!pts || !all) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        free(pts);
        cJSON_Delete(all);
        return 1;
    }
    for (int v = 0; v < o->n_values && rc == 0; v++)
        for (int c = 0; c < o->n_concurrencies && rc == 0; c++) {
            rc = run_point(o, o->values[v], o->concurrencies[c], &pts[n], all);
            if (rc == 0) n++;
        }

    char path[1024];
    snprintf(path, sizeof path, "%s/sweep.csv", o->out_dir);
    if (n > 0) {
        print_table(o, pts, n);
        rc |= write_csv(o, pts, n, path);
        rc |= plot(o, pts, n);
        printf("wrote %s/sweep.csv, %s/throughput.png, %s/seqs_per_gib.png\n", o->out_dir,
               o->out_dir, o->out_dir);
    }
    for (int i = 0; i < n; i++)
        rc |= pts[i].summary.n_failed > 0 || !pts[i].pools_full || !pts[i].clean;
    if (json_path) {
        char msg[1100];
        if (lg_report_write_json(json_path, all, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: %s\n", PROG, msg);
            rc = 1;
        }
    }
    cJSON_Delete(all);
    free(pts);
    return rc;
}
