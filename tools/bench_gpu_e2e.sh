#!/usr/bin/env bash
# End-to-end GPU runs behind BENCHMARKS.md (run on the GPU machine from the repo root, after
# `tar xf .carry/bundle.tar.xz` from tools/gpu_bundle.sh). PARTS picks (default: all but tp):
#   step     bench_decode at 1k and 32k context, fp16 and kivi4, CUDA graphs against eager, each
#            row against its limit (weights + KV over the measured copy rate)
#   generate one sequence, 1024-token prompt, 256 decode steps (decoserve generate)
#   ttft     time to the first token of one long prompt (8000 and 32768 tokens, random
#            Llama-3.1-8B weights, 128k context), kv-bits 16 and 4: prefill speed end to end
#   offline  bench-offline with random Llama-3-8B weights, 64 x (1024 + 256) (max-seqs 64) and
#            256 x (1024 + 256) (max-seqs 256), kv-bits 16 and 4
#   loadgen  decoserve-loadgen against `decoserve serve`, 256 x (2048 + 256), concurrency 128,
#            --kv-memory 8G, kv-bits 16 / 8 / 4 / 2 (closed loop; CSV, JSON and the gnuplot
#            script of a sweep into $OUT/sweep: the GPU machine has no gnuplot, so the PNGs are
#            drawn afterwards with `gnuplot plots.gp` in that folder)
#   tp       (2 GPUs) bench-offline at batch 64 with --tensor-parallel 1 and 2, kv-bits 16 and 4
# Binaries: DIR (default .carry/ds: decoserve, decoserve-loadgen, lib/) and BIN (.carry/gpu:
# bench_decode). Results go to OUT.
set -uo pipefail
D=${DIR:-.carry/ds}
B=${BIN:-.carry/gpu}
OUT=${OUT:-/tmp/e2e}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=$D/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PARTS=${PARTS:-step generate offline loadgen}
has() { [[ " $PARTS " == *" $1 "* ]]; }
if has step; then
    "$B/bench_decode" --context 1024 --batches 1,16,64 --kv fp16,kivi4 --paths graph,eager \
        --steps 32 | tee "$OUT/step_1k.md"
    "$B/bench_decode" --context 32768 --no-prefill --batches 1,16 --kv fp16 --paths graph,eager \
        --steps 16 | tee "$OUT/step_32k_fp16.md"
    "$B/bench_decode" --context 32768 --no-prefill --batches 1,16,64 --kv kivi4 \
        --paths graph,eager --steps 16 | tee "$OUT/step_32k_kivi4.md"
fi
if has generate; then
    yes "It is a truth universally acknowledged." | head -400 >"$OUT/prompt.txt"
    for eager in "" --enforce-eager; do
        echo "== generate, one sequence, 1024-token prompt ${eager:-(graphs)}"
        "$D/decoserve" generate --device cuda --random-weights llama3-8b \
            --prompt-file "$OUT/prompt.txt" --prompt-tokens 1024 --max-tokens 256 --ignore-eos $eager 2>&1 >/dev/null | tail -3
    done
fi
if has ttft; then
    yes "It is a truth universally acknowledged." | head -12000 >"$OUT/long_prompt.txt"
    for n in 8000 32768; do
        for bits in 16 4; do
            echo "== generate, one ${n}-token prompt, kv-bits $bits, first token"
            "$D/decoserve" generate --device cuda --random-weights llama3.1-8b --kv-bits "$bits" \
                --prompt-file "$OUT/long_prompt.txt" --prompt-tokens "$n" --max-tokens 2 \
                --ignore-eos --max-batched-tokens 8192 --kv-memory 16G 2>&1 >/dev/null | tail -2
        done
    done
fi
if has offline; then
    for n in 64 256; do
        for bits in 16 4; do
            echo "== bench-offline $n x (1024 + 256) kv-bits $bits"
            "$D/decoserve" bench-offline --device cuda --random-weights llama3-8b \
                --kv-bits "$bits" --max-seqs "$n" --num-prompts "$n" --input-len 1024 \
                --output-len 256 --max-batched-tokens 4096 \
                --json "$OUT/offline_${n}_${bits}.json" 2>&1 | tail -4
        done
    done
fi
if has loadgen; then
    echo "== loadgen sweep, 256 x (2048 + 256), concurrency 128, --kv-memory 8G"
    "$D/decoserve-loadgen" --sweep kv-bits=16,8,4,2 \
        --server-cmd "$D/decoserve serve --device cuda --random-weights llama3-8b" \
        --concurrency 128 --num-requests 256 --input-len 2048 --output-len 256 --seed 0 \
        --out-dir "$OUT/sweep" --json "$OUT/sweep.json" -- --kv-memory 8G --max-seqs 256 \
        --max-batched-tokens 4096 2>&1 | tail -30
fi
if has tp; then
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
