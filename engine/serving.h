/* engine/serving.h — the serving engine: model + tokenizer + paged KV cache + scheduler + forward
 * pass + sampling, behind a thread-safe request API that the gRPC server, `decoserve generate`
 * and `decoserve bench-offline` share.
 *
 * Threads: any thread may submit, tokenize, read stats and poll or cancel its streams; one engine
 * thread (serving_start) or the caller of serving_step runs the steps. Each step: apply
 * cancellations and admit submitted requests, schedule one batch (decodes, then prefill chunks),
 * run it through the model, sample every sequence whose chunk reached its end, detokenize, check
 * stop conditions, push the new tokens and text to each request's stream and free the blocks of
 * finished ones.
 *
 * A request's output arrives on its stream as a series of serving_output chunks (token ids and
 * the matching text delta, with stop strings held back until they can no longer match); the last
 * one carries the finish reason and usage. The notify callback given at submit runs on the
 * engine thread, with no lock held, after every push to that stream: it must be cheap and must
 * not call back into the engine except serving_stream_poll.
 *
 * Lifetime: a stream is shared by the engine and the submitter; serving_stream_release drops the
 * submitter's half (cancelling the request if it is still running). serving_destroy requires
 * serving_shutdown first when the engine thread was started. */
#ifndef DS_ENGINE_SERVING_H
#define DS_ENGINE_SERVING_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "engine/latency_histogram.h"
#include "engine/sampler.h"
#include "kernels/qmatmul.h"
#include "kvcache/decoquant.h"

typedef struct serving serving;
typedef struct engine_backend engine_backend; /* engine/backend.h */
typedef struct serving_stream serving_stream;

typedef enum serving_device { SERVING_CPU = 0, SERVING_CUDA } serving_device;

typedef struct serving_options {
    serving_device device;         /* where the forward pass runs */
    int device_index;              /* CUDA device */
    double gpu_memory_utilization; /* CUDA with kv_memory_bytes 0: share of free memory used */
    const char *model_path;        /* GGUF file or HF folder, or NULL with random_weights */
    const char *random_weights;    /* a named shape (engine/loader/synthetic.h: tiny, smollm2-135m,
                                      llama3-8b, ...) with seeded random weights, or NULL */
    uint64_t seed;                 /* random_weights' seed */
    int kv_bits;                   /* 16, 8, 4 or 2 */
    dq_method kv_method;           /* codec for kv_bits < 16 */
    int kv_group_size;
    int block_size;
    int64_t kv_memory_bytes; /* both KV pools together; 0: 1 GiB on the CPU, and on a GPU what
                                gpu_memory_utilization of its free memory leaves after the
                                weights and scratch */
    int max_seqs;            /* running sequences at most */
    int max_batched_tokens;  /* tokens per step at most (prefill chunk + decodes) */
    int max_waiting;         /* requests waiting to run (queued or preempted) before submit
                                answers DS_EBUSY; a cancelled one stops counting at once */
    int prefix_cache;        /* share full blocks between prompts with a common prefix */
    qm_type weights;         /* CPU compute weights: QM_Q4_0 (q4, the default), QM_Q8_0 or QM_F32 */
    int gpu_bf16;            /* CUDA: bf16 weights (default fp16) */
    int tensor_parallel;     /* CUDA: shard over N GPUs in all (default 1): GPUs 0.. of each node */
    int n_nodes, node_rank;  /* tensor parallelism over processes/hosts (default 1 and 0) */
    const char *master_addr; /* node 0's bootstrap address and port (n_nodes > 1) */
    int master_port;
    int tp_timeout_s; /* bounds every tensor-parallel wait (default 60) */
    /* Optional: called once with the opened backend, which it may wrap in its own (tracing,
     * fault injection in tests); the wrapper must call and destroy the original. */
    ds_status (*wrap_backend)(void *ctx, engine_backend *backend, char *msg, size_t msg_len);
    void *wrap_ctx;
    int n_threads;     /* 0: DECOSERVE_THREADS or the online CPUs */
    int enforce_eager; /* CUDA: no graphs, every step launched kernel by kernel */
    /* Overlap the host with the device (vLLM's --async-scheduling): step N+1 is scheduled,
     * planned and launched before step N's tokens are streamed, its decodes taking N's ids on the
     * device; the tokens are those of the synchronous order (serving.c says why). Backends without
     * launch / collect (tensor parallelism) step synchronously. */
    int async_scheduling;
} serving_options;

