/* tests/gpu/model_test.c — the whole model on the GPU (engine/cuda/cuda_backend.h) against the CPU
 * forward pass (engine/llama.h, fp32 weights) on SmolLM2-135M-shaped random weights generated
 * here from a seed, step for step over one shared block manager: prefill chunks, a batch of
 * several sequences, decodes, at kv-bits 16, 4 (KIVI) and 4 (DecoQuant), plus bf16 weights.
 * Both passes read the same block tables; tokens follow the CPU's greedy choice (teacher
 * forcing), so every step compares the same computation. One line per check:
 *     PASS|FAIL <what> <numbers>
 * and a summary; exits 1 if any check failed. Run by tests/gpu/run_model.sh.
 *
 * Tolerance (fp16 or bf16 weights and activations, fp32 accumulation, against fp32): per logits
 * row, max |gpu - cpu| <= tol x (max - min of the CPU row), tol = 1% for fp16 with fp16 KV, 3% with
 * 4-bit KV (a K/V value the two passes round to neighbouring codes moves one quantisation step)
 * and 3% for bf16 weights (8 mantissa bits against fp16's 11); and greedy tokens consistent: the
 * GPU's argmax scores, on the CPU, within twice that row's max difference of the CPU's best
 * (raw argmax agreement is reported too, and must be >= 90%).
 *
 * Then the serving engine's --async-scheduling on the GPU (check_async_scheduling): the same
 * workload with and without it must stream exactly the same tokens. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/plan.h"
#include "engine/llama.h"
#include "engine/loader/synthetic.h"
#include "engine/serving.h"
#include "tests/gpu/check.h"

/* SmolLM2-135M's shape (engine/loader/synthetic.h) with n_layers layers and a 2k context. */
static llama_config smollm2_config(int n_layers) {
    llama_config c;
    char msg[256];
    if (synthetic_shape("smollm2-135m", &c, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "model_test: %s\n", msg);
        exit(1);
    }
    c.n_layers = n_layers, c.context_length = 2048;
    return c;
}

static void fill(ds_rng *rng, float *p, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i++)
        p[i] = mean + std * ds_rng_gauss(rng);
}

/* Random fp32 weights: projections N(0, 0.02), embeddings N(0, 0.05), norms N(1, 0.1). */
static int make_model(llama_model *m, int n_layers, uint64_t seed) {
    memset(m, 0, sizeof *m);
    m->config = smollm2_config(n_layers);
    char msg[256];
    if (llama_model_alloc(m, msg, sizeof msg) != DS_OK) {
        report(0, "model alloc: %s", msg);
        return -1;
    }
    const llama_config *c = &m->config;
    const size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim;
    const size_t kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff;
    ds_rng rng = {seed};
    fill(&rng, m->tok_embd, (size_t)c->vocab_size * d, 0.0f, 0.05f);
    fill(&rng, m->output_norm, d, 1.0f, 0.1f);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        fill(&rng, L->attn_norm, d, 1.0f, 0.1f), fill(&rng, L->ffn_norm, d, 1.0f, 0.1f);
        fill(&rng, L->wq, q * d, 0.0f, 0.02f), fill(&rng, L->wk, kv * d, 0.0f, 0.02f);
        fill(&rng, L->wv, kv * d, 0.0f, 0.02f), fill(&rng, L->wo, d * q, 0.0f, 0.02f);
        fill(&rng, L->w_gate, ff * d, 0.0f, 0.02f), fill(&rng, L->w_up, ff * d, 0.0f, 0.02f);
        fill(&rng, L->w_down, d * ff, 0.0f, 0.02f);
    }
    return 0;
}

/* Logit agreement over every compared row of one configuration. */
typedef struct agreement {
    double worst_rel;      /* max over rows of max |d| / range */
    double worst_abs;      /* max |d| */
    double range_at_worst; /* the CPU row's range where worst_rel was seen */
    long rows, same_argmax, consistent;
} agreement;

