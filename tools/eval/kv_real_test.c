/* kv_real_test — pins the codecs' error on real KV: SmolLM2's own keys, values and queries over
 * the opening of Emma (tests/fixtures/emma_opening.txt, 512 tokens, 30 layers x 3 kv heads),
 * needs DECOSERVE_MODEL. What it holds (BENCHMARKS.md section 2): at exactly KIVI's bytes per
 * token, decoquant-hv's attention-output error is lower than KIVI-style's at 4 and 2 bits, and
 * lower than per-token and Hadamard-rotated RTN's, which spend fewer bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "engine/test_model.h"
#include "tools/eval/kv_capture.h"
#include "tools/eval/kv_eval.h"

static kv_metrics eval(const kv_set *set, dq_method method, int bits) {
    dq_config cfg = dq_config_defaults(method, bits);
    cfg.block_size = 32;
    cfg.head_dim = set->head_dim;
    kv_metrics m;
    char msg[160];
    assert_int_equal(kv_evaluate(set, &cfg, &cfg, &m, msg, sizeof msg), DS_OK);
    return m;
}

static void test_decoquant_hv_beats_kivi_on_real_kv(void **state) {
    (void)state;
    const char *model = test_model_path("the real-KV codec comparison");
    kv_set set;
    char msg[256];
    ds_status st =
        kv_capture(model, "tests/fixtures/emma_opening.txt", 512, 32, &set, msg, sizeof msg);
    if (st != DS_OK) fail_msg("kv_capture: %s", msg);
    assert_int_equal(set.n_tokens, 512);
    static const double max_ratio[2] = {0.97, 0.8}; /* decoquant-hv / kivi attention error */
    for (int b = 0; b < 2; b++) {
        const int bits = b ? 2 : 4;
        kv_metrics hv = eval(&set, DQ_DECOQUANT_HV, bits), kivi = eval(&set, DQ_KIVI, bits);
        kv_metrics rtn = eval(&set, DQ_RTN, bits), hrtn = eval(&set, DQ_HADAMARD_RTN, bits);
        print_message("%d-bit attn err: decoquant-hv %.4f, kivi %.4f, rtn %.4f, hadamard-rtn "
                      "%.4f; bytes/token %.1f %.1f %.1f %.1f\n",
                      bits, hv.attn_rel_err, kivi.attn_rel_err, rtn.attn_rel_err, hrtn.attn_rel_err,
                      hv.bytes_per_token, kivi.bytes_per_token, rtn.bytes_per_token,
                      hrtn.bytes_per_token);
        assert_true(hv.bytes_per_token == kivi.bytes_per_token);
        assert_true(hv.attn_rel_err < max_ratio[b] * kivi.attn_rel_err);
        assert_true(hv.attn_rel_err < rtn.attn_rel_err && hv.attn_rel_err < hrtn.attn_rel_err);
        assert_true(hv.key_rel_err < kivi.key_rel_err);
    }
    kv_set_free(&set);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decoquant_hv_beats_kivi_on_real_kv),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
