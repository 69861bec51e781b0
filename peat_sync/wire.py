"""Knowledge of the wire format in one place: RPC paths, the runtime's C message classes,
events encoded by hand, and the send path for messages that are already encoded.

It imports neither trio nor the node, so the bare grpclib baseline of `peat-sync bench` sends
through exactly the code the server sends through.

A `DocumentChange` of a data event is encoded here by hand: it has five fields, and the
generated encoder, built for any message, costs several times as much per event. A test
checks that both give the same bytes.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from google.protobuf import message_factory
from google.protobuf.message import Message

# Importing the generated package registers its descriptors in this pool.
from peat_sync.generated.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from peat_sync.generated.peat.sidecar.v1 import ChangeType

if TYPE_CHECKING:
    import grpclib.server

PACKAGE = "peat.sidecar.v1"
SERVICE = f"{PACKAGE}.PeatSidecar"


def rpc_path(method: str) -> str:
    """The HTTP/2 path of an RPC of the service, such as "Subscribe"."""
    return f"/{SERVICE}/{method}"


GET_STATUS = rpc_path("GetStatus")
PUT_DOCUMENT = rpc_path("PutDocument")
WRITE_DOCUMENTS = rpc_path("WriteDocuments")
SUBSCRIBE = rpc_path("Subscribe")
SUBSCRIBE_BATCHED = rpc_path("SubscribeBatched")
DELETE_DOCUMENT = rpc_path("DeleteDocument")

# The trailing metadata of a write refused with FAILED_PRECONDITION (its expected_sequence
# did not hold): the document's current sequence, 0 when it does not exist.
CURRENT_SEQUENCE_TRAILER = "peat-current-sequence"


@functools.cache
def message_class(name: str) -> type[Message]:
    """The protobuf runtime's own (C) class for the message `peat.sidecar.v1.<name>`: it
    decodes a 1,000-write WriteDocumentsRequest about ten times faster than the generated
    class, which was most of the server's CPU time under batched writes."""
    descriptor = default_google_proto_descriptor_pool.FindMessageTypeByName(f"{PACKAGE}.{name}")
    return message_factory.GetMessageClass(descriptor)


# A field's tag is (number << 3) | type, with type 0 for a varint and 2 for bytes.
_BATCH_ENTRY_TAG = bytes([1 << 3 | 2])  # DocumentChangeBatch.changes


def varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Wire types of the protobuf encoding.
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
WIRE_TYPE_NAMES = {
    VARINT: "a varint",
    FIXED64: "a 64-bit value",
    LENGTH_DELIMITED: "length-delimited bytes",
    3: "a group",
    4: "a group end",
    FIXED32: "a 32-bit value",
}


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("a varint runs past the end of the message")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


class Field(NamedTuple):
    """One field of an encoded message: data[start:end] is all of it, data[value:end] its
    value (a length-delimited value without its length)."""

    number: int
    wire_type: int
    start: int
    value: int
    end: int


def top_level_fields(data: bytes) -> list[Field]:
    """The fields of an encoded message, without decoding their values. ValueError for bytes
    that are not a message."""
    fields = []
    offset = 0
    while offset < len(data):
        start = offset
        tag, offset = _read_varint(data, offset)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ValueError("a field numbered 0")
        value = offset
        if wire_type == VARINT:
            _, offset = _read_varint(data, offset)
        elif wire_type == FIXED64:
            offset += 8
        elif wire_type == FIXED32:
            offset += 4
        elif wire_type == LENGTH_DELIMITED:
            length, value = _read_varint(data, offset)
            offset = value + length
        else:
            raise ValueError(f"field {number} is {WIRE_TYPE_NAMES.get(wire_type, 'of no type')}")
        if offset > len(data):
            raise ValueError(f"field {number} runs past the end of the message")
        fields.append(Field(number, wire_type, start, value, offset))
    return fields


def encode_change(collection: str, doc_id: str, json_data: str | None, sequence: int) -> bytes:
    """The `DocumentChange` of an UPSERT of `json_data`, or of a DELETE when it is None."""
    # The runtime's C class: a third less time than writing the fields by hand in Python.
    document_change = message_class("DocumentChange")
    if json_data is None:
        change = document_change(
            collection=collection,
            doc_id=doc_id,
            change_type=ChangeType.DELETE.value,
            sequence=sequence,
        )
    else:
        change = document_change(
            collection=collection,
            doc_id=doc_id,
            change_type=ChangeType.UPSERT.value,
            json_data=json_data,
            sequence=sequence,
        )
    return change.SerializeToString()


