"""The grpclib server on its bound socket. Every method here is asyncio-flavoured: the trio
side calls them through the bridge."""

from __future__ import annotations

import socket
import ssl

import grpclib.server
from grpclib._typing import IServable

from peat_sync.server.codec import RequestCodec


class GrpcServer:
    """grpclib's server for `services`, decoding requests strictly. Construct it inside the
    asyncio loop: grpclib binds to the loop that is running."""

    def __init__(self, services: list[IServable]) -> None:
        self._server = grpclib.server.Server(services, codec=RequestCodec())

    async def start(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        await self._server.start(sock=sock, ssl=tls)

    async def close(self) -> None:
        """Stop accepting connections, cancel the calls under way, and wait for them to end;
        cancel the wait to stop waiting."""
        self._server.close()
        await self._server.wait_closed()
