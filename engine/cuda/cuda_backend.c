/* engine/cuda/cuda_backend.c — the Llama forward pass on one GPU (see cuda_backend.h): start-up
 * (device memory from engine/cuda/plan.h's layout, weights uploaded or drawn on the GPU, KV pools,
 * cuBLAS) and the step, which enqueues every layer on one stream and waits only for the logits.
 *
 * Async steps (async_steps: engine/backend.h's launch / collect): a launch builds its plan in one
 * of two pinned flight slots (plan, sampling rows, sampled ids), enqueues the copies, the
 * hand-off, the layers (or the graph), the sampler and the copy of the ids back into that slot,
 * records the slot's event and returns; collect waits on the oldest slot's event. Two slots
 * because the host writes step N+1's plan while step N's copy may not have run yet; the device
 * buffers (plan, rows, sampled ids) are single: the stream orders step N+1's copies and kernels
 * after step N's, and N+1's hand-off reads N's ids before N+1's sampler overwrites them. */
#include "engine/cuda/cuda_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/log.h"
#include "common/rng.h"
#include "common/vendor_check.h"
#include "engine/backend.h"
#include "engine/cuda/plan.h"
#include "engine/cuda/tp_comm.h"
#include "engine/llama.h"
#include "engine/tp/shard.h"
#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kvcache/page_format.h"

#define CUBLAS_CHECK(call)                                                                         \
    DS_VENDOR_CHECK(call, cublasStatus_t, CUBLAS_STATUS_SUCCESS, cublasGetStatusString)

/* Weights of a real checkpoint travel through pinned fp32 chunks of this many values. */
enum { UPLOAD_CHUNK = 4 << 20 };
/* Padded batch sizes with a graph: 1, 2, 4, ... and the largest batch itself (vLLM's buckets). */
enum { GRAPH_BUCKETS = 16 };

typedef struct cuda_backend {
    llama_config config; /* with tensor parallelism, this rank's heads, KV heads and d_ff */
    kv_cache *cache;
    int device;
    char device_name[192]; /* engine_backend.device */
    fwd_dtype wtype;       /* FWD_F16 or FWD_BF16 */
    cudaDataType_t wdt;    /* the same for cuBLAS */
    cuda_layout lay;
    cuda_plan_limits limits;
    kv_page_format key_format, value_format;
    uint8_t *weights, *scratch; /* device arenas (plan.h) */
    uint8_t *kv_full;           /* [n_layers][n_full_blocks][H][key page | value page] */
    uint16_t *kv_open;          /* [n_layers][n_open_blocks][2][T][H][D] */
    size_t full_layer_bytes, open_layer_elems;
    int32_t *plan_host;          /* pinned, lay.plan_words */
    sample_row *sample_host;     /* pinned, [lay.logit_rows]: the step's sampling rows */
    int32_t *sample_out_host;    /* pinned, [lay.logit_rows][2]: token ids, log-probabilities */
    int32_t *hdr_host, *hdr_dev; /* the step header rank 0 broadcasts (pinned; device) */
    float *logits_host;          /* pinned, [lay.logit_rows][vocab] */
    cudaStream_t stream;         /* every launch and copy */
    cublasHandle_t cublas;
    /* Device limits asked once (no attribute call per launch) and the kernels' shared-memory
     * limits raised at start-up. */
    paged_attention_tuning attn_tuning;
    int compress_ready;
    /* CUDA graphs of decode-only steps, one per padded batch size (graph_rows[i] rows), captured
     * on first use; 0 graphs with enforce_eager, tensor parallelism or time_parts. */
    int n_graphs;
    int graph_rows[GRAPH_BUCKETS];
    cudaGraphExec_t graph_exec[GRAPH_BUCKETS];
    int graphs_off; /* a capture failed: eager from then on */
    int gemv_rows;  /* steps of at most this many rows use kernels/gemv.h */
    tp_comm *tp;    /* borrowed; NULL without tensor parallelism */
    int tp_rank;
    tp_dims dims; /* this rank's heads and d_ff in the whole model's (rank 0 of 1 without tp) */
    /* async_steps: the launched steps not yet collected (oldest at flight_head) */
    struct flight {
        int32_t *plan;    /* pinned, lay.plan_words */
        sample_row *rows; /* pinned, [lay.logit_rows]: staging for the sampling rows */
        int32_t *out;     /* pinned, [lay.logit_rows][2]: ids, then log-probabilities */
        cudaEvent_t done; /* after the ids' copy */
        int n_rows;       /* rows sampled */
    } flights[2];
    int flight_head, n_flight;
    int last_sampled; /* rows the latest launch sampled: what a hand-off may name (0: none) */
    /* time_parts: [2 all-reduces per layer][start, end], then the LM head's [start, end] */
    cudaEvent_t *events;
    double allreduce_ms, lm_head_ms;
} cuda_backend;

static double gib(size_t bytes) { return (double)bytes / (double)(1ull << 30); }

/* cudaMalloc that names what did not fit and how much was free. */
static ds_status dev_alloc(void **p, size_t bytes, const char *what, char *msg, size_t msg_len) {
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 256);
    if (e == cudaSuccess) return DS_OK;
    *p = NULL;
    (void)cudaGetLastError(); /* the failure stays the last error otherwise */
    size_t free_bytes = 0, total = 0;
    (void)cudaMemGetInfo(&free_bytes, &total);
    if (e == cudaErrorMemoryAllocation)
        return ds_fail(msg, msg_len, DS_ENOMEM,
                       "%s: %.2f GiB do not fit in GPU memory (%.2f GiB free of %.2f GiB)", what,
                       gib(bytes), gib(free_bytes), gib(total));
    return ds_fail(msg, msg_len, DS_EINTERNAL, "%s: cudaMalloc(%zu bytes): %s", what, bytes,
                   cudaGetErrorString(e));
}

static ds_status host_alloc(void **p, size_t bytes, const char *what, char *msg, size_t msg_len) {
    cudaError_t e = cudaHostAlloc(p, bytes ? bytes : 256, cudaHostAllocDefault);
    if (e == cudaSuccess) return DS_OK;
    *p = NULL;
    (void)cudaGetLastError();
    return ds_fail(msg, msg_len, e == cudaErrorMemoryAllocation ? DS_ENOMEM : DS_EINTERNAL,
                   "%s: %.1f MiB of pinned host memory: %s", what, (double)bytes / (1 << 20),
                   cudaGetErrorString(e));
}

/* Waits for the stream; through the communicator when there is one (a dead peer would leave
 * cudaStreamSynchronize waiting forever). */
static ds_status wait_stream(cuda_backend *b, char *msg, size_t msg_len) {
    if (b->tp) return tp_comm_wait(b->tp, b->stream, 0, msg, msg_len);
    CUDA_CHECK(cudaStreamSynchronize(b->stream));
    return DS_OK;
}

static int n_events(const llama_config *c) { return 4 * c->n_layers + 2; }

static void backend_destroy(void *impl) {
    cuda_backend *b = impl;
    if (!b) return;
    for (int i = 0; i < b->n_graphs; i++)
        if (b->graph_exec[i]) cudaGraphExecDestroy(b->graph_exec[i]);
    if (b->cublas) cublasDestroy(b->cublas);
    if (b->stream) cudaStreamDestroy(b->stream);
    for (int i = 0; b->events && i < n_events(&b->config); i++)
        if (b->events[i]) cudaEventDestroy(b->events[i]);
    free(b->events);
    for (int i = 0; i < 2; i++) {
        struct flight *f = &b->flights[i];
        if (f->done) cudaEventDestroy(f->done);
        cudaFreeHost(f->plan), cudaFreeHost(f->rows), cudaFreeHost(f->out);
    }
    cudaFree(b->weights), cudaFree(b->scratch), cudaFree(b->kv_full), cudaFree(b->kv_open);
    cudaFree(b->hdr_dev);
    cudaFreeHost(b->plan_host), cudaFreeHost(b->logits_host), cudaFreeHost(b->hdr_host);
    cudaFreeHost(b->sample_host), cudaFreeHost(b->sample_out_host);
    free(b);
}

/* ---- GEMMs: row-major Y[rows][n_out] = X[rows][k] W[n_out][k]^T (+ beta Y) ----
 * cuBLAS is column-major, so this is Y^T = W^T' X^T: A = W transposed (lda k), B = X (ldb k). */
