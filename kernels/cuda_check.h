/* kernels/cuda_check.h — the vendor-call check for CUDA (DESIGN: one generic macro per vendor):
 * a failing call returns DS_EINTERNAL from the enclosing function with the statement, file:line
 * and CUDA's error string in the caller's message buffer. Expects `msg` and `msg_len` in scope.
 * Every kernel launch is followed by CUDA_CHECK(cudaGetLastError()). */
#ifndef DS_KERNELS_CUDA_CHECK_H
#define DS_KERNELS_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "common/status.h"

#define DS_VENDOR_CHECK(call, type, ok, errstr)                                                    \
    do {                                                                                           \
        type err_ = (call);                                                                        \
        if (err_ != (ok))                                                                          \
            return ds_fail(msg, msg_len, DS_EINTERNAL, "%s:%d: %s: %s", __FILE__, __LINE__, #call, \
                           errstr(err_));                                                          \
    } while (0)

#define CUDA_CHECK(call) DS_VENDOR_CHECK(call, cudaError_t, cudaSuccess, cudaGetErrorString)

#endif
