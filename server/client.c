/* server/client.c — `decoserve client`: calls a running `decoserve serve` over gRPC (C core,
 * blocking, one call per run). generate streams the text to stdout as it arrives and the finish
 * and usage to stderr; a call that ends with a non-OK status prints it and exits 1. Values are
 * only parsed here: the server checks their ranges and names the field at fault. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/cli.h"
#include "proto/decoserve.pb-c.h"
#include "proto/health.pb-c.h"
#include "server/commands.h"
#include "server/pb_buffer.h"

static const char *PROG = "decoserve client";

enum { MAX_REPEATED = 256 };

typedef struct client_options {
    const char *command; /* generate, tokenize, info, stats or health */
    const char *server;
    double timeout_s; /* <= 0: no deadline */
    const char *text, *service;
    Decoserve__V1__GenerateRequest request;
    char *stops[MAX_REPEATED];
    int32_t stop_ids[MAX_REPEATED];
    int32_t *prompt_ids; /* malloc'ed by --prompt-ids */
} client_options;

static void usage(FILE *out) {
    fprintf(out,
            "usage: decoserve client COMMAND [--server HOST:PORT] [--timeout S] [options]\n"
            "  generate --prompt TEXT | --prompt-ids ID,ID,...   one completion, streamed\n"
            "      --max-tokens N  --temperature F  --top-k N  --top-p F  --seed N\n"
            "      --stop TEXT (repeatable)  --stop-token-id ID (repeatable)  --ignore-eos\n"
            "      --request-id ID\n"
            "  tokenize --text TEXT    token ids, one line\n"
            "  info                    the model and engine configuration\n"
            "  stats                   the engine's counters (running, KV blocks, tokens/s, ...)\n"
            "  health [--service S]    SERVING (exit 0) or NOT_SERVING (exit 1)\n"
            "  --server HOST:PORT      default 127.0.0.1:50051\n"
            "  --timeout S             deadline of the call in seconds (default: none)\n"
            "Unset sampling values take the server's defaults (max_tokens 16, temperature 1, "
            "top_p 1,\nrandom seed). Exit: 0 ok, 1 the call failed (status printed), 2 usage.\n");
}

/* "1,2,3" into *ids (malloc'ed, the caller frees); -1 after printing the error. */
static int parse_ids(const char *flag, const char *v, int32_t **ids, size_t *n) {
    size_t cap = 1;
    for (const char *p = v; *p; p++)
        cap += *p == ',';
    char *copy = strdup(v);
    *ids = malloc(cap * sizeof **ids);
    *n = 0;
    int r = 0;
    if (copy == NULL || *ids == NULL) {
        fprintf(stderr, "%s: %s: out of memory\n", PROG, flag);
        r = -1;
    }
    char *save = NULL;
    for (char *tok = r ? NULL : strtok_r(copy, ",", &save); tok && r == 0;
         tok = strtok_r(NULL, ",", &save)) {
        int id;
        if ((r = cli_int(PROG, flag, tok, INT32_MIN, INT32_MAX, &id)) == 0) (*ids)[(*n)++] = id;
    }
    free(copy);
    return r;
}

