/* engine/tokenizer/bpe_json.c — the Hugging Face tokenizer.json loader (bpe.h): model.vocab,
 * added_tokens and model.merges onto a bpe_spec, the pre-tokenizer recognised from its
 * description, and bos/eos/add_bos from the tokenizer_config.json beside it. */
#include "engine/tokenizer/bpe.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "common/file.h"
#include "engine/tokenizer/bpe_internal.h"

#define JSON_MAX_BYTES (256u << 20) /* tokenizer.json and tokenizer_config.json */

static const char LLAMA3_SPLIT[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static bool json_flag(const cJSON *obj, const char *key, bool dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static bool json_type_is(const cJSON *obj, const char *type) {
    const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(obj, "type"));
    return t && strcmp(t, type) == 0;
}

/* Names the pre-tokenizer kind a tokenizer.json describes, or NULL if it is not one we do. */
static const char *json_pre_name(const cJSON *pre) {
    if (json_type_is(pre, "ByteLevel"))
        return json_flag(pre, "use_regex", true) && !json_flag(pre, "add_prefix_space", false)
                   ? "gpt2"
                   : NULL;
    if (!json_type_is(pre, "Sequence")) return NULL;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
    if (cJSON_GetArraySize(list) != 2) return NULL;
    const cJSON *first = cJSON_GetArrayItem(list, 0), *second = cJSON_GetArrayItem(list, 1);
    if (!json_type_is(second, "ByteLevel") || json_flag(second, "add_prefix_space", false))
        return NULL;
    bool byte_regex = json_flag(second, "use_regex", true);
    if (json_type_is(first, "Digits") && json_flag(first, "individual_digits", false) && byte_regex)
        return "smollm";
    if (json_type_is(first, "Split") && !byte_regex) {
        const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(first, "pattern");
        const char *regex =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(pattern, "Regex"));
        const char *behavior =
            cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(first, "behavior"));
        if (regex && strcmp(regex, LLAMA3_SPLIT) == 0 && behavior &&
            strcmp(behavior, "Isolated") == 0 && !json_flag(first, "invert", false))
            return "llama3";
    }
    return NULL;
}

/* "<s>" or {"content": "<s>", ...} in tokenizer_config.json. */
static const char *json_token_name(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(v, "content"));
}

static int32_t lookup_name(const bpe_tokenizer *tok, const char *name) {
    return name ? bpe_token_id(tok, name, strlen(name)) : -1;
}

/* tokenizer_config.json beside path, or *out NULL when there is none; one that is there but
 * unreadable or malformed is an error naming it. */
static ds_status read_config(const char *path, cJSON **out, char *msg, size_t msg_len) {
    *out = NULL;
    const char *slash = strrchr(path, '/');
    size_t dir_len = slash ? (size_t)(slash - path + 1) : 0;
    static const char name[] = "tokenizer_config.json";
    char *config_path = malloc(dir_len + sizeof name);
    if (!config_path) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: out of memory", path);
    memcpy(config_path, path, dir_len);
    memcpy(config_path + dir_len, name, sizeof name);
    ds_status st = ds_read_json(config_path, JSON_MAX_BYTES, out, msg, msg_len);
    if (st == DS_ENOTFOUND) {
        st = DS_OK;
        if (msg && msg_len) msg[0] = '\0';
    } else if (st == DS_OK && !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        st = ds_fail(msg, msg_len, DS_ECORRUPT, "%s: not a JSON object", config_path);
    }
    free(config_path);
    return st;
}

/* unk from model.unk_token; bos/eos/add_bos from config (tokenizer_config.json, may be NULL),
 * else from a TemplateProcessing post-processor. */
static void set_special_ids(bpe_tokenizer *tok, const cJSON *root, const cJSON *config) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    int32_t unk = lookup_name(
        tok, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model, "unk_token")));
    int32_t bos = -1, eos = -1;
    bool add_bos = false;
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    if (json_type_is(post, "TemplateProcessing")) {
        const cJSON *first =
            cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(post, "single"), 0);
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
        int32_t id =
            lookup_name(tok, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(sp, "id")));
        if (id >= 0) {
            bos = id;
            add_bos = true;
        }
    }
    if (config) {
        int32_t config_bos = lookup_name(
            tok, json_token_name(cJSON_GetObjectItemCaseSensitive(config, "bos_token")));
        int32_t config_eos = lookup_name(
            tok, json_token_name(cJSON_GetObjectItemCaseSensitive(config, "eos_token")));
        if (config_bos >= 0) bos = config_bos;
        if (config_eos >= 0) eos = config_eos;
        const cJSON *add = cJSON_GetObjectItemCaseSensitive(config, "add_bos_token");
        if (cJSON_IsBool(add)) add_bos = cJSON_IsTrue(add) && bos >= 0;
    }
    bpe_set_special_ids(tok, bos, eos, unk, add_bos, unk >= 0);
}

