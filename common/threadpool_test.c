/* threadpool_test — every task of every run executes exactly once, for 1..4 threads (more threads
 * than cores included), across many back-to-back runs and after workers have gone to sleep; after
 * threadpool_idle the workers stop spinning. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/threadpool.h"

#define MAX_TASKS 257

typedef struct count_ctx {
    atomic_int counts[MAX_TASKS];
    atomic_int calls;
} count_ctx;

static void count_task(void *ctx, int task_index) {
    count_ctx *c = ctx;
    atomic_fetch_add(&c->counts[task_index], 1);
    atomic_fetch_add(&c->calls, 1);
}

static void check_run(threadpool *pool, count_ctx *c, int n_tasks) {
    for (int i = 0; i < MAX_TASKS; i++)
        atomic_store(&c->counts[i], 0);
    atomic_store(&c->calls, 0);
    threadpool_run(pool, n_tasks, count_task, c);
    /* Everything must be done when run returns: no late increments. */
    assert_int_equal(atomic_load(&c->calls), n_tasks);
    for (int i = 0; i < MAX_TASKS; i++)
        assert_int_equal(atomic_load(&c->counts[i]), i < n_tasks);
}

static void test_every_task_once(void **state) {
    (void)state;
    static count_ctx c;
    unsigned seed = 12345;
    for (int n_threads = 1; n_threads <= 4; n_threads++) {
        threadpool *pool = NULL;
        char msg[128];
        assert_int_equal(threadpool_create(&pool, n_threads, msg, sizeof msg), DS_OK);
        assert_int_equal(threadpool_n_threads(pool), n_threads);
        for (int iter = 0; iter < 3000; iter++) {
            seed = seed * 1103515245u + 12345u;
            check_run(pool, &c, (int)((seed >> 8) % MAX_TASKS)); /* 0 and 1 included */
        }
        /* Let the workers fall asleep on the condition variable, then run again. */
        for (int iter = 0; iter < 3; iter++) {
            struct timespec ts = {0, 2000000}; /* 2 ms, past the spin window */
            nanosleep(&ts, NULL);
            check_run(pool, &c, 64);
        }
        threadpool_destroy(pool);
    }
    threadpool_destroy(NULL);
}

/* Tasks really spread: with 2 threads and tasks that wait for each other, both must be running
 * at the same time, which a serial implementation would deadlock on (bounded here by a timeout). */
typedef struct meet_ctx {
    atomic_int arrived;
    atomic_int timed_out;
} meet_ctx;

static void meet_task(void *ctx, int task_index) {
    (void)task_index;
    meet_ctx *c = ctx;
    atomic_fetch_add(&c->arrived, 1);
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    while (atomic_load(&c->arrived) < 2) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) >
            2000000000L) {
            atomic_store(&c->timed_out, 1);
            return;
        }
    }
}

static void test_tasks_run_concurrently(void **state) {
    (void)state;
    threadpool *pool = NULL;
    assert_int_equal(threadpool_create(&pool, 2, NULL, 0), DS_OK);
    for (int iter = 0; iter < 20; iter++) {
        meet_ctx c;
        atomic_init(&c.arrived, 0);
        atomic_init(&c.timed_out, 0);
        threadpool_run(pool, 2, meet_task, &c);
        assert_int_equal(atomic_load(&c.timed_out), 0);
    }
    threadpool_destroy(pool);
}

static void nop_task(void *ctx, int task_index) { (void)ctx, (void)task_index; }

/* CPU time the workers burn over steps of one run, then a 1 ms pause (as between two engine
 * steps), with or without threadpool_idle: the process's CPU time less the caller thread's. */
static double worker_cpu_ms(threadpool *pool, int idle, int n_steps) {
    struct timespec p0, p1, t0, t1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &p0);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (int i = 0; i < n_steps; i++) {
        threadpool_run(pool, 8, nop_task, NULL);
        if (idle) threadpool_idle(pool);
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
    }
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &p1);
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    double process = (p1.tv_sec - p0.tv_sec) * 1e3 + (p1.tv_nsec - p0.tv_nsec) / 1e6;
    double caller = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
    return process - caller;
}

/* 200 steps: spinning out the 0.2 ms window after each costs the worker ~40 ms of CPU; after
 * threadpool_idle only its wake-ups remain (microseconds each). */
static void test_idle_stops_spinning(void **state) {
    (void)state;
    threadpool *pool = NULL;
    assert_int_equal(threadpool_create(&pool, 2, NULL, 0), DS_OK);
    double spinning = worker_cpu_ms(pool, 0, 200), idle = worker_cpu_ms(pool, 1, 200);
    print_message("worker CPU over 200 steps: %.1f ms spinning, %.1f ms with threadpool_idle\n",
                  spinning, idle);
    assert_true(idle < 10.0);
    static count_ctx c; /* runs after idle still run every task */
    check_run(pool, &c, 64);
    threadpool_idle(pool);
    check_run(pool, &c, 64);
    threadpool_destroy(pool);
    threadpool_idle(NULL);
}

static void test_null_pool_runs_serially(void **state) {
    (void)state;
    static count_ctx c;
    check_run(NULL, &c, 100);
    assert_int_equal(threadpool_n_threads(NULL), 1);
}

static void test_env_threads(void **state) {
    (void)state;
    char msg[128];
    int n = 0;
    setenv("DECOSERVE_THREADS", "3", 1);
    assert_int_equal(threadpool_default_threads(&n, msg, sizeof msg), DS_OK);
    assert_int_equal(n, 3);
    threadpool *pool = NULL;
    assert_int_equal(threadpool_create(&pool, 0, msg, sizeof msg), DS_OK);
    assert_int_equal(threadpool_n_threads(pool), 3);
    threadpool_destroy(pool);

    const char *bad[] = {"abc", "0", "-2", "4x", "100000"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv("DECOSERVE_THREADS", bad[i], 1);
        msg[0] = 0;
        assert_int_equal(threadpool_create(&pool, 0, msg, sizeof msg), DS_EINVAL);
        assert_null(pool);
        assert_non_null(strstr(msg, "DECOSERVE_THREADS"));
    }
    unsetenv("DECOSERVE_THREADS");
    assert_int_equal(threadpool_default_threads(&n, msg, sizeof msg), DS_OK);
    assert_true(n >= 1);
    assert_int_equal(threadpool_create(&pool, 5000, msg, sizeof msg), DS_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_task_once),     cmocka_unit_test(test_tasks_run_concurrently),
        cmocka_unit_test(test_idle_stops_spinning), cmocka_unit_test(test_null_pool_runs_serially),
        cmocka_unit_test(test_env_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
