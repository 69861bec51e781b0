"""The producer, the node's single writer: concurrent writers get distinct sequences in one
order, a write the store refuses fails alone, not with the writes batched with it (a failed
expected_sequence included), and a full disk fails each writer with an error that says so."""

from __future__ import annotations

import functools
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from peat_sync.node import (
    InvalidRequest,
    StoreUnavailable,
)
from peat_sync.node.feed import Committed
from peat_sync.node.producer import Producer
from peat_sync.node.stats import NodeStats
from peat_sync.store import Change, Mutation, PreconditionFailed, SQLiteStore
from peat_sync.store.sqlite import DATABASE_FILE
from tests.helpers.nodes import (
    DEADLINE,
    read_until,
    running_node,
)
from tests.helpers.stores import fill_the_disk, free_space


class PoisonedStore(SQLiteStore):
    """A real store that refuses any commit holding the doc_id "poison", as a store refuses
    a write it cannot take (a constraint, a value it cannot encode)."""

    def commit(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        if any(mutation.doc_id == "poison" for mutation in mutations):
            raise sqlite3.IntegrityError("refused")
        return super().commit(mutations)


async def test_one_bad_write_does_not_fail_the_writes_batched_with_it(tmp_path: Path) -> None:
    """Writers queued together are committed in one batch; a write the store refuses must
    fail alone, not take the good ones of its batch down with it."""
    store = PoisonedStore.open(tmp_path)
    producer = Producer(store, max_batch=100, stats=NodeStats())
    publish, published = trio.open_memory_channel[Committed](16)
    outcomes: dict[str, object] = {}

    async def write(doc: str) -> None:
        try:
            outcomes[doc] = await producer.write([Mutation("c", doc, "{}")])
        except StoreUnavailable as exc:
            outcomes[doc] = exc

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run, publish)
            async with trio.open_nursery() as writers:
                for doc in ["good0", "good1", "poison", "good2"]:
                    writers.start_soon(write, doc)
            producer.close()
    store.close()

    assert isinstance(outcomes.pop("poison"), StoreUnavailable)
    sequences = sorted(change[0].sequence for change in outcomes.values())  # type: ignore[index]
    assert sequences == [1, 2, 3]
    published_sequences = []
    while True:
        try:
            published_sequences += [event.sequence for event in published.receive_nowait().events]
        except trio.EndOfChannel:
            break
    assert published_sequences == [1, 2, 3]


