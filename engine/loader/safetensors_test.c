/* safetensors_test — the safetensors reader and the HF Llama loader against a checkpoint written
 * by the real `safetensors` library (tests/fixtures/tiny_hf, checksums from an independent
 * reader), plus malformed files built here: truncations, bad headers, bad configs, byte flips. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/file.h"
#include "engine/loader/llama_hf.h"
#include "engine/loader/model.h"
#include "engine/loader/safetensors.h"

#define PATH_LEN       4096
#define READ_MAX_BYTES (64u << 20)

static char fixture_dir[PATH_LEN];
static char tmp_root[PATH_LEN];

/* The committed fixture, split into its parsed header and its data region. */
static uint8_t *fx_bytes;
static size_t fx_len;
static size_t fx_data_off;
static cJSON *fx_header;
static char *fx_config;

#define assert_msg_has(msg, needle)                                                                \
    do {                                                                                           \
        if (!strstr((msg), (needle))) fail_msg("message \"%s\" lacks \"%s\"", (msg), (needle));    \
    } while (0)

static uint8_t *read_all(const char *path, size_t *len) {
    char *bytes, msg[512];
    if (ds_read_file(path, READ_MAX_BYTES, &bytes, len, msg, sizeof msg)) fail_msg("%s", msg);
    return (uint8_t *)bytes;
}

static void write_all(const char *path, const void *data, size_t len) {
    FILE *fp = fopen(path, "wb");
    if (!fp) fail_msg("cannot create %s", path);
    if (len) assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* tmp_root/name, created as a directory when mkdir_it. */
static const char *tmp_path(char *buf, const char *name, int mkdir_it) {
    assert_true(snprintf(buf, PATH_LEN, "%s/%s", tmp_root, name) < PATH_LEN);
    if (mkdir_it) mkdir(buf, 0755);
    return buf;
}

static void join(char *buf, const char *dir, const char *name) {
    assert_true(snprintf(buf, PATH_LEN, "%s/%s", dir, name) < PATH_LEN);
}

/* A safetensors file from header text (length field = header_len) and raw data. */
static void write_raw(const char *path, const char *header, uint64_t header_len, const void *data,
                      size_t data_len) {
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + data_len + 1);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)(header_len >> (8 * i));
    memcpy(buf + 8, header, hl);
    if (data_len) memcpy(buf + 8 + hl, data, data_len);
    write_all(path, buf, 8 + hl + data_len);
    free(buf);
}

static void write_st(const char *path, const cJSON *header, const void *data, size_t data_len) {
    char *text = cJSON_PrintUnformatted(header);
    assert_non_null(text);
    write_raw(path, text, strlen(text), data, data_len);
    free(text);
}

/* dir/name with the fixture's config.json (or config) and the given model.safetensors. */
static const char *make_model_dir(char *dir, const char *name, const cJSON *header,
                                  const void *data, size_t data_len, const char *config) {
    char path[PATH_LEN];
    tmp_path(dir, name, 1);
    join(path, dir, "config.json");
    write_all(path, config ? config : fx_config, strlen(config ? config : fx_config));
    join(path, dir, "model.safetensors");
    write_st(path, header, data, data_len);
    return dir;
}

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (!d) {
        unlink(path);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char child[PATH_LEN];
        join(child, path, e->d_name);
        remove_tree(child);
    }
    closedir(d);
    rmdir(path);
}

static int setup(void **state) {
    (void)state;
    const char *srcdir = getenv("TEST_SRCDIR");
    const char *ws = getenv("TEST_WORKSPACE");
    if (srcdir && *srcdir)
        snprintf(fixture_dir, sizeof fixture_dir, "%s/%s/tests/fixtures/tiny_hf", srcdir,
                 ws ? ws : "decoserve");
    else
        snprintf(fixture_dir, sizeof fixture_dir, "tests/fixtures/tiny_hf");
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/safetensors_test.XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_root)) return -1;

    char path[PATH_LEN];
    size_t config_len;
    join(path, fixture_dir, "config.json");
    fx_config = (char *)read_all(path, &config_len);
    join(path, fixture_dir, "model.safetensors");
    fx_bytes = read_all(path, &fx_len);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = hl << 8 | fx_bytes[i];
    fx_data_off = 8 + (size_t)hl;
    fx_header = cJSON_ParseWithLength((const char *)fx_bytes + 8, (size_t)hl);
    return fx_header ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    remove_tree(tmp_root);
    cJSON_Delete(fx_header);
    free(fx_bytes);
    free(fx_config);
    return 0;
}

/* ---- the committed fixture against the independent reader's checksums ---- */

typedef void (*expected_fn)(const char *name, const char *dtype, const char *shape, double sum,
                            double sumsq, char *picks, void *ctx);

