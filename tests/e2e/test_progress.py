"""Progress on the change feed end to end: heartbeats, snapshots, and tombstone retention.

The Subscribe streams are read by the parametrized client (grpclib, then grpcio), each on its
own connection, with a bound on the wait for each event; writes and GetStatus go through the
facade client of the same kind. Heavier writers use grpcio futures, so that the server
batches their commits.
"""

from __future__ import annotations

import itertools
import json
import queue
import random
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.server.service import SEND_BATCH
from tests.helpers.cli import assert_one_line_error, help_entries, run_cli
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    HEARTBEAT,
    RESYNC,
    SNAPSHOT_BEGIN,
    UPSERT,
    Client,
    Event,
    GrpcioApi,
    GrpcioClient,
    delete,
    list_ids,
    put,
    status,
)
from tests.helpers.copies import View, apply
from tests.helpers.servers import StartServer
from tests.helpers.streams import GrpclibStream
from tests.helpers.waiting import CALL_TIMEOUT, STREAM_TIMEOUT, wait_until

# Every committed change by sequence: (collection, doc_id, json_data or None for a delete).
History = dict[int, tuple[str, str, str | None]]

HEARTBEAT_INTERVAL = "0.2s"
# The longest wait for one heartbeat at that interval: 25 intervals, for a loaded machine.
HEARTBEAT_WAIT = 5.0
HISTORY_COMPACTED = pb.ResyncReason.HISTORY_COMPACTED.value
UNKNOWN_EPOCH = pb.ResyncReason.UNKNOWN_EPOCH.value
SEQUENCE_AHEAD = pb.ResyncReason.SEQUENCE_AHEAD.value


# ---------------------------------------------------------------------------------------------
# Subscribe streams of both clients, read from sync code with a bound on each event


class Stream(Protocol):
    def next(self, *, heartbeats: bool = False, seconds: float = CALL_TIMEOUT) -> Event:
        """The next event (heartbeats skipped unless asked for); fails when none comes
        within `seconds`."""


class GrpcioStream:
    """A grpcio Subscribe stream on a channel of its own. A thread drains it into a queue, so
    that each wait for an event can have its own bound."""

    _ENDED = object()

    def __init__(self, address: str, api: GrpcioApi, request: dict[str, Any]) -> None:
        self._client = GrpcioClient(address, api)
        self._call = self._client.stub.Subscribe(
            self._client.pb2.SubscribeRequest(control_events=True, **request),
            timeout=STREAM_TIMEOUT,
        )
        self._events: queue.Queue[Any] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            for change in self._call:
                self._events.put(Event.from_grpcio(change))
        except grpc.RpcError as exc:
            self._events.put(exc)
        self._events.put(self._ENDED)

    def next(self, *, heartbeats: bool = False, seconds: float = CALL_TIMEOUT) -> Event:
        while True:
            try:
                item = self._events.get(timeout=seconds)
            except queue.Empty:
                raise AssertionError(f"no event within {seconds} s") from None
            if isinstance(item, Exception):
                raise item
            assert item is not self._ENDED, "the Subscribe stream ended"
            assert isinstance(item, Event)
            if heartbeats or not item.is_heartbeat:
                return item

    def close(self) -> None:
        self._call.cancel()
        self._reader.join(CALL_TIMEOUT)
        self._client.close()


class Subscribe(Protocol):
    def __call__(self, server: ServerProcess, **request: Any) -> AbstractContextManager[Stream]:
        """A Subscribe stream to `server` with the SubscribeRequest fields `request`."""


@pytest.fixture
def subscribe(client_kind: str, grpcio_api: GrpcioApi) -> Subscribe:
    """Open Subscribe streams with the parametrized client (the same kind as `connect_client`
    gives)."""

    @contextmanager
    def open_stream(server: ServerProcess, **request: Any) -> Iterator[Stream]:
        stream: GrpclibStream | GrpcioStream
        if client_kind == "grpclib":
            stream = GrpclibStream(server.port, pb.SubscribeRequest(control_events=True, **request))
        else:
            stream = GrpcioStream(server.address, grpcio_api, request)
        try:
            yield stream
        finally:
            stream.close()

    return open_stream


def await_heartbeat(stream: Stream) -> Event:
    """The next event of an idle stream: a heartbeat, within a generous bound."""
    return stream.next(heartbeats=True, seconds=HEARTBEAT_WAIT)


