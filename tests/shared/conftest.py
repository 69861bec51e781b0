"""Fixtures of shared mode: real nats-server processes (one, or a cluster of three) and
sidecars pointed at them, every one killed at the end of its test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.nats_servers import NatsCluster, NatsServer

# Sidecars of the tests announce themselves often, so that ListPeers is quick to show them.
PRESENCE = ("--nats-presence-interval", "0.5")


class StartSidecar(Protocol):
    def __call__(
        self, nats: str, *args: str, name: str = ..., must_start: bool = True
    ) -> ServerProcess: ...


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats").start()
    yield server
    server.kill()


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    # Sidecars start once JetStream answers: one started before would wait out its first
    # request, lost for want of a metadata leader (test_cluster tests that it waits).
    cluster = NatsCluster(tmp_path / "nats-cluster").start().wait_for_jetstream()
    yield cluster
    cluster.kill()


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """A factory of sidecars in shared mode: `name` names the node and its data dir."""
    started: list[ServerProcess] = []

    def factory(nats: str, *args: str, name: str = "a", must_start: bool = True) -> ServerProcess:
        sidecar = ServerProcess(
            tmp_path / f"sidecar-{name}",
            *("--nats", nats, "--node-id", name, *PRESENCE, *args),
        )
        started.append(sidecar)
        return sidecar.start(must_start=must_start)

    yield factory
    for sidecar in started:
        sidecar.kill()
        # Captured: pytest shows it when the test fails.
        print(f"--- {' '.join(sidecar.argv[3:])}\n{sidecar.log}")
