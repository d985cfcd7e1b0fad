/* common/log.c — stderr logging with a process-wide level, and the assertion handler. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_level = -1;

static int level_from_env(void) {
    const char *env = getenv("DECOSERVE_LOG");
    if (!env) return DS_LOG_INFO;
    if (!strcmp(env, "debug")) return DS_LOG_DEBUG;
    if (!strcmp(env, "warn")) return DS_LOG_WARN;
    if (!strcmp(env, "error")) return DS_LOG_ERROR;
    return DS_LOG_INFO;
}

void ds_log_set_level(ds_log_level level) { g_level = (int)level; }

void ds_log(ds_log_level level, const char *file, int line, const char *fmt, ...) {
    if (g_level < 0) g_level = level_from_env();
    if ((int)level < g_level) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    const char *base = strrchr(file, '/');
    fprintf(stderr, "[decoserve %s %s:%d] ", names[level], base ? base + 1 : file, line);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void ds_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "[decoserve fatal %s:%d] assertion failed: %s\n", file, line, cond);
    abort();
}
