#!/usr/bin/env bash
# tools/gpu_bundle.sh — builds everything the GPU machine runs, here on the build machine, and
# packs it into one archive that fits the device tool's 64 MiB carry: the --define cuda=1
# decoserve and decoserve-loadgen (with lib/: the .so files the GPU machine lacks) and the test
# programs of tests/gpu/build.sh. On the GPU machine: `tar xf .carry/bundle.tar.xz` gives
# .carry/ds and .carry/gpu.
#   tools/gpu_bundle.sh            (writes .carry/bundle.tar.xz; .carry/ is git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
bazel build -c opt --define cuda=1 //server:decoserve //tools/loadgen:decoserve-loadgen \
    //tests/gpu:gpu_programs
rm -rf .carry/ds && mkdir -p .carry/ds/lib
cp -f bazel-bin/server/decoserve bazel-bin/tools/loadgen/decoserve-loadgen .carry/ds/
chmod u+w .carry/ds/*
strip --strip-debug .carry/ds/decoserve .carry/ds/decoserve-loadgen
tests/gpu/build.sh .carry/gpu
# Shared libraries from Debian's packages; glibc, the C++ runtime and CUDA's own are there.
ldd .carry/ds/decoserve .carry/ds/decoserve-loadgen .carry/gpu/* | awk '/=>/ {print $3}' | sort -u |
    grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so|libcu|libnccl' |
    xargs -I{} cp -fL {} .carry/ds/lib/
strip --strip-debug .carry/gpu/*
tar -C . -cJf .carry/bundle.tar.xz .carry/ds .carry/gpu
ls -la .carry/bundle.tar.xz