/* Calls fn for each line of expected.txt; returns the number of lines. */
static int for_each_expected(expected_fn fn, void *ctx) {
    char path[PATH_LEN];
    size_t len;
    join(path, fixture_dir, "expected.txt");
    char *text = (char *)read_all(path, &len);
    int n = 0;
    char *save_line;
    for (char *line = strtok_r(text, "\n", &save_line); line;
         line = strtok_r(NULL, "\n", &save_line)) {
        if (line[0] == '#') continue;
        char *save, *name = strtok_r(line, " ", &save), *dtype = strtok_r(NULL, " ", &save),
                    *shape = strtok_r(NULL, " ", &save), *sum = strtok_r(NULL, " ", &save),
                    *sumsq = strtok_r(NULL, " ", &save);
        assert_non_null(sumsq);
        fn(name, dtype, shape, strtod(sum, NULL), strtod(sumsq, NULL), save, ctx);
        n++;
    }
    free(text);
    return n;
}

static void check_values(const char *name, const float *x, size_t n, double sum, double sumsq,
                         char *picks) {
    double s = 0, s2 = 0, sabs = 0;
    for (size_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
        sabs += fabs(x[i]);
    }
    if (fabs(s - sum) > 1e-9 * (sabs + 1.0) || fabs(s2 - sumsq) > 1e-12 * sumsq)
        fail_msg("%s: sum %.17g / %.17g, expected %.17g / %.17g", name, s, s2, sum, sumsq);
    char *save;
    for (char *p = strtok_r(picks, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
        size_t idx = strtoul(p, NULL, 10);
        double want = strtod(strchr(p, '=') + 1, NULL);
        assert_true(idx < n);
        if ((double)x[idx] != want || !signbit(x[idx]) != !signbit(want))
            fail_msg("%s[%zu] = %.17g, expected %.17g", name, idx, (double)x[idx], want);
    }
}

static void check_file_tensor(const char *name, const char *dtype, const char *shape, double sum,
                              double sumsq, char *picks, void *ctx) {
    const safetensors_tensor *t = safetensors_find(ctx, name);
    if (!t) fail_msg("tensor %s missing", name);
    assert_string_equal(safetensors_dtype_name(t->dtype), dtype);
    char got[64] = "";
    for (int d = 0; d < t->n_dims; d++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", d ? "x" : "",
                 (long long)t->shape[d]);
    assert_string_equal(got, shape);
    float *x = malloc(t->n_elements * sizeof *x);
    char msg[256];
    assert_int_equal(safetensors_to_f32(t, x, msg, sizeof msg), DS_OK);
    check_values(name, x, t->n_elements, sum, sumsq, picks);
    free(x);
}

static void test_fixture_matches_reference(void **state) {
    (void)state;
    char path[PATH_LEN], msg[512];
    join(path, fixture_dir, "model.safetensors");
    safetensors_file *f;
    ds_status st = safetensors_open(path, &f, msg, sizeof msg);
    if (st != DS_OK) fail_msg("%s", msg);
    assert_int_equal(safetensors_n_tensors(f), 21);
    assert_int_equal(for_each_expected(check_file_tensor, f), 21);
    assert_string_equal(safetensors_metadata(f, "format"), "pt");
    assert_null(safetensors_metadata(f, "nope"));
    assert_null(safetensors_find(f, "model.layers.2.mlp.up_proj.weight"));
    for (size_t i = 1; i < safetensors_n_tensors(f); i++) /* name order */
        assert_true(
            strcmp(safetensors_tensor_at(f, i - 1)->name, safetensors_tensor_at(f, i)->name) < 0);
    safetensors_close(f);
}

/* The model field a HF tensor name should land in, mapped independently of llama_hf.c. */
static const float *model_tensor(const llama_model *m, const char *name, size_t *n) {
    const llama_config *c = &m->config;
    size_t d = (size_t)c->d_model, q = (size_t)c->n_heads * c->head_dim,
           kv = (size_t)c->n_kv_heads * c->head_dim, ff = (size_t)c->d_ff;
    if (!strcmp(name, "model.embed_tokens.weight")) return *n = c->vocab_size * d, m->tok_embd;
    if (!strcmp(name, "lm_head.weight")) return *n = c->vocab_size * d, m->output;
    if (!strcmp(name, "model.norm.weight")) return *n = d, m->output_norm;
    int l;
    char rest[64];
    assert_int_equal(sscanf(name, "model.layers.%d.%63s", &l, rest), 2);
    assert_true(l >= 0 && l < c->n_layers);
    const llama_layer *L = &m->layers[l];
    if (!strcmp(rest, "input_layernorm.weight")) return *n = d, L->attn_norm;
    if (!strcmp(rest, "post_attention_layernorm.weight")) return *n = d, L->ffn_norm;
    if (!strcmp(rest, "self_attn.q_proj.weight")) return *n = q * d, L->wq;
    if (!strcmp(rest, "self_attn.k_proj.weight")) return *n = kv * d, L->wk;
    if (!strcmp(rest, "self_attn.v_proj.weight")) return *n = kv * d, L->wv;
    if (!strcmp(rest, "self_attn.o_proj.weight")) return *n = d * q, L->wo;
    if (!strcmp(rest, "mlp.gate_proj.weight")) return *n = ff * d, L->w_gate;
    if (!strcmp(rest, "mlp.up_proj.weight")) return *n = ff * d, L->w_up;
    if (!strcmp(rest, "mlp.down_proj.weight")) return *n = d * ff, L->w_down;
    fail_msg("unexpected tensor %s", name);
    return NULL;
}

static void check_model_tensor(const char *name, const char *dtype, const char *shape, double sum,
                               double sumsq, char *picks, void *ctx) {
    (void)dtype;
    (void)shape;
    size_t n;
    const float *x = model_tensor(ctx, name, &n);
    check_values(name, x, n, sum, sumsq, picks);
}

static void load_ok(const char *dir, llama_model *m) {
    char msg[512];
    ds_status st = llama_model_load_hf(dir, m, msg, sizeof msg);
    if (st != DS_OK) fail_msg("load %s: %s", dir, msg);
}

static void test_load_hf_fixture(void **state) {
    (void)state;
    llama_model m;
    load_ok(fixture_dir, &m);
    const llama_config *c = &m.config;
    assert_string_equal(c->architecture, "llama");
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->d_model, 32);
    assert_int_equal(c->n_heads, 4);
    assert_int_equal(c->n_kv_heads, 2);
    assert_int_equal(c->head_dim, 8);
    assert_int_equal(c->d_ff, 64);
    assert_int_equal(c->vocab_size, 96);
    assert_int_equal(c->context_length, 256);
    assert_float_equal(c->rms_eps, 1e-5f, 0.0f);
    assert_float_equal(c->rope_theta, 500000.0f, 0.0f);
    assert_int_equal(c->rope_scaling, LLAMA_ROPE_LLAMA3);
    assert_float_equal(c->rope_factor, 8.0f, 0.0f);
    assert_float_equal(c->rope_low_freq_factor, 1.0f, 0.0f);
    assert_float_equal(c->rope_high_freq_factor, 4.0f, 0.0f);
    assert_int_equal(c->rope_original_context, 64);
    assert_int_equal(c->tied_embeddings, 0);
    assert_ptr_not_equal(m.output, m.tok_embd);
    assert_int_equal(for_each_expected(check_model_tensor, &m), 21);
    llama_model_free(&m);
}

