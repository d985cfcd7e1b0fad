/* server/lifecycle.c — two atomics: the phase and the engine pointer (published before the phase
 * turns SERVING, so a reader that sees SERVING sees the engine). */
#include "server/lifecycle.h"

#include <stdatomic.h>
#include <stdlib.h>

#include "common/log.h"

struct lifecycle {
    atomic_int phase;
    _Atomic(serving *) engine;
};

lifecycle *lifecycle_create(void) {
    lifecycle *l = calloc(1, sizeof *l);
    DS_ASSERT(l != NULL);
    atomic_init(&l->phase, LIFECYCLE_LOADING);
    atomic_init(&l->engine, NULL);
    return l;
}

void lifecycle_destroy(lifecycle *l) { free(l); }

void lifecycle_set_engine(lifecycle *l, serving *engine) {
    atomic_store(&l->engine, engine);
    int loading = LIFECYCLE_LOADING;
    atomic_compare_exchange_strong(&l->phase, &loading, LIFECYCLE_SERVING);
}

void lifecycle_drain(lifecycle *l) {
    int phase = atomic_load(&l->phase);
    while (phase < LIFECYCLE_DRAINING &&
           !atomic_compare_exchange_weak(&l->phase, &phase, LIFECYCLE_DRAINING)) {
    }
}

void lifecycle_stop(lifecycle *l) { atomic_store(&l->phase, LIFECYCLE_STOPPED); }

lifecycle_phase lifecycle_get_phase(const lifecycle *l) {
    return (lifecycle_phase)atomic_load(&((lifecycle *)l)->phase);
}

serving *lifecycle_engine(const lifecycle *l) { return atomic_load(&((lifecycle *)l)->engine); }

const char *lifecycle_refusal(const lifecycle *l) {
    switch (lifecycle_get_phase(l)) {
    case LIFECYCLE_LOADING: return "the server is still loading the model";
    case LIFECYCLE_SERVING:
        return serving_ready(lifecycle_engine(l)) ? NULL : "the engine is not serving";
    case LIFECYCLE_DRAINING:
        return "the server is draining: it stops once the requests in flight end";
    case LIFECYCLE_STOPPED: break;
    }
    return "the server has stopped";
}
