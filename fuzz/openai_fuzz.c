/* fuzz/openai_fuzz.c — a request body as the HTTP server receives it: openai_request_parse checks
 * the JSON's shape and types (and renders chat messages), then serving_submit validates and
 * tokenizes it on an engine with the tiny random-weights model (the request is then cancelled
 * and one step frees it). The first byte picks the endpoint and the chat template (ChatML,
 * Llama-3 or none). */
#include <stdlib.h>
#include <string.h>

#include "engine/serving.h"
#include "fuzz/fuzz_input.h"
#include "fuzz/tiny_engine.h"
#include "server/chat_template.h"
#include "server/openai_api.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const templates[] = {"chatml", "llama3", NULL};
    if (size == 0) return 0;
    const openai_endpoint endpoint = data[0] & 1 ? OPENAI_CHAT : OPENAI_COMPLETIONS;
    chat_template tmpl = {.kind = CHAT_TEMPLATE_NONE};
    const char *name = templates[(data[0] >> 1) % 3];
    char msg[512];
    if (name && chat_template_by_name(name, &tmpl, msg, sizeof msg) != DS_OK) abort();
    openai_request q;
    openai_error err;
    if (openai_request_parse(endpoint, (const char *)data + 1, size - 1, &tmpl, 1, &q, &err) == 0) {
        fuzz_submit_and_step(&q.request);
    } else if (err.http_status != 400 || err.message[0] == 0) {
        abort(); /* a refusal is a 400 that says why */
    }
    openai_request_free(&q);
    return 0;
}
