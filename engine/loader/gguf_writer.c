/* engine/loader/gguf_writer.c — the GGUF v3 writer: entries are encoded to bytes as they are
 * added and laid out at gguf_writer_write, with ggml's reference quantizers (quantize_row_*_ref)
 * so files we write dequantize exactly as llama.cpp's would. */
#include "engine/loader/gguf_writer.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/half.h"
#include "common/log.h"

typedef struct writer_kv {
    char *key;
    uint32_t type;
    uint8_t *bytes;
    size_t n_bytes;
} writer_kv;

typedef struct writer_tensor {
    char *name;
    uint32_t type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    uint8_t *data;
    size_t n_bytes;
} writer_tensor;

struct gguf_writer {
    writer_kv *kvs;
    size_t n_kv, cap_kv;
    writer_tensor *tensors;
    size_t n_tensors, cap_tensors;
    uint32_t alignment;
};

gguf_writer *gguf_writer_create(void) {
    gguf_writer *w = calloc(1, sizeof *w);
    if (w) w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_destroy(gguf_writer *w) {
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].bytes);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->kvs);
    free(w->tensors);
    free(w);
}

/* ---- byte buffer for encoding values ---- */

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

static void buf_put(buf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void buf_u32(buf *b, uint32_t v) { buf_put(b, &v, 4); }
static void buf_u64(buf *b, uint64_t v) { buf_put(b, &v, 8); }
static void buf_str(buf *b, const char *s, size_t len) {
    buf_u64(b, len);
    buf_put(b, s, len);
}

/* ---- metadata ---- */

static ds_status add_kv(gguf_writer *w, const char *key, gguf_type type, buf *value, char *msg,
                        size_t msg_len) {
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->kvs[i].key, key) == 0) {
            free(value->p);
            return ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: key %s: added twice", key);
        }
    if (w->n_kv == w->cap_kv) {
        size_t cap = w->cap_kv ? 2 * w->cap_kv : 16;
        writer_kv *kvs = realloc(w->kvs, cap * sizeof *kvs);
        if (!kvs)
            value->oom = 1;
        else {
            w->kvs = kvs;
            w->cap_kv = cap;
        }
    }
    char *key_copy = value->oom ? NULL : strdup(key);
    if (!key_copy) {
        free(value->p);
        return ds_fail(msg, msg_len, DS_ENOMEM, "gguf writer: key %s: out of memory", key);
    }
    w->kvs[w->n_kv++] = (writer_kv){key_copy, (uint32_t)type, value->p, value->n};
    if (type == GGUF_TYPE_UINT32 && strcmp(key, "general.alignment") == 0) {
        uint32_t a;
        memcpy(&a, value->p, 4);
        if (a && !(a & (a - 1))) w->alignment = a;
    }
    return DS_OK;
}

static ds_status add_scalar(gguf_writer *w, const char *key, gguf_type type, const void *v,
                            char *msg, size_t msg_len) {
    buf b = {0};
    buf_put(&b, v, gguf_type_size(type));
    return add_kv(w, key, type, &b, msg, msg_len);
}

ds_status gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v, char *msg,
                             size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_UINT8, &v, msg, msg_len);
}
ds_status gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v, char *msg, size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_INT8, &v, msg, msg_len);
}
ds_status gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_UINT16, &v, msg, msg_len);
}
ds_status gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_INT16, &v, msg, msg_len);
}
ds_status gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_UINT32, &v, msg, msg_len);
}
ds_status gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_INT32, &v, msg, msg_len);
}
ds_status gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_UINT64, &v, msg, msg_len);
}
ds_status gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_INT64, &v, msg, msg_len);
}
ds_status gguf_writer_add_f32(gguf_writer *w, const char *key, float v, char *msg, size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_FLOAT32, &v, msg, msg_len);
}
ds_status gguf_writer_add_f64(gguf_writer *w, const char *key, double v, char *msg,
                              size_t msg_len) {
    return add_scalar(w, key, GGUF_TYPE_FLOAT64, &v, msg, msg_len);
}
ds_status gguf_writer_add_bool(gguf_writer *w, const char *key, int v, char *msg, size_t msg_len) {
    uint8_t b = v != 0;
    return add_scalar(w, key, GGUF_TYPE_BOOL, &b, msg, msg_len);
}

ds_status gguf_writer_add_str(gguf_writer *w, const char *key, const char *v, char *msg,
                              size_t msg_len) {
    buf b = {0};
    buf_str(&b, v, strlen(v));
    return add_kv(w, key, GGUF_TYPE_STRING, &b, msg, msg_len);
}

