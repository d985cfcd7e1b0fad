#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...] — builds the libFuzzer binaries with Debian's clang (ASan +
# UBSan, every UB fatal) and runs each target for SECONDS (default 30) on a copy of its committed
# corpus (fuzz/corpus/TARGET). Prints one line per target (executions, corpus files and coverage
# at the start and the end) and "N passed, N failed"; a crash, leak, timeout or out-of-memory
# fails its target, and the input that did it is kept in fuzz/crashes/TARGET/ (git-ignored):
# reproduce with the printed command, then fix the parser and commit the input into
# fuzz/corpus/TARGET/, where //fuzz:TARGET_corpus_test replays it on every `bazel test`.
#
# The clang build lives in a Bazel output base of its own (DECOSERVE_FUZZ_OUTPUT_BASE), so the
# gcc builds' outputs and the workspace's bazel-* links are untouched.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf hf tokenizer_json request openai)
output_base=${DECOSERVE_FUZZ_OUTPUT_BASE:-$HOME/.cache/decoserve-fuzz-bazel}
flags=(--repo_env=CC=clang --symlink_prefix=/ --copt=-Wno-error
    --copt=-fsanitize=fuzzer-no-link,address,undefined --copt=-fno-sanitize-recover=all
    --linkopt=-fsanitize=address,undefined)

labels=()
for t in "${targets[@]}"; do labels+=("//fuzz:${t}_fuzzer"); done
echo "== fuzz: clang build of ${labels[*]}"
if ! bazel --output_base="$output_base" build "${flags[@]}" "${labels[@]}" >"${TMPDIR:-/tmp}/fuzz-build.log" 2>&1; then
    tail -30 "${TMPDIR:-/tmp}/fuzz-build.log"
    echo "0 passed, 1 failed"
    exit 1
fi
bin=$(bazel --output_base="$output_base" info "${flags[@]}" bazel-bin 2>/dev/null)/fuzz
passed=0
failed=0
for t in "${targets[@]}"; do
    work=$(mktemp -d -p "$([ -d /dev/shm ] && echo /dev/shm || echo "${TMPDIR:-/tmp}")")
    mkdir -p "$work/corpus" "$work/tmp"
    cp fuzz/corpus/"$t"/* "$work/corpus/"
    n_seeds=$(ls "$work/corpus" | wc -l)
    # -rss_limit_mb: a parser that allocates what a small input claims is a finding, not noise.
    TMPDIR=$work/tmp UBSAN_OPTIONS=print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
        "$bin/${t}_fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" \
        >"$work/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    cov_start=$(grep -m1 -E "INITED" "$work/log" | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    cov_end=$(grep -E "cov: [0-9]+" "$work/log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
    n_corpus=$(ls "$work/corpus" | wc -l)
    artifacts=$(ls "$work" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' || true)
    if [ $rc -eq 0 ] && [ -z "$artifacts" ] && [ -n "$execs" ]; then
        passed=$((passed + 1))
        printf "ok   %-16s %9s runs in %ss, corpus %d -> %d files, coverage %s -> %s edges\n" \
            "$t" "$execs" "$seconds" "$n_seeds" "$n_corpus" "${cov_start:-?}" "${cov_end:-?}"
    else
        failed=$((failed + 1))
        mkdir -p fuzz/crashes/"$t"
        for a in $artifacts; do cp "$work/$a" fuzz/crashes/"$t"/; done
        echo "FAIL $t (exit $rc): kept ${artifacts:-no input} in fuzz/crashes/$t"
        grep -E "ERROR|SUMMARY|runtime error|==[0-9]+==" "$work/log" | head -20
        for a in $artifacts; do echo "  reproduce: $bin/${t}_fuzzer fuzz/crashes/$t/$a"; done
    fi
    rm -rf "$work"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
