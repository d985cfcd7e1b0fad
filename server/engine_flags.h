/* server/engine_flags.h — the flags that configure a serving engine (model, KV cache, scheduler,
 * weights), shared by `decoserve serve`, `generate` and `bench-offline` so every command spells
 * and checks them the same way. */
#ifndef DS_SERVER_ENGINE_FLAGS_H
#define DS_SERVER_ENGINE_FLAGS_H

#include <stdio.h>

#include "engine/serving.h"

/* serving_options_default, then the multi-node flags' defaults from a LeaderWorkerSet pod's
 * environment, so one pod template serves every rank of a group: LWS_GROUP_SIZE -> --nnodes,
 * LWS_WORKER_INDEX -> --node-rank, LWS_LEADER_ADDRESS -> --master-addr (each only where set; the
 * flags, parsed after this, still win). Prints "PROG: LWS_GROUP_SIZE = 'x': why" and returns -1
 * for a malformed value; 0 otherwise. The commands call it first. */
int engine_flags_defaults(const char *prog, serving_options *o);

/* If argv[*i] is an engine flag, parses it (and its value, advancing *i past it) into o and
 * returns 1; returns 0 for any other argument; prints "PROG: --flag = 'v': why" to stderr and
 * returns -1 for a bad value. */
int engine_flags_parse(const char *prog, int argc, char **argv, int *i, serving_options *o);

/* One step of a command's argument loop at argv[*i] (the command checks its own value-less
 * switches first): --help prints usage to stdout and exits 0; an engine flag is parsed into o
 * (returns 0); any other flag must have a value: returns 1 with *value = argv[++*i]. Prints the
 * error and returns -1 for a bad engine value or a missing value. */
int engine_flags_next(const char *prog, int argc, char **argv, int *i, serving_options *o,
                      void (*usage)(FILE *out), const char **value);

/* Checks the combination after parsing (model given); prints and returns -1 on error. */
int engine_flags_check(const char *prog, const serving_options *o);

/* Rewrites an engine message in place for a CLI user: each serving_options field it names
 * (kv_memory_bytes, max_waiting, ...: a whole identifier) becomes the flag that sets it
 * (--kv-memory, --max-waiting), truncated to msg_len. The engine names its options because its
 * messages also reach gRPC clients; commands call this on what they print. */
void engine_flags_spell(char *msg, size_t msg_len);

/* serving_create, printing "PROG: why" (engine_flags_spell) on failure (NULL). With --node-rank > 0
 * the process is a follower of node 0 instead: serving_follow runs until node 0 stops the group,
 * then the process exits (0 when node 0 stopped it, 1 on a failure); node 0 runs the command's own
 * work. */
serving *engine_flags_open(const char *prog, const serving_options *o);

/* Help text for the engine flags, one per line, indented like the commands' own. */
void engine_flags_usage(FILE *out);

#endif
