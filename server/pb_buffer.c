/* server/pb_buffer.c — packs straight into one slice; unpacking flattens the (possibly
 * fragmented) buffer once. */
#include "server/pb_buffer.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>

grpc_byte_buffer *pb_buffer_pack(const ProtobufCMessage *msg) {
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(n);
    if (protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice)) != n) {
        grpc_slice_unref(slice);
        return NULL;
    }
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1); /* takes its own reference */
    grpc_slice_unref(slice);
    return bb;
}

ProtobufCMessage *pb_buffer_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb) {
    if (bb == NULL) return NULL;
    grpc_byte_buffer_reader reader;
    if (!grpc_byte_buffer_reader_init(&reader, bb)) return NULL;
    grpc_slice slice = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(slice),
                                                      GRPC_SLICE_START_PTR(slice));
    grpc_slice_unref(slice);
    return msg;
}

const char *pb_status_name(int code) {
    static const char *const names[] = {"OK",
                                        "CANCELLED",
                                        "UNKNOWN",
                                        "INVALID_ARGUMENT",
                                        "DEADLINE_EXCEEDED",
                                        "NOT_FOUND",
                                        "ALREADY_EXISTS",
                                        "PERMISSION_DENIED",
                                        "RESOURCE_EXHAUSTED",
                                        "FAILED_PRECONDITION",
                                        "ABORTED",
                                        "OUT_OF_RANGE",
                                        "UNIMPLEMENTED",
                                        "INTERNAL",
                                        "UNAVAILABLE",
                                        "DATA_LOSS",
                                        "UNAUTHENTICATED"};
    return code >= 0 && code < (int)(sizeof names / sizeof names[0]) ? names[code] : "UNKNOWN";
}
