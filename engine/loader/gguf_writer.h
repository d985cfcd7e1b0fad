/* engine/loader/gguf_writer.h — builds a GGUF v3 file in memory and writes it out: metadata of
 * every value type, and tensors given as floats (quantized here to F32/F16/BF16/Q8_0/Q4_0/Q4_1
 * with ggml's reference rounding) or as already-encoded bytes. Used by the tiny-model tool
 * (tools/mkmodel) and by tests; not on any serving path, so it keeps every tensor in memory
 * (the encoded size) until gguf_writer_write. Keys and tensor names must be unique. */
#ifndef DS_ENGINE_LOADER_GGUF_WRITER_H
#define DS_ENGINE_LOADER_GGUF_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/loader/gguf.h"

typedef struct gguf_writer gguf_writer;

/* Creates an empty writer (alignment 32, or general.alignment once that key is added).
 * Returns NULL only when out of memory. */
gguf_writer *gguf_writer_create(void);
void gguf_writer_destroy(gguf_writer *w); /* NULL-safe */

/* Scalars. Every adder returns DS_EINVAL (naming the key) for a duplicate key, DS_ENOMEM when
 * out of memory. */
ds_status gguf_writer_add_u8(gguf_writer *w, const char *key, uint8_t v, char *msg, size_t msg_len);
ds_status gguf_writer_add_i8(gguf_writer *w, const char *key, int8_t v, char *msg, size_t msg_len);
ds_status gguf_writer_add_u16(gguf_writer *w, const char *key, uint16_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_i16(gguf_writer *w, const char *key, int16_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_u32(gguf_writer *w, const char *key, uint32_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_i32(gguf_writer *w, const char *key, int32_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_u64(gguf_writer *w, const char *key, uint64_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_i64(gguf_writer *w, const char *key, int64_t v, char *msg,
                              size_t msg_len);
ds_status gguf_writer_add_f32(gguf_writer *w, const char *key, float v, char *msg, size_t msg_len);
ds_status gguf_writer_add_f64(gguf_writer *w, const char *key, double v, char *msg, size_t msg_len);
ds_status gguf_writer_add_bool(gguf_writer *w, const char *key, int v, char *msg, size_t msg_len);
ds_status gguf_writer_add_str(gguf_writer *w, const char *key, const char *v, char *msg,
                              size_t msg_len);

/* An array of n fixed-size elements of elem_type, given packed in host (little-endian) order,
 * e.g. (GGUF_TYPE_FLOAT32, const float *) or (GGUF_TYPE_INT32, const int32_t *). */
ds_status gguf_writer_add_arr(gguf_writer *w, const char *key, gguf_type elem_type,
                              const void *values, uint64_t n, char *msg, size_t msg_len);
/* An array of n strings; lens may be NULL for NUL-terminated strings. */
ds_status gguf_writer_add_arr_str(gguf_writer *w, const char *key, const char *const *strs,
                                  const size_t *lens, uint64_t n, char *msg, size_t msg_len);
/* Any value, given as its encoded bytes (what follows the type field in the file): how tests
 * write nested arrays and deliberately malformed values. */
ds_status gguf_writer_add_raw(gguf_writer *w, const char *key, gguf_type type, const void *bytes,
                              size_t n_bytes, char *msg, size_t msg_len);

/* A tensor of ne[0] x ... x ne[n_dims-1] floats (ne[0] contiguous), encoded as type (F32, F16,
 * BF16, Q8_0, Q4_0 or Q4_1; ne[0] a multiple of the block size). */
ds_status gguf_writer_add_tensor(gguf_writer *w, const char *name, gguf_ggml_type type, int n_dims,
                                 const int64_t *ne, const float *values, char *msg, size_t msg_len);
/* A tensor of any type id given as encoded bytes (n_bytes is trusted: tests use it to write
 * inconsistent files). */
ds_status gguf_writer_add_tensor_raw(gguf_writer *w, const char *name, uint32_t type, int n_dims,
                                     const int64_t *ne, const void *data, size_t n_bytes, char *msg,
                                     size_t msg_len);

/* Writes the file (header, metadata, tensor infos, aligned data). DS_EIO names the path. */
ds_status gguf_writer_write(const gguf_writer *w, const char *path, char *msg, size_t msg_len);

/* ggml reference quantizers of n values (a multiple of 32) into blocks at dst. */
void gguf_quantize_q8_0(const float *src, void *dst, int64_t n);
void gguf_quantize_q4_0(const float *src, void *dst, int64_t n);
void gguf_quantize_q4_1(const float *src, void *dst, int64_t n);

#endif