/* ---- sharded checkpoints ---- */

/* Writes the fixture's tensors [lo, hi) (in header order) as a compact safetensors file and
 * adds them to weight_map under shard. */
static void write_shard(const char *dir, const char *shard, int lo, int hi, cJSON *weight_map) {
    cJSON *header = cJSON_CreateObject();
    uint8_t *data = malloc(fx_len);
    size_t pos = 0;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, fx_header) {
        if (!strcmp(e->string, "__metadata__")) continue;
        if (i >= lo && i < hi) {
            const cJSON *off = cJSON_GetObjectItem(e, "data_offsets");
            size_t b = (size_t)cJSON_GetArrayItem(off, 0)->valuedouble,
                   en = (size_t)cJSON_GetArrayItem(off, 1)->valuedouble;
            memcpy(data + pos, fx_bytes + fx_data_off + b, en - b);
            cJSON *t = cJSON_Duplicate(e, 1);
            double offs[2] = {(double)pos, (double)(pos + en - b)};
            cJSON_ReplaceItemInObject(t, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
            cJSON_AddItemToObject(header, e->string, t);
            cJSON_AddStringToObject(weight_map, e->string, shard);
            pos += en - b;
        }
        i++;
    }
    char path[PATH_LEN];
    join(path, dir, shard);
    write_st(path, header, data, pos);
    cJSON_Delete(header);
    free(data);
}

static void write_index(const char *dir, const cJSON *weight_map) {
    cJSON *index = cJSON_CreateObject();
    cJSON_AddItemToObject(cJSON_AddObjectToObject(index, "metadata"), "total_size",
                          cJSON_CreateNumber((double)(fx_len - fx_data_off)));
    cJSON_AddItemToObject(index, "weight_map", cJSON_Duplicate(weight_map, 1));
    char *text = cJSON_Print(index), path[PATH_LEN];
    join(path, dir, "model.safetensors.index.json");
    write_all(path, text, strlen(text));
    free(text);
    cJSON_Delete(index);
}

static void assert_models_equal(const llama_model *a, const llama_model *b) {
    assert_memory_equal(&a->config, &b->config, sizeof a->config);
    const cJSON *e;
    cJSON_ArrayForEach(e, fx_header) {
        if (!strcmp(e->string, "__metadata__")) continue;
        size_t na, nb;
        const float *xa = model_tensor(a, e->string, &na), *xb = model_tensor(b, e->string, &nb);
        assert_int_equal(na, nb);
        assert_memory_equal(xa, xb, na * sizeof(float));
    }
}

