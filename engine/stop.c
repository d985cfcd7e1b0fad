/* engine/stop.c — stop-string matching on the held-back tail plus the new delta. Work per delta
 * is O(strings * (held + delta) * len) worst case with memcmp; stop strings are short and the
 * held text is below STOP_MAX_LEN, so this is negligible next to a forward pass. */
#include "engine/stop.h"

#include <stdint.h>
#include <string.h>

#include "common/log.h"
#include "common/utf8.h"

ds_status stop_init(stop_matcher *m, const char *const *strings, int n_strings, int include_stop,
                    char *msg, size_t msg_len) {
    if (n_strings < 0 || n_strings > STOP_MAX_STRINGS)
        return ds_fail(msg, msg_len, DS_EINVAL, "stop: %d strings: at most %d allowed", n_strings,
                       STOP_MAX_STRINGS);
    memset(m, 0, sizeof *m);
    for (int i = 0; i < n_strings; i++) {
        size_t len = strnlen(strings[i], STOP_MAX_LEN + 1);
        if (len == 0) return ds_fail(msg, msg_len, DS_EINVAL, "stop[%d]: empty string", i);
        if (len > STOP_MAX_LEN)
            return ds_fail(msg, msg_len, DS_EINVAL, "stop[%d]: longer than %d bytes", i,
                           STOP_MAX_LEN);
        if (ds_utf8_invalid_at(strings[i], len) != len)
            return ds_fail(msg, msg_len, DS_EINVAL, "stop[%d]: not valid UTF-8", i);
        memcpy(m->strings[i], strings[i], len);
        m->lens[i] = len;
    }
    m->n_strings = n_strings;
    m->include_stop = include_stop != 0;
    m->stop_index = STOP_NONE;
    return DS_OK;
}

int stop_feed(stop_matcher *m, const char *delta, size_t delta_len, char *out, size_t out_cap,
              size_t *n_out) {
    *n_out = 0;
    if (m->stop_index != STOP_NONE) return m->stop_index;
    size_t total = m->n_held + delta_len;
    DS_ASSERT(out_cap >= total);
    memcpy(out, m->held, m->n_held);
    if (delta_len) memcpy(out + m->n_held, delta, delta_len);

    /* The match that ends first; the held text itself holds no complete match (it would have
     * been found when it completed), so only matches ending inside the delta are searched. */
    size_t best_start = 0, best_end = SIZE_MAX;
    int best = STOP_NONE;
    for (int s = 0; s < m->n_strings; s++) {
        size_t len = m->lens[s];
        if (len > total) continue;
        size_t first = m->n_held >= len ? m->n_held - len + 1 : 0;
        for (size_t st = first; st + len <= total && st + len <= best_end; st++) {
            if (out[st] != m->strings[s][0] || memcmp(out + st, m->strings[s], len) != 0) continue;
            if (st + len < best_end || st < best_start) {
                best = s;
                best_start = st;
                best_end = st + len;
            }
            break;
        }
    }
    if (best != STOP_NONE) {
        m->stop_index = best;
        m->n_held = 0;
        *n_out = m->include_stop ? best_end : best_start;
        return best;
    }

    /* Hold back the longest suffix that is a proper prefix of some stop string. */
    size_t hold = 0;
    for (int s = 0; s < m->n_strings; s++) {
        size_t max_k = m->lens[s] - 1 < total ? m->lens[s] - 1 : total;
        for (size_t k = max_k; k > hold; k--)
            if (memcmp(out + total - k, m->strings[s], k) == 0) {
                hold = k;
                break;
            }
    }
    memcpy(m->held, out + total - hold, hold);
    m->n_held = hold;
    *n_out = total - hold;
    return STOP_NONE;
}

size_t stop_flush(stop_matcher *m, char *out, size_t out_cap) {
    size_t n = m->n_held;
    DS_ASSERT(out_cap >= n);
    memcpy(out, m->held, n);
    m->n_held = 0;
    return n;
}
