/* engine/tp/bootstrap.h — the TCP rendezvous before NCCL: node 0 (the process with
 * --node-rank 0) listens on --master-addr:--master-port, every other node connects and says who
 * it is, and once all have arrived node 0 sends each the opaque id that ncclGetUniqueId made;
 * every process then calls ncclCommInitRank with it. Used once at start-up by the process that
 * owns the GPUs; the same path serves several processes on one host (how it is tested) and
 * several hosts. A node here is a process, not a GPU: one process drives all of its GPUs.
 *
 * Nothing waits forever: every connect, read and write polls against one deadline, and each
 * failure is an error naming the peer (address, node rank) and what went wrong: DS_EUNAVAILABLE
 * when the deadline passes (a node that never shows up, a master that never answers),
 * DS_ECORRUPT for a peer that is not a decoserve bootstrap or closes mid-message, DS_EINVAL when
 * a node disagrees (node count, world size, rank out of range or already taken), DS_EIO for a
 * failing socket call.
 *
 * Wire format, big-endian u32s: hello (node -> master) "DSTP", version, node_rank, n_nodes,
 * world_size; reply (master -> node) "DSTP", version, then the TP_BOOTSTRAP_ID_BYTES id. A master
 * that fails closes every connection, so the waiting nodes fail at once instead of at their
 * deadline. */
#ifndef DS_ENGINE_TP_BOOTSTRAP_H
#define DS_ENGINE_TP_BOOTSTRAP_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define TP_BOOTSTRAP_ID_BYTES 128 /* NCCL_UNIQUE_ID_BYTES */

typedef struct tp_bootstrap_id {
    uint8_t bytes[TP_BOOTSTRAP_ID_BYTES];
} tp_bootstrap_id;

typedef struct tp_bootstrap_config {
    const char *master_addr; /* host name or numeric address of node 0 */
    int master_port;         /* node 0 may pass 0 to listen on an ephemeral port (tests) */
    int node_rank;           /* this process: 0 listens, 1..n_nodes-1 connect */
    int n_nodes;             /* processes taking part */
    int world_size;          /* GPUs in all (the tensor-parallel size); every node must agree */
    int timeout_ms;          /* the whole rendezvous, from the call */
} tp_bootstrap_config;

/* Node 0's listening socket; owned by the caller of tp_bootstrap_listen. */
typedef struct tp_bootstrap_server tp_bootstrap_server;

/* Node 0: binds config->master_addr:master_port and listens, before the nodes may connect.
 * *bound_port gets the port (the ephemeral one for port 0). DS_EINVAL for an address that does
 * not resolve, DS_EIO naming the address when bind or listen fails. */
ds_status tp_bootstrap_listen(const tp_bootstrap_config *config, tp_bootstrap_server **out,
                              int *bound_port, char *msg, size_t msg_len);

/* Node 0: accepts nodes until ranks 1..n_nodes-1 have each sent a valid hello, then sends id to
 * every one. Returns when all replies are written or at the first error (closing every accepted
 * connection). The timeout error lists the node ranks still missing. */
ds_status tp_bootstrap_serve(tp_bootstrap_server *server, const tp_bootstrap_config *config,
                             const tp_bootstrap_id *id, char *msg, size_t msg_len);

/* Closes the listening socket. NULL-safe. */
void tp_bootstrap_close(tp_bootstrap_server *server);

/* Nodes 1..n_nodes-1: connects to the master, retrying while it is not yet listening, sends the
 * hello and receives the id into *id. */
ds_status tp_bootstrap_join(const tp_bootstrap_config *config, tp_bootstrap_id *id, char *msg,
                            size_t msg_len);

#endif
