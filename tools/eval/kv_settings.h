/* tools/eval/kv_settings.h — what decoserve-eval's ppl and greedy modes share on the command
 * line: the --configs list of KV settings, written METHOD:BITS (the same codec on keys and
 * values), KEYMETHOD/VALUEMETHOD:BITS, or fp16, and the flags around it. */
#ifndef DS_TOOLS_EVAL_KV_SETTINGS_H
#define DS_TOOLS_EVAL_KV_SETTINGS_H

#include "kernels/qmatmul.h"
#include "kvcache/decoquant.h"
#include "tools/eval/kv_forward.h"

enum { KV_SETTINGS_MAX = 32 };

typedef struct kv_setting {
    dq_method key_method, value_method;
    int bits; /* 16 for fp16 */
    char name[40];
} kv_setting;

/* Parses a comma list into out[KV_SETTINGS_MAX]; returns the count, or -1 after printing why to
 * stderr prefixed by prog (bad method or bits, too many items). */
int kv_settings_parse(const char *prog, const char *list, kv_setting *out);

/* base with the setting's methods and bits on keys and values (group_size as given). */
void kv_setting_codecs(const kv_setting *s, const dq_config *base, int group_size, dq_config *key,
                       dq_config *value);

/* --model, --configs, --json, --block-size, --group-size, --weights, --kv-read. */
typedef struct kv_run_flags {
    const char *model_path, *configs, *json_path;
    int block_size, group_size; /* 32, 64 */
    qm_type weights;            /* q4 */
    kv_read read;               /* auto */
} kv_run_flags;

kv_run_flags kv_run_flags_defaults(const char *configs);

/* 1: flag is one of these and its value is taken; 0: not one of these; -1: a bad value (said on
 * stderr, prefixed by prog). */
int kv_run_flag(const char *prog, const char *flag, const char *value, kv_run_flags *f);

#endif
