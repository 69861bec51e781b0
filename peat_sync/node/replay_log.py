"""The replay log: a ring of the newest encoded events, bounded by count and by bytes."""

from __future__ import annotations

from collections.abc import Iterable

from peat_sync.node.events import ChangeEvent


class ReplayLog:
    """Holds the contiguous run of events `first..head`, newest last.

    Sequences are store-wide and gap-free, so an event is found by its sequence in O(1). The
    oldest events are evicted once either bound is passed; the newest event is always kept.
    """

    def __init__(self, *, max_entries: int, max_bytes: int, head: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._events: dict[int, ChangeEvent] = {}
        self._first = head + 1  # the oldest sequence held; head + 1 when empty
        self._head = head
        self._bytes = 0

    @property
    def head(self) -> int:
        """The newest sequence appended."""
        return self._head

    @property
    def floor(self) -> int:
        """The oldest `since_sequence` that can be replayed exactly (one below the oldest event)."""
        return self._first - 1

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._events)

    def covers(self, since: int) -> bool:
        """Whether every event after `since` up to the head is held."""
        return self.floor <= since <= self._head

    def append(self, events: Iterable[ChangeEvent]) -> None:
        for event in events:
            if event.sequence != self._head + 1:
                raise ValueError(
                    f"replay log expected sequence {self._head + 1}, got {event.sequence}"
                )
            self._events[event.sequence] = event
            self._head = event.sequence
            self._bytes += len(event.encoded)
        while len(self._events) > 1 and (
            len(self._events) > self.max_entries or self._bytes > self.max_bytes
        ):
            evicted = self._events.pop(self._first)
            self._bytes -= len(evicted.encoded)
            self._first += 1

    def read_after(self, since: int, limit: int) -> list[ChangeEvent]:
        """Up to `limit` events after `since`; `covers(since)` must hold."""
        if not self.covers(since):
            raise ValueError(f"sequence {since} is outside the replay log")
        stop = min(self._head, since + limit)
        return [self._events[sequence] for sequence in range(since + 1, stop + 1)]
