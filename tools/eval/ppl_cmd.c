/* tools/eval/ppl_cmd.c — `decoserve-eval ppl`: perplexity of a model over the start of a text
 * for each KV setting, with the cache compressed exactly as when serving; one table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "common/file.h"
#include "engine/llama.h"
#include "engine/model_files.h"
#include "tools/eval/commands.h"
#include "tools/eval/perplexity.h"

static const char *PROG = "decoserve-eval ppl";

enum { MAX_CONFIGS = 32 };

#define TEXT_MAX_BYTES ((size_t)1 << 30) /* --text; bpe_encode counts ids in an int */

static const char *DEFAULT_CONFIGS = "fp16,decoquant:8,rtn:8,kivi:8,decoquant:4,rtn:4,kivi:4,"
                                     "decoquant:2,rtn:2,kivi:2";

typedef struct ppl_config {
    dq_method key_method, value_method;
    int bits;
    char name[40];
} ppl_config;

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
        "Protocol: Hugging Face's sliding-window recipe (tools/eval/perplexity.h).\n",
        DEFAULT_CONFIGS);
}

static int parse_config(const char *item, ppl_config *c) {
    char buf[64], msg[128];
    snprintf(buf, sizeof buf, "%s", item);
    snprintf(c->name, sizeof c->name, "%s", item);
    if (!strcmp(buf, "fp16")) {
        c->key_method = c->value_method = DQ_FP16;
        c->bits = 16;
        return 0;
    }
    char *colon = strchr(buf, ':');
    if (!colon || cli_int(PROG, "--configs bits", colon + 1, 2, 8, &c->bits) < 0 ||
        (c->bits != 2 && c->bits != 3 && c->bits != 4 && c->bits != 8)) {
        fprintf(stderr, "%s: --configs: '%s': expected METHOD:BITS with BITS 8, 4, 3 or 2\n", PROG,
                item);
        return -1;
    }
    *colon = 0;
    char *slash = strchr(buf, '/');
    if (slash) *slash = 0;
    if (dq_method_from_name(buf, &c->key_method, msg, sizeof msg) != DS_OK ||
        dq_method_from_name(slash ? slash + 1 : buf, &c->value_method, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: --configs: %s\n", PROG, msg);
        return -1;
    }
    return 0;
}

int cmd_ppl(int argc, char **argv) {
    const char *model_path = NULL, *text_path = NULL, *configs = DEFAULT_CONFIGS;
    int max_tokens = 4096, ctx = 1024, stride = 512, block_size = 32, group_size = 64;
    dq_config dq = dq_config_defaults(DQ_DECOQUANT, 4);
    qm_type weights = QM_Q4_0;
    int cuda = 0, tensor_parallel = 1;
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
        int r = 0;
        if (!strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--text"))
            text_path = v;
        else if (!strcmp(a, "--configs"))
            configs = v;
        else if (!strcmp(a, "--max-tokens"))
            r = cli_int(PROG, a, v, 2, 1 << 26, &max_tokens);
        else if (!strcmp(a, "--ctx"))
            r = cli_int(PROG, a, v, 2, 1 << 20, &ctx);
        else if (!strcmp(a, "--stride"))
            r = cli_int(PROG, a, v, 1, 1 << 20, &stride);
        else if (!strcmp(a, "--block-size"))
            r = cli_int(PROG, a, v, 1, 1024, &block_size);
        else if (!strcmp(a, "--group-size"))
            r = cli_int(PROG, a, v, 1, 1 << 16, &group_size);
        else if (!strcmp(a, "--tensor-parallel"))
            r = cli_int(PROG, a, v, 1, 8, &tensor_parallel);
        else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) {
                fprintf(stderr, "%s: --device = '%s': expected cpu or cuda\n", PROG, v);
                return 2;
            }
            cuda = !strcmp(v, "cuda");
        } else if (!strcmp(a, "--weights")) {
            char msg[128];
            if (llama_weights_from_name(v, &weights, msg, sizeof msg) != DS_OK) {
                fprintf(stderr, "%s: %s\n", PROG, msg);
                return 2;
            }
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
    if (!model_path || !text_path) {
        fprintf(stderr, "%s: --model and --text are required (see --help)\n", PROG);
        return 2;
    }
    if (tensor_parallel > 1 && !cuda) {
        fprintf(stderr, "%s: --tensor-parallel = %d: needs --device cuda\n", PROG, tensor_parallel);
        return 2;
    }
    ppl_config list[MAX_CONFIGS];
    int n_configs = 0;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", configs);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n_configs == MAX_CONFIGS) {
            fprintf(stderr, "%s: --configs: at most %d\n", PROG, MAX_CONFIGS);
            return 2;
        }
        if (parse_config(tok, &list[n_configs++]) < 0) return 2;
    }

    char msg[512];
    llama_model model = {0};
    bpe_tokenizer *tok = NULL;
    if (model_files_load(model_path, &model, &tok, msg, sizeof msg) != DS_OK) {
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
    if (!rc) {
        printf("perplexity: %s, first %d tokens, ctx %d, stride %d, block %d, group %d, weights "
               "%s\n\n",
               text_path, n, ctx, stride, block_size, group_size, qm_type_name(weights));
        printf("%-22s %4s %10s %8s %10s %8s %8s\n", "kv config", "bits", "bytes/tok", "vs fp16",
               "ppl", "delta", "seconds");
    }
    double base = 0;
    for (int i = 0; !rc && i < n_configs; i++) {
        dq_config kc = dq, vc = dq;
        kc.method = list[i].key_method, vc.method = list[i].value_method;
        kc.bits = vc.bits = list[i].bits;
        kc.group_size = vc.group_size = group_size;
        ppl_result r;
        if (ppl_evaluate(&model, ids, n, ctx, stride, block_size, &kc, &vc, weights, cuda,
                         tensor_parallel, &r, msg, sizeof msg) != DS_OK) {
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
        printf(" %8.1f\n", r.seconds);
        fflush(stdout);
    }
    free(text), free(ids);
    bpe_destroy(tok);
    llama_model_free(&model);
    return rc;
}
