/* server/metrics.h — the engine's stats in Prometheus' text exposition format (0.0.4), for
 * GET /metrics: the series vLLM exports (`vllm:*`, labelled model_name, which the Gateway API
 * inference extension's endpoint picker and vLLM's dashboards read), and `decoserve_*` for what
 * only decoserve has (KV bytes per token, compression, codec, block pools). The numbers are
 * GetStats' (one serving_stats snapshot), so a scrape and a GetStats taken while idle agree. */
#ifndef DS_SERVER_METRICS_H
#define DS_SERVER_METRICS_H

#include "engine/serving.h"

/* The exposition text, malloc'ed. model names the model in the vllm: labels; ready is 1 while
 * the server admits requests. */
char *metrics_render(const serving_stats *stats, const serving_info *info, const char *model,
                     int ready);

#endif