static void compare_rows(agreement *a, const float *cpu, const float *gpu, int rows, int vocab) {
    for (int r = 0; r < rows; r++) {
        const float *c = cpu + (size_t)r * vocab, *g = gpu + (size_t)r * vocab;
        double mx = -INFINITY, mn = INFINITY, diff = 0.0;
        int best_c = 0, best_g = 0;
        for (int i = 0; i < vocab; i++) {
            mx = c[i] > mx ? c[i] : mx;
            mn = c[i] < mn ? c[i] : mn;
            const double d = fabs((double)c[i] - g[i]);
            diff = d > diff || d != d ? d : diff;
            if (c[i] > c[best_c]) best_c = i;
            if (g[i] > g[best_g]) best_g = i;
        }
        const double rel = diff / (mx - mn);
        if (rel >= a->worst_rel || rel != rel) a->worst_rel = rel, a->range_at_worst = mx - mn;
        a->worst_abs = diff > a->worst_abs ? diff : a->worst_abs;
        a->rows++;
        a->same_argmax += best_c == best_g;
        a->consistent += c[best_g] >= c[best_c] - 2.0 * diff;
    }
}

typedef struct scenario_config {
    const char *name;
    dq_method method;
    int bits, block_size;
    cuda_weight_type weights;
    double tol;
} scenario_config;

enum { N_SEQS = 4, MAX_STEP = 160, DECODE_STEPS = 30, MAX_TOKENS = 256 };

