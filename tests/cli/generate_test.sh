#!/usr/bin/env bash
# generate_test — `decoserve generate` as a user runs it: a tiny model made by decoserve-mkmodel,
# seeded sampling, --async-scheduling (the same text), and every kind of bad input answered with
# a clear error and exit code, never a crash (and decoserve-eval ppl's device flags). With
# DECOSERVE_MODEL set (the real SmolLM2), a golden greedy completion.
set -uo pipefail
decoserve=$1
mkmodel=$2
eval_bin=$3
. "$(dirname "$0")/testlib.sh"

# expect_error NAME EXIT_CODE PATTERN -- ARGS...: runs generate, wants that exit code and a
# stderr line matching PATTERN.
expect_error() {
    local name=$1 code=$2 pattern=$3
    shift 4
    "$decoserve" generate "$@" >"$tmp/out" 2>"$tmp/err"
    local rc=$?
    if [ $rc -ne "$code" ] || ! grep -q -- "$pattern" "$tmp/err"; then
        echo "FAIL: $name: exit $rc (want $code), stderr:"
        cat "$tmp/err"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
}

"$mkmodel" --out "$tmp/tiny.gguf" --hf "$tmp/tiny_hf" --shape tiny --seed 7 --type f32 \
    >/dev/null 2>&1
check "mkmodel writes a model" $?
tiny=$tmp/tiny.gguf

# The same weights as GGUF and as an HF folder (safetensors + tokenizer.json) give the same text:
# both loaders, both tokenizer sources and the Q/K un-permutation agree (q4: an f32 file has no
# 4-bit blocks, so both are Q8_0).
for weights in f32 q8_0 q4; do
    "$decoserve" generate --model "$tiny" --prompt "the cat sat on 12 mats" --max-tokens 24 \
        --ignore-eos --weights $weights >"$tmp/from_gguf" 2>/dev/null
    "$decoserve" generate --model "$tmp/tiny_hf" --prompt "the cat sat on 12 mats" \
        --max-tokens 24 --ignore-eos --weights $weights >"$tmp/from_hf" 2>/dev/null
    [ -s "$tmp/from_gguf" ] && cmp -s "$tmp/from_gguf" "$tmp/from_hf"
    check "GGUF and HF folder agree ($weights)" $?
done

# A completion runs and reports its speed and KV use.
"$decoserve" generate --model "$tiny" --prompt "the cat sat" --max-tokens 40 --ignore-eos \
    >"$tmp/a" 2>"$tmp/err"
check "generate on the tiny model" $?
grep -q "generated 40 tokens" "$tmp/err"
check "40 tokens generated" $?
grep -q "bytes/token" "$tmp/err"
check "KV bytes reported" $?

# Same seed, same text; another seed, another text (temperature sampling).
for seed in 1 1 2; do
    "$decoserve" generate --model "$tiny" --prompt "the cat sat" --max-tokens 30 --ignore-eos \
        --temperature 1.5 --top-p 0.95 --seed $seed >"$tmp/seed$seed.$RANDOM" 2>/dev/null
done
n_distinct=$(cat "$tmp"/seed1.* | sort -u | wc -l)
[ "$(ls "$tmp"/seed1.* | wc -l)" -eq 2 ] && cmp -s $(ls "$tmp"/seed1.*) 
check "same seed gives the same text" $?
! cmp -s "$(ls "$tmp"/seed1.* | head -1)" "$(ls "$tmp"/seed2.* | head -1)"
check "another seed gives another text" $?
: "$n_distinct"

# --async-scheduling: the same text as the synchronous engine, greedy and sampled.
for sampling in "--temperature 0" "--temperature 1.2 --top-p 0.9 --seed 3"; do
    "$decoserve" generate --model "$tiny" --prompt "the cat sat" --max-tokens 30 --ignore-eos \
        $sampling >"$tmp/sync" 2>/dev/null
    "$decoserve" generate --model "$tiny" --prompt "the cat sat" --max-tokens 30 --ignore-eos \
        $sampling --async-scheduling >"$tmp/async" 2>/dev/null
    [ -s "$tmp/sync" ] && cmp -s "$tmp/sync" "$tmp/async"
    check "--async-scheduling gives the same text ($sampling)" $?
done

# Every compressed KV setting runs.
for bits in 8 4 2; do
    for method in decoquant rtn kivi; do
        "$decoserve" generate --model "$tiny" --prompt "the cat sat on the mat" --max-tokens 80 \
            --ignore-eos --kv-bits $bits --kv-method $method --block-size 16 >/dev/null 2>&1
        check "kv $method $bits" $?
    done
done

# Bad input: clear errors, no crash.
expect_error "unknown --weights" 2 "expected f32, q8_0 or q4" -- --model "$tiny" --prompt hi \
    --weights q5
