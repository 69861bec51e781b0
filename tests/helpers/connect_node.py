"""The Connect-Node client of interop/connect-node: running it, one call per process, on the
node of tests/helpers/node_js.py, through each of its transports; a failed call, with the code
as the Connect protocol names it; and a streaming call read line by line, whose reading the
test pauses and resumes."""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import threading
from dataclasses import dataclass
from typing import Any

from tests.helpers.clients import CallFailed, RpcFailure
from tests.helpers.node_js import NODE, node_env
from tests.helpers.paths import ROOT
from tests.helpers.waiting import CALL_TIMEOUT

CONNECT_NODE_DIR = ROOT / "interop" / "connect-node"
CONNECT_NODE_CLIENT = CONNECT_NODE_DIR / "client.js"
# The process around a call outlives the call's own deadline (--deadline) by this much.
PROCESS_GRACE = 10.0


@dataclass(frozen=True)
class Transport:
    """A protocol of the client (its --transport) over an HTTP version (its --http-version)."""

    protocol: str
    http_version: str

    def __str__(self) -> str:
        return f"{self.protocol}-http{self.http_version}"


# Each protocol over one HTTP version; between them, both versions (2 is h2c).
TRANSPORTS = (
    Transport("connect-json", "1.1"),
    Transport("connect-binary", "2"),
    Transport("grpc-web", "1.1"),
)


class ConnectFailed(CallFailed):
    """A failed call: `connect_code` is the code as the Connect protocol names it
    (invalid_argument), and `failure` has gRPC's name of it (INVALID_ARGUMENT), as the other
    clients of the tests report it."""

    def __init__(self, connect_code: str, message: str) -> None:
        # The one code whose names differ by more than their case.
        grpc_code = "CANCELLED" if connect_code == "canceled" else connect_code.upper()
        super().__init__(RpcFailure(grpc_code, message))
        self.connect_code = connect_code


def start_connect_node(
    base_url: str,
    transport: Transport,
    rpc: str,
    request_json: str,
    *args: str,
    deadline: float = CALL_TIMEOUT,
    stdin: bool = False,
) -> subprocess.Popen[str]:
    """Start `node client.js` for one call of `rpc` with the request `request_json` (the
    proto's JSON mapping); read it with `connect_node_output`, or with `ConnectNodeStream` if
    `stdin` (a pipe the test writes to) is asked for."""
    command = [
        str(NODE),
        str(CONNECT_NODE_CLIENT),
        *("--transport", transport.protocol, "--http-version", transport.http_version),
        *("--deadline", str(deadline)),
        *(base_url, rpc, request_json, *args),
    ]
    return subprocess.Popen(
        command,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=node_env(),
    )


def check_exit(process: subprocess.Popen[str], stderr: str) -> None:
    """Raise `ConnectFailed` for the failure the client reported, or fail on any other exit
    but 0."""
    if process.returncode == 1 and stderr.startswith("{"):
        failure = json.loads(stderr)
        raise ConnectFailed(failure["code"], failure["message"])
    assert process.returncode == 0, f"connect-node client: exit {process.returncode}\n{stderr}"


def connect_node_output(
    process: subprocess.Popen[str], timeout: float = CALL_TIMEOUT + PROCESS_GRACE
) -> list[Any]:
    """Wait for the client to exit; its stdout, one parsed JSON value per line. A failed call
    raises `ConnectFailed`."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"connect-node client hung:\n{stdout}{stderr}") from None
    check_exit(process, stderr)
    return [json.loads(line) for line in stdout.splitlines()]


class ConnectNodeStream:
    """A streaming call of the client run without --count, read one printed message at a time
    as it comes: it ends when `close` closes the client's stdin. With --pause-after N the
    client stops reading the stream after N messages, until `resume`."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None, "start the client with stdin=True"
        self.process = process
        # Unbounded, but bounded by what the stream carries until the test closes it.
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def next(self, seconds: float = CALL_TIMEOUT) -> Any:
        """The next message the client printed, within `seconds`."""
        try:
            line = self._lines.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError(f"the client printed nothing for {seconds} s") from None
        if line is None:
            self.process.wait(PROCESS_GRACE)
            assert self.process.stderr is not None
            check_exit(self.process, self.process.stderr.read())
            raise AssertionError("the stream ended")
        return json.loads(line)

    def resume(self) -> None:
        """Have a paused client read the stream again."""
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def close(self) -> None:
        """End the call (the client cancels it when its stdin closes) and the process; fails
        if the client reported a failure."""
        assert self.process.stdin is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()
        try:
            self.process.wait(PROCESS_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("the client did not end when its stdin closed") from None
        finally:
            self._reader.join(PROCESS_GRACE)
        assert self.process.stderr is not None
        stderr = self.process.stderr.read()
        self._close_pipes()
        check_exit(self.process, stderr)

    def kill(self) -> None:
        """End the process, whatever state it is in; a no-op once it has exited."""
        self.process.kill()
        self.process.wait()
        self._reader.join(PROCESS_GRACE)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
