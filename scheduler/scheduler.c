/* scheduler/scheduler.c — continuous batching with chunked prefill and recompute preemption
 * (see scheduler.h). */
#include "scheduler/scheduler.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"

typedef struct seq_list {
    sched_seq *head, *tail;
    int n;
} seq_list;

struct sched {
    sched_config config;
    kv_cache *cache;
    seq_list waiting, running; /* waiting: FCFS (preempted ones at the head); running: by age */
    int64_t next_admission;
    sched_batch batch;
    int in_step; /* between sched_schedule and sched_commit / sched_abort_step */
    int max_items;
    sched_stats stats;
};

static void list_push_back(seq_list *l, sched_seq *q) {
    q->prev = l->tail, q->next = NULL;
    if (l->tail)
        l->tail->next = q;
    else
        l->head = q;
    l->tail = q;
    l->n++;
}

static void list_push_front(seq_list *l, sched_seq *q) {
    q->next = l->head, q->prev = NULL;
    if (l->head)
        l->head->prev = q;
    else
        l->tail = q;
    l->head = q;
    l->n++;
}

static void list_unlink(seq_list *l, sched_seq *q) {
    if (q->prev)
        q->prev->next = q->next;
    else
        l->head = q->next;
    if (q->next)
        q->next->prev = q->prev;
    else
        l->tail = q->prev;
    q->prev = q->next = NULL;
    l->n--;
}

ds_status sched_create(const sched_config *config, kv_cache *cache, sched **out, char *msg,
                       size_t msg_len) {
    *out = NULL;
    if (config->max_seqs <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_seqs = %d: must be positive",
                       config->max_seqs);
    if (config->max_batched_tokens <= 0)
        return ds_fail(msg, msg_len, DS_EINVAL, "max_batched_tokens = %d: must be positive",
                       config->max_batched_tokens);
    sched *s = calloc(1, sizeof *s);
    if (!s) return ds_fail(msg, msg_len, DS_ENOMEM, "scheduler: out of memory");
    s->config = *config;
    s->cache = cache;
    /* A step holds at most one item per running sequence; failures come from waiting ones. */
    s->max_items = config->max_seqs;
    s->batch.items = malloc((size_t)s->max_items * sizeof *s->batch.items);
    s->batch.failed = malloc((size_t)s->max_items * sizeof *s->batch.failed);
    if (!s->batch.items || !s->batch.failed) {
        sched_destroy(s);
        return ds_fail(msg, msg_len, DS_ENOMEM, "scheduler: out of memory");
    }
    *out = s;
    return DS_OK;
}

void sched_destroy(sched *s) {
    if (!s) return;
    free(s->batch.items);
    free(s->batch.failed);
    free(s);
}

ds_status sched_seq_init(sched_seq *q, int64_t id, const int32_t *prompt, int n_prompt, void *user,
                         char *msg, size_t msg_len) {
    memset(q, 0, sizeof *q);
    if (n_prompt < 1) return ds_fail(msg, msg_len, DS_EINVAL, "prompt: no tokens");
    q->cap = n_prompt + 16;
    q->tokens = malloc((size_t)q->cap * sizeof(int32_t));
    if (!q->tokens) return ds_fail(msg, msg_len, DS_ENOMEM, "sequence: out of memory");
    memcpy(q->tokens, prompt, (size_t)n_prompt * sizeof(int32_t));
    q->id = id;
    q->n_tokens = q->n_prompt = n_prompt;
    q->user = user;
    q->item = -1;
    kv_seq_init(&q->kv);
    return DS_OK;
}

ds_status sched_seq_append(sched_seq *q, int32_t token) {
    if (q->n_tokens == q->cap) {
        int cap = q->cap * 2;
        int32_t *t = realloc(q->tokens, (size_t)cap * sizeof(int32_t));
        if (!t) return DS_ENOMEM;
        q->tokens = t;
        q->cap = cap;
    }
    q->tokens[q->n_tokens++] = token;
    return DS_OK;
}

