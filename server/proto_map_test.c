/* server/proto_map_test.c — the decoserve.v1 messages map onto the engine's structs: unset
 * optional fields take the engine's defaults while explicit zeros survive the wire (so the engine
 * can reject max_tokens = 0 or top_p = 0), prompts and ids map so the engine sees "empty", "both"
 * or one of them, and no stats or info field is left behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/health.pb-c.h"
#include "server/proto_map.h"

/* Packs and unpacks req, as a request crosses the wire. */
static Decoserve__V1__GenerateRequest *wire(const Decoserve__V1__GenerateRequest *req) {
    size_t n = decoserve__v1__generate_request__get_packed_size(req);
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    assert_int_equal(decoserve__v1__generate_request__pack(req, buf), n);
    Decoserve__V1__GenerateRequest *out = decoserve__v1__generate_request__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(out);
    return out;
}

static void test_unset_fields_take_engine_defaults(void **state) {
    (void)state;
    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    req.prompt = "hello";
    Decoserve__V1__GenerateRequest *pb = wire(&req);
    serving_request got, want;
    proto_map_generate_request(pb, &got);
    serving_request_default(&want);
    assert_string_equal(got.prompt, "hello");
    assert_int_equal(got.prompt_len, 5);
    assert_null(got.prompt_ids);
    assert_int_equal(got.max_tokens, want.max_tokens);
    assert_true(got.sampling.temperature == want.sampling.temperature);
    assert_true(got.sampling.top_p == want.sampling.top_p);
    assert_int_equal(got.sampling.top_k, 0);
    assert_int_equal(got.sampling.seed, SAMPLER_SEED_RANDOM);
    assert_int_equal(got.n_stop, 0);
    assert_int_equal(got.n_stop_ids, 0);
    assert_int_equal(got.ignore_eos, 0);
    decoserve__v1__generate_request__free_unpacked(pb, NULL);
}

static void test_explicit_zeros_survive_the_wire(void **state) {
    (void)state;
    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    req.prompt = "x";
    req.max_tokens_present_case = DECOSERVE__V1__GENERATE_REQUEST__MAX_TOKENS_PRESENT_MAX_TOKENS;
    req.max_tokens = 0;
    req.temperature_present_case = DECOSERVE__V1__GENERATE_REQUEST__TEMPERATURE_PRESENT_TEMPERATURE;
    req.temperature = 0.0f;
    req.top_p_present_case = DECOSERVE__V1__GENERATE_REQUEST__TOP_P_PRESENT_TOP_P;
    req.top_p = 0.0f;
    req.seed_present_case = DECOSERVE__V1__GENERATE_REQUEST__SEED_PRESENT_SEED;
    req.seed = 0;
    req.top_k = -3;
    Decoserve__V1__GenerateRequest *pb = wire(&req);
    serving_request got;
    proto_map_generate_request(pb, &got);
    assert_int_equal(got.max_tokens, 0);
    assert_true(got.sampling.temperature == 0.0f);
    assert_true(got.sampling.top_p == 0.0f);
    assert_int_equal(got.sampling.seed, 0);
    assert_int_equal(got.sampling.top_k, -3);
    decoserve__v1__generate_request__free_unpacked(pb, NULL);
}

static void test_prompt_and_ids(void **state) {
    (void)state;
    int32_t ids[] = {5, 6, 7};
    serving_request got;
    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;

    proto_map_generate_request(&req, &got); /* neither: an empty prompt for the engine to name */
    assert_non_null(got.prompt);
    assert_int_equal(got.prompt_len, 0);
    assert_null(got.prompt_ids);

    req.prompt_ids = ids, req.n_prompt_ids = 3; /* ids only */
    proto_map_generate_request(&req, &got);
    assert_null(got.prompt);
    assert_ptr_equal(got.prompt_ids, ids);
    assert_int_equal(got.n_prompt_ids, 3);

    req.prompt = "both"; /* both: the engine refuses */
    proto_map_generate_request(&req, &got);
    assert_non_null(got.prompt);
    assert_non_null(got.prompt_ids);
}

static void test_sampling_and_stops(void **state) {
    (void)state;
    char *stops[] = {"\n\n", "END"};
    int32_t stop_ids[] = {2, 9};
    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    req.prompt = "p";
    req.max_tokens_present_case = DECOSERVE__V1__GENERATE_REQUEST__MAX_TOKENS_PRESENT_MAX_TOKENS;
    req.max_tokens = 40;
    req.temperature_present_case = DECOSERVE__V1__GENERATE_REQUEST__TEMPERATURE_PRESENT_TEMPERATURE;
    req.temperature = 0.7f;
    req.top_p_present_case = DECOSERVE__V1__GENERATE_REQUEST__TOP_P_PRESENT_TOP_P;
    req.top_p = 0.9f;
    req.seed_present_case = DECOSERVE__V1__GENERATE_REQUEST__SEED_PRESENT_SEED;
    req.seed = 1234567890123ll;
    req.top_k = 50;
    req.stop = stops, req.n_stop = 2;
    req.stop_token_ids = stop_ids, req.n_stop_token_ids = 2;
    req.ignore_eos = 1;
    serving_request got;
    proto_map_generate_request(&req, &got);
    assert_int_equal(got.max_tokens, 40);
    assert_true(got.sampling.temperature == 0.7f);
    assert_true(got.sampling.top_p == 0.9f);
    assert_int_equal(got.sampling.top_k, 50);
    assert_int_equal(got.sampling.seed, 1234567890123ll);
    assert_int_equal(got.n_stop, 2);
    assert_string_equal(got.stop[1], "END");
    assert_int_equal(got.n_stop_ids, 2);
    assert_int_equal(got.stop_ids[1], 9);
    assert_int_equal(got.ignore_eos, 1);
}