static int parse(int argc, char **argv, client_options *o) {
    memset(o, 0, sizeof *o);
    o->server = "127.0.0.1:50051";
    o->service = "";
    Decoserve__V1__GenerateRequest *q = &o->request;
    decoserve__v1__generate_request__init(q);
    q->stop = o->stops;
    q->stop_token_ids = o->stop_ids;
    if (argc < 1) {
        usage(stderr);
        return -1;
    }
    o->command = argv[0];
    if (!strcmp(o->command, "--help") || !strcmp(o->command, "-h")) {
        usage(stdout);
        exit(0);
    }
    static const char *const commands[] = {"generate", "tokenize", "info", "stats", "health"};
    int known = 0;
    for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
        known |= !strcmp(o->command, commands[k]);
    if (!known) {
        fprintf(stderr, "%s: unknown command '%s' (see --help)\n", PROG, o->command);
        return -1;
    }
    int generate = !strcmp(o->command, "generate");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (generate && !strcmp(a, "--ignore-eos")) {
            q->ignore_eos = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: %s: missing value or unknown flag (see --help)\n", PROG, a);
            return -1;
        }
        const char *v = argv[++i];
        int r = 0;
        if (!strcmp(a, "--server")) {
            o->server = v;
        } else if (!strcmp(a, "--timeout")) {
            float t;
            r = cli_float(PROG, a, v, 0.0, 1e6, &t);
            o->timeout_s = t;
        } else if (!strcmp(o->command, "tokenize") && !strcmp(a, "--text")) {
            o->text = v;
        } else if (!strcmp(o->command, "health") && !strcmp(a, "--service")) {
            o->service = v;
        } else if (!generate) {
            fprintf(stderr, "%s %s: unknown flag %s (see --help)\n", PROG, o->command, a);
            return -1;
        } else if (!strcmp(a, "--prompt")) {
            q->prompt = (char *)v;
        } else if (!strcmp(a, "--prompt-ids")) {
            free(o->prompt_ids);
            r = parse_ids(a, v, &o->prompt_ids, &q->n_prompt_ids);
            q->prompt_ids = o->prompt_ids;
        } else if (!strcmp(a, "--max-tokens")) {
            q->max_tokens_present_case =
                DECOSERVE__V1__GENERATE_REQUEST__MAX_TOKENS_PRESENT_MAX_TOKENS;
            r = cli_int(PROG, a, v, INT32_MIN, INT32_MAX, &q->max_tokens);
        } else if (!strcmp(a, "--temperature")) {
            q->temperature_present_case =
                DECOSERVE__V1__GENERATE_REQUEST__TEMPERATURE_PRESENT_TEMPERATURE;
            r = cli_float(PROG, a, v, -1e30, 1e30, &q->temperature);
        } else if (!strcmp(a, "--top-k")) {
            r = cli_int(PROG, a, v, INT32_MIN, INT32_MAX, &q->top_k);
        } else if (!strcmp(a, "--top-p")) {
            q->top_p_present_case = DECOSERVE__V1__GENERATE_REQUEST__TOP_P_PRESENT_TOP_P;
            r = cli_float(PROG, a, v, -1e30, 1e30, &q->top_p);
        } else if (!strcmp(a, "--seed")) {
            long long seed;
            q->seed_present_case = DECOSERVE__V1__GENERATE_REQUEST__SEED_PRESENT_SEED;
            r = cli_i64(PROG, a, v, -9223372036854775807ll - 1, 9223372036854775807ll, &seed);
            q->seed = seed;
        } else if (!strcmp(a, "--stop") || !strcmp(a, "--stop-token-id")) {
            int is_id = !strcmp(a, "--stop-token-id");
            size_t *n = is_id ? &q->n_stop_token_ids : &q->n_stop;
            if (*n == MAX_REPEATED) {
                fprintf(stderr, "%s: %s: at most %d\n", PROG, a, MAX_REPEATED);
                return -1;
            }
            if (is_id)
                r = cli_int(PROG, a, v, INT32_MIN, INT32_MAX, &o->stop_ids[*n]);
            else
                o->stops[*n] = (char *)v;
            (*n)++;
        } else if (!strcmp(a, "--request-id")) {
            q->request_id = (char *)v;
        } else {
            fprintf(stderr, "%s generate: unknown flag %s (see --help)\n", PROG, a);
            return -1;
        }
        if (r < 0) return -1;
    }
    if (!strcmp(o->command, "tokenize") && o->text == NULL) {
        fprintf(stderr, "%s tokenize: --text is required\n", PROG);
        return -1;
    }
    return 0;
}

/* ---- calls ---- */

typedef struct client {
    grpc_channel *channel;
    grpc_completion_queue *cq; /* pluck: each batch is waited for by its tag */
    gpr_timespec deadline;
} client;

static grpc_call *client_call(client *c, const char *method) {
    return grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                    grpc_slice_from_static_string(method), NULL, c->deadline, NULL);
}

