/* engine/cuda/tp_backend.c — tensor parallelism over NCCL (cuda_backend.h: cuda_tp_backend_create
 * on node 0, cuda_tp_follow_node on the others). One process per node, one thread + stream +
 * communicator + sharded CUDA backend per GPU.
 *
 * Start-up, on every node: node 0 makes the NCCL id and hands it out over the TCP bootstrap
 * (engine/tp/bootstrap.h; in one process there is nothing to hand out); each GPU's thread joins the
 * communicator, then receives node 0's settings (tp_setup: the model's shape, which must match, and
 * the KV cache and step limits, which the other nodes adopt), creates its backend, and the group
 * sums a failure flag, so a rank that cannot start fails every node's start-up at once.
 *
 * Steps: rank 0 runs on the engine thread and broadcasts each step's plan; every other rank —
 * a persistent thread here or on another node, the same code — follows (cuda_backend_follow). When
 * no step came for a while, a keep-alive thread on node 0 sends IDLE so the followers' deadlines
 * hold only while node 0 is alive; destroy sends STOP. Once a step fails the group is done: every
 * later forward answers DS_EUNAVAILABLE with the first failure. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "engine/backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/cuda/tp_comm.h"
#include "engine/tp/bootstrap.h"
#include "engine/tp/shard.h"

enum {
    MAX_RANKS = 8,
    SETUP_MAGIC = 0x44535455, /* "DSTU" */
    SETUP_VERSION = 2,
    /* Start-up (bootstrap, joining, settings) waits at least this long: nodes load their weights
     * at different speeds. */
    START_TIMEOUT_MS = 600000,
};

/* What node 0 tells every rank before the backends exist (the same binary on every node). */
typedef struct tp_setup {
    uint32_t magic, version;
    int32_t world;
    int32_t n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab_size, context_length;
    int32_t tied_embeddings, rope_scaling;
    float rms_eps, rope_theta;
    kv_cache_config kv;
    int32_t max_step_tokens, max_seqs, weight_type, random_weights;
    uint64_t seed;
} tp_setup;

typedef struct tp_group tp_group;

typedef struct tp_rank {
    tp_group *g;
    int rank, device; /* global rank; local CUDA device */
    pthread_t thread;
    int running;
    tp_comm *comm;
    engine_backend backend;
    tp_setup setup;   /* rank 0 sends it; the others receive it */
    int failed_ranks; /* start-up: ranks of the group that failed, from the summed flag */
    ds_status status;
    char msg[512];
} tp_rank;

