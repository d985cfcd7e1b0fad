#!/usr/bin/env bash
# tests/gpu/run_model.sh — on the GPU machine, from the repository root: the whole model's logits,
# CUDA backend vs CPU forward pass (tests/gpu/model_test.c; PASS/FAIL lines, exit 1 on failure),
# then, with `bench`, decode throughput at Llama-3-8B shape (engine/cuda/bench_decode.c).
# Uses the binaries tests/gpu/build.sh built here (.carry/gpu, carried along) and the libraries
# tools/gpu_bundle.sh put in .carry/ds/lib.
#   tests/gpu/run_model.sh [test|bench|all] [bench_decode flags...]
#   tests/gpu/run_model.sh tp [N]      tensor parallelism on N GPUs over NCCL vs one GPU
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${DS_GPU_BIN:-.carry/gpu}
export LD_LIBRARY_PATH=${DS_LIB:-.carry/ds/lib}:${LD_LIBRARY_PATH:-}
if [ ! -x "$bin/model_test" ] || [ ! -x "$bin/bench_decode" ] || [ ! -x "$bin/tp_test" ]; then
    echo "FAIL no $bin/model_test, bench_decode or tp_test (run tests/gpu/build.sh or tools/gpu_bundle.sh first)"
    exit 1
fi
what=${1:-test}
shift || true
rc=0
if [ "$what" = test ] || [ "$what" = all ]; then "$bin/model_test" || rc=1; fi
if [ "$what" = tp ]; then "$bin/tp_test" "$@" || rc=1; fi
if [ "$what" = bench ] || [ "$what" = all ]; then "$bin/bench_decode" "$@" || rc=1; fi
exit $rc
