#!/usr/bin/env bash
# End-to-end GPU runs behind BENCHMARKS.md (run on the GPU machine from the repo root):
#   1. bench-offline with random Llama-3-8B weights (--random-weights llama3-8b, fp16 weights on
#      the GPU), 1024-token prompts + 256 output tokens, batch 1 / 16 / 64, kv-bits 16 / 8 / 4 / 2;
#      the pool sizes each run prints give the largest batch that fits at 32k context;
#   2. decoserve-loadgen against `decoserve serve` on the GPU, the same load and --kv-memory for
#      kv-bits 16 and 4 (closed loop, concurrency 128);
#   3. the loadgen sweep over kv-bits 16/8/4/2 at concurrency 32 and 128.
#   4. PARTS=tp (on a machine with 2 GPUs): bench-offline at batch 64 with --tensor-parallel 1
#      and 2, kv-bits 16 and 4.
# PARTS=sweep or PARTS=tp runs only that part (PARTS=all, the default, runs parts 1-3).
# Binaries come from a build with --define cuda=1 (see README, "GPU"): DIR holds decoserve,
# decoserve-loadgen and lib/ (the .so files the GPU machine lacks). Results go to OUT.
set -uo pipefail
D=${DIR:-.carry/ds}
OUT=${OUT:-/tmp/e2e}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$D/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PARTS=${PARTS:-all}
[ "$PARTS" = all ] && for bits in 16 4 8 2; do
    for batch in 1 16 64; do
        echo "== bench-offline kv-bits $bits batch $batch"
        "$D/decoserve" bench-offline --device cuda --random-weights llama3-8b --kv-bits "$bits" \
            --max-seqs "$batch" --num-prompts "$batch" --input-len 1024 --output-len 256 \
            --max-batched-tokens 4096 --json "$OUT/offline_${bits}_${batch}.json" 2>&1 | tail -4
    done
done
[ "$PARTS" = all ] && for bits in 16 4; do
    echo "== loadgen kv-bits $bits"
    log=$OUT/serve_$bits.log
    "$D/decoserve" serve --device cuda --random-weights llama3-8b --kv-bits "$bits" --port 0 \
        --kv-memory 8G --max-seqs 256 --max-batched-tokens 4096 2>"$log" &
    pid=$!
    for _ in $(seq 1 600); do grep -q "listening on" "$log" && break; sleep 0.1; done
    addr=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
    "$D/decoserve-loadgen" --target "$addr" --concurrency 128 --num-requests 256 \
        --input-len 2048 --output-len 256 --seed 0 --json "$OUT/loadgen_$bits.json" 2>/dev/null |
        tail -30
    kill -TERM $pid
    wait $pid
done
# 3. the loadgen kv-bits sweep (CSV + gnuplot script into $OUT/sweep; the GPU machine has no
#    gnuplot, so the PNGs are drawn afterwards with `gnuplot plots.gp` in that folder).
if [ "$PARTS" = all ] || [ "$PARTS" = sweep ]; then
    echo "== loadgen sweep"
    "$D/decoserve-loadgen" --sweep kv-bits=16,8,4,2 \
        --server-cmd "$D/decoserve serve --device cuda --random-weights llama3-8b" \
        --concurrency 32,128 --num-requests 128 --input-len 1024 --output-len 128 --seed 0 \
        --out-dir "$OUT/sweep" --json "$OUT/sweep.json" -- --kv-memory 8G --max-seqs 256 \
        --max-batched-tokens 4096 2>&1 | tail -20
fi
if [ "$PARTS" = tp ]; then
    for tp in 1 2; do
        for bits in 16 4; do
            echo "== bench-offline tensor-parallel $tp kv-bits $bits"
            "$D/decoserve" bench-offline --device cuda --tensor-parallel "$tp" \
                --random-weights llama3-8b --kv-bits "$bits" --max-seqs 64 --num-prompts 64 \
                --input-len 1024 --output-len 256 --max-batched-tokens 4096 \
                --json "$OUT/tp_${tp}_${bits}.json" 2>&1 | tail -4
        done
    done
fi
