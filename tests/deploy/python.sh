#!/usr/bin/env bash
# Runs a deploy test (the first argument, a .py) with a python3 that has what the tests import:
# grpcio and grpc_tools (Debian's python3-grpcio, python3-grpc-tools), PyYAML, jsonschema and
# kubernetes-validate (PyPI, by tools/setup.sh). A pyenv or venv python3 on PATH may lack them.
set -uo pipefail
script=$1
shift
for py in python3 /usr/bin/python3; do
    if "$py" -c 'import grpc, grpc_tools, yaml, jsonschema, kubernetes_validate' 2>/dev/null; then
        exec "$py" -u "$script" "$@"
    fi
done
echo "$(basename "$script"): no python3 with grpcio, grpc_tools, yaml, jsonschema and" \
    "kubernetes_validate (run tools/setup.sh)"
echo "0 passed, 1 failed"
exit 1
