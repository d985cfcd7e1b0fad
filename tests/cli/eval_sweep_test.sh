#!/usr/bin/env bash
# eval_sweep_test — tools/eval_sweep.sh and tools/eval_summary.py end to end on a tiny random
# model (decoserve-mkmodel): shards add up to the whole run, a setting the codec refuses and a
# missing text are recorded and the rest goes on, the longer run gets its own table, greedy
# agreement is counted against fp16, a second run into the same directory keeps what finished,
# and a deadline that has passed leaves every job recorded as not started.
# Args: decoserve-eval, decoserve-mkmodel, tools/eval_sweep.sh.
set -uo pipefail
eval_bin=$1
mkmodel=$2
sweep=$3
. "$(dirname "$0")/testlib.sh"

"$mkmodel" --out "$tmp/tiny.gguf" --shape tiny --seed 7 --type f32 >/dev/null 2>&1
check "mkmodel writes a model" $?
mkdir -p "$tmp/bin" "$tmp/corpora/janeausten"
ln -sf "$(cd "$(dirname "$eval_bin")" && pwd)/$(basename "$eval_bin")" "$tmp/bin/decoserve-eval"
for i in $(seq 60); do echo "Emma Woodhouse, handsome, clever, and rich, line $i of the text."; done \
    >"$tmp/corpora/janeausten/emma.txt"
printf 'prompt 0 4 5 6 7 8\nnot a prompt\nprompt 1 3 9 10 11\n' >"$tmp/prompts.txt"

run_sweep() { # out dir, extra options...
    local out=$1
    shift
    "$sweep" --model "$tmp/tiny.gguf" --bin "$tmp/bin" --out "$out" --corpora "$tmp/corpora" \
        --prompts "$tmp/prompts.txt" --tokens 160 --ctx 64 --stride 32 --shard-windows 2 \
        --long-tokens 224 --long-configs kivi:2 --methods "kivi decoquant-hv bogus" --bits "4 2" \
        --kv-tokens 64 --greedy-tokens 8 --jobs 2 "$@" >"$out.stdout" 2>&1
}

out=$tmp/out
run_sweep "$out" --deadline 300
check "the sweep exits 0 with failed jobs and a missing text" $?
summary=$out/summary.md
[ -s "$summary" ]
check "summary.md written" $?
grep -q "brown.txt not found" "$out/missing.txt" && grep -q "missing input: text brown" "$summary"
check "the missing Brown corpus is recorded" $?
grep -q "failed (rc 2): ppl_emma_bogus-4_w0-2: .*bogus" "$summary"
check "a setting the codec refuses is recorded as failed, with why" $?
[ "$(cat "$out/jobs/ppl_emma_kivi-4_w2-4.rc")" = 0 ] && [ -s "$out/jobs/ppl_emma_kivi-4_w2-4.json" ]
check "the other jobs ran" $?

# The fp16 row (shards 0:2 and 2:4) against one whole run over the same 160 tokens.
whole=$("$eval_bin" ppl --model "$tmp/tiny.gguf" --text "$tmp/corpora/janeausten/emma.txt" \
    --max-tokens 160 --ctx 64 --stride 32 --weights f32 --configs fp16 | awk '$1 == "fp16" {print $5}')
grep -q "^| fp16 | [0-9]* | $whole |" "$summary"
check "shards add up to the whole run's perplexity ($whole)" $?
grep -q "Emma ppl (160 tok)" "$summary" && grep -q "^| decoquant-hv:2 | [0-9]* | [0-9.*]* | [-+]" "$summary"
check "the 2-bit table has decoquant-hv on 160 tokens" $?
grep -q "Emma ppl (224 tok)" "$summary" && grep -q "^| kivi:2 | [0-9]* | [0-9.*]* |" "$summary"
check "the longer run has its own table" $?
grep -q "^| fp16 | [0-9]* | 8 / 8 | 8 / 8 | 16 / 16 | 16 / 16 |" "$summary"
check "greedy: fp16 agrees with itself" $?
grep -q "^| decoquant-hv:4 | [0-9]* | [0-9]* / [0-9]* | [0-9]* / [0-9]* | [0-9]* / 16 |" "$summary"
check "greedy: a compressed setting is counted" $?
grep -q "^| kivi | 4 | K/chan V/token |" "$summary"
check "the kv table is in the summary" $?

# Again into the same directory: what finished is kept, not run again.
run_sweep "$out" --deadline 300
[ "$(grep -c "ppl_emma_kivi-4_w2-4 rc=0" "$out/progress.txt")" -eq 1 ] && grep -q "rc=2" "$out/progress.txt"
check "a second run keeps the finished jobs" $?

# A deadline of 0: nothing starts, everything is recorded, the summary still comes.
run_sweep "$tmp/late" --deadline 0
check "a passed deadline still exits 0" $?
grep -q "0 finished, 0 failed, 0 killed at the deadline, [0-9]* not started" "$tmp/late/summary.md"
check "a passed deadline leaves every job recorded as not started" $?

finish