expect_error "missing model" 1 "no-such.gguf" -- --model "$tmp/no-such.gguf" --prompt hi
head -c 3000 "$tiny" >"$tmp/truncated.gguf"
expect_error "truncated model" 1 "truncated.gguf" -- --model "$tmp/truncated.gguf" --prompt hi
printf 'GGUF\x03\x00\x00\x00garbage' >"$tmp/garbage.gguf"
expect_error "garbage model" 1 "garbage.gguf" -- --model "$tmp/garbage.gguf" --prompt hi
long=$(printf 'word %.0s' $(seq 1 400))
expect_error "prompt over the context" 2 "context" -- --model "$tiny" --prompt "$long"
expect_error "max tokens over the context" 2 "context" -- --model "$tiny" --prompt hi \
    --max-tokens 1000
# The engine names its option (kv_memory_bytes); the CLI user reads the flag.
expect_error "prompt + max tokens over the KV pool" 2 "(raise --kv-memory)" -- --model "$tiny" \
    --prompt hi --max-tokens 200 --kv-memory 150K --block-size 16
expect_error "top-p > 1" 2 "top-p" -- --model "$tiny" --prompt hi --top-p 1.5
expect_error "top-p = 0" 2 "top_p" -- --model "$tiny" --prompt hi --top-p 0
expect_error "negative temperature" 2 "temperature" -- --model "$tiny" --prompt hi \
    --temperature -1
expect_error "negative top-k" 2 "top-k" -- --model "$tiny" --prompt hi --top-k -1
expect_error "kv bits 3" 2 "kv-bits" -- --model "$tiny" --prompt hi --kv-bits 3
expect_error "unknown kv method" 2 "gptq" -- --model "$tiny" --prompt hi --kv-method gptq
expect_error "group not dividing the block" 1 "group_size = 24 does not divide" -- --model "$tiny" \
    --prompt hi --kv-bits 4 --block-size 32 --kv-group-size 24 --kv-method decoquant
expect_error "unknown flag" 2 "--frobnicate" -- --model "$tiny" --prompt hi --frobnicate 1
expect_error "missing prompt" 2 "prompt" -- --model "$tiny"
expect_error "prompt and prompt file" 2 "prompt" -- --model "$tiny" --prompt a --prompt-file /dev/null
expect_error "missing prompt file" 1 "nope.txt" -- --model "$tiny" --prompt-file "$tmp/nope.txt"
printf 'the cat sat on the mat and the dog sat on the log' >"$tmp/prompt.txt"
"$decoserve" generate --model "$tiny" --prompt-file "$tmp/prompt.txt" --prompt-tokens 5 \
    --max-tokens 3 --ignore-eos >/dev/null 2>"$tmp/err"
grep -q "prompt 5 tokens" "$tmp/err"
check "--prompt-file with --prompt-tokens" $?
expect_error "empty prompt" 2 "empty" -- --model "$tiny" --prompt ""
stops=()
for i in $(seq 1 17); do stops+=(--stop "s$i"); done
expect_error "too many stop strings" 2 "stop" -- --model "$tiny" --prompt hi "${stops[@]}"

# The real model, greedy: a golden completion.
if [ -n "${DECOSERVE_MODEL:-}" ]; then
    prompt=$'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'
    for bits in 16 8; do
        "$decoserve" generate --model "$DECOSERVE_MODEL" --prompt "$prompt" --max-tokens 32 \
            --kv-bits $bits >"$tmp/golden" 2>"$tmp/err"
        check "real model runs (kv $bits)" $?
        [ "$(head -c 31 "$tmp/golden")" = "The capital of France is Paris." ]
        check "golden answer (kv $bits)" $?
        grep -q "finish: stop$" "$tmp/err"
        check "stops at EOS (kv $bits)" $?
    done
    "$decoserve" generate --model "$DECOSERVE_MODEL" --prompt "$prompt" --max-tokens 32 \
        --stop "France" >"$tmp/stopped" 2>"$tmp/err"
    [ "$(cat "$tmp/stopped")" = "The capital of " ]
    check "stop string cuts the text" $?
else
    model_missing "the golden completions on SmolLM2"
fi

# decoserve-eval ppl: tensor parallelism needs the GPU build and --device cuda.
echo "the quick brown fox jumps over the lazy dog" >"$tmp/text.txt"
"$eval_bin" ppl --model "$tiny" --text "$tmp/text.txt" --tensor-parallel 2 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--tensor-parallel = 2: needs --device cuda" "$tmp/err"
check "eval ppl --tensor-parallel without --device cuda rejected" $?
"$eval_bin" ppl --model "$tiny" --text "$tmp/text.txt" --device cuda --tensor-parallel 2 --ctx 64 --stride 32 \
    --configs fp16 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "built without CUDA" "$tmp/err"
check "eval ppl --tensor-parallel in a build without CUDA says so" $?

finish