class CountingStore(SQLiteStore):
    """A real store that records how many mutations each commit was given."""

    commits: list[int]

    def commit(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        self.commits.append(len(mutations))
        return super().commit(mutations)


async def test_a_failed_precondition_reaches_only_its_own_writer_unchanged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Writers queued together share a commit; when one of them expected a sequence the
    document is no longer at, the batch is retried a writer at a time: the others commit,
    in their order, and that writer alone gets the store's PreconditionFailed, as the store
    raised it. It is the writer's conflict, not the store's failure: nothing is logged, and
    no commit failure is counted."""
    store = CountingStore.open(tmp_path)
    store.commits = []
    stats = NodeStats()
    producer = Producer(store, max_batch=100, stats=stats)
    publish, published = trio.open_memory_channel[Committed](16)
    outcomes: dict[str, list[Change | None] | BaseException] = {}
    writes = {
        "first": Mutation("c", "first", "{}"),
        # The document does not exist: the writer expected it at sequence 7.
        "stale": Mutation("c", "doc", "{}", expected_sequence=7),
        "create": Mutation("c", "doc", '{"v":1}', expected_sequence=0),
        # Expected what "create" leaves it at, 2: "stale" took no sequence before it.
        "update": Mutation("c", "doc", '{"v":2}', expected_sequence=2),
        # Raced "create" for the same absent document, and lost.
        "also_create": Mutation("c", "doc", '{"v":0}', expected_sequence=0),
    }

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            # Queued before the producer runs: one batch, in this order.
            for name, mutation in writes.items():
                producer.write_nowait([mutation], functools.partial(outcomes.__setitem__, name))
            await nursery.start(producer.run, publish)
            producer.close()
    store.close()

    assert store.commits == [5, 1, 1, 1, 1, 1], "the batch, then each write alone"
    stale, lost = outcomes.pop("stale"), outcomes.pop("also_create")
    assert type(stale) is PreconditionFailed
    assert (stale.collection, stale.doc_id, stale.expected, stale.current) == ("c", "doc", 7, 0)
    assert type(lost) is PreconditionFailed
    assert (lost.expected, lost.current) == (0, 3)
    assert outcomes == {
        "first": [Change(1, "c", "first", "{}")],
        "create": [Change(2, "c", "doc", '{"v":1}')],
        "update": [Change(3, "c", "doc", '{"v":2}')],
    }
    assert stats.commit_failures == 0
    assert [r for r in caplog.records if r.name == "peat_sync.producer"] == []
    published_sequences = []
    while True:
        try:
            published_sequences += [event.sequence for event in published.receive_nowait().events]
        except trio.EndOfChannel:
            break
    assert published_sequences == [1, 2, 3]


async def test_node_writes_take_an_expected_sequence(tmp_path: Path) -> None:
    """put and delete, waiting or not, pass expected_sequence to the store; a delete of a
    document that does not exist, expected to not exist, commits nothing, as a plain delete
    of it does."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            assert await node.put("c", "d", "{}", expected_sequence=0) == 1
            with pytest.raises(PreconditionFailed):
                await node.put("c", "d", "{}", expected_sequence=0)
            assert await node.put("c", "d", '{"v":2}', expected_sequence=1) == 2
            with pytest.raises(PreconditionFailed):
                await node.delete("c", "d", expected_sequence=1)
            assert await node.delete("c", "d", expected_sequence=2) == 3
            assert await node.delete("c", "d", expected_sequence=0) == 0
            assert await node.delete("c", "never", expected_sequence=0) == 0
            with pytest.raises(InvalidRequest, match="expected_sequence is -1"):
                await node.put("c", "d", "{}", expected_sequence=-1)

            outcomes: list[int | BaseException] = []
            done = trio.Event()

            def record(outcome: int | BaseException) -> None:
                outcomes.append(outcome)
                if len(outcomes) == 2:
                    done.set()

            node.put_nowait("c", "d", "{}", record, expected_sequence=2)
            node.delete_nowait("c", "d", record, expected_sequence=1)
            await done.wait()
            assert node.head_sequence == 3
    assert all(type(outcome) is PreconditionFailed for outcome in outcomes), outcomes


async def test_concurrent_writers_get_distinct_increasing_sequences(tmp_path: Path) -> None:
    """Many writers at once: every put gets its own sequence, each writer sees its own puts
    in increasing order, and the feed delivers them all in sequence order."""
    writers, puts_each = 40, 5
    total = writers * puts_each
    sequences_of: dict[int, list[int]] = {}
    doc_at: dict[int, str] = {}

    async def writer(number: int) -> None:
        mine = sequences_of.setdefault(number, [])
        for i in range(puts_each):
            name = f"w{number}-{i}"
            sequence = await node.put("c", name, f'{{"writer": {number}}}')
            mine.append(sequence)
            doc_at[sequence] = name

    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, max_batch=16) as node:
            with node.subscribe(since=0) as subscription:
                async with trio.open_nursery() as nursery:
                    for number in range(writers):
                        nursery.start_soon(writer, number)
                changes = await read_until(subscription, total)

            assert node.head_sequence == total
            assert len(await node.list_ids("c")) == total

    assert sorted(doc_at) == list(range(1, total + 1))
    for mine in sequences_of.values():
        assert mine == sorted(mine)
        assert len(set(mine)) == puts_each
    assert [c.sequence for c in changes] == list(range(1, total + 1))
    assert [c.doc_id for c in changes] == [doc_at[s] for s in range(1, total + 1)]


async def test_a_full_disk_fails_each_writer_saying_so_and_writes_resume_once_freed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """On a full disk each writer gets StoreUnavailable saying the disk is full (not that a
    ROLLBACK failed), the log names the store file, each failed write is counted for the
    metrics, and the node writes again, numbering on, once there is room."""
    big = '{"pad": "' + "x" * 100_000 + '"}'
    failures: list[str] = []

    async def write(doc: str) -> None:
        try:
            await node.put("c", doc, big)
        except StoreUnavailable as exc:
            failures.append(str(exc))

    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            store = node._store
            assert isinstance(store, SQLiteStore)
            assert await node.put("c", "before", "{}") == 1
            fill_the_disk(store)
            async with trio.open_nursery() as writers:
                for number in range(3):
                    writers.start_soon(write, f"d{number}")
            assert node.stats.commit_failures == 3
            free_space(store)
            assert await node.put("c", "after", "{}") == 2
            assert await node.list_ids("c") == ["after", "before"]

    path = (tmp_path / "data" / DATABASE_FILE).absolute()
    full = (
        f"the disk holding {path} is full (SQLITE_FULL: database or disk is full): free space"
        " on it; writes succeed again once there is room, without a restart"
    )
    assert failures == [f"the store could not commit the write: {full}"] * 3
    logged = [
        record.getMessage()
        for record in caplog.records
        if record.name == "peat_sync.producer" and record.levelno == logging.ERROR
    ]
    assert logged == [f"commit of 1 changes failed, none stored: {full}"] * 3
