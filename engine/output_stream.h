/* engine/output_stream.h — one request's output stream (serving.h's serving_stream): the queue of
 * output not yet polled (token ids, text delta, usage, the finish), guarded by one mutex and
 * condvar, handed from the engine thread to the submitter's threads. Internal to engine/serving.
 *
 * Threads: the engine thread alone pushes, posts the finish and reads cancel requests; any thread
 * polls, waits, cancels (serving_stream_* in serving.h). Usage counters are written with the
 * pushes so each poll sees a consistent snapshot.
 *
 * Lifetime: a stream holds two references, the engine's (dropped by output_stream_unref once the
 * finish is posted) and the submitter's (serving_stream_release); the last one frees it. */
#ifndef DS_ENGINE_OUTPUT_STREAM_H
#define DS_ENGINE_OUTPUT_STREAM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/serving.h"

/* A stream with both references held: request id, the submitter's notify callback (run on the
 * engine thread, no lock held, after every push and the finish), wake (run by
 * serving_stream_cancel so the engine applies it within a step), the prompt's length for the
 * usage, and n_waiting, the engine's count of live requests waiting to run: the new stream counts
 * in it (see output_stream_set_waiting). NULL when out of memory. */
serving_stream *output_stream_create(int64_t id, int prompt_tokens, serving_notify_fn notify,
                                     void *notify_ctx, void (*wake)(void *ctx), void *wake_ctx,
                                     atomic_int *n_waiting);
/* Drops the engine's reference. */
void output_stream_unref(serving_stream *st);

/* Appends generated ids and a text delta (either may be empty) and the usage so far. Returns 0,
 * with the stream unchanged except for the usage, when out of memory. Does not notify. */
int output_stream_push(serving_stream *st, const int32_t *ids, int n_ids, const char *text,
                       size_t text_len, int completion_tokens, int preemptions);
/* Wakes waiters and runs the notify callback: after a push. */
void output_stream_notify(serving_stream *st);
/* Posts the final output (why, error or NULL, the usage) and notifies. */
void output_stream_finish(serving_stream *st, serving_finish why, const char *error,
                          int completion_tokens);

/* Usage known at admission and at the first token. */
void output_stream_set_cached_prompt(serving_stream *st, int cached_prompt_tokens);
void output_stream_set_ttft(serving_stream *st, double ttft_s);
/* Whether the request counts in n_waiting: the engine sets it as the request waits (queued or
 * preempted) or runs. A cancel or the finish takes it out at once and for good, so that
 * max_waiting counts live requests only, not those cancelled since the last step. */
void output_stream_set_waiting(serving_stream *st, int waiting);
/* 1 once serving_stream_cancel or _release asked the engine to end the request. */
int output_stream_cancel_requested(serving_stream *st);

#endif
