/* tools/loadgen/metrics.c — per-request timing with ITL attribution, and the summary of a run. */
#include "tools/loadgen/metrics.h"

#include <stdlib.h>
#include <string.h>

void lg_timing_start(lg_timing *t, double now, double *itl, int capacity) {
    memset(t, 0, sizeof *t);
    t->t_start = now;
    t->t_first = -1.0;
    t->itl = itl;
    t->capacity = capacity;
}

int lg_timing_message(lg_timing *t, double now, int n_tokens) {
    if (n_tokens <= 0) return 0; /* the last message may carry only the finish reason and usage */
    if (n_tokens > t->capacity - t->n_tokens) return -1;
    int first = t->n_tokens == 0;
    /* Tokens arriving with the first token have no gap of their own: 0 s each. */
    double gap = first ? 0.0 : (now - t->t_prev) / n_tokens;
    for (int k = first; k < n_tokens; k++)
        t->itl[t->n_tokens + k - 1] = gap;
    if (first) t->t_first = now;
    t->t_prev = now;
    t->n_tokens += n_tokens;
    return 0;
}

void lg_result_times(lg_result *r, const lg_timing *t, double t_end) {
    r->output_tokens = t->n_tokens;
    r->latency_s = t_end - t->t_start;
    r->ttft_s = t->n_tokens > 0 ? t->t_first - t->t_start : -1.0;
    r->tpot_s = t->n_tokens > 1 ? (r->latency_s - r->ttft_s) / (t->n_tokens - 1) : -1.0;
    r->itl = t->itl;
    r->n_itl = t->n_tokens > 0 ? t->n_tokens - 1 : 0;
}

double lg_percentile(const double *sorted, int n, double p) {
    double x = p / 100.0 * (n - 1);
    int k = (int)x;
    if (k >= n - 1) return sorted[n - 1];
    return sorted[k] + (x - k) * (sorted[k + 1] - sorted[k]);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void lg_dist_compute(double *v, int n, lg_dist *d) {
    memset(d, 0, sizeof *d);
    if (n <= 0) return;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += v[i];
    d->n = n;
    d->mean = sum / n;
    d->p50 = lg_percentile(v, n, 50);
    d->p90 = lg_percentile(v, n, 90);
    d->p99 = lg_percentile(v, n, 99);
}

ds_status lg_summarize(const lg_result *results, int n, double duration_s, lg_summary *s, char *msg,
                       size_t msg_len) {
    memset(s, 0, sizeof *s);
    s->n_requests = n;
    s->duration_s = duration_s;
    size_t n_itl = 0;
    for (int i = 0; i < n; i++) {
        const lg_result *r = &results[i];
        int code = r->status >= 0 && r->status < LG_N_STATUS ? r->status : LG_N_STATUS;
        s->by_status[code]++;
        s->n_cancel_requested += r->cancel_requested;
        s->n_ok += r->outcome == LG_OK;
        s->n_cancelled += r->outcome == LG_CANCELLED;
        s->n_failed += r->outcome == LG_FAILED;
        if (r->outcome != LG_OK) continue;
        s->prompt_tokens += r->prompt_tokens;
        s->output_tokens += r->output_tokens;
        n_itl += (size_t)r->n_itl;
    }
    s->requests_per_s = s->n_ok / duration_s;
    s->output_tokens_per_s = (double)s->output_tokens / duration_s;
    s->total_tokens_per_s = (double)(s->prompt_tokens + s->output_tokens) / duration_s;

    double *per_request = malloc(((size_t)n + 1) * sizeof *per_request);
    double *itl = malloc((n_itl + 1) * sizeof *itl);
    if (!per_request || !itl) {
        free(per_request);
        free(itl);
        return ds_fail(msg, msg_len, DS_ENOMEM, "summary of %d requests: out of memory", n);
    }
    int m = 0;
    for (int i = 0; i < n; i++)
        if (results[i].outcome == LG_OK && results[i].ttft_s >= 0)
            per_request[m++] = results[i].ttft_s;
    lg_dist_compute(per_request, m, &s->ttft);
    m = 0;
    for (int i = 0; i < n; i++)
        if (results[i].outcome == LG_OK && results[i].tpot_s >= 0)
            per_request[m++] = results[i].tpot_s;
    lg_dist_compute(per_request, m, &s->tpot);
    m = 0;
    for (int i = 0; i < n; i++)
        if (results[i].outcome == LG_OK) per_request[m++] = results[i].latency_s;
    lg_dist_compute(per_request, m, &s->latency);
    size_t k = 0;
    for (int i = 0; i < n; i++)
        if (results[i].outcome == LG_OK && results[i].n_itl > 0) {
            memcpy(itl + k, results[i].itl, (size_t)results[i].n_itl * sizeof *itl);
            k += (size_t)results[i].n_itl;
        }
    lg_dist_compute(itl, (int)k, &s->itl);
    free(per_request);
    free(itl);
    return DS_OK;
}
