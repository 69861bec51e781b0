"""One subscriber's view of the feed: where it starts (the head; a `since` replayed from the
replay log, caught up from the store, or answered with a RESYNC), how a stalled subscriber
heals, heartbeats, snapshots, and NodeClosed when the node goes away.

Commits and reads run on worker threads, so most tests keep the real clock and a generous
deadline, and use `wait_all_tasks_blocked()` to let the feed settle before asserting.
`LoneFeed` runs the feed without a producer, for tests that decide when it sees a commit.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from peat_sync.generated.peat.sidecar.v1 import (
    ChangeType,
    DocumentChange,
    QueryEq,
    ResyncReason,
    SubscriptionQuery,
)
from peat_sync.node import (
    ChangeEvent,
    Node,
    NodeClosed,
    Subscription,
)
from peat_sync.node.feed import ChangeFeed, Committed
from peat_sync.node.history import History
from peat_sync.node.query import compile_query
from peat_sync.node.replay_log import ReplayLog
from peat_sync.node.stats import NodeStats
from peat_sync.store import Change, Mutation, SQLiteStore
from tests.helpers.nodes import (
    DEADLINE,
    decode,
    doc_id,
    read_until,
    read_until_node_closed,
    running_node,
    stall_while_live,
    stored,
)

# Where a subscription starts ---------------------------------------------------------------


async def test_subscribing_without_since_starts_at_the_current_head(tmp_path: Path) -> None:
    """Without `since`, a subscriber gets only changes committed after it subscribed."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("c", "old", "{}")
            with node.subscribe() as subscription:
                await node.put("c", "new", "{}")
                changes = await read_until(subscription, 2)

    assert [(c.doc_id, c.sequence) for c in changes] == [("new", 2)]


async def test_resume_replays_then_goes_live_without_gap_or_duplicate(tmp_path: Path) -> None:
    """Resuming from `since` replays since+1.. from the replay log and hands over to live
    events while writers keep committing: every sequence exactly once, in order."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            for sequence in range(1, 21):
                await node.put("c", doc_id(sequence), "{}")

            async def keep_writing() -> None:
                for sequence in range(21, 61):
                    await node.put("c", doc_id(sequence), "{}")

            with node.subscribe(["c"], since=5) as subscription:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(keep_writing)
                    changes = await read_until(subscription, 60, limit=3)

    assert [c.sequence for c in changes] == list(range(6, 61))
    assert [c.doc_id for c in changes] == [doc_id(s) for s in range(6, 61)]
    assert all(c.change_type == ChangeType.UPSERT for c in changes)


@dataclass
class LoneFeed:
    """The feed without a producer, over a real store: the test commits to the store and hands
    the batches to the feed itself, so it decides when the feed sees a commit."""

    store: SQLiteStore
    feed: ChangeFeed
    publisher: trio.MemorySendChannel[Committed]

    def subscribe(self, collections: frozenset[str] | None = None) -> Subscription:
        return self.feed.subscribe(collections, since=None, epoch=None, snapshot=False, peer="test")

    def commit(self, collection: str, *doc_ids: str) -> list[ChangeEvent]:
        """Commit puts to the store only; the feed sees them once they are published."""
        changes = self.store.commit([Mutation(collection, d, "{}") for d in doc_ids])
        return [ChangeEvent.from_change(change) for change in changes if change is not None]

    async def publish(self, events: list[ChangeEvent]) -> None:
        await self.publisher.send(Committed(events, events[-1].sequence))


@asynccontextmanager
async def lone_feed(
    tmp_path: Path, heartbeat_interval: float = DEADLINE
) -> AsyncIterator[LoneFeed]:
    store = stored(tmp_path)
    feed = ChangeFeed(
        ReplayLog(max_entries=100, max_bytes=1 << 20, head=0),
        History(store, trio.CapacityLimiter(1)),
        buffer_size=16,
        heartbeat_interval=heartbeat_interval,
        max_subscribers=100,
        stats=NodeStats(),
    )
    publisher, published = trio.open_memory_channel[Committed](4)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run, published)
            yield LoneFeed(store, feed, publisher)
            await publisher.aclose()
    finally:
        store.close()


async def test_events_in_flight_when_a_subscription_starts_are_not_delivered(
    tmp_path: Path,
) -> None:
    """A subscription takes its start from the committed head, which can be ahead of the
    feed while a committed batch is still on its way from the producer. Those in-flight
    events reach the new subscription's channel and must be dropped, not delivered."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path) as lone, trio.open_nursery() as nursery:
            in_flight = lone.commit("c", *(doc_id(sequence) for sequence in (1, 2, 3)))

            async def producer() -> None:
                await trio.testing.wait_all_tasks_blocked()  # the subscription waits, live
                await lone.publish(in_flight)
                await lone.publish(lone.commit("c", doc_id(4)))

            with lone.subscribe() as subscription:
                nursery.start_soon(producer)
                changes = await read_until(subscription, 4)

    assert [(c.doc_id, c.sequence) for c in changes] == [("d004", 4)]


