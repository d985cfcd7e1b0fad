/* server/chat_template.h — turns an OpenAI chat (a list of role + content messages) into the one
 * prompt string the model was trained on, for the template families decoserve loads: ChatML
 * (SmolLM2, Qwen) and Llama-3. The family is picked by name (--chat-template) or recognised in the
 * model's own Jinja template (GGUF tokenizer.chat_template, HF tokenizer_config.json); decoserve
 * does not run Jinja. Pure data: no engine, no JSON. */
#ifndef DS_SERVER_CHAT_TEMPLATE_H
#define DS_SERVER_CHAT_TEMPLATE_H

#include <stddef.h>

#include "common/status.h"

typedef enum chat_template_kind {
    CHAT_TEMPLATE_NONE = 0, /* the model's template is not one we know, and none was named */
    CHAT_TEMPLATE_CHATML,   /* <|im_start|>role\ncontent<|im_end|>\n ... <|im_start|>assistant\n */
    CHAT_TEMPLATE_LLAMA3,   /* <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|> ... */
} chat_template_kind;

typedef struct chat_template {
    chat_template_kind kind;
    /* The system message the model's template inserts when a chat has none (SmolLM2's "You are a
     * helpful AI assistant named SmolLM, ..."); "" for none. */
    char default_system[512];
} chat_template;

typedef struct chat_message {
    const char *role; /* "system", "user", "assistant", ... (written as given) */
    const char *content;
} chat_message;

/* "chatml" or "llama3"; DS_EINVAL naming the value otherwise. */
ds_status chat_template_by_name(const char *name, chat_template *out, char *msg, size_t msg_len);

/* Recognises the family in a model's Jinja template (NULL: the model has none); kind NONE when
 * it is neither family. */
void chat_template_detect(const char *jinja, chat_template *out);

const char *chat_template_name(chat_template_kind kind); /* "chatml", "llama3", "none" */

/* The prompt for messages followed by the opening of the assistant's turn, malloc'ed
 * (NUL-terminated; the caller frees). The tokenizer adds BOS where the model wants one. */
char *chat_template_render(const chat_template *t, const chat_message *messages, int n_messages);

/* The special token that ends a turn ("<|im_end|>", "<|eot_id|>"): generation stops there. */
const char *chat_template_end_of_turn(const chat_template *t);

#endif
