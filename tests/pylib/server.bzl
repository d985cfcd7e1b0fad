"""What the end-to-end tests that start `decoserve serve` pass their Python script: the binary,
decoserve-mkmodel and the two .proto files, in that order (serverlib.py and http_test.py read them
as sys.argv[1:5])."""

SERVER_ARGS = [
    "$(location //server:decoserve)",
    "$(location //tools/mkmodel:decoserve-mkmodel)",
    "$(location //proto:decoserve.proto)",
    "$(location @grpc_proto//:grpc/health/v1/health.proto)",
]