/* Runs the schedule on both backends over one cache; 0 if it ran to the end. */
static int run_scenario(const llama_model *m, const scenario_config *sc) {
    const llama_config *c = &m->config;
    char msg[512];
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = sc->block_size,
                          .key_codec = dq_config_defaults(sc->method, sc->bits),
                          .n_open_blocks = 96,
                          .n_full_blocks = 120};
    kc.key_codec.group_size = 64;
    kc.value_codec = kc.key_codec;
    kv_cache *cache = NULL;
    llama_engine *cpu = NULL;
    engine_backend gpu = {0};
    float *cpu_logits = malloc((size_t)MAX_STEP * c->vocab_size * sizeof(float));
    float *gpu_logits = malloc((size_t)MAX_STEP * c->vocab_size * sizeof(float));
    ds_status st = kv_cache_create(&kc, &cache, msg, sizeof msg);
    const llama_engine_options eo = {.max_step_tokens = MAX_STEP, .weight_type = QM_F32};
    if (st == DS_OK) st = llama_engine_create(m, cache, &eo, &cpu, msg, sizeof msg);
    const cuda_backend_options go = {
        .max_step_tokens = MAX_STEP, .max_seqs = N_SEQS, .weight_type = sc->weights};
    if (st == DS_OK) st = cuda_backend_create(m, cache, &go, &gpu, msg, sizeof msg);
    if (st != DS_OK || !cpu_logits || !gpu_logits) {
        report(0, "%s: set-up: %s", sc->name, msg);
        free(cpu_logits), free(gpu_logits);
        llama_engine_destroy(cpu);
        kv_cache_destroy(cache);
        return -1;
    }
    /* Scatter the pools' free lists so block ids are not 0, 1, 2, ... */
    ds_rng rng = {0x5eed ^ (uint64_t)sc->bits};
    kv_seq churn[6];
    int32_t zeros[100] = {0};
    for (int i = 0; i < 6; i++) {
        kv_seq_init(&churn[i]);
        if (kv_seq_reserve(cache, &churn[i], zeros, 1 + (int)(ds_rng_u64(&rng) % 99), msg,
                           sizeof msg) == DS_OK)
            kv_seq_commit(cache, &churn[i]);
    }
    for (int i = 0; i < 6; i++)
        kv_seq_release(cache, &churn[(i * 5) % 6]);

    kv_seq seqs[N_SEQS];
    int32_t tokens[N_SEQS][MAX_TOKENS];
    int n_prompt[N_SEQS] = {83, 29, 70, 5}, n_done[N_SEQS] = {0};
    for (int s = 0; s < N_SEQS; s++) {
        kv_seq_init(&seqs[s]);
        for (int i = 0; i < n_prompt[s]; i++)
            tokens[s][i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)c->vocab_size);
    }
    /* The schedule: (sequence, new tokens, logits) per step; decodes fill in the rest. */
    typedef struct item {
        int seq, n;
        llama_logits logits;
    } item;
    const item prefill[3][4] = {
        {{0, 45, LLAMA_LOGITS_ALL}, {-1, 0, 0}},
        {{0, 38, LLAMA_LOGITS_ALL}, {1, 29, LLAMA_LOGITS_LAST}, {-1, 0, 0}},
        {{2, 70, LLAMA_LOGITS_ALL},
         {3, 5, LLAMA_LOGITS_LAST},
         {0, 1, LLAMA_LOGITS_LAST},
         {1, 1, LLAMA_LOGITS_LAST}},
    };
    agreement a = {0};
    int ok = 1;
    for (int step = 0; ok && step < 3 + DECODE_STEPS; step++) {
        llama_step_seq batch[N_SEQS];
        int n = 0;
        for (int i = 0; i < 4; i++) {
            const item it = step < 3 ? prefill[step][i] : (item){i, 1, LLAMA_LOGITS_LAST};
            if (it.seq < 0) break;
            batch[n++] = (llama_step_seq){.kv = &seqs[it.seq],
                                          .tokens = tokens[it.seq] + n_done[it.seq],
                                          .n_tokens = it.n,
                                          .logits = it.logits};
        }
        for (int i = 0; ok && i < n; i++)
            ok = kv_seq_reserve(cache, batch[i].kv, batch[i].tokens, batch[i].n_tokens, msg,
                                sizeof msg) == DS_OK;
        if (ok) ok = llama_engine_forward(cpu, batch, n, cpu_logits, msg, sizeof msg) == DS_OK;
        if (ok) ok = gpu.forward(gpu.impl, batch, n, gpu_logits, msg, sizeof msg) == DS_OK;
        if (!ok) {
            report(0, "%s: step %d: %s", sc->name, step, msg);
            break;
        }
        const int rows = llama_step_logit_rows(batch, n);
        compare_rows(&a, cpu_logits, gpu_logits, rows, c->vocab_size);
        /* Commit, then append each sampled sequence's CPU greedy token. */
        for (int i = 0, row = 0; i < n; i++) {
            const int s = (int)(batch[i].kv - seqs);
            kv_seq_commit(cache, batch[i].kv);
            n_done[s] += batch[i].n_tokens;
            const int out_rows = batch[i].logits == LLAMA_LOGITS_ALL    ? batch[i].n_tokens
                                 : batch[i].logits == LLAMA_LOGITS_LAST ? 1
                                                                        : 0;
            row += out_rows;
            if (batch[i].logits == LLAMA_LOGITS_NONE || n_done[s] < n_prompt[s]) continue;
            const float *last = cpu_logits + (size_t)(row - 1) * c->vocab_size;
            int best = 0;
            for (int v = 1; v < c->vocab_size; v++)
                if (last[v] > last[best]) best = v;
            tokens[s][n_done[s]] = best;
        }
    }
    if (ok) {
        const double agree = (double)a.same_argmax / (double)a.rows;
        report(a.worst_rel <= sc->tol && a.consistent == a.rows && agree >= 0.9,
               "model %s (%d layers, block %d): %ld logit rows, max |d| %.3g = %.3g of the range "
               "%.3g (tol %.3g); greedy agreement %ld/%ld (%.1f%%), consistent %ld/%ld",
               sc->name, c->n_layers, sc->block_size, a.rows, a.worst_abs, a.worst_rel,
               a.range_at_worst, sc->tol, a.same_argmax, a.rows, 100.0 * agree, a.consistent,
               a.rows);
    }
    for (int s = 0; s < N_SEQS; s++) {
        if (seqs[s].n_reserved != seqs[s].n_tokens) kv_seq_rollback(cache, &seqs[s]);
        kv_seq_release(cache, &seqs[s]);
    }
    gpu.destroy(gpu.impl);
    llama_engine_destroy(cpu);
    kv_cache_destroy(cache);
    free(cpu_logits), free(gpu_logits);
    return ok ? 0 : -1;
}

/* --random-weights: a model with no weight buffers at all; one step gives finite logits. And a
 * pool too large for any GPU answers DS_ENOMEM naming it. */