ds_status gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                              const void *values, uint64_t n, char *msg, size_t msg_len) {
    size_t size = gguf_type_size(elem_type);
    if (!size)
        return ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: key %s: %s is not a fixed-size type",
                       key, gguf_type_name(elem_type));
    buf b = {0};
    buf_u32(&b, (uint32_t)elem_type);
    buf_u64(&b, n);
    if (n) buf_put(&b, values, (size_t)n * size);
    return add_kv(w, key, GGUF_TYPE_ARRAY, &b, msg, msg_len);
}

ds_status gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                  const size_t *lens, uint64_t n, char *msg, size_t msg_len) {
    buf b = {0};
    buf_u32(&b, GGUF_TYPE_STRING);
    buf_u64(&b, n);
    for (uint64_t i = 0; i < n; i++)
        buf_str(&b, strs[i], lens ? lens[i] : strlen(strs[i]));
    return add_kv(w, key, GGUF_TYPE_ARRAY, &b, msg, msg_len);
}

ds_status gguf_writer_add_raw(gguf_writer *w, const char *key, gguf_type type, const void *bytes,
                              size_t n_bytes, char *msg, size_t msg_len) {
    buf b = {0};
    buf_put(&b, bytes, n_bytes);
    return add_kv(w, key, type, &b, msg, msg_len);
}

/* ---- quantizers (ggml-quants.c quantize_row_*_ref) ---- */

void gguf_quantize_q8_0(const float *x, void *dst, int64_t n) {
    uint8_t *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 34) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ds_float_to_half(d);
        memcpy(y, &dh, 2);
        for (int j = 0; j < 32; j++)
            y[2 + j] = (uint8_t)(int8_t)roundf(x[j] * id);
    }
}

