/* engine/tokenizer/bpe.h — byte-level BPE (GPT-2 style, as SmolLM2 and Llama-3 use): text to
 * token ids and back, matching HF `tokenizers` id for id. Built from plain arrays (bpe_create; the
 * GGUF loader fills a bpe_spec from tokenizer.ggml.*) or from an HF tokenizer.json.
 *
 * Lifetime: bpe_create copies everything it needs; the tokenizer is immutable afterwards, so one
 * instance may be shared by threads for encode/decode. Each stream owns its own bpe_decoder. */
#ifndef DS_ENGINE_TOKENIZER_BPE_H
#define DS_ENGINE_TOKENIZER_BPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* GGUF tokenizer.ggml.token_type values. */
enum {
    BPE_TOKEN_NORMAL = 1,
    BPE_TOKEN_UNKNOWN = 2,
    BPE_TOKEN_CONTROL = 3,      /* special: matched in text only with parse_special */
    BPE_TOKEN_USER_DEFINED = 4, /* added token: always matched whole in text */
    BPE_TOKEN_UNUSED = 5,
    BPE_TOKEN_BYTE = 6,
};

typedef struct bpe_spec {
    int32_t n_tokens;
    const char *const *tokens;  /* [n_tokens] token text in the byte-level alphabet ("Ġthe") */
    const size_t *token_lens;   /* [n_tokens] byte lengths, or NULL: tokens are NUL-terminated */
    const int32_t *token_types; /* [n_tokens] BPE_TOKEN_*, or NULL: all normal */
    int32_t n_merges;
    const char *const *merges;      /* [n_merges] "left right"; rank = index, lower merges first */
    const size_t *merge_lens;       /* [n_merges] byte lengths, or NULL: NUL-terminated */
    const char *pre;                /* pre-tokenizer: "gpt2", "smollm", "llama3" (pretokenize.h) */
    int32_t bos_id, eos_id, unk_id; /* -1 where the model has none */
    bool add_bos;                   /* bpe_encode prepends bos_id */
    bool ignore_merges; /* a pre-token that is itself in the vocab is emitted whole (Llama-3) */
    bool emit_unk;      /* a byte with no token becomes unk_id; false drops it, as HF does for a
                           BPE model without unk_token (SmolLM2 lacks bytes 0x04, 0xF1, ...) */
} bpe_spec;

typedef struct bpe_tokenizer bpe_tokenizer;

/* Builds a tokenizer. Fails with DS_EINVAL / DS_ECORRUPT naming the token or merge at fault
 * (a merge whose halves or concatenation are not tokens), DS_EUNSUPPORTED for an unknown
 * pre-tokenizer, DS_ENOMEM. */
ds_status bpe_create(const bpe_spec *spec, bpe_tokenizer **out, char *msg, size_t msg_len);

/* Loads an HF tokenizer.json (model.type "BPE", byte-level pre-tokenizer: ByteLevel,
 * Sequence[Digits, ByteLevel] or Sequence[Split(llama3 regex), ByteLevel]). bos/eos/add_bos come
 * from a tokenizer_config.json beside it when present, else from a TemplateProcessing
 * post-processor; they are -1 if neither names them. Errors name the file at fault: tokenizer.json
 * (missing, unreadable, too large or not JSON: ds_read_json's statuses, common/file.h), or a
 * tokenizer_config.json that is there but unreadable, not JSON (the same statuses) or not a JSON
 * object (DS_ECORRUPT). DS_EUNSUPPORTED for a model or pre-tokenizer other than the above,
 * DS_ECORRUPT for a bad vocab, added token or merge. */
ds_status bpe_load_tokenizer_json(const char *path, bpe_tokenizer **out, char *msg, size_t msg_len);

void bpe_destroy(bpe_tokenizer *tok);

/* Encodes len bytes of text (any bytes; invalid UTF-8 is tokenized byte by byte). With
 * parse_special, control tokens written literally ("<|im_start|>") become their ids;
 * user-defined tokens always do. Writes at most max_ids ids and sets *n_ids to the number the
 * text needs; returns DS_ERANGE if that exceeds max_ids (call again with a bigger buffer). */
ds_status bpe_encode(const bpe_tokenizer *tok, const char *text, size_t len, bool parse_special,
                     int32_t *ids, int max_ids, int *n_ids, char *msg, size_t msg_len);

/* Concatenated bytes of ids (control tokens as their text). Writes at most out_cap bytes, sets
 * *n_out to the bytes needed; DS_ERANGE if out_cap is too small, DS_EINVAL for a bad id. */
ds_status bpe_decode(const bpe_tokenizer *tok, const int32_t *ids, int n_ids, char *out,
                     size_t out_cap, size_t *n_out, char *msg, size_t msg_len);

int32_t bpe_vocab_size(const bpe_tokenizer *tok);

/* Bytes one token decodes to (byte-level mapping undone; may be a partial UTF-8 sequence).
 * Borrowed, valid for the tokenizer's life; NULL if id is out of range. */
const char *bpe_token_bytes(const bpe_tokenizer *tok, int32_t id, size_t *len);

/* The token's vocabulary text ("Ġthe", "<|im_end|>"), NUL-terminated; NULL if out of range. */
const char *bpe_token_text(const bpe_tokenizer *tok, int32_t id);

int32_t bpe_token_type(const bpe_tokenizer *tok, int32_t id);

/* Id of the token whose vocabulary text is exactly text[0..len), or -1. */
int32_t bpe_token_id(const bpe_tokenizer *tok, const char *text, size_t len);

int32_t bpe_bos_id(const bpe_tokenizer *tok);
int32_t bpe_eos_id(const bpe_tokenizer *tok);
int32_t bpe_unk_id(const bpe_tokenizer *tok);
const char *bpe_pre_name(const bpe_tokenizer *tok);

/* Streaming detokenizer: one id in, only complete UTF-8 out. A multi-byte character split over
 * tokens is held back until its last byte arrives; bytes that can never form valid UTF-8 come
 * out as U+FFFD, so every output is valid UTF-8. Output text is owned by the decoder and valid
 * until its next call. Allocates only in create. */
typedef struct bpe_decoder bpe_decoder;

ds_status bpe_decoder_create(const bpe_tokenizer *tok, bool skip_control, bpe_decoder **out,
                             char *msg, size_t msg_len);
void bpe_decoder_destroy(bpe_decoder *dec);

/* Feeds one id; DS_EINVAL (and no output) for an id out of range. */
ds_status bpe_decoder_push(bpe_decoder *dec, int32_t id, const char **text, size_t *len, char *msg,
                           size_t msg_len);

/* Ends the stream: held-back bytes of an unfinished character come out as U+FFFD. The decoder
 * is then empty and may start a new stream. */
void bpe_decoder_flush(bpe_decoder *dec, const char **text, size_t *len);

#endif