/* Starts a batch and waits for it; 0 if it failed to start or completed without success. */
static int run_batch(client *c, grpc_call *call, const grpc_op *ops, size_t n_ops) {
    int tag;
    if (grpc_call_start_batch(call, ops, n_ops, &tag, NULL) != GRPC_CALL_OK) return 0;
    grpc_event ev =
        grpc_completion_queue_pluck(c->cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Receives the status; prints it unless OK. Returns 0 for OK, 1 otherwise. */
static int finish_call(client *c, grpc_call *call) {
    grpc_metadata_array trailing;
    grpc_metadata_array_init(&trailing);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    if (!run_batch(c, call, &op, 1)) status = GRPC_STATUS_INTERNAL;
    if (status != GRPC_STATUS_OK) {
        char *text = grpc_slice_to_c_string(details);
        fprintf(stderr, "%s: %s: %s\n", PROG, pb_status_name(status), text);
        gpr_free(text);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&trailing);
    return status == GRPC_STATUS_OK ? 0 : 1;
}

/* Sends the request and half-closes. */
static int send_request(client *c, grpc_call *call, const ProtobufCMessage *request,
                        grpc_metadata_array *initial) {
    grpc_byte_buffer *bb = pb_buffer_pack(request);
    if (bb == NULL) return 0;
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial;
    int ok = run_batch(c, call, ops, 4);
    grpc_byte_buffer_destroy(bb);
    return ok;
}

/* The next message of the call as type, or NULL at the end of the stream (or on a bad one). */
static ProtobufCMessage *recv_message(client *c, grpc_call *call,
                                      const ProtobufCMessageDescriptor *type) {
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    ProtobufCMessage *msg = run_batch(c, call, &op, 1) ? pb_buffer_unpack(type, bb) : NULL;
    if (bb != NULL) {
        if (msg == NULL) fprintf(stderr, "%s: the server sent a malformed %s\n", PROG, type->name);
        grpc_byte_buffer_destroy(bb);
    }
    return msg;
}

/* One unary call: *response is the reply (NULL on failure). Returns the exit code. */
static int call_unary(client *c, const char *method, const ProtobufCMessage *request,
                      const ProtobufCMessageDescriptor *response_type,
                      ProtobufCMessage **response) {
    grpc_call *call = client_call(c, method);
    grpc_metadata_array initial;
    grpc_metadata_array_init(&initial);
    *response = NULL;
    if (send_request(c, call, request, &initial)) *response = recv_message(c, call, response_type);
    int rc = finish_call(c, call);
    if (rc == 0 && *response == NULL) {
        fprintf(stderr, "%s: %s: no reply\n", PROG, method);
        rc = 1;
    }
    if (rc != 0 && *response != NULL) {
        protobuf_c_message_free_unpacked(*response, NULL);
        *response = NULL;
    }
    grpc_metadata_array_destroy(&initial);
    grpc_call_unref(call);
    return rc;
}

static int generate(client *c, const client_options *o) {
    grpc_call *call = client_call(c, "/decoserve.v1.Decoserve/Generate");
    grpc_metadata_array initial;
    grpc_metadata_array_init(&initial);
    Decoserve__V1__GenerateResponse *last = NULL;
    if (send_request(c, call, &o->request.base, &initial)) {
        ProtobufCMessage *m;
        while ((m = recv_message(c, call, &decoserve__v1__generate_response__descriptor))) {
            Decoserve__V1__GenerateResponse *r = (Decoserve__V1__GenerateResponse *)m;
            fputs(r->text, stdout);
            fflush(stdout);
            if (last) protobuf_c_message_free_unpacked(&last->base, NULL);
            last = r;
        }
    }
    if (last != NULL) printf("\n"); /* as `decoserve generate` ends its text */
    fflush(stdout);
    int rc = finish_call(c, call);
    if (last != NULL &&
        last->finish_reason != DECOSERVE__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        static const char *const reasons[] = {"running", "stop", "length", "cancelled", "error"};
        unsigned reason = (unsigned)last->finish_reason;
        const Decoserve__V1__Usage *u = last->usage;
        fprintf(stderr,
                "[%s] %s: finish %s; prompt %d tokens (%d cached), completion %d tokens, "
                "first token after %.3f s\n",
                PROG, last->request_id, reason < 5 ? reasons[reason] : "unknown",
                u ? u->prompt_tokens : 0, u ? u->cached_prompt_tokens : 0,
                u ? u->completion_tokens : 0, u ? u->time_to_first_token_s : -1.0);
        if (last->error[0]) fprintf(stderr, "%s: %s\n", PROG, last->error);
    }
    if (last) protobuf_c_message_free_unpacked(&last->base, NULL);
    grpc_metadata_array_destroy(&initial);
    grpc_call_unref(call);
    return rc;
}

/* Prints every field of a flat message as "name: value", one per line. */
static void print_fields(const ProtobufCMessage *m) {
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = (const char *)m + f->offset;
        printf("%s: ", f->name);
        switch (f->type) {
        case PROTOBUF_C_TYPE_INT32: printf("%d\n", *(const int32_t *)p); break;
        case PROTOBUF_C_TYPE_INT64: printf("%lld\n", (long long)*(const int64_t *)p); break;
        case PROTOBUF_C_TYPE_DOUBLE: printf("%g\n", *(const double *)p); break;
        case PROTOBUF_C_TYPE_STRING: printf("%s\n", *(char *const *)p); break;
        default: printf("(not shown)\n"); break;
        }
    }
}

static int run(client *c, const client_options *o) {
    ProtobufCMessage *reply = NULL;
    int rc;
    if (!strcmp(o->command, "generate")) return generate(c, o);
    if (!strcmp(o->command, "tokenize")) {
        Decoserve__V1__TokenizeRequest q = DECOSERVE__V1__TOKENIZE_REQUEST__INIT;
        q.text = (char *)o->text;
        rc = call_unary(c, "/decoserve.v1.Decoserve/Tokenize", &q.base,
                        &decoserve__v1__tokenize_response__descriptor, &reply);
        if (rc == 0) {
            const Decoserve__V1__TokenizeResponse *r = (Decoserve__V1__TokenizeResponse *)reply;
            for (size_t i = 0; i < r->n_token_ids; i++)
                printf(i ? " %d" : "%d", r->token_ids[i]);
            printf("\n");
        }
    } else if (!strcmp(o->command, "health")) {
        Grpc__Health__V1__HealthCheckRequest q = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        q.service = (char *)o->service;
        rc = call_unary(c, "/grpc.health.v1.Health/Check", &q.base,
                        &grpc__health__v1__health_check_response__descriptor, &reply);
        if (rc == 0) {
            const Grpc__Health__V1__HealthCheckResponse *r =
                (Grpc__Health__V1__HealthCheckResponse *)reply;
            const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
                &grpc__health__v1__health_check_response__serving_status__descriptor,
                (int)r->status);
            printf("%s\n", v ? v->name : "UNKNOWN");
            rc = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0
                                                                                               : 1;
        }
    } else {
        int info = !strcmp(o->command, "info");
        Decoserve__V1__ModelInfoRequest qi = DECOSERVE__V1__MODEL_INFO_REQUEST__INIT;
        Decoserve__V1__GetStatsRequest qs = DECOSERVE__V1__GET_STATS_REQUEST__INIT;
        rc = info ? call_unary(c, "/decoserve.v1.Decoserve/ModelInfo", &qi.base,
                               &decoserve__v1__model_info_response__descriptor, &reply)
                  : call_unary(c, "/decoserve.v1.Decoserve/GetStats", &qs.base,
                               &decoserve__v1__get_stats_response__descriptor, &reply);
        if (rc == 0) print_fields(reply);
    }
    if (reply) protobuf_c_message_free_unpacked(reply, NULL);
    return rc;
}

int cmd_client(int argc, char **argv) {
    client_options o;
    if (parse(argc, argv, &o) < 0) {
        free(o.prompt_ids);
        return 2;
    }
    grpc_init();
    client c;
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c.channel = grpc_channel_create(o.server, creds, NULL);
    grpc_channel_credentials_release(creds);
    c.cq = grpc_completion_queue_create_for_pluck(NULL);
    c.deadline =
        o.timeout_s > 0
            ? gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                           gpr_time_from_micros((int64_t)(o.timeout_s * 1e6), GPR_TIMESPAN))
            : gpr_inf_future(GPR_CLOCK_REALTIME);
    int rc = run(&c, &o);
    free(o.prompt_ids);
    grpc_completion_queue_shutdown(c.cq);
    while (grpc_completion_queue_pluck(c.cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(c.cq);
    grpc_channel_destroy(c.channel);
    grpc_shutdown();
    return rc;
}
