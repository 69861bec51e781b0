"""The node, embedded without the gRPC server: the document API, sequences and the epoch
across restarts, and its lifecycle (writes queued when it closes are committed, later ones
refused, cancelling the caller's scope stops everything).

Commits and reads run on worker threads, so most tests keep the real clock and a generous
deadline, and use `wait_all_tasks_blocked()` to let the feed settle before asserting.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from peat_sync.generated.peat.sidecar.v1 import ChangeType
from peat_sync.node import (
    InvalidRequest,
    LimitExceeded,
    Node,
    NodeClosed,
    QueueFull,
)
from peat_sync.store import Mutation, StoredDocument
from tests.helpers.nodes import (
    DEADLINE,
    doc_id,
    read_until,
    running_node,
    stored,
)

# Documents ---------------------------------------------------------------------------------


async def test_put_get_list_delete(tmp_path: Path) -> None:
    """The document API: each change returns its sequence; reads see the latest state."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            assert await node.put("tasks", "t2", '{"state": "new"}') == 1
            assert await node.put("tasks", "t1", '{"state": "new"}') == 2
            assert await node.put("other", "o1", "{}") == 3
            assert await node.put("tasks", "t2", '{"state": "done"}') == 4

            assert node.get("tasks", "t2") == StoredDocument("tasks", "t2", '{"state": "done"}', 4)
            assert node.get("tasks", "missing") is None
            assert await node.list_ids("tasks") == ["t1", "t2"]
            assert [d.doc_id for d in await node.list_documents("tasks")] == ["t1", "t2"]

            assert await node.delete("tasks", "t1") == 5
            assert node.get("tasks", "t1") is None
            assert await node.list_ids("tasks") == ["t2"]
            assert await node.delete("tasks", "t1") == 0
            assert await node.delete("tasks", "never") == 0
            assert node.head_sequence == 5
            assert await node.put("tasks", "t3", "{}") == 6


async def test_write_commits_many_changes_at_once_or_none(tmp_path: Path) -> None:
    """Node.write: puts and deletes in order, one commit, one sequence each (0 for a delete
    of nothing); a bad write or too many writes refuse the whole request, naming the cause."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with node.subscribe() as subscription:
                await subscription.next_batch(10)  # the opening heartbeat
                writes = [
                    Mutation("c", "a", "{}"),
                    Mutation("c", "b", '{"v": 1}'),
                    Mutation("c", "a", None),
                    Mutation("c", "never", None),
                    Mutation("c", "b", '{"v": 2}'),
                ]
                assert await node.write(writes) == [1, 2, 3, 0, 4]
                events = await subscription.next_batch(10)
                assert [(e.sequence, e.doc_id, e.change_type) for e in events] == [
                    (1, "a", ChangeType.UPSERT),
                    (2, "b", ChangeType.UPSERT),
                    (3, "a", ChangeType.DELETE),
                    (4, "b", ChangeType.UPSERT),
                ]
            with pytest.raises(InvalidRequest, match=r"^writes\[1\]: doc_id must not be empty"):
                await node.write([Mutation("c", "ok", "{}"), Mutation("c", "", "{}")])
            with pytest.raises(LimitExceeded, match="10001 writes in one request"):
                await node.write([Mutation("c", "x", "{}")] * 10_001)
            assert await node.write([]) == []
            assert node.head_sequence == 4
            assert await node.list_ids("c") == ["b"]


async def test_sequences_and_epoch_survive_a_restart(tmp_path: Path) -> None:
    """A reopened node keeps its epoch and continues the sequence, and a client resuming
    from the old head gets exactly the new changes."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("c", "a", "{}")
            await node.put("c", "b", "{}")
            epoch = node.epoch

        async with running_node(tmp_path) as node:
            assert node.epoch == epoch
            assert node.head_sequence == 2
            with node.subscribe(since=2) as subscription:
                assert await node.put("c", "c", "{}") == 3
                assert [c.doc_id for c in await read_until(subscription, 3)] == ["c"]

        async with running_node(tmp_path / "elsewhere") as other:
            assert other.epoch != epoch


