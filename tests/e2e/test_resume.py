"""Resuming the change feed end to end: exact replay from the replay log while writes go on,
catch-up from the store (after a restart, with a filter, during writes, from behind a small
replay log), RESYNC with each reason, the epoch, and the floors GetStatus reports.

Tests write through a `Recorder`, which knows every change the store committed, and so what
an exact replay or a catch-up must send; a client's copy is checked against the store itself,
read with ListDocuments and GetDocument.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    CLIENT_KINDS,
    DELETE,
    HEARTBEAT,
    RESYNC,
    SNAPSHOT_BEGIN,
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
from tests.helpers.copies import Key, View, apply
from tests.helpers.servers import StartServer
from tests.helpers.streams import GrpclibStream, grpcio_subscription, small_window_config
from tests.helpers.waiting import CALL_TIMEOUT, wait_until

COLLECTIONS = ("a", "b")
# The writer's last document, in `a`: a subscriber that sees it has every change.
END = "end"
UNKNOWN_EPOCH = pb.ResyncReason.UNKNOWN_EPOCH.value
SEQUENCE_AHEAD = pb.ResyncReason.SEQUENCE_AHEAD.value
HISTORY_COMPACTED = pb.ResyncReason.HISTORY_COMPACTED.value


# ---------------------------------------------------------------------------------------------
# Streams of both clients, read from sync code


class Stream(Protocol):
    def next(self, *, heartbeats: bool = False) -> Event: ...

    def until(self, stop: Callable[[Event], bool], *, heartbeats: bool = False) -> list[Event]: ...


@contextmanager
def subscribe(kind: str, server: ServerProcess, api: GrpcioApi, **request: Any) -> Iterator[Stream]:
    """A Subscribe stream to `server` of the `kind` client (grpclib or grpcio)."""
    if kind == "grpclib":
        stream = GrpclibStream(server.port, pb.SubscribeRequest(control_events=True, **request))
        try:
            yield stream
        finally:
            stream.close()
        return
    with (
        closing(GrpcioClient(server.address, api)) as client,
        grpcio_subscription(client, **request) as subscription,
    ):
        yield subscription


def is_catch_up_end(event: Event) -> bool:
    return event.change_type == CATCH_UP_END


def is_end(event: Event) -> bool:
    return event.doc_id == END


def reaches(sequence: int, event: Event) -> bool:
    return event.sequence >= sequence


def read_catch_up(stream: Stream) -> tuple[Event, list[Event], Event]:
    """A catch-up: its CATCH_UP_BEGIN, its document events, and its CATCH_UP_END."""
    begin = stream.next(heartbeats=True)
    # Checked at once: after any other opening, no CATCH_UP_END would come.
    assert begin.change_type == CATCH_UP_BEGIN, begin
    *changes, end = stream.until(is_catch_up_end)
    return begin, changes, end


# ---------------------------------------------------------------------------------------------
# Writes, and what subscribers must make of them


class Recorder:
    """Commits changes through a grpcio client and keeps each one as the event a subscriber
    receives for it. When it is a server's only writer, its changes are all the changes."""

    def __init__(self, server: ServerProcess, api: GrpcioApi) -> None:
        self.client = GrpcioClient(server.address, api)
        self.changes: list[Event] = []
        self._present: set[Key] = set()

    def reconnect(self, server: ServerProcess, api: GrpcioApi) -> None:
        """Connect again, to a restarted server (which listens on a new port)."""
        self.client.close()
        self.client = GrpcioClient(server.address, api)

    def close(self) -> None:
        self.client.close()

    @property
    def head(self) -> int:
        return self.changes[-1].sequence if self.changes else 0

    def reached(self, sequence: int) -> bool:
        return self.head >= sequence

    def put(self, collection: str, doc_id: str, json_data: str) -> int:
        sequence = put(self.client, collection, doc_id, json_data)
        self.changes.append(Event(collection, doc_id, UPSERT, json_data, sequence))
        self._present.add((collection, doc_id))
        return sequence

    def delete(self, collection: str, doc_id: str) -> int:
        sequence = delete(self.client, collection, doc_id)
        assert sequence, f"{collection}/{doc_id} was absent: its delete committed nothing"
        self.changes.append(Event(collection, doc_id, DELETE, None, sequence))
        self._present.discard((collection, doc_id))
        return sequence

    def churn(self, count: int = 1) -> None:
        """`count` changes among 46 documents of `a` and `b`: each visit of a document creates,
        overwrites or (every third visit, when present) deletes it."""
        for _ in range(count):
            i = len(self.changes)
            collection, doc_id = COLLECTIONS[i % 2], f"d{i * 7 % 23}"
            if (collection, doc_id) in self._present and i % 3 == 2:
                self.delete(collection, doc_id)
            else:
                self.put(collection, doc_id, f'{{"i": {i}}}')

    def churn_until(self, stop: threading.Event, then: int) -> None:
        """Churn until `stop` is set, then `then` changes more, then put `END`."""
        while not stop.is_set():
            assert len(self.changes) < 50_000, "nobody stopped the writer"
            self.churn()
        self.churn(then)
        self.put("a", END, "{}")

    def after(self, since: int, collections: Collection[str] = COLLECTIONS) -> list[Event]:
        """Every change after `since` to `collections`: what an exact replay sends."""
        return [c for c in self.changes if c.sequence > since and c.collection in collections]

    def latest_after(self, since: int, collections: Collection[str] = COLLECTIONS) -> list[Event]:
        """The latest change of each document changed after `since`, in sequence order: what a
        catch-up from the store sends."""
        latest = {(c.collection, c.doc_id): c for c in self.after(since, collections)}
        return sorted(latest.values(), key=lambda change: change.sequence)


