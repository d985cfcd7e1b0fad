/* engine/output_stream.c — a request's output stream (see output_stream.h): the pending output the
 * engine pushes and the submitter polls, and the public serving_stream_* calls of serving.h. */
#include "engine/output_stream.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct serving_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs; /* engine + submitter */
    int64_t id;
    serving_notify_fn notify;
    void *notify_ctx;
    void (*wake)(void *ctx);
    void *wake_ctx;
    int cancel_requested;
    atomic_int *n_waiting; /* the engine's; this stream counts in it while waiting is set */
    int waiting;
    /* pending output, moved out by poll */
    int32_t *ids;
    int n_ids, cap_ids;
    char *text;
    size_t text_len, text_cap;
    serving_finish finish;
    int finish_taken;
    char error[256];
    int prompt_tokens, cached_prompt_tokens, completion_tokens, preemptions;
    double ttft_s;
};

serving_stream *output_stream_create(int64_t id, int prompt_tokens, serving_notify_fn notify,
                                     void *notify_ctx, void (*wake)(void *ctx), void *wake_ctx,
                                     atomic_int *n_waiting) {
    serving_stream *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->refs = 2;
    st->id = id;
    st->notify = notify;
    st->notify_ctx = notify_ctx;
    st->wake = wake;
    st->wake_ctx = wake_ctx;
    st->prompt_tokens = prompt_tokens;
    st->ttft_s = -1;
    st->n_waiting = n_waiting;
    st->waiting = 1;
    atomic_fetch_add(n_waiting, 1);
    return st;
}

void output_stream_unref(serving_stream *st) {
    pthread_mutex_lock(&st->mu);
    int left = --st->refs;
    pthread_mutex_unlock(&st->mu);
    if (left) return;
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st->ids);
    free(st->text);
    free(st);
}

int output_stream_push(serving_stream *st, const int32_t *ids, int n_ids, const char *text,
                       size_t text_len, int completion_tokens, int preemptions) {
    int ok = 1;
    pthread_mutex_lock(&st->mu);
    if (st->n_ids + n_ids > st->cap_ids) {
        int cap = st->cap_ids ? st->cap_ids * 2 : 16;
        while (cap < st->n_ids + n_ids)
            cap *= 2;
        int32_t *p = realloc(st->ids, (size_t)cap * sizeof *p);
        if (p)
            st->ids = p, st->cap_ids = cap;
        else
            ok = 0;
    }
    if (ok && st->text_len + text_len + 1 > st->text_cap) {
        size_t cap = st->text_cap ? st->text_cap * 2 : 64;
        while (cap < st->text_len + text_len + 1)
            cap *= 2;
        char *p = realloc(st->text, cap);
        if (p)
            st->text = p, st->text_cap = cap;
        else
            ok = 0;
    }
    if (ok) {
        if (n_ids) memcpy(st->ids + st->n_ids, ids, (size_t)n_ids * sizeof *ids);
        st->n_ids += n_ids;
        if (text_len) memcpy(st->text + st->text_len, text, text_len);
        st->text_len += text_len;
        st->text[st->text_len] = 0;
    }
    st->completion_tokens = completion_tokens;
    st->preemptions = preemptions;
    pthread_mutex_unlock(&st->mu);
    return ok;
}

void output_stream_notify(serving_stream *st) {
    pthread_cond_broadcast(&st->cv);
    if (st->notify) st->notify(st->notify_ctx);
}

/* Caller holds st->mu. A cancelled or finished stream never counts again. */
static void set_waiting_locked(serving_stream *st, int waiting) {
    if (st->cancel_requested || st->finish) waiting = 0;
    if (waiting == st->waiting) return;
    st->waiting = waiting;
    atomic_fetch_add(st->n_waiting, waiting ? 1 : -1);
}

void output_stream_set_waiting(serving_stream *st, int waiting) {
    pthread_mutex_lock(&st->mu);
    set_waiting_locked(st, waiting);
    pthread_mutex_unlock(&st->mu);
}

