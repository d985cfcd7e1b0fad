/* engine/model_files.c — GGUF file or HF folder -> llama_model + tokenizer. */
#include "engine/model_files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "common/file.h"

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

ds_status model_files_chat_template(const char *path, char **out, char *msg, size_t msg_len) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return ds_fail(msg, msg_len, DS_ENOTFOUND, "%s: no such file or folder", path);
    if (S_ISDIR(sb.st_mode)) {
        char json_path[4096];
        snprintf(json_path, sizeof json_path, "%s/tokenizer_config.json", path);
        if (stat(json_path, &sb) != 0) return DS_OK; /* optional in a checkpoint */
        cJSON *config = NULL;
        ds_status st = ds_read_json(json_path, (size_t)64 << 20, &config, msg, msg_len);
        if (st != DS_OK) return st;
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(config, "chat_template");
        if (cJSON_IsString(t)) *out = strdup(t->valuestring);
        cJSON_Delete(config);
        return DS_OK;
    }
    gguf_file *file = NULL;
    ds_status st = gguf_open(path, &file, msg, msg_len);
    if (st != DS_OK) return st;
    const char *text;
    size_t len;
    if (gguf_get_str(file, "tokenizer.chat_template", &text, &len, NULL, 0) == DS_OK)
        *out = strndup(text, len);
    gguf_close(file);
    return DS_OK;
}