static ds_status load_json(const char *path, const cJSON *root, const cJSON *config,
                           bpe_tokenizer **out, char *msg, size_t msg_len, const char ***tokens_out,
                           int32_t **types_out, bpe_merge_text **merges_out) {
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!json_type_is(model, "BPE"))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: model.type: expected \"BPE\"", path);
    if (json_flag(model, "byte_fallback", false))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: model.byte_fallback: SentencePiece-style BPE is not byte-level", path);
    const cJSON *normalizer = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (normalizer && !cJSON_IsNull(normalizer))
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED, "%s: normalizer: expected null", path);
    const char *pre = json_pre_name(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"));
    if (!pre)
        return ds_fail(msg, msg_len, DS_EUNSUPPORTED,
                       "%s: pre_tokenizer: expected ByteLevel, Sequence[Digits, ByteLevel] or "
                       "Sequence[Split(llama3), ByteLevel]",
                       path);

    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges))
        return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: model.vocab / model.merges missing", path);
    int64_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > 1e8)
            return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: model.vocab[\"%s\"]: bad id", path,
                           e->string);
        if (e->valueint + 1 > n) n = e->valueint + 1;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > 1e8 ||
            !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "content")))
            return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: added_tokens: bad entry", path);
        if (id->valueint + 1 > n) n = id->valueint + 1;
    }
    int n_merges = cJSON_GetArraySize(merges);
    const char **tokens = calloc((size_t)n + 1, sizeof *tokens);
    int32_t *types = calloc((size_t)n + 1, sizeof *types);
    bpe_merge_text *mt = calloc((size_t)n_merges + 1, sizeof *mt);
    *tokens_out = tokens;
    *types_out = types;
    *merges_out = mt;
    if (!tokens || !types || !mt) return ds_fail(msg, msg_len, DS_ENOMEM, "%s: vocab", path);
    cJSON_ArrayForEach(e, vocab) {
        tokens[e->valueint] = e->string;
        types[e->valueint] = BPE_TOKEN_NORMAL;
    }
    cJSON_ArrayForEach(e, added) {
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        tokens[id] = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        types[id] = json_flag(e, "special", false) ? BPE_TOKEN_CONTROL : BPE_TOKEN_USER_DEFINED;
    }
    for (int64_t i = 0; i < n; i++) {
        if (!tokens[i])
            return ds_fail(msg, msg_len, DS_ECORRUPT, "%s: id %lld has no token", path,
                           (long long)i);
    }
    int r = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *l = NULL, *rt = NULL;
        size_t ll = 0, rl = 0;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring;
            size_t len = strlen(s);
            const char *space = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
            if (space) l = s, ll = (size_t)(space - s), rt = space + 1, rl = len - ll - 1;
        } else if (cJSON_GetArraySize(e) == 2 && cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            l = cJSON_GetArrayItem(e, 0)->valuestring;
            rt = cJSON_GetArrayItem(e, 1)->valuestring;
            ll = strlen(l);
            rl = strlen(rt);
        }
        if (!l)
            return ds_fail(msg, msg_len, DS_ECORRUPT,
                           "%s: model.merges[%d]: expected \"a b\" or [\"a\", \"b\"]", path, r);
        mt[r++] = (bpe_merge_text){l, rt, ll, rl};
    }

    bpe_spec spec = {
        .n_tokens = (int32_t)n,
        .tokens = tokens,
        .token_types = types,
        .n_merges = n_merges,
        .pre = pre,
        .bos_id = -1,
        .eos_id = -1,
        .unk_id = -1,
        .ignore_merges = json_flag(model, "ignore_merges", false),
    };
    ds_status st = bpe_create_from_pairs(&spec, mt, out, msg, msg_len);
    if (st != DS_OK) return st;
    set_special_ids(*out, root, config);
    return DS_OK;
}

ds_status bpe_load_tokenizer_json(const char *path, bpe_tokenizer **out, char *msg,
                                  size_t msg_len) {
    *out = NULL;
    cJSON *root, *config = NULL;
    ds_status st = ds_read_json(path, JSON_MAX_BYTES, &root, msg, msg_len);
    if (st != DS_OK) return st;
    const char **tokens = NULL;
    int32_t *types = NULL;
    bpe_merge_text *merges = NULL;
    st = read_config(path, &config, msg, msg_len);
    if (st == DS_OK)
        st = load_json(path, root, config, out, msg, msg_len, &tokens, &types, &merges);
    free(tokens);
    free(types);
    free(merges);
    cJSON_Delete(config);
    cJSON_Delete(root);
    return st;
}
