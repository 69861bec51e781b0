"""The change feed: the replay-log task that fans committed events out to subscribers.

The producer hands over each committed batch through a bounded channel. This task appends the
batch to the replay log and offers it, filtered to each live subscriber's collections, to
that subscriber's channel with `send_nowait`: a slow subscriber never blocks the feed. A
subscriber that already has `buffer_size` events unread when a commit arrives is detached
instead (its channel closed, which is its resync sentinel), and the feed only notes the range
it misses until it reads again and heals itself from the replay log (see `Subscription`).

A commit enters a channel whole, as one item: a reader that keeps up never overflows because
one commit (a WriteDocuments of 10,000 writes, say) holds more events than its buffer. So a
subscriber holds at most `buffer_size - 1` events plus one commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio

from peat_sync.node.errors import LimitExceeded
from peat_sync.node.events import ChangeEvent
from peat_sync.node.history import History
from peat_sync.node.query import Predicate
from peat_sync.node.replay_log import ReplayLog
from peat_sync.node.stats import NodeStats
from peat_sync.node.subscription import Subscription

log = logging.getLogger("peat_sync.feed")


@dataclass(slots=True)
class Committed:
    """What the feed is handed: changes committed to the store, in sequence order."""

    events: list[ChangeEvent]
    head: int  # the store's head after them: past the last event if later writes were no-ops
    # Shared mode: the changes up to this sequence were never seen by this node (the stream
    # no longer held them), so no subscriber can be replayed across them.
    skipped_to: int | None = None
    # Shared mode: the store was emptied to follow a new stream; every position before is
    # void.
    new_epoch: bool = False


@dataclass(slots=True)
class MissedRange:
    """What a detached subscriber has missed so far, for the lag warning."""

    first_sequence: int
    last_sequence: int
    first_doc_id: str
    last_doc_id: str
    count: int = 1

    @classmethod
    def starting_at(cls, event: ChangeEvent) -> MissedRange:
        return cls(event.sequence, event.sequence, event.doc_id, event.doc_id)

    def add(self, event: ChangeEvent) -> None:
        self.last_sequence = event.sequence
        self.first_doc_id = min(self.first_doc_id, event.doc_id)
        self.last_doc_id = max(self.last_doc_id, event.doc_id)
        self.count += 1

    def describe(self) -> str:
        return (
            f"{self.count} events: sequences {self.first_sequence}..{self.last_sequence},"
            f" doc_ids {self.first_doc_id!r}..{self.last_doc_id!r}"
        )


class ChangeFeed:
    """Fans committed events out to subscriptions and keeps the replay log."""

    def __init__(
        self,
        replay_log: ReplayLog,
        history: History,
        *,
        buffer_size: int,
        heartbeat_interval: float,
        max_subscribers: int,
        stats: NodeStats,
    ) -> None:
        self.replay_log = replay_log
        self.history = history
        self.buffer_size = buffer_size
        self.max_subscribers = max_subscribers
        self.stats = stats
        self._refusing = False  # at the limit, and said so
        self.heartbeat_interval = heartbeat_interval
        self._open: set[Subscription] = set()
        self._live: dict[Subscription, trio.MemorySendChannel[list[ChangeEvent]]] = {}
        self._lagging: dict[Subscription, MissedRange] = {}
        self._next_id = 1
        self.closed = False
        self.lag_events = 0
        # Counts the stores the feed has followed: a subscription that began on an earlier
        # one gets a RESYNC (EPOCH_CHANGED).
        self.generation = 0

    @property
    def subscriber_count(self) -> int:
        return len(self._open)

    @property
    def live_subscriptions(self) -> list[Subscription]:
        """The subscriptions that receive live events (past their replay or catch-up)."""
        return list(self._live)

    def subscribe(
        self,
        collections: frozenset[str] | None,
        *,
        since: int | None,
        epoch: str | None,
        snapshot: bool,
        peer: str,
        query: Predicate | None = None,
        legacy: bool = False,
    ) -> Subscription:
        """Open a subscription to `collections` (None: all); see `Node.subscribe`.

        Close it with `close()` or by using it as a context manager. Raises `LimitExceeded`
        when `max_subscribers` are open.
        """
        if len(self._open) >= self.max_subscribers:
            if not self._refusing:  # once per spell at the limit, not once per retry
                self._refusing = True
                log.warning(
                    "%d subscribers open, the limit (--max-subscribers): refusing new"
                    " subscriptions until one closes",
                    len(self._open),
                )
            raise LimitExceeded(
                f"the server has {len(self._open)} subscribers open, its limit"
                " (--max-subscribers); retry later, or raise the limit"
            )
        subscription = Subscription(
            self,
            f"#{self._next_id} ({peer})",
            collections,
            since=since,
            epoch=epoch,
            snapshot=snapshot,
            query=query,
            legacy=legacy,
        )
        self._next_id += 1
        self._open.add(subscription)
        return subscription

    def attach(self, subscription: Subscription) -> trio.MemoryReceiveChannel[list[ChangeEvent]]:
        """Start delivering live events to `subscription`; returns its new channel, whose
        items are the subscription's events of one commit each.

        Called with no checkpoint since the subscription last read the replay log, so the
        handoff from replay to live has neither gap nor duplicate.
        """
        # Each item holds an event, and no commit is sent once `buffer_size` events are
        # unread: the channel never has more items than this.
        send, receive = trio.open_memory_channel[list[ChangeEvent]](self.buffer_size)
        subscription.unread = 0
        if self.closed:
            send.close()  # no more events will come: the subscriber sees the end at once
        else:
            self._live[subscription] = send
        return receive

    def take_missed(self, subscription: Subscription) -> MissedRange | None:
        """What `subscription` missed since its channel overflowed, if it did."""
        return self._lagging.pop(subscription, None)

    def detach(self, subscription: Subscription) -> None:
        send = self._live.pop(subscription, None)
        if send is not None:
            send.close()
        self._lagging.pop(subscription, None)
        self._open.discard(subscription)
        self._refusing = False

    def close(self) -> None:
        """End every subscription: each one's next read raises NodeClosed."""
        self.closed = True
        for send in self._live.values():
            send.close()
        self._live.clear()

    async def run(
        self,
        committed: trio.MemoryReceiveChannel[Committed],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Trio-flavoured: the replay-log task. Ends when the producer closes `committed`."""
        task_status.started()
        try:
            async with committed:
                async for batch in committed:
                    if batch.new_epoch:
                        self.generation += 1
                        self._restart_everyone(batch.head)
                    elif batch.skipped_to is not None:
                        self._restart_everyone(batch.skipped_to)
                    self.replay_log.append(batch.events, batch.head)
                    self._fan_out(batch.events)
        finally:
            self.close()

    def _restart_everyone(self, sequence: int) -> None:
        """The log cannot replay the changes up to `sequence`: every live subscription is
        detached, to continue from the store (a catch-up across the changes it missed), or
        with a RESYNC when the store it followed was replaced."""
        self.replay_log.skip_to(sequence)
        for send in self._live.values():
            send.close()
        self._live.clear()

    def _fan_out(self, events: list[ChangeEvent]) -> None:
        for subscription, missed in self._lagging.items():
            for event in events:
                if subscription.wants(event.collection):
                    missed.add(event)
        for subscription, send in list(self._live.items()):
            if subscription.collections is None:
                theirs = events
            else:
                theirs = [event for event in events if subscription.wants(event.collection)]
            if not theirs:
                continue
            if subscription.unread >= self.buffer_size:
                self._overflow(subscription, send, theirs)
                continue
            send.send_nowait(theirs)
            subscription.unread += len(theirs)

    def _overflow(
        self,
        subscription: Subscription,
        send: trio.MemorySendChannel[list[ChangeEvent]],
        missed_events: list[ChangeEvent],
    ) -> None:
        # Closing the channel is the resync sentinel: the subscriber drains what is buffered,
        # then sees the end of the channel and heals itself from where it stopped.
        send.close()
        del self._live[subscription]
        first_missed = missed_events[0]
        missed = MissedRange.starting_at(first_missed)
        for event in missed_events[1:]:
            missed.add(event)
        self._lagging[subscription] = missed
        self.lag_events += 1
        log.warning(
            "subscriber %s (collections: %s) fell %d events behind at sequence %d;"
            " it gets no live events until it reads again and catches up",
            subscription.name,
            subscription.describe_collections(),
            self.buffer_size,
            first_missed.sequence,
        )
