"""soak_test — `decoserve serve` on the tiny model for SOAK_S seconds (DECOSERVE_SOAK_S: 120 in
the ASan pass, see .bazelrc; 15 otherwise) under decoserve-loadgen's closed loop plus a fault mix:
cancels mid-stream, 1-50 ms deadlines, malformed and non-UTF-8 messages, raw HTTP/2 clients that
send a Generate and never read their stream, connections reset (RST) mid-request, and a KV pool
small enough that the scheduler preempts; then SIGTERM with streams open.

Asserts: every call ends with a status (no thread hangs), loadgen accounts for every request
with none failed, the pools are whole once the load stops (0 leaked blocks) and preemption
happened, the server's RSS grows by less than RSS_GROWTH_MB from the warm-up to the end, it
exits 0 on SIGTERM, and its stderr holds no sanitizer report. Prints the outcomes by kind (the
numbers BENCHMARKS.md's Reliability section quotes).

Usage: soak_test.py DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO LOADGEN
"""

import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

import grpc

import serverlib as lib
from serverlib import pb

LOADGEN = sys.argv[5]
SOAK_S = float(os.environ.get("DECOSERVE_SOAK_S", "15"))
RSS_GROWTH_MB = 64
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")

# 8 sequences of up to ~130 tokens need ~65 blocks of 16; the pool holds about half of that.
# Under ASan a 16 MB quarantine (default 256 MB) keeps freed memory from passing for growth.
asan = ":".join(o for o in [os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=16"] if o)
srv = lib.Server(lib.tiny_model(), "--kv-memory", "280K", "--block-size", "16", "--max-seqs",
                 "8", "--idle-timeout", "5", "--handshake-timeout", "2", "--max-waiting", "256",
                 "--shutdown-grace", "5", env=dict(os.environ, ASAN_OPTIONS=asan))
stub = srv.stub
stop = threading.Event()
outcomes = collections.defaultdict(collections.Counter)  # fault kind -> status -> count
lock = threading.Lock()


def record(kind, status):
    with lock:
        outcomes[kind][status] += 1


def rss_mb():
    with open("/proc/%d/status" % srv.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


def call_status(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as e:
        return e.code().name


# --- the faults ---------------------------------------------------------------------------------


def cancels(rng):
    while not stop.is_set():
        call = stub.Generate(pb.GenerateRequest(prompt="Count: %d" % rng.randrange(1000),
                                                max_tokens=rng.randrange(20, 120),
                                                ignore_eos=True), timeout=60)
        after = rng.randrange(1, 6)

        def run():
            for i, _ in enumerate(call):
                if i + 1 >= after:
                    call.cancel()
        record("cancel", call_status(run))


def deadlines(rng):
    while not stop.is_set():
        timeout = rng.uniform(0.001, 0.050)
        record("deadline 1-50 ms", call_status(lambda: list(stub.Generate(
            pb.GenerateRequest(prompt="Story %d" % rng.randrange(1000), max_tokens=60,
                               ignore_eos=True), timeout=timeout))))


def malformed(rng):
    generate = srv.channel.unary_stream("/decoserve.v1.Decoserve/Generate")
    tokenize = srv.channel.unary_unary("/decoserve.v1.Decoserve/Tokenize")
    while not stop.is_set():
        kind = rng.randrange(4)
        if kind == 0:  # random bytes
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif kind == 1:  # a field cut short
            data = b"\x0a\x40abc"
        elif kind == 2:  # invalid UTF-8 in request_id or prompt
            data = rng.choice([bytes.fromhex("0a02486918025a01ff"), b"\x0a\x03ab\xc3"])
        else:  # a request_id over the limit
            data = b"\x0a\x01a\x5a\x82\x02" + b"x" * 258
        fn = (lambda: list(generate(data, timeout=10))) if rng.random() < 0.7 else \
            (lambda: tokenize(data, timeout=10))
        record("malformed", call_status(fn))
        time.sleep(0.005)


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def raw_generate(max_tokens):
    """An HTTP/2 connection's bytes up to a whole Generate request (HPACK literals)."""
    def literal(name, value):
        return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value
    headers = b"".join(literal(n, v) for n, v in [
        (b":method", b"POST"), (b":scheme", b"http"),
        (b":path", b"/decoserve.v1.Decoserve/Generate"), (b":authority", b"localhost"),
        (b"content-type", b"application/grpc"), (b"te", b"trailers")])
    req = pb.GenerateRequest(prompt="Never read %d" % max_tokens, max_tokens=max_tokens,
                             ignore_eos=True).SerializeToString()
    message = b"\x00" + struct.pack(">I", len(req)) + req
    return PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, headers) + frame(0, 1, 1, message)


def reset_close(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    s.close()


def never_read(rng):
    """A client that sends a Generate and never reads a byte, then resets the connection."""
    while not stop.is_set():
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(raw_generate(rng.randrange(100, 200)))
        stop.wait(rng.uniform(1.0, 3.0))
        reset_close(s)
        record("never reads, then RST", "reset")


def resets(rng):
    """Connections reset at each stage: mid-preface, after SETTINGS, mid-request, mid-stream."""
    full = raw_generate(120)
    cut_points = [10, len(PREFACE) + 9, len(full) - 20, len(full)]
    while not stop.is_set():
        s = socket.create_connection(("127.0.0.1", srv.port))
        cut = rng.choice(cut_points)
        s.sendall(full[:cut])
        if cut == len(full):
            s.settimeout(2)
            try:
                s.recv(100)  # the stream has started
            except socket.timeout:
                pass
        reset_close(s)
        record("connection reset", "reset at byte %d" % cut)
        time.sleep(0.02)


def loadgen_rounds():
    """decoserve-loadgen rounds (40 requests, 8 in flight, a quarter cancelled) until stopped."""
    rounds = []
    seed = 0
    while not stop.is_set():
        seed += 1
        out = os.path.join(lib.TMP, "loadgen-%d.json" % seed)
        subprocess.run([LOADGEN, "--target", srv.address, "--num-requests", "40", "--concurrency",
                        "8", "--input-len", "48", "--output-len", "64", "--range-ratio", "0.5",
                        "--cancel-fraction", "0.25", "--seed", str(seed), "--drain-timeout", "1",
                        "--json", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=600)
        with open(out) as f:
            rounds.append(json.load(f))
    return rounds


# --- the run ------------------------------------------------------------------------------------

workers = [(f, random.Random(i)) for i, f in enumerate(
    [cancels, cancels, deadlines, deadlines, malformed, never_read, resets])]
threads = [threading.Thread(target=f, args=(rng,), daemon=True) for f, rng in workers]
rounds = []
loadgen = threading.Thread(target=lambda: rounds.extend(loadgen_rounds()), daemon=True)
t0 = time.time()
for t in threads + [loadgen]:
    t.start()
time.sleep(SOAK_S * 0.25)
rss_warm = rss_mb()
time.sleep(SOAK_S * 0.75)
rss_end = rss_mb()
stop.set()
for t in threads + [loadgen]:
    t.join(120)
hung = [f.__name__ for (f, _), t in zip(workers, threads) if t.is_alive()]
if loadgen.is_alive():
    hung.append("loadgen")
stats = lib.wait_blocks_back(stub, timeout=60)


def check_every_call_ended():
    assert not hung, "calls that never ended: %s" % hung
    for kind, counts in sorted(outcomes.items()):
        print("  %-24s %s" % (kind, dict(counts)))
    assert outcomes["cancel"]["CANCELLED"] > 0, outcomes["cancel"]
    assert outcomes["deadline 1-50 ms"]["DEADLINE_EXCEEDED"] > 0, outcomes["deadline 1-50 ms"]
    bad = set(outcomes["malformed"]) - {"INVALID_ARGUMENT", "OK"}
    assert not bad and outcomes["malformed"]["INVALID_ARGUMENT"] > 0, outcomes["malformed"]


def check_loadgen_accounted():
    assert rounds, "no loadgen round finished"
    n = sum(r["requests"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    cancelled = sum(r["cancelled"] for r in rounds)
    failed = sum(r["failed"] for r in rounds)
    print("  loadgen: %d rounds, %d requests: %d ok, %d cancelled, %d failed" %
          (len(rounds), n, ok, cancelled, failed))
    assert ok + cancelled + failed == n and failed == 0, [
        q["error"] for r in rounds for q in r["per_request"] if q["outcome"] == "failed"][:5]


def check_pools_whole():
    print("  stats: %d submitted, %d finished, %d cancelled, %d failed, %d preemptions, "
          "full blocks %d/%d free, open %d/%d free" % (
              stats.requests_submitted, stats.requests_finished, stats.requests_cancelled,
              stats.requests_failed, stats.preemptions, stats.full_blocks_free,
              stats.full_blocks_total, stats.open_blocks_free, stats.open_blocks_total))
    assert stats.running == 0 and stats.waiting == 0, stats
    assert stats.full_blocks_free == stats.full_blocks_total, "leaked full blocks: %s" % stats
    assert stats.open_blocks_free == stats.open_blocks_total, "leaked open blocks: %s" % stats
    assert stats.preemptions > 0, "the pool never forced a preemption"


def check_rss_bounded():
    print("  RSS %.1f MB after warm-up, %.1f MB at the end (%.0f s soak)" %
          (rss_warm, rss_end, time.time() - t0))
    assert rss_end - rss_warm < RSS_GROWTH_MB, "RSS grew %.1f MB" % (rss_end - rss_warm)


def check_sigterm_with_streams_open():
    ends = []

    def one(i):
        ends.append(call_status(lambda: list(stub.Generate(
            pb.GenerateRequest(prompt="Last %d" % i, max_tokens=240, ignore_eos=True),
            timeout=60))))
    ts = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    time.sleep(0.05)
    rc = srv.stop()
    for t in ts:
        t.join(60)
    print("  SIGTERM: exit %d, open streams ended %s" % (rc, dict(collections.Counter(ends))))
    assert rc == 0, "exit %d" % rc
    assert len(ends) == 6 and set(ends) <= {"OK", "UNAVAILABLE"}, ends


def check_no_sanitizer_report():
    log = srv.stderr()
    found = [m for m in SANITIZER_MARKS if m in log]
    assert not found, "sanitizer report in the server log:\n" + log[-3000:]


lib.run_checks([
    check_every_call_ended,
    check_loadgen_accounted,
    check_pools_whole,
    check_rss_bounded,
    check_sigterm_with_streams_open,
    check_no_sanitizer_report,
], servers=[srv])
