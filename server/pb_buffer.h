/* server/pb_buffer.h — protobuf-c messages to and from gRPC byte buffers, and gRPC status names,
 * for the server, the client and the load generator alike. Nothing here aborts or takes ownership
 * of its argument. */
#ifndef DS_SERVER_PB_BUFFER_H
#define DS_SERVER_PB_BUFFER_H

#include <grpc/byte_buffer.h>
#include <protobuf-c/protobuf-c.h>

/* A new byte buffer holding msg packed (the caller destroys it once the batch sending it has
 * completed), or NULL if packing failed. */
grpc_byte_buffer *pb_buffer_pack(const ProtobufCMessage *msg);

/* A new message of type desc unpacked from bb (free it with protobuf_c_message_free_unpacked(m,
 * NULL)), or NULL if bb is NULL (no message) or its bytes are not a valid message of that type. */
ProtobufCMessage *pb_buffer_unpack(const ProtobufCMessageDescriptor *desc, grpc_byte_buffer *bb);

/* "OK", "CANCELLED", ... "UNAUTHENTICATED" for gRPC status codes 0..16, "UNKNOWN" otherwise. */
const char *pb_status_name(int code);

#endif
