/* openai_api_test — request bodies to serving requests (defaults, every field, the shapes prompt
 * and stop take), each malformed body's status and param, engine refusals to error objects, and
 * the response JSON a client parses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "server/openai_api.h"

static chat_template chatml(void) {
    chat_template t;
    char msg[64];
    assert_int_equal(chat_template_by_name("chatml", &t, msg, sizeof msg), DS_OK);
    return t;
}

static int parse(openai_endpoint ep, const char *body, openai_request *q, openai_error *err) {
    chat_template t = chatml();
    return openai_request_parse(ep, body, strlen(body), &t, 2, q, err);
}

static void test_fields(void **state) {
    (void)state;
    openai_request q;
    openai_error err;
    assert_int_equal(parse(OPENAI_COMPLETIONS,
                           "{\"model\": \"m\", \"prompt\": \"Hi\", \"max_tokens\": 7, "
                           "\"temperature\": 0.5, \"top_p\": 0.9, \"seed\": 42, \"stop\": \"x\", "
                           "\"n\": 1, \"stream\": true, \"stream_options\": {\"include_usage\": "
                           "true}, \"top_k\": -1, \"logprobs\": null, \"unknown_field\": [1]}",
                           &q, &err),
                     0);
    assert_string_equal(q.request.prompt, "Hi");
    assert_int_equal(q.request.max_tokens, 7);
    assert_true(q.request.sampling.temperature == 0.5f);
    assert_true(q.request.sampling.top_p == 0.9f);
    assert_int_equal(q.request.sampling.seed, 42);
    assert_int_equal(q.request.sampling.top_k, 0);
    assert_int_equal(q.request.n_stop, 1);
    assert_string_equal(q.request.stop[0], "x");
    assert_int_equal(q.request.n_stop_ids, 0); /* the end-of-turn id is chat's */
    assert_true(q.stream && q.include_usage);
    openai_request_free(&q);

    assert_int_equal(
        parse(OPENAI_COMPLETIONS, "{\"prompt\": [[1, 2, 3]], \"stop\": [\"a\", \"b\"]}", &q, &err),
        0);
    assert_null(q.request.prompt);
    assert_int_equal(q.request.n_prompt_ids, 3);
    assert_int_equal(q.request.prompt_ids[2], 3);
    assert_int_equal(q.request.n_stop, 2);
    assert_int_equal(q.request.max_tokens, 16); /* OpenAI's default for completions */
    assert_false(q.stream);
    openai_request_free(&q);
}

static void test_chat(void **state) {
    (void)state;
    openai_request q;
    openai_error err;
    assert_int_equal(parse(OPENAI_CHAT,
                           "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
                           "\"text\", \"text\": \"A\"}, {\"type\": \"text\", \"text\": \"B\"}]}], "
                           "\"max_completion_tokens\": 3}",
                           &q, &err),
                     0);
    assert_string_equal(q.request.prompt,
                        "<|im_start|>user\nAB<|im_end|>\n<|im_start|>assistant\n");
    assert_int_equal(q.request.max_tokens, 3);
    assert_true(q.max_tokens_given);
    assert_int_equal(q.request.n_stop_ids, 1);
    assert_int_equal(q.request.stop_ids[0], 2);
    openai_request_free(&q);
}

static void expect_bad(openai_endpoint ep, const char *body, int status, const char *param,
                       const char *fragment) {
    openai_request q;
    openai_error err;
    int rc = parse(ep, body, &q, &err);
    openai_request_free(&q);
    if (rc == 0) fail_msg("accepted: %s", body);
    assert_int_equal(err.http_status, status);
    assert_string_equal(err.param, param);
    if (!strstr(err.message, fragment))
        fail_msg("%s: message '%s' lacks '%s'", body, err.message, fragment);
}

