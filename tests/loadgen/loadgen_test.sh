#!/usr/bin/env bash
# loadgen_test — decoserve-loadgen as an operator runs it, against a real `decoserve serve` on a
# tiny model made by decoserve-mkmodel, even when DECOSERVE_MODEL is set (the same code paths as
# SmolLM2, in seconds even under ASan, where 64 SmolLM2 requests take minutes): a closed-loop load
# with cancellations where every request is accounted for and the KV pools come back whole,
# Poisson arrivals, a kv-bits sweep with its CSV and plots, and flags that get clear errors.
set -uo pipefail
decoserve=$1
mkmodel=$2
loadgen=$3
. "$(dirname "$0")/../cli/testlib.sh"

# The JSON is read with Python's standard library (any python3).
py=python3
command -v $py >/dev/null 2>&1 || py=/usr/bin/python3

"$mkmodel" --out "$tmp/tiny.gguf" --shape tiny --seed 3 --type f32 >/dev/null 2>&1
check "mkmodel writes a model" $?
tiny=$tmp/tiny.gguf

"$decoserve" serve --model "$tiny" --port 0 --kv-memory 1M --max-seqs 8 --block-size 16 \
    2>"$tmp/server.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
for _ in $(seq 1 600); do
    grep -q "listening on" "$tmp/server.log" && break
    kill -0 $server 2>/dev/null || break
    sleep 0.1
done
address=$(sed -n 's/.*listening on \([^ ]*\).*/\1/p' "$tmp/server.log" | head -1)
[ -n "$address" ]
check "server listens" $?

# 64 requests, 8 in flight, a quarter cancelled at random points.
"$loadgen" --target "$address" --num-requests 64 --concurrency 8 --input-len 40 --output-len 24 \
    --range-ratio 0.5 --cancel-fraction 0.25 --seed 1 --json "$tmp/run.json" \
    >"$tmp/out" 2>"$tmp/err"
check "closed loop with cancellations: exit 0" $?
grep -q "pools full again *yes" "$tmp/out"
check "the table says the pools are full again" $?
grep -q "64/64 done" "$tmp/err"
check "progress line on stderr" $?
$py - "$tmp/run.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
reqs, kv, st, before = r["per_request"], r["kv"], r["server_stats"], r["server_stats_before"]
ok = [q for q in reqs if q["outcome"] == "ok"]
fails = []
def want(cond, what):
    if not cond:
        fails.append(what)
want(r["requests"] == 64 and len(reqs) == 64, "64 requests reported")
want(r["ok"] + r["cancelled"] + r["failed"] == 64, "every request accounted for")
want(r["failed"] == 0,
     "no failed request: %s" % [q["error"] for q in reqs if q["outcome"] == "failed"])
want(r["cancel_requested"] == 16, "round(0.25 * 64) = 16 cancels requested")
want(r["cancelled"] >= 1, "at least one stream cancelled mid-flight")
want(all(q["status"] in ("OK", "CANCELLED") for q in reqs), "statuses are OK or CANCELLED")
want(all(q["cancel_requested"] and q["outcome"] == "cancelled"
         for q in reqs if q["status"] == "CANCELLED"),
     "CANCELLED only where the loadgen cancelled, and reported as cancelled")
want(r["by_status"].get("CANCELLED", 0) == r["cancelled"], "by_status counts the cancels")
want(all(q["output_tokens"] == q["max_tokens"] and q["finish_reason"] == "FINISH_REASON_LENGTH"
         for q in ok), "EOS ignored: every successful request got max_tokens tokens")
want(all(0 <= q["ttft_s"] <= q["latency_s"] for q in ok), "0 <= TTFT <= latency")
want(r["output_tokens"] == sum(q["output_tokens"] for q in ok), "output tokens add up")
want(r["ttft_s"]["n"] == len(ok), "one TTFT per successful request")
want(r["itl_s"]["n"] == sum(q["output_tokens"] - 1 for q in ok), "tokens - 1 ITLs per request")
d = r["ttft_s"]
want(d["p50"] <= d["p90"] <= d["p99"], "percentiles ordered")
want(kv["pools_full"] is True, "pools full again")
want(st["running"] == 0 and st["waiting"] == 0, "nothing running or waiting")
want(st["open_blocks_free"] == st["open_blocks_total"] and
     st["full_blocks_free"] == st["full_blocks_total"], "both block pools whole")
