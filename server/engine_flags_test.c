/* engine_flags_test — engine_flags_spell: every serving_options name the engine puts in a message
 * reaches a CLI user as the flag that sets it, and nothing else in the message changes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "server/engine_flags.h"

static void expect_spelled(const char *engine_msg, const char *want) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", engine_msg);
    engine_flags_spell(msg, sizeof msg);
    if (strcmp(msg, want)) fail_msg("'%s' spelled '%s', want '%s'", engine_msg, msg, want);
}

/* Every option the engine names, in one message, and what a CLI user reads. */
static const char ENGINE_NAMES[] =
    "model_path random_weights kv_bits kv_method kv_group_size block_size kv_memory_bytes "
    "gpu_memory_utilization max_seqs max_batched_tokens max_waiting tensor_parallel n_nodes "
    "node_rank master_addr master_port tp_timeout_s n_threads";
static const char CLI_FLAGS[] =
    "--model --random-weights --kv-bits --kv-method --kv-group-size --block-size --kv-memory "
    "--gpu-memory-utilization --max-seqs --max-batched-tokens --max-waiting --tensor-parallel "
    "--nnodes --node-rank --master-addr --master-port --tp-timeout --threads";

static void test_each_option_becomes_its_flag(void **state) {
    (void)state;
    expect_spelled(ENGINE_NAMES, CLI_FLAGS);
}

/* Each flag it spells is one the commands parse (a bad value prints and answers -1: still known).
 */
static void test_each_flag_is_an_engine_flag(void **state) {
    (void)state;
    char flags[sizeof CLI_FLAGS];
    memcpy(flags, CLI_FLAGS, sizeof flags);
    for (char *save, *f = strtok_r(flags, " ", &save); f; f = strtok_r(NULL, " ", &save)) {
        char *argv[] = {f, "2"};
        int i = 0;
        serving_options o;
        serving_options_default(&o);
        if (engine_flags_parse("engine_flags_test", 2, argv, &i, &o) == 0)
            fail_msg("%s: not an engine flag", f);
    }
}

static void test_engine_messages(void **state) {
    (void)state;
    expect_spelled("tensor_parallel = 2, n_nodes = 1: tensor parallelism needs the CUDA device",
                   "--tensor-parallel = 2, --nnodes = 1: tensor parallelism needs the CUDA device");
    expect_spelled("4 requests already waiting (max_waiting)",
                   "4 requests already waiting (--max-waiting)");
    expect_spelled("model_path, random_weights: give exactly one",
                   "--model, --random-weights: give exactly one");
}

static void test_only_whole_names(void **state) {
    (void)state;
    expect_spelled("prompt_ids[0] = 5: outside the vocabulary",
                   "prompt_ids[0] = 5: outside the vocabulary");
    expect_spelled("xmax_seqs max_seqs2 max_seqs_ kv_bitsy",
                   "xmax_seqs max_seqs2 max_seqs_ kv_bitsy");
    expect_spelled("the engine's device failed: timed out",
                   "the engine's device failed: timed out");
    expect_spelled("--kv-memory = 1024 bytes: too small", "--kv-memory = 1024 bytes: too small");
    expect_spelled("", "");
}

static void test_truncates_to_the_buffer(void **state) {
    (void)state;
    char msg[12] = "kv_bits = 3";
    engine_flags_spell(msg, sizeof msg);
    assert_string_equal(msg, "--kv-bits =");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_option_becomes_its_flag),
        cmocka_unit_test(test_each_flag_is_an_engine_flag),
        cmocka_unit_test(test_engine_messages),
        cmocka_unit_test(test_only_whole_names),
        cmocka_unit_test(test_truncates_to_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
