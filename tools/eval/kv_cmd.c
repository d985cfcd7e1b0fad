/* tools/eval/kv_cmd.c — `decoserve-eval kv`: KV-cache quality of each page codec at each bit
 * width, on synthetic, .npy or real model KV. Prints one table: bytes/token, compression vs fp16,
 * K/V reconstruction error and the attention output error, for fp16 and {decoquant, rtn, kivi,
 * hadamard-rtn, decoquant-hv} x bits. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "kvcache/decoquant.h"
#include "tools/eval/commands.h"
#include "tools/eval/kv_capture.h"
#include "tools/eval/kv_eval.h"
#include "tools/eval/npy.h"

enum { MAX_LIST = 16 };

typedef struct options {
    const char *keys_path, *values_path, *model_path, *text_path;
    int heads, tokens, head_dim, queries, block_size, group_size;
    unsigned long long seed;
    int methods[MAX_LIST], n_methods;
    int bits[MAX_LIST], n_bits;
    int t1[MAX_LIST], d1[MAX_LIST], n_factors;
    int absorb[MAX_LIST], n_absorb;
    int axis[MAX_LIST], n_axis;
    int refit[MAX_LIST], n_refit;
    int rank;
    int clip[MAX_LIST], n_clip;
} options;

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: decoserve-eval kv [--synthetic | --keys K.npy --values V.npy] [options]\n"
        "\n"
        "Data (default --synthetic):\n"
        "  --keys F --values F  .npy float32/float16 arrays [..., tokens, head_dim]; leading\n"
        "                       dimensions (layers, heads) are independent heads\n"
        "  --heads N            synthetic heads (8)        --tokens N   tokens per head (1024)\n"
        "  --head-dim N         synthetic head_dim (128)   --queries N  queries per head (32)\n"
        "  --seed N             (1)\n"
        "Codec:\n"
        "  --block-size N       tokens per page (32)       --group-size N  values per group (64)\n"
        "  --methods LIST       fp16,decoquant,rtn,kivi,hadamard-rtn,decoquant-hv (all)\n"
        "  --bits LIST          8,4,2; 3 too (fp16 is always 16)\n"
        "  --dq-factors LIST    t1xd1 pairs, e.g. 1x8,2x4 (default: 1x8 for head_dim >= 128,\n"
        "                       else 1x4)\n"
        "  --dq-absorb LIST     small,large (small)        --dq-axis LIST  row,chan (chan)\n"
        "  --dq-refit LIST      0,1 (1)                    --dq-rank N     kept rank (full)\n"
        "  --clip LIST          0,1: least-squares grid per group instead of min/max (0);\n"
        "                       decoquant-hv always clips\n"
        "Every combination of the --dq-* lists gives one decoquant row.\n");
}

static int parse_int(const char *flag, const char *s, int lo, int hi, int *out) {
    return cli_int("decoserve-eval", flag, s, lo, hi, out);
}

/* Splits a comma list and maps each item through parse_item; returns the count or -1. */
static int parse_list(const char *flag, const char *s, int *out,
                      int (*parse_item)(const char *, const char *, int *)) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == MAX_LIST || parse_item(flag, tok, &out[n]) < 0) {
            if (n == MAX_LIST)
                fprintf(stderr, "decoserve-eval: %s: at most %d items\n", flag, MAX_LIST);
            return -1;
        }
        n++;
    }
    if (!n) fprintf(stderr, "decoserve-eval: %s: empty list\n", flag);
    return n ? n : -1;
}

