#!/usr/bin/env bash
# tools/bench-attention/run.sh — on the GPU machine, from the repository root: PyTorch SDPA
# (sdpa.py) then our kernels (bench_attention, built by tests/gpu/build.sh into .carry/gpu), in
# one run on one GPU, so the ratios compare like with like.
#   tools/bench-attention/run.sh [out_dir] [extra bench_attention flags, e.g. --methods kivi,decoquant]
#   tools/bench-attention/run.sh "$OUT" --prefill     (causal prompts; SDPA causal as the peer)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp}}
shift || true
bin=${DS_GPU_BIN:-.carry/gpu}
[ -x "$bin/bench_attention" ] || tests/gpu/build.sh "$bin"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader || true
sdpa_args=()
for a in "$@"; do [ "$a" = --prefill ] && sdpa_args=(--prefill); done
PYTHONUNBUFFERED=1 python3 tools/bench-attention/sdpa.py "${sdpa_args[@]}" >"$out/sdpa.csv"
cat "$out/sdpa.csv"
"$bin/bench_attention" --sdpa "$out/sdpa.csv" --csv "$out/bench_attention.csv" "$@"
