/* engine/llama.c — CPU forward pass of a Llama model over the paged KV cache (see llama.h).
 * Projections go through kernels/qmatmul.h; attention reads the compressed pages in place
 * (kernels/kv_page_dot.h), a block of query rows x a kv head's query heads per pool task sharing
 * each page, each summed in an order fixed by the format, so that no row's result depends on the
 * rows beside it. */
#include "engine/llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "common/threadpool.h"
#include "kernels/kv_page_dot.h"
#include "kernels/ops.h"
#include "kvcache/page_format.h"

enum {
    POOL_TASKS = 16, /* page compression and attention are split into this many pool tasks */
    ATTEND_ROWS = 8, /* query rows one attention task takes at once (they share the page tiles) */
};

/* The projections of one layer in the compute format. */
typedef struct layer_weights {
    qm_matrix wq, wk, wv, wo, w_gate, w_up, w_down;
} layer_weights;

struct llama_engine {
    const llama_model *model;
    kv_cache *cache;
    int max_rows;
    qm_type weight_type;
    layer_weights *layers; /* [n_layers] */
    qm_matrix output;      /* LM head */
    threadpool *pool;
    void *qscratch;  /* qm_matmul scratch for max_rows */
    float *inv_freq; /* [head_dim/2] */
    /* step scratch, [max_rows][...] */
    float *x, *xn, *q, *k, *v, *attn, *gate, *up;
    int32_t *positions;
    /* attention scratch */
    kv_page_format key_format, value_format;
    void *page_work;            /* [POOL_TASKS] codec workspaces (compression) */
    int max_fill;               /* blocks one step may fill */
    int *fill_seq, *fill_block; /* [max_fill] the step's filling blocks */
    size_t page_work_bytes;
    float *kown, *vown;     /* [kv head][max_rows + block][head_dim] the step's own blocks (fp16) */
    size_t own_head_stride; /* floats between two heads in kown / vown */
    /* per pool task: scores, then probabilities, of ATTEND_ROWS rows x a kv head's query heads;
     * their queries and outputs side by side; one page's tile; kv_page_dot scratch */
    float *scores;        /* [POOL_TASKS][ATTEND_ROWS * group][context + block] */
    float *qrows, *orows; /* [POOL_TASKS][ATTEND_ROWS * group][head_dim] */
    float *tiles;         /* [POOL_TASKS][tile_floats] */
    float *dot_scratch;
    size_t tile_floats, dot_scratch_floats;
    llama_qkv_tap tap;
    void *tap_ctx;
};

void llama_engine_set_tap(llama_engine *e, llama_qkv_tap tap, void *ctx) {
    e->tap = tap;
    e->tap_ctx = ctx;
}

/* Q8_0 / Q4 weights are the engine's; F32 ones are views of the model's buffers. */
static void free_weight(llama_engine *e, qm_matrix *m) {
    if (e->weight_type != QM_F32) qm_destroy(m);
}

