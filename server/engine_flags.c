/* server/engine_flags.c — the engine flags shared by serve, generate and bench-offline. */
#include "server/engine_flags.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "engine/llama.h"

/* "1073741824", "512M", "1.5G", "64MiB": bytes, binary suffixes K/M/G/T with optional "iB". */
static int parse_bytes(const char *prog, const char *flag, const char *v, int64_t *out) {
    char *end;
    double x = strtod(v, &end);
    double mult = 1;
    if (end != v) {
        switch (*end) {
        case 'K': mult = 1024.0, end++; break;
        case 'M': mult = 1024.0 * 1024, end++; break;
        case 'G': mult = 1024.0 * 1024 * 1024, end++; break;
        case 'T': mult = 1024.0 * 1024 * 1024 * 1024, end++; break;
        default: break;
        }
        if (mult > 1 && !strcmp(end, "iB")) end += 2;
    }
    if (end == v || *end || !isfinite(x) || x * mult < 1 || x * mult > 9e18) {
        fprintf(stderr, "%s: %s = '%s': expected a size in bytes such as 536870912, 512M or 2G\n",
                prog, flag, v);
        return -1;
    }
    *out = (int64_t)(x * mult);
    return 0;
}

/* "cpu", "cuda" (device 0) or "cuda:N". */
static int parse_device(const char *prog, const char *v, serving_options *o) {
    if (!strcmp(v, "cpu")) {
        o->device = SERVING_CPU;
        return 0;
    }
    if (!strcmp(v, "cuda")) {
        o->device = SERVING_CUDA, o->device_index = 0;
        return 0;
    }
    if (!strncmp(v, "cuda:", 5)) {
        o->device = SERVING_CUDA;
        return cli_int(prog, "--device cuda:N", v + 5, 0, 63, &o->device_index);
    }
    fprintf(stderr, "%s: --device = '%s': expected cpu, cuda or cuda:N\n", prog, v);
    return -1;
}

int engine_flags_defaults(const char *prog, serving_options *o) {
    serving_options_default(o);
    const char *size = getenv("LWS_GROUP_SIZE"), *index = getenv("LWS_WORKER_INDEX");
    const char *leader = getenv("LWS_LEADER_ADDRESS");
    if (size && cli_int(prog, "LWS_GROUP_SIZE", size, 1, 1024, &o->n_nodes) < 0) return -1;
    if (index && cli_int(prog, "LWS_WORKER_INDEX", index, 0, 1023, &o->node_rank) < 0) return -1;
    if (size && index && o->node_rank >= o->n_nodes) {
        fprintf(stderr, "%s: LWS_WORKER_INDEX = '%s': expected 0..%d (LWS_GROUP_SIZE = '%s')\n",
                prog, index, o->n_nodes - 1, size);
        return -1;
    }
    if (leader && !*leader) {
        fprintf(stderr, "%s: LWS_LEADER_ADDRESS is empty: expected the leader's host name\n", prog);
        return -1;
    }
    if (leader) o->master_addr = leader;
    return 0;
}

