/* tools/loadgen/workload.h — the requests of one load run, drawn up front from a seed: prompt
 * token ids, max_tokens, arrival times and which streams to cancel where. The same options give
 * the same requests, so every point of a sweep sends exactly the same load; lengths and prompts,
 * arrivals and cancellations come from three separate streams of the seed, so changing --rate or
 * --cancel-fraction leaves the prompts as they were.
 *
 * Lengths are uniform integers in [len * (1 - range_ratio), len * (1 + range_ratio)] (at least 1),
 * as `decoserve bench-offline` draws them. Prompts are uniform random token ids in
 * [0, vocab_size), or, with a corpus, a slice of it at a uniform random offset (shortened to the
 * corpus if longer). Arrivals (rate > 0) form a Poisson process: exponential gaps of mean 1 / rate.
 * Exactly round(cancel_fraction * num_requests) requests, picked uniformly, are cancelled once they
 * have received k tokens, k uniform in [0, max_tokens) (0: right after the request is sent). */
#ifndef DS_TOOLS_LOADGEN_WORKLOAD_H
#define DS_TOOLS_LOADGEN_WORKLOAD_H

#include <stdint.h>

#include "common/status.h"

typedef struct lg_workload_options {
    int num_requests;
    int input_len, output_len; /* prompt tokens, tokens to generate */
    double range_ratio;        /* in [0, 1) */
    double rate;               /* requests/s; 0: every request arrives at time 0 */
    double cancel_fraction;    /* in [0, 1] */
    uint64_t seed;
    int vocab_size;        /* random prompts: ids in [0, vocab_size) */
    const int32_t *corpus; /* NULL: random prompts; else slices of these tokens (borrowed) */
    int n_corpus;
} lg_workload_options;

typedef struct lg_request {
    const int32_t *prompt_ids; /* [n_prompt_ids], owned by the workload */
    int n_prompt_ids;
    int max_tokens;
    double arrival_s;        /* seconds after the start of the run */
    int cancel_after_tokens; /* -1: never cancelled */
} lg_request;

typedef struct lg_workload {
    lg_request *requests; /* [n_requests] */
    int n_requests;
    int32_t *ids; /* every prompt, back to back */
} lg_workload;

/* Draws the requests into *w (free with lg_workload_destroy). DS_EINVAL names the option at fault
 * (e.g. an empty corpus), DS_ENOMEM if the prompts do not fit in memory. */
ds_status lg_workload_create(const lg_workload_options *o, lg_workload *w, char *msg,
                             size_t msg_len);

void lg_workload_destroy(lg_workload *w);

/* The longest prompt and output the options can draw (to check them against the context). */
int lg_workload_max_len(int len, double range_ratio);

#endif