def store_view(client: GrpcioClient, collections: Iterable[str] = COLLECTIONS) -> View:
    """The store's documents, as a client that lists and gets them sees them."""
    view: View = {}
    for collection in collections:
        for doc_id in list_ids(client, collection):
            json_data, sequence = get(client, collection, doc_id)
            assert json_data is not None, f"{collection}/{doc_id} is listed but absent"
            view[collection, doc_id] = (json_data, sequence)
    return view


def load(client: GrpcioClient, count: int) -> None:
    """Put `count` new documents of about 1 KB into `a` and `b`, concurrently (so quickly).
    The oracle of a test that loads is the store, not a `Recorder`."""
    futures = [
        client.stub.PutDocument.future(
            client.pb2.PutDocumentRequest(
                collection=COLLECTIONS[i % 2], doc_id=f"p{i}", json_data=f'{{"pad": "{i:01000}"}}'
            ),
            timeout=CALL_TIMEOUT,
        )
        for i in range(count)
    ]
    for future in futures:
        future.result()


def summary(events: Iterable[Event]) -> list[tuple[str, str, int]]:
    return [(event.collection, event.doc_id, event.change_type) for event in events]


def assert_reports(
    event: Event, change_type: int, sequence: int, described: dict[str, Any]
) -> None:
    """`event` is the control event `change_type` at `sequence`, and tells where the store
    stands as GetStatus `described` it."""
    assert (event.change_type, event.sequence) == (change_type, sequence), event
    assert event.epoch == described["epoch"], event
    assert event.replay_floor == described["replay_floor"], (event, described)
    assert event.catch_up_floor == described["catch_up_floor"], (event, described)
    if change_type != HEARTBEAT:
        assert event.message, "a control event explains itself"


# ---------------------------------------------------------------------------------------------
# Exact replay from the replay log


