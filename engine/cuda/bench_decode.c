/* engine/cuda/bench_decode.c — decode throughput of the CUDA backend with random weights of
 * Llama-3-8B's shape (no checkpoint): for each KV format, step path and batch size, prefill
 * `batch` sequences of `context` random tokens, then time `steps` decode steps of the whole batch
 * (each step one token per sequence). Paths (--paths): `graph` samples greedily on the GPU and
 * replays the step's CUDA graph (the serving engine's default), `eager` samples on the GPU with
 * every kernel launched (--enforce-eager), `logits` copies every sequence's logits to the host
 * (the engine before GPU sampling). Prints one Markdown table row per case, with the step's
 * physical limit: the weights plus the KV bytes the step must read, over the device-to-device
 * copy rate measured at start.
 *   bench_decode [--context N] [--steps N] [--batches 1,16,64] [--block N] [--kv fp16,kivi4,...]
 *                [--paths graph,eager,logits] [--gemv-rows N] [--tp N] [--shares] [--no-prefill]
 * --gemv-rows N: steps of up to N rows use kernels/gemv.h instead of cuBLAS (-1: never; default
 * CUDA_GEMV_ROWS).
 * Output tokens/s = batch x steps / seconds of the timed steps (after 2 untimed ones).
 * --tp N runs the tensor-parallel backend on GPUs 0..N-1 (one process). --shares adds the share
 * of the timed steps (rank 0's) spent in all-reduces and in the LM head (CUDA events around each,
 * which cost a little themselves). --no-prefill commits the
 * context's blocks without computing them (their pages stay zero): decode reads the same bytes,
 * so step times hold, and long contexts skip minutes of prefill. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/clock.h"
#include "common/rng.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/plan.h"
#include "engine/loader/synthetic.h"

static const char PROG[] = "bench_decode";

enum { MAX_STEP = 2048, MAX_BATCHES = 8, WARMUP = 2 };

typedef struct bench {
    kv_cache *cache;
    engine_backend backend;
    int sample;           /* 1: forward_sample (greedy on the GPU), 0: logits to the host */
    sample_row *rows;     /* [max_batch] greedy */
    int32_t *sampled;     /* [max_batch] */
    double weights_bytes; /* what every step reads besides the KV */
    double copy_rate;     /* bytes/s, device-to-device (read + write) */
    float *logits;        /* [max_batch][vocab]: one row per sequence of a step */
    int32_t *tokens;      /* [max_batch][context + steps + WARMUP] */
    kv_seq *seqs;         /* [max_batch] */
    llama_step_seq *step; /* [max_batch] */
    int context, steps, tp, no_prefill, shares;
} bench;

