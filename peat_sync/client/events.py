"""The change feed's events as a client sees them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from peat_sync.generated.peat.sidecar import v1 as pb

ChangeType = pb.ChangeType
ResyncReason = pb.ResyncReason

CHANGES = frozenset({ChangeType.UPSERT, ChangeType.DELETE})


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a Subscribe stream: a change to a document, or a control event that
    reports the stream's position (see docs/subscribing.md for what each type asks of you)."""

    type: pb.ChangeType
    sequence: int
    collection: str = ""
    doc_id: str = ""
    json_data: str | None = None
    # Set on control events only.
    epoch: str = ""
    replay_floor: int = 0
    catch_up_floor: int = 0
    message: str = ""
    resync_reason: pb.ResyncReason = ResyncReason.UNSPECIFIED

    @classmethod
    def from_message(cls, change: pb.DocumentChange) -> Event:
        return cls(
            type=change.change_type,
            sequence=change.sequence,
            collection=change.collection,
            doc_id=change.doc_id,
            json_data=change.json_data,
            epoch=change.epoch,
            replay_floor=change.replay_floor,
            catch_up_floor=change.catch_up_floor,
            message=change.message,
            resync_reason=change.resync_reason,
        )

    @property
    def is_change(self) -> bool:
        """An UPSERT or a DELETE, rather than a control event."""
        return self.type in CHANGES

    @property
    def document(self) -> Any:
        """The document an UPSERT wrote, parsed; None for every other type."""
        return None if self.json_data is None else json.loads(self.json_data)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with only the fields that mean something for this type."""
        out: dict[str, Any] = {"type": self.type.name.lower(), "sequence": self.sequence}
        if self.is_change:
            out.update(collection=self.collection, doc_id=self.doc_id)
            if self.type is ChangeType.UPSERT:
                out["document"] = self.document
            return out
        if self.type is ChangeType.RESYNC:
            out["reason"] = self.resync_reason.name.lower()
        out.update(epoch=self.epoch, replay_floor=self.replay_floor)
        out["catch_up_floor"] = self.catch_up_floor
        if self.message:
            out["message"] = self.message
        return out
