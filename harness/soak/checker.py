"""The soak's verdict, once the writers are done and the followers have caught up: the store
against the ledger, each follower's copy against the store, and each feed's claims."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from harness.soak.feed import FeedRecord
from harness.soak.ledger import Ledger


@dataclass(frozen=True, slots=True)
class StoredDocument:
    json_data: str
    sequence: int


# {collection: {doc_id: StoredDocument}}, as GetDocument returned them at the end.
StoreContents = dict[str, dict[str, StoredDocument]]


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


def feed_violations(records: list[FeedRecord], ledger: Ledger) -> list[str]:
    """What each feed broke as it went, and what the complete ledger shows."""
    counts = ledger.counts_by_collection()
    found: list[str] = []
    for record in records:
        found.extend(record.violations)
        found.extend(record.final_violations(ledger, counts))
    return found
