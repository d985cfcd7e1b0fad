/* tools/loadgen/metrics.h — what decoserve-loadgen measures for each streamed request and how it
 * sums up a run, in the manner of vLLM's benchmark_serving. Plain C, no gRPC: load.c feeds it the
 * arrival times of messages, report.c prints what it computed.
 *
 * Per request, times in seconds from the moment the call was started:
 *   TTFT     the arrival of the first message that carries a token
 *   latency  the arrival of the call's status (end to end)
 *   TPOT     (latency - TTFT) / (tokens - 1), for requests with at least 2 tokens
 *   ITL      one value per token after the first. The server coalesces the tokens produced while
 *            its previous message was in flight, so one message may carry several: a message with
 *            n tokens that arrives g seconds after the previous token-carrying message gives n
 *            values of g / n, and the tokens that came in the same message as the first token give
 *            0 s each. A request's ITLs therefore number tokens - 1 and add up to the time from its
 *            first to its last token.
 * A run: requests by outcome and final status, throughput over the wall time from the first call
 * started to the last call ended (tokens of successful requests only), and mean / p50 / p90 / p99
 * of TTFT, TPOT, ITL and latency over the successful requests. Percentiles interpolate linearly
 * between order statistics (numpy's default): p of sorted v[0..n) is v[k] + f (v[k+1] - v[k])
 * with k + f = p / 100 * (n - 1). */
#ifndef DS_TOOLS_LOADGEN_METRICS_H
#define DS_TOOLS_LOADGEN_METRICS_H

#include <stdint.h>

#include "common/status.h"

/* The timing of one request while its messages arrive. */
typedef struct lg_timing {
    double t_start; /* the call was started */
    double t_first; /* the first token arrived; < 0 before */
    double t_prev;  /* the latest token-carrying message arrived */
    int n_tokens;   /* received so far */
    double *itl;    /* [capacity - 1] ITLs in arrival order; borrowed */
    int capacity;   /* tokens the request may receive (its max_tokens) */
} lg_timing;

/* Starts the timing of a request that may receive up to capacity tokens (>= 1); itl has room for
 * capacity - 1 values and outlives the timing. */
void lg_timing_start(lg_timing *t, double now, double *itl, int capacity);

/* A message carrying n_tokens (>= 0) tokens arrived at now. Returns -1, recording nothing, if
 * the request would then hold more than capacity tokens. */
int lg_timing_message(lg_timing *t, double now, int n_tokens);

/* How a request ended, from the load generator's point of view. */
typedef enum lg_outcome {
    LG_OK,        /* status OK and the stream was well formed */
    LG_CANCELLED, /* the load generator cancelled it (--cancel-fraction) and saw CANCELLED */
    LG_FAILED,    /* any other status, or a malformed stream (error says why) */
} lg_outcome;

enum { LG_N_STATUS = 17 }; /* gRPC status codes 0 (OK) .. 16 (UNAUTHENTICATED) */

/* One request after its call ended. */
typedef struct lg_result {
    lg_outcome outcome;
    int status;           /* the gRPC status code */
    int cancel_requested; /* the workload asked to cancel it (it may have finished first) */
    int prompt_tokens;    /* as the server counted them (usage), else as sent */
    int max_tokens, output_tokens;
    int finish_reason; /* decoserve.v1.FinishReason of the last message; 0 if none arrived */
    double start_s;    /* the call started, seconds after the run began */
    double ttft_s, latency_s, tpot_s; /* -1 where undefined (no token; fewer than 2 tokens) */
    const double *itl;                /* [n_itl], borrowed from the run */
    int n_itl;
    char error[160]; /* LG_FAILED: status details or what was wrong with the stream */
} lg_result;

/* Fills r's times from a finished timing whose status arrived at t_end. */
void lg_result_times(lg_result *r, const lg_timing *t, double t_end);

/* Mean and percentiles of n values (all 0 when n == 0). */
typedef struct lg_dist {
    int n;
    double mean, p50, p90, p99;
} lg_dist;

/* The p-th percentile (0..100) of sorted[0..n), n >= 1, as above. */
double lg_percentile(const double *sorted, int n, double p);

/* Sorts v[0..n) in place and fills d. */
void lg_dist_compute(double *v, int n, lg_dist *d);

typedef struct lg_summary {
    int n_requests, n_ok, n_cancelled, n_failed;
    int n_cancel_requested;
    int by_status[LG_N_STATUS + 1]; /* requests per final status; the last slot: codes > 16 */
    double duration_s;
    int64_t prompt_tokens, output_tokens; /* of the successful requests */
    double requests_per_s, output_tokens_per_s, total_tokens_per_s;
    lg_dist ttft, tpot, itl, latency;
} lg_summary;

/* Sums up n results of a run that lasted duration_s (> 0). DS_ENOMEM if scratch space for the
 * percentiles cannot be allocated. */
ds_status lg_summarize(const lg_result *results, int n, double duration_s, lg_summary *s, char *msg,
                       size_t msg_len);

#endif
