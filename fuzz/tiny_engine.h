/* fuzz/tiny_engine.h — the serving engine the request targets (request, openai) submit to: the
 * tiny random-weights model on the CPU, made once per process and destroyed at exit. */
#ifndef DS_FUZZ_TINY_ENGINE_H
#define DS_FUZZ_TINY_ENGINE_H

#include "engine/serving.h"

serving *fuzz_tiny_engine(void);

/* serving_submit on it; if accepted, the stream is released (cancelling the request) and one
 * step frees it. Aborts if the step fails. */
void fuzz_submit_and_step(const serving_request *q);

#endif
