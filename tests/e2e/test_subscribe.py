"""The change feed end to end: filters, sequences, resume, slow consumers and disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
from typing import Any

import grpclib.client
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.server.service import PACED_STREAMS
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    UPSERT,
    Event,
    GrpcioApi,
    GrpcioClient,
    delete,
    get,
    list_ids,
    put,
    status,
)
from tests.helpers.servers import StartServer
from tests.helpers.slow_consumers import (
    SLOW_SERVER_ARGS,
    assert_contiguous,
    assert_lag_logged,
    doc_id_of,
    padded,
    put_lag,
    write_until_stalled,
    write_while_stalled,
)
from tests.helpers.streams import (
    grpcio_subscription,
    grpclib_subscribe,
    open_grpclib_subscribe,
    recv_event,
    small_window_config,
    wait_for_subscribers,
    wait_for_subscribers_async,
)
from tests.helpers.waiting import CALL_TIMEOUT, run_scenario, within


def reconcile(
    events: list[Event], relists: list[dict[str, tuple[str, int]]]
) -> dict[str, tuple[str, int]]:
    """What a client that follows the stream believes: it applies each change, and on a
    RESYNC replaces its view with the re-list it made then (`relists`, in order), applying
    only changes newer than a document's listed sequence afterwards."""
    pending = list(relists)
    view: dict[str, tuple[str, int]] = {}
    for event in events:
        if event.is_resync:
            view = dict(pending.pop(0))
            continue
        if event.doc_id in view and view[event.doc_id][1] >= event.sequence:
            continue
        if event.change_type == DELETE:
            view.pop(event.doc_id, None)
        else:
            assert event.json_data is not None
            view[event.doc_id] = (event.json_data, event.sequence)
    assert not pending
    return view


def relist_with(client: GrpcioClient, collection: str) -> dict[str, tuple[str, int]]:
    view = {}
    for doc_id in list_ids(client, collection):
        json_data, sequence = get(client, collection, doc_id)
        if json_data is not None:
            view[doc_id] = (json_data, sequence)
    return view


# ---------------------------------------------------------------------------------------------
# Filters and sequences


