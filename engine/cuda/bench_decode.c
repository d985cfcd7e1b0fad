/* engine/cuda/bench_decode.c — decode throughput of the CUDA backend with random weights of
 * Llama-3-8B's shape (no checkpoint): for each KV format and batch size, prefill `batch`
 * sequences of `context` random tokens, then time `steps` decode steps of the whole batch
 * (each step one token per sequence, logits of every sequence copied to the host, as the
 * serving engine asks). Prints one Markdown table row per case.
 *   bench_decode [--context N] [--steps N] [--batches 1,16,64] [--block N]
 * Output tokens/s = batch x steps / seconds of the timed steps (after 2 untimed ones). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "common/rng.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/plan.h"

static const char PROG[] = "bench_decode";

enum { MAX_STEP = 2048, MAX_BATCHES = 8, WARMUP = 2 };

static llama_config llama3_8b(void) {
    return (llama_config){.architecture = "llama",
                          .n_layers = 32,
                          .d_model = 4096,
                          .n_heads = 32,
                          .n_kv_heads = 8,
                          .head_dim = 128,
                          .d_ff = 14336,
                          .vocab_size = 128256,
                          .context_length = 8192,
                          .rms_eps = 1e-5f,
                          .rope_theta = 500000.0f};
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct bench {
    kv_cache *cache;
    engine_backend backend;
    float *logits;        /* [max_batch][vocab]: one row per sequence of a step */
    int32_t *tokens;      /* [max_batch][context + steps + WARMUP] */
    kv_seq *seqs;         /* [max_batch] */
    llama_step_seq *step; /* [max_batch] */
    int context, steps;
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
    ds_status st = b->backend.forward(b->backend.impl, b->step, n, b->logits, msg, sizeof msg);
    for (int i = 0; i < n; i++)
        st == DS_OK ? kv_seq_commit(b->cache, b->step[i].kv)
                    : kv_seq_rollback(b->cache, b->step[i].kv);
    if (st != DS_OK) fprintf(stderr, "%s: forward: %s\n", PROG, msg);
    return st == DS_OK ? 0 : -1;
}

/* One batch size: prefill, warm up, time. */
static int bench_batch(bench *b, int batch, const char *kv_name, double *prefill_tps) {
    const int per_seq = b->context + b->steps + WARMUP;
    for (int s = 0; s < batch; s++)
        kv_seq_init(&b->seqs[s]);
    int rc = 0;
    /* Prefill: chunks of the prompts in order, up to MAX_STEP tokens per step. */
    double t0 = now_s();
    for (int s = 0, fed = 0; rc == 0 && s < batch;) {
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
    *prefill_tps = (double)batch * b->context / (now_s() - t0);
    double t_steps = 0.0;
    for (int it = 0; rc == 0 && it < WARMUP + b->steps; it++) {
        for (int s = 0; s < batch; s++)
            b->step[s] =
                (llama_step_seq){.kv = &b->seqs[s],
                                 .tokens = b->tokens + (size_t)s * per_seq + b->seqs[s].n_tokens,
                                 .n_tokens = 1,
                                 .logits = LLAMA_LOGITS_LAST};
        double t = now_s();
        rc = run(b, batch);
        if (it >= WARMUP) t_steps += now_s() - t;
    }
    if (rc == 0)
        printf("| %s | %d | %d | %.2f | %.0f | %.0f |\n", kv_name, batch, b->context,
               1e3 * t_steps / b->steps, (double)batch * b->steps / t_steps, *prefill_tps);
    fflush(stdout);
    for (int s = 0; s < batch; s++)
        kv_seq_release(b->cache, &b->seqs[s]);
    return rc;
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
    int n_batches = 3;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : "";
        if (!strcmp(argv[i], "--context")) {
            if (cli_int(PROG, "--context", v, 1, 7000, &context)) return 2;
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
            fprintf(stderr, "usage: %s [--context N] [--steps N] [--batches 1,16,64] [--block N]\n",
                    PROG);
            return 2;
        }
        i++;
    }
    int max_batch = 0;
    for (int i = 0; i < n_batches; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;

    const llama_config config = llama3_8b();
    const llama_model model = {.config = config};
    char msg[512], name[128];
    size_t free_bytes, total;
    if (cuda_device_memory(0, &free_bytes, &total, name, sizeof name, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    const int per_seq = context + steps + WARMUP;
    bench b = {.context = context, .steps = steps};
    b.logits = malloc((size_t)max_batch * config.vocab_size * sizeof(float));
    b.tokens = malloc((size_t)max_batch * per_seq * sizeof(int32_t));
    b.seqs = calloc((size_t)max_batch, sizeof *b.seqs);
    b.step = calloc((size_t)max_batch, sizeof *b.step);
    if (!b.logits || !b.tokens || !b.seqs || !b.step) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    ds_rng rng = {2024};
    for (size_t i = 0; i < (size_t)max_batch * per_seq; i++)
        b.tokens[i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)config.vocab_size);

    printf("bench_decode: llama3-8b shape, random fp16 weights, %s (%.1f GiB free of %.1f), "
           "context %d, %d timed decode steps, block %d\n\n",
           name, (double)free_bytes / (1 << 30), (double)total / (1 << 30), context, steps,
           block_size);
    printf("| kv | batch | context | ms/step | output tok/s | prefill tok/s |\n");
    printf("| --- | --- | --- | --- | --- | --- |\n");
    const struct {
        const char *name;
        dq_method method;
        int bits;
    } kvs[] = {{"fp16", DQ_FP16, 16}, {"kivi4", DQ_KIVI, 4}, {"decoquant4", DQ_DECOQUANT, 4}};
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < sizeof kvs / sizeof kvs[0]; k++) {
        kv_cache_config kc = {.n_layers = config.n_layers,
                              .n_kv_heads = config.n_kv_heads,
                              .head_dim = config.head_dim,
                              .block_size = block_size,
                              .key_codec = dq_config_defaults(kvs[k].method, kvs[k].bits),
                              .n_open_blocks = max_batch + MAX_STEP / block_size + 1,
                              .n_full_blocks = max_batch * (per_seq / block_size + 1),
                              .no_storage = 1};
        kc.key_codec.group_size = 64;
        kc.value_codec = kc.key_codec;
        const cuda_backend_options o = {
            .max_step_tokens = MAX_STEP, .max_seqs = max_batch, .random_weights = 1, .seed = 42};
        if (kv_cache_create(&kc, &b.cache, msg, sizeof msg) != DS_OK ||
            cuda_backend_create(&model, b.cache, &o, &b.backend, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: %s: %s\n", PROG, kvs[k].name, msg);
            kv_cache_destroy(b.cache);
            rc = 1;
            break;
        }
        for (int i = 0; rc == 0 && i < n_batches; i++) {
            double prefill_tps;
            rc = bench_batch(&b, batches[i], kvs[k].name, &prefill_tps);
        }
        b.backend.destroy(b.backend.impl);
        kv_cache_destroy(b.cache);
    }
    free(b.logits), free(b.tokens), free(b.seqs), free(b.step);
    return rc;
}
