/* server/metrics.c — one writer per Prometheus type. vLLM counts prefix-cache queries and hits
 * in tokens; ours are whole blocks, so the vllm: counters are blocks x block_size. */
#include "server/metrics.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/log.h"

typedef struct exposition {
    FILE *out;
    char labels[320]; /* model_name="..." for the vllm: series */
} exposition;

static void family(exposition *e, const char *name, const char *type, const char *help) {
    fprintf(e->out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(exposition *e, const char *name, const char *labels, double value) {
    fprintf(e->out, labels[0] ? "%s{%s} %.17g\n" : "%s%s %.17g\n", name, labels, value);
}

static void gauge(exposition *e, const char *name, const char *labels, double value,
                  const char *help) {
    family(e, name, "gauge", help);
    sample(e, name, labels, value);
}

static void counter(exposition *e, const char *name, const char *labels, double value,
                    const char *help) {
    family(e, name, "counter", help);
    sample(e, name, labels, value);
}

static void histogram(exposition *e, const char *name, const latency_histogram *h,
                      const char *help) {
    family(e, name, "histogram", help);
    int64_t cumulative = 0;
    for (int i = 0; i < h->n_bounds; i++) {
        cumulative += h->counts[i];
        fprintf(e->out, "%s_bucket{%s,le=\"%.17g\"} %lld\n", name, e->labels, h->bounds[i],
                (long long)cumulative);
    }
    cumulative += h->counts[h->n_bounds];
    fprintf(e->out, "%s_bucket{%s,le=\"+Inf\"} %lld\n", name, e->labels, (long long)cumulative);
    fprintf(e->out, "%s_sum{%s} %.17g\n%s_count{%s} %lld\n", name, e->labels, h->sum_s, name,
            e->labels, (long long)h->count);
}

/* A label value with \, " and newlines escaped. */
static void label_value(char *out, size_t cap, const char *value) {
    size_t n = 0;
    for (const char *p = value; *p && n + 3 < cap; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') out[n++] = '\\';
        out[n++] = *p == '\n' ? 'n' : *p;
    }
    out[n] = '\0';
}

char *metrics_render(const serving_stats *st, const serving_info *info, const char *model,
                     int ready) {
    exposition e;
    char *text = NULL;
    size_t len = 0;
    e.out = open_memstream(&text, &len);
    DS_ASSERT(e.out != NULL);
    char value[256];
    label_value(value, sizeof value, model);
    snprintf(e.labels, sizeof e.labels, "model_name=\"%s\"", value);
    const char *L = e.labels;

    int total = st->open_blocks_total + st->full_blocks_total;
    int free_blocks = st->open_blocks_free + st->full_blocks_free;
    gauge(&e, "vllm:num_requests_running", L, st->running, "Requests in the running batch.");
    gauge(&e, "vllm:num_requests_waiting", L, st->waiting, "Requests waiting to be scheduled.");
    gauge(&e, "vllm:kv_cache_usage_perc", L, total > 0 ? 1.0 - (double)free_blocks / total : 0,
          "KV-cache usage: the share of KV blocks in use (1 = full).");
    counter(&e, "vllm:prompt_tokens_total", L, (double)st->prompt_tokens,
            "Prompt tokens computed (prefix-cache hits excluded).");
    counter(&e, "vllm:generation_tokens_total", L, (double)st->generated_tokens,
            "Tokens generated.");
    counter(&e, "vllm:prefix_cache_queries_total", L,
            (double)st->prefix_cache_queries * info->block_size,
            "Prompt tokens looked up in the prefix cache (whole blocks).");
    counter(&e, "vllm:prefix_cache_hits_total", L, (double)st->prefix_cache_hits * info->block_size,
            "Prompt tokens found in the prefix cache (whole blocks).");
    counter(&e, "vllm:num_preemptions_total", L, (double)st->preemptions,
            "Requests preempted (their KV freed, recomputed later).");
    histogram(&e, "vllm:time_to_first_token_seconds", &st->ttft,
              "Submission to the first generated token.");
    histogram(&e, "vllm:inter_token_latency_seconds", &st->inter_token,
              "Between two generated tokens of one request.");
    histogram(&e, "vllm:e2e_request_latency_seconds", &st->e2e,
              "Submission to the end of each finished request (stop or length).");

    gauge(&e, "decoserve_ready", "", ready, "1 while the server admits requests.");
    char kv[128];
    snprintf(kv, sizeof kv, "method=\"%s\",bits=\"%d\"", info->kv_method, info->kv_bits);
    gauge(&e, "decoserve_kv_info", kv, 1,
          "The KV page codec: method and bits per value of full pages.");
    gauge(&e, "decoserve_kv_bytes_per_token", "", st->kv_bytes_per_token,
          "Compressed KV bytes per token: all layers, K and V, scales included.");
    gauge(&e, "decoserve_kv_fp16_bytes_per_token", "", st->fp16_bytes_per_token,
          "The same tokens' KV bytes in fp16.");
    gauge(&e, "decoserve_kv_compression_ratio", "", st->compression_ratio,
          "fp16 bytes per token / compressed bytes per token.");
    gauge(&e, "decoserve_kv_memory_bytes", "", (double)st->kv_memory_bytes,
          "Both KV pools as sized.");
    family(&e, "decoserve_kv_blocks", "gauge", "KV blocks per pool and state.");
    fprintf(e.out,
            "decoserve_kv_blocks{pool=\"open\",state=\"total\"} %d\n"
            "decoserve_kv_blocks{pool=\"open\",state=\"free\"} %d\n"
            "decoserve_kv_blocks{pool=\"full\",state=\"total\"} %d\n"
            "decoserve_kv_blocks{pool=\"full\",state=\"free\"} %d\n"
            "decoserve_kv_blocks{pool=\"full\",state=\"cached\"} %d\n",
            st->open_blocks_total, st->open_blocks_free, st->full_blocks_total,
            st->full_blocks_free, st->full_blocks_cached);
    counter(&e, "decoserve_preemptions_total", "", (double)st->preemptions,
            "Requests preempted and recomputed.");
    counter(&e, "decoserve_requests_submitted_total", "", (double)st->requests_submitted,
            "Requests accepted by the engine.");
    family(&e, "decoserve_requests_ended_total", "counter", "Requests ended, by how.");
    fprintf(e.out,
            "decoserve_requests_ended_total{reason=\"finished\"} %lld\n"
            "decoserve_requests_ended_total{reason=\"cancelled\"} %lld\n"
            "decoserve_requests_ended_total{reason=\"failed\"} %lld\n",
            (long long)st->requests_finished, (long long)st->requests_cancelled,
            (long long)st->requests_failed);
    counter(&e, "decoserve_steps_total", "", (double)st->steps, "Engine steps run.");
    counter(&e, "decoserve_busy_seconds_total", "", st->busy_s, "Time spent in engine steps.");
    int rc = fclose(e.out);
    DS_ASSERT(rc == 0);
    return text;
}
