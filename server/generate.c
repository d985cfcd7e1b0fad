/* server/generate.c — `decoserve generate`: one completion, streamed to stdout, through the same
 * serving engine (scheduler, paged compressed KV cache, sampling, stop strings) the server uses;
 * prints speed and KV bytes on stderr. What tests and users run to check a model end to end
 * without a server. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/clock.h"
#include "common/file.h"
#include "engine/serving.h"
#include "server/commands.h"
#include "server/engine_flags.h"

static const char *PROG = "decoserve generate";

enum { PROMPT_FILE_MAX = 16 << 20 };

typedef struct gen_options {
    serving_options engine;
    const char *prompt, *prompt_file;
    int prompt_tokens; /* 0: all */
    serving_request request;
    const char *stops[SERVING_MAX_STOP + 1];
} gen_options;

static void usage(FILE *out) {
    fprintf(out, "usage: decoserve generate --model PATH --prompt TEXT [options]\n");
    engine_flags_usage(out);
    fprintf(out,
            "  --prompt TEXT            prompt; special tokens such as <|im_start|> are parsed\n"
            "  --prompt-file PATH       read the prompt from a file instead (at most 16 MiB)\n"
            "  --prompt-tokens N        keep only the first N prompt tokens (benchmarks)\n"
            "  --max-tokens N           tokens to generate (default 128)\n"
            "  --temperature F          0 = greedy (default 0)\n"
            "  --top-k N                0 = off (default 0)\n"
            "  --top-p F                in (0, 1], 1 = off (default 1)\n"
            "  --seed N                 sampling seed (default: from the clock)\n"
            "  --stop TEXT              stop string, repeatable (at most %d)\n"
            "  --ignore-eos             keep generating past the end-of-sequence token\n",
            SERVING_MAX_STOP);
}

static int parse(int argc, char **argv, gen_options *o) {
    memset(o, 0, sizeof *o);
    if (engine_flags_defaults(PROG, &o->engine) < 0) return -1;
    o->engine.max_seqs = 1;
    serving_request_default(&o->request);
    o->request.max_tokens = 128;
    o->request.sampling.temperature = 0.0f;
    o->request.stop = o->stops;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--ignore-eos")) {
            o->request.ignore_eos = 1;
            continue;
        }
        int e = engine_flags_next(PROG, argc, argv, &i, &o->engine, usage, &v);
        if (e < 0) return -1;
        if (e == 0) continue;
        sampler_params *sp = &o->request.sampling;
        int r = 0;
        if (!strcmp(a, "--prompt"))
            o->prompt = v;
        else if (!strcmp(a, "--prompt-file"))
            o->prompt_file = v;
        else if (!strcmp(a, "--prompt-tokens"))
            r = cli_int(PROG, a, v, 1, 1 << 24, &o->prompt_tokens);
        else if (!strcmp(a, "--max-tokens"))
            r = cli_int(PROG, a, v, 1, 1 << 24, &o->request.max_tokens);
        else if (!strcmp(a, "--temperature"))
            r = cli_float(PROG, a, v, 0.0, 100.0, &sp->temperature);
        else if (!strcmp(a, "--top-k"))
            r = cli_int(PROG, a, v, 0, 1 << 30, &sp->top_k);
        else if (!strcmp(a, "--top-p"))
            r = cli_float(PROG, a, v, 0.0, 1.0, &sp->top_p);
        else if (!strcmp(a, "--seed")) {
            long long seed;
            r = cli_i64(PROG, a, v, 0, (1ll << 62), &seed);
            sp->seed = seed;
        } else if (!strcmp(a, "--stop")) {
            if (o->request.n_stop == SERVING_MAX_STOP) {
                fprintf(stderr, "%s: --stop: at most %d stop strings\n", PROG, SERVING_MAX_STOP);
                return -1;
            }
            o->stops[o->request.n_stop++] = v;
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    if (engine_flags_check(PROG, &o->engine) < 0) return -1;
    if (!o->prompt == !o->prompt_file) {
        fprintf(stderr, "%s: one of --prompt or --prompt-file is required\n", PROG);
        return -1;
    }
    return 0;
}

