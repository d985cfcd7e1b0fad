/* engine/loader/synthetic.c — the random-weight model without a file: shape table, vocabulary
 * learned by greedy BPE over a built-in English text, and the seeded weight fill. Moved out of
 * decoserve-mkmodel so the engine's --random-weights gets the same tokenizer and weights. */
#include "engine/loader/synthetic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"

/* ---- shapes ---- */

const char *const synthetic_shape_names[] = {
    "tiny", "smollm2-135m", "llama2-7b", "llama3-8b", "llama3.1-8b", "llama3-70b", NULL,
};

/* Indexed like synthetic_shape_names. vocab_size 0: the learned vocabulary. */
static const llama_config shape_configs[] = {
    {.architecture = "llama", /* tiny */
     .n_layers = 2,
     .d_model = 64,
     .n_heads = 4,
     .n_kv_heads = 2,
     .head_dim = 16,
     .d_ff = 128,
     .context_length = 256,
     .rms_eps = 1e-5f,
     .rope_theta = 10000.0f},
    {.architecture = "llama", /* smollm2-135m */
     .n_layers = 30,
     .d_model = 576,
     .n_heads = 9,
     .n_kv_heads = 3,
     .head_dim = 64,
     .d_ff = 1536,
     .vocab_size = 49152,
     .context_length = 8192,
     .rms_eps = 1e-5f,
     .rope_theta = 100000.0f,
     .tied_embeddings = 1},
    {.architecture = "llama", /* llama2-7b */
     .n_layers = 32,
     .d_model = 4096,
     .n_heads = 32,
     .n_kv_heads = 32,
     .head_dim = 128,
     .d_ff = 11008,
     .vocab_size = 32000,
     .context_length = 4096,
     .rms_eps = 1e-5f,
     .rope_theta = 10000.0f},
    {.architecture = "llama", /* llama3-8b */
     .n_layers = 32,
     .d_model = 4096,
     .n_heads = 32,
     .n_kv_heads = 8,
     .head_dim = 128,
     .d_ff = 14336,
     .vocab_size = 128256,
     .context_length = 8192,
     .rms_eps = 1e-5f,
     .rope_theta = 500000.0f},
    {.architecture = "llama", /* llama3.1-8b: Llama-3-8B's weights, 128k context by RoPE scaling */
     .n_layers = 32,
     .d_model = 4096,
     .n_heads = 32,
     .n_kv_heads = 8,
     .head_dim = 128,
     .d_ff = 14336,
     .vocab_size = 128256,
     .context_length = 131072,
     .rms_eps = 1e-5f,
     .rope_theta = 500000.0f,
     .rope_scaling = LLAMA_ROPE_LLAMA3,
     .rope_factor = 8.0f,
     .rope_low_freq_factor = 1.0f,
     .rope_high_freq_factor = 4.0f,
     .rope_original_context = 8192},
    {.architecture = "llama", /* llama3-70b */
     .n_layers = 80,
     .d_model = 8192,
     .n_heads = 64,
     .n_kv_heads = 8,
     .head_dim = 128,
     .d_ff = 28672,
     .vocab_size = 128256,
     .context_length = 8192,
     .rms_eps = 1e-5f,
     .rope_theta = 500000.0f},
};

#define N_SHAPES (sizeof shape_configs / sizeof shape_configs[0])
_Static_assert(N_SHAPES + 1 == sizeof synthetic_shape_names / sizeof synthetic_shape_names[0],
               "one config per shape name");

ds_status synthetic_shape(const char *name, llama_config *out, char *msg, size_t msg_len) {
    for (size_t i = 0; i < N_SHAPES; i++) {
        if (strcmp(name, synthetic_shape_names[i]) != 0) continue;
        *out = shape_configs[i];
        if (out->vocab_size > 0) return DS_OK;
        synthetic_vocab learned;
        ds_status st = synthetic_vocab_build(0, &learned, msg, msg_len);
        out->vocab_size = learned.n_tokens;
        synthetic_vocab_free(&learned);
        return st;
    }
    char known[128] = "";
    for (size_t i = 0; i < N_SHAPES; i++)
        snprintf(known + strlen(known), sizeof known - strlen(known), "%s%s", i ? ", " : "",
                 synthetic_shape_names[i]);
    return ds_fail(msg, msg_len, DS_EINVAL, "shape '%s': expected one of %s", name, known);
}

