/* common/file.h — reading a whole (text) file into memory, with a size limit, for the commands'
 * --prompt-file options. */
#ifndef DS_COMMON_FILE_H
#define DS_COMMON_FILE_H

#include <stddef.h>

#include "common/status.h"

/* Reads path into a malloc'ed buffer (*text, NUL-terminated; *len bytes before the NUL).
 * DS_EIO "cannot open" / "unreadable", DS_ERANGE if the file holds more than max_bytes,
 * DS_ENOMEM; each message starts with the path. *text is NULL on error. */
ds_status ds_read_file(const char *path, size_t max_bytes, char **text, size_t *len, char *msg,
                       size_t msg_len);

#endif
