"""`Mirror`: a local copy of collections that is always consistent with the store.

The copy only ever shows the store as it was at one sequence. Live changes apply one by one,
since each leaves the copy equal to the store at its sequence. A catch-up or a snapshot
(after a restart, a RESYNC or a lost connection) is collected first, and applied all at once
at its CATCH_UP_END, because its intermediate states do not belong to any one sequence.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from peat_sync.client.events import ChangeType, Event
from peat_sync.client.subscription import Backoff, ResilientSubscription

if TYPE_CHECKING:
    from peat_sync.client.client import Client

Documents = dict[str, dict[str, Any]]
# Applied changes each `changes()` reader may have unread before the mirror waits for it.
CHANGES_BUFFER = 1024


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A document of the mirror that changed: `document` is its new content, or None when it
    was deleted. `sequence` is the store sequence the mirror stands at after it."""

    collection: str
    doc_id: str
    document: Any
    sequence: int

    @property
    def deleted(self) -> bool:
        return self.document is None


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
    ) -> None:
        self._subscription = ResilientSubscription(
            client,
            collections,
            snapshot=True,
            backoff=backoff,
            silence_timeout=silence_timeout,
            atomic_catch_ups=True,
        )
        self.documents: Documents = {}
        self.sequence = 0
        self.epoch = ""
        self.ready = False
        self._pending: list[Event] | None = None  # a catch-up or snapshot being collected
        self._pending_is_snapshot = False
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
    def position(self) -> tuple[str, int]:
        """The store epoch and sequence the copy equals."""
        return self.epoch, self.sequence

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
                await self._apply(event)
        except Exception as exc:  # handed to every waiter: nothing is left to follow
            self._failure = exc
            self._notify()

    async def _apply(self, event: Event) -> None:
        if event.epoch:
            self.epoch = event.epoch
        if self._pending is not None and event.type is not ChangeType.CATCH_UP_END:
            self._collect(event)
            return
        match event.type:
            case ChangeType.UPSERT | ChangeType.DELETE:
                change = self._set(event.collection, event.doc_id, event.json_data)
                self.sequence = event.sequence
                await self._publish([change], event.sequence)
            case ChangeType.SNAPSHOT_BEGIN | ChangeType.CATCH_UP_BEGIN:
                self._pending = []
                self._pending_is_snapshot = event.type is ChangeType.SNAPSHOT_BEGIN
            case ChangeType.CATCH_UP_END:
                changes = self._apply_pending()
                self.sequence = event.sequence
                self.ready = True
                await self._publish(changes, event.sequence)
            case ChangeType.HEARTBEAT:
                # Every change to these collections up to here has been applied.
                self.sequence = max(self.sequence, event.sequence)
        self._notify()

    def _collect(self, event: Event) -> None:
        """Keep an event of a catch-up or snapshot until its CATCH_UP_END.

        Any other control event means the stream was lost and a new one opened, resuming
        from where the copy stands (the subscription's atomic catch-ups): what was collected
        is void, and the new stream says what comes instead.
        """
        assert self._pending is not None
        if event.is_change:
            self._pending.append(event)
        elif event.type in (ChangeType.SNAPSHOT_BEGIN, ChangeType.CATCH_UP_BEGIN):
            self._pending = []
            self._pending_is_snapshot = event.type is ChangeType.SNAPSHOT_BEGIN
        else:  # RESYNC: a snapshot follows; HEARTBEAT: exact changes follow
            self._pending = None

    def _apply_pending(self) -> list[tuple[str, str]]:
        pending, self._pending = self._pending or [], None
        latest = {(event.collection, event.doc_id): event.json_data for event in pending}
        if self._pending_is_snapshot:
            # The snapshot is the whole store: what it lacks is gone, what it repeats is not
            # a change.
            for collection, documents in self.documents.items():
                for doc_id in documents:
                    latest.setdefault((collection, doc_id), None)
            latest = {
                key: json_data
                for key, json_data in latest.items()
                if json_data is None or self._get(*key) != json.loads(json_data)
            }
        return [key for key, json_data in latest.items() if self._set(*key, json_data)]

    def _get(self, collection: str, doc_id: str) -> Any:
        return self.documents.get(collection, {}).get(doc_id)

    def _set(self, collection: str, doc_id: str, json_data: str | None) -> tuple[str, str] | None:
        """Make the copy hold `json_data` for one document (None: no document). Returns the
        document's key, or None when there was nothing to delete."""
        documents = self.documents.setdefault(collection, {})
        if json_data is not None:
            documents[doc_id] = json.loads(json_data)
            return collection, doc_id
        deleted = documents.pop(doc_id, _ABSENT) is not _ABSENT
        if not documents:
            del self.documents[collection]
        return (collection, doc_id) if deleted else None

    async def _publish(self, changed: Iterable[tuple[str, str] | None], sequence: int) -> None:
        for key in changed:
            if key is None:
                continue
            change = AppliedChange(*key, self._get(*key), sequence)
            for queue in list(self._readers):
                await queue.put(change)
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


_ABSENT = object()
