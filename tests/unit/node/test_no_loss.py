"""The subscriber promise, checked on random interleavings (hypothesis).

Writers put and delete a few documents in three collections, so that changes collide.
Meanwhile clients, each with its own collection filter, follow the feed as applications do:
in small batches, or not at all for a while; they disconnect, keep their copy and resume
from their resume point with the epoch they learned; some ask for snapshots. The node
restarts under them, tombstones are purged, and buffers and the replay log are tiny.

Some clients follow a content query (kind == "vehicle"; every third write is a person): an
update that stops matching must reach them as a DELETE, so that their copy always equals the
store restricted to the query.

Each client checks every event as it arrives against the list of every write the test made:
outside a catch-up or snapshot, its events come in sequence order with no duplicate and no
change to its collections missing; a catch-up or snapshot ends with its copy equal to the
store at CATCH_UP_END; a RESYNC comes only when tombstones after its position were purged.
In the end, every client's copy equals the store.
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from peat_sync.generated.peat.sidecar.v1 import (
    ChangeType,
    DocumentChange,
    QueryEq,
    ResyncReason,
    SubscriptionQuery,
)
from peat_sync.node import Node, NodeClosed, NodeConfig, Subscription, open_node
from peat_sync.node.query import Predicate, compile_query
from peat_sync.store import Change, SQLiteStore
from peat_sync.store.sqlite import DATABASE_FILE

COLLECTIONS = ("a", "b", "c")
FILTERS: tuple[frozenset[str], ...] = (frozenset(), frozenset({"a"}), frozenset({"b", "c"}))
DOC_IDS = 2
DEADLINE = 60
EVERYTHING = 10**9
DAY = 24 * 3600.0  # longer than any example: no tombstone expires, no heartbeat is due

Key = tuple[str, str]
Documents = dict[Key, str]

VEHICLES = compile_query(SubscriptionQuery(eq=QueryEq(field="kind", value='"vehicle"')))


def document_at(sequence: int) -> str:
    """The document a put at `sequence` writes: every third is a person, the rest vehicles."""
    kind = "person" if sequence % 3 == 0 else "vehicle"
    return f'{{"at": {sequence}, "kind": "{kind}"}}'


def matches(query: Predicate | None, json_data: str) -> bool:
    return query is None or query(json.loads(json_data))


def follows(collections: frozenset[str], collection: str) -> bool:
    return not collections or collection in collections


def read_store(database: Path) -> tuple[Documents, int]:
    """The store's documents and the head they are current at, read in one transaction
    straight from the file, without a checkpoint: while a client re-lists, nothing else runs."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None)) as db:
        db.execute("BEGIN")
        rows = db.execute(
            "SELECT collection, doc_id, json_data FROM documents WHERE json_data IS NOT NULL"
        ).fetchall()
        (head,) = db.execute("SELECT value FROM meta WHERE key = 'head_sequence'").fetchone()
        db.execute("COMMIT")
    return {(collection, doc_id): json for collection, doc_id, json in rows}, int(head)


