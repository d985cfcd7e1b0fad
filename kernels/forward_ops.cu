/* kernels/forward_ops.cu — embedding into fp32, RMSNorm of fp32 rows, dtype conversion, bf16
 * SwiGLU and seeded Gaussian fill for the CUDA forward pass. References and formulas:
 * kernels/forward_ops.h; launchers declared in kernels/cuda.h; tests/gpu/ compares. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float load_as_float(const void *p, int type, size_t i) {
    switch (type) {
    case FWD_F32: return static_cast<const float *>(p)[i];
    case FWD_F16: return __half2float(static_cast<const __half *>(p)[i]);
    default: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    }
}

__device__ __forceinline__ void store_float(void *p, int type, size_t i, float v) {
    switch (type) {
    case FWD_F32: static_cast<float *>(p)[i] = v; break;
    case FWD_F16: static_cast<__half *>(p)[i] = __float2half_rn(v); break;
    default: static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v); break;
    }
}

__global__ void embed_kernel(float *x, const void *table, int type, int dim, const int32_t *ids) {
    const size_t src = (size_t)ids[blockIdx.x] * dim, dst = (size_t)blockIdx.x * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
        x[dst + c] = load_as_float(table, type, src + c);
}

/* One CTA per output row; the sum of squares in double, as ops_rmsnorm_scale. */
__global__ void rmsnorm_kernel(const fwd_rmsnorm_params p) {
    __shared__ double partial[kThreads / 32];
    const int dim = p.dim;
    const float *xr = p.x + (size_t)(p.rows ? p.rows[blockIdx.x] : blockIdx.x) * dim;
    double ss = 0.0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
        ss += (double)xr[c] * xr[c];
    for (int o = 16; o; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    double total = 0.0;
    for (int w = 0; w < kThreads / 32; w++)
        total += partial[w];
    const float scale = (float)(1.0 / sqrt(total / dim + p.eps));
    const size_t base = (size_t)blockIdx.x * dim;
    for (int c = threadIdx.x; c < dim; c += blockDim.x)
        store_float(p.out, p.out_type, base + c, xr[c] * scale * p.weight[c]);
}

__global__ void convert_kernel(void *dst, int dst_type, const void *src, int src_type, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x)
        store_float(dst, dst_type, i, load_as_float(src, src_type, i));
}

__global__ void swiglu_bf16_kernel(__nv_bfloat16 *out, const __nv_bfloat16 *gate,
                                   const __nv_bfloat16 *up, size_t n) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float g = __bfloat162float(gate[i]);
        out[i] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * __bfloat162float(up[i]));
    }
}

/* splitmix64's finaliser: a bijective hash, so (seed, i) -> independent-looking bits
 * (common/rng.h's ds_rng_u64 is this of its advanced state). */
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_normal_kernel(void *dst, int type, fwd_fill_block blk, float mean, float std,
                                   uint64_t seed) {
    const size_t n = blk.rows * blk.cols;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const size_t g = (blk.row0 + i / blk.cols) * blk.global_cols + blk.col0 + i % blk.cols;
        const uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ull * (g + 1));
        /* Box-Muller on two 32-bit uniforms; u1 in (0, 1]. */
        const float u1 = ((float)(uint32_t)(h >> 32) + 1.0f) * 2.3283064e-10f;
        const float u2 = (float)(uint32_t)h * 2.3283064e-10f;
        const float z = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
        store_float(dst, type, i, mean + std * z);
    }
}

int grid_for(size_t n) {
    const size_t blocks = (n + kThreads - 1) / kThreads;
    return (int)(blocks < 8192 ? (blocks ? blocks : 1) : 8192);
}

} // namespace

ds_status fwd_embed_cuda(float *x, const void *table, fwd_dtype table_type, int dim,
                         const int32_t *ids, int n_ids, cudaStream_t stream, char *msg,
                         size_t msg_len) {
    if (n_ids == 0) return DS_OK;
    embed_kernel<<<n_ids, kThreads, 0, stream>>>(x, table, table_type, dim, ids);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

ds_status fwd_rmsnorm_cuda(const fwd_rmsnorm_params *p, cudaStream_t stream, char *msg,
                           size_t msg_len) {
    if (p->n_rows == 0) return DS_OK;
    rmsnorm_kernel<<<p->n_rows, kThreads, 0, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

ds_status fwd_convert_cuda(void *dst, fwd_dtype dst_type, const void *src, fwd_dtype src_type,
                           size_t n, cudaStream_t stream, char *msg, size_t msg_len) {
    if (n == 0) return DS_OK;
    convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, dst_type, src, src_type, n);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

ds_status fwd_swiglu_bf16_cuda(uint16_t *out, const uint16_t *gate, const uint16_t *up, size_t n,
                               cudaStream_t stream, char *msg, size_t msg_len) {
    if (n == 0) return DS_OK;
    swiglu_bf16_kernel<<<grid_for(n), kThreads, 0, stream>>>(
        reinterpret_cast<__nv_bfloat16 *>(out), reinterpret_cast<const __nv_bfloat16 *>(gate),
        reinterpret_cast<const __nv_bfloat16 *>(up), n);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

ds_status fwd_fill_normal_cuda(void *dst, fwd_dtype type, const fwd_fill_block *block, float mean,
                               float std, uint64_t seed, cudaStream_t stream, char *msg,
                               size_t msg_len) {
    const size_t n = block->rows * block->cols;
    if (n == 0) return DS_OK;
    fill_normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, type, *block, mean, std, seed);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