void llama_engine_destroy(llama_engine *e) {
    if (!e) return;
    for (int l = 0; e->layers && l < e->model->config.n_layers; l++) {
        layer_weights *w = &e->layers[l];
        qm_matrix *all[] = {&w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free_weight(e, all[i]);
    }
    free_weight(e, &e->output);
    free(e->layers);
    threadpool_destroy(e->pool);
    free(e->qscratch);
    free(e->inv_freq);
    free(e->x), free(e->xn), free(e->q), free(e->k), free(e->v), free(e->attn);
    free(e->gate), free(e->up), free(e->positions);
    free(e->page_work);
    free(e->fill_seq), free(e->fill_block);
    free(e->kown), free(e->vown), free(e->scores), free(e->qrows), free(e->orows);
    free(e->tiles), free(e->dot_scratch);
    free(e);
}

ds_status llama_weights_from_name(const char *name, qm_type *out, char *msg, size_t msg_len) {
    if (!strcmp(name, "f32"))
        *out = QM_F32;
    else if (!strcmp(name, "q8_0"))
        *out = QM_Q8_0;
    else if (!strcmp(name, "q4"))
        *out = QM_Q4_0;
    else
        return ds_fail(msg, msg_len, DS_EINVAL, "--weights = '%s': expected f32, q8_0 or q4", name);
    return DS_OK;
}

/* A weight in the engine's compute format: a view for F32, a copy of the file's blocks for q4
 * where it has 4-bit ones, a quantized copy for Q8_0 (and q4 elsewhere). */
static ds_status make_weight(llama_engine *e, qm_matrix *m, const float *src,
                             const llama_file_blocks *file, int rows, int cols, char *msg,
                             size_t msg_len) {
    if (e->weight_type == QM_F32) {
        *m = (qm_matrix){.type = QM_F32, .rows = rows, .cols = cols, .data = (void *)src};
        return DS_OK;
    }
    if ((e->weight_type == QM_Q4_0 || e->weight_type == QM_Q4_1) && file->type != LLAMA_BLOCKS_NONE)
        return qm_create_blocks(m, file->type == LLAMA_BLOCKS_Q4_0 ? QM_Q4_0 : QM_Q4_1, file->data,
                                rows, cols, msg, msg_len);
    return qm_create(m, QM_Q8_0, src, rows, cols, msg, msg_len);
}

ds_status llama_engine_create(const llama_model *model, kv_cache *cache,
                              const llama_engine_options *options, llama_engine **out, char *msg,
                              size_t msg_len) {
    const int max_step_tokens = options->max_step_tokens;
    *out = NULL;
    const llama_config *c = &model->config;
    ds_status st = llama_config_validate(c, msg, msg_len);
    if (st == DS_OK)
        st = kv_cache_check_shape(cache, c->n_layers, c->n_kv_heads, c->head_dim, msg, msg_len);
    if (st != DS_OK) return st;
    const kv_cache_config *kc = &cache->config;
    if (max_step_tokens <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_step_tokens = %d: must be positive",
                       max_step_tokens);
    ops_rope_config rope = llama_rope_config(c);
    st = ops_rope_config_validate(&rope, msg, msg_len);
    if (st != DS_OK) return st;
    /* The attention reads pages in place through kernels/kv_pages.h, which has no Hadamard
     * rotation, outlier section or symmetric groups: those pages (the decoquant-hv and
     * hadamard-rtn presets) are the evaluator's, not the engine's, for now. */
    for (int role = 0; role < 2; role++) {
        const dq_config *f = role ? &cache->value_format.cfg : &cache->key_format.cfg;
        if (f->rotate || f->outliers || f->symmetric)
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                           "kv_method %s: its %s pages (%s%s%s) are read by decoserve-eval only; "
                           "the serving attention reads fp16, rtn, kivi and decoquant pages",
                           dq_method_name(role ? cache->config.value_codec.method
                                               : cache->config.key_codec.method),
                           role ? "value" : "key", f->rotate ? "Hadamard-rotated " : "",
                           f->outliers ? "with outliers " : "",
                           f->symmetric ? "symmetric groups" : "groups");
    }

    llama_engine *e = calloc(1, sizeof *e);
    if (!e) return ds_fail(msg, msg_len, DS_ENOMEM, "engine: out of memory");
    e->model = model;
    e->cache = cache;
    e->max_rows = max_step_tokens;
    e->weight_type = options->weight_type;
    size_t R = (size_t)max_step_tokens, d = (size_t)c->d_model, D = (size_t)c->head_dim;
    size_t qd = (size_t)c->n_heads * D, kvd = (size_t)c->n_kv_heads * D,
           ctx = (size_t)c->context_length;
    e->inv_freq = malloc(D / 2 * sizeof(float));
    e->x = malloc(R * d * sizeof(float));
    e->xn = malloc(R * d * sizeof(float));
    e->q = malloc(R * qd * sizeof(float));
    e->k = malloc(R * kvd * sizeof(float));
    e->v = malloc(R * kvd * sizeof(float));
    e->attn = malloc(R * qd * sizeof(float));
    e->gate = malloc(R * (size_t)c->d_ff * sizeof(float));
    e->up = malloc(R * (size_t)c->d_ff * sizeof(float));
    e->positions = malloc(R * sizeof(int32_t));
    e->key_format = kv_page_format_from_dq(&cache->key_format);
    e->value_format = kv_page_format_from_dq(&cache->value_format);
    e->page_work_bytes = kv_cache_workspace_bytes(cache);
    e->page_work = aligned_alloc(16, e->page_work_bytes * POOL_TASKS);
    size_t T = (size_t)kc->block_size;
    e->max_fill = max_step_tokens; /* each new row completes at most one block */
    e->fill_seq = malloc((size_t)e->max_fill * sizeof(int));
    e->fill_block = malloc((size_t)e->max_fill * sizeof(int));
    e->own_head_stride = (R + T) * D;
    e->kown = malloc(e->own_head_stride * (size_t)c->n_kv_heads * sizeof(float));
    e->vown = malloc(e->own_head_stride * (size_t)c->n_kv_heads * sizeof(float));
    const size_t group = (size_t)(c->n_heads / c->n_kv_heads);
    e->scores = malloc(POOL_TASKS * ATTEND_ROWS * group * (ctx + T) * sizeof(float));
    e->qrows = malloc(POOL_TASKS * ATTEND_ROWS * group * D * sizeof(float));
    e->orows = malloc(POOL_TASKS * ATTEND_ROWS * group * D * sizeof(float));
    size_t kt = kv_page_tile_floats(&e->key_format), vt = kv_page_tile_floats(&e->value_format);
    e->tile_floats = kt > vt ? kt : vt;
    e->tiles = malloc(POOL_TASKS * e->tile_floats * sizeof(float));
    const int vectors = ATTEND_ROWS * (int)group; /* that read one page in one call */
    size_t kf = kv_page_dot_scratch_floats(&e->key_format, vectors),
           vf = kv_page_dot_scratch_floats(&e->value_format, vectors);
    e->dot_scratch_floats = (kf > vf ? kf : vf) + 1;
    e->dot_scratch = malloc(POOL_TASKS * e->dot_scratch_floats * sizeof(float));
    if (!e->inv_freq || !e->x || !e->xn || !e->q || !e->k || !e->v || !e->attn || !e->gate ||
        !e->up || !e->positions || !e->page_work || !e->kown || !e->vown || !e->scores ||
        !e->qrows || !e->orows || !e->tiles || !e->dot_scratch || !e->fill_seq || !e->fill_block) {
        llama_engine_destroy(e);
        return ds_fail(msg, msg_len, DS_ENOMEM, "engine: out of memory for step scratch");
    }
    ops_rope_inv_freq(&rope, e->inv_freq);
    const int ff = c->d_ff, dm = c->d_model;
    e->layers = calloc((size_t)c->n_layers, sizeof *e->layers);
    st = e->layers ? threadpool_create(&e->pool, options->n_threads, msg, msg_len)
                   : ds_fail(msg, msg_len, DS_ENOMEM, "engine: out of memory");
    for (int l = 0; st == DS_OK && l < c->n_layers; l++) {
        const llama_layer *L = &model->layers[l];
        layer_weights *w = &e->layers[l];
        st = make_weight(e, &w->wq, L->wq, &L->file.wq, (int)qd, dm, msg, msg_len);
        if (st == DS_OK)
            st = make_weight(e, &w->wk, L->wk, &L->file.wk, (int)kvd, dm, msg, msg_len);
        if (st == DS_OK)
            st = make_weight(e, &w->wv, L->wv, &L->file.wv, (int)kvd, dm, msg, msg_len);
        if (st == DS_OK) st = make_weight(e, &w->wo, L->wo, &L->file.wo, dm, (int)qd, msg, msg_len);
        if (st == DS_OK)
            st = make_weight(e, &w->w_gate, L->w_gate, &L->file.w_gate, ff, dm, msg, msg_len);
        if (st == DS_OK)
            st = make_weight(e, &w->w_up, L->w_up, &L->file.w_up, ff, dm, msg, msg_len);
        if (st == DS_OK)
            st = make_weight(e, &w->w_down, L->w_down, &L->file.w_down, dm, ff, msg, msg_len);
    }
    if (st == DS_OK)
        st = make_weight(e, &e->output, model->output, &model->output_file, c->vocab_size, dm, msg,
                         msg_len);
    if (st == DS_OK) {
        size_t need = 0;
        for (int l = 0; l < c->n_layers; l++) {
            const layer_weights *w = &e->layers[l];
            const qm_matrix *all[] = {&w->wq,     &w->wk,   &w->wv,    &w->wo,
                                      &w->w_gate, &w->w_up, &w->w_down};
            for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
                size_t b = qm_scratch_bytes(all[i], max_step_tokens);
                need = b > need ? b : need;
            }
        }
        size_t b = qm_scratch_bytes(&e->output, max_step_tokens);
        need = b > need ? b : need;
        e->qscratch = malloc(need ? need : 1);
        if (!e->qscratch) st = ds_fail(msg, msg_len, DS_ENOMEM, "engine: out of memory");
    }
    if (st != DS_OK) {
        llama_engine_destroy(e);
        return st;
    }
    *out = e;
    return DS_OK;
}

