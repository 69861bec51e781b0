"""A network path that a test can cut and restore while the server goes on serving: `Link`,
a relay on a unix socket of its own, in front of a server's unix socket."""

from __future__ import annotations

import asyncio
from contextlib import suppress
from pathlib import Path

from peat_sync.bench.launcher import ServerProcess


class Link:
    """Asyncio-flavoured: a relay from the unix socket `path` to a server's socket, that is, a
    network path that a test can cut (every connection through it drops, and connecting
    fails) and restore, while the server goes on serving everyone else. The relay connects to
    the server anew for each connection, so it follows the server across restarts. Use it in
    `async with`, which opens it, and closes every connection at the end."""

    def __init__(self, path: Path, server: ServerProcess) -> None:
        self.path = path
        self.address = f"unix://{path}"
        self._server = server
        self._listener: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Link:
        await self.restore()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._listener is not None:
            await self.cut()
        await asyncio.gather(*self._relays)  # each ends once its connections are aborted

    async def restore(self) -> None:
        """Start relaying: new connections reach the server."""
        self._listener = await asyncio.start_unix_server(self._accept, path=str(self.path))

    async def cut(self) -> None:
        """Drop every connection and refuse new ones (nothing listens on `path`)."""
        assert self._listener is not None
        self._listener.close()
        self._listener = None
        for writer in list(self._connections):
            writer.transport.abort()
        self.path.unlink(missing_ok=True)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.create_task(self._relay(reader, writer))
        self._relays.add(relay)
        relay.add_done_callback(self._relays.discard)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(str(self._server.socket_path))
        except OSError:  # the server is restarting: the client sees a dropped connection
            writer.transport.abort()
            return
        connections = {writer, up_writer}
        self._connections |= connections
        if self._listener is None:  # cut while connecting
            for connection in connections:
                connection.transport.abort()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._connections -= connections


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()  # one direction ended: end the other
