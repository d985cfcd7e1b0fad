#!/usr/bin/env bash
# tests/gpu/build.sh — builds the GPU checks (gpu_test) and the attention benchmark
# (bench_attention) with nvcc, here on the CPU machine, into a folder that travels to the GPU
# machine: .carry/gpu by default (git-ignored; carry it). CUDA-only, so outside Bazel's //...
#   tests/gpu/build.sh [out_dir]        DS_CUDA_ARCHS overrides the targets (e.g. sm_80 only:
#   DS_CUDA_ARCHS="-gencode=arch=compute_80,code=sm_80" tests/gpu/build.sh /tmp/sm80)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.carry/gpu}
cuda=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$cuda/bin/nvcc}
read -r -a archs <<<"${DS_CUDA_ARCHS:--gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90}"
obj=${DS_GPU_OBJ:-$out.obj} # objects stay behind: only $out travels
mkdir -p "$out" "$obj"
# -ffunction-sections + --gc-sections: ops_ref.c's GEMMs (OpenBLAS) are dropped, the GPU machine
# has no OpenBLAS.
cflags=(-std=c11 -O2 -g -ffunction-sections -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Werror
    -Werror=implicit-function-declaration -I. -I"$cuda/include")
cuflags=(-std=c++17 -O3 -I. "${archs[@]}" -Werror all-warnings -Xcompiler -Wall,-Wextra)

c_sources=(common/half.c common/log.c common/status.c kvcache/decoquant.c kvcache/page_format.c kernels/kv_pages_ref.c
    kernels/paged_attention_ref.c kernels/kv_write_ref.c kernels/sample_ref.c kernels/ops_ref.c
    kernels/forward_ops_ref.c kernels/kv_fixture.c tests/gpu/gpu_test.c
    tools/bench-attention/bench_attention.c)
cu_sources=(kernels/paged_attention.cu kernels/kv_write.cu kernels/ops.cu kernels/forward_ops.cu)

pids=()
for f in "${cu_sources[@]}"; do
    "$nvcc" "${cuflags[@]}" -c "$f" -o "$obj/$(basename "$f" .cu).cu.o" &
    pids+=($!)
done
for f in "${c_sources[@]}"; do
    gcc "${cflags[@]}" -c "$f" -o "$obj/$(basename "$f" .c).o"
done
for p in "${pids[@]}"; do wait "$p"; done

# The CUDA runtime is linked statically (nvcc's default): the binaries need only libc/libstdc++.
common=(common/half common/log common/status kvcache/decoquant kvcache/page_format kernels/kv_pages_ref
    kernels/paged_attention_ref kernels/kv_write_ref kernels/sample_ref kernels/ops_ref
    kernels/forward_ops_ref kernels/kv_fixture)
objs=()
for f in "${common[@]}"; do objs+=("$obj/$(basename "$f").o"); done
for f in "${cu_sources[@]}"; do objs+=("$obj/$(basename "$f" .cu).cu.o"); done
link=(-Xlinker --gc-sections -lm)
"$nvcc" "${archs[@]}" -o "$out/gpu_test" "$obj/gpu_test.o" "${objs[@]}" "${link[@]}"
"$nvcc" "${archs[@]}" -o "$out/bench_attention" "$obj/bench_attention.o" "${objs[@]}" \
    "${link[@]}"
echo "built $out/gpu_test $out/bench_attention"