static ds_status gemm(cuda_backend *b, void *y, cudaDataType_t ytype, const void *w, const void *x,
                      int n_out, int rows, int k, float beta, char *msg, size_t msg_len) {
    const float one = 1.0f;
    if (rows <= b->gemv_rows && k % 8 == 0) { /* a few rows: stream W once (kernels/gemv.h) */
        const gemv_params g = {.w = w,
                               .x = x,
                               .out = y,
                               .w_type = b->wtype == FWD_BF16 ? GEMV_BF16 : GEMV_F16,
                               .out_type = ytype == CUDA_R_32F    ? GEMV_F32
                                           : ytype == CUDA_R_16BF ? GEMV_BF16
                                                                  : GEMV_F16,
                               .n_rows = rows,
                               .n_out = n_out,
                               .k = k,
                               .ldx = (size_t)k,
                               .ldo = (size_t)n_out,
                               .split = n_out,
                               .beta = beta};
        return gemv_cuda(&g, b->stream, msg, msg_len);
    }
    CUBLAS_CHECK(cublasGemmEx(b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, n_out, rows, k, &one, w, b->wdt,
                              k, x, b->wdt, k, &beta, y, ytype, n_out, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
    return DS_OK;
}

/* ---- weights ---- */

typedef struct uploader {
    float *host, *dev; /* pinned and device fp32 chunks of UPLOAD_CHUNK values */
} uploader;

/* n fp32 values from the host into dst as dtype (through the chunks; waits for each). */
static ds_status upload(cuda_backend *b, const uploader *u, void *dst, fwd_dtype type,
                        const float *src, size_t n, const char *what, char *msg, size_t msg_len) {
    if (!src) return ds_fail(msg, msg_len, DS_EINVAL, "model: %s has no weights", what);
    const size_t esize = type == FWD_F32 ? 4 : 2;
    for (size_t off = 0; off < n; off += UPLOAD_CHUNK) {
        const size_t k = n - off < UPLOAD_CHUNK ? n - off : UPLOAD_CHUNK;
        memcpy(u->host, src + off, k * sizeof(float));
        CUDA_CHECK(
            cudaMemcpyAsync(u->dev, u->host, k * sizeof(float), cudaMemcpyHostToDevice, b->stream));
        ds_status st = fwd_convert_cuda((uint8_t *)dst + off * esize, type, u->dev, FWD_F32, k,
                                        b->stream, msg, msg_len);
        if (st != DS_OK) return st;
        CUDA_CHECK(cudaStreamSynchronize(b->stream));
    }
    return DS_OK;
}

/* One tensor: from the model, or drawn from the seed (std 0: the constant mean). */
typedef struct weight_source {
    cuda_backend *b;
    const uploader *up; /* NULL: random */
    ds_rng rng;
} weight_source;

/* blk: where the tensor sits in the unsharded one (the random draw is the unsharded model's). */
static ds_status load_weight(weight_source *ws, void *dst, fwd_dtype type, const float *src,
                             fwd_fill_block blk, float mean, float std, const char *what, char *msg,
                             size_t msg_len) {
    const uint64_t seed = ds_rng_u64(&ws->rng); /* drawn either way: every rank visits the same */
    if (ws->up)
        return upload(ws->b, ws->up, dst, type, src, blk.rows * blk.cols, what, msg, msg_len);
    return fwd_fill_normal_cuda(dst, type, &blk, mean, std, seed, ws->b->stream, msg, msg_len);
}

static fwd_fill_block whole(size_t rows, size_t cols) {
    return (fwd_fill_block){.rows = rows, .cols = cols, .global_cols = cols};
}

/* Where one layer's host weights come from: the model, or this rank's shard of it. */
typedef struct layer_source {
    const float *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
} layer_source;

static layer_source layer_source_of(const llama_model *m, const tp_shard *shard, int l) {
    if (shard) {
        const tp_layer_shard *S = &shard->layers[l];
        return (layer_source){S->attn_norm, S->ffn_norm, S->wq,   S->wk,    S->wv,
                              S->wo,        S->w_gate,   S->w_up, S->w_down};
    }
    if (!m->layers) return (layer_source){0};
    const llama_layer *L = &m->layers[l];
    return (layer_source){L->attn_norm, L->ffn_norm, L->wq,   L->wk,    L->wv,
                          L->wo,        L->w_gate,   L->w_up, L->w_down};
}

/* b->config is this rank's; shard (NULL without tensor parallelism or with random weights) holds
 * the slices that match it. */
static ds_status load_weights(cuda_backend *b, const llama_model *m, const tp_shard *shard,
                              int random, uint64_t seed, char *msg, size_t msg_len) {
    const llama_config *c = &b->config;
    const cuda_layout *L = &b->lay;
    const size_t d = (size_t)c->d_model, D = (size_t)c->head_dim, ff = (size_t)c->d_ff;
    const size_t qd = (size_t)c->n_heads * D, kvd = (size_t)c->n_kv_heads * D;
    const size_t V = (size_t)c->vocab_size;
    /* this rank's slices in the whole model's matrices (engine/tp/shard.h) */
    const tp_dims *t = &b->dims;
    const size_t q0 = (size_t)t->head0 * D, kv0 = (size_t)t->kv_head0 * D, f0 = (size_t)t->ff0;
    const size_t QD = (size_t)m->config.n_heads * D, F = (size_t)m->config.d_ff;
    const float std = 0.02f;
    uploader up = {0};
    weight_source ws = {.b = b, .up = random ? NULL : &up, .rng = {seed}};
    ds_status st = DS_OK;
    if (!random) {
        st = host_alloc((void **)&up.host, UPLOAD_CHUNK * sizeof(float), "weight upload", msg,
                        msg_len);
        if (st == DS_OK)
            st = dev_alloc((void **)&up.dev, UPLOAD_CHUNK * sizeof(float), "weight upload", msg,
                           msg_len);
    }
    const fwd_dtype W = b->wtype;
    uint8_t *base = b->weights;
    if (st == DS_OK)
        st = load_weight(&ws, base + L->tok_embd, W, m->tok_embd, whole(V, d), 0.0f, std,
                         "token_embd", msg, msg_len);
    if (st == DS_OK && !c->tied_embeddings)
        st = load_weight(&ws, base + L->output, W, m->output, whole(V, d), 0.0f, std, "output", msg,
                         msg_len);
    if (st == DS_OK)
        st = load_weight(&ws, base + L->output_norm, FWD_F32, m->output_norm, whole(1, d), 1.0f,
                         0.0f, "output_norm", msg, msg_len);
    for (int l = 0; st == DS_OK && l < c->n_layers; l++) {
        const layer_source src = layer_source_of(m, shard, l);
        uint8_t *lw = base + L->layer0 + (size_t)l * L->layer_stride;
        const struct {
            size_t at;
            fwd_fill_block blk;
            fwd_dtype type;
            const float *src;
            float mean, std;
            const char *name;
        } parts[] = {
            {L->attn_norm, whole(1, d), FWD_F32, src.attn_norm, 1.0f, 0.0f, "attn_norm"},
            {L->ffn_norm, whole(1, d), FWD_F32, src.ffn_norm, 1.0f, 0.0f, "ffn_norm"},
            {L->wqkv, {qd, d, d, q0, 0}, W, src.wq, 0.0f, std, "attn_q"},
            {L->wqkv + qd * d * 2, {kvd, d, d, kv0, 0}, W, src.wk, 0.0f, std, "attn_k"},
            {L->wqkv + (qd + kvd) * d * 2, {kvd, d, d, kv0, 0}, W, src.wv, 0.0f, std, "attn_v"},
            {L->wo, {d, qd, QD, 0, q0}, W, src.wo, 0.0f, std, "attn_output"},
            {L->wgu, {ff, d, d, f0, 0}, W, src.w_gate, 0.0f, std, "ffn_gate"},
            {L->wgu + ff * d * 2, {ff, d, d, f0, 0}, W, src.w_up, 0.0f, std, "ffn_up"},
            {L->wdown, {d, ff, F, 0, f0}, W, src.w_down, 0.0f, std, "ffn_down"},
        };
        for (size_t i = 0; st == DS_OK && i < sizeof parts / sizeof parts[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, parts[i].name);
            st = load_weight(&ws, lw + parts[i].at, parts[i].type, parts[i].src, parts[i].blk,
                             parts[i].mean, parts[i].std, name, msg, msg_len);
        }
    }
    if (st == DS_OK) {
        float inv_freq[512];
        ops_rope_config rope = llama_rope_config(c);
        st = ops_rope_config_validate(&rope, msg, msg_len);
        if (st == DS_OK && c->head_dim > 1024)
            st = ds_fail(msg, msg_len, DS_EUNSUPPORTED, "head_dim = %d: at most 1024", c->head_dim);
        if (st == DS_OK) {
            ops_rope_inv_freq(&rope, inv_freq);
            cudaError_t e = cudaMemcpyAsync(base + L->inv_freq, inv_freq, D / 2 * sizeof(float),
                                            cudaMemcpyHostToDevice, b->stream);
            if (e == cudaSuccess) e = cudaStreamSynchronize(b->stream);
            if (e != cudaSuccess)
                st = ds_fail(msg, msg_len, DS_EINTERNAL, "weights: inv_freq upload: %s",
                             cudaGetErrorString(e));
        }
    }
    if (st == DS_OK && random) {
        cudaError_t e = cudaStreamSynchronize(b->stream);
        if (e != cudaSuccess)
            st = ds_fail(msg, msg_len, DS_EINTERNAL, "weights: random fill: %s",
                         cudaGetErrorString(e));
    }
    cudaFreeHost(up.host);
    cudaFree(up.dev);
    return st;
}

/* ---- the step ---- */

static kv_layer_view layer_view(const cuda_backend *b, int layer) {
    const kv_cache_config *kc = &b->cache->config;
    return (kv_layer_view){
        .full = b->kv_full + (size_t)layer * b->full_layer_bytes,
        .full_block_stride =
            (size_t)b->config.n_kv_heads * (b->key_format.page_bytes + b->value_format.page_bytes),
        .open = b->kv_open + (size_t)layer * b->open_layer_elems,
        .open_block_stride = 2 * (size_t)kc->block_size * b->config.n_kv_heads * kc->head_dim,
    };
}

/* The sum over ranks of x[0..n), the i-th of the step; between two events when timed. */
static ds_status allreduce(cuda_backend *b, float *x, size_t n, int i, char *msg, size_t msg_len) {
    if (b->events) CUDA_CHECK(cudaEventRecord(b->events[2 * i], b->stream));
    ds_status st = tp_comm_allreduce_sum(b->tp, x, n, b->stream, msg, msg_len);
    if (st == DS_OK && b->events) CUDA_CHECK(cudaEventRecord(b->events[2 * i + 1], b->stream));
    return st;
}

/* After a timed step has finished: adds its all-reduces' time. */
static ds_status add_allreduce_time(cuda_backend *b, char *msg, size_t msg_len) {
    for (int i = 0; b->tp && i < 2 * b->config.n_layers; i++) {
        float ms;
        CUDA_CHECK(cudaEventElapsedTime(&ms, b->events[2 * i], b->events[2 * i + 1]));
        b->allreduce_ms += ms;
    }
    return DS_OK;
}

/* graph: p is a padded plan being captured (plan.h): kv_compress and attention read their sizes
 * from its run-time words, and the attention grid covers the whole context. */
static ds_status run_layer(cuda_backend *b, const cuda_plan *p, const int32_t *dp, int l, int graph,
                           char *msg, size_t msg_len) {
    const llama_config *c = &b->config;
    const cuda_layout *L = &b->lay;
    const int R = p->n_rows, d = c->d_model, D = c->head_dim, H = c->n_kv_heads;
    const int qd = c->n_heads * D, kvd = H * D, qkvw = qd + 2 * kvd, ff = c->d_ff;
    const int bf16 = b->wtype == FWD_BF16;
    const uint8_t *w = b->weights + L->layer0 + (size_t)l * L->layer_stride;
    uint8_t *s = b->scratch;
    float *x = (float *)(s + L->x);
    void *xn = s + L->xn;
    uint16_t *qkv = (uint16_t *)(s + L->qkv), *attn = (uint16_t *)(s + L->attn);
    uint16_t *gate = (uint16_t *)(s + L->gu), *up = gate + (size_t)b->limits.max_rows * ff;
    const kv_layer_view view = layer_view(b, l);
    cudaStream_t stream = b->stream;
    const float zero = 0.0f, one = 1.0f;

    fwd_rmsnorm_params norm = {.out = xn,
                               .out_type = b->wtype,
                               .x = x,
                               .weight = (const float *)(w + L->attn_norm),
                               .n_rows = R,
                               .dim = d,
                               .eps = c->rms_eps};
    ds_status st = fwd_rmsnorm_cuda(&norm, stream, msg, msg_len);
    if (st != DS_OK) return st;
    if (bf16) {
        float *qkv32 = (float *)(s + L->qkv_f32);
        st = gemm(b, qkv32, CUDA_R_32F, w + L->wqkv, xn, qkvw, R, d, 0.0f, msg, msg_len);
        if (st == DS_OK)
            st = fwd_convert_cuda(qkv, FWD_F16, qkv32, FWD_F32, (size_t)R * qkvw, stream, msg,
                                  msg_len);
    } else {
        st = gemm(b, qkv, CUDA_R_16F, w + L->wqkv, xn, qkvw, R, d, 0.0f, msg, msg_len);
    }
    if (st != DS_OK) return st;
    /* Q and K heads are adjacent in a row, so one launch rotates both. */
    const ops_rope_cuda_params rope = {.x = qkv,
                                       .positions = dp + p->positions,
                                       .inv_freq = (const float *)(b->weights + L->inv_freq),
                                       .n_rows = R,
                                       .n_heads = c->n_heads + H,
                                       .head_dim = D,
                                       .row_stride = (size_t)qkvw};
    st = ops_rope_cuda(&rope, stream, msg, msg_len);
    if (st != DS_OK) return st;
    const reshape_and_cache_params write = {.k = qkv + qd,
                                            .v = qkv + qd + kvd,
                                            .k_stride = (size_t)qkvw,
                                            .v_stride = (size_t)qkvw,
                                            .slots = dp + p->slots,
                                            .n_rows = R,
                                            .n_kv_heads = H,
                                            .head_dim = D,
                                            .block_size = b->cache->config.block_size,
                                            .cache = view};
    st = reshape_and_cache_cuda(&write, stream, msg, msg_len);
    if (st != DS_OK) return st;
    if (p->n_fill) {
        const kv_compress_params compress = {.open_ids = dp + p->fill_open,
                                             .full_ids = dp + p->fill_full,
                                             .n_blocks = p->n_fill,
                                             .n_kv_heads = H,
                                             .n_blocks_dev =
                                                 graph ? dp + p->dyn + CUDA_PLAN_DYN_FILLS : NULL,
                                             .smem_ready = b->compress_ready,
                                             .cache = view,
                                             .key_format = b->key_format,
                                             .value_format = b->value_format};
        st = kv_compress_cuda(&compress, stream, msg, msg_len);
        if (st != DS_OK) return st;
    }
    const paged_attention_params ap = {.q = qkv,
                                       .q_stride = (size_t)qkvw,
                                       .out = attn,
                                       .out_stride = (size_t)qd,
                                       .row_seq = dp + p->row_seq,
                                       .row_pos = dp + p->positions,
                                       .full_table = dp + p->full_table,
                                       .open_table = dp + p->open_table,
                                       .table_stride = p->table_stride,
                                       .n_rows = R,
                                       .n_q_heads = c->n_heads,
                                       .n_kv_heads = H,
                                       .head_dim = D,
                                       .block_size = b->cache->config.block_size,
                                       .max_pos = graph ? c->context_length - 1 : p->max_pos,
                                       .scale = 1.0f / sqrtf((float)D),
                                       .cache = view,
                                       .key_format = b->key_format,
                                       .value_format = b->value_format,
                                       .exec = graph ? NULL : dp + p->exec};
    paged_attention_tuning tuning = b->attn_tuning;
    if (graph) tuning.blocks_per_split_dev = dp + p->dyn + CUDA_PLAN_DYN_SPLIT;
    st = paged_attention_cuda(&ap, &tuning, s + L->attn_ws, L->attn_ws_bytes, NULL, stream, msg,
                              msg_len);
    if (st != DS_OK) return st;
    const void *attn_in = attn;
    if (bf16) {
        st = fwd_convert_cuda(s + L->attn_w, FWD_BF16, attn, FWD_F16, (size_t)R * qd, stream, msg,
                              msg_len);
        if (st != DS_OK) return st;
        attn_in = s + L->attn_w;
    }
    /* With tensor parallelism rank 0 adds its partial product to x and the others write theirs,
     * so the in-place sum over ranks is x + Σ_r wo_r attn_r on every rank. */
    const float beta = b->tp_rank == 0 ? 1.0f : 0.0f;
    st = gemm(b, x, CUDA_R_32F, w + L->wo, attn_in, d, R, qd, beta, msg, msg_len);
    if (st == DS_OK && b->tp) st = allreduce(b, x, (size_t)R * d, 2 * l, msg, msg_len);
    norm.weight = (const float *)(w + L->ffn_norm);
    if (st == DS_OK) st = fwd_rmsnorm_cuda(&norm, stream, msg, msg_len);
    if (st != DS_OK) return st;
    /* gate and up in one call: two GEMMs that share X, weights ff * d apart, outputs
     * max_rows * ff apart. */
    if (R <= b->gemv_rows && d % 8 == 0) { /* w_gate and w_up are one [2 d_ff][d] matrix */
        const gemv_params g = {.w = (const uint16_t *)(w + L->wgu),
                               .x = xn,
                               .out = gate,
                               .w_type = bf16 ? GEMV_BF16 : GEMV_F16,
                               .out_type = bf16 ? GEMV_BF16 : GEMV_F16,
                               .n_rows = R,
                               .n_out = 2 * ff,
                               .k = d,
                               .ldx = (size_t)d,
                               .ldo = (size_t)ff,
                               .split = ff,
                               .split_stride = (size_t)b->limits.max_rows * ff};
        st = gemv_cuda(&g, stream, msg, msg_len);
        if (st != DS_OK) return st;
    } else {
        CUBLAS_CHECK(cublasGemmStridedBatchedEx(
            b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, ff, R, d, &one, w + L->wgu, b->wdt, d,
            (long long)ff * d, xn, b->wdt, d, 0, &zero, gate, b->wdt, ff,
            (long long)b->limits.max_rows * ff, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
    st = bf16 ? fwd_swiglu_bf16_cuda(gate, gate, up, (size_t)R * ff, stream, msg, msg_len)
              : ops_swiglu_cuda(gate, gate, up, (size_t)R * ff, stream, msg, msg_len);
    if (st == DS_OK) st = gemm(b, x, CUDA_R_32F, w + L->wdown, gate, d, R, ff, beta, msg, msg_len);
    if (st == DS_OK && b->tp) st = allreduce(b, x, (size_t)R * d, 2 * l + 1, msg, msg_len);
    return st;
}

/* Prefixes msg with the layer a failure came from. */
static ds_status in_layer(ds_status st, int layer, char *msg, size_t msg_len) {
    if (st == DS_OK || !msg || !msg_len) return st;
    char inner[512];
    snprintf(inner, sizeof inner, "%s", msg);
    return ds_fail(msg, msg_len, st, "layer %d: %s", layer, inner);
}

/* Rank 0 of a group of several GPUs: it plans, the others follow its header and plan. */
static int leads(const cuda_backend *b) {
    return b->tp && b->tp_rank == 0 && tp_comm_size(b->tp) > 1;
}

static ds_status send_header(cuda_backend *b, cuda_plan_command command, const cuda_plan *p,
                             char *msg, size_t msg_len) {
    cuda_plan_header_pack(command, p, b->hdr_host);
    CUDA_CHECK(cudaMemcpyAsync(b->hdr_dev, b->hdr_host, CUDA_PLAN_HEADER_WORDS * sizeof(int32_t),
                               cudaMemcpyHostToDevice, b->stream));
    return tp_comm_broadcast(b->tp, b->hdr_dev, CUDA_PLAN_HEADER_WORDS * sizeof(int32_t), b->stream,
                             msg, msg_len);
}

/* Final norm over logit rows r0 .. r0 + n of the plan, and the LM head in fp32 into the logits
 * buffer. */
static ds_status lm_head(cuda_backend *b, const cuda_plan *p, const int32_t *dp, int r0, int n,
                         char *msg, size_t msg_len) {
    const llama_config *c = &b->config;
    const cuda_layout *L = &b->lay;
    const fwd_rmsnorm_params norm = {.out = b->scratch + L->logit_x,
                                     .out_type = b->wtype,
                                     .x = (const float *)(b->scratch + L->x),
                                     .rows = dp + p->logit_rows + r0,
                                     .weight = (const float *)(b->weights + L->output_norm),
                                     .n_rows = n,
                                     .dim = c->d_model,
                                     .eps = c->rms_eps};
    ds_status st = fwd_rmsnorm_cuda(&norm, b->stream, msg, msg_len);
    return st == DS_OK
               ? gemm(b, b->scratch + L->logits, CUDA_R_32F, b->weights + L->output,
                      b->scratch + L->logit_x, c->vocab_size, n, c->d_model, 0.0f, msg, msg_len)
               : st;
}

/* Samples the first n rows of the logits buffer with the rows at L->sample_rows into
 * L->sample_out (ids, then log-probabilities); n_rows_dev: the count read at run time. */
static ds_status sample_rows(cuda_backend *b, int n, const int32_t *n_rows_dev, char *msg,
                             size_t msg_len) {
    const cuda_layout *L = &b->lay;
    int32_t *ids = (int32_t *)(b->scratch + L->sample_out);
    const sample_params sp = {.logits = (const float *)(b->scratch + L->logits),
                              .rows = (const sample_row *)(b->scratch + L->sample_rows),
                              .ids = ids,
                              .logprobs = (float *)(ids + L->logit_rows),
                              .probs = (float *)(b->scratch + L->probs),
                              .n_rows_dev = n_rows_dev,
                              .n_rows = n,
                              .vocab = b->config.vocab_size};
    return sample_cuda(&sp, b->stream, msg, msg_len);
}

/* What a step hands back: logits [n_logit_rows][vocab] to the host, or (rows set) one token and
 * log-probability per logit row sampled on the device; neither on a following rank. tokens NULL
 * with rows set: a launch, which waits for nothing (collect reads the ids from the step_io). */
typedef struct step_out {
    float *logits;
    const sample_row *rows;
    int32_t *tokens;
    float *logprobs;
} step_out;

/* The pinned host buffers a step goes through: the synchronous path's, or a flight slot's. */
typedef struct step_io {
    int32_t *plan;
    sample_row *rows;
    int32_t *out; /* [lay.logit_rows] ids, then as many log-probabilities */
} step_io;

static step_io sync_io(const cuda_backend *b) {
    return (step_io){.plan = b->plan_host, .rows = b->sample_host, .out = b->sample_out_host};
}

/* The hand-off of a plan with one (plan.h's handoff rows): the previous step's sampled ids, still
 * in L->sample_out, into this step's tokens. */
static ds_status hand_off(cuda_backend *b, const cuda_plan *p, int32_t *dp, char *msg,
                          size_t msg_len) {
    if (!p->n_handoff) return DS_OK;
    return sample_handoff_cuda(dp + p->tokens, dp + p->handoff,
                               (const int32_t *)(b->scratch + b->lay.sample_out), p->n_rows,
                               b->stream, msg, msg_len);
}

/* Copies the sampled ids and log-probabilities of the first n rows out of io (after the wait). */
static void take_samples(const cuda_backend *b, const step_io *io, const step_out *out, int n) {
    memcpy(out->tokens, io->out, (size_t)n * sizeof(int32_t));
    if (out->logprobs)
        memcpy(out->logprobs, io->out + b->lay.logit_rows, (size_t)n * sizeof(float));
}

static ds_status run_step(cuda_backend *b, const cuda_plan *p, const step_io *io,
                          const step_out *out, char *msg, size_t msg_len) {
    const llama_config *c = &b->config;
    const cuda_layout *L = &b->lay;
    const size_t V = (size_t)c->vocab_size;
    int32_t *dp = (int32_t *)(b->scratch + L->plan);
    float *x = (float *)(b->scratch + L->x);
    CUDA_CHECK(cudaSetDevice(b->device)); /* the engine thread may not be the creating one */
    ds_status st = DS_OK;
    if (b->tp_rank == 0) { /* a follower's plan is on its way already (cuda_backend_follow) */
        CUDA_CHECK(cudaMemcpyAsync(dp, io->plan, p->n_words * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, b->stream));
        if (leads(b)) {
            st = send_header(b, CUDA_PLAN_STEP, p, msg, msg_len);
            if (st == DS_OK)
                st = tp_comm_broadcast(b->tp, dp, p->n_words * sizeof(int32_t), b->stream, msg,
                                       msg_len);
        }
    }
    if (st == DS_OK) st = hand_off(b, p, dp, msg, msg_len);
    if (st == DS_OK)
        st = fwd_embed_cuda(x, b->weights + L->tok_embd, b->wtype, c->d_model, dp + p->tokens,
                            p->n_rows, b->stream, msg, msg_len);
    for (int l = 0; st == DS_OK && l < c->n_layers; l++)
        st = in_layer(run_layer(b, p, dp, l, 0, msg, msg_len), l, msg, msg_len);
    if (st != DS_OK) return st;
    /* Final norm over the gathered rows, LM head in fp32 (on rank 0 alone: the head is
     * replicated, every rank's x is the same), then either sampled on the device (one chunk:
     * forward_sample asks for at most one row per sequence) or to the host a chunk at a time. */
    float *dev_logits = (float *)(b->scratch + L->logits);
    const int n_logit_rows = b->tp_rank == 0 ? p->n_logit_rows : 0;
    const int sampling = out && out->rows;
    const int launch = sampling && !out->tokens;
    DS_ASSERT(!launch || n_logit_rows <= L->logit_rows); /* one chunk: at most one per sequence */
    if (sampling && n_logit_rows) {
        memcpy(io->rows, out->rows, (size_t)n_logit_rows * sizeof(sample_row));
        CUDA_CHECK(cudaMemcpyAsync(b->scratch + L->sample_rows, io->rows,
                                   (size_t)n_logit_rows * sizeof(sample_row),
                                   cudaMemcpyHostToDevice, b->stream));
    }
    for (int r0 = 0; r0 < n_logit_rows; r0 += L->logit_rows) {
        const int n = n_logit_rows - r0 < L->logit_rows ? n_logit_rows - r0 : L->logit_rows;
        cudaEvent_t *head = b->events ? b->events + n_events(c) - 2 : NULL;
        if (head) CUDA_CHECK(cudaEventRecord(head[0], b->stream));
        st = lm_head(b, p, dp, r0, n, msg, msg_len);
        if (st != DS_OK) return st;
        if (head) CUDA_CHECK(cudaEventRecord(head[1], b->stream));
        if (sampling) {
            st = sample_rows(b, n, NULL, msg, msg_len);
            if (st != DS_OK) return st;
            CUDA_CHECK(cudaMemcpyAsync(io->out, b->scratch + L->sample_out,
                                       2 * L->logit_rows * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                       b->stream));
            if (launch) return DS_OK;
        } else {
            CUDA_CHECK(cudaMemcpyAsync(b->logits_host, dev_logits, (size_t)n * V * sizeof(float),
                                       cudaMemcpyDeviceToHost, b->stream));
        }
        st = wait_stream(b, msg, msg_len);
        if (st != DS_OK) return st;
        if (head) {
            float ms;
            CUDA_CHECK(cudaEventElapsedTime(&ms, head[0], head[1]));
            b->lm_head_ms += ms;
        }
        if (sampling) {
            take_samples(b, io, out, n);
        } else {
            memcpy(out->logits + (size_t)r0 * V, b->logits_host, (size_t)n * V * sizeof(float));
        }
    }
    if (launch) return DS_OK; /* no row sampled: collect waits for the step's event */
    /* Also when no row wants logits: the next step rewrites the pinned plan buffer. */
    st = wait_stream(b, msg, msg_len);
    return st == DS_OK && b->events ? add_allreduce_time(b, msg, msg_len) : st;
}

void cuda_backend_part_ms(const engine_backend *rank, double *allreduce_ms, double *lm_head_ms) {
    const cuda_backend *b = rank->impl;
    *allreduce_ms = b->allreduce_ms, *lm_head_ms = b->lm_head_ms;
}

/* ---- CUDA graphs of decode-only steps ---- */

/* The graph slot for n sequences: the smallest bucket that holds them, or -1. */
static int graph_slot(const cuda_backend *b, int n) {
    for (int i = 0; i < b->n_graphs; i++)
        if (n <= b->graph_rows[i]) return i;
    return -1;
}

/* Everything a padded plan's step enqueues, from the embedding to the sampled ids. */
static ds_status enqueue_padded(cuda_backend *b, const cuda_plan *p, char *msg, size_t msg_len) {
    const cuda_layout *L = &b->lay;
    const int32_t *dp = (const int32_t *)(b->scratch + L->plan);
    ds_status st =
        fwd_embed_cuda((float *)(b->scratch + L->x), b->weights + L->tok_embd, b->wtype,
                       b->config.d_model, dp + p->tokens, p->n_rows, b->stream, msg, msg_len);
    for (int l = 0; st == DS_OK && l < b->config.n_layers; l++)
        st = in_layer(run_layer(b, p, dp, l, 1, msg, msg_len), l, msg, msg_len);
    if (st == DS_OK) st = lm_head(b, p, dp, 0, p->n_rows, msg, msg_len);
    if (st == DS_OK) st = sample_rows(b, p->n_rows, dp + p->dyn + CUDA_PLAN_DYN_ROWS, msg, msg_len);
    return st;
}

/* Captures slot's graph from a padded plan of its size; on failure graphs stay off and the
 * caller runs the step eagerly (st is then DS_OK and *exec NULL). */
static ds_status capture(cuda_backend *b, const cuda_plan *p, cudaGraphExec_t *exec, char *msg,
                         size_t msg_len) {
    *exec = NULL;
    cudaGraph_t graph = NULL;
    CUDA_CHECK(cudaStreamBeginCapture(b->stream, cudaStreamCaptureModeThreadLocal));
    char why[512] = "";
    ds_status st = enqueue_padded(b, p, why, sizeof why);
    cudaError_t e = cudaStreamEndCapture(b->stream, &graph);
    if (st == DS_OK && e == cudaSuccess) e = cudaGraphInstantiate(exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (st == DS_OK && e == cudaSuccess) return DS_OK;
    (void)cudaGetLastError();
    *exec = NULL;
    b->graphs_off = 1;
    DS_LOG_W("cuda:%d: CUDA graph capture of a %d-row decode step failed (%s); running every step "
             "eagerly",
             b->device, p->n_rows, st != DS_OK ? why : cudaGetErrorString(e));
    (void)msg, (void)msg_len;
    return DS_OK;
}

/* A decode-only step through its bucket's graph (captured on first use). *ran = 0: graphs are
 * off after a failed capture; nothing ran and the caller goes eager. */
static ds_status run_graph_step(cuda_backend *b, const llama_step_seq *seqs, int n_seqs,
                                const int32_t *prev_row, int slot, const step_io *io,
                                const step_out *out, int *ran, char *msg, size_t msg_len) {
    const cuda_layout *L = &b->lay;
    *ran = 0;
    cuda_plan p;
    ds_status st = cuda_plan_build_padded(b->cache, seqs, n_seqs, prev_row, b->graph_rows[slot],
                                          &b->limits, io->plan, &p, msg, msg_len);
    if (st != DS_OK) return st;
    /* The attention's split size for this step's context, in the graph's grid. */
    const llama_config *c = &b->config;
    const paged_attention_params ap = {.table_stride = p.table_stride,
                                       .n_rows = p.n_rows,
                                       .n_q_heads = c->n_heads,
                                       .n_kv_heads = c->n_kv_heads,
                                       .head_dim = c->head_dim,
                                       .block_size = b->cache->config.block_size,
                                       .max_pos = p.max_pos,
                                       .scale = 1.0f,
                                       .cache = layer_view(b, 0),
                                       .key_format = b->key_format,
                                       .value_format = b->value_format};
    io->plan[p.dyn + CUDA_PLAN_DYN_SPLIT] =
        paged_attention_cuda_blocks_per_split(&ap, &b->attn_tuning, L->attn_ws_bytes);
    CUDA_CHECK(cudaSetDevice(b->device));
    int32_t *dp = (int32_t *)(b->scratch + L->plan);
    CUDA_CHECK(cudaMemcpyAsync(dp, io->plan, p.n_words * sizeof(int32_t), cudaMemcpyHostToDevice,
                               b->stream));
    memcpy(io->rows, out->rows, (size_t)n_seqs * sizeof(sample_row));
    CUDA_CHECK(cudaMemcpyAsync(b->scratch + L->sample_rows, io->rows,
                               (size_t)n_seqs * sizeof(sample_row), cudaMemcpyHostToDevice,
                               b->stream));
    if (!b->graph_exec[slot]) {
        st = capture(b, &p, &b->graph_exec[slot], msg, msg_len);
        if (st != DS_OK || !b->graph_exec[slot]) return wait_stream(b, msg, msg_len);
    }
    st = hand_off(b, &p, dp, msg, msg_len); /* outside the graph: it reads the last step's ids */
    if (st != DS_OK) return st;
    CUDA_CHECK(cudaGraphLaunch(b->graph_exec[slot], b->stream));
    CUDA_CHECK(cudaMemcpyAsync(io->out, b->scratch + L->sample_out,
                               2 * L->logit_rows * sizeof(int32_t), cudaMemcpyDeviceToHost,
                               b->stream));
    if (!out->tokens) { /* a launch: collect waits */
        *ran = 1;
        return DS_OK;
    }
    st = wait_stream(b, msg, msg_len);
    if (st != DS_OK) return st;
    *ran = 1;
    take_samples(b, io, out, n_seqs);
    return DS_OK;
}

/* The bucket for a step that a graph can run (decode-only, sampled on the device), or -1. */
static int graph_slot_for(const cuda_backend *b, const llama_step_seq *seqs, int n_seqs,
                          const step_out *out) {
    if (!b->n_graphs || b->graphs_off || !out || !out->rows || n_seqs < 1) return -1;
    for (int i = 0; i < n_seqs; i++)
        if (seqs[i].n_tokens != 1 || seqs[i].logits != LLAMA_LOGITS_LAST) return -1;
    return graph_slot(b, n_seqs);
}

/* prev_row: a launch's hand-off (NULL: none); io: where the step's host side lives. */
static ds_status forward_step(cuda_backend *b, const llama_step_seq *seqs, int n_seqs,
                              const int32_t *prev_row, const step_io *io, const step_out *out,
                              char *msg, size_t msg_len) {
    const int slot = graph_slot_for(b, seqs, n_seqs, out);
    if (slot >= 0) {
        int ran;
        ds_status st = run_graph_step(b, seqs, n_seqs, prev_row, slot, io, out, &ran, msg, msg_len);
        if (st != DS_OK || ran) return st;
    }
    cuda_plan p;
    ds_status st =
        cuda_plan_build(b->cache, seqs, n_seqs, prev_row, &b->limits, io->plan, &p, msg, msg_len);
    if (st != DS_OK || p.n_rows == 0) return st;
    st = run_step(b, &p, io, out, msg, msg_len);
    if (st != DS_OK && st != DS_EUNAVAILABLE && leads(b)) { /* the others ran on, or wait */
        char inner[512];
        snprintf(inner, sizeof inner, "%s", msg);
        st = ds_fail(msg, msg_len, DS_EUNAVAILABLE, "tensor-parallel ranks out of step: %s", inner);
    }
    return st;
}

/* A synchronous step: not while launched steps are uncollected, and no hand-off may follow it. */
static ds_status forward_sync(cuda_backend *b, const llama_step_seq *seqs, int n_seqs,
                              const step_out *out, char *msg, size_t msg_len) {
    if (b->n_flight)
        return ds_fail(msg, msg_len, DS_EINVAL, "forward: %d launched steps not collected",
                       b->n_flight);
    b->last_sampled = 0;
    const step_io io = sync_io(b);
    return forward_step(b, seqs, n_seqs, NULL, &io, out, msg, msg_len);
}

static ds_status backend_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                                 char *msg, size_t msg_len) {
    const step_out out = {.logits = logits};
    return forward_sync(impl, seqs, n_seqs, &out, msg, msg_len);
}

/* Device sampling takes one row per sequence; *n_rows: how many sequences want one. */
static ds_status check_sampled(const llama_step_seq *seqs, int n_seqs, int *n_rows, char *msg,
                               size_t msg_len) {
    *n_rows = 0;
    for (int i = 0; i < n_seqs; i++) {
        if (seqs[i].logits != LLAMA_LOGITS_LAST && seqs[i].logits != LLAMA_LOGITS_NONE)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "sequence %d: device sampling takes its last row's logits or none", i);
        *n_rows += seqs[i].logits == LLAMA_LOGITS_LAST;
    }
    return DS_OK;
}

static ds_status backend_forward_sample(void *impl, const llama_step_seq *seqs, int n_seqs,
                                        const sample_row *rows, int32_t *tokens, float *logprobs,
                                        char *msg, size_t msg_len) {
    int n_rows;
    ds_status st = check_sampled(seqs, n_seqs, &n_rows, msg, msg_len);
    if (st != DS_OK) return st;
    const step_out out = {.rows = rows, .tokens = tokens, .logprobs = logprobs};
    return forward_sync(impl, seqs, n_seqs, &out, msg, msg_len);
}

static ds_status backend_launch(void *impl, const llama_step_seq *seqs, int n_seqs,
                                const sample_row *rows, const int32_t *prev_row, char *msg,
                                size_t msg_len) {
    cuda_backend *b = impl;
    if (b->n_flight == 2)
        return ds_fail(msg, msg_len, DS_EINVAL, "launch: two steps launched, none collected");
    int n_rows;
    ds_status st = check_sampled(seqs, n_seqs, &n_rows, msg, msg_len);
    for (int i = 0; st == DS_OK && prev_row && i < n_seqs; i++)
        if (prev_row[i] >= b->last_sampled)
            st = ds_fail(msg, msg_len, DS_EINVAL,
                         "sequence %d: hand-off of sample row %d; the last launch sampled %d", i,
                         prev_row[i], b->last_sampled);
    if (st != DS_OK) return st;
    struct flight *f = &b->flights[(b->flight_head + b->n_flight) % 2];
    const step_io io = {.plan = f->plan, .rows = f->rows, .out = f->out};
    const step_out out = {.rows = rows}; /* no tokens: nothing waits */
    st = forward_step(b, seqs, n_seqs, prev_row, &io, &out, msg, msg_len);
    if (st == DS_OK) {
        cudaError_t e = cudaEventRecord(f->done, b->stream);
        if (e != cudaSuccess)
            st = ds_fail(msg, msg_len, DS_EINTERNAL, "launch: cudaEventRecord: %s",
                         cudaGetErrorString(e));
    }
    if (st != DS_OK) { /* nothing of this step may still be running when the caller goes on */
        (void)cudaStreamSynchronize(b->stream);
        return st;
    }
    f->n_rows = n_rows;
    b->last_sampled = n_rows;
    b->n_flight++;
    return DS_OK;
}

static ds_status backend_collect(void *impl, int32_t *tokens, float *logprobs, char *msg,
                                 size_t msg_len) {
    cuda_backend *b = impl;
    if (!b->n_flight) return ds_fail(msg, msg_len, DS_EINVAL, "collect: no step launched");
    struct flight *f = &b->flights[b->flight_head];
    b->flight_head = (b->flight_head + 1) % 2;
    b->n_flight--;
    CUDA_CHECK(cudaSetDevice(b->device));
    CUDA_CHECK(cudaEventSynchronize(f->done));
    const step_io io = {.plan = f->plan, .rows = f->rows, .out = f->out};
    const step_out out = {.tokens = tokens, .logprobs = logprobs};
    take_samples(b, &io, &out, f->n_rows);
    return DS_OK;
}

ds_status cuda_backend_follow(const engine_backend *rank, int *stop, char *msg, size_t msg_len) {
    cuda_backend *b = rank->impl;
    *stop = 0;
    if (!b->tp || b->tp_rank == 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "cuda_backend_follow: not a following rank");
    CUDA_CHECK(cudaSetDevice(b->device));
    const size_t hdr_bytes = CUDA_PLAN_HEADER_WORDS * sizeof(int32_t);
    ds_status st = tp_comm_broadcast(b->tp, b->hdr_dev, hdr_bytes, b->stream, msg, msg_len);
    if (st != DS_OK) return st;
    CUDA_CHECK(
        cudaMemcpyAsync(b->hdr_host, b->hdr_dev, hdr_bytes, cudaMemcpyDeviceToHost, b->stream));
    st = tp_comm_wait(b->tp, b->stream, 0, msg, msg_len);
    cuda_plan p;
    cuda_plan_command command;
    if (st == DS_OK)
        st = cuda_plan_header_unpack(b->hdr_host, &b->limits, &command, &p, msg, msg_len);
    if (st != DS_OK || command != CUDA_PLAN_STEP) {
        *stop = st == DS_OK && command == CUDA_PLAN_STOP;
        return st;
    }
    st = tp_comm_broadcast(b->tp, b->scratch + b->lay.plan, p.n_words * sizeof(int32_t), b->stream,
                           msg, msg_len);
    const step_io io = sync_io(b); /* unused by a follower: its plan comes by broadcast */
    return st == DS_OK ? run_step(b, &p, &io, NULL, msg, msg_len) : st;
}

ds_status cuda_backend_signal(const engine_backend *rank0, int stop, char *msg, size_t msg_len) {
    cuda_backend *b = rank0->impl;
    if (!leads(b))
        return ds_fail(msg, msg_len, DS_EINVAL, "cuda_backend_signal: not rank 0 of a group");
    CUDA_CHECK(cudaSetDevice(b->device));
    ds_status st = send_header(b, stop ? CUDA_PLAN_STOP : CUDA_PLAN_IDLE, NULL, msg, msg_len);
    return st == DS_OK ? wait_stream(b, msg, msg_len) : st;
}

/* ---- start-up ---- */

static ds_status check_shapes(const llama_config *c, const kv_cache *cache,
                              const cuda_backend_options *o, char *msg, size_t msg_len) {
    ds_status st = llama_config_validate(c, msg, msg_len);
    if (st == DS_OK)
        st = kv_cache_check_shape(cache, c->n_layers, c->n_kv_heads, c->head_dim, msg, msg_len);
    if (st != DS_OK) return st;
    if (o->max_step_tokens <= 0 || o->max_seqs <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "max_step_tokens = %d, max_seqs = %d: both must be positive",
                       o->max_step_tokens, o->max_seqs);
    if (o->weight_type != CUDA_WEIGHTS_F16 && o->weight_type != CUDA_WEIGHTS_BF16)
        return ds_fail(msg, msg_len, DS_EINVAL, "weight type %d: expected fp16 or bf16",
                       (int)o->weight_type);
    return DS_OK;
}

ds_status cuda_device_memory(int device, size_t *free_bytes, size_t *total_bytes, char *name,
                             size_t name_len, char *msg, size_t msg_len) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return ds_fail(msg, msg_len, DS_EUNAVAILABLE, "no CUDA device: %s", cudaGetErrorString(e));
    if (device < 0 || device >= n)
        return ds_fail(msg, msg_len, DS_EINVAL, "cuda device %d: %d device%s present", device, n,
                       n == 1 ? "" : "s");
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaMemGetInfo(free_bytes, total_bytes));
    if (name && name_len) {
        struct cudaDeviceProp prop;
        CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
        snprintf(name, name_len, "%s", prop.name);
    }
    return DS_OK;
}

/* Device limits asked once, the kernels' shared-memory limits raised once: no attribute call is
 * left on a step's path (CUDA graph captures refuse them, and each costs microseconds). Picking
 * the attention kernel also rejects shapes and page formats it was not built for, before any
 * step does. */
static ds_status prepare_kernels(cuda_backend *b, char *msg, size_t msg_len) {
    const llama_config *c = &b->config;
    const paged_attention_params probe = {.table_stride = 1,
                                          .n_q_heads = c->n_heads,
                                          .n_kv_heads = c->n_kv_heads,
                                          .head_dim = c->head_dim,
                                          .block_size = b->cache->config.block_size,
                                          .scale = 1.0f,
                                          .cache = layer_view(b, 0),
                                          .key_format = b->key_format,
                                          .value_format = b->value_format};
    ds_status st = paged_attention_cuda_prepare(&probe, &b->attn_tuning, msg, msg_len);
    if (st != DS_OK) return st;
    kv_compress_params compress = {
        .n_kv_heads = c->n_kv_heads, .key_format = b->key_format, .value_format = b->value_format};
    st = kv_compress_cuda_prepare(&compress, msg, msg_len);
    b->compress_ready = compress.smem_ready;
    return st;
}

/* launch / collect: asked for, and neither tensor parallelism (the group steps in lockstep) nor
 * time_parts (its events are read after a synchronous step). */
static int async_steps_on(const cuda_backend_options *o) {
    return o->async_steps && !o->tp && !o->time_parts;
}

static ds_status allocate(cuda_backend *b, const cuda_backend_options *o, char *msg,
                          size_t msg_len) {
    const kv_cache_config *kc = &b->cache->config;
    const size_t pair = b->key_format.page_bytes + b->value_format.page_bytes;
    const int H = b->config.n_kv_heads; /* this rank's */
    b->full_layer_bytes = (size_t)kc->n_full_blocks * H * pair;
    b->open_layer_elems = (size_t)kc->n_open_blocks * 2 * kc->block_size * H * kc->head_dim;
    char what[160];
    snprintf(what, sizeof what, "weights (%s, %d layers)",
             o->weight_type == CUDA_WEIGHTS_BF16 ? "bf16" : "fp16", b->config.n_layers);
    ds_status st = dev_alloc((void **)&b->weights, b->lay.weights_bytes, what, msg, msg_len);
    if (st != DS_OK) return st;
    snprintf(what, sizeof what, "KV cache: %d compressed blocks", kc->n_full_blocks);
    st = dev_alloc((void **)&b->kv_full, b->full_layer_bytes * kc->n_layers, what, msg, msg_len);
    if (st != DS_OK) return st;
    snprintf(what, sizeof what, "KV cache: %d open fp16 blocks", kc->n_open_blocks);
    st = dev_alloc((void **)&b->kv_open, b->open_layer_elems * kc->n_layers * sizeof(uint16_t),
                   what, msg, msg_len);
    if (st != DS_OK) return st;
    snprintf(what, sizeof what, "activations and workspaces for %d tokens per step",
             o->max_step_tokens);
    st = dev_alloc((void **)&b->scratch, b->lay.scratch_bytes, what, msg, msg_len);
    if (st != DS_OK) return st;
    st = host_alloc((void **)&b->plan_host, b->lay.plan_words * sizeof(int32_t), "step plan", msg,
                    msg_len);
    if (st != DS_OK) return st;
    st = host_alloc((void **)&b->hdr_host, CUDA_PLAN_HEADER_WORDS * sizeof(int32_t), "step header",
                    msg, msg_len);
    if (st == DS_OK)
        st = dev_alloc((void **)&b->hdr_dev, CUDA_PLAN_HEADER_WORDS * sizeof(int32_t),
                       "step header", msg, msg_len);
    if (st != DS_OK) return st;
    st = host_alloc((void **)&b->sample_host, (size_t)b->lay.logit_rows * sizeof(sample_row),
                    "sampling rows", msg, msg_len);
    if (st == DS_OK)
        st = host_alloc((void **)&b->sample_out_host,
                        (size_t)b->lay.logit_rows * 2 * sizeof(int32_t), "sampled tokens", msg,
                        msg_len);
    if (st != DS_OK) return st;
    st = host_alloc((void **)&b->logits_host,
                    (size_t)b->lay.logit_rows * b->config.vocab_size * sizeof(float),
                    "logits staging", msg, msg_len);
    if (st != DS_OK) return st;
    for (int i = 0; async_steps_on(o) && i < 2; i++) {
        struct flight *f = &b->flights[i];
        st = host_alloc((void **)&f->plan, b->lay.plan_words * sizeof(int32_t), "async step plan",
                        msg, msg_len);
        if (st == DS_OK)
            st = host_alloc((void **)&f->rows, (size_t)b->lay.logit_rows * sizeof(sample_row),
                            "async sampling rows", msg, msg_len);
        if (st == DS_OK)
            st = host_alloc((void **)&f->out, (size_t)b->lay.logit_rows * 2 * sizeof(int32_t),
                            "async sampled tokens", msg, msg_len);
        if (st != DS_OK) return st;
        CUDA_CHECK(cudaEventCreateWithFlags(&f->done, cudaEventDisableTiming));
    }
    /* Pages nobody wrote are read by no one; zeroing them keeps a stray read finite and runs
     * repeatable. */
    CUDA_CHECK(cudaMemsetAsync(b->kv_full, 0, b->full_layer_bytes * kc->n_layers, b->stream));
    CUDA_CHECK(cudaMemsetAsync(b->kv_open, 0, b->open_layer_elems * kc->n_layers * sizeof(uint16_t),
                               b->stream));
    CUBLAS_CHECK(cublasCreate(&b->cublas));
    CUBLAS_CHECK(cublasSetStream(b->cublas, b->stream));
    CUBLAS_CHECK(
        cublasSetWorkspace(b->cublas, b->scratch + b->lay.cublas_ws, b->lay.cublas_ws_bytes));
    return DS_OK;
}

ds_status cuda_backend_create(const llama_model *model, kv_cache *cache,
                              const cuda_backend_options *o, engine_backend *out, char *msg,
                              size_t msg_len) {
    ds_status st = check_shapes(&model->config, cache, o, msg, msg_len);
    if (st != DS_OK) return st;
    size_t free_bytes, total;
    char name[128];
    st = cuda_device_memory(o->device, &free_bytes, &total, name, sizeof name, msg, msg_len);
    if (st != DS_OK) return st;

    llama_config config = model->config;
    if (o->tp && tp_comm_device(o->tp) != o->device)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor-parallel rank %d: communicator on cuda:%d, backend on cuda:%d",
                       tp_comm_rank(o->tp), tp_comm_device(o->tp), o->device);
    tp_dims dims;
    st = tp_dims_make(&config, o->tp ? tp_comm_rank(o->tp) : 0, o->tp ? tp_comm_size(o->tp) : 1,
                      &dims, msg, msg_len);
    if (st != DS_OK) return st;
    config.n_heads = dims.n_heads, config.n_kv_heads = dims.n_kv_heads;
    config.d_ff = dims.d_ff;
    cuda_backend *b = calloc(1, sizeof *b);
    if (!b) return ds_fail(msg, msg_len, DS_ENOMEM, "cuda backend: out of memory");
    b->config = config;
    b->dims = dims;
    b->tp = o->tp;
    b->tp_rank = o->tp ? tp_comm_rank(o->tp) : 0;
    b->cache = cache;
    b->device = o->device;
    b->gemv_rows = o->gemv_rows == 0 ? CUDA_GEMV_ROWS
                   : o->gemv_rows < 0
                       ? 0
                       : (o->gemv_rows < GEMV_MAX_ROWS ? o->gemv_rows : GEMV_MAX_ROWS);
    if (o->tp)
        snprintf(b->device_name, sizeof b->device_name,
                 "cuda:%d (%s), tensor-parallel rank %d of %d", o->device, name, b->tp_rank,
                 tp_comm_size(o->tp));
    else
        snprintf(b->device_name, sizeof b->device_name, "cuda:%d (%s)", o->device, name);
    b->wtype = o->weight_type == CUDA_WEIGHTS_BF16 ? FWD_BF16 : FWD_F16;
    b->wdt = o->weight_type == CUDA_WEIGHTS_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    b->key_format = kv_page_format_from_dq(&cache->key_format);
    b->value_format = kv_page_format_from_dq(&cache->value_format);
    const cuda_layout_options lo = {.max_rows = o->max_step_tokens,
                                    .max_seqs = o->max_seqs,
                                    .block_size = cache->config.block_size,
                                    .bf16 = o->weight_type == CUDA_WEIGHTS_BF16};
    cuda_layout_compute(&b->config, &lo, &b->lay);
    b->limits = (cuda_plan_limits){.max_rows = o->max_step_tokens,
                                   .max_seqs = o->max_seqs,
                                   .max_blocks = b->lay.max_blocks,
                                   .vocab_size = b->config.vocab_size,
                                   .context_length = b->config.context_length};
    cudaError_t e = cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking);
    st = e == cudaSuccess
             ? DS_OK
             : ds_fail(msg, msg_len, DS_EINTERNAL, "cudaStreamCreate: %s", cudaGetErrorString(e));
    if (st == DS_OK) st = allocate(b, o, msg, msg_len);
    if (st == DS_OK && o->time_parts) {
        b->events = calloc((size_t)n_events(&config), sizeof *b->events);
        if (!b->events) st = ds_fail(msg, msg_len, DS_ENOMEM, "cuda backend: out of memory");
        for (int i = 0; st == DS_OK && i < n_events(&config); i++) {
            cudaError_t e = cudaEventCreate(&b->events[i]);
            if (e != cudaSuccess)
                st = ds_fail(msg, msg_len, DS_EINTERNAL, "cudaEventCreate: %s",
                             cudaGetErrorString(e));
        }
    }
    if (st == DS_OK) st = prepare_kernels(b, msg, msg_len);
    if (st == DS_OK && !o->enforce_eager && !o->tp && !o->time_parts) {
        const int cap = o->max_seqs < o->max_step_tokens ? o->max_seqs : o->max_step_tokens;
        for (int rows = 1; b->n_graphs < GRAPH_BUCKETS - 1 && rows < cap; rows *= 2)
            b->graph_rows[b->n_graphs++] = rows;
        b->graph_rows[b->n_graphs++] = cap;
    }
    tp_shard shard = {0};
    const int sharded = o->tp && !o->random_weights;
    if (st == DS_OK && sharded)
        st = tp_shard_create(model, b->tp_rank, tp_comm_size(o->tp), &shard, msg, msg_len);
    if (st == DS_OK)
        st = load_weights(b, model, sharded ? &shard : NULL, o->random_weights, o->seed, msg,
                          msg_len);
    tp_shard_destroy(&shard);
    if (st != DS_OK) {
        backend_destroy(b);
        return st;
    }
    *out = (engine_backend){.impl = b,
                            .device = b->device_name,
                            .forward = backend_forward,
                            .forward_sample = backend_forward_sample,
                            .launch = async_steps_on(o) ? backend_launch : NULL,
                            .collect = async_steps_on(o) ? backend_collect : NULL,
                            .destroy = backend_destroy};
    return DS_OK;
}

