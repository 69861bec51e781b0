"""The mirror's state machine, fed scripted streams: it shows the store at one sequence or
not at all, whatever the order of streams, catch-ups, snapshots and RESYNCs."""

from __future__ import annotations

import json

from peat_sync.client import AppliedChange, ChangeType, ConsistentCopy, Event

EPOCH = "e1"


def upsert(doc_id: str, sequence: int, value: int, collection: str = "a") -> Event:
    return Event(ChangeType.UPSERT, sequence, collection, doc_id, json.dumps({"v": value}))


def delete(doc_id: str, sequence: int, collection: str = "a") -> Event:
    return Event(ChangeType.DELETE, sequence, collection, doc_id)


def control(change_type: ChangeType, sequence: int, epoch: str = EPOCH) -> Event:
    return Event(change_type, sequence, epoch=epoch)


def feed(copy: ConsistentCopy, *events: Event) -> list[AppliedChange]:
    return [change for event in events for change in copy.apply(event)]


def changed(*items: tuple[str, dict[str, int] | None, int]) -> list[AppliedChange]:
    return [AppliedChange("a", doc_id, document, sequence) for doc_id, document, sequence in items]


def snapshot_copy() -> ConsistentCopy:
    """A copy holding a/1 = 1 and a/2 = 2 at sequence 5."""
    copy = ConsistentCopy()
    feed(
        copy,
        control(ChangeType.SNAPSHOT_BEGIN, 5),
        upsert("1", 3, 1),
        upsert("2", 5, 2),
        control(ChangeType.CATCH_UP_END, 5),
    )
    return copy


def test_a_snapshot_shows_nothing_until_it_is_complete() -> None:
    copy = ConsistentCopy()
    feed(copy, control(ChangeType.SNAPSHOT_BEGIN, 5), upsert("1", 3, 1))
    assert (copy.documents, copy.sequence, copy.ready) == ({}, 0, False)
    assert feed(copy, upsert("2", 5, 2), control(ChangeType.CATCH_UP_END, 5)) == changed(
        ("1", {"v": 1}, 5), ("2", {"v": 2}, 5)
    )
    assert (copy.documents, copy.sequence, copy.ready, copy.epoch) == (
        {"a": {"1": {"v": 1}, "2": {"v": 2}}},
        5,
        True,
        EPOCH,
    )


def test_live_changes_apply_one_by_one_and_heartbeats_advance_the_sequence() -> None:
    copy = snapshot_copy()
    assert feed(copy, upsert("3", 6, 3)) == changed(("3", {"v": 3}, 6))
    assert feed(copy, delete("1", 7)) == changed(("1", None, 7))
    assert feed(copy, delete("never", 8)) == []  # nothing to delete is no change
    assert feed(copy, control(ChangeType.HEARTBEAT, 12)) == []
    assert copy.documents == {"a": {"2": {"v": 2}, "3": {"v": 3}}}
    assert copy.sequence == 12


def test_a_catch_up_applies_at_once_at_its_end() -> None:
    copy = snapshot_copy()
    feed(copy, control(ChangeType.CATCH_UP_BEGIN, 5), upsert("3", 6, 3), delete("1", 8))
    assert copy.documents == {"a": {"1": {"v": 1}, "2": {"v": 2}}}
    assert copy.sequence == 5
    assert feed(copy, control(ChangeType.CATCH_UP_END, 9)) == changed(
        ("3", {"v": 3}, 9), ("1", None, 9)
    )
    assert (copy.documents, copy.sequence) == ({"a": {"2": {"v": 2}, "3": {"v": 3}}}, 9)


def test_an_interrupted_catch_up_is_void_when_the_new_stream_replays() -> None:
    """The new stream resumes from the copy's sequence and opens with a heartbeat there:
    exact changes follow, and what the lost catch-up had collected never shows."""
    copy = snapshot_copy()
    feed(copy, control(ChangeType.CATCH_UP_BEGIN, 5), upsert("9", 9, 9))
    feed(copy, control(ChangeType.HEARTBEAT, 5))
    assert feed(copy, upsert("3", 6, 3)) == changed(("3", {"v": 3}, 6))
    assert copy.documents == {"a": {"1": {"v": 1}, "2": {"v": 2}, "3": {"v": 3}}}


def test_an_interrupted_catch_up_is_void_when_a_new_one_starts() -> None:
    copy = snapshot_copy()
    feed(copy, control(ChangeType.CATCH_UP_BEGIN, 5), upsert("9", 9, 9))
    feed(copy, control(ChangeType.CATCH_UP_BEGIN, 5), upsert("3", 6, 3))
    assert feed(copy, control(ChangeType.CATCH_UP_END, 6)) == changed(("3", {"v": 3}, 6))
    assert "9" not in copy.documents["a"]


def test_after_a_resync_the_snapshot_yields_only_its_differences() -> None:
    copy = snapshot_copy()
    feed(copy, control(ChangeType.CATCH_UP_BEGIN, 5), upsert("7", 7, 7))
    feed(copy, control(ChangeType.RESYNC, 20))  # mid-catch-up: what was collected is void
    feed(copy, control(ChangeType.SNAPSHOT_BEGIN, 20), upsert("2", 5, 2), upsert("3", 15, 3))
    assert feed(copy, delete("gone", 18), control(ChangeType.CATCH_UP_END, 20)) == changed(
        ("3", {"v": 3}, 20), ("1", None, 20)
    )
    assert (copy.documents, copy.sequence) == ({"a": {"2": {"v": 2}, "3": {"v": 3}}}, 20)


def test_a_new_epoch_replaces_the_copy_and_its_sequence() -> None:
    """A wiped store starts a new epoch at a lower sequence; the copy follows it down."""
    copy = snapshot_copy()
    feed(copy, control(ChangeType.RESYNC, 1, epoch="e2"))
    feed(copy, control(ChangeType.SNAPSHOT_BEGIN, 1, epoch="e2"), upsert("x", 1, 0))
    feed(copy, control(ChangeType.CATCH_UP_END, 1, epoch="e2"))
    assert (copy.documents, copy.sequence, copy.epoch) == ({"a": {"x": {"v": 0}}}, 1, "e2")


def test_emptied_collections_disappear() -> None:
    copy = snapshot_copy()
    feed(copy, delete("1", 6), delete("2", 7), upsert("1", 8, 1, collection="b"))
    assert copy.documents == {"b": {"1": {"v": 1}}}
