/* engine/loader/llama_gguf.c — Llama GGUF <-> llama_model: reads the llama.* configuration,
 * checks every tensor's presence, shape and type before allocating, then dequantizes to fp32 (and
 * keeps a copy of the Q4_0 / Q4_1 matrices' own blocks) and undoes llama.cpp's Q/K row
 * interleaving. Also the inverse, for writers of test models. */
#include "engine/loader/llama_gguf.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* llama_gguf_permute_qk on rows of row_bytes bytes (fp32 values or a row's quantized blocks). */
static void permute_qk_rows(void *dst, const void *src, int n_heads, int head_dim, size_t row_bytes,
                            int to_gguf) {
    int half = head_dim / 2;
    for (int h = 0; h < n_heads; h++)
        for (int s = 0; s < 2; s++)
            for (int i = 0; i < half; i++) {
                size_t gguf_row = (size_t)h * head_dim + 2 * i + s;
                size_t hf_row = (size_t)h * head_dim + s * half + i;
                size_t to = to_gguf ? gguf_row : hf_row, from = to_gguf ? hf_row : gguf_row;
                memcpy((char *)dst + to * row_bytes, (const char *)src + from * row_bytes,
                       row_bytes);
            }
}

void llama_gguf_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int n_in,
                           int to_gguf) {
    permute_qk_rows(dst, src, n_heads, head_dim, (size_t)n_in * sizeof(float), to_gguf);
}

/* ---- configuration ---- */

/* An integer key into an int; absent keys take def (or fail when def < 0: required). */
static ds_status get_int(const gguf_file *f, const char *key, int def, int *out, char *msg,
                         size_t msg_len) {
    uint32_t v;
    ds_status st = gguf_get_u32(f, key, &v, msg, msg_len);
    if (st == DS_ENOTFOUND && def >= 0) {
        *out = def;
        return DS_OK;
    }
    if (st) return st;
    if (v > INT_MAX)
        return ds_fail(msg, msg_len, DS_ERANGE, "%s: key %s: %" PRIu32 " is too large",
                       gguf_path(f), key, v);
    *out = (int)v;
    return DS_OK;
}

static ds_status get_float(const gguf_file *f, const char *key, float def, float *out, char *msg,
                           size_t msg_len) {
    ds_status st = gguf_get_f32(f, key, out, msg, msg_len);
    if (st == DS_ENOTFOUND) {
        *out = def;
        return DS_OK;
    }
    return st;
}

static ds_status rope_scaling_from_gguf(const gguf_file *f, llama_config *c, char *msg,
                                        size_t msg_len) {
    const char *type = "none";
    ds_status st = gguf_get_str(f, "llama.rope.scaling.type", &type, NULL, msg, msg_len);
    if (st && st != DS_ENOTFOUND) return st;
    if (strcmp(type, "none") == 0) {
        c->rope_scaling = LLAMA_ROPE_NONE;
    } else if (strcmp(type, "linear") == 0) {
        c->rope_scaling = LLAMA_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        c->rope_scaling = LLAMA_ROPE_LLAMA3;
    } else {
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: key llama.rope.scaling.type: '%.40s' is not supported (none, linear, "
                       "llama3)",
                       gguf_path(f), type);
    }
    if (gguf_find_tensor(f, "rope_freqs.weight") && c->rope_scaling != LLAMA_ROPE_LLAMA3)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor rope_freqs.weight: per-frequency rope factors are not supported "
                       "(write llama.rope.scaling.type = llama3 and its factors instead)",
                       gguf_path(f));
    if (c->rope_scaling == LLAMA_ROPE_NONE) return DS_OK;
    if ((st = get_float(f, "llama.rope.scaling.factor", 1.0f, &c->rope_factor, msg, msg_len)) ||
        (st = get_float(f, "llama.rope.scaling.low_freq_factor", 1.0f, &c->rope_low_freq_factor,
                        msg, msg_len)) ||
        (st = get_float(f, "llama.rope.scaling.high_freq_factor", 4.0f, &c->rope_high_freq_factor,
                        msg, msg_len)) ||
        (st = get_int(f, "llama.rope.scaling.original_context_length", c->context_length,
                      &c->rope_original_context, msg, msg_len)))
        return st;
    return DS_OK;
}

