/* fuzz/fuzz_input.h — what the fuzz targets share: the parsers take paths and read files the way
 * the server does (mmap, ds_read_file), so each input is written to a file in a directory made
 * once per process (under $TMPDIR), and run on exactly the bytes a user's file would hold.
 *
 * Every target defines LLVMFuzzerTestOneInput; libFuzzer drives it (fuzz/run.sh, clang), and
 * corpus_main.c replays the committed corpus through it in `bazel test` (gcc, plain and ASan). */
#ifndef DS_FUZZ_FUZZ_INPUT_H
#define DS_FUZZ_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

/* Writes data[size] to DIR/name (replacing it) and returns the path (static storage, reused four
 * calls later). Aborts if the file cannot be written. */
const char *fuzz_input_file(const char *name, const uint8_t *data, size_t size);

/* The per-process directory the files live in. */
const char *fuzz_input_dir(void);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