static int item_method(const char *flag, const char *s, int *out) {
    dq_method m;
    char msg[128];
    if (dq_method_from_name(s, &m, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "decoserve-eval: %s: %s\n", flag, msg);
        return -1;
    }
    *out = (int)m;
    return 0;
}
static int item_bits(const char *flag, const char *s, int *out) {
    return parse_int(flag, s, 2, 8, out);
}
static int item_bool(const char *flag, const char *s, int *out) {
    return parse_int(flag, s, 0, 1, out);
}
static int item_absorb(const char *flag, const char *s, int *out) {
    if (!strcmp(s, "small") || !strcmp(s, "large")) {
        *out = !strcmp(s, "small") ? DQ_ABSORB_SMALL : DQ_ABSORB_LARGE;
        return 0;
    }
    fprintf(stderr, "decoserve-eval: %s = '%s': expected small or large\n", flag, s);
    return -1;
}
static int item_axis(const char *flag, const char *s, int *out) {
    if (!strcmp(s, "row") || !strcmp(s, "chan")) {
        *out = !strcmp(s, "row") ? DQ_AXIS_ROW : DQ_AXIS_CHAN;
        return 0;
    }
    fprintf(stderr, "decoserve-eval: %s = '%s': expected row or chan\n", flag, s);
    return -1;
}
/* "t1xd1" is packed as t1 * 1000 + d1 and split after parsing. */
static int item_factor(const char *flag, const char *s, int *out) {
    int t1, d1;
    char extra;
    if (sscanf(s, "%dx%d%c", &t1, &d1, &extra) != 2 || t1 <= 0 || d1 <= 0 || t1 > 999 || d1 > 999) {
        fprintf(stderr, "decoserve-eval: %s = '%s': expected T1xD1, e.g. 1x8\n", flag, s);
        return -1;
    }
    *out = t1 * 1000 + d1;
    return 0;
}

static int parse_options(int argc, char **argv, options *o) {
    *o = (options){.heads = 8,
                   .tokens = 1024,
                   .head_dim = 128,
                   .queries = 32,
                   .block_size = 32,
                   .group_size = 64,
                   .seed = 1,
                   .n_methods = DQ_N_METHODS,
                   .n_bits = 3,
                   .n_absorb = 1,
                   .n_axis = 1,
                   .n_refit = 1,
                   .n_clip = 1};
    for (int i = 0; i < DQ_N_METHODS; i++)
        o->methods[i] = i;
    o->bits[0] = 8, o->bits[1] = 4, o->bits[2] = 2;
    o->axis[0] = DQ_AXIS_CHAN, o->refit[0] = 1; /* dq_config_defaults */
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (!strcmp(a, "--synthetic")) continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "decoserve-eval: %s: missing value (or unknown flag)\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int r = 0, packed[MAX_LIST];
        if (!strcmp(a, "--keys"))
            o->keys_path = v;
        else if (!strcmp(a, "--model"))
            o->model_path = v;
        else if (!strcmp(a, "--text"))
            o->text_path = v;
        else if (!strcmp(a, "--values"))
            o->values_path = v;
        else if (!strcmp(a, "--heads"))
            r = parse_int(a, v, 1, 4096, &o->heads);
        else if (!strcmp(a, "--tokens"))
            r = parse_int(a, v, 1, 1 << 20, &o->tokens);
        else if (!strcmp(a, "--head-dim"))
            r = parse_int(a, v, 2, 1024, &o->head_dim);
        else if (!strcmp(a, "--queries"))
            r = parse_int(a, v, 1, 4096, &o->queries);
        else if (!strcmp(a, "--block-size"))
            r = parse_int(a, v, 1, 1024, &o->block_size);
        else if (!strcmp(a, "--group-size"))
            r = parse_int(a, v, 1, 1 << 20, &o->group_size);
        else if (!strcmp(a, "--dq-rank"))
            r = parse_int(a, v, 0, 64, &o->rank);
        else if (!strcmp(a, "--seed")) {
            int seed;
            r = parse_int(a, v, 0, 1 << 30, &seed);
            o->seed = (unsigned long long)seed;
        } else if (!strcmp(a, "--methods"))
            r = o->n_methods = parse_list(a, v, o->methods, item_method);
        else if (!strcmp(a, "--bits"))
            r = o->n_bits = parse_list(a, v, o->bits, item_bits);
        else if (!strcmp(a, "--dq-absorb"))
            r = o->n_absorb = parse_list(a, v, o->absorb, item_absorb);
        else if (!strcmp(a, "--dq-axis"))
            r = o->n_axis = parse_list(a, v, o->axis, item_axis);
        else if (!strcmp(a, "--dq-refit"))
            r = o->n_refit = parse_list(a, v, o->refit, item_bool);
        else if (!strcmp(a, "--clip"))
            r = o->n_clip = parse_list(a, v, o->clip, item_bool);
        else if (!strcmp(a, "--dq-factors")) {
            r = o->n_factors = parse_list(a, v, packed, item_factor);
            for (int k = 0; k < o->n_factors; k++)
                o->t1[k] = packed[k] / 1000, o->d1[k] = packed[k] % 1000;
        } else {
            fprintf(stderr, "decoserve-eval: unknown flag %s (see --help)\n", a);
            return -1;
        }
        if (r < 0) return -1;
        for (int k = 0; k < o->n_bits; k++)
            if (o->bits[k] != 2 && o->bits[k] != 3 && o->bits[k] != 4 && o->bits[k] != 8) {
                fprintf(stderr, "decoserve-eval: --bits %d: expected 2, 3, 4 or 8\n", o->bits[k]);
                return -1;
            }
    }
    if (!o->n_factors) o->n_factors = 1, o->t1[0] = 0, o->d1[0] = 0;
    if (!!o->keys_path != !!o->values_path) {
        fprintf(stderr, "decoserve-eval: --keys and --values go together\n");
        return -1;
    }
    if (!!o->model_path != !!o->text_path) {
        fprintf(stderr, "decoserve-eval: --model and --text go together\n");
        return -1;
    }
    return 0;
}