ds_status sched_seq_append_unknown(sched_seq *q) {
    DS_ASSERT(!q->last_unknown);
    ds_status st = sched_seq_append(q, -1);
    if (st == DS_OK) q->last_unknown = 1;
    return st;
}

void sched_seq_free(sched_seq *q) {
    DS_ASSERT(q->state != SCHED_WAITING && q->state != SCHED_RUNNING &&
              q->state != SCHED_PREEMPTED);
    free(q->tokens);
    q->tokens = NULL;
}

void sched_add(sched *s, sched_seq *q) {
    DS_ASSERT(q->state == SCHED_NEW);
    q->state = SCHED_WAITING;
    list_push_back(&s->waiting, q);
}

static void drop_item(sched *s, sched_seq *q);

void sched_remove(sched *s, sched_seq *q, sched_state final_state) {
    DS_ASSERT(final_state == SCHED_FINISHED || final_state == SCHED_CANCELLED);
    if (q->item >= 0) { /* in the step not yet committed: out of the batch */
        kv_seq_rollback(s->cache, &q->kv);
        drop_item(s, q);
    }
    if (q->state == SCHED_RUNNING)
        list_unlink(&s->running, q);
    else if (q->state == SCHED_WAITING || q->state == SCHED_PREEMPTED)
        list_unlink(&s->waiting, q);
    kv_seq_release(s->cache, &q->kv);
    q->n_computed = 0;
    q->state = final_state;
}

void sched_seq_resolve(sched *s, sched_seq *q, int32_t token) {
    DS_ASSERT(q->last_unknown);
    q->tokens[q->n_tokens - 1] = token;
    q->last_unknown = 0;
    /* In the step, a chunk that reached the end of the tokens reserved the placeholder's
     * position; a shorter recompute chunk did not. */
    if (q->item >= 0 && q->kv.n_reserved == q->n_tokens)
        kv_seq_set_last_token(s->cache, &q->kv, token);
}

/* --- one step --------------------------------------------------------------------------------- */

static void drop_item(sched *s, sched_seq *q) {
    sched_batch *b = &s->batch;
    int i = q->item;
    b->n_tokens -= b->items[i].n;
    b->items[i] = b->items[--b->n_items];
    b->items[i].seq->item = i;
    q->item = -1;
}

/* Frees a running sequence's blocks and puts it at the head of the waiting queue. */
static void preempt(sched *s, sched_seq *q) {
    if (q->item >= 0) {
        kv_seq_rollback(s->cache, &q->kv);
        drop_item(s, q);
    }
    list_unlink(&s->running, q);
    kv_seq_release(s->cache, &q->kv);
    q->n_computed = 0;
    q->state = SCHED_PREEMPTED;
    q->n_preemptions++;
    s->stats.preemptions++;
    list_push_front(&s->waiting, q);
}

static void add_item(sched *s, sched_seq *q, int n) {
    sched_batch *b = &s->batch;
    DS_ASSERT(b->n_items < s->max_items);
    q->item = b->n_items;
    b->items[b->n_items++] = (sched_item){
        .seq = q, .first = q->n_computed, .n = n, .sample = q->n_computed + n == q->n_tokens};
    b->n_tokens += n;
}

/* Reserves n tokens for running sequence q, preempting the newest running sequences while the
 * pools are short. Returns 1 if reserved, 0 if q itself was preempted. */
static int reserve_running(sched *s, sched_seq *q, int n) {
    for (;;) {
        int open, full;
        kv_seq_blocks_needed(s->cache, &q->kv, n, &open, &full);
        if (open <= kv_cache_open_free(s->cache) && full <= kv_cache_full_free(s->cache)) {
            ds_status st = kv_seq_reserve(s->cache, &q->kv, q->tokens + q->n_computed, n, NULL, 0);
            if (st == DS_OK) return 1;
        }
        sched_seq *victim = s->running.tail;
        if (victim == q && s->running.n == 1) {
            /* Alone and still short: it can never fit. The caller removes it. */
            if (s->batch.n_failed < s->max_items) s->batch.failed[s->batch.n_failed++] = q;
            return 0;
        }
        preempt(s, victim);
        if (victim == q) return 0;
    }
}

