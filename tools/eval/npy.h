/* tools/eval/npy.h — reads NumPy .npy arrays (format 1.0/2.0/3.0, little-endian float32 or
 * float16, C order) into fp32, for K/V dumps handed to decoserve-eval. */
#ifndef DS_TOOLS_EVAL_NPY_H
#define DS_TOOLS_EVAL_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

enum { NPY_MAX_DIMS = 8 };

typedef struct npy_array {
    int n_dims;
    int64_t shape[NPY_MAX_DIMS];
    int64_t n_elements;
    float *data; /* owned; npy_free releases it */
} npy_array;

/* Errors name the file and what is wrong ("k.npy: dtype '<f8': expected '<f4' or '<f2'"). */
ds_status npy_read(const char *path, npy_array *out, char *msg, size_t msg_len);
void npy_free(npy_array *array);

#endif
