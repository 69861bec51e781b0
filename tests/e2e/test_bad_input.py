"""Bad input gets the right status and a message naming the problem; the server keeps serving
and stores nothing for it."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import (
    RESYNC,
    UPSERT,
    CallFailed,
    Client,
    GrpcioApi,
    GrpcioClient,
    failure_of,
    get,
    get_typed,
    list_ids,
    put,
    put_typed,
    status,
)
from tests.helpers.servers import StartServer
from tests.helpers.streams import grpcio_subscription, wait_for_subscribers
from tests.helpers.waiting import CALL_TIMEOUT

MAX_DOCUMENT = 1024


@pytest.fixture
def small_server(start_server: StartServer) -> ServerProcess:
    return start_server("--max-document-bytes", "1KiB")


@pytest.fixture
def small_client(
    small_server: ServerProcess, connect_client: Callable[[ServerProcess], Client]
) -> Client:
    return connect_client(small_server)


def assert_still_serving(client: Client, collection: str = "bad") -> None:
    """Nothing was stored for the refused requests, and a valid put works."""
    assert list_ids(client, collection) == []
    head = status(client)["head_sequence"]
    sequence = put(client, collection, "good", '{"ok": true}')
    assert sequence == head + 1, "refused requests took no sequence"
    assert get(client, collection, "good") == ('{"ok": true}', sequence)


@pytest.mark.parametrize(
    ("json_data", "message"),
    [
        ('{"a": ', "json_data is not valid JSON"),
        ("", "json_data is not valid JSON"),
        ("{'single': 'quotes'}", "json_data is not valid JSON"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ('{"a": 1} trailing', "json_data is not valid JSON"),
        ("[1, 2]", "json_data must be a JSON object, not a JSON list"),
        ('"text"', "json_data must be a JSON object, not a JSON str"),
        ("42", "json_data must be a JSON object, not a JSON int"),
        ("null", "json_data must be a JSON object, not a JSON NoneType"),
        ("[" * 100_000 + "]" * 100_000, "json_data is nested too deeply"),
    ],
    ids=[
        "truncated",
        "empty",
        "single-quotes",
        "nan",
        "trailing",
        "list",
        "string",
        "number",
        "null",
        "deep",
    ],
)
def test_bad_json_is_invalid_argument(client: Client, json_data: str, message: str) -> None:
    put(client, "seed", "x", "{}")
    failure = failure_of(client, "PutDocument", collection="bad", doc_id="doc", json_data=json_data)
    assert failure.code == "INVALID_ARGUMENT"
    assert message in failure.message
    assert get(client, "bad", "doc") == (None, 0)
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("collection", "doc_id", "message"),
    [
        ("", "doc", "collection must not be empty"),
        ("bad", "", "doc_id must not be empty"),
        ("bad", "x" * 513, "doc_id is 513 bytes long; the limit is 512"),
        ("c" * 600, "doc", "collection is 600 bytes long; the limit is 512"),
        ("bad", "line\nbreak", "doc_id must not contain control characters"),
    ],
    ids=["empty-collection", "empty-doc_id", "long-doc_id", "long-collection", "control"],
)
def test_bad_names_are_invalid_argument(
    client: Client, collection: str, doc_id: str, message: str
) -> None:
    for rpc, request in [
        ("PutDocument", {"json_data": "{}"}),
        ("GetDocument", {}),
        ("DeleteDocument", {}),
    ]:
        failure = failure_of(client, rpc, collection=collection, doc_id=doc_id, **request)
        assert failure.code == "INVALID_ARGUMENT", rpc
        assert message in failure.message, rpc
    if message.startswith("collection"):
        failure = failure_of(client, "ListDocuments", collection=collection)
        assert failure.code == "INVALID_ARGUMENT"
        assert message in failure.message
    assert status(client)["head_sequence"] == 0
    assert_still_serving(client)


def test_oversized_document_is_resource_exhausted(small_client: Client) -> None:
    client = small_client
    too_big = '{"pad": "' + "x" * MAX_DOCUMENT + '"}'
    failure = failure_of(client, "PutDocument", collection="bad", doc_id="big", json_data=too_big)
    assert failure.code == "RESOURCE_EXHAUSTED"
    assert f"the document is {len(too_big)} bytes; the limit is 1024 bytes" in failure.message
    assert "--max-document-bytes" in failure.message
    # The limit counts UTF-8 bytes, not characters.
    wide = '{"s": "' + "é" * 510 + '"}'
    assert len(wide) < MAX_DOCUMENT < len(wide.encode())
    assert failure_of(
        client, "PutDocument", collection="bad", doc_id="wide", json_data=wide
    ).code == ("RESOURCE_EXHAUSTED")
    # Exactly at the limit is accepted.
    at_limit = '{"pad": "' + "x" * (MAX_DOCUMENT - 11) + '"}'
    assert len(at_limit) == MAX_DOCUMENT
    sequence = put(client, "fits", "limit", at_limit)
    assert get(client, "fits", "limit") == (at_limit, sequence)
    assert_still_serving(client)


@pytest.mark.parametrize("kind", ["platform", "cell", "track", "command"])
def test_typed_put_without_a_message_is_invalid_argument(client: Client, kind: str) -> None:
    failure = failure_of(client, f"Put{kind.capitalize()}")
    assert failure.code == "INVALID_ARGUMENT"
    assert failure.message == f"{kind} is required"
    with pytest.raises(CallFailed) as raised:
        put_typed(client, kind, {"id": ""})
    failure = raised.value.failure
    assert failure.code == "INVALID_ARGUMENT"
    assert failure.message == f"{kind}.id must not be empty"
    assert status(client)["head_sequence"] == 0
    assert get_typed(client, kind) == []
    assert_still_serving(client)


def test_typed_put_with_nan_is_invalid_argument(client: Client) -> None:
    with pytest.raises(CallFailed) as raised:
        put_typed(client, "track", {"id": "t", "latitude": float("nan")})
    failure = raised.value.failure
    assert failure.code == "INVALID_ARGUMENT"
    assert "NaN" in failure.message
    assert get_typed(client, "track") == []


def test_subscribe_ahead_of_head_gets_resync(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    head = put(client, "c", "a", "{}")
    with grpcio_subscription(client, since_sequence=head + 100) as subscription:
        resync = subscription.next()
        wait_for_subscribers(client, 1)
        live = put(client, "c", "b", "{}")
        after = subscription.next()
    assert resync.change_type == RESYNC
    assert resync.resync_reason == pb.ResyncReason.SEQUENCE_AHEAD.value
    assert resync.sequence == head
    assert f"since_sequence {head + 100} is ahead of the newest change ({head})" in (resync.message)
    assert (after.change_type, after.doc_id, after.sequence) == (UPSERT, "b", live)


def test_subscribe_to_an_empty_collection_name_is_invalid_argument(
    grpcio_client: GrpcioClient,
) -> None:
    client = grpcio_client
    call = client.stub.Subscribe(
        client.pb2.SubscribeRequest(collections=["ok", ""]), timeout=CALL_TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "collection must not be empty" in (raised.value.details() or "")
    assert status(client)["subscribers"] == 0
    assert_still_serving(client)


@pytest.fixture
def raw_connection(server: ServerProcess) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", server.port), timeout=CALL_TIMEOUT) as sock:
        yield sock


@pytest.mark.parametrize(
    "payload",
    [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x00\xff garbage \x16\x03\x01" * 100,
    ],
    ids=["http1", "garbage"],
)
def test_garbage_on_the_port_does_not_hurt_the_server(
    server: ServerProcess,
    raw_connection: socket.socket,
    grpcio_api: GrpcioApi,
    payload: bytes,
) -> None:
    raw_connection.sendall(payload)
    # The server answers or hangs up; it does not wait for more.
    while raw_connection.recv(65536):
        pass
    client = GrpcioClient(server.address, grpcio_api)
    try:
        assert_still_serving(client)
    finally:
        client.close()
    assert "Traceback" not in server.log
