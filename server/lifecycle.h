/* server/lifecycle.h — where `decoserve serve` stands, which both front doors (gRPC and HTTP) ask
 * before admitting a request and report in their health checks:
 *
 *   LOADING   listening, the model not yet loaded: NOT_SERVING, /ready 503, requests UNAVAILABLE
 *   SERVING   the engine accepts requests (until its device fails: serving_ready)
 *   DRAINING  after SIGTERM: NOT_SERVING, /ready 503, new requests refused, in-flight ones run
 *   STOPPED   the model failed to load, or the drain ended
 *
 * Threads: the loader sets the engine once, the main thread drains and stops, every server
 * thread reads; all through atomics. The engine is borrowed: whoever loaded it destroys it after
 * the servers. */
#ifndef DS_SERVER_LIFECYCLE_H
#define DS_SERVER_LIFECYCLE_H

#include "engine/serving.h"

typedef enum lifecycle_phase {
    LIFECYCLE_LOADING,
    LIFECYCLE_SERVING,
    LIFECYCLE_DRAINING,
    LIFECYCLE_STOPPED,
} lifecycle_phase;

typedef struct lifecycle lifecycle;

lifecycle *lifecycle_create(void); /* LOADING */
void lifecycle_destroy(lifecycle *l);

/* LOADING -> SERVING with the started engine (ignored in any other phase). */
void lifecycle_set_engine(lifecycle *l, serving *engine);
/* -> DRAINING (from LOADING or SERVING), -> STOPPED. */
void lifecycle_drain(lifecycle *l);
void lifecycle_stop(lifecycle *l);

lifecycle_phase lifecycle_get_phase(const lifecycle *l);
/* The engine once loaded (also while draining), or NULL. */
serving *lifecycle_engine(const lifecycle *l);
/* NULL while new requests are admitted; otherwise why not ("the model is still loading", "the
 * server is draining: it stops after the requests in flight", ...), for UNAVAILABLE / 503. */
const char *lifecycle_refusal(const lifecycle *l);

#endif
