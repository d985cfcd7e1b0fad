/* common/file.h — reading a whole file into memory with a size limit (the commands' --prompt-file
 * options, eval texts), and reading a JSON file (config.json, tokenizer.json, safetensors index).
 * One status per kind of failure, whoever reads:
 *   DS_ENOTFOUND  the file does not exist ("cannot open: No such file or directory")
 *   DS_EIO        it exists but cannot be opened or read (permissions, a directory, I/O error)
 *   DS_ERANGE     it holds more than max_bytes
 *   DS_ECORRUPT   (ds_read_json) it is not one complete JSON value
 *   DS_ENOMEM     out of memory
 * Each message starts with the path. */
#ifndef DS_COMMON_FILE_H
#define DS_COMMON_FILE_H

#include <stddef.h>

#include "common/status.h"

struct cJSON;

/* Reads path into a malloc'ed buffer (*text, NUL-terminated; *len bytes before the NUL) that the
 * caller frees. The buffer grows with the file, so a generous max_bytes costs nothing. *text is
 * NULL on error. */
ds_status ds_read_file(const char *path, size_t max_bytes, char **text, size_t *len, char *msg,
                       size_t msg_len);

/* Reads path (at most max_bytes) and parses it with cJSON into *out, which the caller frees with
 * cJSON_Delete. The whole file must be one JSON value (whitespace may follow it); otherwise
 * DS_ECORRUPT "<path>: invalid JSON at line L, column C" where parsing stopped. *out is NULL on
 * error. */
ds_status ds_read_json(const char *path, size_t max_bytes, struct cJSON **out, char *msg,
                       size_t msg_len);

#endif
