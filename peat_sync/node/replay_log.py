"""The replay log: a ring of the newest encoded events, bounded by count and by bytes."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

from peat_sync.node.events import ChangeEvent

# Evicted events are dropped from the front of the list in one go once this many pile up,
# so that eviction costs O(1) amortised.
_COMPACT_AFTER = 1024


class ReplayLog:
    """Holds every change after `floor` up to `head`, as events, newest last.

    Sequences increase but may have holes: in shared mode a write that changed nothing (the
    delete of an absent document) takes a sequence of the stream and makes no event. A hole
    is never a change the log lacks: changes it cannot replay are dropped with `skip_to`,
    which raises the floor past them. The oldest events are evicted once either bound is
    passed; the newest event is always kept.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, head: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._events: list[ChangeEvent] = []  # in sequence order; evicted ones before _start
        self._start = 0
        self._floor = head
        self._head = head
        self._bytes = 0

    @property
    def head(self) -> int:
        """The newest sequence the log has seen."""
        return self._head

    @property
    def floor(self) -> int:
        """The oldest `since_sequence` that can be replayed exactly."""
        return self._floor

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._events) - self._start

    def covers(self, since: int) -> bool:
        """Whether every change after `since` up to the head is held."""
        return self._floor <= since <= self._head

    def append(self, events: Iterable[ChangeEvent], head: int | None = None) -> None:
        """Add `events`, newer than the head; then move the head to `head`, if given, past
        sequences that changed nothing."""
        for event in events:
            if event.sequence <= self._head:
                raise ValueError(
                    f"replay log expected a sequence after {self._head}, got {event.sequence}"
                )
            self._events.append(event)
            self._head = event.sequence
            self._bytes += len(event.encoded)
        if head is not None:
            self._head = max(self._head, head)
        while len(self) > 1 and (len(self) > self.max_entries or self._bytes > self.max_bytes):
            evicted = self._events[self._start]
            self._start += 1
            self._bytes -= len(evicted.encoded)
            self._floor = evicted.sequence
        if self._start >= _COMPACT_AFTER and self._start * 2 >= len(self._events):
            del self._events[: self._start]
            self._start = 0

    def skip_to(self, sequence: int) -> None:
        """The changes up to `sequence` cannot be replayed (they were never seen, or belong
        to a store that was replaced): empty the log, and resume it at `sequence`."""
        self._events.clear()
        self._start = 0
        self._bytes = 0
        self._floor = self._head = sequence

    def read_after(self, since: int, limit: int) -> list[ChangeEvent]:
        """Up to `limit` events after `since`; `covers(since)` must hold."""
        if not self.covers(since):
            raise ValueError(f"sequence {since} is outside the replay log")
        first = bisect_right(self._events, since, lo=self._start, key=_sequence)
        return self._events[first : first + limit]


def _sequence(event: ChangeEvent) -> int:
    return event.sequence
