/* engine/loader/llama_hf.c — config.json -> llama_config and HF tensor names -> llama_model.
 * Every tensor is checked (present, convertible dtype, exact shape) before any weight buffer is
 * allocated, so a mismatched checkpoint fails fast with the tensor named. */
#include "engine/loader/llama_hf.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "engine/loader/safetensors.h"

#define CONFIG_MAX_BYTES (1u << 20)

static ds_status read_config_json(const char *path, cJSON **out, char *msg, size_t msg_len) {
    ds_status st = ds_read_json(path, CONFIG_MAX_BYTES, out, msg, msg_len);
    if (st == DS_OK && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        st = ds_fail(msg, msg_len, DS_EINVAL, "%s: not a JSON object", path);
    }
    return st;
}

/* A field that is absent or JSON null counts as missing. */
static const cJSON *field(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

/* Positive int field; def < 0 makes it required. prefix names the enclosing object in messages. */
static ds_status get_int(const char *path, const cJSON *obj, const char *prefix, const char *key,
                         int def, int *out, char *msg, size_t msg_len) {
    const cJSON *v = field(obj, key);
    if (!v) {
        if (def < 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "%s: field %s%s: missing", path, prefix, key);
        *out = def;
        return DS_OK;
    }
    double d = cJSON_IsNumber(v) ? v->valuedouble : 0.0;
    if (!(d >= 1.0 && d <= INT_MAX) || d != floor(d))
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: field %s%s: expected a positive integer", path,
                       prefix, key);
    *out = (int)d;
    return DS_OK;
}

/* Positive finite float field; def < 0 makes it required. */
static ds_status get_float(const char *path, const cJSON *obj, const char *prefix, const char *key,
                           double def, float *out, char *msg, size_t msg_len) {
    const cJSON *v = field(obj, key);
    if (!v) {
        if (def < 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "%s: field %s%s: missing", path, prefix, key);
        *out = (float)def;
        return DS_OK;
    }
    float f = cJSON_IsNumber(v) ? (float)v->valuedouble : 0.0f;
    if (!(f > 0.0f) || !isfinite(f))
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: field %s%s: expected a positive number", path,
                       prefix, key);
    *out = f;
    return DS_OK;
}

static ds_status get_bool(const char *path, const cJSON *obj, const char *key, int def, int *out,
                          char *msg, size_t msg_len) {
    const cJSON *v = field(obj, key);
    if (!v) {
        *out = def;
        return DS_OK;
    }
    if (!cJSON_IsBool(v))
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: field %s: expected true or false", path, key);
    *out = cJSON_IsTrue(v);
    return DS_OK;
}

static ds_status check_model_type(const char *path, const cJSON *root, char *msg, size_t msg_len) {
    const cJSON *type = field(root, "model_type");
    if (type) {
        if (!cJSON_IsString(type))
            return ds_fail(msg, msg_len, DS_EINVAL, "%s: field model_type: not a string", path);
        if (strcmp(type->valuestring, "llama") != 0)
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                           "%s: field model_type: \"%.64s\" is not supported (expected \"llama\")",
                           path, type->valuestring);
        return DS_OK;
    }
    const cJSON *arch;
    cJSON_ArrayForEach(arch, field(root, "architectures")) {
        if (cJSON_IsString(arch) && strcmp(arch->valuestring, "LlamaForCausalLM") == 0)
            return DS_OK;
    }
    return ds_fail(msg, msg_len, DS_EINVAL,
                   "%s: field model_type: missing, and architectures does not name "
                   "LlamaForCausalLM",
                   path);
}

static ds_status parse_rope_scaling(const char *path, const cJSON *rs, llama_config *c, char *msg,
                                    size_t msg_len) {
    c->rope_scaling = LLAMA_ROPE_NONE;
    if (!rs) return DS_OK;
    if (!cJSON_IsObject(rs))
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: field rope_scaling: not an object", path);
    const cJSON *type = field(rs, "rope_type");
    const char *type_key = "rope_type";
    if (!type) {
        type = field(rs, "type");
        type_key = "type";
    }
    if (!cJSON_IsString(type))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: field rope_scaling.rope_type: missing or not a string", path);
    const char *p = "rope_scaling.";
    ds_status st = DS_OK;
    if (strcmp(type->valuestring, "default") == 0) return DS_OK;
    if (strcmp(type->valuestring, "linear") == 0) {
        c->rope_scaling = LLAMA_ROPE_LINEAR;
        return get_float(path, rs, p, "factor", -1, &c->rope_factor, msg, msg_len);
    }
    if (strcmp(type->valuestring, "llama3") == 0) {
        c->rope_scaling = LLAMA_ROPE_LLAMA3;
        if ((st = get_float(path, rs, p, "factor", -1, &c->rope_factor, msg, msg_len)) ||
            (st = get_float(path, rs, p, "low_freq_factor", -1, &c->rope_low_freq_factor, msg,
                            msg_len)) ||
            (st = get_float(path, rs, p, "high_freq_factor", -1, &c->rope_high_freq_factor, msg,
                            msg_len)) ||
            (st = get_int(path, rs, p, "original_max_position_embeddings", -1,
                          &c->rope_original_context, msg, msg_len)))
            return st;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "%s: field rope_scaling.high_freq_factor: must exceed low_freq_factor",
                           path);
        return DS_OK;
    }
    return ds_fail(
        msg, msg_len, DS_EUNSUPPORTED,
        "%s: field rope_scaling.%s: \"%.32s\" is not supported (default, linear, llama3)", path,
        type_key, type->valuestring);
}

