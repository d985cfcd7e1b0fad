/* tools/mkmodel/mkmodel.c — decoserve-mkmodel: writes a random-weight Llama GGUF (weights ~
 * N(0, 0.02), norms 1) with a complete GPT-2 style byte-level BPE tokenizer section, so unit tests
 * and throughput runs need no downloaded model. The tokenizer is 3 control tokens, the 256
 * byte tokens (GPT-2's bytes_to_unicode alphabet) and merges learned greedily from a small
 * built-in English text. Deterministic for a given --seed. --hf DIR also writes the same
 * weights as a Hugging Face folder (config.json, fp32 model.safetensors, tokenizer.json), so the
 * two loaders can be checked against each other.
 *   decoserve-mkmodel --out FILE.gguf [--hf DIR] [--shape tiny|smollm2-135m] [--seed N]
 *                     [--type f32|f16|bf16|q8_0|q4_0|q4_1] */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "common/rng.h"
#include "common/status.h"
#include "engine/loader/gguf_writer.h"
#include "engine/loader/llama_gguf.h"
#include "engine/loader/model.h"

#define MAX_MERGES 400

static const char corpus[] =
    "The river wound slowly through the valley, past the old mill and the orchards where the "
    "farmers worked from morning until the light began to fade. In the spring the water rose "
    "and the children of the village would stand on the stone bridge to watch it carry branches "
    "and leaves toward the sea. Nobody in the village could remember a time when the river had "
    "not been there, and most of them had never wondered where it came from.\n"
    "One summer a young woman named Clara decided that she would follow the river to its "
    "source. She packed bread, cheese, a map that her grandfather had drawn, and a small "
    "notebook in which she wanted to write down everything that she would see. Her mother "
    "thought that the idea was foolish, but her father only smiled and told her to be careful "
    "and to come back before the first snow.\n"
    "For the first three days the walking was easy. The path followed the water through fields "
    "and small forests, and every evening she found a farm where the people were happy to give "
    "her a place to sleep in exchange for news from the lower valley. She wrote about the birds, "
    "the flowers, the shape of the hills and the way the river changed its color in the "
    "afternoon. On the fourth day the path began to climb, and the river became narrower, "
    "faster and louder.\n"
    "The mountains were colder than she had expected. At night she made a fire from dry wood and "
    "listened to the water running over the rocks. She thought about her home, about the bridge "
    "and the mill, and about the people who had helped her along the way. She understood that "
    "the river connected all of them, the farmers, the children and the travelers, and that "
    "every one of them knew only a small part of it.\n"
    "On the seventh day she reached a small lake high in the mountains, surrounded by snow and "
    "grey stone. The water was clear and very still. There was no great spring and no hidden "
    "cave, only the melting snow and the rain that fell on the high slopes. Clara sat on a rock "
    "for a long time and wrote in her notebook that the source of the river was not one place "
    "but many small ones, and that it was the same with most things that mattered.\n"
    "When she returned to the village she told the children what she had found. Some of them "
    "were disappointed, because they had hoped for a story about a dragon or a magic well. But "
    "the next spring, when the water rose again, they stood on the bridge and talked about the "
    "lake, the snow and the rain, and about the long way that every drop had traveled to reach "
    "them. 1, 2, 3, 4, 5, 6, 7, 8, 9, 10: the numbers of the days were written in the notebook "
    "too, together with questions, answers and a few simple drawings.\n"
    "Years later, when Clara was old and her own grandchildren asked her about the journey, she "
    "would take the notebook from the shelf and read to them. She read about the farmer who had "
    "given her warm milk, about the storm that kept her under a tree for a whole afternoon, and "
    "about the evening when she first saw the lake shining between the peaks. The children "
    "listened without moving, and when she finished they always asked the same question: could "
    "they go there too? She always gave the same answer. Of course they could, she said, but "
    "they should remember that the most interesting part of the journey was not the end of it. "
    "It was the people, the weather, the small surprises and the things they would learn about "
    "themselves while walking. Then she would close the notebook, put it back on the shelf, and "
    "tell them that it was time for dinner.\n"
    "The mill is still standing today, although it no longer grinds any grain. The bridge has "
    "been repaired many times, and the orchards have changed owners, but the river is the same. "
    "Every spring the water rises, every summer it grows quiet, and every autumn the leaves float "
    "down toward the sea, exactly as they did when Clara was a child.\n";

/* ---- random numbers ---- */

static ds_rng g_rng;