ds_status cuda_device_copy_rate(int device, double *bytes_per_s, char *msg, size_t msg_len) {
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    *bytes_per_s = 0;
    CUDA_CHECK(cudaSetDevice(device));
    ds_status st = dev_alloc(&a, n, "copy-rate buffer", msg, msg_len);
    if (st == DS_OK) st = dev_alloc(&b, n, "copy-rate buffer", msg, msg_len);
    cudaError_t e = cudaSuccess;
    if (st == DS_OK) e = cudaEventCreate(&e0);
    if (e == cudaSuccess) e = cudaEventCreate(&e1);
    if (e == cudaSuccess) e = cudaMemset(a, 1, n);
    float best = 0.0f;
    for (int i = 0; st == DS_OK && e == cudaSuccess && i < 6; i++) {
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventRecord(e0, 0);
        if (e == cudaSuccess) e = cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0);
        if (e == cudaSuccess) e = cudaEventRecord(e1, 0);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
        if (e == cudaSuccess && i > 0 && (best == 0.0f || ms < best)) best = ms;
    }
    if (st == DS_OK && e != cudaSuccess)
        st = ds_fail(msg, msg_len, DS_EINTERNAL, "copy rate: %s", cudaGetErrorString(e));
    if (st == DS_OK) *bytes_per_s = 2.0 * (double)n / (best * 1e-3);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(a), cudaFree(b);
    return st;
}
