"""`redis-server` as a child process of the bench, for its Redis Streams peer (`--peer redis`).

The binary is Debian's (package `redis-server`), found on PATH or at /usr/bin/redis-server: no
Python package ships one. The server runs on a free loopback port with its files in a
directory of the run, durable per write as peat-sync is: the append-only file, fsynced before
each reply (`appendfsync always`, as SQLite's `synchronous=FULL`), and no snapshots, which
would only add background work to what is measured.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from peat_sync.bench.launcher import ChildServer, ServerStartError
from peat_sync.bench.nats_servers import free_port
from peat_sync.bench.servers import BenchError, Server

# Where Debian's package puts it, for a PATH without /usr/bin.
DEBIAN_BINARY = Path("/usr/bin/redis-server")
INSTALL_HINT = "apt-get install redis-server"
READY = "Ready to accept connections"


class RedisServerMissing(Exception):
    """No redis-server binary: the message says how to get one."""


def redis_server_binary() -> str:
    """The redis-server on PATH, or Debian's; RedisServerMissing if there is neither."""
    found = shutil.which("redis-server")
    if found is not None:
        return found
    if DEBIAN_BINARY.exists():
        return str(DEBIAN_BINARY)
    raise RedisServerMissing(f"redis-server is not installed: `{INSTALL_HINT}` brings it")


def redis_server_version() -> str:
    """What `redis-server --version` says, such as "7.0.15"; "unknown" if it says otherwise."""
    answer = subprocess.run(
        [redis_server_binary(), "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    for word in answer.split():
        if word.startswith("v="):
            return word.removeprefix("v=")
    return "unknown"


class RedisServer(ChildServer):
    """One redis-server on a free loopback port, its append-only file in `data_dir`."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.port = free_port()

    @property
    def argv(self) -> list[str]:
        return [
            redis_server_binary(),
            *("--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.data_dir)),
            *("--appendonly", "yes", "--appendfsync", "always", "--save", ""),
            # In the foreground, its log on stdout, where the launcher reads it.
            *("--daemonize", "no", "--logfile", ""),
        ]

    def _note(self, line: str) -> bool:
        return READY in line


@contextlib.contextmanager
def redis_server(data_dir: Path) -> Iterator[Server]:
    """A redis-server on `data_dir` (made if need be), for the duration of the block;
    BenchError if it does not start or exits during the block."""
    data_dir.mkdir(parents=True, exist_ok=True)
    process = RedisServer(data_dir)
    try:
        process.start()
    except ServerStartError:
        raise BenchError(f"redis-server did not start: {process.last_words()}") from None
    try:
        yield Server(process.address, process.pid)
        if not process.running:
            raise BenchError(f"redis-server exited during the run: {process.last_words()}")
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):  # then it was killed
            process.stop()