int engine_flags_parse(const char *prog, int argc, char **argv, int *i, serving_options *o) {
    const char *a = argv[*i];
    if (!strcmp(a, "--no-prefix-cache")) {
        o->prefix_cache = 0;
        return 1;
    }
    if (!strcmp(a, "--enforce-eager")) {
        o->enforce_eager = 1;
        return 1;
    }
    if (!strcmp(a, "--async-scheduling")) {
        o->async_scheduling = 1;
        return 1;
    }
    static const char *const with_value[] = {"--model",
                                             "--random-weights",
                                             "--kv-bits",
                                             "--kv-method",
                                             "--kv-group-size",
                                             "--block-size",
                                             "--kv-memory",
                                             "--max-seqs",
                                             "--max-batched-tokens",
                                             "--max-waiting",
                                             "--weights",
                                             "--threads",
                                             "--device",
                                             "--gpu-memory-utilization",
                                             "--dtype",
                                             "--tensor-parallel",
                                             "--nnodes",
                                             "--node-rank",
                                             "--master-addr",
                                             "--master-port",
                                             "--tp-timeout"};
    int known = 0;
    for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
        known |= !strcmp(a, with_value[k]);
    if (!known) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s: missing value\n", prog, a);
        return -1;
    }
    const char *v = argv[++*i];
    int r = 0;
    if (!strcmp(a, "--model")) {
        o->model_path = v;
    } else if (!strcmp(a, "--random-weights")) {
        o->random_weights = v;
    } else if (!strcmp(a, "--tensor-parallel")) {
        r = cli_int(prog, a, v, 1, 1024, &o->tensor_parallel);
    } else if (!strcmp(a, "--nnodes")) {
        r = cli_int(prog, a, v, 1, 1024, &o->n_nodes);
    } else if (!strcmp(a, "--node-rank")) {
        r = cli_int(prog, a, v, 0, 1023, &o->node_rank);
    } else if (!strcmp(a, "--master-addr")) {
        o->master_addr = v;
    } else if (!strcmp(a, "--master-port")) {
        r = cli_int(prog, a, v, 1, 65535, &o->master_port);
    } else if (!strcmp(a, "--tp-timeout")) {
        r = cli_int(prog, a, v, 1, 86400, &o->tp_timeout_s);
    } else if (!strcmp(a, "--dtype")) {
        if (strcmp(v, "fp16") && strcmp(v, "bf16")) {
            fprintf(stderr, "%s: --dtype = '%s': expected fp16 or bf16\n", prog, v);
            r = -1;
        }
        o->gpu_bf16 = !strcmp(v, "bf16");
    } else if (!strcmp(a, "--device")) {
        r = parse_device(prog, v, o);
    } else if (!strcmp(a, "--gpu-memory-utilization")) {
        float f;
        r = cli_float(prog, a, v, 0.01, 1.0, &f);
        o->gpu_memory_utilization = f;
    } else if (!strcmp(a, "--kv-bits")) {
        r = cli_int(prog, a, v, 2, 16, &o->kv_bits);
        if (!r && o->kv_bits != 2 && o->kv_bits != 4 && o->kv_bits != 8 && o->kv_bits != 16) {
            fprintf(stderr, "%s: --kv-bits = %d: expected 16, 8, 4 or 2\n", prog, o->kv_bits);
            r = -1;
        }
    } else if (!strcmp(a, "--kv-method")) {
        char msg[160];
        if (dq_method_from_name(v, &o->kv_method, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: --kv-method: %s\n", prog, msg);
            r = -1;
        }
    } else if (!strcmp(a, "--kv-group-size")) {
        r = cli_int(prog, a, v, 1, 1 << 16, &o->kv_group_size);
    } else if (!strcmp(a, "--block-size")) {
        r = cli_int(prog, a, v, 1, 1024, &o->block_size);
    } else if (!strcmp(a, "--kv-memory")) {
        r = parse_bytes(prog, a, v, &o->kv_memory_bytes);
    } else if (!strcmp(a, "--max-seqs")) {
        r = cli_int(prog, a, v, 1, 1 << 16, &o->max_seqs);
    } else if (!strcmp(a, "--max-batched-tokens")) {
        r = cli_int(prog, a, v, 1, 1 << 20, &o->max_batched_tokens);
    } else if (!strcmp(a, "--max-waiting")) {
        r = cli_int(prog, a, v, 1, 1 << 24, &o->max_waiting);
    } else if (!strcmp(a, "--threads")) {
        r = cli_int(prog, a, v, 1, 1024, &o->n_threads);
    } else { /* --weights */
        char msg[128];
        if (llama_weights_from_name(v, &o->weights, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s: %s\n", prog, msg);
            r = -1;
        }
    }
    return r < 0 ? -1 : 1;
}

int engine_flags_next(const char *prog, int argc, char **argv, int *i, serving_options *o,
                      void (*usage)(FILE *out), const char **value) {
    const char *a = argv[*i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
        usage(stdout);
        exit(0);
    }
    int e = engine_flags_parse(prog, argc, argv, i, o);
    if (e != 0) return e < 0 ? -1 : 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "%s: %s: missing value or unknown flag (see --help)\n", prog, a);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

/* The serving_options fields the engine names in its messages, and the flag that sets each. */
static const struct {
    const char *option, *flag;
} option_flags[] = {
    {"model_path", "--model"},
    {"random_weights", "--random-weights"},
    {"kv_bits", "--kv-bits"},
    {"kv_method", "--kv-method"},
    {"kv_group_size", "--kv-group-size"},
    {"block_size", "--block-size"},
    {"kv_memory_bytes", "--kv-memory"},
    {"gpu_memory_utilization", "--gpu-memory-utilization"},
    {"max_seqs", "--max-seqs"},
    {"max_batched_tokens", "--max-batched-tokens"},
    {"max_waiting", "--max-waiting"},
    {"tensor_parallel", "--tensor-parallel"},
    {"n_nodes", "--nnodes"},
    {"node_rank", "--node-rank"},
    {"master_addr", "--master-addr"},
    {"master_port", "--master-port"},
    {"tp_timeout_s", "--tp-timeout"},
    {"n_threads", "--threads"},
};

static int is_ident(char c) { return c == '_' || isalnum((unsigned char)c); }

/* The option_flags entry whose option name is the whole identifier starting at p, or -1. */
static int option_at(const char *p) {
    for (size_t k = 0; k < sizeof option_flags / sizeof option_flags[0]; k++) {
        size_t m = strlen(option_flags[k].option);
        if (!strncmp(p, option_flags[k].option, m) && !is_ident(p[m])) return (int)k;
    }
    return -1;
}

void engine_flags_spell(char *msg, size_t msg_len) {
    size_t len = strlen(msg);
    char *out = malloc(2 * len + 1); /* a flag is at most 2 bytes longer than its >= 7-byte name */
    if (!out) return;                /* the engine's spelling is still clear */
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        int k = i == 0 || !is_ident(msg[i - 1]) ? option_at(msg + i) : -1;
        if (k < 0) {
            out[n++] = msg[i++];
            continue;
        }
        size_t f = strlen(option_flags[k].flag);
        memcpy(out + n, option_flags[k].flag, f);
        n += f, i += strlen(option_flags[k].option);
    }
    out[n] = 0;
    snprintf(msg, msg_len, "%s", out);
    free(out);
}

