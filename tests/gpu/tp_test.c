/* tests/gpu/tp_test.c — tensor parallelism on the GPUs against one GPU: the same random-weight
 * model through the plain CUDA backend on cuda:0 and through the N-GPU backend the serving engine
 * uses for --tensor-parallel (cuda_tp_backend_create: one thread, stream and NCCL communicator
 * per GPU; rank 0 broadcasts each step's plan, the others follow on persistent threads), step for
 * step over one block manager: a prefill batch, then
 * greedy decodes (every sequence follows the reference's argmax), at kv-bits 16 and 4. N = 1 runs
 * the NCCL path on one GPU (all-reduce over one rank) and must match closely.
 *     tp_test [N]          N GPUs (default: every visible one)
 * One line per check, PASS|FAIL <what> <numbers>; exits 1 if any failed.
 *
 * Tolerance: per logits row, max |tp - ref| <= 1% of the reference row's range for fp16 KV and 3%
 * for 4-bit (a K/V value rounded to a neighbouring code; the shards sum in another order), and
 * the greedy tokens equal in >= 90% of rows with every disagreement a near-tie (the TP token
 * scores, on the reference row, within twice the row's max difference of the best). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "common/rng.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "tests/gpu/check.h"

enum { MAX_RANKS = 8, N_SEQS = 3, MAX_STEP = 128, DECODE_STEPS = 16 };

/* Llama-3-8B's proportions at a size that loads in seconds: 8 KV heads split for N = 1, 2, 4, 8. */
static llama_config check_config(void) {
    return (llama_config){.architecture = "llama",
                          .n_layers = 4,
                          .d_model = 1024,
                          .n_heads = 16,
                          .n_kv_heads = 8,
                          .head_dim = 64,
                          .d_ff = 3584,
                          .vocab_size = 32000,
                          .context_length = 2048,
                          .rms_eps = 1e-5f,
                          .rope_theta = 500000.0f};
}

static void fill(ds_rng *rng, float *p, size_t n, float mean, float std) {
    for (size_t i = 0; i < n; i++)
        p[i] = mean + std * ds_rng_gauss(rng);
}

static void fill_model(llama_model *m) {
    const llama_config *c = &m->config;
    const size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim;
    const size_t kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff;
    ds_rng rng = {2024};
    fill(&rng, m->tok_embd, (size_t)c->vocab_size * d, 0.0f, 0.05f);
    fill(&rng, m->output, (size_t)c->vocab_size * d, 0.0f, 0.05f);
    fill(&rng, m->output_norm, d, 1.0f, 0.1f);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        fill(&rng, L->attn_norm, d, 1.0f, 0.1f), fill(&rng, L->ffn_norm, d, 1.0f, 0.1f);
        fill(&rng, L->wq, q * d, 0.0f, 0.03f), fill(&rng, L->wk, kv * d, 0.0f, 0.03f);
        fill(&rng, L->wv, kv * d, 0.0f, 0.03f), fill(&rng, L->wo, d * q, 0.0f, 0.03f);
        fill(&rng, L->w_gate, ff * d, 0.0f, 0.03f), fill(&rng, L->w_up, ff * d, 0.0f, 0.03f);
        fill(&rng, L->w_down, d * ff, 0.0f, 0.03f);
    }
}

typedef struct agreement {
    double worst_rel, worst_abs;
    long rows, same_argmax, consistent;
} agreement;

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        best = x[i] > x[best] ? i : best;
    return best;
}

static void compare_rows(agreement *a, const float *ref, const float *tp, int rows, int vocab) {
    for (int r = 0; r < rows; r++) {
        const float *c = ref + (size_t)r * vocab, *g = tp + (size_t)r * vocab;
        double mx = -INFINITY, mn = INFINITY, diff = 0.0;
        for (int i = 0; i < vocab; i++) {
            mx = c[i] > mx ? c[i] : mx, mn = c[i] < mn ? c[i] : mn;
            const double d = fabs((double)c[i] - g[i]);
            diff = d > diff || d != d ? d : diff;
        }
        const double rel = diff / (mx - mn);
        a->worst_rel = rel > a->worst_rel || rel != rel ? rel : a->worst_rel;
        a->worst_abs = diff > a->worst_abs ? diff : a->worst_abs;
        const int bc = argmax(c, vocab), bg = argmax(g, vocab);
        a->rows++, a->same_argmax += bc == bg;
        a->consistent += c[bg] >= c[bc] - 2.0 * diff;
    }
}

