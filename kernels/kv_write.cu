/* kernels/kv_write.cu — reshape_and_cache and batched page compression (see kv_write.h).
 *
 * Compression is kvcache/decoquant.c ported operation for operation, one CTA per page: the same
 * summation orders (dot products with eight float partial sums then a double sum, the Jacobi
 * sweep order, the selection sort), every float and double operation rounded on its own
 * (__fmul_rn and friends: no fused multiply-add, as in the C build), so the pages come out equal
 * to the C codec's byte for byte. Parallel loops only split work whose elements are independent
 * (the Jacobi rotation's row and column updates, the large tensor's columns, the codes). */
#include <cuda_runtime.h>

#include "kernels/cuda.h"
#include "kernels/cuda_check.h"
#include "kernels/cuda_common.cuh"

namespace {

constexpr int kThreads = 256;

/* ---- reshape_and_cache ------------------------------------------------------------------ */

/* One CTA per row: K then V, H * D halves each, 16 bytes per thread where aligned. */
__global__ void reshape_and_cache_kernel(const reshape_and_cache_params p) {
    const int r = blockIdx.x, slot = p.slots[r];
    if (slot < 0) return;
    const int T = p.block_size, n = p.n_kv_heads * p.head_dim;
    uint16_t *blk = p.cache.open + (size_t)(slot / T) * p.cache.open_block_stride;
    for (int which = 0; which < 2; which++) {
        const uint16_t *src = which ? p.v + (size_t)r * p.v_stride : p.k + (size_t)r * p.k_stride;
        uint16_t *dst = blk + ((size_t)which * T + slot % T) * n;
        if (((uintptr_t)src | (uintptr_t)dst | (size_t)n * 2) % 16 == 0) {
            for (int i = threadIdx.x; i < n / 8; i += blockDim.x)
                reinterpret_cast<uint4 *>(dst)[i] = reinterpret_cast<const uint4 *>(src)[i];
        } else {
            for (int i = threadIdx.x; i < n; i += blockDim.x)
                dst[i] = src[i];
        }
    }
}

/* ---- compression: exact-rounding arithmetic -------------------------------------------------- */

DS_DEV float fmul(float a, float b) { return __fmul_rn(a, b); }
DS_DEV float fadd(float a, float b) { return __fadd_rn(a, b); }
DS_DEV double dmul(double a, double b) { return __dmul_rn(a, b); }
DS_DEV double dadd(double a, double b) { return __dadd_rn(a, b); }
DS_DEV double dsub(double a, double b) { return __dadd_rn(a, -b); }

/* decoquant.c's dot_f32: eight float partial sums over blocks of 8, summed in double, then the
 * tail in double. */
DS_DEV double dot_f32(const float *a, const float *b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int k = 0;
    for (; k + 8 <= n; k += 8)
#pragma unroll
        for (int l = 0; l < 8; l++)
            acc[l] = fadd(acc[l], fmul(a[k + l], b[k + l]));
    double sum = 0.0;
#pragma unroll
    for (int l = 0; l < 8; l++)
        sum = dadd(sum, (double)acc[l]);
    for (; k < n; k++)
        sum = dadd(sum, dmul((double)a[k], (double)b[k]));
    return sum;
}

DS_DEV uint16_t to_half_bits(float x) { return __half_as_ushort(__float2half_rn(x)); }

/* Shared-memory workspace of one page (the codec's workspace, same roles). */
struct page_work {
    float *in;      /* [T*D] the fp16 page as fp32, later values in storage order */
    float *mat;     /* [T*D] M' (DecoQuant) */
    float *large;   /* [T*D] the large tensor B */
    uint8_t *codes; /* [T*D] */
    double *gram, *vecs, *aux, *rhs; /* [m*m] each */
    float *small;                    /* [m*m] */
    float *gscale, *gmin, *ginv;     /* [n_groups] */
    int *order;                      /* [m] */
    double *scalar;                  /* [2] broadcasts */
};

DS_DEV size_t align16(size_t n) { return (n + 15) / 16 * 16; }

size_t work_bytes(const kv_page_format *f) {
    const size_t td = (size_t)f->block_size * f->head_dim, mm = (size_t)f->m * f->m;
    const size_t g = (size_t)(f->n_groups > 0 ? f->n_groups : 1);
    auto a16 = [](size_t n) { return (n + 15) / 16 * 16; };
    return 3 * a16(td * 4) + a16(td) + 4 * a16(mm * 8) + a16(mm * 4) + 3 * a16(g * 4) +
           a16((size_t)(f->m > 0 ? f->m : 1) * 4) + 16;
}

DS_DEV page_work carve(const kv_page_format &f, uint8_t *base) {
    const size_t td = (size_t)f.block_size * f.head_dim, mm = (size_t)f.m * f.m;
    const size_t g = (size_t)(f.n_groups > 0 ? f.n_groups : 1);
    page_work w;
    uint8_t *p = base;
    w.in = (float *)p, p += align16(td * 4);
    w.mat = (float *)p, p += align16(td * 4);
    w.large = (float *)p, p += align16(td * 4);
    w.codes = p, p += align16(td);
    w.gram = (double *)p, p += align16(mm * 8);
    w.vecs = (double *)p, p += align16(mm * 8);
    w.aux = (double *)p, p += align16(mm * 8);
    w.rhs = (double *)p, p += align16(mm * 8);
    w.small = (float *)p, p += align16(mm * 4);
    w.gscale = (float *)p, p += align16(g * 4);
    w.gmin = (float *)p, p += align16(g * 4);
    w.ginv = (float *)p, p += align16(g * 4);
    w.order = (int *)p, p += align16((size_t)(f.m > 0 ? f.m : 1) * 4);
    w.scalar = (double *)p;
    return w;
}

/* Storage order of decoquant.c's to_storage: mat is the page [T][D] (RTN, KIVI) or the large
 * tensor [rank][n] (DecoQuant); index i of x takes element src_of(i) of mat. */
DS_DEV int storage_source(const kv_page_format &f, int i) {
    if (f.method == KV_KIVI && !f.is_values) { /* x[c * T + t] = mat[t * D + c] */
        const int c = i / f.block_size, t = i % f.block_size;
        return t * f.head_dim + c;
    }
    if (f.method == KV_DECOQUANT && f.axis_chan) { /* x[(r*d2 + c2)*t2 + t2i] = mat[r*n + ...] */
        const int t2i = i % f.t2, rc = i / f.t2, c2 = rc % f.d2, r = rc / f.d2;
        return r * f.n + t2i * f.d2 + c2;
    }
    return i;
}

/* quantize_groups: (scale, min) per group into the page, codes, and x := its dequantized value. */
DS_DEV void quantize(const kv_page_format &f, page_work &w, float *x, uint16_t *params) {
    const int g = f.group_len, qmax = (1 << f.bits) - 1;
    for (int gi = threadIdx.x; gi < f.n_groups; gi += blockDim.x) {
        const float *v = x + (size_t)gi * g;
        float lo = v[0], hi = v[0];
        for (int i = 1; i < g; i++) {
            lo = v[i] < lo ? v[i] : lo;
            hi = v[i] > hi ? v[i] : hi;
        }
        const uint16_t scale_h = to_half_bits(__fdiv_rn(__fsub_rn(hi, lo), (float)qmax));
        const uint16_t min_h = to_half_bits(lo);
        params[2 * gi] = scale_h;
        params[2 * gi + 1] = min_h;
        const float scale = half_bits_to_float(scale_h);
        w.gscale[gi] = scale;
        w.gmin[gi] = half_bits_to_float(min_h);
        w.ginv[gi] = scale > 0.0f ? __fdiv_rn(1.0f, scale) : 0.0f;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < f.n_values; i += blockDim.x) {
        const int gi = i / g;
        const float mn = w.gmin[gi], scale = w.gscale[gi];
        const float y = fadd(fmul(__fsub_rn(x[i], mn), w.ginv[gi]), 0.5f);
        int q = (int)(y < 0.0f ? 0.0f : y);
        q = q > qmax ? qmax : q;
        w.codes[i] = (uint8_t)q;
        x[i] = fadd(fmul((float)q, scale), mn);
    }
    __syncthreads();
}

/* Cyclic Jacobi of the symmetric m x m matrix a (decoquant.c's jacobi_eigen), run by warp 0:
 * lane k does element k of each rotation's column, row and eigenvector updates. */
DS_DEV void jacobi_eigen(double *a, double *v, int m, double *flag) {
    const int lane = threadIdx.x & 31;
    for (int i = lane; i < m * m; i += 32)
        v[i] = i % (m + 1) == 0 ? 1.0 : 0.0;
    __syncwarp();
    for (int sweep = 0; sweep < 60; sweep++) {
        if (lane == 0) {
            double off = 0.0, diag = 0.0;
            for (int p = 0; p < m; p++) {
                diag = dadd(diag, dmul(a[p * m + p], a[p * m + p]));
                for (int q = p + 1; q < m; q++)
                    off = dadd(off, dmul(a[p * m + q], a[p * m + q]));
            }
            *flag = (off <= dmul(1e-30, diag) || off == 0.0) ? 1.0 : 0.0;
        }
        __syncwarp();
        if (*flag != 0.0) break;
        for (int p = 0; p < m; p++) {
            for (int q = p + 1; q < m; q++) {
                const double apq = a[p * m + q];
                if (apq == 0.0) continue; /* the same value in every lane */
                const double theta = __ddiv_rn(dsub(a[q * m + q], a[p * m + p]), dmul(2.0, apq));
                const double t =
                    __ddiv_rn(theta >= 0 ? 1.0 : -1.0,
                              dadd(fabs(theta), __dsqrt_rn(dadd(dmul(theta, theta), 1.0))));
                const double c = __ddiv_rn(1.0, __dsqrt_rn(dadd(dmul(t, t), 1.0))), s = dmul(t, c);
                for (int k = lane; k < m; k += 32) { /* columns p, q */
                    const double akp = a[k * m + p], akq = a[k * m + q];
                    a[k * m + p] = dsub(dmul(c, akp), dmul(s, akq));
                    a[k * m + q] = dadd(dmul(s, akp), dmul(c, akq));
                }
                __syncwarp();
                for (int k = lane; k < m; k += 32) { /* rows p, q */
                    const double apk = a[p * m + k], aqk = a[q * m + k];
                    a[p * m + k] = dsub(dmul(c, apk), dmul(s, aqk));
                    a[q * m + k] = dadd(dmul(s, apk), dmul(c, aqk));
                }
                for (int k = lane; k < m; k += 32) {
                    const double vkp = v[k * m + p], vkq = v[k * m + q];
                    v[k * m + p] = dsub(dmul(c, vkp), dmul(s, vkq));
                    v[k * m + q] = dadd(dmul(s, vkp), dmul(c, vkq));
                }
                __syncwarp();
            }
        }
    }
}

/* mpo_factor: M' (w.mat) -> A (w.small [m][rank]) and B (w.large [rank][n]). */
DS_DEV void mpo_factor(const kv_page_format &f, page_work &w) {
    const int m = f.m, n = f.n, r = f.rank;
    for (int x = threadIdx.x; x < m * m; x += blockDim.x) {
        const int i = x / m, j = x % m;
        if (j >= i) w.gram[i * m + j] = dot_f32(w.mat + (size_t)i * n, w.mat + (size_t)j * n, n);
    }
    __syncthreads();
    for (int x = threadIdx.x; x < m * m; x += blockDim.x) {
        const int i = x / m, j = x % m;
        if (j < i) w.gram[i * m + j] = w.gram[j * m + i];
    }
    __syncthreads();
    if (threadIdx.x < 32) jacobi_eigen(w.gram, w.vecs, m, w.scalar);
    __syncthreads();
    if (threadIdx.x == 0) { /* selection sort by descending eigenvalue */
        for (int i = 0; i < m; i++)
            w.order[i] = i;
        for (int i = 0; i < m; i++) {
            int best = i;
            for (int j = i + 1; j < m; j++)
                if (w.gram[w.order[j] * m + w.order[j]] > w.gram[w.order[best] * m + w.order[best]])
                    best = j;
            const int tmp = w.order[i];
            w.order[i] = w.order[best];
            w.order[best] = tmp;
        }
    }
    __syncthreads();
    const double s0 = __dsqrt_rn(fmax(w.gram[w.order[0] * m + w.order[0]], 0.0));
    for (int k = 0; k < r; k++) {
        const int e = w.order[k];
        const double s = __dsqrt_rn(fmax(w.gram[e * m + e], 0.0));
        const bool keep = s > 1e-30 && s > dmul(1e-7, s0);
        const double scale_b = !f.absorb_large ? (keep ? __ddiv_rn(1.0, s) : 0.0) : 1.0;
        const double scale_a = !f.absorb_large ? s : 1.0;
        for (int i = threadIdx.x; i < m; i += blockDim.x)
            w.small[i * r + k] = (float)dmul(w.vecs[i * m + e], scale_a);
        for (int j = threadIdx.x; j < n; j += blockDim.x) {
            float acc = 0.0f;
            for (int i = 0; i < m; i++) {
                const float u = (float)dmul(w.vecs[i * m + e], scale_b);
                acc = fadd(acc, fmul(u, w.mat[(size_t)i * n + j]));
            }
            w.large[(size_t)k * n + j] = acc;
        }
    }
    __syncthreads();
}

/* refit_small: A = M' B^T (B B^T)^-1 by Cholesky with a tiny ridge (thread 0 solves). */
DS_DEV void refit_small(const kv_page_format &f, page_work &w) {
    const int m = f.m, n = f.n, r = f.rank;
    double *h = w.aux, *rhs = w.rhs;
    for (int x = threadIdx.x; x < r * r; x += blockDim.x) {
        const int i = x / r, j = x % r;
        if (j >= i) h[i * r + j] = dot_f32(w.large + (size_t)i * n, w.large + (size_t)j * n, n);
    }
    for (int x = threadIdx.x; x < m * r; x += blockDim.x) {
        const int i = x / r, j = x % r;
        rhs[i * r + j] = dot_f32(w.mat + (size_t)i * n, w.large + (size_t)j * n, n);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        double trace = 0.0;
        for (int i = 0; i < r; i++) {
            for (int j = 0; j < i; j++)
                h[i * r + j] = h[j * r + i];
            trace = dadd(trace, h[i * r + i]);
        }
        bool ok = trace > 0.0;
        if (ok)
            for (int i = 0; i < r; i++)
                h[i * r + i] = dadd(h[i * r + i], __ddiv_rn(dmul(1e-9, trace), (double)r));
        for (int j = 0; ok && j < r; j++) {
            double d = h[j * r + j];
            for (int k = 0; k < j; k++)
                d = dsub(d, dmul(h[j * r + k], h[j * r + k]));
            if (!(d > 0.0)) {
                ok = false;
                break;
            }
            d = __dsqrt_rn(d);
            h[j * r + j] = d;
            for (int i = j + 1; i < r; i++) {
                double s = h[i * r + j];
                for (int k = 0; k < j; k++)
                    s = dsub(s, dmul(h[i * r + k], h[j * r + k]));
                h[i * r + j] = __ddiv_rn(s, d);
            }
        }
        if (ok) {
            for (int i = 0; i < m; i++) {
                double *x = rhs + (size_t)i * r;
                for (int j = 0; j < r; j++) {
                    double s = x[j];
                    for (int k = 0; k < j; k++)
                        s = dsub(s, dmul(h[j * r + k], x[k]));
                    x[j] = __ddiv_rn(s, h[j * r + j]);
                }
                for (int j = r - 1; j >= 0; j--) {
                    double s = x[j];
                    for (int k = j + 1; k < r; k++)
                        s = dsub(s, dmul(h[k * r + j], x[k]));
                    x[j] = __ddiv_rn(s, h[j * r + j]);
                }
            }
            for (int i = 0; i < m * r; i++)
                w.small[i] = (float)rhs[i];
        }
    }
    __syncthreads();
}

/* One CTA per (block, kv head, K or V): blockIdx.y = block, blockIdx.x = 2 * head + which. */
__global__ void __launch_bounds__(kThreads) kv_compress_kernel(const kv_compress_params p) {
    extern __shared__ __align__(16) uint8_t smem[];
    const int which = blockIdx.x & 1, h = blockIdx.x >> 1, b = blockIdx.y;
    if (p.n_blocks_dev && b >= *p.n_blocks_dev) return;
    const kv_page_format &f = which ? p.value_format : p.key_format;
    const int T = f.block_size, D = f.head_dim, H = p.n_kv_heads;
    const uint16_t *src = p.cache.open + (size_t)p.open_ids[b] * p.cache.open_block_stride +
                          ((size_t)which * T * H + h) * D; /* row t at src + t * H * D */
    const size_t pk = p.key_format.page_bytes;
    uint8_t *page = p.cache.full + (size_t)p.full_ids[b] * p.cache.full_block_stride +
                    (size_t)h * (pk + p.value_format.page_bytes) + (which ? pk : 0);

    if (f.method == KV_FP16) {
        for (int i = threadIdx.x; i < (int)f.page_bytes / 2; i += blockDim.x)
            reinterpret_cast<uint16_t *>(page)[i] =
                i < T * D ? src[(size_t)(i / D) * H * D + i % D] : (uint16_t)0;
        return;
    }
    page_work w = carve(f, smem);
    for (int i = threadIdx.x; i < (int)f.page_bytes / 4; i += blockDim.x)
        reinterpret_cast<uint32_t *>(page)[i] = 0u;
    for (int i = threadIdx.x; i < T * D; i += blockDim.x)
        w.in[i] = half_bits_to_float(src[(size_t)(i / D) * H * D + i % D]);
    __syncthreads();
    uint16_t *params = reinterpret_cast<uint16_t *>(page + f.params_offset);

    if (f.method != KV_DECOQUANT) {
        for (int i = threadIdx.x; i < f.n_values; i += blockDim.x)
            w.large[i] = w.in[storage_source(f, i)];
        __syncthreads();
        quantize(f, w, w.large, params);
    } else {
        /* regroup: M'[(t1i,c1), (t2i,c2)] = page[t1i*t2 + t2i][c1*d2 + c2] */
        for (int x = threadIdx.x; x < T * D; x += blockDim.x) {
            const int t = x / D, c = x % D, t1i = t / f.t2, t2i = t % f.t2;
            const int c1 = c / f.d2, c2 = c % f.d2;
            w.mat[(size_t)(t1i * f.d1 + c1) * f.n + t2i * f.d2 + c2] = w.in[x];
        }
        __syncthreads();
        mpo_factor(f, w);
        for (int i = threadIdx.x; i < f.n_values; i += blockDim.x)
            w.in[i] = w.large[storage_source(f, i)];
        __syncthreads();
        quantize(f, w, w.in, params);
        if (f.refit) {
            for (int i = threadIdx.x; i < f.n_values; i += blockDim.x)
                w.large[storage_source(f, i)] = w.in[i];
            __syncthreads();
            refit_small(f, w);
        }
        uint16_t *small = reinterpret_cast<uint16_t *>(page + f.small_offset);
        for (int i = threadIdx.x; i < f.m * f.rank; i += blockDim.x)
            small[i] = to_half_bits(w.small[i]);
    }
    /* dq_pack_codes: code k at bits [k*bits, (k+1)*bits) of the payload. */
    const int per_byte = 8 / f.bits;
    uint8_t *payload = page + f.payload_offset;
    for (int byte = threadIdx.x; byte < (f.n_values * f.bits + 7) / 8; byte += blockDim.x) {
        unsigned v = 0;
        for (int k = 0; k < per_byte && byte * per_byte + k < f.n_values; k++)
            v |= (unsigned)w.codes[byte * per_byte + k] << (k * f.bits);
        payload[byte] = (uint8_t)v;
    }
}

} // namespace

