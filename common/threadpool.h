/* common/threadpool.h — a small persistent pthread pool for data-parallel kernels (the CPU GEMM).
 * One engine thread owns a pool and calls threadpool_run; the caller thread works too, so a pool
 * of n threads starts n - 1 workers. Workers spin briefly after each run (back-to-back GEMMs of a
 * forward pass re-dispatch within microseconds) and then sleep on a condition variable; at the end
 * of a forward pass the owner calls threadpool_idle so they sleep at once (two engines sharing the
 * cores would otherwise take ~0.2 ms of spinning from each other per step). */
#ifndef DS_COMMON_THREADPOOL_H
#define DS_COMMON_THREADPOOL_H

#include <stddef.h>

#include "common/status.h"

typedef struct threadpool threadpool;

/* Runs one task: task_index in [0, n_tasks). Tasks of one run may run concurrently. */
typedef void (*threadpool_task_fn)(void *ctx, int task_index);

/* Threads a pool gets when asked for n_threads <= 0: env DECOSERVE_THREADS if set (1..1024),
 * else the number of online CPUs. DS_EINVAL naming the variable if it is set but malformed. */
ds_status threadpool_default_threads(int *n_threads, char *msg, size_t msg_len);

/* Creates a pool of n_threads threads in total (the caller counts as one; n_threads <= 0 picks
 * threadpool_default_threads). On success *out is owned by the caller: threadpool_destroy. */
ds_status threadpool_create(threadpool **out, int n_threads, char *msg, size_t msg_len);

/* Joins the workers and frees the pool. NULL is a no-op. Not concurrent with threadpool_run. */
void threadpool_destroy(threadpool *pool);

/* Threads in the pool, caller included (>= 1); 1 for pool == NULL. */
int threadpool_n_threads(const threadpool *pool);

/* Calls fn(ctx, i) exactly once for every i in [0, n_tasks), spread over the pool's threads
 * (tasks are handed out dynamically, in increasing order), and returns when all have finished.
 * pool == NULL runs them serially on the caller. Allocates nothing. Only one thread may call
 * threadpool_run on a given pool at a time, and fn must not call it on the same pool. */
void threadpool_run(threadpool *pool, int n_tasks, threadpool_task_fn fn, void *ctx);

/* Tells the workers that no run follows soon: those spinning go to sleep now instead of after
 * the spin window. The next threadpool_run wakes them as usual. Same caller rules as
 * threadpool_run; NULL is a no-op. */
void threadpool_idle(threadpool *pool);

#endif
