/* fuzz/tokenize_text.c — see tokenize_text.h. */
#include "fuzz/tokenize_text.h"

void fuzz_tokenize_text(const bpe_tokenizer *tok) {
    static const char text[] = "Hello <|im_start|>w\xc3\xb6rld 12345 \xf0\x9f\x98\x80\n\t x";
    int32_t ids[256];
    int n_ids = 0;
    char msg[256];
    if (bpe_encode(tok, text, sizeof text - 1, true, ids, 256, &n_ids, msg, sizeof msg) != DS_OK)
        return;
    char out[2048];
    size_t n_out;
    bpe_decode(tok, ids, n_ids, out, sizeof out, &n_out, msg, sizeof msg);
}