serving *engine_flags_open(const char *prog, const serving_options *o) {
    char msg[512];
    serving *s;
    if (o->node_rank > 0) { /* a follower: node 0 runs the command's work */
        fprintf(stderr, "%s: node %d of %d: following node 0 at %s:%d\n", prog, o->node_rank,
                o->n_nodes, o->master_addr ? o->master_addr : "?", o->master_port);
        ds_status st = serving_follow(o, msg, sizeof msg);
        engine_flags_spell(msg, sizeof msg);
        if (st != DS_OK)
            fprintf(stderr, "%s: %s\n", prog, msg);
        else
            fprintf(stderr, "%s: node %d: node 0 stopped the group\n", prog, o->node_rank);
        exit(st == DS_OK ? 0 : 1);
    }
    if (serving_create(o, &s, msg, sizeof msg) == DS_OK) return s;
    engine_flags_spell(msg, sizeof msg);
    fprintf(stderr, "%s: %s\n", prog, msg);
    return NULL;
}

int engine_flags_check(const char *prog, const serving_options *o) {
    if (!o->model_path == !o->random_weights) {
        fprintf(stderr, "%s: give one of --model or --random-weights\n", prog);
        return -1;
    }
    if (o->node_rank >= o->n_nodes) {
        fprintf(stderr, "%s: --node-rank = %d: expected 0..%d (--nnodes = %d)\n", prog,
                o->node_rank, o->n_nodes - 1, o->n_nodes);
        return -1;
    }
    if (o->n_nodes > 1 && (!o->master_addr || !o->master_port)) {
        fprintf(stderr, "%s: --nnodes = %d: give --master-addr and --master-port of node 0\n", prog,
                o->n_nodes);
        return -1;
    }
    if (o->tensor_parallel % o->n_nodes) {
        fprintf(stderr,
                "%s: --tensor-parallel = %d: expected a multiple of --nnodes = %d (the same "
                "number of GPUs on every node)\n",
                prog, o->tensor_parallel, o->n_nodes);
        return -1;
    }
    return 0;
}

