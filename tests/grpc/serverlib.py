"""serverlib — what the Python gRPC tests that start their own `decoserve serve` share: stubs
compiled from our .proto at test time, a server on a free port (plaintext or TLS, with or without
an API key), the tiny model, status checks and the one-line-per-check runner.

Usage from a test: `import serverlib as lib` with sys.argv = [script, DECOSERVE, MKMODEL,
DECOSERVE_PROTO, HEALTH_PROTO, ...].
"""

import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc
from grpc_tools import protoc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pylib"))
import checks as checks_lib  # noqa: E402

DECOSERVE, MKMODEL, DECOSERVE_PROTO, HEALTH_PROTO = sys.argv[1:5]
TMP = os.environ.get("TEST_TMPDIR") or tempfile.mkdtemp()
STARTUP_S = 300  # loading under ASan is slow

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


def tiny_model():
    """decoserve-mkmodel's tiny shape: loads in well under a second, even under ASan."""
    path = os.path.join(TMP, "tiny.gguf")
    if not os.path.exists(path):
        subprocess.run([MKMODEL, "--out", path, "--shape", "tiny", "--seed", "3", "--type", "f32"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


class Server:
    """A `decoserve serve` on a free port; its stderr is collected by a thread. .channel, .stub
    and .health speak plaintext; connect() gives another channel: plaintext, or TLS when root_ca
    (PEM bytes) is given. With --http-port among the flags, .http is its URL (http:// or
    https://HOST:PORT) once the server serves."""

    def __init__(self, model, *flags, env=None):
        self.proc = subprocess.Popen(
            [DECOSERVE, "serve", "--model", model, "--port", "0", *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=env)
        self.lines = []
        self.listening = threading.Event()
        self.address = self.http = None
        self.serves_http = "--http-port" in flags
        threading.Thread(target=self._read, daemon=True).start()
        if not self.listening.wait(STARTUP_S):
            self.proc.kill()
            raise RuntimeError("server did not start:\n" + self.stderr())
        self.port = int(self.address.rsplit(":", 1)[1])
        self.channel = grpc.insecure_channel(self.address)
        self.stub, self.health = stubs_of(self.channel)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"listening on (\S+)$", line.strip())
            if m:
                self.address = m.group(1)
                if not self.serves_http:
                    self.listening.set()
            m = re.search(r"OpenAI API on (https?://\S+)$", line.strip())
            if m:  # printed after the gRPC line
                self.http = m.group(1)
                self.listening.set()

    def stderr(self):
        return "".join(self.lines)

    def connect(self, root_ca=None, client_key=None, client_cert=None):
        if root_ca is None:
            return grpc.insecure_channel(self.address)
        creds = grpc.ssl_channel_credentials(root_certificates=root_ca, private_key=client_key,
                                             certificate_chain=client_cert)
        # The certificate names localhost; the server listens on 127.0.0.1.
        return grpc.secure_channel(self.address, creds,
                                   options=[("grpc.ssl_target_name_override", "localhost")])

    def stop(self):
        """SIGTERM; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def stubs_of(channel):
    return decoserve_pb2_grpc.DecoserveStub(channel), health_pb2_grpc.HealthStub(channel)


def expect_status(code, fragment, fn):
    """fn() must fail with code and details containing fragment; the error."""
    try:
        fn()
    except grpc.RpcError as e:
        assert e.code() == code, "got %s (%s), want %s" % (e.code(), e.details(), code)
        assert fragment in (e.details() or ""), "details %r lack %r" % (e.details(), fragment)
        return e
    raise AssertionError("succeeded, want %s" % code)


def wait_blocks_back(stub, timeout=20, metadata=None):
    """GetStats until nothing runs or waits and both KV pools are whole again; the last stats."""
    deadline = time.time() + timeout
    while True:
        s = stub.GetStats(pb.GetStatsRequest(), timeout=10, metadata=metadata)
        idle = s.running == 0 and s.waiting == 0
        whole = (s.open_blocks_free == s.open_blocks_total and
                 s.full_blocks_free == s.full_blocks_total)
        if (idle and whole) or time.time() > deadline:
            return s
        time.sleep(0.05)


def run_checks(checks, servers=()):
    """checks.run_checks, then "N passed, N failed"; exits 1 on any failure (after printing the
    log of any server in servers still running)."""
    passed, failed = checks_lib.run_checks(checks)
    for srv in servers:
        if srv.proc.poll() is None:
            srv.proc.kill()
            if failed:
                print("server log:\n" + srv.stderr())
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)
