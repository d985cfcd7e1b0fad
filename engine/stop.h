/* engine/stop.h — stop-string matching over one sequence's streamed text. The engine feeds each
 * detokenized delta; the matcher returns the text that is final (safe to send to the client) and
 * holds back any suffix that could still become a stop string. On a match the text is cut just
 * before the stop string (vLLM's default) or just after it (include_stop).
 *
 * Which match: the one that ends first in the stream (ties: the longer one), so the result does
 * not depend on how the text was split into deltas. Holding back only the longest suffix that is
 * a proper prefix of a stop string guarantees that no match can start before the held text.
 * UTF-8: stop strings must be valid UTF-8, so for UTF-8 text every cut and every hold-back starts
 * at a character boundary (a stop string starts with a lead byte).
 * Lifetime: a plain value owned by the sequence (copies of the strings, ~4.4 KB), no destroy. */
#ifndef DS_ENGINE_STOP_H
#define DS_ENGINE_STOP_H

#include <stddef.h>

#include "common/status.h"

#define STOP_MAX_STRINGS 16  /* stop strings per sequence */
#define STOP_MAX_LEN     256 /* bytes per stop string (1 .. 256) */
#define STOP_NONE        (-1)

/* Bytes `out` must have room for when feeding a delta of delta_len bytes (held text + delta). */
#define STOP_OUT_CAP(delta_len) ((size_t)(delta_len) + STOP_MAX_LEN)

typedef struct stop_matcher {
    int n_strings;
    int include_stop; /* emit the stop string itself on a match */
    int stop_index;   /* matched string, or STOP_NONE */
    size_t lens[STOP_MAX_STRINGS];
    char strings[STOP_MAX_STRINGS][STOP_MAX_LEN]; /* not NUL-terminated when 256 bytes long */
    size_t n_held;                                /* < STOP_MAX_LEN */
    char held[STOP_MAX_LEN];
} stop_matcher;

/* Copies the n_strings NUL-terminated stop strings (n_strings may be 0: nothing is ever held).
 * DS_EINVAL naming the limit or the string: more than STOP_MAX_STRINGS, an empty string, one
 * longer than STOP_MAX_LEN bytes, or invalid UTF-8. */
ds_status stop_init(stop_matcher *m, const char *const *strings, int n_strings, int include_stop,
                    char *msg, size_t msg_len);

/* Feeds delta [delta_len] and writes to out the text that is now final: *n_out bytes, at most
 * STOP_OUT_CAP(delta_len) (out_cap must be at least that). Returns the index of the matched stop
 * string (the stream has ended: out ends at the cut, and later calls emit nothing and return the
 * same index) or STOP_NONE. */
int stop_feed(stop_matcher *m, const char *delta, size_t delta_len, char *out, size_t out_cap,
              size_t *n_out);

/* End of generation without a stop string (EOS, max_tokens): writes the held-back text to out
 * (at most STOP_MAX_LEN - 1 bytes) and returns its length; 0 after a match. */
size_t stop_flush(stop_matcher *m, char *out, size_t out_cap);

#endif
