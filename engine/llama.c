/* engine/llama.c — CPU forward pass of a Llama model over the paged KV cache (see llama.h).
 * Projections go through kernels/qmatmul.h; attention is plain C over decompressed pages plus the
 * fixed-order GEMMs of kernels/ops.h, so that no row's result depends on the rows beside it. */
#include "engine/llama.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"
#include "common/threadpool.h"
#include "kernels/ops.h"

enum { LOAD_TASKS = 16 }; /* page decompression is split into this many pool tasks */

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
    float *kbuf, *vbuf;         /* [kv head][context + block][head_dim] decompressed full blocks */
    size_t head_stride;         /* floats between two heads' rows in kbuf/vbuf */
    void *page_work;            /* [LOAD_TASKS] codec workspaces */
    int max_fill;               /* blocks one step may fill */
    int *fill_seq, *fill_block; /* [max_fill] the step's filling blocks */
    size_t page_work_bytes;
    float *kown, *vown; /* [max_rows + block][head_dim] fp16 rows of the step's own blocks */
    float *scores;      /* [max_rows][context]: compressed-part scores, then probabilities */
    float *own_p;       /* [max_rows][block]: own-block scores, then probabilities */
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
    free(e->kbuf), free(e->vbuf), free(e->kown), free(e->vown), free(e->scores), free(e->own_p);
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
    e->head_stride = (ctx + (size_t)kc->block_size) * D;
    e->kbuf = malloc(e->head_stride * (size_t)c->n_kv_heads * sizeof(float));
    e->vbuf = malloc(e->head_stride * (size_t)c->n_kv_heads * sizeof(float));
    e->page_work_bytes = kv_cache_workspace_bytes(cache);
    e->page_work = aligned_alloc(16, e->page_work_bytes * LOAD_TASKS);
    size_t T = (size_t)kc->block_size;
    e->max_fill = max_step_tokens; /* each new row completes at most one block */
    e->fill_seq = malloc((size_t)e->max_fill * sizeof(int));
    e->fill_block = malloc((size_t)e->max_fill * sizeof(int));
    e->kown = malloc((R + T) * D * sizeof(float));
    e->vown = malloc((R + T) * D * sizeof(float));
    e->scores = malloc(R * (ctx + T) * sizeof(float));
    e->own_p = malloc(R * T * sizeof(float));
    if (!e->inv_freq || !e->x || !e->xn || !e->q || !e->k || !e->v || !e->attn || !e->gate ||
        !e->up || !e->positions || !e->kbuf || !e->vbuf || !e->page_work || !e->kown || !e->vown ||
        !e->scores || !e->own_p || !e->fill_seq || !e->fill_block) {
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
    for (int p = j->n_pages * task / LOAD_TASKS; p < j->n_pages * (task + 1) / LOAD_TASKS; p++) {
        const int f = p / (2 * H), h = (p / 2) % H;
        kv_cache_compress_page(j->e->cache, j->seqs[j->page_seq[f]].kv, j->layer, j->page_block[f],
                               h, p % 2, work);
    }
}

typedef struct load_job {
    llama_engine *e;
    const kv_seq *seq;
    int layer, n_full, n_pages;
} load_job;

/* Task i decompresses its share of the (kv head, block) pages into kbuf/vbuf. */
static void load_pages(void *ctx, int task) {
    const load_job *j = ctx;
    llama_engine *e = j->e;
    const int T = e->cache->config.block_size, D = e->model->config.head_dim;
    void *work = (uint8_t *)e->page_work + (size_t)task * e->page_work_bytes;
    for (int p = j->n_pages * task / LOAD_TASKS; p < j->n_pages * (task + 1) / LOAD_TASKS; p++) {
        const int h = p / j->n_full, b = p % j->n_full;
        const size_t off = (size_t)h * e->head_stride + (size_t)b * T * D;
        kv_cache_load_page(e->cache, j->seq, j->layer, h, b, e->kbuf + off, e->vbuf + off, work);
    }
}

/* Attention of one sequence's new rows [row0, row0 + n) for one layer; K/V already in the cache.
 * Per kv head: the compressed blocks are decompressed once and serve every query row and every
 * query head of the group through two GEMMs (scores, then probabilities x values); the query's
 * own block comes from the fp16 rows. Query at p: keys t < own(p) compressed, own(p) <= t <= p
 * exact, own(p) = p rounded down to a block. */
