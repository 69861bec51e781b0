"""Helpers for the end-to-end tests: both clients behind one small facade, deadlines, polling,
and a server on a unix socket.

Every test here talks to a real `peat-sync serve` subprocess over a real socket. Each wait has
a deadline: grpcio calls take `timeout=`, grpclib scenarios run under `asyncio.wait_for`, and
conditions are polled (never slept on) with a bound.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import grpclib.client
import grpclib.config
import pytest
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from peat_sync.bench.launcher import server_env as clean_env
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.conftest import GrpcioApi, ServerProcess, StartServer, peat_sync_command

# The deadline of one unary call.
CALL_TIMEOUT = 10.0
# The deadline of one streaming call or one whole grpclib scenario.
STREAM_TIMEOUT = 60.0

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; return that, or fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def run_scenario(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run an asyncio (grpclib) scenario from a sync test, under a deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


async def within(awaitable: Awaitable[T], seconds: float = CALL_TIMEOUT) -> T:
    """Asyncio-flavoured: await with a deadline."""
    return await asyncio.wait_for(awaitable, seconds)


def small_window_config() -> grpclib.config.Configuration:
    """A grpclib client that buffers at most 64 KiB unread: a stalled reader stalls the
    server's sends almost at once."""
    return grpclib.config.Configuration(
        http2_connection_window_size=65535, http2_stream_window_size=65535
    )


# ---------------------------------------------------------------------------------------------
# Events, as both clients see them


@dataclass(frozen=True)
class Event:
    """One `DocumentChange`, client-independent; enums as ints, unset json_data as None."""

    collection: str
    doc_id: str
    change_type: int
    json_data: str | None
    sequence: int
    resync_reason: int = 0
    message: str = ""
    epoch: str = ""
    replay_floor: int = 0
    catch_up_floor: int = 0

    @property
    def is_resync(self) -> bool:
        return self.change_type == pb.ChangeType.RESYNC.value

    @property
    def is_heartbeat(self) -> bool:
        return self.change_type == pb.ChangeType.HEARTBEAT.value

    @classmethod
    def from_grpcio(cls, change: Any) -> Event:
        return cls(
            change.collection,
            change.doc_id,
            int(change.change_type),
            change.json_data if change.HasField("json_data") else None,
            change.sequence,
            int(change.resync_reason),
            change.message,
            change.epoch,
            change.replay_floor,
            change.catch_up_floor,
        )

    @classmethod
    def from_grpclib(cls, change: pb.DocumentChange) -> Event:
        return cls(
            change.collection,
            change.doc_id,
            int(change.change_type.value),
            change.json_data,
            change.sequence,
            int(change.resync_reason.value),
            change.message,
            change.epoch,
            change.replay_floor,
            change.catch_up_floor,
        )


UPSERT = pb.ChangeType.UPSERT.value
DELETE = pb.ChangeType.DELETE.value
RESYNC = pb.ChangeType.RESYNC.value
HEARTBEAT = pb.ChangeType.HEARTBEAT.value
SNAPSHOT_BEGIN = pb.ChangeType.SNAPSHOT_BEGIN.value
CATCH_UP_BEGIN = pb.ChangeType.CATCH_UP_BEGIN.value
CATCH_UP_END = pb.ChangeType.CATCH_UP_END.value


# ---------------------------------------------------------------------------------------------
# One facade over both clients


@dataclass(frozen=True)
class RpcFailure:
    """A failed call: the status code's name (INVALID_ARGUMENT, ...) and its message."""

    code: str
    message: str


class CallFailed(Exception):
    def __init__(self, failure: RpcFailure) -> None:
        super().__init__(f"{failure.code}: {failure.message}")
        self.failure = failure


# kind -> (Put rpc, request field, Get rpc, response field, message name)
TYPED = {
    "platform": ("PutPlatform", "platform", "GetPlatforms", "platforms", "Platform"),
    "cell": ("PutCell", "cell", "GetCells", "cells", "Cell"),
    "track": ("PutTrack", "track", "GetTracks", "tracks", "Track"),
    "command": ("PutCommand", "command", "GetCommands", "commands", "Command"),
}
TYPED_COLLECTIONS = {
    "platform": "platforms",
    "cell": "cells",
    "track": "tracks",
    "command": "commands",
}