static void print_row(const char *name, int bits, const char *variant, const kv_metrics *m) {
    printf("%-10s %4d  %-22s %9.2f %6.2f %6.2fx  %9.5f %9.5f %9.4f %9.4f  %9.5f %8.1f %8.1f\n",
           name, bits, variant, m->bytes_per_token, m->bits_per_value, m->ratio_vs_fp16,
           m->key_rel_err, m->value_rel_err, m->key_max_abs, m->value_max_abs, m->attn_rel_err,
           m->key_us_per_page, m->value_us_per_page);
}

static int run_one(const kv_set *set, dq_config cfg, const char *variant) {
    kv_metrics m;
    char msg[256];
    if (kv_evaluate(set, &cfg, &cfg, &m, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "decoserve-eval: %s %d-bit %s: %s\n", dq_method_name(cfg.method), cfg.bits,
                variant, msg);
        return -1;
    }
    print_row(dq_method_name(cfg.method), cfg.bits, variant, &m);
    return 0;
}

/* The rows of one method at one bit width: one for RTN, KIVI and the presets, every combination
 * of the --dq-* lists for DecoQuant. */
static int run_method(const kv_set *set, const options *o, dq_config base) {
    char msg[256], variant[64];
    const char *clip = base.clip ? " clip" : "";
    if (base.method != DQ_DECOQUANT) {
        static const char *const names[DQ_N_METHODS] = {[DQ_RTN] = "per-token",
                                                        [DQ_KIVI] = "K/chan V/token",
                                                        [DQ_HADAMARD_RTN] = "rotated per-token",
                                                        [DQ_DECOQUANT_HV] =
                                                            "K chan+outl V rot/tok"};
        snprintf(variant, sizeof variant, "%s%s", names[base.method], clip);
        return run_one(set, base, variant);
    }
    int rc = 0;
    for (int f = 0; f < o->n_factors && !rc; f++)
        for (int a = 0; a < o->n_absorb && !rc; a++)
            for (int x = 0; x < o->n_axis && !rc; x++)
                for (int r = 0; r < o->n_refit && !rc; r++) {
                    dq_config c = base;
                    c.t1 = o->t1[f], c.d1 = o->d1[f];
                    c.absorb = (dq_absorb)o->absorb[a], c.axis = (dq_axis)o->axis[x];
                    c.refit = o->refit[r];
                    dq_format fmt;
                    if (dq_format_init(&fmt, &c, DQ_KEYS, msg, sizeof msg) != DS_OK) {
                        fprintf(stderr, "decoserve-eval: decoquant: %s\n", msg);
                        return -1;
                    }
                    snprintf(variant, sizeof variant, "%dx%d %s %s%s%s", fmt.cfg.t1, fmt.cfg.d1,
                             c.absorb ? "S->large" : "S->small", c.axis ? "chan" : "row",
                             c.refit ? " refit" : "", clip);
                    rc = run_one(set, c, variant);
                }
    return rc;
}

