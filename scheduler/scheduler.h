/* scheduler/scheduler.h — continuous batching over the paged KV cache (vLLM's policy).
 *
 * Sequences wait in FCFS order and run once admitted. Each step builds one batch under
 * max_batched_tokens and max_seqs: first one token for every running sequence that is decoding,
 * then prefill chunks of running sequences, then new (or preempted) sequences from the head of
 * the waiting queue while tokens, sequence slots and KV blocks last. A sequence's chunk is
 * tokens[n_computed, n_computed + n); when it reaches the end of its tokens the step yields
 * logits and the caller samples the next token. When a running sequence cannot get a block, the
 * newest running sequence is preempted: its blocks are freed and it goes back to the head of the
 * waiting queue to be recomputed (prompt + generated tokens) once blocks are free again; the
 * recompute attaches whatever full blocks the prefix cache still holds.
 *
 * The scheduler reserves the batch's blocks (kv_seq_reserve); the caller runs the forward pass
 * and then calls sched_commit (or sched_abort_step). Sequences are owned by the caller and
 * linked into the scheduler's queues; sched_remove takes one out (finished or cancelled) at any
 * time, also out of a step not yet committed, and frees its blocks.
 *
 * Async scheduling (engine/serving.c) schedules step N+1 before step N's sampled ids are on the
 * host: a sequence sampled in step N carries a placeholder as its last token (unknown), which its
 * chunk in N+1 (the decode, or after a preemption the recompute's last chunk) ends with and the
 * device hands the id to; sched_seq_resolve writes the id once it is known, also into the
 * reservation of the step in flight. The scheduler itself never reads a placeholder: prefix
 * matching stops short of a sequence's last token, and only the commit registers the block it
 * completes. One thread drives a scheduler; nothing here locks. */
#ifndef DS_SCHEDULER_SCHEDULER_H
#define DS_SCHEDULER_SCHEDULER_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kvcache/paged_cache.h"

typedef enum sched_state {
    SCHED_NEW = 0,   /* initialised, not yet added */
    SCHED_WAITING,   /* in the waiting queue, never run */
    SCHED_RUNNING,   /* admitted: holds blocks */
    SCHED_PREEMPTED, /* back in the waiting queue, to be recomputed */
    SCHED_FINISHED,  /* removed after a stop condition */
    SCHED_CANCELLED, /* removed by the client or on an error */
} sched_state;

typedef struct sched_seq {
    int64_t id;
    sched_state state;
    int32_t *tokens; /* prompt, then generated tokens */
    int n_tokens, cap, n_prompt;
    int n_computed;   /* leading tokens whose K/V are in the cache (kv.n_tokens) */
    int last_unknown; /* 1: tokens[n_tokens - 1] is a placeholder for an id not known yet */
    kv_seq kv;
    int n_preemptions;
    int64_t admitted; /* admission order: larger = newer */
    void *user;       /* the caller's per-request state */
    struct sched_seq *prev, *next;
    int item; /* index in the current batch, or -1 */
} sched_seq;

typedef struct sched_config {
    int max_seqs;           /* running sequences at most */
    int max_batched_tokens; /* tokens per step at most */
} sched_config;

typedef struct sched_item {
    sched_seq *seq;
    int first, n; /* tokens[first, first + n) go through the model this step */
    int sample;   /* 1: the chunk reaches the end of the tokens; sample the next one */
} sched_item;

typedef struct sched_batch {
    sched_item *items;
    int n_items, n_tokens;
    sched_seq **failed; /* sequences that cannot fit the pools even alone; caller removes them */
    int n_failed;
} sched_batch;

typedef struct sched_stats {
    int running, waiting, preempted_waiting;
    int peak_running;
    int open_used, full_used, full_cached, peak_open_used, peak_full_used;
    int64_t steps, preemptions, scheduled_tokens;
    int64_t prefix_queries, prefix_hits; /* prompt blocks looked up / found at admission */
} sched_stats;

typedef struct sched sched;

/* DS_EINVAL naming the field if max_seqs or max_batched_tokens is not positive. */
ds_status sched_create(const sched_config *config, kv_cache *cache, sched **out, char *msg,
                       size_t msg_len);
void sched_destroy(sched *s);

/* A new sequence with a copy of the prompt (n_prompt >= 1). */
ds_status sched_seq_init(sched_seq *seq, int64_t id, const int32_t *prompt, int n_prompt,
                         void *user, char *msg, size_t msg_len);
/* Appends a generated token. DS_ENOMEM only if the token array cannot grow. */
ds_status sched_seq_append(sched_seq *seq, int32_t token);
/* Appends a placeholder for a token the device has sampled but not yet returned (async
 * scheduling); the last token must be known. DS_ENOMEM only if the token array cannot grow. */
ds_status sched_seq_append_unknown(sched_seq *seq);
/* Replaces the placeholder with the sampled id; when the step being scheduled reserved that
 * position (its chunk ends there) the reservation takes the id too, so the commit registers the
 * right block. */
void sched_seq_resolve(sched *s, sched_seq *seq, int32_t token);
/* Frees the token array; the sequence must not be in a queue. */
void sched_seq_free(sched_seq *seq);

/* Appends seq to the waiting queue. */
void sched_add(sched *s, sched_seq *seq);
/* Takes seq out of its queue, frees its blocks and sets its state to SCHED_FINISHED or
 * SCHED_CANCELLED. Any time: a sequence in the step between sched_schedule and sched_commit leaves
 * the batch (its reservation rolled back; the batch's items may be reordered). */
void sched_remove(sched *s, sched_seq *seq, sched_state final_state);

/* Builds the next step's batch and reserves its blocks. The batch (owned by the scheduler) stays
 * readable until the next sched_schedule; sequences in `failed` must be removed before it. A
 * non-empty batch must be ended by sched_commit or sched_abort_step; an empty one needs neither
 * (with no failures it means nothing can run). */
ds_status sched_schedule(sched *s, sched_batch **out, char *msg, size_t msg_len);
/* After a successful forward pass: commits every item's blocks. */
void sched_commit(sched *s);
/* After a failed forward pass: releases the step's reservations (nothing is computed). */
void sched_abort_step(sched *s);

void sched_get_stats(const sched *s, sched_stats *out);
/* Running + waiting sequences. */
int sched_n_live(const sched *s);

/* Invariant check for tests, between sched_schedule and sched_commit or between steps:
 * kv_cache_check over every live sequence, queue links and counts, n_computed equal to the
 * cache's committed positions and reservations equal to the batch's chunks. 0, or -1 with the
 * first violation in msg. */
int sched_check(const sched *s, char *msg, size_t msg_len);

#endif
