/* tests/gpu/check.h — the PASS/FAIL lines and counts of the GPU test programs (gpu_test,
 * model_test): one line per check, flushed at once so a crash still shows what ran. */
#ifndef DS_TESTS_GPU_CHECK_H
#define DS_TESTS_GPU_CHECK_H

#include <stdarg.h>
#include <stdio.h>

static int n_pass, n_fail;

static void report(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%s ", ok ? "PASS" : "FAIL");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
    ok ? n_pass++ : n_fail++;
}

/* The last line: "NAME: N passed, M failed"; the exit code. */
static int report_summary(const char *name) {
    printf("%s: %d passed, %d failed\n", name, n_pass, n_fail);
    return n_fail ? 1 : 0;
}

#endif