static int run(gen_options *o, serving *s, char **file_text, int32_t **ids) {
    char msg[512];
    size_t len;
    const char *prompt = o->prompt;
    if (o->prompt_file) {
        if (ds_read_file(o->prompt_file, PROMPT_FILE_MAX, file_text, &len, msg, sizeof msg) !=
            DS_OK) {
            fprintf(stderr, "%s: --prompt-file %s\n", PROG, msg);
            return 1;
        }
        prompt = *file_text;
    } else {
        len = strlen(prompt);
    }
    serving_request *q = &o->request;
    if (o->prompt_tokens) {
        int n;
        if (serving_tokenize(s, prompt, len, ids, &n, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: --prompt: %s\n", PROG, msg);
            return 2;
        }
        q->prompt_ids = *ids;
        q->n_prompt_ids = n < o->prompt_tokens ? n : o->prompt_tokens;
    } else {
        q->prompt = prompt;
        q->prompt_len = len;
    }
    serving_stream *st;
    double t0 = ds_now_s();
    if (serving_submit(s, q, NULL, NULL, &st, msg, sizeof msg) != DS_OK) {
        engine_flags_spell(msg, sizeof msg);
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 2;
    }
    serving_output out = {0};
    double t_first = 0;
    int rc = 0, worked = 1;
    for (;;) {
        if (serving_stream_poll(st, &out)) {
            if (out.n_token_ids && t_first == 0) t_first = ds_now_s();
            fwrite(out.text, 1, out.text_len, stdout);
            fflush(stdout);
            if (out.finish) break;
        } else if (!worked) {
            fprintf(stderr, "%s: the engine stopped without finishing the request\n", PROG);
            rc = 1;
            break;
        }
        if (serving_step(s, &worked, msg, sizeof msg) != DS_OK) {
            engine_flags_spell(msg, sizeof msg);
            fprintf(stderr, "%s: %s\n", PROG, msg);
            rc = 1;
            break;
        }
    }
    double t1 = ds_now_s();
    printf("\n");
    fflush(stdout);
    if (out.finish == SERVING_ERROR || out.finish == SERVING_UNAVAILABLE) {
        engine_flags_spell(out.error, sizeof out.error);
        fprintf(stderr, "%s: %s\n", PROG, out.error);
        rc = 1;
    }
    serving_stats stats;
    serving_get_stats(s, &stats);
    serving_info info;
    serving_get_info(s, &info);
    if (t_first == 0) t_first = t1;
    int n_gen = out.completion_tokens, n_prompt = out.prompt_tokens;
    fprintf(stderr,
            "[%s] prompt %d tokens in %.2f s (%.1f tok/s); generated %d tokens in %.2f s "
            "(%.1f tok/s); finish: %s\n"
            "[kv] %s %d-bit, block %d: %.0f bytes/token (all layers, K+V) = %.2fx smaller than "
            "fp16; pools %d open + %d full blocks in %.1f MiB\n",
            PROG, n_prompt, t_first - t0, n_prompt / (t_first - t0), n_gen, t1 - t_first,
            n_gen > 1 ? (n_gen - 1) / (t1 - t_first) : 0.0, serving_finish_name(out.finish),
            info.kv_method, info.kv_bits, info.block_size, stats.kv_bytes_per_token,
            stats.compression_ratio, stats.open_blocks_total, stats.full_blocks_total,
            stats.kv_memory_bytes / 1048576.0);
    serving_output_free(&out);
    serving_stream_release(st);
    return rc;
}

int cmd_generate(int argc, char **argv) {
    gen_options o;
    if (parse(argc, argv, &o) < 0) return 2;
    serving *s = engine_flags_open(PROG, &o.engine);
    if (!s) return 1;
    char *file_text = NULL;
    int32_t *ids = NULL;
    int rc = run(&o, s, &file_text, &ids);
    serving_destroy(s);
    free(file_text);
    free(ids);
    return rc;
}
