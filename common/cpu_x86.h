/* common/cpu_x86.h — CPU feature checks that __builtin_cpu_supports cannot spell on every
 * compiler: clang 14 (which builds the fuzzers) does not know "f16c". x86 only. */
#ifndef DS_COMMON_CPU_X86_H
#define DS_COMMON_CPU_X86_H

#include <cpuid.h>

/* F16C (fp16 <-> fp32 conversions): CPUID.1:ECX bit 29. */
static inline int ds_cpu_has_f16c(void) {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & (1u << 29)) != 0;
}

#endif