async def test_since_ahead_of_head_gets_a_sequence_ahead_resync(tmp_path: Path) -> None:
    """A `since` beyond the newest change gets a RESYNC carrying the head, then live events."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("c", "a", "{}")
            await node.put("c", "b", "{}")
            with node.subscribe(since=10) as subscription:
                (resync,) = [decode(event) for event in await subscription.next_batch(10)]
                await node.put("c", "c", "{}")
                live = await read_until(subscription, 3)

    assert resync.change_type == ChangeType.RESYNC
    assert resync.resync_reason == ResyncReason.SEQUENCE_AHEAD
    assert resync.sequence == 2
    assert "10" in resync.message
    assert [(c.doc_id, c.sequence) for c in live] == [("c", 3)]


def kinds(changes: Sequence[DocumentChange]) -> list[tuple[ChangeType, str, int]]:
    return [(change.change_type, change.doc_id, change.sequence) for change in changes]


async def test_since_older_than_the_replay_log_catches_up_from_the_store(tmp_path: Path) -> None:
    """A `since` the replay log no longer covers gets a catch-up: the latest state of each
    document changed after it (deletes included, intermediate states skipped) between
    CATCH_UP_BEGIN and CATCH_UP_END at the head, then live events."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, replay_log_size=3) as node:
            await node.put("c", "a", '{"v": 1}')  # 1
            await node.put("c", "b", "{}")  # 2
            await node.put("c", "a", '{"v": 2}')  # 3
            await node.delete("c", "b")  # 4
            await node.put("c", "c", "{}")  # 5
            for sequence in range(6, 11):
                await node.put("other", doc_id(sequence), "{}")
            await trio.testing.wait_all_tasks_blocked()
            assert node.replay_floor == 7
            with node.subscribe(["c"], since=1) as subscription:
                caught_up = await read_until(subscription, 10)
                await node.put("c", "d", "{}")
                live = await read_until(subscription, 11)

    assert kinds(caught_up) == [
        (ChangeType.CATCH_UP_BEGIN, "", 1),
        (ChangeType.UPSERT, "a", 3),
        (ChangeType.DELETE, "b", 4),
        (ChangeType.UPSERT, "c", 5),
        (ChangeType.CATCH_UP_END, "", 10),
    ]
    assert caught_up[1].json_data == '{"v": 2}'
    assert "the replay log starts after sequence 7" in caught_up[0].message
    assert kinds(live) == [(ChangeType.UPSERT, "d", 11)]


async def test_since_older_than_the_purged_tombstones_gets_a_history_compacted_resync(
    tmp_path: Path,
) -> None:
    """Once tombstones after `since` are purged, no catch-up can be exact: RESYNC
    HISTORY_COMPACTED at the head, carrying the floors, then live events."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, replay_log_size=3, tombstone_retention=0) as node:
            for sequence in range(1, 11):
                await node.put("c", doc_id(sequence), "{}")
            await node.delete("c", doc_id(1))  # 11
            await node.purge_expired_tombstones()  # the retention task may have been first
            assert node.catch_up_floor == 11
            with node.subscribe(since=2) as subscription:
                (resync,) = [decode(event) for event in await subscription.next_batch(10)]
                await node.put("c", doc_id(12), "{}")
                live = await read_until(subscription, 12)

    assert resync.change_type == ChangeType.RESYNC
    assert resync.resync_reason == ResyncReason.HISTORY_COMPACTED
    assert resync.sequence == 11
    assert (resync.catch_up_floor, resync.replay_floor) == (11, 8)
    assert resync.epoch == node.epoch
    assert "re-list" in resync.message
    assert [c.sequence for c in live] == [12]


async def test_since_at_the_replay_log_floor_is_replayed_exactly(tmp_path: Path) -> None:
    """The oldest `since` the log still covers is replayed, not resynced."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, replay_log_size=3) as node:
            for sequence in range(1, 11):
                await node.put("c", doc_id(sequence), "{}")
            await trio.testing.wait_all_tasks_blocked()
            with node.subscribe(since=7) as subscription:
                changes = await read_until(subscription, 10)

    assert [(c.change_type, c.sequence) for c in changes] == [
        (ChangeType.UPSERT, 8),
        (ChangeType.UPSERT, 9),
        (ChangeType.UPSERT, 10),
    ]


