#!/usr/bin/env bash
# tests/gpu/run_tp.sh — tensor parallelism end to end, on a machine with two GPUs, from the
# repository root, with the decoserve of a `--define cuda=1` build (DIR, default .carry/ds, with
# its lib/; see README "GPU"). One PASS/FAIL line per check, exit 1 if any failed:
#   1. greedy text of `decoserve generate --random-weights llama3-8b` (the GPU draws each rank's
#      slice of the same seeded matrices) is the same at TP=1 and TP=2 for kv-bits 16 (kv-bits 4:
#      an INFO line says how many tokens agree; a 4-bit code may round the other way when the
#      shards' sums arrive in another order, so tests/gpu/tp_test.c checks 4 bits on the logits),
#      and TP=2 as two processes (--nnodes 2 on one host, one GPU each: the multi-node path) is
#      identical to TP=2 in one process, kv-bits 16 and 4;
#   2. SmolLM2's shape (3 KV heads) does not split over 2 GPUs: a clear error, no crash;
#   3. a rank that dies: `serve` over two processes, node 1 killed with SIGKILL mid-stream: the
#      stream ends UNAVAILABLE within --tp-timeout, health says NOT_SERVING, new requests get
#      UNAVAILABLE, node 0 keeps answering and stops cleanly on SIGTERM;
#   4. node 0 dies: node 1 exits with an error within --tp-timeout instead of waiting forever;
#   5. node 1 started with another model: both nodes' start-up fails at once, naming why.
# Logs go to OUT (default /tmp/tp_e2e).
set -uo pipefail
cd "$(dirname "$0")/../.."
D=${DIR:-.carry/ds}
OUT=${OUT:-/tmp/tp_e2e}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$D/lib:${LD_LIBRARY_PATH:-}
DS=$D/decoserve
PORT=${MASTER_PORT:-29517}
TIMEOUT=10
fails=0
check() { # check NAME STATUS [detail]
    if [ "$2" -eq 0 ]; then echo "PASS $1${3:+ ($3)}"; else echo "FAIL $1${3:+ ($3)}"; fails=$((fails + 1)); fi
}
common=(--device cuda --random-weights llama3-8b --kv-memory 4G --max-seqs 8 --max-batched-tokens 1024)
prompt="The quick brown fox jumps over the lazy dog; tensor parallelism splits every layer."
gen() { # gen NAME [flags...]: greedy text into OUT/NAME.txt
    local name=$1
    shift
    "$DS" generate "${common[@]}" --prompt "$prompt" --max-tokens 48 --ignore-eos "$@" \
        >"$OUT/$name.txt" 2>"$OUT/$name.err"
}

# agree A B: "N M": the first N of A's M tokens equal B's (the synthetic tokenizer spells every
# token <|name|>)
agree() {
    python3 -c 'import re, sys
a, b = (re.findall(r"<\|[^|]*\|>", open(f).read()) for f in sys.argv[1:3])
n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(n, len(a))' "$1" "$2"
}

# 1. greedy equality
for bits in 16 4; do
    CUDA_VISIBLE_DEVICES=0 gen "tp1_$bits" --kv-bits "$bits"
    check "generate TP=1 kv $bits runs" $? "$(tail -1 "$OUT/tp1_$bits.err")"
    gen "tp2_$bits" --kv-bits "$bits" --tensor-parallel 2
    check "generate TP=2 kv $bits runs" $? "$(tail -1 "$OUT/tp2_$bits.err")"
    nodes=(--tensor-parallel 2 --nnodes 2 --master-addr 127.0.0.1 --master-port "$PORT"
        --tp-timeout 60 --kv-bits "$bits")
    CUDA_VISIBLE_DEVICES=1 "$DS" generate "${common[@]}" "${nodes[@]}" --node-rank 1 \
        --prompt x >"$OUT/node1_$bits.out" 2>"$OUT/node1_$bits.err" &
    n1=$!
    CUDA_VISIBLE_DEVICES=0 gen "nodes2_$bits" "${nodes[@]}" --node-rank 0
    rc0=$?
    wait $n1
    rc1=$?
    check "generate TP=2 over two processes kv $bits runs (node 0 rc $rc0, node 1 rc $rc1)" \
        $((rc0 | rc1)) "$(tail -1 "$OUT/node1_$bits.err")"
    same=$(agree "$OUT/tp1_$bits.txt" "$OUT/tp2_$bits.txt")
    # control: one GPU, the prompt prefilled in chunks of 32 instead of one (other GEMM shapes,
    # so other roundings, and nothing else changed)
    CUDA_VISIBLE_DEVICES=0 gen "tp1_chunked_$bits" --kv-bits "$bits" --max-batched-tokens 32
    control=$(agree "$OUT/tp1_$bits.txt" "$OUT/tp1_chunked_$bits.txt")
    echo "INFO kv $bits control: TP=1 prefilled in chunks of 32 agrees with TP=1 on the first" \
        "${control% *} of ${control#* } tokens"
    if [ "$bits" = 16 ]; then
        cmp -s "$OUT/tp1_$bits.txt" "$OUT/tp2_$bits.txt"
        check "kv $bits: greedy text TP=2 == TP=1" $? "first ${same% *} of ${same#* } tokens agree"
    else # 4-bit codes of K/V summed in another order may round to a neighbour: see tp_test
        echo "INFO kv $bits: greedy TP=2 agrees with TP=1 on the first ${same% *} of ${same#* } tokens"
    fi
    cmp -s "$OUT/tp2_$bits.txt" "$OUT/nodes2_$bits.txt"
    check "kv $bits: greedy text two processes == one process" $?
    PORT=$((PORT + 1))
