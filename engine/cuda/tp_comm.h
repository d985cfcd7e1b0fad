/* engine/cuda/tp_comm.h — one GPU's place in a tensor-parallel group: an NCCL communicator and
 * the one collective the sharded forward needs, the sum of the fp32 residual stream after the O
 * and down GEMMs (engine/tp/shard.h). Created by the thread that drives the GPU, with the id that
 * node 0 made (tp_comm_new_id) and handed out (engine/tp/bootstrap.h); borrowed by that GPU's
 * backend (engine/cuda/cuda_backend.h), which must be destroyed first.
 *
 * Nothing waits forever: the communicator is non-blocking (NCCL's config.blocking = 0), so its
 * creation and every wait for a step's work poll ncclCommGetAsyncError against timeout_ms; past
 * it, or on an NCCL error (a peer died, a network failure), the communicator is aborted and the
 * call returns DS_EUNAVAILABLE naming the rank, so the server can report NOT_SERVING rather than
 * hang. After that every call fails; the group must be rebuilt. NVLink multicast (NVLS) stays off:
 * NCCL_NVLS_ENABLE=0 is set in the environment before the first communicator, unless the caller
 * set it. CUDA builds only. */
#ifndef DS_ENGINE_CUDA_TP_COMM_H
#define DS_ENGINE_CUDA_TP_COMM_H

#include <stddef.h>

#include <cuda_runtime.h>

#include "common/status.h"
#include "engine/tp/bootstrap.h"

typedef struct tp_comm tp_comm;

/* Node 0, once: a fresh id for the whole group (ncclGetUniqueId). */
ds_status tp_comm_new_id(tp_bootstrap_id *id, char *msg, size_t msg_len);

/* Joins the group of n_ranks as rank, on device (made current here), waiting up to join_timeout_ms
 * for every rank to join; each rank's thread calls it concurrently. timeout_ms bounds every later
 * wait. DS_EINVAL for rank outside [0, n_ranks) or a timeout <= 0; DS_EUNAVAILABLE when the group
 * does not form in time or NCCL fails (the message has NCCL's error string). */
ds_status tp_comm_create(const tp_bootstrap_id *id, int rank, int n_ranks, int device,
                         int join_timeout_ms, int timeout_ms, tp_comm **out, char *msg,
                         size_t msg_len);

/* Enqueues x[0..n) = Σ_ranks x[0..n) (fp32, in place) on stream. Only enqueues: the sum is there
 * once tp_comm_wait returns DS_OK. */
ds_status tp_comm_allreduce_sum(tp_comm *comm, float *x, size_t n, cudaStream_t stream, char *msg,
                                size_t msg_len);

/* Enqueues buf[0..bytes) of rank 0 to every rank's buf (device memory, in place) on stream: how
 * rank 0 hands out each step's plan and the start-up settings. Only enqueues, as above. */
ds_status tp_comm_broadcast(tp_comm *comm, void *buf, size_t bytes, cudaStream_t stream, char *msg,
                            size_t msg_len);

/* Waits for everything enqueued on stream, checking the communicator while it waits (instead of
 * cudaStreamSynchronize, which would hang on a dead peer); timeout_ms 0: the communicator's. */
ds_status tp_comm_wait(tp_comm *comm, cudaStream_t stream, int timeout_ms, char *msg,
                       size_t msg_len);

/* From any thread: makes the wait in progress (and every later call) fail with DS_EUNAVAILABLE
 * soon, the waiting thread aborting the communicator — how a group that already failed shuts down
 * without waiting out every rank's timeout. */
void tp_comm_cancel(tp_comm *comm);

int tp_comm_rank(const tp_comm *comm);
int tp_comm_size(const tp_comm *comm);
int tp_comm_device(const tp_comm *comm); /* the CUDA device it was created on */

/* Releases the communicator (ncclCommDestroy, or nothing more after an abort). NULL-safe. */
void tp_comm_destroy(tp_comm *comm);

#endif