ds_status llama_config_from_gguf(const gguf_file *f, llama_config *c, char *msg, size_t msg_len) {
    const char *path = gguf_path(f), *arch;
    memset(c, 0, sizeof *c);
    ds_status st = gguf_get_str(f, "general.architecture", &arch, NULL, msg, msg_len);
    if (st) return st;
    if (strcmp(arch, "llama") != 0)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: key general.architecture: '%.40s' is not supported (expected llama)",
                       path, arch);
    snprintf(c->architecture, sizeof c->architecture, "%s", arch);
    if ((st = get_int(f, "llama.block_count", -1, &c->n_layers, msg, msg_len)) ||
        (st = get_int(f, "llama.embedding_length", -1, &c->d_model, msg, msg_len)) ||
        (st = get_int(f, "llama.feed_forward_length", -1, &c->d_ff, msg, msg_len)) ||
        (st = get_int(f, "llama.attention.head_count", -1, &c->n_heads, msg, msg_len)) ||
        (st = get_int(f, "llama.attention.head_count_kv", c->n_heads, &c->n_kv_heads, msg,
                      msg_len)) ||
        (st = get_int(f, "llama.context_length", -1, &c->context_length, msg, msg_len)) ||
        (st = get_float(f, "llama.rope.freq_base", 10000.0f, &c->rope_theta, msg, msg_len)) ||
        (st = get_float(f, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &c->rms_eps, msg,
                        msg_len)))
        return st;
    if (c->n_heads <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: key llama.attention.head_count: must be "
                       "positive",
                       path);
    int default_hd = c->d_model % c->n_heads == 0 ? c->d_model / c->n_heads : 0;
    if ((st = get_int(f, "llama.attention.key_length", default_hd, &c->head_dim, msg, msg_len)))
        return st;
    int value_length, rope_dims;
    if ((st = get_int(f, "llama.attention.value_length", c->head_dim, &value_length, msg,
                      msg_len)) ||
        (st = get_int(f, "llama.rope.dimension_count", c->head_dim, &rope_dims, msg, msg_len)))
        return st;
    if (value_length != c->head_dim)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: key llama.attention.value_length: %d differs from key_length %d", path,
                       value_length, c->head_dim);
    if (rope_dims != c->head_dim)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: key llama.rope.dimension_count: partial rotary (%d of %d dims) is not "
                       "supported",
                       path, rope_dims, c->head_dim);

    /* Vocabulary: explicit key, else the tokenizer's token list, else the embedding's rows. */
    const gguf_tensor *embd = gguf_find_tensor(f, "token_embd.weight");
    uint64_t n_tokens;
    st = get_int(f, "llama.vocab_size", 0, &c->vocab_size, msg, msg_len);
    if (!st && c->vocab_size == 0) {
        st = gguf_get_arr_info(f, "tokenizer.ggml.tokens", NULL, &n_tokens, msg, msg_len);
        if (!st && n_tokens > INT_MAX)
            return ds_fail(msg, msg_len, DS_ERANGE,
                           "%s: key tokenizer.ggml.tokens: %" PRIu64 " tokens is too many", path,
                           n_tokens);
        if (!st) c->vocab_size = (int)n_tokens;
        if (st == DS_ENOTFOUND && embd && embd->ne[1] <= INT_MAX) {
            c->vocab_size = (int)embd->ne[1];
            st = DS_OK;
        }
    }
    if (st) return st;
    if ((st = rope_scaling_from_gguf(f, c, msg, msg_len))) return st;
    c->tied_embeddings = gguf_find_tensor(f, "output.weight") == NULL;
    char detail[256];
    if ((st = llama_config_validate(c, detail, sizeof detail)))
        return ds_fail(msg, msg_len, st, "%s: %s", path, detail);
    return DS_OK;
}

/* ---- tensors ---- */

typedef struct tensor_slot {
    char name[48];
    int64_t ne0, ne1; /* expected shape, ne1 = 0 for vectors */
    float *dst;
    int permute_heads;         /* > 0: Q/K un-permutation with this many heads */
    llama_file_blocks *blocks; /* where a Q4_0 / Q4_1 matrix keeps its blocks; NULL: nowhere */
} tensor_slot;