static void test_response(void **state) {
    (void)state;
    int32_t ids[] = {11, 12};
    char text[] = "ab";
    serving_output out = {.token_ids = ids,
                          .n_token_ids = 2,
                          .text = text,
                          .text_len = 2,
                          .finish = SERVING_RUNNING,
                          .error = "ignored while running",
                          .prompt_tokens = 7,
                          .cached_prompt_tokens = 4,
                          .completion_tokens = 2,
                          .preemptions = 1,
                          .ttft_s = 0.25};
    Decoserve__V1__GenerateResponse pb;
    Decoserve__V1__Usage usage;
    proto_map_generate_response(&out, "req-9", &pb, &usage);
    assert_string_equal(pb.request_id, "req-9");
    assert_int_equal(pb.n_token_ids, 2);
    assert_int_equal(pb.token_ids[1], 12);
    assert_string_equal(pb.text, "ab");
    assert_int_equal(pb.finish_reason, DECOSERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED);
    assert_string_equal(pb.error, "");
    assert_ptr_equal(pb.usage, &usage);
    assert_int_equal(usage.prompt_tokens, 7);
    assert_int_equal(usage.cached_prompt_tokens, 4);
    assert_int_equal(usage.completion_tokens, 2);
    assert_int_equal(usage.preemptions, 1);
    assert_true(usage.time_to_first_token_s == 0.25);

    out.finish = SERVING_ERROR;
    proto_map_generate_response(&out, "req-9", &pb, &usage);
    assert_int_equal(pb.finish_reason, DECOSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR);
    assert_string_equal(pb.error, "ignored while running");

    assert_int_equal(proto_map_finish_reason(SERVING_STOP),
                     DECOSERVE__V1__FINISH_REASON__FINISH_REASON_STOP);
    assert_int_equal(proto_map_finish_reason(SERVING_LENGTH),
                     DECOSERVE__V1__FINISH_REASON__FINISH_REASON_LENGTH);
    assert_int_equal(proto_map_finish_reason(SERVING_CANCELLED),
                     DECOSERVE__V1__FINISH_REASON__FINISH_REASON_CANCELLED);
    out.finish = SERVING_UNAVAILABLE; /* a dead device: an error with its reason */
    snprintf(out.error, sizeof out.error, "tensor-parallel rank 1: timed out");
    proto_map_generate_response(&out, "req-9", &pb, &usage);
    assert_int_equal(pb.finish_reason, DECOSERVE__V1__FINISH_REASON__FINISH_REASON_ERROR);
    assert_string_equal(pb.error, "tensor-parallel rank 1: timed out");
}

/* Every field of a flat message is set (non-zero, non-empty). */
static void assert_all_fields_set(const ProtobufCMessage *m) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const char *p = (const char *)m + f->offset;
        int set;
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: set = *(const int32_t *)p != 0; break;
        case PROTOBUF_C_TYPE_INT64: set = *(const int64_t *)p != 0; break;
        case PROTOBUF_C_TYPE_DOUBLE: set = *(const double *)p != 0; break;
        case PROTOBUF_C_TYPE_STRING: set = *(char *const *)p && **(char *const *)p; break;
        default: set = 0; break;
        }
        if (!set) fail_msg("%s.%s is not set", d->name, f->name);
    }
}

static void expect_refused(const ProtobufCMessage *pb, const char *want) {
    char msg[256] = "";
    ds_status st = proto_map_check_request(pb, msg, sizeof msg);
    if (st != DS_EINVAL || strncmp(msg, want, strlen(want)))
        fail_msg("want DS_EINVAL starting '%s', got %d: '%s'", want, st, msg);
}

/* Every string field of every request is UTF-8 checked, naming the field; the probe's request
 * (prompt "Hi", max_tokens 2, request_id 0xff) is refused as it arrives off the wire. */
