/* kernels/gemv.cu — kernels/gemv.h on the GPU: each warp owns kCols output columns and walks k
 * with 16-byte loads of those weight rows (8 values per lane, 256 per warp-step), multiplying
 * them against the same 8 values of every input row (at most GEMV_MAX_ROWS, kept in L1 by the
 * CTA's warps reading the same x); fp32 accumulators per (row, column), one warp reduction at
 * the end. W is read once, with several independent 16-byte loads in flight per lane. */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kernels/gemv.h"

namespace {

constexpr int kWarps = 4; /* per CTA */

/* Output columns per warp: 2 for one row (more CTAs to stream W), 4 for more (each 16-byte load
 * of x then serves four weight loads). */
template <int R> __host__ __device__ constexpr int cols_for() { return R == 1 ? 2 : 4; }

template <bool BF16> __device__ __forceinline__ float2 to_float2(uint32_t v) {
    if constexpr (BF16) {
        return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(&v));
    } else {
        return __half22float2(*reinterpret_cast<const __half2 *>(&v));
    }
}

/* acc += dot of 8 packed values (a uint4) of w and x. */
template <bool BF16> __device__ __forceinline__ float dot8(uint4 w, uint4 x, float acc) {
    const uint32_t ws[4] = {w.x, w.y, w.z, w.w}, xs[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float2 a = to_float2<BF16>(ws[i]), b = to_float2<BF16>(xs[i]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
    }
    return acc;
}

template <int R, bool BF16, int OUT>
__global__ void __launch_bounds__(kWarps * 32) gemv_kernel(const gemv_params p) {
    constexpr int kCols = cols_for<R>();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int j0 = (blockIdx.x * kWarps + warp) * kCols;
    if (j0 >= p.n_out) return;
    float acc[R][kCols];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < kCols; c++)
            acc[r][c] = 0.0f;
    const int n8 = p.k / 8; /* 16-byte chunks per row */
    const uint4 *w[kCols];
#pragma unroll
    for (int c = 0; c < kCols; c++)
        w[c] = reinterpret_cast<const uint4 *>(p.w + (size_t)min(j0 + c, p.n_out - 1) * p.k);
#pragma unroll 4
    for (int i = lane; i < n8; i += 32) {
        uint4 wv[kCols];
#pragma unroll
        for (int c = 0; c < kCols; c++)
            wv[c] = __ldg(w[c] + i); /* weights: read once, through the read-only path */
#pragma unroll
        for (int r = 0; r < R; r++) {
            const uint4 xv = *(reinterpret_cast<const uint4 *>(p.x + (size_t)r * p.ldx) + i);
#pragma unroll
            for (int c = 0; c < kCols; c++)
                acc[r][c] = dot8<BF16>(wv[c], xv, acc[r][c]);
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < kCols; c++)
#pragma unroll
            for (int o = 16; o; o >>= 1)
                acc[r][c] += __shfl_xor_sync(0xffffffffu, acc[r][c], o);
    if (lane != 0) return;
#pragma unroll
    for (int c = 0; c < kCols; c++) {
        const int j = j0 + c;
        if (j >= p.n_out) break;
#pragma unroll
        for (int r = 0; r < R; r++) {
            const size_t at = j < p.split ? (size_t)r * p.ldo + j
                                          : p.split_stride + (size_t)r * p.ldo + (j - p.split);
            if constexpr (OUT == GEMV_F32) {
                float *o = static_cast<float *>(p.out);
                o[at] = (p.beta != 0.0f ? p.beta * o[at] : 0.0f) + acc[r][c];
            } else if constexpr (OUT == GEMV_BF16) {
                static_cast<__nv_bfloat16 *>(p.out)[at] = __float2bfloat16_rn(acc[r][c]);
            } else {
                static_cast<__half *>(p.out)[at] = __float2half_rn(acc[r][c]);
            }
        }
    }
}

typedef void (*gemv_fn)(const gemv_params);

template <int R> gemv_fn pick(bool bf16, int out) {
    if (bf16) {
        if (out == GEMV_F32) return gemv_kernel<R, true, GEMV_F32>;
        if (out == GEMV_BF16) return gemv_kernel<R, true, GEMV_BF16>;
        return gemv_kernel<R, true, GEMV_F16>;
    }
    if (out == GEMV_F32) return gemv_kernel<R, false, GEMV_F32>;
    if (out == GEMV_BF16) return gemv_kernel<R, false, GEMV_BF16>;
    return gemv_kernel<R, false, GEMV_F16>;
}

} // namespace

ds_status gemv_cuda(const gemv_params *p, cudaStream_t stream, char *msg, size_t msg_len) {
    if (p->n_rows < 0 || p->n_rows > GEMV_MAX_ROWS || p->k <= 0 || p->k % 8 || p->n_out <= 0 ||
        p->ldx % 8 || (p->w_type != GEMV_F16 && p->w_type != GEMV_BF16))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "gemv (cuda): %d rows (at most %d), k = %d and ldx = %zu (multiples of 8), "
                       "%d outputs, weight type %d",
                       p->n_rows, GEMV_MAX_ROWS, p->k, p->ldx, p->n_out, (int)p->w_type);
    if (p->n_rows == 0) return DS_OK;
    const bool bf16 = p->w_type == GEMV_BF16;
    gemv_fn fn = nullptr;
    switch (p->n_rows) {
    case 1: fn = pick<1>(bf16, p->out_type); break;
    case 2: fn = pick<2>(bf16, p->out_type); break;
    case 3: fn = pick<3>(bf16, p->out_type); break;
    case 4: fn = pick<4>(bf16, p->out_type); break;
    case 5: fn = pick<5>(bf16, p->out_type); break;
    case 6: fn = pick<6>(bf16, p->out_type); break;
    case 7: fn = pick<7>(bf16, p->out_type); break;
    default: fn = pick<8>(bf16, p->out_type); break;
    }
    const int per_cta = kWarps * (p->n_rows == 1 ? cols_for<1>() : cols_for<2>());
    fn<<<(p->n_out + per_cta - 1) / per_cta, kWarps * 32, 0, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
