/* common/status.c — names of statuses and the one-line error helper. */
#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>

const char *ds_status_str(ds_status status) {
    switch (status) {
    case DS_OK: return "ok";
    case DS_EINVAL: return "invalid argument";
    case DS_ENOMEM: return "out of memory";
    case DS_EUNSUPPORTED: return "unsupported";
    case DS_EIO: return "i/o error";
    case DS_ECORRUPT: return "corrupt input";
    case DS_ENOTFOUND: return "not found";
    case DS_ERANGE: return "out of range";
    case DS_EINTERNAL: return "internal error";
    case DS_EBUSY: return "busy";
    case DS_EUNAVAILABLE: return "unavailable";
    }
    return "unknown status";
}

ds_status ds_fail(char *msg, size_t msg_len, ds_status status, const char *fmt, ...) {
    if (msg && msg_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_len, fmt, ap);
        va_end(ap);
    }
    return status;
}