void engine_flags_usage(FILE *out) {
    fprintf(
        out,
        "  --model PATH             GGUF file, or HF folder (config.json, safetensors,\n"
        "                           tokenizer.json)\n"
        "  --random-weights SHAPE   no checkpoint: seeded random weights of a named shape\n"
        "                           (tiny, smollm2-135m, llama2-7b, llama3-8b, llama3.1-8b,\n"
        "                           llama3-70b)\n"
        "                           and a synthetic byte-level tokenizer\n"
        "  --kv-bits N              16 (fp16 pages), 8, 4 or 2 (default 16)\n"
        "  --kv-method M            kivi, decoquant or rtn (default kivi; BENCHMARKS.md\n"
        "                           section 3); hadamard-rtn and decoquant-hv are\n"
        "                           decoserve-eval's only for now\n"
        "  --kv-group-size N        values per quantization group (default 64)\n"
        "  --block-size N           tokens per KV block: 16, 32, 64 or 128 (default 32)\n"
        "  --device D               cpu (default), cuda or cuda:N (a build with --define cuda=1)\n"
        "  --kv-memory SIZE         bytes for both KV pools, e.g. 512M or 2G (default: 1G on\n"
        "                           the CPU; on a GPU what --gpu-memory-utilization of its free\n"
        "                           memory leaves after the weights)\n"
        "  --gpu-memory-utilization F  share of free GPU memory to use (default 0.9)\n"
        "  --dtype fp16|bf16        GPU weight type (default fp16)\n"
        "  --tensor-parallel N      shard the model over N GPUs with NCCL (default 1): GPUs\n"
        "                           0..N/nnodes-1 of every node\n"
        "  --nnodes N               processes (hosts) in the tensor-parallel group (default\n"
        "                           LWS_GROUP_SIZE, else 1)\n"
        "  --node-rank R            this one: 0 serves, the others follow node 0's steps\n"
        "                           (default LWS_WORKER_INDEX, else 0)\n"
        "  --master-addr H          node 0's address for the start-up rendezvous (default\n"
        "                           LWS_LEADER_ADDRESS)\n"
        "  --master-port P          and its TCP port (node 0 listens on it)\n"
        "  --tp-timeout S           seconds any tensor-parallel wait may take before the group\n"
        "                           counts as failed (default 60)\n"
        "  --max-seqs N             running sequences at most (default 64)\n"
        "  --max-batched-tokens N   tokens per step: decodes + prefill chunks (default 512)\n"
        "  --max-waiting N          queued requests before new ones are refused (default "
        "1024)\n"
        "  --no-prefix-cache        do not share KV blocks between common prompt prefixes\n"
        "  --enforce-eager          CUDA: launch every step kernel by kernel (no CUDA graphs)\n"
        "  --async-scheduling       schedule and plan step N+1 and stream step N-1's tokens\n"
        "                           while step N runs (same output; tensor parallelism steps\n"
        "                           synchronously)\n"
        "  --weights F              compute weights: q4 (the GGUF's own Q4_0 / Q4_1 blocks,\n"
        "                           Q8_0 for other tensors; the default), q8_0 or f32\n"
        "  --threads N              CPU threads (default: DECOSERVE_THREADS or all CPUs)\n");
}
