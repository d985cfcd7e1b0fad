/* engine/model_files.h — opens what a user points --model at: a GGUF file (weights and
 * tokenizer in one), or a Hugging Face checkpoint folder (config.json, *.safetensors,
 * tokenizer.json). One entry point for every command that loads a model, and the chat template
 * the server needs beside it. */
#ifndef DS_ENGINE_MODEL_FILES_H
#define DS_ENGINE_MODEL_FILES_H

#include "common/status.h"
#include "engine/loader/model.h"
#include "engine/tokenizer/bpe.h"

/* Fills model and *tokenizer; on error nothing is left allocated and msg names the file. */
ds_status model_files_load(const char *path, llama_model *model, bpe_tokenizer **tokenizer,
                           char *msg, size_t msg_len);

/* The model's chat template as its files carry it (Jinja text: GGUF tokenizer.chat_template, or
 * the folder's tokenizer_config.json "chat_template"), malloc'ed into *out; *out NULL when the
 * model has none. Errors only for a file that cannot be read. */
ds_status model_files_chat_template(const char *path, char **out, char *msg, size_t msg_len);

#endif