void gguf_quantize_q4_0(const float *x, void *dst, int64_t n) {
    uint8_t *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 18) {
        float amax = 0.0f, max = 0.0f; /* max keeps the sign of the largest magnitude */
        for (int j = 0; j < 32; j++)
            if (amax < fabsf(x[j])) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ds_float_to_half(d);
        memcpy(y, &dh, 2);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)(x[j] * id + 8.5f), q1 = (int8_t)(x[j + 16] * id + 8.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[2 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void gguf_quantize_q4_1(const float *x, void *dst, int64_t n) {
    uint8_t *y = dst;
    for (int64_t b = 0; b < n / 32; b++, x += 32, y += 20) {
        float min = FLT_MAX, max = -FLT_MAX;
        for (int j = 0; j < 32; j++) {
            min = fminf(min, x[j]);
            max = fmaxf(max, x[j]);
        }
        float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = ds_float_to_half(d), mh = ds_float_to_half(min);
        memcpy(y, &dh, 2);
        memcpy(y + 2, &mh, 2);
        for (int j = 0; j < 16; j++) {
            int q0 = (int8_t)((x[j] - min) * id + 0.5f),
                q1 = (int8_t)((x[j + 16] - min) * id + 0.5f);
            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            y[4 + j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static uint16_t float_to_bf16(float f) { /* round to nearest even, NaN stays a quiet NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* ---- tensors ---- */

static ds_status add_tensor(gguf_writer *w, const char *name, uint32_t type, int n_dims,
                            const int64_t *ne, uint8_t *data, size_t n_bytes, char *msg,
                            size_t msg_len) {
    ds_status st = DS_OK;
    for (size_t i = 0; i < w->n_tensors && !st; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            st = ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: tensor %s: added twice", name);
    if (!st && (n_dims < 0 || n_dims > GGUF_MAX_DIMS))
        st = ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: tensor %s: n_dims = %d", name, n_dims);
    if (!st && w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 16;
        writer_tensor *t = realloc(w->tensors, cap * sizeof *t);
        if (t) {
            w->tensors = t;
            w->cap_tensors = cap;
        }
    }
    char *name_copy = st ? NULL : strdup(name);
    if (!st && (!name_copy || w->n_tensors == w->cap_tensors))
        st = ds_fail(msg, msg_len, DS_ENOMEM, "gguf writer: tensor %s: out of memory", name);
    if (st) {
        free(name_copy);
        free(data);
        return st;
    }
    writer_tensor *t = &w->tensors[w->n_tensors++];
    *t = (writer_tensor){
        .name = name_copy, .type = type, .n_dims = n_dims, .data = data, .n_bytes = n_bytes};
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = d < n_dims ? ne[d] : 1;
    return DS_OK;
}

ds_status gguf_writer_add_tensor_raw(gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                     const int64_t *ne, const void *data, size_t n_bytes, char *msg,
                                     size_t msg_len) {
    uint8_t *copy = malloc(n_bytes ? n_bytes : 1);
    if (!copy)
        return ds_fail(msg, msg_len, DS_ENOMEM, "gguf writer: tensor %s: out of memory", name);
    if (n_bytes) memcpy(copy, data, n_bytes);
    return add_tensor(w, name, type, n_dims, ne, copy, n_bytes, msg, msg_len);
}

ds_status gguf_writer_add_tensor(gguf_writer *w, const char *name, gguf_ggml_type type, int n_dims,
                                 const int64_t *ne, const float *values, char *msg,
                                 size_t msg_len) {
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: tensor %s: n_dims = %d", name,
                       n_dims);
    int64_t n = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0)
            return ds_fail(msg, msg_len, DS_EINVAL, "gguf writer: tensor %s: ne[%d] = %lld", name,
                           d, (long long)ne[d]);
        n *= ne[d];
    }
    int64_t bs = gguf_ggml_block_size(type);
    size_t bb = gguf_ggml_block_bytes(type);
    int supported = type == GGML_TYPE_F32 || type == GGML_TYPE_F16 || type == GGML_TYPE_BF16 ||
                    type == GGML_TYPE_Q8_0 || type == GGML_TYPE_Q4_0 || type == GGML_TYPE_Q4_1;
    if (!supported)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "gguf writer: tensor %s: cannot encode type %d", name, (int)type);
    if (ne[0] % bs)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "gguf writer: tensor %s: row length %lld is not a multiple of %lld", name,
                       (long long)ne[0], (long long)bs);
    size_t n_bytes = (size_t)(n / bs) * bb;
    uint8_t *data = malloc(n_bytes);
    if (!data)
        return ds_fail(msg, msg_len, DS_ENOMEM, "gguf writer: tensor %s: out of memory", name);
    switch (type) {
    case GGML_TYPE_F32: memcpy(data, values, n_bytes); break;
    case GGML_TYPE_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = ds_float_to_half(values[i]);
            memcpy(data + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = float_to_bf16(values[i]);
            memcpy(data + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_Q8_0: gguf_quantize_q8_0(values, data, n); break;
    case GGML_TYPE_Q4_0: gguf_quantize_q4_0(values, data, n); break;
    case GGML_TYPE_Q4_1: gguf_quantize_q4_1(values, data, n); break;
    default: DS_ASSERT(0 && "type checked above");
    }
    return add_tensor(w, name, (uint32_t)type, n_dims, ne, data, n_bytes, msg, msg_len);
}

/* ---- output ---- */

static size_t pad_to(size_t n, size_t align) { return (align - n % align) % align; }

ds_status gguf_writer_write(const gguf_writer *w, const char *path, char *msg, size_t msg_len) {
    buf h = {0};
    buf_u32(&h, 0x46554747u); /* "GGUF" */
    buf_u32(&h, 3);
    buf_u64(&h, w->n_tensors);
    buf_u64(&h, w->n_kv);
    for (size_t i = 0; i < w->n_kv; i++) {
        buf_str(&h, w->kvs[i].key, strlen(w->kvs[i].key));
        buf_u32(&h, w->kvs[i].type);
        buf_put(&h, w->kvs[i].bytes, w->kvs[i].n_bytes);
    }
    uint64_t offset = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        buf_str(&h, t->name, strlen(t->name));
        buf_u32(&h, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++)
            buf_u64(&h, (uint64_t)t->ne[d]);
        buf_u32(&h, t->type);
        buf_u64(&h, offset);
        offset += t->n_bytes + pad_to(t->n_bytes, w->alignment);
    }
    static const uint8_t zeros[256];
    for (size_t pad = pad_to(h.n, w->alignment); pad;) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        buf_put(&h, zeros, k);
        pad -= k;
    }
    if (h.oom) {
        free(h.p);
        return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        int err = errno;
        free(h.p);
        return ds_fail(msg, msg_len, DS_EIO, "%s: %s", path, strerror(err));
    }
    int ok = fwrite(h.p, 1, h.n, fp) == h.n;
    free(h.p);
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const writer_tensor *t = &w->tensors[i];
        size_t pad = pad_to(t->n_bytes, w->alignment);
        ok = fwrite(t->data, 1, t->n_bytes, fp) == t->n_bytes;
        while (ok && pad) {
            size_t k = pad < sizeof zeros ? pad : sizeof zeros;
            ok = fwrite(zeros, 1, k, fp) == k;
            pad -= k;
        }
    }
    if (fclose(fp) != 0) ok = 0;
    if (!ok) return ds_fail(msg, msg_len, DS_EIO, "%s: write failed: %s", path, strerror(errno));
    return DS_OK;
}