static void run_scenario(const llama_model *m, int n_ranks, dq_method method, int bits,
                         double tol) {
    const llama_config *c = &m->config;
    char msg[768];
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = 16,
                          .key_codec = dq_config_defaults(method, bits),
                          .n_open_blocks = 64,
                          .n_full_blocks = 64,
                          .no_storage = 1};
    kc.value_codec = kc.key_codec;
    kv_cache *cache = NULL;
    engine_backend ref = {0}, tp = {0};
    const size_t logit_bytes = (size_t)MAX_STEP * c->vocab_size * sizeof(float);
    float *ref_logits = malloc(logit_bytes), *tp_logits = malloc(logit_bytes);
    ds_status st = kv_cache_create(&kc, &cache, msg, sizeof msg);
    const cuda_backend_options ro = {
        .max_step_tokens = MAX_STEP, .max_seqs = N_SEQS, .weight_type = CUDA_WEIGHTS_F16};
    if (st == DS_OK) st = cuda_backend_create(m, cache, &ro, &ref, msg, sizeof msg);
    const cuda_tp_config tc = {.world = n_ranks, .n_nodes = 1, .timeout_ms = 60000};
    if (st == DS_OK) st = cuda_tp_backend_create(m, cache, &ro, &tc, &tp, msg, sizeof msg);
    if (st == DS_OK) printf("     %s\n", tp.device);

    ds_rng rng = {77};
    kv_seq seqs[N_SEQS];
    int32_t tokens[N_SEQS][MAX_STEP + DECODE_STEPS];
    const int n_prompt[N_SEQS] = {70, 23, 9};
    int n_done[N_SEQS] = {0};
    for (int s = 0; s < N_SEQS; s++) {
        kv_seq_init(&seqs[s]);
        for (int i = 0; i < n_prompt[s]; i++)
            tokens[s][i] = (int32_t)(ds_rng_u64(&rng) % (uint64_t)c->vocab_size);
    }
    agreement a = {0};
    for (int step = 0; st == DS_OK && step <= DECODE_STEPS; step++) {
        llama_step_seq batch[N_SEQS];
        for (int s = 0; s < N_SEQS; s++)
            batch[s] = (llama_step_seq){.kv = &seqs[s],
                                        .tokens = tokens[s] + n_done[s],
                                        .n_tokens = step == 0 ? n_prompt[s] : 1,
                                        .logits = LLAMA_LOGITS_LAST};
        for (int s = 0; st == DS_OK && s < N_SEQS; s++)
            st = kv_seq_reserve(cache, batch[s].kv, batch[s].tokens, batch[s].n_tokens, msg,
                                sizeof msg);
        if (st == DS_OK) st = ref.forward(ref.impl, batch, N_SEQS, ref_logits, msg, sizeof msg);
        if (st == DS_OK) st = tp.forward(tp.impl, batch, N_SEQS, tp_logits, msg, sizeof msg);
        if (st != DS_OK) break;
        compare_rows(&a, ref_logits, tp_logits, N_SEQS, c->vocab_size);
        for (int s = 0; s < N_SEQS; s++) {
            kv_seq_commit(cache, &seqs[s]);
            n_done[s] += batch[s].n_tokens;
            tokens[s][n_done[s]] =
                (int32_t)argmax(ref_logits + (size_t)s * c->vocab_size, c->vocab_size);
        }
    }
    if (st != DS_OK) {
        report(0, "tp=%d kv-bits %d: %s", n_ranks, bits, msg);
    } else {
        report(a.worst_rel <= tol && a.same_argmax * 10 >= a.rows * 9 && a.consistent == a.rows,
               "tp=%d kv-bits %d vs one GPU: worst max|d|/range %.2e (tol %.0e), max|d| %.2e, "
               "argmax %ld/%ld, consistent %ld/%ld",
               n_ranks, bits, a.worst_rel, tol, a.worst_abs, a.same_argmax, a.rows, a.consistent,
               a.rows);
    }
    for (int s = 0; s < N_SEQS; s++)
        kv_seq_release(cache, &seqs[s]);
    if (tp.destroy) tp.destroy(tp.impl);
    if (ref.destroy) ref.destroy(ref.impl);
    kv_cache_destroy(cache);
    free(ref_logits), free(tp_logits);
}

int main(int argc, char **argv) {
    int n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess || n_devices < 1) {
        report(0, "no CUDA device");
        return 1;
    }
    const int n_ranks = argc > 1 ? atoi(argv[1]) : n_devices;
    if (n_ranks < 1 || n_ranks > n_devices || n_ranks > MAX_RANKS) {
        report(0, "tp=%d: %d device(s) visible, at most %d ranks", n_ranks, n_devices, MAX_RANKS);
        return 1;
    }
    llama_model m = {.config = check_config()};
    char msg[256];
    if (llama_model_alloc(&m, msg, sizeof msg) != DS_OK) {
        report(0, "model: %s", msg);
        return 1;
    }
    fill_model(&m);
    struct {
        dq_method method;
        int bits;
        double tol;
    } kv[] = {{DQ_FP16, 16, 0.01}, {DQ_DECOQUANT, 4, 0.03}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        run_scenario(&m, n_ranks, kv[i].method, kv[i].bits, kv[i].tol);
    llama_model_free(&m);
    return report_summary("tp_test");
}
