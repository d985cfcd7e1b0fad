/* engine/tokenizer/pretokenize.h — splits text into the pieces byte-level BPE merges within,
 * reproducing the HF `tokenizers` pre-tokenizers by hand (no regex engine): GPT-2's ByteLevel
 * regex, SmolLM2's Digits(individual) + ByteLevel, and Llama-3's Split regex. Called by bpe.c.
 *
 *   gpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *   smollm: every \p{N} char is its own piece; the gpt2 regex runs on the text between them
 *   llama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
 *           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * \p{L}, \p{N} come from utf8proc's general categories; \s is Unicode White_Space (Oniguruma's
 * \s, which HF uses). A byte that is not part of valid UTF-8 counts as one "other" character. */
#ifndef DS_ENGINE_TOKENIZER_PRETOKENIZE_H
#define DS_ENGINE_TOKENIZER_PRETOKENIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum pretok_kind {
    PRETOK_GPT2,   /* "gpt2" (also GPT-2 style models without digit split) */
    PRETOK_SMOLLM, /* "smollm", "starcoder", "refact", "codeshell": digits isolated first */
    PRETOK_LLAMA3, /* "llama3", "llama-bpe", "llama-v3" */
} pretok_kind;

/* Maps a GGUF tokenizer.ggml.pre name to a kind; false if the name is not supported. */
bool pretok_kind_from_name(const char *name, pretok_kind *kind);

/* Canonical name of a kind ("gpt2", "smollm", "llama3"). */
const char *pretok_kind_name(pretok_kind kind);

/* Walks the pieces of one text; borrows the text, allocates nothing. Pieces cover the text
 * exactly, in order, and are never empty. */
typedef struct pretok_iter {
    pretok_kind kind;
    const uint8_t *text;
    size_t len;
    size_t pos;
    size_t seg_end; /* smollm: end of the current digit-free stretch */
} pretok_iter;

void pretok_iter_init(pretok_iter *it, pretok_kind kind, const char *text, size_t len);

/* Sets [*start, *end) to the next piece and returns true, or returns false at the end. */
bool pretok_iter_next(pretok_iter *it, size_t *start, size_t *end);

#endif