def next_change(stream: Stream) -> Event:
    """The next UPSERT or DELETE, past any heartbeats. A heartbeat says every change up to its
    sequence was delivered, so none of them may report the change's sequence or later."""
    delivered_to = -1
    while (event := stream.next(heartbeats=True)).is_heartbeat:
        delivered_to = event.sequence
    assert event.change_type in (UPSERT, DELETE), event
    assert event.sequence > delivered_to, f"a heartbeat at {delivered_to} came before {event}"
    return event


def changes_until(stream: Stream, sequence: int) -> list[Event]:
    """The UPSERT and DELETE events up to and including the one at `sequence`."""
    changes = [next_change(stream)]
    while changes[-1].sequence < sequence:
        changes.append(next_change(stream))
    assert changes[-1].sequence == sequence, f"no change at sequence {sequence}: {changes}"
    return changes


def summary(events: Iterable[Event]) -> list[tuple[int, str, str, int]]:
    return [(e.change_type, e.collection, e.doc_id, e.sequence) for e in events]


def control(event: Event) -> tuple[int, int, str, int, int]:
    """What a control event reports: type, sequence, epoch and floors."""
    return (
        event.change_type,
        event.sequence,
        event.epoch,
        event.replay_floor,
        event.catch_up_floor,
    )


def reported(client: Client, change_type: int, sequence: int) -> tuple[int, int, str, int, int]:
    """The control event `change_type` at `sequence`, with the epoch and floors GetStatus
    reports now."""
    now = status(client)
    return (change_type, sequence, now["epoch"], now["replay_floor"], now["catch_up_floor"])


def wait_for_catch_up_floor(client: Client, floor: int) -> dict[str, Any]:
    """Poll GetStatus until the retention task has purged the tombstones up to `floor`."""
    return wait_until(
        lambda: (response := status(client))["catch_up_floor"] == floor and response,
        what=f"catch_up_floor {floor}",
    )


def commit_all(client: GrpcioClient, changes: list[tuple[str, str, str | None]]) -> History:
    """Commit `changes` concurrently (so the server batches them); returns them by sequence."""
    futures = [
        client.stub.PutDocument.future(
            client.pb2.PutDocumentRequest(collection=c, doc_id=doc_id, json_data=json_data),
            timeout=CALL_TIMEOUT,
        )
        if json_data is not None
        else client.stub.DeleteDocument.future(
            client.pb2.DeleteDocumentRequest(collection=c, doc_id=doc_id), timeout=CALL_TIMEOUT
        )
        for c, doc_id, json_data in changes
    ]
    return {
        future.result().sequence: change for change, future in zip(changes, futures, strict=True)
    }


# ---------------------------------------------------------------------------------------------
# Heartbeats


def test_stream_opens_with_a_heartbeat_at_its_start_and_repeats_it_when_idle(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """A stream without since opens with a HEARTBEAT at the head, one with since at since;
    an idle stream then gets a HEARTBEAT within a bounded wait, again and again, each at the
    head with the store's epoch and both floors."""
    server = start_server(
        "--heartbeat-interval",
        HEARTBEAT_INTERVAL,
        # Small enough that the replay floor moves, and deletes are purged at once, so that
        # both floors the heartbeats carry are non-zero.
        "--replay-log-size",
        "2",
        "--tombstone-retention",
        "0",
    )
    client = connect_client(server)
    put(client, "a", "d1", "{}")
    put(client, "a", "d2", "{}")
    delete(client, "a", "d1")
    put(client, "a", "d3", "{}")
    head = put(client, "a", "d4", "{}")
    described = wait_for_catch_up_floor(client, 3)
    assert (described["head_sequence"], described["replay_floor"]) == (head, 3)

    with subscribe(server) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, HEARTBEAT, head)
        for _ in range(3):
            assert control(await_heartbeat(stream)) == reported(client, HEARTBEAT, head)

    with subscribe(server, since_sequence=3) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, HEARTBEAT, 3)
        assert summary([stream.next(heartbeats=True), stream.next(heartbeats=True)]) == [
            (UPSERT, "a", "d3", 4),
            (UPSERT, "a", "d4", 5),
        ]
        assert control(await_heartbeat(stream)) == reported(client, HEARTBEAT, head)


