#!/usr/bin/env bash
# Runs the Python test named like the target (grpc_test -> grpc_test.py, limits_test ->
# limits_test.py) with a Python that has grpcio and grpc_tools (Debian's python3-grpcio and
# python3-grpc-tools live in /usr/bin/python3, which a pyenv or venv python3 on PATH may hide).
set -uo pipefail
for py in python3 /usr/bin/python3; do
    if "$py" -c 'import grpc, grpc_tools' 2>/dev/null; then
        exec "$py" -u "$(dirname "$0")/$(basename "$0" .sh).py" "$@"
    fi
done
echo "$(basename "$0" .sh): no python3 with grpcio and grpc_tools (apt-get install python3-grpcio python3-grpc-tools)"
echo "0 passed, 1 failed"
exit 1
