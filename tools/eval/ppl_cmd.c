/* tools/eval/ppl_cmd.c — `decoserve-eval ppl`: perplexity of a model over the start of a text
 * for each KV setting, with the cache compressed as when serving (read by the engine or through
 * the codec's round trip); one table, and one JSON line per setting with --json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/file.h"
#include "engine/llama.h"
#include "engine/model_files.h"
#include "tools/eval/commands.h"
#include "tools/eval/kv_settings.h"
#include "tools/eval/perplexity.h"

static const char *PROG = "decoserve-eval ppl";

#define TEXT_MAX_BYTES ((size_t)1 << 30) /* --text; bpe_encode counts ids in an int */

static const char *DEFAULT_CONFIGS = "fp16,decoquant:8,rtn:8,kivi:8,decoquant:4,rtn:4,kivi:4,"
                                     "decoquant:2,rtn:2,kivi:2";

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: decoserve-eval ppl --model PATH --text FILE [options]\n"
        "  --max-tokens N     tokens from the start of the text (default 4096)\n"
        "  --ctx N            window (default 1024)      --stride N  (default 512)\n"
        "  --block-size N     KV block (default 32)      --group-size N  (default 64)\n"
        "  --configs LIST     comma list of METHOD:BITS, or KEYMETHOD/VALUEMETHOD:BITS for\n"
        "                     different codecs on keys and values, and fp16 (default:\n"
        "                     %s)\n"
        "  --dq-factors T1xD1 --dq-axis row|chan --dq-refit 0|1  DecoQuant settings\n"
        "                     (default: chan, refit 1; row + refit 0 is the paper's variant)\n"
        "  --weights q4|q8_0|f32 compute format of the weights (default q4: the GGUF's own\n"
        "                     Q4_0 / Q4_1 blocks, Q8_0 for other tensors)\n"
        "  --device cpu|cuda  where the forward pass runs (cuda: a build with --define cuda=1)\n"
        "  --tensor-parallel N  shard the model over GPUs 0..N-1 with NCCL (--device cuda)\n"
        "  --kv-read auto|engine|codec  engine: attention reads the compressed pages as when\n"
        "                     serving; codec: fp16 pages replaced by the codec's round trip\n"
        "                     when their block fills (formats the engine refuses, e.g. the\n"
        "                     presets); auto (default): engine where it accepts the format\n"
        "  --windows A:B      evaluate windows A..B-1 of the protocol only (a shard: shards'\n"
        "                     nll sums and scored counts add up to the whole run)\n"
        "  --json FILE        also write one JSON object per config (a line each) to FILE\n"
        "Protocol: Hugging Face's sliding-window recipe (tools/eval/perplexity.h).\n",
        DEFAULT_CONFIGS);
}

/* One line of JSON: the run's settings and result (what tools/eval_summary.py reads). */
static void write_json(FILE *out, const char *text_path, int n_tokens, const ppl_options *o,
                       const char *config, const ppl_result *r, double fp16_bytes) {
    fputs("{\"text\": \"", out);
    for (const char *p = text_path; *p; p++) {
        if (*p == '"' || *p == '\\') fputc('\\', out);
        fputc((unsigned char)*p < 0x20 ? '?' : *p, out);
    }
    fprintf(out,
            "\", \"config\": \"%s\", \"key_method\": \"%s\", \"value_method\": \"%s\", "
            "\"bits\": %d, \"bytes_per_token\": %.2f, \"fp16_bytes_per_token\": %.0f, "
            "\"ppl\": %.17g, \"nll_sum\": %.17g, \"n_scored\": %ld, \"tokens\": %d, "
            "\"ctx\": %d, \"stride\": %d, \"block_size\": %d, \"group_size\": %d, "
            "\"weights\": \"%s\", \"read\": \"%s\", \"n_windows\": %d, \"first_window\": %d, "
            "\"end_window\": %d, \"first_scored\": %d, \"end_scored\": %d, \"seconds\": %.2f, "
            "\"cpu_seconds\": %.2f}\n",
            config, dq_method_name(o->key_codec.method), dq_method_name(o->value_codec.method),
            o->key_codec.bits, r->bytes_per_token, fp16_bytes, r->ppl, r->nll_sum, r->n_scored,
            n_tokens, o->ctx, o->stride, o->block_size, o->key_codec.group_size,
            qm_type_name(o->weights), kv_read_name(r->read), r->n_windows, r->first_window,
            r->end_window, r->first_scored, r->end_scored, r->seconds, r->cpu_seconds);
}