def test_collection_filter(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    with (
        grpcio_subscription(client, collections=["a"]) as only_a,
        grpcio_subscription(client, collections=["a", "c"]) as a_and_c,
        grpcio_subscription(client, collections=[]) as everything,
    ):
        wait_for_subscribers(client, 3)
        writes: list[tuple[str, str, int, int]] = [
            ("b", "x", UPSERT, put(client, "b", "x", '{"v": 1}')),
            ("a", "1", UPSERT, put(client, "a", "1", '{"v": 2}')),
            ("c", "y", UPSERT, put(client, "c", "y", '{"v": 3}')),
            ("b", "x", DELETE, delete(client, "b", "x")),
            ("a", "1", DELETE, delete(client, "a", "1")),
            ("c", "w", UPSERT, put(client, "c", "w", '{"v": 4}')),
            ("b", "z", UPSERT, put(client, "b", "z", '{"v": 5}')),
            ("a", "end", UPSERT, put(client, "a", "end", "{}")),
        ]

        def received(subscription: Any) -> list[tuple[str, str, int, int]]:
            events = subscription.until(lambda event: event.doc_id == "end")
            return [(e.collection, e.doc_id, e.change_type, e.sequence) for e in events]

        assert received(only_a) == [w for w in writes if w[0] == "a"]
        assert received(a_and_c) == [w for w in writes if w[0] in ("a", "c")]
        assert received(everything) == writes


def test_every_event_has_a_strictly_increasing_sequence(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    with grpcio_subscription(client) as subscription:
        wait_for_subscribers(client, 1)
        # Concurrent writers, so the producer commits several changes per batch.
        futures = [
            client.stub.PutDocument.future(
                client.pb2.PutDocumentRequest(
                    collection=f"c{i % 3}", doc_id=f"d{i % 7}", json_data=f'{{"i": {i}}}'
                ),
                timeout=CALL_TIMEOUT,
            )
            for i in range(60)
        ]
        acked = sorted(future.result().sequence for future in futures)
        assert delete(client, "c0", "never-existed") == 0, "a no-op delete commits nothing"
        acked.append(delete(client, "c0", "d0"))
        events = subscription.take(len(acked))
    sequences = [event.sequence for event in events]
    assert all(sequence > 0 for sequence in sequences)
    assert all(a < b for a, b in itertools.pairwise(sequences))
    assert sequences == acked == list(range(1, 62))
    assert events[-1].change_type == DELETE
    assert events[-1].json_data is None
    assert all(event.change_type == UPSERT and event.json_data for event in events[:-1])


def test_sequences_continue_across_restart_with_the_same_epoch(
    server: ServerProcess, grpcio_api: GrpcioApi
) -> None:
    before = GrpcioClient(server.address, grpcio_api)
    try:
        acked = [put(before, "c", f"d{i}", f'{{"i": {i}}}') for i in range(5)]
        delete_sequence = delete(before, "c", "d0")
        first_status = status(before)
    finally:
        before.close()
    assert acked == [1, 2, 3, 4, 5]
    assert first_status["head_sequence"] == delete_sequence == 6

    server.restart()
    after = GrpcioClient(server.address, grpcio_api)
    try:
        restarted = status(after)
        assert restarted["epoch"] == first_status["epoch"]
        assert restarted["head_sequence"] == 6
        assert get(after, "c", "d4") == ('{"i": 4}', 5)
        assert get(after, "c", "d0") == (None, 0)
        with grpcio_subscription(after, since_sequence=6) as subscription:
            assert put(after, "c", "d0", '{"again": true}') == 7
            assert delete(after, "c", "d1") == 8
            events = subscription.take(2)
    finally:
        after.close()
    assert [(e.doc_id, e.change_type, e.sequence) for e in events] == [
        ("d0", UPSERT, 7),
        ("d1", DELETE, 8),
    ]


def test_since_sequence_replays_exactly_the_missed_events(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    with grpcio_subscription(client) as first:
        wait_for_subscribers(client, 1)
        for i in range(3):
            put(client, "a", f"d{i}", f'{{"i": {i}}}')
        seen = first.take(3)
    resume_at = seen[-1].sequence
    assert resume_at == 3
    wait_for_subscribers(client, 0)

    missed = [
        ("a", "d0", UPSERT, put(client, "a", "d0", '{"i": 10}')),
        ("b", "x", UPSERT, put(client, "b", "x", '{"b": 1}')),
        ("a", "d1", DELETE, delete(client, "a", "d1")),
        ("a", "d3", UPSERT, put(client, "a", "d3", '{"i": 3}')),
        ("b", "x", UPSERT, put(client, "b", "x", '{"b": 2}')),
    ]
    with (
        grpcio_subscription(client, since_sequence=resume_at) as resumed,
        grpcio_subscription(client, collections=["a"], since_sequence=resume_at) as filtered,
    ):
        replayed = resumed.take(len(missed))
        replayed_a = filtered.take(3)
        wait_for_subscribers(client, 2)
        live = put(client, "a", "live", "{}")
        after_handoff = resumed.next()
        after_handoff_a = filtered.next()

    def summary(events: list[Event]) -> list[tuple[str, str, int, int]]:
        return [(e.collection, e.doc_id, e.change_type, e.sequence) for e in events]

    assert summary(replayed) == missed
    assert summary(replayed_a) == [m for m in missed if m[0] == "a"]
    assert replayed[0].json_data == '{"i": 10}'
    assert replayed[2].json_data is None
    # The first live event follows the replay with neither gap nor duplicate.
    assert after_handoff.sequence == after_handoff_a.sequence == live == missed[-1][3] + 1


# ---------------------------------------------------------------------------------------------
# Slow consumers


async def wait_for_catch_up_floor(stub: pb.PeatSidecarStub, floor: int) -> None:
    """Asyncio-flavoured: wait until the retention task has purged the tombstones up to
    `floor` (it runs once a second with no retention)."""
    while True:
        if (await stub.get_status()).catch_up_floor >= floor:
            return
        await asyncio.sleep(0.05)


async def relist_async(stub: pb.PeatSidecarStub, collection: str) -> dict[str, tuple[str, int]]:
    """Asyncio-flavoured: every document of `collection` with its sequence."""
    view = {}
    listed = await stub.list_documents(pb.ListDocumentsRequest(collection=collection))
    for doc_id in listed.doc_ids:
        got = await stub.get_document(pb.GetDocumentRequest(collection=collection, doc_id=doc_id))
        if got.json_data is not None:
            view[doc_id] = (got.json_data, got.sequence)
    return view


def test_stalled_grpclib_subscriber_beyond_the_kept_history_gets_resync(
    start_server: StartServer,
) -> None:
    # With no tombstone retention, one delete after the stall leaves no catch-up possible.
    server = start_server(*SLOW_SERVER_ARGS, "--tombstone-retention", "0")

    async def scenario() -> tuple[list[Event], int, list[dict[str, tuple[str, int]]], Any]:
        # Writes and status go on their own channel: the stalled stream holds all of its
        # connection's flow-control window.
        writer = grpclib.client.Channel("127.0.0.1", server.port)
        reader = grpclib.client.Channel("127.0.0.1", server.port, config=small_window_config())
        stub = pb.PeatSidecarStub(writer, timeout=CALL_TIMEOUT)
        try:
            request = pb.SubscribeRequest(collections=["lag"], control_events=True)
            async with grpclib_subscribe(reader, request) as stream:
                await within(wait_for_subscribers_async(stub, 1))
                last_lag = await write_while_stalled(stub, server, padded(16 * 1024))
                await stub.put_document(
                    pb.PutDocumentRequest(collection="gone", doc_id="x", json_data="{}")
                )
                head = (
                    await stub.delete_document(
                        pb.DeleteDocumentRequest(collection="gone", doc_id="x")
                    )
                ).sequence
                await within(wait_for_catch_up_floor(stub, head))
                # The client re-lists on each RESYNC, then follows the stream.
                events: list[Event] = []
                relists: list[dict[str, tuple[str, int]]] = []
                while not (events and events[-1].is_resync and events[-1].sequence == head):
                    events.append(await recv_event(stream))
                    if events[-1].is_resync:
                        relists.append(await relist_async(stub, "lag"))
                tail = await put_lag(stub, head + 1, '{"tail": true}')
                events.append(await recv_event(stream))
                assert events[-1].sequence == tail
            return events, last_lag, relists, await relist_async(stub, "lag")
        finally:
            reader.close()
            writer.close()

    events, last_lag, relists, store = run_scenario(scenario)
    assert events[-2].is_resync
    assert events[-2].catch_up_floor == events[-2].sequence == events[-1].sequence - 1
    assert_lag_logged(server, events, start=0)
    assert sorted(store) == [doc_id_of(sequence) for sequence in range(1, last_lag + 1)] + [
        doc_id_of(events[-1].sequence)
    ]
    assert reconcile(events, relists) == store


def test_stalled_grpcio_subscriber_catches_up_from_the_store(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    server = start_server(*SLOW_SERVER_ARGS)
    writer = GrpcioClient(server.address, grpcio_api)
    reader = GrpcioClient(server.address, grpcio_api)
    document = padded(64 * 1024)
    try:
        with grpcio_subscription(reader, collections=["lag"]) as subscription:
            wait_for_subscribers(writer, 1)
            head = write_until_stalled(server, writer, document)
            described = status(writer)
            assert described["head_sequence"] == head
            assert described["lag_events"] >= 1, "the overflow is counted"
            assert described["replay_floor"] > 1, "the replay log no longer holds the start"
            events = subscription.until(
                lambda event: event.sequence == head and event.change_type == CATCH_UP_END
            )
            tail = put(writer, "lag", doc_id_of(head + 1), '{"tail": true}')
            events.append(subscription.next())
    finally:
        writer.close()
        reader.close()
    heals = assert_contiguous(events, start=0)
    assert heals
    assert all(heal.change_type == CATCH_UP_BEGIN for heal in heals)
    assert not [event for event in events if event.is_resync]
    assert events[-1].sequence == tail == head + 1
    assert_lag_logged(server, events, start=0)


def test_overflow_within_the_replay_log_heals_without_resync(start_server: StartServer) -> None:
    server = start_server("--broadcast-buffer-size", "4")

    async def scenario() -> tuple[list[Event], int]:
        writer = grpclib.client.Channel("127.0.0.1", server.port)
        reader = grpclib.client.Channel("127.0.0.1", server.port, config=small_window_config())
        stub = pb.PeatSidecarStub(writer, timeout=CALL_TIMEOUT)
        try:
            async with grpclib_subscribe(
                reader, pb.SubscribeRequest(collections=["lag"], control_events=True)
            ) as stream:
                await within(wait_for_subscribers_async(stub, 1))
                head = await write_while_stalled(stub, server, padded(16 * 1024))
                events = [await recv_event(stream) for _ in range(head)]
                tail = await put_lag(stub, head + 1, '{"tail": true}')
                events.append(await recv_event(stream))
                assert events[-1].sequence == tail
            return events, head
        finally:
            reader.close()
            writer.close()

    events, head = run_scenario(scenario)
    assert not [event for event in events if event.is_resync]
    assert [event.sequence for event in events] == list(range(1, head + 2))
    assert_contiguous(events, start=0)
    assert re.search(
        r"subscriber #\d+ \([^)]*\) \(collections: lag\) lagged and missed \d+ events:"
        r" sequences \d+\.\.\d+, doc_ids 'd\d+'\.\.'d\d+'; replaying them from the replay log",
        server.log,
    ), server.log


# ---------------------------------------------------------------------------------------------
# Disconnects


def test_disconnected_subscribers_are_cleaned_up(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    client = grpcio_client
    # An idle subscriber that cancels.
    with grpcio_subscription(client, collections=["a"]):
        wait_for_subscribers(client, 1)
    wait_for_subscribers(client, 0)

    # A stalled subscriber, its server-side send blocked on flow control, whose connection
    # goes away.
    async def stall_then_vanish() -> None:
        reader = grpclib.client.Channel("127.0.0.1", server.port, config=small_window_config())
        await open_grpclib_subscribe(
            reader, pb.SubscribeRequest(collections=["big"], control_events=True)
        )
        await within(asyncio.to_thread(wait_for_subscribers, client, 1))
        for i in range(12):
            await asyncio.to_thread(put, client, "big", f"d{i}", padded(16 * 1024))
        # Closing the channel drops the connection with the stream still open.
        reader.close()

    run_scenario(stall_then_vanish)
    wait_for_subscribers(client, 0)
    server.wait_for_log(r"subscriber #2 \([^)]*\) closed at sequence")

    # The server keeps serving.
    sequence = put(client, "a", "after", '{"ok": true}')
    assert get(client, "a", "after") == ('{"ok": true}', sequence)
    with grpcio_subscription(client, since_sequence=sequence - 1) as subscription:
        assert subscription.next().sequence == sequence


@pytest.mark.parametrize("subscribers", [1, PACED_STREAMS + 1])
def test_paced_and_frame_sharing_streams_deliver_the_same(
    grpcio_client: GrpcioClient, subscribers: int
) -> None:
    """Up to PACED_STREAMS subscribers, each message is a write of its own; beyond, messages
    share HTTP/2 frames (and cross frame boundaries). Each subscriber replays 600 documents
    of 200+ bytes, several chunks' worth, exactly either way."""
    client = grpcio_client
    count = 600
    padding = "x" * 200
    for number in range(count):
        put(client, "a", doc_id_of(number), json.dumps({"n": number, "padding": padding}))
    subscriptions = [
        grpcio_subscription(client, collections=["a"], since_sequence=0) for _ in range(subscribers)
    ]
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(subscription) for subscription in subscriptions]
        wait_for_subscribers(client, subscribers)
        for subscription in opened:
            events = subscription.take(count)
            assert [event.sequence for event in events] == list(range(1, count + 1))
            assert [event.doc_id for event in events] == [doc_id_of(n) for n in range(count)]
            assert [json.loads(event.json_data or "") for event in events] == [
                {"n": n, "padding": padding} for n in range(count)
            ]