def tombstone_purged(database: Path, delete: Change) -> bool:
    """Whether the store no longer holds the tombstone `delete` left."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT sequence FROM documents WHERE collection = ? AND doc_id = ?",
            (delete.collection, delete.doc_id),
        ).fetchone()
    return row is None or row[0] > delete.sequence


class World:
    """Every write the test made, in sequence order, and the documents after each one."""

    def __init__(self, database: Path, purges: bool) -> None:
        self.database = database
        self.purges = purges
        self.epoch = ""
        self.writes = [Change(0, "", "", None)]  # writes[s]: the change committed at s
        self.states: list[Documents] = [{}]  # states[s]: the documents after sequence s

    @property
    def head(self) -> int:
        return len(self.writes) - 1

    def record(self, collection: str, doc_id: str, json_data: str | None) -> int:
        """Note a write before making it, since its event can reach a client before the
        writer resumes; returns its sequence, or 0 for the delete of an absent document."""
        documents = dict(self.states[-1])
        if json_data is not None:
            documents[(collection, doc_id)] = json_data
        elif documents.pop((collection, doc_id), None) is None:
            return 0
        self.writes.append(Change(self.head + 1, collection, doc_id, json_data))
        self.states.append(documents)
        return self.head

    def documents(
        self, sequence: int, collections: frozenset[str], query: Predicate | None = None
    ) -> Documents:
        """The documents of `collections` (empty: all) after `sequence` that `query` (None:
        any) matches."""
        return {
            k: v
            for k, v in self.states[sequence].items()
            if follows(collections, k[0]) and matches(query, v)
        }

    def changes(self, collections: frozenset[str], after: int, through: int) -> list[int]:
        """The sequences after `after` up to `through` of changes to `collections`."""
        return [
            s
            for s in range(after + 1, through + 1)
            if follows(collections, self.writes[s].collection)
        ]


@dataclass(frozen=True)
class ClientSpec:
    collections: frozenset[str]
    snapshot: bool
    connected: bool  # at the start; otherwise it subscribes at its first Resume
    query: bool = False  # follows VEHICLES only


class Client:
    """A subscriber written as an application would write one, that checks every event.

    It keeps a copy of its collections and a resume point, `position`: its copy holds every
    change to its collections up to it. It sends `position` and the epoch it learned when it
    resumes. A snapshot client has no position from SNAPSHOT_BEGIN to CATCH_UP_END, since
    it discarded its copy: if its stream ends in between, it asks for a new snapshot.
    """

    def __init__(self, name: str, spec: ClientSpec, world: World) -> None:
        self.name = name
        self.collections = spec.collections
        self.snapshot = spec.snapshot
        self.query = VEHICLES if spec.query else None
        self.world = world
        self.copy: Documents = {}
        self.position: int | None = None if spec.snapshot else 0
        self.epoch: str | None = None
        # Its copy equals the store at `position` once `position` reaches this: a partial
        # catch-up, or a re-list (a newer state), leaves it ahead for a while.
        self.consistent_from = 0
        self.subscription: Subscription | None = None
        self.since: int | None = None  # of the current stream
        self.previous: ChangeType | None = None  # the stream's last event; None before any
        self.store_read: ChangeType | None = None  # SNAPSHOT_BEGIN or CATCH_UP_BEGIN, until END
        self.read_last = 0  # the last sequence of the store read under way
        self.snapshot_head = 0
        self.budget = 0
        self.wake = trio.Event()
        self.reading = trio.CancelScope()
        self.heartbeat = trio.Event()  # set on each HEARTBEAT
        self.stopped = trio.Event()
        self.seen: Counter[str] = Counter()  # event types and outcomes, for statistics

    def __repr__(self) -> str:
        query = ", vehicles" if self.query else ""
        return f"client {self.name} ({','.join(sorted(self.collections)) or 'all'}{query})"

    # Driving it ------------------------------------------------------------------------

    def connect(self, node: Node) -> None:
        assert self.subscription is None
        self.since = self.position
        self.subscription = node.subscribe(
            self.collections,
            self.position,
            epoch=self.epoch,
            snapshot=self.snapshot,
            query=self.query,
        )
        self.previous = None
        self.wake.set()

    def disconnect(self) -> None:
        """Close the stream, keeping the copy and the resume point."""
        if self.subscription is not None:
            self.reading.cancel()
            self.subscription.close()
            self.subscription = None
            self.store_read = None

    def allow(self, events: int) -> None:
        self.budget += events
        self.wake.set()

    @property
    def idle(self) -> bool:
        """Whether it has used its budget, or is blocked on live events (not on a thread)."""
        return self.budget == 0 or self.subscription is None or self.subscription.is_live

    async def run(self) -> None:
        try:
            while True:
                await self._read()
        finally:
            self.stopped.set()

    async def _read(self) -> None:
        while self.budget == 0 or self.subscription is None:
            self.wake = trio.Event()
            await self.wake.wait()
        subscription = self.subscription
        events = None
        with trio.CancelScope() as self.reading:
            try:
                events = await subscription.next_batch(self.budget)
            except NodeClosed:
                self.seen["NodeClosed"] += 1
        if subscription is not self.subscription:
            return  # disconnected meanwhile: these events never reached the application
        if events is None:
            self.disconnect()
            return
        self.budget = max(0, self.budget - len(events))
        for change_event in events:
            change = DocumentChange.FromString(change_event.encoded)
            assert change.sequence == change_event.sequence
            self.receive(change)

    # Receiving and checking ------------------------------------------------------------

    def receive(self, change: DocumentChange) -> None:
        """Check one event against the writes, then apply it as an application would."""
        kind = change.change_type
        opening = self.previous is None
        after_resync = self.previous == ChangeType.RESYNC
        self.previous = kind
        self.seen[kind.name] += 1
        where = f"{self}, {kind.name} {change.sequence}"
        assert change.sequence <= self.world.head, f"{where}: ahead of the head"
        if self.snapshot and after_resync:
            assert kind == ChangeType.SNAPSHOT_BEGIN, f"{where}: no snapshot after the RESYNC"
        if kind in (ChangeType.UPSERT, ChangeType.DELETE):
            assert not opening, f"{where}: the stream did not open with a control event"
            self._document(change, where)
            return
        assert change.epoch == self.world.epoch, f"{where}: epoch {change.epoch!r}"
        self.epoch = change.epoch
        if not self.world.purges:
            assert change.catch_up_floor == 0, f"{where}: no tombstone was purged"
        if kind == ChangeType.HEARTBEAT:
            assert self.store_read is None, f"{where}: inside a store read"
            assert not opening or change.sequence == self.since, f"{where}: since {self.since}"
            self._advance(change.sequence, where)
            self.heartbeat.set()
        elif kind == ChangeType.CATCH_UP_BEGIN:
            assert self.store_read is None, f"{where}: inside a store read"
            assert not opening or change.sequence == self.since, f"{where}: since {self.since}"
            self._advance(change.sequence, where)
            self.store_read, self.read_last = kind, change.sequence
        elif kind == ChangeType.SNAPSHOT_BEGIN:
            assert self.snapshot, f"{where}: snapshot not asked for"
            assert self.store_read is None, f"{where}: inside a store read"
            assert after_resync or (opening and self.since is None), f"{where}: since {self.since}"
            self.copy.clear()
            self.position = None
            self.store_read, self.read_last, self.snapshot_head = kind, 0, change.sequence
        elif kind == ChangeType.CATCH_UP_END:
            assert self.store_read is not None, f"{where}: no store read under way"
            assert self.read_last <= change.sequence, f"{where}: before its last event"
            self.store_read = None
            self.position = self.consistent_from = change.sequence
            self._check_copy(where)
        elif kind == ChangeType.RESYNC:
            self._resync(change, opening, where)
        else:
            raise AssertionError(f"{where}: unexpected event {change}")

    def _document(self, change: DocumentChange, where: str) -> None:
        sequence = change.sequence
        assert follows(self.collections, change.collection), f"{where}: not its collection"
        written = self.world.writes[sequence]
        if change.change_type == ChangeType.DELETE and written.json_data is not None:
            # A put of a document the query does not match: a DELETE of it for this client.
            assert not matches(self.query, written.json_data), f"{where}: a matching put"
            written = Change(sequence, written.collection, written.doc_id, None)
        received = Change(sequence, change.collection, change.doc_id, change.json_data)
        assert received == written, f"{where}: {received} differs from the write {written}"
        assert (change.change_type == ChangeType.DELETE) == (written.json_data is None), where
        if written.json_data is not None:
            assert matches(self.query, written.json_data), f"{where}: the query does not match"
        if self.store_read is None:
            assert self.position is not None
            assert sequence > self.position, f"{where}: duplicate or out of order"
            self._check_delivered(through=sequence - 1, where=where)
        else:
            # Skipped sequences are the catch-up's or snapshot's to explain, at CATCH_UP_END.
            assert sequence > self.read_last, f"{where}: duplicate or out of order in a read"
            if self.store_read == ChangeType.SNAPSHOT_BEGIN:
                assert written.json_data is not None or sequence > self.snapshot_head, where
            else:
                # A partial catch-up is a resume point, though its copy is consistent only
                # once its position passes the head its pages were read at.
                self.consistent_from = max(self.consistent_from, self.world.head)
            self.read_last = sequence
        key = (change.collection, change.doc_id)
        if change.json_data is None:
            self.copy.pop(key, None)  # a snapshot's DELETE can be of a document it never sent
        else:
            self.copy[key] = change.json_data
        if self.store_read != ChangeType.SNAPSHOT_BEGIN:
            self.position = sequence
            self._check_copy(where)

    def _advance(self, sequence: int, where: str) -> None:
        """Move the resume point to `sequence`, which the stream says it has delivered."""
        self._check_delivered(through=sequence, where=where)
        self.position = sequence
        self._check_copy(where)

    def _check_delivered(self, *, through: int, where: str) -> None:
        """Every change to the collections after the position, up to `through`, came."""
        assert self.position is not None, f"{where}: no position"
        assert through >= self.position, f"{where}: behind position {self.position}"
        lost = self.world.changes(self.collections, self.position, through)
        assert not lost, f"{where}: sequences {lost} after {self.position} lost silently"

    def _check_copy(self, where: str) -> None:
        if self.position is not None and self.position >= self.consistent_from:
            expected = self.world.documents(self.position, self.collections, self.query)
            assert self.copy == expected, f"{where}: copy differs from the store at {self.position}"

    def _resync(self, change: DocumentChange, opening: bool, where: str) -> None:
        """Check that the RESYNC was due, then re-list (or await the snapshot)."""
        reason = change.resync_reason
        assert self.world.purges, f"{where}: {reason!r} though no tombstone was ever purged"
        assert reason in (ResyncReason.HISTORY_COMPACTED, ResyncReason.SLOW_CONSUMER), where
        # A stream only lags once open: SLOW_CONSUMER is never its first event.
        assert not (opening and reason == ResyncReason.SLOW_CONSUMER), where
        self.seen[reason.name] += 1
        # The store could not serve the changes after `start` only if it purged a tombstone
        # after it: the floor that says so (test_a_resync_reports_the_floor_that_caused_it).
        start = (
            self.snapshot_head if self.store_read == ChangeType.SNAPSHOT_BEGIN else self.position
        )
        assert start is not None, f"{where}: no position"
        floor = change.catch_up_floor
        assert start < floor, f"{where}: from {start}, though the catch-up floor is {floor}"
        purged = self.world.writes[floor]
        assert purged.json_data is None, f"{where}: floor {floor} is no delete"
        assert tombstone_purged(self.world.database, purged), f"{where}: {purged} still stored"
        self.store_read = None
        if self.snapshot:
            self.position = None  # the snapshot that follows rebuilds the copy
            return
        documents, listed_at = read_store(self.world.database)
        assert change.sequence <= listed_at, f"{where}: ahead of the store's head {listed_at}"
        assert documents == self.world.documents(listed_at, frozenset()), "store != writes"
        self.copy = {
            k: v
            for k, v in documents.items()
            if follows(self.collections, k[0]) and matches(self.query, v)
        }
        # The changes after the RESYNC up to the listing's head come again.
        self.position, self.consistent_from = change.sequence, listed_at


async def settle(clients: list[Client]) -> None:
    """Wait until every client has used its budget or waits for live events. A catch-up
    reads the store on a worker thread, and a task waiting for a thread counts as blocked,
    so blocked tasks alone do not mean the clients are done."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if all(client.idle for client in clients):
            return
        await trio.sleep(0.001)


# Scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    collection: str
    doc: int
    delete: bool


@dataclass(frozen=True)
class Read:
    client: int
    events: int  # more events it may read; EVERYTHING: read until caught up, then stall


@dataclass(frozen=True)
class Disconnect:
    client: int


@dataclass(frozen=True)
class Resume:
    client: int


@dataclass(frozen=True)
class Purge:
    pass


@dataclass(frozen=True)
class Restart:
    pass


Operation = Write | Read | Disconnect | Resume | Purge | Restart


@dataclass(frozen=True)
class Scenario:
    clients: list[ClientSpec]
    operations: list[Operation]
    purges: bool  # tombstone retention 0, with Purge operations; else nothing is ever purged
    buffer_size: int
    replay_log_size: int
    heartbeat_interval: float


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    clients = draw(
        st.lists(
            st.builds(
                ClientSpec, st.sampled_from(FILTERS), st.booleans(), st.booleans(), st.booleans()
            ),
            min_size=1,
            max_size=4,
        )
    )
    purges = draw(st.booleans())
    client = st.integers(0, len(clients) - 1)
    write = st.builds(
        Write,
        st.sampled_from(COLLECTIONS),
        st.integers(0, DOC_IDS - 1),
        st.booleans(),
    )
    read = st.builds(Read, client, st.sampled_from([1, 2, 4, EVERYTHING, EVERYTHING]))
    # one_of picks its branches evenly: weigh them by repeating them in a sampled_from.
    weighted: list[st.SearchStrategy[Operation]] = [write] * 12 + [read] * 6
    weighted += [st.builds(Disconnect, client)] + [st.builds(Resume, client)] * 2
    weighted += [st.just(Restart())] + ([st.just(Purge())] * 2 if purges else [])
    operation = st.sampled_from(weighted).flatmap(lambda strategy: strategy)
    # Runs of operations: long scenarios on average, that still shrink to a few operations.
    runs = st.lists(st.lists(operation, min_size=4, max_size=20), min_size=2, max_size=8)
    return Scenario(
        clients,
        draw(runs.map(flatten)),
        purges,
        draw(st.integers(1, 4)),
        draw(st.integers(1, 12)),
        # Short, or longer than any example.
        draw(st.sampled_from([0.02, DAY])),
    )