void output_stream_finish(serving_stream *st, serving_finish why, const char *error,
                          int completion_tokens) {
    pthread_mutex_lock(&st->mu);
    st->finish = why;
    set_waiting_locked(st, 0);
    if (error) snprintf(st->error, sizeof st->error, "%s", error);
    st->completion_tokens = completion_tokens;
    pthread_mutex_unlock(&st->mu);
    output_stream_notify(st);
}

void output_stream_set_cached_prompt(serving_stream *st, int cached_prompt_tokens) {
    pthread_mutex_lock(&st->mu);
    st->cached_prompt_tokens = cached_prompt_tokens;
    pthread_mutex_unlock(&st->mu);
}

void output_stream_set_ttft(serving_stream *st, double ttft_s) {
    pthread_mutex_lock(&st->mu);
    st->ttft_s = ttft_s;
    pthread_mutex_unlock(&st->mu);
}

int output_stream_cancel_requested(serving_stream *st) {
    pthread_mutex_lock(&st->mu);
    int r = st->cancel_requested;
    pthread_mutex_unlock(&st->mu);
    return r;
}

/* --- the submitter's side (serving.h) --------------------------------------------------------- */

void serving_output_free(serving_output *out) {
    free(out->token_ids);
    free(out->text);
    memset(out, 0, sizeof *out);
    out->ttft_s = -1;
}

/* Caller holds st->mu. */
static int take_output(serving_stream *st, serving_output *out) {
    int has = st->n_ids > 0 || st->text_len > 0 || (st->finish && !st->finish_taken);
    if (!has) return 0;
    free(out->token_ids);
    free(out->text);
    out->token_ids = st->ids;
    out->n_token_ids = st->n_ids;
    out->text = st->text;
    out->text_len = st->text_len;
    if (!out->text && (out->text = malloc(1))) out->text[0] = 0;
    st->ids = NULL, st->n_ids = st->cap_ids = 0;
    st->text = NULL, st->text_len = st->text_cap = 0;
    out->finish = st->finish;
    st->finish_taken = st->finish != SERVING_RUNNING;
    memcpy(out->error, st->error, sizeof out->error);
    out->prompt_tokens = st->prompt_tokens;
    out->cached_prompt_tokens = st->cached_prompt_tokens;
    out->completion_tokens = st->completion_tokens;
    out->preemptions = st->preemptions;
    out->ttft_s = st->ttft_s;
    return 1;
}

int serving_stream_poll(serving_stream *st, serving_output *out) {
    pthread_mutex_lock(&st->mu);
    int r = take_output(st, out);
    pthread_mutex_unlock(&st->mu);
    return r;
}

int serving_stream_wait(serving_stream *st, serving_output *out, double timeout_s) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout_s >= 0) {
        double t = until.tv_sec + until.tv_nsec * 1e-9 + timeout_s;
        until.tv_sec = (time_t)t;
        until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&st->mu);
    int r;
    while (!(r = take_output(st, out))) {
        if (st->finish && st->finish_taken) break; /* nothing more will come */
        if (timeout_s < 0)
            pthread_cond_wait(&st->cv, &st->mu);
        else if (pthread_cond_timedwait(&st->cv, &st->mu, &until))
            break;
    }
    pthread_mutex_unlock(&st->mu);
    return r;
}

int64_t serving_stream_id(const serving_stream *st) { return st->id; }

void serving_stream_cancel(serving_stream *st) {
    pthread_mutex_lock(&st->mu);
    st->cancel_requested = 1;
    set_waiting_locked(st, 0);
    pthread_mutex_unlock(&st->mu);
    st->wake(st->wake_ctx);
}

void serving_stream_release(serving_stream *st) {
    serving_stream_cancel(st);
    output_stream_unref(st);
}

const char *serving_finish_name(serving_finish f) {
    switch (f) {
    case SERVING_RUNNING: return "running";
    case SERVING_STOP: return "stop";
    case SERVING_LENGTH: return "length";
    case SERVING_CANCELLED: return "cancelled";
    case SERVING_ERROR: return "error";
    case SERVING_UNAVAILABLE: return "unavailable";
    }
    return "unknown";
}
