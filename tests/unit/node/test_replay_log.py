"""ReplayLog: the ring of recent events, bounded by count and bytes, addressed by sequence."""

from __future__ import annotations

import pytest

from peat_sync.generated.peat.sidecar.v1 import ChangeType
from peat_sync.node.events import ChangeEvent
from peat_sync.node.replay_log import ReplayLog


def event(sequence: int, size: int = 10) -> ChangeEvent:
    """An event whose encoded form is exactly `size` bytes (the log only counts bytes)."""
    return ChangeEvent(sequence, "c", f"d{sequence}", ChangeType.UPSERT, b"x" * size)


def events(first: int, last: int, size: int = 10) -> list[ChangeEvent]:
    return [event(sequence, size) for sequence in range(first, last + 1)]


def sequences(replayed: list[ChangeEvent]) -> list[int]:
    return [e.sequence for e in replayed]


def test_an_empty_log_covers_only_its_head() -> None:
    """A log opened at head 10 can replay from 10 (nothing to send) and from nowhere else."""
    log = ReplayLog(max_entries=5, max_bytes=1000, head=10)

    assert (log.head, log.floor, len(log), log.size_bytes) == (10, 10, 0, 0)
    assert log.covers(10)
    assert not log.covers(9)
    assert not log.covers(11)
    assert log.read_after(10, 100) == []


def test_count_bound_evicts_the_oldest_events() -> None:
    """Past `max_entries`, the oldest events go and the floor moves up with them."""
    log = ReplayLog(max_entries=3, max_bytes=10_000, head=0)
    log.append(events(1, 2))
    log.append(events(3, 5))

    assert len(log) == 3
    assert (log.floor, log.head) == (2, 5)
    assert not log.covers(1)
    assert log.covers(2)
    assert sequences(log.read_after(2, 100)) == [3, 4, 5]


def test_byte_bound_evicts_the_oldest_events() -> None:
    """Past `max_bytes`, the oldest events go even when the count bound is far away."""
    log = ReplayLog(max_entries=1000, max_bytes=25, head=0)
    log.append(events(1, 4, size=10))

    assert len(log) == 2
    assert log.size_bytes == 20
    assert (log.floor, log.head) == (2, 4)
    assert sequences(log.read_after(2, 100)) == [3, 4]


def test_an_event_exactly_at_the_byte_bound_is_kept() -> None:
    """The byte bound is inclusive: events filling it exactly all stay."""
    log = ReplayLog(max_entries=1000, max_bytes=30, head=0)
    log.append(events(1, 3, size=10))

    assert len(log) == 3
    assert log.size_bytes == 30
    assert log.floor == 0


def test_the_newest_event_is_always_kept() -> None:
    """An event larger than the whole byte bound still stays, alone, so live subscribers
    at head - 1 can read it."""
    log = ReplayLog(max_entries=10, max_bytes=5, head=0)
    log.append(events(1, 3, size=2))
    log.append([event(4, size=100)])

    assert len(log) == 1
    assert log.size_bytes == 100
    assert (log.floor, log.head) == (3, 4)
    assert log.covers(3)
    assert sequences(log.read_after(3, 10)) == [4]


def test_a_count_bound_of_zero_still_keeps_the_newest_event() -> None:
    """Even a degenerate count bound keeps the newest event."""
    log = ReplayLog(max_entries=0, max_bytes=1000, head=7)
    log.append(events(8, 9))

    assert sequences(log.read_after(log.floor, 10)) == [9]


def test_read_after_respects_the_limit() -> None:
    """`read_after` returns at most `limit` events, in order, starting right after `since`."""
    log = ReplayLog(max_entries=100, max_bytes=10_000, head=0)
    log.append(events(1, 10))

    assert sequences(log.read_after(0, 3)) == [1, 2, 3]
    assert sequences(log.read_after(3, 3)) == [4, 5, 6]
    assert sequences(log.read_after(8, 5)) == [9, 10]
    assert log.read_after(10, 5) == []
    assert log.read_after(4, 0) == []


def test_read_after_refuses_a_position_outside_the_log() -> None:
    """Reading from below the floor or beyond the head is an error, never a silent gap."""
    log = ReplayLog(max_entries=3, max_bytes=10_000, head=0)
    log.append(events(1, 6))

    with pytest.raises(ValueError, match="outside the replay log"):
        log.read_after(2, 10)
    with pytest.raises(ValueError, match="outside the replay log"):
        log.read_after(7, 10)


@pytest.mark.parametrize("sequence", [5, 4, 1])
def test_an_append_that_is_not_newer_is_rejected(sequence: int) -> None:
    """A repeated or older sequence is refused, and the log is left as it was."""
    log = ReplayLog(max_entries=10, max_bytes=10_000, head=0)
    log.append(events(1, 5))

    with pytest.raises(ValueError, match=f"expected a sequence after 5, got {sequence}"):
        log.append([event(sequence)])

    assert log.head == 5
    assert len(log) == 5
    assert sequences(log.read_after(0, 10)) == [1, 2, 3, 4, 5]


def test_the_first_append_must_follow_the_opening_head() -> None:
    """A log opened at the store's head takes only later sequences."""
    log = ReplayLog(max_entries=10, max_bytes=10_000, head=41)

    with pytest.raises(ValueError, match="expected a sequence after 41, got 1"):
        log.append([event(1)])
    log.append([event(42)])
    assert (log.floor, log.head) == (41, 42)


def test_holes_of_writes_that_changed_nothing_are_replayed_across() -> None:
    """Shared mode: sequences that made no event (a delete of an absent document) leave
    holes, and a position inside a hole replays exactly what follows it."""
    log = ReplayLog(max_entries=10, max_bytes=10_000, head=0)
    log.append([event(2), event(5)], head=7)
    log.append([event(9)])

    assert (log.floor, log.head) == (0, 9)
    assert sequences(log.read_after(0, 10)) == [2, 5, 9]
    assert sequences(log.read_after(3, 10)) == [5, 9]
    assert sequences(log.read_after(6, 10)) == [9]
    assert log.read_after(9, 10) == []


def test_eviction_across_holes_raises_the_floor_to_the_evicted_event() -> None:
    log = ReplayLog(max_entries=2, max_bytes=10_000, head=0)
    log.append([event(3), event(6), event(10)])

    assert (log.floor, log.head, len(log)) == (3, 10, 2)
    assert not log.covers(2)
    assert sequences(log.read_after(3, 10)) == [6, 10]


def test_skip_to_drops_what_cannot_be_replayed() -> None:
    """Changes the node never saw: the log restarts after them, and a position before them
    is no longer covered (that subscriber catches up from the store instead)."""
    log = ReplayLog(max_entries=10, max_bytes=10_000, head=0)
    log.append(events(1, 4))
    log.skip_to(8)
    log.append([event(9)])

    assert (log.floor, log.head, len(log), log.size_bytes) == (8, 9, 1, 10)
    assert not log.covers(4)
    assert sequences(log.read_after(8, 10)) == [9]


def test_many_evictions_keep_the_newest_events_readable() -> None:
    """Evicted events are dropped in bulk now and then; reads stay correct across that."""
    log = ReplayLog(max_entries=100, max_bytes=1 << 20, head=0)
    for first in range(1, 5001, 50):
        log.append(events(first, first + 49))

    assert (log.floor, log.head, len(log)) == (4900, 5000, 100)
    assert sequences(log.read_after(4990, 100)) == list(range(4991, 5001))
