/* common/half.c — row conversions between fp16 and fp32: F16C instructions where the CPU has
 * them (chosen at run time), the portable scalar conversions of half.h elsewhere. Both round to
 * nearest even, so results are identical whichever path runs. */
#include "common/half.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "common/cpu_x86.h"

__attribute__((target("avx,f16c"))) static void to_float_f16c(const uint16_t *src, float *dst,
                                                              size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = ds_half_to_float(src[i]);
}

__attribute__((target("avx,f16c"))) static void to_half_f16c(const float *src, uint16_t *dst,
                                                             size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        dst[i] = ds_float_to_half(src[i]);
}

static int have_f16c(void) {
    static int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx") && ds_cpu_has_f16c();
    return cached;
}
#else
static int have_f16c(void) { return 0; }
#define to_float_f16c(s, d, n) ((void)0)
#define to_half_f16c(s, d, n)  ((void)0)
#endif

void ds_half_to_float_n(const uint16_t *src, float *dst, size_t n) {
    if (have_f16c()) {
        to_float_f16c(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = ds_half_to_float(src[i]);
}

void ds_float_to_half_n(const float *src, uint16_t *dst, size_t n) {
    if (have_f16c()) {
        to_half_f16c(src, dst, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = ds_float_to_half(src[i]);
}
