"""The producer: the node's single writer.

Writers queue mutations on a bounded channel and wait. The producer takes everything queued
(up to `max_batch`), commits it in one SQLite transaction on a worker thread, encodes each
event once, hands the batch to the feed, and only then wakes the writers with their
sequences. One fsync serves the whole batch, and an acknowledged write is always durable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from peat_sync.node.collection_configs import CollectionConfigs
from peat_sync.node.errors import NodeClosed, QueueFull, StoreUnavailable
from peat_sync.node.events import ChangeEvent
from peat_sync.node.feed import Committed
from peat_sync.node.stats import NodeStats
from peat_sync.store import Change, Mutation, PreconditionFailed, Store

log = logging.getLogger("peat_sync.producer")

# Beyond this many queued writes, writers wait for room: backpressure on writers, never
# unbounded memory.
QUEUE_CAPACITY = 4096


# Told the outcome of a queued write: its changes, or the error that failed it.
WriteCallback = Callable[["list[Change | None] | BaseException"], None]


@dataclass(slots=True)
class _QueuedWrite:
    mutations: Sequence[Mutation]
    done: WriteCallback


class Producer:
    def __init__(
        self,
        store: Store,
        max_batch: int,
        stats: NodeStats,
        *,
        configs: CollectionConfigs | None = None,
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._stats = stats
        self._configs = configs  # told every commit, to follow the collection configs
        self._send, self._receive = trio.open_memory_channel[_QueuedWrite](QUEUE_CAPACITY)

    async def write(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        """Trio-flavoured: commit `mutations` atomically; return once they are durable.

        Returns one entry per mutation: its committed change, or None when it changed
        nothing (the delete of an absent document).
        """
        committed = trio.Event()
        outcome: list[Change | None] | BaseException = []

        def done(result: list[Change | None] | BaseException) -> None:
            nonlocal outcome
            outcome = result
            committed.set()

        try:
            await self._send.send(_QueuedWrite(mutations, done))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise _closed() from None
        await committed.wait()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def write_nowait(self, mutations: Sequence[Mutation], done: WriteCallback) -> None:
        """Queue `mutations` without waiting, from any task of the node's trio run (asyncio
        callbacks under trio-asyncio included); `done` gets the outcome, as `write` returns
        or raises it. Raises `QueueFull` when the queue is full. It spares a caller
        outside trio the trio task a `write` would need."""
        try:
            self._send.send_nowait(_QueuedWrite(mutations, done))
        except trio.WouldBlock:
            raise QueueFull from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise _closed() from None

    def close(self) -> None:
        """Take no new writes; the producer commits what is queued, then stops."""
        self._send.close()

    async def run(
        self,
        publish: trio.MemorySendChannel[Committed],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Trio-flavoured: the producer task. Ends once `close()` was called and the queue
        is empty, and then closes `publish`."""
        task_status.started()
        async with self._receive, publish:
            async for first in self._receive:
                batch = [first]
                size = len(first.mutations)
                while size < self._max_batch:
                    try:
                        queued = self._receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                    batch.append(queued)
                    size += len(queued.mutations)
                await self._commit(batch, publish)

    async def _commit(
        self, batch: list[_QueuedWrite], publish: trio.MemorySendChannel[Committed]
    ) -> None:
        mutations = [mutation for queued in batch for mutation in queued.mutations]
        try:
            # Not abandoned on cancel: a commit that started always finishes, so shutdown
            # never leaves a half-written batch behind.
            started = time.perf_counter()
            changes = await trio.to_thread.run_sync(self._store.commit, mutations)
            self._stats.commits.add(time.perf_counter() - started)
        except Exception as exc:
            # The transaction rolled back, so nothing of the batch is stored. Retry each
            # write alone, so one write the store refuses cannot fail the others; then fail
            # only the writers whose own commit failed, and keep serving (a full disk, say,
            # can be fixed without a restart).
            if len(batch) > 1:
                for queued in batch:
                    await self._commit([queued], publish)
                return
            if isinstance(exc, PreconditionFailed):
                # The writer's own expected_sequence, not a failure of the store: it is
                # told, to re-read and retry, and nothing is logged or counted.
                batch[0].done(exc)
                return
            self._stats.commit_failures += 1
            log.error("commit of %d changes failed, none stored: %s", len(mutations), exc)
            batch[0].done(StoreUnavailable(f"the store could not commit the write: {exc}"))
            return
        if self._configs is not None:
            self._configs.committed(changes)
        events = [ChangeEvent.from_change(change) for change in changes if change is not None]
        if events:
            await publish.send(Committed(events, events[-1].sequence))
        offset = 0
        for queued in batch:
            queued.done(changes[offset : offset + len(queued.mutations)])
            offset += len(queued.mutations)


def _closed() -> NodeClosed:
    return NodeClosed("the node is shutting down; retry against a running node")
