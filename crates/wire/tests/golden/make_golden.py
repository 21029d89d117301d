#!/usr/bin/env python3
"""Writes golden encodings of the classic sync.proto messages, made by an independent protobuf
implementation (Python's `protobuf`, from PyPI), for crates/wire/tests/golden.rs.

    python3 -m venv /tmp/pb && /tmp/pb/bin/pip install protobuf grpcio-tools
    /tmp/pb/bin/python crates/wire/tests/golden/make_golden.py > crates/wire/tests/golden/sync.json

Maps are serialized deterministically by the pure-Python implementation, which sorts keys
ascending as prost's BTreeMap maps do (the upb implementation's "deterministic" order is
descending; both are valid protobuf).
"""
import os

os.environ["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"

import json
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
proto_dir = os.path.join(here, "..", "..", "proto")
out = tempfile.mkdtemp()
subprocess.run(
    [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", f"--python_out={out}", "sync.proto"],
    check=True,
)
sys.path.insert(0, out)
import sync_pb2 as pb  # noqa: E402
from google.protobuf.internal import api_implementation  # noqa: E402

assert api_implementation.Type() == "python", api_implementation.Type()


def node(key_bits, key, value=None, children=None):
    n = pb.ProofNode()
    n.key.length = key_bits
    n.key.value = key
    if value is None:
        n.value_or_hash.is_nothing = True
    else:
        n.value_or_hash.value = value
    for index, child in (children or {}).items():
        n.children[index] = child
    return n


def cases():
    range_request = pb.Request()
    r = range_request.range_proof_request
    r.root_hash = bytes(range(32))
    r.start_key.value = b"\x01\x02"
    r.key_limit = 2048
    r.bytes_limit = 2093056
    yield "request_range_proof", range_request

    change_request = pb.Request()
    c = change_request.change_proof_request
    c.start_root_hash = b"\x11" * 32
    c.end_root_hash = b"\x22" * 32
    c.end_key.value = b"\xff"
    c.key_limit = 100
    c.bytes_limit = 1000
    yield "request_change_proof", change_request

    range_proof = pb.RangeProof()
    range_proof.start_proof.append(node(4, b"\x10", None, {0: b"\xaa" * 32, 15: b"\xbb" * 32}))
    range_proof.end_proof.append(node(0, b"", b"root value", {1: b"\xcc" * 32}))
    range_proof.end_proof.append(node(16, b"\x12\x34", b"\x00" * 32))
    range_proof.key_values.add(key=b"\x12\x34", value=b"v")
    range_proof.key_values.add(key=b"\x12\x35", value=b"")
    yield "range_proof", range_proof

    change_proof = pb.ChangeProof()
    change_proof.end_proof.append(node(8, b"\x07", None, {3: b"\x01" * 32}))
    change_proof.key_changes.add(key=b"\x07\x01").value.value = b"new"
    change_proof.key_changes.add(key=b"\x07\x02").value.is_nothing = True
    yield "change_proof", change_proof

    response = pb.SyncGetChangeProofResponse()
    response.range_proof.key_values.add(key=b"k", value=b"v")
    response.range_proof.end_proof.append(node(8, b"k", b"v"))
    yield "change_proof_response_with_range_proof", response


print(json.dumps({name: msg.SerializeToString(deterministic=True).hex() for name, msg in cases()}, indent=1))
