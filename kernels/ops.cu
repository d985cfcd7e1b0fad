/* kernels/ops.cu — the element-wise ops of the forward pass on fp16 tensors with fp32 math (RoPE,
 * SwiGLU) and the sampling helpers (argmax, top-k).
 * References: kernels/ops.h and kernels/sample.h; tests/gpu/ compares. */
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

/* ---- sampling ----------------------------------------------------------------------------- */

/* The total order of sample.h, made strict for NaNs (lower id first among them). */
DS_DEV bool ranks_before(float a, int32_t ia, float b, int32_t ib) {
    if (a != a && b != b) return ia < ib;
    return sample_ranks_before(a, ia, b, ib);
}

struct scored {
    float v;
    int32_t id; /* -1: none */
};

DS_DEV scored better(scored a, scored b) {
    if (a.id < 0) return b;
    if (b.id < 0) return a;
    return ranks_before(a.v, a.id, b.v, b.id) ? a : b;
}

DS_DEV scored block_best(scored x, scored *sm) {
    for (int o = 16; o; o >>= 1) {
        scored y;
        y.v = __shfl_xor_sync(0xffffffffu, x.v, o);
        y.id = __shfl_xor_sync(0xffffffffu, x.id, o);
        x = better(x, y);
    }
    if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = x;
    __syncthreads();
    scored best = sm[0];
    for (int w = 1; w < kThreads / 32; w++)
        best = better(best, sm[w]);
    __syncthreads();
    return best;
}

/* One CTA per row. Top-k: k rounds, each the best element ranking after the previous round's,
 * so nothing is marked; O(k * vocab) per row, fine for the k <= 1024 sampling asks for. */
__global__ void topk_kernel(float *values, int32_t *ids, const float *logits, int vocab, int k) {
    __shared__ scored sm[kThreads / 32];
    const float *x = logits + (size_t)blockIdx.x * vocab;
    scored prev = {0.0f, -1};
    for (int round = 0; round < k; round++) {
        scored best = {0.0f, -1};
        for (int i = threadIdx.x; i < vocab; i += blockDim.x)
            if (prev.id < 0 || ranks_before(prev.v, prev.id, x[i], i))
                best = better(best, scored{x[i], i});
        prev = block_best(best, sm);
        if (threadIdx.x == 0) {
            if (values) values[(size_t)blockIdx.x * k + round] = prev.v;
            ids[(size_t)blockIdx.x * k + round] = prev.id;
        }
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

ds_status sample_argmax_cuda(int32_t *ids, const float *logits, int n_rows, int vocab,
                             cudaStream_t stream, char *msg, size_t msg_len) {
    return sample_topk_cuda(nullptr, ids, logits, n_rows, vocab, 1, stream, msg, msg_len);
}

ds_status sample_topk_cuda(float *values, int32_t *ids, const float *logits, int n_rows, int vocab,
                           int k, cudaStream_t stream, char *msg, size_t msg_len) {
    if (k < 1 || k > vocab || k > 1024)
        return ds_fail(msg, msg_len, DS_EINVAL, "top-k (cuda): k = %d with vocab %d (1..1024)", k,
                       vocab);
    if (n_rows == 0) return DS_OK;
    topk_kernel<<<n_rows, kThreads, 0, stream>>>(values, ids, logits, vocab, k);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
