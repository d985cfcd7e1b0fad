/* server/generate.c — `decoserve generate`: one completion on the CPU backend, streamed to stdout,
 * through the same paged, compressed KV cache the server uses; prints speed and KV bytes on
 * stderr. Also what tests and users run to check a model end to end without a server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cli.h"
#include "engine/llama.h"
#include "engine/model_files.h"
#include "engine/sampler.h"
#include "engine/stop.h"
#include "kvcache/paged_cache.h"
#include "server/commands.h"

static const char *PROG = "decoserve generate";

enum { PREFILL_CHUNK = 256, PROMPT_FILE_MAX = 16 << 20 };

typedef struct gen_options {
    const char *model, *prompt, *prompt_file;
    int prompt_tokens; /* 0: all */
    int kv_bits, block_size, max_tokens, ignore_eos, group_size;
    dq_method kv_method;
    qm_type weights;
    sampler_params sampling;
    const char *stops[STOP_MAX_STRINGS + 1];
    int n_stops;
} gen_options;

static void usage(FILE *out) {
    fprintf(out,
            "usage: decoserve generate --model PATH --prompt TEXT [options]\n"
            "  --model PATH          GGUF file, or HF folder (config.json, safetensors, "
            "tokenizer.json)\n"
            "  --prompt TEXT         prompt; special tokens such as <|im_start|> are parsed\n"
            "  --prompt-file PATH    read the prompt from a file instead (at most 16 MiB)\n"
            "  --prompt-tokens N     keep only the first N prompt tokens (benchmarks)\n"
            "  --kv-bits N           16 (fp16 pages), 8, 4 or 2 (default 16)\n"
            "  --kv-method M         decoquant, rtn or kivi (default kivi: best per byte on\n"
            "                        SmolLM2, BENCHMARKS.md)\n"
            "  --kv-group-size N     values per quantization group (default 64)\n"
            "  --block-size N        tokens per KV block: 16, 32, 64 or 128 (default 32)\n"
            "  --max-tokens N        tokens to generate (default 128)\n"
            "  --temperature F       0 = greedy (default 0)\n"
            "  --top-k N             0 = off (default 0)\n"
            "  --top-p F             in (0, 1], 1 = off (default 1)\n"
            "  --seed N              sampling seed (default: from the clock)\n"
            "  --stop TEXT           stop string, repeatable (at most %d)\n"
            "  --ignore-eos          keep generating past the end-of-sequence token\n"
            "  --weights F           f32 or q8_0 compute weights (default q8_0)\n",
            STOP_MAX_STRINGS);
}

