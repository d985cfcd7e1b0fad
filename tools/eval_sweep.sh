#!/usr/bin/env bash
# tools/eval_sweep.sh — issue 17's KV codec sweep on a many-core machine: perplexity on Emma and
# the Brown corpus for fp16 and every method x bit width, the `decoserve-eval kv` error tables,
# greedy agreement with fp16 on the fixture prompts, then tools/eval_summary.py's markdown.
#
#   tools/eval_sweep.sh bundle DIR       copy decoserve-eval and the shared libraries it needs
#                                        beyond glibc into DIR (DIR/lib) for a machine without them
#   tools/eval_sweep.sh --model GGUF --out DIR [options]     run the sweep (--help: options)
#
# Every job is one single-threaded decoserve-eval process (DECOSERVE_THREADS=1,
# OPENBLAS_NUM_THREADS=1), --jobs of them at once. Perplexity is cut into shards of
# --shard-windows windows of the protocol (windows start from an empty cache, so shards add up),
# run in waves: wave k is shard k of every (text, setting), the dearest settings first. So when
# the deadline stops the sweep every setting has the same windows done, and the summary compares
# them on the same first N tokens, N the longest prefix every setting finished (it says which).
# Order: the two kv tables (long single jobs), wave 0, greedy agreement, waves 1.., then the
# --long-tokens extension (fp16 and --long-configs on --long-text). Each job leaves
# DIR/jobs/NAME.{log,json,rc} when it ends; a failed or killed job is recorded there (rc != 0)
# and in the summary, never fatal. Run again into the same DIR, the sweep keeps the jobs that
# finished and runs the others.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)

if [[ ${1:-} == bundle ]]; then
    dest=${2:?usage: tools/eval_sweep.sh bundle DIR}
    bin=${3:-$REPO/bazel-bin/tools/eval/decoserve-eval}
    mkdir -p "$dest/lib" || exit 1
    cp -f "$bin" "$dest/" || exit 1
    # everything ldd resolves except glibc's own libraries and the loader
    ldd "$bin" | awk '/=> \//{print $3}' | while read -r lib; do
        case $(basename "$lib") in
        libc.so.* | libm.so.* | libpthread.so.* | libdl.so.* | librt.so.* | ld-linux*) ;;
        *) cp -fL "$lib" "$dest/lib/$(basename "$lib")" || exit 1 ;;
        esac
    done
    du -sh "$dest"
    exit 0
fi

usage() {
    cat <<'EOF'
usage: tools/eval_sweep.sh --model GGUF --out DIR [options]
  --bin DIR            decoserve-eval's directory (default bazel-bin/tools/eval); DIR/lib and
                       DIR go first on LD_LIBRARY_PATH (what `bundle` copies)
  --corpora DIR        janeausten/emma.txt and brown.txt (default: the first of ../shared/corpora,
                       shared/corpora, /work/shared/corpora that exists)
  --tokens N           perplexity tokens per text (16384)
  --ctx N --stride N   the protocol's window and stride (1024, 512)
  --methods "LIST"     (kivi rtn hadamard-rtn decoquant decoquant-hv)   --bits "LIST" (8 4 3 2)
  --weights W          ppl weights (f32: the format of BENCHMARKS §3's tables)
  --kv-read R          ppl and greedy: codec (default: every setting through the codec's round
                       trip, the only reading of the presets, so all are read alike), auto, engine
  --shard-windows W    windows per ppl job (4: ~1 min of one core)
  --kv-tokens N        tokens of the kv error tables (4096; the model's context at most)
  --greedy-tokens N    (256)   --prompts FILE (tests/fixtures/smollm2_logits.txt)
  --greedy-weights W   (f32, as BENCHMARKS §4 and the ppl runs: q4's 8-bit activations turn
                       the fp16-size differences of a compressed cache into early divergences)
  --long-tokens N      the extension's length (50000; 0: none)
  --long-text NAME     (emma)  --long-configs "LIST" (decoquant-hv:2; fp16 is always added)
  --jobs N             processes at once (the online CPUs)
  --deadline S         seconds from the start after which no job starts and running jobs are
                       killed (500); the summary follows
  --dry-run            print the job list and exit
EOF
}

MODEL="" OUT="" BIN=$REPO/bazel-bin/tools/eval CORPORA=""
TOKENS=16384 CTX=1024 STRIDE=512 METHODS="kivi rtn hadamard-rtn decoquant decoquant-hv" BITS="8 4 3 2"
WEIGHTS=f32 KV_READ=codec SHARD=4 KV_TOKENS=4096 GREEDY_TOKENS=256
PROMPTS=$REPO/tests/fixtures/smollm2_logits.txt GREEDY_WEIGHTS=f32
LONG_TOKENS=50000 LONG_TEXT=emma LONG_CONFIGS="decoquant-hv:2"
JOBS=$(nproc 2>/dev/null || echo 4) DEADLINE=500 DRY=0
while (($#)); do
    case $1 in
    --model) MODEL=$2 ;;
    --out) OUT=$2 ;;
    --bin) BIN=$2 ;;
    --corpora) CORPORA=$2 ;;
    --tokens) TOKENS=$2 ;;
    --ctx) CTX=$2 ;;
    --stride) STRIDE=$2 ;;
    --methods) METHODS=$2 ;;
    --bits) BITS=$2 ;;
    --weights) WEIGHTS=$2 ;;
    --kv-read) KV_READ=$2 ;;
    --shard-windows) SHARD=$2 ;;
    --kv-tokens) KV_TOKENS=$2 ;;
    --greedy-tokens) GREEDY_TOKENS=$2 ;;
    --prompts) PROMPTS=$2 ;;
    --greedy-weights) GREEDY_WEIGHTS=$2 ;;
    --long-tokens) LONG_TOKENS=$2 ;;
    --long-text) LONG_TEXT=$2 ;;
    --long-configs) LONG_CONFIGS=$2 ;;
    --jobs) JOBS=$2 ;;
    --deadline) DEADLINE=$2 ;;
    --dry-run) DRY=1; shift; continue ;;
    -h | --help) usage; exit 0 ;;
    *) echo "eval_sweep: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    if (($# < 2)); then echo "eval_sweep: $1 needs a value" >&2; exit 2; fi
    shift 2
