#!/usr/bin/env bash
# Runs the Python test named like the target (http_test -> http_test.py, security_test ->
# security_test.py) with a Python that has openai, grpcio and grpc_tools (Debian's python3-grpcio
# and python3-grpc-tools, and openai from PyPI, live in /usr/bin/python3: tools/setup.sh).
set -uo pipefail
for py in python3 /usr/bin/python3; do
    if "$py" -c 'import openai, grpc, grpc_tools' 2>/dev/null; then
        exec "$py" -u "$(dirname "$0")/$(basename "$0" .sh).py" "$@"
    fi
done
echo "$(basename "$0" .sh): no python3 with openai, grpcio and grpc_tools (run tools/setup.sh)"
echo "0 passed, 1 failed"
exit 1
