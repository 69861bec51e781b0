"""Servers under test: the type of the `start_server` fixture, and restarts, also one that
clients in an asyncio loop live through.

Servers are `peat_sync.bench.launcher.ServerProcess`es; the fixtures of tests/conftest.py
start them and kill them at the end of each test.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Protocol

from peat_sync.bench.launcher import ServerProcess


class StartServer(Protocol):
    def __call__(
        self,
        *args: str,
        data_dir: Path | None = None,
        listen: str = ...,
        env: dict[str, str] | None = None,
        must_start: bool = True,
    ) -> ServerProcess: ...


def stop_and_start(server: ServerProcess, how: str) -> None:
    """Stop the server gracefully (SIGTERM) or with `kill -9`, and start it again on the same
    data dir and address."""
    if how == "kill -9":
        server.kill()
    else:
        assert how == "graceful", how
        assert server.stop(signal.SIGTERM) == 0, server.log
    server.start()


async def restart(server: ServerProcess, how: str) -> None:
    """Asyncio-flavoured: `stop_and_start` in a thread, so the clients in this loop live
    through the restart as they would in another process."""
    await asyncio.to_thread(stop_and_start, server, how)
