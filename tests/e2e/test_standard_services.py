"""The standard gRPC services, through the official grpcio clients: health checking
(`grpc.health.v1.Health`) while the server starts, serves and drains, and server reflection
(v1alpha and v1), which lets a generic tool list and call the sidecar without its proto."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from peat_sync import wire
from peat_sync.bench.launcher import START_TIMEOUT, ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.store import SQLiteStore
from peat_sync.store.sqlite import DATABASE_FILE
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.clients import GrpcioApi, GrpcioClient, RpcFailure, failure_of, get, put, status
from tests.helpers.waiting import CALL_TIMEOUT

SIDECAR = wire.SERVICE
SERVICES = {
    SIDECAR,
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
}
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
NODE_STARTING = RpcFailure("UNAVAILABLE", "the node is starting (opening the store); retry shortly")


@pytest.fixture
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.address) as channel:
        yield channel


def check(channel: grpc.Channel, service: str) -> int:
    """The health status of `service` (or "" for the server), by a Check call."""
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT)
    return int(response.status)


def watch(channel: grpc.Channel, service: str) -> Iterator[Any]:
    """A Watch stream of the health of `service`; iterate it for each status sent."""
    stub = health_pb2_grpc.HealthStub(channel)
    stream: Iterator[Any] = stub.Watch(
        health_pb2.HealthCheckRequest(service=service), timeout=CALL_TIMEOUT
    )
    return stream


# ---------------------------------------------------------------------------------------------
# Health


@pytest.mark.parametrize("service", ["", SIDECAR], ids=["server", "sidecar"])
def test_health_is_serving_once_ready(channel: grpc.Channel, service: str) -> None:
    """Check and Watch report SERVING for the whole server and for the sidecar service."""
    assert check(channel, service) == SERVING
    assert next(watch(channel, service)).status == SERVING


def test_health_of_an_unknown_service(channel: grpc.Channel) -> None:
    """Check fails with NOT_FOUND for a service the server does not have; Watch reports
    SERVICE_UNKNOWN and stays open, as the health protocol asks."""
    with pytest.raises(grpc.RpcError) as failed:
        check(channel, "no.such.Service")
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no.such.Service'" in (failed.value.details() or "")
    assert next(watch(channel, "no.such.Service")).status == SERVICE_UNKNOWN


def lock_store(data_dir: Path) -> sqlite3.Connection:
    """Hold the store's write lock, as another process might: the server's store cannot open
    until the transaction ends. The store waits up to 5 s for the lock (its busy timeout);
    the caller releases it within that."""
    SQLiteStore.open(data_dir).close()  # the server opens a store; it creates none in a file
    connection = sqlite3.connect(data_dir / DATABASE_FILE, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    return connection


def test_not_serving_while_the_store_opens(tmp_path: Path, grpcio_api: GrpcioApi) -> None:
    """The server listens before it opens the store. Until the store is open, health is
    NOT_SERVING, GetStatus reports INITIALIZING, and every other call fails with UNAVAILABLE
    (a call that needs no store too); once it opens, a Watch stream sees SERVING and the
    calls work."""
    data_dir = tmp_path / "data"
    lock = lock_store(data_dir)
    server = ServerProcess(data_dir)
    with ThreadPoolExecutor(1) as pool, ExitStack() as cleanup:
        cleanup.callback(server.kill)  # before the pool waits for `start`
        cleanup.callback(lock.close)
        started = pool.submit(server.start)  # returns once the server is ready
        server.wait_for_log(r"listening on \S+; opening the store in ")
        channel = cleanup.enter_context(grpc.insecure_channel(server.address))
        client = GrpcioClient(server.address, grpcio_api)
        cleanup.callback(client.close)

        statuses = watch(channel, "")
        assert next(statuses).status == NOT_SERVING
        assert check(channel, SIDECAR) == NOT_SERVING
        probe = run_cli("health", "--addr", server.address)
        assert probe.returncode == 3
        assert_one_line_error(probe, "not serving: the server is starting or draining")
        starting = status(client)
        assert starting["phase"] == pb.NodePhase.INITIALIZING.value
        assert starting["epoch"] == "", "nothing is known of the store yet"
        doc = {"collection": "c", "doc_id": "d", "json_data": "{}"}
        assert failure_of(client, "PutDocument", **doc) == NODE_STARTING
        assert failure_of(client, "ListPeers") == NODE_STARTING
        assert not started.done()

        lock.rollback()
        assert next(statuses).status == SERVING
        started.result(START_TIMEOUT)
        assert run_cli("health", "--addr", server.address).returncode == 0
        assert status(client)["phase"] == pb.NodePhase.READY.value
        sequence = put(client, "c", "d", "{}")
        assert get(client, "c", "d") == ("{}", sequence)


def test_health_watch_sees_not_serving_when_the_server_drains(
    server: ServerProcess, channel: grpc.Channel
) -> None:
    """On SIGTERM, every Watch stream is sent NOT_SERVING, then ends with UNAVAILABLE: a
    client that has not read yet still gets both, in order."""
    watches = [watch(channel, service) for service in ("", SIDECAR)]
    for statuses in watches:
        assert next(statuses).status == SERVING
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    for statuses in watches:
        assert next(statuses).status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as ended:
            next(statuses)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ended.value.details() == "the server is shutting down"
    assert server.process.wait(CALL_TIMEOUT) == 0
    assert "stopped cleanly" in server.log


# ---------------------------------------------------------------------------------------------
# Reflection


def reflected_pool(
    channel: grpc.Channel,
) -> tuple[ProtoReflectionDescriptorDatabase, DescriptorPool]:
    """grpcio's reflection client (v1alpha), and a descriptor pool that asks it."""
    database = ProtoReflectionDescriptorDatabase(channel)
    return database, DescriptorPool(database)


