"""The soak's verdict, once the writers are done and the followers have caught up: the store
against the ledger, each follower's copy against the store, and each feed's claims.

In shared mode the NATS stream is the arbiter: it keeps the last message of each document,
so it says which write of a document came last, deletes included. The stream is checked
against the ledger, every sidecar's store against the stream and against each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from harness.soak.feed import FeedRecord
from harness.soak.ledger import DocKey, Ledger, change_digest
from harness.soak.sightings import Sightings


@dataclass(frozen=True, slots=True)
class StoredDocument:
    json_data: str
    sequence: int


# {collection: {doc_id: StoredDocument}}, as GetDocument returned them at the end.
StoreContents = dict[str, dict[str, StoredDocument]]


@dataclass(frozen=True, slots=True)
class LastMessage:
    """A document's last message in the stream: its sequence, and its JSON text (None for a
    delete's tombstone)."""

    sequence: int
    json_data: str | None


# {(collection, doc_id): LastMessage}, as the stream held them at the end.
StreamContents = dict[DocKey, LastMessage]


def store_violations(ledger: Ledger, store: StoreContents) -> list[str]:
    """Every acknowledged write must be in the store at its sequence, or superseded by a
    later write; and every stored document must be a write that was sent."""
    found: list[str] = []
    for (collection, doc_id), acked in ledger.last_acked.items():
        stored = store.get(collection, {}).get(doc_id)
        ambiguous = ledger.ambiguous.get((collection, doc_id))
        name = f"{collection}/{doc_id}"
        if stored is None:
            # Absent: the acked write was a delete, or a failed write sent after it was a
            # delete that did commit (its sequence is lost with the tombstone).
            superseded = (
                ambiguous is not None
                and None in ambiguous.values
                and ambiguous.last_failed_at > acked.sent_at
            )
            if acked.json_data is not None and not superseded:
                found.append(f"store: {name} acked at {acked.sequence} is missing")
        elif stored.sequence < acked.sequence:
            found.append(
                f"store: {name} is at {stored.sequence}, older than its write acked at"
                f" {acked.sequence}"
            )
        elif stored.sequence == acked.sequence and stored.json_data != acked.json_data:
            found.append(f"store: {name} at {acked.sequence} differs from the write acked there")
    for collection, documents in store.items():
        for doc_id, stored in documents.items():
            acked_write = ledger.last_acked.get((collection, doc_id))
            if acked_write is not None and acked_write.sequence == stored.sequence:
                continue
            ambiguous = ledger.ambiguous.get((collection, doc_id))
            if ambiguous is None or stored.json_data not in ambiguous.values:
                found.append(
                    f"store: {collection}/{doc_id} at {stored.sequence} holds a document no"
                    " writer sent after its last acknowledged write"
                )
    return found


def copy_violations(
    name: str, collections: list[str], copy: dict[str, dict[str, Any]], store: StoreContents
) -> list[str]:
    """A follower's copy of `collections` (all when empty) must equal the store's."""
    found: list[str] = []
    for collection in collections or sorted(set(store) | set(copy)):
        expected = {
            doc_id: json.loads(stored.json_data)
            for doc_id, stored in store.get(collection, {}).items()
        }
        held = copy.get(collection, {})
        if held == expected:
            continue
        missing = sorted(expected.keys() - held.keys())
        extra = sorted(held.keys() - expected.keys())
        stale = sorted(k for k in expected.keys() & held.keys() if expected[k] != held[k])
        found.append(
            f"{name}: copy of {collection} differs from the store: missing {missing[:5]},"
            f" extra {extra[:5]}, different {stale[:5]}"
        )
    return found


def feed_violations(
    records: list[FeedRecord],
    ledger: Ledger,
    *,
    excused: Callable[[int], bool] | None = None,
    sent: Container[int] | None = None,
) -> list[str]:
    """What each feed broke as it went, and what the complete ledger shows (see
    `FeedRecord.final_violations` for `excused` and `sent`)."""
    counts = ledger.counts_by_collection()
    found: list[str] = []
    for record in records:
        found.extend(record.violations)
        found.extend(record.final_violations(ledger, counts, excused=excused, sent=sent))
    return found


