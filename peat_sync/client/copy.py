"""`ConsistentCopy`: the state machine of a mirror, without any I/O.

The copy only ever shows the store as it was at one sequence. Live changes apply one by one,
since each leaves the copy equal to the store at its sequence. A catch-up or a snapshot
(after a restart, a RESYNC or a lost connection) is collected first, and applied all at once
at its CATCH_UP_END, because its intermediate states do not belong to any one sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from peat_sync.client.events import ChangeType, Event

Documents = dict[str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class AppliedChange:
    """A document of the copy that changed: `document` is its new content, or None when it
    was deleted. `sequence` is the store sequence the copy stands at after it."""

    collection: str
    doc_id: str
    document: Any
    sequence: int

    @property
    def deleted(self) -> bool:
        return self.document is None


class ConsistentCopy:
    """`{collection: {doc_id: document}}`, equal to the store at `sequence` once `ready`.

    Feed it every event of a subscription with snapshots and atomic catch-ups (see
    `ResilientSubscription`), in order; `apply` returns the changes each event made.
    """

    def __init__(self) -> None:
        self.documents: Documents = {}
        self.sequence = 0
        self.epoch = ""
        self.ready = False
        self._pending: list[Event] | None = None  # a catch-up or snapshot being collected
        self._pending_is_snapshot = False

    def apply(self, event: Event) -> list[AppliedChange]:
        if event.epoch:
            self.epoch = event.epoch
        if self._pending is not None and event.type is not ChangeType.CATCH_UP_END:
            self._collect(event)
            return []
        changed: list[tuple[str, str]] = []
        match event.type:
            case ChangeType.UPSERT | ChangeType.DELETE:
                if self._set(event.collection, event.doc_id, event.json_data):
                    changed.append((event.collection, event.doc_id))
            case ChangeType.SNAPSHOT_BEGIN | ChangeType.CATCH_UP_BEGIN:
                self._pending = []
                self._pending_is_snapshot = event.type is ChangeType.SNAPSHOT_BEGIN
                return []
            case ChangeType.CATCH_UP_END:
                changed = self._apply_pending()
                self.ready = True
            case ChangeType.RESYNC:
                return []  # a snapshot follows
        # Every change to these collections up to here has been applied (a heartbeat says so
        # of the changes to other collections). In a new epoch, the sequence may be lower.
        self.sequence = event.sequence
        return [AppliedChange(*key, self._get(*key), self.sequence) for key in changed]

    def _collect(self, event: Event) -> None:
        """Keep an event of a catch-up or snapshot until its CATCH_UP_END.

        Any other control event means the stream was lost and a new one opened, resuming
        from where the copy stands (atomic catch-ups): what was collected is void, and the
        new stream says what comes instead.
        """
        assert self._pending is not None
        if event.is_change:
            self._pending.append(event)
        elif event.type in (ChangeType.SNAPSHOT_BEGIN, ChangeType.CATCH_UP_BEGIN):
            self._pending = []
            self._pending_is_snapshot = event.type is ChangeType.SNAPSHOT_BEGIN
        else:  # RESYNC: a snapshot follows; HEARTBEAT: exact changes follow
            self._pending = None

    def _apply_pending(self) -> list[tuple[str, str]]:
        pending, self._pending = self._pending or [], None
        latest = {(event.collection, event.doc_id): event.json_data for event in pending}
        if self._pending_is_snapshot:
            # The snapshot is the whole of the collections: what it lacks is gone, and what
            # it repeats unchanged is not a change.
            for collection, documents in self.documents.items():
                for doc_id in documents:
                    latest.setdefault((collection, doc_id), None)
            latest = {
                key: json_data
                for key, json_data in latest.items()
                if json_data is None or self._get(*key) != json.loads(json_data)
            }
        return [key for key, json_data in latest.items() if self._set(*key, json_data)]

    def _get(self, collection: str, doc_id: str) -> Any:
        return self.documents.get(collection, {}).get(doc_id)

    def _set(self, collection: str, doc_id: str, json_data: str | None) -> bool:
        """Make the copy hold `json_data` for one document (None: no document). False when
        there was nothing to delete."""
        documents = self.documents.setdefault(collection, {})
        if json_data is not None:
            documents[doc_id] = json.loads(json_data)
            return True
        deleted = documents.pop(doc_id, None) is not None
        if not documents:
            del self.documents[collection]
        return deleted