done
if [[ -z $MODEL || -z $OUT ]]; then
    echo "eval_sweep: --model and --out are required (see --help)" >&2
    exit 2
fi
for n in TOKENS CTX STRIDE SHARD KV_TOKENS GREEDY_TOKENS LONG_TOKENS JOBS DEADLINE; do
    if ! [[ ${!n} =~ ^[0-9]+$ ]]; then
        echo "eval_sweep: ${n,,} = '${!n}': expected a whole number" >&2
        exit 2
    fi
done
if ((SHARD < 1 || JOBS < 1 || STRIDE < 1 || STRIDE > CTX)); then
    echo "eval_sweep: --shard-windows and --jobs >= 1, 1 <= --stride <= --ctx" >&2
    exit 2
fi
EVAL=$BIN/decoserve-eval
if [[ ! -x $EVAL ]]; then echo "eval_sweep: $EVAL: not an executable" >&2; exit 2; fi
if [[ ! -r $MODEL ]]; then echo "eval_sweep: --model $MODEL: cannot read" >&2; exit 2; fi
if [[ -z $CORPORA ]]; then
    for c in "$REPO/../shared/corpora" "$REPO/shared/corpora" /work/shared/corpora; do
        if [[ -d $c ]]; then CORPORA=$c; break; fi
    done
fi
export LD_LIBRARY_PATH="$BIN/lib:$BIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export DECOSERVE_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1

mkdir -p "$OUT/jobs" || exit 1
# the binary must run here at all (its shared libraries, the C library's version)
if ! "$EVAL" --help >"$OUT/preflight.txt" 2>&1; then
    echo "eval_sweep: $EVAL does not run here (LD_LIBRARY_PATH=$LD_LIBRARY_PATH):" >&2
    cat "$OUT/preflight.txt" >&2
    exit 1
fi
START=$(date +%s)
DEADLINE_AT=$((START + DEADLINE))
: >"$OUT/missing.txt"

# Texts present; a missing one is recorded and skipped.
declare -A TEXT=([emma]="${CORPORA:-/nonexistent}/janeausten/emma.txt"
    [brown]="${CORPORA:-/nonexistent}/brown.txt")
TEXTS=()
for t in emma brown; do
    if [[ -r ${TEXT[$t]} ]]; then TEXTS+=("$t"); else echo "text $t: ${TEXT[$t]} not found" >>"$OUT/missing.txt"; fi
done
if [[ ! -r $PROMPTS ]]; then echo "prompts: $PROMPTS not found" >>"$OUT/missing.txt"; fi

# Settings, dearest first (relative cost per window, this machine's single-core runs).
cost() {
    case $1 in
    decoquant-hv:*) echo 14 ;; decoquant:*) echo 13 ;; hadamard-rtn:*) echo 12 ;;
    kivi:*) echo 11 ;; rtn:*) echo 11 ;; *) echo 10 ;;
    esac
}
CONFIGS=()
for m in $METHODS; do for b in $BITS; do CONFIGS+=("$m:$b"); done; done
CONFIGS+=(fp16)
mapfile -t CONFIGS < <(for c in "${CONFIGS[@]}"; do echo "$(cost "$c") $c"; done | sort -s -k1,1nr | cut -d' ' -f2)

# protocol windows over n tokens: tools/eval/perplexity.h
windows() { if (($1 <= CTX)); then echo 1; else echo $((1 + ($1 - CTX + STRIDE - 1) / STRIDE)); fi; }

PLAN=$OUT/plan.txt
: >"$PLAN"
job() { printf '%s\t%s\n' "$1" "$2" >>"$PLAN"; } # NAME, then the decoserve-eval arguments
ppl_wave() {                                     # wave first end tokens configs...
    local first=$1 end=$2 n=$3 t c
    shift 3
    for c in "$@"; do
        for t in "${TEXTS[@]}"; do
            job "ppl_${t}_${c/:/-}_w${first}-${end}" "ppl --model $MODEL --text ${TEXT[$t]} --max-tokens $n --ctx $CTX --stride $STRIDE --weights $WEIGHTS --kv-read $KV_READ --configs $c --windows $first:$end"
        done
    done
}
for t in "${TEXTS[@]}"; do
    job "kv_$t" "kv --model $MODEL --text ${TEXT[$t]} --tokens $KV_TOKENS --queries 32 --bits ${BITS// /,}"
