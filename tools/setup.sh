#!/usr/bin/env bash
# Installs what decoserve needs to build and test on Debian bookworm (by package name), then
# fetches the SmolLM2 model into the cache. Safe to run again. Used by README and .ci/run.
set -euo pipefail
packages=(
    bazel-bootstrap gcc libc6-dev python3 python3-pip clang-format
    libcmocka-dev libopenblas-dev liblapacke-dev libutf8proc-dev libcjson-dev
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler grpc-proto python3-grpcio python3-grpc-tools
    gnuplot-nox
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi
"$(dirname "$0")/fetch-model.sh" >/dev/null
