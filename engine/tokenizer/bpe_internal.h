/* engine/tokenizer/bpe_internal.h — what bpe.c shares with the tokenizer.json loader
 * (bpe_json.c) and the streaming decoder (bpe_decoder.c) beside it; not for callers outside
 * engine/tokenizer, who use bpe.h. */
#ifndef DS_ENGINE_TOKENIZER_BPE_INTERNAL_H
#define DS_ENGINE_TOKENIZER_BPE_INTERNAL_H

#include "engine/tokenizer/bpe.h"

/* One merge split into its halves (tokenizer.json may store them as ["left", "right"]);
 * borrowed text, not NUL-terminated. */
typedef struct bpe_merge_text {
    const char *left, *right;
    size_t left_len, right_len;
} bpe_merge_text;

/* bpe_create with spec->merges ignored and merges[spec->n_merges] used instead. */
ds_status bpe_create_from_pairs(const bpe_spec *spec, const bpe_merge_text *merges,
                                bpe_tokenizer **out, char *msg, size_t msg_len);

/* Sets the special ids once the vocabulary is built (tokenizer.json names them by text, so they
 * are looked up afterwards). Ids are -1 or in the vocabulary; add_bos needs bos_id >= 0 and
 * emit_unk unk_id >= 0. */
void bpe_set_special_ids(bpe_tokenizer *tok, int32_t bos_id, int32_t eos_id, int32_t unk_id,
                         bool add_bos, bool emit_unk);

/* Bytes of the longest decoded token: sizes a decoder's buffers. */
size_t bpe_max_token_bytes(const bpe_tokenizer *tok);

#endif