static int supported_type(gguf_ggml_type t) {
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16 || t == GGML_TYPE_Q8_0 ||
           t == GGML_TYPE_Q4_0 || t == GGML_TYPE_Q4_1;
}

static void shape_str(char *out, size_t len, const int64_t *ne, int n_dims) {
    int k = snprintf(out, len, "%" PRId64, n_dims > 0 ? ne[0] : 1);
    for (int d = 1; d < n_dims && k > 0 && (size_t)k < len; d++)
        k += snprintf(out + k, len - (size_t)k, "x%" PRId64, ne[d]);
}

static ds_status check_tensor(const gguf_file *f, const tensor_slot *s, const gguf_tensor **out,
                              char *msg, size_t msg_len) {
    const gguf_tensor *t = gguf_find_tensor(f, s->name);
    if (!t)
        return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: tensor %s: not found", gguf_path(f),
                       s->name);
    int64_t want[GGUF_MAX_DIMS] = {s->ne0, s->ne1 ? s->ne1 : 1, 1, 1};
    int want_dims = s->ne1 ? 2 : 1;
    if (memcmp(t->ne, want, sizeof want) != 0) {
        char w[64], g[96];
        shape_str(w, sizeof w, want, want_dims);
        shape_str(g, sizeof g, t->ne, t->n_dims);
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: tensor %s: expected %s, got %s", gguf_path(f),
                       s->name, w, g);
    }
    if (!supported_type(t->type))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor %s: type %s is not supported (f32, f16, bf16, q8_0, q4_0, q4_1)",
                       gguf_path(f), s->name, gguf_ggml_type_name(t->type));
    *out = t;
    return DS_OK;
}

/* Expected tensors in file order, computed one at a time so that a corrupt block_count costs no
 * allocation: token_embd, output_norm, output (untied only), then 9 per layer. dst is NULL when
 * the model's buffers are not allocated yet. */
static size_t n_tensor_slots(const llama_config *c) {
    return 2 + (c->tied_embeddings ? 0 : 1) + 9 * (size_t)c->n_layers;
}

/* const: the writer reads slots of a model it does not own; only the loader, whose model is its
 * own, writes through dst and blocks. */
static void tensor_slot_at(const llama_model *m, size_t k, tensor_slot *s) {
    const llama_config *c = &m->config;
    int64_t d = c->d_model, q = (int64_t)c->n_heads * c->head_dim,
            kv = (int64_t)c->n_kv_heads * c->head_dim, ff = c->d_ff, v = c->vocab_size;
    llama_file_blocks *output_file = (llama_file_blocks *)&m->output_file;
    if (k == 0) {
        *s = (tensor_slot){"token_embd.weight", d, v,
                           m->tok_embd,         0, c->tied_embeddings ? output_file : NULL};
        return;
    }
    if (k == 1) {
        *s = (tensor_slot){"output_norm.weight", d, 0, m->output_norm, 0, NULL};
        return;
    }
    if (k == 2 && !c->tied_embeddings) {
        *s = (tensor_slot){"output.weight", d, v, m->output, 0, output_file};
        return;
    }
    k -= c->tied_embeddings ? 2 : 3;
    int l = (int)(k / 9);
    llama_layer *L = m->layers ? &m->layers[l] : NULL; /* layers point at non-const data */
    static const char *const parts[9] = {"attn_norm", "attn_q",      "attn_k",
                                         "attn_v",    "attn_output", "ffn_norm",
                                         "ffn_gate",  "ffn_up",      "ffn_down"};
    const int64_t shapes[9][2] = {{d, 0}, {d, q},  {d, kv}, {d, kv}, {q, d},
                                  {d, 0}, {d, ff}, {d, ff}, {ff, d}};
    float *const dsts[9] = {L ? L->attn_norm : NULL, L ? L->wq : NULL,   L ? L->wk : NULL,
                            L ? L->wv : NULL,        L ? L->wo : NULL,   L ? L->ffn_norm : NULL,
                            L ? L->w_gate : NULL,    L ? L->w_up : NULL, L ? L->w_down : NULL};
    llama_file_blocks *const blocks[9] = {NULL,
                                          L ? &L->file.wq : NULL,
                                          L ? &L->file.wk : NULL,
                                          L ? &L->file.wv : NULL,
                                          L ? &L->file.wo : NULL,
                                          NULL,
                                          L ? &L->file.w_gate : NULL,
                                          L ? &L->file.w_up : NULL,
                                          L ? &L->file.w_down : NULL};
    int j = (int)(k % 9);
    snprintf(s->name, sizeof s->name, "blk.%d.%s.weight", l, parts[j]);
    s->ne0 = shapes[j][0];
    s->ne1 = shapes[j][1];
    s->dst = dsts[j];
    s->blocks = blocks[j];
    s->permute_heads = j == 1 ? c->n_heads : j == 2 ? c->n_kv_heads : 0;
}

