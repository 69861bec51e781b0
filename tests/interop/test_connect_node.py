"""The API over HTTP through Connect-Node: interop/connect-node/client.js calls the server's
HTTP listener with the code protoc-gen-es generated from proto/sidecar.proto, through each of
its transports (Connect JSON over HTTP/1.1, Connect binary over h2c, gRPC-Web over HTTP/1.1),
and prints every response and streamed message in the proto's JSON mapping, which is read into
the proto's messages by protobuf's JSON parser: a field name the proto does not have, or a
value of the wrong form, fails there.

Through each transport: the contract (tests/interop/contract.py); every RPC of the service,
answering as it does over gRPC; failures with their Connect codes; and a subscriber that stops
reading while the store moves on, then reads again and reconnects.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import json_format

from peat_sync.bench.launcher import ServerProcess
from tests.e2e.test_documents import SAMPLES
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    HEARTBEAT,
    UPSERT,
    Event,
    GrpcioApi,
    GrpcioClient,
    get,
    get_typed,
    grpcio_dict,
    list_ids,
    put,
    put_typed,
    status,
)
from tests.helpers.connect_node import (
    CONNECT_NODE_DIR,
    TRANSPORTS,
    ConnectFailed,
    ConnectNodeStream,
    Transport,
    connect_node_output,
    start_connect_node,
)
from tests.helpers.copies import apply
from tests.helpers.servers import StartServer
from tests.helpers.slow_consumers import (
    SLOW_SERVER_ARGS,
    assert_contiguous,
    doc_id_of,
    write_until_stalled,
)
from tests.helpers.streams import wait_for_subscribers
from tests.helpers.waiting import CALL_TIMEOUT, STREAM_TIMEOUT
from tests.interop.contract import Connect, Contract, follow

SERVICE = "PeatSidecar"
# A document of 64 KiB that stays about that large when compressed: the server compresses the
# messages of a client that accepts it, as Connect-Node does by default, and a padding of one
# character would fill no buffer.
INCOMPRESSIBLE = json.dumps(
    {"pad": base64.b64encode(random.Random(0).randbytes(48 * 1024)).decode()}
)


class ConnectNodeClient:
    """The `Client` facade and the contract's `Driver` over client.js, through one transport:
    a process per call. Requests are built as the proto's messages and sent as their JSON
    mapping; `called` names every RPC called, whether it succeeded or not."""

    name = "connect-node"

    def __init__(self, base_url: str, transport: Transport, pb2: ModuleType) -> None:
        self.base_url = base_url
        self.transport = transport
        self.pb2 = pb2
        self.called: set[str] = set()
        self.processes: list[subprocess.Popen[str]] = []
        self.streams: list[ConnectNodeStream] = []

    def method(self, rpc: str) -> Any:
        return self.pb2.DESCRIPTOR.services_by_name[SERVICE].methods_by_name[rpc]

    def decode(self, message_name: str, printed: dict[str, Any]) -> Any:
        # Unknown field names fail, unlike in grpcio's own parsing of the wire.
        return json_format.ParseDict(printed, getattr(self.pb2, message_name)())

    def event(self, printed: dict[str, Any]) -> Event:
        return Event.from_grpcio(self.decode("DocumentChange", printed))

    def start(
        self,
        rpc: str,
        request: dict[str, Any],
        *args: str,
        deadline: float = CALL_TIMEOUT,
        stdin: bool = False,
    ) -> subprocess.Popen[str]:
        self.called.add(rpc)
        message = getattr(self.pb2, self.method(rpc).input_type.name)(**request)
        request_json = json_format.MessageToJson(message, indent=None)
        process = start_connect_node(
            self.base_url, self.transport, rpc, request_json, *args, deadline=deadline, stdin=stdin
        )
        if not stdin:  # a stream's process is its ConnectNodeStream's
            self.processes.append(process)
        return process

    def call(self, rpc: str, **request: Any) -> dict[str, Any]:
        [printed] = connect_node_output(self.start(rpc, request))
        return grpcio_dict(self.decode(self.method(rpc).output_type.name, printed))

    def message(self, name: str, fields: dict[str, Any]) -> Any:
        present = {field: value for field, value in fields.items() if value is not None}
        return getattr(self.pb2, name)(**present)

    def subscribe(self, count: int, **request: Any) -> ConnectNodeFeed:
        request = {"control_events": True, **request}
        return ConnectNodeFeed(self, self.start("Subscribe", request, "--count", str(count)))

    def open_stream(self, rpc: str, request: dict[str, Any], *args: str) -> ConnectNodeStream:
        """A streaming call read as it comes, until `close`."""
        process = self.start(rpc, request, *args, deadline=STREAM_TIMEOUT, stdin=True)
        self.streams.append(ConnectNodeStream(process))
        return self.streams[-1]

    def close(self) -> None:
        # Streams a failed test never read would otherwise run until their deadline.
        for stream in self.streams:
            stream.kill()
        for process in self.processes:
            process.kill()  # a no-op once it has exited
            process.communicate()


class ConnectNodeFeed:
    def __init__(self, client: ConnectNodeClient, process: subprocess.Popen[str]) -> None:
        self.client = client
        self.process = process
        self.natives: list[Any] = []

    def events(self) -> list[Event]:
        self.natives = connect_node_output(self.process)
        return [self.client.event(change) for change in self.natives]


@pytest.fixture(params=TRANSPORTS, ids=str)
def transport(request: pytest.FixtureRequest) -> Transport:
    chosen: Transport = request.param
    return chosen


@pytest.fixture
def connect(connect_node: Path, transport: Transport, grpcio_api: GrpcioApi) -> Iterator[Connect]:
    clients: list[ConnectNodeClient] = []

    def factory(server: ServerProcess) -> ConnectNodeClient:
        assert server.http_url, f"the server serves no HTTP:\n{server.log}"
        clients.append(ConnectNodeClient(server.http_url, transport, grpcio_api[0]))
        return clients[-1]

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def grpcio_client(server: ServerProcess, grpcio_api: GrpcioApi) -> Iterator[GrpcioClient]:
    """The official client over gRPC, to compare with or to write fast."""
    client = GrpcioClient(server.address, grpcio_api)
    yield client
    client.close()


def test_the_committed_code_is_what_protoc_gen_es_generates_from_the_proto(
    connect_node: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(CONNECT_NODE_DIR / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


class TestConnectNode(Contract):
    def assert_native_resync(self, native: Any, reason: str, sequence: int) -> None:
        # The proto's JSON mapping, as @bufbuild/protobuf's toJson writes it: enum values by
        # their proto names, uint64 as a decimal string.
        assert native["changeType"] == "CHANGE_TYPE_RESYNC"
        assert native["resyncReason"] == reason
        assert native["sequence"] == str(sequence)


def failure_of(client: ConnectNodeClient, rpc: str, **request: Any) -> ConnectFailed:
    """The failure of a call that must fail, with its Connect code."""
    with pytest.raises(ConnectFailed) as failed:
        client.call(rpc, **request)
    return failed.value


def stream_failure(client: ConnectNodeClient, rpc: str, request: dict[str, Any]) -> ConnectFailed:
    """The failure of a streaming call that must fail before its first message."""
    with pytest.raises(ConnectFailed) as failed:
        connect_node_output(client.start(rpc, request, "--count", "1"))
    return failed.value


def exited(server: ServerProcess) -> str:
    """What a server that exited said last, for a failure that its exit explains."""
    return "" if server.running else f"the server exited:\n{server.log}"


def batched_events(client: ConnectNodeClient, count: int, request: dict[str, Any]) -> list[Event]:
    """The first `count` events of a SubscribeBatched stream, however the server batched
    them."""
    stream = client.open_stream("SubscribeBatched", request)
    events: list[Event] = []
    while len(events) < count:
        batch = client.decode("DocumentChangeBatch", stream.next())
        assert batch.changes, "an empty batch"
        events += [Event.from_grpcio(change) for change in batch.changes]
    stream.close()
    assert len(events) == count, f"{len(events) - count} events more than the stream has"
    return events


def test_every_rpc_answers_through_each_transport_as_over_grpc(
    server: ServerProcess, connect: Connect, grpcio_client: GrpcioClient
) -> None:
    """Each RPC of the service, called through the transport: reads answer what they answer
    over gRPC, writes take the next sequences, the peer and sync RPCs of a node without a mesh
    fail with their codes, and both change feeds carry the writes. The last assert checks that
    no RPC of the proto was left out."""
    client = connect(server)
    assert isinstance(client, ConnectNodeClient)
    pb2 = client.pb2

    described = client.call("GetStatus")
    assert described["phase"] == pb2.NODE_PHASE_READY
    assert described["node_id"] == status(grpcio_client)["node_id"]

    assert client.call("ListPeers") == grpcio_client.call("ListPeers") == {"peers": []}
    refused = failure_of(client, "ConnectPeer", endpoint_id="peer-1", addresses=["10.0.0.2:7"])
    assert refused.connect_code == "unimplemented", refused
    assert "no peer mesh" in refused.failure.message
    refused = failure_of(client, "DisconnectPeer", endpoint_id="peer-1")
    assert refused.connect_code == "failed_precondition", refused
    refused = failure_of(client, "StartSync")
    assert refused.connect_code == "unimplemented", refused
    assert client.call("StopSync") == {}
    assert client.call("GetSyncStats") == grpcio_client.call("GetSyncStats")

    assert put(client, "docs", "d1", '{"n": 1}') == 1
    assert get(client, "docs", "d1") == ('{"n": 1}', 1)
    assert list_ids(client, "docs") == ["d1"]
    assert client.call("DeleteDocument", collection="docs", doc_id="d1") == {"sequence": 2}

    head = 2
    for kind, samples in SAMPLES.items():
        for sample in samples:
            head += 1
            assert put_typed(client, kind, sample) == head
        assert get_typed(client, kind) == samples == get_typed(grpcio_client, kind)

    writes = [
        pb2.DocumentWrite(collection="w", doc_id="a", json_data="{}"),
        pb2.DocumentWrite(collection="w", doc_id="b", json_data='{"n": 1}'),
        pb2.DocumentWrite(collection="w", doc_id="a"),  # no json_data: a delete
        pb2.DocumentWrite(collection="w", doc_id="never"),
    ]
    since = head
    assert client.call("WriteDocuments", writes=writes) == {
        "sequences": [head + 1, head + 2, head + 3, 0]
    }
    head += 3
    assert list_ids(grpcio_client, "w") == ["b"]

    config = {"collection": "frozen", "deletion_policy": pb2.DELETION_POLICY_IMMUTABLE}
    assert client.call("SetCollectionConfig", config=pb2.CollectionConfig(**config)) == {}
    head += 1  # a config is a document of the store
    expected_config = {**config, "soft_delete_ttl_secs": None, "tombstone_ttl_secs": None}
    assert client.call("GetCollectionConfig", collection="frozen") == {"config": expected_config}
    refused = failure_of(client, "GetCollectionConfig", collection="loose")
    assert refused.connect_code == "not_found", refused
    listed = client.call("ListCollectionConfigs")
    assert listed == grpcio_client.call("ListCollectionConfigs") == {"configs": [expected_config]}

    # Subscribe and SubscribeBatched: a content query (field 5) whose documents are those
    # with n == 1; every write to the collection reaches it, a non-match as a DELETE.
    request = {
        "collections": ["w"],
        "since_sequence": since,
        "query": pb2.SubscriptionQuery(eq=pb2.QueryEq(field="n", value="1")),
    }
    feed = client.subscribe(4, **request)
    events = feed.events()
    assert [(event.change_type, event.doc_id, event.sequence) for event in events] == [
        (HEARTBEAT, "", since),
        (DELETE, "a", since + 1),
        (UPSERT, "b", since + 2),
        (DELETE, "a", since + 3),
    ]
    assert events[0].epoch == described["epoch"]
    assert batched_events(client, 4, request) == events

    all_rpcs = {method.name for method in client.method("GetStatus").containing_service.methods}
    assert client.called == all_rpcs, f"not called: {sorted(all_rpcs - client.called)}"
    assert status(grpcio_client)["head_sequence"] == head


def test_failures_carry_their_connect_codes_and_commit_nothing(
    server: ServerProcess, connect: Connect, grpcio_client: GrpcioClient
) -> None:
    """A bad request fails invalid_argument, whether the call is unary or a stream; a write
    whose expected_sequence does not hold, or a delete its collection's policy refuses, fails
    failed_precondition naming why; each with the server's message whole, and nothing
    committed."""
    client = connect(server)
    assert isinstance(client, ConnectNodeClient)
    pb2 = client.pb2
    put(grpcio_client, "c", "d", '{"v": 1}')

    refused = failure_of(client, "PutDocument", collection="c", doc_id="d", json_data="[1]")
    assert refused.connect_code == "invalid_argument", refused
    assert "must be a JSON object" in refused.failure.message
    refused = failure_of(
        client, "WriteDocuments", writes=[pb2.DocumentWrite(collection="_peat.x", doc_id="d")]
    )
    assert refused.connect_code == "invalid_argument", refused
    assert "_peat." in refused.failure.message
    bad_query = pb2.SubscriptionQuery(eq=pb2.QueryEq(field="n", value="not JSON"))
    for rpc in ("Subscribe", "SubscribeBatched"):
        refused = stream_failure(client, rpc, {"query": bad_query})
        assert refused.connect_code == "invalid_argument", (rpc, refused, exited(server))
        assert "query.eq.value 'not JSON' is not JSON" in refused.failure.message

    refused = failure_of(
        client, "PutDocument", collection="c", doc_id="d", json_data="{}", expected_sequence=0
    )
    assert (refused.connect_code, refused.failure.message) == (
        "failed_precondition",
        "document 'c'/'d' is at sequence 1, not 0: re-read it and retry",
    )
    refused = failure_of(client, "DeleteDocument", collection="c", doc_id="d", expected_sequence=7)
    assert (refused.connect_code, refused.failure.message) == (
        "failed_precondition",
        "document 'c'/'d' is at sequence 1, not 7: re-read it and retry",
    )
    immutable = pb2.CollectionConfig(collection="c", deletion_policy=pb2.DELETION_POLICY_IMMUTABLE)
    client.call("SetCollectionConfig", config=immutable)
    refused = failure_of(client, "DeleteDocument", collection="c", doc_id="d")
    assert refused.connect_code == "failed_precondition", refused
    assert get(grpcio_client, "c", "d") == ('{"v": 1}', 1)
    assert status(grpcio_client)["head_sequence"] == 2  # the put and the config


def next_event(client: ConnectNodeClient, stream: ConnectNodeStream) -> Event:
    """The next event of a Subscribe stream, heartbeats skipped (one may come when idle)."""
    while (event := client.event(stream.next())).is_heartbeat:
        pass
    return event


def until_delivered(client: ConnectNodeClient, stream: ConnectNodeStream, head: int) -> list[Event]:
    """The events of a Subscribe stream until it has delivered every change up to `head`, and
    is not in the middle of a catch-up."""
    events: list[Event] = []
    catching_up = False
    while True:
        event = next_event(client, stream)
        events.append(event)
        if event.change_type == CATCH_UP_BEGIN:
            catching_up = True
            continue
        if event.change_type == CATCH_UP_END:
            catching_up = False
        if not catching_up and event.sequence >= head:
            return events


def test_a_subscriber_that_stops_reading_is_caught_up_then_resumes_without_a_gap(
    start_server: StartServer, connect: Connect, grpcio_api: GrpcioApi
) -> None:
    """The client stops reading its stream (the transport's buffers fill, then the server's
    send blocks) while far more is written than the subscriber's buffer and the replay log
    hold. When it reads again, what it sees heals the lag openly, with a catch-up from the
    store, and its copy is the store's; then it reconnects from its resume point and epoch,
    and sees the changes made meanwhile and after, with no gap and no duplicate."""
    server = start_server(*SLOW_SERVER_ARGS)
    client = connect(server)
    assert isinstance(client, ConnectNodeClient)
    writer = GrpcioClient(server.address, grpcio_api)
    try:
        stream = client.open_stream(
            "Subscribe", {"collections": ["lag"], "control_events": True}, "--pause-after", "1"
        )
        opening = client.event(stream.next())
        assert (opening.change_type, opening.sequence) == (HEARTBEAT, 0), opening
        wait_for_subscribers(writer, 1)
        # The client reads no more: the server's sends stall, and the subscriber overflows.
        head = write_until_stalled(server, writer, INCOMPRESSIBLE)
        described = status(writer)
        assert described["lag_events"] >= 1, "the overflow is counted"
        assert described["replay_floor"] > 1, "the replay log no longer holds the start"

        stream.resume()
        events = until_delivered(client, stream, head)
        tail = put(writer, "lag", doc_id_of(head + 1), '{"tail": true}')
        events.append(next_event(client, stream))
        stream.close()
        wait_for_subscribers(writer, 0)

        heals = assert_contiguous(events, start=0)
        assert heals, "the lag was healed silently"
        assert [heal.change_type for heal in heals] == [CATCH_UP_BEGIN] * len(heals), heals
        assert (events[-1].change_type, events[-1].sequence) == (UPSERT, tail)
        copy = apply({}, [event for event in events if event.change_type in (UPSERT, DELETE)])
        store = {("lag", doc_id): get(writer, "lag", doc_id) for doc_id in list_ids(writer, "lag")}
        assert copy == store

        # Reconnect from the resume point, with the epoch the control events reported.
        epoch = [event.epoch for event in events if event.epoch][-1]
        assert epoch == described["epoch"]
        for sequence in range(tail + 1, tail + 4):
            put(writer, "lag", doc_id_of(sequence), "{}")
        feed = follow(
            client,
            5,
            collections=["lag"],
            since_sequence=tail,
            epoch=epoch,
            then=lambda: put(writer, "lag", doc_id_of(tail + 4), "{}"),
        )
        resumed = feed.events()
    finally:
        writer.close()
    assert (resumed[0].change_type, resumed[0].sequence, resumed[0].epoch) == (
        HEARTBEAT,
        tail,
        epoch,
    )
    assert [event.sequence for event in resumed[1:]] == [tail + 1, tail + 2, tail + 3, tail + 4]
    assert_contiguous(events + resumed[1:], start=0)
