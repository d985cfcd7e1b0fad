/* common/cli.h — strict parsing of command-line values for every decoserve binary: the whole
 * string must parse and lie in range, or the error names the flag ("--top-p = '2': expected a
 * number in [0, 1]"). Errors are written to stderr prefixed by the program name. */
#ifndef DS_COMMON_CLI_H
#define DS_COMMON_CLI_H

/* Each returns 0 on success, -1 after printing the error. */
int cli_int(const char *prog, const char *flag, const char *s, long lo, long hi, int *out);
int cli_i64(const char *prog, const char *flag, const char *s, long long lo, long long hi,
            long long *out);
int cli_float(const char *prog, const char *flag, const char *s, double lo, double hi, float *out);

#endif