def flatten(runs: list[list[Operation]]) -> list[Operation]:
    return [operation for run in runs for operation in run]


@contextmanager
def fresh_data_dir() -> Iterator[Path]:
    # One store per example: tmp_path is shared by all the examples of a test.
    with tempfile.TemporaryDirectory(prefix="peat-no-loss-") as directory:
        yield Path(directory)


async def perform(operation: Operation, node: Node, world: World, clients: list[Client]) -> None:
    match operation:
        case Write(collection, doc, delete):
            doc_id = f"d{doc}"
            json_data = None if delete else document_at(world.head + 1)
            assert node.head_sequence == world.head
            sequence = world.record(collection, doc_id, json_data)
            if json_data is None:
                assert await node.delete(collection, doc_id) == sequence
            else:
                assert await node.put(collection, doc_id, json_data) == sequence
        case Read(client, events):
            clients[client].allow(events)
            if events == EVERYTHING:
                # Read until caught up, then stall again: a fast reader never overflows.
                await settle(clients)
                clients[client].budget = 0
        case Disconnect(client):
            clients[client].disconnect()
        case Resume(client) if clients[client].subscription is None:
            clients[client].connect(node)
        case Purge():
            await node.purge_expired_tombstones()
        case _:
            pass  # the Resume of a connected client; `play` handles Restart


