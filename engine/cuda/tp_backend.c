/* engine/cuda/tp_backend.c — tensor parallelism in one process (cuda_backend.h:
 * cuda_tp_backend_create): one NCCL communicator and one sharded CUDA backend per GPU, each step
 * run on every GPU by its own thread; rank 0 returns the logits. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/tp_comm.h"

enum { MAX_RANKS = 8, JOIN_TIMEOUT_MS = 120000 };

typedef struct tp_rank {
    int index, n_ranks;
    const tp_bootstrap_id *id;
    const llama_model *model;
    kv_cache *cache;
    cuda_backend_options options;
    pthread_t thread;
    tp_comm *comm;
    engine_backend backend;
    /* the step in flight */
    const llama_step_seq *seqs;
    int n_seqs;
    float *logits;
    ds_status status;
    char msg[512];
} tp_rank;

typedef struct tp_group {
    int n_ranks;
    tp_bootstrap_id id;
    tp_rank ranks[MAX_RANKS];
} tp_group;

static void *rank_create(void *arg) {
    tp_rank *r = arg;
    r->status = tp_comm_create(r->id, r->index, r->n_ranks, r->options.device, JOIN_TIMEOUT_MS,
                               &r->comm, r->msg, sizeof r->msg);
    r->options.tp = r->comm;
    if (r->status == DS_OK)
        r->status = cuda_backend_create(r->model, r->cache, &r->options, &r->backend, r->msg,
                                        sizeof r->msg);
    return NULL;
}

static void *rank_step(void *arg) {
    tp_rank *r = arg;
    r->status =
        r->backend.forward(r->backend.impl, r->seqs, r->n_seqs, r->logits, r->msg, sizeof r->msg);
    return NULL;
}

/* Runs fn on a thread per rank and joins them all; the first failure, naming its rank. */
static ds_status on_all(tp_group *g, void *(*fn)(void *), char *msg, size_t msg_len) {
    int started[MAX_RANKS] = {0};
    for (int i = 0; i < g->n_ranks; i++) {
        started[i] = pthread_create(&g->ranks[i].thread, NULL, fn, &g->ranks[i]) == 0;
        if (!started[i]) {
            g->ranks[i].status = DS_EINTERNAL;
            snprintf(g->ranks[i].msg, sizeof g->ranks[i].msg, "cannot start a thread");
        }
    }
    ds_status st = DS_OK;
    for (int i = 0; i < g->n_ranks; i++) {
        if (started[i]) pthread_join(g->ranks[i].thread, NULL);
        if (g->ranks[i].status != DS_OK && st == DS_OK)
            st = ds_fail(msg, msg_len, g->ranks[i].status, "tensor-parallel rank %d: %s", i,
                         g->ranks[i].msg);
    }
    return st;
}

static ds_status tp_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                            char *msg, size_t msg_len) {
    tp_group *g = impl;
    for (int i = 0; i < g->n_ranks; i++) {
        g->ranks[i].seqs = seqs, g->ranks[i].n_seqs = n_seqs;
        g->ranks[i].logits = i == 0 ? logits : NULL;
    }
    return on_all(g, rank_step, msg, msg_len);
}

static void tp_destroy(void *impl) {
    tp_group *g = impl;
    for (int i = 0; i < g->n_ranks; i++) {
        if (g->ranks[i].backend.destroy) g->ranks[i].backend.destroy(g->ranks[i].backend.impl);
        tp_comm_destroy(g->ranks[i].comm);
    }
    free(g);
}

ds_status cuda_tp_backend_create(const llama_model *model, kv_cache *cache,
                                 const cuda_backend_options *options, int n_ranks,
                                 engine_backend *out, char *msg, size_t msg_len) {
    int n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess) n_devices = 0;
    if (n_ranks < 1 || n_ranks > MAX_RANKS || n_ranks > n_devices)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "--tensor-parallel = %d: expected 1..%d GPUs (%d visible)", n_ranks,
                       MAX_RANKS, n_devices);
    tp_group *g = calloc(1, sizeof *g);
    if (!g) return ds_fail(msg, msg_len, DS_ENOMEM, "tensor parallel: out of memory");
    g->n_ranks = n_ranks;
    ds_status st = tp_comm_new_id(&g->id, msg, msg_len);
    for (int i = 0; i < n_ranks; i++) {
        g->ranks[i] = (tp_rank){.index = i,
                                .n_ranks = n_ranks,
                                .id = &g->id,
                                .model = model,
                                .cache = cache,
                                .options = *options};
        g->ranks[i].options.device = i;
    }
    if (st == DS_OK) st = on_all(g, rank_create, msg, msg_len);
    if (st != DS_OK) {
        tp_destroy(g);
        return st;
    }
    /* rank 0's: "cuda:0 (NAME), tensor-parallel rank 0 of N" */
    *out = (engine_backend){.impl = g,
                            .device = g->ranks[0].backend.device,
                            .forward = tp_forward,
                            .destroy = tp_destroy};
    return DS_OK;
}
