/* fuzz/fuzz_input.c — inputs as files (see fuzz_input.h). */
#include "fuzz/fuzz_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

const char *fuzz_input_dir(void) {
    static char dir[512];
    if (dir[0] == '\0') {
        const char *tmp = getenv("TEST_TMPDIR");
        if (tmp == NULL) tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/decoserve-fuzz-XXXXXX", tmp ? tmp : "/tmp");
        DS_ASSERT(mkdtemp(dir) != NULL);
    }
    return dir;
}

const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size) {
    static char paths[4][600];
    static int next;
    char *path = paths[next++ % 4];
    snprintf(path, sizeof paths[0], "%s/%s", fuzz_input_dir(), name);
    FILE *fp = fopen(path, "wb");
    DS_ASSERT(fp != NULL);
    DS_ASSERT(size == 0 || fwrite(data, 1, size, fp) == size);
    DS_ASSERT(fclose(fp) == 0);
    return path;
}
