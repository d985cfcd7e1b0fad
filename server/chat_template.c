/* server/chat_template.c — ChatML and Llama-3 written out by hand. Recognising a model's Jinja
 * template is by its markers; SmolLM2's adds a system message when the chat has none, which is
 * read from the template's text so the prompt matches what HF's apply_chat_template renders. */
#include "server/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

const char *chat_template_name(chat_template_kind kind) {
    switch (kind) {
    case CHAT_TEMPLATE_CHATML: return "chatml";
    case CHAT_TEMPLATE_LLAMA3: return "llama3";
    case CHAT_TEMPLATE_NONE: break;
    }
    return "none";
}

ds_status chat_template_by_name(const char *name, chat_template *out, char *msg, size_t msg_len) {
    memset(out, 0, sizeof *out);
    if (!strcmp(name, "chatml"))
        out->kind = CHAT_TEMPLATE_CHATML;
    else if (!strcmp(name, "llama3"))
        out->kind = CHAT_TEMPLATE_LLAMA3;
    else
        return ds_fail(msg, msg_len, DS_EINVAL, "chat_template = '%s': expected chatml or llama3",
                       name);
    return DS_OK;
}

/* ChatML templates that add a system message when messages[0] is not one write it as the literal
 * '<|im_start|>system\n...<|im_end|>' inside a `!= 'system'` branch. */
static void read_default_system(const char *jinja, chat_template *out) {
    static const char open[] = "<|im_start|>system\n";
    if (!strstr(jinja, "!= 'system'")) return;
    const char *start = strstr(jinja, open);
    if (!start) return;
    start += strlen(open);
    const char *end = strstr(start, "<|im_end|>");
    size_t len = end ? (size_t)(end - start) : 0;
    if (len == 0 || len >= sizeof out->default_system || memchr(start, '{', len)) return;
    memcpy(out->default_system, start, len);
    out->default_system[len] = '\0';
}

void chat_template_detect(const char *jinja, chat_template *out) {
    memset(out, 0, sizeof *out);
    if (jinja == NULL) return;
    if (strstr(jinja, "<|im_start|>")) {
        out->kind = CHAT_TEMPLATE_CHATML;
        read_default_system(jinja, out);
    } else if (strstr(jinja, "<|start_header_id|>")) {
        out->kind = CHAT_TEMPLATE_LLAMA3;
    }
}

const char *chat_template_end_of_turn(const chat_template *t) {
    return t->kind == CHAT_TEMPLATE_LLAMA3 ? "<|eot_id|>" : "<|im_end|>";
}

static void write_turn(FILE *f, chat_template_kind kind, const char *role, const char *content) {
    if (kind == CHAT_TEMPLATE_LLAMA3)
        fprintf(f, "<|start_header_id|>%s<|end_header_id|>\n\n%s<|eot_id|>", role, content);
    else
        fprintf(f, "<|im_start|>%s\n%s<|im_end|>\n", role, content);
}

char *chat_template_render(const chat_template *t, const chat_message *messages, int n_messages) {
    DS_ASSERT(t->kind != CHAT_TEMPLATE_NONE);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    DS_ASSERT(f != NULL);
    if (t->default_system[0] && (n_messages == 0 || strcmp(messages[0].role, "system")))
        write_turn(f, t->kind, "system", t->default_system);
    for (int i = 0; i < n_messages; i++)
        write_turn(f, t->kind, messages[i].role, messages[i].content);
    if (t->kind == CHAT_TEMPLATE_LLAMA3)
        fputs("<|start_header_id|>assistant<|end_header_id|>\n\n", f);
    else
        fputs("<|im_start|>assistant\n", f);
    int rc = fclose(f);
    DS_ASSERT(rc == 0);
    return text;
}
