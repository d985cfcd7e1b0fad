/* engine_flags_test — engine_flags_spell: every serving_options name the engine puts in a message
 * reaches a CLI user as the flag that sets it, and nothing else in the message changes;
 * engine_flags_defaults: a LeaderWorkerSet pod's environment gives the multi-node flags' defaults,
 * the flags still win, and a malformed value is an error naming its variable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static const char *const LWS_VARS[] = {"LWS_GROUP_SIZE", "LWS_WORKER_INDEX", "LWS_LEADER_ADDRESS"};

/* Sets the three LWS variables (NULL: unset). */
static void set_lws(const char *size, const char *index, const char *leader) {
    const char *values[] = {size, index, leader};
    for (int k = 0; k < 3; k++) {
        if (values[k])
            setenv(LWS_VARS[k], values[k], 1);
        else
            unsetenv(LWS_VARS[k]);
    }
}

/* engine_flags_defaults with stderr captured into err; its return value. */
static int defaults_capturing(serving_options *o, char *err, size_t err_len) {
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    FILE *capture = tmpfile();
    assert_non_null(capture);
    dup2(fileno(capture), STDERR_FILENO);
    int r = engine_flags_defaults("decoserve serve", o);
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    rewind(capture);
    size_t n = fread(err, 1, err_len - 1, capture);
    err[n] = 0;
    fclose(capture);
    return r;
}

static void test_lws_environment_gives_the_node_flags(void **state) {
    (void)state;
    serving_options o, plain;
    char err[256];
    serving_options_default(&plain);
    set_lws("4", "3", "decoserve-tp-0.decoserve-tp.default");
    assert_int_equal(defaults_capturing(&o, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_int_equal(o.n_nodes, 4);
    assert_int_equal(o.node_rank, 3);
    assert_string_equal(o.master_addr, "decoserve-tp-0.decoserve-tp.default");
    assert_int_equal(o.master_port, plain.master_port); /* LWS has no port: the flag gives it */
    assert_int_equal(o.tensor_parallel, plain.tensor_parallel);
    o.model_path = "model.gguf", o.tensor_parallel = 4;
    assert_int_equal(engine_flags_check("decoserve serve", &o), -1); /* no --master-port yet */

    /* The leader (index 0) and a group of one. */
    set_lws("1", "0", "solo-0.solo.ns");
    assert_int_equal(defaults_capturing(&o, err, sizeof err), 0);
    assert_int_equal(o.n_nodes, 1);
    assert_int_equal(o.node_rank, 0);

    /* Flags given on the command line win over the environment. */
    set_lws("4", "3", "leader-0.leader.ns");
    assert_int_equal(defaults_capturing(&o, err, sizeof err), 0);
    char *argv[] = {"--node-rank",   "1",     "--master-addr",     "10.1.2.3",
                    "--master-port", "29500", "--tensor-parallel", "8"};
    for (int i = 0; i < 8; i++)
        assert_int_equal(engine_flags_parse("decoserve serve", 8, argv, &i, &o), 1);
    assert_int_equal(o.n_nodes, 4);
    assert_int_equal(o.node_rank, 1);
    assert_string_equal(o.master_addr, "10.1.2.3");
    o.model_path = "model.gguf";
    assert_int_equal(engine_flags_check("decoserve serve", &o), 0);

    /* Outside a LeaderWorkerSet nothing changes. */
    set_lws(NULL, NULL, NULL);
    assert_int_equal(defaults_capturing(&o, err, sizeof err), 0);
    assert_int_equal(o.n_nodes, plain.n_nodes);
    assert_int_equal(o.node_rank, plain.node_rank);
    assert_null(o.master_addr);
}

static void expect_lws_error(const char *size, const char *index, const char *leader,
                             const char *want) {
    serving_options o;
    char err[256];
    set_lws(size, index, leader);
    int r = defaults_capturing(&o, err, sizeof err);
    if (r != -1 || !strstr(err, want))
        fail_msg("LWS_GROUP_SIZE=%s LWS_WORKER_INDEX=%s LWS_LEADER_ADDRESS=%s: returned %d, "
                 "printed '%s', want -1 and '%s'",
                 size ? size : "(unset)", index ? index : "(unset)", leader ? leader : "(unset)", r,
                 err, want);
}

static void test_malformed_lws_values_name_the_variable(void **state) {
    (void)state;
    expect_lws_error("two", "0", "l",
                     "decoserve serve: LWS_GROUP_SIZE = 'two': expected an integer");
    expect_lws_error("", "0", "l", "LWS_GROUP_SIZE = '': expected an integer");
    expect_lws_error("0", "0", "l", "LWS_GROUP_SIZE = '0': expected an integer in 1..1024");
    expect_lws_error("2", "-1", "l", "LWS_WORKER_INDEX = '-1': expected an integer in 0..1023");
    expect_lws_error("2", "1x", "l", "LWS_WORKER_INDEX = '1x': expected an integer");
    expect_lws_error("2", "2", "l", "LWS_WORKER_INDEX = '2': expected 0..1 (LWS_GROUP_SIZE = '2')");
    expect_lws_error("2", "1", "", "LWS_LEADER_ADDRESS is empty");
    set_lws(NULL, NULL, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_option_becomes_its_flag),
        cmocka_unit_test(test_each_flag_is_an_engine_flag),
        cmocka_unit_test(test_engine_messages),
        cmocka_unit_test(test_only_whole_names),
        cmocka_unit_test(test_truncates_to_the_buffer),
        cmocka_unit_test(test_lws_environment_gives_the_node_flags),
        cmocka_unit_test(test_malformed_lws_values_name_the_variable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