async def play(scenario: Scenario, world: World, clients: list[Client]) -> None:
    """Perform the operations on a node that restarts at each Restart, then converge."""
    config = NodeConfig(
        data_dir=world.database.parent,
        broadcast_buffer_size=scenario.buffer_size,
        replay_log_size=scenario.replay_log_size,
        heartbeat_interval=scenario.heartbeat_interval,
        tombstone_retention=0.0 if scenario.purges else DAY,
    )
    phases: list[list[Operation]] = [[]]
    for operation in scenario.operations:
        if isinstance(operation, Restart):
            phases.append([])
        else:
            phases[-1].append(operation)
    connecting = [
        client for client, spec in zip(clients, scenario.clients, strict=True) if spec.connected
    ]
    async with trio.open_nursery() as nursery:
        for client in clients:
            nursery.start_soon(client.run)
        for number, phase in enumerate(phases):
            async with open_node(config) as node, clients_stopped_on_failure(nursery, clients):
                world.epoch = world.epoch or node.epoch
                assert node.epoch == world.epoch, "the epoch changed across a restart"
                for client in connecting:
                    client.connect(node)
                await settle(clients)
                for operation in phase:
                    await perform(operation, node, world, clients)
                    await settle(clients)
                if node.feed.lag_events:
                    event("a live subscription overflowed its buffer")
                if number == len(phases) - 1:
                    await converge(node, world, clients)
                    break
            # Every open stream ends with NodeClosed; its client resumes on the next node.
            connecting = [client for client in clients if client.subscription is not None]
            for client in connecting:
                client.allow(1)
            await settle(clients)
            assert all(client.subscription is None for client in connecting), "no NodeClosed"
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def clients_stopped_on_failure(
    nursery: trio.Nursery, clients: list[Client]
) -> AsyncIterator[None]:
    """When a check fails, stop the clients before the node closes the store: a client may
    still be reading a catch-up page on a worker thread, which cannot be cancelled, and
    closing the store under a running read can crash the interpreter."""
    try:
        yield
    except BaseException:
        nursery.cancel_scope.cancel()
        with trio.CancelScope(shield=True):
            for client in clients:
                await client.stopped.wait()
        raise


