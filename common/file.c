/* common/file.c — whole-file and JSON-file reads (see file.h). */
#include "common/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FIRST_CHUNK 4096

/* The first buffer: the whole file if its size is known (a regular file), plus one byte that
 * tells a file that grew, or one over the limit, from one that fits exactly. */
static size_t first_capacity(FILE *fp, size_t max_bytes) {
    struct stat sb;
    size_t want = FIRST_CHUNK;
    if (fstat(fileno(fp), &sb) == 0 && S_ISREG(sb.st_mode)) want = (size_t)sb.st_size;
    return (want < max_bytes ? want : max_bytes) + 1;
}

ds_status ds_read_file(const char *path, size_t max_bytes, char **text, size_t *len, char *msg,
                       size_t msg_len) {
    *text = NULL, *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return ds_fail(msg, msg_len, errno == ENOENT ? DS_ENOTFOUND : DS_EIO, "%s: cannot open: %s",
                       path, strerror(errno));
    size_t cap = first_capacity(fp, max_bytes), n = 0;
    char *buf = malloc(cap);
    ds_status st = DS_OK;
    /* Reads until end of file or until more than max_bytes are in: cap never exceeds
     * max_bytes + 1, so n == cap > max_bytes means too large. */
    while (buf) {
        n += fread(buf + n, 1, cap - n, fp);
        if (ferror(fp)) {
            st = ds_fail(msg, msg_len, DS_EIO, "%s: read error: %s", path, strerror(errno));
            break;
        }
        if (n < cap) break; /* end of file */
        if (n > max_bytes) {
            st = ds_fail(msg, msg_len, DS_ERANGE, "%s: larger than %zu bytes", path, max_bytes);
            break;
        }
        cap = cap <= (max_bytes + 1) / 2 ? cap * 2 : max_bytes + 1;
        char *grown = realloc(buf, cap);
        if (!grown) free(buf);
        buf = grown;
    }
    fclose(fp);
    if (!buf) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    if (st != DS_OK) {
        free(buf);
        return st;
    }
    buf[n] = '\0';
    *text = buf, *len = n;
    return DS_OK;
}

ds_status ds_read_json(const char *path, size_t max_bytes, cJSON **out, char *msg, size_t msg_len) {
    *out = NULL;
    char *text;
    size_t len;
    ds_status st = ds_read_file(path, max_bytes, &text, &len, msg, msg_len);
    if (st != DS_OK) return st;
    /* Length with the NUL, and require_null_terminated: text after the value is an error. */
    const char *end = NULL;
    *out = cJSON_ParseWithLengthOpts(text, len + 1, &end, 1);
    if (!*out) {
        int line = 1, column = 1;
        for (const char *p = text; end && p < end; p++, column++)
            if (*p == '\n') line++, column = 0;
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: invalid JSON at line %d, column %d", path,
                     line, column);
    }
    free(text);
    return st;
}