/* Reserves, runs and commits one batch; 0 or -1 after printing the error. */
static int run(bench *b, int n) {
    char msg[512];
    for (int i = 0; i < n; i++)
        if (kv_seq_reserve(b->cache, b->step[i].kv, b->step[i].tokens, b->step[i].n_tokens, msg,
                           sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: reserve: %s\n", PROG, msg);
            for (int r = 0; r < i; r++)
                kv_seq_rollback(b->cache, b->step[r].kv);
            return -1;
        }
    int sampling = b->sample;
    for (int i = 0; i < n; i++)
        sampling &= b->step[i].logits != LLAMA_LOGITS_ALL;
    ds_status st =
        sampling ? b->backend.forward_sample(b->backend.impl, b->step, n, b->rows, b->sampled, NULL,
                                             msg, sizeof msg)
                 : b->backend.forward(b->backend.impl, b->step, n, b->logits, msg, sizeof msg);
    for (int i = 0; i < n; i++)
        st == DS_OK ? kv_seq_commit(b->cache, b->step[i].kv)
                    : kv_seq_rollback(b->cache, b->step[i].kv);
    if (st != DS_OK) fprintf(stderr, "%s: forward: %s\n", PROG, msg);
    return st == DS_OK ? 0 : -1;
}

/* Rank 0's all-reduce and LM-head milliseconds so far (--shares). */
static void part_ms(const bench *b, double *allreduce_ms, double *lm_head_ms) {
    if (b->tp)
        cuda_tp_part_ms(&b->backend, allreduce_ms, lm_head_ms);
    else
        cuda_backend_part_ms(&b->backend, allreduce_ms, lm_head_ms);
}

/* One batch size: prefill, warm up, time. */
static int bench_batch(bench *b, int batch, const char *kv_name, const char *path,
                       double *prefill_tps) {
    const int per_seq = b->context + b->steps + WARMUP;
    for (int s = 0; s < batch; s++)
        kv_seq_init(&b->seqs[s]);
    int rc = 0;
    /* Prefill: chunks of the prompts in order, up to MAX_STEP tokens per step. */
    double t0 = ds_now_s();
    for (int s = 0; b->no_prefill && rc == 0 && s < batch; s++) /* bookkeeping only */
        for (int fed = 0; rc == 0 && fed < b->context; fed += MAX_STEP) {
            const int n = b->context - fed < MAX_STEP ? b->context - fed : MAX_STEP;
            char msg[512];
            if (kv_seq_reserve(b->cache, &b->seqs[s], b->tokens + (size_t)s * per_seq + fed, n, msg,
                               sizeof msg) != DS_OK) {
                fprintf(stderr, "%s: reserve: %s\n", PROG, msg);
                rc = -1;
            } else {
                kv_seq_commit(b->cache, &b->seqs[s]);
            }
        }
    for (int s = 0, fed = 0; !b->no_prefill && rc == 0 && s < batch;) {
        int n = 0, rows = 0;
        while (s < batch && rows < MAX_STEP) {
            int chunk = b->context - fed;
            chunk = chunk < MAX_STEP - rows ? chunk : MAX_STEP - rows;
            b->step[n++] = (llama_step_seq){
                .kv = &b->seqs[s],
                .tokens = b->tokens + (size_t)s * per_seq + fed,
                .n_tokens = chunk,
                .logits = fed + chunk == b->context ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_NONE};
            rows += chunk, fed += chunk;
            if (fed == b->context) s++, fed = 0;
        }
        rc = run(b, n);
    }
    *prefill_tps = b->no_prefill ? 0.0 : (double)batch * b->context / (ds_now_s() - t0);
    double t_steps = 0.0, ar0 = 0.0, head0 = 0.0;
    for (int it = 0; rc == 0 && it < WARMUP + b->steps; it++) {
        for (int s = 0; s < batch; s++)
            b->step[s] =
                (llama_step_seq){.kv = &b->seqs[s],
                                 .tokens = b->tokens + (size_t)s * per_seq + b->seqs[s].n_tokens,
                                 .n_tokens = 1,
                                 .logits = LLAMA_LOGITS_LAST};
        if (it == WARMUP && b->shares) part_ms(b, &ar0, &head0);
        double t = ds_now_s();
        rc = run(b, batch);
        if (it >= WARMUP) t_steps += ds_now_s() - t;
    }
    char ar_share[16] = "-", head_share[16] = "-";
    if (b->shares) {
        double ar, head;
        part_ms(b, &ar, &head);
        if (b->tp)
            snprintf(ar_share, sizeof ar_share, "%.1f%%", 100.0 * (ar - ar0) / (1e3 * t_steps));
        snprintf(head_share, sizeof head_share, "%.1f%%", 100.0 * (head - head0) / (1e3 * t_steps));
    }
    /* The step's floor: weights once, plus every sequence's context in the cache's format. */
    const double kv_bytes = (double)batch * b->context * kv_cache_bytes_per_token(b->cache);
    const double limit_ms = 1e3 * (b->weights_bytes + kv_bytes) / b->copy_rate;
    const double ms = 1e3 * t_steps / b->steps;
    if (rc == 0)
        printf("| %d | %s | %s | %d | %d | %.2f | %.2f | %.0f%% | %.0f | %.0f | %s | %s |\n",
               b->tp ? b->tp : 1, kv_name, path, batch, b->context, ms, limit_ms,
               100.0 * limit_ms / ms, (double)batch * b->steps / t_steps, *prefill_tps, ar_share,
               head_share);
    fflush(stdout);
    for (int s = 0; s < batch; s++)
        kv_seq_release(b->cache, &b->seqs[s]);
    return rc;
}

/* 1 if name is an item of the comma-separated list. */
static int in_list(const char *list, const char *name) {
    char l[256], w[64];
    snprintf(l, sizeof l, ",%s,", list);
    snprintf(w, sizeof w, ",%s,", name);
    return strstr(l, w) != NULL;
}

static int parse_batches(const char *s, int *out, int *n) {
    *n = 0;
    for (const char *p = s; *p && *n < MAX_BATCHES;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1024 || (*end && *end != ',')) return -1;
        out[(*n)++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return *n ? 0 : -1;
}

int main(int argc, char **argv) {
    int context = 1024, steps = 32, block_size = 32, batches[MAX_BATCHES] = {1, 16, 64};
    int n_batches = 3, tp = 0, no_prefill = 0, shares = 0, gemv_rows = 0;
    const char *kv_list = "fp16,kivi4,decoquant4", *path_list = "graph";
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--no-prefill")) {
            no_prefill = 1;
            continue;
        }
        if (!strcmp(argv[i], "--shares")) {
            shares = 1;
            continue;
        }
        if (!strcmp(argv[i], "--context")) {
            if (cli_int(PROG, "--context", v, 1, 131000, &context)) return 2;
        } else if (!strcmp(argv[i], "--tp")) {
            if (cli_int(PROG, "--tp", v, 1, 8, &tp)) return 2;
        } else if (!strcmp(argv[i], "--kv")) {
            kv_list = v;
        } else if (!strcmp(argv[i], "--paths")) {
            path_list = v;
        } else if (!strcmp(argv[i], "--gemv-rows")) {
            if (cli_int(PROG, "--gemv-rows", v, -1, 8, &gemv_rows)) return 2;
        } else if (!strcmp(argv[i], "--steps")) {
            if (cli_int(PROG, "--steps", v, 1, 1000, &steps)) return 2;
        } else if (!strcmp(argv[i], "--block")) {
            if (cli_int(PROG, "--block", v, 16, 64, &block_size)) return 2;
        } else if (!strcmp(argv[i], "--batches")) {
            if (parse_batches(v, batches, &n_batches)) {
                fprintf(stderr, "%s: --batches = '%s': expected a list like 1,16,64\n", PROG, v);
                return 2;
            }
        } else {
            fprintf(stderr,
                    "usage: %s [--context N] [--steps N] [--batches 1,16,64] [--block N] [--kv "
                    "fp16,kivi4,decoquant4] [--paths graph,eager,logits] [--gemv-rows N] [--tp N] "
                    "[--shares] "
                    "[--no-prefill]\n",
                    PROG);
            return 2;
        }
        i++;
    }
    int max_batch = 0;
    for (int i = 0; i < n_batches; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;

    char msg[512], name[128];
    llama_config config;
    if (synthetic_shape("llama3-8b", &config, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    const int per_seq = context + steps + WARMUP;
    if (per_seq > config.context_length) config.context_length = per_seq; /* Llama 3.1: 128k */
    const llama_model model = {.config = config};
    size_t free_bytes, total;
    if (cuda_device_memory(0, &free_bytes, &total, name, sizeof name, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    bench b = {
        .context = context, .steps = steps, .tp = tp, .no_prefill = no_prefill, .shares = shares};
    if (cuda_device_copy_rate(0, &b.copy_rate, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    cuda_layout lay;
    const cuda_layout_options lo = {.max_rows = MAX_STEP, .max_seqs = 64, .block_size = 32};
    cuda_layout_compute(&config, &lo, &lay);
    /* every weight is read once a step except the embedding table (one row per token) */
    b.weights_bytes = (double)lay.weights_bytes -
                      (config.tied_embeddings ? 0.0 : 2.0 * config.vocab_size * config.d_model);
    b.rows = calloc((size_t)max_batch, sizeof *b.rows); /* temperature 0: greedy */
    b.sampled = calloc((size_t)max_batch, sizeof *b.sampled);
    b.logits = malloc((size_t)max_batch * config.vocab_size * sizeof(float));
    b.tokens = malloc((size_t)max_batch * per_seq * sizeof(int32_t));
    b.seqs = calloc((size_t)max_batch, sizeof *b.seqs);
    b.step = calloc((size_t)max_batch, sizeof *b.step);
    if (!b.logits || !b.tokens || !b.seqs || !b.step || !b.rows || !b.sampled) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    ds_rng rng = {2024};
    for (size_t i = 0; i < (size_t)max_batch * per_seq; i++)
        b.tokens[i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)config.vocab_size);

    printf("bench_decode: llama3-8b shape, random fp16 weights, %s (%.1f GiB free of %.1f), "
           "context %d%s, %d timed decode steps, block %d; device copy %.0f GB/s (read + "
           "write); limit = (weights %.2f GB + KV) / copy rate\n\n",
           name, (double)free_bytes / (1 << 30), (double)total / (1 << 30), context,
           no_prefill ? " (not prefilled)" : "", steps, block_size, b.copy_rate / 1e9,
           b.weights_bytes / 1e9);
    printf("| GPUs | kv | path | batch | context | ms/step | limit ms | of limit | output tok/s | "
           "prefill tok/s | all-reduce share | LM head share |\n");
    printf("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
    const struct {
        const char *name;
        dq_method method;
        int bits;
    } kvs[] = {{"fp16", DQ_FP16, 16}, {"kivi4", DQ_KIVI, 4}, {"decoquant4", DQ_DECOQUANT, 4}};
    int rc = 0;
    static const char *const paths[] = {"graph", "eager", "logits"};
    for (size_t k = 0; rc == 0 && k < sizeof kvs / sizeof kvs[0] * 3; k++) {
        const char *path = paths[k % 3];
        if (!in_list(kv_list, kvs[k / 3].name) || !in_list(path_list, path)) continue;
        kv_cache_config kc = {.n_layers = config.n_layers,
                              .n_kv_heads = config.n_kv_heads,
                              .head_dim = config.head_dim,
                              .block_size = block_size,
                              .key_codec = dq_config_defaults(kvs[k / 3].method, kvs[k / 3].bits),
                              .n_open_blocks = max_batch + MAX_STEP / block_size + 1,
                              .n_full_blocks = max_batch * (per_seq / block_size + 1),
                              .no_storage = 1};
        kc.key_codec.group_size = 64;
        kc.value_codec = kc.key_codec;
        const cuda_backend_options o = {.max_step_tokens = MAX_STEP,
                                        .max_seqs = max_batch,
                                        .random_weights = 1,
                                        .seed = 42,
                                        .time_parts = b.shares,
                                        .enforce_eager = strcmp(path, "graph") != 0,
                                        .gemv_rows = gemv_rows};
        b.sample = strcmp(path, "logits") != 0;
        const cuda_tp_config tc = {.world = tp, .n_nodes = 1, .timeout_ms = 120000};
        if (kv_cache_create(&kc, &b.cache, msg, sizeof msg) != DS_OK ||
            (tp ? cuda_tp_backend_create(&model, b.cache, &o, &tc, &b.backend, msg, sizeof msg)
                : cuda_backend_create(&model, b.cache, &o, &b.backend, msg, sizeof msg)) != DS_OK) {
            fprintf(stderr, "%s: %s: %s\n", PROG, kvs[k / 3].name, msg);
            kv_cache_destroy(b.cache);
            rc = 1;
            break;
        }
        for (int i = 0; rc == 0 && i < n_batches; i++) {
            double prefill_tps;
            rc = bench_batch(&b, batches[i], kvs[k / 3].name, path, &prefill_tps);
        }
        b.backend.destroy(b.backend.impl);
        kv_cache_destroy(b.cache);
    }
    free(b.logits), free(b.tokens), free(b.seqs), free(b.step), free(b.rows), free(b.sampled);
    return rc;
}