static void check_random_weights_and_enomem(void) {
    llama_model m = {.config = smollm2_config(4)};
    const llama_config *c = &m.config;
    char msg[512];
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = 32,
                          .key_codec = dq_config_defaults(DQ_KIVI, 4),
                          .n_open_blocks = 8,
                          .n_full_blocks = 8,
                          .no_storage = 1};
    kc.value_codec = kc.key_codec;
    kv_cache *cache;
    if (kv_cache_create(&kc, &cache, msg, sizeof msg) != DS_OK) {
        report(0, "random weights: cache: %s", msg);
        return;
    }
    cuda_backend_options o = {
        .max_step_tokens = 64, .max_seqs = 2, .random_weights = 1, .seed = 1234};
    engine_backend b;
    ds_status st = cuda_backend_create(&m, cache, &o, &b, msg, sizeof msg);
    if (st != DS_OK) {
        report(0, "random weights: create: %s", msg);
        kv_cache_destroy(cache);
        return;
    }
    kv_seq seq;
    kv_seq_init(&seq);
    int32_t prompt[40];
    for (int i = 0; i < 40; i++)
        prompt[i] = i * 1000 + 7;
    float *logits = malloc((size_t)c->vocab_size * sizeof(float));
    llama_step_seq step = {.kv = &seq, .tokens = prompt, .n_tokens = 40};
    st = kv_seq_reserve(cache, &seq, prompt, 40, msg, sizeof msg);
    if (st == DS_OK) st = b.forward(b.impl, &step, 1, logits, msg, sizeof msg);
    int finite = st == DS_OK;
    double lo = INFINITY, hi = -INFINITY;
    for (int i = 0; finite && i < c->vocab_size; i++) {
        finite = isfinite(logits[i]);
        lo = logits[i] < lo ? logits[i] : lo;
        hi = logits[i] > hi ? logits[i] : hi;
    }
    report(finite && hi > lo, "random weights on %s: 40-token prompt, logits in [%.3g, %.3g]%s%s",
           b.device, lo, hi, st == DS_OK ? "" : ": ", st == DS_OK ? "" : msg);
    if (st == DS_OK) kv_seq_commit(cache, &seq);
    kv_seq_release(cache, &seq);
    b.destroy(b.impl);
    kv_cache_destroy(cache);
    free(logits);

    /* fp16 pages of 64 tokens (1.4 MB a block at 30 layers): twice the GPU's memory. */
    m.config = smollm2_config(30);
    kc.n_layers = 30;
    kc.block_size = 64;
    kc.key_codec = kc.value_codec = dq_config_defaults(DQ_FP16, 16);
    size_t open_bytes, full_bytes, free_bytes, total;
    char name[128];
    if (kv_cache_block_bytes(&kc, &open_bytes, &full_bytes, msg, sizeof msg) != DS_OK ||
        cuda_device_memory(0, &free_bytes, &total, name, sizeof name, msg, sizeof msg) != DS_OK) {
        report(0, "enomem: sizes: %s", msg);
        return;
    }
    kc.n_full_blocks = (int)(2 * total / full_bytes + 1);
    if (kv_cache_create(&kc, &cache, msg, sizeof msg) != DS_OK) {
        report(0, "enomem: cache: %s", msg);
        return;
    }
    st = cuda_backend_create(&m, cache, &o, &b, msg, sizeof msg);
    report(st == DS_ENOMEM && strstr(msg, "KV cache") && strstr(msg, "free"),
           "a KV pool of twice the GPU's memory: %s: %s", ds_status_str(st), msg);
    if (st == DS_OK) b.destroy(b.impl);
    kv_cache_destroy(cache);
}

/* Decoding sampled on the GPU (temperature 1, top-p 0.95, the same uniforms), through CUDA graphs
 * and eagerly, on the same weights:
 * `n` sequences of different prompt lengths, then `steps` decodes, one sequence leaving half way
 * (so two graph sizes run). Fills *tokens [n][steps] (-1 after a sequence left); 0 on success. */
