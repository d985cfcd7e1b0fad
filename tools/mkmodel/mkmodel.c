/* tools/mkmodel/mkmodel.c — decoserve-mkmodel: writes a random-weight Llama GGUF with a complete
 * GPT-2 style byte-level BPE tokenizer section, so unit tests and throughput runs need no
 * downloaded model. Shapes, tokenizer and the seeded weights (N(0, 0.02), norms 1) come from
 * engine/loader/synthetic.h, the same pieces the engine's --random-weights uses; this file only
 * writes them. --hf DIR also writes the same weights as a Hugging Face folder (config.json, fp32
 * model.safetensors, tokenizer.json), so the two loaders can be checked against each other.
 *   decoserve-mkmodel --out FILE.gguf [--hf DIR] [--shape tiny|smollm2-135m|...] [--seed N]
 *                     [--type f32|f16|bf16|q8_0|q4_0|q4_1] */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "common/status.h"
#include "engine/loader/gguf_writer.h"
#include "engine/loader/llama_gguf.h"
#include "engine/loader/model.h"
#include "engine/loader/synthetic.h"

static int parse_type(const char *s, gguf_ggml_type *t) {
    static const struct {
        const char *name;
        gguf_ggml_type type;
    } types[] = {{"f32", GGML_TYPE_F32},   {"f16", GGML_TYPE_F16},   {"bf16", GGML_TYPE_BF16},
                 {"q8_0", GGML_TYPE_Q8_0}, {"q4_0", GGML_TYPE_Q4_0}, {"q4_1", GGML_TYPE_Q4_1}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strcmp(s, types[i].name) == 0) {
            *t = types[i].type;
            return 1;
        }
    return 0;
}