/* ---- vocabulary ---- */

#define MAX_MERGES 400
#define N_CONTROL  3
/* Control + byte tokens + one new token per merge at most. */
#define MAX_LEARNED (N_CONTROL + 256 + MAX_MERGES)

/* The text the merges are learned from. */
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

/* Appends a copy of text; the arrays have room (synthetic_vocab_build sizes them). */
static ds_status vocab_add(synthetic_vocab *v, const char *text, int32_t type) {
    char *copy = strdup(text);
    if (!copy) return DS_ENOMEM;
    v->tokens[v->n_tokens] = copy;
    v->types[v->n_tokens] = type;
    v->n_tokens++;
    return DS_OK;
}

static int vocab_find(const synthetic_vocab *v, const char *text) {
    for (int i = 0; i < v->n_tokens; i++)
        if (strcmp(v->tokens[i], text) == 0) return i;
    return -1;
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

/* A distinct pre-token of the corpus as token ids, rewritten in place as merges apply. */
typedef struct word {
    int *ids;
    int len;
    int count;
} word;

static void free_words(word *words, int n_words) {
    for (int w = 0; w < n_words; w++)
        free(words[w].ids);
    free(words);
}

static int char_class(unsigned char c) { /* 0 space, 1 letter, 2 digit, 3 other */
    if (c == ' ' || c == '\n' || c == '\t') return 0;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    if (c >= '0' && c <= '9') return 2;
    return 3;
}

/* GPT-2-like pre-tokenization: " ?letters", " ?digit", " ?punctuation", whitespace runs. Each
 * distinct word once, with its count, as byte token ids (byte_base + byte). */
static ds_status split_words(const char *text, int byte_base, word **out, int *n_out) {
    int n = 0, cap = 256;
    word *words = malloc((size_t)cap * sizeof *words);
    if (!words) return DS_ENOMEM;
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
            word *grown = realloc(words, 2 * (size_t)cap * sizeof *words);
            if (!grown) {
                free_words(words, n);
                return DS_ENOMEM;
            }
            words = grown;
            cap *= 2;
        }
        words[n].ids = malloc((size_t)wlen * sizeof(int));
        if (!words[n].ids) {
            free_words(words, n);
            return DS_ENOMEM;
        }
        for (int k = 0; k < wlen; k++)
            words[n].ids[k] = byte_base + (unsigned char)text[start + (size_t)k];
        words[n].len = wlen;
        words[n].count = 1;
        n++;
    }
    *out = words;
    *n_out = n;
    return DS_OK;
}

typedef struct pair_count {
    int64_t key; /* a * 2^32 + b */
    int count;
} pair_count;

static int cmp_pair(const void *x, const void *y) {
    int64_t a = ((const pair_count *)x)->key, b = ((const pair_count *)y)->key;
    return (a > b) - (a < b);
}

/* Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest ids first), until
 * MAX_MERGES or no pair occurs twice. Each merge adds its token unless the vocabulary has it. */
