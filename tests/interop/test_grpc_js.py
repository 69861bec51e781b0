"""The API contract (tests/interop/contract.py) through @grpc/grpc-js: interop/grpc-js/client.js
loads proto/sidecar.proto at run time with @grpc/proto-loader and prints each response or event
as JSON, which is checked as it is and read into the proto's messages by protobuf's JSON
parser: a field name the proto does not have, or a value of the wrong form, fails there."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import Event, GrpcioApi, grpcio_dict
from tests.helpers.grpc_js import grpc_js_output, run_grpc_js, start_grpc_js
from tests.interop.contract import Connect, Contract

# rpc -> the client's operation, and the request fields it takes as arguments, in order
OPERATIONS = {
    "GetStatus": ("status",),
    "PutDocument": ("put", "collection", "doc_id", "json_data"),
    "GetDocument": ("get", "collection", "doc_id"),
    "DeleteDocument": ("delete", "collection", "doc_id"),
    "ListDocuments": ("list", "collection"),
}


class GrpcJsClient:
    """The `Client` facade over client.js: a process per call."""

    name = "grpc-js"

    def __init__(self, address: str, pb2: ModuleType) -> None:
        self.address = address
        self.pb2 = pb2
        self.processes: list[subprocess.Popen[str]] = []

    def decode(self, message_name: str, printed: dict[str, Any]) -> Any:
        # Unknown field names fail, unlike in grpcio's own parsing of the wire.
        return json_format.ParseDict(printed, getattr(self.pb2, message_name)())

    def call(self, rpc: str, **request: Any) -> dict[str, Any]:
        operation, *fields = OPERATIONS[rpc]
        assert sorted(request) == sorted(fields), f"client.js {operation} takes {fields}"
        response = run_grpc_js(self.address, operation, *(request[field] for field in fields))
        return grpcio_dict(self.decode(f"{rpc}Response", response))

    def message(self, name: str, fields: dict[str, Any]) -> Any:
        raise NotImplementedError("client.js sends documents only")

    def subscribe(self, count: int, **request: Any) -> GrpcJsFeed:
        args = ["subscribe", "--count", str(count)]
        if collections := request.pop("collections", []):
            args += ["--collections", ",".join(collections)]
        if "since_sequence" in request:
            args += ["--since", str(request.pop("since_sequence"))]
        if "epoch" in request:
            args += ["--epoch", request.pop("epoch")]
        if request.pop("snapshot", False):
            args.append("--snapshot")
        assert not request, f"client.js has no flag for {request}"
        self.processes.append(start_grpc_js(self.address, *args))
        return GrpcJsFeed(self, self.processes[-1])

    def close(self) -> None:
        # Streams a failed test never read would otherwise run until their deadline.
        for process in self.processes:
            process.kill()  # a no-op once it has exited
            process.communicate()


class GrpcJsFeed:
    def __init__(self, client: GrpcJsClient, process: subprocess.Popen[str]) -> None:
        self.client = client
        self.process = process
        self.natives: list[Any] = []

    def events(self) -> list[Event]:
        self.natives = grpc_js_output(self.process)
        return [
            Event.from_grpcio(self.client.decode("DocumentChange", change))
            for change in self.natives
        ]


@pytest.fixture
def connect(grpc_js: Path, grpcio_api: GrpcioApi) -> Iterator[Connect]:
    clients: list[GrpcJsClient] = []

    def factory(server: ServerProcess) -> GrpcJsClient:
        clients.append(GrpcJsClient(server.address, grpcio_api[0]))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


class TestGrpcJs(Contract):
    def assert_native_resync(self, native: Any, reason: str, sequence: int) -> None:
        # proto-loader with enums: String and longs: String (see client.js): enum values by
        # their proto names, uint64 as a decimal string.
        assert native["change_type"] == "CHANGE_TYPE_RESYNC"
        assert native["resync_reason"] == reason
        assert native["sequence"] == str(sequence)
