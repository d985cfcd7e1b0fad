"""security_test — TLS, mutual TLS and API keys on the HTTP port: `--http-port` with the gRPC
port's `--tls-cert/--tls-key/--tls-client-ca` and `--api-key-file` (issue 19 item 2), seen by the
official `openai` client, curl and raw HTTPS. The CAs are made at test time (tests/pylib/pki.py).

Usage: security_test.py DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO
Runs on the tiny model; prints one line per check and ends with "N passed, N failed".
"""

import http.client
import json
import os
import ssl
import subprocess
import sys
from urllib.parse import urlsplit

import openai

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "grpc"))
sys.path.insert(0, os.path.join(HERE, "..", "pylib"))
import serverlib as lib  # noqa: E402
from http_json import exchange  # noqa: E402
from pki import Pki  # noqa: E402

KEYS = ["key-one-7f3a9c", "key-two-41d08e"]
pki = Pki(os.path.join(lib.TMP, "pki"))
key_file = os.path.join(pki.dir, "api.keys")
with open(key_file, "w") as f:
    f.write("# decoserve API keys\n%s\n%s\n" % (KEYS[0], KEYS[1]))

model = lib.tiny_model()
TLS = ["--http-port", "0", "--tls-cert", pki.server_cert, "--tls-key", pki.server_key]
tls = lib.Server(model, *TLS, "--api-key-file", key_file)
mtls = lib.Server(model, *TLS, "--tls-client-ca", pki.client_ca)


def client(srv, key, cafile=pki.server_ca):
    """The openai client on srv's HTTPS port, trusting cafile."""
    verify = ssl.create_default_context(cafile=cafile)
    return openai.OpenAI(base_url=srv.http + "/v1", api_key=key, max_retries=0, timeout=60,
                         http_client=openai.DefaultHttpx2Client(verify=verify))


def request(srv, method, path, headers=None, cert=None, body=None):
    """(status, parsed JSON or text) of one HTTPS request trusting the server CA; cert: a client
    (certificate, key) pair."""
    ctx = ssl.create_default_context(cafile=pki.server_ca)
    if cert:
        ctx.load_cert_chain(*cert)
    url = urlsplit(srv.http)
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=60)
    return exchange(conn, method, path, body, headers)


def expect_error(status, fragment, got):
    code, body = got
    assert code == status, (code, body)
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert fragment in err["message"] and err["code"] == status, err


def bearer(key):
    return {"Authorization": "Bearer " + key}


COMPLETION = {"model": "m", "prompt": "a", "max_tokens": 2, "ignore_eos": True}


def check_https_with_keys():
    assert tls.http.startswith("https://"), tls.http
    for key in KEYS:
        c = client(tls, key)
        r = c.completions.create(model="m", prompt="a", max_tokens=3,
                                 extra_body={"ignore_eos": True})
        assert r.usage.completion_tokens == 3, r.usage
        assert [m.id for m in c.models.list().data] == ["tiny.gguf"], c.models.list()
    chunks = list(client(tls, KEYS[1]).completions.create(
        model="m", prompt="a", max_tokens=2, stream=True, extra_body={"ignore_eos": True}))
    assert chunks and chunks[-1].choices[0].finish_reason == "length", chunks[-1]


def check_no_key_or_wrong_key():
    for key in ("key-one-7f3a9d", KEYS[0][:-1], KEYS[0] + "x"):
        try:
            client(tls, key).completions.create(model="m", prompt="a", max_tokens=2)
        except openai.AuthenticationError as e:
            assert e.status_code == 401 and "API key" in e.message, (key, e)
        else:
            raise AssertionError("key %r let in" % key)
    for headers in (None, {"Authorization": "Basic " + KEYS[0]}, bearer("")):
        for method, path in (("POST", "/v1/completions"), ("POST", "/v1/chat/completions"),
                             ("GET", "/v1/models"), ("GET", "/nope")):  # unknown: still 401
            expect_error(401, "API key",
                         request(tls, method, path, headers, body=COMPLETION))


def check_probes_and_metrics_need_no_key():
    assert request(tls, "GET", "/health") == (200, {"status": "ok"})
    assert request(tls, "GET", "/ready") == (200, {"status": "ready"})
    code, text = request(tls, "GET", "/metrics")
    assert code == 200 and "vllm:num_requests_running" in text, (code, text[:200])


def curl(srv, cafile, *args):
    return subprocess.run(["curl", "-sS", "--cacert", cafile, *args], capture_output=True,
                          text=True, timeout=60)


def check_curl_and_wrong_ca():
    out = curl(tls, pki.server_ca, "-H", "Authorization: Bearer " + KEYS[0], tls.http + "/v1/models")
    assert out.returncode == 0 and json.loads(out.stdout)["data"][0]["id"] == "tiny.gguf", out
    out = curl(tls, pki.other_ca, tls.http + "/health")
    assert out.returncode == 60, out  # peer certificate cannot be authenticated
    try:
        client(tls, KEYS[0], cafile=pki.other_ca).models.list()
    except openai.APIConnectionError:
        pass
    else:
        raise AssertionError("a client trusting another CA connected")
    url = urlsplit(tls.http)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("GET", "/health")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        status = None
    assert status is None, "plaintext HTTP on the TLS port answered %s" % status


def check_mutual_tls():
    client_pair, rogue_pair = (pki.client_cert, pki.client_key), (pki.rogue_cert, pki.rogue_key)
    code, body = request(mtls, "GET", "/v1/models", cert=client_pair)
    assert code == 200 and body["data"][0]["id"] == "tiny.gguf", (code, body)
    code, body = request(mtls, "POST", "/v1/completions", cert=client_pair, body=COMPLETION)
    assert code == 200 and body["usage"]["completion_tokens"] == 2, (code, body)
    out = curl(mtls, pki.server_ca, "--cert", pki.client_cert, "--key", pki.client_key,
               mtls.http + "/health")
    assert out.returncode == 0 and json.loads(out.stdout) == {"status": "ok"}, out
    for what, cert in (("no certificate", None), ("another CA's", rogue_pair)):
        for path in ("/v1/models", "/health"):
            try:
                expect_error(403, "client certificate", request(mtls, "GET", path, cert=cert))
            except AssertionError as e:
                raise AssertionError("%s, %s: %s" % (what, path, e))


def check_sigterm():
    for srv in (tls, mtls):
        rc = srv.stop()
        assert rc == 0, "exit %d\n%s" % (rc, srv.stderr())


lib.run_checks([
    check_https_with_keys,
    check_no_key_or_wrong_key,
    check_probes_and_metrics_need_no_key,
    check_curl_and_wrong_ca,
    check_mutual_tls,
    check_sigterm,
], servers=[tls, mtls])
