/* tools/eval/greedy_cmd.c — `decoserve-eval greedy`: greedy continuations of fixed prompts for
 * each KV setting, and how many of their tokens agree with the fp16 cache's: the first setting
 * of --configs is the reference (fp16 by default); per prompt, tokens equal until the first
 * divergence and in total (position by position). Decoding is plain argmax over the logits
 * (lowest id on ties), EOS ignored, through tools/eval/kv_forward.h, so settings the serving
 * engine refuses (the presets) are measured too, with --kv-read auto or codec.
 *
 * Prompts: the token ids of each "prompt P N id_0 ... id_{N-1}" line of a file in
 * tests/fixtures/smollm2_logits.txt's format (other lines are ignored). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/file.h"
#include "engine/model_files.h"
#include "tools/eval/commands.h"
#include "tools/eval/kv_forward.h"
#include "tools/eval/kv_settings.h"

static const char *PROG = "decoserve-eval greedy";

enum { MAX_PROMPTS = 16, MAX_PROMPT_TOKENS = 4096, STEP_TOKENS = 256 };

typedef struct prompt_set {
    int n;
    int n_tokens[MAX_PROMPTS];
    int32_t *ids[MAX_PROMPTS];
} prompt_set;

static void usage(FILE *out) {
    fprintf(out,
            "usage: decoserve-eval greedy --model PATH --prompts FILE [options]\n"
            "  --prompts FILE     'prompt P N ids...' lines (tests/fixtures/smollm2_logits.txt)\n"
            "  --configs LIST     KV settings as for ppl; the first is the reference (default:\n"
            "                     fp16,kivi:4,decoquant-hv:4,kivi:2,decoquant-hv:2)\n"
            "  --max-tokens N     greedy tokens per prompt (default 256)\n"
            "  --block-size N     KV block (default 32)      --group-size N  (default 64)\n"
            "  --weights q4|q8_0|f32  (default q4)   --kv-read auto|engine|codec  (default auto)\n"
            "  --json FILE        one JSON line per setting: its tokens and agreement\n");
}

static void prompts_free(prompt_set *p) {
    for (int i = 0; i < p->n; i++)
        free(p->ids[i]);
    p->n = 0;
}

static ds_status prompts_read(const char *path, prompt_set *p, char *msg, size_t msg_len) {
    memset(p, 0, sizeof *p);
    char *text = NULL;
    size_t len = 0;
    ds_status st = ds_read_file(path, (size_t)1 << 24, &text, &len, msg, msg_len);
    for (char *save, *line = st == DS_OK ? strtok_r(text, "\n", &save) : NULL; st == DS_OK && line;
         line = strtok_r(NULL, "\n", &save)) {
        int index, n, used;
        if (sscanf(line, "prompt %d %d%n", &index, &n, &used) != 2) continue;
        if (p->n == MAX_PROMPTS || n < 1 || n > MAX_PROMPT_TOKENS) {
            st = ds_fail(msg, msg_len, DS_EINVAL,
                         "%s: prompt %d: %d tokens (at most %d prompts of "
                         "1..%d)",
                         path, index, n, MAX_PROMPTS, MAX_PROMPT_TOKENS);
            break;
        }
        int32_t *ids = malloc((size_t)n * sizeof *ids);
        if (!ids) {
            st = ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
            break;
        }
        char *at = line + used;
        for (int i = 0; i < n && st == DS_OK; i++) {
            char *end;
            long v = strtol(at, &end, 10);
            if (end == at || v < 0 || v > INT32_MAX)
                st = ds_fail(msg, msg_len, DS_EINVAL, "%s: prompt %d: token %d is not an id", path,
                             index, i);
            ids[i] = (int32_t)v, at = end;
        }
        p->ids[p->n] = ids, p->n_tokens[p->n++] = n;
    }
    free(text);
    if (st == DS_OK && !p->n)
        st = ds_fail(msg, msg_len, DS_EINVAL, "%s: no 'prompt P N ids...' line", path);
    if (st != DS_OK) prompts_free(p);
    return st;
}

static int32_t argmax(const float *logits, int vocab) {
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* The prompt, then max_tokens greedy tokens into out. */
static ds_status continue_prompt(kv_forward *f, const int32_t *prompt, int n_prompt, int max_tokens,
                                 float *logits, int32_t *out, char *msg, size_t msg_len) {
    kv_seq seq;
    kv_seq_init(&seq);
    ds_status st = DS_OK;
    for (int i = 0; st == DS_OK && i < n_prompt; i += STEP_TOKENS) {
        int n = n_prompt - i < STEP_TOKENS ? n_prompt - i : STEP_TOKENS;
        st = kv_forward_step(f, &seq, prompt + i, n,
                             i + n == n_prompt ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_NONE, logits, msg,
                             msg_len);
    }
    const int vocab = f->model->config.vocab_size;
    for (int t = 0; st == DS_OK && t < max_tokens; t++) {
        out[t] = argmax(logits, vocab);
        if (t + 1 < max_tokens)
            st = kv_forward_step(f, &seq, &out[t], 1, LLAMA_LOGITS_LAST, logits, msg, msg_len);
    }
    kv_seq_release(f->cache, &seq);
    return st;
}

