"""The ceiling of the stack: a bare grpclib server on plain asyncio.

Its Subscribe streams the same pre-built DocumentChange bytes over and over, with nothing
behind it: no store, no trio, no feed. Comparing peat-sync with it in one run shows what the
node costs on top of grpclib itself.

    python benchmarks/baseline_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpclib.const
import grpclib.server

from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.server.codec import Encoded, PreEncodingCodec

SUBSCRIBE = "/peat.sidecar.v1.PeatSidecar/Subscribe"


class BareFeed:
    def __init__(self) -> None:
        self.event = bytes(
            pb.DocumentChange(
                collection="bench",
                doc_id="doc-000000",
                change_type=pb.ChangeType.UPSERT,
                json_data='{"n": 0, "payload": "xxxxxxxxxxxxxxxx"}',
                sequence=1,
            )
        )

    async def subscribe(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        message = Encoded(self.event)
        while True:
            await stream.send_message(message)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            SUBSCRIBE: grpclib.const.Handler(
                self.subscribe,
                grpclib.const.Cardinality.UNARY_STREAM,
                pb.SubscribeRequest,
                pb.DocumentChange,
            )
        }


async def main(port: int) -> None:
    server = grpclib.server.Server([BareFeed()], codec=PreEncodingCodec())
    await server.start("127.0.0.1", port)
    print(f"serving on 127.0.0.1:{port}", flush=True)
    await server.wait_closed()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
