/* common/utf8.c — UTF-8 validation (see utf8.h). */
#include "common/utf8.h"

#include <stdint.h>

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t utf8_char_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return len;
}

size_t ds_utf8_invalid_at(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        size_t len = utf8_char_len((const unsigned char *)s + i, n - i);
        if (len == 0) return i;
        i += len;
    }
    return n;
}
