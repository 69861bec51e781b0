"""Documents, typed collections, status and the honest peer/sync answers, through both the
grpclib (betterproto2) client and the official grpcio client."""

from __future__ import annotations

import json
import re
from typing import Any

import grpc
import pytest

from peat_sync import wire
from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import (
    TYPED_COLLECTIONS,
    UPSERT,
    Client,
    GrpcioClient,
    delete,
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

# ---------------------------------------------------------------------------------------------
# Documents


def test_put_returns_the_committed_sequence(client: Client) -> None:
    assert put(client, "c", "a", '{"n": 1}') == 1
    assert put(client, "c", "b", '{"n": 2}') == 2
    assert put(client, "other", "a", '{"n": 3}') == 3
    assert put(client, "c", "a", '{"n": 4}') == 4, "an update takes the next sequence"


def test_get_returns_json_and_sequence(client: Client) -> None:
    document = '{"name": "réseau ☃", "nested": {"list": [1, 2.5, null, true]}}'
    sequence = put(client, "c", "doc", document)
    assert get(client, "c", "doc") == (document, sequence)
    updated = put(client, "c", "doc", "{}")
    assert get(client, "c", "doc") == ("{}", updated)


def test_get_of_an_absent_document_leaves_json_data_unset(client: Client) -> None:
    assert get(client, "c", "missing") == (None, 0)
    put(client, "c", "present", "{}")
    assert get(client, "c", "missing") == (None, 0)
    assert get(client, "other", "present") == (None, 0), "documents are per collection"


def test_delete_returns_its_sequence_or_zero_when_absent(client: Client) -> None:
    put(client, "c", "doc", '{"v": 1}')
    sequence = delete(client, "c", "doc")
    assert sequence == 2
    assert get(client, "c", "doc") == (None, 0)
    assert delete(client, "c", "doc") == 0, "deleting a deleted document commits nothing"
    assert delete(client, "c", "never") == 0
    assert status(client)["head_sequence"] == 2
    # A document can come back after its delete.
    assert put(client, "c", "doc", '{"v": 2}') == 3
    assert get(client, "c", "doc") == ('{"v": 2}', 3)


def test_list_returns_the_doc_ids_of_a_collection(client: Client) -> None:
    assert list_ids(client, "c") == []
    for doc_id in ("b", "a", "c", "ü"):
        put(client, "c", doc_id, "{}")
    put(client, "other", "x", "{}")
    delete(client, "c", "c")
    assert sorted(list_ids(client, "c")) == ["a", "b", "ü"]
    assert list_ids(client, "other") == ["x"]
    assert list_ids(client, "empty") == []


# ---------------------------------------------------------------------------------------------
# Typed collections

# Every field of each message, as the stored JSON document holds it: proto field names, enums
# as integers, absent optionals as null. Optionals set to their zero value stay set.
PLATFORMS: list[dict[str, Any]] = [
    {
        "id": "p-1",
        "platform_type": "uav",
        "name": "Raven 1",
        "status": 2,
        "latitude": 51.5,
        "longitude": -0.125,
        "altitude_m": 120.5,
        "readiness": 0.75,
        "capabilities": ["isr", "relay"],
        "unit_id": "unit-7",
        "callsign": "",
    },
    {
        "id": "p-2",
        "platform_type": "",
        "name": "",
        "status": 0,
        "latitude": 0.0,
        "longitude": 0.0,
        "altitude_m": 0.0,
        "readiness": 0.0,
        "capabilities": [],
        "unit_id": None,
        "callsign": None,
    },
]
NODES: list[dict[str, Any]] = [
    {
        "id": "n-1",
        "node_type": "ugv",
        "name": "Mule",
        "status": 3,
        "latitude": -12.5,
        "longitude": 130.75,
        "altitude_m": 0.0,
        "readiness": 1.0,
        "capabilities": ["cargo"],
        "unit_id": None,
        "callsign": "MULE",
    },
    {
        "id": "n-2",
        "node_type": "",
        "name": "",
        "status": 0,
        "latitude": 0.0,
        "longitude": 0.0,
        "altitude_m": 0.0,
        "readiness": 0.0,
        "capabilities": [],
        "unit_id": "unit-2",
        "callsign": None,
    },
]
CELLS: list[dict[str, Any]] = [
    {
        "id": "cell-1",
        "name": "North",
        "status": 1,
        "node_count": 3,
        "center_latitude": 48.25,
        "center_longitude": 11.5,
        "capabilities": ["strike"],
        "formation_id": "f-1",
        "leader_id": None,
    },
    {
        "id": "cell-2",
        "name": "South",
        "status": 3,
        "node_count": 0,
        "center_latitude": -33.75,
        "center_longitude": 151.0,
        "capabilities": [],
        "formation_id": None,
        "leader_id": "p-1",
    },
]
TRACKS: list[dict[str, Any]] = [
    {
        "id": "t-1",
        "source_node": "p-1",
        "cell_id": "cell-1",
        "formation_id": None,
        "latitude": 51.25,
        "longitude": -0.5,
        "altitude_m": 300.25,
        "cep_m": None,
        "heading_deg": 0.0,
        "speed_mps": 12.5,
        "classification": "truck",
        "confidence": 0.875,
        "category": 2,
    },
    {
        "id": "t-2",
        "source_node": "p-2",
        "cell_id": None,
        "formation_id": "f-9",
        "latitude": 0.0,
        "longitude": 0.0,
        "altitude_m": None,
        "cep_m": 4.5,
        "heading_deg": None,
        "speed_mps": None,
        "classification": "",
        "confidence": 0.0,
        "category": 5,
    },
]
COMMANDS: list[dict[str, Any]] = [
    {
        "id": "cmd-1",
        "target_id": "p-1",
        "command_type": "goto",
        "status": 1,
        "created_at": 1_700_000_000_123,
        "expires_at": -1,
        "payload_json": '{"waypoint": [51.5, -0.125]}',
    },
    {
        "id": "cmd-2",
        "target_id": "",
        "command_type": "",
        "status": 5,
        "created_at": 0,
        "expires_at": 9_007_199_254_740_993,
        "payload_json": "",
    },
]
SAMPLES = {
    "platform": PLATFORMS,
    "node": NODES,
    "cell": CELLS,
    "track": TRACKS,
    "command": COMMANDS,
}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_typed_put_and_get_round_trip(client: Client, kind: str) -> None:
    samples = SAMPLES[kind]
    sequences = [put_typed(client, kind, sample) for sample in samples]
    assert sequences == [1, 2]
    assert get_typed(client, kind) == samples


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_typed_put_is_a_document_keyed_by_id(client: Client, kind: str) -> None:
    collection = TYPED_COLLECTIONS[kind]
    for sample in SAMPLES[kind]:
        sequence = put_typed(client, kind, sample)
        json_data, stored_sequence = get(client, collection, sample["id"])
        assert stored_sequence == sequence
        assert json_data is not None
        assert json.loads(json_data) == sample
        # Exactly the proto field names, in the message's order.
        assert list(json.loads(json_data)) == list(sample)
    assert list_ids(client, collection) == [sample["id"] for sample in SAMPLES[kind]]
    for other in set(TYPED_COLLECTIONS.values()) - {collection}:
        assert list_ids(client, other) == []


def test_typed_put_replaces_by_id(client: Client) -> None:
    first = dict(PLATFORMS[0])
    put_typed(client, "platform", first)
    changed = {**first, "status": 4, "capabilities": [], "unit_id": None, "readiness": 0.0}
    sequence = put_typed(client, "platform", changed)
    assert get_typed(client, "platform") == [changed]
    assert get(client, "platforms", "p-1")[1] == sequence


def test_typed_get_reads_documents_put_as_json(client: Client) -> None:
    """A document written with PutDocument into a typed collection reads back as the message,
    missing keys taking their defaults."""
    put(client, "cells", "cell-9", '{"id": "cell-9", "name": "Nine", "status": 2}')
    (cell,) = get_typed(client, "cell")
    assert cell == {
        "id": "cell-9",
        "name": "Nine",
        "status": 2,
        "node_count": 0,
        "center_latitude": 0.0,
        "center_longitude": 0.0,
        "capabilities": [],
        "formation_id": None,
        "leader_id": None,
    }


def test_typed_get_reads_the_first_upstream_key_names(client: Client) -> None:
    """Cells and tracks stored under the names of the first upstream proto (platform_count,
    source_platform) read as node_count and source_node, which a typed put writes."""
    put(client, "cells", "c-old", '{"id": "c-old", "platform_count": 5}')
    put(client, "tracks", "t-old", '{"id": "t-old", "source_platform": "p-7"}')
    assert [cell["node_count"] for cell in get_typed(client, "cell")] == [5]
    assert [track["source_node"] for track in get_typed(client, "track")] == ["p-7"]

    sequence = put_typed(client, "cell", {"id": "c-old", "node_count": 6})
    json_data, stored = get(client, "cells", "c-old")
    assert stored == sequence
    assert json_data is not None
    assert json.loads(json_data)["node_count"] == 6
    assert "platform_count" not in json.loads(json_data)


def test_typed_put_is_a_change_event_on_its_collection(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    with grpcio_subscription(client, collections=["tracks"]) as subscription:
        wait_for_subscribers(client, 1)
        put_typed(client, "platform", PLATFORMS[0])
        sequence = put_typed(client, "track", TRACKS[0])
        event = subscription.next()
    assert (event.collection, event.doc_id, event.change_type, event.sequence) == (
        "tracks",
        "t-1",
        UPSERT,
        sequence,
    )
    assert event.json_data is not None
    assert json.loads(event.json_data) == TRACKS[0]


# ---------------------------------------------------------------------------------------------
# Status


def test_get_status(
    start_server: StartServer, connect_client: Any, grpcio_api: tuple[Any, Any]
) -> None:
    server: ServerProcess = start_server("--node-id", "node-under-test")
    client: Client = connect_client(server)
    empty = status(client)
    assert empty["node_id"] == "node-under-test"
    assert empty["endpoint_addr"] == f"tcp://127.0.0.1:{server.port}"
    assert empty["phase"] == 2, "NODE_PHASE_READY"
    assert empty["head_sequence"] == 0
    assert re.fullmatch(r"[0-9a-f]{16}", empty["epoch"]), empty["epoch"]
    assert empty["subscribers"] == 0
    assert empty["sync_active"] is False
    assert empty["connected_peers"] == 0

    put(client, "c", "a", "{}")
    last = put(client, "c", "b", "{}")
    other = GrpcioClient(server.address, grpcio_api)
    try:
        with grpcio_subscription(other), grpcio_subscription(other, collections=["c"]):
            busy = wait_for_subscribers(client, 2)
        assert busy["head_sequence"] == last
        assert busy["epoch"] == empty["epoch"]
        wait_for_subscribers(client, 0)
    finally:
        other.close()


def test_node_id_defaults_to_a_random_id(client: Client) -> None:
    node_id = status(client)["node_id"]
    assert re.fullmatch(r"peat-[0-9a-f]{8}", node_id), node_id


# ---------------------------------------------------------------------------------------------
# Peers and sync: this node has no mesh, and says so


def test_list_peers_is_empty(client: Client) -> None:
    assert client.call("ListPeers") == {"peers": []}


def test_connect_peer_is_unimplemented(client: Client) -> None:
    failure = failure_of(
        client, "ConnectPeer", endpoint_id="peer-1", addresses=["10.0.0.2:4433"], relay_url=""
    )
    assert failure.code == "UNIMPLEMENTED"
    assert "ConnectPeer" in failure.message
    assert "no peer mesh" in failure.message


def test_disconnect_peer_is_a_failed_precondition(client: Client) -> None:
    failure = failure_of(client, "DisconnectPeer", endpoint_id="peer-1")
    assert failure.code == "FAILED_PRECONDITION"
    assert "'peer-1'" in failure.message
    assert "no peer mesh" in failure.message


def test_start_sync_is_unimplemented(client: Client) -> None:
    failure = failure_of(client, "StartSync")
    assert failure.code == "UNIMPLEMENTED"
    assert "StartSync" in failure.message


def test_stop_sync_succeeds_and_sync_stays_inactive(client: Client) -> None:
    assert client.call("StopSync") == {}
    put(client, "c", "d", "{}")
    assert client.call("GetSyncStats") == {
        "sync_active": False,
        "connected_peers": 0,
        "bytes_sent": 0,
        "bytes_received": 0,
        # Shared mode's: a sidecar of its own store applies no stream.
        "applied_sequence": 0,
        "stream_head": 0,
        "lag": 0,
    }
    assert status(client)["sync_active"] is False


# ---------------------------------------------------------------------------------------------
# Attachments: upstream's RPCs, outside this proto, are UNIMPLEMENTED and say why

ATTACHMENT_RPCS = [
    "SendAttachments",
    "GetAttachmentDistribution",
    "SubscribeAttachmentBundle",
    "CancelAttachmentDistribution",
]


def call_raw(channel: grpc.Channel, rpc: str, payload: bytes) -> None:
    """Call `rpc` at its path with `payload` as the request; read a stream to its end."""
    path = wire.rpc_path(rpc)
    if rpc == "SubscribeAttachmentBundle":
        list(channel.unary_stream(path, request_serializer=bytes)(payload, timeout=CALL_TIMEOUT))
    else:
        channel.unary_unary(path, request_serializer=bytes)(payload, timeout=CALL_TIMEOUT)


@pytest.mark.parametrize("rpc", ATTACHMENT_RPCS)
@pytest.mark.parametrize("payload", [b"", b"\xff\xff\xff\xff"], ids=["empty", "not-protobuf"])
def test_attachment_rpcs_are_unimplemented_whatever_the_request(
    grpcio_client: GrpcioClient, rpc: str, payload: bytes
) -> None:
    """Called at its path with any bytes (the request is never decoded): UNIMPLEMENTED, with
    a message saying that peat-sync does not support attachments; the server goes on."""
    with pytest.raises(grpc.RpcError) as raised:
        call_raw(grpcio_client.channel, rpc, payload)

    failure = raised.value
    assert failure.code() is grpc.StatusCode.UNIMPLEMENTED
    assert failure.details().startswith(f"{rpc}: attachments are not supported by peat-sync")
    assert put(grpcio_client, "c", "d", "{}") == 1
