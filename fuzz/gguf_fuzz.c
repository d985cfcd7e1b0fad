/* fuzz/gguf_fuzz.c — a GGUF file as a user hands it to `--model`: gguf_open, every metadata value
 * through its getter, the small tensors dequantized, then what the loader builds from it: the
 * Llama configuration, the tokenizer from tokenizer.ggml.* (encoding and decoding a text) and
 * the whole model. */
#include <stdlib.h>
#include <string.h>

#include "engine/loader/gguf.h"
#include "engine/loader/llama_gguf.h"
#include "engine/tokenizer/bpe_gguf.h"
#include "fuzz/fuzz_input.h"
#include "fuzz/tokenize_text.h"

enum { MAX_DEQUANT = 1 << 16 };

static void read_metadata(const gguf_file *f) {
    char msg[256];
    for (int64_t i = 0; i < gguf_n_kv(f); i++) {
        const char *key = gguf_kv_key(f, i);
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        float f32;
        int b;
        const char *str;
        size_t len;
        gguf_get_u32(f, key, &u32, msg, sizeof msg);
        gguf_get_i32(f, key, &i32, msg, sizeof msg);
        gguf_get_u64(f, key, &u64, msg, sizeof msg);
        gguf_get_f32(f, key, &f32, msg, sizeof msg);
        gguf_get_bool(f, key, &b, msg, sizeof msg);
        gguf_get_str(f, key, &str, &len, msg, sizeof msg);
        gguf_type elem;
        uint64_t n;
        if (gguf_get_arr_info(f, key, &elem, &n, msg, sizeof msg) != DS_OK || n > MAX_DEQUANT)
            continue;
        gguf_str s;
        if (n > 0) gguf_get_arr_str(f, key, n - 1, &s, msg, sizeof msg);
        float *fs = malloc((n + 1) * sizeof *fs);
        int32_t *is = malloc((n + 1) * sizeof *is);
        if (fs && is) {
            gguf_get_arr_f32(f, key, fs, n, msg, sizeof msg);
            gguf_get_arr_i32(f, key, is, n, msg, sizeof msg);
        }
        free(fs);
        free(is);
    }
}

static void read_tensors(const gguf_file *f) {
    for (int64_t i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->n_elements > MAX_DEQUANT) continue;
        float *dst = malloc((size_t)(t->n_elements + 1) * sizeof *dst);
        if (dst) gguf_dequantize(t->type, t->data, dst, t->n_elements);
        free(dst);
    }
}

static void tokenize(const gguf_file *f) {
    bpe_tokenizer *tok;
    char msg[256];
    if (bpe_load_gguf(f, &tok, msg, sizeof msg) != DS_OK) return;
    fuzz_tokenize_text(tok);
    bpe_destroy(tok);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("model.gguf", data, size);
    gguf_file *f;
    char msg[512];
    if (gguf_open(path, &f, msg, sizeof msg) != DS_OK) return 0;
    read_metadata(f);
    read_tensors(f);
    llama_config config;
    llama_config_from_gguf(f, &config, msg, sizeof msg);
    tokenize(f);
    llama_model model;
    memset(&model, 0, sizeof model);
    if (llama_model_from_gguf(f, &model, msg, sizeof msg) == DS_OK) llama_model_free(&model);
    gguf_close(f);
    return 0;
}
