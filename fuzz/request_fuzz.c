/* fuzz/request_fuzz.c — a request as the gRPC server receives it: protobuf-c unpacks the bytes,
 * proto_map_check_request checks the strings and the id, proto_map_generate_request maps it and
 * serving_submit validates and tokenizes it on an engine with the tiny random-weights model (the
 * request is then cancelled and one step frees it). The first byte picks the method: Generate,
 * Tokenize or Health/Check. */
#include <stdlib.h>
#include <string.h>

#include "engine/serving.h"
#include "fuzz/fuzz_input.h"
#include "fuzz/tiny_engine.h"
#include "proto/decoserve.pb-c.h"
#include "proto/health.pb-c.h"
#include "server/proto_map.h"

static void generate(const ProtobufCMessage *pb) {
    serving_request q;
    proto_map_generate_request((const Decoserve__V1__GenerateRequest *)pb, &q);
    fuzz_submit_and_step(&q);
}

static void tokenize(const ProtobufCMessage *pb) {
    const Decoserve__V1__TokenizeRequest *req = (const Decoserve__V1__TokenizeRequest *)pb;
    int32_t *ids;
    int n_ids;
    char msg[512];
    size_t len;
    if (serving_tokenize(fuzz_tiny_engine(), req->text, strlen(req->text), &ids, &n_ids, msg,
                         sizeof msg) != DS_OK)
        return;
    for (int i = 0; i < n_ids; i++)
        if (serving_token_bytes(fuzz_tiny_engine(), ids[i], &len) == NULL) abort();
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const ProtobufCMessageDescriptor *const types[] = {
        &decoserve__v1__generate_request__descriptor,
        &decoserve__v1__tokenize_request__descriptor,
        &grpc__health__v1__health_check_request__descriptor,
    };
    if (size == 0) return 0;
    const ProtobufCMessageDescriptor *type = types[data[0] % 3];
    ProtobufCMessage *pb = protobuf_c_message_unpack(type, NULL, size - 1, data + 1);
    if (pb == NULL) return 0;
    char msg[512];
    if (proto_map_check_request(pb, msg, sizeof msg) == DS_OK) {
        if (type == &decoserve__v1__generate_request__descriptor)
            generate(pb);
        else if (type == &decoserve__v1__tokenize_request__descriptor)
            tokenize(pb);
    }
    protobuf_c_message_free_unpacked(pb, NULL);
    return 0;
}