int cmd_ppl(int argc, char **argv) {
    const char *text_path = NULL;
    kv_run_flags run = kv_run_flags_defaults(DEFAULT_CONFIGS);
    int max_tokens = 4096, ctx = 1024, stride = 512;
    dq_config dq = dq_config_defaults(DQ_DECOQUANT, 4);
    int cuda = 0, tensor_parallel = 1, first_window = 0, end_window = 0;
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
        if (!strcmp(a, "--text"))
            text_path = v;
        else if (!strcmp(a, "--max-tokens"))
            r = cli_int(PROG, a, v, 2, 1 << 26, &max_tokens);
        else if (!strcmp(a, "--ctx"))
            r = cli_int(PROG, a, v, 2, 1 << 20, &ctx);
        else if (!strcmp(a, "--stride"))
            r = cli_int(PROG, a, v, 1, 1 << 20, &stride);
        else if (!strcmp(a, "--tensor-parallel"))
            r = cli_int(PROG, a, v, 1, 8, &tensor_parallel);
        else if (!strcmp(a, "--windows")) {
            char extra;
            if (sscanf(v, "%d:%d%c", &first_window, &end_window, &extra) != 2 || first_window < 0 ||
                end_window <= first_window) {
                fprintf(stderr, "%s: --windows = '%s': expected A:B with 0 <= A < B\n", PROG, v);
                return 2;
            }
        } else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "%s: --device = '%s': expected cpu or cuda\n", PROG, v);
                return 2;
            }
            cuda = !strcmp(v, "cuda");
        } else if (!strcmp(a, "--dq-refit"))
            r = cli_int(PROG, a, v, 0, 1, &dq.refit);
        else if (!strcmp(a, "--dq-axis")) {
            if (strcmp(v, "row") && strcmp(v, "chan")) {
                fprintf(stderr, "%s: --dq-axis = '%s': expected row or chan\n", PROG, v);
                return 2;
            }
            dq.axis = strcmp(v, "row") ? DQ_AXIS_CHAN : DQ_AXIS_ROW;
        } else if (!strcmp(a, "--dq-factors")) {
            char extra;
            if (sscanf(v, "%dx%d%c", &dq.t1, &dq.d1, &extra) != 2 || dq.t1 <= 0 || dq.d1 <= 0) {
                fprintf(stderr, "%s: --dq-factors = '%s': expected T1xD1, e.g. 1x4\n", PROG, v);
                return 2;
            }
        } else {
            fprintf(stderr, "%s: unknown flag %s (see --help)\n", PROG, a);
            return 2;
        }
        if (r < 0) return 2;
    }
    if (!run.model_path || !text_path) {
        fprintf(stderr, "%s: --model and --text are required (see --help)\n", PROG);
        return 2;
    }
    if (tensor_parallel > 1 && !cuda) {
        fprintf(stderr, "%s: --tensor-parallel = %d: needs --device cuda\n", PROG, tensor_parallel);
        return 2;
    }
    kv_setting list[KV_SETTINGS_MAX];
    int n_configs = kv_settings_parse(PROG, run.configs, list);
    if (n_configs < 0) return 2;

    char msg[512];
    llama_model model = {0};
    bpe_tokenizer *tok = NULL;
    if (model_files_load(run.model_path, &model, &tok, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        return 1;
    }
    size_t text_len = 0;
    char *text = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, rc = 0;
    if (ds_read_file(text_path, TEXT_MAX_BYTES, &text, &text_len, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s\n", PROG, msg);
        rc = 1;
    } else if (!(ids = malloc((text_len + 1) * sizeof *ids))) {
        fprintf(stderr, "%s: %s: out of memory\n", PROG, text_path);
        rc = 1;
    } else if (bpe_encode(tok, text, text_len, false, ids, (int)text_len + 1, &n_ids, msg,
                          sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: %s: %s\n", PROG, text_path, msg);
        rc = 1;
    }
    int n = n_ids < max_tokens ? n_ids : max_tokens;
    FILE *json = NULL;
    if (!rc && run.json_path && !(json = fopen(run.json_path, "w"))) {
        fprintf(stderr, "%s: --json %s: cannot open for writing\n", PROG, run.json_path);
        rc = 1;
    }
    if (!rc) {
        printf("perplexity: %s, first %d tokens, ctx %d, stride %d, block %d, group %d, weights "
               "%s\n\n",
               text_path, n, ctx, stride, run.block_size, run.group_size,
               qm_type_name(run.weights));
        printf("%-22s %4s %10s %8s %10s %8s %8s %6s %9s\n", "kv config", "bits", "bytes/tok",
               "vs fp16", "ppl", "delta", "seconds", "read", "windows");
    }
    double base = 0;
    for (int i = 0; !rc && i < n_configs; i++) {
        ppl_options po = {.ctx = ctx,
                          .stride = stride,
                          .block_size = run.block_size,
                          .read = run.read,
                          .weights = run.weights,
                          .cuda = cuda,
                          .tensor_parallel = tensor_parallel,
                          .first_window = first_window,
                          .end_window = end_window};
        kv_setting_codecs(&list[i], &dq, run.group_size, &po.key_codec, &po.value_codec);
        ppl_result r;
        if (ppl_evaluate(&model, ids, n, &po, &r, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: %s: %s\n", PROG, list[i].name, msg);
            rc = 1;
            break;
        }
        if (list[i].bits == 16 && !base) base = r.ppl;
        double fp16_bytes =
            4.0 * model.config.n_layers * model.config.n_kv_heads * model.config.head_dim;
        printf("%-22s %4d %10.0f %7.2fx %10.4f", list[i].name, list[i].bits, r.bytes_per_token,
               fp16_bytes / r.bytes_per_token, r.ppl);
        if (base)
            printf(" %+7.2f%%", 100.0 * (r.ppl / base - 1.0));
        else
            printf(" %8s", "-");
        printf(" %8.1f %6s %4d:%-4d\n", r.seconds, kv_read_name(r.read), r.first_window,
               r.end_window);
        fflush(stdout);
        if (json) write_json(json, text_path, n, &po, list[i].name, &r, fp16_bytes);
    }
    if (json && fclose(json)) {
        fprintf(stderr, "%s: --json %s: write failed\n", PROG, run.json_path);
        rc = 1;
    }
    free(text), free(ids);
    bpe_destroy(tok);
    llama_model_free(&model);
    return rc;
}
