"""`Ledger`: every write the soak's writers sent, as the server answered it.

An acknowledged write is known to be committed at its sequence. A write whose call failed
with `Unavailable` (the server was killed under it, or in shared mode NATS did not answer in
time) is ambiguous: it may or may not have committed, so it only ever excuses what the store
or a feed shows, never demands anything. So is a delete acknowledged with sequence 0 (there
was nothing to delete): in shared mode it still leaves a tombstone in the stream, at a
sequence nobody was told.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from itertools import accumulate

DocKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class AckedWrite:
    """The last acknowledged write of a document: its sequence, its JSON text (None for a
    delete) and the monotonic time its call was sent."""

    sequence: int
    json_data: str | None
    sent_at: float


@dataclass(slots=True)
class AmbiguousWrites:
    """The writes of one document whose calls failed: their JSON texts (None for a delete)
    and the latest monotonic time such a call failed."""

    values: set[str | None] = field(default_factory=set)
    last_failed_at: float = 0.0


def change_digest(collection: str, doc_id: str, json_data: str | None) -> int:
    """A compact fingerprint of one change, to compare a feed's events with the writes."""
    return hash((collection, doc_id, json_data))


class Ledger:
    """The writes of a soak: by document (the last acknowledged one, and the ambiguous ones)
    and by sequence (the collection, document and fingerprint of each acknowledged write), in
    arrays indexed by sequence so that a million writes stay small."""

    def __init__(self, collections: list[str]) -> None:
        self.collections = collections
        self._collection_index = {name: index for index, name in enumerate(collections)}
        self.last_acked: dict[DocKey, AckedWrite] = {}
        self.ambiguous: dict[DocKey, AmbiguousWrites] = {}
        # Deletes acknowledged with sequence 0: there was nothing to delete.
        self.quiet_deletes: set[DocKey] = set()
        # By sequence: the collection's index (-1: no acknowledged write), the document's
        # index in `_documents`, and the digest.
        self._collection_at = array("b")
        self._document_at = array("i")
        self._digest_at = array("q")
        self._documents: list[DocKey] = []
        self._document_index: dict[DocKey, int] = {}
        self.acked_writes = 0
        self.ambiguous_writes = 0

    def record_acked(
        self, writes: list[tuple[str, str, str | None]], sequences: list[int], sent_at: float
    ) -> None:
        """Record a call's writes, acknowledged at `sequences` (0: a delete of nothing, which
        committed no change)."""
        self.acked_writes += len(writes)
        for (collection, doc_id, json_data), sequence in zip(writes, sequences, strict=True):
            key = (collection, doc_id)
            if sequence == 0:
                self.quiet_deletes.add(key)
                continue
            self._grow(sequence)
            self._collection_at[sequence] = self._collection_index[collection]
            self._document_at[sequence] = self._document_number(key)
            self._digest_at[sequence] = change_digest(collection, doc_id, json_data)
            known = self.last_acked.get(key)
            if known is None or known.sequence < sequence:
                self.last_acked[key] = AckedWrite(sequence, json_data, sent_at)

    def record_ambiguous(self, writes: list[tuple[str, str, str | None]], failed_at: float) -> None:
        """Record the writes of a call that failed with `Unavailable`."""
        self.ambiguous_writes += len(writes)
        for collection, doc_id, json_data in writes:
            entry = self.ambiguous.setdefault((collection, doc_id), AmbiguousWrites())
            entry.values.add(json_data)
            entry.last_failed_at = max(entry.last_failed_at, failed_at)

    def digest_at(self, sequence: int) -> int | None:
        """The fingerprint of the acknowledged write at `sequence`, or None if none is known."""
        if sequence >= len(self._collection_at) or self._collection_at[sequence] < 0:
            return None
        return self._digest_at[sequence]

    def document_at(self, sequence: int) -> DocKey | None:
        """The document of the acknowledged write at `sequence`, or None if none is known."""
        if sequence >= len(self._collection_at) or self._collection_at[sequence] < 0:
            return None
        return self._documents[self._document_at[sequence]]

    def collection_at(self, sequence: int) -> str | None:
        """The collection of the acknowledged write at `sequence`, or None if none is known."""
        if sequence >= len(self._collection_at) or self._collection_at[sequence] < 0:
            return None
        return self.collections[self._collection_at[sequence]]

    def acknowledged_digests(self) -> set[int]:
        """The fingerprint of every acknowledged write that changed something."""
        return {
            digest
            for digest, at in zip(self._digest_at, self._collection_at, strict=True)
            if at >= 0
        }

    def unsequenced_digests(self) -> set[int]:
        """The fingerprints of the writes that may have committed at a sequence nobody was
        told: the ambiguous ones, and the deletes acknowledged with sequence 0."""
        digests = {
            change_digest(collection, doc_id, json_data)
            for (collection, doc_id), writes in self.ambiguous.items()
            for json_data in writes.values
        }
        digests.update(change_digest(*key, None) for key in self.quiet_deletes)
        return digests

    def may_hold(self, key: DocKey, json_data: str | None) -> bool:
        """Whether `json_data` (None: a tombstone) of document `key` is a write that may have
        committed at a sequence nobody was told."""
        ambiguous = self.ambiguous.get(key)
        if ambiguous is not None and json_data in ambiguous.values:
            return True
        return json_data is None and key in self.quiet_deletes

    def may_have_put(self, key: DocKey) -> bool:
        """Whether a put of document `key` is ambiguous: it may have committed anywhere."""
        ambiguous = self.ambiguous.get(key)
        return ambiguous is not None and any(value is not None for value in ambiguous.values)

    def counts_by_collection(self) -> dict[str, array[int]]:
        """For each collection, the number of its acknowledged writes at sequences up to each
        sequence: the writes in (low, high] are `counts[high] - counts[low]`."""
        counts: dict[str, array[int]] = {}
        for index, name in enumerate(self.collections):
            counts[name] = array(
                "q", accumulate(1 if at == index else 0 for at in self._collection_at)
            )
        return counts

    @property
    def highest_sequence(self) -> int:
        return len(self._collection_at) - 1

    def _grow(self, sequence: int) -> None:
        missing = sequence + 1 - len(self._collection_at)
        if missing > 0:
            self._collection_at.extend([-1] * missing)
            self._document_at.extend([0] * missing)
            self._digest_at.extend([0] * missing)

    def _document_number(self, key: DocKey) -> int:
        number = self._document_index.get(key)
        if number is None:
            number = self._document_index[key] = len(self._documents)
            self._documents.append(key)
        return number