int llama_step_logit_rows(const llama_step_seq *seqs, int n_seqs) {
    int rows = 0;
    for (int s = 0; s < n_seqs; s++)
        rows += seqs[s].logits == LLAMA_LOGITS_ALL    ? seqs[s].n_tokens
                : seqs[s].logits == LLAMA_LOGITS_LAST ? 1
                                                      : 0;
    return rows;
}

typedef struct compress_job {
    llama_engine *e;
    const llama_step_seq *seqs;
    int layer, n_pages;
    int *page_seq, *page_block; /* [blocks filling this step] */
} compress_job;

/* Task i compresses its share of the (block, kv head, K|V) pages that filled in this step. */
static void compress_pages(void *ctx, int task) {
    const compress_job *j = ctx;
    const int H = j->e->model->config.n_kv_heads;
    void *work = (uint8_t *)j->e->page_work + (size_t)task * j->e->page_work_bytes;
    for (int p = j->n_pages * task / POOL_TASKS; p < j->n_pages * (task + 1) / POOL_TASKS; p++) {
        const int f = p / (2 * H), h = (p / 2) % H;
        kv_cache_compress_page(j->e->cache, j->seqs[j->page_seq[f]].kv, j->layer, j->page_block[f],
                               h, p % 2, work);
    }
}

