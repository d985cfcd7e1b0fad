/* common/cli.c — strict numeric flag parsing (see cli.h). */
#include "common/cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int cli_i64(const char *prog, const char *flag, const char *s, long long lo, long long hi,
            long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "%s: %s = '%s': expected an integer in %lld..%lld\n", prog, flag, s, lo,
                hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_int(const char *prog, const char *flag, const char *s, long lo, long hi, int *out) {
    long long v;
    if (cli_i64(prog, flag, s, lo, hi, &v) < 0) return -1;
    *out = (int)v;
    return 0;
}

int cli_float(const char *prog, const char *flag, const char *s, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "%s: %s = '%s': expected a number in [%g, %g]\n", prog, flag, s, lo, hi);
        return -1;
    }
    *out = (float)v;
    return 0;
}
