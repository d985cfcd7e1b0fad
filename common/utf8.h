/* common/utf8.h — the one UTF-8 validity check: what the server requires of every string a client
 * sends (proto3 strings must be UTF-8, and strict clients refuse responses that echo invalid bytes)
 * and what stop strings must be. Valid means RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF, no truncated sequence. */
#ifndef DS_COMMON_UTF8_H
#define DS_COMMON_UTF8_H

#include <stddef.h>

/* The offset of the first byte of s[0..n) that does not start a valid UTF-8 sequence, or n when
 * all of it is valid. */
size_t ds_utf8_invalid_at(const char *s, size_t n);

#endif
