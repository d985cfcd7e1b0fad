/* server/openai_api.c — cJSON in, cJSON out. A field that is absent or null takes the engine's
 * default (serving_request_default), except max_tokens in chat, which the server fills in. */
#include "server/openai_api.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/log.h"

void openai_error_set(openai_error *err, int http_status, const char *param, const char *fmt, ...) {
    err->http_status = http_status;
    err->type = http_status == 429   ? "rate_limit_error"
                : http_status == 404 ? "not_found_error"
                : http_status >= 500 ? "server_error"
                                     : "invalid_request_error";
    snprintf(err->param, sizeof err->param, "%s", param);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
}

void openai_error_from_engine(openai_endpoint endpoint, ds_status status, const char *message,
                              openai_error *err) {
    int http = status == DS_EINVAL || status == DS_ERANGE         ? 400
               : status == DS_EBUSY                               ? 429
               : status == DS_EUNAVAILABLE || status == DS_ENOMEM ? 503
                                                                  : 500;
    /* The engine's messages start with the field they name: "top_p = 1.5: ...". */
    char param[64];
    size_t n = 0;
    while (n + 1 < sizeof param && (islower((unsigned char)message[n]) || message[n] == '_'))
        param[n] = message[n], n++;
    param[n] = '\0';
    if (http != 400) param[0] = '\0';
    if (status == DS_ERANGE && strstr(message, "max_tokens (")) /* prompt + max_tokens too long */
        snprintf(param, sizeof param, "max_tokens");
    if (!strcmp(param, "prompt") || !strcmp(param, "prompt_ids")) /* OpenAI's one field */
        snprintf(param, sizeof param, endpoint == OPENAI_CHAT ? "messages" : "prompt");
    openai_error_set(err, http, param, "%s", message);
}

void openai_error_from_finish(const serving_output *out, openai_error *err) {
    if (out->finish == SERVING_CANCELLED)
        openai_error_set(err, 503, "", "request cancelled: the server is shutting down");
    else if (out->finish == SERVING_UNAVAILABLE)
        openai_error_set(err, 503, "", "%s", out->error);
    else
        openai_error_set(err, 500, "", "%s", out->error);
}

char *openai_error_json(const openai_error *err) {
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON_AddStringToObject(e, "message", err->message);
    cJSON_AddStringToObject(e, "type", err->type);
    if (err->param[0])
        cJSON_AddStringToObject(e, "param", err->param);
    else
        cJSON_AddNullToObject(e, "param");
    cJSON_AddNumberToObject(e, "code", err->http_status);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    DS_ASSERT(text != NULL);
    return text;
}

/* ---- request ---- */

/* The field, or NULL when absent or null. */
static const cJSON *field(const cJSON *obj, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

static int bad_type(openai_error *err, const char *name, const char *expected) {
    openai_error_set(err, 400, name, "%s: expected %s", name, expected);
    return -1;
}

static int is_int(const cJSON *f) {
    return cJSON_IsNumber(f) && f->valuedouble == floor(f->valuedouble) &&
           fabs(f->valuedouble) < 9.007199254740992e15;
}

/* An optional integer in [lo, hi] (the engine checks the values it cares about). */
static int get_int(const cJSON *obj, const char *name, double lo, double hi, int *given,
                   double *out, openai_error *err) {
    const cJSON *f = field(obj, name);
    if (given) *given = f != NULL;
    if (!f) return 0;
    if (!is_int(f)) return bad_type(err, name, "an integer");
    if (f->valuedouble < lo || f->valuedouble > hi) {
        openai_error_set(err, 400, name, "%s = %.0f: expected %.0f to %.0f", name, f->valuedouble,
                         lo, hi);
        return -1;
    }
    *out = f->valuedouble;
    return 0;
}

static int get_number(const cJSON *obj, const char *name, float *out, openai_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsNumber(f)) return bad_type(err, name, "a number");
    *out = (float)f->valuedouble;
    return 0;
}

static int get_bool(const cJSON *obj, const char *name, int *out, openai_error *err) {
    const cJSON *f = field(obj, name);
    if (!f) return 0;
    if (!cJSON_IsBool(f)) return bad_type(err, name, "true or false");
    *out = cJSON_IsTrue(f);
    return 0;
}