def test_heartbeats_of_a_quiet_collection_advance_to_the_head(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """A subscriber of a quiet collection, while another collection gets writes, receives
    only heartbeats, whose sequence advances to the head. Resuming from that sequence gets
    exactly the later changes of its collection: nothing of the other, and no gap."""
    server = start_server("--heartbeat-interval", HEARTBEAT_INTERVAL)
    client = connect_client(server)
    put(client, "quiet", "q0", '{"v": 0}')

    with subscribe(server, collections=["quiet"]) as stream:
        opening = stream.next(heartbeats=True)
        assert control(opening) == reported(client, HEARTBEAT, 1)
        head = 0
        for i in range(20):
            head = put(client, "busy", f"b{i}", "{}")
        assert head == 21
        heartbeats = [opening]
        while heartbeats[-1].sequence < head:
            heartbeats.append(await_heartbeat(stream))
            assert heartbeats[-1].is_heartbeat, "a change of another collection was delivered"
            assert heartbeats[-1].epoch == opening.epoch
            assert heartbeats[-2].sequence <= heartbeats[-1].sequence <= head, heartbeats
            assert len(heartbeats) < 100, "the heartbeats never reached the head"
    resume_at = heartbeats[-1].sequence

    later = [
        (UPSERT, "busy", "x", put(client, "busy", "x", "{}")),
        (UPSERT, "quiet", "q1", put(client, "quiet", "q1", '{"v": 1}')),
        (UPSERT, "busy", "y", put(client, "busy", "y", "{}")),
        (DELETE, "quiet", "q0", delete(client, "quiet", "q0")),
        (UPSERT, "busy", "z", put(client, "busy", "z", "{}")),
    ]
    with subscribe(
        server, collections=["quiet"], since_sequence=resume_at, epoch=opening.epoch
    ) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, HEARTBEAT, resume_at)
        end = put(client, "quiet", "end", "{}")
        received = changes_until(stream, end)
    assert summary(received) == [c for c in later if c[1] == "quiet"] + [
        (UPSERT, "quiet", "end", end)
    ]
    assert received[0].json_data == '{"v": 1}'


def test_a_busy_stream_gets_no_heartbeats_between_its_events(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """With the default interval (10 s), a stream whose events keep coming gets its opening
    HEARTBEAT and then nothing but its changes."""
    server = start_server()
    client = connect_client(server)
    with subscribe(server) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, HEARTBEAT, 0)
        sequences = [put(client, "c", f"d{i}", "{}") for i in range(50)]
        events = [stream.next(heartbeats=True) for _ in sequences]
    assert [(e.change_type, e.sequence) for e in events] == [(UPSERT, s) for s in sequences]


# ---------------------------------------------------------------------------------------------
# Snapshots


def read_to_catch_up_end(stream: Stream, collections: Iterable[str]) -> tuple[list[Event], Event]:
    """The UPSERT and DELETE events of a snapshot or catch-up whose first event was read, and
    its CATCH_UP_END. They come in sequence order, and only for `collections`."""
    wanted = set(collections)
    events: list[Event] = []
    while (event := stream.next(heartbeats=True)).change_type != CATCH_UP_END:
        assert event.change_type in (UPSERT, DELETE), event
        assert event.collection in wanted, event
        assert not events or events[-1].sequence < event.sequence, (events[-1], event)
        events.append(event)
    return events, event


def test_snapshot_sends_the_current_documents_of_its_collections_then_live_changes(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """SNAPSHOT_BEGIN at the head, the current documents of exactly the subscribed
    collections as UPSERTs in sequence order (deleted ones left out), CATCH_UP_END at the
    head, then the live changes after the head with no gap."""
    server = start_server()
    client = connect_client(server)
    put(client, "a", "a1", '{"v": 1}')
    put(client, "b", "b1", "{}")
    put(client, "c", "c1", "{}")
    put(client, "a", "a2", "{}")
    put(client, "a", "a3", '{"v": 3}')
    delete(client, "a", "a2")
    put(client, "b", "b2", '{"v": 2}')
    put(client, "a", "a1", '{"v": 11}')
    delete(client, "c", "c1")
    delete(client, "b", "b1")
    head = put(client, "c", "c2", "{}")

    with subscribe(server, collections=["a", "b"], snapshot=True) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, SNAPSHOT_BEGIN, head)
        documents, end = read_to_catch_up_end(stream, ["a", "b"])
        assert control(end) == reported(client, CATCH_UP_END, head)
        put(client, "c", "c3", "{}")
        live = [
            (UPSERT, "b", "b3", put(client, "b", "b3", "{}")),
            (DELETE, "a", "a3", delete(client, "a", "a3")),
        ]
        assert summary([stream.next(heartbeats=True), stream.next(heartbeats=True)]) == live
    assert [(e.change_type, e.doc_id, e.json_data, e.sequence) for e in documents] == [
        (UPSERT, "a3", '{"v": 3}', 5),
        (UPSERT, "b2", '{"v": 2}', 7),
        (UPSERT, "a1", '{"v": 11}', 8),
    ]
    assert live[0][3] == head + 2, "the live changes start right after the head"


