/* fuzz/tokenize_text.h — what the fuzzers do with a tokenizer a fuzzed file built: encode one
 * text with specials, accents, digits, an emoji and whitespace, and decode the ids back. */
#ifndef DS_FUZZ_TOKENIZE_TEXT_H
#define DS_FUZZ_TOKENIZE_TEXT_H

#include "engine/tokenizer/bpe.h"

void fuzz_tokenize_text(const bpe_tokenizer *tok);

#endif
