"""The server process: clean shutdown on signals, durability across kill -9, unix sockets,
and start-up errors and help from the command line."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import grpclib.client
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.cli.options import SERVE_OPTIONS, SHARED_OPTIONS
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.cli import assert_one_line_error, help_entries, run_cli
from tests.helpers.clients import (
    CallFailed,
    GrpcioApi,
    GrpcioClient,
    delete,
    get,
    list_ids,
    put,
    status,
)
from tests.helpers.servers import StartServer
from tests.helpers.streams import (
    grpcio_subscription,
    grpclib_subscribe,
    small_window_config,
    wait_for_subscribers,
    wait_for_subscribers_async,
)
from tests.helpers.waiting import CALL_TIMEOUT, run_scenario, wait_until, within

SIGNALS = [signal.SIGTERM, signal.SIGINT]


def assert_stopped_cleanly(server: ServerProcess, signum: int, subscribers: int, head: int) -> None:
    log = server.log
    name = signal.Signals(signum).name
    assert f"received {name}: shutting down" in log
    assert f"{subscribers} of them subscriber streams, which now end" in log
    assert f"stopped cleanly at sequence {head}" in log
    assert "Traceback" not in log
    assert log.index("shutting down") < log.index("stopped cleanly")


# ---------------------------------------------------------------------------------------------
# Signals


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_shuts_down_cleanly(
    server: ServerProcess, grpcio_client: GrpcioClient, signum: int
) -> None:
    head = put(grpcio_client, "c", "d", "{}")
    assert server.stop(signum) == 0
    assert_stopped_cleanly(server, signum, subscribers=0, head=head)


@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_shuts_down_cleanly_with_a_subscriber(
    server: ServerProcess, grpcio_client: GrpcioClient, signum: int
) -> None:
    client = grpcio_client
    head = put(client, "c", "d", "{}")
    with grpcio_subscription(client, collections=["c"]) as subscription:
        wait_for_subscribers(client, 1)
        started = time.monotonic()
        assert server.stop(signum) == 0
        # An open stream does not hold the shutdown for its grace period.
        assert time.monotonic() - started < 5.0
        with pytest.raises(grpc.RpcError) as ended:
            subscription.next()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert_stopped_cleanly(server, signum, subscribers=1, head=head)
    assert re.search(r"subscriber #1 \([^)]*\) closed at sequence 1", server.log)


@asynccontextmanager
async def stalled_subscriber(server: ServerProcess) -> AsyncIterator[None]:
    """Asyncio-flavoured: a subscriber that stops reading while 16 documents of 16 KiB are
    committed, so the server's send to it blocks on flow control."""
    writer = grpclib.client.Channel("127.0.0.1", server.port)
    reader = grpclib.client.Channel("127.0.0.1", server.port, config=small_window_config())
    stub = pb.PeatSidecarStub(writer, timeout=CALL_TIMEOUT)
    try:
        async with grpclib_subscribe(reader, pb.SubscribeRequest(control_events=True)):
            await within(wait_for_subscribers_async(stub, 1))
            document = '{"pad": "' + "x" * 16 * 1024 + '"}'
            for i in range(16):
                request = pb.PutDocumentRequest(collection="c", doc_id=f"d{i}", json_data=document)
                await stub.put_document(request)
            yield
    finally:
        reader.close()
        writer.close()


def test_sigterm_with_a_stalled_subscriber(start_server: StartServer) -> None:
    """A subscriber whose server-side send is blocked on flow control holds up the shutdown
    no longer than the drain timeout, and the server says it cut the stream off."""
    server = start_server("--drain-timeout", "1s")

    async def stall_then_terminate() -> int:
        async with stalled_subscriber(server):
            started = time.monotonic()
            returncode = await asyncio.to_thread(server.stop, signal.SIGTERM)
            assert time.monotonic() - started < 10.0  # far more than the second it needs
            return returncode

    assert run_scenario(stall_then_terminate) == 0
    assert_stopped_cleanly(server, signal.SIGTERM, subscribers=1, head=16)
    assert "--drain-timeout 1s) ran out: cutting off the calls still under way (1)" in server.log