def test_resume_within_the_replay_log_while_writes_go_on(
    server: ServerProcess, grpcio_api: GrpcioApi
) -> None:
    """Subscribers of both clients, some filtered, resume from various points while a writer
    commits without pause: each gets every change after its since_sequence exactly once, in
    order, across the handoff from replay to live."""
    # (writer progress when it subscribes, how far back it resumes, client, collections)
    plan = [
        (0, 0, "grpclib", []),
        (0, 0, "grpcio", ["a"]),
        *(
            (progress, back, kind, collections)
            for progress in (150, 400)
            for back, kind, collections in [
                (0, "grpclib", []),
                (0, "grpcio", ["a"]),
                (progress // 2, "grpcio", []),
                (progress // 2, "grpclib", ["a"]),
            ]
        ),
    ]
    opened = threading.Semaphore(0)

    def follow(kind: str, since: int, collections: list[str]) -> tuple[Event, list[Event]]:
        with subscribe(
            kind, server, grpcio_api, collections=collections, since_sequence=since
        ) as stream:
            first = stream.next(heartbeats=True)
            opened.release()
            return first, stream.until(is_end)

    stop = threading.Event()
    with closing(Recorder(server, grpcio_api)) as writer, ThreadPoolExecutor(len(plan) + 1) as pool:
        try:
            writing = pool.submit(writer.churn_until, stop, then=100)
            followers = []
            for progress, back, kind, collections in plan:
                wait_until(partial(writer.reached, progress), what=f"sequence {progress}")
                since = writer.head - back
                followers.append(
                    (since, collections, pool.submit(follow, kind, since, collections))
                )
            # Every stream is open before the writer winds down, so each one's replay races
            # the writer and its handoff to live happens with writes in flight.
            for _ in plan:
                assert opened.acquire(timeout=CALL_TIMEOUT), "a subscriber did not open"
        finally:
            stop.set()
        writing.result()
        epoch = status(writer.client)["epoch"]
        for since, collections, follower in followers:
            first, events = follower.result()
            assert (first.change_type, first.sequence, first.epoch) == (HEARTBEAT, since, epoch)
            assert events == writer.after(since, collections or COLLECTIONS), (since, collections)


# ---------------------------------------------------------------------------------------------
# Catch-up from the store


def test_catch_up_from_the_store_after_a_restart(
    start_server: StartServer, grpcio_api: GrpcioApi, client_kind: str
) -> None:
    """After a restart the replay log is empty, so a subscriber resuming from an older
    position S gets a catch-up: the latest state of each document changed after S, deletes
    included, then CATCH_UP_END at the head and live changes with no gap. Applied to the
    client's copy as of S it yields the store; likewise with a collection filter."""
    server = start_server()
    with closing(Recorder(server, grpcio_api)) as writer:
        for i in range(6):
            writer.put("a", f"d{i}", f'{{"v": {i}}}')
        for i in range(4):
            writer.put("b", f"d{i}", f'{{"v": {i}}}')
        writer.put("a", "d0", '{"v": "before S"}')
        writer.delete("a", "d5")
        writer.delete("b", "d3")
        since = writer.head
        copy = store_view(writer.client)
        epoch = status(writer.client)["epoch"]

        writer.put("a", "d0", '{"v": "after S"}')  # written before S: only its latest state
        writer.put("a", "d0", '{"v": "latest"}')
        writer.delete("a", "d1")  # existed at S
        writer.put("b", "d3", '{"v": "back"}')  # deleted before S
        writer.put("a", "new", '{"v": 1}')  # new after S, then overwritten
        writer.put("b", "gone", "{}")  # new after S, then deleted: a DELETE the copy ignores
        writer.put("a", "new", '{"v": 2}')
        writer.delete("b", "gone")
        writer.delete("b", "d0")  # existed at S
        writer.put("a", "d2", '{"v": "changed"}')
        head = writer.head
        expected = writer.latest_after(since)
        assert summary(expected) == [
            ("a", "d0", UPSERT),
            ("a", "d1", DELETE),
            ("b", "d3", UPSERT),
            ("a", "new", UPSERT),
            ("b", "gone", DELETE),
            ("b", "d0", DELETE),
            ("a", "d2", UPSERT),
        ]

        writer.close()
        server.restart()
        writer.reconnect(server, grpcio_api)
        described = status(writer.client)
        assert described["epoch"] == epoch

        with subscribe(
            client_kind, server, grpcio_api, since_sequence=since, epoch=epoch
        ) as stream:
            begin, catch_up, end = read_catch_up(stream)
            writer.put("a", "live", "{}")
            writer.delete("a", "d2")
            live = [stream.next(), stream.next()]
        assert_reports(begin, CATCH_UP_BEGIN, since, described)
        assert_reports(end, CATCH_UP_END, head, described)
        assert catch_up == expected
        assert live == writer.after(head)
        assert apply(copy, catch_up + live) == store_view(writer.client)

        head = writer.head
        expected = writer.latest_after(since, ["b"])
        with subscribe(
            client_kind,
            server,
            grpcio_api,
            collections=["b"],
            since_sequence=since,
            epoch=epoch,
        ) as filtered:
            begin, catch_up, end = read_catch_up(filtered)
            writer.put("a", "unseen", "{}")
            writer.put("b", "live", "{}")
            live = [filtered.next()]
        assert_reports(begin, CATCH_UP_BEGIN, since, described)
        # The end reports the store-wide head: the filtered stream has everything up to it.
        assert_reports(end, CATCH_UP_END, head, described)
        assert catch_up == expected
        assert live == writer.after(head, ["b"])
        copy_of_b = {key: value for key, value in copy.items() if key[0] == "b"}
        assert apply(copy_of_b, catch_up + live) == store_view(writer.client, ["b"])


def test_catch_up_converges_while_writes_overtake_it(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """A catch-up that writes overtake: the subscriber (grpclib, with a small flow-control
    window) holds the server in the middle of the catch-up's first page while a writer
    creates, overwrites and deletes documents, some of which the catch-up has already sent.
    Those come again later in the catch-up with their newer state; the client's copy
    converges to the store, and the changes after CATCH_UP_END are contiguous."""
    server = start_server()
    with closing(Recorder(server, grpcio_api)) as writer:
        writer.churn(60)
        since = writer.head
        copy = store_view(writer.client)
        # The writer's documents, changed first after S, open the catch-up; then more
        # documents than one page (512) holds, and more bytes than the client's window.
        writer.churn(60)
        load(writer.client, 500)
        epoch = status(writer.client)["epoch"]
        writer.close()
        server.restart()
        writer.reconnect(server, grpcio_api)

        stop = threading.Event()
        request = pb.SubscribeRequest(since_sequence=since, epoch=epoch)
        stream = GrpclibStream(server.port, request, small_window_config())
        with ThreadPoolExecutor(1) as pool:
            try:
                writing = pool.submit(writer.churn_until, stop, then=30)
                begin = stream.next(heartbeats=True)
                assert begin.change_type == CATCH_UP_BEGIN, begin
                catch_up = [stream.next()]
                # The server read the first page before sending any of it, and stalls on the
                # window before its end: these writes all come after that read.
                overtaken_at = status(writer.client)["head_sequence"] + 50
                wait_until(partial(writer.reached, overtaken_at), what="writes to overtake")
                *rest, end = stream.until(is_catch_up_end)
                catch_up += rest
                stop.set()
                live = stream.until(is_end)
            finally:
                stop.set()
                stream.close()
            writing.result()
        assert (begin.change_type, begin.sequence) == (CATCH_UP_BEGIN, since)
        assert end.sequence >= overtaken_at
        sequences = [event.sequence for event in catch_up]
        assert all(a < b for a, b in itertools.pairwise(sequences))
        assert since < sequences[0]
        assert sequences[-1] <= end.sequence
        sent_again = len(catch_up) - len({(e.collection, e.doc_id) for e in catch_up})
        assert sent_again > 0, "documents changed after they were sent come again"
        assert [event.sequence for event in live] == list(range(end.sequence + 1, writer.head + 1))
        assert apply(copy, catch_up + live) == store_view(writer.client)


def test_replay_floor_rises_as_the_replay_log_evicts_and_older_positions_catch_up(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """GetStatus replay_floor is one below the oldest event the replay log holds (5 here). A
    since_sequence below the floor gets a catch-up from the store, with no restart; one from
    the floor to the head is replayed exactly and handed over to live. After a restart the
    replay log is empty: replay_floor is the head."""
    server = start_server("--replay-log-size", "5")
    with closing(Recorder(server, grpcio_api)) as writer:

        def replay_floor_is(floor: int) -> bool:
            return bool(status(writer.client)["replay_floor"] == floor)

        described = status(writer.client)
        assert (described["replay_floor"], described["catch_up_floor"]) == (0, 0)
        for i in range(12):
            writer.put("a", f"d{i % 3}", f'{{"i": {i}}}')
            floor = max(0, writer.head - 5)
            # The feed appends to the replay log just after the put is acknowledged.
            wait_until(partial(replay_floor_is, floor), what=f"replay_floor {floor}")
        described = status(writer.client)
        assert described["catch_up_floor"] == 0

        with subscribe("grpcio", server, grpcio_api, since_sequence=2) as behind:
            begin, catch_up, end = read_catch_up(behind)
        assert_reports(begin, CATCH_UP_BEGIN, 2, described)
        assert (end.change_type, end.sequence) == (CATCH_UP_END, writer.head)
        assert catch_up == writer.latest_after(2)
        assert summary(catch_up) == [("a", "d0", UPSERT), ("a", "d1", UPSERT), ("a", "d2", UPSERT)]

        # At the floor, one below the head, at the head: each is a boundary of the replay.
        for back in (5, 1, 0):
            since = writer.head - back
            wait_until(partial(replay_floor_is, writer.head - 5), what="the replay floor")
            described = status(writer.client)
            with subscribe("grpcio", server, grpcio_api, since_sequence=since) as exact:
                first = exact.next(heartbeats=True)
                live = writer.put("a", "live", f'{{"back": {back}}}')
                replayed = exact.until(partial(reaches, live))
            assert_reports(first, HEARTBEAT, since, described)
            assert replayed == writer.after(since), back

        writer.close()
        server.restart()
        writer.reconnect(server, grpcio_api)
        described = status(writer.client)
        assert described["head_sequence"] == described["replay_floor"] == writer.head == 15
        assert described["catch_up_floor"] == 0


# ---------------------------------------------------------------------------------------------
# RESYNC


def assert_resync_then_live(
    writer: Recorder, server: ServerProcess, api: GrpcioApi, reason: int, **request: Any
) -> None:
    """A stream of `request` opens with a RESYNC for `reason` at the head, reporting where the
    store stands, and carries the changes after it."""
    described = status(writer.client)
    with subscribe("grpcio", server, api, **request) as stream:
        resync = stream.next(heartbeats=True)
        writer.put("a", "after-resync", "{}")
        following = stream.next()
    assert_reports(resync, RESYNC, described["head_sequence"], described)
    assert resync.resync_reason == reason, (resync, request)
    assert following == writer.changes[-1]
    assert following.sequence == resync.sequence + 1


def test_resync_for_an_unknown_epoch_or_a_sequence_ahead(
    start_server: StartServer, grpcio_api: GrpcioApi, tmp_path: Path
) -> None:
    """A since_sequence of another epoch (made up, or another data dir's) gets RESYNC
    UNKNOWN_EPOCH, one ahead of the head gets SEQUENCE_AHEAD, even without an epoch. An empty
    epoch counts as unset: a valid since_sequence resumes."""
    server = start_server()
    other = start_server(data_dir=tmp_path / "other")
    with (
        closing(Recorder(server, grpcio_api)) as writer,
        closing(GrpcioClient(other.address, grpcio_api)) as other_client,
    ):
        writer.churn(5)
        epoch = status(writer.client)["epoch"]
        put(other_client, "a", "d0", "{}")
        other_status = status(other_client)
        assert other_status["epoch"] != epoch

        assert_resync_then_live(
            writer, server, grpcio_api, UNKNOWN_EPOCH, since_sequence=3, epoch="0123456789abcdef"
        )
        # The other store's position is a valid one here too: only its epoch tells.
        assert_resync_then_live(
            writer,
            server,
            grpcio_api,
            UNKNOWN_EPOCH,
            since_sequence=other_status["head_sequence"],
            epoch=other_status["epoch"],
        )
        assert_resync_then_live(
            writer, server, grpcio_api, SEQUENCE_AHEAD, since_sequence=writer.head + 1, epoch=epoch
        )
        assert_resync_then_live(
            writer, server, grpcio_api, SEQUENCE_AHEAD, since_sequence=writer.head + 100
        )

        head = writer.head
        for kind in CLIENT_KINDS:
            with subscribe(kind, server, grpcio_api, since_sequence=3, epoch="") as stream:
                first = stream.next(heartbeats=True)
                replayed = stream.until(partial(reaches, head))
            assert (first.change_type, first.sequence, first.epoch) == (HEARTBEAT, 3, epoch), kind
            assert replayed == writer.after(3), kind


def test_resync_when_the_deletes_after_since_were_purged(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """With no tombstone retention a delete is forgotten at once and the catch-up floor rises
    to it: a since_sequence below the floor (and below the replay log, which would otherwise
    replay it exactly) gets RESYNC HISTORY_COMPACTED; one at the floor still catches up."""
    server = start_server("--tombstone-retention", "0", "--replay-log-size", "2")
    with closing(Recorder(server, grpcio_api)) as writer:
        writer.put("a", "x", "{}")
        deleted = writer.delete("a", "x")
        for doc_id in ("y", "z", "w"):
            writer.put("a", doc_id, "{}")
        # The purge runs every second with no retention.
        described = wait_until(
            lambda: (
                (response := status(writer.client))["catch_up_floor"] >= deleted
                and response["replay_floor"] > deleted
                and response
            ),
            what="the tombstone purge",
        )
        assert described["catch_up_floor"] == deleted

        assert_resync_then_live(
            writer, server, grpcio_api, HISTORY_COMPACTED, since_sequence=deleted - 1
        )

        with subscribe("grpcio", server, grpcio_api, since_sequence=deleted) as stream:
            begin, catch_up, end = read_catch_up(stream)
        assert (begin.change_type, begin.sequence) == (CATCH_UP_BEGIN, deleted)
        assert end.sequence == writer.head
        assert catch_up == writer.latest_after(deleted)


# ---------------------------------------------------------------------------------------------
# The epoch


def test_every_stream_opens_with_the_store_epoch_which_survives_a_restart(
    start_server: StartServer, grpcio_api: GrpcioApi, tmp_path: Path
) -> None:
    """Whatever a stream opens with (HEARTBEAT, SNAPSHOT_BEGIN, RESYNC, CATCH_UP_BEGIN), its
    first event is a control event carrying GetStatus's epoch: the same after a restart,
    another for another data dir."""
    server = start_server()
    with closing(Recorder(server, grpcio_api)) as writer:
        writer.churn(4)
        epoch = status(writer.client)["epoch"]
        assert re.fullmatch(r"[0-9a-f]{8,}", epoch), epoch

        def assert_opening(first_type: int, **request: Any) -> None:
            for kind in CLIENT_KINDS:
                with subscribe(kind, server, grpcio_api, **request) as stream:
                    first = stream.next(heartbeats=True)
                assert (first.change_type, first.epoch) == (first_type, epoch), (kind, request)

        assert_opening(HEARTBEAT)
        assert_opening(HEARTBEAT, since_sequence=1, epoch=epoch)
        assert_opening(SNAPSHOT_BEGIN, snapshot=True)
        assert_opening(RESYNC, since_sequence=99)
        assert_opening(RESYNC, since_sequence=1, epoch="another")

        writer.close()
        server.restart()
        writer.reconnect(server, grpcio_api)
        assert status(writer.client)["epoch"] == epoch
        assert_opening(HEARTBEAT)
        assert_opening(CATCH_UP_BEGIN, since_sequence=1, epoch=epoch)

    other = start_server(data_dir=tmp_path / "other")
    with closing(GrpcioClient(other.address, grpcio_api)) as other_client:
        other_epoch = status(other_client)["epoch"]
        with subscribe("grpcio", other, grpcio_api) as stream:
            first = stream.next(heartbeats=True)
    assert other_epoch != epoch
    assert (first.change_type, first.epoch) == (HEARTBEAT, other_epoch)