/* CPU, kv 16-bit (kivi when compressed), block 32, group 64, KV memory 0 (automatic), 64
 * sequences, 512 tokens per step, 1024 waiting, prefix cache on, Q8_0 weights; on a GPU 0.9 of
 * its free memory. */
void serving_options_default(serving_options *o);

/* Loads the model (or makes random weights), sizes the pools (open blocks = max_seqs +
 * max_batched_tokens / block + 1, the rest of the KV memory to full blocks) and opens the
 * backend: the CPU forward pass, or the CUDA one (pages in GPU memory; DS_EUNSUPPORTED in a build
 * without CUDA). Errors name the file or the option at fault, by its field name here
 * (kv_memory_bytes, max_waiting): the CLI spells them as its flags (server/engine_flags.h). */
ds_status serving_create(const serving_options *options, serving **out, char *msg, size_t msg_len);
void serving_destroy(serving *s);

/* A node other than 0 (options->node_rank > 0) of a tensor-parallel group: loads the same model
 * (or random shape) and runs node 0's steps on this process's GPUs until node 0 stops; node 0
 * holds the scheduler, the requests and the KV sizing. DS_EUNAVAILABLE when node 0 goes silent. */
ds_status serving_follow(const serving_options *options, char *msg, size_t msg_len);

/* Runs the steps on a new engine thread until serving_shutdown. */
ds_status serving_start(serving *s, char *msg, size_t msg_len);
/* Stops accepting (submit then answers DS_EUNAVAILABLE). drain = 1 lets in-flight requests run
 * to their end, 0 ends them at once with SERVING_CANCELLED; then the engine thread exits. Every
 * stream has its final output when this returns. Idempotent. */
void serving_shutdown(serving *s, int drain);
/* 1 while the model is loaded and requests are accepted: 0 after shutdown, and for good once the
 * device failed (a step answered DS_EUNAVAILABLE; submit then answers DS_EUNAVAILABLE with why). */
int serving_ready(const serving *s);

/* Runs one step on the caller's thread (no engine thread). *did_work = 0 when nothing was
 * waiting or running. Errors are the engine's own failures; request errors end up on streams.
 * DS_EUNAVAILABLE: the device failed; every request has ended with SERVING_UNAVAILABLE and the
 * engine accepts nothing more. */
ds_status serving_step(serving *s, int *did_work, char *msg, size_t msg_len);

#define SERVING_MAX_STOP     16 /* stop strings per request (engine/stop.h) */
#define SERVING_MAX_STOP_IDS 64

typedef struct serving_request {
    const char *prompt; /* UTF-8 text (special tokens parsed), or NULL when prompt_ids is set */
    size_t prompt_len;
    const int32_t *prompt_ids; /* token ids, or NULL when prompt is set */
    int n_prompt_ids;
    int max_tokens; /* >= 1 */
    sampler_params sampling;
    const char *const *stop; /* NUL-terminated, at most SERVING_MAX_STOP */
    int n_stop;
    const int32_t *stop_ids; /* extra stop token ids, at most SERVING_MAX_STOP_IDS */
    int n_stop_ids;
    int ignore_eos;
} serving_request;

/* A request with temperature 1, top_k 0, top_p 1, random seed, max_tokens 16. */
void serving_request_default(serving_request *r);

typedef void (*serving_notify_fn)(void *ctx);

/* Validates, tokenizes and queues a request. Errors, nothing queued, message naming the field
 * (the proto's names: prompt, prompt_ids, max_tokens, temperature, top_k, top_p, seed, stop,
 * stop_token_ids): DS_EINVAL (bad value, empty prompt, both or neither of prompt/prompt_ids),
 * DS_ERANGE (token id outside the vocabulary; prompt + max_tokens over the context or over the
 * KV pool), DS_EBUSY (waiting queue full), DS_EUNAVAILABLE (shutting down). Engine limits are
 * named by their serving_options field (kv_memory_bytes, max_waiting), never a CLI flag: these
 * messages reach gRPC clients. */
ds_status serving_submit(serving *s, const serving_request *request, serving_notify_fn notify,
                         void *notify_ctx, serving_stream **out, char *msg, size_t msg_len);