static int decode_on_gpu(const llama_model *m, int eager, int gemv_rows, dq_method method, int bits,
                         int n, int steps, int32_t *tokens) {
    enum { MAXN = 4, T = 16, PROMPT = 70 };
    char msg[512];
    kv_cache_config kc = {.n_layers = m->config.n_layers,
                          .n_kv_heads = m->config.n_kv_heads,
                          .head_dim = m->config.head_dim,
                          .block_size = T,
                          .key_codec = dq_config_defaults(method, bits),
                          .n_open_blocks = 64,
                          .n_full_blocks = 256,
                          .no_storage = 1};
    kc.value_codec = kc.key_codec;
    kv_cache *cache = NULL;
    engine_backend be = {0};
    const cuda_backend_options o = {
        .max_step_tokens = 256, .max_seqs = MAXN, .enforce_eager = eager, .gemv_rows = gemv_rows};
    if (kv_cache_create(&kc, &cache, msg, sizeof msg) != DS_OK ||
        cuda_backend_create(m, cache, &o, &be, msg, sizeof msg) != DS_OK) {
        printf("FAIL graph check: %s\n", msg);
        kv_cache_destroy(cache);
        return -1;
    }
    kv_seq seqs[MAXN];
    int32_t prompt[MAXN][PROMPT], next[MAXN];
    ds_rng rng = {77};
    llama_step_seq step[MAXN];
    sample_row rows[MAXN]; /* sampled (greedy on random weights repeats one token): the same
                              uniforms in both runs */
    ds_rng draws = {1234};
    for (int s = 0; s < MAXN; s++)
        rows[s] = (sample_row){.temperature = 1.0f, .top_p = 0.95f};
    int rc = 0;
    for (int s = 0; s < n; s++) {
        kv_seq_init(&seqs[s]);
        for (int i = 0; i < PROMPT; i++)
            prompt[s][i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)m->config.vocab_size);
        const int len = PROMPT - 11 * s;
        rc |= kv_seq_reserve(cache, &seqs[s], prompt[s], len, msg, sizeof msg) != DS_OK;
        step[s] = (llama_step_seq){.kv = &seqs[s], .tokens = prompt[s], .n_tokens = len};
    }
    if (!rc) rc = be.forward_sample(be.impl, step, n, rows, next, NULL, msg, sizeof msg) != DS_OK;
    for (int s = 0; s < n; s++)
        rc ? kv_seq_rollback(cache, &seqs[s]) : kv_seq_commit(cache, &seqs[s]);
    int live = n;
    for (int t = 0; !rc && t < steps; t++) {
        if (t == steps / 2) live = n - 1; /* the last sequence leaves */
        for (int s = 0; s < n; s++)
            tokens[s * steps + t] = s < live ? next[s] : -1;
        for (int s = 0; !rc && s < live; s++) {
            rc |= kv_seq_reserve(cache, &seqs[s], &next[s], 1, msg, sizeof msg) != DS_OK;
            step[s] =
                (llama_step_seq){.kv = &seqs[s], .tokens = &tokens[s * steps + t], .n_tokens = 1};
        }
        for (int s = 0; s < live; s++)
            rows[s].u = (double)(ds_rng_u64(&draws) >> 11) * 0x1.0p-53;
        if (!rc)
            rc = be.forward_sample(be.impl, step, live, rows, next, NULL, msg, sizeof msg) != DS_OK;
        for (int s = 0; s < live; s++)
            rc ? kv_seq_rollback(cache, &seqs[s]) : kv_seq_commit(cache, &seqs[s]);
    }
    if (rc) printf("FAIL graph check step: %s\n", msg);
    for (int s = 0; s < n; s++)
        kv_seq_release(cache, &seqs[s]);
    be.destroy(be.impl);
    kv_cache_destroy(cache);
    return rc ? -1 : 0;
}

/* CUDA graphs (padded buckets, run-time split sizes and fill counts) against eager launches: at
 * a batch size that is a bucket (4) the same kernels run on the same rows, so the sampled tokens
 * must agree exactly; after one sequence leaves, 3 rows are padded to 4 (a GEMM of 4 rows may
 * sum in another order than one of 3), so nearly; and the small-batch GEMV path against cuBLAS
 * for one sequence. The tokens must vary (the check would be empty otherwise). */
