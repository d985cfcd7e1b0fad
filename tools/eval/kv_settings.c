/* tools/eval/kv_settings.c — the --configs list (see kv_settings.h). */
#include "tools/eval/kv_settings.h"

#include <stdio.h>
#include <string.h>

#include "common/cli.h"
#include "engine/llama.h"

static int parse_one(const char *prog, const char *item, kv_setting *c) {
    char buf[64], msg[128];
    snprintf(buf, sizeof buf, "%s", item);
    snprintf(c->name, sizeof c->name, "%s", item);
    if (!strcmp(buf, "fp16")) {
        c->key_method = c->value_method = DQ_FP16;
        c->bits = 16;
        return 0;
    }
    char *colon = strchr(buf, ':');
    if (!colon || cli_int(prog, "--configs bits", colon + 1, 2, 8, &c->bits) < 0 ||
        (c->bits != 2 && c->bits != 3 && c->bits != 4 && c->bits != 8)) {
        fprintf(stderr, "%s: --configs: '%s': expected METHOD:BITS with BITS 8, 4, 3 or 2\n", prog,
                item);
        return -1;
    }
    *colon = 0;
    char *slash = strchr(buf, '/');
    if (slash) *slash = 0;
    if (dq_method_from_name(buf, &c->key_method, msg, sizeof msg) != DS_OK ||
        dq_method_from_name(slash ? slash + 1 : buf, &c->value_method, msg, sizeof msg) != DS_OK) {
        fprintf(stderr, "%s: --configs: %s\n", prog, msg);
        return -1;
    }
    return 0;
}

int kv_settings_parse(const char *prog, const char *list, kv_setting *out) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", list);
    int n = 0;
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == KV_SETTINGS_MAX) {
            fprintf(stderr, "%s: --configs: at most %d\n", prog, KV_SETTINGS_MAX);
            return -1;
        }
        if (parse_one(prog, tok, &out[n++]) < 0) return -1;
    }
    if (!n) fprintf(stderr, "%s: --configs: empty list\n", prog);
    return n ? n : -1;
}

void kv_setting_codecs(const kv_setting *s, const dq_config *base, int group_size, dq_config *key,
                       dq_config *value) {
    *key = *value = *base;
    key->method = s->key_method, value->method = s->value_method;
    key->bits = value->bits = s->bits;
    key->group_size = value->group_size = group_size;
}

kv_run_flags kv_run_flags_defaults(const char *configs) {
    return (kv_run_flags){.configs = configs,
                          .block_size = 32,
                          .group_size = 64,
                          .weights = QM_Q4_0,
                          .read = KV_READ_AUTO};
}

int kv_run_flag(const char *prog, const char *flag, const char *value, kv_run_flags *f) {
    char msg[128];
    ds_status st = DS_OK;
    if (!strcmp(flag, "--model"))
        f->model_path = value;
    else if (!strcmp(flag, "--configs"))
        f->configs = value;
    else if (!strcmp(flag, "--json"))
        f->json_path = value;
    else if (!strcmp(flag, "--block-size"))
        return cli_int(prog, flag, value, 1, 1024, &f->block_size) < 0 ? -1 : 1;
    else if (!strcmp(flag, "--group-size"))
        return cli_int(prog, flag, value, 1, 1 << 16, &f->group_size) < 0 ? -1 : 1;
    else if (!strcmp(flag, "--weights"))
        st = llama_weights_from_name(value, &f->weights, msg, sizeof msg);
    else if (!strcmp(flag, "--kv-read"))
        st = kv_read_from_name(value, &f->read, msg, sizeof msg);
    else
        return 0;
    if (st == DS_OK) return 1;
    fprintf(stderr, "%s: %s\n", prog, msg);
    return -1;
}