/* An array of token ids into a malloc'ed buffer (bounds are the engine's to check). */
static int get_ids(const cJSON *arr, const char *name, int32_t **out, int *n_out,
                   openai_error *err) {
    int n = cJSON_GetArraySize(arr);
    int32_t *ids = malloc(((size_t)n + 1) * sizeof *ids);
    DS_ASSERT(ids != NULL);
    int i = 0;
    for (const cJSON *e = arr->child; e; e = e->next, i++) {
        if (!is_int(e) || e->valuedouble < INT32_MIN || e->valuedouble > INT32_MAX) {
            free(ids);
            openai_error_set(err, 400, name, "%s[%d]: expected a token id (an integer)", name, i);
            return -1;
        }
        ids[i] = (int32_t)e->valuedouble;
    }
    *out = ids, *n_out = n;
    return 0;
}

static int parse_prompt(const cJSON *body, openai_request *q, openai_error *err) {
    const cJSON *p = field(body, "prompt");
    static const char expected[] = "a string, an array of token ids, or an array of one of those";
    if (!p) {
        openai_error_set(err, 400, "prompt", "prompt: required");
        return -1;
    }
    if (cJSON_IsArray(p) && cJSON_GetArraySize(p) > 0 &&
        (cJSON_IsString(p->child) || cJSON_IsArray(p->child))) {
        if (cJSON_GetArraySize(p) != 1) {
            openai_error_set(err, 400, "prompt", "prompt: %d prompts; one per request is served",
                             cJSON_GetArraySize(p));
            return -1;
        }
        p = p->child;
    }
    if (cJSON_IsString(p)) {
        q->request.prompt = p->valuestring;
        q->request.prompt_len = strlen(p->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(p)) return bad_type(err, "prompt", expected);
    q->request.prompt = NULL;
    if (get_ids(p, "prompt", &q->prompt_ids, &q->request.n_prompt_ids, err) < 0) return -1;
    q->request.prompt_ids = q->prompt_ids;
    return 0;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts (joined). */
static int message_content(const cJSON *m, int i, FILE *text, openai_error *err) {
    char name[64];
    snprintf(name, sizeof name, "messages[%d].content", i);
    const cJSON *c = field(m, "content");
    if (!c) return 0; /* an assistant turn that only called tools */
    if (cJSON_IsString(c)) {
        fputs(c->valuestring, text);
        return 0;
    }
    if (!cJSON_IsArray(c)) return bad_type(err, name, "a string or an array of text parts");
    for (const cJSON *part = c->child; part; part = part->next) {
        const cJSON *type = field(part, "type"), *t = field(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(t))
            return bad_type(err, name, "text parts ({\"type\": \"text\", \"text\": ...})");
        fputs(t->valuestring, text);
    }
    return 0;
}

static int parse_messages(const cJSON *body, const chat_template *template, openai_request *q,
                          openai_error *err) {
    const cJSON *ms = field(body, "messages");
    if (!ms) {
        openai_error_set(err, 400, "messages", "messages: required");
        return -1;
    }
    if (!cJSON_IsArray(ms)) return bad_type(err, "messages", "an array of messages");
    int n = cJSON_GetArraySize(ms);
    if (n == 0) {
        openai_error_set(err, 400, "messages", "messages: empty");
        return -1;
    }
    if (template->kind == CHAT_TEMPLATE_NONE) {
        openai_error_set(err, 400, "messages",
                         "messages: this server has no chat template for its model (the model's "
                         "tokenizer.chat_template is neither ChatML nor Llama-3, and no "
                         "chat_template was set); use /v1/completions");
        return -1;
    }
    chat_message *msgs = calloc((size_t)n, sizeof *msgs);
    char **contents = calloc((size_t)n, sizeof *contents);
    DS_ASSERT(msgs != NULL && contents != NULL);
    int i = 0, rc = 0;
    for (const cJSON *m = ms->child; m && rc == 0; m = m->next, i++) {
        char name[64];
        snprintf(name, sizeof name, "messages[%d].role", i);
        const cJSON *role = field(m, "role");
        if (!cJSON_IsObject(m)) {
            snprintf(name, sizeof name, "messages[%d]", i);
            rc = bad_type(err, name, "an object with role and content");
        } else if (!cJSON_IsString(role) || !role->valuestring[0]) {
            rc = bad_type(err, name, "a string (system, user, assistant, ...)");
        } else {
            size_t len = 0;
            FILE *f = open_memstream(&contents[i], &len);
            DS_ASSERT(f != NULL);
            rc = message_content(m, i, f, err);
            int closed = fclose(f);
            DS_ASSERT(closed == 0);
            msgs[i] = (chat_message){.role = role->valuestring, .content = contents[i]};
        }
    }
    if (rc == 0) {
        q->chat_prompt = chat_template_render(template, msgs, n);
        q->request.prompt = q->chat_prompt;
        q->request.prompt_len = strlen(q->chat_prompt);
    }
    for (int k = 0; k < n; k++)
        free(contents[k]);
    free(contents), free(msgs);
    return rc;
}

static int parse_stop(const cJSON *body, openai_request *q, openai_error *err) {
    const cJSON *s = field(body, "stop");
    if (!s) return 0;
    if (cJSON_IsString(s)) {
        q->stop[0] = s->valuestring;
        q->request.n_stop = 1;
    } else if (cJSON_IsArray(s)) {
        int n = 0;
        for (const cJSON *e = s->child; e; e = e->next, n++) {
            if (!cJSON_IsString(e)) return bad_type(err, "stop", "a string or an array of strings");
            if (n < SERVING_MAX_STOP) q->stop[n] = e->valuestring;
        }
        q->request.n_stop = n; /* over SERVING_MAX_STOP: the engine names the limit */
        if (n > SERVING_MAX_STOP) q->request.n_stop = SERVING_MAX_STOP + 1;
    } else {
        return bad_type(err, "stop", "a string or an array of strings");
    }
    q->request.stop = q->stop;
    return 0;
}

static int parse_stop_ids(const cJSON *body, int32_t end_of_turn_id, openai_request *q,
                          openai_error *err) {
    const cJSON *s = field(body, "stop_token_ids");
    int n = 0;
    if (s) {
        if (!cJSON_IsArray(s)) return bad_type(err, "stop_token_ids", "an array of token ids");
        int32_t *ids;
        if (get_ids(s, "stop_token_ids", &ids, &n, err) < 0) return -1;
        if (n > SERVING_MAX_STOP_IDS) n = SERVING_MAX_STOP_IDS + 1; /* the engine refuses it */
        memcpy(q->stop_ids, ids,
               (size_t)(n > SERVING_MAX_STOP_IDS ? SERVING_MAX_STOP_IDS : n) * sizeof *ids);
        free(ids);
    }
    if (q->endpoint == OPENAI_CHAT && end_of_turn_id >= 0 && n < SERVING_MAX_STOP_IDS)
        q->stop_ids[n++] = end_of_turn_id;
    q->request.stop_ids = q->stop_ids;
    q->request.n_stop_ids = n;
    return 0;
}

static int parse_fields(const cJSON *body, openai_request *q, int32_t end_of_turn_id,
                        openai_error *err) {
    serving_request *r = &q->request;
    const cJSON *model = field(body, "model");
    if (model && !cJSON_IsString(model)) return bad_type(err, "model", "a string");
    double v;
    int given;
    const char *max_name = "max_tokens";
    if (q->endpoint == OPENAI_CHAT && field(body, "max_completion_tokens"))
        max_name = "max_completion_tokens";
    if (get_int(body, max_name, -2147483648.0, 2147483647.0, &given, &v, err) < 0) return -1;
    if (given) r->max_tokens = (int)v;
    q->max_tokens_given = given;
    if (get_number(body, "temperature", &r->sampling.temperature, err) < 0) return -1;
    if (get_number(body, "top_p", &r->sampling.top_p, err) < 0) return -1;
    if (get_int(body, "top_k", -1, 2147483647.0, &given, &v, err) < 0) return -1;
    if (given) r->sampling.top_k = v < 0 ? 0 : (int)v; /* vLLM: -1 keeps every token */
    if (get_int(body, "seed", -9.2e18, 9.2e18, &given, &v, err) < 0) return -1;
    if (given) r->sampling.seed = (int64_t)v;
    if (get_int(body, "n", 1, 1, NULL, &v, err) < 0) {
        snprintf(err->message, sizeof err->message, "n: only 1 completion per request is served");
        return -1;
    }
    const cJSON *lp = field(body, "logprobs");
    if (lp && !cJSON_IsFalse(lp)) {
        openai_error_set(err, 400, "logprobs", "logprobs: not supported (the engine returns none)");
        return -1;
    }
    if (get_bool(body, "stream", &q->stream, err) < 0) return -1;
    const cJSON *so = field(body, "stream_options");
    if (so && !cJSON_IsObject(so)) return bad_type(err, "stream_options", "an object");
    if (so && get_bool(so, "include_usage", &q->include_usage, err) < 0) return -1;
    if (get_bool(body, "ignore_eos", &r->ignore_eos, err) < 0) return -1;
    if (parse_stop(body, q, err) < 0) return -1;
    return parse_stop_ids(body, end_of_turn_id, q, err);
}

int openai_request_parse(openai_endpoint endpoint, const char *body, size_t body_len,
                         const chat_template *template, int32_t end_of_turn_id, openai_request *out,
                         openai_error *err) {
    memset(out, 0, sizeof *out);
    out->endpoint = endpoint;
    serving_request_default(&out->request);
    const char *end = NULL;
    out->body = cJSON_ParseWithLengthOpts(body, body_len, &end, 0);
    if (!out->body) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        openai_error_set(err, 400, "", "request body: invalid JSON at byte %zu", at);
        return -1;
    }
    if (!cJSON_IsObject(out->body)) {
        openai_error_set(err, 400, "", "request body: expected a JSON object");
        return -1;
    }
    if (parse_fields(out->body, out, end_of_turn_id, err) < 0) return -1;
    return endpoint == OPENAI_CHAT ? parse_messages(out->body, template, out, err)
                                   : parse_prompt(out->body, out, err);
}

void openai_request_free(openai_request *q) {
    cJSON_Delete(q->body);
    free(q->chat_prompt);
    free(q->prompt_ids);
    memset(q, 0, sizeof *q);
}

/* ---- responses ---- */

static cJSON *response_head(const openai_response_meta *meta, const char *object) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", meta->id);
    cJSON_AddStringToObject(root, "object", object);
    cJSON_AddNumberToObject(root, "created", (double)meta->created);
    cJSON_AddStringToObject(root, "model", meta->model);
    return root;
}