static void write_json(FILE *out, const kv_setting *s, const kv_forward *f, int max_tokens,
                       const prompt_set *p, int32_t *const *tokens, const int *prefix,
                       const int *equal) {
    fprintf(out,
            "{\"config\": \"%s\", \"bits\": %d, \"bytes_per_token\": %.2f, \"read\": \"%s\", "
            "\"max_tokens\": %d, \"prompts\": [",
            s->name, s->bits, f->bytes_per_token, kv_read_name(f->read), max_tokens);
    for (int i = 0; i < p->n; i++) {
        fprintf(out, "%s{\"prefix\": %d, \"equal\": %d, \"tokens\": [", i ? ", " : "", prefix[i],
                equal[i]);
        for (int t = 0; t < max_tokens; t++)
            fprintf(out, "%s%d", t ? ", " : "", tokens[i][t]);
        fputs("]}", out);
    }
    fputs("]}\n", out);
}

int cmd_greedy(int argc, char **argv) {
    const char *prompts_path = NULL;
    kv_run_flags run = kv_run_flags_defaults("fp16,kivi:4,decoquant-hv:4,kivi:2,decoquant-hv:2");
    int max_tokens = 256;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s: missing value or unknown flag (see --help)\n", PROG, a);
            return 2;
        }
        const char *v = argv[++i];
        int r = kv_run_flag(PROG, a, v, &run);
        if (r < 0) return 2;
        if (r) continue;
        if (!strcmp(a, "--prompts"))
            prompts_path = v;
        else if (!strcmp(a, "--max-tokens"))
            r = cli_int(PROG, a, v, 1, 1 << 16, &max_tokens);
        else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return 2;
        }
        if (r < 0) return 2;
    }
    if (!run.model_path || !prompts_path) {
        fprintf(stderr, "%s: --model and --prompts are required (see --help)\n", PROG);
        return 2;
    }
    kv_setting list[KV_SETTINGS_MAX];
    int n_configs = kv_settings_parse(PROG, run.configs, list);
    if (n_configs < 0) return 2;

    char msg[512];
    prompt_set prompts;
    if (prompts_read(prompts_path, &prompts, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    llama_model model = {0};
    bpe_tokenizer *tok = NULL;
    int rc = 0, longest = 0;
    for (int i = 0; i < prompts.n; i++)
        longest = prompts.n_tokens[i] > longest ? prompts.n_tokens[i] : longest;
    FILE *json = NULL;
    if (model_files_load(run.model_path, &model, &tok, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        rc = 1;
    } else if (longest + max_tokens > model.config.context_length) {
        fprintf(stderr, "%s: a prompt of %d tokens and --max-tokens %d exceed the context (%d)\n",
                PROG, longest, max_tokens, model.config.context_length);
        rc = 2;
    } else if (run.json_path && !(json = fopen(run.json_path, "w"))) {
        fprintf(stderr, "%s: --json %s: cannot open for writing\n", PROG, run.json_path);
        rc = 1;
    }
    float *logits = rc ? NULL : malloc((size_t)model.config.vocab_size * sizeof(float));
    int32_t *tokens[2][MAX_PROMPTS] = {{0}}; /* [reference, this setting][prompt][max_tokens] */
    int allocated = logits != NULL;
    for (int k = 0; allocated && k < 2 * prompts.n; k++)
        allocated =
            !!(tokens[k / prompts.n][k % prompts.n] = malloc((size_t)max_tokens * sizeof(int32_t)));
    if (!rc && !allocated) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        rc = 1;
    }
    if (!rc) {
        printf("greedy agreement: %s, %d prompts, %d tokens each, reference %s, weights %s\n\n",
               prompts_path, prompts.n, max_tokens, list[0].name, qm_type_name(run.weights));
        printf("%-22s %4s %10s %6s", "kv config", "bits", "bytes/tok", "read");
        for (int i = 0; i < prompts.n; i++)
            printf("  p%d prefix/equal", i);
        printf("  %s\n", "total prefix/equal");
    }
    const dq_config base = dq_config_defaults(DQ_DECOQUANT, 4);
    for (int c = 0; !rc && c < n_configs; c++) {
        kv_forward_options fo = {.block_size = run.block_size,
                                 .max_seq_tokens = longest + max_tokens,
                                 .max_step_tokens = STEP_TOKENS,
                                 .read = run.read,
                                 .weights = run.weights};
        kv_setting_codecs(&list[c], &base, run.group_size, &fo.key_codec, &fo.value_codec);
        kv_forward f;
        ds_status st = kv_forward_open(&f, &model, &fo, msg, sizeof msg);
        int32_t **mine = tokens[c ? 1 : 0];
        for (int i = 0; st == DS_OK && i < prompts.n; i++)
            st = continue_prompt(&f, prompts.ids[i], prompts.n_tokens[i], max_tokens, logits,
                                 mine[i], msg, sizeof msg);
        if (st != DS_OK) {
            fprintf(stderr, "%s: %s: %s\n", PROG, list[c].name, msg);
            kv_forward_close(&f);
            rc = 1;
            break;
        }
        int prefix[MAX_PROMPTS], equal[MAX_PROMPTS], sum_prefix = 0, sum_equal = 0;
        printf("%-22s %4d %10.0f %6s", list[c].name, list[c].bits, f.bytes_per_token,
               kv_read_name(f.read));
        for (int i = 0; i < prompts.n; i++) {
            prefix[i] = equal[i] = 0;
            for (int t = 0; t < max_tokens; t++) {
                int same = mine[i][t] == tokens[0][i][t];
                equal[i] += same;
                prefix[i] += same && prefix[i] == t;
            }
            sum_prefix += prefix[i], sum_equal += equal[i];
            printf("  %6d/%-6d", prefix[i], equal[i]);
        }
        printf("  %8d/%-8d\n", sum_prefix, sum_equal);
        fflush(stdout);
        if (json) write_json(json, &list[c], &f, max_tokens, &prompts, mine, prefix, equal);
        kv_forward_close(&f);
    }
    if (json && fclose(json)) {
        fprintf(stderr, "%s: --json %s: write failed\n", PROG, run.json_path);
        rc = 1;
    }
    for (int k = 0; k < 2 * prompts.n; k++)
        free(tokens[k / prompts.n][k % prompts.n]);
    free(logits);
    prompts_free(&prompts);
    bpe_destroy(tok);
    llama_model_free(&model);
    return rc;
}
