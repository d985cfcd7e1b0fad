/* engine/serving.c — the serving engine (see serving.h): request intake, the step loop over the
 * scheduler and the forward pass, sampling, detokenization, stop conditions and stats. What a
 * request produces goes to its output stream (engine/output_stream.h).
 *
 * Async scheduling (serving_options.async_scheduling, vLLM's --async-scheduling) overlaps the host
 * with the device through the backend's launch / collect (engine/backend.h). Each serving_step:
 * intake and cancellations, schedule step N, launch it, then collect step N-1 (stream its
 * tokens, stop conditions, finishes) while N runs, then commit N. Step N was scheduled before
 * N-1's ids reached the host: every sequence N-1 sampled carries a placeholder as its last token
 * (scheduler.h), and its chunk in N that ends there (the decode, or a recompute after a
 * preemption) takes the id on the device (prev_row: its row in N-1's samples); collecting N-1
 * writes the id in (sched_seq_resolve). The scheduler decides N from counts and blocks alone, so
 * N's batch is the synchronous engine's unless N-1's tokens stopped a sequence in a way only the
 * host sees (EOS, a stop id or string) or a cancel came while N-1 ran. What keeps the output
 * that of the synchronous order:
 *  - each sequence draws its uniforms in the same order (one sampler_next_row per sampled step),
 *    and the forward pass does not depend on what else is in the batch (serving_test checks it on
 *    the CPU), so a different batch mix gives the same tokens;
 *  - a sequence that certainly ends with the token N samples (max_tokens, the context) leaves
 *    the scheduler at N's commit, before N+1 is scheduled, exactly where the synchronous engine
 *    removes it: without EOS / stop-id / stop-string hits the batches are the synchronous ones;
 *  - one that stops with N-1's token (EOS, a stop id or string, an error) is already in step N:
 *    it leaves the uncommitted batch (its reservation rolled back, sched_remove) and N's token for
 *    it is dropped; so is the token of a request cancelled while its step ran (cancellations are
 *    applied before the previous step's tokens are streamed, as they would have been in the
 *    synchronous order);
 *  - preemption in step N may pick a sequence whose last id is still a placeholder: freed, and
 *    if readmitted at once its recompute ends with the handed-over id.
 * What stays synchronous: backends without launch / collect (tensor parallelism, wrappers such as
 * the tests' fault injection) run every step through forward / forward_sample; after any failed
 * step every launched one is collected and dropped and every live request ends with the error. */
#include "engine/serving.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "engine/backend_open.h"
#include "engine/llama.h"
#include "engine/loader/synthetic.h"
#include "engine/model_files.h"
#include "engine/output_stream.h"
#include "engine/stop.h"
#include "scheduler/scheduler.h"

/* --- the engine ------------------------------------------------------------------------------- */

typedef struct request {
    sched_seq seq;
    serving_stream *stream;
    sampler smp;
    stop_matcher stop;
    bpe_decoder *dec;
    int max_tokens, ignore_eos, n_generated, admitted;
    int last_row; /* async: its row in the samples of the latest launched step that sampled it */
    int waiting;  /* as last told to the stream (output_stream_set_waiting) */
    int32_t stop_ids[SERVING_MAX_STOP_IDS];
    int n_stop_ids;
    double t_submit, t_last_token;
    struct request *next; /* intake queue, then the live list */
} request;

struct serving {
    serving_options options;
    char *model_path;
    char *chat_template;
    llama_model model;
    bpe_tokenizer *tok;
    kv_cache *cache;
    engine_backend backend; /* the CPU forward pass (engine/llama.h) or a GPU's */
    sched *sched;
    float *logits;           /* the CPU path's: [max_seqs][vocab] */
    sample_row *sample_rows; /* a device-sampling backend's: [max_seqs] rows, and the tokens */
    int32_t *sampled;
    void *sample_scratch;
    llama_step_seq *step;
    /* async scheduling: the launched steps not yet collected, oldest at flight_head; each row's
     * request (NULL once it ended: that token is dropped) */
    int async;
    struct flight {
        struct request **rows; /* [max_seqs] */
        int n_rows;
    } flights[2];
    int flight_head, n_flight;
    int32_t *prev_row; /* [max_seqs]: the launch's hand-off rows */
    char *text_buf;    /* stop matcher output */
    size_t text_cap;
    request *live;                            /* requests in the scheduler (engine thread only) */
    latency_histogram ttft, inter_token, e2e; /* engine thread; copied into each snapshot */
    double step_end_s;    /* when the latest forward pass returned: the time of its tokens */
    atomic_int n_waiting; /* live requests waiting to run: what max_waiting bounds */

    pthread_mutex_t mu; /* protects everything below */
    pthread_cond_t cv;
    request *intake_head, *intake_tail;
    int n_intake;
    int accepting, stopping, drain, wake;
    char device_failed[512]; /* why, once a step answered DS_EUNAVAILABLE; "" while healthy */
    int thread_started;
    pthread_t thread;
    int64_t next_id;
    serving_stats stats; /* snapshot */
    int64_t submitted, finished, cancelled, failed, prompt_tokens, generated_tokens;
    double busy_s;
};

