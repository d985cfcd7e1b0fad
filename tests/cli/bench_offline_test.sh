#!/usr/bin/env bash
# bench_offline_test — `decoserve bench-offline` as a user runs it on a tiny model made by
# decoserve-mkmodel: every request completes, the JSON report is consistent, a squeezed pool
# preempts and still completes everything, compressed KV holds more sequences than fp16 in the
# same memory, and bad flags get clear errors.
set -uo pipefail
decoserve=$1
mkmodel=$2
. "$(dirname "$0")/testlib.sh"

# json FILE KEY: a number from the one-line JSON report
json() { sed -n "s/.*\"$2\": \([0-9.]*\).*/\1/p" "$1"; }

"$mkmodel" --out "$tmp/tiny.gguf" --shape tiny --seed 3 --type f32 >/dev/null 2>&1
check "mkmodel writes a model" $?
tiny=$tmp/tiny.gguf

# Roomy pool: all 40 requests complete, no preemption, token counts add up.
"$decoserve" bench-offline --model "$tiny" --num-prompts 40 --input-len 30 --output-len 20 \
    --range-ratio 0.5 --max-seqs 16 --block-size 16 --kv-memory 16M --json "$tmp/roomy.json" \
    >"$tmp/out" 2>"$tmp/err"
check "bench-offline runs" $?
[ "$(json "$tmp/roomy.json" requests)" = 40 ]
check "every request completes" $?
[ "$(json "$tmp/roomy.json" preemptions)" = 0 ]
check "roomy pool: no preemption" $?
[ "$(json "$tmp/roomy.json" peak_concurrent_seqs)" = 16 ]
check "roomy pool: max-seqs sequences at once" $?
grep -q "output tokens/s" "$tmp/out"
check "throughput line" $?

# Squeezed pool (tiny fp16 block = 4 KiB; open pool 8 + 64/16 + 1 = 13 blocks): preemption, and
# still every request completes.
"$decoserve" bench-offline --model "$tiny" --num-prompts 40 --input-len 40 --output-len 40 \
    --max-seqs 8 --max-batched-tokens 64 --block-size 16 --kv-memory $(((13 + 20) * 4096)) \
    --json "$tmp/tight.json" >"$tmp/out" 2>"$tmp/err"
check "squeezed pool runs" $?
[ "$(json "$tmp/tight.json" requests)" = 40 ]
check "squeezed pool: every request completes" $?
[ "$(json "$tmp/tight.json" preemptions)" -gt 0 ]
check "squeezed pool: preemption happened" $?

# Same memory, more sequences at 4 and 2 bits than at 16.
for bits in 16 4 2; do
    "$decoserve" bench-offline --model "$tiny" --num-prompts 64 --input-len 60 --output-len 100 \
        --max-seqs 64 --block-size 32 --kv-bits $bits --kv-memory 1100K --json "$tmp/m$bits.json" \
        >/dev/null 2>"$tmp/err$bits"
    check "memory run at $bits bits" $?
done
p16=$(json "$tmp/m16.json" peak_concurrent_seqs)
p4=$(json "$tmp/m4.json" peak_concurrent_seqs)
p2=$(json "$tmp/m2.json" peak_concurrent_seqs)
echo "peak concurrent sequences in 1100 KiB: 16-bit $p16, 4-bit $p4, 2-bit $p2"
[ "$p4" -gt "$p16" ] && [ "$p2" -ge "$p4" ]
check "compressed KV holds more sequences" $?

# Bad flags: clear errors, exit 2 (usage) or 1 (runtime).
"$decoserve" bench-offline --model "$tiny" --num-prompts 0 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--num-prompts" "$tmp/err"
check "num-prompts 0 rejected" $?
"$decoserve" bench-offline --model "$tiny" --kv-memory lots >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--kv-memory" "$tmp/err"
check "bad kv-memory rejected" $?
"$decoserve" bench-offline --model "$tiny" --kv-memory 1K >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q -- "--kv-memory" "$tmp/err"
check "kv-memory too small for the open pool" $?
"$decoserve" bench-offline --model "$tiny" --input-len 300 --output-len 10 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "context" "$tmp/err"
check "prompt over the context rejected" $?
# Device flags (this test runs the default, CPU-only build): bad values name the flag.
"$decoserve" bench-offline --model "$tiny" --device gpu >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--device" "$tmp/err"
check "unknown device rejected" $?
"$decoserve" bench-offline --model "$tiny" --dtype fp32 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--dtype" "$tmp/err"
check "unknown dtype rejected" $?
"$decoserve" bench-offline --model "$tiny" --tensor-parallel 2 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q -- "--tensor-parallel = 2, --nnodes = 1: tensor parallelism needs the CUDA device" "$tmp/err"
check "tensor parallel without a GPU rejected" $?
"$decoserve" bench-offline --model "$tiny" --device cuda --tensor-parallel 2 --nnodes 2 \
    --node-rank 2 --master-addr 127.0.0.1 --master-port 29500 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--node-rank = 2: expected 0..1" "$tmp/err"
check "node rank outside the nodes rejected" $?
"$decoserve" bench-offline --model "$tiny" --device cuda --tensor-parallel 2 --nnodes 2 \
    >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "give --master-addr and --master-port" "$tmp/err"
check "several nodes without a master rejected" $?
"$decoserve" bench-offline --model "$tiny" --device cuda --tensor-parallel 3 --nnodes 2 \
    --master-addr 127.0.0.1 --master-port 29500 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--tensor-parallel = 3: expected a multiple of --nnodes = 2" "$tmp/err"
check "GPUs not a multiple of the nodes rejected" $?
"$decoserve" bench-offline --model "$tiny" --device cuda --tensor-parallel 2 --nnodes 2 \
    --node-rank 1 --master-addr 127.0.0.1 --master-port 29500 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "node 1 of 2: following node 0 at 127.0.0.1:29500" "$tmp/err" &&
    grep -q "built without CUDA" "$tmp/err"
check "a following node in a build without CUDA says so" $?
"$decoserve" bench-offline --model "$tiny" --master-port 0 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--master-port" "$tmp/err"
check "bad master port rejected" $?
"$decoserve" bench-offline --model "$tiny" --tp-timeout 0 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--tp-timeout" "$tmp/err"
check "bad tp-timeout rejected" $?
"$decoserve" bench-offline --model "$tiny" --device cuda --kv-memory 64M >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "built without CUDA" "$tmp/err"
check "--device cuda in a build without CUDA says so" $?
"$decoserve" bench-offline --random-weights llama9 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "shape 'llama9'" "$tmp/err"
check "unknown random-weights shape named" $?
"$decoserve" bench-offline --model "$tmp/missing.gguf" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "missing.gguf" "$tmp/err"
check "missing model named" $?

finish
