/* engine/loader/loader_test_util.h — helpers shared by the loader tests (include after
 * <cmocka.h>): a file path in the test's temp folder, a check that an error message names what
 * it should, and OK(call) for calls that take (msg, msg_len) last. */
#ifndef DS_ENGINE_LOADER_TEST_UTIL_H
#define DS_ENGINE_LOADER_TEST_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"

static char tmp_path[512];

static inline const char *tmp_file(const char *name) {
    const char *dir = getenv("TEST_TMPDIR");
    snprintf(tmp_path, sizeof tmp_path, "%s/%s", dir ? dir : "/tmp", name);
    return tmp_path;
}

static inline void assert_contains(const char *haystack, const char *needle) {
    if (!strstr(haystack, needle)) fail_msg("message '%s' does not mention '%s'", haystack, needle);
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        char m_[512] = "";                                                                         \
        ds_status s_ = (call);                                                                     \
        if (s_ != DS_OK) fail_msg("%s: %s (%s)", #call, m_, ds_status_str(s_));                    \
    } while (0)
/* The writer/getters take (msg, msg_len) last; OK() supplies them. */
#define M m_, sizeof m_

#endif
