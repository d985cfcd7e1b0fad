/* perplexity_test — the perplexity protocol over the real SmolLM2 (DECOSERVE_MODEL) on the
 * opening of Emma (384 tokens, windows of 256 every 128: 2 windows; f32 weights: q4's 8-bit
 * activations turn the fp16 rounding of decoded values into 0.8% of perplexity at 8 bits here, f32
 * keeps it below 0.1%): shards of windows add up to the whole run, the codec's
 * round trip (tools/eval/kv_forward.h) reads fp16 exactly as the engine does and an 8-bit cache
 * within 0.1% of the engine's perplexity, and the presets the engine refuses are read through the
 * codec under --kv-read auto. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/file.h"
#include "engine/model_files.h"
#include "engine/test_model.h"
#include "tools/eval/perplexity.h"

enum { N_TOKENS = 384 };

typedef struct fixture {
    llama_model model;
    int32_t ids[4096];
    int n_ids;
    ppl_result fp16; /* the whole run, fp16 cache, read by the engine */
} fixture;

static fixture *loaded; /* the model and tokens, loaded by the first test that runs */

static const fixture *load(void) {
    const char *path = test_model_path("the perplexity protocol on the real model");
    if (loaded) return loaded;
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    bpe_tokenizer *tok = NULL;
    char msg[256], *text = NULL;
    size_t len = 0;
    if (model_files_load(path, &f->model, &tok, msg, sizeof msg) != DS_OK) fail_msg("%s", msg);
    if (ds_read_file("tests/fixtures/emma_opening.txt", 1 << 16, &text, &len, msg, sizeof msg) !=
        DS_OK)
        fail_msg("%s", msg);
    if (bpe_encode(tok, text, len, false, f->ids, 4096, &f->n_ids, msg, sizeof msg) != DS_OK)
        fail_msg("%s", msg);
    assert_true(f->n_ids >= N_TOKENS);
    free(text);
    bpe_destroy(tok);
    loaded = f;
    return f;
}

static int teardown(void **state) {
    (void)state;
    if (loaded) llama_model_free(&loaded->model);
    free(loaded);
    return 0;
}

static ppl_result run(const fixture *f, dq_method method, int bits, kv_read read, int first,
                      int end, ds_status want) {
    ppl_options o = {.ctx = 256,
                     .stride = 128,
                     .block_size = 32,
                     .key_codec = dq_config_defaults(method, bits),
                     .value_codec = dq_config_defaults(method, bits),
                     .read = read,
                     .weights = QM_F32,
                     .tensor_parallel = 1,
                     .first_window = first,
                     .end_window = end};
    ppl_result r;
    char msg[256] = "";
    ds_status st = ppl_evaluate(&f->model, f->ids, N_TOKENS, &o, &r, msg, sizeof msg);
    if (st != want)
        fail_msg("%s %d-bit: got %d (%s), want %d", dq_method_name(method), bits, st, msg, want);
    return r;
}

/* The fp16 engine run every test compares against, computed once. */
static ppl_result fp16_run(void) {
    const fixture *f = load();
    if (!loaded->fp16.n_scored) loaded->fp16 = run(f, DQ_FP16, 16, KV_READ_ENGINE, 0, 0, DS_OK);
    return loaded->fp16;
}

static void test_shards_add_up(void **state) {
    (void)state;
    const fixture *f = load();
    assert_int_equal(ppl_window_count(N_TOKENS, 256, 128), 2);
    ppl_result whole = fp16_run();
    ppl_result a = run(f, DQ_FP16, 16, KV_READ_ENGINE, 0, 1, DS_OK);
    ppl_result b = run(f, DQ_FP16, 16, KV_READ_ENGINE, 1, 2, DS_OK);
    assert_int_equal(whole.first_scored, 1);
    assert_int_equal(whole.end_scored, N_TOKENS);
    assert_int_equal(a.end_scored, 256);
    assert_int_equal(b.first_scored, 256);
    assert_int_equal(a.n_scored + b.n_scored, whole.n_scored);
    assert_int_equal(whole.n_scored, N_TOKENS - 1);
    assert_true(fabs(a.nll_sum + b.nll_sum - whole.nll_sum) < 1e-9 * whole.nll_sum);
    run(f, DQ_FP16, 16, KV_READ_ENGINE, 1, 3, DS_EINVAL); /* past the last window */
}

static void test_codec_read_matches_engine(void **state) {
    (void)state;
    const fixture *f = load();
    ppl_result engine = fp16_run();
    ppl_result codec = run(f, DQ_FP16, 16, KV_READ_CODEC, 0, 0, DS_OK);
    assert_int_equal(codec.read, KV_READ_CODEC);
    assert_true(codec.nll_sum == engine.nll_sum);
    ppl_result e8 = run(f, DQ_KIVI, 8, KV_READ_ENGINE, 0, 0, DS_OK);
    ppl_result c8 = run(f, DQ_KIVI, 8, KV_READ_CODEC, 0, 0, DS_OK);
    print_message("fp16 %.4f; kivi 8-bit engine %.4f, codec %.4f\n", engine.ppl, e8.ppl, c8.ppl);
    assert_true(fabs(c8.ppl / e8.ppl - 1.0) < 1e-3);
    assert_true(c8.bytes_per_token == e8.bytes_per_token);
    assert_true(e8.ppl != engine.ppl); /* the cache is compressed at all */
}

static void test_presets_read_through_the_codec(void **state) {
    (void)state;
    const fixture *f = load();
    ppl_result fp16 = fp16_run();
    run(f, DQ_DECOQUANT_HV, 4, KV_READ_ENGINE, 0, 0, DS_EUNSUPPORTED);
    ppl_result hv = run(f, DQ_DECOQUANT_HV, 4, KV_READ_AUTO, 0, 0, DS_OK);
    ppl_result kivi = run(f, DQ_KIVI, 4, KV_READ_AUTO, 0, 0, DS_OK);
    print_message("fp16 %.4f, decoquant-hv 4-bit %.4f (%s), kivi 4-bit %.4f (%s)\n", fp16.ppl,
                  hv.ppl, kv_read_name(hv.read), kivi.ppl, kv_read_name(kivi.read));
    assert_int_equal(hv.read, KV_READ_CODEC);
    assert_int_equal(kivi.read, KV_READ_ENGINE);
    assert_true(hv.bytes_per_token == kivi.bytes_per_token);
    assert_true(hv.ppl > fp16.ppl * 0.99 && hv.ppl < fp16.ppl * 1.03);
    /* 3 bits: the engine's attention reads no 3-bit pages, so auto reads them through the codec */
    run(f, DQ_KIVI, 3, KV_READ_ENGINE, 0, 0, DS_EUNSUPPORTED);
    ppl_result k3 = run(f, DQ_KIVI, 3, KV_READ_AUTO, 0, 0, DS_OK);
    assert_int_equal(k3.read, KV_READ_CODEC);
    assert_true(k3.ppl > fp16.ppl && k3.ppl < fp16.ppl * 1.2); /* not ~8000 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shards_add_up),
        cmocka_unit_test(test_codec_read_matches_engine),
        cmocka_unit_test(test_presets_read_through_the_codec),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