/* serving_stream_cancel's wake-up (output_stream_create). */
static void wake_engine(void *ctx) {
    serving *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->wake = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void serving_options_default(serving_options *o) {
    *o = (serving_options){.kv_bits = 16,
                           .kv_method = DQ_KIVI,
                           .kv_group_size = 64,
                           .block_size = 32,
                           .kv_memory_bytes = 0,
                           .gpu_memory_utilization = 0.9,
                           .max_seqs = 64,
                           .max_batched_tokens = 512,
                           .tensor_parallel = 1,
                           .n_nodes = 1,
                           .tp_timeout_s = 60,
                           .max_waiting = 1024,
                           .prefix_cache = 1,
                           .weights = QM_Q4_0};
}

void serving_request_default(serving_request *r) {
    memset(r, 0, sizeof *r);
    r->max_tokens = 16;
    r->sampling = sampler_params_default();
}

static void finish(serving *s, struct request *r, serving_finish why, const char *error);
static void drain_flights(serving *s);

void serving_destroy(serving *s) {
    if (!s) return;
    if (s->thread_started) serving_shutdown(s, 0);
    drain_flights(s);
    /* Every stream still open gets its final output. */
    for (request *r = s->intake_head, *next; r; r = next) {
        next = r->next;
        r->next = s->live, s->live = r;
    }
    s->intake_head = s->intake_tail = NULL;
    while (s->live)
        finish(s, s->live, SERVING_CANCELLED, "server stopped");
    sched_destroy(s->sched);
    if (s->backend.destroy) s->backend.destroy(s->backend.impl);
    kv_cache_destroy(s->cache);
    bpe_destroy(s->tok);
    llama_model_free(&s->model);
    free(s->logits), free(s->sample_scratch), free(s->step), free(s->text_buf);
    free(s->sample_rows), free(s->sampled), free(s->prev_row);
    for (int i = 0; i < 2; i++)
        free(s->flights[i].rows);
    free(s->model_path), free(s->chat_template);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}

static void snapshot_stats(serving *s);

/* The model and tokenizer: from model_path's files, or for random_weights a named shape with
 * seeded random weights and the synthetic tokenizer (engine/loader/synthetic.h). */
static ds_status load_model(const serving_options *o, llama_model *model, bpe_tokenizer **tok,
                            char *msg, size_t msg_len) {
    if (o->model_path) return model_files_load(o->model_path, model, tok, msg, msg_len);
    char why[256];
    ds_status st = synthetic_shape(o->random_weights, &model->config, why, sizeof why);
    if (st == DS_OK) st = synthetic_tokenizer(model->config.vocab_size, tok, why, sizeof why);
    if (st == DS_OK && o->device == SERVING_CPU) { /* a GPU draws its own on the device */
        st = llama_model_alloc(model, why, sizeof why);
        if (st == DS_OK) synthetic_fill_weights(model, o->seed);
    }
    if (st != DS_OK)
        return ds_fail(msg, msg_len, st, "random_weights %s: %s", o->random_weights, why);
    return DS_OK;
}

static engine_backend_options backend_options(const serving_options *o) {
    return (engine_backend_options){.cuda = o->device == SERVING_CUDA,
                                    .device_index = o->device_index,
                                    .max_step_tokens = o->max_batched_tokens,
                                    .max_seqs = o->max_seqs,
                                    .cpu_weights = o->weights,
                                    .n_threads = o->n_threads,
                                    .gpu_bf16 = o->gpu_bf16,
                                    .tensor_parallel = o->tensor_parallel,
                                    .n_nodes = o->n_nodes,
                                    .node_rank = o->node_rank,
                                    .master_addr = o->master_addr,
                                    .master_port = o->master_port,
                                    .tp_timeout_ms = o->tp_timeout_s * 1000,
                                    .random_weights = o->random_weights != NULL,
                                    .enforce_eager = o->enforce_eager,
                                    .async_steps = o->async_scheduling,
                                    .seed = o->seed};
}

static ds_status open_backend(serving *s, char *msg, size_t msg_len) {
    engine_backend_options bo = backend_options(&s->options);
    ds_status st = engine_backend_open(&s->model, s->cache, &bo, &s->backend, msg, msg_len);
    if (st == DS_OK && s->options.wrap_backend)
        st = s->options.wrap_backend(s->options.wrap_ctx, &s->backend, msg, msg_len);
    return st;
}

/* What serving_create and serving_follow both refuse. */
static ds_status check_options(const serving_options *o, char *msg, size_t msg_len) {
    if (!o->model_path == !o->random_weights)
        return ds_fail(msg, msg_len, DS_EINVAL, "model_path, random_weights: give exactly one");
    if (o->kv_bits != 2 && o->kv_bits != 4 && o->kv_bits != 8 && o->kv_bits != 16)
        return ds_fail(msg, msg_len, DS_EINVAL, "kv_bits = %d: expected 16, 8, 4 or 2", o->kv_bits);
    if ((o->tensor_parallel > 1 || o->n_nodes > 1) && o->device != SERVING_CUDA)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "tensor_parallel = %d, n_nodes = %d: tensor parallelism needs the CUDA "
                       "device",
                       o->tensor_parallel, o->n_nodes);
    return DS_OK; /* the node ranks: engine_backend_open / _follow check them */
}

ds_status serving_follow(const serving_options *o, char *msg, size_t msg_len) {
    ds_status st = check_options(o, msg, msg_len);
    if (st == DS_OK && o->node_rank == 0)
        st = ds_fail(msg, msg_len, DS_EINVAL, "node_rank 0 serves; the other nodes follow it");
    if (st != DS_OK) return st;
    llama_model model = {0};
    bpe_tokenizer *tok = NULL;
    st = load_model(o, &model, &tok, msg, msg_len);
    if (st == DS_OK) {
        engine_backend_options bo = backend_options(o);
        st = engine_backend_follow(&model, &bo, msg, msg_len);
    }
    bpe_destroy(tok);
    llama_model_free(&model);
    return st;
}

