/* engine/tokenizer/bpe_gguf.c — maps GGUF tokenizer metadata onto bpe_spec. */
#include "engine/tokenizer/bpe_gguf.h"

#include <stdlib.h>
#include <string.h>

/* Optional integer id key: -1 when absent. */
static ds_status optional_id(const gguf_file *f, const char *key, int32_t *out, char *msg,
                             size_t msg_len) {
    uint32_t v;
    *out = -1;
    ds_status st = gguf_get_u32(f, key, &v, msg, msg_len);
    if (st == DS_ENOTFOUND) return DS_OK;
    if (st != DS_OK) return st;
    *out = (int32_t)v;
    return DS_OK;
}

/* A string array as pointer/length pairs into the mapped file. */
static ds_status string_array(const gguf_file *f, const char *key, const char ***ptrs,
                              size_t **lens, uint64_t *n, char *msg, size_t msg_len) {
    const gguf_array *arr;
    ds_status st = gguf_get_arr(f, key, &arr, msg, msg_len);
    if (st != DS_OK) return st;
    if (arr->elem_type != GGUF_TYPE_STRING || arr->n > INT32_MAX)
        return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: key %s: expected an array of strings",
                       gguf_path(f), key);
    *n = arr->n;
    *ptrs = malloc((arr->n ? arr->n : 1) * sizeof **ptrs);
    *lens = malloc((arr->n ? arr->n : 1) * sizeof **lens);
    if (!*ptrs || !*lens) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", key);
    for (uint64_t i = 0; i < arr->n; i++) {
        (*ptrs)[i] = arr->strs[i].ptr;
        (*lens)[i] = (size_t)arr->strs[i].len;
    }
    return DS_OK;
}

ds_status bpe_load_gguf(const gguf_file *f, bpe_tokenizer **out, char *msg, size_t msg_len) {
    *out = NULL;
    const char *model = NULL;
    ds_status st = gguf_get_str(f, "tokenizer.ggml.model", &model, NULL, msg, msg_len);
    if (st != DS_OK) return st;
    if (strcmp(model, "gpt2"))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: key tokenizer.ggml.model = '%s': only byte-level BPE ('gpt2') is "
                       "supported",
                       gguf_path(f), model);
    bpe_spec spec = {0};
    const char **tokens = NULL, **merges = NULL;
    size_t *token_lens = NULL, *merge_lens = NULL;
    int32_t *types = NULL;
    uint64_t n_tokens = 0, n_merges = 0;
    st = string_array(f, "tokenizer.ggml.tokens", &tokens, &token_lens, &n_tokens, msg, msg_len);
    if (st == DS_OK)
        st =
            string_array(f, "tokenizer.ggml.merges", &merges, &merge_lens, &n_merges, msg, msg_len);
    if (st == DS_OK && gguf_find_key(f, "tokenizer.ggml.token_type") >= 0) {
        types = malloc((n_tokens ? n_tokens : 1) * sizeof *types);
        st = types ? gguf_get_arr_i32(f, "tokenizer.ggml.token_type", types, n_tokens, msg, msg_len)
                   : ds_fail(msg, msg_len, DS_ENOMEM, "token types: out of memory");
    }
    const char *pre = "gpt2";
    if (st == DS_OK && gguf_find_key(f, "tokenizer.ggml.pre") >= 0)
        st = gguf_get_str(f, "tokenizer.ggml.pre", &pre, NULL, msg, msg_len);
    int add_bos = 0;
    if (st == DS_OK && gguf_find_key(f, "tokenizer.ggml.add_bos_token") >= 0)
        st = gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &add_bos, msg, msg_len);
    if (st == DS_OK) st = optional_id(f, "tokenizer.ggml.bos_token_id", &spec.bos_id, msg, msg_len);
    if (st == DS_OK) st = optional_id(f, "tokenizer.ggml.eos_token_id", &spec.eos_id, msg, msg_len);
    if (st == DS_OK)
        st = optional_id(f, "tokenizer.ggml.unknown_token_id", &spec.unk_id, msg, msg_len);
    if (st == DS_OK) {
        spec.n_tokens = (int32_t)n_tokens;
        spec.tokens = tokens;
        spec.token_lens = token_lens;
        spec.token_types = types;
        spec.n_merges = (int32_t)n_merges;
        spec.merges = merges;
        spec.merge_lens = merge_lens;
        spec.pre = pre;
        spec.add_bos = add_bos != 0;
        /* Llama-3's tokenizer emits a pre-token whole when it is in the vocabulary; GGUF does not
         * store the flag, llama.cpp keys it on the pre-tokenizer name as well. */
        spec.ignore_merges =
            !strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama-v3");
        char inner[256];
        st = bpe_create(&spec, out, inner, sizeof inner);
        if (st != DS_OK) ds_fail(msg, msg_len, st, "%s: tokenizer: %s", gguf_path(f), inner);
    }
    free(tokens), free(token_lens), free(merges), free(merge_lens), free(types);
    return st;
}