typedef struct attend_job {
    llama_engine *e;
    const llama_step_seq *s;
    int layer, row0, span0; /* span0: first position of the first own block */
    int n_row_blocks;       /* of ATTEND_ROWS rows */
} attend_job;

/* Attention of rows [i0, i1) of the sequence (< ATTEND_ROWS) for the query heads of kv head h.
 * Row i at position p reads every full block before its own from the compressed pages (each
 * page's tile unpacked once, and each product taken once, for all the rows and heads that read
 * it) and its own block [own, p] from the fp16 rows: scores, softmax, then the values the same
 * way. own(p) = p rounded down to a block. Every (row, head) is computed by the same operations
 * whatever rows share the call. qrows / orows: the rows' queries and outputs, vector
 * (i - i0) * G + g. */
static void attend_rows(const attend_job *j, int h, int i0, int i1, float *scores, float *qrows,
                        float *orows, float *tile, float *scratch) {
    llama_engine *e = j->e;
    const llama_config *c = &e->model->config;
    kv_cache *kc = e->cache;
    const int D = c->head_dim, T = kc->config.block_size, G = c->n_heads / c->n_kv_heads;
    const int qd = c->n_heads * D, first = j->s->kv->n_tokens;
    const size_t stride = (size_t)c->context_length + T; /* floats per (row, head) of scores */
    const float scale = 1.0f / sqrtf((float)D);
    const float *kown = e->kown + (size_t)h * e->own_head_stride;
    const float *vown = e->vown + (size_t)h * e->own_head_stride;
    const int n_pages = (first + i1 - 1) / T; /* full blocks the last row reads */
    for (int i = i0; i < i1; i++)
        memcpy(qrows + (size_t)(i - i0) * G * D,
               e->q + (size_t)(j->row0 + i) * qd + (size_t)h * G * D,
               (size_t)G * D * sizeof(float));
    for (int b = 0; b < n_pages; b++) {
        /* the rows past this block: i >= ib */
        const int ib = (b + 1) * T - first > i0 ? (b + 1) * T - first : i0;
        const size_t v0 = (size_t)(ib - i0) * G;
        kv_page_unpack(&e->key_format, kv_cache_full_page(kc, j->s->kv, j->layer, h, b, 0), tile);
        kv_page_scores(&e->key_format, tile, (i1 - ib) * G, qrows + v0 * D, (size_t)D, scale,
                       scores + v0 * stride + (size_t)b * T, stride, scratch);
    }
    for (int i = i0; i < i1; i++) {
        const int p = first + i, own = (p / T) * T;
        for (int g = 0; g < G; g++) {
            const size_t vec = (size_t)(i - i0) * G + g;
            const float *q = qrows + vec * D;
            float *sc = scores + vec * stride;
            float mx = -INFINITY;
            for (int t = 0; t < own; t++)
                mx = sc[t] > mx ? sc[t] : mx;
            for (int t = own; t <= p; t++) {
                const float *kr = kown + (size_t)(t - j->span0) * D;
                float dot = 0.0f;
                for (int d = 0; d < D; d++)
                    dot += q[d] * kr[d];
                sc[t] = dot * scale;
                mx = sc[t] > mx ? sc[t] : mx;
            }
            float sum = 0.0f;
            for (int t = 0; t <= p; t++)
                sum += (sc[t] = expf(sc[t] - mx));
            const float inv = 1.0f / sum;
            for (int t = 0; t <= p; t++)
                sc[t] *= inv;
            memset(orows + vec * D, 0, (size_t)D * sizeof(float));
        }
    }
    for (int b = 0; b < n_pages; b++) {
        const int ib = (b + 1) * T - first > i0 ? (b + 1) * T - first : i0;
        const size_t v0 = (size_t)(ib - i0) * G;
        kv_page_unpack(&e->value_format, kv_cache_full_page(kc, j->s->kv, j->layer, h, b, 1), tile);
        kv_page_values(&e->value_format, tile, (i1 - ib) * G, scores + v0 * stride + (size_t)b * T,
                       stride, orows + v0 * D, (size_t)D, scratch);
    }
    for (int i = i0; i < i1; i++) {
        const int p = first + i, own = (p / T) * T;
        for (int g = 0; g < G; g++) {
            const size_t vec = (size_t)(i - i0) * G + g;
            const float *sc = scores + vec * stride;
            float *restrict out = orows + vec * D;
            for (int t = own; t <= p; t++) {
                const float w = sc[t], *restrict vr = vown + (size_t)(t - j->span0) * D;
                for (int d = 0; d < D; d++)
                    out[d] += w * vr[d];
            }
        }
        memcpy(e->attn + (size_t)(j->row0 + i) * qd + (size_t)h * G * D,
               orows + (size_t)(i - i0) * G * D, (size_t)G * D * sizeof(float));
    }
}

