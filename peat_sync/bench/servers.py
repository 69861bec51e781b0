"""The servers the bench measures: `peat-sync serve` on a temporary data dir, the baseline
server, or a running deployment at --addr; the nats-server of shared mode; and /proc readers
for a server's RSS and CPU.

Nothing here imports the server: each server is a process of its own, started by
peat_sync.bench.launcher with this Python, so the bench measures exactly what users run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peat_sync.bench.launcher import BaselineProcess, ChildServer, ServerProcess, ServerStartError
from peat_sync.bench.nats_servers import NatsServer
from peat_sync.generated.peat.sidecar.v1 import NodePhase
from peat_sync.wire import GET_STATUS, message_class

# How often a server that is starting is looked at, to see whether it listens yet.
LISTENING_POLL = 0.002

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
    http_url: str = ""  # its HTTP listener, http://HOST:PORT/, if it has one

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
        yield Server(process.address, process.pid, process.http_url)
        if not process.running:
            raise BenchError(f"{name} exited during the run: {process.last_words()}")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it was killed
            process.stop()


def peat_server(data_dir: Path, *flags: str) -> contextlib.AbstractContextManager[Server]:
    """`peat-sync serve` on a free loopback port and `data_dir`, with extra `flags`, for the
    duration of the block."""
    return _running(ServerProcess(data_dir, *flags), "peat-sync serve")


@contextmanager
def peat_server_listening(data_dir: Path, *flags: str) -> Iterator[Server]:
    """`peat_server`, but the block starts as soon as the server listens, before it serves:
    to watch what it does while it opens its store (and, in shared mode, joins its stream),
    when each of its calls fails with UNAVAILABLE. BenchError if it does not serve."""
    process = ServerProcess(data_dir, *flags)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="starting") as starting:
            started = starting.submit(process.start)  # returns once the server serves
            try:
                while not process.port:  # known from a line it logs before it opens the store
                    try:
                        started.result(LISTENING_POLL)
                    except TimeoutError:
                        continue
                    break
                yield Server(process.address, process.pid)
                started.result()
                if not process.running:
                    raise BenchError(
                        f"peat-sync serve exited during the run: {process.last_words()}"
                    )
            finally:
                _stop(process)  # which also ends a start under way
    except ServerStartError:
        raise BenchError(f"peat-sync serve did not start: {process.last_words()}") from None
    finally:
        _stop(process)  # started by the thread after all, when the block ended at once


def _stop(process: ChildServer) -> None:
    if process.running:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it was killed
            process.stop()


def nats_server(store_dir: Path) -> contextlib.AbstractContextManager[Server]:
    """A nats-server with JetStream, its store in `store_dir`, for the duration of the block
    (its target, HOST:PORT, is nats://TARGET). NatsServerMissing if there is none to run."""
    return _running(NatsServer(store_dir), "nats-server")


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