static void test_check_strings(void **state) {
    (void)state;
    static const uint8_t probe[] = {0x0a, 0x02, 0x48, 0x69, 0x18, 0x02, 0x5a, 0x01, 0xff};
    Decoserve__V1__GenerateRequest *pb =
        decoserve__v1__generate_request__unpack(NULL, sizeof probe, probe);
    assert_non_null(pb);
    expect_refused(&pb->base, "request_id: not valid UTF-8 (byte 0 of 1)");
    decoserve__v1__generate_request__free_unpacked(pb, NULL);

    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    char *stops[3] = {"ok", "caf\xc3\xa9", "bad\xc3"};
    req.prompt = "h\xc3\xa9llo \xf0\x9f\x98\x80";
    req.stop = stops, req.n_stop = 2;
    char msg[256] = "";
    assert_int_equal(proto_map_check_request(&req.base, msg, sizeof msg), DS_OK);
    req.n_stop = 3;
    expect_refused(&req.base, "stop[2]: not valid UTF-8 (byte 3 of 4)");
    req.n_stop = 0;
    req.prompt = "x\xed\xa0\x80"; /* a surrogate */
    expect_refused(&req.base, "prompt: not valid UTF-8 (byte 1");

    Decoserve__V1__TokenizeRequest tok = DECOSERVE__V1__TOKENIZE_REQUEST__INIT;
    tok.text = "\xc0\xaf"; /* overlong */
    expect_refused(&tok.base, "text: not valid UTF-8");
    Grpc__Health__V1__HealthCheckRequest health = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    health.service = "\x80";
    expect_refused(&health.base, "service: not valid UTF-8");
}

/* request_id is bounded: it is repeated on every streamed message. */
static void test_request_id_limit(void **state) {
    (void)state;
    char id[PROTO_MAP_REQUEST_ID_MAX + 2];
    memset(id, 'a', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    Decoserve__V1__GenerateRequest req = DECOSERVE__V1__GENERATE_REQUEST__INIT;
    req.prompt = "x";
    req.request_id = id;
    expect_refused(&req.base, "request_id: 257 bytes, at most 256");
    id[PROTO_MAP_REQUEST_ID_MAX] = '\0';
    char msg[256] = "";
    assert_int_equal(proto_map_check_request(&req.base, msg, sizeof msg), DS_OK);
}

static void test_stats_and_info_fill_every_field(void **state) {
    (void)state;
    serving_stats st;
    /* Distinct non-zero values in every member. */
    int *ints[] = {&st.running,
                   &st.waiting,
                   &st.preempted_waiting,
                   &st.peak_running,
                   &st.open_blocks_total,
                   &st.open_blocks_free,
                   &st.full_blocks_total,
                   &st.full_blocks_free,
                   &st.full_blocks_cached,
                   &st.peak_full_blocks_used};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        *ints[i] = (int)i + 1;
    int64_t *i64s[] = {&st.kv_memory_bytes,
                       &st.preemptions,
                       &st.prefix_cache_queries,
                       &st.prefix_cache_hits,
                       &st.requests_submitted,
                       &st.requests_finished,
                       &st.requests_cancelled,
                       &st.requests_failed,
                       &st.prompt_tokens,
                       &st.generated_tokens,
                       &st.steps};
    for (size_t i = 0; i < sizeof i64s / sizeof i64s[0]; i++)
        *i64s[i] = 100 + (int64_t)i;
    double *dbls[] = {&st.kv_bytes_per_token,  &st.fp16_bytes_per_token,
                      &st.compression_ratio,   &st.busy_s,
                      &st.prompt_tokens_per_s, &st.generated_tokens_per_s};
    for (size_t i = 0; i < sizeof dbls / sizeof dbls[0]; i++)
        *dbls[i] = 0.5 + (double)i;
    Decoserve__V1__GetStatsResponse stats;
    proto_map_stats(&st, &stats);
    assert_all_fields_set(&stats.base);
    assert_int_equal(stats.full_blocks_free, st.full_blocks_free);
    assert_int_equal(stats.steps, st.steps);
    assert_true(stats.compression_ratio == st.compression_ratio);

    serving_info in = {.architecture = "llama",
                       .model_path = "/m/model.gguf",
                       .kv_method = "kivi",
                       .device = "cpu",
                       .context_length = 8192,
                       .vocab_size = 49152,
                       .n_layers = 30,
                       .n_heads = 9,
                       .n_kv_heads = 3,
                       .head_dim = 64,
                       .d_model = 576,
                       .kv_bits = 4,
                       .block_size = 32,
                       .tensor_parallel = 1,
                       .max_seqs = 64,
                       .max_batched_tokens = 512,
                       .bos_id = 1,
                       .eos_id = 2,
                       .kv_memory_bytes = 1 << 30};
    Decoserve__V1__ModelInfoResponse info;
    proto_map_model_info(&in, "model.gguf", &info);
    assert_all_fields_set(&info.base);
    assert_string_equal(info.model, "model.gguf");
    assert_int_equal(info.tensor_parallel_size, 1);
    assert_int_equal(info.eos_id, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset_fields_take_engine_defaults),
        cmocka_unit_test(test_explicit_zeros_survive_the_wire),
        cmocka_unit_test(test_prompt_and_ids),
        cmocka_unit_test(test_sampling_and_stops),
        cmocka_unit_test(test_response),
        cmocka_unit_test(test_stats_and_info_fill_every_field),
        cmocka_unit_test(test_check_strings),
        cmocka_unit_test(test_request_id_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
