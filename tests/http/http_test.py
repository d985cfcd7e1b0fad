"""http_test — `decoserve serve --http-port` as OpenAI clients see it: the official `openai`
Python client (streamed and not), curl, raw HTTP for every kind of bad input, and grpcio for the
engine's stats (the gRPC and HTTP paths share one engine).

Usage: http_test.py DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO

The model is $DECOSERVE_MODEL (the real SmolLM2, whose GGUF chat template is recognised as ChatML)
when set, else random weights of SmolLM2's shape made by decoserve-mkmodel (served with
--chat-template chatml). Prints one line per check and ends with "N passed, N failed".
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import openai
from prometheus_client.parser import text_string_to_metric_families

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "grpc"))
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))
from checks import run_checks  # noqa: E402
from http_json import exchange  # noqa: E402
# serverlib compiles the stubs from our .proto and reads DECOSERVE, MKMODEL and the protos from argv
from serverlib import (DECOSERVE, MKMODEL, STARTUP_S, TMP, decoserve_pb2_grpc,  # noqa: E402
                       health_pb2, health_pb2_grpc, pb)

REAL_MODEL = os.environ.get("DECOSERVE_MODEL", "")
REQUIRE_MODEL = os.environ.get("DECOSERVE_REQUIRE_MODEL", "") == "1"
SMOLLM_SYSTEM = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                 "Hugging Face<|im_end|>\n")


class Server:
    """A `decoserve serve` with gRPC and HTTP on free ports; stderr collected by a thread."""

    def __init__(self, model, *flags, wait_ready=True):
        self.proc = subprocess.Popen(
            [DECOSERVE, "serve", "--model", model, "--port", "0", "--http-port", "0", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.address = self.http = None
        self.bound, self.listening = threading.Event(), threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not (self.listening if wait_ready else self.bound).wait(STARTUP_S):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + self.stderr())
        self.channel = grpc.insecure_channel(self.address)
        self.stub = decoserve_pb2_grpc.DecoserveStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        host, port = self.http.rsplit(":", 1)
        self.host, self.port = host.strip("[]"), int(port)
        self.client = openai.OpenAI(base_url="http://%s/v1" % self.http, api_key="none",
                                    max_retries=0, timeout=120)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"loading the model; gRPC on (\S+), HTTP on http://(\S+)$", line.strip())
            if m:  # listening, not yet serving
                self.address, self.http = m.groups()
                self.bound.set()
            m = re.search(r"listening on (\S+)$", line.strip())
            if m:
                self.address = m.group(1)
            m = re.search(r"OpenAI API on http://(\S+)$", line.strip())
            if m:  # printed after the gRPC line
                self.http = m.group(1)
                self.listening.set()

    def stderr(self):
        return "".join(self.lines)

    def request(self, method, path, body=None, headers=None, timeout=120):
        """(status, parsed JSON or text) of one HTTP request."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        return exchange(conn, method, path, body, headers)

    def stats(self):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=10)


def make_model():
    if REAL_MODEL:
        return REAL_MODEL, []
    path = os.path.join(TMP, "smollm2-shape.gguf")
    subprocess.run([MKMODEL, "--out", path, "--shape", "smollm2-135m", "--seed", "7", "--type",
                    "q4_1"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path, ["--chat-template", "chatml"]


def grpc_text(stub, **fields):
    return "".join(m.text for m in stub.Generate(pb.GenerateRequest(**fields), timeout=120))


def wait_idle(srv, cancelled_at_least, timeout=20):
    """GetStats until nothing runs or waits and requests_cancelled reached the count."""
    deadline = time.time() + timeout
    while True:
        s = srv.stats()
        if (s.running == 0 and s.waiting == 0 and s.requests_cancelled >= cancelled_at_least) or \
                time.time() > deadline:
            return s
        time.sleep(0.05)


def open_stream(srv, body):
    """A raw socket with a streamed completion under way (its first event read)."""
    sock = socket.create_connection((srv.host, srv.port), timeout=60)
    data = json.dumps(body).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(data), data))
    got = b""
    while b"data: " not in got:
        chunk = sock.recv(4096)
        assert chunk, "stream closed before its first event: %r" % got
        got += chunk
    assert got.startswith(b"HTTP/1.1 200"), got
    return sock