ds_status serving_create(const serving_options *o, serving **out, char *msg, size_t msg_len) {
    *out = NULL;
    ds_status st = check_options(o, msg, msg_len);
    if (st == DS_OK && o->node_rank != 0)
        st = ds_fail(msg, msg_len, DS_EINVAL,
                     "node_rank %d: only node 0 serves (the others follow: serving_follow)",
                     o->node_rank);
    if (st != DS_OK) return st;
    if (o->max_seqs <= 0 || o->max_batched_tokens <= 0 || o->max_waiting <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "max_seqs = %d, max_batched_tokens = %d, max_waiting = %d: all must be "
                       "positive",
                       o->max_seqs, o->max_batched_tokens, o->max_waiting);
    serving *s = calloc(1, sizeof *s);
    if (!s) return ds_fail(msg, msg_len, DS_ENOMEM, "serving: out of memory");
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->n_waiting, 0);
    pthread_cond_init(&s->cv, NULL);
    s->options = *o;
    s->model_path = strdup(o->model_path ? o->model_path : o->random_weights);
    s->options.model_path = o->model_path ? s->model_path : NULL;
    s->options.random_weights = o->random_weights ? s->model_path : NULL;
    s->next_id = 1;
    latency_histogram_init(&s->ttft, LATENCY_TTFT);
    latency_histogram_init(&s->inter_token, LATENCY_INTER_TOKEN);
    latency_histogram_init(&s->e2e, LATENCY_E2E);
    st = s->model_path ? load_model(&s->options, &s->model, &s->tok, msg, msg_len)
                       : ds_fail(msg, msg_len, DS_ENOMEM, "serving: out of memory");
    if (st == DS_OK && o->model_path)
        st = model_files_chat_template(o->model_path, &s->chat_template, msg, msg_len);
    if (st != DS_OK) {
        serving_destroy(s);
        return st;
    }
    const llama_config *c = &s->model.config;
    kv_cache_config kc = {.n_layers = c->n_layers,
                          .n_kv_heads = c->n_kv_heads,
                          .head_dim = c->head_dim,
                          .block_size = o->block_size,
                          .prefix_cache = o->prefix_cache};
    kc.key_codec = dq_config_defaults(o->kv_bits == 16 ? DQ_FP16 : o->kv_method, o->kv_bits);
    kc.key_codec.group_size = o->kv_group_size;
    kc.value_codec = kc.key_codec;
    /* One open block per running sequence, plus the blocks a step's prefill chunks span. */
    int n_open = o->max_seqs + (o->max_batched_tokens + o->block_size - 1) / o->block_size + 1;
    int64_t kv_memory = o->kv_memory_bytes;
    if (o->device == SERVING_CUDA) {
        kc.no_storage = 1; /* the pages live on the GPU */
        if (kv_memory == 0) {
            engine_backend_options bo = backend_options(o);
            st = engine_backend_gpu_kv_budget(c, &bo, o->block_size, o->gpu_memory_utilization,
                                              &kv_memory, msg, msg_len);
        }
    } else if (kv_memory == 0) {
        kv_memory = (int64_t)1 << 30;
    }
    if (st == DS_OK) st = kv_cache_size_pools(&kc, kv_memory, n_open, msg, msg_len);
    if (st == DS_OK) st = kv_cache_create(&kc, &s->cache, msg, msg_len);
    if (st == DS_OK) st = open_backend(s, msg, msg_len);
    sched_config sc = {.max_seqs = o->max_seqs, .max_batched_tokens = o->max_batched_tokens};
    if (st == DS_OK) st = sched_create(&sc, s->cache, &s->sched, msg, msg_len);
    if (st == DS_OK) {
        s->async = o->async_scheduling && s->backend.launch && s->backend.collect;
        if (o->async_scheduling && !s->async)
            DS_LOG_I("async scheduling: %s steps synchronously", s->backend.device);
        /* A backend that samples on its device returns token ids only (so does launch). */
        const int on_device = s->backend.forward_sample != NULL || s->async;
        s->logits = on_device ? NULL : malloc((size_t)o->max_seqs * c->vocab_size * sizeof(float));
        s->sample_scratch = on_device ? NULL : malloc(sampler_scratch_size(c->vocab_size));
        s->sample_rows = on_device ? malloc((size_t)o->max_seqs * sizeof *s->sample_rows) : NULL;
        s->sampled = on_device ? malloc((size_t)o->max_seqs * sizeof *s->sampled) : NULL;
        s->step = malloc((size_t)o->max_seqs * sizeof *s->step);
        s->text_cap = STOP_OUT_CAP(256);
        s->text_buf = malloc(s->text_cap);
        if ((on_device ? !s->sample_rows || !s->sampled : !s->logits || !s->sample_scratch) ||
            !s->step || !s->text_buf)
            st = ds_fail(msg, msg_len, DS_ENOMEM, "serving: out of memory");
        for (int i = 0; st == DS_OK && s->async && i < 3; i++) {
            void *p = malloc((size_t)o->max_seqs * sizeof(void *));
            if (!p) st = ds_fail(msg, msg_len, DS_ENOMEM, "serving: out of memory");
            if (i < 2)
                s->flights[i].rows = p;
            else
                s->prev_row = p;
        }
    }
    if (st != DS_OK) {
        serving_destroy(s);
        return st;
    }
    s->accepting = 1;
    snapshot_stats(s);
    *out = s;
    return DS_OK;
}

/* Why the backend's device failed (noticed between steps), or NULL. */
static const char *backend_failure(const serving *s) {
    return s->backend.failure ? s->backend.failure(s->backend.impl) : NULL;
}

int serving_ready(const serving *s) {
    serving *m = (serving *)s;
    pthread_mutex_lock(&m->mu);
    int r = m->accepting;
    pthread_mutex_unlock(&m->mu);
    return r && !backend_failure(s);
}

/* --- intake ----------------------------------------------------------------------------------- */

static void request_free(request *r) {
    if (!r) return;
    bpe_decoder_destroy(r->dec);
    free(r);
}

