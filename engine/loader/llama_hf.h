/* engine/loader/llama_hf.h — loads a Llama checkpoint in Hugging Face layout (config.json plus
 * model.safetensors or sharded model-*.safetensors with model.safetensors.index.json) into a
 * llama_model. HF's weight order is already model.h's, so tensors are only converted to fp32. */
#ifndef DS_ENGINE_LOADER_LLAMA_HF_H
#define DS_ENGINE_LOADER_LLAMA_HF_H

#include <stddef.h>

#include "common/status.h"
#include "engine/loader/model.h"

/* Parses dir/config.json into *config (model_type "llama" or architectures LlamaForCausalLM;
 * num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, vocab_size,
 * max_position_embeddings, rms_norm_eps required; num_key_value_heads, head_dim, rope_theta,
 * rope_scaling {rope_type|type: default|linear|llama3}, tie_word_embeddings optional) and
 * validates it. tied_embeddings reflects only the config; the loader also ties when the
 * checkpoint has no lm_head.weight. Errors name config.json and the field: a missing, unreadable,
 * too large (over 1 MiB) or unparsable file gets ds_read_json's status (common/file.h), a bad
 * field DS_EINVAL. */
ds_status llama_hf_read_config(const char *dir, llama_config *config, char *msg, size_t msg_len);

/* Reads the config, checks every tensor's presence, dtype (F32/F16/BF16) and shape before
 * allocating, then fills *m (which must be zeroed or freed). On error *m is left zeroed.
 * The caller owns the weights: llama_model_free(m). */
ds_status llama_model_load_hf(const char *dir, llama_model *m, char *msg, size_t msg_len);

#endif