# --- checks ---------------------------------------------------------------------------------

model, template_flags = make_model()
srv = Server(model, "--max-seqs", "1", "--max-waiting", "1", "--max-message-bytes", "65536",
             *template_flags)
MODEL_ID = os.path.basename(model)
QUESTION = "What is the capital of France?"
CHAT_PROMPT = ((SMOLLM_SYSTEM if REAL_MODEL else "") + "<|im_start|>user\n" + QUESTION +
               "<|im_end|>\n<|im_start|>assistant\n")


def check_models():
    models = srv.client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID], models
    assert models.data[0].owned_by == "decoserve", models


def check_completion():
    r = srv.client.completions.create(model=MODEL_ID, prompt="The capital of France is",
                                      max_tokens=8, temperature=0)
    text = r.choices[0].text
    # The same engine behind both APIs: gRPC's greedy text is the same.
    assert text == grpc_text(srv.stub, prompt="The capital of France is", max_tokens=8,
                             temperature=0), text
    if REAL_MODEL:
        assert text.startswith(" Paris"), text
    else:
        assert not REQUIRE_MODEL, "DECOSERVE_REQUIRE_MODEL=1 but DECOSERVE_MODEL is not set"
    assert r.object == "text_completion" and r.model == MODEL_ID and r.id.startswith("cmpl-"), r
    assert r.choices[0].finish_reason in ("stop", "length"), r
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens <= 8, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage
    chunks = list(srv.client.completions.create(model=MODEL_ID, prompt="The capital of France is",
                                                max_tokens=8, temperature=0, stream=True))
    assert len(chunks) > 1, "one chunk: not streamed"
    assert "".join(c.choices[0].text for c in chunks) == text, chunks
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1]), chunks
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason, chunks[-1]
    # Token ids, a stop string and a seed are honoured.
    ids = list(srv.stub.Tokenize(pb.TokenizeRequest(text="The capital of France is"),
                                 timeout=10).token_ids)
    r2 = srv.client.completions.create(model=MODEL_ID, prompt=ids, max_tokens=8, temperature=0)
    assert r2.choices[0].text == text, (r2.choices[0].text, text)
    a = srv.client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=12,
                                      temperature=0.9, top_p=0.95, seed=5)
    b = srv.client.completions.create(model=MODEL_ID, prompt="Once upon a time", max_tokens=12,
                                      temperature=0.9, top_p=0.95, seed=5)
    assert a.choices[0].text == b.choices[0].text, (a, b)
    if len(text) > 3:
        stop = text[2:4]
        r3 = srv.client.completions.create(model=MODEL_ID, prompt="The capital of France is",
                                           max_tokens=8, temperature=0, stop=[stop])
        assert r3.choices[0].text == text[:text.index(stop)], (r3.choices[0].text, stop)
        assert r3.choices[0].finish_reason == "stop", r3


