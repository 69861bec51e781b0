"""Shared fixtures: a real `peat-sync serve` process, and the official grpcio client compiled
from proto/sidecar.proto."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
START_TIMEOUT = 20.0
_SERVING = re.compile(r"serving peat\.sidecar\.v1 on tcp://([^ ]+):(\d+)")


class ServerProcess:
    """`peat-sync serve` in a subprocess, on a free loopback port, with its log captured."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        self.data_dir = data_dir
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._serving = threading.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        with self._log_lock:
            return "".join(self._log)

    def start(self) -> ServerProcess:
        """Start the server and wait until it accepts calls."""
        self._serving.clear()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "peat_sync",
                "serve",
                "--listen",
                "tcp://127.0.0.1:0",
                "--data-dir",
                str(self.data_dir),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PEAT_SIDECAR_")},
        )
        threading.Thread(target=self._read_log, args=(self.process,), daemon=True).start()
        if not self._serving.wait(START_TIMEOUT):
            self.kill()
            raise RuntimeError(f"server did not start:\n{self.log}")
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._log_lock:
                self._log.append(line)
            match = _SERVING.search(line)
            if match:
                self.port = int(match[2])
                self._serving.set()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.log)
            if match:
                return match
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}:\n{self.log}")

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `signum` and wait for the process to exit; returns its exit code."""
        assert self.process is not None
        self.process.send_signal(signum)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()


class StartServer(Protocol):
    def __call__(self, *args: str, data_dir: Path | None = None) -> ServerProcess: ...


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """A factory for servers; every server it starts is killed at the end of the test."""
    started: list[ServerProcess] = []

    def factory(*args: str, data_dir: Path | None = None) -> ServerProcess:
        server = ServerProcess(data_dir or tmp_path / "data", *args)
        started.append(server)
        return server.start()

    yield factory
    for server in started:
        server.kill()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    return start_server()


@pytest.fixture(scope="session")
def grpcio_api(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
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
