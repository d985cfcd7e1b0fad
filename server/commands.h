/* server/commands.h — the subcommands of the `decoserve` binary. Each takes the arguments after
 * its name and returns the process exit code (0 ok, 1 runtime error, 2 usage error). */
#ifndef DS_SERVER_COMMANDS_H
#define DS_SERVER_COMMANDS_H

int cmd_generate(int argc, char **argv);
int cmd_bench_offline(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_client(int argc, char **argv);

#endif