typedef enum serving_finish {
    SERVING_RUNNING = 0,
    SERVING_STOP,        /* EOS, a stop token id or a stop string */
    SERVING_LENGTH,      /* max_tokens, or the context is full */
    SERVING_CANCELLED,   /* serving_stream_cancel / release, or shutdown without drain */
    SERVING_ERROR,       /* see error */
    SERVING_UNAVAILABLE, /* the device failed (a tensor-parallel rank died or went silent): see
                            error; the engine serves nothing more (serving_ready is 0) */
} serving_finish;

const char *serving_finish_name(serving_finish f); /* "stop", "length", ... */

typedef struct serving_output {
    int32_t *token_ids; /* generated since the previous poll */
    int n_token_ids;
    char *text; /* UTF-8 text delta, NUL-terminated (text_len bytes before it) */
    size_t text_len;
    serving_finish finish; /* SERVING_RUNNING until the last output */
    char error[256];       /* SERVING_ERROR, SERVING_UNAVAILABLE: why */
    /* usage, filled in on every output */
    int prompt_tokens, cached_prompt_tokens, completion_tokens, preemptions;
    double ttft_s; /* submit to first generated token; -1 before it */
} serving_output;

/* Moves everything new on the stream into out (freeing what out held). Returns 1 if out has
 * tokens, text or the finish, 0 if nothing is new. Never blocks on the engine. */
int serving_stream_poll(serving_stream *st, serving_output *out);
/* Like poll but waits up to timeout_s (< 0: forever) for something new. */
int serving_stream_wait(serving_stream *st, serving_output *out, double timeout_s);
void serving_output_free(serving_output *out);
/* Asks the engine to end the request (final output SERVING_CANCELLED) within one step. */
void serving_stream_cancel(serving_stream *st);
/* The submitter is done with the stream (cancels it if still running). */
void serving_stream_release(serving_stream *st);
/* The request id the engine gave the stream (1, 2, ... in submit order). */
int64_t serving_stream_id(const serving_stream *st);

/* Tokenizes text (special tokens parsed). *ids is malloc'ed (caller frees). Thread-safe. */
ds_status serving_tokenize(const serving *s, const char *text, size_t len, int32_t **ids,
                           int *n_ids, char *msg, size_t msg_len);
/* The bytes of one token (not NUL-terminated), or NULL for an id outside the vocabulary. */
const char *serving_token_bytes(const serving *s, int32_t id, size_t *len);

typedef struct serving_info {
    const char *architecture; /* "llama" */
    const char *model_path, *kv_method, *device;
    int context_length, vocab_size, n_layers, n_heads, n_kv_heads, head_dim, d_model;
    int kv_bits, block_size, tensor_parallel, max_seqs, max_batched_tokens;
    int32_t bos_id, eos_id;
    int64_t kv_memory_bytes;   /* both pools as sized (kv_memory_bytes 0 resolved): as in stats */
    int async_scheduling;      /* 1: steps overlap the host (asked for, and the backend can) */
    const char *chat_template; /* the model's own (Jinja text from its files), or NULL */
} serving_info;
void serving_get_info(const serving *s, serving_info *out);

typedef struct serving_stats {
    int running, waiting, preempted_waiting, peak_running;
    int open_blocks_total, open_blocks_free;
    int full_blocks_total, full_blocks_free, full_blocks_cached, peak_full_blocks_used;
    double kv_bytes_per_token;   /* compressed pool, all layers, K+V, every scale included */
    double fp16_bytes_per_token; /* the same tokens in fp16 */
    double compression_ratio;    /* fp16 / compressed */
    int64_t kv_memory_bytes;
    int64_t preemptions, prefix_cache_queries, prefix_cache_hits; /* hits/queries in blocks */
    int64_t requests_submitted, requests_finished, requests_cancelled, requests_failed;
    int64_t prompt_tokens, generated_tokens, steps;
    double busy_s;                 /* time spent in steps */
    double prompt_tokens_per_s;    /* computed prompt tokens / busy_s */
    double generated_tokens_per_s; /* generated tokens / busy_s */
    /* Per request: submit to first token; between tokens; submit to the end of requests that
     * finished (stop or length). */
    latency_histogram ttft, inter_token, e2e;
} serving_stats;
/* A consistent snapshot taken at the end of the latest step. Thread-safe. */
void serving_get_stats(serving *s, serving_stats *out);

#endif
