"""Decoding requests strictly, so that a request that is not its message is the caller's
error."""

from __future__ import annotations

from typing import Any

import betterproto2
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec

from peat_sync.node.validation import excerpt
from peat_sync.wire import message_class


class RequestCodec(ProtoCodec):
    """`ProtoCodec` that decodes requests strictly, and makes their decoding failures the
    caller's: a request whose bytes are not its message is INVALID_ARGUMENT, not an internal
    error with a traceback.

    The generated (betterproto2) decoder is lenient: it takes a string whose length runs past
    the end of the request as the bytes that are there, and a field sent with another wire
    type as a value of the wrong Python type. So a request for a generated class is parsed
    first by the protobuf runtime, which refuses the first, and keeps the second as an
    unknown field, which is then dropped."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        try:
            if issubclass(message_type, betterproto2.Message):
                strict = message_class(message_type.__name__).FromString(data)
                strict.DiscardUnknownFields()
                data = strict.SerializeToString()
            return super().decode(data, message_type)
        except Exception as exc:  # each runtime and each field raises its own kind
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"the request is not a valid {message_type.__name__}: {excerpt(str(exc))}",
            ) from None
