/* fuzz/tokenizer_json_fuzz.c — a tokenizer.json as an HF folder carries it: the loader (model,
 * vocab, merges, added tokens, pre-tokenizer), then a text encoded and decoded through whatever
 * it built (tokenize_text.h). */
#include "engine/tokenizer/bpe.h"
#include "fuzz/fuzz_input.h"
#include "fuzz/tokenize_text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_input_file("tokenizer.json", data, size);
    bpe_tokenizer *tok;
    char msg[512];
    if (bpe_load_tokenizer_json(path, &tok, msg, sizeof msg) != DS_OK) return 0;
    fuzz_tokenize_text(tok);
    bpe_destroy(tok);
    return 0;
}
