/* tools/bench-attention/bench_attention.c — decode attention speed on the GPU at Llama-3-8B head
 * shapes (32 query heads, 8 kv heads, head_dim 128, block 32): batch {1,16,64} x context
 * {1k,4k,16k,32k} x bits {16,8,4,2}. For each: median time (CUDA events, L2 flushed before each
 * timed run) of the fastest of five launch plans (the default plan is one; the table names the
 * plan and the number of splits), bytes read (pages, own-block rows, queries, split partials),
 * GB/s, % of the device-to-device copy bandwidth measured in the same run and of the nominal HBM
 * bandwidth (memory clock x bus width), speed-up over our fp16 kernel and over PyTorch SDPA
 * (times read from the CSV that tools/bench-attention/sdpa.py wrote in the same command; see
 * run.sh).
 *
 * Pages are real: random fp16 blocks compressed by kv_compress_cuda, then copied across the pool
 * (distinct memory, repeated content) and reached through a shuffled block table. The L2 flush
 * before each timed run only reads (an argmax over 256 MB), so no dirty lines from the flush are
 * written back during the timed run; sdpa.py flushes the same way (a sum).
 *
 * With --prefill: one causal prompt of {1k,4k,8k,32k} tokens (every row at its position, each
 * attending to all earlier positions: full pages compressed, its own block exact), run by the
 * prefill tiles (the engine's exec plan) and, up to 8k, by the decode kernel row by row (the
 * path before the prefill kernel); time, TFLOP/s on the causal score + value products, and the
 * ratio to SDPA causal (sdpa.py --prefill) in the same command.
 *   bench_attention [--sdpa sdpa.csv] [--methods kivi,decoquant] [--reps 20] [--csv out.csv]
 *                   [--prefill] [--bits B --batch N --ctx L  (one case: for profilers)] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/rng.h"
#include "kvcache/page_format.h"
#include "kernels/cuda.h"
#include "kernels/kv_fixture.h"

#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

enum { HQ = 32, H = 8, D = 128, T = 32, SEED_BLOCKS = 256, MAX_BATCH = 64, MAX_CTX = 32768 };
static const int k_batches[] = {1, 16, 64}, k_contexts[] = {1024, 4096, 16384, 32768};
static const int k_bits[] = {16, 8, 4, 2};

typedef struct sdpa_row {
    int batch, ctx;
    double us;
} sdpa_row;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of reps timed runs after 3 untimed ones, L2 flushed before each by reading `flush`
 * ([flush_rows][flush_cols] floats) through a greedy sample_cuda (an argmax per row). */
typedef struct timer {
    cudaEvent_t start, stop;
    float *flush;
    int32_t *flush_ids;
    sample_row *flush_greedy; /* [flush_rows], temperature 0 */
    int flush_rows, flush_cols;
    int reps;
} timer;

static double median_us(timer *tm, const paged_attention_params *p,
                        const paged_attention_tuning *tu, void *ws, size_t ws_bytes, int *splits) {
    char msg[256];
    double *t = malloc((size_t)tm->reps * sizeof(double));
    for (int i = -3; i < tm->reps; i++) {
        const sample_params flush = {.logits = tm->flush,
                                     .rows = tm->flush_greedy,
                                     .ids = tm->flush_ids,
                                     .n_rows = tm->flush_rows,
                                     .vocab = tm->flush_cols};
        if (sample_cuda(&flush, 0, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "bench: %s\n", msg);
            exit(1);
        }
        CK(cudaEventRecord(tm->start, 0));
        if (paged_attention_cuda(p, tu, ws, ws_bytes, splits, 0, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "bench: %s\n", msg);
            exit(1);
        }
        CK(cudaEventRecord(tm->stop, 0));
        CK(cudaEventSynchronize(tm->stop));
        float ms;
        CK(cudaEventElapsedTime(&ms, tm->start, tm->stop));
        if (i >= 0) t[i] = ms * 1000.0;
    }
    qsort(t, (size_t)tm->reps, sizeof(double), cmp_double);
    const double m = t[tm->reps / 2];
    free(t);
    return m;
}

