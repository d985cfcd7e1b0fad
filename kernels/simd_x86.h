/* kernels/simd_x86.h — what the CPU kernels' AVX2 paths share (qmatmul.c, kv_page_dot.c): whether
 * this build can have them at all (x86-64 with GCC-style target attributes, chosen at run time
 * through qm_isa_active), and the one horizontal sum they reduce a vector with. Private to
 * kernels/. */
#ifndef DS_KERNELS_SIMD_X86_H
#define DS_KERNELS_SIMD_X86_H

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "common/cpu_x86.h"
#define SIMD_X86 1

/* (v0 + v4) + (v2 + v6) + ((v1 + v5) + (v3 + v7)): the same tree for every vector. */
__attribute__((always_inline, target("avx"))) static inline float simd_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#else
#define SIMD_X86 0
#endif

#endif