/* A Q4_0 / Q4_1 matrix's own blocks, copied (rows in HF order) into slot->blocks. */
static ds_status keep_blocks(const tensor_slot *slot, const gguf_tensor *t, int head_dim,
                             const char *path, char *msg, size_t msg_len) {
    if (!slot->blocks || (t->type != GGML_TYPE_Q4_0 && t->type != GGML_TYPE_Q4_1)) return DS_OK;
    void *data = malloc(t->n_bytes);
    if (!data)
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: tensor %s: out of memory for its blocks", path,
                       slot->name);
    if (slot->permute_heads)
        permute_qk_rows(data, t->data, slot->permute_heads, head_dim,
                        (size_t)(t->n_bytes / (uint64_t)slot->ne1), 0);
    else
        memcpy(data, t->data, t->n_bytes);
    *slot->blocks = (llama_file_blocks){
        t->type == GGML_TYPE_Q4_0 ? LLAMA_BLOCKS_Q4_0 : LLAMA_BLOCKS_Q4_1, data};
    return DS_OK;
}

ds_status llama_model_load_gguf(const char *path, llama_model *m, char *msg, size_t msg_len) {
    gguf_file *f = NULL;
    memset(m, 0, sizeof *m);
    ds_status st = gguf_open(path, &f, msg, msg_len);
    if (st) return st;
    st = llama_model_from_gguf(f, m, msg, msg_len);
    gguf_close(f);
    return st;
}