/* Device-to-device copy bandwidth (bytes read + written per second), median of 5. */
static double copy_bandwidth(void) {
    const size_t n = (size_t)2 << 30;
    void *a, *b;
    CK(cudaMalloc(&a, n));
    CK(cudaMalloc(&b, n));
    CK(cudaMemset(a, 1, n));
    cudaEvent_t s, e;
    CK(cudaEventCreate(&s));
    CK(cudaEventCreate(&e));
    double t[5];
    for (int i = -1; i < 5; i++) {
        CK(cudaEventRecord(s, 0));
        CK(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0));
        CK(cudaEventRecord(e, 0));
        CK(cudaEventSynchronize(e));
        float ms;
        CK(cudaEventElapsedTime(&ms, s, e));
        if (i >= 0) t[i] = ms;
    }
    qsort(t, 5, sizeof(double), cmp_double);
    cudaFree(a), cudaFree(b), cudaEventDestroy(s), cudaEventDestroy(e);
    return 2.0 * n / (t[2] * 1e-3);
}

static int read_sdpa(const char *path, sdpa_row *rows, int cap) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    int n = 0;
    while (n < cap && fgets(line, sizeof line, f))
        if (sscanf(line, "%d,%d,%lf", &rows[n].batch, &rows[n].ctx, &rows[n].us) == 3) n++;
    fclose(f);
    return n;
}

static double sdpa_us(const sdpa_row *rows, int n, int batch, int ctx) {
    for (int i = 0; i < n; i++)
        if (rows[i].batch == batch && rows[i].ctx == ctx) return rows[i].us;
    return 0.0;
}

/* One causal prompt of n tokens over the pages of cp (the first SEED_BLOCKS hold the format's
 * pages, repeated over the pool; own blocks from the seed open blocks), by the prefill tiles and,
 * up to 8k tokens, row by row through the decode kernel. SDPA causal rows have batch 0. */