def noop_delete_violations(
    ledger: Ledger, superseded: Callable[[int], bool] | None = None
) -> tuple[list[str], set[int]]:
    """A delete of a document that did not exist changes nothing, and is acknowledged with
    sequence 0: one acknowledged with a sequence is a violation (and no feed owes an event
    at that sequence). A document is known not to exist when it was never written before, or
    deleted last, and no ambiguous put of it could have come in between. Returns the
    violations and their sequences.

    Shared mode: a delete whose message was `superseded` in the stream before the sidecar
    that took it read it is acknowledged at the sequence NATS stored it at, since that
    sidecar cannot tell whether it changed anything: no violation."""
    present: dict[DocKey, bool] = {}
    found: list[str] = []
    sequences: set[int] = set()
    for sequence in range(1, ledger.highest_sequence + 1):
        key = ledger.document_at(sequence)
        if key is None:
            continue
        deleted = ledger.digest_at(sequence) == change_digest(*key, None)
        if deleted and not present.get(key, False) and not ledger.may_have_put(key):
            sequences.add(sequence)
            if superseded is not None and superseded(sequence):
                present[key] = False
                continue
            found.append(
                f"write: the delete of {'/'.join(key)} was acknowledged at {sequence}, though"
                " the document did not exist: a delete that changes nothing is acknowledged"
                " with sequence 0"
            )
        present[key] = not deleted
    return found, sequences


# Shared mode -------------------------------------------------------------------------------


def stream_violations(ledger: Ledger, stream: StreamContents) -> list[str]:
    """Every acknowledged write must be the last message of its document at its sequence, or
    be followed by a later one; and every last message must be a write that was sent: the
    one acknowledged at its sequence, or one whose sequence nobody was told (ambiguous)."""
    found: list[str] = []
    for key, acked in ledger.last_acked.items():
        last = stream.get(key)
        name = "/".join(key)
        if last is None:
            found.append(f"stream: {name} acked at {acked.sequence} has no message in the stream")
        elif last.sequence < acked.sequence:
            found.append(
                f"stream: {name}'s last message is at {last.sequence}, older than its write"
                f" acked at {acked.sequence}"
            )
        elif last.sequence == acked.sequence and last.json_data != acked.json_data:
            found.append(f"stream: {name} at {acked.sequence} differs from the write acked there")
    for key, last in stream.items():
        acked_write = ledger.last_acked.get(key)
        if acked_write is not None and acked_write.sequence >= last.sequence:
            continue  # checked above
        if not ledger.may_hold(key, last.json_data):
            what = "a delete" if last.json_data is None else "a document"
            found.append(
                f"stream: {'/'.join(key)} at {last.sequence} holds {what} no writer sent after"
                " its last acknowledged write"
            )
    return found


def documents_of(stream: StreamContents) -> StoreContents:
    """What a store following `stream` holds: its documents that are not deleted."""
    store: StoreContents = {}
    for (collection, doc_id), last in stream.items():
        if last.json_data is not None:
            documents = store.setdefault(collection, {})
            documents[doc_id] = StoredDocument(last.json_data, last.sequence)
    return store


def replica_violations(name: str, store: StoreContents, expected: StoreContents) -> list[str]:
    """A sidecar's store must hold exactly `expected` (the stream's documents, or another
    sidecar's store), each document at the same sequence."""
    found: list[str] = []
    for collection in sorted(set(store) | set(expected)):
        held, wanted = store.get(collection, {}), expected.get(collection, {})
        if held == wanted:
            continue
        missing = sorted(wanted.keys() - held.keys())
        extra = sorted(held.keys() - wanted.keys())
        different = [
            f"{doc_id} at {held[doc_id].sequence}, not {wanted[doc_id].sequence}"
            for doc_id in sorted(held.keys() & wanted.keys())
            if held[doc_id] != wanted[doc_id]
        ]
        found.append(
            f"{name}: {collection} differs: missing {missing[:5]}, extra {extra[:5]},"
            f" different {different[:5]}"
        )
    return found


def superseded_in(stream: StreamContents, ledger: Ledger) -> Callable[[int], bool]:
    """Whether the acknowledged write at a sequence has a later message of its document in
    the stream: a sidecar may then never have seen it."""

    def superseded(sequence: int) -> bool:
        key = ledger.document_at(sequence)
        last = None if key is None else stream.get(key)
        return last is not None and last.sequence > sequence

    return superseded


def doubled_writes(
    sightings: Sightings, ledger: Ledger, stream: StreamContents, stores: dict[str, StoreContents]
) -> list[str]:
    """Report to `sightings` where each write was acknowledged, and where the stream and each
    store hold it; then every write seen at two sequences (by any follower too)."""
    for (collection, doc_id), last in stream.items():
        if last.json_data is not None:
            digest = change_digest(collection, doc_id, last.json_data)
            sightings.see(digest, last.sequence, "the stream", f"{collection}/{doc_id}")
    for name, store in stores.items():
        for collection, documents in store.items():
            for doc_id, stored in documents.items():
                digest = change_digest(collection, doc_id, stored.json_data)
                sightings.see(digest, stored.sequence, name, f"{collection}/{doc_id}")
    for sequence in range(1, ledger.highest_sequence + 1):
        key = ledger.document_at(sequence)
        acked = ledger.digest_at(sequence)
        if key is not None and acked is not None and acked != change_digest(*key, None):
            sightings.see(acked, sequence, "its writer's acknowledgement", "/".join(key))
    return [f"doubled: {line}" for line in sightings.doubled]