def batch_entry_prefix(encoded: bytes) -> bytes:
    """What precedes an encoded `DocumentChange` as one `changes` entry of a
    `DocumentChangeBatch`: a batch is its entries concatenated, as the wire format of a
    repeated field allows."""
    return _BATCH_ENTRY_TAG + varint(len(encoded))


# Bytes of gRPC messages handed to HTTP/2 at once, when messages share frames; a few frames'
# worth.
SEND_CHUNK_BYTES = 64 * 1024
# A paced stream yields to the event loop after this many messages, each its own write.
PACE_EVERY = 4


async def send_encoded(
    stream: grpclib.server.Stream[Any, Any], payloads: Iterable[bytes], *, paced: bool = False
) -> None:
    """Asyncio-flavoured: send each of `payloads`, an encoded message, as one gRPC message, on
    a stream whose initial metadata was sent (`send_initial_metadata`).

    `Stream.send_message` costs grpclib's dispatch and bookkeeping, an HTTP/2 DATA frame and
    a socket write per message: a third of the server's CPU per event streamed to a fast
    Subscribe reader. Here each message, behind its 5-byte gRPC prefix (not compressed,
    length), goes straight to the HTTP/2 stream, under the same flow control:

    - by default messages share frames and writes, in chunks of about `SEND_CHUNK_BYTES`: a
      tenth of the server's CPU per message;
    - `paced`, each is a write of its own, with a yield to the event loop after every
      `PACE_EVERY`. grpcio readers (sync and asyncio alike) read a stream of small messages
      about 1.6 times faster when they arrive spread out like this, as bare grpclib sends
      them, than in bursts of shared frames (measured: 20k against 12k events/s).

    grpclib has no public way to do this: it goes through `Stream._stream`, the HTTP/2
    stream (`grpclib.protocol.Stream.send_data`). pyproject.toml pins grpclib's minor
    version, and a test fails if that private API moves.
    """
    send_data = stream._stream.send_data
    if paced:
        for count, payload in enumerate(payloads, 1):
            await send_data(grpc_prefix(payload) + payload)
            if count % PACE_EVERY == 0:
                await asyncio.sleep(0)
        return
    chunk: list[bytes] = []
    size = 0
    for payload in payloads:
        chunk += (grpc_prefix(payload), payload)
        size += len(payload)
        if size >= SEND_CHUNK_BYTES:
            await send_data(b"".join(chunk))
            chunk, size = [], 0
    if chunk:
        await send_data(b"".join(chunk))


PREFIX_BYTES = 5


def grpc_prefix(payload: bytes) -> bytes:
    """What precedes `payload` as one gRPC message on an HTTP/2 stream: not compressed, then
    its length."""
    return b"\x00" + len(payload).to_bytes(4, "big")


def on_request_length(
    stream: grpclib.server.Stream[Any, Any], admit: Callable[[int], Awaitable[None]]
) -> None:
    """Make `stream` call `admit(length)` with the length of each request message as soon as
    the message's 5-byte prefix has arrived, before any of its body is read.

    grpclib reads a whole message before a handler sees it, acknowledging each chunk to the
    client, with no bound: a limit checked on the decoded message bounds nothing. `admit`
    raises to refuse the message (nothing of its body is read then), or waits until the
    server can hold it (its body stays unread, and HTTP/2 flow control holds the client).

    grpclib reads a message as two reads of the HTTP/2 stream (`Stream._stream.recv_data`):
    the prefix, then the body. This wraps that private method, like `send_encoded`.
    """
    h2_stream = stream._stream
    recv_data = h2_stream.recv_data
    at_prefix = True

    async def recv_admitted(size: int) -> bytes:
        nonlocal at_prefix
        data = await recv_data(size)
        if not at_prefix:
            at_prefix = True
        elif len(data) == PREFIX_BYTES:  # empty at the end of the requests
            at_prefix = False
            await admit(int.from_bytes(data[1:], "big"))
        return data

    h2_stream.recv_data = recv_admitted  # type: ignore[method-assign]