/* Task k attends its share of the sequence's (kv head, block of rows) items with its own scratch.
 */
static void attend_task(void *ctx, int task) {
    const attend_job *j = ctx;
    const llama_engine *e = j->e;
    const llama_config *c = &e->model->config;
    const int n = c->n_kv_heads * j->n_row_blocks, G = c->n_heads / c->n_kv_heads;
    float *scores = e->scores + (size_t)task * ATTEND_ROWS * G *
                                    ((size_t)c->context_length + e->cache->config.block_size);
    const size_t rows_floats = (size_t)ATTEND_ROWS * G * c->head_dim;
    float *qrows = e->qrows + (size_t)task * rows_floats,
          *orows = e->orows + (size_t)task * rows_floats;
    float *tile = e->tiles + (size_t)task * e->tile_floats;
    float *scratch = e->dot_scratch + (size_t)task * e->dot_scratch_floats;
    for (int k = n * task / POOL_TASKS; k < n * (task + 1) / POOL_TASKS; k++) {
        const int h = k / j->n_row_blocks, i0 = k % j->n_row_blocks * ATTEND_ROWS;
        const int i1 = i0 + ATTEND_ROWS < j->s->n_tokens ? i0 + ATTEND_ROWS : j->s->n_tokens;
        attend_rows(j, h, i0, i1, scores, qrows, orows, tile, scratch);
    }
}

/* Attention of one sequence's new rows [row0, row0 + n) for one layer; K/V already in the cache.
 * The own blocks' fp16 rows are converted once for every head, then every (kv head, block of
 * rows) runs on the pool. */
static void attend_seq(llama_engine *e, const llama_step_seq *s, int layer, int row0) {
    const llama_config *c = &e->model->config;
    kv_cache *kc = e->cache;
    const int D = c->head_dim, T = kc->config.block_size;
    const int first = s->kv->n_tokens, last = first + s->n_tokens - 1;
    attend_job job = {
        e, s, layer, row0, (first / T) * T, (s->n_tokens + ATTEND_ROWS - 1) / ATTEND_ROWS};
    for (int h = 0; h < c->n_kv_heads; h++)
        for (int t = job.span0; t <= last; t++) {
            const size_t off = (size_t)h * e->own_head_stride + (size_t)(t - job.span0) * D;
            ds_half_to_float_n(kv_cache_open_row(kc, s->kv, layer, h, 0, t), e->kown + off,
                               (size_t)D);
            ds_half_to_float_n(kv_cache_open_row(kc, s->kv, layer, h, 1, t), e->vown + off,
                               (size_t)D);
        }
    threadpool_run(e->pool, POOL_TASKS, attend_task, &job);
}