static ds_status learn_merges(synthetic_vocab *v, int byte_base) {
    word *words;
    int n_words;
    ds_status st = split_words(corpus, byte_base, &words, &n_words);
    if (st) return st;
    int total = 0;
    for (int w = 0; w < n_words; w++)
        total += words[w].len;
    pair_count *pairs = malloc((size_t)total * sizeof *pairs);
    if (!pairs) st = DS_ENOMEM;
    while (!st && v->n_merges < MAX_MERGES) {
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
        char *merged = malloc(la + lb + 1), *rule = malloc(la + lb + 2);
        if (!merged || !rule) {
            free(merged);
            free(rule);
            st = DS_ENOMEM;
            break;
        }
        snprintf(merged, la + lb + 1, "%s%s", v->tokens[a], v->tokens[b]);
        snprintf(rule, la + lb + 2, "%s %s", v->tokens[a], v->tokens[b]);
        int id = vocab_find(v, merged);
        if (id < 0) {
            id = v->n_tokens;
            st = vocab_add(v, merged, BPE_TOKEN_NORMAL);
        }
        free(merged);
        if (st) {
            free(rule);
            break;
        }
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
    free_words(words, n_words);
    free(pairs);
    return st;
}

ds_status synthetic_vocab_build(int vocab_size, synthetic_vocab *out, char *msg, size_t msg_len) {
    static const char *const controls[N_CONTROL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    memset(out, 0, sizeof *out);
    if (vocab_size < 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "synthetic vocabulary: vocab_size = %d: must not be negative", vocab_size);
    size_t cap = vocab_size > MAX_LEARNED ? (size_t)vocab_size : MAX_LEARNED;
    out->tokens = malloc(cap * sizeof *out->tokens);
    out->types = malloc(cap * sizeof *out->types);
    out->merges = malloc(MAX_MERGES * sizeof *out->merges);
    ds_status st = out->tokens && out->types && out->merges ? DS_OK : DS_ENOMEM;
    for (int i = 0; !st && i < N_CONTROL; i++)
        st = vocab_add(out, controls[i], BPE_TOKEN_CONTROL);
    int byte_base = out->n_tokens;
    for (int b = 0; !st && b < 256; b++) {
        char text[3];
        byte_token(b, text);
        st = vocab_add(out, text, BPE_TOKEN_NORMAL);
    }
    if (!st) st = learn_merges(out, byte_base);
    if (!st && vocab_size > 0 && vocab_size < out->n_tokens)
        st = ds_fail(msg, msg_len, DS_EINVAL,
                     "synthetic vocabulary: vocab_size = %d is smaller than the %d learned tokens",
                     vocab_size, out->n_tokens);
    for (int32_t id = out->n_tokens; !st && id < vocab_size; id++) {
        char name[32];
        snprintf(name, sizeof name, "<|unused_%d|>", id);
        st = vocab_add(out, name, BPE_TOKEN_UNUSED);
    }
    if (st == DS_ENOMEM)
        ds_fail(msg, msg_len, st, "synthetic vocabulary of %d tokens: out of memory", vocab_size);
    if (st) synthetic_vocab_free(out);
    return st;
}

void synthetic_vocab_free(synthetic_vocab *v) {
    if (!v) return;
    for (int32_t i = 0; i < v->n_tokens; i++)
        free(v->tokens[i]);
    for (int32_t i = 0; i < v->n_merges; i++)
        free(v->merges[i]);
    free(v->tokens);
    free(v->types);
    free(v->merges);
    memset(v, 0, sizeof *v);
}

ds_status synthetic_tokenizer(int vocab_size, bpe_tokenizer **out, char *msg, size_t msg_len) {
    *out = NULL;
    synthetic_vocab v;
    ds_status st = synthetic_vocab_build(vocab_size, &v, msg, msg_len);
    if (st) return st;
    bpe_spec spec = {.n_tokens = v.n_tokens,
                     .tokens = (const char *const *)v.tokens,
                     .token_types = v.types,
                     .n_merges = v.n_merges,
                     .merges = (const char *const *)v.merges,
                     .pre = SYNTHETIC_PRE,
                     .bos_id = SYNTHETIC_BOS_ID,
                     .eos_id = SYNTHETIC_EOS_ID,
                     .unk_id = -1};
    st = bpe_create(&spec, out, msg, msg_len);
    synthetic_vocab_free(&v);
    return st;
}

/* ---- weights ---- */

static void fill_normal(ds_rng *rng, float *x, size_t n, float std) {
    for (size_t i = 0; i < n; i++)
        x[i] = std * ds_rng_gauss(rng);
}

static void fill_const(float *x, size_t n, float v) {
    for (size_t i = 0; i < n; i++)
        x[i] = v;
}

void synthetic_fill_weights(llama_model *m, uint64_t seed) {
    const llama_config *c = &m->config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff,
           v = (size_t)c->vocab_size;
    const float std = 0.02f;
    ds_rng rng = {seed};
    fill_normal(&rng, m->tok_embd, v * d, std);
    fill_const(m->output_norm, d, 1.0f);
    if (!c->tied_embeddings) fill_normal(&rng, m->output, v * d, std);
    for (int l = 0; l < c->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        fill_const(L->attn_norm, d, 1.0f);
        fill_normal(&rng, L->wq, q * d, std);
        fill_normal(&rng, L->wk, kv * d, std);
        fill_normal(&rng, L->wv, kv * d, std);
        fill_normal(&rng, L->wo, d * q, std);
        fill_const(L->ffn_norm, d, 1.0f);
        fill_normal(&rng, L->w_gate, ff * d, std);
        fill_normal(&rng, L->w_up, ff * d, std);
        fill_normal(&rng, L->w_down, d * ff, std);
    }
}