static void check_graphs(const llama_model *m) {
    enum { STEPS = 24 };
    static const struct {
        const char *name;
        dq_method method;
        int bits;
    } kvs[] = {{"kv16", DQ_FP16, 16}, {"kivi4", DQ_KIVI, 4}, {"decoquant4", DQ_DECOQUANT, 4}};
    for (size_t k = 0; k < sizeof kvs / sizeof kvs[0]; k++) {
        int32_t graph[4 * STEPS], eager[4 * STEPS];
        if (decode_on_gpu(m, 0, 0, kvs[k].method, kvs[k].bits, 4, STEPS, graph) ||
            decode_on_gpu(m, 1, 0, kvs[k].method, kvs[k].bits, 4, STEPS, eager))
            continue;
        int exact_part = 1, same = 0, n = 0, distinct = 0;
        for (int s = 0; s < 4; s++)
            for (int t = 0; t < STEPS; t++) {
                const int i = s * STEPS + t;
                if (graph[i] < 0 && eager[i] < 0) continue;
                n++, same += graph[i] == eager[i];
                if (t < STEPS / 2) exact_part &= graph[i] == eager[i];
                distinct += t > 0 && graph[i] != graph[i - 1];
            }
        report(exact_part && same >= n * 9 / 10 && distinct > n / 4,
               "graphs vs eager %s, 4 then 3 sequences, %d sampled steps: unpadded part exact %d, "
               "agreement %d/%d, token changes %d",
               kvs[k].name, STEPS, exact_part, same, n, distinct);
    }
    /* The GEMV path against cuBLAS: the logits of a prefill and of 16 teacher-forced decodes
     * of one sequence (a few rows' matrix products sum in another order: tolerance 0.2% of each
     * row's range). */
    enum { T = 16, PROMPT = 40, N = PROMPT + 16 };
    const int V = m->config.vocab_size;
    float *logits[2] = {malloc((size_t)17 * V * sizeof(float)),
                        malloc((size_t)17 * V * sizeof(float))};
    int32_t toks[N];
    ds_rng rng = {99};
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)V);
    int ok = 1;
    for (int g = 0; g < 2 && ok; g++) {
        char msg[512];
        kv_cache_config kc = {.n_layers = m->config.n_layers,
                              .n_kv_heads = m->config.n_kv_heads,
                              .head_dim = m->config.head_dim,
                              .block_size = T,
                              .key_codec = dq_config_defaults(DQ_FP16, 16),
                              .n_open_blocks = 16,
                              .n_full_blocks = 16,
                              .no_storage = 1};
        kc.value_codec = kc.key_codec;
        kv_cache *cache = NULL;
        engine_backend be = {0};
        const cuda_backend_options o = {
            .max_step_tokens = 64, .max_seqs = 1, .enforce_eager = 1, .gemv_rows = g ? -1 : 1};
        ok = kv_cache_create(&kc, &cache, msg, sizeof msg) == DS_OK &&
             cuda_backend_create(m, cache, &o, &be, msg, sizeof msg) == DS_OK;
        kv_seq seq;
        kv_seq_init(&seq);
        for (int i = 0; ok && i < 17; i++) {
            const int at = i ? PROMPT + i - 1 : 0, n = i ? 1 : PROMPT;
            llama_step_seq st = {.kv = &seq, .tokens = toks + at, .n_tokens = n};
            ok = kv_seq_reserve(cache, &seq, toks + at, n, msg, sizeof msg) == DS_OK;
            ok = ok &&
                 be.forward(be.impl, &st, 1, logits[g] + (size_t)i * V, msg, sizeof msg) == DS_OK;
            ok ? kv_seq_commit(cache, &seq) : kv_seq_rollback(cache, &seq);
        }
        if (!ok) printf("FAIL gemv check: %s\n", msg);
        kv_seq_release(cache, &seq);
        if (be.destroy) be.destroy(be.impl);
        kv_cache_destroy(cache);
    }
    agreement a = {0};
    if (ok) compare_rows(&a, logits[1], logits[0], 17, V);
    report(ok && a.worst_rel <= 2e-3 && a.consistent == 17,
           "gemv vs cuBLAS, one sequence, prefill + 16 decodes: max |d| %.2g = %.2g of the range, "
           "greedy agreement %ld/17, consistent %ld/17",
           a.worst_abs, a.worst_rel, a.same_argmax, a.consistent);
    free(logits[0]), free(logits[1]);
}