struct tp_group {
    cuda_tp_config config;
    int n_local;
    tp_bootstrap_id id;
    const llama_model *model;
    kv_cache *cache;
    cuda_backend_options options;
    tp_rank ranks[MAX_RANKS]; /* this node's GPUs */
    /* node 0: steps and keep-alives take turns on rank 0 */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t keepalive;
    int keepalive_running, closing;
    double last_ms;
    ds_status refused; /* start-up on a node but 0: node 0's settings do not fit this node */
    char refused_msg[512];
    ds_status failed; /* first failure of a step; DS_OK while healthy */
    char failure[768];
    atomic_int failed_flag; /* failed != DS_OK, for tp_failure without the lock */
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- start-up ---- */

/* Node 0's settings for the group. */
static tp_setup setup_of(const tp_group *g) {
    const llama_config *c = &g->model->config;
    return (tp_setup){.magic = SETUP_MAGIC,
                      .version = SETUP_VERSION,
                      .world = g->config.world,
                      .n_layers = c->n_layers,
                      .d_model = c->d_model,
                      .n_heads = c->n_heads,
                      .n_kv_heads = c->n_kv_heads,
                      .head_dim = c->head_dim,
                      .d_ff = c->d_ff,
                      .vocab_size = c->vocab_size,
                      .context_length = c->context_length,
                      .tied_embeddings = c->tied_embeddings,
                      .rope_scaling = (int32_t)c->rope_scaling,
                      .rms_eps = c->rms_eps,
                      .rope_theta = c->rope_theta,
                      .kv = g->cache->config,
                      .max_step_tokens = g->options.max_step_tokens,
                      .max_seqs = g->options.max_seqs,
                      .weight_type = (int32_t)g->options.weight_type,
                      .random_weights = g->options.random_weights,
                      .seed = g->options.seed};
}

static int start_timeout_ms(const cuda_tp_config *c) {
    return c->timeout_ms > START_TIMEOUT_MS ? c->timeout_ms : START_TIMEOUT_MS;
}

/* bytes of host memory from rank 0 to every rank (sum = 0), or summed as floats (sum = 1),
 * through a scratch device buffer on the communicator's device, waiting up to timeout_ms. */
static ds_status exchange(tp_comm *comm, void *host, size_t bytes, int sum, int timeout_ms,
                          char *msg, size_t msg_len) {
    void *dev = NULL;
    cudaStream_t stream = NULL;
    ds_status st = DS_OK;
    cudaError_t e = cudaSetDevice(tp_comm_device(comm)); /* a new thread starts on device 0 */
    if (e == cudaSuccess) e = cudaMalloc(&dev, bytes);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, stream);
    if (e != cudaSuccess)
        st = ds_fail(msg, msg_len, DS_EINTERNAL, "tensor parallel start-up: %s",
                     cudaGetErrorString(e));
    if (st == DS_OK)
        st = sum ? tp_comm_allreduce_sum(comm, dev, bytes / sizeof(float), stream, msg, msg_len)
                 : tp_comm_broadcast(comm, dev, bytes, stream, msg, msg_len);
    if (st == DS_OK) {
        e = cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, stream);
        st = e == cudaSuccess ? tp_comm_wait(comm, stream, timeout_ms, msg, msg_len)
                              : ds_fail(msg, msg_len, DS_EINTERNAL, "tensor parallel start-up: %s",
                                        cudaGetErrorString(e));
    }
    if (stream) cudaStreamDestroy(stream);
    cudaFree(dev);
    return st;
}

/* Phase 1, on each GPU's thread: join the communicator, receive node 0's settings. */
static void *rank_join(void *arg) {
    tp_rank *r = arg;
    tp_group *g = r->g;
    const int start_ms = start_timeout_ms(&g->config);
    r->status = tp_comm_create(&g->id, r->rank, g->config.world, r->device, start_ms,
                               g->config.timeout_ms, &r->comm, r->msg, sizeof r->msg);
    if (r->status == DS_OK)
        r->status =
            exchange(r->comm, &r->setup, sizeof r->setup, 0, start_ms, r->msg, sizeof r->msg);
    return NULL;
}

/* Phase 2: this rank's backend; then the group learns how many ranks failed (every rank takes
 * part in the sum, its own failure included, so no rank waits for one that gave up). */
static void *rank_create(void *arg) {
    tp_rank *r = arg;
    tp_group *g = r->g;
    cuda_backend_options o = g->options;
    o.device = r->device, o.tp = r->comm;
    if (g->refused != DS_OK) {
        r->status = g->refused;
        snprintf(r->msg, sizeof r->msg, "%s", g->refused_msg);
    } else {
        r->status = cuda_backend_create(g->model, g->cache, &o, &r->backend, r->msg, sizeof r->msg);
    }
    float flag = r->status != DS_OK;
    char why[256];
    ds_status st =
        exchange(r->comm, &flag, sizeof flag, 1, start_timeout_ms(&g->config), why, sizeof why);
    if (st != DS_OK && r->status == DS_OK) {
        r->status = st;
        snprintf(r->msg, sizeof r->msg, "%s", why);
    }
    r->failed_ranks = st == DS_OK ? (int)(flag + 0.5f) : -1;
    return NULL;
}

/* With g->mu held: the group's first failure. */
static void set_failed(tp_group *g, ds_status st, const char *why) {
    if (g->failed != DS_OK) return;
    g->failed = st;
    snprintf(g->failure, sizeof g->failure, "%s", why);
    atomic_store_explicit(&g->failed_flag, 1, memory_order_release);
}

static void record_failure(tp_group *g, ds_status st, const char *why) {
    pthread_mutex_lock(&g->mu);
    set_failed(g, st, why);
    pthread_mutex_unlock(&g->mu);
}

