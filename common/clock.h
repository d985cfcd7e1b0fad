/* common/clock.h — seconds on the monotonic clock, for durations and deadlines (engine stats,
 * server shutdown grace, benchmarks, loadgen timing). Never steps with the wall clock; the origin
 * is arbitrary, so only differences mean anything. */
#ifndef DS_COMMON_CLOCK_H
#define DS_COMMON_CLOCK_H

#include <time.h>

static inline double ds_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#endif