/* --async-scheduling through the serving engine on the GPU (launch / collect, the on-device
 * hand-off, graphs or eager, the look-ahead at max_tokens): ASYNC_N requests of different prompt
 * lengths, max_tokens 1..40, seeded sampling (temperature 1, top-p 0.95) and greedy, one
 * cancelled, in a KV pool small enough to preempt, on SmolLM2-shaped random weights. Only length
 * finishes (ignore_eos, no stop ids), so the async engine runs the synchronous engine's batches
 * (serving.c) and the tokens and finishes must agree exactly. The GPU's sums depend on the batch,
 * so the cancellation comes at the same step in both runs: the synchronous run cancels once the
 * request has streamed 6 tokens, the async one once it has streamed 5 (its 6th is then in flight,
 * and dropped), so its tokens are the synchronous ones less the last. */
enum { ASYNC_N = 12, ASYNC_MAX_OUT = 40, ASYNC_CANCEL = 5, ASYNC_CANCEL_AFTER = 6 };

typedef struct served {
    int32_t ids[ASYNC_MAX_OUT];
    int n;
    serving_finish finish;
} served;

static void take_output(serving_stream *st, served *c) {
    serving_output out = {0};
    while (serving_stream_poll(st, &out)) {
        for (int i = 0; i < out.n_token_ids && c->n < ASYNC_MAX_OUT; i++)
            c->ids[c->n++] = out.token_ids[i];
        if (out.finish) c->finish = out.finish;
    }
    serving_output_free(&out);
}

/* Runs the workload; *preemptions and *whole (both pools full again) from the final stats. */
static int serve_workload(int async, int eager, int kv_bits, served *out, int64_t *preemptions,
                          int *whole) {
    const int cancel_after = ASYNC_CANCEL_AFTER - async;
    serving_options o;
    serving_options_default(&o);
    o.device = SERVING_CUDA;
    o.random_weights = "smollm2-135m";
    o.seed = 0x5eed;
    o.kv_bits = kv_bits;
    o.block_size = 16;
    o.max_seqs = 8;
    o.max_batched_tokens = 64;
    o.enforce_eager = eager;
    o.async_scheduling = async;
    /* the open pool (max_seqs + 64 / 16 + 1 blocks) and 20 full blocks: the 8 running sequences
     * need up to 8 each */
    llama_config c = smollm2_config(30);
    kv_cache_config kc = {.n_layers = c.n_layers,
                          .n_kv_heads = c.n_kv_heads,
                          .head_dim = c.head_dim,
                          .block_size = 16,
                          .key_codec =
                              dq_config_defaults(kv_bits == 16 ? DQ_FP16 : DQ_KIVI, kv_bits)};
    kc.value_codec = kc.key_codec;
    size_t open_bytes, full_bytes;
    char msg[512];
    serving *s = NULL;
    if (kv_cache_block_bytes(&kc, &open_bytes, &full_bytes, msg, sizeof msg) != DS_OK ||
        (o.kv_memory_bytes = (int64_t)(13 * open_bytes + 20 * full_bytes),
         serving_create(&o, &s, msg, sizeof msg) != DS_OK)) {
        printf("FAIL async check: serving_create: %s\n", msg);
        return -1;
    }
    serving_info info;
    serving_get_info(s, &info);
    serving_stream *st[ASYNC_N];
    ds_rng rng = {31};
    int rc = info.async_scheduling != async, n_submitted = 0;
    for (int i = 0; !rc && i < ASYNC_N; i++) {
        int32_t prompt[100];
        const int n = 5 + (i * 37) % 90;
        for (int k = 0; k < n; k++)
            prompt[k] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)info.vocab_size);
        serving_request q;
        serving_request_default(&q);
        q.prompt_ids = prompt, q.n_prompt_ids = n;
        q.max_tokens = i == 2 ? 1 : 4 + (i * 5) % (ASYNC_MAX_OUT - 3);
        q.ignore_eos = 1;
        q.sampling.seed = 100 + i;
        q.sampling.temperature = i % 3 ? 1.0f : 0.0f;
        q.sampling.top_p = 0.95f;
        memset(&out[i], 0, sizeof out[i]);
        rc = serving_submit(s, &q, NULL, NULL, &st[i], msg, sizeof msg) != DS_OK;
        n_submitted += !rc;
    }
    for (int worked = 1, cancelled = 0; !rc && worked;) {
        rc = serving_step(s, &worked, msg, sizeof msg) != DS_OK;
        for (int i = 0; i < ASYNC_N; i++)
            take_output(st[i], &out[i]);
        if (!cancelled && out[ASYNC_CANCEL].n >= cancel_after) {
            serving_stream_cancel(st[ASYNC_CANCEL]);
            cancelled = 1;
        }
    }
    if (rc) printf("FAIL async check (async %d): %s\n", async, msg);
    for (int i = 0; i < n_submitted; i++)
        serving_stream_release(st[i]);
    serving_stats stats;
    serving_get_stats(s, &stats);
    *preemptions = stats.preemptions;
    *whole = stats.open_blocks_free == stats.open_blocks_total &&
             stats.full_blocks_free == stats.full_blocks_total && stats.running == 0;
    serving_destroy(s);
    return rc ? -1 : 0;
}

