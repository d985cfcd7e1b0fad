/* engine/tokenizer/bpe_gguf.h — builds the BPE tokenizer from a GGUF file's tokenizer.ggml.*
 * metadata (the vocabulary llama.cpp stores beside the weights). */
#ifndef DS_ENGINE_TOKENIZER_BPE_GGUF_H
#define DS_ENGINE_TOKENIZER_BPE_GGUF_H

#include "common/status.h"
#include "engine/loader/gguf.h"
#include "engine/tokenizer/bpe.h"

/* Needs tokenizer.ggml.model = "gpt2" (byte-level BPE), tokens and merges; token_type, pre,
 * bos/eos/unk ids and add_bos_token are optional. Errors name the file and the key. The file may
 * be closed once this returns: the tokenizer keeps its own copies. */
ds_status bpe_load_gguf(const gguf_file *file, bpe_tokenizer **out, char *msg, size_t msg_len);

#endif
