"""Fixtures of the end-to-end tests: the parametrized client (grpclib, then grpcio) or the
official one, connected to the default server, and a server on a unix socket.

Every test here talks to a real `peat-sync serve` subprocess over a real socket, and every
wait has a deadline (tests/helpers/waiting.py). The helpers the tests share are in
tests/helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import CLIENT_KINDS, Client, GrpcioApi, GrpcioClient, connect
from tests.helpers.servers import StartServer


@pytest.fixture(params=CLIENT_KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
def connect_client(
    client_kind: str, grpcio_api: GrpcioApi
) -> Iterator[Callable[[ServerProcess], Client]]:
    """Connect the parametrized client (grpclib, then grpcio) to a server; closed at the end."""
    clients: list[Client] = []

    def factory(server: ServerProcess) -> Client:
        client = connect(client_kind, server, grpcio_api)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def client(server: ServerProcess, connect_client: Callable[[ServerProcess], Client]) -> Client:
    """The parametrized client, connected to the default `server`."""
    return connect_client(server)


@pytest.fixture
def grpcio_client(server: ServerProcess, grpcio_api: GrpcioApi) -> Iterator[GrpcioClient]:
    client = GrpcioClient(server.address, grpcio_api)
    yield client
    client.close()


@pytest.fixture
def unix_server(start_unix_server: StartServer) -> ServerProcess:
    return start_unix_server()
