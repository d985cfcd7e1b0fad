/* tools/eval/kv_capture.h — real KV for the codec table: runs a model over the start of a text
 * with fp16 pages and captures every layer's post-RoPE keys and values (what the cache stores)
 * and the queries of the last positions (what attends to them at decode time). */
#ifndef DS_TOOLS_EVAL_KV_CAPTURE_H
#define DS_TOOLS_EVAL_KV_CAPTURE_H

#include "common/status.h"
#include "tools/eval/kv_eval.h"

/* Fills set with n_layers * n_kv_heads heads of n_tokens tokens (fewer if the text is shorter;
 * at least 2 blocks are required); each head gets n_queries real queries, taken from the last
 * n_queries positions, cycling over the query heads of its GQA group. */
ds_status kv_capture(const char *model_path, const char *text_path, int n_tokens, int n_queries,
                     kv_set *set, char *msg, size_t msg_len);

#endif
