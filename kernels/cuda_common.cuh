/* kernels/cuda_common.cuh — device helpers shared by the .cu files: the tensor-core MMA and
 * matrix moves the attention kernel is built on (sm_80+ PTX), asynchronous copies, fp16 packing,
 * a one-instruction mask-and-or, the SFU's exp2 and a compile-time loop. Fragment layouts are PTX's
 * for mma.m16n8k16 (lane = 4 * gid + tig): A 16x16 row-major  a0 = A[gid][2tig..+1]   a1 =
 * A[gid+8][2tig..+1] a2 = A[gid][2tig+8..+9] a3 = A[gid+8][2tig+8..+9] B 16x8  (k x n)    b0 =
 * B[2tig..+1][gid]   b1 = B[2tig+8..+9][gid] C 16x8             c0,c1 = C[gid][2tig..+1]  c2,c3 =
 * C[gid+8][2tig..+1] Each 32-bit register holds two fp16, the lower index in the low half. */
#ifndef DS_KERNELS_CUDA_COMMON_CUH
#define DS_KERNELS_CUDA_COMMON_CUH

#include <stdint.h>

#include <utility>

#include <cuda_fp16.h>

#define DS_DEV static __device__ __forceinline__

/* d = a * b + d, fp16 inputs, fp32 accumulators. */
DS_DEV void mma_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Transpose of an 8x8 fp16 matrix held one row-pair per lane (row gid, columns 2tig..+1). */
DS_DEV uint32_t movmatrix_trans(uint32_t x) {
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

DS_DEV uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* Four 8x8 fp16 matrices; lane 8i + j gives the address of row j of matrix i. */
DS_DEV void ldmatrix_x4(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

DS_DEV void ldmatrix_x4_trans(uint32_t r[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* 16-byte global -> shared copy that bypasses L1 (streamed KV pages are read once). */
DS_DEV void cp_async_16(uint32_t dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
DS_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> DS_DEV void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

DS_DEV uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&h);
}

DS_DEV float2 unpack_half2(uint32_t x) {
    return __half22float2(*reinterpret_cast<const __half2 *>(&x));
}

DS_DEV float half_bits_to_float(uint16_t x) { return __half2float(__ushort_as_half(x)); }

/* (a & B) | C in one LOP3 with both constants as immediates (left to itself the compiler splits
 * a mask-then-or with two constants into two instructions). */
template <uint32_t B, uint32_t C> DS_DEV uint32_t and_or(uint32_t a) {
    uint32_t r;
    asm("lop3.b32 %0, %1, %2, %3, 0xea;\n" : "=r"(r) : "r"(a), "n"(B), "n"(C));
    return r;
}

/* 2^x, the SFU's approximation (relative error ~2^-22, subnormal results flushed to 0): the
 * softmax's exponentials, without exp2f's subnormal-range fix-up around every call. */
DS_DEV float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

/* f(std::integral_constant<int, I>{}) for I = 0 .. N-1, unrolled at compile time, so that
 * indices reach templates and asm immediates. */
template <typename F, int... I>
DS_DEV void static_for_seq(F &&f, std::integer_sequence<int, I...>) {
    (f(std::integral_constant<int, I>{}), ...);
}
template <int N, typename F> DS_DEV void static_for(F &&f) {
    static_for_seq(f, std::make_integer_sequence<int, N>{});
}

#endif