def test_snapshot_of_an_empty_store(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """An empty store's snapshot is SNAPSHOT_BEGIN and CATCH_UP_END at 0, then live."""
    server = start_server()
    client = connect_client(server)
    with subscribe(server, snapshot=True) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, SNAPSHOT_BEGIN, 0)
        assert control(stream.next(heartbeats=True)) == reported(client, CATCH_UP_END, 0)
        sequence = put(client, "c", "first", "{}")
        assert summary([stream.next(heartbeats=True)]) == [(UPSERT, "c", "first", sequence)]
    assert sequence == 1


def test_snapshot_with_a_valid_since_is_a_plain_resume(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """With since_sequence in the replay log, snapshot=true replays exactly (after a
    HEARTBEAT at since); after a restart, it catches up from the store. Neither sends a
    snapshot."""
    server = start_server()
    client = connect_client(server)
    for i in range(3):
        put(client, "c", f"d{i}", "{}")
    epoch = status(client)["epoch"]
    request = {"since_sequence": 1, "epoch": epoch, "snapshot": True}

    with subscribe(server, **request) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, HEARTBEAT, 1)
        assert summary([stream.next(heartbeats=True), stream.next(heartbeats=True)]) == [
            (UPSERT, "c", "d1", 2),
            (UPSERT, "c", "d2", 3),
        ]

    server.restart()
    client = connect_client(server)
    with subscribe(server, **request) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, CATCH_UP_BEGIN, 1)
        changes, end = read_to_catch_up_end(stream, ["c"])
        assert control(end) == reported(client, CATCH_UP_END, 3)
    assert summary(changes) == [(UPSERT, "c", "d1", 2), (UPSERT, "c", "d2", 3)]


