#!/usr/bin/env bash
# tests/gpu/run.sh — the one command for the GPU machine, from the repository root: every CUDA
# kernel against its C reference (tests/gpu/gpu_test.c) and, with `all` (the default), the whole
# model's logits CUDA vs CPU (tests/gpu/run_model.sh test) and, on a machine with two or more GPUs,
# TP=2 over NCCL vs one GPU; PASS/FAIL per check, exit 1 on any failure. Uses the binaries built
# here by tests/gpu/build.sh (.carry/gpu) and the libraries of tools/gpu_bundle.sh (.carry/ds/lib),
# carried along.
#   tests/gpu/run.sh [attention|compress|ops|gemv|sample|all]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${DS_GPU_BIN:-.carry/gpu}
export LD_LIBRARY_PATH=${DS_LIB:-.carry/ds/lib}:${LD_LIBRARY_PATH:-}
if [ ! -x "$bin/gpu_test" ]; then
    echo "FAIL no $bin/gpu_test (run tests/gpu/build.sh or tools/gpu_bundle.sh first)"
    exit 1
fi
what=${1:-all}
rc=0
"$bin/gpu_test" "$what" || rc=1
if [ "$what" = all ]; then
    tests/gpu/run_model.sh test || rc=1
    # with two or more GPUs, also tensor parallelism over NCCL against one GPU
    if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then tests/gpu/run_model.sh tp 2 || rc=1; fi
fi
exit $rc
