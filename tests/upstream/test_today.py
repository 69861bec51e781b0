"""A client of today's upstream proto (tests/upstream/upstream_today.proto), compiled by
grpc_tools, against `peat-sync serve`: every RPC of its proto, a content query at
SubscribeRequest field 2, the current documents first, a first message that is data, and
only change types its enum defines.

Writes whose sequence a test needs, status and the heartbeat clock go through a client of
this proto (`grpcio_api`); everything the tests judge comes through upstream's client.
"""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.wire import LENGTH_DELIMITED, top_level_fields
from tests.helpers.clients import (
    DELETE,
    UPSERT,
    CallFailed,
    GrpcioApi,
    GrpcioClient,
    delete,
    failure_of,
    grpcio_dict,
    put,
)
from tests.helpers.servers import StartServer
from tests.helpers.streams import grpcio_subscription, wait_for_subscribers
from tests.helpers.waiting import CALL_TIMEOUT, wait_until
from tests.upstream.calls import (
    assert_commands,
    assert_documents,
    assert_status_peers_and_sync,
    stored_keys,
)
from tests.upstream.conftest import Connect
from tests.upstream.streams import Change, apply, relist, upstream_subscription

HEARTBEAT_INTERVAL = "100ms"
# A collection nobody writes: its heartbeats, on a stream of this proto, tell the time.
CLOCK = "clock"


def json_of(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True)


def query(pb2: Any, kind: str, **condition: Any) -> Any:
    """A `SubscriptionQuery` of today's upstream proto: `query(pb2, "eq", field=..., value=...)`
    and so on, with `value` given as a Python value and sent JSON-encoded."""
    if "value" in condition:
        condition["value"] = json.dumps(condition["value"])
    message = {"eq": pb2.QueryEq, "lt": pb2.QueryCmp, "gt": pb2.QueryCmp}[kind](**condition)
    return pb2.SubscriptionQuery(**{kind: message})


def combined(pb2: Any, kind: str, *clauses: Any) -> Any:
    """`and` or `or` of `clauses`."""
    message = {"and": pb2.QueryAnd, "or": pb2.QueryOr}[kind](clauses=list(clauses))
    return pb2.SubscriptionQuery(**{kind: message})


# ---------------------------------------------------------------------------------------------
# Every RPC


def test_todays_client_calls_every_rpc_of_its_proto(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi
) -> None:
    client = connect(server, upstream_today)
    pb2 = client.pb2
    assert_status_peers_and_sync(client)
    assert_documents(client)

    node = pb2.Node(
        id="n1",
        node_type="ugv",
        name="Rover",
        status=pb2.NODE_STATUS_DEGRADED,
        latitude=59.3,
        longitude=18.1,
        altitude_m=12.5,
        readiness=0.75,
        capabilities=["camera", "lidar"],
        callsign="R1",
    )
    assert client.call("PutNode", node=node) == {}
    assert client.call("GetNodes") == {"nodes": [grpcio_dict(node)]}
    assert {"node_type", "status", "unit_id"} <= stored_keys(client, "nodes", "n1")
    assert "platform_type" not in stored_keys(client, "nodes", "n1")

    cell = pb2.Cell(
        id="cell-1",
        name="Alpha",
        status=pb2.CELL_STATUS_ACTIVE,
        node_count=3,
        center_latitude=59.0,
        center_longitude=18.0,
        capabilities=["relay"],
        leader_id="n1",
    )
    assert client.call("PutCell", cell=cell) == {}
    assert client.call("GetCells") == {"cells": [grpcio_dict(cell)]}
    assert "node_count" in stored_keys(client, "cells", "cell-1")

    track = pb2.Track(
        id="t1",
        source_node="n1",
        cell_id="cell-1",
        latitude=59.31,
        longitude=18.12,
        heading_deg=90.0,
        speed_mps=4.5,
        classification="vehicle",
        confidence=0.8,
        category=pb2.TRACK_CATEGORY_VEHICLE,
    )
    assert client.call("PutTrack", track=track) == {}
    assert client.call("GetTracks") == {"tracks": [grpcio_dict(track)]}
    assert "source_node" in stored_keys(client, "tracks", "t1")
    assert_commands(client)

    # Subscribe: the named collection's current documents come first.
    with upstream_subscription(client, CALL_TIMEOUT, collections=["nodes"]) as nodes:
        first = nodes.next()
    assert (first.collection, first.doc_id, first.change_type) == ("nodes", "n1", UPSERT)

    assert_collection_configs(client)
    assert_attachments_unimplemented(client)