done
W=$(windows "$TOKENS")
ppl_wave 0 $((SHARD < W ? SHARD : W)) "$TOKENS" "${CONFIGS[@]}"
if [[ -r $PROMPTS ]]; then
    for c in "${CONFIGS[@]}"; do
        job "greedy_${c/:/-}" "greedy --model $MODEL --prompts $PROMPTS --max-tokens $GREEDY_TOKENS --weights $GREEDY_WEIGHTS --kv-read $KV_READ --configs $c"
    done
fi
for ((a = SHARD; a < W; a += SHARD)); do
    ppl_wave "$a" $((a + SHARD < W ? a + SHARD : W)) "$TOKENS" "${CONFIGS[@]}"
done
if ((LONG_TOKENS > TOKENS)) && [[ " ${TEXTS[*]} " == *" $LONG_TEXT "* ]]; then
    # the long run's windows that are full in the TOKENS run too are the same: only the rest is new
    LW=$(windows "$LONG_TOKENS") saved=("${TEXTS[@]}")
    FULL=$((TOKENS >= CTX ? (TOKENS - CTX) / STRIDE + 1 : 0))
    TEXTS=("$LONG_TEXT")
    for ((a = FULL; a < LW; a += SHARD)); do
        # shellcheck disable=SC2086 # LONG_CONFIGS is a list
        ppl_wave "$a" $((a + SHARD < LW ? a + SHARD : LW)) "$LONG_TOKENS" $LONG_CONFIGS fp16
    done
    TEXTS=("${saved[@]}")
fi
n_jobs=$(wc -l <"$PLAN")
# CPU seconds per 1024-token window and per job start, measured on the development machine (one
# shared core of an AMD EPYC): an estimate for planning, not a promise.
est=$(awk -F'\t' -v ctx="$CTX" '{ if (match($2, /--windows [0-9]+:[0-9]+/)) { split(substr($2, RSTART + 10, RLENGTH - 10), w, ":"); s += (w[2] - w[1]) * 10 * ctx / 1024 + 2 }
    else if ($1 ~ /^kv_/) s += 150; else s += 45 } END { printf "%d", s }' "$PLAN")
echo "eval_sweep: $n_jobs jobs, $JOBS at once, deadline ${DEADLINE}s; texts: ${TEXTS[*]:-none}; plan: $PLAN"
echo "eval_sweep: estimated ${est} CPU seconds, ~$((est / JOBS))s on $JOBS cores"
if ((DRY)); then cat "$PLAN"; exit 0; fi

# One job: its output, JSON (ppl, greedy) and exit status under DIR/jobs; killed at the deadline.
run_job() {
    local name=$1 args=$2 log=$OUT/jobs/$1.log left pid watch rc
    # a job that finished in an earlier run into the same DIR is kept, not run again
    if [[ $(cat "$OUT/jobs/$name.rc" 2>/dev/null) == 0 ]]; then return; fi
    left=$((DEADLINE_AT - $(date +%s)))
    if ((left < 5)); then
        echo "not started: deadline" >"$log"
        echo 125 >"$OUT/jobs/$name.rc"
        return
    fi
    local json=()
    [[ $name == ppl_* || $name == greedy_* ]] && json=(--json "$OUT/jobs/$name.json.part")
    # shellcheck disable=SC2086 # args is a word list built above (paths without spaces)
    "$EVAL" $args "${json[@]}" >"$log" 2>&1 &
    pid=$!
    sleep "$left" >/dev/null 2>&1 &
    watch=$!
    wait -n # the job or the deadline, whichever ends first
    rc=$?
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid"
        rc=124
        echo "killed: deadline" >>"$log"
    else
        kill "$watch" 2>/dev/null
        wait "$watch" 2>/dev/null
    fi
    # a JSON file only for a job that finished: a killed job's partial lines are not results
    if ((rc == 0)) && [[ -e $OUT/jobs/$name.json.part ]]; then
        mv "$OUT/jobs/$name.json.part" "$OUT/jobs/$name.json"
    fi
    echo "$rc" >"$OUT/jobs/$name.rc"
    printf '%s rc=%s %ss\n' "$name" "$rc" $(($(date +%s) - START)) >>"$OUT/progress.txt"
}

while IFS=$'\t' read -r name args; do
    while (($(jobs -rp | wc -l) >= JOBS)); do wait -n; done
    run_job "$name" "$args" </dev/null &
done <"$PLAN"
wait
echo "eval_sweep: jobs done after $(($(date +%s) - START))s"
python3 "$REPO/tools/eval_summary.py" "$OUT" >"$OUT/summary.md"
echo "eval_sweep: $OUT/summary.md ($(($(date +%s) - START))s)"
