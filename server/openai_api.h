/* server/openai_api.h — the OpenAI API's JSON (POST /v1/completions, /v1/chat/completions,
 * GET /v1/models) to and from the serving engine's structs: request bodies are checked for shape
 * and types here, naming OpenAI's field ("max_tokens: expected an integer"); their values are
 * checked by serving_submit, once for gRPC and HTTP, whose messages openai_error_from_engine turns
 * into error objects. No HTTP and no engine calls here: server/http_server.c drives both.
 *
 * Fields read: model (not checked: one model is served), prompt (a string, token ids, or an array
 * of one of those) / messages, max_tokens (max_completion_tokens in chat), temperature, top_p,
 * seed, stop (a string or up to 16), n (1 only), stream, stream_options.include_usage, logprobs
 * (refused: the engine returns none), and vLLM's extensions top_k, ignore_eos, stop_token_ids.
 * Other fields are ignored, as vLLM does. */
#ifndef DS_SERVER_OPENAI_API_H
#define DS_SERVER_OPENAI_API_H

#include <stddef.h>
#include <stdint.h>

#include "engine/serving.h"
#include "server/chat_template.h"

typedef enum openai_endpoint { OPENAI_COMPLETIONS, OPENAI_CHAT } openai_endpoint;

/* An error object: {"error": {"message", "type", "param", "code"}} with its HTTP status. */
typedef struct openai_error {
    int http_status;  /* 400, 404, 413, 429, 500, 503 ... */
    const char *type; /* "invalid_request_error", "server_error", ... */
    char param[64];   /* the field at fault, "" for none */
    char message[512];
} openai_error;

typedef struct openai_request {
    openai_endpoint endpoint;
    int stream, include_usage;
    int max_tokens_given;    /* chat without it: the server fills in what the context leaves */
    serving_request request; /* borrows from the fields below */
    struct cJSON *body;
    char *chat_prompt; /* chat: the rendered prompt */
    int32_t *prompt_ids;
    const char *stop[SERVING_MAX_STOP];
    int32_t stop_ids[SERVING_MAX_STOP_IDS + 1];
} openai_request;

/* Parses and checks body into out (free with openai_request_free, also on error). For chat, the
 * messages are rendered with template (kind NONE: an error naming messages) and end_of_turn_id
 * (the template's end-of-turn token, -1 if the vocabulary has none) is added to the stop ids.
 * Returns 0, or -1 with err filled in (400). */
int openai_request_parse(openai_endpoint endpoint, const char *body, size_t body_len,
                         const chat_template *template, int32_t end_of_turn_id, openai_request *out,
                         openai_error *err);
void openai_request_free(openai_request *q);

/* An error of status and type naming param ("" for none); message printf-style. */
void openai_error_set(openai_error *err, int http_status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* serving_submit's refusal: 400 (EINVAL, ERANGE), 429 (EBUSY), 503 (EUNAVAILABLE, ENOMEM), 500;
 * param is the engine's field name (for chat, prompt becomes messages). */
void openai_error_from_engine(openai_endpoint endpoint, ds_status status, const char *message,
                              openai_error *err);
/* A request that ended without finishing (cancelled by the shutdown, an engine failure). */
void openai_error_from_finish(const serving_output *out, openai_error *err);
char *openai_error_json(const openai_error *err); /* malloc'ed */

/* The response bodies, malloc'ed JSON. id is "cmpl-N" / "chatcmpl-N"; created is Unix time. */
typedef struct openai_response_meta {
    const char *id, *model;
    long long created;
} openai_response_meta;

/* The whole response of a request that finished (stop or length): text and the last output's
 * finish and usage. */
char *openai_response_json(const openai_request *q, const openai_response_meta *meta,
                           const char *text, size_t text_len, const serving_output *last);
/* One streamed chunk: the text delta of out (chat: the first chunk also carries the role) and,
 * on the last, its finish reason. */
char *openai_chunk_json(const openai_request *q, const openai_response_meta *meta,
                        const serving_output *out, int first);
/* The usage chunk that stream_options.include_usage asks for after the last one. */
char *openai_usage_chunk_json(const openai_request *q, const openai_response_meta *meta,
                              const serving_output *last);
/* GET /v1/models. */
char *openai_models_json(const char *model, long long created, int context_length);

#endif
