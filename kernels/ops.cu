/* kernels/ops.cu — the element-wise ops of the forward pass on fp16 tensors with fp32 math (RoPE,
 * SwiGLU). References: kernels/ops.h; tests/gpu/ compares. */
#include <cuda_runtime.h>
#include <math.h>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_common.cuh"

namespace {

constexpr int kThreads = 256;

DS_DEV uint16_t to_half(float x) { return __half_as_ushort(__float2half_rn(x)); }

/* One thread per (row, pair i, head): the angle in fp32, cos/sin in double, as ops_rope_ref. */
__global__ void rope_kernel(const ops_rope_cuda_params p) {
    const int half = p.head_dim / 2;
    const size_t n = (size_t)p.n_rows * half * p.n_heads;
    for (size_t x = (size_t)blockIdx.x * blockDim.x + threadIdx.x; x < n;
         x += (size_t)gridDim.x * blockDim.x) {
        const int h = (int)(x % p.n_heads), i = (int)(x / p.n_heads % half);
        const int r = (int)(x / ((size_t)p.n_heads * half));
        const float angle = (float)p.positions[r] * p.inv_freq[i];
        const float c = (float)cos((double)angle), s = (float)sin((double)angle);
        uint16_t *head = p.x + (size_t)r * p.row_stride + (size_t)h * p.head_dim;
        const float x0 = half_bits_to_float(head[i]), x1 = half_bits_to_float(head[i + half]);
        head[i] = to_half(x0 * c - x1 * s);
        head[i + half] = to_half(x1 * c + x0 * s);
    }
}

__global__ void swiglu_kernel(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = half_bits_to_float(gate[i]);
        out[i] = to_half(g / (1.0f + expf(-g)) * half_bits_to_float(up[i]));
    }
}

} // namespace

static int grid_for(size_t n) {
    const size_t blocks = (n + kThreads - 1) / kThreads;
    return (int)(blocks < 65536 ? (blocks ? blocks : 1) : 65536);
}

ds_status ops_rope_cuda(const ops_rope_cuda_params *p, cudaStream_t stream, char *msg,
                        size_t msg_len) {
    if (p->head_dim <= 0 || p->head_dim % 2)
        return ds_fail(msg, msg_len, DS_EINVAL, "rope (cuda): head_dim = %d", p->head_dim);
    const size_t n = (size_t)p->n_rows * (p->head_dim / 2) * p->n_heads;
    if (n == 0) return DS_OK;
    rope_kernel<<<grid_for(n), kThreads, 0, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

ds_status ops_swiglu_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n,
                          cudaStream_t stream, char *msg, size_t msg_len) {
    if (n == 0) return DS_OK;
    swiglu_kernel<<<grid_for(n), kThreads, 0, stream>>>(out, gate, up, n);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
