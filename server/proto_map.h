/* server/proto_map.h — translates between the decoserve.v1 protobuf messages and the serving
 * engine's structs. Pure data: no gRPC, no engine calls beyond serving_request_default. Checking
 * values is serving_submit's job (one place, one set of messages naming the proto's fields), so
 * the request mapping cannot fail; proto_map_check_request checks only what the engine never
 * sees (the request id) or what is a property of the wire (strings must be UTF-8). Every output
 * borrows from its input: keep the input alive and unchanged while the output is used. */
#ifndef DS_SERVER_PROTO_MAP_H
#define DS_SERVER_PROTO_MAP_H

#include "engine/serving.h"
#include "proto/decoserve.pb-c.h"

/* The longest GenerateRequest.request_id accepted, in bytes: it is echoed on every streamed
 * message, so it bounds what one request can make the server send. */
#define PROTO_MAP_REQUEST_ID_MAX 256

/* Checks what the engine cannot: every string field of any request message (repeated ones and
 * oneof members included) is valid UTF-8, as proto3 requires and strict clients check on the
 * responses that echo them, and a GenerateRequest's request_id is at most
 * PROTO_MAP_REQUEST_ID_MAX bytes. DS_EINVAL with a message naming the field ("request_id: not
 * valid UTF-8 (byte 0)", "stop[2]: ..."). */
ds_status proto_map_check_request(const ProtobufCMessage *pb, char *msg, size_t msg_len);

/* Unset optional fields take serving_request_default's values (max_tokens 16, temperature 1,
 * top_p 1, random seed). A non-empty prompt maps to prompt, non-empty prompt_ids to prompt_ids;
 * with neither, prompt is "" so serving_submit answers "prompt: empty". */
void proto_map_generate_request(const Decoserve__V1__GenerateRequest *pb, serving_request *out);

/* One stream message from the output polled off a serving stream. usage is the message's
 * storage for the usage submessage; finish_reason and error are set only on the last output. */
void proto_map_generate_response(const serving_output *out, const char *request_id,
                                 Decoserve__V1__GenerateResponse *pb, Decoserve__V1__Usage *usage);

Decoserve__V1__FinishReason proto_map_finish_reason(serving_finish finish);

/* model is the name shown for the model (the file or folder name). */
void proto_map_model_info(const serving_info *info, const char *model,
                          Decoserve__V1__ModelInfoResponse *pb);

void proto_map_stats(const serving_stats *stats, Decoserve__V1__GetStatsResponse *pb);

#endif