def test_a_second_signal_stops_at_once(server: ServerProcess) -> None:
    """While a clean shutdown waits for a stalled subscriber, a second signal cuts it short
    and the server still exits cleanly."""

    async def stall_then_signal_twice() -> int:
        async with stalled_subscriber(server):
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(server.wait_for_log, "shutting down: .* calls under way")
            return await asyncio.to_thread(server.stop, signal.SIGINT)

    assert run_scenario(stall_then_signal_twice) == 0
    assert "received SIGINT again: stopping now" in server.log
    assert "Traceback" not in server.log


def test_subscriber_is_told_where_to_resume_on_shutdown(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    client = grpcio_client
    head = put(client, "c", "d", "{}")
    epoch = status(client)["epoch"]
    with grpcio_subscription(client, since_sequence=0) as subscription:
        assert subscription.next().sequence == head
        assert server.stop(signal.SIGTERM) == 0
        with pytest.raises(grpc.RpcError) as ended:
            subscription.next()
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    advice = f"resubscribe with since_sequence={head} and epoch={epoch}"
    assert advice in (ended.value.details() or "")


def test_a_drain_commits_the_calls_under_way_and_refuses_the_rest(
    server: ServerProcess, grpcio_api: GrpcioApi
) -> None:
    """SIGTERM while 1,000 puts are in flight: each put either was acknowledged, and is in
    the store after a restart, or failed with UNAVAILABLE and is not: no write commits
    unacknowledged, as one cut off by the shutdown could."""
    client = GrpcioClient(server.address, grpcio_api)
    count = 1000
    try:
        futures = [
            client.stub.PutDocument.future(
                client.pb2.PutDocumentRequest(collection="c", doc_id=f"d{i:04d}", json_data="{}"),
                timeout=CALL_TIMEOUT,
            )
            for i in range(count)
        ]
        wait_until(lambda: sum(future.done() for future in futures) >= 100, what="100 puts")
        assert server.stop(signal.SIGTERM) == 0
        failures = {
            f"d{i:04d}": error
            for i, future in enumerate(futures)
            if (error := future.exception(timeout=CALL_TIMEOUT)) is not None
        }
    finally:
        client.close()
    assert {error.code() for error in failures.values()} <= {grpc.StatusCode.UNAVAILABLE}

    server.start()
    client = GrpcioClient(server.address, grpcio_api)
    try:
        stored = set(list_ids(client, "c"))
    finally:
        client.close()
    acknowledged = {f"d{i:04d}" for i in range(count)} - set(failures)
    assert stored == acknowledged, (
        f"{len(stored - acknowledged)} committed unacknowledged,"
        f" {len(acknowledged - stored)} acknowledged and lost"
    )


# ---------------------------------------------------------------------------------------------
# Durability


def test_acknowledged_writes_survive_kill_9(server: ServerProcess, grpcio_api: GrpcioApi) -> None:
    client = GrpcioClient(server.address, grpcio_api)
    try:
        epoch = status(client)["epoch"]
        put(client, "c", "doomed", '{"v": 0}')
        assert delete(client, "c", "doomed") == 2
        # Many concurrent writers, so commits are batched; kill -9 while some are in flight.
        futures = [
            client.stub.PutDocument.future(
                client.pb2.PutDocumentRequest(
                    collection=f"c{i % 4}", doc_id=f"d{i:04d}", json_data=json.dumps({"i": i})
                ),
                timeout=CALL_TIMEOUT,
            )
            for i in range(400)
        ]
        wait_until(
            lambda: sum(future.done() for future in futures) >= 150, what="150 acknowledged puts"
        )
        assert server.process is not None
        server.process.kill()
        server.process.wait(CALL_TIMEOUT)
        for future in futures:
            # Settles each future: acknowledged, or failed with the connection.
            future.exception(timeout=CALL_TIMEOUT)
        acked = {
            i: future.result().sequence
            for i, future in enumerate(futures)
            if future.exception(timeout=0) is None
        }
    finally:
        client.close()
    assert len(acked) >= 150

    server.start()
    client = GrpcioClient(server.address, grpcio_api)
    try:
        after = status(client)
        assert after["epoch"] == epoch
        assert after["head_sequence"] >= max(acked.values())
        for i, sequence in acked.items():
            assert get(client, f"c{i % 4}", f"d{i:04d}") == (json.dumps({"i": i}), sequence)
        assert get(client, "c", "doomed") == (None, 0), "an acknowledged delete survives too"
        # Sequences go on from the recovered head.
        assert put(client, "c", "next", "{}") == after["head_sequence"] + 1
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Unix socket


def test_unix_socket_serves_grpcio(unix_server: ServerProcess, grpcio_api: GrpcioApi) -> None:
    path = unix_server.socket_path
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)

    client = GrpcioClient(unix_server.address, grpcio_api)
    try:
        sequence = put(client, "c", "d", '{"over": "unix"}')
        assert get(client, "c", "d") == ('{"over": "unix"}', sequence)
        described = status(client)
        assert described["endpoint_addr"] == f"unix://{path}"
        assert described["phase"] == 2
        with grpcio_subscription(client, since_sequence=0) as subscription:
            assert subscription.next().sequence == sequence
    finally:
        client.close()
    assert re.search(r"subscriber #1 \(unix socket\) opened", unix_server.log), unix_server.log

    assert unix_server.stop() == 0
    assert "stopped cleanly" in unix_server.log
    assert not path.exists(), "the socket file is removed on shutdown"