ds_status serving_tokenize(const serving *s, const char *text, size_t len, int32_t **ids,
                           int *n_ids, char *msg, size_t msg_len) {
    *ids = NULL, *n_ids = 0;
    if (len > (size_t)1 << 26)
        return ds_fail(msg, msg_len, DS_ERANGE, "text: %zu bytes, at most 64 MiB", len);
    int cap = (int)len + 8;
    int32_t *buf = malloc((size_t)cap * sizeof(int32_t));
    if (!buf) return ds_fail(msg, msg_len, DS_ENOMEM, "tokenize: out of memory");
    ds_status st = bpe_encode(s->tok, text, len, true, buf, cap, n_ids, msg, msg_len);
    if (st != DS_OK) {
        free(buf);
        return st;
    }
    *ids = buf;
    return DS_OK;
}

const char *serving_token_bytes(const serving *s, int32_t id, size_t *len) {
    if (id < 0 || id >= bpe_vocab_size(s->tok)) return NULL;
    return bpe_token_bytes(s->tok, id, len);
}

/* Checks and tokenizes a request into r (its sequence initialised). */
static ds_status prepare(const serving *s, const serving_request *q, request *r, char *msg,
                         size_t msg_len) {
    const llama_config *c = &s->model.config;
    if (!q->prompt == !q->prompt_ids)
        return ds_fail(msg, msg_len, DS_EINVAL,
                       "prompt, prompt_ids: give exactly one of the two (got %s)",
                       q->prompt ? "both" : "neither");
    if (q->max_tokens < 1)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_tokens = %d: must be >= 1", q->max_tokens);
    ds_status st = sampler_init(&r->smp, &q->sampling, msg, msg_len);
    if (st != DS_OK) return st;
    if (q->n_stop < 0 || q->n_stop > SERVING_MAX_STOP)
        return ds_fail(msg, msg_len, DS_EINVAL, "stop: %d strings, at most %d", q->n_stop,
                       SERVING_MAX_STOP);
    char stop_msg[200];
    if (stop_init(&r->stop, q->stop, q->n_stop, 0, stop_msg, sizeof stop_msg) != DS_OK)
        return ds_fail(msg, msg_len, DS_EINVAL, "stop: %s", stop_msg);
    if (q->n_stop_ids < 0 || q->n_stop_ids > SERVING_MAX_STOP_IDS)
        return ds_fail(msg, msg_len, DS_EINVAL, "stop_token_ids: %d ids, at most %d", q->n_stop_ids,
                       SERVING_MAX_STOP_IDS);
    for (int i = 0; i < q->n_stop_ids; i++) {
        if (q->stop_ids[i] < 0 || q->stop_ids[i] >= c->vocab_size)
            return ds_fail(msg, msg_len, DS_ERANGE,
                           "stop_token_ids[%d] = %d: outside the vocabulary [0, %d)", i,
                           q->stop_ids[i], c->vocab_size);
        r->stop_ids[i] = q->stop_ids[i];
    }
    r->n_stop_ids = q->n_stop_ids;
    int32_t *ids = NULL;
    int n = 0;
    if (q->prompt) {
        if (q->prompt_len == 0) return ds_fail(msg, msg_len, DS_EINVAL, "prompt: empty");
        char tmsg[200];
        if (serving_tokenize(s, q->prompt, q->prompt_len, &ids, &n, tmsg, sizeof tmsg) != DS_OK)
            return ds_fail(msg, msg_len, DS_EINVAL, "prompt: %s", tmsg);
        if (n == 0) {
            free(ids);
            return ds_fail(msg, msg_len, DS_EINVAL, "prompt: no tokens after tokenization");
        }
    } else {
        if (q->n_prompt_ids <= 0) return ds_fail(msg, msg_len, DS_EINVAL, "prompt_ids: empty");
        for (int i = 0; i < q->n_prompt_ids; i++)
            if (q->prompt_ids[i] < 0 || q->prompt_ids[i] >= c->vocab_size)
                return ds_fail(msg, msg_len, DS_ERANGE,
                               "prompt_ids[%d] = %d: outside the vocabulary [0, %d)", i,
                               q->prompt_ids[i], c->vocab_size);
        n = q->n_prompt_ids;
    }
    const int T = s->cache->config.block_size;
    if ((int64_t)n + q->max_tokens > c->context_length)
        st = ds_fail(msg, msg_len, DS_ERANGE,
                     "prompt (%d tokens) + max_tokens (%d) exceed the context of %d tokens", n,
                     q->max_tokens, c->context_length);
    else if ((n + q->max_tokens - 1) / T > s->cache->config.n_full_blocks)
        st = ds_fail(msg, msg_len, DS_ERANGE,
                     "prompt (%d tokens) + max_tokens (%d) need %d KV blocks; the pool holds %d "
                     "(raise kv_memory_bytes)",
                     n, q->max_tokens, (n + q->max_tokens - 1) / T, s->cache->config.n_full_blocks);
    if (st == DS_OK) st = bpe_decoder_create(s->tok, true, &r->dec, msg, msg_len);
    if (st == DS_OK) st = sched_seq_init(&r->seq, 0, ids ? ids : q->prompt_ids, n, r, msg, msg_len);
    free(ids);
    r->max_tokens = q->max_tokens;
    r->ignore_eos = q->ignore_eos;
    return st;
}

