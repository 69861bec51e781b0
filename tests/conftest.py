"""Shared fixtures: a real `peat-sync serve` process, and the official grpcio client compiled
from proto/sidecar.proto."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

from peat_sync.bench.launcher import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
# `sidecar_pb2` and `sidecar_pb2_grpc`, as the `grpcio_api` fixture compiles them.
GrpcioApi = tuple[ModuleType, ModuleType]


def peat_sync_command() -> list[str]:
    """The installed `peat-sync` console script of this environment."""
    script = Path(sys.executable).with_name("peat-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "peat_sync"]


class StartServer(Protocol):
    def __call__(
        self,
        *args: str,
        data_dir: Path | None = None,
        listen: str = ...,
        env: dict[str, str] | None = None,
        must_start: bool = True,
    ) -> ServerProcess: ...


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