static void fill_normal(float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * ds_rng_gauss(&g_rng);
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

/* ---- tokenizer ---- */

typedef struct vocab {
    char **tokens;
    int32_t *types;
    int n_tokens, cap;
    char **merges;
    int n_merges;
} vocab;

static void die(const char *what) {
    fprintf(stderr, "decoserve-mkmodel: %s\n", what);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static char *xstrdup(const char *s) {
    char *c = xmalloc(strlen(s) + 1);
    strcpy(c, s);
    return c;
}

static int vocab_find(const vocab *v, const char *s) {
    for (int i = 0; i < v->n_tokens; i++)
        if (strcmp(v->tokens[i], s) == 0) return i;
    return -1;
}

static int vocab_add(vocab *v, const char *s, int32_t type) {
    if (v->n_tokens == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 512;
        v->tokens = realloc(v->tokens, (size_t)v->cap * sizeof *v->tokens);
        v->types = realloc(v->types, (size_t)v->cap * sizeof *v->types);
        if (!v->tokens || !v->types) die("out of memory");
    }
    v->tokens[v->n_tokens] = xstrdup(s);
    v->types[v->n_tokens] = type;
    return v->n_tokens++;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 to U+0100.. */
static void byte_token(int b, char out[3]) {
    int printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    int cp = b;
    if (!printable) {
        int k = 0;
        for (int c = 0; c < b; c++)
            if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff)))
                k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

typedef struct word {
    int *ids;
    int len;
    int count;
} word;

static int char_class(unsigned char c) { /* 0 space, 1 letter, 2 digit, 3 other */
    if (c == ' ' || c == '\n' || c == '\t') return 0;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    if (c >= '0' && c <= '9') return 2;
    return 3;
}

/* GPT-2-like pre-tokenization: " ?letters", " ?digit", " ?punctuation", whitespace runs. */
static int split_words(const char *text, word **out, int byte_base) {
    int n = 0, cap = 256;
    word *words = xmalloc((size_t)cap * sizeof *words);
    size_t len = strlen(text);
    for (size_t i = 0; i < len;) {
        size_t start = i;
        if (text[i] == ' ' && i + 1 < len && char_class((unsigned char)text[i + 1]))
            i++; /* a single leading space belongs to the next word */
        int cls = char_class((unsigned char)text[i]);
        if (cls == 2) {
            i++;
        } else if (cls == 0) { /* whitespace, minus a last space that starts a word */
            while (i < len && char_class((unsigned char)text[i]) == 0) {
                if (i > start && text[i] == ' ' && i + 1 < len &&
                    char_class((unsigned char)text[i + 1]))
                    break;
                i++;
            }
        } else {
            while (i < len && char_class((unsigned char)text[i]) == cls)
                i++;
        }
        int wlen = (int)(i - start);
        int found = -1;
        for (int w = 0; w < n && found < 0; w++) {
            if (words[w].len != wlen) continue;
            int same = 1;
            for (int k = 0; k < wlen && same; k++)
                same = words[w].ids[k] == byte_base + (unsigned char)text[start + (size_t)k];
            if (same) found = w;
        }
        if (found >= 0) {
            words[found].count++;
            continue;
        }
        if (n == cap) {
            cap *= 2;
            words = realloc(words, (size_t)cap * sizeof *words);
            if (!words) die("out of memory");
        }
        words[n].ids = xmalloc((size_t)wlen * sizeof(int));
        for (int k = 0; k < wlen; k++)
            words[n].ids[k] = byte_base + (unsigned char)text[start + (size_t)k];
        words[n].len = wlen;
        words[n].count = 1;
        n++;
    }
    *out = words;
    return n;
}

typedef struct pair_count {
    int64_t key; /* a * 2^32 + b */
    int count;
} pair_count;

static int cmp_pair(const void *x, const void *y) {
    int64_t a = ((const pair_count *)x)->key, b = ((const pair_count *)y)->key;
    return (a > b) - (a < b);
}

/* Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest ids first). */
static void learn_merges(vocab *v, int byte_base) {
    word *words;
    int n_words = split_words(corpus, &words, byte_base);
    int total = 0;
    for (int w = 0; w < n_words; w++)
        total += words[w].len;
    pair_count *pairs = xmalloc((size_t)total * sizeof *pairs);
    v->merges = xmalloc(MAX_MERGES * sizeof *v->merges);
    while (v->n_merges < MAX_MERGES) {
        int n_pairs = 0;
        for (int w = 0; w < n_words; w++)
            for (int k = 0; k + 1 < words[w].len; k++)
                pairs[n_pairs++] =
                    (pair_count){((int64_t)words[w].ids[k] << 32) | (int64_t)words[w].ids[k + 1],
                                 words[w].count};
        qsort(pairs, (size_t)n_pairs, sizeof *pairs, cmp_pair);
        int64_t best = -1;
        int best_count = 1; /* a merge must occur at least twice */
        for (int i = 0; i < n_pairs;) {
            int j = i, c = 0;
            for (; j < n_pairs && pairs[j].key == pairs[i].key; j++)
                c += pairs[j].count;
            if (c > best_count) {
                best_count = c;
                best = pairs[i].key;
            }
            i = j;
        }
        if (best < 0) break;
        int a = (int)(best >> 32), b = (int)(best & 0xffffffff);
        size_t la = strlen(v->tokens[a]), lb = strlen(v->tokens[b]);
        char *merged = xmalloc(la + lb + 1), *rule = xmalloc(la + lb + 2);
        sprintf(merged, "%s%s", v->tokens[a], v->tokens[b]);
        sprintf(rule, "%s %s", v->tokens[a], v->tokens[b]);
        int id = vocab_find(v, merged);
        if (id < 0) id = vocab_add(v, merged, 1);
        free(merged);
        v->merges[v->n_merges++] = rule;
        for (int w = 0; w < n_words; w++) {
            int out = 0;
            for (int k = 0; k < words[w].len; k++) {
                if (k + 1 < words[w].len && words[w].ids[k] == a && words[w].ids[k + 1] == b) {
                    words[w].ids[out++] = id;
                    k++;
                } else {
                    words[w].ids[out++] = words[w].ids[k];
                }
            }
            words[w].len = out;
        }
    }
    for (int w = 0; w < n_words; w++)
        free(words[w].ids);
    free(words);
    free(pairs);
}

static void build_vocab(vocab *v) {
    static const char *const specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    for (int i = 0; i < 3; i++)
        vocab_add(v, specials[i], 3); /* control */
    int byte_base = v->n_tokens;
    for (int b = 0; b < 256; b++) {
        char s[3];
        byte_token(b, s);
        vocab_add(v, s, 1);
    }
    learn_merges(v, byte_base);
}

/* ---- model ---- */

static int parse_shape(const char *shape, llama_config *c) {
    memset(c, 0, sizeof *c);
    snprintf(c->architecture, sizeof c->architecture, "llama");
    if (strcmp(shape, "tiny") == 0) {
        *c = (llama_config){.n_layers = 2,
                            .d_model = 64,
                            .n_heads = 4,
                            .n_kv_heads = 2,
                            .head_dim = 16,
                            .d_ff = 128,
                            .context_length = 256,
                            .rms_eps = 1e-5f,
                            .rope_theta = 10000.0f,
                            .tied_embeddings = 0};
    } else if (strcmp(shape, "smollm2-135m") == 0) {
        *c = (llama_config){.n_layers = 30,
                            .d_model = 576,
                            .n_heads = 9,
                            .n_kv_heads = 3,
                            .head_dim = 64,
                            .d_ff = 1536,
                            .context_length = 8192,
                            .rms_eps = 1e-5f,
                            .rope_theta = 100000.0f,
                            .vocab_size = 49152,
                            .tied_embeddings = 1};
    } else {
        return 0;
    }
    snprintf(c->architecture, sizeof c->architecture, "llama");
    return 1;
}

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

static void fill_weights(llama_model *m) {
    const llama_config *c = &m->config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff,
           v = (size_t)c->vocab_size;
    const float std = 0.02f;
    fill_normal(m->tok_embd, v * d, std);
    fill_const(m->output_norm, d, 1.0f);
    if (!c->tied_embeddings) fill_normal(m->output, v * d, std);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        fill_const(L->attn_norm, d, 1.0f);
        fill_normal(L->wq, q * d, std);
        fill_normal(L->wk, kv * d, std);
        fill_normal(L->wv, kv * d, std);
        fill_normal(L->wo, d * q, std);
        fill_const(L->ffn_norm, d, 1.0f);
        fill_normal(L->w_gate, ff * d, std);
        fill_normal(L->w_up, ff * d, std);
        fill_normal(L->w_down, d * ff, std);
    }
}

static ds_status add_tokenizer(gguf_writer *w, const vocab *v, char *msg, size_t msg_len) {
    static const char chat_template[] =
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\\n' }}{% endif %}";
    ds_status st;
    if ((st = gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2", msg, msg_len)) ||
        (st = gguf_writer_add_str(w, "tokenizer.ggml.pre", "smollm", msg, msg_len)) ||
        (st = gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->tokens,
                                      NULL, (uint64_t)v->n_tokens, msg, msg_len)) ||
        (st = gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, v->types,
                                  (uint64_t)v->n_tokens, msg, msg_len)) ||
        (st = gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", (const char *const *)v->merges,
                                      NULL, (uint64_t)v->n_merges, msg, msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1, msg, msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2, msg, msg_len)) ||
        (st = gguf_writer_add_u32(w, "tokenizer.ggml.padding_token_id", 2, msg, msg_len)) ||
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

static ds_status write_hf(const char *dir, const llama_model *m, const vocab *v, char *msg,
                          size_t msg_len) {
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
     * tokens; tokenizer_config.json names bos/eos as the GGUF does (ids 1 and 2). */
    cJSON *tok = cJSON_CreateObject(), *model = cJSON_AddObjectToObject(tok, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab_json = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(tok, "added_tokens");
    for (int i = 0; i < v->n_tokens; i++) {
        cJSON_AddNumberToObject(vocab_json, v->tokens[i], i);
        if (v->types[i] != 3) continue;
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
    cJSON_AddStringToObject(tc, "bos_token", v->tokens[1]);
    cJSON_AddStringToObject(tc, "eos_token", v->tokens[2]);
    cJSON_AddBoolToObject(tc, "add_bos_token", 0);
    if (st == DS_OK)
        st = write_json(dir, "tokenizer_config.json", tc, msg, msg_len);
    else
        cJSON_Delete(tc);
    return st;
}

static void usage(void) {
    fprintf(stderr,
            "usage: decoserve-mkmodel --out FILE.gguf [--hf DIR] [--shape tiny|smollm2-135m] "
            "[--seed N] [--type f32|f16|bf16|q8_0|q4_0|q4_1]\n"
            "  --hf DIR  also write the same weights (fp32) as a Hugging Face folder\n");
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
    if (!out) usage();
    if (!parse_shape(shape, &model.config)) die("--shape: expected tiny or smollm2-135m");
    if (!parse_type(type_name, &type)) die("--type: expected f32, f16, bf16, q8_0, q4_0 or q4_1");
    g_rng.state = seed;

    vocab v = {0};
    build_vocab(&v);
    if (model.config.vocab_size == 0) model.config.vocab_size = v.n_tokens;
    for (int i = v.n_tokens; i < model.config.vocab_size; i++) { /* real-shape vocab: filler */
        char name[32];
        snprintf(name, sizeof name, "<|unused_%d|>", i);
        vocab_add(&v, name, 5);
    }

    char msg[512];
    gguf_writer *w = gguf_writer_create();
    ds_status st = w ? DS_OK : DS_ENOMEM;
    if (!st) st = llama_config_validate(&model.config, msg, sizeof msg);
    if (!st) st = llama_model_alloc(&model, msg, sizeof msg);
    if (!st) {
        fill_weights(&model);
        char name[96];
        snprintf(name, sizeof name, "decoserve random %s seed %llu", shape, seed);
        st = gguf_writer_add_str(w, "general.name", name, msg, sizeof msg);
    }
    if (!st) st = llama_gguf_add_model(w, &model, type, msg, sizeof msg);
    if (!st) st = add_tokenizer(w, &v, msg, sizeof msg);
    if (!st) st = gguf_writer_write(w, out, msg, sizeof msg);
    if (!st && hf_dir) st = write_hf(hf_dir, &model, &v, msg, sizeof msg);
    if (st == DS_ENOMEM && !w) snprintf(msg, sizeof msg, "out of memory");
    int vocab_size = model.config.vocab_size;
    gguf_writer_destroy(w);
    llama_model_free(&model);
    for (int i = 0; i < v.n_tokens; i++)
        free(v.tokens[i]);
    for (int i = 0; i < v.n_merges; i++)
        free(v.merges[i]);
    free(v.tokens);
    free(v.types);
    free(v.merges);
    if (st) {
        fprintf(stderr, "decoserve-mkmodel: %s (%s)\n", msg, ds_status_str(st));
        return 1;
    }
    fprintf(stderr, "decoserve-mkmodel: wrote %s (%s, %s, vocab %d, %d merges)\n", out, shape,
            type_name, vocab_size, v.n_merges);
    return 0;
}
