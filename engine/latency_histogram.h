/* engine/latency_histogram.h — a fixed-bucket histogram of latencies in seconds, the shape
 * Prometheus histograms take (cumulative counts per upper bound, a sum and a count). The serving
 * engine keeps three (time to first token, inter-token latency, end-to-end latency), observed on
 * its thread and copied into each stats snapshot; the bounds are vLLM's so dashboards built for
 * vLLM read ours the same. Plain struct, no allocation, no lock (the owner serialises). */
#ifndef DS_ENGINE_LATENCY_HISTOGRAM_H
#define DS_ENGINE_LATENCY_HISTOGRAM_H

#include <stdint.h>

#define LATENCY_HISTOGRAM_MAX_BOUNDS 24

typedef struct latency_histogram {
    const double *bounds; /* [n_bounds] ascending upper bounds in seconds; +Inf is implied */
    int n_bounds;
    int64_t counts[LATENCY_HISTOGRAM_MAX_BOUNDS + 1]; /* per bucket (not cumulative); last: +Inf */
    double sum_s;
    int64_t count;
} latency_histogram;

typedef enum latency_histogram_kind {
    LATENCY_TTFT,        /* submit to first generated token */
    LATENCY_INTER_TOKEN, /* between two generated tokens of one request */
    LATENCY_E2E,         /* submit to the end of a request that finished (stop or length) */
} latency_histogram_kind;

/* Empty, with the bounds vLLM uses for that kind. */
void latency_histogram_init(latency_histogram *h, latency_histogram_kind kind);
void latency_histogram_observe(latency_histogram *h, double seconds);

#endif
