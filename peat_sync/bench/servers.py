"""The servers the bench measures: `peat-sync serve` on a temporary data dir, the baseline
server, or a running deployment at --addr; and /proc readers for a server's RSS and CPU.

Nothing here imports the server: each server is a process of its own, started with this
Python (`sys.executable -m ...`), so the bench measures exactly what users run.
"""

from __future__ import annotations

import collections
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peat_sync.bench.baseline import READY as BASELINE_READY
from peat_sync.bench.messages import SERVICE, message_class

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
STATUS_TIMEOUT = 10.0
# Lines of a server's output kept, to explain a failure.
LOG_TAIL = 20

_LISTENING = re.compile(r"listening on tcp://[^ ;]+:(\d+)")
SERVING_LINE = re.compile(r"serving peat\.sidecar\.v1 on ")


class BenchError(Exception):
    """The bench cannot go on; the message says why, in one line."""


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Server:
    """A server under measurement: where to connect, and its pid when it runs here (None for
    a deployment given with --addr: its RSS and CPU are then not known)."""

    target: str
    pid: int | None
    label: str

    def rss(self) -> int | None:
        return None if self.pid is None else rss_bytes(self.pid)

    def cpu(self) -> float | None:
        return None if self.pid is None else cpu_seconds(self.pid)


class OutputReadingProcess:
    """A server process whose output is read on a thread; the last lines are kept."""

    def __init__(self, argv: list[str], name: str) -> None:
        self.name = name
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._changed:
                self.tail.append(line.rstrip())
                if len(self.lines) < LOG_TAIL:  # only the start-up lines are searched
                    self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The first start-up line matching `pattern`; BenchError if the process exits or
        takes longer than START_TIMEOUT."""

        def found() -> re.Match[str] | None:
            for line in self.lines:
                match = pattern.search(line)
                if match:
                    return match
            return None

        with self._changed:
            match = self._changed.wait_for(
                lambda: found() or self.process.poll() is not None, START_TIMEOUT
            )
        if isinstance(match, re.Match):
            return match
        self.stop()
        raise BenchError(f"{self.name} did not start: {self.last_words()}")

    def last_words(self) -> str:
        return " | ".join(list(self.tail)[-3:]) or "no output"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT)


@contextmanager
def peat_server(data_dir: Path, *flags: str) -> Iterator[Server]:
    """`peat-sync serve` on a free loopback port and `data_dir`, with extra `flags`, for the
    duration of the block; ready when it logs that it serves."""
    argv = [sys.executable, "-m", "peat_sync", "serve", "--listen", "tcp://127.0.0.1:0"]
    process = OutputReadingProcess([*argv, "--data-dir", str(data_dir), *flags], "peat-sync serve")
    try:
        port = process.wait_for(_LISTENING)[1]
        process.wait_for(SERVING_LINE)
        yield Server(f"127.0.0.1:{port}", process.process.pid, "peat-sync serve")
        if process.process.poll() is not None:
            raise BenchError(f"the server exited during the run: {process.last_words()}")
    finally:
        process.stop()


@contextmanager
def baseline_server() -> Iterator[Server]:
    """The bare grpclib baseline (peat_sync.bench.baseline), for the duration of the block."""
    port = free_port()
    argv = [sys.executable, "-m", "peat_sync.bench.baseline", str(port)]
    process = OutputReadingProcess(argv, "the baseline server")
    try:
        process.wait_for(re.compile(re.escape(BASELINE_READY)))
        yield Server(f"127.0.0.1:{port}", process.process.pid, "bare grpclib")
    finally:
        process.stop()


def get_status(target: str) -> Any:
    """GetStatus of the server at `target` (a GetStatusResponse); BenchError when it cannot
    be reached or is not ready."""
    request_class = message_class("GetStatusRequest")
    response_class = message_class("GetStatusResponse")
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            SERVICE + "GetStatus",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            status = call(request_class(), timeout=STATUS_TIMEOUT, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise BenchError(
                f"cannot reach a peat-sync server at {target}: {exc.code().name}: {exc.details()}"
            ) from None
    if status.phase != 2:  # NODE_PHASE_READY
        raise BenchError(f"the server at {target} is not ready (phase {status.phase})")
    return status