def test_stale_unix_socket_is_replaced(
    start_unix_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    first = start_unix_server()
    first.kill()
    assert first.socket_path.exists(), "kill -9 leaves the socket file behind"
    again = start_unix_server()
    assert stat.S_IMODE(again.socket_path.stat().st_mode) == 0o600
    client = GrpcioClient(again.address, grpcio_api)
    try:
        assert status(client)["phase"] == 2
    finally:
        client.close()
    assert again.stop() == 0


def test_unix_socket_of_a_running_server_is_not_taken_over(
    start_unix_server: StartServer,
    tmp_path: Path,
    grpcio_api: GrpcioApi,
) -> None:
    first = start_unix_server()
    second = start_unix_server(data_dir=tmp_path / "second", must_start=False)
    assert not second.serving, "a second server took over a live socket"
    assert second.process is not None
    assert second.process.wait(CALL_TIMEOUT) == 1
    assert f"cannot listen on unix://{first.socket_path}" in second.log
    client = GrpcioClient(first.address, grpcio_api)
    try:
        assert status(client)["phase"] == 2, "the first server is still reachable"
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Start-up errors


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--broadcast-buffer-size", "0"], {}, ["--broadcast-buffer-size='0'", "at least 1"]),
        (["--replay-log-size", "lots"], {}, ["--replay-log-size='lots'", "not a whole number"]),
        (["--replay-log-bytes", "12XB"], {}, ["--replay-log-bytes='12XB'", "not a size"]),
        (["--max-document-bytes", "0"], {}, ["--max-document-bytes='0'", "at least 1 byte"]),
        (["--listen", "http://localhost:80"], {}, ["--listen='http://localhost:80'"]),
        (["--listen", "tcp://127.0.0.1:70000"], {}, ["port 70000 is out of range"]),
        (["--listen", "unix://relative.sock"], {}, ["absolute path"]),
        (["--log-level", "loud"], {}, ["--log-level='loud'", "not one of"]),
        (["--node-id", " "], {}, ["--node-id=' '", "must not be empty"]),
        (
            [],
            {"PEAT_SIDECAR_BROADCAST_BUFFER_SIZE": "-3"},
            ["PEAT_SIDECAR_BROADCAST_BUFFER_SIZE='-3'", "at least 1"],
        ),
    ],
    ids=[
        "buffer-zero",
        "replay-not-a-number",
        "bytes-unit",
        "max-document-zero",
        "listen-scheme",
        "listen-port",
        "listen-relative-unix",
        "log-level",
        "node-id-blank",
        "env-variable",
    ],
)
def test_bad_value_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"), *args, **env)
    assert result.returncode == 2
    line = assert_one_line_error(result, *fragments)
    assert line.startswith("peat-sync serve: error: ")
    assert not (tmp_path / "data").exists(), "nothing is created for a bad configuration"


