/* engine/tokenizer/bpe_decoder.c — the streaming detokenizer (bpe.h): one id in, only complete
 * UTF-8 out, a character split over tokens held back until its last byte arrives. Serving streams
 * each own one; it reads the tokenizer through its public accessors. */
#include "engine/tokenizer/bpe.h"

#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer/bpe_internal.h"

struct bpe_decoder {
    const bpe_tokenizer *tok;
    bool skip_control;
    uint8_t pending[4]; /* start of a UTF-8 character whose last bytes have not come yet */
    int n_pending;
    uint8_t *work; /* pending + one token */
    char *out;     /* worst case: every byte of work becomes U+FFFD (3 bytes) */
};

ds_status bpe_decoder_create(const bpe_tokenizer *tok, bool skip_control, bpe_decoder **out,
                             char *msg, size_t msg_len) {
    *out = NULL;
    bpe_decoder *dec = calloc(1, sizeof *dec);
    if (dec) {
        dec->tok = tok;
        dec->skip_control = skip_control;
        size_t max_bytes = bpe_max_token_bytes(tok);
        dec->work = malloc(max_bytes + 4);
        dec->out = malloc(3 * (max_bytes + 4));
    }
    if (!dec || !dec->work || !dec->out) {
        bpe_decoder_destroy(dec);
        return ds_fail(msg, msg_len, DS_ENOMEM, "bpe_decoder_create");
    }
    *out = dec;
    return DS_OK;
}

void bpe_decoder_destroy(bpe_decoder *dec) {
    if (!dec) return;
    free(dec->work);
    free(dec->out);
    free(dec);
}

/* Copies the valid UTF-8 of work[0..n) to out, U+FFFD for each maximal invalid subpart (as
 * String::from_utf8_lossy does). An unfinished character at the end is kept in pending unless
 * final. Returns the bytes written. */
static size_t utf8_sanitize(bpe_decoder *dec, const uint8_t *w, size_t n, bool final) {
    static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    char *out = dec->out;
    size_t o = 0, i = 0;
    dec->n_pending = 0;
    while (i < n) {
        uint8_t b = w[i];
        if (b < 0x80) {
            out[o++] = (char)b;
            i++;
            continue;
        }
        /* Continuation bytes needed, and the allowed range of the first one (RFC 3629 table:
         * no overlong forms, no surrogates, nothing past U+10FFFF). */
        int need = b >= 0xC2 && b <= 0xDF   ? 1
                   : b >= 0xE0 && b <= 0xEF ? 2
                   : b >= 0xF0 && b <= 0xF4 ? 3
                                            : 0;
        uint8_t lo = b == 0xE0 ? 0xA0 : b == 0xF0 ? 0x90 : 0x80;
        uint8_t hi = b == 0xED ? 0x9F : b == 0xF4 ? 0x8F : 0xBF;
        int j = 1;
        if (need > 0) {
            for (; j <= need; j++) {
                if (i + (size_t)j >= n) break;
                uint8_t c = w[i + (size_t)j];
                if (c < (j == 1 ? lo : 0x80) || c > (j == 1 ? hi : 0xBF)) break;
            }
        }
        if (need > 0 && j > need) { /* complete character */
            memcpy(out + o, w + i, (size_t)need + 1);
            o += (size_t)need + 1;
            i += (size_t)need + 1;
        } else if (need > 0 && i + (size_t)j >= n && !final) { /* unfinished: hold back */
            dec->n_pending = (int)(n - i);
            memcpy(dec->pending, w + i, n - i);
            break;
        } else {
            memcpy(out + o, replacement, 3);
            o += 3;
            i += (size_t)j;
        }
    }
    return o;
}

ds_status bpe_decoder_push(bpe_decoder *dec, int32_t id, const char **text, size_t *len, char *msg,
                           size_t msg_len) {
    const bpe_tokenizer *tok = dec->tok;
    *text = dec->out;
    *len = 0;
    size_t bl;
    const char *bytes = bpe_token_bytes(tok, id, &bl);
    if (!bytes)
        return ds_fail(msg, msg_len, DS_EINVAL, "bpe_decoder_push: id %d outside vocab of %d", id,
                       bpe_vocab_size(tok));
    if (dec->skip_control && bpe_token_type(tok, id) == BPE_TOKEN_CONTROL) return DS_OK;
    memcpy(dec->work, dec->pending, (size_t)dec->n_pending);
    memcpy(dec->work + dec->n_pending, bytes, bl);
    *len = utf8_sanitize(dec, dec->work, (size_t)dec->n_pending + bl, false);
    return DS_OK;
}

void bpe_decoder_flush(bpe_decoder *dec, const char **text, size_t *len) {
    memcpy(dec->work, dec->pending, (size_t)dec->n_pending);
    *text = dec->out;
    *len = utf8_sanitize(dec, dec->work, (size_t)dec->n_pending, true);
}
