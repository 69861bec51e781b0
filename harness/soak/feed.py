"""`FeedRecord`: what one follower's events claim, kept for the final check.

A follower's events are checked as they come for order (a data event after the last
position must be newer than it), and the rest is kept for the end, when the ledger holds
every acknowledged write: each event's content against the write at its sequence, and each
stretch of sequences the feed passed over without a catch-up or a RESYNC to explain it
against the follower's filter (no acknowledged write of a followed collection may be there).

In shared mode a stretch passed over may also hold writes that the stream no longer held
when this follower's sidecar read it (the stream keeps the latest message of each document):
those must have been superseded by a later write of the same document. A delete that
changed nothing has no event either: one the stream numbered where the document did not
exist (`checker.noop_delete_violations` reports it if it was acknowledged with a sequence),
and in shared mode one of a document that the follower's sidecar never held, because the
puts before the delete were superseded by the time it read the stream. With
`track_documents`, the record keeps each document's events, in the order they came, so that
a delete passed over is excused only if the follower's copy did not hold its document then.
"""

from __future__ import annotations

import enum
from array import array
from collections import Counter
from collections.abc import Callable, Container

from harness.soak.ledger import Ledger, change_digest
from harness.soak.sightings import Sightings
from peat_sync.client import ChangeType, Event, ResyncReason

# The soak never replaces a store or a stream: a RESYNC for these reasons is a lost epoch.
FORBIDDEN_RESYNCS = frozenset({ResyncReason.EPOCH_CHANGED, ResyncReason.UNKNOWN_EPOCH})


class Phase(enum.Enum):
    LIVE = "live"  # exact changes: every one of the followed collections, in order
    CATCH_UP = "catch-up"  # the latest state of each changed document, in sequence order
    SNAPSHOT = "snapshot"  # the whole of the followed collections
    RESYNC = "resync"  # position lost; a snapshot follows


