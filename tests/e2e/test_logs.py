"""What the server logs: JSON lines with `--log-format json`, and never a document's contents
at info level."""

from __future__ import annotations

import json
import signal

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import GrpcioApi, GrpcioClient, delete, failure_of, get, put
from tests.helpers.servers import StartServer
from tests.helpers.streams import grpcio_subscription, wait_for_subscribers

# A value that must show up in no log line: it stands for a document's contents.
SECRET = "s3cr3t-payload-7f1c"


def exercised(start_server: StartServer, grpcio_api: GrpcioApi, *args: str) -> ServerProcess:
    """A server started with `args` and stopped with SIGTERM after puts, reads, a
    subscription that receives the document, a delete, and a bad request whose document is
    not JSON."""
    server = start_server(*args)
    client = GrpcioClient(server.address, grpcio_api)
    try:
        exercise(client)
    finally:
        client.close()
    assert server.stop(signal.SIGTERM) == 0
    return server


def exercise(client: GrpcioClient) -> None:
    with grpcio_subscription(client, collections=["c"]) as subscription:
        wait_for_subscribers(client, 1)
        put(client, "c", "d", json.dumps({"secret": SECRET}))
        (event,) = subscription.take(1)
        assert SECRET in (event.json_data or "")
    assert SECRET in (get(client, "c", "d")[0] or "")
    delete(client, "c", "d")
    failure = failure_of(client, "PutDocument", collection="c", doc_id="e", json_data=SECRET)
    assert failure.code == "INVALID_ARGUMENT"


def test_json_logs_are_one_object_per_line(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """With --log-format json, every line the server writes, from start to a clean stop, is
    one JSON object with the time, level, logger and message; none holds a document."""
    server = exercised(start_server, grpcio_api, "--log-format", "json")
    entries = [json.loads(line) for line in server.log.splitlines()]
    assert entries, "the server logged nothing"
    for entry in entries:
        assert set(entry) == {"time", "level", "logger", "message"}, entry
        assert entry["time"].endswith("Z")
        assert entry["level"] in ("info", "warning")
    messages = [entry["message"] for entry in entries]
    assert any(message.startswith("serving peat.sidecar.v1 on") for message in messages)
    assert any("stopped cleanly" in message for message in messages)
    assert SECRET not in server.log


def test_info_logs_hold_no_document_contents(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """At the default level, the text log names collections and ids, never contents."""
    server = exercised(start_server, grpcio_api)
    assert "subscriber #1" in server.log  # the log did cover the subscription
    assert SECRET not in server.log
