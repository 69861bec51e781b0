"""The client commands end to end: `peat-sync put|get|delete|list|status|watch`, each run as a
real subprocess against a real server.

Covered: each command's help and exit codes (0 done, 1 no such document, 2 bad command line,
3 server unreachable, 4 rejected, 5 --expected-sequence did not hold), errors as one line
without a traceback, the server address
from --addr or PEAT_SIDECAR_ADDR (tcp and unix), what each command prints, and `watch`: its
filter, exact replay after --since/--epoch, snapshots, the RESYNC of a wrong epoch, signals, a
reader that goes away, and a server killed with kill -9 and restarted mid-stream, after which
the output must still hold every change exactly once.

What the commands print is checked against the store as the official grpcio client reads it.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.launcher import server_env as clean_env
from tests.helpers.cli import (
    CLI_TIMEOUT,
    assert_one_line_error,
    help_entries,
    peat_sync_command,
    run_cli,
)
from tests.helpers.clients import GrpcioApi, GrpcioClient, delete, get, put, status
from tests.helpers.servers import StartServer
from tests.helpers.waiting import CALL_TIMEOUT, wait_until

# One line of `watch` output, parsed.
Line = dict[str, Any]

# Each client command: its positional arguments, and its options besides --addr and --timeout.
CLIENT_COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "put": (("collection", "DOC_ID", "JSON"), ("--expected-sequence",)),
    "get": (("collection", "DOC_ID"), ()),
    "delete": (("collection", "DOC_ID"), ("--expected-sequence",)),
    "list": (("collection",), ()),
    "status": ((), ()),
    "health": ((), ()),
    "watch": ((), ("--collection", "--since", "--epoch", "--snapshot", "--heartbeats")),
}
# A call of each command that talks to the server once and exits.
ONE_SHOT_CALLS = {
    "put": ("put", "c", "d", "{}"),
    "get": ("get", "c", "d"),
    "delete": ("delete", "c", "d"),
    "list": ("list", "c"),
    "status": ("status",),
    "health": ("health",),
}
EXIT_CODES = {
    "0": "done",
    "1": "no such document",
    "2": "bad command line",
    "3": "cannot be reached",
    "4": "rejected",
    "5": "--expected-sequence did not hold",
}
SIGNALS = [signal.SIGINT, signal.SIGTERM]


def free_port() -> int:
    """A loopback port that nothing listens on (bound, then released)."""
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def run_cli_with_input(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`run_cli`, with `stdin` as the command's standard input."""
    return subprocess.run(
        [*peat_sync_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=clean_env(),
    )


def printed_json(result: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON line that a command which succeeded printed, and nothing on stderr."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def committed(collection: str, doc_id: str, sequence: int) -> dict[str, Any]:
    """What `put` and `delete` print."""
    return {"collection": collection, "doc_id": doc_id, "sequence": sequence}


# ---------------------------------------------------------------------------------------------
# `watch` in a subprocess


class Watch:
    """`peat-sync watch ARGS` in a subprocess; threads collect its stdout and stderr lines as
    they come."""

    def __init__(self, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [*peat_sync_command(), "watch", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(**env),
        )
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._lock = threading.Lock()
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(pipe, lines), daemon=True)
            for pipe, lines in (
                (self.process.stdout, self._stdout),
                (self.process.stderr, self._stderr),
            )
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, pipe: Any, lines: list[str]) -> None:
        for line in pipe:
            with self._lock:
                lines.append(line)

    @property
    def lines(self) -> list[Line]:
        """Every stdout line so far, parsed: each must be a whole JSON object."""
        with self._lock:
            raw = list(self._stdout)
        return [json.loads(line) for line in raw]

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self._stderr)

    def until(self, stop: Callable[[Line], bool], what: str) -> list[Line]:
        """The lines up to and including the first one for which `stop` is true, once it is
        printed."""

        def printed() -> list[Line]:
            lines = self.lines
            for i, line in enumerate(lines):
                if stop(line):
                    return lines[: i + 1]
            if self.process.poll() is not None:
                raise AssertionError(f"watch exited with {self.process.returncode}:\n{self.stderr}")
            return []

        return wait_until(printed, what=what)

    def stop(self, signum: int = signal.SIGTERM) -> str:
        """Stop the watch with `signum`: it must exit 0 without a traceback. Returns its
        stderr."""
        self.process.send_signal(signum)
        returncode = self.process.wait(CLI_TIMEOUT)
        self.close()
        assert returncode == 0, self.stderr
        assert "Traceback" not in self.stderr, self.stderr
        return self.stderr

    def close(self) -> None:
        """Kill the watch if it still runs, and take its last words."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(CLI_TIMEOUT)
        for reader in self._readers:
            reader.join(CLI_TIMEOUT)
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()


StartWatch = Callable[..., Watch]


@pytest.fixture
def start_watch() -> Iterator[StartWatch]:
    """A factory for watches; any still running at the end of the test is killed."""
    watches: list[Watch] = []

    def factory(*args: str, **env: str) -> Watch:
        watch = Watch(*args, **env)
        watches.append(watch)
        return watch

    yield factory
    for watch in watches:
        watch.close()


def is_change(line: Line) -> bool:
    return line["type"] in ("upsert", "delete")


def reaches(sequence: int) -> Callable[[Line], bool]:
    """Whether a line is a change at `sequence` or later."""
    return lambda line: is_change(line) and line["sequence"] >= sequence


def is_type(name: str) -> Callable[[Line], bool]:
    return lambda line: line["type"] == name


def put_line(client: GrpcioClient, collection: str, doc_id: str, document: Any) -> Line:
    """Put a document; returns the line `watch` prints for it."""
    sequence = put(client, collection, doc_id, json.dumps(document))
    return {
        "type": "upsert",
        "sequence": sequence,
        "collection": collection,
        "doc_id": doc_id,
        "document": document,
    }


def delete_line(client: GrpcioClient, collection: str, doc_id: str) -> Line:
    """Delete a document; returns the line `watch` prints for it."""
    sequence = delete(client, collection, doc_id)
    return {"type": "delete", "sequence": sequence, "collection": collection, "doc_id": doc_id}


def control(line: Line) -> tuple[str, int, str, str | None]:
    """What a control line says: its type, sequence, epoch and (for a RESYNC) reason."""
    return line["type"], line["sequence"], line["epoch"], line.get("reason")


# ---------------------------------------------------------------------------------------------
# Help


@pytest.mark.parametrize("command", CLIENT_COMMANDS)
def test_each_command_has_help_with_its_arguments_and_exit_codes(command: str) -> None:
    result = run_cli(command, "--help", COLUMNS="80")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: peat-sync {command} ")

    positionals, options = CLIENT_COMMANDS[command]
    section = re.search(r"^positional arguments:\n(.*?)\n\n", result.stdout, re.M | re.S)
    described = re.findall(r"^  (\S+) {2,}\S", section[1], re.M) if section else []
    assert described == list(positionals)
    entries = help_entries(result.stdout)
    common = {"--help", "--addr", "--timeout", "--tls-ca", "--tls-cert", "--tls-key"}
    assert set(entries) == {*common, *options}
    for flag, entry in entries.items():
        assert entry.removeprefix(flag).strip(), f"{flag} is not described"
    assert "unix:///PATH" in entries["--addr"]
    assert "(env PEAT_SIDECAR_ADDR)" in entries["--addr"]

    table = re.search(r"^exit codes:\n((?:  .*\n?)+)", result.stdout, re.M)
    assert table, result.stdout
    codes = dict(re.findall(r"^\s+(\d)\s+(.+)$", table[1], re.M))
    assert codes.keys() == EXIT_CODES.keys()
    for code, meaning in EXIT_CODES.items():
        assert meaning in codes[code], codes[code]


def test_top_level_help_lists_the_client_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in CLIENT_COMMANDS:
        assert re.search(rf"^\s+{command}\s+\S", result.stdout, re.M), command


# ---------------------------------------------------------------------------------------------
# put, get, delete, list and status


def test_put_get_delete_list_and_status_print_what_the_store_holds(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """`put` takes the JSON from its argument or from stdin (left out, or '-') and prints the
    committed sequence; `get` prints the stored JSON as it is, `list` the doc_ids one per
    line, `delete` the sequence of the delete (0 when nothing was there), and `status` the
    node's status, as GetStatus tells it."""
    client, addr = grpcio_client, ("--addr", server.address)
    assert printed_json(run_cli("put", "c", "d1", '{"n": 1}', *addr)) == committed("c", "d1", 1)
    result = run_cli_with_input('{"name": "café",  "n": [2]}\n', "put", "c", "d2", *addr)
    assert printed_json(result) == committed("c", "d2", 2)
    result = run_cli_with_input('{"n": 3}', "put", "c", "d3", "-", *addr)
    assert printed_json(result) == committed("c", "d3", 3)

    stored, sequence = get(client, "c", "d2")
    assert sequence == 2
    assert json.loads(stored or "") == {"name": "café", "n": [2]}
    result = run_cli("get", "c", "d2", *addr)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{stored}\n", "")

    result = run_cli("list", "c", *addr)
    assert (result.returncode, result.stdout, result.stderr) == (0, "d1\nd2\nd3\n", "")

    assert printed_json(run_cli("delete", "c", "d3", *addr)) == committed("c", "d3", 4)
    assert get(client, "c", "d3") == (None, 0)
    result = run_cli("get", "c", "d3", *addr)
    assert result.returncode == 1
    assert_one_line_error(result, "no document 'd3' in collection 'c'")
    assert printed_json(run_cli("delete", "c", "d3", *addr)) == committed("c", "d3", 0)

    described = printed_json(run_cli("status", *addr))
    expected = status(client)
    assert described["phase"] == "ready"
    assert described["head_sequence"] == 4
    for field in ("node_id", "endpoint_addr", "head_sequence", "epoch", "catch_up_floor"):
        assert described[field] == expected[field], field