static void linear(llama_engine *e, float *y, const float *x, const qm_matrix *w, int n) {
    qm_matmul(y, x, w, n, e->pool, e->qscratch);
}

static ds_status validate_step(const llama_engine *e, const llama_step_seq *seqs, int n_seqs,
                               int *rows, char *msg, size_t msg_len) {
    const llama_model *m = e->model;
    const llama_config *c = &m->config;
    int R = 0;
    for (int s = 0; s < n_seqs; s++) {
        const llama_step_seq *sq = &seqs[s];
        if (sq->n_tokens <= 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "sequence %d: no tokens in the step", s);
        if (sq->kv->n_tokens + sq->n_tokens > c->context_length)
            return ds_fail(msg, msg_len, DS_ERANGE,
                           "sequence %d: %d cached + %d new tokens exceed the context of %d", s,
                           sq->kv->n_tokens, sq->n_tokens, c->context_length);
        for (int i = 0; i < sq->n_tokens; i++)
            if (sq->tokens[i] < 0 || sq->tokens[i] >= c->vocab_size)
                return ds_fail(msg, msg_len, DS_ERANGE,
                               "sequence %d: token %d = %d is outside the vocabulary [0, %d)", s, i,
                               sq->tokens[i], c->vocab_size);
        R += sq->n_tokens;
    }
    if (R > e->max_rows)
        return ds_fail(msg, msg_len, DS_EINVAL, "step of %d tokens exceeds max_step_tokens = %d", R,
                       e->max_rows);
    *rows = R;
    return DS_OK;
}

ds_status llama_engine_step(llama_engine *e, const llama_step_seq *seqs, int n_seqs, float *logits,
                            char *msg, size_t msg_len) {
    int R;
    ds_status st = validate_step(e, seqs, n_seqs, &R, msg, msg_len);
    if (st != DS_OK) return st;
    for (int s = 0; s < n_seqs; s++) {
        st = kv_seq_reserve(e->cache, seqs[s].kv, seqs[s].tokens, seqs[s].n_tokens, msg, msg_len);
        if (st != DS_OK) {
            for (int r = 0; r < s; r++)
                kv_seq_rollback(e->cache, seqs[r].kv);
            return st;
        }
    }
    st = llama_engine_forward(e, seqs, n_seqs, logits, msg, msg_len);
    for (int s = 0; s < n_seqs; s++) {
        if (st == DS_OK)
            kv_seq_commit(e->cache, seqs[s].kv);
        else
            kv_seq_rollback(e->cache, seqs[s].kv);
    }
    return st;
}

