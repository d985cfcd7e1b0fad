/* tools/loadgen/server_proc.h — a `decoserve serve` (or any command that behaves like it) started
 * and stopped by the sweep. The command runs in its own process group with stdout and stderr
 * appended to a log file; it is ready once the log holds "listening on HOST:PORT" (what serve
 * prints; pass --port 0 so every server picks a free port). Stopping sends SIGTERM to the group,
 * as an operator would, and SIGKILL to what is left after the grace period. */
#ifndef DS_TOOLS_LOADGEN_SERVER_PROC_H
#define DS_TOOLS_LOADGEN_SERVER_PROC_H

#include <sys/types.h>

#include "common/status.h"

typedef struct lg_server {
    pid_t pid; /* also the process group */
    char address[256];
    char log_path[1024];
} lg_server;

/* Runs argv (NULL-terminated; argv[0] is looked up in PATH) with its output in log_path and waits
 * up to timeout_s for its "listening on" line. Errors quote the end of the log: the command exited
 * (DS_EIO), did not listen in time (DS_EUNAVAILABLE; it is killed), or could not be started. */
ds_status lg_server_start(char *const argv[], const char *log_path, double timeout_s,
                          lg_server *out, char *msg, size_t msg_len);

/* SIGTERM to the group, waits up to grace_s for it to end, then SIGKILL. Returns the command's
 * exit status (128 + signal if a signal ended it). */
int lg_server_stop(lg_server *server, double grace_s);

#endif
