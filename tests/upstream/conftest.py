"""Fixtures of the tests of upstream's clients: grpcio stubs compiled from upstream's first
and today's protos (see tests/upstream/protos.py), and clients of any proto, closed at the
end of each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import GrpcioApi, GrpcioClient
from tests.upstream.protos import FIRST, TODAY, compile_upstream

Connect = Callable[[ServerProcess, GrpcioApi], GrpcioClient]


@pytest.fixture(scope="session")
def upstream_today(tmp_path_factory: pytest.TempPathFactory) -> GrpcioApi:
    """The grpcio client of today's upstream proto."""
    return compile_upstream(TODAY, tmp_path_factory.mktemp(TODAY))


@pytest.fixture(scope="session")
def upstream_first(tmp_path_factory: pytest.TempPathFactory) -> GrpcioApi:
    """The grpcio client of the first upstream proto."""
    return compile_upstream(FIRST, tmp_path_factory.mktemp(FIRST))


@pytest.fixture
def connect() -> Iterator[Connect]:
    """Connect a grpcio client of a proto (`upstream_today`, `upstream_first`, `grpcio_api`)
    to a server, each on a channel of its own; closed at the end of the test."""
    clients: list[GrpcioClient] = []

    def factory(server: ServerProcess, api: GrpcioApi) -> GrpcioClient:
        clients.append(GrpcioClient(server.address, api))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()
