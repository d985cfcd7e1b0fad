#!/usr/bin/env bash
# tests/gpu/build_model.sh — builds the whole-model GPU check (model_test: CUDA backend vs the CPU
# forward pass), the decode throughput driver (bench_decode) and the tensor-parallel check
# (tp_test: N GPUs over NCCL vs one) with nvcc and gcc, here on the CPU machine, into the folder
# that travels to the GPU machine (.carry/model by default, git-ignored; carry it: about 37 MB).
# Same flags and static OpenBLAS / CUDA runtime as tests/gpu/build.sh (only model_test needs
# OpenBLAS, for the CPU reference); cuBLAS and NCCL are linked dynamically with an rpath to
# /usr/local/cuda/lib64, where the GPU machine has them.
#   tests/gpu/build_model.sh [out_dir]       (DS_CUDA_ARCHS as for build.sh)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.carry/model}
cuda=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$cuda/bin/nvcc}
read -r -a archs <<<"${DS_CUDA_ARCHS:--gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90}"
obj=$out.obj # beside the output, so it does not travel
mkdir -p "$out" "$obj"
cflags=(-std=c11 -O2 -g -ffunction-sections -fdata-sections -D_POSIX_C_SOURCE=200809L
    -D_DEFAULT_SOURCE -Wall -Wextra -Werror -Werror=implicit-function-declaration -I.
    -I"$cuda/include")
cuflags=(-std=c++17 -O3 -I. "${archs[@]}" -Werror all-warnings -Xcompiler -Wall,-Wextra)

# The backend and what it needs; the CPU forward pass (OpenBLAS) only for model_test.
backend_c=(common/half.c common/log.c common/status.c common/cli.c kvcache/decoquant.c
    kvcache/page_format.c kvcache/paged_cache.c engine/loader/model.c engine/loader/synthetic.c kernels/ops_ref.c kernels/kv_pages_ref.c
    kernels/paged_attention_ref.c engine/cuda/plan.c engine/cuda/cuda_backend.c engine/cuda/tp_backend.c engine/cuda/tp_comm.c engine/tp/shard.c engine/tp/bootstrap.c)
cpu_c=(common/threadpool.c kernels/qmatmul.c engine/llama.c)
main_c=(tests/gpu/model_test.c engine/cuda/bench_decode.c tests/gpu/tp_test.c)
cu=(kernels/paged_attention.cu kernels/kv_write.cu kernels/ops.cu kernels/forward_ops.cu)

pids=()
for f in "${cu[@]}"; do
    "$nvcc" "${cuflags[@]}" -c "$f" -o "$obj/$(basename "$f" .cu).cu.o" &
    pids+=($!)
done
for f in "${backend_c[@]}" "${cpu_c[@]}" "${main_c[@]}"; do
    gcc "${cflags[@]}" -c "$f" -o "$obj/$(basename "$f" .c).o"
done
for p in "${pids[@]}"; do wait "$p"; done

objs=()
for f in "${backend_c[@]}"; do objs+=("$obj/$(basename "$f" .c).o"); done
for f in "${cu[@]}"; do objs+=("$obj/$(basename "$f" .cu).cu.o"); done
cpu_objs=()
for f in "${cpu_c[@]}"; do cpu_objs+=("$obj/$(basename "$f" .c).o"); done
# --gc-sections drops ops_ref.c's GEMMs from bench_decode, and with them OpenBLAS.
link=(-Xlinker --gc-sections -L"$cuda/lib64" -lcublas -lnccl -Xlinker -rpath="$cuda/lib64")
"$nvcc" "${archs[@]}" -o "$out/model_test" "$obj/model_test.o" "${cpu_objs[@]}" "${objs[@]}" \
    "${link[@]}" -L/usr/lib/x86_64-linux-gnu/openblas-pthread -l:libopenblas.a -lpthread -lm
"$nvcc" "${archs[@]}" -o "$out/tp_test" "$obj/tp_test.o" "${objs[@]}" "${link[@]}" -lpthread -lm
"$nvcc" "${archs[@]}" -o "$out/bench_decode" "$obj/bench_decode.o" "${objs[@]}" "${link[@]}" \
    -lpthread -lm
echo "built $out/model_test $out/bench_decode $out/tp_test"