ds_status serving_submit(serving *s, const serving_request *q, serving_notify_fn notify,
                         void *notify_ctx, serving_stream **out, char *msg, size_t msg_len) {
    *out = NULL;
    request *r = calloc(1, sizeof *r);
    if (!r) return ds_fail(msg, msg_len, DS_ENOMEM, "submit: out of memory");
    ds_status rc = prepare(s, q, r, msg, msg_len);
    if (rc != DS_OK) {
        request_free(r);
        return rc;
    }
    r->t_submit = ds_now_s();
    r->waiting = 1;
    int n_waiting;
    pthread_mutex_lock(&s->mu);
    const char *failure = backend_failure(s);
    if (s->device_failed[0] || failure)
        rc = ds_fail(msg, msg_len, DS_EUNAVAILABLE, "the engine's device failed: %s",
                     s->device_failed[0] ? s->device_failed : failure);
    else if (!s->accepting)
        rc = ds_fail(msg, msg_len, DS_EUNAVAILABLE, "server is shutting down");
    else if ((n_waiting = atomic_load(&s->n_waiting)) >= s->options.max_waiting)
        rc =
            ds_fail(msg, msg_len, DS_EBUSY, "%d requests already waiting (max_waiting)", n_waiting);
    else if (!(r->stream = output_stream_create(s->next_id, r->seq.n_prompt, notify, notify_ctx,
                                                wake_engine, s, &s->n_waiting)))
        rc = ds_fail(msg, msg_len, DS_ENOMEM, "submit: out of memory");
    if (rc == DS_OK) {
        r->seq.id = s->next_id++;
        if (s->intake_tail)
            s->intake_tail->next = r;
        else
            s->intake_head = r;
        s->intake_tail = r;
        s->n_intake++;
        s->submitted++;
        s->wake = 1;
        pthread_cond_signal(&s->cv);
        /* Taken under the lock: once it is released the engine thread may finish and free r;
         * the stream itself lives on (the submitter holds its reference). */
        *out = r->stream;
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != DS_OK) {
        r->seq.state = SCHED_CANCELLED;
        sched_seq_free(&r->seq);
        request_free(r);
    }
    return rc;
}

/* --- output ----------------------------------------------------------------------------------- */

static int push_output(request *r, const int32_t *ids, int n_ids, const char *text,
                       size_t text_len) {
    return output_stream_push(r->stream, ids, n_ids, text, text_len, r->n_generated,
                              r->seq.n_preemptions);
}

static void unlink_live(serving *s, request *r) {
    for (request **p = &s->live; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            return;
        }
}

/* Async: r has ended, so whatever its launched steps sample for it is dropped. */
static void forget_rows(serving *s, const request *r) {
    for (int f = 0; s->async && f < 2; f++)
        for (int i = 0; i < s->flights[f].n_rows; i++)
            if (s->flights[f].rows[i] == r) s->flights[f].rows[i] = NULL;
}

/* Ends a request: takes it out of the scheduler, flushes held text (unless cancelled), posts the
 * final output, and drops the engine's reference to the stream. */
static void finish(serving *s, request *r, serving_finish why, const char *error) {
    if (why == SERVING_STOP || why == SERVING_LENGTH) {
        const char *text;
        size_t len, n_out;
        char tail[STOP_MAX_LEN];
        bpe_decoder_flush(r->dec, &text, &len);
        if (stop_feed(&r->stop, text, len, s->text_buf, s->text_cap, &n_out) != STOP_NONE)
            why = SERVING_STOP;
        push_output(r, NULL, 0, s->text_buf, n_out);
        size_t n_tail = stop_flush(&r->stop, tail, sizeof tail);
        push_output(r, NULL, 0, tail, n_tail);
    }
    if (r->seq.state == SCHED_NEW)
        r->seq.state = SCHED_CANCELLED;
    else if (r->seq.state != SCHED_FINISHED) /* async: left at its last step's commit */
        sched_remove(s->sched, &r->seq,
                     why == SERVING_STOP || why == SERVING_LENGTH ? SCHED_FINISHED
                                                                  : SCHED_CANCELLED);
    forget_rows(s, r);
    if (why == SERVING_STOP || why == SERVING_LENGTH)
        latency_histogram_observe(&s->e2e, ds_now_s() - r->t_submit);
    serving_stream *st = r->stream;
    output_stream_finish(st, why, error, r->n_generated);
    pthread_mutex_lock(&s->mu);
    if (why == SERVING_CANCELLED)
        s->cancelled++;
    else if (why == SERVING_ERROR || why == SERVING_UNAVAILABLE)
        s->failed++;
    else
        s->finished++;
    pthread_mutex_unlock(&s->mu);
    unlink_live(s, r);
    sched_seq_free(&r->seq);
    bpe_decoder_destroy(r->dec);
    output_stream_unref(st);
    free(r);
}

static int is_stop_id(const request *r, int32_t tok) {
    for (int i = 0; i < r->n_stop_ids; i++)
        if (r->stop_ids[i] == tok) return 1;
    return 0;
}

/* 1 when r's n_generated-th token ends it by length: max_tokens, or the context full (a trailing
 * placeholder, async, does not count: it is the position that token goes to). */
static int ends_by_length(const serving *s, const request *r, int n_generated) {
    const int known = r->seq.n_tokens - r->seq.last_unknown;
    return n_generated >= r->max_tokens || known + 1 > s->model.config.context_length;
}

/* The token r goes on with: appended, or (async) written over its placeholder. */
static ds_status keep_token(serving *s, request *r, int32_t tok) {
    if (!r->seq.last_unknown) return sched_seq_append(&r->seq, tok);
    sched_seq_resolve(s->sched, &r->seq, tok);
    return DS_OK;
}

/* One sampled token for r; finishes r when a stop condition holds. */
static void accept_token(serving *s, request *r, int32_t tok) {
    r->n_generated++;
    if (r->n_generated == 1) {
        output_stream_set_ttft(r->stream, s->step_end_s - r->t_submit);
        latency_histogram_observe(&s->ttft, s->step_end_s - r->t_submit);
    } else {
        latency_histogram_observe(&s->inter_token, s->step_end_s - r->t_last_token);
    }
    r->t_last_token = s->step_end_s;
    if (tok < 0 || (!r->ignore_eos && tok == bpe_eos_id(s->tok)) || is_stop_id(r, tok)) {
        finish(s, r, SERVING_STOP, NULL);
        return;
    }
    const char *text;
    size_t len, n_out = 0;
    char dmsg[128];
    if (bpe_decoder_push(r->dec, tok, &text, &len, dmsg, sizeof dmsg) != DS_OK) {
        finish(s, r, SERVING_ERROR, dmsg);
        return;
    }
    if (STOP_OUT_CAP(len) > s->text_cap) {
        char *p = realloc(s->text_buf, STOP_OUT_CAP(len));
        if (!p) {
            finish(s, r, SERVING_ERROR, "out of memory");
            return;
        }
        s->text_buf = p, s->text_cap = STOP_OUT_CAP(len);
    }
    int hit = stop_feed(&r->stop, text, len, s->text_buf, s->text_cap, &n_out);
    if (!push_output(r, &tok, 1, s->text_buf, n_out)) {
        finish(s, r, SERVING_ERROR, "out of memory");
        return;
    }
    if (hit != STOP_NONE)
        finish(s, r, SERVING_STOP, NULL);
    else if (ends_by_length(s, r, r->n_generated))
        finish(s, r, SERVING_LENGTH, NULL);
    else if (keep_token(s, r, tok) != DS_OK)
        finish(s, r, SERVING_ERROR, "out of memory");
    else
        output_stream_notify(r->stream);
}

