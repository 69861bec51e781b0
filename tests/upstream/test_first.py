"""A client of the first upstream proto (tests/upstream/upstream_first.proto), compiled by
grpc_tools, against `peat-sync serve`: every RPC of its proto, and a stream that carries
UPSERT, DELETE and, for a lag the server cannot heal exactly, RESYNC: nothing else.

Writes whose sequence a test needs, status and the heartbeat clock go through a client of
this proto (`grpcio_api`); everything the tests judge comes through upstream's client.
"""

from __future__ import annotations

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import DELETE, RESYNC, UPSERT, GrpcioApi, grpcio_dict, put
from tests.helpers.servers import StartServer
from tests.helpers.slow_consumers import SLOW_SERVER_ARGS, doc_id_of, padded, write_until_stalled
from tests.helpers.streams import grpcio_subscription, wait_for_subscribers
from tests.helpers.waiting import CALL_TIMEOUT
from tests.upstream.calls import (
    assert_commands,
    assert_documents,
    assert_status_peers_and_sync,
    stored_keys,
)
from tests.upstream.conftest import Connect
from tests.upstream.streams import Change, apply, relist, upstream_subscription


def test_first_protos_client_calls_every_rpc_of_its_proto(
    server: ServerProcess, connect: Connect, upstream_first: GrpcioApi, upstream_today: GrpcioApi
) -> None:
    client = connect(server, upstream_first)
    pb2 = client.pb2
    assert_status_peers_and_sync(client)
    assert_documents(client)

    platform = pb2.Platform(
        id="p1",
        platform_type="uav",
        name="Hawk",
        status=pb2.PLATFORM_STATUS_BUSY,
        latitude=59.3,
        longitude=18.1,
        altitude_m=120.0,
        readiness=0.5,
        capabilities=["camera"],
        unit_id="u7",
    )
    assert client.call("PutPlatform", platform=platform) == {}
    assert client.call("GetPlatforms") == {"platforms": [grpcio_dict(platform)]}
    assert "platform_type" in stored_keys(client, "platforms", "p1")

    cell = pb2.Cell(
        id="cell-1",
        name="Alpha",
        status=pb2.CELL_STATUS_INACTIVE,
        platform_count=4,
        center_latitude=59.0,
        center_longitude=18.0,
        formation_id="f1",
    )
    assert client.call("PutCell", cell=cell) == {}
    assert client.call("GetCells") == {"cells": [grpcio_dict(cell)]}

    track = pb2.Track(
        id="t1",
        source_platform="p1",
        latitude=59.31,
        longitude=18.12,
        altitude_m=100.0,
        cep_m=5.0,
        classification="aircraft",
        confidence=0.9,
        category=pb2.TRACK_CATEGORY_AIR,
    )
    assert client.call("PutTrack", track=track) == {}
    assert client.call("GetTracks") == {"tracks": [grpcio_dict(track)]}
    assert_commands(client)

    with upstream_subscription(client, CALL_TIMEOUT, collections=["platforms"]) as platforms:
        first = platforms.next()
    assert (first.collection, first.doc_id, first.change_type) == ("platforms", "p1", UPSERT)

    # The documents are stored with today's key names (node_count, source_node), and read
    # the same through today's proto, whose fields have the same numbers. Platforms stay in
    # their collection: today's GetNodes reads `nodes`, as upstream's does.
    assert "node_count" in stored_keys(client, "cells", "cell-1")
    assert "source_node" in stored_keys(client, "tracks", "t1")
    today = connect(server, upstream_today)
    assert [cell["node_count"] for cell in today.call("GetCells")["cells"]] == [4]
    assert [track["source_node"] for track in today.call("GetTracks")["tracks"]] == ["p1"]
    assert today.call("GetNodes") == {"nodes": []}


def test_first_protos_stream_carries_only_upsert_delete_and_resync_even_when_it_lags(
    start_server: StartServer, connect: Connect, upstream_first: GrpcioApi, grpcio_api: GrpcioApi
) -> None:
    """A subscriber that stops reading, with a buffer and a replay log too small to heal its
    lag: a client of this proto would get a catch-up between markers; the first proto's
    client gets the original request's RESYNC sentinel (a value its enum lacks, so it
    re-lists), then every later change, and never a heartbeat, however idle its stream."""
    server = start_server(*SLOW_SERVER_ARGS, "--heartbeat-interval", "100ms")
    reader = connect(server, upstream_first)
    lister = connect(server, upstream_first)
    writer = connect(server, grpcio_api)
    with (
        upstream_subscription(reader, collections=["lag"]) as subscription,
        grpcio_subscription(writer, collections=["clock"]) as clock,
    ):
        wait_for_subscribers(writer, 2)
        head = write_until_stalled(server, writer, padded(64 * 1024))
        before = subscription.until(lambda change: change.change_type == RESYNC)
        relisted = relist(lister, "lag")
        clock.take(3, heartbeats=True)  # idle: streams of this proto got heartbeats
        put(writer, "lag", "tail", '{"tail": true}')
        writer.call("DeleteDocument", collection="lag", doc_id=doc_id_of(1))
        put(writer, "lag", "end", '{"end": true}')
        after = subscription.until(lambda change: change.doc_id == "end")

    assert {message.change_type for message in subscription.messages} == {UPSERT, RESYNC, DELETE}
    assert before[-1] == Change("", "", RESYNC, None)
    delivered = before[:-1]
    assert [change.doc_id for change in delivered] == [
        doc_id_of(sequence) for sequence in range(1, len(delivered) + 1)
    ], "a gap before the RESYNC"
    assert len(delivered) < head, "the RESYNC stands for the changes the subscriber missed"
    assert {change.change_type for change in delivered} == {UPSERT}
    assert after == [
        Change("lag", "tail", UPSERT, '{"tail": true}'),
        Change("lag", doc_id_of(1), DELETE, None),
        Change("lag", "end", UPSERT, '{"end": true}'),
    ]
    # The client's copy: the re-list it made at the RESYNC, then the changes after it.
    copy = dict(relisted)
    for change in after:
        apply(copy, change)
    assert copy == relist(lister, "lag")
