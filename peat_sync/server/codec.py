"""A protobuf codec that sends already-encoded messages as they are."""

from __future__ import annotations

from typing import Any

from grpclib.encoding.proto import ProtoCodec


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
