"""The store's history as subscriptions see it: positions, floors and catch-up reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import trio

from peat_sync.node.errors import NodeClosed
from peat_sync.store import HistoryPage, Store, StoreClosed

T = TypeVar("T")


async def read_store(read: Callable[..., T], *args: object, limiter: trio.CapacityLimiter) -> T:
    """Trio-flavoured: run the blocking store read `read(*args)` on a worker thread.

    The store closes when the node does, after the reads under way; a read that comes later
    means the node is shutting down.
    """
    try:
        return await trio.to_thread.run_sync(read, *args, limiter=limiter)
    except StoreClosed:
        raise NodeClosed("the node is shutting down; retry against a running node") from None


class History:
    """Trio-flavoured access to what the store knows beyond the replay log."""

    def __init__(
        self,
        store: Store,
        limiter: trio.CapacityLimiter,
        stream_head: Callable[[], int] | None = None,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self._stream_head = stream_head

    @property
    def epoch(self) -> str:
        return self._store.epoch

    @property
    def head(self) -> int:
        """The newest committed sequence; it can be ahead of the replay log for a moment."""
        return self._store.head_sequence

    @property
    def known_head(self) -> int:
        """The newest sequence known to exist: in shared mode, the stream's head, which this
        node's store reaches once it has applied the stream that far."""
        if self._stream_head is None:
            return self.head
        return max(self.head, self._stream_head())

    @property
    def previous_epoch(self) -> str | None:
        """Shared mode: the epoch of the stream the store followed before this one."""
        return self._store.previous_epoch

    @property
    def catch_up_floor(self) -> int:
        """The oldest position a catch-up from the store can start from."""
        return self._store.catch_up_floor

    async def changes_after(
        self,
        since: int,
        collections: frozenset[str] | None,
        limit: int,
        tombstones_after: int,
        max_bytes: int,
    ) -> HistoryPage:
        """Trio-flavoured: the next page of a catch-up (see `Store.changes_after`)."""
        return await read_store(
            self._store.changes_after,
            since,
            collections,
            limit,
            tombstones_after,
            max_bytes,
            limiter=self._limiter,
        )