/* Phase 3, on every GPU but global rank 0's: run rank 0's steps until STOP or a failure. */
static void *rank_follow(void *arg) {
    tp_rank *r = arg;
    int stop = 0;
    do
        r->status = cuda_backend_follow(&r->backend, &stop, r->msg, sizeof r->msg);
    while (r->status == DS_OK && !stop);
    if (r->status != DS_OK) record_failure(r->g, DS_EUNAVAILABLE, r->msg);
    return NULL;
}

/* Starts fn on a thread for each local rank from `first` on; 0, or -1 if one did not start. */
static int start_all(tp_group *g, int first, void *(*fn)(void *)) {
    int rc = 0;
    for (int i = first; i < g->n_local; i++) {
        tp_rank *r = &g->ranks[i];
        r->running = pthread_create(&r->thread, NULL, fn, r) == 0;
        if (!r->running) {
            r->status = DS_EINTERNAL;
            snprintf(r->msg, sizeof r->msg, "cannot start a thread");
            rc = -1;
        }
    }
    return rc;
}

/* Joins them; the first failure, naming its rank. */
static ds_status join_all(tp_group *g, int first, char *msg, size_t msg_len) {
    ds_status st = DS_OK;
    for (int i = first; i < g->n_local; i++) {
        tp_rank *r = &g->ranks[i];
        if (r->running) pthread_join(r->thread, NULL);
        r->running = 0;
        if (r->status != DS_OK && st == DS_OK)
            st = ds_fail(msg, msg_len, r->status, "tensor-parallel rank %d (node %d, cuda:%d): %s",
                         r->rank, g->config.node_rank, r->device, r->msg);
    }
    return st;
}

static ds_status on_all(tp_group *g, void *(*fn)(void *), char *msg, size_t msg_len) {
    (void)start_all(g, 0, fn); /* a thread that did not start has its error in its rank */
    return join_all(g, 0, msg, msg_len);
}

/* Before any GPU or peer is touched: the group's shape, and a model it can split. */
static ds_status check_config(const cuda_tp_config *c, const llama_config *model, char *msg,
                              size_t msg_len) {
    tp_dims dims;
    ds_status st = tp_dims_make(model, 0, c->world > 0 ? c->world : 1, &dims, msg, msg_len);
    if (st != DS_OK) return st;
    int n_devices = 0;
    if (cudaGetDeviceCount(&n_devices) != cudaSuccess) n_devices = 0;
    if (c->n_nodes < 1 || c->node_rank < 0 || c->node_rank >= c->n_nodes)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "n_nodes = %d, node_rank = %d: expected 0 <= "
                       "node rank < nodes",
                       c->n_nodes, c->node_rank);
    if (c->world < 1 || c->world > MAX_RANKS * c->n_nodes || c->world % c->n_nodes)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor_parallel = %d over n_nodes = %d: expected a multiple of the "
                       "nodes, at most %d GPUs per node",
                       c->world, c->n_nodes, MAX_RANKS);
    if (c->world / c->n_nodes > n_devices)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor_parallel = %d over %d node(s): %d GPUs per node, %d visible here",
                       c->world, c->n_nodes, c->world / c->n_nodes, n_devices);
    if (c->timeout_ms <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "tensor parallel timeout %d ms: must be positive",
                       c->timeout_ms);
    if (c->n_nodes > 1 && (!c->master_addr || c->master_port <= 0 || c->master_port > 65535))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "n_nodes = %d: give master_addr and master_port (1..65535) of node 0",
                       c->n_nodes);
    return DS_OK;
}

static void group_destroy(tp_group *g) {
    for (int i = 0; i < g->n_local; i++) {
        tp_rank *r = &g->ranks[i];
        if (r->backend.destroy) r->backend.destroy(r->backend.impl);
        tp_comm_destroy(r->comm);
    }
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}

/* Any node but 0, after joining: checks node 0's settings against this node's model and adopts
 * its KV cache (created into *cache_out) and limits. */
