#!/usr/bin/env bash
# CPU speed of decoserve against llama.cpp on the same GGUF, the same prompt tokens and the same
# machine, in one run: prompt tokens/s (one prompt of N tokens from Emma, 512 by default) and
# decode tokens/s (128 greedy steps after it), median of 3 runs, for every KV setting. llama.cpp
# comes from PyPI (llama-cpp-python builds it from source) and is driven by tools/peer_llamacpp.py.
#   tools/bench_cpu.sh [threads] [prompt tokens]   (needs: bazel build -c opt //server:decoserve)
# On a machine without network, LLAMACPP_WHEELS=DIR installs llama-cpp-python from a folder of
# wheels instead (pip --no-index --find-links DIR; numpy must be there already). One portable
# build (AVX2, no -march=native, one compile job, only the libraries the Python package loads):
#   CMAKE_BUILD_PARALLEL_LEVEL=1 CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DGGML_AVX=ON \
#     -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_OPENMP=OFF -DLLAMA_OPENSSL=OFF" \
#     nice -n 15 python3 -m pip wheel --no-deps llama-cpp-python==0.3.36 -w DIR
#   python3 -m pip download --no-deps -d DIR typing-extensions diskcache jinja2 MarkupSafe
# EMMA=FILE: the text the prompt comes from (default: the shared corpora's Emma).
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
prompt_tokens=${2:-512}
model=$(tools/fetch-model.sh)
emma=${EMMA:-/work/shared/corpora/janeausten/emma.txt}
bin=bazel-out/k8-opt/bin/server/decoserve
[ -x "$bin" ] || bazel build -c opt //server:decoserve >&2
if ! python3 -c "import llama_cpp" 2>/dev/null; then
    if [ -n "${LLAMACPP_WHEELS:-}" ]; then
        python3 -m pip install -q --no-index --find-links "$LLAMACPP_WHEELS" llama-cpp-python >&2
    else
        python3 -m pip install -q llama-cpp-python >&2
    fi
fi

head -c $((prompt_tokens * 20)) "$emma" >/tmp/bench_cpu_prompt.txt
echo "CPU speed, $(date -u +%F), $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), $threads threads," \
    "$prompt_tokens-token prompt, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| engine | KV cache | bytes/token | prompt tok/s | decode tok/s |"
echo "| --- | --- | --- | --- | --- |"
for kv in "16 fp16" "8 kivi" "4 kivi" "2 kivi" "4 decoquant"; do
    set -- $kv
    pp=() tg=()
    for rep in 1 2 3 4; do # the first run warms the page cache and is not counted
        line=$(DECOSERVE_THREADS=$threads "$bin" generate --model "$model" \
            --prompt-file /tmp/bench_cpu_prompt.txt --prompt-tokens "$prompt_tokens" --max-tokens 129 \
            --ignore-eos --kv-bits "$1" --kv-method "$2" 2>&1 >/dev/null | grep "prompt $prompt_tokens ")
        [ "$rep" -eq 1 ] && continue
        pp+=("$(sed -E 's/.*tokens in [0-9.]+ s \(([0-9.]+) tok\/s\); generated.*/\1/' <<<"$line")")
        tg+=("$(sed -E 's/.*generated [0-9]+ tokens in [0-9.]+ s \(([0-9.]+) tok\/s\).*/\1/' <<<"$line")")
    done
    bpt=$(DECOSERVE_THREADS=$threads "$bin" generate --model "$model" --prompt x --max-tokens 1 \
        --kv-bits "$1" --kv-method "$2" 2>&1 >/dev/null | sed -nE 's/.*: ([0-9]+) bytes\/token.*/\1/p')
    median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
    echo "| decoserve | $2 $1-bit | $bpt | $(median "${pp[@]}") | $(median "${tg[@]}") |"
done
python3 tools/peer_llamacpp.py speed --model "$model" --threads "$threads" --prompt-tokens "$prompt_tokens" \
    --gen-tokens 128 --repeats 3 --no-f16-noflash --text "$emma" --json /tmp/bench_cpu_llamacpp.json >/dev/null
python3 - <<'PY'
import json
d = json.load(open("/tmp/bench_cpu_llamacpp.json"))
bpt = {"f16": 23040, "q8_0": 23040 * 34 // 64, "q4_0": 23040 * 18 // 64}
for r in d["rows"]:
    print(f"| llama.cpp {d['version']} | {r['kv']} | {bpt[r['kv']]} | {r['pp_tok_s_median']:.1f} | "
          f"{r['tg_tok_s_median']:.1f} |")
PY
echo
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