static void check_async_scheduling(void) {
    for (int eager = 0; eager < 2; eager++)
        for (int bits = 16; bits >= 4; bits -= 12) {
            served sync[ASYNC_N], async[ASYNC_N];
            int64_t pre_sync, pre_async;
            int whole_sync, whole_async;
            if (serve_workload(0, eager, bits, sync, &pre_sync, &whole_sync) ||
                serve_workload(1, eager, bits, async, &pre_async, &whole_async))
                continue;
            int same = 1, n = 0, changes = 0;
            for (int i = 0; i < ASYNC_N; i++) {
                const int want = sync[i].n - (i == ASYNC_CANCEL); /* the dropped 6th */
                same &= async[i].n == want && sync[i].finish == async[i].finish &&
                        !memcmp(sync[i].ids, async[i].ids, (size_t)want * sizeof(int32_t));
                n += sync[i].n;
                for (int t = 1; t < sync[i].n; t++)
                    changes += sync[i].ids[t] != sync[i].ids[t - 1];
            }
            report(same && pre_sync > 0 && pre_sync == pre_async && whole_sync && whole_async &&
                       sync[ASYNC_CANCEL].finish == SERVING_CANCELLED &&
                       sync[ASYNC_CANCEL].n == ASYNC_CANCEL_AFTER && changes > n / 4,
                   "async scheduling vs sync, %s, kv%d: %d tokens identical %d, preemptions %lld "
                   "/ %lld, pools whole %d / %d, cancelled %s, token changes %d",
                   eager ? "eager" : "graphs", bits, n, same, (long long)pre_sync,
                   (long long)pre_async, whole_sync, whole_async,
                   serving_finish_name(sync[ASYNC_CANCEL].finish), changes);
        }
}

int main(int argc, char **argv) {
    const int n_layers = argc > 1 ? atoi(argv[1]) : 30;
    size_t free_bytes, total;
    char name[128], msg[256];
    if (cuda_device_memory(0, &free_bytes, &total, name, sizeof name, msg, sizeof msg) != DS_OK) {
        printf("FAIL no GPU: %s\n", msg);
        return 1;
    }
    printf("model_test on %s (%.1f of %.1f GiB free), %d layers\n", name,
           (double)free_bytes / (1 << 30), (double)total / (1 << 30), n_layers);
    llama_model m;
    if (make_model(&m, n_layers, 0x5111) != 0) return 1;
    const scenario_config scenarios[] = {
        {"fp16-weights kv16", DQ_FP16, 16, 16, CUDA_WEIGHTS_F16, 0.01},
        {"fp16-weights kivi4", DQ_KIVI, 4, 16, CUDA_WEIGHTS_F16, 0.03},
        {"fp16-weights decoquant4", DQ_DECOQUANT, 4, 16, CUDA_WEIGHTS_F16, 0.03},
        {"fp16-weights kivi4 block32", DQ_KIVI, 4, 32, CUDA_WEIGHTS_F16, 0.03},
        {"bf16-weights kv16", DQ_FP16, 16, 16, CUDA_WEIGHTS_BF16, 0.03},
    };
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
        run_scenario(&m, &scenarios[i]);
    check_graphs(&m);
    llama_model_free(&m);
    check_random_weights_and_enomem();
    check_async_scheduling();
    return report_summary("model_test");
}
