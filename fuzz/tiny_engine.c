/* fuzz/tiny_engine.c — see tiny_engine.h. */
#include "fuzz/tiny_engine.h"

#include <stdlib.h>

static serving *g_engine;

static void destroy_engine(void) { serving_destroy(g_engine); }

serving *fuzz_tiny_engine(void) {
    if (g_engine) return g_engine;
    serving_options o;
    serving_options_default(&o);
    o.random_weights = "tiny";
    o.kv_memory_bytes = 4 << 20;
    o.block_size = 16;
    o.max_seqs = 4;
    o.n_threads = 1;
    char msg[512];
    if (serving_create(&o, &g_engine, msg, sizeof msg) != DS_OK) abort();
    atexit(destroy_engine);
    return g_engine;
}

void fuzz_submit_and_step(const serving_request *q) {
    serving_stream *st;
    char msg[512];
    if (serving_submit(fuzz_tiny_engine(), q, NULL, NULL, &st, msg, sizeof msg) != DS_OK) return;
    serving_stream_release(st);
    int worked;
    if (serving_step(fuzz_tiny_engine(), &worked, msg, sizeof msg) != DS_OK) abort();
}
