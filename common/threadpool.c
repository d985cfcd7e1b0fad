/* common/threadpool.c — persistent pthread pool: a generation counter announces each run, tasks
 * are claimed from an atomic counter tagged with that generation, and the caller returns once
 * every task has finished (it never waits for a worker that is still asleep). Workers spin on the
 * counter for a short while before sleeping, since a decode step issues hundreds of small GEMMs
 * microseconds apart, unless the owner said that the step is over (threadpool_idle). */
#include "common/threadpool.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"

/* How long an idle worker polls for the next run before sleeping. Longer than the gap between
 * two GEMMs of a layer, shorter than anything a user would notice as a busy core. */
#define THREADPOOL_SPIN_NS     200000L
#define THREADPOOL_MAX_THREADS 1024

struct threadpool {
    int n_threads;       /* caller included */
    bool oversubscribed; /* more threads than online CPUs: yield instead of spinning */
    pthread_t *workers;  /* [n_threads - 1] */
    pthread_mutex_t mutex;
    pthread_cond_t wake;
    int n_sleeping;      /* workers blocked on wake; under mutex */
    uint32_t generation; /* of the latest run; written by the caller under mutex */
    /* generation << 32 | tasks not yet claimed. A claim is a CAS that checks the generation,
     * so a worker that wakes late can never take a task of another run. */
    _Atomic uint64_t state;
    atomic_bool stop;
    atomic_bool idle; /* set by threadpool_idle, cleared by the next run: spinning workers sleep */
    /* The current run; written before its generation is published, stable until it ends. */
    threadpool_task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int n_done; /* tasks of the current run that have finished */
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static uint32_t state_generation(uint64_t state) { return (uint32_t)(state >> 32); }

/* Claims and runs tasks of run `generation` until none is left (or a newer run started). */
static void run_tasks(threadpool *pool, uint32_t generation) {
    uint64_t cur = atomic_load_explicit(&pool->state, memory_order_acquire);
    for (;;) {
        uint32_t remaining = (uint32_t)cur;
        if (state_generation(cur) != generation || remaining == 0) return;
        if (!atomic_compare_exchange_weak_explicit(&pool->state, &cur, cur - 1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        /* Holding an unfinished task of this run keeps n_tasks, fn and ctx from changing. */
        pool->fn(pool->ctx, pool->n_tasks - (int)remaining);
        atomic_fetch_add_explicit(&pool->n_done, 1, memory_order_release);
        cur = atomic_load_explicit(&pool->state, memory_order_acquire);
    }
}

/* Waits until a run newer than *seen is published; returns false when the pool is stopping. */
static bool wait_for_run(threadpool *pool, uint32_t *seen) {
    long start = now_ns();
    for (int spins = 1; !pool->oversubscribed; spins++) {
        uint32_t g = state_generation(atomic_load_explicit(&pool->state, memory_order_acquire));
        if (g != *seen) {
            *seen = g;
            return !atomic_load(&pool->stop);
        }
        if (atomic_load_explicit(&pool->idle, memory_order_relaxed)) break;
        cpu_relax();
        if (spins % 256 == 0 && now_ns() - start > THREADPOOL_SPIN_NS) break;
    }
    pthread_mutex_lock(&pool->mutex);
    uint32_t g;
    while ((g = state_generation(atomic_load(&pool->state))) == *seen) {
        pool->n_sleeping++;
        pthread_cond_wait(&pool->wake, &pool->mutex);
        pool->n_sleeping--;
    }
    pthread_mutex_unlock(&pool->mutex);
    *seen = g;
    return !atomic_load(&pool->stop);
}

static void *worker_main(void *arg) {
    threadpool *pool = arg;
    uint32_t seen = 0;
    while (wait_for_run(pool, &seen))
        run_tasks(pool, seen);
    return NULL;
}

/* Publishes run generation + 1 with all n_tasks unclaimed and wakes sleepers; returns it. */
static uint32_t publish(threadpool *pool) {
    pthread_mutex_lock(&pool->mutex);
    uint32_t g = ++pool->generation;
    atomic_store_explicit(&pool->state, (uint64_t)g << 32 | (uint32_t)pool->n_tasks,
                          memory_order_release);
    if (pool->n_sleeping) pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->mutex);
    return g;
}

ds_status threadpool_default_threads(int *n_threads, char *msg, size_t msg_len) {
    const char *env = getenv("DECOSERVE_THREADS");
    if (env && *env) {
        char *end = NULL;
        errno = 0;
        long v = strtol(env, &end, 10);
        if (errno || *end || v < 1 || v > THREADPOOL_MAX_THREADS)
            return ds_fail(msg, msg_len, DS_EINVAL,
                           "DECOSERVE_THREADS=\"%s\": expected an integer in 1..%d", env,
                           THREADPOOL_MAX_THREADS);
        *n_threads = (int)v;
        return DS_OK;
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    *n_threads = cpus < 1 ? 1 : cpus > THREADPOOL_MAX_THREADS ? THREADPOOL_MAX_THREADS : (int)cpus;
    return DS_OK;
}

static void stop_workers(threadpool *pool, int n_started) {
    atomic_store(&pool->stop, true);
    pool->n_tasks = 0;
    publish(pool);
    for (int i = 0; i < n_started; i++)
        pthread_join(pool->workers[i], NULL);
}

ds_status threadpool_create(threadpool **out, int n_threads, char *msg, size_t msg_len) {
    *out = NULL;
    if (n_threads <= 0) {
        ds_status st = threadpool_default_threads(&n_threads, msg, msg_len);
        if (st != DS_OK) return st;
    }
    if (n_threads > THREADPOOL_MAX_THREADS)
        return ds_fail(msg, msg_len, DS_EINVAL, "threadpool: n_threads=%d: expected 1..%d",
                       n_threads, THREADPOOL_MAX_THREADS);
    threadpool *pool = calloc(1, sizeof *pool);
    pthread_t *workers = calloc((size_t)n_threads, sizeof *workers);
    if (!pool || !workers) {
        free(pool);
        free(workers);
        return ds_fail(msg, msg_len, DS_ENOMEM, "threadpool: n_threads=%d: out of memory",
                       n_threads);
    }
    pool->n_threads = n_threads;
    pool->oversubscribed = n_threads > sysconf(_SC_NPROCESSORS_ONLN);
    pool->workers = workers;
    pthread_mutex_init(&pool->mutex, NULL);
    pthread_cond_init(&pool->wake, NULL);
    atomic_init(&pool->state, 0);
    atomic_init(&pool->stop, false);
    atomic_init(&pool->idle, false);
    atomic_init(&pool->n_done, 0);
    for (int i = 0; i < n_threads - 1; i++) {
        int err = pthread_create(&pool->workers[i], NULL, worker_main, pool);
        if (err) {
            stop_workers(pool, i);
            pthread_cond_destroy(&pool->wake);
            pthread_mutex_destroy(&pool->mutex);
            free(pool->workers);
            free(pool);
            return ds_fail(msg, msg_len, DS_EINTERNAL,
                           "threadpool: pthread_create for worker %d of %d: %s", i + 1,
                           n_threads - 1, strerror(err));
        }
    }
    *out = pool;
    return DS_OK;
}

void threadpool_destroy(threadpool *pool) {
    if (!pool) return;
    stop_workers(pool, pool->n_threads - 1);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->mutex);
    free(pool->workers);
    free(pool);
}

int threadpool_n_threads(const threadpool *pool) { return pool ? pool->n_threads : 1; }

void threadpool_run(threadpool *pool, int n_tasks, threadpool_task_fn fn, void *ctx) {
    DS_ASSERT(n_tasks >= 0 && fn);
    if (!pool || pool->n_threads == 1 || n_tasks <= 1) {
        for (int i = 0; i < n_tasks; i++)
            fn(ctx, i);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_tasks = n_tasks;
    atomic_store_explicit(&pool->n_done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool->idle, false, memory_order_relaxed); /* published with the run */
    run_tasks(pool, publish(pool));
    /* What is left is at most one task per worker, already running; never waits for a worker
     * that has not woken up. Yield eventually in case the machine is oversubscribed. */
    for (int spins = 1; atomic_load_explicit(&pool->n_done, memory_order_acquire) != n_tasks;
         spins++) {
        if (spins < 4096 && !pool->oversubscribed)
            cpu_relax();
        else
            sched_yield();
    }
}

void threadpool_idle(threadpool *pool) {
    if (pool) atomic_store_explicit(&pool->idle, true, memory_order_relaxed);
}