# A stream cancelled after the engine finished it counts as finished there, cancelled here.
finished = st["requests_finished"] - before["requests_finished"]
want(r["ok"] <= finished <= r["ok"] + r["cancelled"],
     "the server finished %d requests; %d succeeded, %d cancelled" % (finished, r["ok"],
                                                                     r["cancelled"]))
want(kv["bytes_per_token"] > 0 and kv["peak_running"] == 8, "KV stats: 8 sequences at once")
for f in fails:
    print("FAIL (json):", f)
sys.exit(1 if fails else 0)
EOF
check "closed loop: the JSON holds together" $?

# Poisson arrivals, no concurrency limit.
"$loadgen" --target "$address" --num-requests 24 --rate 200 --input-len 30 --output-len 8 \
    --seed 2 --json "$tmp/rate.json" >"$tmp/out" 2>"$tmp/err"
check "Poisson arrivals: exit 0" $?
$py -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(not (r["ok"] == 24 and
r["load"]["rate"] == 200 and r["load"]["concurrency"] == 0 and r["kv"]["pools_full"]))' \
    "$tmp/rate.json"
check "Poisson arrivals: 24 ok, pools full" $?

# A sweep over kv-bits in a squeezed pool: fresh servers, CSV, plots, more sequences at 4 bits.
"$loadgen" --sweep kv-bits=16,4 --decoserve "$decoserve" --model "$tiny" --concurrency 2,32 \
    --num-requests 48 --input-len 60 --output-len 60 --out-dir "$tmp/sweep" \
    --json "$tmp/sweep.json" -- --kv-memory 400K --max-seqs 32 --block-size 16 \
    --max-batched-tokens 128 >"$tmp/out" 2>"$tmp/err"
check "sweep: exit 0" $?
[ "$(wc -l <"$tmp/sweep/sweep.csv")" -eq 5 ] && head -1 "$tmp/sweep/sweep.csv" | grep -q "^kv_bits,"
check "sweep: CSV with a header and 4 points" $?
for png in throughput seqs_per_gib; do
    [ "$(head -c 4 "$tmp/sweep/$png.png" | tail -c 3)" = "PNG" ]
    check "sweep: $png.png is a PNG" $?
done
$py - "$tmp/sweep.json" <<'EOF'
import json, sys
points = json.load(open(sys.argv[1]))
peak = {(p["sweep"]["value"], p["sweep"]["concurrency"]): p["kv"]["peak_running"] for p in points}
ok = len(points) == 4 and all(p["ok"] == 48 and p["kv"]["pools_full"] for p in points)
print("peak running at concurrency 32: 16-bit %d, 4-bit %d" % (peak[("16", 32)], peak[("4", 32)]))
sys.exit(0 if ok and peak[("4", 32)] > peak[("16", 32)] else 1)
EOF
check "sweep: every point complete, more sequences at 4 bits in the same memory" $?

# Bad flags and unreachable servers: clear errors, exit 2 (usage) or 1 (runtime).
"$loadgen" --target "$address" --concurrency 0 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--concurrency" "$tmp/err"
check "concurrency 0 rejected" $?
"$loadgen" --num-requests 4 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--target" "$tmp/err"
check "no target rejected" $?
"$loadgen" --target "$address" --concurrency 1,2 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--sweep" "$tmp/err"
check "a concurrency list needs --sweep" $?
"$loadgen" --sweep kv-bits --decoserve "$decoserve" --model "$tiny" >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q -- "--sweep" "$tmp/err"
check "malformed --sweep rejected" $?
"$loadgen" --target "$address" --input-len 250 --output-len 20 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "context" "$tmp/err"
check "prompts over the context rejected before any request" $?
"$loadgen" --target "$address" --prompt-file "$tmp/missing.txt" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "missing.txt" "$tmp/err"
check "missing prompt file named" $?
kill -TERM $server && wait $server
"$loadgen" --target "$address" --num-requests 4 >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q -- "--target $address" "$tmp/err"
check "a server that is gone: --target named" $?

finish