int cmd_kv(int argc, char **argv) {
    options o;
    if (parse_options(argc, argv, &o) < 0) return 2;

    kv_set set;
    char msg[256];
    const char *source = "synthetic";
    if (o.model_path) {
        if (kv_capture(o.model_path, o.text_path, o.tokens, o.queries, &set, msg, sizeof msg) !=
            DS_OK) {
            fprintf(stderr, "decoserve-eval: %s\n", msg);
            return 1;
        }
        source = o.text_path;
    } else if (o.keys_path) {
        npy_array k, v;
        if (npy_read(o.keys_path, &k, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "decoserve-eval: %s\n", msg);
            return 1;
        }
        if (npy_read(o.values_path, &v, msg, sizeof msg) != DS_OK) {
            npy_free(&k);
            fprintf(stderr, "decoserve-eval: %s\n", msg);
            return 1;
        }
        int same = k.n_dims == v.n_dims && k.n_dims >= 2;
        for (int d = 0; same && d < k.n_dims; d++)
            same = k.shape[d] == v.shape[d];
        if (!same || k.shape[k.n_dims - 1] > 1024 || k.shape[k.n_dims - 2] > (1 << 24)) {
            fprintf(stderr,
                    "decoserve-eval: %s and %s: need equal shapes [..., tokens, head_dim]\n",
                    o.keys_path, o.values_path);
            npy_free(&k), npy_free(&v);
            return 1;
        }
        int d = (int)k.shape[k.n_dims - 1], n = (int)k.shape[k.n_dims - 2];
        int heads = (int)(k.n_elements / ((int64_t)n * d));
        ds_status st =
            kv_from_arrays(&set, k.data, v.data, heads, n, d, o.queries, o.seed, msg, sizeof msg);
        npy_free(&k), npy_free(&v);
        if (st != DS_OK) {
            fprintf(stderr, "decoserve-eval: %s\n", msg);
            return 1;
        }
        source = o.keys_path;
    } else if (kv_synth(&set, o.heads, o.tokens, o.head_dim, o.queries, o.seed, msg, sizeof msg) !=
               DS_OK) {
        fprintf(stderr, "decoserve-eval: %s\n", msg);
        return 1;
    }

    printf("KV codec quality: %s, %d heads x %d tokens x head_dim %d, block %d, group %d, "
           "%d queries/head\n",
           source, set.n_heads, set.n_tokens, set.head_dim, o.block_size, o.group_size,
           set.n_queries);
    printf("bytes/tok = K+V of one head incl. scales and small tensors; errors are relative "
           "Frobenius; attn = attention-output error; us/pg = one dq_compress_page call on one "
           "core\n\n");
    printf("%-10s %4s  %-22s %9s %6s %7s  %9s %9s %9s %9s  %9s %8s %8s\n", "method", "bits",
           "variant", "bytes/tok", "bits/v", "vs fp16", "K err", "V err", "K maxabs", "V maxabs",
           "attn err", "K us/pg", "V us/pg");
    int rc = 0;
    for (int mi = 0; mi < o.n_methods && !rc; mi++) {
        dq_config base = {.method = (dq_method)o.methods[mi],
                          .block_size = o.block_size,
                          .head_dim = set.head_dim,
                          .group_size = o.group_size,
                          .rank = o.rank};
        if (base.method == DQ_FP16) {
            base.bits = 16;
            rc = run_one(&set, base, "-");
            continue;
        }
        for (int bi = 0; bi < o.n_bits && !rc; bi++)
            for (int ci = 0; ci < o.n_clip && !rc; ci++) {
                base.bits = o.bits[bi];
                base.clip = o.clip[ci];
                rc = run_method(&set, &o, base);
            }
    }
    kv_set_free(&set);
    return rc ? 1 : 0;
}
