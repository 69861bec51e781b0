"""One subscriber's view of the feed: replay from the log, then live, healing after lag."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from peat_sync.generated.peat.sidecar.v1 import ResyncReason
from peat_sync.node.errors import NodeClosed
from peat_sync.node.events import ChangeEvent

if TYPE_CHECKING:
    from peat_sync.node.feed import ChangeFeed

log = logging.getLogger("peat_sync.subscription")


class Subscription:
    """The trio side of one Subscribe stream.

    `position` is the sequence of the last event handed to the consumer. The subscription is
    either *live* (attached to the feed with a bounded channel) or *catching up* (reading the
    replay log from `position`). It starts catching up, attaches once it reaches the log's
    head, and goes back to catching up whenever its channel overflows. Only when the replay
    log no longer holds the events after `position` does the consumer get a RESYNC event.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        name: str,
        collections: frozenset[str] | None,
        since: int | None,
    ) -> None:
        self.name = name
        self.collections = collections
        self._feed = feed
        self._receive: trio.MemoryReceiveChannel[ChangeEvent] | None = None
        self._pending: list[ChangeEvent] = []
        self._lagged = False
        head = feed.committed_head
        if since is None:
            self.position = head
        elif since > head:
            self.position = head
            self._pending.append(
                ChangeEvent.resync(
                    head,
                    ResyncReason.SEQUENCE_AHEAD,
                    f"since_sequence {since} is ahead of the newest change ({head}), so this"
                    " store has no such position: re-list; the changes after sequence"
                    f" {head} follow on this stream",
                )
            )
        else:
            self.position = since

    def wants(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def describe_collections(self) -> str:
        return "all" if self.collections is None else ",".join(sorted(self.collections))

    async def next_batch(self, limit: int) -> list[ChangeEvent]:
        """Trio-flavoured: wait for the next events, at most `limit` of them.

        Raises `NodeClosed` once the node shuts down.
        """
        while True:
            if self._feed.closed:
                raise NodeClosed("the node is shutting down")
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if self._receive is None:
                batch = self._catch_up(limit)
                # A long replay that matches nothing must still let other tasks run.
                await trio.lowlevel.checkpoint()
                if batch:
                    return batch
                continue
            try:
                first = await self._receive.receive()
            except trio.EndOfChannel:
                # The feed closed the channel: on overflow, or because the node is closing,
                # which the top of the loop turns into NodeClosed before `_lagged` is read.
                self._receive = None
                self._lagged = True
                continue
            batch = [first]
            while len(batch) < limit:
                try:
                    batch.append(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            # Events committed before a subscription started can still be in flight to the
            # feed when it attaches; the position filters them out.
            batch = [event for event in batch if event.sequence > self.position]
            if batch:
                self.position = batch[-1].sequence
                return batch

    def _catch_up(self, limit: int) -> list[ChangeEvent]:
        """Read the next events from the replay log, or attach when there are none left."""
        replay_log = self._feed.replay_log
        if self._lagged:
            self._log_lag()
        if self.position >= replay_log.head:
            self._receive = self._feed.attach(self)
            self._lagged = False
            return []
        if not replay_log.covers(self.position):
            reason = ResyncReason.SLOW_CONSUMER if self._lagged else ResyncReason.HISTORY_COMPACTED
            head = replay_log.head
            resync = ChangeEvent.resync(
                head,
                reason,
                f"the changes after sequence {self.position} are no longer kept (the replay log"
                f" starts after {replay_log.floor}): re-list; the changes after sequence {head}"
                " follow on this stream",
            )
            self.position = head
            self._receive = self._feed.attach(self)
            self._lagged = False
            return [resync]
        events = replay_log.read_after(self.position, limit)
        self.position = events[-1].sequence
        return [event for event in events if self.wants(event.collection)]

    def _log_lag(self) -> None:
        missed = self._feed.take_missed(self)
        if missed is None:
            return
        replay_log = self._feed.replay_log
        if replay_log.covers(self.position):
            outcome = "replaying them from the replay log"
        else:
            outcome = (
                f"the replay log starts after sequence {replay_log.floor}, so the subscriber"
                " gets a RESYNC"
            )
        log.warning(
            "subscriber %s (collections: %s) lagged and missed %s; %s",
            self.name,
            self.describe_collections(),
            missed.describe(),
            outcome,
        )

    def close(self) -> None:
        self._feed.detach(self)
        if self._receive is not None:
            self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