static void bench_prefill(timer *tm, const kv_compress_params *cp, const char *label, int bits,
                          const sdpa_row *sdpa, int n_sdpa, FILE *csv) {
    static const int k_prompts[] = {1024, 4096, 8192, 32768};
    const int max_n = 32768, stride = max_n / T + 1;
    uint16_t *q, *out;
    int32_t *row_seq, *row_pos, *full_table, *open_table, *exec;
    CK(cudaMalloc((void **)&q, (size_t)max_n * HQ * D * 2));
    CK(cudaMalloc((void **)&out, (size_t)max_n * HQ * D * 2));
    CK(cudaMalloc((void **)&row_seq, max_n * sizeof(int32_t)));
    CK(cudaMalloc((void **)&row_pos, max_n * sizeof(int32_t)));
    CK(cudaMalloc((void **)&full_table, stride * sizeof(int32_t)));
    CK(cudaMalloc((void **)&open_table, stride * sizeof(int32_t)));
    CK(cudaMalloc((void **)&exec, PAGED_ATTENTION_EXEC_WORDS(max_n) * sizeof(int32_t)));
    int32_t *seq_h = calloc(max_n, sizeof(int32_t)), *pos_h = malloc(max_n * sizeof(int32_t));
    int32_t *ft_h = malloc(stride * sizeof(int32_t)), *ot_h = malloc(stride * sizeof(int32_t));
    int32_t *ex_h = malloc(PAGED_ATTENTION_EXEC_WORDS(max_n) * sizeof(int32_t));
    ds_rng rng = {7};
    for (int b = 0; b < stride; b++) /* scattered pages, distinct memory */
        ft_h[b] = (int32_t)(b * 7 % (max_n / T)), ot_h[b] = b % SEED_BLOCKS;
    for (int i = 0; i < max_n; i++)
        pos_h[i] = i;
    {
        const size_t n = (size_t)max_n * HQ * D;
        uint16_t *h = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            h[i] = ds_float_to_half(ds_rng_gauss(&rng));
        CK(cudaMemcpy(q, h, n * 2, cudaMemcpyHostToDevice));
        free(h);
    }
    CK(cudaMemcpy(row_seq, seq_h, max_n * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(row_pos, pos_h, max_n * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(full_table, ft_h, stride * sizeof(int32_t), cudaMemcpyHostToDevice));
    CK(cudaMemcpy(open_table, ot_h, stride * sizeof(int32_t), cudaMemcpyHostToDevice));
    const size_t ws_bytes = paged_attention_workspace_bytes(max_n, HQ, D, 1);
    void *ws;
    CK(cudaMalloc(&ws, ws_bytes));
    for (int ci = 0; ci < 4; ci++) {
        const int n = k_prompts[ci];
        paged_attention_exec_build(seq_h, pos_h, n, T, 2, ex_h);
        CK(cudaMemcpy(exec, ex_h, PAGED_ATTENTION_EXEC_WORDS(n) * sizeof(int32_t),
                      cudaMemcpyHostToDevice));
        paged_attention_params p = {.q = q,
                                    .q_stride = HQ * D,
                                    .out = out,
                                    .out_stride = HQ * D,
                                    .row_seq = row_seq,
                                    .row_pos = row_pos,
                                    .full_table = full_table,
                                    .open_table = open_table,
                                    .table_stride = stride,
                                    .n_rows = n,
                                    .n_q_heads = HQ,
                                    .n_kv_heads = H,
                                    .head_dim = D,
                                    .block_size = T,
                                    .max_pos = n - 1,
                                    .scale = 1.0f / sqrtf((float)D),
                                    .cache = cp->cache,
                                    .key_format = cp->key_format,
                                    .value_format = cp->value_format,
                                    .exec = exec};
        const int saved_reps = tm->reps;
        if (n >= 8192) tm->reps = tm->reps < 5 ? tm->reps : 5;
        const double tiles = median_us(tm, &p, NULL, ws, ws_bytes, NULL);
        double rows = 0.0;
        if (n <= 8192) {
            p.exec = NULL;
            tm->reps = 3;
            rows = median_us(tm, &p, NULL, ws, ws_bytes, NULL);
        }
        tm->reps = saved_reps;
        /* causal QK^T and PV: 2 * 2 * n^2 / 2 * HQ * D flops */
        const double tflops = 2.0 * (double)n * n * HQ * D / (tiles * 1e-6) / 1e12;
        const double s_us = sdpa_us(sdpa, n_sdpa, 0, n);
        printf("prefill %-9s %4d %6d | tiles %10.1f us %6.1f TFLOP/s | rows %10.1f us (x%.1f) | "
               "sdpa causal %9.1f us (x_sdpa %.2f)\n",
               label, bits, n, tiles, tflops, rows, rows > 0 ? rows / tiles : 0.0, s_us,
               s_us > 0 ? s_us / tiles : 0.0);
        if (csv)
            fprintf(csv, "prefill,%s,%d,%d,%.1f,%.2f,%.1f,%.1f,%.3f\n", label, bits, n, tiles,
                    tflops, rows, s_us, s_us > 0 ? s_us / tiles : 0.0);
        fflush(stdout);
    }
    cudaFree(q), cudaFree(out), cudaFree(row_seq), cudaFree(row_pos), cudaFree(full_table);
    cudaFree(open_table), cudaFree(exec), cudaFree(ws);
    free(seq_h), free(pos_h), free(ft_h), free(ot_h), free(ex_h);
}

int main(int argc, char **argv) {
    const char *sdpa_path = NULL, *methods = "kivi", *csv_path = NULL;
    int reps = 20, prefill = 0, only_bits = 0, only_batch = 0, only_ctx = 0;
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--prefill")) {
            prefill = 1;
            continue;
        }
        if (val && !strcmp(argv[i], "--sdpa"))
            sdpa_path = val;
        else if (val && !strcmp(argv[i], "--methods"))
            methods = val;
        else if (val && !strcmp(argv[i], "--reps"))
            reps = atoi(val);
        else if (val && !strcmp(argv[i], "--csv"))
            csv_path = val;
        else if (val && !strcmp(argv[i], "--bits")) /* one case only (profiling) */
            only_bits = atoi(val);
        else if (val && !strcmp(argv[i], "--batch"))
            only_batch = atoi(val);
        else if (val && !strcmp(argv[i], "--ctx"))
            only_ctx = atoi(val);
        else {
            fprintf(stderr,
                    "usage: %s [--sdpa f.csv] [--methods kivi,decoquant] [--reps n] "
                    "[--csv out.csv] [--prefill] [--bits B --batch N --ctx L]\n",
                    argv[0]);
            return 2;
        }
        i++;
    }
    sdpa_row sdpa[64];
    const int n_sdpa = sdpa_path ? read_sdpa(sdpa_path, sdpa, 64) : 0;

    struct cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    int mem_khz, bus_bits;
    CK(cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, 0));
    CK(cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0));
    const double nominal = 2.0 * mem_khz * 1e3 * bus_bits / 8.0;
    const double copy_bw = copy_bandwidth();
    printf("bench-attention on %s, %d SMs; nominal HBM %.0f GB/s; measured D2D copy %.0f GB/s "
           "(read + write)\n",
           prop.name, prop.multiProcessorCount, nominal / 1e9, copy_bw / 1e9);
    printf("shapes: %d query heads, %d kv heads, head_dim %d, block %d; SDPA rows from %s\n", HQ, H,
           D, T, n_sdpa ? sdpa_path : "(none)");
    FILE *csv = csv_path ? fopen(csv_path, "w") : NULL;
    if (csv && prefill)
        fprintf(csv, "kind,method,bits,prompt,tiles_us,tflops,rows_us,sdpa_us,x_sdpa\n");
    else if (csv)
        fprintf(csv, "method,bits,batch,ctx,splits,plan,us,read_bytes,gbps,pct_copy,pct_nominal,"
                     "x_fp16,sdpa_us,x_sdpa\n");

    /* One pool for every case: the largest (fp16, 64 x 32k) pages, filled per format. */
    const int max_pages = MAX_BATCH * (MAX_CTX - 1) / T;
    const size_t slab = (size_t)T * H * D, max_pair = 4 * (size_t)T * D;
    uint8_t *full;
    uint16_t *open, *q, *out;
    CK(cudaMalloc((void **)&full, (size_t)max_pages * H * max_pair));
    CK(cudaMalloc((void **)&open, (size_t)(SEED_BLOCKS + MAX_BATCH) * 2 * slab * 2));
    CK(cudaMalloc((void **)&q, (size_t)MAX_BATCH * HQ * D * 2));
    CK(cudaMalloc((void **)&out, (size_t)MAX_BATCH * HQ * D * 2));
    {
        ds_rng rng = {42};
        const size_t n = (size_t)(SEED_BLOCKS + MAX_BATCH) * 2 * slab;
        uint16_t *h = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            h[i] = ds_float_to_half(ds_rng_gauss(&rng) * ((i % 128) % 29 == 3 ? 8.0f : 1.0f));
        CK(cudaMemcpy(open, h, n * 2, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(q, h, (size_t)MAX_BATCH * HQ * D * 2, cudaMemcpyHostToDevice));
        free(h);
    }
    int32_t *seed_ids_h = malloc(SEED_BLOCKS * sizeof(int32_t)), *seed_ids;
    for (int i = 0; i < SEED_BLOCKS; i++)
        seed_ids_h[i] = i;
    CK(cudaMalloc((void **)&seed_ids, SEED_BLOCKS * sizeof(int32_t)));
    CK(cudaMemcpy(seed_ids, seed_ids_h, SEED_BLOCKS * sizeof(int32_t), cudaMemcpyHostToDevice));
    const int table_stride = MAX_CTX / T + 1;
    int32_t *full_table_h = malloc((size_t)MAX_BATCH * table_stride * sizeof(int32_t));
    int32_t *open_table_h = malloc((size_t)MAX_BATCH * table_stride * sizeof(int32_t));
    int32_t row_seq_h[MAX_BATCH], row_pos_h[MAX_BATCH], *perm = malloc(max_pages * sizeof(int32_t));
    int32_t *full_table, *open_table, *row_seq, *row_pos;
    CK(cudaMalloc((void **)&full_table, (size_t)MAX_BATCH * table_stride * sizeof(int32_t)));
    CK(cudaMalloc((void **)&open_table, (size_t)MAX_BATCH * table_stride * sizeof(int32_t)));
    CK(cudaMalloc((void **)&row_seq, MAX_BATCH * sizeof(int32_t)));
    CK(cudaMalloc((void **)&row_pos, MAX_BATCH * sizeof(int32_t)));
    const int max_splits = 256;
    const size_t ws_bytes = paged_attention_workspace_bytes(MAX_BATCH, HQ, D, max_splits);
    void *ws;
    CK(cudaMalloc(&ws, ws_bytes));
    timer tm = {.reps = reps, .flush_rows = 256, .flush_cols = 1 << 18}; /* 256 MB */
    CK(cudaMalloc((void **)&tm.flush, (size_t)tm.flush_rows * tm.flush_cols * sizeof(float)));
    CK(cudaMemset(tm.flush, 0, (size_t)tm.flush_rows * tm.flush_cols * sizeof(float)));
    CK(cudaMalloc((void **)&tm.flush_ids, (size_t)tm.flush_rows * sizeof(int32_t)));
    CK(cudaMalloc((void **)&tm.flush_greedy, (size_t)tm.flush_rows * sizeof(sample_row)));
    CK(cudaMemset(tm.flush_greedy, 0, (size_t)tm.flush_rows * sizeof(sample_row)));
    CK(cudaEventCreate(&tm.start));
    CK(cudaEventCreate(&tm.stop));

    double fp16_us[3][4] = {{0}};
    printf("\n%-9s %4s %5s %6s | %6s %-12s | %9s %9s %8s %6s %6s | %8s | %9s %8s\n", "method",
           "bits", "batch", "ctx", "splits", "plan", "time_us", "read_MB", "GB/s", "%copy", "%nom",
           "x_fp16", "sdpa_us", "x_sdpa");
    char mlist[64];
    snprintf(mlist, sizeof mlist, "%s", methods);
    for (int bi = 0; bi < 4; bi++) {
        const int bits = k_bits[bi];
        if (only_bits && bits != only_bits) continue;
        for (char *save = NULL, *m = strtok_r(mlist, ",", &save); m;
             m = strtok_r(NULL, ",", &save)) {
            if (bits == 16 && m != mlist) continue; /* fp16 once */
            dq_method method;
            char msg[256];
            if (dq_method_from_name(m, &method, msg, sizeof msg) != DS_OK) {
                fprintf(stderr, "bench: %s\n", msg);
                return 2;
            }
            dq_config cfg = dq_config_defaults(bits == 16 ? DQ_FP16 : method, bits);
            cfg.block_size = T, cfg.head_dim = D;
            dq_format kf, vf;
            if (dq_format_init(&kf, &cfg, DQ_KEYS, msg, sizeof msg) != DS_OK ||
                dq_format_init(&vf, &cfg, DQ_VALUES, msg, sizeof msg) != DS_OK) {
                fprintf(stderr, "bench: %s\n", msg);
                return 2;
            }
            const size_t pair = kf.page_bytes + vf.page_bytes, block = (size_t)H * pair;
            kv_compress_params cp = {.open_ids = seed_ids,
                                     .full_ids = seed_ids,
                                     .n_blocks = SEED_BLOCKS,
                                     .n_kv_heads = H,
                                     .cache = {.full = full,
                                               .full_block_stride = block,
                                               .open = open,
                                               .open_block_stride = 2 * slab}};
            cp.key_format = kv_page_format_from_dq(&kf);
            cp.value_format = kv_page_format_from_dq(&vf);
            if (kv_compress_cuda(&cp, 0, msg, sizeof msg) != DS_OK) {
                fprintf(stderr, "bench: %s\n", msg);
                return 1;
            }
            for (int b = SEED_BLOCKS; b < max_pages; b += SEED_BLOCKS) {
                const int n = max_pages - b < SEED_BLOCKS ? max_pages - b : SEED_BLOCKS;
                CK(cudaMemcpyAsync(full + (size_t)b * block, full, (size_t)n * block,
                                   cudaMemcpyDeviceToDevice, 0));
            }
            CK(cudaDeviceSynchronize());

            if (prefill) {
                bench_prefill(&tm, &cp, bits == 16 ? "fp16" : m, bits, sdpa, n_sdpa, csv);
                continue;
            }
            for (int ci = 0; ci < 4; ci++)
                for (int ni = 0; ni < 3; ni++) {
                    const int batch = k_batches[ni], ctx = k_contexts[ci], pos = ctx - 1;
                    if ((only_batch && batch != only_batch) || (only_ctx && ctx != only_ctx))
                        continue;
                    const int n_full = pos / T;
                    ds_rng rng = {(uint64_t)(batch * 100003 + ctx)};
                    const int used = batch * n_full;
                    for (int i = 0; i < used; i++)
                        perm[i] = i;
                    for (int i = used - 1; i > 0; i--) {
                        const int j = (int)(ds_rng_u64(&rng) % (uint64_t)(i + 1));
                        const int32_t t = perm[i];
                        perm[i] = perm[j], perm[j] = t;
                    }
                    for (int s = 0; s < batch; s++) {
                        for (int b = 0; b < n_full; b++)
                            full_table_h[s * table_stride + b] = perm[s * n_full + b];
                        open_table_h[s * table_stride + n_full] = SEED_BLOCKS + s;
                        row_seq_h[s] = s, row_pos_h[s] = pos;
                    }
                    CK(cudaMemcpy(full_table, full_table_h,
                                  (size_t)batch * table_stride * sizeof(int32_t),
                                  cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(open_table, open_table_h,
                                  (size_t)batch * table_stride * sizeof(int32_t),
                                  cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(row_seq, row_seq_h, batch * sizeof(int32_t),
                                  cudaMemcpyHostToDevice));
                    CK(cudaMemcpy(row_pos, row_pos_h, batch * sizeof(int32_t),
                                  cudaMemcpyHostToDevice));
                    paged_attention_params p = {
                        .q = q,
                        .q_stride = HQ * D,
                        .out = out,
                        .out_stride = HQ * D,
                        .row_seq = row_seq,
                        .row_pos = row_pos,
                        .full_table = full_table,
                        .open_table = open_table,
                        .table_stride = table_stride,
                        .n_rows = batch,
                        .n_q_heads = HQ,
                        .n_kv_heads = H,
                        .head_dim = D,
                        .block_size = T,
                        .max_pos = pos,
                        .scale = 1.0f / sqrtf((float)D),
                        .cache = cp.cache,
                        .key_format = cp.key_format,
                        .value_format = cp.value_format,
                    };
                    /* The default plan and a few others; the fastest is reported with its name. */
                    const paged_attention_tuning plans[] = {
                        {0},
                        {.ctas_per_sm = 8},
                        {.ctas_per_sm = 2},
                        {.ctas_per_sm = 4, .warps_per_cta = 8},
                        {.ctas_per_sm = 4, .warps_per_cta = 4, .stages = 4}};
                    const char *names[] = {"default", "8cta/sm", "2cta/sm", "8warps", "4stages"};
                    double best = 1e30;
                    int best_i = 0, splits = 0, best_splits = 0;
                    for (int pi = 0; pi < 5; pi++) {
                        const double us = median_us(&tm, &p, &plans[pi], ws, ws_bytes, &splits);
                        if (us < best) best = us, best_i = pi, best_splits = splits;
                    }
                    const double read =
                        paged_attention_min_bytes(&p, row_pos_h) -
                        2.0 * batch * HQ * D + /* minus the output writes */
                        (best_splits > 1 ? (double)batch * HQ * best_splits * (D + 2) * 4 : 0.0);
                    const double gbps = read / (best * 1e-6) / 1e9;
                    if (bits == 16) fp16_us[ni][ci] = best;
                    const double s_us = sdpa_us(sdpa, n_sdpa, batch, ctx);
                    char label[24];
                    snprintf(label, sizeof label, "%s", bits == 16 ? "fp16" : m);
                    printf("%-9s %4d %5d %6d | %6d %-12s | %9.1f %9.1f %8.0f %5.1f%% %5.1f%% | "
                           "%8.2f | %9.1f %8.2f\n",
                           label, bits, batch, ctx, best_splits, names[best_i], best, read / 1e6,
                           gbps, 100.0 * gbps * 1e9 / copy_bw, 100.0 * gbps * 1e9 / nominal,
                           fp16_us[ni][ci] / best, s_us, s_us > 0 ? s_us / best : 0.0);
                    if (csv)
                        fprintf(csv, "%s,%d,%d,%d,%d,%s,%.2f,%.0f,%.1f,%.2f,%.2f,%.3f,%.2f,%.3f\n",
                                label, bits, batch, ctx, best_splits, names[best_i], best, read,
                                gbps, 100.0 * gbps * 1e9 / copy_bw, 100.0 * gbps * 1e9 / nominal,
                                fp16_us[ni][ci] / best, s_us, s_us > 0 ? s_us / best : 0.0);
                    fflush(stdout);
                }
        }
        snprintf(mlist, sizeof mlist, "%s", methods);
    }
    if (csv) fclose(csv);
    return 0;
}