static void test_sharded_checkpoint(void **state) {
    (void)state;
    char dir[PATH_LEN], path[PATH_LEN], msg[512];
    tmp_path(dir, "sharded", 1);
    join(path, dir, "config.json");
    write_all(path, fx_config, strlen(fx_config));
    cJSON *weight_map = cJSON_CreateObject();
    write_shard(dir, "model-00001-of-00003.safetensors", 0, 7, weight_map);
    write_shard(dir, "model-00002-of-00003.safetensors", 7, 15, weight_map);
    write_shard(dir, "model-00003-of-00003.safetensors", 15, 100, weight_map);
    write_index(dir, weight_map);

    llama_model single, sharded;
    load_ok(fixture_dir, &single);
    load_ok(dir, &sharded);
    assert_models_equal(&single, &sharded);
    llama_model_free(&sharded);

    safetensors_checkpoint *ck;
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_OK);
    assert_msg_has(safetensors_checkpoint_path(ck), "model.safetensors.index.json");
    const safetensors_tensor *t = safetensors_checkpoint_find(ck, "model.norm.weight");
    assert_non_null(t);
    assert_msg_has(t->path, "-of-00003.safetensors");
    assert_null(safetensors_checkpoint_find(ck, "model.layers.9.mlp.up_proj.weight"));
    safetensors_checkpoint_close(ck);

    /* The index names a tensor its shard does not hold. */
    cJSON *bad = cJSON_Duplicate(weight_map, 1);
    cJSON_AddStringToObject(bad, "model.extra.weight", "model-00001-of-00003.safetensors");
    write_index(dir, bad);
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_ECORRUPT);
    assert_null(ck);
    assert_msg_has(msg, "model.safetensors.index.json");
    assert_msg_has(msg, "model.extra.weight");
    cJSON_Delete(bad);

    /* A shard file that does not exist. */
    bad = cJSON_Duplicate(weight_map, 1);
    cJSON_ReplaceItemInObject(bad, "model.norm.weight", cJSON_CreateString("model-missing.st"));
    write_index(dir, bad);
    llama_model m;
    assert_int_equal(llama_model_load_hf(dir, &m, msg, sizeof msg), DS_ENOTFOUND);
    assert_msg_has(msg, "model-missing.st");
    assert_null(m.layers);
    cJSON_Delete(bad);

    /* A shard outside the directory. */
    bad = cJSON_Duplicate(weight_map, 1);
    cJSON_ReplaceItemInObject(bad, "model.norm.weight", cJSON_CreateString("../x.safetensors"));
    write_index(dir, bad);
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_ECORRUPT);
    assert_msg_has(msg, "weight_map");
    assert_msg_has(msg, "model.norm.weight");
    cJSON_Delete(bad);

    /* Not JSON / no weight_map. */
    join(path, dir, "model.safetensors.index.json");
    write_all(path, "{\"weight_map\": [", strlen("{\"weight_map\": ["));
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_ECORRUPT);
    assert_msg_has(msg, "model.safetensors.index.json");
    assert_msg_has(msg, "invalid JSON at line 1, column 17");
    write_all(path, "{\"metadata\": {}}", strlen("{\"metadata\": {}}"));
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_ECORRUPT);
    assert_msg_has(msg, "weight_map");

    /* Neither file present. */
    tmp_path(dir, "empty", 1);
    assert_int_equal(safetensors_checkpoint_open(dir, &ck, msg, sizeof msg), DS_ENOTFOUND);
    assert_msg_has(msg, "model.safetensors");
    cJSON_Delete(weight_map);
    llama_model_free(&single);
}

/* ---- malformed files ---- */

static void expect_open_error(const char *path, const char *needle1, const char *needle2) {
    char msg[512] = "";
    safetensors_file *f = (safetensors_file *)(uintptr_t)1;
    ds_status st = safetensors_open(path, &f, msg, sizeof msg);
    if (st == DS_OK) fail_msg("%s opened, expected an error with \"%s\"", path, needle1);
    assert_null(f);
    assert_msg_has(msg, path);
    if (needle1) assert_msg_has(msg, needle1);
    if (needle2) assert_msg_has(msg, needle2);
}

/* Every truncation fails: inside the length, inside the header, and inside the data (the last
 * tensor then runs past the end). */
static void test_truncated(void **state) {
    (void)state;
    char path[PATH_LEN];
    tmp_path(path, "truncated.safetensors", 0);
    for (size_t cut = 0; cut < fx_len; cut += cut < fx_data_off + 64 ? 1 : 397) {
        write_all(path, fx_bytes, cut);
        const char *why = cut < 8             ? "too short"
                          : cut < fx_data_off ? "header length"
                                              : "data_offsets";
        expect_open_error(path, why, NULL);
    }
    expect_open_error("/nonexistent/x.safetensors", "cannot open", NULL);
}

static void test_header_length(void **state) {
    (void)state;
    char path[PATH_LEN];
    tmp_path(path, "length.safetensors", 0);
    const char *header = "{\"x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    float one = 1.0f;
    uint64_t hl = strlen(header);
    uint64_t lengths[] = {UINT64_MAX, (uint64_t)1 << 63, hl + 5, 1000000000, 0, 1};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        write_raw(path, header, lengths[i], &one, sizeof one);
        expect_open_error(path, "header length", NULL);
    }
    write_raw(path, header, hl, &one, sizeof one); /* and the honest length works */
    safetensors_file *f;
    char msg[256];
    assert_int_equal(safetensors_open(path, &f, msg, sizeof msg), DS_OK);
    safetensors_close(f);
}

