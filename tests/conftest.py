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
# `sidecar_pb2` and `sidecar_pb2_grpc`, as the `grpcio_api` fixture compiles them.
GrpcioApi = tuple[ModuleType, ModuleType]
# The server listens (and logs its port) before it opens the store, then serves.
_LISTENING = re.compile(r"listening on (?:tcp://[^ ;]+:(\d+)|unix://[^ ;]+)")
_SERVING = re.compile(r"serving peat\.sidecar\.v1 on ")


def peat_sync_command() -> list[str]:
    """The installed `peat-sync` console script of this environment."""
    script = Path(sys.executable).with_name("peat-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "peat_sync"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without PEAT_SIDECAR_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEAT_SIDECAR_")}
    env.update(extra)
    return env


class ServerProcess:
    """`peat-sync serve` in a subprocess, with its log captured. It listens on a free loopback
    port unless given another `listen` address."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        listen: str = "tcp://127.0.0.1:0",
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.args = args
        self.listen = listen
        self.env = env or {}
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self._log: list[str] = []
        self._log_lock = threading.Lock()
        self._serving = threading.Event()

    @property
    def address(self) -> str:
        """Where a client connects: HOST:PORT, or unix:///PATH."""
        if self.listen.startswith("unix:"):
            return self.listen
        return f"127.0.0.1:{self.port}"

    @property
    def socket_path(self) -> Path:
        assert self.listen.startswith("unix://"), f"{self.listen} is not a unix socket"
        return Path(self.listen.removeprefix("unix://"))

    @property
    def serving(self) -> bool:
        return self._serving.is_set() and self.process is not None and self.process.poll() is None

    @property
    def log(self) -> str:
        with self._log_lock:
            return "".join(self._log)

    def start(self, *, must_start: bool = True) -> ServerProcess:
        """Start the server and wait until it accepts calls (or, unless `must_start`, until
        it has exited)."""
        self._serving.clear()
        self.process = process = subprocess.Popen(
            [
                *peat_sync_command(),
                *("serve", "--listen", self.listen, "--data-dir", str(self.data_dir)),
                *self.args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=clean_env(**self.env),
        )
        log_reader = threading.Thread(target=self._read_log, args=(process,), daemon=True)
        log_reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._serving.wait(0.05) and process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not start:\n{self.log}")
        if not self._serving.is_set():
            log_reader.join(5)  # the process exited: take its last words
            if must_start:
                raise RuntimeError(f"server exited at start-up:\n{self.log}")
        return self

    def _read_log(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = _LISTENING.search(line)
            if match:  # the port is known before the line can be seen in the log
                self.port = int(match[1] or 0)
            with self._log_lock:
                self._log.append(line)
            if _SERVING.search(line):
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