ds_status llama_model_from_gguf(const gguf_file *f, llama_model *m, char *msg, size_t msg_len) {
    const char *path = gguf_path(f);
    float *scratch = NULL;
    memset(m, 0, sizeof *m);
    ds_status st = llama_config_from_gguf(f, &m->config, msg, msg_len);
    if (st) goto done;

    /* Check names, shapes and types first: a bad file fails before the big allocation, and
     * every buffer allocated below is backed by tensor bytes that exist in the file. */
    size_t n_slots = n_tensor_slots(&m->config), max_qk = 0;
    tensor_slot slot;
    for (size_t i = 0; i < n_slots; i++) {
        const gguf_tensor *t = NULL;
        tensor_slot_at(m, i, &slot);
        if ((st = check_tensor(f, &slot, &t, msg, msg_len))) goto done;
        if (slot.permute_heads && (size_t)t->n_elements > max_qk) max_qk = (size_t)t->n_elements;
    }

    if ((st = llama_model_alloc(m, msg, msg_len))) goto done;
    if (!(scratch = malloc(max_qk * sizeof *scratch))) {
        st = ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    for (size_t i = 0; i < n_slots; i++) {
        tensor_slot_at(m, i, &slot);
        const gguf_tensor *t = gguf_find_tensor(f, slot.name);
        float *dst = slot.permute_heads ? scratch : slot.dst;
        if (gguf_dequantize(t->type, t->data, dst, t->n_elements) != DS_OK) {
            st = ds_fail(msg, msg_len, DS_EINTERNAL, "%s: tensor %s: dequantization failed", path,
                         slot.name);
            goto done;
        }
        if (slot.permute_heads)
            llama_gguf_permute_qk(slot.dst, scratch, slot.permute_heads, m->config.head_dim,
                                  m->config.d_model, 0);
        if ((st = keep_blocks(&slot, t, m->config.head_dim, path, msg, msg_len))) goto done;
    }
done:
    if (st) llama_model_free(m);
    free(scratch);
    return st;
}

/* ---- writing ---- */

static uint32_t file_type_of(gguf_ggml_type t) { /* llama_ftype: the "mostly X" tag */
    switch (t) {
    case GGML_TYPE_F32: return 0;
    case GGML_TYPE_F16: return 1;
    case GGML_TYPE_Q4_0: return 2;
    case GGML_TYPE_Q4_1: return 3;
    case GGML_TYPE_Q8_0: return 7;
    case GGML_TYPE_BF16: return 32;
    default: return 0;
    }
}

ds_status llama_gguf_add_model(gguf_writer *w, const llama_model *m, gguf_ggml_type weight_type,
                               char *msg, size_t msg_len) {
    const llama_config *c = &m->config;
    ds_status st;
    struct {
        const char *key;
        int value;
    } ints[] = {
        {"llama.block_count", c->n_layers},
        {"llama.context_length", c->context_length},
        {"llama.embedding_length", c->d_model},
        {"llama.feed_forward_length", c->d_ff},
        {"llama.attention.head_count", c->n_heads},
        {"llama.attention.head_count_kv", c->n_kv_heads},
        {"llama.attention.key_length", c->head_dim},
        {"llama.attention.value_length", c->head_dim},
        {"llama.rope.dimension_count", c->head_dim},
        {"llama.vocab_size", c->vocab_size},
        {"general.file_type", (int)file_type_of(weight_type)},
    };
    if ((st = gguf_writer_add_str(w, "general.architecture", "llama", msg, msg_len))) return st;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if ((st = gguf_writer_add_u32(w, ints[i].key, (uint32_t)ints[i].value, msg, msg_len)))
            return st;
    if ((st = gguf_writer_add_f32(w, "llama.rope.freq_base", c->rope_theta, msg, msg_len)) ||
        (st = gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", c->rms_eps, msg,
                                  msg_len)))
        return st;
    if (c->rope_scaling != LLAMA_ROPE_NONE) {
        const char *type = c->rope_scaling == LLAMA_ROPE_LINEAR ? "linear" : "llama3";
        if ((st = gguf_writer_add_str(w, "llama.rope.scaling.type", type, msg, msg_len)) ||
            (st =
                 gguf_writer_add_f32(w, "llama.rope.scaling.factor", c->rope_factor, msg, msg_len)))
            return st;
        if (c->rope_scaling == LLAMA_ROPE_LLAMA3 &&
            ((st = gguf_writer_add_f32(w, "llama.rope.scaling.low_freq_factor",
                                       c->rope_low_freq_factor, msg, msg_len)) ||
             (st = gguf_writer_add_f32(w, "llama.rope.scaling.high_freq_factor",
                                       c->rope_high_freq_factor, msg, msg_len)) ||
             (st = gguf_writer_add_u32(w, "llama.rope.scaling.original_context_length",
                                       (uint32_t)c->rope_original_context, msg, msg_len))))
            return st;
    }

    size_t n_slots = n_tensor_slots(c);
    size_t max_qk = (size_t)c->n_heads * c->head_dim * c->d_model;
    float *scratch = malloc(max_qk * sizeof *scratch);
    if (!scratch) return ds_fail(msg, msg_len, DS_ENOMEM, "gguf writer: out of memory");
    st = DS_OK;
    for (size_t i = 0; i < n_slots && !st; i++) {
        tensor_slot s;
        tensor_slot_at(m, i, &s);
        int64_t ne[2] = {s.ne0, s.ne1};
        const float *src = s.dst;
        if (s.permute_heads) {
            llama_gguf_permute_qk(scratch, src, s.permute_heads, c->head_dim, c->d_model, 1);
            src = scratch;
        }
        st = gguf_writer_add_tensor(w, s.name, s.ne1 ? weight_type : GGML_TYPE_F32, s.ne1 ? 2 : 1,
                                    ne, src, msg, msg_len);
    }
    free(scratch);
    return st;
}