/* Header text -> expected status and two substrings of the message (besides the path). */
static const struct {
    const char *header;
    ds_status status;
    const char *needle1, *needle2;
} bad_headers[] = {
    {"{\"x\": [", DS_ECORRUPT, "invalid JSON", NULL},
    {"not json at all", DS_ECORRUPT, "invalid JSON", NULL},
    {"[1, 2, 3]", DS_ECORRUPT, "not a JSON object", NULL},
    {"{} trailing", DS_ECORRUPT, "after the JSON", NULL},
    {"{\"x\": 5}", DS_ECORRUPT, "tensor x", "object"},
    {"{\"x\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", DS_ECORRUPT, "tensor x", "dtype"},
    {"{\"x\": {\"dtype\": 7, \"shape\": [1], \"data_offsets\": [0, 4]}}", DS_ECORRUPT, "tensor x",
     "dtype"},
    {"{\"x\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", DS_EUNSUPPORTED,
     "tensor x: field dtype", "F33"},
    {"{\"x\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", DS_ECORRUPT, "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", DS_ECORRUPT,
     "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", DS_ECORRUPT,
     "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [\"1\"], \"data_offsets\": [0, 4]}}", DS_ECORRUPT,
     "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}",
     DS_EUNSUPPORTED, "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
     "\"data_offsets\": [0, 4]}}",
     DS_ECORRUPT, "tensor x", "shape"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1]}}", DS_ECORRUPT, "tensor x", "data_offsets"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4, 8]}}", DS_ECORRUPT,
     "tensor x", "data_offsets"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 0]}}", DS_ECORRUPT,
     "tensor x", "data_offsets"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [12, 16]}}", DS_ECORRUPT,
     "tensor x: field data_offsets", "12 bytes"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 12]}}", DS_ECORRUPT,
     "tensor x: field data_offsets", "needs 8"},
    {"{\"x\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [0, 8]}}", DS_ECORRUPT,
     "tensor x: field data_offsets", "needs 4"},
    {"{\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
     "\"x\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}",
     DS_ECORRUPT, "tensor x", "twice"},
    {"{\"__metadata__\": {\"format\": 1}}", DS_ECORRUPT, "__metadata__", "format"},
    {"{\"__metadata__\": []}", DS_ECORRUPT, "__metadata__", NULL},
};

static void test_bad_headers(void **state) {
    (void)state;
    char path[PATH_LEN], msg[512];
    tmp_path(path, "bad.safetensors", 0);
    uint8_t data[12] = {0};
    for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++) {
        const char *h = bad_headers[i].header;
        write_raw(path, h, strlen(h), data, sizeof data);
        safetensors_file *f;
        ds_status st = safetensors_open(path, &f, msg, sizeof msg);
        if (st != bad_headers[i].status)
            fail_msg("header %s: status %s (%s)", h, ds_status_str(st), st ? msg : "");
        expect_open_error(path, bad_headers[i].needle1, bad_headers[i].needle2);
    }
}

/* Valid corner cases: padding, scalars, empty tensors, shared and unsorted byte ranges. */
static void test_valid_corners(void **state) {
    (void)state;
    char path[PATH_LEN], msg[512];
    tmp_path(path, "corners.safetensors", 0);
    const char *header =
        "{\"s\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [4, 8]},"
        " \"empty\": {\"dtype\": \"BF16\", \"shape\": [0, 4], \"data_offsets\": [8, 8]},"
        " \"h\": {\"dtype\": \"F16\", \"shape\": [2], \"data_offsets\": [8, 12]},"
        " \"b\": {\"dtype\": \"BF16\", \"shape\": [2], \"data_offsets\": [12, 16]},"
        " \"alias\": {\"dtype\": \"F32\", \"shape\": [1, 1], \"data_offsets\": [0, 4]},"
        " \"i\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]}}    ";
    uint8_t data[16] = {0x00, 0x00, 0x80, 0xbf, /* -1.0f */ 0x00,     0x00, 0x20, 0x40, /* 2.5f */
                        0x00, 0x3c, 0x00, 0xc2, /* f16 1, -3 */ 0x80, 0x3f, 0x49, 0x40 /* bf16 */};
    write_raw(path, header, strlen(header), data, sizeof data);
    safetensors_file *f;
    ds_status st = safetensors_open(path, &f, msg, sizeof msg);
    if (st != DS_OK) fail_msg("%s", msg);
    assert_int_equal(safetensors_n_tensors(f), 6);
    float out[4];
    const safetensors_tensor *t = safetensors_find(f, "s");
    assert_int_equal(t->n_dims, 0);
    assert_int_equal(t->n_elements, 1);
    assert_int_equal(safetensors_to_f32(t, out, msg, sizeof msg), DS_OK);
    assert_true(out[0] == 2.5f);
    t = safetensors_find(f, "empty");
    assert_int_equal(t->n_elements, 0);
    assert_int_equal(safetensors_to_f32(t, out, msg, sizeof msg), DS_OK);
    assert_int_equal(safetensors_to_f32(safetensors_find(f, "h"), out, msg, sizeof msg), DS_OK);
    assert_true(out[0] == 1.0f && out[1] == -3.0f);
    assert_int_equal(safetensors_to_f32(safetensors_find(f, "b"), out, msg, sizeof msg), DS_OK);
    assert_true(out[0] == 1.0f && out[1] == 3.140625f);
    assert_int_equal(safetensors_to_f32(safetensors_find(f, "alias"), out, msg, sizeof msg), DS_OK);
    assert_true(out[0] == -1.0f);
    t = safetensors_find(f, "i");
    assert_int_equal(safetensors_to_f32(t, out, msg, sizeof msg), DS_EUNSUPPORTED);
    assert_msg_has(msg, path);
    assert_msg_has(msg, "tensor i");
    assert_msg_has(msg, "I64");
    safetensors_close(f);

    write_raw(path, "{}", 2, NULL, 0);
    assert_int_equal(safetensors_open(path, &f, msg, sizeof msg), DS_OK);
    assert_int_equal(safetensors_n_tensors(f), 0);
    assert_null(safetensors_tensor_at(f, 0));
    safetensors_close(f);
}