/* --- the step --------------------------------------------------------------------------------- */

/* Both KV pools as sized (the automatic budget resolved). */
static int64_t pool_bytes(const kv_cache *kc) {
    return (int64_t)kc->config.n_open_blocks * (int64_t)kc->open_block_floats * 2 +
           (int64_t)kc->config.n_full_blocks * (int64_t)kc->full_block_bytes;
}

static void snapshot_stats(serving *s) {
    sched_stats ss;
    sched_get_stats(s->sched, &ss);
    const kv_cache *kc = s->cache;
    const llama_config *c = &s->model.config;
    pthread_mutex_lock(&s->mu);
    serving_stats *o = &s->stats;
    o->running = ss.running;
    o->waiting = ss.waiting + s->n_intake;
    o->preempted_waiting = ss.preempted_waiting;
    o->peak_running = ss.peak_running;
    o->open_blocks_total = kc->config.n_open_blocks;
    o->open_blocks_free = kv_cache_open_free(kc);
    o->full_blocks_total = kc->config.n_full_blocks;
    o->full_blocks_free = kv_cache_full_free(kc);
    o->full_blocks_cached = ss.full_cached;
    o->peak_full_blocks_used = ss.peak_full_used;
    o->kv_bytes_per_token = kv_cache_bytes_per_token(kc);
    o->fp16_bytes_per_token = 4.0 * c->n_layers * c->n_kv_heads * c->head_dim;
    o->compression_ratio = o->fp16_bytes_per_token / o->kv_bytes_per_token;
    o->kv_memory_bytes = pool_bytes(kc);
    o->preemptions = ss.preemptions;
    o->prefix_cache_queries = ss.prefix_queries;
    o->prefix_cache_hits = ss.prefix_hits;
    o->requests_submitted = s->submitted;
    o->requests_finished = s->finished;
    o->requests_cancelled = s->cancelled;
    o->requests_failed = s->failed;
    o->prompt_tokens = s->prompt_tokens;
    o->generated_tokens = s->generated_tokens;
    o->steps = ss.steps;
    o->busy_s = s->busy_s;
    o->prompt_tokens_per_s = s->busy_s > 0 ? s->prompt_tokens / s->busy_s : 0;
    o->generated_tokens_per_s = s->busy_s > 0 ? s->generated_tokens / s->busy_s : 0;
    o->ttft = s->ttft;
    o->inter_token = s->inter_token;
    o->e2e = s->e2e;
    pthread_mutex_unlock(&s->mu);
}

void serving_get_stats(serving *s, serving_stats *out) {
    pthread_mutex_lock(&s->mu);
    *out = s->stats;
    pthread_mutex_unlock(&s->mu);
}

/* The device is gone (a step or the backend answered DS_EUNAVAILABLE): every queued and running
 * request ends with SERVING_UNAVAILABLE and why, and nothing more is accepted. */
static void fail_device(serving *s, const char *why) {
    pthread_mutex_lock(&s->mu);
    s->accepting = 0;
    snprintf(s->device_failed, sizeof s->device_failed, "%s", why);
    for (request *r = s->intake_head, *next; r; r = next) {
        next = r->next;
        r->next = s->live, s->live = r;
    }
    s->intake_head = s->intake_tail = NULL;
    s->n_intake = 0;
    pthread_mutex_unlock(&s->mu);
    while (s->live)
        finish(s, s->live, SERVING_UNAVAILABLE, s->device_failed);
    snapshot_stats(s);
}

/* A step's start, either way: intake and cancellations, then the schedule and what it decided
 * (the waiting flags, the sequences that can never fit). */
static ds_status begin_step(serving *s, sched_batch **b, int *did_work, double *t0, char *msg,
                            size_t msg_len) {
    *did_work = 0;
    /* intake and shutdown */
    pthread_mutex_lock(&s->mu);
    request *in = s->intake_head;
    s->intake_head = s->intake_tail = NULL;
    s->n_intake = 0;
    s->wake = 0;
    int cancel_all = s->stopping && !s->drain;
    pthread_mutex_unlock(&s->mu);
    for (request *r = in, *next; r; r = next) {
        next = r->next;
        r->next = s->live, s->live = r;
        sched_add(s->sched, &r->seq);
        *did_work = 1;
    }
    for (request *r = s->live, *next; r; r = next) {
        next = r->next;
        if (cancel_all || output_stream_cancel_requested(r->stream)) {
            finish(s, r, SERVING_CANCELLED, NULL);
            *did_work = 1;
        }
    }
    *t0 = ds_now_s();
    ds_status st = sched_schedule(s->sched, b, msg, msg_len);
    if (st != DS_OK) return st;
    for (request *r = s->live; r; r = r->next) {
        int waiting = r->seq.state == SCHED_WAITING || r->seq.state == SCHED_PREEMPTED;
        if (waiting != r->waiting) output_stream_set_waiting(r->stream, waiting);
        r->waiting = waiting;
    }
    for (int i = 0; i < (*b)->n_failed; i++) {
        request *r = (*b)->failed[i]->user;
        char why[200];
        snprintf(why, sizeof why,
                 "the sequence (%d tokens) needs more KV blocks than the pool holds (%d); raise "
                 "kv_memory_bytes",
                 r->seq.n_tokens, s->cache->config.n_full_blocks);
        finish(s, r, SERVING_ERROR, why);
        *did_work = 1;
    }
    return DS_OK;
}

