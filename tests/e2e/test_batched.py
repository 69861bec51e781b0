"""The batched RPCs end to end, with the official grpcio client.

SubscribeBatched is Subscribe with many events per message: each stream here is compared,
event by event, with a Subscribe stream of the same request, and its messages are measured on
the wire. WriteDocuments commits many puts and deletes at once: in order, all or none, durably.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.server.service import BATCH_MESSAGE_BYTES
from peat_sync.wire import SUBSCRIBE_BATCHED
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    HEARTBEAT,
    RESYNC,
    SNAPSHOT_BEGIN,
    UPSERT,
    Event,
    GrpcioApi,
    GrpcioClient,
    delete,
    failure_of,
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
    write_until_stalled,
)
from tests.helpers.streams import GrpcioSubscription, grpcio_subscription, wait_for_subscribers

# The deadline of every stream here: far more than any of these tests takes.
STREAM_DEADLINE = 20.0
# Idle heartbeats come at times of their own, different on every stream: none comes during a
# test, so two streams of the same request must be equal event for event.
QUIET = ("--heartbeat-interval", "1m")
UNKNOWN_EPOCH = pb.ResyncReason.UNKNOWN_EPOCH.value
SEQUENCE_AHEAD = pb.ResyncReason.SEQUENCE_AHEAD.value
MAX_WRITES = 10_000

# (collection, doc_id, json_data); json_data None deletes the document.
Write = tuple[str, str, str | None]


# ---------------------------------------------------------------------------------------------
# SubscribeBatched, read like Subscribe


@dataclass(frozen=True)
class BatchMessage:
    """One DocumentChangeBatch as it arrived: its size on the wire, its events, and the
    bytes each of them takes in it (the event and its framing as an entry of `changes`)."""

    size: int
    events: list[Event]
    entry_sizes: list[int]


class GrpcioBatchedSubscription(GrpcioSubscription):
    """A grpcio SubscribeBatched stream, read like `GrpcioSubscription`: one event at a time,
    the batches flattened. `messages` keeps every message received so far."""

    def __init__(
        self, client: GrpcioClient, timeout: float = STREAM_DEADLINE, **request: Any
    ) -> None:
        pb2 = client.pb2

        def decode(raw: bytes) -> BatchMessage:
            changes = pb2.DocumentChangeBatch.FromString(raw).changes
            return BatchMessage(
                len(raw),
                [Event.from_grpcio(change) for change in changes],
                [pb2.DocumentChangeBatch(changes=[change]).ByteSize() for change in changes],
            )

        # The generic call, to see each message's bytes before they are decoded.
        subscribe_batched = client.channel.unary_stream(
            SUBSCRIBE_BATCHED,
            request_serializer=pb2.SubscribeRequest.SerializeToString,
            response_deserializer=decode,
        )
        self.call = subscribe_batched(
            pb2.SubscribeRequest(control_events=True, **request), timeout=timeout
        )
        self.messages: list[BatchMessage] = []
        self._unread: deque[Event] = deque()

    def next(self, *, heartbeats: bool = False) -> Event:
        while True:
            while not self._unread:
                message: BatchMessage = next(self.call)
                assert message.events, "a SubscribeBatched message without events"
                self.messages.append(message)
                self._unread.extend(message.events)
            event = self._unread.popleft()
            if heartbeats or not event.is_heartbeat:
                return event


@contextmanager
def batched_subscription(
    client: GrpcioClient, **request: Any
) -> Iterator[GrpcioBatchedSubscription]:
    subscription = GrpcioBatchedSubscription(client, **request)
    try:
        yield subscription
    finally:
        subscription.cancel()


@dataclass
class Pair:
    """A Subscribe and a SubscribeBatched stream of the same request, and what each read."""

    request: dict[str, Any]
    plain: GrpcioSubscription
    batched: GrpcioBatchedSubscription
    plain_events: list[Event]
    batched_events: list[Event]

    def read(self, stop: Callable[[Event], bool]) -> None:
        """Read both streams up to and including the first event for which `stop` is true."""
        self.plain_events += self.plain.until(stop, heartbeats=True)
        self.batched_events += self.batched.until(stop, heartbeats=True)


def open_pairs(
    stack: ExitStack, client: GrpcioClient, requests: list[dict[str, Any]]
) -> list[Pair]:
    """A pair of streams per request, each past its opening: the opening control event, and
    the whole store read (snapshot or catch-up) when one follows.

    Waiting for the store reads to end before anything more is written keeps both streams
    deterministic: a document written during a store read may come once or twice."""
    pairs = [
        Pair(
            request,
            stack.enter_context(grpcio_subscription(client, STREAM_DEADLINE, **request)),
            stack.enter_context(batched_subscription(client, **request)),
            [],
            [],
        )
        for request in requests
    ]
    wait_for_subscribers(client, 2 * len(pairs))
    for pair in pairs:
        pair.read(lambda event: True)
        opening = pair.plain_events[0]
        store_read = opening.change_type in (SNAPSHOT_BEGIN, CATCH_UP_BEGIN) or (
            opening.is_resync and pair.request.get("snapshot", False)
        )
        if store_read:
            pair.read(lambda event: event.change_type == CATCH_UP_END)
    return pairs


def read_live_and_compare(pairs: list[Pair], live: list[tuple[str, int]]) -> None:
    """Read each pair until the last of the `live` (collection, sequence) changes its
    collections get, and check that both streams delivered the same events in the same
    order, and that the live changes are among them."""
    for pair in pairs:
        wanted = pair.request.get("collections") or {collection for collection, _ in live}
        expected = [sequence for collection, sequence in live if collection in wanted]
        pair.read(functools.partial(reaches_change, expected[-1]))
        assert pair.batched_events == pair.plain_events, pair.request
        data = [e.sequence for e in pair.plain_events if e.change_type in (UPSERT, DELETE)]
        assert data[-len(expected) :] == expected, (pair.request, pair.plain_events)


def reaches_change(sequence: int, event: Event) -> bool:
    """Whether `event` is a change (or the end of a store read) at `sequence` or later."""
    return event.sequence >= sequence and not event.is_heartbeat


def opening_of(pair: Pair) -> tuple[int, int]:
    """The change type and resync reason the streams of `pair` opened with."""
    opening = pair.plain_events[0]
    return opening.change_type, opening.resync_reason


# ---------------------------------------------------------------------------------------------
# WriteDocuments


def document_write(client: GrpcioClient, write: Write) -> Any:
    collection, doc_id, json_data = write
    return client.message(
        "DocumentWrite", {"collection": collection, "doc_id": doc_id, "json_data": json_data}
    )


def write_documents(client: GrpcioClient, writes: list[Write]) -> list[int]:
    """Commit `writes` with one WriteDocuments; the sequence of each."""
    response = client.call(
        "WriteDocuments", writes=[document_write(client, write) for write in writes]
    )
    sequences: list[int] = response["sequences"]
    return sequences


def write_live(client: GrpcioClient) -> list[tuple[str, int]]:
    """Changes to `a` and `b` made one at a time and in one WriteDocuments, ending with `b`:
    (collection, sequence) of each."""
    live = [
        ("a", put(client, "a", "live1", '{"live": 1}')),
        ("b", put(client, "b", "live2", '{"live": 2}')),
        ("a", delete(client, "a", "live1")),
    ]
    batch: list[Write] = [("a", "w1", '{"w": 1}'), ("b", "w2", '{"w": 2}'), ("a", "w1", None)]
    live += [(c, s) for (c, _, _), s in zip(batch, write_documents(client, batch), strict=True)]
    live.append(("b", put(client, "b", "last", "{}")))
    return live


def write_history(client: GrpcioClient) -> int:
    """Puts, overwrites and deletes in `a` and `b`; returns the head."""
    put(client, "a", "1", '{"v": 1}')
    put(client, "b", "1", '{"v": 2}')
    put(client, "a", "2", '{"v": 3}')
    delete(client, "a", "2")
    put(client, "a", "1", '{"v": 5}')
    put(client, "b", "2", '{"v": 6}')
    write_documents(client, [("a", "3", '{"v": 7}'), ("b", "1", None), ("a", "1", '{"v": 9}')])
    head: int = status(client)["head_sequence"]
    assert head == 9
    return head


# ---------------------------------------------------------------------------------------------
# SubscribeBatched delivers what Subscribe delivers


def test_batched_stream_equals_subscribe_for_every_kind_of_opening(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """For the same request, SubscribeBatched flattened is Subscribe event for event: live
    with its opening HEARTBEAT at the head, a filter, a replay from a since (with and without
    its epoch), a snapshot (SNAPSHOT_BEGIN ... CATCH_UP_END) with and without a filter, and
    each RESYNC of a bad position (unknown epoch, since ahead of the head), followed by a
    snapshot when asked; then the same live changes, single and batched, on every stream."""
    server = start_server(*QUIET)
    client = GrpcioClient(server.address, grpcio_api)
    try:
        head = write_history(client)
        epoch = status(client)["epoch"]
        cases: list[tuple[dict[str, Any], tuple[int, int]]] = [
            ({}, (HEARTBEAT, 0)),
            ({"collections": ["a"]}, (HEARTBEAT, 0)),
            ({"since_sequence": 0}, (HEARTBEAT, 0)),
            ({"since_sequence": 3, "epoch": epoch, "collections": ["b"]}, (HEARTBEAT, 0)),
            ({"snapshot": True}, (SNAPSHOT_BEGIN, 0)),
            ({"snapshot": True, "collections": ["a"]}, (SNAPSHOT_BEGIN, 0)),
            ({"since_sequence": 3, "epoch": "not-this-store"}, (RESYNC, UNKNOWN_EPOCH)),
            ({"since_sequence": head + 5}, (RESYNC, SEQUENCE_AHEAD)),
            ({"since_sequence": head + 5, "snapshot": True}, (RESYNC, SEQUENCE_AHEAD)),
        ]
        with ExitStack() as stack:
            pairs = open_pairs(stack, client, [request for request, _ in cases])
            assert [opening_of(pair) for pair in pairs] == [opening for _, opening in cases]
            read_live_and_compare(pairs, write_live(client))
        # The cases are what they claim to be: a live stream opens at the head, the replay
        # from 0 replays the whole history, and the snapshot after a RESYNC follows it.
        assert pairs[0].plain_events[0].sequence == head
        assert [e.sequence for e in pairs[2].plain_events[1 : head + 1]] == list(range(1, head + 1))
        assert pairs[8].plain_events[1].change_type == SNAPSHOT_BEGIN
    finally:
        client.close()


def test_batched_stream_equals_subscribe_in_a_catch_up_after_a_restart(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """Across a restart, SubscribeBatched is Subscribe event for event: both end with the same
    UNAVAILABLE status naming the resume point; then, the replay log being empty, a resume
    from an older since is the same catch-up (CATCH_UP_BEGIN ... CATCH_UP_END, with a filter,
    with snapshot=true), a since at the head the same opening HEARTBEAT, and a snapshot the
    same snapshot; then the same live changes."""
    server = start_server(*QUIET)
    client = GrpcioClient(server.address, grpcio_api)
    try:
        head = write_history(client)
        with ExitStack() as stack:
            (pair,) = open_pairs(stack, client, [{}])
            server.restart()
            ends = []
            for stream in (pair.plain, pair.batched):
                with pytest.raises(grpc.RpcError) as ended:
                    stream.next(heartbeats=True)
                ends.append((ended.value.code(), ended.value.details()))
        assert ends[0] == ends[1]
        assert ends[0][0] == grpc.StatusCode.UNAVAILABLE
        assert f"resubscribe with since_sequence={head}" in ends[0][1]
    finally:
        client.close()

    client = GrpcioClient(server.address, grpcio_api)
    try:
        cases: list[tuple[dict[str, Any], int]] = [
            ({"since_sequence": 2}, CATCH_UP_BEGIN),
            ({"since_sequence": 0, "collections": ["a"]}, CATCH_UP_BEGIN),
            ({"since_sequence": 4, "snapshot": True}, CATCH_UP_BEGIN),
            ({"since_sequence": head}, HEARTBEAT),
            ({"snapshot": True, "collections": ["b"]}, SNAPSHOT_BEGIN),
        ]
        with ExitStack() as stack:
            pairs = open_pairs(stack, client, [request for request, _ in cases])
            assert [opening_of(pair)[0] for pair in pairs] == [opening for _, opening in cases]
            read_live_and_compare(pairs, write_live(client))
        # The catch-up from 2 skips intermediate states and includes the delete of a/2.
        catch_up = [(e.collection, e.doc_id, e.change_type) for e in pairs[0].plain_events]
        assert catch_up[: catch_up.index(("", "", CATCH_UP_END)) + 1] == [
            ("", "", CATCH_UP_BEGIN),
            ("a", "2", DELETE),
            ("b", "2", UPSERT),
            ("a", "3", UPSERT),
            ("b", "1", DELETE),
            ("a", "1", UPSERT),
            ("", "", CATCH_UP_END),
        ]
    finally:
        client.close()


def test_idle_batched_stream_gets_heartbeats_advancing_to_the_head(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """An idle SubscribeBatched stream of a quiet collection gets Subscribe's heartbeats: one
    at its opening, then one per interval at the newest change the feed has handled."""
    server = start_server("--heartbeat-interval", "200ms")
    client = GrpcioClient(server.address, grpcio_api)
    try:
        with batched_subscription(client, collections=["quiet"]) as subscription:
            assert subscription.next(heartbeats=True).sequence == 0
            head = write_documents(client, [("busy", "x", "{}"), ("busy", "y", "{}")])[-1]
            heartbeats = subscription.until(lambda event: event.sequence == head, heartbeats=True)
        assert all(event.is_heartbeat for event in heartbeats), heartbeats
    finally:
        client.close()


# ---------------------------------------------------------------------------------------------
# Batching and the size of a message


def test_many_events_arrive_in_few_messages(grpcio_client: GrpcioClient) -> None:
    """A WriteDocuments of 1,000 writes, more than a subscriber's buffer of 256, reaches a
    live Subscribe and a live SubscribeBatched as exactly its events, in commit order; and a
    replay of them arrives in far fewer messages than events."""
    client = grpcio_client
    writes: list[Write] = [("c", f"d{i % 300}", f'{{"i": {i}}}') for i in range(1000)]
    with (
        grpcio_subscription(client, STREAM_DEADLINE) as plain,
        batched_subscription(client) as live,
    ):
        wait_for_subscribers(client, 2)
        sequences = write_documents(client, writes)
        assert sequences == list(range(1, 1001))
        expected = [
            Event(c, d, UPSERT, j, s) for (c, d, j), s in zip(writes, sequences, strict=True)
        ]
        assert plain.take(1000) == live.take(1000) == expected
    with batched_subscription(client, since_sequence=0) as replay:
        assert replay.take(1000) == expected
    # Whatever the server's batch size, at least 100 events per message on average.
    assert len(replay.messages) <= 10, [len(m.events) for m in replay.messages]


def test_messages_stay_within_the_bound_and_a_larger_event_comes_alone(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """A replay of ~300 KB documents comes in messages filled up to BATCH_MESSAGE_BYTES
    (three such documents, never four), no message exceeds the bound by more than one event,
    a document whose event is larger than the bound comes alone in its message, and every
    event arrives, in order, across the splits."""
    # Raised above the default 1 MiB, so that one document's event clearly exceeds the bound.
    server = start_server("--max-document-bytes", "1536KiB", *QUIET)
    client = GrpcioClient(server.address, grpcio_api)
    large, huge = 300_000, 1_200_000
    sizes = [10, large, large, large, large, huge, large, large, 10, 10, large, large, large, 10]
    try:
        written = [
            Event("big", f"d{i}", UPSERT, padded(size), put(client, "big", f"d{i}", padded(size)))
            for i, size in enumerate(sizes)
        ]
        with batched_subscription(client, since_sequence=0) as replay:
            assert replay.take(len(written)) == written
    finally:
        client.close()

    messages = replay.messages
    for message in messages:
        assert sum(message.entry_sizes) == message.size
        # Only the event that crosses the bound may take a message beyond it.
        assert message.size - message.entry_sizes[-1] <= BATCH_MESSAGE_BYTES, message.entry_sizes
        if max(message.entry_sizes) > BATCH_MESSAGE_BYTES:
            assert len(message.events) == 1, message.entry_sizes
    assert [len(m.events) for m in messages if m.events[0].doc_id == "d5"] == [1]
    large_per_message = [sum(size > large for size in m.entry_sizes) for m in messages]
    assert max(large_per_message) == 3, [m.entry_sizes for m in messages]


# ---------------------------------------------------------------------------------------------
# A stalled reader


def test_stalled_batched_reader_catches_up_from_the_store(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """A SubscribeBatched reader that stops reading heals like a Subscribe one: its buffer
    overflows, and when it reads again it gets what it had, a catch-up from the store
    (CATCH_UP_BEGIN ... CATCH_UP_END) for what the replay log no longer holds, then live
    changes, with no gap, no duplicate and no RESYNC."""
    server = start_server(*SLOW_SERVER_ARGS)
    writer = GrpcioClient(server.address, grpcio_api)
    reader = GrpcioClient(server.address, grpcio_api)
    document = padded(256 * 1024)
    try:
        with batched_subscription(reader, collections=["lag"]) as subscription:
            wait_for_subscribers(writer, 1)
            head = write_until_stalled(server, writer, document)
            assert status(writer)["lag_events"] >= 1
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
    assert all(heal.change_type == CATCH_UP_BEGIN for heal in heals), heals
    assert events[-1].sequence == tail == head + 1
    assert_lag_logged(server, events, start=0)
    assert any(len(message.events) > 1 for message in subscription.messages)


# ---------------------------------------------------------------------------------------------
# WriteDocuments


def test_write_documents_commits_in_order_and_publishes_ordinary_events(
    grpcio_client: GrpcioClient,
) -> None:
    """WriteDocuments gives each write its sequence, in order, and 0 to the delete of a
    document that does not exist; a later write to the same document wins; and subscribers,
    Subscribe and SubscribeBatched, filtered or not, get the changes in commit order as
    ordinary UPSERT and DELETE events, with nothing for the delete of nothing."""
    client = grpcio_client
    before = put(client, "a", "old", '{"old": true}')
    writes: list[Write] = [
        ("a", "1", '{"v": 1}'),
        ("b", "1", '{"v": 2}'),
        ("a", "nothing", None),
        ("a", "1", '{"v": 3}'),
        ("a", "old", None),
        ("b", "1", None),
        ("b", "1", '{"v": 4}'),
    ]
    with (
        grpcio_subscription(client, STREAM_DEADLINE) as plain,
        batched_subscription(client) as batched,
        batched_subscription(client, collections=["b"]) as only_b,
    ):
        wait_for_subscribers(client, 3)
        sequences = write_documents(client, writes)
        h = before
        assert sequences == [h + 1, h + 2, 0, h + 3, h + 4, h + 5, h + 6]
        expected = [
            Event(collection, doc_id, UPSERT if json_data else DELETE, json_data, sequence)
            for (collection, doc_id, json_data), sequence in zip(writes, sequences, strict=True)
            if sequence
        ]
        assert plain.take(6) == batched.take(6) == expected
        assert only_b.take(3) == [event for event in expected if event.collection == "b"]
    assert status(client)["head_sequence"] == h + 6
    assert get(client, "a", "1") == ('{"v": 3}', h + 3)
    assert get(client, "b", "1") == ('{"v": 4}', h + 6)
    assert get(client, "a", "old") == (None, 0)
    assert list_ids(client, "a") == ["1"]


def test_an_empty_write_documents_commits_nothing(grpcio_client: GrpcioClient) -> None:
    """An empty WriteDocuments succeeds with no sequences, and commits and publishes
    nothing."""
    client = grpcio_client
    head = put(client, "a", "x", "{}")
    with batched_subscription(client) as subscription:
        wait_for_subscribers(client, 1)
        assert write_documents(client, []) == []
        assert status(client)["head_sequence"] == head
        after = put(client, "a", "after", "{}")
        assert subscription.next().sequence == after == head + 1


BAD_WRITES: list[tuple[Write, str, str]] = [
    (("", "d", "{}"), "INVALID_ARGUMENT", "collection must not be empty"),
    (("a", "", "{}"), "INVALID_ARGUMENT", "doc_id must not be empty"),
    (("a", "d\n", "{}"), "INVALID_ARGUMENT", "doc_id must not contain control characters"),
    (("a", "d", "{not json"), "INVALID_ARGUMENT", "json_data is not valid JSON"),
    (("a", "d", "[1, 2]"), "INVALID_ARGUMENT", "json_data must be a JSON object"),
    (("a", "d", padded(2 * 1024 * 1024)), "RESOURCE_EXHAUSTED", "the limit is 1048576 bytes"),
]


def test_a_bad_write_fails_the_whole_request_and_names_its_index(
    grpcio_client: GrpcioClient,
) -> None:
    """A bad write at index i fails the whole WriteDocuments with INVALID_ARGUMENT (or
    RESOURCE_EXHAUSTED for a document over the size limit) and `writes[i]: ...`: the head does
    not move, none of the writes before or after it is stored, and no event is published."""
    client = grpcio_client
    head = put(client, "a", "kept", '{"kept": true}')
    good: list[Write] = [("a", "g1", "{}"), ("a", "kept", None), ("b", "g2", "{}")]
    with batched_subscription(client) as subscription:
        wait_for_subscribers(client, 1)
        for case, (bad, code, reason) in enumerate(BAD_WRITES):
            index = case % (len(good) + 1)  # the bad write first, between, and last
            writes = [*good[:index], bad, *good[index:]]
            failure = failure_of(
                client, "WriteDocuments", writes=[document_write(client, w) for w in writes]
            )
            assert failure.code == code, (bad[:2], failure)
            assert failure.message.startswith(f"writes[{index}]: "), failure
            assert reason in failure.message, failure
        assert status(client)["head_sequence"] == head
        assert list_ids(client, "a") == ["kept"]
        assert list_ids(client, "b") == []
        after = put(client, "a", "after", "{}")
        assert subscription.next().sequence == after == head + 1


def test_more_than_10000_writes_are_refused_and_10000_accepted(
    grpcio_client: GrpcioClient,
) -> None:
    """10,001 writes fail with RESOURCE_EXHAUSTED, a message saying the limit and to split
    them, and nothing committed; 10,000 writes commit, one sequence each."""
    client = grpcio_client
    writes = [document_write(client, ("c", f"d{i}", "{}")) for i in range(MAX_WRITES + 1)]
    failure = failure_of(client, "WriteDocuments", writes=writes)
    assert failure.code == "RESOURCE_EXHAUSTED", failure
    assert "10001 writes" in failure.message, failure
    assert "the limit is 10000" in failure.message, failure
    assert "split" in failure.message, failure
    assert status(client)["head_sequence"] == 0
    sequences = client.call("WriteDocuments", writes=writes[:MAX_WRITES])["sequences"]
    assert sequences == list(range(1, MAX_WRITES + 1))


def test_acknowledged_write_documents_survive_kill_9(
    server: ServerProcess, grpcio_api: GrpcioApi
) -> None:
    """Every acknowledged WriteDocuments is durable: after kill -9 and a restart on the same
    data dir, the store holds exactly its puts and deletes, at their sequences."""
    client = GrpcioClient(server.address, grpcio_api)
    expected: dict[str, tuple[str, int]] = {}
    try:
        for round_ in range(5):
            writes: list[Write] = [
                ("c", f"d{(round_ * 7 + i) % 30}", f'{{"r": {round_}, "i": {i}}}')
                for i in range(200)
            ]
            writes += [("c", f"d{round_}", None)]
            for (_, doc_id, json_data), sequence in zip(
                writes, write_documents(client, writes), strict=True
            ):
                if json_data is None:
                    expected.pop(doc_id, None)
                else:
                    expected[doc_id] = (json_data, sequence)
        head = status(client)["head_sequence"]
    finally:
        client.close()
    server.kill()
    server.start()
    client = GrpcioClient(server.address, grpcio_api)
    try:
        assert status(client)["head_sequence"] == head
        stored = {doc_id: get(client, "c", doc_id) for doc_id in list_ids(client, "c")}
        assert stored == expected
    finally:
        client.close()


def test_a_prompt_reader_sees_every_write_of_a_large_write_documents(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """A subscriber that reads promptly sees every write of one WriteDocuments, every
    intermediate state included, however many writes it holds (here 1,000 successive states
    of one command: more than the subscriber's buffer of 256, and than a replay log of 500)."""
    server = start_server("--replay-log-size", "500", *QUIET)
    client = GrpcioClient(server.address, grpcio_api)
    try:
        with batched_subscription(client) as subscription:
            assert subscription.next(heartbeats=True).change_type == HEARTBEAT
            writes: list[Write] = [("commands", "c1", f'{{"state": {i}}}') for i in range(1000)]
            sequences = write_documents(client, writes)
            events = subscription.until(lambda event: event.sequence == sequences[-1])
        assert [(e.change_type, e.sequence) for e in events] == [(UPSERT, s) for s in sequences]
        assert status(client)["lag_events"] == 0
    finally:
        client.close()
