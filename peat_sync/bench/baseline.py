"""The ceiling of the stack: a bare grpclib server on plain asyncio, run as its own process.

    python -m peat_sync.bench.baseline PORT

Nothing is behind it: no store, no trio, no feed. It serves what peat-sync serves, through the
same code, minus the node. Subscribe streams one event, of the same shape as the bench's
events, over and over; SubscribeBatched does the same with messages of BATCH events. Both send
as the server does, with `wire.send_encoded` (events encoded by `wire.encode_change`), and
Subscribe paced as the server paces a stream while it has few subscribers. PutDocument decodes
the request and answers with the protobuf runtime's classes, as the server's handler does.
Comparing peat-sync with it in one run shows what the node costs on top of grpclib itself.

With PORT 0 it listens on a free port; either way it prints BASELINE_READY and its address
(peat_sync.bench.launcher.BaselineProcess starts it so).

It must not import trio, trio_asyncio or the server (peat_sync.server): that would run it on
another event loop than the plain asyncio one it measures.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from typing import Any

import grpclib.const
import grpclib.server

from peat_sync import wire
from peat_sync.bench.launcher import BASELINE_READY
from peat_sync.bench.messages import COLLECTION, document

# Events per SubscribeBatched message.
BATCH = 500
# Events handed to `send_encoded` at once on a Subscribe stream: as many as the server takes
# from a subscription at once (its SEND_BATCH), each a message.
SEND_BATCH = 512

SubscribeRequest = wire.message_class("SubscribeRequest")
DocumentChange = wire.message_class("DocumentChange")
DocumentChangeBatch = wire.message_class("DocumentChangeBatch")
PutDocumentRequest = wire.message_class("PutDocumentRequest")
PutDocumentResponse = wire.message_class("PutDocumentResponse")


def _event() -> bytes:
    """An event as the bench's writers make them (their doc_ids: a prefix of the run, then
    the document's number), with a sequence and a number of a typical width."""
    n = 100_000
    return wire.encode_change(
        COLLECTION, f"{int(time.time())}-1-{n}", document(n, time.monotonic_ns()), n
    )


async def _stream_forever(
    stream: grpclib.server.Stream[Any, Any], messages: tuple[bytes, ...], *, paced: bool
) -> None:
    """Send `messages` over and over, as the server sends what it takes from the node."""
    # Read the request before streaming: an unread request holds flow-control window.
    await stream.recv_message()
    await stream.send_initial_metadata()
    while True:
        await wire.send_encoded(stream, messages, paced=paced)
        # A send returns without suspending while the flow-control window lasts, so the loop
        # would not see the cancellation of a stream whose client has gone (and would write
        # to the closed socket) until the window ran out; the server's pump yields too.
        await asyncio.sleep(0)


class BareService:
    def __init__(self) -> None:
        event = _event()
        self.events = (event,) * SEND_BATCH
        self.batch = ((wire.batch_entry_prefix(event) + event) * BATCH,)

    async def subscribe(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _stream_forever(stream, self.events, paced=True)

    async def subscribe_batched(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await _stream_forever(stream, self.batch, paced=False)

    async def put_document(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(PutDocumentResponse(sequence=1))

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        stream = grpclib.const.Cardinality.UNARY_STREAM
        unary = grpclib.const.Cardinality.UNARY_UNARY
        return {
            wire.SUBSCRIBE: grpclib.const.Handler(
                self.subscribe, stream, SubscribeRequest, DocumentChange
            ),
            wire.SUBSCRIBE_BATCHED: grpclib.const.Handler(
                self.subscribe_batched, stream, SubscribeRequest, DocumentChangeBatch
            ),
            wire.PUT_DOCUMENT: grpclib.const.Handler(
                self.put_document, unary, PutDocumentRequest, PutDocumentResponse
            ),
        }


async def main(port: int) -> None:
    # IPPROTO_TCP named, as loop.create_server names it: asyncio sets TCP_NODELAY only on
    # sockets that say so, and without it a unary call waits out a delayed ACK (40 ms).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    server = grpclib.server.Server([BareService()])
    await server.start(sock=listener)
    print(f"{BASELINE_READY} 127.0.0.1:{listener.getsockname()[1]}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