/* The batch as the backend takes it (s->step), and each request's first admission. */
static void fill_step(serving *s, const sched_batch *b) {
    for (int i = 0; i < b->n_items; i++) {
        const sched_item *it = &b->items[i];
        request *r = it->seq->user;
        if (!r->admitted) { /* first admission: what the prefix cache held */
            r->admitted = 1;
            output_stream_set_cached_prompt(r->stream, it->first);
        }
        s->step[i] = (llama_step_seq){.kv = &it->seq->kv,
                                      .tokens = it->seq->tokens + it->first,
                                      .n_tokens = it->n,
                                      .logits = it->sample ? LLAMA_LOGITS_LAST : LLAMA_LOGITS_NONE};
    }
}

/* Prompt tokens (prefill and recompute, not decodes) the batch computes. */
static int64_t prompt_tokens_of(const sched_batch *b) {
    int64_t prompt = 0;
    for (int i = 0; i < b->n_items; i++) {
        const sched_item *it = &b->items[i];
        if (!(it->n == 1 && it->first >= it->seq->n_prompt)) prompt += it->n;
    }
    return prompt;
}

static void add_counts(serving *s, int64_t prompt, int64_t generated, double busy_s) {
    pthread_mutex_lock(&s->mu);
    s->prompt_tokens += prompt;
    s->generated_tokens += generated;
    s->busy_s += busy_s;
    pthread_mutex_unlock(&s->mu);
}

static ds_status step_sync(serving *s, int *did_work, char *msg, size_t msg_len) {
    double t0;
    sched_batch *b;
    ds_status st = begin_step(s, &b, did_work, &t0, msg, msg_len);
    if (st != DS_OK) return st;
    if (b->n_items > 0) {
        *did_work = 1;
        fill_step(s, b);
        const int on_device = s->backend.forward_sample != NULL;
        if (on_device) {
            int n_rows = 0;
            for (int i = 0; i < b->n_items; i++)
                if (b->items[i].sample)
                    s->sample_rows[n_rows++] =
                        sampler_next_row(&((request *)b->items[i].seq->user)->smp);
            st = s->backend.forward_sample(s->backend.impl, s->step, b->n_items, s->sample_rows,
                                           s->sampled, NULL, msg, msg_len);
        } else {
            st = s->backend.forward(s->backend.impl, s->step, b->n_items, s->logits, msg, msg_len);
        }
        if (st != DS_OK) {
            sched_abort_step(s->sched);
            if (st == DS_EUNAVAILABLE) fail_device(s, msg);
            return st;
        }
        sched_commit(s->sched);
        s->step_end_s = ds_now_s();
        int64_t generated = 0;
        const int64_t prompt = prompt_tokens_of(b);
        const int vocab = s->model.config.vocab_size;
        for (int i = 0, row = 0; i < b->n_items; i++) {
            const sched_item *it = &b->items[i];
            if (!it->sample) continue;
            request *r = it->seq->user;
            int tok = on_device ? s->sampled[row++]
                                : sampler_sample(&r->smp, s->logits + (size_t)row++ * vocab, vocab,
                                                 s->sample_scratch);
            generated++;
            accept_token(s, r, tok);
        }
        add_counts(s, prompt, generated, ds_now_s() - t0);
    }
    snapshot_stats(s);
    return DS_OK;
}

/* --- async scheduling (see the top of this file) ---------------------------------------------- */

static struct flight *oldest_flight(serving *s) { return &s->flights[s->flight_head]; }
static struct flight *newest_flight(serving *s) {
    return &s->flights[(s->flight_head + s->n_flight - 1) % 2];
}

/* Waits for the oldest launched step and takes its tokens in; *generated counts them. */
static ds_status collect_flight(serving *s, int64_t *generated, char *msg, size_t msg_len) {
    struct flight *f = oldest_flight(s);
    ds_status st = s->backend.collect(s->backend.impl, s->sampled, NULL, msg, msg_len);
    s->flight_head = (s->flight_head + 1) % 2;
    s->n_flight--;
    const int n_rows = f->n_rows;
    f->n_rows = 0;
    if (st != DS_OK) return st;
    s->step_end_s = ds_now_s();
    for (int i = 0; i < n_rows; i++) {
        request *r = f->rows[i];
        if (!r) continue; /* ended while the step ran */
        (*generated)++;
        accept_token(s, r, s->sampled[i]);
    }
    return DS_OK;
}

/* Collects every launched step, dropping the tokens (after a failure, or at destroy). */
static void drain_flights(serving *s) {
    char ignored[256];
    while (s->n_flight) {
        (void)s->backend.collect(s->backend.impl, s->sampled, NULL, ignored, sizeof ignored);
        oldest_flight(s)->n_rows = 0;
        s->flight_head = (s->flight_head + 1) % 2;
        s->n_flight--;
    }
}

/* A failed async step: the device goes idle, and every live request ends with the error (its
 * placeholder or rows in flight mean nothing any more). */
static ds_status async_failed(serving *s, ds_status st, const char *msg) {
    drain_flights(s);
    if (st == DS_EUNAVAILABLE) {
        fail_device(s, msg);
        return st;
    }
    while (s->live)
        finish(s, s->live, SERVING_ERROR, msg);
    snapshot_stats(s);
    return st;
}

/* After step N's commit, before N+1 is scheduled: each request N sampled either certainly ends
 * with that token (max_tokens, the context), and so leaves the scheduler now as the synchronous
 * engine's would, or goes on with a placeholder that N+1 decodes. */