# ---------------------------------------------------------------------------------------------
# Exit codes and errors


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["put", "c", "d", "{}", "--bogus"], {}, "unrecognized arguments: --bogus"),
        (["get", "c"], {}, "the following arguments are required: DOC_ID"),
        (["watch", "--since", "-1"], {}, "--since='-1': a sequence is 0 or more"),
        (["watch", "--since", "soon"], {}, "--since='soon': 'soon' is not a whole number"),
        (
            ["put", "c", "d", "{}", "--expected-sequence", "-1"],
            {},
            "--expected-sequence='-1': a sequence is 0 or more",
        ),
        (["status", "--timeout", "0"], {}, "--timeout='0': must be more than 0 seconds"),
        (["watch", "--addr", "http://127.0.0.1:1"], {}, "--addr='http://127.0.0.1:1': expected"),
        (["delete", "c", "d", "--addr", "tcp://nowhere"], {}, "--addr='tcp://nowhere': expected"),
        (["list", "c"], {"PEAT_SIDECAR_ADDR": "nowhere"}, "PEAT_SIDECAR_ADDR='nowhere': expected"),
    ],
    ids=[
        "unknown-flag",
        "missing-argument",
        "since-negative",
        "since-not-a-number",
        "expected-sequence-negative",
        "timeout-zero",
        "addr-scheme",
        "addr-without-port",
        "addr-variable",
    ],
)
def test_a_bad_command_line_exits_2(args: list[str], env: dict[str, str], fragment: str) -> None:
    """Nothing is sent (a watch would otherwise wait for a server forever): exit 2, and the
    last line on stderr says what is wrong."""
    result = run_cli(*args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("peat-sync"), last
    assert fragment in last, last


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("watch", "--since", "soon"), "peat-sync watch: error: --since='soon'"),
        (("put", "c", "d", "{}", "--bogus"), "peat-sync: error: unrecognized arguments: --bogus"),
    ],
)
def test_a_bad_flag_is_one_line(args: tuple[str, ...], error: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert_one_line_error(result, error)


@pytest.mark.parametrize("command", ONE_SHOT_CALLS)
def test_nothing_listening_exits_3(command: str) -> None:
    port = free_port()
    result = run_cli(*ONE_SHOT_CALLS[command], "--addr", f"127.0.0.1:{port}")
    assert result.returncode == 3
    assert_one_line_error(result, f"cannot connect to 127.0.0.1:{port}")


def test_a_rejected_request_exits_4(server: ServerProcess, grpcio_client: GrpcioClient) -> None:
    """Each says why in one line, and nothing is committed. A watch the server rejects exits
    too, instead of retrying."""
    cases = [
        (("put", "c", "d", "not json"), "json_data is not valid JSON"),
        (("put", "c", "d", "[1, 2]"), "json_data must be a JSON object, not a JSON list"),
        (("put", "", "d", "{}"), "collection must not be empty"),
        (("get", "", "d"), "collection must not be empty"),
        (("delete", "", "d"), "collection must not be empty"),
        (("list", ""), "collection must not be empty"),
        (("watch", "--collection", ""), "collection must not be empty"),
    ]
    with ThreadPoolExecutor() as pool:  # independent calls: run them at once
        results = pool.map(lambda case: run_cli(*case[0], "--addr", server.address), cases)
    for (args, fragment), result in zip(cases, results, strict=True):
        assert result.returncode == 4, (args, result.stderr)
        assert_one_line_error(result, f"peat-sync: rejected: {fragment}")
    assert status(grpcio_client)["head_sequence"] == 0


def test_a_write_whose_expected_sequence_does_not_hold_exits_5(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """put and delete with --expected-sequence write only at that sequence (0: only a
    document that does not exist); otherwise the one line says where the document is, and
    nothing is written."""
    addr = ("--addr", server.address)
    expect = "--expected-sequence"
    assert printed_json(run_cli("put", "c", "d", '{"v": 1}', expect, "0", *addr)) == committed(
        "c", "d", 1
    )
    result = run_cli("put", "c", "d", '{"v": 2}', expect, "0", *addr)
    assert result.returncode == 5, result.stderr
    assert_one_line_error(
        result,
        "peat-sync: precondition failed: document 'c'/'d' is at sequence 1, not 0: re-read it"
        " and retry",
    )
    assert printed_json(run_cli("put", "c", "d", '{"v": 2}', expect, "1", *addr)) == committed(
        "c", "d", 2
    )
    result = run_cli("delete", "c", "d", expect, "1", *addr)
    assert result.returncode == 5, result.stderr
    assert_one_line_error(result, "is at sequence 2, not 1")
    assert get(grpcio_client, "c", "d") == ('{"v": 2}', 2)
    assert printed_json(run_cli("delete", "c", "d", expect, "2", *addr)) == committed("c", "d", 3)
    result = run_cli("put", "c", "d", "{}", expect, "2", *addr)
    assert result.returncode == 5, result.stderr
    assert_one_line_error(result, "document 'c'/'d' does not exist, so it is not at sequence 2")
    assert status(grpcio_client)["head_sequence"] == 3


# ---------------------------------------------------------------------------------------------
# The server's address


def test_the_flag_wins_over_the_variable(server: ServerProcess) -> None:
    """PEAT_SIDECAR_ADDR alone names the server, and --addr (in either form) overrides it."""
    nowhere = f"127.0.0.1:{free_port()}"
    from_variable = printed_json(run_cli("status", PEAT_SIDECAR_ADDR=server.address))
    assert from_variable["endpoint_addr"] == f"tcp://{server.address}"

    from_flag = run_cli("status", "--addr", f"tcp://{server.address}", PEAT_SIDECAR_ADDR=nowhere)
    assert printed_json(from_flag) == from_variable

    result = run_cli("status", "--addr", nowhere, PEAT_SIDECAR_ADDR=server.address)
    assert result.returncode == 3
    assert_one_line_error(result, f"cannot connect to {nowhere}")


def test_every_command_over_a_unix_socket(
    unix_server: ServerProcess, start_watch: StartWatch
) -> None:
    """Every command reaches a server at unix:///PATH given by PEAT_SIDECAR_ADDR; once the
    server has gone, the socket cannot be reached: exit 3."""
    env = {"PEAT_SIDECAR_ADDR": unix_server.address}
    assert printed_json(run_cli("put", "c", "d", '{"over": "unix"}', **env))["sequence"] == 1
    assert run_cli("get", "c", "d", **env).stdout == '{"over": "unix"}\n'
    assert run_cli("list", "c", **env).stdout == "d\n"
    assert printed_json(run_cli("delete", "c", "d", **env))["sequence"] == 2
    assert printed_json(run_cli("status", **env))["endpoint_addr"] == unix_server.address
    assert run_cli("health", **env).stdout == "serving\n"
    watch = start_watch("--since", "0", **env)
    assert [line["type"] for line in watch.until(reaches(2), "the delete")] == ["upsert", "delete"]
    watch.stop()

    assert unix_server.stop() == 0
    result = run_cli("status", **env)
    assert result.returncode == 3
    assert_one_line_error(result, f"cannot reach {unix_server.address}: No such file or directory")


# ---------------------------------------------------------------------------------------------
# watch


def test_watch_follows_only_its_collections(
    server: ServerProcess, grpcio_client: GrpcioClient, start_watch: StartWatch
) -> None:
    """--collection, repeated, keeps the changes of those collections, from the replay of
    --since 0 and live."""
    client = grpcio_client
    replayed = [
        put_line(client, "a", "1", {"n": 1}),
        put_line(client, "b", "1", {"n": 2}),
        delete_line(client, "a", "1"),
    ]
    put(client, "c", "1", "{}")
    watch = start_watch(
        "--addr", server.address, "--collection", "a", "--collection", "b", "--since", "0"
    )
    watch.until(reaches(replayed[-1]["sequence"]), "the replay")
    put(client, "c", "2", "{}")
    live = [put_line(client, "b", "2", {"n": 5})]
    printed = watch.until(reaches(live[-1]["sequence"]), "the live change")
    assert printed == replayed + live
    watch.stop()


def test_watch_since_with_epoch_replays_exactly_the_changes_after_it(
    server: ServerProcess, grpcio_client: GrpcioClient, start_watch: StartWatch
) -> None:
    """--since N --epoch E prints the changes after N, then the live ones: nothing before, and
    no re-list. --heartbeats shows the stream's opening heartbeat, at N."""
    client = grpcio_client
    changes = [put_line(client, "c", f"d{i}", {"i": i}) for i in range(5)]
    changes.append(delete_line(client, "c", "d0"))
    epoch = status(client)["epoch"]
    watch = start_watch("--addr", server.address, "--since", "3", "--epoch", epoch, "--heartbeats")
    watch.until(reaches(6), "the replay")
    live = put_line(client, "c", "d9", {"i": 9})
    printed = watch.until(reaches(live["sequence"]), "the live change")
    assert control(printed[0]) == ("heartbeat", 3, epoch, None)
    # An idle stream's heartbeats may come in between (after 10 s).
    assert [line for line in printed[1:] if line["type"] != "heartbeat"] == [*changes[3:], live]
    watch.stop()


@pytest.mark.parametrize(
    "since",
    [(), ("--since", "1", "--epoch", "not-this-store")],
    ids=["snapshot", "wrong-epoch"],
)
def test_watch_snapshot(
    server: ServerProcess,
    grpcio_client: GrpcioClient,
    start_watch: StartWatch,
    since: tuple[str, ...],
) -> None:
    """--snapshot prints snapshot_begin, the current documents in sequence order, and
    catch_up_end at the head, then the live changes. A wrong --epoch (without --snapshot)
    prints a 'resync' line first, then the same snapshot: the copy is rebuilt, not patched."""
    client = grpcio_client
    put(client, "c", "d1", '{"v": 1}')
    put(client, "c", "d2", '{"v": 2}')
    d3 = put_line(client, "c", "d3", {"v": 3})
    d1 = put_line(client, "c", "d1", {"v": 4})
    delete(client, "c", "d2")
    head, epoch = 5, status(client)["epoch"]

    args = since or ("--snapshot",)
    watch = start_watch("--addr", server.address, *args)
    printed = watch.until(is_type("catch_up_end"), "the end of the snapshot")
    resync = [("resync", head, epoch, "unknown_epoch")] if since else []
    controls = [*resync, ("snapshot_begin", head, epoch, None)]
    assert [control(line) for line in printed[: len(controls)]] == controls
    assert printed[len(controls) : -1] == [d3, d1]
    assert control(printed[-1]) == ("catch_up_end", head, epoch, None)

    live = put_line(client, "c", "d4", {"v": 6})
    assert watch.until(reaches(live["sequence"]), "the live change")[len(printed) :] == [live]
    watch.stop()


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_watch_stops_on_a_signal_while_streaming(
    server: ServerProcess, grpcio_client: GrpcioClient, start_watch: StartWatch, signum: int
) -> None:
    put(grpcio_client, "c", "d", "{}")
    watch = start_watch("--addr", server.address, "--since", "0")
    watch.until(reaches(1), "the first change")
    assert watch.stop(signum) == ""


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_watch_waits_for_a_server_and_stops_on_a_signal(
    start_watch: StartWatch, signum: int
) -> None:
    """With nothing listening, a watch does not exit 3 as the one-shot commands do: it says
    so on stderr and retries, as after losing its server; a signal stops it there too."""
    address = f"127.0.0.1:{free_port()}"
    watch = start_watch("--addr", address)
    wait_until(lambda: watch.stderr.count("reconnecting in") >= 2, what="two retries")
    assert watch.process.poll() is None
    stderr = watch.stop(signum)
    assert f"cannot connect to {address}: is peat-sync serving there?" in stderr
    assert watch.lines == []


def test_watch_exits_cleanly_when_its_reader_goes_away(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """`peat-sync watch | head -n 1`: the next line after `head` has gone ends the watch with
    exit 0 and nothing on stderr (no BrokenPipeError)."""
    put(grpcio_client, "c", "first", "{}")
    watch = subprocess.Popen(
        [*peat_sync_command(), "watch", "--addr", server.address, "--since", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        head = subprocess.run(
            ["head", "-n", "1"],
            stdin=watch.stdout,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        assert head.returncode == 0
        assert json.loads(head.stdout)["doc_id"] == "first"
        assert watch.stdout is not None
        watch.stdout.close()  # `head` held the only other read end
        put(grpcio_client, "c", "second", "{}")
        assert watch.wait(CLI_TIMEOUT) == 0
        assert watch.stderr is not None
        assert watch.stderr.read() == ""
    finally:
        watch.kill()
        watch.wait(CLI_TIMEOUT)
        if watch.stderr is not None:
            watch.stderr.close()


# ---------------------------------------------------------------------------------------------
# watch across a kill -9


class Writer:
    """Writes through grpcio in a thread: a new document `w/wN` each time, and every fourth
    time a delete of one of the `a` documents. A failed call is never retried: a retry would
    change one document twice after the watch's position, and a catch-up rightly prints only
    the latest state, so the output would skip a sequence."""

    def __init__(self, address: str, api: GrpcioApi, doomed: int) -> None:
        self.pb2, pb2_grpc = api
        # Reconnect fast after the restart; calls wait for the server instead of failing.
        self.channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500),
            ],
        )
        self.stub = pb2_grpc.PeatSidecarStub(self.channel)
        self.doomed = doomed
        # (type, collection, doc_id) -> sequence of each acknowledged change.
        self.acknowledged: dict[tuple[str, str, str], int] = {}
        self.last = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None

    def call(self, rpc: str, **request: Any) -> Any:
        message = getattr(self.pb2, f"{rpc}Request")(**request)
        return getattr(self.stub, rpc)(message, timeout=CALL_TIMEOUT, wait_for_ready=True)

    def head(self) -> int:
        head: int = self.call("GetStatus").head_sequence
        return head

    def write(self, kind: str, collection: str, doc_id: str, **request: Any) -> None:
        rpc = "PutDocument" if kind == "upsert" else "DeleteDocument"
        try:
            sequence = self.call(rpc, collection=collection, doc_id=doc_id, **request).sequence
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return  # lost with the server: committed or not, the store tells
        assert sequence, f"{kind} {collection}/{doc_id} committed nothing"
        self.acknowledged[kind, collection, doc_id] = sequence
        self.last = sequence

    def _run(self) -> None:
        try:
            for i in itertools.count():
                if self._stop.is_set():
                    return
                self.write("upsert", "w", f"w{i}", json_data=json.dumps({"i": i}))
                if i % 4 == 0 and i // 4 < self.doomed:
                    self.write("delete", "a", f"a{i // 4}")
        except BaseException as exc:
            self._error = exc

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join(CALL_TIMEOUT * 2)
        assert not thread.is_alive()
        if self._error is not None:
            raise self._error

    def store(self) -> dict[tuple[str, str], tuple[Any, int]]:
        """Every document of `a` and `w`: (collection, doc_id) -> (document, sequence)."""
        documents = {}
        for collection in ("a", "w"):
            for doc_id in self.call("ListDocuments", collection=collection).doc_ids:
                response = self.call("GetDocument", collection=collection, doc_id=doc_id)
                documents[collection, doc_id] = (json.loads(response.json_data), response.sequence)
        return documents

    def close(self) -> None:
        self.channel.close()


def test_watch_survives_kill_9_without_a_gap_or_a_duplicate(
    start_server: StartServer, start_watch: StartWatch, grpcio_api: GrpcioApi
) -> None:
    """The server is killed with kill -9 while a writer and the watch are mid-stream, and
    restarted on the same port and data dir. The watch reconnects, resumes where its output
    stopped, and prints every committed change exactly once, in sequence order, with no gap;
    every acknowledged write is among them, and the copy they build equals the store.

    No document changes twice after the watch's position, so no catch-up may elide a state:
    every sequence from 1 to the head must be printed. The watch is paused across the restart
    so that the changes made while it was away must come through its resume, and a replay
    log of 4 makes that resume a catch-up from the store."""
    doomed = 12
    server = start_server("--replay-log-size", "4", listen=f"tcp://127.0.0.1:{free_port()}")
    writer = Writer(server.address, grpcio_api, doomed)
    try:
        for i in range(doomed):
            writer.write("upsert", "a", f"a{i}", json_data=json.dumps({"a": i}))
        # With --heartbeats, a stream that opens with a heartbeat shows where it starts too.
        watch = start_watch("--addr", server.address, "--since", "0", "--heartbeats")
        watch.until(reaches(doomed), "the `a` documents")
        with writer.running():
            watch.until(reaches(doomed + 20), "the writer's changes, live")
            server.kill()
            watch.process.send_signal(signal.SIGSTOP)
            try:
                server.start()
                resumed_from = writer.head()
                wait_until(lambda: writer.last >= resumed_from + 20, what="writes after restart")
            finally:
                watch.process.send_signal(signal.SIGCONT)
            watch.until(reaches(writer.last + 10), "changes after the resume")
        head = writer.head()
        watch.until(reaches(head), "the last change")
        stderr = watch.stop()
        store = writer.store()
    finally:
        writer.close()

    lines = watch.lines
    changes = [line for line in lines if is_change(line)]
    assert [line["sequence"] for line in changes] == list(range(1, head + 1))
    # Every control line (the opening heartbeat of each stream, or a catch-up's bounds)
    # reports the position that the output had reached: each stream resumed right there.
    position = 0
    for line in lines:
        if is_change(line):
            position = line["sequence"]
        else:
            assert line["type"] in ("heartbeat", "catch_up_begin", "catch_up_end"), line
            assert line["sequence"] == position, (line, position)
    assert re.search(r"reconnecting in [\d.]+ s, from sequence \d+", stderr), stderr
    resumed = [line["sequence"] for line in lines if line["type"] == "catch_up_begin"]
    assert max(resumed) >= doomed + 20, "the resume after the restart caught up from the store"

    printed = {(line["type"], line["collection"], line["doc_id"]): line for line in changes}
    assert len(printed) == len(changes), "a document printed twice"
    for key, sequence in writer.acknowledged.items():
        assert printed[key]["sequence"] == sequence, key
    copy: dict[tuple[str, str], tuple[Any, int]] = {}
    for line in changes:
        document = line["collection"], line["doc_id"]
        if line["type"] == "upsert":
            copy[document] = (line["document"], line["sequence"])
        else:
            del copy[document]
    assert copy == store