def assert_collection_configs(client: GrpcioClient) -> None:
    """Set, get and list collection configs, as upstream declares them; peat-sync also
    enforces them (upstream only stores them). A server without collection configs must say
    so for each of the three RPCs, never answer as if it had stored a config."""
    pb2 = client.pb2
    immutable = pb2.CollectionConfig(
        collection="ledger", deletion_policy=pb2.DELETION_POLICY_IMMUTABLE
    )
    tombstone = pb2.CollectionConfig(
        collection="events", deletion_policy=pb2.DELETION_POLICY_TOMBSTONE, tombstone_ttl_secs=3600
    )
    try:
        set_immutable = client.call("SetCollectionConfig", config=immutable)
    except CallFailed as exc:
        set_immutable = {"failure": exc.failure}
    if set_immutable != {}:
        assert set_immutable["failure"].code == "UNIMPLEMENTED", set_immutable
        for rpc, request in (
            ("SetCollectionConfig", {"config": tombstone}),
            ("GetCollectionConfig", {"collection": "ledger"}),
            ("ListCollectionConfigs", {}),
        ):
            refused = failure_of(client, rpc, **request)
            assert refused.code == "UNIMPLEMENTED", (rpc, refused)
            assert f"{rpc}: collection configs are not implemented" in refused.message
        return

    assert client.call("SetCollectionConfig", config=tombstone) == {}
    assert client.call("GetCollectionConfig", collection="ledger") == {
        "config": grpcio_dict(immutable)
    }
    assert client.call("GetCollectionConfig", collection="events") == {
        "config": grpcio_dict(tombstone)
    }
    listed = client.call("ListCollectionConfigs")["configs"]
    assert grpcio_dict(immutable) in listed
    assert grpcio_dict(tombstone) in listed
    missing = failure_of(client, "GetCollectionConfig", collection="notes")
    assert missing.code == "NOT_FOUND", missing
    assert "notes" in missing.message

    client.call("PutDocument", collection="ledger", doc_id="e1", json_data='{"amount": 5}')
    refused = failure_of(client, "DeleteDocument", collection="ledger", doc_id="e1")
    assert refused.code == "FAILED_PRECONDITION", refused
    assert client.call("GetDocument", collection="ledger", doc_id="e1")["json_data"]


def assert_attachments_unimplemented(client: GrpcioClient) -> None:
    """Upstream's attachment RPCs: UNIMPLEMENTED, with a message that says why."""
    for rpc in ("SendAttachments", "GetAttachmentDistribution", "CancelAttachmentDistribution"):
        refused = failure_of(client, rpc)
        assert refused.code == "UNIMPLEMENTED", (rpc, refused)
        assert f"{rpc}: attachments are not supported by peat-sync" in refused.message
    bundle = client.stub.SubscribeAttachmentBundle(
        client.pb2.SubscribeAttachmentBundleRequest(), timeout=CALL_TIMEOUT
    )
    with pytest.raises(grpc.RpcError) as raised:
        next(bundle)
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "attachments are not supported" in (raised.value.details() or "")


# ---------------------------------------------------------------------------------------------
# Queries


