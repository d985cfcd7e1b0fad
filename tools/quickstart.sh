#!/usr/bin/env bash
# The README's first command: builds decoserve, fetches SmolLM2 if needed, starts the gRPC server
# on the CPU with a 4-bit compressed KV cache, streams one completion through the C client, prints
# the server's stats, and stops the server with SIGTERM. Extra arguments go to `decoserve serve`
# (e.g. --kv-bits 16, --kv-method decoquant).
set -euo pipefail
cd "$(dirname "$0")/.."
prompt=${PROMPT:-$'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n'}
bazel build -c opt //server:decoserve >&2
bin=$(bazel info -c opt bazel-bin 2>/dev/null)/server/decoserve
model=$(tools/fetch-model.sh)
log=$(mktemp)
"$bin" serve --model "$model" --port 0 --kv-bits 4 "$@" 2>"$log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
    grep -q "listening on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
done
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$log" | head -1)
echo "[quickstart] server on $address; streaming a completion:" >&2
"$bin" client generate --server "$address" --prompt "$prompt" --max-tokens 64 --temperature 0
"$bin" client stats --server "$address" >&2
