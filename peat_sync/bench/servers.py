"""The servers the bench measures: `peat-sync serve` on a temporary data dir, the baseline
server, or a running deployment at --addr; and /proc readers for a server's RSS and CPU.

Nothing here imports the server: each server is a process of its own, started by
peat_sync.bench.launcher with this Python, so the bench measures exactly what users run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peat_sync.bench.launcher import BaselineProcess, ChildServer, ServerProcess, ServerStartError
from peat_sync.generated.peat.sidecar.v1 import NodePhase
from peat_sync.wire import GET_STATUS, message_class

STATUS_TIMEOUT = 10.0


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


@dataclass(frozen=True, slots=True)
class Server:
    """A server under measurement: where to connect, and its pid when it runs here (None for
    a deployment given with --addr: its RSS and CPU are then not known)."""

    target: str
    pid: int | None

    def rss(self) -> int | None:
        return None if self.pid is None else rss_bytes(self.pid)

    def cpu(self) -> float | None:
        return None if self.pid is None else cpu_seconds(self.pid)


@contextmanager
def _running(process: ChildServer, name: str) -> Iterator[Server]:
    """`process` started, for the duration of the block, then stopped (killed if it does not
    stop in time); BenchError if it does not start, or exits during the block."""
    try:
        process.start()
    except ServerStartError:
        raise BenchError(f"{name} did not start: {process.last_words()}") from None
    try:
        yield Server(process.address, process.pid)
        if not process.running:
            raise BenchError(f"{name} exited during the run: {process.last_words()}")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it was killed
            process.stop()


def peat_server(data_dir: Path, *flags: str) -> contextlib.AbstractContextManager[Server]:
    """`peat-sync serve` on a free loopback port and `data_dir`, with extra `flags`, for the
    duration of the block."""
    return _running(ServerProcess(data_dir, *flags), "peat-sync serve")


def baseline_server() -> contextlib.AbstractContextManager[Server]:
    """The bare grpclib baseline (peat_sync.bench.baseline), for the duration of the block."""
    return _running(BaselineProcess(), "the baseline server")


def get_status(target: str) -> Any:
    """GetStatus of the server at `target` (a GetStatusResponse); BenchError when it cannot
    be reached or is not ready."""
    request_class = message_class("GetStatusRequest")
    response_class = message_class("GetStatusResponse")
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            GET_STATUS,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            status = call(request_class(), timeout=STATUS_TIMEOUT, wait_for_ready=False)
        except grpc.RpcError as exc:
            raise BenchError(
                f"cannot reach a peat-sync server at {target}: {exc.code().name}: {exc.details()}"
            ) from None
    if status.phase != NodePhase.READY.value:
        raise BenchError(f"the server at {target} is not ready (phase {status.phase})")
    return status
