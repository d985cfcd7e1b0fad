"""security_test — TLS, mutual TLS and API keys on `decoserve serve` (finding 7 of issue 19), seen
by Python grpcio over secure channels. The CAs and certificates are made at test time with
Debian's openssl (tests/pylib/pki.py): a server CA, a client CA and an unrelated CA whose
certificates must be refused.

Usage: security_test.py DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO
Runs on the tiny model; prints one line per check and ends with "N passed, N failed".
"""

import os
import subprocess

import grpc

import serverlib as lib
from pki import Pki, read
from serverlib import health_pb2, pb

UNAUTHENTICATED, UNAVAILABLE = grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE
KEYS = ["key-one-7f3a9c", "key-two-41d08e"]
pki = Pki(os.path.join(lib.TMP, "pki"))
D = pki.dir
server_cert, server_key = pki.server_cert, pki.server_key
client_cert, client_key = pki.client_cert, pki.client_key
rogue_cert, rogue_key = pki.rogue_cert, pki.rogue_key
SERVER_CA, OTHER_CA = pki.server_ca_pem, pki.other_ca_pem
key_file = os.path.join(D, "api.keys")
with open(key_file, "w") as f:
    f.write("# decoserve API keys\n%s\n\n%s\n" % (KEYS[0], KEYS[1]))

model = lib.tiny_model()
tls = lib.Server(model, "--tls-cert", server_cert, "--tls-key", server_key, "--api-key-file",
                 key_file)
mtls = lib.Server(model, "--tls-cert", server_cert, "--tls-key", server_key, "--tls-client-ca",
                  pki.client_ca)
plain_key = lib.Server(model, "--api-key", KEYS[0])


def bearer(key):
    return [("authorization", "Bearer " + key)]


def calls(stub, metadata):
    """Every decoserve method once, as a list of (name, thunk)."""
    return [
        ("Generate", lambda: list(stub.Generate(pb.GenerateRequest(prompt="a", max_tokens=2),
                                                timeout=30, metadata=metadata))),
        ("Tokenize", lambda: stub.Tokenize(pb.TokenizeRequest(text="a"), timeout=30,
                                           metadata=metadata)),
        ("ModelInfo", lambda: stub.ModelInfo(pb.ModelInfoRequest(), timeout=30,
                                             metadata=metadata)),
        ("GetStats", lambda: stub.GetStats(pb.GetStatsRequest(), timeout=30, metadata=metadata)),
    ]


def check_tls_with_keys():
    stub, health = lib.stubs_of(tls.connect(SERVER_CA))
    for key in KEYS:
        for name, call in calls(stub, bearer(key)):
            call()  # succeeds
    msgs = list(stub.Generate(pb.GenerateRequest(prompt="a", max_tokens=3, ignore_eos=True),
                              timeout=30, metadata=bearer(KEYS[1])))
    assert msgs[-1].usage.completion_tokens == 3, msgs[-1]
    # Health probes carry no key.
    r = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert r.status == health_pb2.HealthCheckResponse.SERVING, r


def check_no_key_or_wrong_key():
    stub, _ = lib.stubs_of(tls.connect(SERVER_CA))
    for what, metadata in [("no key", None), ("wrong key", bearer("key-one-7f3a9d")),
                           ("a key's prefix", bearer(KEYS[0][:-1])),
                           ("not Bearer", [("authorization", "Basic " + KEYS[0])])]:
        for name, call in calls(stub, metadata):
            try:
                lib.expect_status(UNAUTHENTICATED, "API key", call)
            except AssertionError as e:
                raise AssertionError("%s, %s: %s" % (what, name, e))
    # An unknown method learns nothing either.
    lib.expect_status(UNAUTHENTICATED, "API key",
                      lambda: tls.connect(SERVER_CA).unary_unary("/decoserve.v1.Decoserve/Nope")(
                          b"", timeout=30))


def expect_refused(what, channel):
    """The connection fails (a health check, which needs no key, is UNAVAILABLE)."""
    _, health = lib.stubs_of(channel)
    try:
        lib.expect_status(UNAVAILABLE, "",
                          lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=10))
    except AssertionError as e:
        raise AssertionError("%s: %s" % (what, e))


def check_wrong_ca_and_plaintext_refused():
    expect_refused("a client trusting another CA", tls.connect(OTHER_CA))
    expect_refused("a plaintext client", grpc.insecure_channel(tls.address))


def check_mutual_tls():
    stub, _ = lib.stubs_of(mtls.connect(SERVER_CA, read(client_key), read(client_cert)))
    for name, call in calls(stub, None):  # no API key configured on this one
        call()
    expect_refused("no client certificate", mtls.connect(SERVER_CA))
    expect_refused("a certificate from another CA",
                   mtls.connect(SERVER_CA, read(rogue_key), read(rogue_cert)))


def check_plaintext_with_key():
    stub, health = plain_key.stub, plain_key.health
    lib.expect_status(UNAUTHENTICATED, "API key", calls(stub, None)[0][1])
    lib.expect_status(UNAUTHENTICATED, "API key", calls(stub, bearer(KEYS[1]))[0][1])
    for name, call in calls(stub, bearer(KEYS[0])):
        call()
    r = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert r.status == health_pb2.HealthCheckResponse.SERVING, r
    s = lib.wait_blocks_back(stub, metadata=bearer(KEYS[0]))
    assert s.full_blocks_free == s.full_blocks_total, s


def check_flag_errors():
    garbage = os.path.join(D, "garbage.pem")
    with open(garbage, "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    cases = [
        (2, "--tls-key", ["--tls-cert", server_cert]),
        (2, "--tls-client-ca", ["--tls-client-ca", server_cert]),
        (1, "/nonexistent.pem", ["--tls-cert", "/nonexistent.pem", "--tls-key", server_key]),
        (1, "no PEM block", ["--tls-cert", server_cert, "--tls-key", key_file]),
        (1, "TLS certificate and key rejected", ["--tls-cert", garbage, "--tls-key", server_key]),
        (1, "empty API key", ["--api-key", ""]),
    ]
    for rc, fragment, flags in cases:
        out = subprocess.run([lib.DECOSERVE, "serve", "--model", model, "--port", "0", *flags],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == rc and fragment in out.stderr, (flags, out.returncode,
                                                                 out.stderr[-500:])


def check_sigterm():
    for srv in (tls, mtls, plain_key):
        rc = srv.stop()
        assert rc == 0, "exit %d\n%s" % (rc, srv.stderr())


lib.run_checks([
    check_tls_with_keys,
    check_no_key_or_wrong_key,
    check_wrong_ca_and_plaintext_refused,
    check_mutual_tls,
    check_plaintext_with_key,
    check_flag_errors,
    check_sigterm,
], servers=[tls, mtls, plain_key])
