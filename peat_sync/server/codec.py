"""Decoding requests strictly, so that a request that is not its message is the caller's
error."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import betterproto2
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec

from peat_sync.wire import WIRE_TYPE_NAMES, message_class


class RequestCodec(ProtoCodec):
    """`ProtoCodec` that decodes requests strictly, and makes their decoding failures the
    caller's: a request whose bytes are not its message is INVALID_ARGUMENT, not an internal
    error with a traceback. So is a request with a field its message does not have: no
    request is half understood in silence.

    The generated (betterproto2) decoder is lenient: it takes a string whose length runs past
    the end of the request as the bytes that are there, and a field sent with another wire
    type as a value of the wrong Python type. So a request for a generated class is parsed
    first by the protobuf runtime, which refuses the first, and keeps the second as an
    unknown field, which is refused."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            return decode_request(data, message_type)
        except Exception as exc:  # each runtime and each field raises its own kind
            raise GRPCError(Status.INVALID_ARGUMENT, invalid_request(message_type, exc)) from None


def decode_request(data: bytes, message_type: Any) -> Any:
    """`data` as a `message_type`, a generated class or one of the runtime's (or any class
    with `FromString`), decoded strictly; raises what the runtime raises for bytes that are
    not the message, and ValueError for a field it lacks."""
    if issubclass(message_type, betterproto2.Message):
        refuse_unknown_fields(message_class(message_type.__name__).FromString(data), data)
        return message_type.parse(data)
    message = message_type.FromString(data)
    if isinstance(message, Message):  # a runtime class (see `wire.message_class`)
        refuse_unknown_fields(message, data)
    return message


def invalid_request(message_type: Any, error: Exception) -> str:
    """Why a request that is not a valid `message_type` was refused."""
    return f"the request is not a valid {message_type.__name__}: {_explained(error)}"


# Characters of a refusal's explanation sent at most: the server's own explanations fit, and
# those quote a client's strings only cut short (`excerpt`); a runtime's error might not.
EXPLANATION_CHARACTERS = 1000


def _explained(exc: Exception) -> str:
    text = str(exc)
    if len(text) <= EXPLANATION_CHARACTERS:
        return text
    return f"{text[:EXPLANATION_CHARACTERS]}... ({len(text):,} characters)"


def refuse_unknown_fields(message: Message, data: bytes, where: str = "the request") -> None:
    """ValueError naming a field of `message` (a runtime message, parsed from `data`), or of
    a message in it, that its type lacks: the runtime keeps those aside as it parses. Drops
    them from `message` (which is then refused)."""
    message.DiscardUnknownFields()  # all of them, at every depth
    if message.ByteSize() == len(data):
        return  # nothing was dropped (the usual case: no walk over every field)
    _name_unknown_field(type(message).FromString(data), where)


def _name_unknown_field(message: Message, where: str) -> None:
    for field in cast(Iterable[Any], UnknownFieldSet(message)):
        kind = WIRE_TYPE_NAMES.get(field.wire_type, "a value")
        raise ValueError(
            f"field {field.field_number} ({kind}) of {where} is not a field of"
            f" {type(message).__name__}: this server does not know it, and refuses the request"
            " rather than ignore it"
        )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        name = f"{where}.{descriptor.name}"
        for index, item in enumerate(value if descriptor.is_repeated else [value]):
            _name_unknown_field(item, f"{name}[{index}]" if descriptor.is_repeated else name)
    # Otherwise the size differed for another reason (an encoding that is valid but not the
    # runtime's own, such as a repeated field sent twice): nothing unknown, nothing refused.
