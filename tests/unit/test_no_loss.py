"""The subscriber promise, checked on random interleavings (hypothesis).

Writers put and delete documents in three collections while three subscribers, each with its
own filter, read at their own pace: some keep up, some fall behind their tiny buffers, some
fall behind the tiny replay log too. Whatever happens, each subscriber that applies its
events, and re-lists when told to by a RESYNC, ends with exactly the store's documents, and
every sequence it did not receive is explained by its filter or by a RESYNC.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peat_sync.generated.peat.sidecar.v1 import ChangeType, DocumentChange
from peat_sync.node import NodeConfig, Subscription, open_node
from peat_sync.store.sqlite import DATABASE_FILE

COLLECTIONS = ("a", "b", "c")
FILTERS: tuple[frozenset[str], ...] = (frozenset(), frozenset({"a"}), frozenset({"b", "c"}))
DEADLINE = 60

Key = tuple[str, str]


def stored_documents(database: Path, collections: frozenset[str]) -> dict[Key, str]:
    """The store's live documents in `collections` (empty: all), read directly from the file."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT collection, doc_id, json_data FROM documents WHERE json_data IS NOT NULL"
        ).fetchall()
    return {(c, d): j for c, d, j in rows if not collections or c in collections}


@dataclass
class Reader:
    """One subscriber that reads only as many events as the test allows it to."""

    subscription: Subscription
    collections: frozenset[str]
    database: Path
    state: dict[Key, str] = field(default_factory=dict)
    # Delivered sequences in order; a RESYNC is recorded as its head, negated.
    delivered: list[int] = field(default_factory=list)
    budget: int = 0
    catching_up: bool = False
    wake: trio.Event = field(default_factory=trio.Event)

    def allow(self, events: int) -> None:
        self.budget += events
        self.wake.set()

    async def run(self) -> None:
        while True:
            while self.budget == 0:
                self.wake = trio.Event()
                await self.wake.wait()
            events = await self.subscription.next_batch(self.budget)
            self.budget -= len(events)
            for event in events:
                self.apply(DocumentChange.FromString(event.encoded))

    def apply(self, change: DocumentChange) -> None:
        key = (change.collection, change.doc_id)
        if change.change_type == ChangeType.HEARTBEAT:
            return
        if change.change_type == ChangeType.CATCH_UP_BEGIN:
            self.catching_up = True
            return
        if change.change_type == ChangeType.CATCH_UP_END:
            # Everything up to the end of a catch-up is accounted for by the catch-up.
            self.catching_up = False
            self.delivered.append(-change.sequence)
            return
        if change.change_type == ChangeType.RESYNC:
            self.delivered.append(-change.sequence)
            # Re-list: read synchronously, so that "every task is blocked" still means the
            # readers are done.
            self.state = stored_documents(self.database, self.collections)
        elif change.change_type == ChangeType.DELETE:
            if not self.catching_up:
                self.delivered.append(change.sequence)
            self.state.pop(key, None)
        else:
            assert change.json_data is not None
            if not self.catching_up:
                self.delivered.append(change.sequence)
            self.state[key] = change.json_data

    def check_gaps(self, collection_at: dict[int, str]) -> None:
        """Every sequence not delivered belongs to another collection, or lies before a
        RESYNC's head."""
        wanted = self.collections or frozenset(COLLECTIONS)
        position = 0
        for entry in self.delivered:
            if entry < 0:  # a RESYNC: everything up to its head is accounted for by a re-list
                assert -entry >= position, (self.delivered, position)
                position = -entry
                continue
            assert entry > position, f"sequence {entry} after {position}: out of order"
            skipped = [s for s in range(position + 1, entry) if collection_at[s] in wanted]
            assert not skipped, f"sequences {skipped} were lost silently"
            position = entry
        head = max(collection_at, default=0)
        skipped = [s for s in range(position + 1, head + 1) if collection_at[s] in wanted]
        assert not skipped, f"sequences {skipped} were never delivered"


async def settle(readers: list[Reader]) -> None:
    """Wait until every reader has used its budget or waits for live events. A catch-up
    reads the store on a worker thread, and a task waiting for a thread counts as blocked,
    so blocked tasks alone do not mean the readers are done."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if all(reader.budget == 0 or reader.subscription.is_live for reader in readers):
            return
        await trio.sleep(0.001)


@contextmanager
def fresh_data_dir() -> Iterator[Path]:
    # One store per example: tmp_path is shared by all the examples of a test.
    with tempfile.TemporaryDirectory(prefix="peat-no-loss-") as directory:
        yield Path(directory)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(COLLECTIONS), st.integers(0, 4)),
        st.tuples(st.just("delete"), st.sampled_from(COLLECTIONS), st.integers(0, 4)),
        st.tuples(st.just("read"), st.integers(0, len(FILTERS) - 1), st.integers(1, 8)),
    ),
    min_size=10,
    max_size=80,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=operations,
    buffer_size=st.integers(1, 4),
    replay_log_size=st.integers(1, 12),
)
async def test_every_subscriber_converges_to_the_store_and_explains_every_gap(
    ops: list[tuple[str, str | int, int]], buffer_size: int, replay_log_size: int
) -> None:
    with fresh_data_dir() as data_dir, trio.fail_after(DEADLINE):
        config = NodeConfig(
            data_dir=data_dir,
            broadcast_buffer_size=buffer_size,
            replay_log_size=replay_log_size,
        )
        database = data_dir / DATABASE_FILE
        collection_at: dict[int, str] = {}
        async with open_node(config) as node, trio.open_nursery() as nursery:
            readers = [
                Reader(node.subscribe(collections, since=0), collections, database)
                for collections in FILTERS
            ]
            for reader in readers:
                nursery.start_soon(reader.run)
            for kind, target, number in ops:
                if kind == "read":
                    readers[int(target)].allow(number)
                elif kind == "put":
                    sequence = await node.put(str(target), f"d{number}", f'{{"n": {number}}}')
                    collection_at[sequence] = str(target)
                else:
                    sequence = await node.delete(str(target), f"d{number}")
                    if sequence:
                        collection_at[sequence] = str(target)
                await settle(readers)
            for reader in readers:
                reader.allow(10**9)
            await settle(readers)
            for reader in readers:
                assert reader.state == stored_documents(database, reader.collections)
                reader.check_gaps(collection_at)
                reader.subscription.close()
            nursery.cancel_scope.cancel()