def check_chat():
    messages = [{"role": "user", "content": QUESTION}]
    r = srv.client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=24,
                                           temperature=0)
    content = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant" and r.object == "chat.completion", r
    # The rendered prompt is what the model's template gives (SmolLM2 adds its system message).
    n_prompt = len(srv.stub.Tokenize(pb.TokenizeRequest(text=CHAT_PROMPT), timeout=10).token_ids)
    assert r.usage.prompt_tokens == n_prompt, (r.usage, n_prompt)
    grpc_content = grpc_text(srv.stub, prompt=CHAT_PROMPT, max_tokens=24, temperature=0)
    assert content == grpc_content.split("<|im_end|>")[0], (content, grpc_content)
    chunks = list(srv.client.chat.completions.create(model=MODEL_ID, messages=messages,
                                                     max_tokens=24, temperature=0, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content, (streamed, content)
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == n_prompt, chunks[-1]
    # Without max_tokens the context bounds the answer: accepted, and cut short here.
    before = srv.stats().requests_cancelled
    stream = srv.client.chat.completions.create(model=MODEL_ID, messages=messages, stream=True,
                                                extra_body={"ignore_eos": True})
    first = next(iter(stream))
    stream.close()
    assert first.choices[0].delta.role == "assistant", first
    s = wait_idle(srv, before + 1)
    assert s.requests_cancelled == before + 1, s


def check_curl():
    url = "http://%s/v1/completions" % srv.http
    body = json.dumps({"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4, "temperature": 0})
    out = subprocess.run(["curl", "-sS", "--fail-with-body", url, "-H",
                          "Content-Type: application/json", "-d", body],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    whole = json.loads(out.stdout)["choices"][0]["text"]
    body = json.dumps({"prompt": "Hello", "max_tokens": 4, "temperature": 0, "stream": True})
    out = subprocess.run(["curl", "-sS", "-N", "-i", url, "-d", body], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    head, _, events = out.stdout.replace("\r\n", "\n").partition("\n\n")
    assert "text/event-stream" in head.lower(), head
    lines = [ln for ln in events.split("\n\n") if ln.strip()]
    assert lines[-1] == "data: [DONE]", lines
    texts = [json.loads(ln[len("data: "):])["choices"][0]["text"] for ln in lines[:-1]]
    assert "".join(texts) == whole, (texts, whole)
    out = subprocess.run(["curl", "-sS", "http://%s/v1/models" % srv.http], capture_output=True,
                         text=True, timeout=30)
    assert json.loads(out.stdout)["data"][0]["id"] == MODEL_ID, out.stdout


def expect_error(status, param, fragment, method, path, body=None, headers=None):
    got, r = srv.request(method, path, body, headers)
    assert got == status, "%s %s %r: got %d %r, want %d" % (method, path, body, got, r, status)
    assert isinstance(r, dict) and set(r) == {"error"}, r
    e = r["error"]
    assert set(e) >= {"message", "type", "param", "code"}, e
    assert e["param"] == param, "param %r, want %r: %r" % (e["param"], param, e)
    assert fragment in e["message"], "message %r lacks %r" % (e["message"], fragment)
    assert not re.search(r"--[a-z]", e["message"]), "message %r names a flag" % e["message"]


def check_bad_input():
    c, ch = "/v1/completions", "/v1/chat/completions"
    user = [{"role": "user", "content": "hi"}]
    expect_error(400, None, "invalid JSON", "POST", c, '{"prompt": "x",')
    expect_error(400, None, "JSON object", "POST", c, "[1]")
    expect_error(400, "prompt", "required", "POST", c, {"max_tokens": 2})
    expect_error(400, "prompt", "empty", "POST", c, {"prompt": ""})
    expect_error(400, "prompt", "expected", "POST", c, {"prompt": {"a": 1}})
    expect_error(400, "max_tokens", "integer", "POST", c, {"prompt": "x", "max_tokens": "5"})
    expect_error(400, "max_tokens", ">= 1", "POST", c, {"prompt": "x", "max_tokens": 0})
    expect_error(400, "max_tokens", "context", "POST", c, {"prompt": "x", "max_tokens": 100000})
    expect_error(400, "temperature", "number", "POST", c, {"prompt": "x", "temperature": "hot"})
    expect_error(400, "temperature", "temperature", "POST", c, {"prompt": "x", "temperature": -1})
    expect_error(400, "top_p", "top_p", "POST", c, {"prompt": "x", "top_p": 1.5})
    expect_error(400, "stop", "string", "POST", c, {"prompt": "x", "stop": [1]})
    expect_error(400, "stop", "at most", "POST", c, {"prompt": "x", "stop": ["s"] * 17})
    expect_error(400, "stream", "true or false", "POST", c, {"prompt": "x", "stream": "yes"})
    expect_error(400, "n", "only 1", "POST", c, {"prompt": "x", "n": 2})
    expect_error(400, "logprobs", "not supported", "POST", c, {"prompt": "x", "logprobs": 1})
    expect_error(400, "prompt", "vocabulary", "POST", c, {"prompt": [1, 10 ** 7]})
    expect_error(400, "messages", "required", "POST", ch, {"prompt": "x"})
    expect_error(400, "messages", "empty", "POST", ch, {"messages": []})
    expect_error(400, "messages[0].role", "string", "POST", ch, {"messages": [{"content": "x"}]})
    expect_error(400, "messages[0].content", "string", "POST", ch,
                 {"messages": [{"role": "user", "content": 5}]})
    expect_error(400, "max_tokens", "context", "POST", ch, {"messages": user, "max_tokens": 10 ** 6})
    expect_error(413, None, "limit", "POST", c, {"prompt": "x" * 70000})
    expect_error(404, None, "no such endpoint", "GET", "/v1/nope")
    expect_error(405, None, "use POST", "GET", c)
    expect_error(405, None, "use GET", "POST", "/v1/models", {})
    # Unknown fields are ignored, as vLLM does.
    got, r = srv.request("POST", c, {"prompt": "x", "max_tokens": 1, "frobnicate": True,
                                     "presence_penalty": 0})
    assert got == 200 and r["usage"]["completion_tokens"] == 1, (got, r)
    # The openai client raises its typed error with our error object.
    try:
        srv.client.completions.create(model=MODEL_ID, prompt="x", max_tokens=0)
        raise AssertionError("max_tokens=0 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and e.body["param"] == "max_tokens", e.body
    # Still serving.
    assert srv.client.completions.create(model=MODEL_ID, prompt="x", max_tokens=2).usage


def check_queue_full_and_disconnect():
    """One running, one waiting: the third gets 429. Then both clients hang up mid-request and
    the engine cancels them (a streamed one and a whole one)."""
    before = srv.stats().requests_cancelled
    long = {"prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True, "stream": True}
    running = open_stream(srv, long)
    # Until the step that admitted it ends, the engine still counts it as waiting.
    deadline = time.time() + 20
    while srv.stats().running < 1 and time.time() < deadline:
        time.sleep(0.02)
    waiting = socket.create_connection((srv.host, srv.port), timeout=60)
    data = json.dumps(dict(long, stream=False)).encode()
    waiting.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(data), data))
    deadline = time.time() + 20
    while srv.stats().waiting < 1 and time.time() < deadline:
        time.sleep(0.02)
    s = srv.stats()
    assert s.running == 1 and s.waiting == 1, s
    expect_error(429, None, "max_waiting", "POST", "/v1/completions", {"prompt": "x"})
    try:
        srv.client.completions.create(model=MODEL_ID, prompt="x", max_tokens=1)
        raise AssertionError("a third request was accepted")
    except openai.RateLimitError as e:
        assert e.status_code == 429, e
    running.close()
    waiting.close()
    s = wait_idle(srv, before + 2)
    assert s.running == 0 and s.waiting == 0, s
    assert s.requests_cancelled == before + 2, (before, s)
    assert s.open_blocks_free == s.open_blocks_total, s


def scrape(server):
    """GET /metrics parsed by prometheus_client: {sample name: {labels tuple: value}}."""
    status, text = server.request("GET", "/metrics")
    assert status == 200 and isinstance(text, str), (status, text)
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return text, samples


def check_metrics():
    s = wait_idle(srv, 0)
    text, m = scrape(srv)
    assert s == srv.stats(), "the engine moved while idle"
    label = (("model_name", MODEL_ID),)
    info = srv.stub.ModelInfo(pb.ModelInfoRequest(), timeout=10)

    def vllm(name):
        return m[name][label]

    assert vllm("vllm:num_requests_running") == s.running == 0
    assert vllm("vllm:num_requests_waiting") == s.waiting == 0
    assert vllm("vllm:prompt_tokens_total") == s.prompt_tokens > 0, s
    assert vllm("vllm:generation_tokens_total") == s.generated_tokens > 0, s
    assert vllm("vllm:prefix_cache_queries_total") == s.prefix_cache_queries * info.block_size
    assert vllm("vllm:prefix_cache_hits_total") == s.prefix_cache_hits * info.block_size
    assert vllm("vllm:num_preemptions_total") == s.preemptions
    used = 1 - (s.open_blocks_free + s.full_blocks_free) / (s.open_blocks_total +
                                                           s.full_blocks_total)
    assert abs(vllm("vllm:kv_cache_usage_perc") - used) < 1e-12, (used, m)
    # Every generated token is one TTFT or one inter-token observation; every request that
    # finished (stop or length) one end-to-end one.
    ttft = m["vllm:time_to_first_token_seconds_count"][label]
    itl = m["vllm:inter_token_latency_seconds_count"][label]
    assert ttft + itl == s.generated_tokens, (ttft, itl, s.generated_tokens)
    assert m["vllm:e2e_request_latency_seconds_count"][label] == s.requests_finished, s
    for h in ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
              "vllm:e2e_request_latency_seconds"):
        buckets = sorted((float(dict(k)["le"]), v) for k, v in m[h + "_bucket"].items())
        counts = [v for _, v in buckets]
        assert counts == sorted(counts) and buckets[-1] == (float("inf"), m[h + "_count"][label])
        assert m[h + "_sum"][label] > 0, h
    assert m["decoserve_kv_bytes_per_token"][()] == s.kv_bytes_per_token
    assert m["decoserve_kv_compression_ratio"][()] == s.compression_ratio
    assert m["decoserve_kv_memory_bytes"][()] == s.kv_memory_bytes == info.kv_memory_bytes
    assert m["decoserve_kv_info"][(("bits", str(info.kv_bits)), ("method", info.kv_method))] == 1
    assert m["decoserve_kv_blocks"][(("pool", "full"), ("state", "total"))] == s.full_blocks_total
    assert m["decoserve_kv_blocks"][(("pool", "open"), ("state", "free"))] == s.open_blocks_free
    assert m["decoserve_preemptions_total"][()] == s.preemptions
    assert m["decoserve_requests_submitted_total"][()] == s.requests_submitted
    ended = m["decoserve_requests_ended_total"]
    assert ended[(("reason", "cancelled"),)] == s.requests_cancelled > 0, s
    assert ended[(("reason", "finished"),)] == s.requests_finished, s
    assert m["decoserve_ready"][()] == 1
    # Prometheus' own linter, where Debian's prometheus is installed: only its advice against
    # the ':' in vLLM's names is expected.
    promtool = subprocess.run(["sh", "-c", "command -v promtool"], capture_output=True, text=True)
    if promtool.returncode == 0:
        out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=30)
        problems = [ln for ln in (out.stdout + out.stderr).splitlines()
                    if ln.strip() and "should not contain ':'" not in ln]
        assert not problems, problems
    else:
        print("     (promtool not installed: lint skipped)")


def expect_unavailable(stub, fragment):
    try:
        list(stub.Generate(pb.GenerateRequest(prompt="x", max_tokens=1), timeout=30))
        raise AssertionError("Generate accepted")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAVAILABLE and fragment in e.details(), e


class Watch:
    """A Health/Watch stream read by a thread: the statuses as they come, and how it ended."""

    def __init__(self, server):
        self.statuses, self.end = [], None
        self.changed = threading.Condition()
        self.call = server.health.Watch(health_pb2.HealthCheckRequest(), timeout=STARTUP_S)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for r in self.call:
                with self.changed:
                    self.statuses.append(r.status)
                    self.changed.notify_all()
            self.end = "OK"
        except grpc.RpcError as e:
            self.end = e.code()
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, n, timeout=STARTUP_S):
        """The first n statuses."""
        with self.changed:
            self.changed.wait_for(lambda: len(self.statuses) >= n or self.end, timeout)
        return self.statuses[:n]


def check_loading_and_drain():
    """Listening before the model has loaded (NOT_SERVING, /health 200, /ready 503), SERVING
    once loaded; on SIGTERM NOT_SERVING and new requests refused on both doors while the ones in
    flight finish; Watch sees each change and ends when the server stops."""
    H = health_pb2.HealthCheckResponse
    srv2 = Server(model, "--shutdown-timeout", "60", *template_flags, wait_ready=False)
    try:
        watch = Watch(srv2)
        assert srv2.request("GET", "/health") == (200, {"status": "ok"})
        status, r = srv2.request("GET", "/ready")
        assert status == 503 and "loading" in r["error"]["message"], (status, r)
        check = srv2.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        expect_error_on = srv2.request("POST", "/v1/completions", {"prompt": "x"})
        assert expect_error_on[0] == 503 and "loading" in expect_error_on[1]["error"]["message"]
        assert srv2.listening.wait(STARTUP_S), srv2.stderr()
        assert check.status == H.NOT_SERVING, check  # asked while loading
        assert watch.wait_for(2) == [H.NOT_SERVING, H.SERVING], (watch.statuses, watch.end)
        assert srv2.request("GET", "/ready") == (200, {"status": "ready"})

        http_stream = open_stream(srv2, {"prompt": "Once upon a time", "max_tokens": 48,
                                         "ignore_eos": True, "stream": True})
        grpc_call = srv2.stub.Generate(pb.GenerateRequest(prompt="Hello", max_tokens=48,
                                                          ignore_eos=True), timeout=300)
        first = next(grpc_call)
        srv2.proc.send_signal(signal.SIGTERM)
        assert watch.wait_for(3, timeout=30)[2:] == [H.NOT_SERVING], (watch.statuses, watch.end)
        check = srv2.health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert check.status == H.NOT_SERVING, check
        status, r = srv2.request("GET", "/ready")
        assert status == 503 and "draining" in r["error"]["message"], (status, r)
        status, r = srv2.request("POST", "/v1/completions", {"prompt": "x"})
        assert status == 503 and "draining" in r["error"]["message"], (status, r)
        expect_unavailable(srv2.stub, "draining")
        # The requests in flight run to their end.
        rest = list(grpc_call)
        assert rest[-1].finish_reason == pb.FINISH_REASON_LENGTH, rest[-1]
        assert sum(len(m.token_ids) for m in [first] + rest) == 48
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            chunk = http_stream.recv(65536)
            if not chunk:
                break
            data += chunk
        assert b'"finish_reason":"length"' in data and b"data: [DONE]" in data, data[-300:]
        rc = srv2.proc.wait(60)
        assert rc == 0, "exit %d\n%s" % (rc, srv2.stderr())
        deadline = time.time() + 10
        while watch.end is None and time.time() < deadline:
            time.sleep(0.05)
        assert watch.end == grpc.StatusCode.UNAVAILABLE, watch.end
    finally:
        if srv2.proc.poll() is None:
            srv2.proc.kill()


def check_drain_timeout():
    """A request still running when --shutdown-timeout ends is cut with a final status: an error
    event and [DONE] on HTTP; the process exits 0."""
    srv2 = Server(model, "--shutdown-timeout", "1", *template_flags)
    try:
        sock = open_stream(srv2, {"prompt": "Once upon a time", "max_tokens": 4000,
                                  "ignore_eos": True, "stream": True})
        t0 = time.time()
        srv2.proc.send_signal(signal.SIGTERM)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"0\r\n\r\n"):
                break
        assert time.time() - t0 < 30, "the drain did not end at --shutdown-timeout"
        assert b'"error"' in data and b"shutting down" in data, data[-400:]
        assert data.rstrip().endswith(b"0") and b"data: [DONE]" in data, data[-200:]
        rc = srv2.proc.wait(60)
        assert rc == 0, "exit %d\n%s" % (rc, srv2.stderr())
    finally:
        if srv2.proc.poll() is None:
            srv2.proc.kill()


CHECKS = [
    check_models,
    check_completion,
    check_chat,
    check_curl,
    check_bad_input,
    check_queue_full_and_disconnect,
    check_metrics,
    check_loading_and_drain,
    check_drain_timeout,
]

passed, failed = run_checks(CHECKS)
if srv.proc.poll() is None:
    srv.proc.kill()
if failed:
    print("server log:\n" + srv.stderr())
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