done
head -c 300 "$OUT/tp1_16.txt" | od -c | head -3

# 2. a shape that does not split
"$DS" generate --device cuda --random-weights smollm2-135m --tensor-parallel 2 --prompt hi \
    --max-tokens 2 >/dev/null 2>"$OUT/smollm2.err"
[ $? -eq 1 ] && grep -q "n_kv_heads" "$OUT/smollm2.err"
check "SmolLM2 shape at TP=2 refused" $? "$(tail -1 "$OUT/smollm2.err")"

# serve_pair NAME: `serve` as two processes, one GPU each (logs OUT/NAME_node{0,1}.err); sets
# n0, n1 (their pids) and addr (node 0's gRPC address) once node 0 listens.
serve_pair() {
    local nodes=(--tensor-parallel 2 --nnodes 2 --master-addr 127.0.0.1 --master-port "$PORT"
        --tp-timeout "$TIMEOUT")
    PORT=$((PORT + 1))
    CUDA_VISIBLE_DEVICES=1 "$DS" serve "${common[@]}" "${nodes[@]}" --node-rank 1 \
        >/dev/null 2>"$OUT/$1_node1.err" &
    n1=$!
    CUDA_VISIBLE_DEVICES=0 "$DS" serve "${common[@]}" "${nodes[@]}" --node-rank 0 --port 0 \
        >/dev/null 2>"$OUT/$1_node0.err" &
    n0=$!
    for _ in $(seq 1 1200); do grep -q "listening on" "$OUT/$1_node0.err" && break; sleep 0.1; done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$OUT/$1_node0.err" | head -1)
}

# 3. node 1 dies under load
serve_pair serve
client() { "$DS" client "$1" --server "$addr" "${@:2}"; }
client health >"$OUT/health0.out" 2>&1
check "health SERVING with both nodes up" $? "$(cat "$OUT/health0.out")"
client generate --prompt "$prompt" --max-tokens 8 >/dev/null 2>"$OUT/gen_ok.err"
check "a request completes over two processes" $?
client generate --prompt "$prompt" --max-tokens 3000 --ignore-eos >/dev/null 2>"$OUT/gen_dead.err" &
cl=$!
sleep 2
t0=$(date +%s.%N)
kill -9 $n1
wait $cl
rc=$?
t1=$(date +%s.%N)
secs=$(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }")
[ $rc -ne 0 ] && grep -q "UNAVAILABLE" "$OUT/gen_dead.err"
check "in-flight stream ends UNAVAILABLE after node 1 died" $? "${secs}s; $(tail -1 "$OUT/gen_dead.err")"
client health >"$OUT/health1.out" 2>&1
[ $? -ne 0 ] && grep -q "NOT_SERVING" "$OUT/health1.out"
check "health NOT_SERVING after node 1 died" $? "$(cat "$OUT/health1.out")"
client generate --prompt hi --max-tokens 4 >/dev/null 2>"$OUT/gen_after.err"
[ $? -ne 0 ] && grep -q "UNAVAILABLE" "$OUT/gen_after.err"
check "new request UNAVAILABLE after node 1 died" $? "$(tail -1 "$OUT/gen_after.err")"
kill -0 $n0 2>/dev/null
check "node 0 still up" $?
kill -TERM $n0
running=1
for _ in $(seq 1 300); do kill -0 $n0 2>/dev/null || { running=0; break; }; sleep 0.1; done
[ $running -eq 0 ] || kill -9 $n0
wait $n0
check "node 0 stops on SIGTERM within 30 s" $running "rc $?"

# 4. node 0 dies: node 1 gives up within the timeout
serve_pair orphan
t0=$(date +%s.%N)
kill -9 $n0
wait $n0 2>/dev/null
for _ in $(seq 1 $((TIMEOUT * 30))); do kill -0 $n1 2>/dev/null || break; sleep 0.1; done
if kill -0 $n1 2>/dev/null; then
    kill -9 $n1
    check "node 1 exits after node 0 died" 1 "still running after $((TIMEOUT * 3)) s"
else
    wait $n1
    rc=$?
    secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
    [ $rc -eq 1 ]
    check "node 1 exits with an error after node 0 died" $? "rc $rc, ${secs}s; $(tail -1 "$OUT/orphan_node1.err")"
fi

# 5. a node whose model differs: start-up fails on both nodes, at once
t0=$(date +%s.%N)
nodes=(--tensor-parallel 2 --nnodes 2 --master-addr 127.0.0.1 --master-port "$PORT"
    --tp-timeout "$TIMEOUT" --device cuda --kv-memory 4G)
CUDA_VISIBLE_DEVICES=1 "$DS" serve --random-weights llama2-7b "${nodes[@]}" --node-rank 1 \
    >/dev/null 2>"$OUT/mismatch_node1.err" &
n1=$!
CUDA_VISIBLE_DEVICES=0 timeout 120 "$DS" serve --random-weights llama3-8b "${nodes[@]}" \
    --node-rank 0 --port 0 >/dev/null 2>"$OUT/mismatch_node0.err"
rc0=$?
wait $n1
rc1=$?
secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
[ $rc0 -eq 1 ] && [ $rc1 -eq 1 ] && grep -q "failed to start" "$OUT/mismatch_node0.err" &&
    grep -q "differs from this node's" "$OUT/mismatch_node1.err"
check "a node with another model: both start-ups fail" $? \
    "${secs}s; node 0: $(tail -1 "$OUT/mismatch_node0.err"); node 1: $(tail -1 "$OUT/mismatch_node1.err")"

echo "$fails failed"
[ $fails -eq 0 ]
