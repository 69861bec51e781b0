"""Both clients behind one small facade, for tests that make the same calls with each: the
official grpcio client compiled from the proto, and the betterproto2-generated grpclib one.

Calls take and return plain Python values; a failed call raises `CallFailed`. Events come back
as `Event`, whichever client received them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re
from collections.abc import Awaitable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol, TypeVar

import grpc
import grpclib.client
from grpclib.exceptions import GRPCError

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.waiting import CALL_TIMEOUT

# `sidecar_pb2` and `sidecar_pb2_grpc`, as the `grpcio_api` fixture compiles them.
GrpcioApi = tuple[ModuleType, ModuleType]

T = TypeVar("T")


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
    "node": ("PutNode", "node", "GetNodes", "nodes", "Node"),
    "cell": ("PutCell", "cell", "GetCells", "cells", "Cell"),
    "track": ("PutTrack", "track", "GetTracks", "tracks", "Track"),
    "command": ("PutCommand", "command", "GetCommands", "commands", "Command"),
}
TYPED_COLLECTIONS = {
    "platform": "platforms",
    "node": "nodes",
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


def grpcio_dict(message: Any) -> dict[str, Any]:
    """A grpcio message as a dict: enums as ints, unset optional fields and messages None."""
    values: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and not _is_repeated(field):
            values[field.name] = grpcio_dict(value) if message.HasField(field.name) else None
        elif _is_repeated(field):
            values[field.name] = [
                grpcio_dict(item) if field.message_type is not None else item for item in value
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
        return grpcio_dict(response)

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
