/* tools/eval/kv_capture.c — model + text -> kv_set through the engine's q/k/v tap. */
#include "tools/eval/kv_capture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/llama.h"
#include "engine/model_files.h"

enum { CHUNK = 256, BLOCK = 32 };

typedef struct capture {
    const llama_config *c;
    int n_tokens;
    float *k, *v; /* [layer][kv head][n_tokens][D] */
    float *q;     /* [layer][head][n_tokens][D] */
} capture;

static void tap(void *ctx, int seq_index, int layer, int first_pos, int n, const float *q,
                const float *k, const float *v) {
    (void)seq_index;
    capture *cp = ctx;
    const llama_config *c = cp->c;
    const int D = c->head_dim;
    for (int i = 0; i < n; i++) {
        size_t t = (size_t)(first_pos + i);
        for (int h = 0; h < c->n_kv_heads; h++) {
            size_t dst = (((size_t)layer * c->n_kv_heads + h) * cp->n_tokens + t) * D;
            memcpy(cp->k + dst, k + ((size_t)i * c->n_kv_heads + h) * D, (size_t)D * 4);
            memcpy(cp->v + dst, v + ((size_t)i * c->n_kv_heads + h) * D, (size_t)D * 4);
        }
        for (int h = 0; h < c->n_heads; h++) {
            size_t dst = (((size_t)layer * c->n_heads + h) * cp->n_tokens + t) * D;
            memcpy(cp->q + dst, q + ((size_t)i * c->n_heads + h) * D, (size_t)D * 4);
        }
    }
}

static char *read_prefix(const char *path, size_t max_bytes, size_t *len, char *msg,
                         size_t msg_len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: cannot open", path);
        return NULL;
    }
    char *buf = malloc(max_bytes + 1);
    *len = buf ? fread(buf, 1, max_bytes, fp) : 0;
    fclose(fp);
    if (!buf) ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    return buf;
}

ds_status kv_capture(const char *model_path, const char *text_path, int n_tokens, int n_queries,
                     kv_set *set, char *msg, size_t msg_len) {
    memset(set, 0, sizeof *set);
    llama_model model = {0};
    bpe_tokenizer *tok = NULL;
    kv_cache *cache = NULL;
    llama_engine *engine = NULL;
    capture cp = {0};
    int32_t *ids = NULL;
    float *logits = NULL;
    char *text = NULL;
    size_t text_len;
    kv_seq seq;
    kv_seq_init(&seq);
    ds_status st = model_files_load(model_path, &model, &tok, msg, msg_len);
    if (st != DS_OK) return st;
    const llama_config *c = &model.config;
    if (n_tokens > c->context_length) n_tokens = c->context_length;
    text = read_prefix(text_path, (size_t)n_tokens * 16, &text_len, msg, msg_len);
    if (!text) {
        st = DS_EIO;
        goto done;
    }
    int n_ids = 0, cap = (int)text_len + 1;
    ids = malloc((size_t)cap * sizeof *ids);
    st = ids ? bpe_encode(tok, text, text_len, false, ids, cap, &n_ids, msg, msg_len)
             : ds_fail(msg, msg_len, DS_ENOMEM, "out of memory");
    if (st != DS_OK) goto done;
    n_tokens = n_ids < n_tokens ? n_ids : n_tokens;
    if (n_tokens < 2 * BLOCK || n_queries > n_tokens) {
        st = ds_fail(msg, msg_len, DS_EINVAL, "%s: %d tokens: need at least %d (and >= queries)",
                     text_path, n_tokens, 2 * BLOCK);
        goto done;
    }
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = BLOCK,
                          .n_open_blocks = CHUNK / BLOCK + 2,
                          .n_full_blocks = n_tokens / BLOCK + 1};
    kc.key_codec = (dq_config){.method = DQ_FP16, .bits = 16};
    kc.value_codec = kc.key_codec;
    st = kv_cache_create(&kc, &cache, msg, msg_len);
    llama_engine_options opts = {.max_step_tokens = CHUNK, .weight_type = QM_F32};
    if (st == DS_OK) st = llama_engine_create(&model, cache, &opts, &engine, msg, msg_len);
    if (st != DS_OK) goto done;
    const size_t D = (size_t)c->head_dim, N = (size_t)n_tokens;
    cp.c = c;
    cp.n_tokens = n_tokens;
    cp.k = malloc((size_t)c->n_layers * c->n_kv_heads * N * D * 4);
    cp.v = malloc((size_t)c->n_layers * c->n_kv_heads * N * D * 4);
    cp.q = malloc((size_t)c->n_layers * c->n_heads * N * D * 4);
    logits = malloc((size_t)c->vocab_size * 4);
    if (!cp.k || !cp.v || !cp.q || !logits) {
        st = ds_fail(msg, msg_len, DS_ENOMEM, "kv capture: out of memory");
        goto done;
    }
    llama_engine_set_tap(engine, tap, &cp);
    for (int i = 0; i < n_tokens && st == DS_OK; i += CHUNK) {
        llama_step_seq s = {
            .kv = &seq, .tokens = ids + i, .n_tokens = n_tokens - i < CHUNK ? n_tokens - i : CHUNK};
        st = llama_engine_step(engine, &s, 1, logits, msg, msg_len);
    }
    if (st != DS_OK) goto done;
    int heads = c->n_layers * c->n_kv_heads, group = c->n_heads / c->n_kv_heads;
    st = kv_from_arrays(set, cp.k, cp.v, heads, n_tokens, c->head_dim, n_queries, 0, msg, msg_len);
    if (st != DS_OK) goto done;
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < c->n_kv_heads; h++)
            for (int qi = 0; qi < n_queries; qi++) {
                int qh = h * group + qi % group, t = n_tokens - n_queries + qi;
                memcpy(set->queries + (((size_t)l * c->n_kv_heads + h) * n_queries + qi) * D,
                       cp.q + (((size_t)l * c->n_heads + qh) * N + (size_t)t) * D, D * 4);
            }
done:
    if (cache) kv_seq_release(cache, &seq);
    llama_engine_destroy(engine);
    kv_cache_destroy(cache);
    bpe_destroy(tok);
    llama_model_free(&model);
    free(cp.k), free(cp.v), free(cp.q), free(ids), free(logits), free(text);
    return st;
}