def _snake(rpc: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", rpc).lower()


class Client(Protocol):
    """The calls the tests make, with plain Python values in and out."""

    name: str

    def call(self, rpc: str, **request: Any) -> dict[str, Any]:
        """Call a unary rpc; the response as a dict (enums as ints, unset optionals None).
        Raises `CallFailed`."""

    def message(self, name: str, fields: dict[str, Any]) -> Any:
        """The message `name` of this client's generated code, with `fields` set."""

    def close(self) -> None: ...


def put_typed(client: Client, kind: str, fields: dict[str, Any] | None) -> int:
    """A typed put (PutPlatform ...); `fields=None` sends the request with no message."""
    put_rpc, field, _, _, message_name = TYPED[kind]
    request = {} if fields is None else {field: client.message(message_name, fields)}
    sequence: int = client.call(put_rpc, **request)["sequence"]
    return sequence


def get_typed(client: Client, kind: str) -> list[dict[str, Any]]:
    _, _, get_rpc, response_field, _ = TYPED[kind]
    items: list[dict[str, Any]] = client.call(get_rpc)[response_field]
    return items


def failure_of(client: Client, rpc: str, **request: Any) -> RpcFailure:
    """The failure of a call that must fail."""
    try:
        response = client.call(rpc, **request)
    except CallFailed as exc:
        return exc.failure
    raise AssertionError(f"{client.name} {rpc}({request}) succeeded: {response}")


def put(client: Client, collection: str, doc_id: str, json_data: str) -> int:
    sequence: int = client.call(
        "PutDocument", collection=collection, doc_id=doc_id, json_data=json_data
    )["sequence"]
    return sequence


def get(client: Client, collection: str, doc_id: str) -> tuple[str | None, int]:
    response = client.call("GetDocument", collection=collection, doc_id=doc_id)
    return response["json_data"], response["sequence"]


def delete(client: Client, collection: str, doc_id: str) -> int:
    sequence: int = client.call("DeleteDocument", collection=collection, doc_id=doc_id)["sequence"]
    return sequence


def list_ids(client: Client, collection: str) -> list[str]:
    doc_ids: list[str] = client.call("ListDocuments", collection=collection)["doc_ids"]
    return doc_ids


def status(client: Client) -> dict[str, Any]:
    return client.call("GetStatus")


def _grpcio_dict(message: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and not _is_repeated(field):
            values[field.name] = _grpcio_dict(value) if message.HasField(field.name) else None
        elif _is_repeated(field):
            values[field.name] = [
                _grpcio_dict(item) if field.message_type is not None else item for item in value
            ]
        elif field.has_presence and not message.HasField(field.name):
            values[field.name] = None
        else:
            values[field.name] = value
    return values


def _is_repeated(field: Any) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)


class GrpcioClient:
    """The official client, from stubs that grpc_tools compiled from the proto."""

    name = "grpcio"

    def __init__(self, target: str, api: GrpcioApi) -> None:
        self.pb2, pb2_grpc = api
        self.channel = grpc.insecure_channel(target)
        self.stub = pb2_grpc.PeatSidecarStub(self.channel)

    def call(self, rpc: str, **request: Any) -> dict[str, Any]:
        message = getattr(self.pb2, f"{rpc}Request")(**request)
        try:
            response = getattr(self.stub, rpc)(message, timeout=CALL_TIMEOUT)
        except grpc.RpcError as exc:
            raise CallFailed(RpcFailure(exc.code().name, exc.details() or "")) from None
        return _grpcio_dict(response)

    def message(self, name: str, fields: dict[str, Any]) -> Any:
        present = {field: value for field, value in fields.items() if value is not None}
        return getattr(self.pb2, name)(**present)

    def close(self) -> None:
        self.channel.close()


def _betterproto_value(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list):
        return [_betterproto_value(item) for item in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _betterproto_dict(value)
    return value


def _betterproto_dict(message: Any) -> dict[str, Any]:
    return {
        field.name: _betterproto_value(getattr(message, field.name))
        for field in dataclasses.fields(message)
    }


def _betterproto_message(message_type: type[T], fields: dict[str, Any]) -> T:
    """Build a betterproto2 message from plain values (enums given as ints)."""
    defaults = message_type()
    values = {}
    for name, value in fields.items():
        default = getattr(defaults, name)
        if isinstance(default, enum.Enum) and value is not None:
            value = type(default)(value)
        values[name] = value
    return message_type(**values)


class GrpclibClient:
    """The betterproto2-generated grpclib client, on its own asyncio loop."""

    name = "grpclib"

    def __init__(self, host: str, port: int) -> None:
        self._runner = asyncio.Runner()
        self.channel: grpclib.client.Channel = self._run(self._open(host, port))
        self.stub = pb.PeatSidecarStub(self.channel, timeout=CALL_TIMEOUT)

    @staticmethod
    async def _open(host: str, port: int) -> grpclib.client.Channel:
        return grpclib.client.Channel(host, port)

    def _run(self, awaitable: Awaitable[T]) -> T:
        async def bounded() -> T:
            return await asyncio.wait_for(awaitable, CALL_TIMEOUT + 5)

        return self._runner.run(bounded())

    def call(self, rpc: str, **request: Any) -> dict[str, Any]:
        message = getattr(pb, f"{rpc}Request")(**request)
        try:
            response = self._run(getattr(self.stub, _snake(rpc))(message))
        except GRPCError as exc:
            raise CallFailed(RpcFailure(exc.status.name, exc.message or "")) from None
        return _betterproto_dict(response)

    def message(self, name: str, fields: dict[str, Any]) -> Any:
        return _betterproto_message(getattr(pb, name), fields)

    def close(self) -> None:
        self.channel.close()
        self._runner.close()


CLIENT_KINDS = ("grpclib", "grpcio")


def connect(kind: str, server: ServerProcess, api: GrpcioApi) -> Client:
    if kind == "grpcio":
        return GrpcioClient(server.address, api)
    return GrpclibClient("127.0.0.1", server.port)


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


# ---------------------------------------------------------------------------------------------
# Subscribe


class GrpcioSubscription:
    """A grpcio Subscribe stream, read one event at a time under the call's deadline."""

    def __init__(self, client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any):
        self.call = client.stub.Subscribe(client.pb2.SubscribeRequest(**request), timeout=timeout)

    def next(self, *, heartbeats: bool = False) -> Event:
        """The next event; heartbeats are skipped unless asked for."""
        while True:
            event = Event.from_grpcio(next(self.call))
            if heartbeats or not event.is_heartbeat:
                return event

    def take(self, count: int, *, heartbeats: bool = False) -> list[Event]:
        return [self.next(heartbeats=heartbeats) for _ in range(count)]

    def until(self, stop: Callable[[Event], bool], *, heartbeats: bool = False) -> list[Event]:
        """Events up to and including the first one for which `stop` is true."""
        events = []
        while True:
            event = self.next(heartbeats=heartbeats)
            events.append(event)
            if stop(event):
                return events

    def cancel(self) -> None:
        self.call.cancel()


@contextmanager
def grpcio_subscription(
    client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any
) -> Iterator[GrpcioSubscription]:
    subscription = GrpcioSubscription(client, timeout, **request)
    try:
        yield subscription
    finally:
        subscription.cancel()


def wait_for_subscribers(client: Client, count: int) -> dict[str, Any]:
    return wait_until(
        lambda: (response := status(client))["subscribers"] == count and response,
        what=f"{count} open subscriber streams",
    )


async def open_grpclib_subscribe(
    channel: grpclib.client.Channel, request: pb.SubscribeRequest
) -> Any:
    """Asyncio-flavoured: open a Subscribe stream and send its request, reading nothing.

    Returns the entered grpclib stream; prefer `grpclib_subscribe`, which also closes it.
    """
    stream = channel.request(
        "/peat.sidecar.v1.PeatSidecar/Subscribe",
        Cardinality.UNARY_STREAM,
        pb.SubscribeRequest,
        pb.DocumentChange,
        timeout=STREAM_TIMEOUT,
    )
    await within(stream.__aenter__())
    await within(stream.send_message(request, end=True))
    return stream


@asynccontextmanager
async def grpclib_subscribe(
    channel: grpclib.client.Channel, request: pb.SubscribeRequest
) -> AsyncIterator[Any]:
    """Asyncio-flavoured: a Subscribe stream whose request is sent, and nothing read yet."""
    stream = await open_grpclib_subscribe(channel, request)
    try:
        yield stream
    finally:
        # The connection may already be gone (a server that stopped); that ends the stream too.
        with suppress(StreamTerminatedError):
            await within(stream.cancel())
            await within(stream.__aexit__(None, None, None))


async def recv_event(
    stream: Any, seconds: float = CALL_TIMEOUT, *, heartbeats: bool = False
) -> Event:
    """Asyncio-flavoured: the next event of a grpclib Subscribe stream; heartbeats are
    skipped unless asked for."""
    while True:
        message = await within(stream.recv_message(), seconds)
        assert message is not None, "the Subscribe stream ended"
        event = Event.from_grpclib(message)
        if heartbeats or not event.is_heartbeat:
            return event


class GrpclibStream:
    """A grpclib Subscribe stream read from sync code, on an event loop of its own (so each
    thread can have one); reads like `GrpcioSubscription`."""

    def __init__(
        self,
        port: int,
        request: pb.SubscribeRequest,
        config: grpclib.config.Configuration | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._channel = self._runner.run(self._open(port, config))
        self._stream = self._runner.run(open_grpclib_subscribe(self._channel, request))

    @staticmethod
    async def _open(
        port: int, config: grpclib.config.Configuration | None
    ) -> grpclib.client.Channel:
        return grpclib.client.Channel("127.0.0.1", port, config=config)

    def next(self, *, heartbeats: bool = False, seconds: float = CALL_TIMEOUT) -> Event:
        """The next event (heartbeats skipped unless asked for), within `seconds`."""
        try:
            return self._runner.run(recv_event(self._stream, seconds, heartbeats=heartbeats))
        except TimeoutError:
            raise AssertionError(f"no event within {seconds} s") from None

    def until(self, stop: Callable[[Event], bool], *, heartbeats: bool = False) -> list[Event]:
        events = [self.next(heartbeats=heartbeats)]
        while not stop(events[-1]):
            events.append(self.next(heartbeats=heartbeats))
        return events

    def close(self) -> None:
        with suppress(StreamTerminatedError):
            self._runner.run(within(self._stream.cancel()))
            self._runner.run(within(self._stream.__aexit__(None, None, None)))
        self._channel.close()
        self._runner.close()


async def wait_for_subscribers_async(stub: pb.PeatSidecarStub, count: int) -> None:
    """Asyncio-flavoured: poll GetStatus until `count` Subscribe streams are open."""
    while True:
        if (await stub.get_status()).subscribers == count:
            return
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------------------------
# The command line

CLI_TIMEOUT = 30.0


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `peat-sync ARGS` to completion, with only `env` as PEAT_SIDECAR_* variables."""
    return subprocess.run(
        [*peat_sync_command(), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=clean_env(**env),
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """The output is one line, no traceback, holding every fragment; returns the line."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def help_entries(text: str) -> dict[str, str]:
    """Each option's entry in argparse help, keyed by flag, whitespace collapsed."""
    entries: dict[str, str] = {}
    flag = None
    for line in text.splitlines():
        match = re.match(r"  (-h, --help|--[a-z-]+)\b", line)
        if match:
            flag = match[1].split(", ")[-1]
            entries[flag] = ""
        elif flag is not None and not line.startswith("  "):
            flag = None
        if flag is not None:
            entries[flag] = " ".join([*entries[flag].split(), *line.split()])
    return entries


# ---------------------------------------------------------------------------------------------
# Processes


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short temporary directory for unix sockets: their paths are limited to about 100
    bytes, which pytest's tmp_path can exceed."""
    with tempfile.TemporaryDirectory(prefix="peat-") as directory:
        yield Path(directory)


@pytest.fixture
def start_unix_server(socket_dir: Path, start_server: StartServer) -> StartServer:
    """A factory for servers on `socket_dir/peat.sock`; each is killed at the end."""

    def factory(*args: str, **options: Any) -> ServerProcess:
        return start_server(*args, listen=f"unix://{socket_dir / 'peat.sock'}", **options)

    return factory


@pytest.fixture
def unix_server(start_unix_server: StartServer) -> ServerProcess:
    return start_unix_server()
