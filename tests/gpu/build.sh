#!/usr/bin/env bash
# tests/gpu/build.sh — builds the GPU machine's programs with Bazel (--define cuda=1: nvcc for
# sm_90a + compute_90 PTX), here on the CPU machine, and copies them into a folder that travels
# to the GPU machine (.carry/gpu by default, git-ignored): gpu_test and bench_attention (kernels
# against their C references, and against SDPA), model_test, tp_test and bench_decode (the CUDA
# backend). One build path: the targets are //tests/gpu:gpu_programs, which CI builds too. The
# programs load the Debian libraries they link (OpenBLAS, cJSON, ...) from LD_LIBRARY_PATH
# (tools/gpu_bundle.sh carries them in .carry/ds/lib) and CUDA's from /usr/local/cuda/lib64.
#   tests/gpu/build.sh [out_dir]
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.carry/gpu}
bazel build -c opt --define cuda=1 //tests/gpu:gpu_programs
mkdir -p "$out"
for f in tests/gpu/gpu_test tests/gpu/model_test tests/gpu/tp_test engine/cuda/bench_decode \
    tools/bench-attention/bench_attention; do
    cp -f "bazel-bin/$f" "$out/"
    chmod u+w "$out/$(basename "$f")"
done
echo "built $out: gpu_test model_test tp_test bench_decode bench_attention"
