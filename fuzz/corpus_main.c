/* fuzz/corpus_main.c — replays corpus files through a fuzz target's LLVMFuzzerTestOneInput, so
 * `bazel test` (gcc, plain and under ASan + UBSan) runs every committed seed and every input that
 * once crashed a fuzzer (fuzz/corpus/<target>/) on each change. Usage: PROG DIR...; fails if a
 * directory holds no file, so a corpus that went missing cannot pass. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "fuzz/fuzz_input.h"

enum { MAX_INPUT_BYTES = 16 << 20 };

static int replay_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "%s: cannot open the corpus directory\n", dir);
        return -1;
    }
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char path[1024], msg[512], *data;
        size_t len;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (ds_read_file(path, MAX_INPUT_BYTES, &data, &len, msg, sizeof msg) != DS_OK) {
            fprintf(stderr, "%s\n", msg);
            closedir(d);
            return -1;
        }
        LLVMFuzzerTestOneInput((const uint8_t *)data, len);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        int n = replay_dir(argv[i]);
        if (n <= 0) {
            fprintf(stderr, "%s: %s\n", argv[i], n == 0 ? "no input in the corpus" : "failed");
            return 1;
        }
        printf("%s: %d inputs replayed\n", argv[i], n);
    }
    return 0;
}
