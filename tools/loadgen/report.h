/* tools/loadgen/report.h — a load run's results for people (a table) and for machines (JSON).
 *
 * Both give: requests by outcome (ok, cancelled by the load generator, failed) and by final gRPC
 * status, requests/s, output and total (prompt + output) tokens/s of the successful requests,
 * TTFT / TPOT / ITL / end-to-end latency mean, p50, p90, p99 (see metrics.h), and the server's KV
 * cache after the run (GetStats): format and bytes per token, pool sizes, peak running sequences
 * and peak full blocks used since the server started, preemptions during the run, and whether
 * both block pools were whole again with nothing running or waiting. The JSON also holds every
 * ModelInfo field, every GetStats field before and after the run, and one entry per request. */
#ifndef DS_TOOLS_LOADGEN_REPORT_H
#define DS_TOOLS_LOADGEN_REPORT_H

#include <stdio.h>

#include <cjson/cJSON.h>

#include "tools/loadgen/load.h"

/* The table, for a run made with options o. */
void lg_report_print(FILE *out, const lg_load_options *o, const lg_run *run);

/* The JSON object (free with cJSON_Delete), or NULL when out of memory. */
cJSON *lg_report_json(const lg_load_options *o, const lg_run *run);

/* Writes json, pretty-printed, to path. DS_EIO names the flag and the file. */
ds_status lg_report_write_json(const char *path, const cJSON *json, char *msg, size_t msg_len);

/* Peak running sequences per GiB of KV memory (both pools, as GetStats counts them). */
double lg_run_seqs_per_gib(const lg_run *run);

/* Preemptions between the GetStats before and after the run. */
long long lg_run_preemptions(const lg_run *run);

#endif
