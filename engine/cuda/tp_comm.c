/* engine/cuda/tp_comm.c — the NCCL communicator of one tensor-parallel rank (see tp_comm.h):
 * non-blocking NCCL, every wait a poll of the stream and of ncclCommGetAsyncError against a
 * deadline. */
#include "engine/cuda/tp_comm.h"

#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nccl.h>

#include "common/vendor_check.h"

#define NCCL_CHECK(call) DS_VENDOR_CHECK(call, ncclResult_t, ncclSuccess, ncclGetErrorString)

_Static_assert(TP_BOOTSTRAP_ID_BYTES == NCCL_UNIQUE_ID_BYTES, "the bootstrap carries ncclUniqueId");

/* Every wait first spins (an enqueue usually settles, and a decode step's peer arrives, within
 * microseconds: a sleeping poll would add its granularity to each of a step's 2 x layers
 * collectives), then looks every POLL_US. */
enum { SPIN_MS = 2, POLL_US = 50 };

struct tp_comm {
    ncclComm_t nccl;
    int rank, n_ranks, device, timeout_ms;
    int aborted;          /* after a failure: every later call fails */
    atomic_int cancelled; /* tp_comm_cancel: the owning thread aborts at its next look */
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One idle moment of a wait that began at start_ms. */
static void idle(double start_ms) {
    if (now_ms() - start_ms < SPIN_MS) return;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = POLL_US * 1000};
    nanosleep(&ts, NULL);
}

/* Aborts the communicator and names the rank and what went wrong. */
static ds_status fail_abort(tp_comm *c, const char *what, const char *why, char *msg,
                            size_t msg_len) {
    if (!c->aborted) ncclCommAbort(c->nccl);
    c->aborted = 1;
    return ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                   "tensor-parallel rank %d of %d (cuda:%d): %s: %s; communicator aborted", c->rank,
                   c->n_ranks, c->device, what, why);
}

/* Polls the communicator until NCCL finishes what it has in progress, or fails, or the deadline. */
static int cancelled(tp_comm *c) { return atomic_load(&c->cancelled); }

static ds_status settle(tp_comm *c, double deadline, const char *what, char *msg, size_t msg_len) {
    const double start = now_ms();
    for (;;) {
        if (cancelled(c)) return fail_abort(c, what, "cancelled", msg, msg_len);
        ncclResult_t state;
        ncclResult_t r = ncclCommGetAsyncError(c->nccl, &state);
        if (r != ncclSuccess) return fail_abort(c, what, ncclGetErrorString(r), msg, msg_len);
        if (state == ncclSuccess) return DS_OK;
        if (state != ncclInProgress)
            return fail_abort(c, what, ncclGetErrorString(state), msg, msg_len);
        if (now_ms() > deadline) return fail_abort(c, what, "timed out", msg, msg_len);
        idle(start);
    }
}

ds_status tp_comm_new_id(tp_bootstrap_id *id, char *msg, size_t msg_len) {
    ncclUniqueId u;
    NCCL_CHECK(ncclGetUniqueId(&u));
    memcpy(id->bytes, u.internal, sizeof id->bytes);
    return DS_OK;
}

ds_status tp_comm_create(const tp_bootstrap_id *id, int rank, int n_ranks, int device,
                         int join_timeout_ms, int timeout_ms, tp_comm **out, char *msg,
                         size_t msg_len) {
    *out = NULL;
    if (n_ranks < 1 || rank < 0 || rank >= n_ranks || timeout_ms <= 0 || join_timeout_ms <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor-parallel rank %d of %d, timeouts %d / %d ms: rank outside [0, %d) "
                       "or a timeout not positive",
                       rank, n_ranks, join_timeout_ms, timeout_ms, n_ranks);
    /* the GPU machines forbid NVLink multicast; 0: an explicit setting of the caller wins */
    setenv("NCCL_NVLS_ENABLE", "0", 0);
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess)
        return ds_fail(msg, msg_len, DS_EINTERNAL, "tensor-parallel rank %d: cudaSetDevice(%d): %s",
                       rank, device, cudaGetErrorString(e));
    tp_comm *c = calloc(1, sizeof *c);
    if (!c) return ds_fail(msg, msg_len, DS_ENOMEM, "tensor-parallel rank %d: out of memory", rank);
    *c = (tp_comm){.rank = rank, .n_ranks = n_ranks, .device = device, .timeout_ms = timeout_ms};
    ncclUniqueId u;
    memcpy(u.internal, id->bytes, sizeof u.internal);
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclResult_t r = ncclCommInitRankConfig(&c->nccl, n_ranks, u, rank, &config);
    ds_status st = DS_OK;
    if (r != ncclSuccess && r != ncclInProgress)
        st = ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                     "tensor-parallel rank %d of %d (cuda:%d): ncclCommInitRankConfig: %s", rank,
                     n_ranks, device, ncclGetErrorString(r));
    else
        st = settle(c, now_ms() + join_timeout_ms, "joining the communicator", msg, msg_len);
    if (st != DS_OK) {
        if (c->nccl && !c->aborted) ncclCommAbort(c->nccl);
        free(c);
        return st;
    }
    *out = c;
    return DS_OK;
}