static void attend_seq(llama_engine *e, const llama_step_seq *s, int layer, int row0) {
    const llama_config *c = &e->model->config;
    kv_cache *kc = e->cache;
    const int D = c->head_dim, T = kc->config.block_size, group = c->n_heads / c->n_kv_heads;
    const int n = s->n_tokens, first = s->kv->n_tokens, last = first + n - 1;
    const int qd = c->n_heads * D;
    const float scale = 1.0f / sqrtf((float)D);
    const int n_full = last / T, n_keys = n_full * T; /* compressed keys any row may read */
    const int span0 = (first / T) * T;                /* first position of the first own block */
    load_job job = {e, s->kv, layer, n_full, n_full * c->n_kv_heads};
    if (job.n_pages) threadpool_run(e->pool, LOAD_TASKS, load_pages, &job);
    for (int h = 0; h < c->n_kv_heads; h++) {
        const float *kbuf = e->kbuf + (size_t)h * e->head_stride;
        const float *vbuf = e->vbuf + (size_t)h * e->head_stride;
        for (int t = span0; t <= last; t++) {
            const uint16_t *kh = kv_cache_open_row(kc, s->kv, layer, h, 0, t);
            const uint16_t *vh = kv_cache_open_row(kc, s->kv, layer, h, 1, t);
            ds_half_to_float_n(kh, e->kown + (size_t)(t - span0) * D, (size_t)D);
            ds_half_to_float_n(vh, e->vown + (size_t)(t - span0) * D, (size_t)D);
        }
        for (int g = 0; g < group; g++) {
            const int qh = h * group + g;
            const float *q = e->q + (size_t)row0 * qd + (size_t)qh * D; /* rows at stride qd */
            float *out = e->attn + (size_t)row0 * qd + (size_t)qh * D;
            if (n_keys > 0) ops_gemm_nt(e->scores, q, qd, kbuf, D, n, n_keys, D, scale, e->pool);
            for (int i = 0; i < n; i++) {
                const int p = first + i, own = (p / T) * T;
                float *sc = e->scores + (size_t)i * n_keys, *op = e->own_p + (size_t)i * T;
                const float *qi = q + (size_t)i * qd;
                float mx = -INFINITY;
                for (int t = 0; t < own; t++)
                    mx = sc[t] > mx ? sc[t] : mx;
                for (int t = own; t <= p; t++) {
                    const float *kr = e->kown + (size_t)(t - span0) * D;
                    float dot = 0.0f;
                    for (int j = 0; j < D; j++)
                        dot += qi[j] * kr[j];
                    op[t - own] = dot * scale;
                    mx = op[t - own] > mx ? op[t - own] : mx;
                }
                float sum = 0.0f;
                for (int t = 0; t < own; t++)
                    sum += (sc[t] = expf(sc[t] - mx));
                for (int t = own; t < n_keys; t++)
                    sc[t] = 0.0f;
                for (int t = own; t <= p; t++)
                    sum += (op[t - own] = expf(op[t - own] - mx));
                float inv = 1.0f / sum;
                for (int t = 0; t < own; t++)
                    sc[t] *= inv;
                for (int t = own; t <= p; t++)
                    op[t - own] *= inv;
            }
            if (n_keys > 0) ops_gemm_nn(out, qd, e->scores, n_keys, vbuf, D, n, D, n_keys, e->pool);
            for (int i = 0; i < n; i++) {
                const int p = first + i, own = (p / T) * T;
                float *o = out + (size_t)i * qd;
                if (n_keys == 0)
                    for (int j = 0; j < D; j++)
                        o[j] = 0.0f;
                for (int t = own; t <= p; t++) {
                    const float w = e->own_p[(size_t)i * T + (t - own)];
                    const float *vr = e->vown + (size_t)(t - span0) * D;
                    for (int j = 0; j < D; j++)
                        o[j] += w * vr[j];
                }
            }
        }
    }
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
        if (cj.n_pages) threadpool_run(e->pool, LOAD_TASKS, compress_pages, &cj);
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