def test_a_query_at_field_2_streams_the_matching_documents_and_a_delete_when_one_stops_matching(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi, grpcio_api: GrpcioApi
) -> None:
    today = connect(server, upstream_today)
    writer = connect(server, grpcio_api)
    pb2 = today.pb2
    # Vehicles faster than 20.
    fast_vehicles = combined(
        pb2,
        "and",
        query(pb2, "eq", field="kind", value="vehicle"),
        query(pb2, "gt", field="speed", value=20),
    )
    request = pb2.SubscribeRequest(collections=["sightings"], query=fast_vehicles)
    assert [(f.number, f.wire_type) for f in top_level_fields(request.SerializeToString())] == [
        (1, LENGTH_DELIMITED),
        (2, LENGTH_DELIMITED),
    ], "upstream sends its query at field 2, length-delimited"

    def write(doc_id: str, **document: Any) -> None:
        put(writer, "sightings", doc_id, json_of(document))

    def matches(json_data: str) -> bool:
        document = json.loads(json_data)
        return bool(document.get("kind") == "vehicle" and document.get("speed", 0) > 20)

    write("a", kind="vehicle", speed=30)
    write("b", kind="person", speed=5)
    write("c", kind="vehicle", speed=10)
    write("d", kind="vehicle", speed=50)
    put(writer, "elsewhere", "x", json_of({"kind": "vehicle", "speed": 99}))

    def upsert(doc_id: str, **document: Any) -> Change:
        return Change("sightings", doc_id, UPSERT, json_of(document))

    def deleted(doc_id: str) -> Change:
        return Change("sightings", doc_id, DELETE, None)

    with upstream_subscription(
        today, collections=["sightings"], query=fast_vehicles
    ) as subscription:
        # The current documents that match, in the order they were written.
        snapshot = subscription.until(lambda change: change.doc_id == "d")
        assert snapshot == [
            upsert("a", kind="vehicle", speed=30),
            upsert("d", kind="vehicle", speed=50),
        ]
        write("e", kind="vehicle", speed=40)
        write("a", kind="vehicle", speed=15)  # stops matching
        write("c", kind="vehicle", speed=25)  # starts matching
        write("f", kind="person", speed=1)  # never matches
        delete(writer, "sightings", "d")
        write("end", kind="vehicle", speed=99)
        live = subscription.until(lambda change: change.doc_id == "end")

    # A DELETE of a document that never matched is harmless to a copy, and the server may
    # send one: it does not know what the subscriber has.
    assert [change for change in live if change.doc_id != "f"] == [
        upsert("e", kind="vehicle", speed=40),
        deleted("a"),
        upsert("c", kind="vehicle", speed=25),
        deleted("d"),
        upsert("end", kind="vehicle", speed=99),
    ]
    assert all(change == deleted("f") for change in live if change.doc_id == "f")
    copy: dict[str, str] = {}
    for change in snapshot + live:
        apply(copy, change)
    store = relist(today, "sightings")
    assert copy == {doc_id: json_data for doc_id, json_data in store.items() if matches(json_data)}


# ---------------------------------------------------------------------------------------------
# The current documents first


_SNAPSHOT_COMPLETE = re.compile(r"subscriber #\d+ \([^)]*\): snapshot complete at sequence (\d+)")


