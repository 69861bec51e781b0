"""The storage interface and the values that cross it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreClosed(Exception):
    """A read came after `Store.close`."""


class PreconditionFailed(Exception):
    """A mutation's `expected_sequence` did not hold: the document changed since the caller
    read it. Nothing of the commit was stored; re-read the document and retry."""

    def __init__(self, collection: str, doc_id: str, expected: int, current: int) -> None:
        where = f"document {collection!r}/{doc_id!r}"
        if current == 0:
            state = f"{where} does not exist, so it is not at sequence {expected}"
        else:
            state = f"{where} is at sequence {current}, not {expected}"
        super().__init__(f"{state}: re-read it and retry")
        self.collection = collection
        self.doc_id = doc_id
        self.expected = expected
        self.current = current  # the sequence of the live document, 0 when absent or deleted


# Mutation and Change are made for every document written, so they are not frozen: a frozen
# dataclass's __init__ costs three times as much. Treat them as immutable all the same.


@dataclass(slots=True)
class Mutation:
    """One requested change: a put when `json_data` is set, a delete when it is None.

    With `expected_sequence`, the change is made only if the document's last change is at
    that sequence; 0 means only if the document does not exist (absent, or deleted at any
    sequence). Otherwise the commit raises `PreconditionFailed`: compare-and-set, so that a
    read-modify-write cannot overwrite a change it did not see."""

    collection: str
    doc_id: str
    json_data: str | None
    expected_sequence: int | None = None


@dataclass(slots=True)
class Change:
    """A committed change, numbered with the store-wide sequence."""

    sequence: int
    collection: str
    doc_id: str
    json_data: str | None  # None for a delete


@dataclass(frozen=True, slots=True)
class StoredDocument:
    collection: str
    doc_id: str
    json_data: str
    sequence: int  # the sequence the document was last changed at


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Changes read from the store for a catch-up, with the head and floor they were read at."""

    changes: list[Change]  # latest state of each document, tombstones as deletes
    head_sequence: int
    catch_up_floor: int
    complete: bool  # no further change matched: the read is done at this page


class Store(Protocol):
    @property
    def epoch(self) -> str:
        """A random id made when the store was created; it never changes afterwards."""

    @property
    def previous_epoch(self) -> str | None:
        """Shared mode: the epoch of the stream the store followed before; else None."""

    @property
    def head_sequence(self) -> int:
        """The sequence of the newest committed change, 0 for an empty store."""

    @property
    def catch_up_floor(self) -> int:
        """The oldest sequence `changes_after` can catch up from: the tombstones of deletes up
        to it may have been purged."""

    def commit(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        """Apply `mutations` atomically and durably, in order.

        Returns, for each mutation, its committed change, or None when it changed nothing (a
        delete of an absent document). When this returns, the changes survive a crash.
        Raises `PreconditionFailed`, storing nothing, when a mutation's `expected_sequence`
        does not hold (checked in order: a mutation sees the earlier ones of the commit).
        """

    def get(self, collection: str, doc_id: str) -> StoredDocument | None: ...

    def list_ids(self, collection: str) -> list[str]: ...

    def list_documents(self, collection: str) -> list[StoredDocument]: ...

    def changes_after(
        self,
        since: int,
        collections: frozenset[str] | None,
        limit: int,
        tombstones_after: int,
        max_bytes: int,
    ) -> HistoryPage:
        """Up to `limit` documents of `collections` (None: all) last changed after `since`, in
        sequence order, with the head and floor read in the same transaction: no more than
        reach `max_bytes` of JSON, and at least one.

        A tombstone is included only if it is newer than `tombstones_after`.
        """

    def documents_written_before(
        self, collection: str, written_before: float, limit: int, *, marked_deleted: bool
    ) -> list[tuple[str, int]]:
        """The doc_id and sequence of up to `limit` live documents of `collection` last put
        before the unix time `written_before`, oldest change first; with `marked_deleted`,
        only those whose JSON has `"_deleted": true` (soft-deleted)."""

    def purge_tombstones(
        self,
        deleted_before: float,
        limit: int,
        *,
        collection: str | None = None,
        excluding: Collection[str] = (),
    ) -> int:
        """Remove up to `limit` of the oldest tombstones of deletes made before the unix time
        `deleted_before` (of `collection` only, if given, and of none in `excluding`), raising
        the catch-up floor past them. The floor is store-wide: it rises past every purged
        tombstone, whichever its collection. Returns how many were removed."""

    def close(self) -> None:
        """Wait for the reads under way, then close; later reads raise `StoreClosed`."""