static void add_usage(cJSON *root, const serving_output *last) {
    cJSON *u = cJSON_AddObjectToObject(root, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", last->prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", last->completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", last->prompt_tokens + last->completion_tokens);
    cJSON *details = cJSON_AddObjectToObject(u, "prompt_tokens_details");
    cJSON_AddNumberToObject(details, "cached_tokens", last->cached_prompt_tokens);
}

static void add_finish_reason(cJSON *choice, serving_finish finish) {
    if (finish == SERVING_RUNNING)
        cJSON_AddNullToObject(choice, "finish_reason");
    else
        cJSON_AddStringToObject(choice, "finish_reason", serving_finish_name(finish));
}

static char *print(cJSON *root) {
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    DS_ASSERT(text != NULL);
    return text;
}

/* The text as a JSON string (cJSON's strings end at a NUL, which decoded text may hold). */
static cJSON *text_value(const char *text, size_t len) {
    char *copy = strndup(text ? text : "", len);
    DS_ASSERT(copy != NULL);
    cJSON *s = cJSON_CreateString(copy);
    free(copy);
    return s;
}

char *openai_response_json(const openai_request *q, const openai_response_meta *meta,
                           const char *text, size_t text_len, const serving_output *last) {
    const int chat = q->endpoint == OPENAI_CHAT;
    cJSON *root = response_head(meta, chat ? "chat.completion" : "text_completion");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    if (chat) {
        cJSON *m = cJSON_AddObjectToObject(choice, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddItemToObject(m, "content", text_value(text, text_len));
    } else {
        cJSON_AddItemToObject(choice, "text", text_value(text, text_len));
    }
    cJSON_AddNullToObject(choice, "logprobs");
    add_finish_reason(choice, last->finish);
    add_usage(root, last);
    return print(root);
}

char *openai_chunk_json(const openai_request *q, const openai_response_meta *meta,
                        const serving_output *out, int first) {
    const int chat = q->endpoint == OPENAI_CHAT;
    cJSON *root = response_head(meta, chat ? "chat.completion.chunk" : "text_completion");
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    if (chat) {
        cJSON *d = cJSON_AddObjectToObject(choice, "delta");
        if (first) cJSON_AddStringToObject(d, "role", "assistant");
        if (out->text_len > 0 || first)
            cJSON_AddItemToObject(d, "content", text_value(out->text, out->text_len));
    } else {
        cJSON_AddItemToObject(choice, "text", text_value(out->text, out->text_len));
    }
    cJSON_AddNullToObject(choice, "logprobs");
    add_finish_reason(choice, out->finish);
    return print(root);
}

char *openai_usage_chunk_json(const openai_request *q, const openai_response_meta *meta,
                              const serving_output *last) {
    cJSON *root = response_head(meta, q->endpoint == OPENAI_CHAT ? "chat.completion.chunk"
                                                                 : "text_completion");
    cJSON_AddArrayToObject(root, "choices");
    add_usage(root, last);
    return print(root);
}

char *openai_models_json(const char *model, long long created, int context_length) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *m = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "data"), m);
    cJSON_AddStringToObject(m, "id", model);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)created);
    cJSON_AddStringToObject(m, "owned_by", "decoserve");
    cJSON_AddNumberToObject(m, "max_model_len", context_length);
    return print(root);
}
