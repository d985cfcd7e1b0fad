"""limits_test — what `decoserve serve` refuses and bounds, seen from the wire (findings 1, 2, 3
and 5 of issue 19): strings that are not UTF-8 in any field of any method, request_id over 256
bytes, values shown with the digits that were refused, and per-connection limits (a connection
that never completes its handshake or sits idle is closed; the HTTP/2 SETTINGS carry the stream
limit).

Usage: limits_test.py DECOSERVE MKMODEL DECOSERVE_PROTO HEALTH_PROTO
Runs on the tiny model; prints one line per check and ends with "N passed, N failed".
"""

import socket
import struct
import subprocess
import time

import grpc

import serverlib as lib
from serverlib import pb

INVALID = grpc.StatusCode.INVALID_ARGUMENT
HANDSHAKE_S, IDLE_S, STREAMS = 1, 3, 7
srv = lib.Server(lib.tiny_model(), "--handshake-timeout", str(HANDSHAKE_S), "--idle-timeout",
                 str(IDLE_S), "--max-streams-per-connection", str(STREAMS))
channel, stub, health = srv.channel, srv.stub, srv.health


def field(number, data):
    """One length-delimited protobuf field (data under 128 bytes)."""
    return bytes([number << 3 | 2, len(data)]) + data


def check_utf8_every_field():
    generate = channel.unary_stream("/decoserve.v1.Decoserve/Generate")
    tokenize = channel.unary_unary("/decoserve.v1.Decoserve/Tokenize")
    check = channel.unary_unary("/grpc.health.v1.Health/Check")
    hi = field(1, b"Hi") + b"\x18\x02"  # prompt "Hi", max_tokens 2
    cases = [
        # The probe's request: prompt "Hi", max_tokens 2, request_id 0xff.
        ("request_id", generate, bytes.fromhex("0a02486918025a01ff")),
        ("prompt", generate, field(1, b"caf\xc3")),
        ("stop[1]", generate, hi + field(8, b"ok") + field(8, b"\xed\xa0\x80")),
        ("text", tokenize, field(1, b"\xc0\xaf")),
        ("service", check, field(1, b"\x80")),
    ]
    for name, method, request in cases:
        lib.expect_status(INVALID, name + ": not valid UTF-8",
                          lambda: list(method(request, timeout=30)) if method is generate
                          else method(request, timeout=30))
    # The same request with a valid id runs, and every message parses in strict protobuf.
    msgs = list(generate(bytes.fromhex("0a02486918025a02c3a9"), timeout=30))
    ids = [pb.GenerateResponse.FromString(m).request_id for m in msgs]
    assert ids and all(i == "\u00e9" for i in ids), ids


def check_request_id_limit():
    lib.expect_status(INVALID, "request_id: 257 bytes, at most 256",
                      lambda: list(stub.Generate(pb.GenerateRequest(
                          prompt="a", max_tokens=2, request_id="x" * 257), timeout=30)))
    msgs = list(stub.Generate(pb.GenerateRequest(prompt="a", max_tokens=4, ignore_eos=True,
                                                 request_id="y" * 256), timeout=30))
    assert msgs and all(m.request_id == "y" * 256 for m in msgs), len(msgs)


def check_values_shown_with_their_digits():
    lib.expect_status(INVALID, "top_p = 1.00000012: must be in (0, 1]",
                      lambda: list(stub.Generate(pb.GenerateRequest(prompt="a", top_p=1.0000001),
                                                 timeout=30)))


def closed_within(payload, limit_s):
    """Seconds until the server closes a raw TCP connection that sent payload, or None if it is
    still open after limit_s; and the bytes the server sent."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.settimeout(limit_s)
    if payload:
        s.sendall(payload)
    t0, got = time.time(), b""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
    except socket.timeout:
        return None, got
    except ConnectionResetError:
        pass
    finally:
        s.close()
    return time.time() - t0, got


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def check_handshake_deadline():
    for name, payload in [("silent connection", b""), ("bare preface", PREFACE),
                          ("half a preface", PREFACE[:10])]:
        t, _ = closed_within(payload, HANDSHAKE_S + 4)
        assert t is not None and t < HANDSHAKE_S + 2, "%s: open after %s s" % (name, t)


def check_idle_timeout():
    # A client past the handshake that opens no call, or sends half a HEADERS frame, is closed
    # once idle (not before the handshake deadline: the idle timer is what closes it).
    half_headers = b"\x00\x00\x10\x01\x04\x00\x00\x00\x01\x83"
    for name, payload in [("idle", PREFACE + EMPTY_SETTINGS),
                          ("half a frame", PREFACE + EMPTY_SETTINGS + half_headers)]:
        t, got = closed_within(payload, IDLE_S + 5)
        assert t is not None and IDLE_S - 1 < t < IDLE_S + 3, "%s: closed after %s s" % (name, t)
        assert b"\x07\x00\x00\x00\x00\x00" in got, "%s: no GOAWAY before the close" % name


def check_settings_carry_stream_limit():
    _, got = closed_within(PREFACE + EMPTY_SETTINGS, IDLE_S + 5)
    length, kind = struct.unpack(">I", b"\x00" + got[:3])[0], got[3]
    assert kind == 4, "the first frame is type %d, not SETTINGS" % kind
    settings = dict(struct.unpack(">HI", got[9 + i:15 + i]) for i in range(0, length, 6))
    assert settings.get(3) == STREAMS, "MAX_CONCURRENT_STREAMS %s" % settings.get(3)


def check_still_serving():
    msgs = list(stub.Generate(pb.GenerateRequest(prompt="a", max_tokens=3, ignore_eos=True),
                              timeout=30))
    assert msgs[-1].usage.completion_tokens == 3, msgs[-1]
    r = health.Check(lib.health_pb2.HealthCheckRequest(), timeout=10)
    assert r.status == lib.health_pb2.HealthCheckResponse.SERVING, r


def check_limit_flags():
    for flag, value in [("--idle-timeout", "0"), ("--handshake-timeout", "-1"),
                        ("--keepalive", "x"), ("--max-streams-per-connection", "0")]:
        out = subprocess.run([lib.DECOSERVE, "serve", "--model", lib.tiny_model(), flag, value],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and flag in out.stderr, (flag, out.returncode, out.stderr)


def check_sigterm():
    rc = srv.stop()
    assert rc == 0, "exit %d\n%s" % (rc, srv.stderr())


lib.run_checks([
    check_utf8_every_field,
    check_request_id_limit,
    check_values_shown_with_their_digits,
    check_handshake_deadline,
    check_idle_timeout,
    check_settings_carry_stream_limit,
    check_still_serving,
    check_limit_flags,
    check_sigterm,
], servers=[srv])