class FeedRecord:
    """The claims of one follower's feed. `observe` takes every event in order; with
    `sightings`, each document it shows is reported there too."""

    def __init__(
        self,
        name: str,
        collections: list[str],
        sightings: Sightings | None = None,
        *,
        track_documents: bool = False,
    ) -> None:
        self.name = name
        self.collections = collections
        self.sightings = sightings
        # With `track_documents`: each document's events as (ordinal, sequence) pairs,
        # flattened, the sequence negative for a delete; and (first ordinal, last ordinal)
        # of each complete snapshot, which removes the documents it does not hold.
        self._documents: dict[tuple[str, str], array[int]] | None = {} if track_documents else None
        self._snapshots = array("q")
        self._snapshot_began = 0
        self.phase = Phase.LIVE
        # The sequence up to which the feed vouches for every change of the followed
        # collections; None before the first snapshot and after a RESYNC.
        self.position: int | None = None
        self._last_in_catch_up = 0
        # (low, high, ordinal) triples, flattened: no acknowledged write of a followed
        # collection may have a sequence in (low, high], passed over at event `ordinal`.
        self.passed_over = array("q")
        # (sequence, digest) pairs, flattened: events whose write was not yet acknowledged
        # when they arrived.
        self._unmatched = array("q")
        self.violations: list[str] = []
        self.events = 0
        self.catch_ups = 0
        self.snapshots = 0
        self.resyncs = 0
        self.resync_reasons: Counter[str] = Counter()

    def observe(self, event: Event, ledger: Ledger) -> None:
        self.events += 1  # the event's ordinal
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
                self._snapshot_began = self.events
            case ChangeType.CATCH_UP_END:
                if self.phase is Phase.CATCH_UP:
                    self.catch_ups += 1
                    if event.sequence < self._last_in_catch_up:
                        # The copy would stand at a sequence older than changes it holds.
                        self._violation(
                            f"catch-up ends at {event.sequence}, behind its start or its"
                            f" change at {self._last_in_catch_up}"
                        )
                elif self.phase is Phase.SNAPSHOT:
                    self._snapshots.extend((self._snapshot_began, self.events))
                else:
                    self._violation(f"CATCH_UP_END {event.sequence} outside a catch-up")
                self.phase = Phase.LIVE
                self.position = event.sequence
            case ChangeType.RESYNC:
                self.resyncs += 1
                self.resync_reasons[event.resync_reason.name] += 1
                if event.resync_reason in FORBIDDEN_RESYNCS:
                    self._violation(
                        f"RESYNC ({event.resync_reason.name}) at {event.sequence}: {event.message}"
                    )
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
            self.passed_over.extend((low, high, self.events))

    def _match(self, event: Event, ledger: Ledger) -> None:
        digest = change_digest(event.collection, event.doc_id, event.json_data)
        if self.sightings is not None and event.json_data is not None:
            name = f"{event.collection}/{event.doc_id}"
            self.sightings.see(digest, event.sequence, self.name, name)
        if self._documents is not None:
            signed = -event.sequence if event.json_data is None else event.sequence
            key = (event.collection, event.doc_id)
            self._documents.setdefault(key, array("q")).extend((self.events, signed))
        expected = ledger.digest_at(event.sequence)
        if expected is None:
            self._unmatched.extend((event.sequence, digest))
        elif expected != digest:
            self._violation(_wrong_content(event))

    def final_violations(
        self,
        ledger: Ledger,
        counts: dict[str, array[int]],
        *,
        excused: Callable[[int], bool] | None = None,
        sent: Container[int] | None = None,
    ) -> list[str]:
        """The violations known once every write is in `ledger`: events unlike the write
        acknowledged at their sequence, and stretches passed over that hide a write of a
        followed collection. `counts` is `ledger.counts_by_collection()`.

        `excused` says whether the acknowledged write at a sequence may be passed over for a
        reason checked elsewhere: in shared mode, a later write of its document superseded it;
        or it is a delete that changed nothing, though acknowledged with a sequence. With
        `sent`, the fingerprints of every write sent, an event at a sequence with no
        acknowledged write must be one of them."""
        found: list[str] = []
        for index in range(0, len(self._unmatched), 2):
            sequence, digest = self._unmatched[index], self._unmatched[index + 1]
            expected = ledger.digest_at(sequence)
            if expected is not None and expected != digest:
                found.append(f"{self.name}: event at {sequence} differs from the write acked there")
            elif expected is None and sent is not None and digest not in sent:
                found.append(f"{self.name}: event at {sequence} is no write that a writer sent")
        top = ledger.highest_sequence
        followed = [counts[name] for name in self.collections or ledger.collections]
        for index in range(0, len(self.passed_over), 3):
            low, high = self.passed_over[index], min(self.passed_over[index + 1], top)
            if high <= low or not sum(count[high] - count[low] for count in followed):
                continue
            ordinal = self.passed_over[index + 2]
            missed = [
                sequence
                for sequence in range(low + 1, high + 1)
                if self._follows(ledger.collection_at(sequence))
                and (excused is None or not excused(sequence))
                and not self._deleted_nothing(ledger, sequence, ordinal)
            ]
            if missed:
                found.append(
                    f"{self.name}: {len(missed)} acknowledged write(s) of its collections in"
                    f" ({low}, {high}] never delivered, and no catch-up or RESYNC explains it:"
                    f" {', '.join(_describe(ledger, sequence) for sequence in missed[:3])}"
                )
        return found

    def _deleted_nothing(self, ledger: Ledger, sequence: int, ordinal: int) -> bool:
        """Whether the write at `sequence` is a delete of a document that the copy did not
        hold when the feed passed over it at event `ordinal` (known with `track_documents`):
        deleting nothing is no change."""
        key = ledger.document_at(sequence)
        if self._documents is None or key is None:
            return False
        if ledger.digest_at(sequence) != change_digest(*key, None):
            return False  # a put
        events = self._documents.get(key, array("q"))
        last_ordinal, last_sequence = 0, 0
        for index in range(0, len(events), 2):
            if events[index] < ordinal and abs(events[index + 1]) < sequence:
                last_ordinal, last_sequence = events[index], events[index + 1]
        if last_sequence <= 0:
            return True  # never held, or deleted last
        # Held, unless a complete snapshot came after its last event and left it out.
        return any(
            last_ordinal < self._snapshots[index] and self._snapshots[index + 1] < ordinal
            for index in range(0, len(self._snapshots), 2)
        )

    def _follows(self, collection: str | None) -> bool:
        if collection is None:
            return False
        return not self.collections or collection in self.collections

    def _violation(self, message: str) -> None:
        self.violations.append(f"{self.name}: {message}")


def _describe(ledger: Ledger, sequence: int) -> str:
    """The acknowledged write at `sequence`, for a violation's message."""
    key = ledger.document_at(sequence)
    if key is None:
        return f"nothing at {sequence}"
    deleted = ledger.digest_at(sequence) == change_digest(*key, None)
    return f"{'the delete of ' if deleted else ''}{'/'.join(key)} at {sequence}"


def _wrong_content(event: Event) -> str:
    return (
        f"{event.type.name} {event.collection}/{event.doc_id} at {event.sequence}"
        " differs from the write acknowledged at that sequence"
    )
