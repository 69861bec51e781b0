"""The server under a soak: `peat-sync serve` on one data dir and one unix socket, killed
with SIGKILL and started again on both, so clients find it at the same address."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

# The bench's process wrapper: it reads the server's output on a thread and keeps its tail.
from peat_sync.bench.servers import SERVING_LINE, OutputReadingProcess


class SoakServer:
    """`peat-sync serve` with the soak's flags on `data_dir`, listening on `socket_path`."""

    def __init__(self, data_dir: Path, socket_path: Path, flags: list[str]) -> None:
        self.address = f"unix://{socket_path}"
        self._argv = [
            sys.executable,
            *("-m", "peat_sync", "serve", "--listen", self.address),
            *("--data-dir", str(data_dir)),
            *flags,
        ]
        self._process: OutputReadingProcess | None = None
        self.starts = 0

    def start(self) -> None:
        """Start the server and return once it serves (blocking: call it on a thread from
        async code); `peat_sync.bench.servers.BenchError` if it does not start."""
        self._process = OutputReadingProcess(self._argv, "peat-sync serve")
        self._process.wait_for(SERVING_LINE)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL the server and reap it (blocking)."""
        process = self._require().process
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def running(self) -> bool:
        return self._process is not None and self._process.process.poll() is None

    def last_words(self) -> str:
        return self._require().last_words()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not drain in time (blocking)."""
        if self._process is not None:
            self._process.stop()

    def _require(self) -> OutputReadingProcess:
        if self._process is None:
            raise RuntimeError("the server was never started")
        return self._process