static ds_status parse_config(const char *path, const cJSON *root, llama_config *c, char *msg,
                              size_t msg_len) {
    ds_status st;
    if ((st = check_model_type(path, root, msg, msg_len))) return st;
    const cJSON *act = field(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: field hidden_act: only \"silu\" is supported", path);
    static const char *const bias_keys[] = {"attention_bias", "mlp_bias"};
    for (int i = 0; i < 2; i++) {
        int bias = 0;
        if ((st = get_bool(path, root, bias_keys[i], 0, &bias, msg, msg_len))) return st;
        if (bias)
            return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: field %s: biases are not supported",
                           path, bias_keys[i]);
    }

    snprintf(c->architecture, sizeof c->architecture, "llama");
    if ((st = get_int(path, root, "", "num_hidden_layers", -1, &c->n_layers, msg, msg_len)) ||
        (st = get_int(path, root, "", "hidden_size", -1, &c->d_model, msg, msg_len)) ||
        (st = get_int(path, root, "", "intermediate_size", -1, &c->d_ff, msg, msg_len)) ||
        (st = get_int(path, root, "", "num_attention_heads", -1, &c->n_heads, msg, msg_len)) ||
        (st = get_int(path, root, "", "num_key_value_heads", c->n_heads, &c->n_kv_heads, msg,
                      msg_len)) ||
        (st = get_int(path, root, "", "vocab_size", -1, &c->vocab_size, msg, msg_len)) ||
        (st = get_int(path, root, "", "max_position_embeddings", -1, &c->context_length, msg,
                      msg_len)) ||
        (st = get_float(path, root, "", "rms_norm_eps", -1, &c->rms_eps, msg, msg_len)) ||
        (st = get_float(path, root, "", "rope_theta", 10000.0, &c->rope_theta, msg, msg_len)) ||
        (st = get_bool(path, root, "tie_word_embeddings", 0, &c->tied_embeddings, msg, msg_len)) ||
        (st = parse_rope_scaling(path, field(root, "rope_scaling"), c, msg, msg_len)))
        return st;
    if (!field(root, "head_dim") && c->d_model % c->n_heads)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "%s: field head_dim: missing, and hidden_size %d is not a multiple of "
                       "num_attention_heads %d",
                       path, c->d_model, c->n_heads);
    if ((st = get_int(path, root, "", "head_dim", c->d_model / c->n_heads, &c->head_dim, msg,
                      msg_len)))
        return st;

    char why[256];
    if (llama_config_validate(c, why, sizeof why) != DS_OK)
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: %s", path,
                       strncmp(why, "config: ", 8) ? why : why + 8);
    return DS_OK;
}

ds_status llama_hf_read_config(const char *dir, llama_config *config, char *msg, size_t msg_len) {
    memset(config, 0, sizeof *config);
    size_t len = strlen(dir) + sizeof "/config.json";
    char *path = malloc(len);
    if (!path) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", dir);
    snprintf(path, len, "%s%sconfig.json", dir, dir[0] && dir[strlen(dir) - 1] == '/' ? "" : "/");
    cJSON *root;
    ds_status st = read_config_json(path, &root, msg, msg_len);
    if (st == DS_OK) st = parse_config(path, root, config, msg, msg_len);
    cJSON_Delete(root);
    free(path);
    return st;
}

/* ---- tensors ---- */

enum { GLOBAL_TENSORS = 3, LAYER_TENSORS = 9 };

/* The i-th tensor the model needs: its HF name, expected [rows][cols] (cols 0 for a vector)
 * and the model field it fills. */
