/* engine/test_model.h — for the cmocka tests that need the real SmolLM2 (include after
 * <cmocka.h>): its path from DECOSERVE_MODEL. Without it such a test skips, or fails with
 * DECOSERVE_REQUIRE_MODEL=1 (what CI sets), so a green run cannot hide model tests that never
 * ran. */
#ifndef DS_ENGINE_TEST_MODEL_H
#define DS_ENGINE_TEST_MODEL_H

#include <stdlib.h>
#include <string.h>

/* DECOSERVE_MODEL; if it is unset or empty, skips `what` (the check, for the message) or, with
 * DECOSERVE_REQUIRE_MODEL=1, fails it. */
static inline const char *test_model_path(const char *what) {
    const char *path = getenv("DECOSERVE_MODEL");
    if (path && *path) return path;
    const char *required = getenv("DECOSERVE_REQUIRE_MODEL");
    if (required && strcmp(required, "1") == 0)
        fail_msg("DECOSERVE_REQUIRE_MODEL=1 but DECOSERVE_MODEL is not set: %s cannot run "
                 "(DECOSERVE_MODEL=$(tools/fetch-model.sh) bazel test ...)",
                 what);
    print_message("DECOSERVE_MODEL is not set: skipping %s "
                  "(DECOSERVE_MODEL=$(tools/fetch-model.sh) bazel test ...)\n",
                  what);
    skip();
    return NULL;
}

#endif