static int parse(int argc, char **argv, gen_options *o) {
    *o = (gen_options){.kv_bits = 16,
                       .block_size = 32,
                       .max_tokens = 128,
                       .group_size = 64,
                       .kv_method = DQ_KIVI,
                       .weights = QM_Q8_0};
    o->sampling = sampler_params_default();
    o->sampling.temperature = 0.0f;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s: missing value or unknown flag (see --help)\n", PROG, a);
            return -1;
        }
        const char *v = argv[++i];
        int r = 0;
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--prompt"))
            o->prompt = v;
        else if (!strcmp(a, "--prompt-file"))
            o->prompt_file = v;
        else if (!strcmp(a, "--prompt-tokens"))
            r = cli_int(PROG, a, v, 1, 1 << 24, &o->prompt_tokens);
        else if (!strcmp(a, "--kv-bits"))
            r = cli_int(PROG, a, v, 2, 16, &o->kv_bits);
        else if (!strcmp(a, "--kv-group-size"))
            r = cli_int(PROG, a, v, 1, 1 << 16, &o->group_size);
        else if (!strcmp(a, "--block-size"))
            r = cli_int(PROG, a, v, 1, 1024, &o->block_size);
        else if (!strcmp(a, "--max-tokens"))
            r = cli_int(PROG, a, v, 1, 1 << 24, &o->max_tokens);
        else if (!strcmp(a, "--temperature"))
            r = cli_float(PROG, a, v, 0.0, 100.0, &o->sampling.temperature);
        else if (!strcmp(a, "--top-k"))
            r = cli_int(PROG, a, v, 0, 1 << 30, &o->sampling.top_k);
        else if (!strcmp(a, "--top-p"))
            r = cli_float(PROG, a, v, 0.0, 1.0, &o->sampling.top_p);
        else if (!strcmp(a, "--seed")) {
            long long seed;
            r = cli_i64(PROG, a, v, 0, (1ll << 62), &seed);
            o->sampling.seed = seed;
        } else if (!strcmp(a, "--stop")) {
            if (o->n_stops == STOP_MAX_STRINGS) {
                fprintf(stderr, "%s: --stop: at most %d stop strings\n", PROG, STOP_MAX_STRINGS);
                return -1;
            }
            o->stops[o->n_stops++] = v;
        } else if (!strcmp(a, "--weights")) {
            if (strcmp(v, "f32") && strcmp(v, "q8_0")) {
                fprintf(stderr, "%s: --weights = '%s': expected f32 or q8_0\n", PROG, v);
                return -1;
            }
            o->weights = strcmp(v, "f32") ? QM_Q8_0 : QM_F32;
        } else if (!strcmp(a, "--kv-method")) {
            char msg[160];
            if (dq_method_from_name(v, &o->kv_method, msg, sizeof msg) != DS_OK) {
                fprintf(stderr, "%s: --kv-method: %s\n", PROG, msg);
                return -1;
            }
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    if (!o->model || !o->prompt == !o->prompt_file) {
        fprintf(stderr, "%s: --model and one of --prompt or --prompt-file are required\n", PROG);
        return -1;
    }
    if (o->kv_bits != 2 && o->kv_bits != 4 && o->kv_bits != 8 && o->kv_bits != 16) {
        fprintf(stderr, "%s: --kv-bits = %d: expected 16, 8, 4 or 2\n", PROG, o->kv_bits);
        return -1;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Everything one generation holds; released by gen_free whatever state it reached. */
typedef struct gen_state {
    llama_model model;
    bpe_tokenizer *tok;
    kv_cache *cache;
    llama_engine *engine;
    bpe_decoder *decoder;
    kv_seq seq;
    int32_t *ids;
    float *logits;
    void *scratch;
    char *prompt_text; /* --prompt-file contents */
} gen_state;

static void gen_free(gen_state *g) {
    if (g->cache) kv_seq_release(g->cache, &g->seq);
    llama_engine_destroy(g->engine);
    kv_cache_destroy(g->cache);
    bpe_decoder_destroy(g->decoder);
    bpe_destroy(g->tok);
    llama_model_free(&g->model);
    free(g->ids), free(g->logits), free(g->scratch), free(g->prompt_text);
}

/* Writes text that passed the stop matcher; returns the matched stop index or STOP_NONE. */
static int emit(stop_matcher *stop, const char *text, size_t len) {
    char out[STOP_OUT_CAP(64)];
    int hit = STOP_NONE;
    for (size_t off = 0; off < len && hit == STOP_NONE; off += 64) {
        size_t n = len - off < 64 ? len - off : 64, n_out;
        hit = stop_feed(stop, text + off, n, out, sizeof out, &n_out);
        fwrite(out, 1, n_out, stdout);
    }
    fflush(stdout);
    return hit;
}

static int run(const gen_options *o, gen_state *g) {
    char msg[512];
    sampler smp;
    stop_matcher stop;
    if (sampler_init(&smp, &o->sampling, msg, sizeof msg) != DS_OK ||
        stop_init(&stop, o->stops, o->n_stops, 0, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 2;
    }
    if (model_files_load(o->model, &g->model, &g->tok, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    const llama_config *c = &g->model.config;
    const char *prompt = o->prompt;
    if (o->prompt_file) {
        FILE *fp = fopen(o->prompt_file, "rb");
        g->prompt_text = fp ? malloc(PROMPT_FILE_MAX + 1) : NULL;
        size_t n = g->prompt_text ? fread(g->prompt_text, 1, PROMPT_FILE_MAX + 1, fp) : 0;
        if (fp) fclose(fp);
        if (!g->prompt_text || n > PROMPT_FILE_MAX) {
            fprintf(stderr, "%s: --prompt-file %s: %s\n", PROG, o->prompt_file,
                    !fp ? "cannot open" : "larger than 16 MiB or out of memory");
            return !fp ? 1 : 2;
        }
        g->prompt_text[n] = 0;
        prompt = g->prompt_text;
    }
    size_t len = strlen(prompt);
    int n_prompt = 0, cap = (int)len + 8;
    g->ids = malloc((size_t)cap * sizeof(int32_t));
    if (!g->ids ||
        bpe_encode(g->tok, prompt, len, true, g->ids, cap, &n_prompt, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: --prompt: %s\n", PROG, g->ids ? msg : "out of memory");
        return 1;
    }
    if (o->prompt_tokens && n_prompt > o->prompt_tokens) n_prompt = o->prompt_tokens;
    if (n_prompt == 0) {
        fprintf(stderr, "%s: --prompt: empty after tokenization\n", PROG);
        return 2;
    }
    if ((long)n_prompt + o->max_tokens > c->context_length) {
        fprintf(stderr,
                "%s: prompt of %d tokens + --max-tokens %d exceed the model's context of %d "
                "tokens\n",
                PROG, n_prompt, o->max_tokens, c->context_length);
        return 2;
    }
    int total = n_prompt + o->max_tokens;
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = o->block_size,
                          .n_open_blocks = PREFILL_CHUNK / o->block_size + 2,
                          .n_full_blocks = total / o->block_size + 1};
    kc.key_codec = dq_config_defaults(o->kv_bits == 16 ? DQ_FP16 : o->kv_method, o->kv_bits);
    kc.key_codec.group_size = o->group_size;
    kc.value_codec = kc.key_codec;
    if (kv_cache_create(&kc, &g->cache, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: KV cache settings (--kv-*, --block-size): %s\n", PROG, msg);
        return 1;
    }
    llama_engine_options eo = {.max_step_tokens = PREFILL_CHUNK, .weight_type = o->weights};
    if (llama_engine_create(&g->model, g->cache, &eo, &g->engine, msg, sizeof msg) != DS_OK ||
        bpe_decoder_create(g->tok, true, &g->decoder, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    kv_seq_init(&g->seq);
    g->logits = malloc((size_t)c->vocab_size * sizeof(float));
    g->scratch = malloc(sampler_scratch_size(c->vocab_size));
    if (!g->logits || !g->scratch) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }

    double t0 = now_s();
    for (int i = 0; i < n_prompt; i += PREFILL_CHUNK) {
        int n = n_prompt - i < PREFILL_CHUNK ? n_prompt - i : PREFILL_CHUNK;
        llama_step_seq s = {.kv = &g->seq, .tokens = g->ids + i, .n_tokens = n};
        if (llama_engine_step(g->engine, &s, 1, g->logits, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: prefill: %s\n", PROG, msg);
            return 1;
        }
    }
    double t1 = now_s();
    int n_gen = 0, hit = STOP_NONE;
    const char *finish = "length";
    while (n_gen < o->max_tokens) {
        int32_t tok = sampler_sample(&smp, g->logits, c->vocab_size, g->scratch);
        n_gen++;
        if (tok == bpe_eos_id(g->tok) && !o->ignore_eos) {
            finish = "stop (eos)";
            break;
        }
        const char *text;
        size_t text_len;
        if (bpe_decoder_push(g->decoder, tok, &text, &text_len, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: detokenize: %s\n", PROG, msg);
            return 1;
        }
        if ((hit = emit(&stop, text, text_len)) != STOP_NONE) {
            finish = "stop (string)";
            break;
        }
        if (n_gen == o->max_tokens) break;
        llama_step_seq s = {.kv = &g->seq, .tokens = &tok, .n_tokens = 1};
        if (llama_engine_step(g->engine, &s, 1, g->logits, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: decode: %s\n", PROG, msg);
            return 1;
        }
    }
    if (hit == STOP_NONE) {
        const char *text;
        size_t text_len;
        char tail[STOP_MAX_LEN];
        bpe_decoder_flush(g->decoder, &text, &text_len);
        emit(&stop, text, text_len);
        fwrite(tail, 1, stop_flush(&stop, tail, sizeof tail), stdout);
    }
    double t2 = now_s();
    printf("\n");
    fflush(stdout);
    double bpt = kv_cache_bytes_per_token(g->cache);
    fprintf(stderr,
            "[%s] prompt %d tokens in %.2f s (%.1f tok/s); generated %d tokens in %.2f s "
            "(%.1f tok/s); finish: %s\n"
            "[kv] %s %d-bit, block %d: %.0f bytes/token (all layers, K+V) = %.2fx smaller than "
            "fp16; %.1f KiB for %d tokens\n",
            PROG, n_prompt, t1 - t0, n_prompt / (t1 - t0), n_gen, t2 - t1,
            n_gen > 1 ? (n_gen - 1) / (t2 - t1) : 0.0, finish,
            dq_method_name(g->cache->key_format.cfg.method), o->kv_bits, o->block_size, bpt,
            4.0 * c->n_layers * c->n_kv_heads * c->head_dim / bpt,
            (g->seq.n_tokens / o->block_size) * bpt * o->block_size / 1024.0 +
                (g->seq.n_tokens % o->block_size) * 4.0 * c->n_layers * c->n_kv_heads *
                    c->head_dim / 1024.0,
            g->seq.n_tokens);
    return 0;
}

int cmd_generate(int argc, char **argv) {
    gen_options o;
    if (parse(argc, argv, &o) < 0) return 2;
    gen_state g = {0};
    int rc = run(&o, &g);
    gen_free(&g);
    return rc;
}