class Writers:
    """Threads that update documents of `fleet` until stopped, each with a version that
    grows by one per write; every write is recorded with its sequence."""

    def __init__(self, server: ServerProcess, api: GrpcioApi, count: int, docs: int) -> None:
        self.clients = [GrpcioClient(server.address, api) for _ in range(count)]
        self.writes: list[tuple[int, str, str]] = []  # (sequence, doc_id, json_data)
        self.errors: list[Exception] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(client, index, docs), daemon=True)
            for index, client in enumerate(self.clients)
        ]

    def _write(self, client: GrpcioClient, index: int, docs: int) -> None:
        version = 0
        try:
            while not self._stop.is_set():
                version += 1
                doc_id = f"w{index}-{version % docs}"
                json_data = json_of({"writer": index, "version": version})
                self.writes.append((put(client, "fleet", doc_id, json_data), doc_id, json_data))
        except Exception as exc:
            self.errors.append(exc)

    def __enter__(self) -> Writers:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop writing (again: harmless), and fail if a write failed."""
        if not self._stop.is_set():
            self._stop.set()
            for thread in self._threads:
                thread.join(CALL_TIMEOUT)
            for client in self.clients:
                client.close()
        assert not self.errors, self.errors

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def test_a_filtered_subscription_starts_with_the_current_documents_without_a_duplicate_or_gap(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi, grpcio_api: GrpcioApi
) -> None:
    """Today's upstream sends the named collections' documents, then the live changes, and
    documents a window for duplicates between the two. Here writers keep writing while the
    subscription starts: the stream must hold every document's state at one sequence H (the
    snapshot, whose end the server logs), then every change after H exactly once."""
    today = connect(server, upstream_today)
    writer = connect(server, grpcio_api)
    history: list[tuple[int, str, str]] = []
    for index in range(40):
        json_data = json_of({"writer": -1, "version": index})
        history.append(
            (put(writer, "fleet", f"p{index:02d}", json_data), f"p{index:02d}", json_data)
        )
    put(writer, "elsewhere", "x", "{}")

    with Writers(server, grpcio_api, count=2, docs=15) as writers:
        wait_until(lambda: len(writers.writes) >= 30, what="writes before the subscription")
        with upstream_subscription(today, collections=["fleet"]) as subscription:
            changes = [subscription.next()]
            # Read while the writers write, until the snapshot has ended a while ago.
            while not (
                (complete := _SNAPSHOT_COMPLETE.search(server.log))
                and sum(s > int(complete[1]) for s, _, _ in writers.writes) >= 60
            ):
                changes.append(subscription.next())
            writers.stop()
            end = put(writer, "fleet", "end", json_of({"end": True}))
            changes += subscription.until(lambda change: change.doc_id == "end")
    handoff = int(complete[1])
    history += [*writers.writes, (end, "end", json_of({"end": True}))]
    history.sort()
    sequence_of: dict[tuple[str, str | None], int] = {
        (doc_id, json_data): sequence for sequence, doc_id, json_data in history
    }

    assert changes[0].change_type == UPSERT, changes[0]
    assert changes[0].doc_id.startswith("p"), "the first message is a current document"
    assert {change.collection for change in changes} == {"fleet"}
    assert {change.change_type for change in changes} == {UPSERT}
    sequences = [sequence_of[change.doc_id, change.json_data] for change in changes]
    assert sequences == sorted(set(sequences)), "a duplicate, or changes out of order"

    snapshot = [change for change, s in zip(changes, sequences, strict=True) if s <= handoff]
    live = [
        (s, change.doc_id, change.json_data)
        for change, s in zip(changes, sequences, strict=True)
        if s > handoff
    ]
    assert live == [write for write in history if write[0] > handoff], "a gap after the snapshot"
    copy: dict[str, str] = {}
    for change in snapshot:
        apply(copy, change)
    assert copy == {doc_id: json_data for s, doc_id, json_data in history if s <= handoff}
    # The writers wrote on both sides of the handoff.
    assert any(s <= handoff for s, _, _ in writers.writes)
    assert len(live) > 60


# ---------------------------------------------------------------------------------------------
# Clients that know only upstream's change types


def test_a_naive_client_reads_its_first_message_as_a_document(
    start_server: StartServer, connect: Connect, upstream_today: GrpcioApi, grpcio_api: GrpcioApi
) -> None:
    """Upstream's own tests read the first message of a stream as data: it must be a
    document, however long the stream was idle before it."""
    server = start_server("--heartbeat-interval", HEARTBEAT_INTERVAL)
    today = connect(server, upstream_today)
    this = connect(server, grpcio_api)
    put(this, "fleet", "p1", json_of({"kind": "vehicle"}))
    with (
        upstream_subscription(today) as everything,
        upstream_subscription(today, collections=["fleet"]) as fleet,
        grpcio_subscription(this, collections=[CLOCK]) as clock,
    ):
        wait_for_subscribers(this, 3)
        clock.take(5, heartbeats=True)  # idle: streams of this proto got heartbeats
        put(this, "fleet", "p2", json_of({"kind": "person"}))

        for stream, doc_id, kind in ((everything, "p2", "person"), (fleet, "p1", "vehicle")):
            first = next(stream.call)  # the naive client: the first message is a document
            assert first.change_type == today.pb2.CHANGE_TYPE_UPSERT, first
            assert (first.collection, first.doc_id) == ("fleet", doc_id)
            assert json.loads(first.json_data) == {"kind": kind}
        assert Change.of(next(fleet.call)) == Change(
            "fleet", "p2", UPSERT, json_of({"kind": "person"})
        )


def strictly(pb2: Any, change_type: int) -> str:
    """The name of `change_type` in the client's enum, as a client that maps enums strictly
    reads it: ChangeType.Name raises ValueError for a value the enum does not define."""
    try:
        return str(pb2.ChangeType.Name(change_type))
    except ValueError:
        raise AssertionError(f"change_type {change_type} is not in the client's enum") from None


def test_a_client_that_maps_change_types_strictly_meets_only_upsert_and_delete(
    start_server: StartServer, connect: Connect, upstream_today: GrpcioApi, grpcio_api: GrpcioApi
) -> None:
    """A client that maps every change_type to its enum, and fails on a value its enum does
    not define: idle streams, a snapshot and a query stream send it nothing else. Today's
    upstream enum has no RESYNC either: that one reaches it only for a lag the server cannot
    heal (see test_first.py), where the alternative would be a silent loss."""
    server = start_server("--heartbeat-interval", HEARTBEAT_INTERVAL)
    today = connect(server, upstream_today)
    this = connect(server, grpcio_api)
    pb2 = today.pb2
    assert pb2.ChangeType.keys() == [
        "CHANGE_TYPE_UNSPECIFIED",
        "CHANGE_TYPE_UPSERT",
        "CHANGE_TYPE_DELETE",
    ]
    put(this, "fleet", "p1", json_of({"kind": "vehicle"}))
    put(this, "fleet", "p2", json_of({"kind": "person"}))
    vehicles = query(pb2, "eq", field="kind", value="vehicle")
    with (
        upstream_subscription(today) as everything,
        upstream_subscription(today, collections=["fleet"]) as fleet,
        upstream_subscription(today, collections=["fleet"], query=vehicles) as only_vehicles,
        grpcio_subscription(this, collections=[CLOCK]) as clock,
    ):
        wait_for_subscribers(this, 4)
        for step in range(3):
            clock.take(3, heartbeats=True)
            put(this, "fleet", f"v{step}", json_of({"kind": "vehicle"}))
            put(this, "fleet", "p1", json_of({"kind": "vehicle", "step": step}))
            clock.take(3, heartbeats=True)
            put(this, "fleet", "p1", json_of({"kind": "person"}))  # p1 leaves the query
            delete(this, "fleet", f"v{step}")
        put(this, "fleet", "end", json_of({"kind": "vehicle"}))
        streams = {"all": everything, "fleet": fleet, "query": only_vehicles}
        received = {
            name: stream.until(lambda change: change.doc_id == "end")
            for name, stream in streams.items()
        }

    for name, stream in streams.items():
        names = {strictly(pb2, message.change_type) for message in stream.messages}
        assert names == {"CHANGE_TYPE_UPSERT", "CHANGE_TYPE_DELETE"}, (name, names)
        assert all(change.collection == "fleet" for change in received[name]), name
    copies = {name: dict[str, str]() for name in streams}
    for name, changes in received.items():
        for change in changes:
            apply(copies[name], change)
    store = relist(today, "fleet")
    assert copies["fleet"] == store
    # A request that names no collections gets no documents first, as upstream's: p2 was
    # never written after it opened.
    assert copies["all"] == {k: v for k, v in store.items() if k != "p2"}
    assert copies["query"] == {k: v for k, v in store.items() if json.loads(v)["kind"] == "vehicle"}