# Slow consumers ----------------------------------------------------------------------------


def lag_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "peat_sync.subscription" and record.levelno == logging.WARNING
    ]


def assert_lag_logged(caplog: pytest.LogCaptureFixture, slow: Subscription, outcome: str) -> None:
    """One lag warning names the subscriber, its collection, what `commit_alternating(1, 40)`
    made it miss after its buffer of 4, and `outcome`."""
    (warning,) = lag_warnings(caplog)
    assert slow.name in warning
    assert "(collections: c)" in warning
    assert "16 events: sequences 9..39" in warning
    assert "doc_ids 'd009'..'d039'" in warning
    assert outcome in warning


async def commit_alternating(node: Node, first: int, last: int) -> None:
    """Commit sequences first..last: odd ones to "c", even ones to "other"."""
    for sequence in range(first, last + 1):
        collection = "c" if sequence % 2 else "other"
        assert await node.put(collection, doc_id(sequence), "{}") == sequence


async def test_a_slow_subscriber_heals_from_the_replay_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber that stops reading while more than its buffer is committed loses nothing:
    it drains its buffer, replays the rest from the log, then goes live again. The lag is
    logged with the subscriber, its collections, and the sequences and doc_ids it missed."""
    caplog.set_level(logging.WARNING)
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, broadcast_buffer_size=4, replay_log_size=1000) as node:
            with node.subscribe(["c"]) as slow:
                await stall_while_live(slow)
                await commit_alternating(node, 1, 40)
                await trio.testing.wait_all_tasks_blocked()
                assert node.feed.lag_events == 1

                caught_up = await read_until(slow, 39)
                await node.put("c", doc_id(41), "{}")
                live = await read_until(slow, 41)

    assert [c.sequence for c in caught_up] == list(range(1, 40, 2))
    assert [c.sequence for c in live] == [41]
    assert all(c.change_type == ChangeType.UPSERT for c in caught_up)
    assert_lag_logged(caplog, slow, "replaying them from the replay log")


async def test_a_slow_subscriber_beyond_the_replay_log_catches_up_from_the_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the log no longer holds what a stalled subscriber missed, it gets what it had
    buffered, then a catch-up from the store, then live events. A fast subscriber alongside
    it is not held back and receives every event."""
    caplog.set_level(logging.WARNING)
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, broadcast_buffer_size=4, replay_log_size=3) as node:
            with node.subscribe(["c"]) as slow, node.subscribe() as fast:
                async with trio.open_nursery() as nursery:
                    fast_changes: list[DocumentChange] = []

                    async def read_fast() -> None:
                        fast_changes.extend(await read_until(fast, 41))

                    nursery.start_soon(read_fast)
                    await stall_while_live(slow)
                    await commit_alternating(node, 1, 40)
                    await trio.testing.wait_all_tasks_blocked()

                    caught_up = await read_until(slow, 40)
                    await node.put("c", doc_id(41), "{}")
                    live = await read_until(slow, 41)

            assert node.feed.lag_events == 1

    assert kinds(caught_up) == [
        *[(ChangeType.UPSERT, doc_id(s), s) for s in (1, 3, 5, 7)],
        (ChangeType.CATCH_UP_BEGIN, "", 7),
        *[(ChangeType.UPSERT, doc_id(s), s) for s in range(9, 40, 2)],
        (ChangeType.CATCH_UP_END, "", 40),
    ]
    assert [c.sequence for c in live] == [41]
    assert [c.sequence for c in fast_changes] == list(range(1, 42))
    assert_lag_logged(caplog, slow, "catching up from the store")