ds_status reshape_and_cache_cuda(const reshape_and_cache_params *p, cudaStream_t stream, char *msg,
                                 size_t msg_len) {
    if (p->n_rows == 0) return DS_OK;
    reshape_and_cache_kernel<<<p->n_rows, 128, 0, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}

/* Dynamic shared memory the formats need, or DS_EUNSUPPORTED past the device's opt-in. */
static ds_status compress_smem(const kv_compress_params *p, size_t *smem, int *optin, char *msg,
                               size_t msg_len) {
    *smem = 0;
    for (int i = 0; i < 2; i++) {
        const kv_page_format *f = i ? &p->value_format : &p->key_format;
        if (f->method == KV_FP16) continue;
        if (f->bits != 8 && f->bits != 4 && f->bits != 2)
            return ds_fail(msg, msg_len, DS_EINVAL, "kv compress (cuda): bits = %d", f->bits);
        const size_t need = work_bytes(f);
        *smem = need > *smem ? need : *smem;
    }
    int dev;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (*smem > (size_t)*optin)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "kv compress (cuda): a %dx%d page needs %zu bytes of shared memory (the "
                       "device has %d)",
                       p->key_format.block_size, p->key_format.head_dim, *smem, *optin);
    return DS_OK;
}

ds_status kv_compress_cuda_prepare(kv_compress_params *p, char *msg, size_t msg_len) {
    size_t smem;
    int optin;
    ds_status st = compress_smem(p, &smem, &optin, msg, msg_len);
    if (st != DS_OK) return st;
    CUDA_CHECK(cudaFuncSetAttribute(kv_compress_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem));
    p->smem_ready = 1;
    return DS_OK;
}

ds_status kv_compress_cuda(const kv_compress_params *p, cudaStream_t stream, char *msg,
                           size_t msg_len) {
    if (p->n_blocks == 0) return DS_OK;
    size_t smem = 0;
    if (p->smem_ready) {
        for (int i = 0; i < 2; i++) {
            const kv_page_format *f = i ? &p->value_format : &p->key_format;
            if (f->method != KV_FP16 && work_bytes(f) > smem) smem = work_bytes(f);
        }
    } else {
        int optin;
        ds_status st = compress_smem(p, &smem, &optin, msg, msg_len);
        if (st != DS_OK) return st;
        CUDA_CHECK(cudaFuncSetAttribute(kv_compress_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    }
    kv_compress_kernel<<<dim3(2 * p->n_kv_heads, p->n_blocks), kThreads, smem, stream>>>(*p);
    CUDA_CHECK(cudaGetLastError());
    return DS_OK;
}
