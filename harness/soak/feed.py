"""`FeedRecord`: what one follower's events claim, kept for the final check.

A follower's events are checked as they come for order (a data event after the last
position must be newer than it), and the rest is kept for the end, when the ledger holds
every acknowledged write: each event's content against the write at its sequence, and each
stretch of sequences the feed passed over without a catch-up or a RESYNC to explain it
against the follower's filter (no acknowledged write of a followed collection may be there).
"""

from __future__ import annotations

import enum
from array import array

from harness.soak.ledger import Ledger, change_digest
from peat_sync.client import ChangeType, Event


class Phase(enum.Enum):
    LIVE = "live"  # exact changes: every one of the followed collections, in order
    CATCH_UP = "catch-up"  # the latest state of each changed document, in sequence order
    SNAPSHOT = "snapshot"  # the whole of the followed collections
    RESYNC = "resync"  # position lost; a snapshot follows


class FeedRecord:
    """The claims of one follower's feed. `observe` takes every event in order."""

    def __init__(self, name: str, collections: list[str]) -> None:
        self.name = name
        self.collections = collections
        self.phase = Phase.LIVE
        # The sequence up to which the feed vouches for every change of the followed
        # collections; None before the first snapshot and after a RESYNC.
        self.position: int | None = None
        self._last_in_catch_up = 0
        # (low, high) pairs, flattened: no acknowledged write of a followed collection may
        # have a sequence in (low, high].
        self.passed_over = array("q")
        # (sequence, digest) pairs, flattened: events whose write was not yet acknowledged
        # when they arrived.
        self._unmatched = array("q")
        self.violations: list[str] = []
        self.events = 0
        self.catch_ups = 0
        self.snapshots = 0
        self.resyncs = 0

    def observe(self, event: Event, ledger: Ledger) -> None:
        self.events += 1
        if event.is_change:
            self._observe_change(event, ledger)
            return
        match event.type:
            case ChangeType.HEARTBEAT:
                if self.phase is Phase.SNAPSHOT:
                    self._violation(f"heartbeat {event.sequence} inside a snapshot")
                # Also what a new stream opens with when an interrupted catch-up (applied
                # only whole) resumes from its start, which is `position`.
                self.phase = Phase.LIVE
                self._advance_to(event.sequence, "heartbeat")
            case ChangeType.CATCH_UP_BEGIN:
                self.phase = Phase.CATCH_UP
                self._advance_to(event.sequence, "catch-up start")
                self._last_in_catch_up = event.sequence
            case ChangeType.SNAPSHOT_BEGIN:
                self.phase = Phase.SNAPSHOT
                self.snapshots += 1
            case ChangeType.CATCH_UP_END:
                if self.phase is Phase.CATCH_UP:
                    self.catch_ups += 1
                elif self.phase is not Phase.SNAPSHOT:
                    self._violation(f"CATCH_UP_END {event.sequence} outside a catch-up")
                self.phase = Phase.LIVE
                self.position = event.sequence
            case ChangeType.RESYNC:
                self.resyncs += 1
                self.phase = Phase.RESYNC
                self.position = None

    def _observe_change(self, event: Event, ledger: Ledger) -> None:
        self._match(event, ledger)
        match self.phase:
            case Phase.LIVE:
                if self.position is None:
                    self._violation(f"change {event.sequence} before any snapshot")
                    return
                if event.sequence <= self.position:
                    self._violation(
                        f"change {event.sequence} after position {self.position}: not increasing"
                    )
                    return
                self._pass_over(self.position, event.sequence - 1)
                self.position = event.sequence
            case Phase.CATCH_UP:
                if event.sequence <= self._last_in_catch_up:
                    self._violation(
                        f"catch-up change {event.sequence} after {self._last_in_catch_up}:"
                        " not increasing"
                    )
                self._last_in_catch_up = event.sequence
            case Phase.RESYNC:
                self._violation(f"change {event.sequence} between a RESYNC and its snapshot")
            case Phase.SNAPSHOT:
                pass  # the snapshot's documents, in no promised order

    def _advance_to(self, sequence: int, what: str) -> None:
        """A control event that vouches for everything up to `sequence`."""
        if self.position is None:
            return  # nothing held yet: a snapshot comes first
        if sequence < self.position:
            self._violation(f"{what} {sequence} behind position {self.position}")
            return
        self._pass_over(self.position, sequence)
        self.position = sequence

    def _pass_over(self, low: int, high: int) -> None:
        if high > low:
            self.passed_over.extend((low, high))

    def _match(self, event: Event, ledger: Ledger) -> None:
        digest = change_digest(event.collection, event.doc_id, event.json_data)
        expected = ledger.digest_at(event.sequence)
        if expected is None:
            self._unmatched.extend((event.sequence, digest))
        elif expected != digest:
            self._violation(_wrong_content(event))

    def final_violations(self, ledger: Ledger, counts: dict[str, array[int]]) -> list[str]:
        """The violations known once every write is in `ledger`: events unlike the write
        acknowledged at their sequence, and stretches passed over that hide a write of a
        followed collection. `counts` is `ledger.counts_by_collection()`."""
        found: list[str] = []
        for index in range(0, len(self._unmatched), 2):
            sequence, digest = self._unmatched[index], self._unmatched[index + 1]
            expected = ledger.digest_at(sequence)
            if expected is not None and expected != digest:
                found.append(f"{self.name}: event at {sequence} differs from the write acked there")
        top = ledger.highest_sequence
        followed = [counts[name] for name in self.collections or ledger.collections]
        for index in range(0, len(self.passed_over), 2):
            low, high = self.passed_over[index], min(self.passed_over[index + 1], top)
            if high <= low:
                continue
            missed = sum(count[high] - count[low] for count in followed)
            if missed:
                found.append(
                    f"{self.name}: {missed} acknowledged write(s) of its collections in"
                    f" ({low}, {high}] never delivered, and no catch-up or RESYNC explains it"
                )
        return found

    def _violation(self, message: str) -> None:
        self.violations.append(f"{self.name}: {message}")


def _wrong_content(event: Event) -> str:
    return (
        f"{event.type.name} {event.collection}/{event.doc_id} at {event.sequence}"
        " differs from the write acknowledged at that sequence"
    )
