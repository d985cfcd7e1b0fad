/* tools/eval/eval_main.c — decoserve-eval: quality of the compressed KV cache.
 *   decoserve-eval kv  ...  codec error table (synthetic, .npy or real model KV)
 *   decoserve-eval ppl ...  perplexity of a model over a text, per KV setting
 *   decoserve-eval greedy ...  greedy continuations per KV setting against the fp16 cache's */
#include <stdio.h>
#include <string.h>

#include "tools/eval/commands.h"

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "kv")) return cmd_kv(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "ppl")) return cmd_ppl(argc, argv);
    if (argc >= 2 && !strcmp(argv[1], "greedy")) return cmd_greedy(argc, argv);
    int help = argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"));
    fprintf(help ? stdout : stderr,
            "usage: decoserve-eval kv [options]   KV codec error table (--help for options)\n"
            "       decoserve-eval ppl [options]  perplexity per KV setting (--help for options)\n"
            "       decoserve-eval greedy [options]  greedy agreement with fp16 per KV setting\n");
    return help ? 0 : 2;
}
