"""Change events, encoded once when committed and shared by every subscriber."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from peat_sync import wire
from peat_sync.generated.peat.sidecar.v1 import ChangeType, DocumentChange, ResyncReason
from peat_sync.store import Change


@dataclass(slots=True)  # not frozen, for speed (see Mutation); immutable all the same
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
        encoded = wire.encode_change(
            change.collection, change.doc_id, change.json_data, change.sequence
        )
        return cls(change.sequence, change.collection, change.doc_id, change_type, encoded)

    @classmethod
    def control(
        cls,
        change_type: ChangeType,
        sequence: int,
        progress: Progress,
        explanation: str = "",
        reason: ResyncReason = ResyncReason.UNSPECIFIED,
    ) -> ChangeEvent:
        """An event about the stream rather than a document: RESYNC, HEARTBEAT, and the
        markers around snapshots and catch-ups. `sequence` is the position it reports."""
        message = DocumentChange(
            change_type=change_type,
            sequence=sequence,
            resync_reason=reason,
            message=explanation,
            epoch=progress.epoch,
            replay_floor=progress.replay_floor,
            catch_up_floor=progress.catch_up_floor,
        )
        return cls(sequence, "", "", change_type, bytes(message))

    def document(self) -> dict[str, Any]:
        """The document of an UPSERT, decoded from `encoded` (kept only once, encoded)."""
        change = wire.message_class("DocumentChange").FromString(self.encoded)
        return cast(dict[str, Any], json.loads(change.json_data))  # type: ignore[attr-defined]

    def as_delete(self) -> ChangeEvent:
        """A DELETE of this event's document, at its sequence."""
        encoded = wire.encode_change(self.collection, self.doc_id, None, self.sequence)
        return ChangeEvent(self.sequence, self.collection, self.doc_id, ChangeType.DELETE, encoded)

    @property
    def is_control(self) -> bool:
        return self.change_type not in (ChangeType.UPSERT, ChangeType.DELETE)

    @property
    def batch_entry_prefix(self) -> bytes:
        """What precedes `encoded` as one `changes` entry of a `DocumentChangeBatch`."""
        return wire.batch_entry_prefix(self.encoded)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where the store stands; every control event carries it."""

    epoch: str
    replay_floor: int
    catch_up_floor: int
