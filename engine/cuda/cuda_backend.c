/* engine/cuda/cuda_backend.c — the Llama forward pass on one GPU (see cuda_backend.h): start-up
 * (device memory from engine/cuda/plan.h's layout, weights uploaded or drawn on the GPU, KV pools,
 * cuBLAS) and the step, which enqueues every layer on one stream and waits only for the logits. */
#include "engine/cuda/cuda_backend.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "common/rng.h"
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
    int32_t *hdr_host, *hdr_dev; /* the step header rank 0 broadcasts (pinned; device) */
    float *logits_host;          /* pinned, [lay.logit_rows][vocab] */
    cudaStream_t stream;         /* every launch and copy */
    cublasHandle_t cublas;
    tp_comm *tp; /* borrowed; NULL without tensor parallelism */
    int tp_rank;
    tp_dims dims; /* this rank's heads and d_ff in the whole model's (rank 0 of 1 without tp) */
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
    if (b->cublas) cublasDestroy(b->cublas);
    if (b->stream) cudaStreamDestroy(b->stream);
    for (int i = 0; b->events && i < n_events(&b->config); i++)
        if (b->events[i]) cudaEventDestroy(b->events[i]);
    free(b->events);
    cudaFree(b->weights), cudaFree(b->scratch), cudaFree(b->kv_full), cudaFree(b->kv_open);
    cudaFree(b->hdr_dev);
    cudaFreeHost(b->plan_host), cudaFreeHost(b->logits_host), cudaFreeHost(b->hdr_host);
    free(b);
}

/* ---- GEMMs: row-major Y[rows][n_out] = X[rows][k] W[n_out][k]^T (+ beta Y) ----
 * cuBLAS is column-major, so this is Y^T = W^T' X^T: A = W transposed (lda k), B = X (ldb k). */
