/* common/file.c — whole-file reads (see file.h). */
#include "common/file.h"

#include <stdio.h>
#include <stdlib.h>

ds_status ds_read_file(const char *path, size_t max_bytes, char **text, size_t *len, char *msg,
                       size_t msg_len) {
    *text = NULL, *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return ds_fail(msg, msg_len, DS_EIO, "%s: cannot open", path);
    char *buf = malloc(max_bytes + 1);
    if (!buf) {
        fclose(fp);
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    }
    size_t n = fread(buf, 1, max_bytes + 1, fp);
    int failed = ferror(fp);
    fclose(fp);
    if (failed || n > max_bytes) {
        free(buf);
        return failed
                   ? ds_fail(msg, msg_len, DS_EIO, "%s: unreadable", path)
                   : ds_fail(msg, msg_len, DS_ERANGE, "%s: larger than %zu bytes", path, max_bytes);
    }
    buf[n] = 0;
    *text = buf, *len = n;
    return DS_OK;
}