ds_status llama_engine_forward(llama_engine *e, const llama_step_seq *seqs, int n_seqs,
                               float *logits, char *msg, size_t msg_len) {
    const llama_model *m = e->model;
    const llama_config *c = &m->config;
    int R;
    ds_status st = validate_step(e, seqs, n_seqs, &R, msg, msg_len);
    if (st != DS_OK) return st;
    int n_fill = 0;
    for (int s = 0; s < n_seqs; s++) {
        const kv_seq *kv = seqs[s].kv;
        if (kv->n_reserved != kv->n_tokens + seqs[s].n_tokens)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "sequence %d: %d positions reserved for %d new tokens", s,
                           kv->n_reserved - kv->n_tokens, seqs[s].n_tokens);
        int first, end;
        kv_seq_filling(e->cache, kv, &first, &end);
        n_fill += end - first;
    }
    if (n_fill > e->max_fill)
        return ds_fail(msg, msg_len, DS_EINVAL, "step fills %d blocks, at most %d", n_fill,
                       e->max_fill);
    compress_job cj = {.e = e,
                       .seqs = seqs,
                       .n_pages = 2 * n_fill * c->n_kv_heads,
                       .page_seq = e->fill_seq,
                       .page_block = e->fill_block};
    for (int s = 0, f = 0; s < n_seqs; s++) {
        int first, end;
        kv_seq_filling(e->cache, seqs[s].kv, &first, &end);
        for (int b = first; b < end; b++, f++)
            e->fill_seq[f] = s, e->fill_block[f] = b;
    }

    const int d = c->d_model, D = c->head_dim, qd = c->n_heads * D, kvd = c->n_kv_heads * D;
    for (int s = 0, row = 0; s < n_seqs; row += seqs[s].n_tokens, s++) {
        for (int i = 0; i < seqs[s].n_tokens; i++)
            e->positions[row + i] = seqs[s].kv->n_tokens + i;
        /* ids were range-checked above, before any block was reserved */
        ds_status st = ops_embedding_ref(e->x + (size_t)row * d, m->tok_embd, c->vocab_size, d,
                                         seqs[s].tokens, seqs[s].n_tokens, msg, msg_len);
        DS_ASSERT(st == DS_OK);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->layers[l];
        const layer_weights *W = &e->layers[l];
        ops_rmsnorm_ref(e->xn, e->x, L->attn_norm, R, d, c->rms_eps);
        linear(e, e->q, e->xn, &W->wq, R);
        linear(e, e->k, e->xn, &W->wk, R);
        linear(e, e->v, e->xn, &W->wv, R);
        ops_rope_params rq = {.x = e->q,
                              .positions = e->positions,
                              .inv_freq = e->inv_freq,
                              .n_rows = R,
                              .n_heads = c->n_heads,
                              .head_dim = D,
                              .row_stride = (size_t)qd};
        ops_rope_ref(&rq);
        ops_rope_params rk = rq;
        rk.x = e->k, rk.n_heads = c->n_kv_heads, rk.row_stride = (size_t)kvd;
        ops_rope_ref(&rk);
        for (int s = 0, row = 0; s < n_seqs; row += seqs[s].n_tokens, s++) {
            if (e->tap)
                e->tap(e->tap_ctx, s, l, seqs[s].kv->n_tokens, seqs[s].n_tokens,
                       e->q + (size_t)row * qd, e->k + (size_t)row * kvd, e->v + (size_t)row * kvd);
            kv_cache_write(e->cache, seqs[s].kv, l, seqs[s].kv->n_tokens, seqs[s].n_tokens,
                           e->k + (size_t)row * kvd, e->v + (size_t)row * kvd);
        }
        cj.layer = l;
        if (cj.n_pages) threadpool_run(e->pool, POOL_TASKS, compress_pages, &cj);
        for (int s = 0, row = 0; s < n_seqs; row += seqs[s].n_tokens, s++)
            attend_seq(e, &seqs[s], l, row);
        linear(e, e->xn, e->attn, &W->wo, R);
        for (size_t i = 0; i < (size_t)R * d; i++)
            e->x[i] += e->xn[i];
        ops_rmsnorm_ref(e->xn, e->x, L->ffn_norm, R, d, c->rms_eps);
        linear(e, e->gate, e->xn, &W->w_gate, R);
        linear(e, e->up, e->xn, &W->w_up, R);
        ops_swiglu_ref(e->gate, e->gate, e->up, (size_t)R * c->d_ff);
        linear(e, e->xn, e->gate, &W->w_down, R);
        for (size_t i = 0; i < (size_t)R * d; i++)
            e->x[i] += e->xn[i];
    }
    /* Gather the rows that want logits, normalise, project. */
    int out_rows = 0;
    for (int s = 0, row = 0; s < n_seqs; row += seqs[s].n_tokens, s++) {
        if (seqs[s].logits == LLAMA_LOGITS_NONE) continue;
        int from = seqs[s].logits == LLAMA_LOGITS_ALL ? 0 : seqs[s].n_tokens - 1;
        for (int i = from; i < seqs[s].n_tokens; i++, out_rows++)
            memmove(e->x + (size_t)out_rows * d, e->x + (size_t)(row + i) * d,
                    (size_t)d * sizeof(float));
    }
    if (out_rows > 0) {
        ops_rmsnorm_ref(e->xn, e->x, m->output_norm, out_rows, d, c->rms_eps);
        linear(e, logits, e->xn, &e->output, out_rows);
    }
    threadpool_idle(e->pool); /* the step is over: the workers sleep until the next one */
    return DS_OK;
}