static ds_status gemm(cuda_backend *b, void *y, cudaDataType_t ytype, const void *w, const void *x,
                      int n_out, int rows, int k, float beta, char *msg, size_t msg_len) {
    const float one = 1.0f;
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

static ds_status run_layer(cuda_backend *b, const cuda_plan *p, const int32_t *dp, int l, char *msg,
                           size_t msg_len) {
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
                                       .max_pos = p->max_pos,
                                       .scale = 1.0f / sqrtf((float)D),
                                       .cache = view,
                                       .key_format = b->key_format,
                                       .value_format = b->value_format};
    st = paged_attention_cuda(&ap, NULL, s + L->attn_ws, L->attn_ws_bytes, NULL, stream, msg,
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
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        b->cublas, CUBLAS_OP_T, CUBLAS_OP_N, ff, R, d, &one, w + L->wgu, b->wdt, d,
        (long long)ff * d, xn, b->wdt, d, 0, &zero, gate, b->wdt, ff,
        (long long)b->limits.max_rows * ff, 2, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
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

static ds_status run_step(cuda_backend *b, const cuda_plan *p, float *logits, char *msg,
                          size_t msg_len) {
    const llama_config *c = &b->config;
    const cuda_layout *L = &b->lay;
    const size_t d = (size_t)c->d_model, V = (size_t)c->vocab_size;
    int32_t *dp = (int32_t *)(b->scratch + L->plan);
    float *x = (float *)(b->scratch + L->x);
    CUDA_CHECK(cudaSetDevice(b->device)); /* the engine thread may not be the creating one */
    ds_status st = DS_OK;
    if (b->tp_rank == 0) { /* a follower's plan is on its way already (cuda_backend_follow) */
        CUDA_CHECK(cudaMemcpyAsync(dp, b->plan_host, p->n_words * sizeof(int32_t),
                                   cudaMemcpyHostToDevice, b->stream));
        if (leads(b)) {
            st = send_header(b, CUDA_PLAN_STEP, p, msg, msg_len);
            if (st == DS_OK)
                st = tp_comm_broadcast(b->tp, dp, p->n_words * sizeof(int32_t), b->stream, msg,
                                       msg_len);
        }
    }
    if (st == DS_OK)
        st = fwd_embed_cuda(x, b->weights + L->tok_embd, b->wtype, (int)d, dp + p->tokens,
                            p->n_rows, b->stream, msg, msg_len);
    for (int l = 0; st == DS_OK && l < c->n_layers; l++)
        st = in_layer(run_layer(b, p, dp, l, msg, msg_len), l, msg, msg_len);
    if (st != DS_OK) return st;
    /* Final norm over the gathered rows, LM head in fp32, to the host a chunk at a time (on rank 0
     * alone: the head is replicated, every rank's x is the same). */
    float *dev_logits = (float *)(b->scratch + L->logits);
    const int n_logit_rows = b->tp_rank == 0 ? p->n_logit_rows : 0;
    for (int r0 = 0; r0 < n_logit_rows; r0 += L->logit_rows) {
        const int n = n_logit_rows - r0 < L->logit_rows ? n_logit_rows - r0 : L->logit_rows;
        cudaEvent_t *head = b->events ? b->events + n_events(c) - 2 : NULL;
        if (head) CUDA_CHECK(cudaEventRecord(head[0], b->stream));
        const fwd_rmsnorm_params norm = {.out = b->scratch + L->logit_x,
                                         .out_type = b->wtype,
                                         .x = x,
                                         .rows = dp + p->logit_rows + r0,
                                         .weight = (const float *)(b->weights + L->output_norm),
                                         .n_rows = n,
                                         .dim = (int)d,
                                         .eps = c->rms_eps};
        st = fwd_rmsnorm_cuda(&norm, b->stream, msg, msg_len);
        if (st == DS_OK)
            st = gemm(b, dev_logits, CUDA_R_32F, b->weights + L->output, b->scratch + L->logit_x,
                      (int)V, n, (int)d, 0.0f, msg, msg_len);
        if (st != DS_OK) return st;
        if (head) CUDA_CHECK(cudaEventRecord(head[1], b->stream));
        CUDA_CHECK(cudaMemcpyAsync(b->logits_host, dev_logits, (size_t)n * V * sizeof(float),
                                   cudaMemcpyDeviceToHost, b->stream));
        st = wait_stream(b, msg, msg_len);
        if (st != DS_OK) return st;
        if (head) {
            float ms;
            CUDA_CHECK(cudaEventElapsedTime(&ms, head[0], head[1]));
            b->lm_head_ms += ms;
        }
        memcpy(logits + (size_t)r0 * V, b->logits_host, (size_t)n * V * sizeof(float));
    }
    /* Also when no row wants logits: the next step rewrites the pinned plan buffer. */
    st = wait_stream(b, msg, msg_len);
    return st == DS_OK && b->events ? add_allreduce_time(b, msg, msg_len) : st;
}

void cuda_backend_part_ms(const engine_backend *rank, double *allreduce_ms, double *lm_head_ms) {
    const cuda_backend *b = rank->impl;
    *allreduce_ms = b->allreduce_ms, *lm_head_ms = b->lm_head_ms;
}

static ds_status backend_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                                 char *msg, size_t msg_len) {
    cuda_backend *b = impl;
    cuda_plan p;
    ds_status st =
        cuda_plan_build(b->cache, seqs, n_seqs, &b->limits, b->plan_host, &p, msg, msg_len);
    if (st != DS_OK || p.n_rows == 0) return st;
    st = run_step(b, &p, logits, msg, msg_len);
    if (st != DS_OK && st != DS_EUNAVAILABLE && leads(b)) { /* the others ran on, or wait */
        char inner[512];
        snprintf(inner, sizeof inner, "%s", msg);
        st = ds_fail(msg, msg_len, DS_EUNAVAILABLE, "tensor-parallel ranks out of step: %s", inner);
    }
    return st;
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
    return st == DS_OK ? run_step(b, &p, NULL, msg, msg_len) : st;
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

/* Runs the attention launcher on zero rows: it rejects shapes and page formats it was not
 * built for before any step does. */
static ds_status check_attention(cuda_backend *b, char *msg, size_t msg_len) {
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
    return paged_attention_cuda(&probe, NULL, NULL, 0, NULL, b->stream, msg, msg_len);
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
    st = host_alloc((void **)&b->logits_host,
                    (size_t)b->lay.logit_rows * b->config.vocab_size * sizeof(float),
                    "logits staging", msg, msg_len);
    if (st != DS_OK) return st;
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
    if (st == DS_OK) st = check_attention(b, msg, msg_len);
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
                            .destroy = backend_destroy};
    return DS_OK;
}
