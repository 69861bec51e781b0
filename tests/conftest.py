"""Fixtures of every kind of test against the real server: `peat-sync serve` processes (on
loopback TCP, or on a unix socket), and the official grpcio client compiled from
proto/sidecar.proto."""

from __future__ import annotations

import importlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import GrpcioApi
from tests.helpers.paths import PROTO_DIR
from tests.helpers.servers import StartServer


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """A factory for servers; every server it starts is killed at the end of the test."""
    started: list[ServerProcess] = []

    def factory(
        *args: str,
        data_dir: Path | None = None,
        listen: str = "tcp://127.0.0.1:0",
        env: dict[str, str] | None = None,
        must_start: bool = True,
    ) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", *args, listen=listen, env=env)
        started.append(server)
        return server.start(must_start=must_start)

    yield factory
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short temporary directory for unix sockets: their paths are limited to about 100
    bytes, which pytest's tmp_path can exceed."""
    with tempfile.TemporaryDirectory(prefix="peat-") as directory:
        yield Path(directory)


@pytest.fixture
def start_unix_server(socket_dir: Path, start_server: StartServer) -> StartServer:
    """A factory for servers on `socket_dir/peat.sock`; each is killed at the end."""

    def factory(*args: str, **options: Any) -> ServerProcess:
        return start_server(*args, listen=f"unix://{socket_dir / 'peat.sock'}", **options)

    return factory


@pytest.fixture(scope="session")
def grpcio_api(tmp_path_factory: pytest.TempPathFactory) -> GrpcioApi:
    """`sidecar_pb2` and `sidecar_pb2_grpc`, compiled from proto/sidecar.proto by grpc_tools:
    the official client, built from nothing but the proto file."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("grpcio_api")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTO_DIR / "sidecar.proto"),
        ]
    )
    assert status == 0, "protoc failed to compile proto/sidecar.proto"
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("sidecar_pb2"), importlib.import_module("sidecar_pb2_grpc")
    finally:
        sys.path.remove(str(out))