static void look_ahead(serving *s, struct flight *f) {
    for (int i = 0; i < f->n_rows; i++) {
        request *r = f->rows[i];
        if (!r) continue;
        if (ends_by_length(s, r, r->n_generated + 1))
            sched_remove(s->sched, &r->seq, SCHED_FINISHED);
        else if (sched_seq_append_unknown(&r->seq) != DS_OK)
            finish(s, r, SERVING_ERROR, "out of memory");
    }
}

static ds_status step_async(serving *s, int *did_work, char *msg, size_t msg_len) {
    double t0;
    sched_batch *b;
    ds_status st = begin_step(s, &b, did_work, &t0, msg, msg_len);
    if (st != DS_OK) return async_failed(s, st, msg);
    const int launching = b->n_items > 0;
    int64_t prompt = 0, generated = 0;
    if (launching) {
        *did_work = 1;
        fill_step(s, b);
        prompt = prompt_tokens_of(b);
        struct flight *f = &s->flights[(s->flight_head + s->n_flight) % 2];
        int n_rows = 0;
        for (int i = 0; i < b->n_items; i++) {
            const sched_item *it = &b->items[i];
            request *r = it->seq->user;
            s->prev_row[i] = it->seq->last_unknown && it->sample ? r->last_row : -1;
            if (!it->sample) continue;
            s->sample_rows[n_rows] = sampler_next_row(&r->smp);
            f->rows[n_rows] = r;
            r->last_row = n_rows++;
        }
        st = s->backend.launch(s->backend.impl, s->step, b->n_items, s->sample_rows, s->prev_row,
                               msg, msg_len);
        if (st != DS_OK) {
            sched_abort_step(s->sched);
            return async_failed(s, st, msg);
        }
        f->n_rows = n_rows;
        s->n_flight++;
    }
    if (s->n_flight > launching) { /* the step before this one: its tokens, while this one runs */
        *did_work = 1;
        st = collect_flight(s, &generated, msg, msg_len);
        if (st != DS_OK) {
            if (launching) sched_abort_step(s->sched);
            return async_failed(s, st, msg);
        }
    }
    if (launching) {
        sched_commit(s->sched);
        look_ahead(s, newest_flight(s));
    }
    if (*did_work) add_counts(s, prompt, generated, ds_now_s() - t0);
    snapshot_stats(s);
    return DS_OK;
}

ds_status serving_step(serving *s, int *did_work, char *msg, size_t msg_len) {
    return s->async ? step_async(s, did_work, msg, msg_len) : step_sync(s, did_work, msg, msg_len);
}

/* --- the engine thread ------------------------------------------------------------------------ */

static void *engine_main(void *arg) {
    serving *s = arg;
    char msg[512];
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->wake && !s->intake_head && !s->live && !s->n_flight && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        int done = s->stopping && !s->intake_head && !s->live && !s->n_flight;
        pthread_mutex_unlock(&s->mu);
        if (done) break;
        int worked;
        const char *failure = backend_failure(s); /* noticed between steps (keep-alive) */
        if (failure && !s->device_failed[0]) fail_device(s, failure);
        ds_status st = serving_step(s, &worked, msg, sizeof msg);
        if (st == DS_EUNAVAILABLE) {
            DS_LOG_E("engine device failed: %s; not serving any more", msg);
        } else if (st != DS_OK) {
            DS_LOG_E("engine step failed: %s; failing the running requests", msg);
            while (s->live)
                finish(s, s->live, SERVING_ERROR, msg);
            snapshot_stats(s);
        } else if (!worked) {
            /* Live requests that cannot run yet wait for a cancel or a submit. */
            pthread_mutex_lock(&s->mu);
            while (!s->wake && !s->intake_head && !s->stopping)
                pthread_cond_wait(&s->cv, &s->mu);
            pthread_mutex_unlock(&s->mu);
        }
    }
    return NULL;
}

ds_status serving_start(serving *s, char *msg, size_t msg_len) {
    if (s->thread_started) return DS_OK;
    if (pthread_create(&s->thread, NULL, engine_main, s))
        return ds_fail(msg, msg_len, DS_EINTERNAL, "serving: cannot start the engine thread");
    s->thread_started = 1;
    return DS_OK;
}

void serving_shutdown(serving *s, int drain) {
    pthread_mutex_lock(&s->mu);
    s->accepting = 0;
    if (!s->stopping)
        s->drain = drain;
    else if (!drain)
        s->drain = 0;
    s->stopping = 1;
    s->wake = 1;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->thread_started) {
        pthread_join(s->thread, NULL);
        s->thread_started = 0;
        return;
    }
    char msg[256];
    for (int worked = 1; worked && (s->live || s->intake_head || s->n_flight);)
        if (serving_step(s, &worked, msg, sizeof msg) != DS_OK) break;
}

void serving_get_info(const serving *s, serving_info *out) {
    const llama_config *c = &s->model.config;
    *out = (serving_info){
        .architecture = "llama",
        .model_path = s->model_path,
        .kv_method = s->options.kv_bits == 16 ? "fp16" : dq_method_name(s->options.kv_method),
        .device = s->backend.device,
        .context_length = c->context_length,
        .vocab_size = c->vocab_size,
        .n_layers = c->n_layers,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
        .d_model = c->d_model,
        .kv_bits = s->options.kv_bits,
        .block_size = s->cache->config.block_size,
        .tensor_parallel = s->options.tensor_parallel,
        .max_seqs = s->options.max_seqs,
        .max_batched_tokens = s->options.max_batched_tokens,
        .bos_id = bpe_bos_id(s->tok),
        .eos_id = bpe_eos_id(s->tok),
        .kv_memory_bytes = pool_bytes(s->cache),
        .async_scheduling = s->async,
        .chat_template = s->chat_template};
}
