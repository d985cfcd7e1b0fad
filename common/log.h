/* common/log.h — the one logging function library code may print through, and DS_ASSERT for
 * invariants (always on, independent of NDEBUG; never used to validate input). */
#ifndef DS_COMMON_LOG_H
#define DS_COMMON_LOG_H

typedef enum ds_log_level { DS_LOG_DEBUG, DS_LOG_INFO, DS_LOG_WARN, DS_LOG_ERROR } ds_log_level;

/* Messages below this level are dropped (default DS_LOG_INFO; env DECOSERVE_LOG=debug|info|...). */
void ds_log_set_level(ds_log_level level);

void ds_log(ds_log_level level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

_Noreturn void ds_assert_fail(const char *cond, const char *file, int line);

#define DS_LOG_I(...) ds_log(DS_LOG_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define DS_LOG_W(...) ds_log(DS_LOG_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define DS_LOG_E(...) ds_log(DS_LOG_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define DS_LOG_D(...) ds_log(DS_LOG_DEBUG, __FILE__, __LINE__, __VA_ARGS__)

#define DS_ASSERT(cond)                                                                            \
    do {                                                                                           \
        if (!(cond)) ds_assert_fail(#cond, __FILE__, __LINE__);                                    \
    } while (0)

#endif
