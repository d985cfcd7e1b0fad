/* tools/eval/commands.h — the modes of decoserve-eval. Each takes the full argv (argv[1] is the
 * mode's name) and returns the exit code (0 ok, 1 runtime error, 2 usage error). */
#ifndef DS_TOOLS_EVAL_COMMANDS_H
#define DS_TOOLS_EVAL_COMMANDS_H

int cmd_kv(int argc, char **argv);
int cmd_ppl(int argc, char **argv);
int cmd_greedy(int argc, char **argv);

#endif