/* ---- the HF loader on broken checkpoints ---- */

static cJSON *fixture_header_without(const char *name) {
    cJSON *h = cJSON_Duplicate(fx_header, 1);
    if (name) cJSON_DeleteItemFromObjectCaseSensitive(h, name);
    return h;
}

static const uint8_t *fx_data(void) { return fx_bytes + fx_data_off; }
static size_t fx_data_len(void) { return fx_len - fx_data_off; }

static void expect_load_error(const char *dir, ds_status want, const char *needle1,
                              const char *needle2, const char *needle3) {
    char msg[512] = "";
    llama_model m;
    ds_status st = llama_model_load_hf(dir, &m, msg, sizeof msg);
    if (st != want)
        fail_msg("%s: status %s, expected %s (%s)", dir, ds_status_str(st), ds_status_str(want),
                 msg);
    assert_null(m.layers);
    assert_null(m.tok_embd);
    assert_msg_has(msg, dir);
    const char *needles[] = {needle1, needle2, needle3};
    for (int i = 0; i < 3; i++)
        if (needles[i]) assert_msg_has(msg, needles[i]);
}

static void test_hf_missing_tensor(void **state) {
    (void)state;
    char dir[PATH_LEN];
    cJSON *h = fixture_header_without("model.layers.1.mlp.up_proj.weight");
    make_model_dir(dir, "missing_tensor", h, fx_data(), fx_data_len(), NULL);
    expect_load_error(dir, DS_ENOTFOUND, "model.safetensors: tensor model.layers.1.mlp.up_proj",
                      "not found", NULL);
    cJSON_Delete(h);
}

static void test_hf_wrong_shape(void **state) {
    (void)state;
    char dir[PATH_LEN], want[PATH_LEN + 128];
    cJSON *h = fixture_header_without(NULL);
    /* Layer 1's k_proj becomes 64x32 F16, stored after the fixture's data. */
    size_t base = fx_data_len(), extra = 64 * 32 * 2;
    uint8_t *data = calloc(1, base + extra);
    memcpy(data, fx_data(), base);
    cJSON *k = cJSON_GetObjectItem(h, "model.layers.1.self_attn.k_proj.weight");
    double shape[2] = {64, 32}, offs[2] = {(double)base, (double)(base + extra)};
    cJSON_ReplaceItemInObject(k, "shape", cJSON_CreateDoubleArray(shape, 2));
    cJSON_ReplaceItemInObject(k, "data_offsets", cJSON_CreateDoubleArray(offs, 2));
    make_model_dir(dir, "wrong_shape", h, data, base + extra, NULL);
    snprintf(want, sizeof want,
             "%s/model.safetensors: tensor model.layers.1.self_attn.k_proj.weight: expected "
             "16x32, got 64x32",
             dir);
    char msg[512];
    llama_model m;
    assert_int_equal(llama_model_load_hf(dir, &m, msg, sizeof msg), DS_EINVAL);
    assert_string_equal(msg, want);

    /* An unconvertible dtype of the right size is refused by name. */
    cJSON_ReplaceItemInObject(k, "dtype", cJSON_CreateString("I16"));
    make_model_dir(dir, "wrong_shape", h, data, base + extra, NULL);
    expect_load_error(dir, DS_EUNSUPPORTED, "model.safetensors", "k_proj", "I16");
    free(data);
    cJSON_Delete(h);
}