def test_snapshot_after_a_resync_follows_it_directly(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """An unknown epoch with snapshot=true: RESYNC(UNKNOWN_EPOCH), saying a snapshot follows,
    then directly SNAPSHOT_BEGIN ... CATCH_UP_END; the same for a since ahead of the head
    (SEQUENCE_AHEAD). Without snapshot, the RESYNC says to re-list, and live changes follow."""
    server = start_server()
    client = connect_client(server)
    put(client, "a", "x", "{}")
    put(client, "a", "y", '{"y": 1}')
    put(client, "b", "z", "{}")
    head = delete(client, "a", "x")
    wrong = {"since_sequence": 2, "epoch": "not-this-store", "collections": ["a"]}
    ahead = {"since_sequence": head + 5, "collections": ["a"]}

    for request, reason in [(wrong, UNKNOWN_EPOCH), (ahead, SEQUENCE_AHEAD)]:
        with subscribe(server, **request, snapshot=True) as stream:
            resync = stream.next(heartbeats=True)
            assert control(resync) == reported(client, RESYNC, head)
            assert resync.resync_reason == reason
            assert "a snapshot of the current documents follows" in resync.message
            assert control(stream.next(heartbeats=True)) == reported(client, SNAPSHOT_BEGIN, head)
            documents, end = read_to_catch_up_end(stream, ["a"])
            assert control(end) == reported(client, CATCH_UP_END, head)
        assert [(e.change_type, e.doc_id, e.json_data, e.sequence) for e in documents] == [
            (UPSERT, "y", '{"y": 1}', 2)
        ]

    with subscribe(server, **wrong) as stream:
        resync = stream.next(heartbeats=True)
        assert control(resync) == reported(client, RESYNC, head)
        assert "'not-this-store'" in resync.message
        assert "re-list the collections" in resync.message
        sequence = put(client, "a", "after", "{}")
        assert summary([stream.next(heartbeats=True)]) == [(UPSERT, "a", "after", sequence)]


# More than one page of snapshot reads: each page is its own read transaction, so writes
# between pages land inside the snapshot.
SNAPSHOT_DOCS = SEND_BATCH + 100
SNAPSHOT_COLLECTIONS = ("s1", "s2")
# Writer threads: the server batches their commits, so more of them land during a snapshot.
WRITERS = 4
# Snapshots to try before one overlaps the concurrent writes; almost always the first does.
SNAPSHOT_ATTEMPTS = 10


class ConcurrentWriter(threading.Thread):
    """Overwrites and deletes documents of `keys` (and now and then writes to `other`)
    until stopped, recording each committed change in `history`."""

    def __init__(
        self, client: GrpcioClient, keys: list[tuple[str, str]], history: History, seed: int
    ) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.keys = keys
        self.history = history
        self.seed = seed
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(self.seed)
        written = 0
        try:
            while not self.stopping.is_set():
                collection, doc_id = rng.choice(self.keys)
                roll = rng.random()
                document = json.dumps({"writer": self.seed, "write": written})
                json_data: str | None = document
                if roll < 0.3:
                    json_data = None
                    sequence = delete(self.client, collection, doc_id)
                elif roll < 0.9:
                    sequence = put(self.client, collection, doc_id, document)
                else:
                    collection = "other"
                    sequence = put(self.client, collection, doc_id, document)
                if sequence:  # a delete of an absent document commits nothing
                    self.history[sequence] = (collection, doc_id, json_data)
                written += 1
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stopping.set()
        self.join(CALL_TIMEOUT)
        assert not self.is_alive()
        if self.error is not None:
            raise self.error


def model(history: History, head: int) -> View:
    """The snapshot collections in the store at `head`, from every committed change."""
    view: View = {}
    for sequence in sorted(s for s in history if s <= head):
        collection, doc_id, json_data = history[sequence]
        if collection not in SNAPSHOT_COLLECTIONS:
            continue
        if json_data is None:
            view.pop((collection, doc_id), None)
        else:
            view[(collection, doc_id)] = (json_data, sequence)
    return view


def store_view(client: GrpcioClient) -> View:
    """The snapshot collections as the store lists them now."""
    keys = [(c, doc_id) for c in SNAPSHOT_COLLECTIONS for doc_id in list_ids(client, c)]
    futures = [
        client.stub.GetDocument.future(
            client.pb2.GetDocumentRequest(collection=c, doc_id=doc_id), timeout=CALL_TIMEOUT
        )
        for c, doc_id in keys
    ]
    return {
        key: (response.json_data, response.sequence)
        for key, response in zip(keys, (f.result() for f in futures), strict=True)
    }


def test_snapshot_during_concurrent_writes_equals_the_store_at_its_end(
    start_server: StartServer, grpcio_api: GrpcioApi, subscribe: Subscribe
) -> None:
    """While writers overwrite and delete the documents, the copy built from
    SNAPSHOT_BEGIN..CATCH_UP_END equals the store at the CATCH_UP_END sequence (a DELETE for a
    document it never had is ignored), and the live changes after it keep it equal to the
    store, up to a final write."""
    server = start_server()
    writer = GrpcioClient(server.address, grpcio_api)
    keys = [(SNAPSHOT_COLLECTIONS[i % 2], f"d{i:04d}") for i in range(SNAPSHOT_DOCS)]
    writers: list[ConcurrentWriter] = []
    try:
        history = commit_all(
            writer, [(c, doc_id, "{}") for c, doc_id in [*keys, ("other", "o1"), ("other", "o2")]]
        )
        history.update(commit_all(writer, [(c, doc_id, None) for c, doc_id in keys[::7]]))
        writers = [ConcurrentWriter(writer, keys, history, seed) for seed in range(WRITERS)]
        for concurrent in writers:
            concurrent.start()
        for _ in range(SNAPSHOT_ATTEMPTS):
            with subscribe(server, collections=list(SNAPSHOT_COLLECTIONS), snapshot=True) as stream:
                begin = stream.next(heartbeats=True)
                assert begin.change_type == SNAPSHOT_BEGIN, begin
                snapshot, end = read_to_catch_up_end(stream, SNAPSHOT_COLLECTIONS)
                if not snapshot or snapshot[-1].sequence <= begin.sequence:
                    continue  # no write landed inside this snapshot: try again
                copy_at_end = apply({}, snapshot)
                for concurrent in writers:
                    concurrent.stop()
                final = put(writer, "s1", "final", "{}")
                history[final] = ("s1", "final", "{}")
                live = changes_until(stream, final)
                break
        else:
            pytest.fail(f"no snapshot of {SNAPSHOT_ATTEMPTS} overlapped a write")
        assert sorted(history) == list(range(1, final + 1)), "every change is known"
        assert copy_at_end == model(history, end.sequence)
        assert all(event.sequence > end.sequence for event in live)
        assert all(a.sequence < b.sequence for a, b in itertools.pairwise(live))
        assert apply(copy_at_end, live) == model(history, final) == store_view(writer)
    finally:
        for concurrent in writers:
            concurrent.stopping.set()
        writer.close()


# ---------------------------------------------------------------------------------------------
# Tombstone retention


_PURGED = re.compile(
    r"INFO +peat_sync\.retention: purged (\d+) tombstones older than 0s; catch-ups now start"
    r" at sequence (\d+) or later"
)


def test_purged_tombstones_raise_the_catch_up_floor_and_end_catch_ups_from_below(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """With no retention, the catch_up_floor rises to the highest purged delete, and the
    server logs the purge. A resume from below the floor gets RESYNC(HISTORY_COMPACTED),
    then live changes; one from the floor still catches up from the store."""
    server = start_server("--tombstone-retention", "0", "--replay-log-size", "2")
    client = connect_client(server)
    put(client, "a", "d1", "{}")
    put(client, "a", "d2", "{}")
    put(client, "b", "e1", "{}")
    delete(client, "a", "d1")
    floor = delete(client, "b", "e1")
    put(client, "a", "d3", "{}")
    put(client, "a", "d2", '{"v": 2}')
    head = put(client, "b", "e2", "{}")

    described = wait_for_catch_up_floor(client, floor)
    assert (described["head_sequence"], described["replay_floor"]) == (head, head - 2)
    server.wait_for_log(rf"catch-ups now start at sequence {floor} or later")
    purges = _PURGED.findall(server.log)
    assert sum(int(count) for count, _ in purges) == 2, server.log
    assert int(purges[-1][1]) == floor

    with subscribe(server, collections=["a"], since_sequence=floor - 1) as stream:
        resync = stream.next(heartbeats=True)
        assert control(resync) == reported(client, RESYNC, head)
        assert resync.resync_reason == HISTORY_COMPACTED
        assert resync.catch_up_floor == floor
        assert "purged" in resync.message
        live = put(client, "a", "d4", "{}")
        assert summary([next_change(stream)]) == [(UPSERT, "a", "d4", live)]

    with subscribe(server, collections=["a"], since_sequence=floor) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, CATCH_UP_BEGIN, floor)
        changes, end = read_to_catch_up_end(stream, ["a"])
        assert control(end) == reported(client, CATCH_UP_END, live)
    assert [(e.change_type, e.doc_id, e.json_data, e.sequence) for e in changes] == [
        (UPSERT, "d3", "{}", 6),
        (UPSERT, "d2", '{"v": 2}', 7),
        (UPSERT, "d4", "{}", 9),
    ]

    # With snapshot=true, the RESYNC from below the floor is followed by a snapshot.
    with subscribe(server, collections=["a"], since_sequence=floor - 1, snapshot=True) as stream:
        resync = stream.next(heartbeats=True)
        assert (resync.change_type, resync.resync_reason) == (RESYNC, HISTORY_COMPACTED)
        assert "a snapshot of the current documents follows" in resync.message
        assert control(stream.next(heartbeats=True)) == reported(client, SNAPSHOT_BEGIN, live)
        documents, end = read_to_catch_up_end(stream, ["a"])
        assert control(end) == reported(client, CATCH_UP_END, live)
    assert [(e.change_type, e.doc_id, e.sequence) for e in documents] == [
        (UPSERT, "d3", 6),
        (UPSERT, "d2", 7),
        (UPSERT, "d4", 9),
    ]
    assert status(client)["catch_up_floor"] == floor


def test_a_catch_up_from_the_floor_includes_the_deletes_after_it(
    start_server: StartServer,
    connect_client: Callable[[ServerProcess], Client],
    subscribe: Subscribe,
) -> None:
    """The catch_up_floor survives a restart. With the default retention the deletes after
    it are kept: a catch-up from the floor delivers them as DELETE, while one from below
    the floor still gets RESYNC(HISTORY_COMPACTED)."""
    purging = start_server("--tombstone-retention", "0")
    client = connect_client(purging)
    put(client, "a", "d1", "{}")
    put(client, "a", "d2", "{}")
    floor = delete(client, "a", "d1")
    put(client, "a", "d3", "{}")
    wait_for_catch_up_floor(client, floor)
    assert purging.stop() == 0

    # The restart also empties the replay log, so every resume below the head reads the store.
    keeping = start_server(data_dir=purging.data_dir)
    client = connect_client(keeping)
    described = status(client)
    assert (described["catch_up_floor"], described["replay_floor"]) == (floor, 4)
    deleted = delete(client, "a", "d2")
    head = put(client, "a", "d4", "{}")

    with subscribe(keeping, since_sequence=floor) as stream:
        assert control(stream.next(heartbeats=True)) == reported(client, CATCH_UP_BEGIN, floor)
        changes, end = read_to_catch_up_end(stream, ["a"])
        assert control(end) == reported(client, CATCH_UP_END, head)
    assert summary(changes) == [
        (UPSERT, "a", "d3", 4),
        (DELETE, "a", "d2", deleted),
        (UPSERT, "a", "d4", head),
    ]
    with subscribe(keeping, since_sequence=floor - 1) as stream:
        resync = stream.next(heartbeats=True)
        assert (resync.change_type, resync.resync_reason) == (RESYNC, HISTORY_COMPACTED)
    assert status(client)["catch_up_floor"] == floor


def test_default_retention_keeps_tombstones(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """With the default retention (24h) deletes leave the catch_up_floor at 0."""
    for i in range(3):
        put(grpcio_client, "c", f"d{i}", "{}")
        delete(grpcio_client, "c", f"d{i}")
    described = status(grpcio_client)
    assert (described["head_sequence"], described["catch_up_floor"]) == (6, 0)
    assert "peat_sync.retention" not in server.log, "nothing was purged"


# ---------------------------------------------------------------------------------------------
# Flags


@pytest.mark.parametrize(
    ("args", "env", "fragments"),
    [
        (["--heartbeat-interval", "0"], {}, ["--heartbeat-interval='0'", "at least 100ms"]),
        (["--heartbeat-interval", "soon"], {}, ["--heartbeat-interval='soon'", "not a duration"]),
        (["--tombstone-retention", "-5"], {}, ["--tombstone-retention='-5'", "not a duration"]),
        (["--tombstone-retention=-1h"], {}, ["--tombstone-retention='-1h'", "not a duration"]),
        (["--tombstone-retention", "1w"], {}, ["--tombstone-retention='1w'", "not a duration"]),
        (
            [],
            {"PEAT_SIDECAR_HEARTBEAT_INTERVAL": "0s"},
            ["PEAT_SIDECAR_HEARTBEAT_INTERVAL='0s'", "at least 100ms"],
        ),
        (
            [],
            {"PEAT_SIDECAR_TOMBSTONE_RETENTION": "forever"},
            ["PEAT_SIDECAR_TOMBSTONE_RETENTION='forever'", "not a duration"],
        ),
    ],
    ids=[
        "interval-zero",
        "interval-word",
        "retention-negative",
        "retention-negative-unit",
        "retention-unit",
        "interval-env",
        "retention-env",
    ],
)
def test_bad_duration_exits_2_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], fragments: list[str]
) -> None:
    """A bad heartbeat interval or tombstone retention, by flag or variable, stops
    `peat-sync serve` with status 2 and one line naming it, before anything is created."""
    result = run_cli("serve", "--data-dir", str(tmp_path / "data"), *args, **env)
    assert result.returncode == 2
    line = assert_one_line_error(result, *fragments)
    assert line.startswith("peat-sync serve: error: ")
    assert not (tmp_path / "data").exists(), "nothing is created for a bad configuration"


def test_serve_help_lists_the_progress_flags() -> None:
    """`peat-sync serve --help` lists both flags with their variables and defaults."""
    result = run_cli("serve", "--help", COLUMNS="80")
    assert result.returncode == 0
    entries = help_entries(result.stdout)
    for flag, env, default in [
        ("--heartbeat-interval", "PEAT_SIDECAR_HEARTBEAT_INTERVAL", "10s"),
        ("--tombstone-retention", "PEAT_SIDECAR_TOMBSTONE_RETENTION", "24h"),
    ]:
        assert f"[default: {default}] (env {env})" in entries[flag], entries[flag]
