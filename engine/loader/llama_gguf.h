/* engine/loader/llama_gguf.h — the mapping between a Llama-architecture GGUF file
 * (general.architecture = "llama", llama.* keys, token_embd / blk.N.* tensors) and llama_model:
 * loading (config, shape checks, dequantization to fp32) and its inverse for the writer.
 *
 * llama.cpp's converter permutes the rows of attn_q / attn_k so that each head's rotary pairs
 * are adjacent (2i, 2i+1); llama_model keeps HF order (pairs (i, i + hd/2)). Per head of hd rows:
 *   gguf row 2i + s  <->  hf row s*hd/2 + i      (s in {0,1}, i < hd/2)
 * i.e. HF -> GGUF is w.reshape(n_head, 2, hd/2, n_in).swapaxes(1, 2). The loader applies the
 * inverse; llama_gguf_add_model applies the forward one, so a write/load round trip is exact. */
#ifndef DS_ENGINE_LOADER_LLAMA_GGUF_H
#define DS_ENGINE_LOADER_LLAMA_GGUF_H

#include <stddef.h>

#include "common/status.h"
#include "engine/loader/gguf.h"
#include "engine/loader/gguf_writer.h"
#include "engine/loader/model.h"

/* Fills *model (which must be zeroed or freed) from the GGUF at path. On error the model is left
 * empty and msg names the file and the key or tensor, e.g.
 * "model.gguf: tensor blk.3.attn_k.weight: expected 576x192, got 576x64". The caller releases
 * the weights with llama_model_free. */
ds_status llama_model_load_gguf(const char *path, llama_model *model, char *msg, size_t msg_len);

/* The same from a file already open (the caller keeps it open and closes it). */
ds_status llama_model_from_gguf(const gguf_file *file, llama_model *model, char *msg,
                                size_t msg_len);

/* Reads only the configuration (llama.* keys; vocab size from llama.vocab_size, else the length
 * of tokenizer.ggml.tokens, else token_embd's rows; tied_embeddings when output.weight is
 * absent) and validates it. */
ds_status llama_config_from_gguf(const gguf_file *file, llama_config *config, char *msg,
                                 size_t msg_len);

/* Adds general.architecture, the llama.* keys and every weight tensor of model to w: matrices
 * (and token_embd) encoded as weight_type, norms as F32, attn_q / attn_k permuted to GGUF order,
 * output.weight omitted when tied. The tokenizer section is the caller's. */
ds_status llama_gguf_add_model(gguf_writer *w, const llama_model *model, gguf_ggml_type weight_type,
                               char *msg, size_t msg_len);

/* Row permutation of a [n_heads * head_dim][n_in] Q or K matrix between HF order and GGUF
 * order (to_gguf = 1: HF -> GGUF; 0: GGUF -> HF). dst and src must not overlap. */
void llama_gguf_permute_qk(float *dst, const float *src, int n_heads, int head_dim, int n_in,
                           int to_gguf);

#endif
