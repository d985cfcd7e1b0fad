/* chat_template_test — ChatML and Llama-3 prompts as HF's apply_chat_template renders them
 * (add_generation_prompt), SmolLM2's default system message, recognition from Jinja text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/chat_template.h"

/* SmolLM2-135M-Instruct's tokenizer.chat_template. */
static const char SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|im_start|>assistant\n' }}{% endif %}";

static void test_smollm2_default_system(void **state) {
    (void)state;
    chat_template t;
    chat_template_detect(SMOLLM2, &t);
    assert_int_equal(t.kind, CHAT_TEMPLATE_CHATML);
    chat_message user = {"user", "Hi"};
    char *p = chat_template_render(&t, &user, 1);
    assert_string_equal(p, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
                           "trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                           "<|im_start|>assistant\n");
    free(p);
    chat_message two[] = {{"system", "Be brief."}, {"user", "Hi"}};
    p = chat_template_render(&t, two, 2);
    assert_string_equal(p, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi"
                           "<|im_end|>\n<|im_start|>assistant\n");
    free(p);
    assert_string_equal(chat_template_end_of_turn(&t), "<|im_end|>");
}

static void test_llama3(void **state) {
    (void)state;
    chat_template t;
    char msg[128];
    assert_int_equal(chat_template_by_name("llama3", &t, msg, sizeof msg), DS_OK);
    chat_message m[] = {{"system", "S"}, {"user", "U"}};
    char *p = chat_template_render(&t, m, 2);
    assert_string_equal(p, "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
                           "<|start_header_id|>user<|end_header_id|>\n\nU<|eot_id|>"
                           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    free(p);
    assert_string_equal(chat_template_end_of_turn(&t), "<|eot_id|>");
    chat_template_detect("{{ '<|start_header_id|>' + message['role'] }}", &t);
    assert_int_equal(t.kind, CHAT_TEMPLATE_LLAMA3);
    assert_string_equal(t.default_system, "");
}

static void test_unknown(void **state) {
    (void)state;
    chat_template t;
    char msg[128];
    assert_int_equal(chat_template_by_name("vicuna", &t, msg, sizeof msg), DS_EINVAL);
    assert_non_null(strstr(msg, "vicuna"));
    chat_template_detect("[INST] {{ message['content'] }} [/INST]", &t);
    assert_int_equal(t.kind, CHAT_TEMPLATE_NONE);
    chat_template_detect(NULL, &t);
    assert_int_equal(t.kind, CHAT_TEMPLATE_NONE);
    assert_string_equal(chat_template_name(CHAT_TEMPLATE_CHATML), "chatml");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_smollm2_default_system),
        cmocka_unit_test(test_llama3),
        cmocka_unit_test(test_unknown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