# Lifecycle ---------------------------------------------------------------------------------


async def test_leaving_the_block_commits_queued_writes(tmp_path: Path) -> None:
    """Writes queued when the `open_node` block ends are committed before the node closes."""
    acknowledged: dict[str, int] = {}

    async def write(name: str) -> None:
        acknowledged[name] = await node.put("c", name, "{}")

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery, running_node(tmp_path, max_batch=5) as node:
            for i in range(100):
                nursery.start_soon(write, doc_id(i))
            # Every writer has queued its write; the producer takes 5 at a time.
            await trio.testing.wait_all_tasks_blocked()

    assert sorted(acknowledged.values()) == list(range(1, 101))
    store = stored(tmp_path)
    try:
        assert store.head_sequence == 100
        assert store.list_ids("c") == sorted(acknowledged)
    finally:
        store.close()


async def test_writes_after_the_node_closed_are_refused(tmp_path: Path) -> None:
    """Once the block has ended, a put raises NodeClosed instead of hanging."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            pass
        with pytest.raises(NodeClosed):
            await node.put("c", "d", "{}")


async def test_writes_without_waiting_report_their_outcome_to_the_callback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`put_nowait`, `delete_nowait` and `write_nowait` check the request at once, queue it,
    and hand `done` what the waiting twin would return or raise; a full queue raises
    QueueFull (the caller then waits), and a closed node NodeClosed."""
    monkeypatch.setattr("peat_sync.node.producer.QUEUE_CAPACITY", 2)
    outcomes: list[object] = []
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await trio.testing.wait_all_tasks_blocked()
            # Without a checkpoint in between: the producer, waiting, is handed the first
            # write, the next two fill the queue.
            node.put_nowait("c", "a", "{}", outcomes.append)
            node.write_nowait([Mutation("c", "b", "{}"), Mutation("c", "a", None)], outcomes.append)
            node.delete_nowait("c", "never-existed", outcomes.append)
            with pytest.raises(QueueFull):
                node.put_nowait("c", "d", "{}", outcomes.append)
            with pytest.raises(InvalidRequest, match="doc_id"):
                node.put_nowait("c", "", "{}", outcomes.append)
            with pytest.raises(InvalidRequest, match=r"writes\[1\]: .*JSON"):
                node.write_nowait(
                    [Mutation("c", "x", "{}"), Mutation("c", "y", "nope")], outcomes.append
                )
            node.write_nowait([], outcomes.append)  # nothing to commit: done at once
            assert outcomes == [[]]
        # Leaving the block committed what was queued.
        with pytest.raises(NodeClosed):
            node.put_nowait("c", "late", "{}", outcomes.append)
    assert outcomes == [[], 1, [2, 3], 0]
    store = stored(tmp_path)
    try:
        assert store.list_ids("c") == ["b"]
    finally:
        store.close()


async def test_cancelling_the_enclosing_scope_stops_the_node(tmp_path: Path) -> None:
    """Cancelling the caller's scope stops the producer, the feed, busy writers and readers;
    every acknowledged write is in the store afterwards and the sequence has no holes."""
    acknowledged: list[str] = []
    enough_read = trio.Event()

    async def write_forever(node: Node) -> None:
        for i in range(1_000_000):
            await node.put("c", f"d{i}", "{}")
            acknowledged.append(f"d{i}")

    async def read_forever(node: Node) -> None:
        read = 0
        with node.subscribe() as subscription:
            while True:
                batch = await subscription.next_batch(100)
                read += sum(not event.is_control for event in batch)
                if read >= 20:
                    enough_read.set()

    with trio.fail_after(DEADLINE):
        with trio.CancelScope() as scope:
            async with running_node(tmp_path) as node, trio.open_nursery() as nursery:
                nursery.start_soon(read_forever, node)
                nursery.start_soon(write_forever, node)
                await enough_read.wait()
                scope.cancel()

    assert scope.cancelled_caught
    store = stored(tmp_path)
    try:
        ids = store.list_ids("c")
        assert set(acknowledged) <= set(ids)
        assert len(ids) == store.head_sequence >= 20
    finally:
        store.close()
