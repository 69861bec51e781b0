"""The ceiling of the stack: a bare grpclib server on plain asyncio, run as its own process.

    python -m peat_sync.bench.baseline PORT

Nothing is behind it: no store, no trio, no feed. Its Subscribe streams one pre-built
DocumentChange, of the same shape as the bench's events, over and over; SubscribeBatched does
the same with DocumentChangeBatch messages of BATCH events; PutDocument decodes the request
as the real server does and answers PutDocumentResponse(sequence=1). Comparing peat-sync with
it in one run shows what the node costs on top of grpclib itself.

It must not import peat_sync.server.serve, or anything else that imports trio_asyncio: that
would run it on another event loop than the plain asyncio one it measures.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import grpclib.const
import grpclib.server
from grpclib.encoding.proto import ProtoCodec

from peat_sync.bench.messages import COLLECTION, SERVICE, document
from peat_sync.generated.peat.sidecar import v1 as pb

READY = "baseline serving on"
# Events per SubscribeBatched message, as the measurement of batching used.
BATCH = 500
# Messages sent between two yields to the event loop.
YIELD_EVERY = 64


class Encoded:
    """Bytes of a message encoded earlier, which `PreEncodingCodec` sends as they are."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class PreEncodingCodec(ProtoCodec):
    """`ProtoCodec`, plus pass-through for `Encoded`: grpclib's own `send_message`, without
    the cost of encoding."""

    def encode(self, message: Any, message_type: Any) -> bytes:
        if isinstance(message, Encoded):
            return message.data
        return super().encode(message, message_type)


def _event() -> bytes:
    """An event as the bench's writers make them (their doc_ids: a prefix of the run, then
    the document's number), with a sequence and a number of a typical width."""
    n = 100_000
    return bytes(
        pb.DocumentChange(
            collection=COLLECTION,
            doc_id=f"{int(time.time())}-1-{n}",
            change_type=pb.ChangeType.UPSERT,
            json_data=document(n, time.monotonic_ns()),
            sequence=n,
        )
    )


async def _stream_forever(stream: grpclib.server.Stream[Any, Any], message: Encoded) -> None:
    await stream.recv_message()
    while True:
        for _ in range(YIELD_EVERY):
            await stream.send_message(message)
        # A send returns without suspending while the flow-control window lasts, so the loop
        # would not see the cancellation of a stream whose client has gone (and would write
        # to the closed socket) until the window ran out; the real server's pump yields too.
        await asyncio.sleep(0)


class BareService:
    def __init__(self) -> None:
        event = _event()
        self.change = Encoded(event)
        # A repeated field's entries, concatenated: field 1, length-delimited.
        entry = bytes([1 << 3 | 2, len(event)]) + event
        assert len(event) < 0x80, "the length prefix above is one byte"
        self.batch = Encoded(entry * BATCH)

    async def subscribe(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _stream_forever(stream, self.change)

    async def subscribe_batched(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _stream_forever(stream, self.batch)

    async def put_document(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_message(pb.PutDocumentResponse(sequence=1))

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream = grpclib.const.Cardinality.UNARY_STREAM
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {
            SERVICE + "Subscribe": grpclib.const.Handler(
                self.subscribe, stream, pb.SubscribeRequest, pb.DocumentChange
            ),
            SERVICE + "SubscribeBatched": grpclib.const.Handler(
                self.subscribe_batched, stream, pb.SubscribeRequest, pb.DocumentChangeBatch
            ),
            SERVICE + "PutDocument": grpclib.const.Handler(
                self.put_document, unary, pb.PutDocumentRequest, pb.PutDocumentResponse
            ),
        }


async def main(port: int) -> None:
    server = grpclib.server.Server([BareService()], codec=PreEncodingCodec())
    await server.start("127.0.0.1", port)
    print(f"{READY} 127.0.0.1:{port}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