static void test_hf_lm_head_absent_ties(void **state) {
    (void)state;
    char dir[PATH_LEN];
    cJSON *h = fixture_header_without("lm_head.weight");
    make_model_dir(dir, "tied", h, fx_data(), fx_data_len(), NULL);
    llama_model m;
    load_ok(dir, &m);
    assert_int_equal(m.config.tied_embeddings, 1);
    assert_ptr_equal(m.output, m.tok_embd);
    llama_model_free(&m);
    cJSON_Delete(h);
}

/* A config.json edit: set key (dotted for rope_scaling) to JSON value, or delete it (NULL). */
static char *config_with(const char *key, const char *json_value) {
    cJSON *c = cJSON_Parse(fx_config);
    cJSON *obj = c;
    const char *dot = strchr(key, '.');
    char first[64];
    if (dot) {
        snprintf(first, sizeof first, "%.*s", (int)(dot - key), key);
        obj = cJSON_GetObjectItem(c, first);
        key = dot + 1;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    if (json_value) cJSON_AddItemToObject(obj, key, cJSON_Parse(json_value));
    char *text = cJSON_Print(c);
    cJSON_Delete(c);
    return text;
}

static const struct {
    const char *key, *value; /* value NULL: delete */
    ds_status status;
    const char *needle1, *needle2; /* besides the file named by the message */
} bad_configs[] = {
    {"hidden_size", NULL, DS_EINVAL, "field hidden_size", "missing"},
    {"num_hidden_layers", NULL, DS_EINVAL, "field num_hidden_layers", "missing"},
    {"rms_norm_eps", NULL, DS_EINVAL, "field rms_norm_eps", "missing"},
    {"vocab_size", "\"96\"", DS_EINVAL, "field vocab_size", "positive integer"},
    {"intermediate_size", "-64", DS_EINVAL, "field intermediate_size", NULL},
    {"num_attention_heads", "4.5", DS_EINVAL, "field num_attention_heads", NULL},
    {"model_type", "\"mistral\"", DS_EUNSUPPORTED, "field model_type", "mistral"},
    {"num_key_value_heads", "3", DS_EINVAL, "n_kv_heads", NULL},
    {"hidden_act", "\"gelu\"", DS_EUNSUPPORTED, "field hidden_act", NULL},
    {"attention_bias", "true", DS_EUNSUPPORTED, "field attention_bias", NULL},
    {"tie_word_embeddings", "\"no\"", DS_EINVAL, "field tie_word_embeddings", NULL},
    {"rope_scaling", "{\"rope_type\": \"yarn\", \"factor\": 4}", DS_EUNSUPPORTED,
     "field rope_scaling.rope_type", "yarn"},
    {"rope_scaling", "{\"factor\": 4}", DS_EINVAL, "field rope_scaling.rope_type", NULL},
    {"rope_scaling.low_freq_factor", NULL, DS_EINVAL, "field rope_scaling.low_freq_factor",
     "missing"},
    {"rope_scaling.original_max_position_embeddings", "0", DS_EINVAL,
     "rope_scaling.original_max_position_embeddings", NULL},
    {"rope_theta", "-1", DS_EINVAL, "field rope_theta", NULL},
    /* Defaults that do not match the checkpoint surface as tensor shape errors. */
    {"num_key_value_heads", NULL, DS_EINVAL, "k_proj.weight: expected 32x32, got 16x32", NULL},
    {"head_dim", "16", DS_EINVAL, "q_proj.weight: expected 64x32, got 32x32", NULL},
    {"vocab_size", "97", DS_EINVAL, "embed_tokens.weight: expected 97x32, got 96x32", NULL},
};

static void test_hf_bad_config(void **state) {
    (void)state;
    char dir[PATH_LEN], path[PATH_LEN];
    for (size_t i = 0; i < sizeof bad_configs / sizeof bad_configs[0]; i++) {
        char *config = config_with(bad_configs[i].key, bad_configs[i].value);
        make_model_dir(dir, "bad_config", fx_header, fx_data(), fx_data_len(), config);
        /* Config errors name config.json; default-vs-checkpoint mismatches name the tensor file. */
        const char *file =
            strstr(bad_configs[i].needle1, ".weight") ? "/model.safetensors: " : "/config.json: ";
        expect_load_error(dir, bad_configs[i].status, file, bad_configs[i].needle1,
                          bad_configs[i].needle2);
        free(config);
    }

    /* No model_type and no Llama architecture. */
    char *config = config_with("model_type", NULL);
    make_model_dir(dir, "bad_config", fx_header, fx_data(), fx_data_len(), config);
    llama_model m;
    load_ok(dir, &m); /* architectures still names LlamaForCausalLM */
    llama_model_free(&m);
    cJSON *c = cJSON_Parse(config);
    cJSON_DeleteItemFromObjectCaseSensitive(c, "architectures");
    free(config);
    config = cJSON_Print(c);
    cJSON_Delete(c);
    make_model_dir(dir, "bad_config", fx_header, fx_data(), fx_data_len(), config);
    expect_load_error(dir, DS_EINVAL, "config.json", "model_type", NULL);
    free(config);

    make_model_dir(dir, "bad_config", fx_header, fx_data(), fx_data_len(), "{\"model_type\": ");
    expect_load_error(dir, DS_ECORRUPT, "config.json", "invalid JSON at line 1", NULL);
    join(path, dir, "config.json");
    unlink(path);
    expect_load_error(dir, DS_ENOTFOUND, "config.json", "cannot open", NULL);
}

static void test_hf_config_defaults(void **state) {
    (void)state;
    char dir[PATH_LEN], msg[512];
    llama_config c;
    char *config = config_with("rope_scaling", "{\"type\": \"linear\", \"factor\": 2.0}");
    make_model_dir(dir, "defaults", fx_header, fx_data(), fx_data_len(), config);
    assert_int_equal(llama_hf_read_config(dir, &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.rope_scaling, LLAMA_ROPE_LINEAR);
    assert_float_equal(c.rope_factor, 2.0f, 0.0f);
    free(config);

    config = config_with("rope_theta", NULL);
    make_model_dir(dir, "defaults", fx_header, fx_data(), fx_data_len(), config);
    assert_int_equal(llama_hf_read_config(dir, &c, msg, sizeof msg), DS_OK);
    assert_float_equal(c.rope_theta, 10000.0f, 0.0f);
    free(config);

    config = config_with("rope_scaling", "null");
    make_model_dir(dir, "defaults", fx_header, fx_data(), fx_data_len(), config);
    assert_int_equal(llama_hf_read_config(dir, &c, msg, sizeof msg), DS_OK);
    assert_int_equal(c.rope_scaling, LLAMA_ROPE_NONE);
    free(config);

    config = config_with("tie_word_embeddings", "true"); /* tied even though lm_head exists */
    make_model_dir(dir, "defaults", fx_header, fx_data(), fx_data_len(), config);
    llama_model m;
    load_ok(dir, &m);
    assert_ptr_equal(m.output, m.tok_embd);
    llama_model_free(&m);
    free(config);

    config = config_with("head_dim", "8"); /* explicit and equal to the default */
    make_model_dir(dir, "defaults", fx_header, fx_data(), fx_data_len(), config);
    load_ok(dir, &m);
    assert_int_equal(m.config.head_dim, 8);
    llama_model_free(&m);
    free(config);
}

/* Random byte flips (mostly in the header, where they change structure) must either load or
 * fail with a message naming the file; ASan checks that nothing is read out of bounds. */
static void test_random_flips(void **state) {
    (void)state;
    char dir[PATH_LEN], path[PATH_LEN], msg[512];
    tmp_path(dir, "flips", 1);
    join(path, dir, "config.json");
    write_all(path, fx_config, strlen(fx_config));
    join(path, dir, "model.safetensors");
    uint8_t *buf = malloc(fx_len);
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    int opened = 0, failed = 0;
    for (int iter = 0; iter < 400; iter++) {
        memcpy(buf, fx_bytes, fx_len);
        int n_flips = 1 + (int)(iter % 4);
        for (int k = 0; k < n_flips; k++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            uint64_t r = rng >> 16;
            size_t pos = (r & 3) ? (size_t)((r >> 2) % fx_data_off) : (size_t)((r >> 2) % fx_len);
            buf[pos] ^= (uint8_t)(1u << ((r >> 40) & 7));
            if ((r >> 44) % 5 == 0) buf[pos] = (uint8_t)(r >> 48); /* sometimes a random byte */
        }
        write_all(path, buf, fx_len);
        safetensors_file *f;
        if (safetensors_open(path, &f, msg, sizeof msg) == DS_OK) {
            opened++;
            for (size_t i = 0; i < safetensors_n_tensors(f); i++) {
                const safetensors_tensor *t = safetensors_tensor_at(f, i);
                float *x = malloc((t->n_elements ? t->n_elements : 1) * sizeof *x);
                assert_non_null(x);
                if (safetensors_to_f32(t, x, msg, sizeof msg) != DS_OK) assert_msg_has(msg, path);
                free(x);
            }
            safetensors_close(f);
        } else {
            failed++;
            assert_msg_has(msg, path);
        }
        llama_model m;
        if (llama_model_load_hf(dir, &m, msg, sizeof msg) == DS_OK)
            llama_model_free(&m);
        else
            assert_msg_has(msg, dir);
    }
    /* Flips in the data region leave the file valid; many in the header break it. */
    assert_true(opened > 0);
    assert_true(failed > 0);
    free(buf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixture_matches_reference),
        cmocka_unit_test(test_load_hf_fixture),
        cmocka_unit_test(test_sharded_checkpoint),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_header_length),
        cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_valid_corners),
        cmocka_unit_test(test_hf_missing_tensor),
        cmocka_unit_test(test_hf_wrong_shape),
        cmocka_unit_test(test_hf_lm_head_absent_ties),
        cmocka_unit_test(test_hf_bad_config),
        cmocka_unit_test(test_hf_config_defaults),
        cmocka_unit_test(test_random_flips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
