"""Change events, encoded once when committed and shared by every subscriber."""

from __future__ import annotations

from dataclasses import dataclass

from peat_sync.generated.peat.sidecar.v1 import ChangeType, DocumentChange, ResyncReason
from peat_sync.store import Change


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One event of the feed. `encoded` is the serialized `DocumentChange`: the server sends
    these bytes as they are, so an event costs one encoding however many subscribers get it."""

    sequence: int
    collection: str
    doc_id: str
    change_type: ChangeType
    encoded: bytes

    @classmethod
    def from_change(cls, change: Change) -> ChangeEvent:
        change_type = ChangeType.DELETE if change.json_data is None else ChangeType.UPSERT
        message = DocumentChange(
            collection=change.collection,
            doc_id=change.doc_id,
            change_type=change_type,
            json_data=change.json_data,
            sequence=change.sequence,
        )
        return cls(change.sequence, change.collection, change.doc_id, change_type, bytes(message))

    @classmethod
    def resync(cls, head: int, reason: ResyncReason, explanation: str) -> ChangeEvent:
        """The event that tells a client it must re-list, then follow from `head`."""
        message = DocumentChange(
            change_type=ChangeType.RESYNC,
            sequence=head,
            resync_reason=reason,
            message=explanation,
        )
        return cls(head, "", "", ChangeType.RESYNC, bytes(message))