static ds_status adopt_settings(tp_group *g, kv_cache **cache_out, char *msg, size_t msg_len) {
    const tp_setup *s = &g->ranks[0].setup;
    const llama_config *m = &g->model->config;
    const cuda_tp_config *c = &g->config;
    if (s->magic != SETUP_MAGIC || s->version != SETUP_VERSION || s->world != c->world)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "node 0's settings: version %u, %d GPUs; this node: version %d, %d "
                       "GPUs (run the same decoserve build and --tensor-parallel everywhere)",
                       s->version, s->world, SETUP_VERSION, c->world);
    if (s->n_layers != m->n_layers || s->d_model != m->d_model || s->n_heads != m->n_heads ||
        s->n_kv_heads != m->n_kv_heads || s->head_dim != m->head_dim || s->d_ff != m->d_ff ||
        s->vocab_size != m->vocab_size)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "node 0's model (%d layers, d_model %d, %d/%d heads, head_dim %d, d_ff "
                       "%d, vocab %d) differs from this node's (%d layers, d_model %d, %d/%d "
                       "heads, head_dim %d, d_ff %d, vocab %d)",
                       s->n_layers, s->d_model, s->n_heads, s->n_kv_heads, s->head_dim, s->d_ff,
                       s->vocab_size, m->n_layers, m->d_model, m->n_heads, m->n_kv_heads,
                       m->head_dim, m->d_ff, m->vocab_size);
    if (s->context_length != m->context_length || s->tied_embeddings != m->tied_embeddings ||
        s->rope_scaling != (int)m->rope_scaling || s->rms_eps != m->rms_eps ||
        s->rope_theta != m->rope_theta)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "node 0's model (context %d, rope theta %g, tied embeddings %d) differs "
                       "from this node's (context %d, rope theta %g, tied embeddings %d), or "
                       "their RoPE scaling or RMS eps do",
                       s->context_length, s->rope_theta, s->tied_embeddings, m->context_length,
                       m->rope_theta, m->tied_embeddings);
    if (s->random_weights != (g->model->layers == NULL))
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "node 0 uses %s, this node %s: give every node the same",
                       s->random_weights ? "random_weights" : "a checkpoint (model_path)",
                       s->random_weights ? "a checkpoint (model_path)" : "random_weights");
    kv_cache_config kc = s->kv;
    kc.no_storage = 1, kc.prefix_cache = 0; /* block ids come from node 0 */
    ds_status st = kv_cache_create(&kc, cache_out, msg, msg_len);
    if (st != DS_OK) return st;
    g->cache = *cache_out;
    g->options.max_step_tokens = s->max_step_tokens, g->options.max_seqs = s->max_seqs;
    g->options.weight_type = (cuda_weight_type)s->weight_type;
    g->options.random_weights = s->random_weights, g->options.seed = s->seed;
    return DS_OK;
}

/* Bootstrap, join, settings, backends. Node 0 has g->cache and g->options; the others get them
 * from node 0's settings (their cache is created here and owned by the caller via *cache_out). */
static ds_status group_start(tp_group *g, kv_cache **cache_out, char *msg, size_t msg_len) {
    const cuda_tp_config *c = &g->config;
    g->n_local = c->world / c->n_nodes;
    for (int i = 0; i < g->n_local; i++)
        g->ranks[i] = (tp_rank){.g = g, .rank = c->node_rank * g->n_local + i, .device = i};
    const tp_bootstrap_config bc = {.master_addr = c->master_addr,
                                    .master_port = c->master_port,
                                    .node_rank = c->node_rank,
                                    .n_nodes = c->n_nodes,
                                    .world_size = c->world,
                                    .timeout_ms = start_timeout_ms(c)};
    ds_status st = DS_OK;
    if (c->node_rank == 0) {
        st = tp_comm_new_id(&g->id, msg, msg_len);
        if (st == DS_OK && c->n_nodes > 1) {
            tp_bootstrap_server *server = NULL;
            int port;
            st = tp_bootstrap_listen(&bc, &server, &port, msg, msg_len);
            if (st == DS_OK) st = tp_bootstrap_serve(server, &bc, &g->id, msg, msg_len);
            tp_bootstrap_close(server);
        }
        g->ranks[0].setup = setup_of(g);
    } else {
        st = tp_bootstrap_join(&bc, &g->id, msg, msg_len);
    }
    if (st == DS_OK) st = on_all(g, rank_join, msg, msg_len);
    if (st != DS_OK) return st;
    if (c->node_rank != 0) /* a refusal still takes part in the flag sum below */
        g->refused = adopt_settings(g, cache_out, g->refused_msg, sizeof g->refused_msg);
    st = on_all(g, rank_create, msg, msg_len);
    if (st == DS_OK && g->ranks[0].failed_ranks != 0)
        st = ds_fail(msg, msg_len, DS_EUNAVAILABLE,
                     "tensor parallel: %d rank(s) on other nodes failed to start (see their logs)",
                     g->ranks[0].failed_ranks);
    return st;
}

