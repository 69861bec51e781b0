"""A protobuf codec that sends already-encoded messages as they are, and the C-implemented
message classes for the messages where the generated pure-Python code costs most."""

from __future__ import annotations

from typing import Any

from google.protobuf import message_factory
from google.protobuf.message import Message
from grpclib.encoding.proto import ProtoCodec

# Importing the generated package registers its descriptors in this pool.
from peat_sync.generated.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from peat_sync.generated.peat.sidecar import v1 as _generated  # noqa: F401


class Encoded:
    """Bytes of a message encoded earlier; the codec sends them without re-encoding."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class PreEncodingCodec(ProtoCodec):
    """`ProtoCodec`, plus pass-through for `Encoded`: the feed encodes each event once, and
    every subscriber's stream sends those same bytes."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)


def native_message_class(name: str) -> type[Message]:
    """The protobuf runtime's own (C) class for the message `peat.sidecar.v1.<name>`: it
    decodes a 1,000-write WriteDocumentsRequest about ten times faster than the generated
    class, which was most of the server's CPU time under batched writes."""
    descriptor = default_google_proto_descriptor_pool.FindMessageTypeByName(
        f"peat.sidecar.v1.{name}"
    )
    return message_factory.GetMessageClass(descriptor)
