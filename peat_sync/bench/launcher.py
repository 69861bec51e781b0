"""`peat-sync serve` as a child process: the one launcher of the bench, the soak and the tests;
and the bench's baseline server, launched the same way.

The server is started with this Python (`sys.executable -m peat_sync serve`), so what is
measured or tested is exactly what users run. Its output is read on a thread; the launcher
knows the port it bound (it logs it before it opens the store) and when it serves.

Nothing here imports grpcio, the server or trio.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from peat_sync import environment

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
# Output lines kept: every line of a test's server, and a bounded tail of a long soak's.
LOG_LINES = 20_000

# The server listens, and logs where, before it opens the store; then it serves.
LISTENING = re.compile(r"listening on (?:tcp://[^ ;]+:(\d+)|unix://[^ ;]+)")
SERVING = re.compile(r"serving peat\.sidecar\.v1 on ")
# And where its HTTP listener is, before it serves.
LIVE_PAGE = re.compile(r"the live page, and the API in Connect and gRPC-Web: (https?://\S+:(\d+)/)")
# What the baseline prints once it serves, then its address.
BASELINE_READY = "baseline serving on"
_BASELINE_SERVING = re.compile(re.escape(BASELINE_READY) + r" 127\.0\.0\.1:(\d+)")


class ServerStartError(Exception):
    """The server exited, or did not serve in time; the message ends with its last words."""


def server_env(**extra: str) -> dict[str, str]:
    """This process's environment without peat-sync's variables (PEAT_SIDECAR_*, PEAT_NODE_*),
    plus `extra`: a child server is configured by its flags alone, whatever the caller's shell
    has set."""
    env = {k: v for k, v in os.environ.items() if not environment.is_ours(k)}
    env.update(extra)
    return env


class ChildServer:
    """A server run as a child process of this Python, its output read on a thread: `start`
    returns once a line of its output says it serves. Subclasses say what to run (`argv`) and
    read its lines (`_note`)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.http_url = ""  # where it serves HTTP, for a server that does
        self._lines: collections.deque[str] = collections.deque(maxlen=LOG_LINES)
        self._changed = threading.Condition()
        self._serving = False

    @property
    def argv(self) -> list[str]:
        raise NotImplementedError

    def _note(self, line: str) -> bool:
        """Take note of a line of output (`port`, say); True if it says the server serves."""
        raise NotImplementedError

    @property
    def address(self) -> str:
        """Where a client connects: HOST:PORT."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the server was never started")
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def serving(self) -> bool:
        return self._serving and self.running

    @property
    def log(self) -> str:
        """The server's output so far (its last LOG_LINES lines)."""
        with self._changed:
            return "".join(self._lines)

    def last_words(self, lines: int = 3) -> str:
        with self._changed:
            tail = list(self._lines)[-lines:]
        return " | ".join(line.rstrip() for line in tail) or "no output"

    def start(self, *, must_start: bool = True, timeout: float = START_TIMEOUT) -> Self:
        """Start the server and return once it serves; or, unless `must_start`, once it has
        exited. ServerStartError if it exits (when it must start) or takes over `timeout`."""
        self._serving = False
        self.process = process = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=server_env(**self.env),
        )
        reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        reader.start()
        with self._changed:
            self._changed.wait_for(lambda: self._serving or process.poll() is not None, timeout)
        if self._serving:
            return self
        if process.poll() is None:
            self.kill()
            raise ServerStartError(f"the server did not serve within {timeout:g} s: {self.log}")
        reader.join(5)  # it exited: take its last words
        if must_start:
            raise ServerStartError(f"the server exited at start-up: {self.log}")
        return self

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            with self._changed:
                self._lines.append(line)
                if self._note(line):
                    self._serving = True
                self._changed.notify_all()
        # Its output ends a moment before it exits: `start` waits for the exit, so it must be
        # told after it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(STOP_TIMEOUT)
        with self._changed:
            self._changed.notify_all()

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """The first match of `pattern` in the output; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = re.search(pattern, "".join(self._lines))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no log line matching {pattern!r}:\n{self.log}")
                self._changed.wait(remaining)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send `signum` and wait for the process to exit; returns its exit code. A server
        that has not exited after `timeout` is killed."""
        if self.process is None:
            raise RuntimeError("the server was never started")
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the server, if it runs, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT)

    def restart(self) -> Self:
        self.stop()
        return self.start()


class ServerProcess(ChildServer):
    """`peat-sync serve --listen LISTEN --http-listen HTTP_LISTEN --data-dir DATA_DIR
    FLAGS...`, started by `start`.

    It listens on a free loopback port unless given another `listen` address, and serves
    HTTP on another (`http_url`), which restarts keep; `http_listen` "off" serves none."""

    def __init__(
        self,
        data_dir: Path,
        *flags: str,
        listen: str = "tcp://127.0.0.1:0",
        http_listen: str = "tcp://127.0.0.1:0",
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(env)
        self.data_dir = data_dir
        self.flags = flags
        self.listen = listen
        self.http_listen = http_listen

    @property
    def argv(self) -> list[str]:
        return [
            *(sys.executable, "-m", "peat_sync", "serve"),
            *("--listen", self.listen, "--data-dir", str(self.data_dir)),
            *("--http-listen", self.http_listen),
            *self.flags,
        ]

    def _note(self, line: str) -> bool:
        match = LISTENING.search(line)
        if match and match[1]:  # the port is known before the line can be seen
            self.port = int(match[1])
        page = LIVE_PAGE.search(line)
        if page:
            self.http_url = page[1]
            if self.http_listen.endswith(":0"):  # a restart serves the page where it was
                self.http_listen = f"tcp://127.0.0.1:{page[2]}"
        return SERVING.search(line) is not None

    @property
    def address(self) -> str:
        """Where a client connects: HOST:PORT, or unix:///PATH."""
        if self.listen.startswith("unix:"):
            return self.listen
        return super().address

    @property
    def socket_path(self) -> Path:
        if not self.listen.startswith("unix://"):
            raise ValueError(f"{self.listen} is not a unix socket")
        return Path(self.listen.removeprefix("unix://"))


class BaselineProcess(ChildServer):
    """The bench's bare grpclib server (peat_sync.bench.baseline) on a free loopback port."""

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "peat_sync.bench.baseline", "0"]

    def _note(self, line: str) -> bool:
        match = _BASELINE_SERVING.match(line)
        if match:
            self.port = int(match[1])
        return match is not None