async def test_a_slow_subscriber_beyond_the_kept_history_gets_a_slow_consumer_resync(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """When the store's tombstones after its position are purged too, a stalled subscriber
    gets what it had buffered, then RESYNC SLOW_CONSUMER at the head, then live events."""
    caplog.set_level(logging.WARNING)
    with trio.fail_after(DEADLINE):
        async with running_node(
            tmp_path, broadcast_buffer_size=4, replay_log_size=3, tombstone_retention=0
        ) as node:
            with node.subscribe(["c"]) as slow:
                await stall_while_live(slow)
                await commit_alternating(node, 1, 40)
                await node.delete("c", doc_id(1))  # 41
                await node.purge_expired_tombstones()
                assert node.catch_up_floor == 41
                await trio.testing.wait_all_tasks_blocked()

                buffered = [decode(event) for event in await slow.next_batch(100)]
                (resync,) = [decode(event) for event in await slow.next_batch(100)]
                await node.put("c", doc_id(42), "{}")
                live = await read_until(slow, 42)

    assert [c.sequence for c in buffered] == [1, 3, 5, 7]
    assert resync.change_type == ChangeType.RESYNC
    assert resync.resync_reason == ResyncReason.SLOW_CONSUMER
    assert resync.sequence == 41
    assert [c.sequence for c in live] == [42]
    (warning,) = lag_warnings(caplog)
    assert "so the subscriber gets a RESYNC" in warning


# Heartbeats and snapshots ------------------------------------------------------------------


async def test_an_idle_stream_gets_a_heartbeat_at_the_feeds_head_every_interval(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """The stream opens with a heartbeat at its start; then, with nothing for its collection
    while other collections change, it gets one heartbeat per interval whose sequence is the
    newest change the feed handled, so a quiet subscriber's resume point advances."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path, heartbeat_interval=5) as lone:
            await lone.publish(lone.commit("busy", "b1", "b2", "b3"))
            await trio.testing.wait_all_tasks_blocked()
            with lone.subscribe(frozenset({"quiet"})) as subscription:
                (opening,) = [decode(event) for event in await subscription.next_batch(10)]
                started = trio.current_time()
                await lone.publish(lone.commit("busy", "b4"))
                (beat,) = [decode(event) for event in await subscription.next_batch(10)]
                waited = trio.current_time() - started
                (second,) = [decode(event) for event in await subscription.next_batch(10)]

    assert (opening.change_type, opening.sequence, opening.epoch) == (
        ChangeType.HEARTBEAT,
        3,
        lone.store.epoch,
    )
    assert (beat.change_type, beat.sequence, beat.replay_floor) == (ChangeType.HEARTBEAT, 4, 0)
    assert waited == 5
    assert (second.change_type, second.sequence) == (ChangeType.HEARTBEAT, 4)
    assert subscription.position == 4


def copy_after(changes: Sequence[DocumentChange]) -> dict[str, str]:
    """A client's copy after applying `changes` from SNAPSHOT_BEGIN on."""
    copy: dict[str, str] = {}
    for change in changes:
        if change.change_type == ChangeType.SNAPSHOT_BEGIN:
            copy.clear()
        elif change.change_type == ChangeType.UPSERT:
            assert change.json_data is not None
            copy[change.doc_id] = change.json_data
        elif change.change_type == ChangeType.DELETE:
            copy.pop(change.doc_id, None)
    return copy


async def test_a_snapshot_read_in_pages_while_writes_go_on_ends_consistent(
    tmp_path: Path,
) -> None:
    """A snapshot is read a page at a time while documents already sent, and some not yet
    sent, change between pages. The changed documents come again with their newer state,
    a delete of a sent document comes as a DELETE, and at CATCH_UP_END the copy equals the
    store at that sequence. Live changes follow."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            for number in range(10):
                await node.put("c", f"k{number}", f'{{"v": {number}}}')
            await node.put("other", "x", "{}")
            await node.delete("c", "k9")  # a tombstone from before the snapshot: never sent
            writes = [
                partial(node.put, "c", "k0", '{"v": "new"}'),  # already sent
                partial(node.delete, "c", "k1"),  # already sent
                partial(node.put, "c", "k8", '{"v": "new"}'),  # not sent yet
                partial(node.put, "c", "k10", "{}"),  # created during the snapshot
            ]
            with node.subscribe(["c"], snapshot=True) as subscription:
                changes: list[DocumentChange] = []
                while not changes or changes[-1].change_type != ChangeType.CATCH_UP_END:
                    batch = [decode(event) for event in await subscription.next_batch(2)]
                    changes.extend(batch)
                    if writes and batch[0].change_type == ChangeType.UPSERT:
                        await writes.pop(0)()  # between two pages
                end = changes[-1].sequence
                assert subscription.resume_point == end
                await node.put("c", "live", "{}")
                live = await read_until(subscription, end + 1)
            documents = {d.doc_id: d.json_data for d in await node.list_documents("c")}

    assert changes[0].change_type == ChangeType.SNAPSHOT_BEGIN
    assert changes[0].sequence == 12
    sent = [(c.change_type, c.doc_id) for c in changes[1:-1]]
    assert sent[:2] == [(ChangeType.UPSERT, "k0"), (ChangeType.UPSERT, "k1")]
    assert (ChangeType.DELETE, "k1") in sent
    assert (ChangeType.DELETE, "k9") not in sent
    assert sent.count((ChangeType.UPSERT, "k0")) == 2
    assert sent.count((ChangeType.UPSERT, "k8")) == 1, "k8 changed before it was sent"
    assert [c.sequence for c in changes[1:-1]] == sorted(c.sequence for c in changes[1:-1])
    assert end == 16
    assert [(c.doc_id, c.sequence) for c in live] == [("live", 17)]
    del documents["live"]
    assert copy_after(changes) == documents


async def test_a_snapshot_subscriber_mid_snapshot_has_no_resume_point(tmp_path: Path) -> None:
    """Until CATCH_UP_END, a partial snapshot cannot be resumed: only a new snapshot helps."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            for number in range(5):
                await node.put("c", f"k{number}", "{}")
            with node.subscribe(["c"], snapshot=True) as subscription:
                await subscription.next_batch(2)
                assert subscription.resume_point is None


async def test_events_buffered_when_a_heartbeat_falls_due_come_before_it(
    tmp_path: Path,
) -> None:
    """A heartbeat's timeout can fire just as the feed buffers events for the subscriber
    (after the timeout, before the subscriber runs again). Those events are delivered, and
    the heartbeat never claims a position past them. An interval of zero makes every wait
    time out at once, which holds that moment open."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path, heartbeat_interval=0) as lone:
            with lone.subscribe() as subscription:
                opening = [decode(event) for event in await subscription.next_batch(10)]
                idle = [decode(event) for event in await subscription.next_batch(10)]
                await lone.publish(lone.commit("c", "d1", "d2", "d3"))
                await trio.testing.wait_all_tasks_blocked()  # buffered in its channel
                buffered = [decode(event) for event in await subscription.next_batch(10)]
                after = [decode(event) for event in await subscription.next_batch(10)]

    assert [(c.change_type, c.sequence) for c in opening + idle] == [
        (ChangeType.HEARTBEAT, 0),
        (ChangeType.HEARTBEAT, 0),
    ]
    assert [(c.change_type, c.sequence) for c in buffered] == [
        (ChangeType.UPSERT, 1),
        (ChangeType.UPSERT, 2),
        (ChangeType.UPSERT, 3),
    ]
    assert [(c.change_type, c.sequence) for c in after] == [(ChangeType.HEARTBEAT, 3)]


# When the node closes ----------------------------------------------------------------------


async def test_reading_a_subscription_after_the_node_closed_raises_node_closed(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """`next_batch` promises NodeClosed once the node shuts down, also for a subscription
    that was replaying (or had not read yet) at that moment."""
    # The node commits on worker threads: follow real time and never jump while it is open.
    autojump_clock.rate = 1.0
    autojump_clock.autojump_threshold = math.inf
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("c", "d", "{}")
            subscription = node.subscribe(since=0)
        # No thread work is left: a read that blocks now blocks forever, so jump to the end.
        autojump_clock.autojump_threshold = 0
        with subscription, pytest.raises(NodeClosed):
            await subscription.next_batch(10)


async def test_closing_the_node_during_a_catch_up_ends_it_with_node_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription reading a catch-up page on a worker thread when the node closes gets
    NodeClosed, never an error from a store closed under its read."""
    reading, release = threading.Event(), threading.Event()
    changes_after = SQLiteStore.changes_after

    def slow_changes_after(store: SQLiteStore, *args: Any) -> Any:
        reading.set()
        release.wait(DEADLINE)  # the node closes meanwhile
        return changes_after(store, *args)

    monkeypatch.setattr(SQLiteStore, "changes_after", slow_changes_after)
    outcome: list[NodeClosed] = []

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            async with running_node(tmp_path, replay_log_size=1) as node:
                for number in range(3):
                    await node.put("c", doc_id(number), "{}")
                node.get("c", doc_id(0))  # a reader connection waits in the pool
                subscription = node.subscribe(["c"], since=0)  # a catch-up
                nursery.start_soon(read_until_node_closed, subscription, outcome)
                await trio.to_thread.run_sync(reading.wait)
                threading.Timer(0.2, release.set).start()
            subscription.close()

    assert len(outcome) == 1


# Shared mode: sequences the stream numbered --------------------------------------------------


def applied(lone: LoneFeed, changes: list[Change], head: int) -> Committed:
    """Apply `changes` (numbered by a stream) to the store; the batch the feed then gets."""
    results = lone.store.apply(changes, head)
    events = [ChangeEvent.from_change(change) for change in results if change is not None]
    return Committed(events, head)


async def test_holes_of_writes_that_changed_nothing_are_not_gaps(tmp_path: Path) -> None:
    """A delete of an absent document takes a stream sequence and makes no event: live and
    replaying subscribers read across the hole without a catch-up."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path) as lone:
            lone.store.follow("S", "e1")
            with lone.subscribe() as live:
                await lone.publisher.send(
                    applied(lone, [Change(1, "c", "a", "{}"), Change(2, "c", "x", None)], 3)
                )
                await lone.publisher.send(applied(lone, [Change(4, "c", "b", "{}")], 4))
                live_changes = await read_until(live, 4)
            with lone.feed.subscribe(
                None, since=2, epoch=None, snapshot=False, peer="test"
            ) as resumed:
                replayed = await read_until(resumed, 4)

    assert kinds(live_changes) == [(ChangeType.UPSERT, "a", 1), (ChangeType.UPSERT, "b", 4)]
    assert kinds(replayed) == [(ChangeType.UPSERT, "b", 4)]


async def test_changes_the_node_never_saw_reach_live_subscribers_as_a_catch_up(
    tmp_path: Path,
) -> None:
    """Sequences the stream no longer held when the node read it (superseded by a later
    change to the same document) are never jumped silently: live subscribers are moved to a
    catch-up from the store across them, and the replay log cannot replay across them."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path) as lone:
            lone.store.follow("S", "e1")
            with lone.subscribe() as live:
                await lone.publisher.send(applied(lone, [Change(1, "c", "a", '{"v": 1}')], 1))
                before = await read_until(live, 1)
                # 2 (a) and 3 (b) were superseded by 5 and 6 before the node read the stream.
                batch = applied(
                    lone, [Change(5, "c", "a", '{"v": 5}'), Change(6, "c", "b", "{}")], 6
                )
                batch.skipped_to = 4
                await lone.publisher.send(batch)
                after = await read_until(live, 6)

    assert kinds(before) == [(ChangeType.UPSERT, "a", 1)]
    assert kinds(after) == [
        (ChangeType.CATCH_UP_BEGIN, "", 1),
        (ChangeType.UPSERT, "a", 5),
        (ChangeType.UPSERT, "b", 6),
        (ChangeType.CATCH_UP_END, "", 6),
    ]
    assert lone.feed.replay_log.floor == 4


async def test_a_new_epoch_reaches_every_subscriber_as_a_resync(tmp_path: Path) -> None:
    """The store was emptied to follow a recreated stream: each subscriber, live or not, gets
    RESYNC (EPOCH_CHANGED) with the new epoch; one that resumes with the old epoch too."""
    with trio.fail_after(DEADLINE):
        async with lone_feed(tmp_path) as lone:
            lone.store.follow("S", "old")
            await lone.publisher.send(applied(lone, [Change(1, "c", "a", "{}")], 1))
            with lone.subscribe() as live:
                await stall_while_live(live)
                lone.store.follow("S", "new")
                await lone.publisher.send(Committed([], 0, new_epoch=True))
                (resync,) = [decode(event) for event in await live.next_batch(10)]
            with lone.feed.subscribe(
                None, since=1, epoch="old", snapshot=False, peer="test"
            ) as resumed:
                (told,) = [decode(event) for event in await resumed.next_batch(10)]

    for event in (resync, told):
        assert (event.change_type, event.resync_reason) == (
            ChangeType.RESYNC,
            ResyncReason.EPOCH_CHANGED,
        )
        assert event.epoch == "new"
        assert event.sequence == 0


# Content queries and legacy streams ----------------------------------------------------------

VEHICLES = compile_query(SubscriptionQuery(eq=QueryEq(field="kind", value='"vehicle"')))


async def test_a_query_subscriber_is_told_when_a_document_stops_matching(tmp_path: Path) -> None:
    """Live and replayed alike: matching upserts pass, an upsert that does not match is a
    DELETE (the document may have matched before), deletes pass."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with node.subscribe(["c"], query=VEHICLES) as live:
                await node.put("c", "a", '{"kind": "vehicle"}')  # 1
                await node.put("c", "a", '{"kind": "person"}')  # 2: stops matching
                await node.put("c", "b", '{"kind": "vehicle", "n": 1}')  # 3
                await node.delete("c", "b")  # 4
                live_changes = await read_until(live, 4)
            with node.subscribe(["c"], since=0, query=VEHICLES) as replayed:
                replayed_changes = await read_until(replayed, 4)

    expected = [
        (ChangeType.UPSERT, "a", 1),
        (ChangeType.DELETE, "a", 2),
        (ChangeType.UPSERT, "b", 3),
        (ChangeType.DELETE, "b", 4),
    ]
    assert kinds(live_changes) == expected
    assert kinds(replayed_changes) == expected


async def test_a_query_holds_through_catch_up_and_snapshot(tmp_path: Path) -> None:
    """A catch-up from the store turns documents that do not match into deletes; a snapshot,
    whose reader starts from nothing, leaves them out."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, replay_log_size=2) as node:
            await node.put("c", "a", '{"kind": "vehicle"}')  # 1
            await node.put("c", "b", '{"kind": "vehicle"}')  # 2
            await node.put("c", "b", '{"kind": "person"}')  # 3
            await node.put("c", "d", '{"kind": "person"}')  # 4
            for sequence in range(5, 8):
                await node.put("other", doc_id(sequence), "{}")
            await trio.testing.wait_all_tasks_blocked()
            with node.subscribe(["c"], since=0, query=VEHICLES) as caught_up:
                catch_up = await read_until(caught_up, 7)
            with node.subscribe(["c"], snapshot=True, query=VEHICLES) as snapshotted:
                snapshot = [decode(event) for event in await snapshotted.next_batch(100)]
                while snapshot[-1].change_type != ChangeType.CATCH_UP_END:
                    snapshot += [decode(event) for event in await snapshotted.next_batch(100)]

    assert kinds(catch_up) == [
        (ChangeType.CATCH_UP_BEGIN, "", 0),
        (ChangeType.UPSERT, "a", 1),
        (ChangeType.DELETE, "b", 3),
        (ChangeType.DELETE, "d", 4),
        (ChangeType.CATCH_UP_END, "", 7),
    ]
    assert kinds(snapshot) == [
        (ChangeType.SNAPSHOT_BEGIN, "", 7),
        (ChangeType.UPSERT, "a", 1),
        (ChangeType.CATCH_UP_END, "", 7),
    ]


async def test_a_legacy_stream_carries_documents_and_resyncs_only(tmp_path: Path) -> None:
    """For a client that knows none of peat-sync's fields: named collections start with
    their documents, no control event but RESYNC is sent, and what the replay log cannot
    replay exactly is a RESYNC, not a catch-up."""
    with trio.fail_after(DEADLINE):
        async with running_node(
            tmp_path, replay_log_size=2, broadcast_buffer_size=2, heartbeat_interval=0.1
        ) as node:
            await node.put("c", "a", "{}")  # 1
            await node.put("c", "b", "{}")  # 2
            with node.subscribe(["c"], legacy=True) as legacy:
                first = [decode(event) for event in await legacy.next_batch(10)]
                await stall_while_live(legacy)  # its heartbeats are not sent: it waits
                for sequence in range(3, 9):
                    await node.put("c", doc_id(sequence), "{}")
                after_lag = await read_until(legacy, 8)

    assert kinds(first) == [(ChangeType.UPSERT, "a", 1), (ChangeType.UPSERT, "b", 2)]
    assert [change.change_type for change in after_lag] == [
        ChangeType.UPSERT,
        ChangeType.UPSERT,
        ChangeType.RESYNC,
    ]
    assert after_lag[-1].resync_reason == ResyncReason.SLOW_CONSUMER
