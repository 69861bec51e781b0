"""One subscriber's view of the feed: resume, catch up, follow live, heal after lag."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from peat_sync.generated.peat.sidecar.v1 import ChangeType, ResyncReason
from peat_sync.node.errors import NodeClosed
from peat_sync.node.events import ChangeEvent, Progress
from peat_sync.node.query import Predicate
from peat_sync.node.validation import EXCERPT_CHARACTERS, excerpt

if TYPE_CHECKING:
    from peat_sync.node.feed import ChangeFeed

log = logging.getLogger("peat_sync.subscription")

# JSON bytes of one page of a catch-up or snapshot, read from the store, encoded and held until
# it is sent: a subscriber that stops reading holds one page (and its encoding), however large
# the store (a page holds one document at least, whatever its size).
PAGE_BYTES = 2 * 1024 * 1024


@dataclass(slots=True)
class _StoreRead:
    """A snapshot or catch-up under way: the store is read in sequence order after `cursor`."""

    cursor: int
    tombstones_after: int  # older tombstones concern documents the consumer does not have
    snapshot: bool
    sent: int = 0

    @property
    def kind(self) -> str:
        return "snapshot" if self.snapshot else "catch-up"


class Subscription:
    """The trio side of one Subscribe stream.

    `position` is the sequence up to which the consumer has every change to its collections.
    The subscription reads in one of three ways:

    - *replay*: from the replay log, after `position`;
    - *store read*: a snapshot, or a catch-up when the replay log no longer reaches back to
      `position`. Pages are read in sequence order, each in its own read transaction, so a
      document changed during the read comes again later with its newer state, and when a
      page finds nothing more the consumer's copy equals the store at that page's head;
    - *live*: attached to the feed with a bounded channel.

    It replays until it reaches the log's head, then attaches. When its channel overflows it
    replays again from `position`, or catches up from the store. Only when the store no
    longer holds the changes after `position` does the consumer get a RESYNC.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        name: str,
        collections: frozenset[str] | None,
        *,
        since: int | None,
        epoch: str | None,
        snapshot: bool,
        query: Predicate | None = None,
        legacy: bool = False,
    ) -> None:
        self.name = name
        self.collections = collections
        self._feed = feed
        self._history = feed.history
        self._snapshot = snapshot
        self._query = query
        self._legacy = legacy
        self._receive: trio.MemoryReceiveChannel[list[ChangeEvent]] | None = None
        # Events the feed has put in the channel that this subscription has not taken yet:
        # the feed's measure of how far behind it is.
        self.unread = 0
        self._store_read: _StoreRead | None = None
        self._pending: list[ChangeEvent] = []
        self._lagged = False
        self._generation = feed.generation
        head = self._history.head
        self.position = head if since is None else since
        if epoch is not None and epoch == self._history.previous_epoch:
            self._resync(
                ResyncReason.EPOCH_CHANGED,
                f"epoch {excerpt(epoch)} is the stream this sidecar followed before; it now"
                f" follows a new one (epoch {self._history.epoch!r})",
            )
        elif epoch is not None and epoch != self._history.epoch:
            self._resync(
                ResyncReason.UNKNOWN_EPOCH,
                f"epoch {excerpt(epoch)} is not this store's epoch ({self._history.epoch!r}): your"
                " position belongs to another store (a wiped data dir or another node)",
            )
        elif since is not None and since > self._history.known_head:
            self._resync(
                ResyncReason.SEQUENCE_AHEAD,
                f"since_sequence {since} is ahead of the newest change ({head}), so this store"
                " has no such position",
            )
        elif since is None and (snapshot or (legacy and collections is not None)):
            # A legacy request that names collections gets their documents first, as
            # upstream sends them (without the markers it would not know).
            self._start_snapshot()
        elif since is not None and since < feed.replay_log.floor:
            self._fall_back()
        if not self._pending:
            # Every stream opens with a control event, which tells the consumer the epoch.
            self._pending.append(self._control(ChangeType.HEARTBEAT, self.position))

    def wants(self, collection: str) -> bool:
        return self.collections is None or collection in self.collections

    def describe_collections(self) -> str:
        """For logs: "all", or the collections, cut short if they are many or long."""
        if self.collections is None:
            return "all"
        names = sorted(self.collections)
        text = ",".join(names)
        if len(text) <= EXCERPT_CHARACTERS:
            return text
        return f"{len(names):,} collections from {excerpt(names[0])}"

    @property
    def is_live(self) -> bool:
        """Whether the subscription is attached to the feed, rather than replaying or reading
        the store."""
        return self._receive is not None

    @property
    def resume_point(self) -> int | None:
        """The since_sequence a consumer resumes from; None in the middle of a snapshot, when
        only a new snapshot can complete its copy."""
        if self._store_read is not None and self._store_read.snapshot:
            return None
        return self.position

    async def next_batch(self, limit: int) -> list[ChangeEvent]:
        """Trio-flavoured: wait for the next events, at most `limit` of them plus control
        events. On an idle live stream, returns a heartbeat every heartbeat interval.

        Raises `NodeClosed` once the node shuts down.
        """
        while True:
            batch = await self._next(limit)
            if self._legacy:  # of the control events, a legacy client knows RESYNC only
                batch = [e for e in batch if not e.is_control or e.change_type == ChangeType.RESYNC]
            if batch:
                break
        self._feed.stats.events_delivered += len(batch)
        return batch

    async def _next(self, limit: int) -> list[ChangeEvent]:
        while True:
            if self._feed.closed:
                raise NodeClosed("the node is shutting down")
            if self._generation != self._feed.generation:
                self._follow_new_store()
            if self._pending:
                batch, self._pending = self._pending, []
                return batch
            if self._store_read is not None:
                batch = await self._read_store(limit)
            elif self._receive is None:
                batch = self._replay(limit)
                # A long replay that matches nothing must still let other tasks run.
                await trio.lowlevel.checkpoint()
            else:
                batch = await self._receive_live(limit)
            if batch:
                return batch

    # Ways of reading ---------------------------------------------------------------------

    def _replay(self, limit: int) -> list[ChangeEvent]:
        """Read the next events from the replay log, or attach when there are none left."""
        replay_log = self._feed.replay_log
        if self.position >= replay_log.head:
            self._receive = self._feed.attach(self)
            self._lagged = False
            return []
        if self.position < replay_log.floor:
            self._fall_back()
            return []
        events = replay_log.read_after(self.position, limit)
        # Fewer than asked: none is left up to the head (later sequences changed nothing).
        self.position = events[-1].sequence if len(events) == limit else replay_log.head
        return self._matching([event for event in events if self.wants(event.collection)])

    async def _read_store(self, limit: int) -> list[ChangeEvent]:
        read = self._store_read
        assert read is not None
        page = await self._history.changes_after(
            read.cursor, self.collections, limit, read.tombstones_after, PAGE_BYTES
        )
        if page.catch_up_floor > max(read.cursor, read.tombstones_after):
            # Tombstones this read still needed were purged while it ran.
            self._store_read = None
            self._resync(
                ResyncReason.HISTORY_COMPACTED,
                f"deletes after sequence {read.cursor} were purged (tombstone retention) while"
                " the stream was catching up",
                # The page saw the purge committed; the store's floor in memory may not yet.
                catch_up_floor=page.catch_up_floor,
            )
            return []
        events = [ChangeEvent.from_change(change) for change in page.changes]
        read.sent += len(events)
        if events:
            read.cursor = events[-1].sequence
            if not read.snapshot:
                # Pages come in sequence order, so a partial catch-up is a valid resume point.
                self.position = read.cursor
        # A snapshot reads its documents as of when it began, and again those changed since.
        events = self._matching(
            events, unsent_through=read.tombstones_after if read.snapshot else -1
        )
        if page.complete:
            self._store_read = None
            self.position = page.head_sequence
            log.info(
                "subscriber %s: %s complete at sequence %d (%d documents)",
                self.name,
                read.kind,
                self.position,
                read.sent,
            )
            events.append(
                self._control(
                    ChangeType.CATCH_UP_END,
                    self.position,
                    f"your copy now equals the store at sequence {self.position};"
                    " the changes after it follow",
                )
            )
        return events

    async def _receive_live(self, limit: int) -> list[ChangeEvent]:
        receive = self._receive
        assert receive is not None
        first: list[ChangeEvent] | None = None
        try:
            with trio.move_on_after(self._feed.heartbeat_interval):
                first = await receive.receive()
            if first is None:
                # The feed may have buffered events after the timeout fired and before this
                # task ran again: those come first.
                first = receive.receive_nowait()
        except trio.WouldBlock:
            # Idle for a whole interval with an empty channel: the feed has offered this
            # subscription every event up to the log's head, and it has taken them all.
            self.position = max(self.position, self._feed.replay_log.head)
            return [self._control(ChangeType.HEARTBEAT, self.position)]
        except trio.EndOfChannel:
            # The feed closed the channel: on overflow, or because the node is closing,
            # which the top of `next_batch` reports.
            self._receive = None
            if not self._feed.closed:
                self._lagged = True
                self._log_lag()
            return []
        batch = list(first)
        while len(batch) < limit:
            try:
                batch += receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        self.unread -= len(batch)
        # Events committed before a subscription started can still be in flight to the feed
        # when it attaches; the position filters them out.
        batch = [event for event in batch if event.sequence > self.position]
        if batch:
            self.position = batch[-1].sequence
        return self._matching(batch)

    def _matching(
        self, events: list[ChangeEvent], *, unsent_through: int = -1
    ) -> list[ChangeEvent]:
        """`events` as a query subscriber sees them: an upsert of a document the query does
        not match is a delete of it (it may have matched before), so that a copy built from
        the stream equals the store restricted to the query. Deletes pass, as upstream passes
        them. In a snapshot, whose reader starts from nothing, a document last changed at or
        before `unsent_through` was not sent before, and if it does not match, is left out."""
        if self._query is None:
            return events
        matching = []
        for event in events:
            if event.change_type != ChangeType.UPSERT or self._query(event.document()):
                matching.append(event)
            elif event.sequence > unsent_through:
                matching.append(event.as_delete())
        return matching

    # Changes of course -------------------------------------------------------------------

    def _fall_back(self) -> None:
        """`position` is older than the replay log: catch up from the store, or RESYNC."""
        replay_floor = self._feed.replay_log.floor
        catch_up_floor = self._history.catch_up_floor
        if self._legacy:
            # A legacy client knows no catch-up (latest states only, between markers): what
            # the replay log cannot replay exactly is a RESYNC, the original request's rule.
            self._resync(
                ResyncReason.SLOW_CONSUMER if self._lagged else ResyncReason.HISTORY_COMPACTED,
                f"the replay log starts after sequence {replay_floor}, past {self.position}",
            )
        elif self.position >= catch_up_floor:
            self._store_read = _StoreRead(self.position, self.position, snapshot=False)
            self._feed.stats.catch_ups += 1
            log.info(
                "subscriber %s: catching up from the store after sequence %d (the replay log"
                " starts after %d)",
                self.name,
                self.position,
                replay_floor,
            )
            self._pending.append(
                self._control(
                    ChangeType.CATCH_UP_BEGIN,
                    self.position,
                    f"the replay log starts after sequence {replay_floor}: the latest state of"
                    f" each document changed after sequence {self.position} follows, without"
                    " its intermediate states, until CATCH_UP_END",
                )
            )
        else:
            self._resync(
                ResyncReason.SLOW_CONSUMER if self._lagged else ResyncReason.HISTORY_COMPACTED,
                f"the changes after sequence {self.position} are no longer kept (deletes up to"
                f" sequence {catch_up_floor} were purged after the tombstone retention)",
            )
        self._lagged = False

    def _follow_new_store(self) -> None:
        """The store was replaced under the subscription (shared mode: the stream it followed
        was recreated): what the consumer has belongs to the old one."""
        self._generation = self._feed.generation
        self._store_read = None
        self._lagged = False
        self._pending.clear()
        if self._receive is not None:
            self._receive.close()
            self._receive = None
        self._resync(
            ResyncReason.EPOCH_CHANGED,
            "the stream this sidecar followed was recreated, or replaced by another; your copy"
            f" belongs to the old one (the epoch is now {self._history.epoch!r})",
        )

    def _resync(self, reason: ResyncReason, why: str, catch_up_floor: int = 0) -> None:
        head = self._history.head
        log.info("subscriber %s: RESYNC (%s) at sequence %d: %s", self.name, reason.name, head, why)
        self._feed.stats.resyncs[reason.name] += 1
        self.position = head
        advice = (
            "a snapshot of the current documents follows"
            if self._snapshot
            else "re-list the collections"
        )
        self._pending.append(
            self._control(
                ChangeType.RESYNC,
                head,
                f"{why}: {advice}; the changes after sequence {head} follow",
                reason,
                catch_up_floor,
            )
        )
        if self._snapshot:
            self._start_snapshot()

    def _start_snapshot(self) -> None:
        self._store_read = _StoreRead(0, self.position, snapshot=True)
        self._pending.append(
            self._control(
                ChangeType.SNAPSHOT_BEGIN,
                self.position,
                "discard your copy: the current documents follow, until CATCH_UP_END",
            )
        )

    def _control(
        self,
        change_type: ChangeType,
        sequence: int,
        explanation: str = "",
        reason: ResyncReason = ResyncReason.UNSPECIFIED,
        catch_up_floor: int = 0,
    ) -> ChangeEvent:
        progress = Progress(
            self._history.epoch,
            self._feed.replay_log.floor,
            max(self._history.catch_up_floor, catch_up_floor),
        )
        return ChangeEvent.control(change_type, sequence, progress, explanation, reason)

    def _log_lag(self) -> None:
        missed = self._feed.take_missed(self)
        if missed is None:
            return
        replay_floor = self._feed.replay_log.floor
        catch_up_floor = self._history.catch_up_floor
        if self.position >= replay_floor:
            outcome = "replaying them from the replay log"
        elif self._legacy:
            outcome = (
                f"the replay log starts after sequence {replay_floor}, so the subscriber gets"
                " a RESYNC (its legacy stream knows no catch-up)"
            )
        elif self.position >= catch_up_floor:
            outcome = (
                f"the replay log starts after sequence {replay_floor}, so catching up from"
                " the store (intermediate states are skipped)"
            )
        else:
            outcome = (
                f"the replay log starts after sequence {replay_floor} and deletes up to"
                f" sequence {catch_up_floor} were purged, so the subscriber gets a RESYNC"
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