static int min_int(int a, int b) { return a < b ? a : b; }

ds_status sched_schedule(sched *s, sched_batch **out, char *msg, size_t msg_len) {
    sched_batch *b = &s->batch;
    DS_ASSERT(!s->in_step);
    b->n_items = b->n_tokens = b->n_failed = 0;
    s->in_step = 1;
    int budget = s->config.max_batched_tokens;

    /* 1. one token for every decoding sequence, oldest first */
    for (sched_seq *q = s->running.head, *next; q && budget > 0; q = next) {
        next = q->next;
        if (q->n_tokens - q->n_computed != 1) continue;
        if (reserve_running(s, q, 1)) {
            add_item(s, q, 1);
            budget--;
        }
        /* a preempted tail may have been `next`; restart from a safe point */
        if (next && next->state != SCHED_RUNNING) next = NULL;
    }
    /* 2. prefill chunks of running sequences */
    for (sched_seq *q = s->running.head, *next; q && budget > 0; q = next) {
        next = q->next;
        int left = q->n_tokens - q->n_computed;
        if (left <= 1 || q->item >= 0) continue;
        int n = min_int(left, budget);
        if (reserve_running(s, q, n)) {
            add_item(s, q, n);
            budget -= n;
        }
        if (next && next->state != SCHED_RUNNING) next = NULL;
    }
    /* 3. admit from the head of the waiting queue while everything lasts (FCFS: stop at the
     * first that does not fit). A watermark of 1% of the blocks stays free after an admission,
     * except when nothing runs, so that running sequences can grow a little before anything is
     * preempted. */
    int watermark = s->cache->config.n_full_blocks / 100;
    for (sched_seq *q = s->waiting.head, *next;
         q && budget > 0 && s->running.n < s->config.max_seqs; q = next) {
        next = q->next;
        int cached = kv_seq_attach_prefix(s->cache, &q->kv, q->tokens, q->n_tokens);
        if (cached < 0) return ds_fail(msg, msg_len, DS_ENOMEM, "scheduler: out of memory");
        q->n_computed = cached;
        int n = min_int(q->n_tokens - q->n_computed, budget), open, full, open_all, full_all;
        kv_seq_blocks_needed(s->cache, &q->kv, n, &open, &full);
        kv_seq_blocks_needed(s->cache, &q->kv, q->n_tokens - q->n_computed, &open_all, &full_all);
        int reserve = s->running.n ? watermark : 0;
        /* Admit only if the whole prompt's blocks are free, not just this chunk's, so that a
         * long prompt does not start only to be preempted by its own later chunks. */
        if (open > kv_cache_open_free(s->cache) ||
            full_all + reserve > kv_cache_full_free(s->cache) ||
            kv_seq_reserve(s->cache, &q->kv, q->tokens + q->n_computed, n, NULL, 0) != DS_OK) {
            /* Waiting sequences hold no blocks: the attached prefix goes back to the cache. */
            kv_seq_release(s->cache, &q->kv);
            q->n_computed = 0;
            if (s->running.n > 0 || b->n_failed == s->max_items) break;
            b->failed[b->n_failed++] = q; /* nothing will free blocks: it cannot fit */
            continue;
        }
        s->stats.prefix_queries += (q->n_tokens - 1) / s->cache->config.block_size;
        s->stats.prefix_hits += cached / s->cache->config.block_size;
        list_unlink(&s->waiting, q);
        q->state = SCHED_RUNNING;
        q->admitted = s->next_admission++;
        list_push_back(&s->running, q);
        add_item(s, q, n);
        budget -= n;
    }
    s->in_step = b->n_items > 0;
    s->stats.steps += s->in_step;
    s->stats.scheduled_tokens += b->n_tokens;
    if (s->running.n > s->stats.peak_running) s->stats.peak_running = s->running.n;
    int open_used = s->cache->config.n_open_blocks - kv_cache_open_free(s->cache);
    int full_used = s->cache->config.n_full_blocks - kv_cache_full_free(s->cache);
    if (open_used > s->stats.peak_open_used) s->stats.peak_open_used = open_used;
    if (full_used > s->stats.peak_full_used) s->stats.peak_full_used = full_used;
    *out = b;
    return DS_OK;
}

