"""The Connect runtime's codecs for this service's messages: binary protobuf, and JSON in
protobuf's canonical mapping.

The service's messages come in three kinds: generated (betterproto2) classes, the protobuf
runtime's own classes (`wire.message_class`), and events already encoded (`Encoded`). JSON
goes through the runtime's classes, whose JSON mapping is protobuf's own: int64 as strings,
enums by name, fields in lowerCamelCase. Requests are decoded as strictly as on the gRPC port
(`server.codec.decode_request`): a field the message lacks is refused, in JSON too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import betterproto2
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from google.protobuf import json_format
from google.protobuf.message import Message

from peat_sync.server.codec import decode_request, invalid_request
from peat_sync.server.request_limits import RequestLimits, too_large
from peat_sync.wire import message_class


class Encoded(NamedTuple):
    """A message already encoded: `data` is a `peat.sidecar.v1.<name>`."""

    name: str
    data: bytes


def _binary(message: Any) -> bytes:
    if isinstance(message, Encoded):
        return message.data
    if isinstance(message, Message):
        return message.SerializeToString()
    return bytes(message)


def _runtime_message(message: Any) -> Message:
    """`message` as an instance of the runtime's class of its type."""
    if isinstance(message, Message):
        return message
    if isinstance(message, Encoded):
        return message_class(message.name).FromString(message.data)
    assert isinstance(message, betterproto2.Message), type(message)
    return message_class(type(message).__name__).FromString(bytes(message))


def _check_size(data: bytes | bytearray, message_type: Any, limits: RequestLimits) -> None:
    limit, flag = limits.of(message_type.__name__)
    if len(data) > limit:
        raise ConnectError(Code.RESOURCE_EXHAUSTED, too_large(len(data), limit, flag))


def _decoded(data: bytes, message_type: Any) -> Any:
    try:
        return decode_request(data, message_type)
    except Exception as exc:  # each runtime and each field raises its own kind
        raise ConnectError(Code.INVALID_ARGUMENT, invalid_request(message_type, exc)) from None


class BinaryCodec:
    """application/proto and application/connect+proto (and gRPC-Web's +proto); requests
    within `limits`."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits

    def name(self) -> str:
        return "proto"

    def encode(self, message: Any) -> bytes:
        return _binary(message)

    def decode(self, data: bytes | bytearray, message_type: Any) -> Any:
        _check_size(data, message_type, self._limits)
        return _decoded(bytes(data), message_type)


class JsonCodec:
    """application/json and application/connect+json: protobuf's JSON mapping; requests
    within `limits`."""

    def __init__(self, limits: RequestLimits) -> None:
        self._limits = limits

    def name(self) -> str:
        return "json"

    def encode(self, message: Any) -> bytes:
        return json_format.MessageToJson(_runtime_message(message), indent=None).encode()

    def decode(self, data: bytes | bytearray, message_type: Any) -> Any:
        _check_size(data, message_type, self._limits)
        parsed = message_class(message_type.__name__)()
        try:
            # An empty body is the empty message, as Connect's GET requests send it.
            json_format.Parse(bytes(data) or b"{}", parsed)
        except json_format.ParseError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, invalid_request(message_type, exc)) from None
        return _decoded(parsed.SerializeToString(), message_type)
