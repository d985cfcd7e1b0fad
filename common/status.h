/* common/status.h — the one status type every recoverable error in decoserve returns.
 * Callers pass a message buffer that the callee fills with text naming the offending thing
 * ("model.gguf: tensor blk.3.attn_k.weight: expected 576x192, got 576x64"). */
#ifndef DS_COMMON_STATUS_H
#define DS_COMMON_STATUS_H

#include <stddef.h>

typedef enum ds_status {
    DS_OK = 0,
    DS_EINVAL,       /* bad argument or malformed input */
    DS_ENOMEM,       /* allocation failed or a pool is exhausted */
    DS_EUNSUPPORTED, /* valid but not implemented (shape, type, format) */
    DS_EIO,          /* file system or stream error */
    DS_ECORRUPT,     /* a file or message is truncated or inconsistent */
    DS_ENOTFOUND,    /* a named thing (file, tensor, key) does not exist */
    DS_ERANGE,       /* a value is outside its allowed range (context length, id) */
    DS_EINTERNAL,    /* a vendor call (CUDA, NCCL, gRPC) failed */
    DS_EBUSY,        /* a queue is full; retry later (gRPC RESOURCE_EXHAUSTED) */
    DS_EUNAVAILABLE, /* shutting down or not ready (gRPC UNAVAILABLE) */
} ds_status;

/* Stable lower-case name of a status ("ok", "invalid argument", ...). */
const char *ds_status_str(ds_status status);

/* snprintf into msg (if msg && msg_len) and return status; for one-line error returns:
 *   return ds_fail(msg, msg_len, DS_EINVAL, "bits=%d: expected 2, 4, 8 or 16", bits); */
ds_status ds_fail(char *msg, size_t msg_len, ds_status status, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