void sched_commit(sched *s) {
    sched_batch *b = &s->batch;
    for (int i = 0; i < b->n_items; i++) {
        sched_seq *q = b->items[i].seq;
        kv_seq_commit(s->cache, &q->kv);
        q->n_computed = q->kv.n_tokens;
        q->item = -1;
    }
    s->in_step = 0;
}

void sched_abort_step(sched *s) {
    sched_batch *b = &s->batch;
    for (int i = 0; i < b->n_items; i++) {
        kv_seq_rollback(s->cache, &b->items[i].seq->kv);
        b->items[i].seq->item = -1;
    }
    b->n_items = b->n_tokens = 0;
    s->in_step = 0;
}

void sched_get_stats(const sched *s, sched_stats *out) {
    *out = s->stats;
    out->running = s->running.n;
    out->waiting = s->waiting.n;
    out->preempted_waiting = 0;
    for (const sched_seq *q = s->waiting.head; q; q = q->next)
        out->preempted_waiting += q->state == SCHED_PREEMPTED;
    out->open_used = s->cache->config.n_open_blocks - kv_cache_open_free(s->cache);
    out->full_used = s->cache->config.n_full_blocks - kv_cache_full_free(s->cache);
    out->full_cached = s->cache->n_cached;
}

int sched_n_live(const sched *s) { return s->running.n + s->waiting.n; }

int sched_check(const sched *s, char *msg, size_t msg_len) {
    int n = s->running.n + s->waiting.n, i = 0, rc = -1;
    const kv_seq **seqs = malloc((size_t)(n ? n : 1) * sizeof *seqs);
    if (!seqs) return ds_fail(msg, msg_len, DS_ENOMEM, "sched_check: out of memory"), -1;
    const seq_list *lists[2] = {&s->running, &s->waiting};
    for (int l = 0; l < 2; l++) {
        int count = 0;
        const sched_seq *prev = NULL;
        for (const sched_seq *q = lists[l]->head; q; prev = q, q = q->next, count++) {
            int ok = l == 0 ? q->state == SCHED_RUNNING
                            : q->state == SCHED_WAITING || q->state == SCHED_PREEMPTED;
            if (!ok || q->prev != prev || count >= n) {
                ds_fail(msg, msg_len, DS_EINTERNAL, "sequence %lld: state %d in the %s queue",
                        (long long)q->id, q->state, l ? "waiting" : "running");
                goto done;
            }
            int in_step = s->in_step && q->item >= 0 ? s->batch.items[q->item].n : 0;
            if (q->n_computed != q->kv.n_tokens || q->kv.n_reserved != q->kv.n_tokens + in_step ||
                q->n_computed + in_step > q->n_tokens ||
                (q->item >= 0 && s->batch.items[q->item].seq != q)) {
                ds_fail(msg, msg_len, DS_EINTERNAL,
                        "sequence %lld: %d computed, cache holds %d (%d reserved, %d in the "
                        "step), %d tokens",
                        (long long)q->id, q->n_computed, q->kv.n_tokens, q->kv.n_reserved, in_step,
                        q->n_tokens);
                goto done;
            }
            seqs[i++] = &q->kv;
        }
        if (count != lists[l]->n || lists[l]->tail != prev) {
            ds_fail(msg, msg_len, DS_EINTERNAL, "%s queue: %d linked, count %d",
                    l ? "waiting" : "running", count, lists[l]->n);
            goto done;
        }
    }
    if (s->running.n > s->config.max_seqs) {
        ds_fail(msg, msg_len, DS_EINTERNAL, "%d running > max_seqs %d", s->running.n,
                s->config.max_seqs);
        goto done;
    }
    rc = kv_cache_check(s->cache, seqs, i, msg, msg_len);
done:
    free(seqs);
    return rc;
}
