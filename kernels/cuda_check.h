/* kernels/cuda_check.h — the vendor-call check (common/vendor_check.h) for CUDA: a failing call
 * returns DS_EINTERNAL from the enclosing function with the statement, file:line and CUDA's error
 * string in the caller's message buffer. Expects `msg` and `msg_len` in scope. Every kernel launch
 * is followed by CUDA_CHECK(cudaGetLastError()). */
#ifndef DS_KERNELS_CUDA_CHECK_H
#define DS_KERNELS_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "common/vendor_check.h"

#define CUDA_CHECK(call) DS_VENDOR_CHECK(call, cudaError_t, cudaSuccess, cudaGetErrorString)

#endif