static void test_bad_input(void **state) {
    (void)state;
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\"", 400, "", "invalid JSON");
    expect_bad(OPENAI_COMPLETIONS, "[1, 2]", 400, "", "JSON object");
    expect_bad(OPENAI_COMPLETIONS, "{}", 400, "prompt", "required");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": 5}", 400, "prompt", "a string");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": [\"a\", \"b\"]}", 400, "prompt", "one per");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": [1, \"a\"]}", 400, "prompt", "prompt[1]");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"max_tokens\": \"8\"}", 400, "max_tokens",
               "integer");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"max_tokens\": 1.5}", 400, "max_tokens",
               "integer");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"temperature\": \"hot\"}", 400,
               "temperature", "number");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"stream\": 1}", 400, "stream", "true or");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"stop\": [1]}", 400, "stop", "string");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"n\": 2}", 400, "n", "only 1");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": 2}", 400, "logprobs",
               "not supported");
    expect_bad(OPENAI_COMPLETIONS, "{\"prompt\": \"x\", \"model\": 3}", 400, "model", "string");
    expect_bad(OPENAI_CHAT, "{\"messages\": []}", 400, "messages", "empty");
    expect_bad(OPENAI_CHAT, "{\"messages\": \"hi\"}", 400, "messages", "array");
    expect_bad(OPENAI_CHAT, "{\"messages\": [{\"content\": \"hi\"}]}", 400, "messages[0].role",
               "string");
    expect_bad(OPENAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": 3}]}", 400,
               "messages[0].content", "string");
    expect_bad(OPENAI_CHAT,
               "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
               "\"logprobs\": true}",
               400, "logprobs", "not supported");

    openai_request q;
    openai_error err;
    chat_template none = {0};
    const char *body = "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}";
    assert_int_equal(openai_request_parse(OPENAI_CHAT, body, strlen(body), &none, -1, &q, &err),
                     -1);
    openai_request_free(&q);
    assert_string_equal(err.param, "messages");
    assert_non_null(strstr(err.message, "chat template"));
}

static void test_engine_errors(void **state) {
    (void)state;
    openai_error err;
    openai_error_from_engine(OPENAI_COMPLETIONS, DS_EINVAL, "top_p = 1.5: must be in (0, 1]", &err);
    assert_int_equal(err.http_status, 400);
    assert_string_equal(err.param, "top_p");
    openai_error_from_engine(OPENAI_CHAT, DS_EINVAL, "prompt: empty", &err);
    assert_string_equal(err.param, "messages");
    openai_error_from_engine(OPENAI_COMPLETIONS, DS_ERANGE,
                             "prompt (5 tokens) + max_tokens (9000) exceed the context", &err);
    assert_string_equal(err.param, "max_tokens");
    openai_error_from_engine(OPENAI_COMPLETIONS, DS_EBUSY, "3 requests already waiting", &err);
    assert_int_equal(err.http_status, 429);
    assert_string_equal(err.param, "");
    openai_error_from_engine(OPENAI_COMPLETIONS, DS_EUNAVAILABLE, "server is shutting down", &err);
    assert_int_equal(err.http_status, 503);
    char *json = openai_error_json(&err);
    cJSON *root = cJSON_Parse(json);
    const cJSON *e = cJSON_GetObjectItem(root, "error");
    assert_string_equal(cJSON_GetObjectItem(e, "message")->valuestring, "server is shutting down");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(e, "param")));
    cJSON_Delete(root);
    free(json);
}

static void test_responses(void **state) {
    (void)state;
    openai_request q;
    openai_error err;
    assert_int_equal(
        parse(OPENAI_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", &q, &err),
        0);
    openai_response_meta meta = {.id = "chatcmpl-1", .model = "m", .created = 1};
    serving_output out = {.finish = SERVING_STOP, .prompt_tokens = 4, .completion_tokens = 2};
    char *json = openai_response_json(&q, &meta, "Hi!", 3, &out);
    cJSON *root = cJSON_Parse(json);
    const cJSON *choice = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    assert_string_equal(cJSON_GetObjectItem(root, "object")->valuestring, "chat.completion");
    assert_string_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(choice, "message"), "content")->valuestring, "Hi!");
    assert_string_equal(cJSON_GetObjectItem(choice, "finish_reason")->valuestring, "stop");
    assert_int_equal(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "usage"), "total_tokens")->valueint, 6);
    cJSON_Delete(root);
    free(json);
    serving_output chunk = {.text = "a", .text_len = 1};
    json = openai_chunk_json(&q, &meta, &chunk, 1);
    root = cJSON_Parse(json);
    choice = cJSON_GetArrayItem(cJSON_GetObjectItem(root, "choices"), 0);
    const cJSON *delta = cJSON_GetObjectItem(choice, "delta");
    assert_string_equal(cJSON_GetObjectItem(delta, "role")->valuestring, "assistant");
    assert_string_equal(cJSON_GetObjectItem(delta, "content")->valuestring, "a");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(choice, "finish_reason")));
    cJSON_Delete(root);
    free(json);
    openai_request_free(&q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),    cmocka_unit_test(test_chat),
        cmocka_unit_test(test_bad_input), cmocka_unit_test(test_engine_errors),
        cmocka_unit_test(test_responses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