static ds_status add_tokenizer(gguf_writer *w, const synthetic_vocab *v, char *msg,
                               size_t msg_len) {
    static const char chat_template[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\\n' }}{% endif %}";
    ds_status st;
    if ((st = gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", msg, msg_len)) ||
        (st = gguf_writer_add_str(w, "tokenizer.ggml.pre", SYNTHETIC_PRE, msg, msg_len)) ||
        (st = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens,
                                      NULL, (uint64_t)v->n_tokens, msg, msg_len)) ||
        (st = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types,
                                  (uint64_t)v->n_tokens, msg, msg_len)) ||
        (st = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                      NULL, (uint64_t)v->n_merges, msg, msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", SYNTHETIC_BOS_ID, msg,
                                  msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", SYNTHETIC_EOS_ID, msg,
                                  msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", SYNTHETIC_EOS_ID, msg,
                                  msg_len)) ||
        (st = gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", 0, msg, msg_len)) ||
        (st = gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", 0, msg, msg_len)) ||
        (st = gguf_writer_add_str(w, "tokenizer.chat_template", chat_template, msg, msg_len)))
        return st;
    return DS_OK;
}

/* ---- Hugging Face output: config.json, model.safetensors (F32), tokenizer.json ---- */

static ds_status write_text(const char *dir, const char *name, const char *text, char *msg,
                            size_t msg_len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *fp = fopen(path, "wb");
    int ok = fp && fputs(text, fp) >= 0;
    if (fp && fclose(fp) != 0) ok = 0;
    return ok ? DS_OK : ds_fail(msg, msg_len, DS_EIO, "%s: cannot write", path);
}

/* Writes cjson (and deletes it) as dir/name. */
static ds_status write_json(const char *dir, const char *name, cJSON *json, char *msg,
                            size_t msg_len) {
    char *text = json ? cJSON_Print(json) : NULL;
    ds_status st = text ? write_text(dir, name, text, msg, msg_len)
                        : ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", name);
    free(text);
    cJSON_Delete(json);
    return st;
}

typedef struct hf_tensor {
    char name[96];
    const float *data;
    int rows, cols; /* cols == 0: a vector of rows values */
} hf_tensor;

static ds_status write_safetensors(const char *dir, const hf_tensor *t, int n, char *msg,
                                   size_t msg_len) {
    cJSON *header = cJSON_CreateObject();
    size_t offset = 0;
    for (int i = 0; i < n; i++) {
        size_t bytes = (size_t)t[i].rows * (t[i].cols ? t[i].cols : 1) * sizeof(float);
        cJSON *info = cJSON_AddObjectToObject(header, t[i].name);
        cJSON_AddStringToObject(info, "dtype", "F32");
        cJSON *shape = cJSON_AddArrayToObject(info, "shape");
        cJSON_AddItemToArray(shape, cJSON_CreateNumber(t[i].rows));
        if (t[i].cols) cJSON_AddItemToArray(shape, cJSON_CreateNumber(t[i].cols));
        cJSON *range = cJSON_AddArrayToObject(info, "data_offsets");
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(range, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    char *text = cJSON_PrintUnformatted(header);
    cJSON_Delete(header);
    if (!text) return ds_fail(msg, msg_len, DS_ENOMEM, "safetensors header: out of memory");
    size_t len = strlen(text), padded = (len + 7) / 8 * 8;
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    int ok = fp != NULL;
    if (ok) {
        uint64_t n_header = padded;
        unsigned char le[8];
        for (int i = 0; i < 8; i++)
            le[i] = (unsigned char)(n_header >> (8 * i));
        ok = fwrite(le, 1, 8, fp) == 8 && fwrite(text, 1, len, fp) == len;
        for (size_t i = len; ok && i < padded; i++)
            ok = fputc(' ', fp) != EOF;
        for (int i = 0; ok && i < n; i++) {
            size_t count = (size_t)t[i].rows * (t[i].cols ? t[i].cols : 1);
            ok = fwrite(t[i].data, sizeof(float), count, fp) == count;
        }
        if (fclose(fp) != 0) ok = 0;
    }
    free(text);
    return ok ? DS_OK : ds_fail(msg, msg_len, DS_EIO, "%s: cannot write", path);
}

static ds_status write_hf(const char *dir, const llama_model *m, const synthetic_vocab *v,
                          char *msg, size_t msg_len) {
    const llama_config *c = &m->config;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return ds_fail(msg, msg_len, DS_EIO, "%s: cannot create the folder", dir);
    cJSON *config = cJSON_CreateObject();
    cJSON_AddItemToObject(config, "architectures", cJSON_CreateString("LlamaForCausalLM"));
    cJSON_AddStringToObject(config, "model_type", "llama");
    cJSON_AddNumberToObject(config, "hidden_size", c->d_model);
    cJSON_AddNumberToObject(config, "intermediate_size", c->d_ff);
    cJSON_AddNumberToObject(config, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(config, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(config, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(config, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(config, "rms_norm_eps", c->rms_eps);
    cJSON_AddNumberToObject(config, "rope_theta", c->rope_theta);
    cJSON_AddNumberToObject(config, "max_position_embeddings", c->context_length);
    cJSON_AddNumberToObject(config, "vocab_size", c->vocab_size);
    cJSON_AddBoolToObject(config, "tie_word_embeddings", c->tied_embeddings);
    cJSON_AddStringToObject(config, "hidden_act", "silu");
    ds_status st = write_json(dir, "config.json", config, msg, msg_len);

    hf_tensor *t = malloc(sizeof *t * (size_t)(3 + 9 * c->n_layers));
    if (!t) return ds_fail(msg, msg_len, DS_ENOMEM, "out of memory");
    int n = 0;
    const int q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
#define HF_TENSOR(NAME, DATA, ROWS, COLS) (t[n++] = (hf_tensor){NAME, DATA, ROWS, COLS})
    HF_TENSOR("model.embed_tokens.weight", m->tok_embd, c->vocab_size, c->d_model);
    HF_TENSOR("model.norm.weight", m->output_norm, c->d_model, 0);
    if (!c->tied_embeddings) HF_TENSOR("lm_head.weight", m->output, c->vocab_size, c->d_model);
    for (int l = 0; l < c->n_layers; l++) {
        const llama_layer *L = &m->layers[l];
        struct {
            const char *suffix;
            const float *data;
            int rows, cols;
        } parts[] = {{"input_layernorm", L->attn_norm, c->d_model, 0},
                     {"self_attn.q_proj", L->wq, q, c->d_model},
                     {"self_attn.k_proj", L->wk, kv, c->d_model},
                     {"self_attn.v_proj", L->wv, kv, c->d_model},
                     {"self_attn.o_proj", L->wo, c->d_model, q},
                     {"post_attention_layernorm", L->ffn_norm, c->d_model, 0},
                     {"mlp.gate_proj", L->w_gate, c->d_ff, c->d_model},
                     {"mlp.up_proj", L->w_up, c->d_ff, c->d_model},
                     {"mlp.down_proj", L->w_down, c->d_model, c->d_ff}};
        for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
            t[n] = (hf_tensor){"", parts[i].data, parts[i].rows, parts[i].cols};
            snprintf(t[n].name, sizeof t[n].name, "model.layers.%d.%s.weight", l, parts[i].suffix);
            n++;
        }
    }
#undef HF_TENSOR
    if (st == DS_OK) st = write_safetensors(dir, t, n, msg, msg_len);
    free(t);

    /* tokenizer.json: byte-level BPE with SmolLM's pre-tokenizer, control tokens as added
     * tokens; tokenizer_config.json names bos/eos as the GGUF does. */
    cJSON *tok = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(tok, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab_json = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(tok, "added_tokens");
    for (int i = 0; i < v->n_tokens; i++) {
        cJSON_AddNumberToObject(vocab_json, v->tokens[i], i);
        if (v->types[i] != BPE_TOKEN_CONTROL) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", v->tokens[i]);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    for (int i = 0; i < v->n_merges; i++)
        cJSON_AddItemToArray(merges, cJSON_CreateString(v->merges[i]));
    cJSON *pre = cJSON_AddObjectToObject(tok, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "Sequence");
    cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
    cJSON *digits = cJSON_CreateObject(), *bytes = cJSON_CreateObject();
    cJSON_AddStringToObject(digits, "type", "Digits");
    cJSON_AddBoolToObject(digits, "individual_digits", 1);
    cJSON_AddStringToObject(bytes, "type", "ByteLevel");
    cJSON_AddBoolToObject(bytes, "add_prefix_space", 0);
    cJSON_AddBoolToObject(bytes, "use_regex", 1);
    cJSON_AddItemToArray(list, digits);
    cJSON_AddItemToArray(list, bytes);
    cJSON *decoder = cJSON_AddObjectToObject(tok, "decoder");
    cJSON_AddStringToObject(decoder, "type", "ByteLevel");
    if (st == DS_OK)
        st = write_json(dir, "tokenizer.json", tok, msg, msg_len);
    else
        cJSON_Delete(tok);
    cJSON *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(tc, "bos_token", v->tokens[SYNTHETIC_BOS_ID]);
    cJSON_AddStringToObject(tc, "eos_token", v->tokens[SYNTHETIC_EOS_ID]);
    cJSON_AddBoolToObject(tc, "add_bos_token", 0);
    if (st == DS_OK)
        st = write_json(dir, "tokenizer_config.json", tc, msg, msg_len);
    else
        cJSON_Delete(tc);
    return st;
}

static void usage(void) {
    fprintf(stderr, "usage: decoserve-mkmodel --out FILE.gguf [--hf DIR] [--shape ");
    for (const char *const *name = synthetic_shape_names; *name; name++)
        fprintf(stderr, "%s%s", name == synthetic_shape_names ? "" : "|", *name);
    fprintf(stderr,
            "] [--seed N] [--type f32|f16|bf16|q8_0|q4_0|q4_1]\n"
            "  --shape     default tiny; the Llama shapes are full size (8B in f32: 32 GB)\n"
            "  --hf DIR    also write the same weights (fp32) as a Hugging Face folder\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *out = NULL, *shape = "tiny", *type_name = "f32", *hf_dir = NULL;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc) usage();
        if (strcmp(argv[i], "--out") == 0)
            out = argv[++i];
        else if (strcmp(argv[i], "--hf") == 0)
            hf_dir = argv[++i];
        else if (strcmp(argv[i], "--shape") == 0)
            shape = argv[++i];
        else if (strcmp(argv[i], "--type") == 0)
            type_name = argv[++i];
        else if (strcmp(argv[i], "--seed") == 0)
            seed = strtoull(argv[++i], NULL, 10);
        else
            usage();
    }
    llama_model model = {0};
    gguf_ggml_type type;
    char msg[512];
    if (!out) usage();
    if (synthetic_shape(shape, &model.config, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "decoserve-mkmodel: %s\n", msg);
        return 1;
    }
    if (!parse_type(type_name, &type)) {
        fprintf(stderr, "decoserve-mkmodel: --type: expected f32, f16, bf16, q8_0, q4_0 or q4_1\n");
        return 1;
    }

    synthetic_vocab v;
    gguf_writer *w = NULL;
    ds_status st = synthetic_vocab_build(model.config.vocab_size, &v, msg, sizeof msg);
    if (!st && !(w = gguf_writer_create()))
        st = ds_fail(msg, sizeof msg, DS_ENOMEM, "out of memory");
    if (!st) st = llama_model_alloc(&model, msg, sizeof msg);
    if (!st) {
        synthetic_fill_weights(&model, seed);
        char name[96];
        snprintf(name, sizeof name, "decoserve random %s seed %llu", shape, seed);
        st = gguf_writer_add_str(w, "general.name", name, msg, sizeof msg);
    }
    if (!st) st = llama_gguf_add_model(w, &model, type, msg, sizeof msg);
    if (!st) st = add_tokenizer(w, &v, msg, sizeof msg);
    if (!st) st = gguf_writer_write(w, out, msg, sizeof msg);
    if (!st && hf_dir) st = write_hf(hf_dir, &model, &v, msg, sizeof msg);
    int vocab_size = model.config.vocab_size, n_merges = v.n_merges;
    gguf_writer_destroy(w);
    llama_model_free(&model);
    synthetic_vocab_free(&v);
    if (st) {
        fprintf(stderr, "decoserve-mkmodel: %s (%s)\n", msg, ds_status_str(st));
        return 1;
    }
    fprintf(stderr, "decoserve-mkmodel: wrote %s (%s, %s, vocab %d, %d merges)\n", out, shape,
            type_name, vocab_size, n_merges);
    return 0;
}