async def converge(node: Node, world: World, clients: list[Client]) -> None:
    """Let every client resume and read everything; each copy must equal the store."""
    for client in clients:
        if client.subscription is None:
            client.connect(node)
        client.allow(EVERYTHING)
    await settle(clients)
    if node.config.heartbeat_interval < DAY:
        # An idle stream's heartbeat brings its client to the head, whatever its filter.
        for client in clients:
            client.heartbeat = trio.Event()
        for client in clients:
            await client.heartbeat.wait()
            assert client.position == world.head, client
    documents, head = read_store(world.database)
    assert (documents, head) == (world.documents(world.head, frozenset()), world.head)
    for client in clients:
        assert client.subscription is not None, client
        assert client.subscription.is_live, client
        assert client.store_read is None, client
        assert client.copy == world.documents(head, client.collections, client.query), client
        client.disconnect()
    for seen in set().union(*(client.seen for client in clients)):
        event(seen)  # --hypothesis-show-statistics: how often each event and outcome occurs


FOLLOWER, SNAPSHOTTER = ClientSpec(frozenset(), False, True), ClientSpec(frozenset(), True, True)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Rare paths, so that every run takes them. Both clients go live, then overflow their
# buffer of 1; the delete after their position is purged: SLOW_CONSUMER.
@example(
    Scenario(
        [FOLLOWER, SNAPSHOTTER],
        [
            Write("a", 0, False),
            Read(0, EVERYTHING),
            Read(1, EVERYTHING),
            Write("a", 1, False),
            Write("b", 1, False),
            Write("a", 0, True),
            Write("c", 1, False),
            Purge(),
            Read(0, 5),
            Read(1, 5),
        ],
        purges=True,
        buffer_size=1,
        replay_log_size=1,
        heartbeat_interval=DAY,
    )
)
# After a restart, a delete made during their catch-up or snapshot is purged before they
# read its next page: HISTORY_COMPACTED in the middle of a store read.
@example(
    Scenario(
        [FOLLOWER, SNAPSHOTTER],
        [
            Write("a", 0, False),
            Write("b", 0, False),
            Write("c", 0, False),
            Restart(),
            Read(0, 2),
            Read(1, 2),
            Write("b", 0, True),
            Purge(),
            Read(0, 5),
            Read(1, 5),
        ],
        purges=True,
        buffer_size=4,
        replay_log_size=1,
        heartbeat_interval=DAY,
    )
)
@given(scenarios())
async def test_every_client_converges_to_the_store_and_explains_every_gap(
    scenario: Scenario,
) -> None:
    """Whatever the interleaving of writes, reads, disconnects, resumes, restarts and
    purges: each client receives its events in order with every gap explained, a RESYNC
    only once a tombstone after its position was purged, and its copy equals the store
    after every catch-up and snapshot, and in the end."""
    with fresh_data_dir() as data_dir, trio.fail_after(DEADLINE):
        world = World(data_dir / DATABASE_FILE, scenario.purges)
        clients = [Client(str(i), spec, world) for i, spec in enumerate(scenario.clients)]
        await play(scenario, world, clients)


async def test_a_resync_reports_the_floor_that_caused_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RESYNC in the middle of a catch-up reports a catch-up floor above the catch-up's
    position, even when a purge has committed but not yet updated the floor in memory."""
    purge = SQLiteStore.purge_tombstones

    def purge_all_then_lag(store: SQLiteStore, deleted_before: float, limit: int) -> int:
        # As if the purge thread were descheduled between its COMMIT and its assignment.
        floor = store.catch_up_floor
        purged = purge(store, float("inf"), limit)
        store._catch_up_floor = floor
        return purged

    with fresh_data_dir() as data_dir, trio.fail_after(DEADLINE):
        async with open_node(NodeConfig(data_dir=data_dir, replay_log_size=1)) as node:
            for doc_id in ("d0", "d1", "d2"):
                await node.put("a", doc_id, "{}")
            with node.subscribe(["a"], since=0) as subscription:  # older than the replay log
                (begin,) = await subscription.next_batch(1)
                (first,) = await subscription.next_batch(1)  # the catch-up's first page
                await node.delete("a", "d1")
                monkeypatch.setattr(SQLiteStore, "purge_tombstones", purge_all_then_lag)
                await node.purge_expired_tombstones()
                (resync,) = await subscription.next_batch(1)
    assert (begin.change_type, first.sequence) == (ChangeType.CATCH_UP_BEGIN, 1)
    change = DocumentChange.FromString(resync.encoded)
    assert change.change_type == ChangeType.RESYNC
    assert change.catch_up_floor > first.sequence, change
