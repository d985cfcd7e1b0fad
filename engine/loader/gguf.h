/* engine/loader/gguf.h — read-only view of a GGUF file (llama.cpp's model format, v2 and v3):
 * metadata key/values, tensor directory, and dequantization of the ggml block types we support.
 * The file is mmapped; gguf_open validates every length against the file size, so a truncated or
 * byte-flipped file gives an error naming the file and the field, never a crash. Callers: the
 * Llama loader (llama_gguf.c) and the tokenizer. Lifetime: everything a getter returns (strings,
 * arrays, tensor data) lives until gguf_close.
 *
 * Layout (little-endian): "GGUF" u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key,
 * u32 value type, value); n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type,
 * u64 offset); padding to general.alignment (default 32); tensor data. A string is u64 length +
 * bytes (no NUL); an array is u32 element type + u64 count + elements (arrays may nest). */
#ifndef DS_ENGINE_LOADER_GGUF_H
#define DS_ENGINE_LOADER_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32

/* Metadata value types (the numbering is the file format's). */
typedef enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT
} gguf_type;

/* Tensor element types (ggml's numbering). Every type ggml defines can be opened (its size is
 * known); gguf_dequantize supports F32, F16, BF16, Q8_0, Q4_0 and Q4_1. */
typedef enum gguf_ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2, /* 32 values: fp16 d, 16 bytes of nibbles; x = (q - 8) * d */
    GGML_TYPE_Q4_1 = 3, /* 32 values: fp16 d, fp16 m, 16 bytes of nibbles; x = q * d + m */
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8, /* 32 values: fp16 d, 32 int8; x = q * d */
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    GGML_TYPE_MXFP4 = 39,
    GGML_TYPE_NVFP4 = 40,
    GGML_TYPE_Q1_0 = 41,
    GGML_TYPE_COUNT
} gguf_ggml_type;

/* A string inside the file: not NUL-terminated, may contain any byte. */
typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

/* An array value. Fixed-size elements are packed little-endian at `data` (possibly unaligned:
 * read them with gguf_array_i64/f64 or the gguf_get_arr_* copies). */
typedef struct gguf_array {
    gguf_type elem_type;
    uint64_t n;
    const uint8_t *data;             /* fixed-size element types */
    const gguf_str *strs;            /* elem_type == STRING: n strings */
    const struct gguf_array *arrays; /* elem_type == ARRAY: n nested arrays */
} gguf_array;

typedef struct gguf_tensor {
    const char *name; /* NUL-terminated */
    gguf_ggml_type type;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the innermost (contiguous) dimension; unused = 1 */
    int64_t n_elements;
    uint64_t offset; /* from the start of the data section */
    uint64_t n_bytes;
    const void *data; /* inside the mmap */
} gguf_tensor;

typedef struct gguf_file gguf_file;

/* Maps and parses path. On error *out is NULL and msg names the file and the field. */
ds_status gguf_open(const char *path, gguf_file **out, char *msg, size_t msg_len);
void gguf_close(gguf_file *file); /* NULL-safe */

const char *gguf_path(const gguf_file *file);
uint32_t gguf_version(const gguf_file *file);
uint32_t gguf_alignment(const gguf_file *file);
uint64_t gguf_data_offset(const gguf_file *file); /* byte offset of the data section */

/* --- metadata --- */
int64_t gguf_n_kv(const gguf_file *file);
int64_t gguf_find_key(const gguf_file *file, const char *key); /* index, or -1 */
const char *gguf_kv_key(const gguf_file *file, int64_t index);
gguf_type gguf_kv_type(const gguf_file *file, int64_t index);
const gguf_array *gguf_kv_array(const gguf_file *file, int64_t index); /* NULL unless ARRAY */

/* Typed getters by key: DS_ENOTFOUND when absent, DS_EINVAL when the stored type does not fit
 * (integers convert between widths when the value is in range; f32 accepts f32 and f64). The
 * message reads "model.gguf: key llama.block_count: expected uint32, got string". */
ds_status gguf_get_u32(const gguf_file *file, const char *key, uint32_t *out, char *msg,
                       size_t msg_len);
ds_status gguf_get_i32(const gguf_file *file, const char *key, int32_t *out, char *msg,
                       size_t msg_len);
ds_status gguf_get_u64(const gguf_file *file, const char *key, uint64_t *out, char *msg,
                       size_t msg_len);
ds_status gguf_get_f32(const gguf_file *file, const char *key, float *out, char *msg,
                       size_t msg_len);
ds_status gguf_get_bool(const gguf_file *file, const char *key, int *out, char *msg,
                        size_t msg_len);
/* *out is NUL-terminated (a copy owned by the file); *len excludes the NUL (may be NULL). */
ds_status gguf_get_str(const gguf_file *file, const char *key, const char **out, size_t *len,
                       char *msg, size_t msg_len);
ds_status gguf_get_arr(const gguf_file *file, const char *key, const gguf_array **out, char *msg,
                       size_t msg_len);
/* Array length and element type in one call. */
ds_status gguf_get_arr_info(const gguf_file *file, const char *key, gguf_type *elem_type,
                            uint64_t *n, char *msg, size_t msg_len);
/* Element i of a string array. */
ds_status gguf_get_arr_str(const gguf_file *file, const char *key, uint64_t i, gguf_str *out,
                           char *msg, size_t msg_len);
/* Copy a numeric array (any integer/float/bool element type) converted to dst[n]; n must equal
 * the array's length. Integer targets reject non-integral or out-of-range values. */
ds_status gguf_get_arr_f32(const gguf_file *file, const char *key, float *dst, uint64_t n,
                           char *msg, size_t msg_len);
ds_status gguf_get_arr_i32(const gguf_file *file, const char *key, int32_t *dst, uint64_t n,
                           char *msg, size_t msg_len);

/* Element i of a numeric array as int64 / double (bool reads 0/1). i < arr->n. */
int64_t gguf_array_i64(const gguf_array *arr, uint64_t i);
double gguf_array_f64(const gguf_array *arr, uint64_t i);

/* --- tensors --- */
int64_t gguf_n_tensors(const gguf_file *file);
const gguf_tensor *gguf_tensor_at(const gguf_file *file, int64_t index);
const gguf_tensor *gguf_find_tensor(const gguf_file *file, const char *name); /* or NULL */

/* --- types --- */
const char *gguf_type_name(gguf_type type);           /* "uint32", ...; "?" if unknown */
size_t gguf_type_size(gguf_type type);                /* fixed-size types; 0 for string/array */
const char *gguf_ggml_type_name(gguf_ggml_type type); /* "q4_1", ...; NULL if unknown */
int64_t gguf_ggml_block_size(gguf_ggml_type type);    /* values per block; 0 if unknown */
size_t gguf_ggml_block_bytes(gguf_ggml_type type);    /* bytes per block; 0 if unknown */

/* Decode n values (a multiple of the type's block size) from src into dst. DS_EUNSUPPORTED for
 * types other than F32/F16/BF16/Q8_0/Q4_0/Q4_1, DS_EINVAL when n does not fill whole blocks. */
ds_status gguf_dequantize(gguf_ggml_type type, const void *src, float *dst, int64_t n);

#endif
