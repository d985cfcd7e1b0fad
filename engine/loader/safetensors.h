/* engine/loader/safetensors.h — read-only access to Hugging Face .safetensors files: one file
 * mmapped and its JSON header validated against the file size, or a checkpoint directory (one
 * model.safetensors, or shards listed by model.safetensors.index.json). Called by the HF loader
 * (engine/loader/llama_hf.c); tensors are converted to fp32 on request.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
 * data_offsets: [begin, end]}, "__metadata__": {string: string}}, then the data; offsets are
 * relative to the first byte after the header. */
#ifndef DS_ENGINE_LOADER_SAFETENSORS_H
#define DS_ENGINE_LOADER_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SAFETENSORS_MAX_DIMS 8
/* The reference implementation refuses headers above 100 MB; so do we. */
#define SAFETENSORS_MAX_HEADER_BYTES (100u << 20)

typedef enum safetensors_dtype {
    SAFETENSORS_BOOL,
    SAFETENSORS_U8,
    SAFETENSORS_I8,
    SAFETENSORS_F8_E5M2,
    SAFETENSORS_F8_E4M3,
    SAFETENSORS_F8_E8M0,
    SAFETENSORS_I16,
    SAFETENSORS_U16,
    SAFETENSORS_F16,
    SAFETENSORS_BF16,
    SAFETENSORS_I32,
    SAFETENSORS_U32,
    SAFETENSORS_F32,
    SAFETENSORS_F64,
    SAFETENSORS_I64,
    SAFETENSORS_U64,
    SAFETENSORS_C64,
    SAFETENSORS_DTYPE_COUNT,
} safetensors_dtype;

typedef struct safetensors_tensor {
    const char *name; /* borrowed from the file's parsed header */
    const char *path; /* the file it lives in (for messages) */
    safetensors_dtype dtype;
    int n_dims; /* 0 for a scalar */
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t n_elements;   /* product of shape (1 for a scalar) */
    const uint8_t *data; /* n_bytes inside the mapping, little-endian, possibly unaligned */
    size_t n_bytes;
} safetensors_tensor;

/* One mmapped file; opaque. Tensors and names borrow from it until safetensors_close. */
typedef struct safetensors_file safetensors_file;

/* Maps path and validates the whole header: header length within the file, JSON object,
 * every tensor's dtype known, shape non-negative integers, data_offsets [begin <= end] inside
 * the data region, (end - begin) == n_elements * dtype size, names unique. Tensors may be
 * stored in any order and may share bytes. Errors name the file, the tensor and the field. */
ds_status safetensors_open(const char *path, safetensors_file **out, char *msg, size_t msg_len);
void safetensors_close(safetensors_file *file); /* NULL-safe */

size_t safetensors_n_tensors(const safetensors_file *file);
/* i-th tensor in name order, i < safetensors_n_tensors(file). */
const safetensors_tensor *safetensors_tensor_at(const safetensors_file *file, size_t i);
/* NULL when absent. */
const safetensors_tensor *safetensors_find(const safetensors_file *file, const char *name);
/* A "__metadata__" value, or NULL when absent. */
const char *safetensors_metadata(const safetensors_file *file, const char *key);

/* "F32", "BF16", ...; sizes in bytes per element. */
const char *safetensors_dtype_name(safetensors_dtype dtype);
size_t safetensors_dtype_size(safetensors_dtype dtype);

/* Converts an F32, F16 or BF16 tensor into dst[tensor->n_elements]; other dtypes return
 * DS_EUNSUPPORTED naming the file, tensor and dtype. */
ds_status safetensors_to_f32(const safetensors_tensor *tensor, float *dst, char *msg,
                             size_t msg_len);

/* A checkpoint directory: dir/model.safetensors.index.json (its weight_map names the shard of
 * every tensor; every shard is opened and every listed tensor must be in its shard) or else
 * dir/model.safetensors. Opaque; tensors borrow from it until safetensors_checkpoint_close. */
typedef struct safetensors_checkpoint safetensors_checkpoint;

ds_status safetensors_checkpoint_open(const char *dir, safetensors_checkpoint **out, char *msg,
                                      size_t msg_len);
void safetensors_checkpoint_close(safetensors_checkpoint *ckpt); /* NULL-safe */

/* The file to name in messages about the checkpoint as a whole (the index or the one file). */
const char *safetensors_checkpoint_path(const safetensors_checkpoint *ckpt);
/* NULL when no shard holds name; tensor->path names its shard. */
const safetensors_tensor *safetensors_checkpoint_find(const safetensors_checkpoint *ckpt,
                                                      const char *name);

#endif
