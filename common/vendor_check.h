/* common/vendor_check.h — the one check for vendor calls (CUDA, cuBLAS, NCCL, gRPC), which each
 * vendor instantiates with its status type, success value and error-string function (CUDA_CHECK
 * in kernels/cuda_check.h, CUBLAS_CHECK, NCCL_CHECK, GRPC_CALL_CHECK): a failing call returns
 * DS_EINTERNAL from the enclosing function with the statement, file:line and the vendor's error
 * string in the caller's message buffer. Expects `msg` and `msg_len` in scope. */
#ifndef DS_COMMON_VENDOR_CHECK_H
#define DS_COMMON_VENDOR_CHECK_H

#include "common/status.h"

#define DS_VENDOR_CHECK(call, type, ok, errstr)                                                    \
    do {                                                                                           \
        type err_ = (call);                                                                        \
        if (err_ != (ok))                                                                          \
            return ds_fail(msg, msg_len, DS_EINTERNAL, "%s:%d: %s: %s", __FILE__, __LINE__, #call, \
                           errstr(err_));                                                          \
    } while (0)

#endif
