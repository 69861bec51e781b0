"""Helpers for the client library's tests against the real server.

The library is asyncio-flavoured, so each test is a sync function that runs an asyncio
scenario under a deadline (`run_scenario`); pytest-trio never sees a coroutine. Servers listen
on a unix socket (`start_unix_server`) wherever a test restarts one: the address then stays the
same, as it does for a real sidecar, and the library's reconnection finds the new process.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from peat_sync.client import Backoff, Client
from tests.conftest import ServerProcess

# The unix-socket fixtures of the end-to-end tests, shared here.
from tests.e2e.conftest import socket_dir, start_unix_server  # noqa: F401

T = TypeVar("T")

Documents = dict[str, dict[str, Any]]

# Reconnect within a fifth of a second: restarts cost the tests little time.
FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)
# A server whose idle streams carry a heartbeat five times a second.
QUICK_HEARTBEATS = ("--heartbeat-interval", "200ms")


async def eventually(
    condition: Callable[[], T], *, seconds: float = 10.0, what: str = "condition"
) -> T:
    """Asyncio-flavoured: poll `condition` (while other tasks run) until it returns something
    truthy; return that, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


async def wait_for_purge(client: Client, sequence: int, seconds: float = 10.0) -> None:
    """Asyncio-flavoured: wait until the tombstones up to `sequence` are purged, as GetStatus
    shows. With `--tombstone-retention 0`, the server purges at start and every second."""
    deadline = time.monotonic() + seconds
    while (await client.status()).catch_up_floor < sequence:
        if time.monotonic() > deadline:
            raise AssertionError(f"tombstones up to {sequence} not purged after {seconds} s")
        await asyncio.sleep(0.05)


async def store_documents(client: Client, collections: Iterable[str]) -> Documents:
    """The store's documents of `collections` in a mirror's shape (no key for an empty
    collection), as ListDocuments and GetDocument show them."""
    documents: Documents = {}
    for collection in collections:
        for doc_id in await client.list_ids(collection):
            document = await client.get(collection, doc_id)
            assert document is not None, f"{collection}/{doc_id} is listed but absent"
            documents.setdefault(collection, {})[doc_id] = document.data
    return documents


async def restart(server: ServerProcess, how: str) -> None:
    """Asyncio-flavoured: stop the server gracefully (SIGTERM) or with `kill -9`, and start it
    again on the same data dir and address. Runs in a thread, so the clients in this loop
    live through the restart as they would in another process."""

    def stop_and_start() -> None:
        if how == "kill -9":
            server.kill()
        else:
            assert how == "graceful", how
            assert server.stop(signal.SIGTERM) == 0, server.log
        server.start()

    await asyncio.to_thread(stop_and_start)


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