static float **tensor_slot(llama_model *m, int i, char *name, size_t name_len, int *rows,
                           int *cols) {
    const llama_config *c = &m->config;
    int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    static const char *const global[GLOBAL_TENSORS] = {"model.embed_tokens.weight",
                                                       "model.norm.weight", "lm_head.weight"};
    if (i < GLOBAL_TENSORS) {
        snprintf(name, name_len, "%s", global[i]);
        *rows = i == 1 ? c->d_model : c->vocab_size;
        *cols = i == 1 ? 0 : c->d_model;
        return i == 0 ? &m->tok_embd : i == 1 ? &m->output_norm : &m->output;
    }
    int l = (i - GLOBAL_TENSORS) / LAYER_TENSORS, k = (i - GLOBAL_TENSORS) % LAYER_TENSORS;
    llama_layer *L = m->layers ? &m->layers[l] : NULL;
    const struct {
        const char *suffix;
        int rows, cols;
        float **dst;
    } table[LAYER_TENSORS] = {
        {"input_layernorm", c->d_model, 0, L ? &L->attn_norm : NULL},
        {"self_attn.q_proj", q, c->d_model, L ? &L->wq : NULL},
        {"self_attn.k_proj", kv, c->d_model, L ? &L->wk : NULL},
        {"self_attn.v_proj", kv, c->d_model, L ? &L->wv : NULL},
        {"self_attn.o_proj", c->d_model, q, L ? &L->wo : NULL},
        {"post_attention_layernorm", c->d_model, 0, L ? &L->ffn_norm : NULL},
        {"mlp.gate_proj", c->d_ff, c->d_model, L ? &L->w_gate : NULL},
        {"mlp.up_proj", c->d_ff, c->d_model, L ? &L->w_up : NULL},
        {"mlp.down_proj", c->d_model, c->d_ff, L ? &L->w_down : NULL},
    };
    snprintf(name, name_len, "model.layers.%d.%s.weight", l, table[k].suffix);
    *rows = table[k].rows;
    *cols = table[k].cols;
    return table[k].dst;
}

static void format_shape(const safetensors_tensor *t, char *buf, size_t len) {
    size_t pos = 0;
    buf[0] = '\0';
    if (t->n_dims == 0) snprintf(buf, len, "a scalar");
    for (int d = 0; d < t->n_dims && pos < len; d++) {
        int n = snprintf(buf + pos, len - pos, "%s%lld", d ? "x" : "", (long long)t->shape[d]);
        if (n < 0) break;
        pos += (size_t)n;
    }
}

static ds_status check_tensor(const safetensors_checkpoint *ck, const char *name, int rows,
                              int cols, char *msg, size_t msg_len) {
    const safetensors_tensor *t = safetensors_checkpoint_find(ck, name);
    if (!t)
        return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: tensor %s: not found",
                       safetensors_checkpoint_path(ck), name);
    if (t->dtype != SAFETENSORS_F32 && t->dtype != SAFETENSORS_F16 && t->dtype != SAFETENSORS_BF16)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: tensor %s: dtype %s not supported (F32, F16, BF16)", t->path, name,
                       safetensors_dtype_name(t->dtype));
    int ok = cols ? t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols
                  : t->n_dims == 1 && t->shape[0] == rows;
    if (!ok) {
        char want[48], got[128];
        if (cols)
            snprintf(want, sizeof want, "%dx%d", rows, cols);
        else
            snprintf(want, sizeof want, "%d", rows);
        format_shape(t, got, sizeof got);
        return ds_fail(msg, msg_len, DS_EINVAL, "%s: tensor %s: expected %s, got %s", t->path, name,
                       want, got);
    }
    return DS_OK;
}

ds_status llama_model_load_hf(const char *dir, llama_model *m, char *msg, size_t msg_len) {
    memset(m, 0, sizeof *m);
    ds_status st = llama_hf_read_config(dir, &m->config, msg, msg_len);
    if (st != DS_OK) {
        memset(m, 0, sizeof *m);
        return st;
    }
    safetensors_checkpoint *ck;
    if ((st = safetensors_checkpoint_open(dir, &ck, msg, msg_len)) != DS_OK) {
        memset(m, 0, sizeof *m);
        return st;
    }
    if (!safetensors_checkpoint_find(ck, "lm_head.weight")) m->config.tied_embeddings = 1;

    int n_tensors = GLOBAL_TENSORS + LAYER_TENSORS * m->config.n_layers;
    char name[128];
    int rows, cols;
    /* Pass 1: names, dtypes and shapes, before committing memory to the config's sizes. */
    for (int i = 0; i < n_tensors && st == DS_OK; i++) {
        if (i == 2 && m->config.tied_embeddings) continue;
        tensor_slot(m, i, name, sizeof name, &rows, &cols);
        st = check_tensor(ck, name, rows, cols, msg, msg_len);
    }
    if (st == DS_OK) st = llama_model_alloc(m, msg, msg_len);
    /* Pass 2: convert into the model's buffers. */
    for (int i = 0; i < n_tensors && st == DS_OK; i++) {
        if (i == 2 && m->config.tied_embeddings) continue;
        float **dst = tensor_slot(m, i, name, sizeof name, &rows, &cols);
        st = safetensors_to_f32(safetensors_checkpoint_find(ck, name), *dst, msg, msg_len);
    }
    safetensors_checkpoint_close(ck);
    if (st != DS_OK) llama_model_free(m);
    return st;
}