def test_flag_wins_over_its_variable_and_the_variable_over_the_default(
    start_unix_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    server = start_unix_server(
        "--node-id",
        "from-flag",
        env={
            # Shadowed by its flag, so never even parsed.
            "PEAT_SIDECAR_NODE_ID": " ",
            "PEAT_SIDECAR_MAX_DOCUMENT_BYTES": "64B",
        },
    )
    client = GrpcioClient(server.address, grpcio_api)
    try:
        assert status(client)["node_id"] == "from-flag"
        put(client, "c", "small", "{}")
        with pytest.raises(CallFailed) as raised:
            put(client, "c", "big", '{"pad": "' + "x" * 64 + '"}')
        assert raised.value.failure.code == "RESOURCE_EXHAUSTED"
        assert "the limit is 64 bytes" in raised.value.failure.message
    finally:
        client.close()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(
            "serve", "--listen", f"tcp://127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")
        )
    assert result.returncode == 1
    assert_one_line_error(
        result, f"cannot listen on tcp://127.0.0.1:{port}", "Address already in use"
    )


def test_unusable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    result = run_cli("serve", "--listen", "tcp://127.0.0.1:0", "--data-dir", str(not_a_directory))
    assert result.returncode == 1
    assert_one_line_error(result, f"cannot open the store in {not_a_directory}")


def test_a_second_server_on_the_same_data_dir_is_refused(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """Two servers on one store would hand out the same sequences: the second exits 1 and
    names the first, which keeps serving."""
    first = start_server()
    client = GrpcioClient(first.address, grpcio_api)
    try:
        assert put(client, "c", "d", "{}") == 1
        second = start_server(must_start=False)
        assert second.process is not None
        assert second.process.wait(CALL_TIMEOUT) == 1
        assert first.process is not None
        assert f"another peat-sync server (pid {first.process.pid})" in second.log
        assert "Traceback" not in second.log
        assert put(client, "c", "e", "{}") == 2
    finally:
        client.close()


def test_unix_path_that_is_not_a_socket_is_a_clear_error(tmp_path: Path) -> None:
    regular = tmp_path / "peat.sock"
    regular.write_text("keep me")
    result = run_cli("serve", "--listen", f"unix://{regular}", "--data-dir", str(tmp_path / "d"))
    assert result.returncode == 1
    assert_one_line_error(result, f"cannot listen on unix://{regular}", "not a socket")
    assert regular.read_text() == "keep me"


# ---------------------------------------------------------------------------------------------
# Help

DESIGNED_FLAGS = {
    "--listen": "PEAT_SIDECAR_LISTEN",
    "--data-dir": "PEAT_SIDECAR_DATA_DIR",
    "--node-id": "PEAT_SIDECAR_NODE_ID",
    "--broadcast-buffer-size": "PEAT_SIDECAR_BROADCAST_BUFFER_SIZE",
    "--replay-log-size": "PEAT_SIDECAR_REPLAY_LOG_SIZE",
}


def test_help_lists_the_serve_command() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert re.search(r"^\s+serve\s+run the sidecar server$", result.stdout, re.MULTILINE)
    assert result.stderr == ""


def test_serve_help_names_every_flag_and_its_variable() -> None:
    result = run_cli("serve", "--help", COLUMNS="80")
    assert result.returncode == 0
    assert result.stderr == ""
    entries = help_entries(result.stdout)
    expected = {option.flag: option.env for option in (*SERVE_OPTIONS, *SHARED_OPTIONS)}
    assert DESIGNED_FLAGS.items() <= expected.items()
    assert expected["--nats"] == "PEAT_SIDECAR_NATS_URL"
    assert "--max-document-bytes" in expected
    assert set(entries) == {"--help", *expected}
    for flag, env in expected.items():
        assert f"(env {env})" in entries[flag], entries[flag]
    assert "SIGTERM" in " ".join(result.stdout.split())