static tp_group *group_new(const llama_model *model, kv_cache *cache,
                           const cuda_backend_options *options, const cuda_tp_config *config) {
    tp_group *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->config = *config, g->model = model, g->cache = cache, g->options = *options;
    pthread_mutex_init(&g->mu, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&g->cv, &attr);
    pthread_condattr_destroy(&attr);
    return g;
}

/* ---- node 0 ---- */

static void *keepalive_main(void *arg) {
    tp_group *g = arg;
    const double every = g->config.timeout_ms / 4.0 < 1000 ? g->config.timeout_ms / 4.0 : 1000;
    pthread_mutex_lock(&g->mu);
    while (!g->closing && g->failed == DS_OK) {
        const double wake = g->last_ms + every;
        if (now_ms() >= wake) {
            char why[512];
            ds_status st = cuda_backend_signal(&g->ranks[0].backend, 0, why, sizeof why);
            g->last_ms = now_ms();
            if (st != DS_OK) {
                char failure[600];
                snprintf(failure, sizeof failure, "keep-alive: %s", why);
                set_failed(g, DS_EUNAVAILABLE, failure);
            }
            continue;
        }
        struct timespec ts; /* g->cv waits on CLOCK_MONOTONIC (group_new), as now_ms counts */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const double ms = wake - now_ms() > 0 ? wake - now_ms() : 0;
        ts.tv_sec += (time_t)(ms / 1000);
        ts.tv_nsec += (long)((ms - (double)(time_t)(ms / 1000) * 1000) * 1e6);
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&g->cv, &g->mu, &ts);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

/* Rank 0's step under the group's lock: its logits (rows NULL) or tokens sampled on its GPU. */
static ds_status tp_step(tp_group *g, const llama_step_seq *seqs, int n_seqs, float *logits,
                         const sample_row *rows, int32_t *tokens, float *logprobs, char *msg,
                         size_t msg_len) {
    pthread_mutex_lock(&g->mu);
    ds_status st = g->failed;
    if (st != DS_OK) {
        ds_fail(msg, msg_len, st, "tensor-parallel group failed earlier: %s", g->failure);
    } else {
        const engine_backend *r0 = &g->ranks[0].backend;
        st = rows ? r0->forward_sample(r0->impl, seqs, n_seqs, rows, tokens, logprobs, msg, msg_len)
                  : r0->forward(r0->impl, seqs, n_seqs, logits, msg, msg_len);
        g->last_ms = now_ms();
        /* DS_EUNAVAILABLE: a rank died or the ranks are out of step (cuda_backend.h); the group
         * is gone. Anything else was refused before the step reached the others. */
        if (st == DS_EUNAVAILABLE) set_failed(g, st, msg);
    }
    pthread_mutex_unlock(&g->mu);
    return st;
}

static ds_status tp_forward(void *impl, const llama_step_seq *seqs, int n_seqs, float *logits,
                            char *msg, size_t msg_len) {
    return tp_step(impl, seqs, n_seqs, logits, NULL, NULL, NULL, msg, msg_len);
}

static ds_status tp_forward_sample(void *impl, const llama_step_seq *seqs, int n_seqs,
                                   const sample_row *rows, int32_t *tokens, float *logprobs,
                                   char *msg, size_t msg_len) {
    return tp_step(impl, seqs, n_seqs, NULL, rows, tokens, logprobs, msg, msg_len);
}

static const char *tp_failure(void *impl) {
    tp_group *g = impl;
    return atomic_load_explicit(&g->failed_flag, memory_order_acquire) ? g->failure : NULL;
}

static void tp_destroy(void *impl) {
    tp_group *g = impl;
    pthread_mutex_lock(&g->mu);
    g->closing = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    if (g->keepalive_running) pthread_join(g->keepalive, NULL);
    pthread_mutex_lock(&g->mu);
    const int healthy = g->failed == DS_OK;
    pthread_mutex_unlock(&g->mu);
    char why[512];
    if (healthy && g->config.world > 1 && g->ranks[0].backend.impl) {
        if (cuda_backend_signal(&g->ranks[0].backend, 1, why, sizeof why) != DS_OK)
            DS_LOG_W("tensor parallel stop: %s", why);
    } else if (!healthy) { /* no STOP will come: this node's followers stop waiting now */
        for (int i = 1; i < g->n_local; i++)
            tp_comm_cancel(g->ranks[i].comm);
    }
    (void)join_all(g, 1, why, sizeof why);
    group_destroy(g);
}

ds_status cuda_tp_backend_create(const llama_model *model, kv_cache *cache,
                                 const cuda_backend_options *options, const cuda_tp_config *config,
                                 engine_backend *out, char *msg, size_t msg_len) {
    ds_status st = check_config(config, &model->config, msg, msg_len);
    if (st == DS_OK && config->node_rank != 0)
        st = ds_fail(msg, msg_len, DS_EINVAL, "cuda_tp_backend_create: node %d is not node 0",
                     config->node_rank);
    if (st != DS_OK) return st;
    tp_group *g = group_new(model, cache, options, config);
    if (!g) return ds_fail(msg, msg_len, DS_ENOMEM, "tensor parallel: out of memory");
    st = group_start(g, NULL, msg, msg_len);
    if (st == DS_OK && g->config.world > 1) {
        g->last_ms = now_ms();
        g->keepalive_running = pthread_create(&g->keepalive, NULL, keepalive_main, g) == 0;
        if (start_all(g, 1, rank_follow) < 0 || !g->keepalive_running)
            st = ds_fail(msg, msg_len, DS_EINTERNAL, "tensor parallel: cannot start a thread");
    }
    if (st != DS_OK) { /* destroy cancels the local followers instead of waiting for them */
        record_failure(g, st, msg);
        tp_destroy(g);
        return st;
    }
    /* rank 0's: "cuda:0 (NAME), tensor-parallel rank 0 of N" */
    *out = (engine_backend){.impl = g,
                            .device = g->ranks[0].backend.device,
                            .forward = tp_forward,
                            .forward_sample = tp_forward_sample,
                            .destroy = tp_destroy,
                            .failure = tp_failure};
    return DS_OK;
}

void cuda_tp_part_ms(const engine_backend *group, double *allreduce_ms, double *lm_head_ms) {
    const tp_group *g = group->impl;
    cuda_backend_part_ms(&g->ranks[0].backend, allreduce_ms, lm_head_ms);
}

/* ---- the other nodes ---- */

ds_status cuda_tp_follow_node(const llama_model *model, const cuda_backend_options *options,
                              const cuda_tp_config *config, char *msg, size_t msg_len) {
    ds_status st = check_config(config, &model->config, msg, msg_len);
    if (st == DS_OK && config->node_rank == 0)
        st = ds_fail(msg, msg_len, DS_EINVAL,
                     "cuda_tp_follow_node: node 0 leads, it does not "
                     "follow");
    if (st != DS_OK) return st;
    tp_group *g = group_new(model, NULL, options, config);
    if (!g) return ds_fail(msg, msg_len, DS_ENOMEM, "tensor parallel: out of memory");
    kv_cache *cache = NULL;
    st = group_start(g, &cache, msg, msg_len);
    if (st == DS_OK) {
        start_all(g, 0, rank_follow);
        st = join_all(g, 0, msg, msg_len);
    }
    group_destroy(g);
    kv_cache_destroy(cache);
    return st;
}