def message_class(pool: DescriptorPool, name: str) -> Any:
    """The class of the message `name` (full name), built from its reflected descriptor."""
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def unary_call(channel: grpc.Channel, pool: DescriptorPool, method_name: str) -> Any:
    """Call the unary method `method_name` (full name) with only its reflected descriptor:
    the request and response classes are built from it, as a generic tool would."""
    method = pool.FindMethodByName(method_name)
    request_class = message_class(pool, method.input_type.full_name)
    response_class = message_class(pool, method.output_type.full_name)
    call = channel.unary_unary(
        f"/{method.containing_service.full_name}/{method.name}",
        request_serializer=request_class.SerializeToString,
        response_deserializer=response_class.FromString,
    )
    return lambda **fields: call(request_class(**fields), timeout=CALL_TIMEOUT)


def test_reflection_lists_describes_and_calls(channel: grpc.Channel) -> None:
    """grpcio's reflection client (v1alpha) lists the services, describes each of them, and
    is enough to put and get a document: no proto file, no generated code."""
    database, pool = reflected_pool(channel)
    assert set(database.get_services()) == SERVICES
    for name in SERVICES:
        assert pool.FindServiceByName(name).methods, name

    put_document = unary_call(channel, pool, f"{SIDECAR}.PutDocument")
    get_document = unary_call(channel, pool, f"{SIDECAR}.GetDocument")
    written = put_document(collection="c", doc_id="d", json_data='{"via": "reflection"}')
    assert written.sequence == 1
    read = get_document(collection="c", doc_id="d")
    assert (read.json_data, read.sequence) == ('{"via": "reflection"}', 1)


def test_reflection_v1(channel: grpc.Channel) -> None:
    """The v1 reflection service, which grpcurl asks first, answers on one stream: the same
    list, the file that declares a method (`grpcurl describe` of a method), a file by its
    usual name, and NOT_FOUND for an unknown symbol. Its messages come from its own
    reflected description: grpcio has no v1 client."""
    _, pool = reflected_pool(channel)
    request = message_class(pool, "grpc.reflection.v1.ServerReflectionRequest")
    response = message_class(pool, "grpc.reflection.v1.ServerReflectionResponse")
    info = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=request.SerializeToString,
        response_deserializer=response.FromString,
    )
    requests = [
        request(list_services=""),
        request(file_containing_symbol=f"{SIDECAR}.PutDocument"),
        request(file_by_filename="grpc/health/v1/health.proto"),
        request(file_containing_symbol=f"{SIDECAR}.NoSuchMethod"),
    ]
    listed, sidecar, health, unknown = info(iter(requests), timeout=CALL_TIMEOUT)

    assert {service.name for service in listed.list_services_response.service} == SERVICES

    def services_in(answer: Any) -> list[str]:
        (serialized,) = answer.file_descriptor_response.file_descriptor_proto
        file = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        return [f"{file.package}.{service.name}" for service in file.service]

    assert services_in(sidecar) == [SIDECAR]
    assert services_in(health) == ["grpc.health.v1.Health"]
    assert unknown.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
