/* engine/model_files.c — GGUF file or HF folder -> llama_model + tokenizer. */
#include "engine/model_files.h"

#include <stdio.h>
#include <sys/stat.h>

#include "engine/loader/gguf.h"
#include "engine/loader/llama_gguf.h"
#include "engine/loader/llama_hf.h"
#include "engine/tokenizer/bpe_gguf.h"

ds_status model_files_load(const char *path, llama_model *model, bpe_tokenizer **tokenizer,
                           char *msg, size_t msg_len) {
    *tokenizer = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: no such file or folder", path);
    ds_status st;
    if (S_ISDIR(sb.st_mode)) {
        char json[4096];
        snprintf(json, sizeof json, "%s/tokenizer.json", path);
        st = llama_model_load_hf(path, model, msg, msg_len);
        if (st == DS_OK) {
            st = bpe_load_tokenizer_json(json, tokenizer, msg, msg_len);
            if (st != DS_OK) llama_model_free(model);
        }
        return st;
    }
    gguf_file *file = NULL;
    st = gguf_open(path, &file, msg, msg_len);
    if (st == DS_OK) st = llama_model_from_gguf(file, model, msg, msg_len);
    if (st == DS_OK) {
        st = bpe_load_gguf(file, tokenizer, msg, msg_len);
        if (st != DS_OK) llama_model_free(model);
    }
    gguf_close(file);
    return st;
}
