/* tools/loadgen/load.h — one load run against a running `decoserve serve`, on the gRPC C core
 * client API: one channel, one completion queue driven by the calling thread, and up to
 * `concurrency` streaming Generate calls in flight at once.
 *
 * A run: ModelInfo (vocabulary and context, to draw and check the prompts), Tokenize of the
 * --prompt-file if any, GetStats, then the workload's requests (greedy, max_tokens set, EOS
 * ignored for random prompts or with ignore_eos), each started at its arrival time once fewer than
 * `concurrency` calls are open; the workload's cancel points are honoured with grpc_call_cancel.
 * Then GetStats every 50 ms until nothing runs or waits and both KV block pools are whole again
 * (open_blocks_free == open_blocks_total, full_blocks_free == full_blocks_total), or until
 * drain_timeout_s has passed. Times are taken from CLOCK_MONOTONIC when the completion queue hands
 * over an event. */
#ifndef DS_TOOLS_LOADGEN_LOAD_H
#define DS_TOOLS_LOADGEN_LOAD_H

#include <stddef.h>

#include "common/status.h"
#include "proto/decoserve.pb-c.h"
#include "tools/loadgen/metrics.h"
#include "tools/loadgen/workload.h"

typedef struct lg_load_options {
    const char *target;           /* HOST:PORT */
    lg_workload_options workload; /* vocab_size and corpus are filled in by the run */
    const char *prompt_file;      /* NULL: random prompt ids */
    int ignore_eos;               /* prompt-file prompts: keep generating past EOS */
    int concurrency;              /* most calls in flight; 0: no limit (with workload.rate > 0) */
    double drain_timeout_s;       /* how long to wait for the pools to be whole after the load */
    int progress;                 /* 1: a live progress line on stderr */
} lg_load_options;

typedef struct lg_run {
    Decoserve__V1__ModelInfoResponse *model;
    Decoserve__V1__GetStatsResponse *stats_before; /* just before the first request */
    Decoserve__V1__GetStatsResponse *stats_after; /* once the pools were whole, or at the timeout */
    int pools_full;     /* stats_after: nothing running or waiting, both pools whole */
    double drain_s;     /* from the last call's end to stats_after */
    lg_result *results; /* [n_results], in workload order */
    int n_results;
    double *itl; /* every request's ITLs, backing results[i].itl */
    lg_summary summary;
} lg_run;

/* Runs the load; *run is filled (free with lg_run_destroy) whenever DS_OK is returned, even if
 * requests failed or the pools did not come back (see run->summary and run->pools_full). Errors
 * name the flag at fault: DS_EUNAVAILABLE "--target HOST:PORT: ModelInfo: UNAVAILABLE: ...",
 * DS_EINVAL for prompts that cannot fit the server's context or a --prompt-file it cannot tokenize,
 * DS_EIO for an unreadable --prompt-file. */
ds_status lg_load_run(const lg_load_options *o, lg_run *run, char *msg, size_t msg_len);

void lg_run_destroy(lg_run *run);

#endif
