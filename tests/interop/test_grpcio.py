"""The API contract (tests/interop/contract.py) through the official grpcio client, with stubs
that grpc_tools compiled from proto/sidecar.proto, and its events read as grpcio gives them."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import Event, GrpcioApi, GrpcioClient
from tests.helpers.streams import GrpcioSubscription
from tests.helpers.waiting import CALL_TIMEOUT
from tests.interop.contract import Connect, Contract


class GrpcioFeed:
    def __init__(self, client: GrpcioClient, count: int, request: dict[str, Any]) -> None:
        self.subscription = GrpcioSubscription(client, CALL_TIMEOUT, **request)
        self.count = count
        self.natives: list[Any] = []

    def events(self) -> list[Event]:
        try:
            self.natives = [next(self.subscription.call) for _ in range(self.count)]
        finally:
            self.subscription.cancel()
        return [Event.from_grpcio(change) for change in self.natives]


class GrpcioDriver(GrpcioClient):
    def subscribe(self, count: int, **request: Any) -> GrpcioFeed:
        return GrpcioFeed(self, count, request)


@pytest.fixture
def connect(grpcio_api: GrpcioApi) -> Iterator[Connect]:
    clients: list[GrpcioDriver] = []

    def factory(server: ServerProcess) -> GrpcioDriver:
        clients.append(GrpcioDriver(server.address, grpcio_api))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


class TestGrpcio(Contract):
    pb2: ModuleType

    @pytest.fixture(autouse=True)
    def _pb2(self, grpcio_api: GrpcioApi) -> None:
        self.pb2 = grpcio_api[0]

    def assert_native_resync(self, native: Any, reason: str, sequence: int) -> None:
        # grpcio: enums are ints with named module constants; uint64 is a Python int.
        assert native.change_type == self.pb2.CHANGE_TYPE_RESYNC
        assert native.resync_reason == getattr(self.pb2, reason)
        assert self.pb2.ResyncReason.Name(native.resync_reason) == reason
        assert native.sequence == sequence
