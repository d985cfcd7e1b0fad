/* server/bench_offline.c — `decoserve bench-offline`: offline throughput in the manner of vLLM's
 * benchmark_throughput. N requests (random token ids of given or seeded random lengths, or
 * consecutive slices of a tokenized text file) are queued at once and run to completion through
 * the serving engine on this thread; reports requests/s, prompt and output tokens/s, and what
 * the KV cache did: peak concurrent sequences, peak blocks, preemptions, prefix-cache hits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/rng.h"
#include "engine/serving.h"
#include "server/commands.h"
#include "server/engine_flags.h"

static const char *PROG = "decoserve bench-offline";

typedef struct bench_options {
    serving_options engine;
    int num_prompts, input_len, output_len;
    float range_ratio;
    long long seed;
    const char *prompt_file, *json;
} bench_options;

static void usage(FILE *out) {
    fprintf(out, "usage: decoserve bench-offline --model PATH [options]\n");
    engine_flags_usage(out);
    fprintf(out,
            "  --num-prompts N          requests (default 64)\n"
            "  --input-len N            prompt tokens (default 256)\n"
            "  --output-len N           tokens to generate per request, EOS ignored (default 64)\n"
            "  --range-ratio F          lengths uniform in [len*(1-F), len*(1+F)] (default 0)\n"
            "  --prompt-file PATH       prompts are consecutive slices of this text, tokenized\n"
            "                           (default: random token ids)\n"
            "  --seed N                 lengths, prompt ids and sampling seeds (default 0)\n"
            "  --json FILE              also write the results as JSON\n");
}

static int parse(int argc, char **argv, bench_options *o) {
    memset(o, 0, sizeof *o);
    if (engine_flags_defaults(PROG, &o->engine) < 0) return -1;
    o->num_prompts = 64, o->input_len = 256, o->output_len = 64;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        int e = engine_flags_next(PROG, argc, argv, &i, &o->engine, usage, &v);
        if (e < 0) return -1;
        if (e == 0) continue;
        int r = 0;
        if (!strcmp(a, "--num-prompts"))
            r = cli_int(PROG, a, v, 1, 1 << 20, &o->num_prompts);
        else if (!strcmp(a, "--input-len"))
            r = cli_int(PROG, a, v, 1, 1 << 20, &o->input_len);
        else if (!strcmp(a, "--output-len"))
            r = cli_int(PROG, a, v, 1, 1 << 20, &o->output_len);
        else if (!strcmp(a, "--range-ratio"))
            r = cli_float(PROG, a, v, 0.0, 0.99, &o->range_ratio);
        else if (!strcmp(a, "--seed"))
            r = cli_i64(PROG, a, v, 0, 1ll << 62, &o->seed);
        else if (!strcmp(a, "--prompt-file"))
            o->prompt_file = v;
        else if (!strcmp(a, "--json"))
            o->json = v;
        else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    if (engine_flags_check(PROG, &o->engine) < 0) return -1;
    if (o->engine.max_waiting < o->num_prompts) o->engine.max_waiting = o->num_prompts;
    return 0;
}

/* The tokenized --prompt-file, or NULL after printing the error. */
static int32_t *load_corpus(serving *s, const char *path, int *n) {
    char *text, msg[256];
    size_t len;
    if (ds_read_file(path, (size_t)1 << 26, &text, &len, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: --prompt-file %s\n", PROG, msg);
        return NULL;
    }
    int32_t *ids = NULL;
    if (serving_tokenize(s, text, len, &ids, n, msg, sizeof msg) != DS_OK || *n == 0) {
        fprintf(stderr, "%s: --prompt-file %s: %s\n", PROG, path, *n == 0 ? "no tokens" : msg);
        free(text);
        free(ids);
        return NULL;
    }
    free(text);
    return ids;
}

static int run(const bench_options *o, serving *s) {
    serving_info info;
    serving_get_info(s, &info);
    ds_rng rng = {(uint64_t)o->seed};
    int n_corpus = 0;
    int32_t *corpus = o->prompt_file ? load_corpus(s, o->prompt_file, &n_corpus) : NULL;
    if (o->prompt_file && !corpus) return 1;
    serving_stream **streams = calloc((size_t)o->num_prompts, sizeof *streams);
    int32_t *ids = malloc(((size_t)o->input_len * 2 + 1) * sizeof(int32_t));
    int rc = 0, n_submitted = 0;
    int64_t prompt_tokens = 0;
    char msg[512];
    if (!streams || !ids) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        rc = 1;
    }
    double t0 = ds_now_s();
    for (int i = 0; rc == 0 && i < o->num_prompts; i++) {
        serving_request q;
        serving_request_default(&q);
        int n = ds_rng_len(&rng, o->input_len, o->range_ratio);
        if (corpus) {
            if (n > n_corpus) n = n_corpus;
            int start = (int)(ds_rng_u64(&rng) % (uint64_t)(n_corpus - n + 1));
            memcpy(ids, corpus + start, (size_t)n * sizeof *ids);
        } else {
            for (int k = 0; k < n; k++)
                ids[k] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)info.vocab_size);
        }
        q.prompt_ids = ids;
        q.n_prompt_ids = n;
        q.max_tokens = ds_rng_len(&rng, o->output_len, o->range_ratio);
        q.ignore_eos = 1;
        q.sampling.temperature = 0.0f;
        q.sampling.seed = o->seed + i;
        if (serving_submit(s, &q, NULL, NULL, &streams[i], msg, sizeof msg) != DS_OK) {
            engine_flags_spell(msg, sizeof msg);
            fprintf(stderr, "%s: request %d: %s\n", PROG, i, msg);
            rc = 2;
            break;
        }
        n_submitted++;
        prompt_tokens += n;
    }
    for (int worked = 1; rc == 0 && worked;)
        if (serving_step(s, &worked, msg, sizeof msg) != DS_OK) {
            engine_flags_spell(msg, sizeof msg);
            fprintf(stderr, "%s: %s\n", PROG, msg);
            rc = 1;
        }
    double elapsed = ds_now_s() - t0;
    int64_t output_tokens = 0;
    int n_ok = 0;
    serving_output out = {0};
    for (int i = 0; i < n_submitted; i++) {
        serving_finish fin = SERVING_RUNNING;
        while (serving_stream_poll(streams[i], &out))
            if (out.finish) fin = out.finish;
        output_tokens += out.completion_tokens;
        n_ok += fin == SERVING_LENGTH || fin == SERVING_STOP;
        if (fin == SERVING_ERROR || fin == SERVING_UNAVAILABLE) {
            engine_flags_spell(out.error, sizeof out.error);
            fprintf(stderr, "%s: request %d: %s\n", PROG, i, out.error);
        }
        serving_stream_release(streams[i]);
    }
    serving_output_free(&out);
    serving_stats st;
    serving_get_stats(s, &st);
    if (rc == 0) {
        printf("requests: %d ok of %d in %.2f s\n"
               "throughput: %.2f requests/s, %.1f total tokens/s, %.1f prompt tokens/s, %.1f "
               "output tokens/s\n"
               "kv: %s %d-bit, %.0f bytes/token (%.2fx smaller than fp16), %.1f MiB for %d open + "
               "%d full blocks\n"
               "peak concurrent sequences: %d (max-seqs %d); peak full blocks used: %d of %d; "
               "preemptions: %lld; prefix-cache hits: %lld of %lld blocks\n",
               n_ok, n_submitted, elapsed, n_ok / elapsed,
               (prompt_tokens + output_tokens) / elapsed, prompt_tokens / elapsed,
               output_tokens / elapsed, info.kv_method, info.kv_bits, st.kv_bytes_per_token,
               st.compression_ratio, st.kv_memory_bytes / 1048576.0, st.open_blocks_total,
               st.full_blocks_total, st.peak_running, info.max_seqs, st.peak_full_blocks_used,
               st.full_blocks_total, (long long)st.preemptions, (long long)st.prefix_cache_hits,
               (long long)st.prefix_cache_queries);
        if (n_ok != n_submitted) rc = 1;
    }
    if (rc == 0 && o->json) {
        FILE *fp = fopen(o->json, "w");
        if (!fp) {
            fprintf(stderr, "%s: --json %s: cannot write\n", PROG, o->json);
            rc = 1;
        } else {
            fprintf(
                fp,
                "{\"requests\": %d, \"elapsed_s\": %.4f, \"requests_per_s\": %.4f, "
                "\"prompt_tokens\": %lld, \"output_tokens\": %lld, "
                "\"total_tokens_per_s\": %.2f, \"output_tokens_per_s\": %.2f, "
                "\"kv_method\": \"%s\", \"kv_bits\": %d, \"block_size\": %d, "
                "\"kv_memory_bytes\": %lld, \"kv_bytes_per_token\": %.2f, "
                "\"compression_ratio\": %.4f, \"open_blocks\": %d, \"full_blocks\": %d, "
                "\"max_seqs\": %d, \"peak_concurrent_seqs\": %d, \"peak_full_blocks_used\": %d, "
                "\"preemptions\": %lld, \"prefix_cache_hits\": %lld}\n",
                n_ok, elapsed, n_ok / elapsed, (long long)prompt_tokens, (long long)output_tokens,
                (prompt_tokens + output_tokens) / elapsed, output_tokens / elapsed, info.kv_method,
                info.kv_bits, info.block_size, (long long)st.kv_memory_bytes, st.kv_bytes_per_token,
                st.compression_ratio, st.open_blocks_total, st.full_blocks_total, info.max_seqs,
                st.peak_running, st.peak_full_blocks_used, (long long)st.preemptions,
                (long long)st.prefix_cache_hits);
            fclose(fp);
        }
    }
    free(streams);
    free(ids);
    free(corpus);
    return rc;
}

int cmd_bench_offline(int argc, char **argv) {
    bench_options o;
    if (parse(argc, argv, &o) < 0) return 2;
    serving *s = engine_flags_open(PROG, &o.engine);
    if (!s) return 1;
    int rc = run(&o, s);
    serving_destroy(s);
    return rc;
}
