"""The change feed: committed events fanned out to each subscriber's collections, a commit
entering a subscriber's buffer whole, the count of open subscriptions, and the end of every
live subscription when the node closes.

Commits run on worker threads, so the tests keep the real clock and a generous deadline, and
use `wait_all_tasks_blocked()` to let the feed settle before asserting.
"""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from peat_sync.generated.peat.sidecar.v1 import ChangeType, DocumentChange
from peat_sync.node import (
    NodeClosed,
)
from peat_sync.store import Mutation
from tests.helpers.nodes import (
    DEADLINE,
    doc_id,
    read_until,
    read_until_node_closed,
    running_node,
    stall_while_live,
)


async def test_events_describe_each_change(tmp_path: Path) -> None:
    """Upserts carry the document, deletes carry no document, both carry their sequence."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with node.subscribe() as subscription:
                await node.put("c", "a", '{"v": 1}')
                await node.delete("c", "a")
                await node.delete("c", "a")  # changes nothing: no event
                await node.put("c", "b", '{"v": 2}')
                changes = await read_until(subscription, 3)

    assert changes == [
        DocumentChange(
            collection="c",
            doc_id="a",
            change_type=ChangeType.UPSERT,
            json_data='{"v": 1}',
            sequence=1,
        ),
        DocumentChange(collection="c", doc_id="a", change_type=ChangeType.DELETE, sequence=2),
        DocumentChange(
            collection="c",
            doc_id="b",
            change_type=ChangeType.UPSERT,
            json_data='{"v": 2}',
            sequence=3,
        ),
    ]
    assert changes[1].json_data is None


async def test_collection_filter_applies_to_replay_and_live(tmp_path: Path) -> None:
    """A subscriber to some collections gets only their events, replayed and live alike."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("a", "1", "{}")
            await node.put("b", "2", "{}")
            await node.put("c", "3", "{}")
            with node.subscribe(["a", "c"], since=0) as subscription:
                replayed = await read_until(subscription, 3)
                await stall_while_live(subscription)
                await node.put("b", "4", "{}")
                await node.put("a", "5", "{}")
                await node.put("b", "6", "{}")
                await node.put("c", "7", "{}")
                live = await read_until(subscription, 7)

    assert [(c.collection, c.sequence) for c in replayed] == [("a", 1), ("c", 3)]
    assert [(c.collection, c.sequence) for c in live] == [("a", 5), ("c", 7)]


async def test_one_commit_larger_than_the_buffer_reaches_a_waiting_reader_whole(
    tmp_path: Path,
) -> None:
    """A commit enters a buffer whole: a reader that waits for events is not counted as
    lagging because one commit holds more events than its buffer; only a commit that comes
    while the buffer is full detaches it."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, broadcast_buffer_size=4, replay_log_size=2) as node:
            with node.subscribe(["c"]) as reader:
                await stall_while_live(reader)
                writes = [Mutation("c", doc_id(n), "{}") for n in range(10)]
                await node.write(writes)
                await trio.testing.wait_all_tasks_blocked()
                assert node.feed.lag_events == 0
                received = await read_until(reader, 10)
                assert [event.sequence for event in received] == list(range(1, 11))
                assert all(event.change_type == ChangeType.UPSERT for event in received)


async def test_subscriber_count_returns_to_zero_after_close(tmp_path: Path) -> None:
    """Closing a subscription, live or lagging, removes it from the feed."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, broadcast_buffer_size=2) as node:
            assert node.feed.subscriber_count == 0
            with node.subscribe(["c"]) as live, node.subscribe() as lagging:
                assert node.feed.subscriber_count == 2
                await stall_while_live(live)
                await stall_while_live(lagging)
                for sequence in range(1, 6):
                    await node.put("c", doc_id(sequence), "{}")
                await trio.testing.wait_all_tasks_blocked()
                assert node.feed.lag_events == 2
            assert node.feed.subscriber_count == 0

            subscription = node.subscribe()
            assert node.feed.subscriber_count == 1
            subscription.close()
            assert node.feed.subscriber_count == 0


async def test_a_live_subscriber_is_told_when_the_node_closes(tmp_path: Path) -> None:
    """A subscriber waiting for live events gets NodeClosed when the node shuts down."""
    outcome: list[NodeClosed] = []

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            async with running_node(tmp_path) as node:
                subscription = node.subscribe()
                nursery.start_soon(read_until_node_closed, subscription, outcome)
                await node.put("c", "d", "{}")
                await trio.testing.wait_all_tasks_blocked()
            subscription.close()

    assert len(outcome) == 1
