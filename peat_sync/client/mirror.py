"""`Mirror`: a `ConsistentCopy` of collections, kept equal to the store by a subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING

from peat_sync.client.copy import AppliedChange, ConsistentCopy, Documents
from peat_sync.client.subscription import Backoff, ResilientSubscription
from peat_sync.generated.peat.sidecar import v1 as pb

if TYPE_CHECKING:
    from peat_sync.client.client import Client

# Applied changes each `changes()` reader may have unread before the mirror waits for it.
CHANGES_BUFFER = 1024


class Mirror:
    """Asyncio-flavoured: `{collection: {doc_id: document}}` for the chosen collections (all
    when none are chosen), kept equal to the store by a `ResilientSubscription`.

    Run it in `async with`. `documents` is the copy (read it, do not change it), `sequence`
    the store sequence it equals, and `ready` tells whether the first snapshot has arrived.
    `wait_for(sequence)` returns once the copy has caught up to a sequence, such as the one a
    put returned. `changes()` yields each document change applied to the copy, in order;
    changes that come from a snapshot are the differences it made, so a reader never has to
    handle a RESYNC. A failure the subscription cannot retry (a bad collection name) is
    raised by `wait_for`, by `changes()` and when the block exits.
    """

    def __init__(
        self,
        client: Client,
        collections: Iterable[str] = (),
        *,
        backoff: Backoff | None = None,
        silence_timeout: float | None = None,
        query: pb.SubscriptionQuery | None = None,
    ) -> None:
        self._subscription = ResilientSubscription(
            client,
            collections,
            snapshot=True,
            backoff=backoff,
            silence_timeout=silence_timeout,
            atomic_catch_ups=True,
            query=query,
        )
        self._copy = ConsistentCopy()
        self._progress = asyncio.Event()
        self._readers: set[asyncio.Queue[AppliedChange]] = set()
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Mirror:
        self._task = asyncio.create_task(self._follow())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._subscription.aclose()
        if self._failure is not None and exc is None:
            raise self._failure

    @property
    def documents(self) -> Documents:
        """`{collection: {doc_id: document}}`: read it, do not change it."""
        return self._copy.documents

    @property
    def sequence(self) -> int:
        """The store sequence the copy equals."""
        return self._copy.sequence

    @property
    def epoch(self) -> str:
        return self._copy.epoch

    @property
    def ready(self) -> bool:
        """Whether the first snapshot has arrived."""
        return self._copy.ready

    async def wait_ready(self) -> None:
        """Return once the copy holds the first complete snapshot."""
        await self._wait_until(lambda: self.ready)

    async def wait_for(self, sequence: int) -> None:
        """Return once the copy equals the store at `sequence` or later.

        A filtered mirror learns that changes to other collections went by from heartbeats,
        so waiting for such a sequence can take up to the server's heartbeat interval.
        """
        await self._wait_until(lambda: self.ready and self.sequence >= sequence)

    @asynccontextmanager
    async def changes(self) -> AsyncIterator[AsyncIterator[AppliedChange]]:
        """Asyncio-flavoured: `async with mirror.changes() as changes: async for change in
        changes:` yields every change applied after the block opened.

        The mirror waits for a reader with `CHANGES_BUFFER` changes unread, so a reader sees
        every change; one that stops reading holds the mirror back (the server keeps what the
        mirror has not read yet) until it leaves the block.
        """
        queue: asyncio.Queue[AppliedChange] = asyncio.Queue(CHANGES_BUFFER)
        self._readers.add(queue)
        try:
            yield self._read(queue)
        finally:
            self._readers.discard(queue)

    async def _read(self, queue: asyncio.Queue[AppliedChange]) -> AsyncIterator[AppliedChange]:
        while True:
            while not queue.empty():
                yield queue.get_nowait()
            self._raise_failure()
            await self._progress.wait()

    # Following the feed ------------------------------------------------------------------

    async def _follow(self) -> None:
        try:
            async for event in self._subscription:
                for change in self._copy.apply(event):
                    for queue in list(self._readers):
                        await queue.put(change)
                        self._notify()
                self._notify()
        except Exception as exc:  # handed to every waiter: nothing is left to follow
            self._failure = exc
            self._notify()

    # Waiting -----------------------------------------------------------------------------

    def _notify(self) -> None:
        self._progress.set()
        self._progress = asyncio.Event()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    async def _wait_until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._raise_failure()
            await self._progress.wait()