static ds_status check_alive(tp_comm *c, char *msg, size_t msg_len) {
    if (!c->aborted && cancelled(c)) return fail_abort(c, "a call", "cancelled", msg, msg_len);
    if (!c->aborted) return DS_OK;
    return ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                   "tensor-parallel rank %d of %d: communicator aborted earlier", c->rank,
                   c->n_ranks);
}

/* After an enqueue: non-blocking NCCL may finish the enqueue itself later. */
static ds_status enqueued(tp_comm *c, ncclResult_t r, const char *what, char *msg, size_t msg_len) {
    if (r == ncclInProgress) return settle(c, now_ms() + c->timeout_ms, what, msg, msg_len);
    if (r != ncclSuccess) return fail_abort(c, what, ncclGetErrorString(r), msg, msg_len);
    return DS_OK;
}

ds_status tp_comm_allreduce_sum(tp_comm *c, float *x, size_t n, cudaStream_t stream, char *msg,
                                size_t msg_len) {
    ds_status st = check_alive(c, msg, msg_len);
    if (st != DS_OK) return st;
    return enqueued(c, ncclAllReduce(x, x, n, ncclFloat32, ncclSum, c->nccl, stream),
                    "ncclAllReduce", msg, msg_len);
}

ds_status tp_comm_broadcast(tp_comm *c, void *buf, size_t bytes, cudaStream_t stream, char *msg,
                            size_t msg_len) {
    ds_status st = check_alive(c, msg, msg_len);
    if (st != DS_OK) return st;
    return enqueued(c, ncclBroadcast(buf, buf, bytes, ncclUint8, 0, c->nccl, stream),
                    "ncclBroadcast", msg, msg_len);
}

ds_status tp_comm_wait(tp_comm *c, cudaStream_t stream, int timeout_ms, char *msg, size_t msg_len) {
    ds_status st = check_alive(c, msg, msg_len);
    if (st != DS_OK) return st;
    const double start = now_ms();
    const double deadline = start + (timeout_ms > 0 ? timeout_ms : c->timeout_ms);
    for (;;) {
        cudaError_t e = cudaStreamQuery(stream);
        if (e == cudaSuccess) return DS_OK;
        if (e != cudaErrorNotReady)
            return ds_fail(msg, msg_len, DS_EINTERNAL,
                           "tensor-parallel rank %d of %d (cuda:%d): cudaStreamQuery: %s", c->rank,
                           c->n_ranks, c->device, cudaGetErrorString(e));
        ncclResult_t state;
        ncclResult_t r = ncclCommGetAsyncError(c->nccl, &state);
        if (r != ncclSuccess)
            return fail_abort(c, "waiting for the step", ncclGetErrorString(r), msg, msg_len);
        if (state != ncclSuccess && state != ncclInProgress)
            return fail_abort(c, "waiting for the step", ncclGetErrorString(state), msg, msg_len);
        if (cancelled(c)) return fail_abort(c, "waiting for the step", "cancelled", msg, msg_len);
        if (now_ms() > deadline)
            return fail_abort(c, "waiting for the step", "timed out (a peer stopped?)", msg,
                              msg_len);
        idle(start);
    }
}

void tp_comm_cancel(tp_comm *c) {
    if (c) atomic_store(&c->cancelled, 1);
}

int tp_comm_rank(const tp_comm *c) { return c->rank; }
int tp_comm_size(const tp_comm *c) { return c->n_ranks; }
int tp_comm_device(const tp_comm *c) { return c->device; }

void tp_comm_destroy(tp_comm *c) {
    if (!c) return;
    if (!c->aborted) ncclCommDestroy(c->nccl);
    free(c);
}
