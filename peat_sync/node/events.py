"""Change events, encoded once when committed and shared by every subscriber.

A data event's `DocumentChange` is encoded here by hand: it has five fields, and the
generated encoder, built for any message, costs several times as much per event. A test
checks that both give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        if change.json_data is None:
            change_type, json_data = ChangeType.DELETE, b""
        else:
            change_type, json_data = ChangeType.UPSERT, _string(_JSON_DATA_TAG, change.json_data)
        encoded = b"".join(
            (
                _string(_COLLECTION_TAG, change.collection),
                _string(_DOC_ID_TAG, change.doc_id),
                _CHANGE_TYPE_FIELD[change_type],
                json_data,
                _SEQUENCE_TAG,
                _varint(change.sequence),
            )
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

    @property
    def is_control(self) -> bool:
        return self.change_type not in (ChangeType.UPSERT, ChangeType.DELETE)

    @property
    def batch_entry_prefix(self) -> bytes:
        """What precedes `encoded` as one `changes` entry of a `DocumentChangeBatch`."""
        return _BATCH_ENTRY_TAG + _varint(len(self.encoded))


@dataclass(frozen=True, slots=True)
class Progress:
    """Where the store stands; every control event carries it."""

    epoch: str
    replay_floor: int
    catch_up_floor: int


# Wire format: a field's tag is (number << 3) | type, with type 0 for a varint and 2 for bytes.
_COLLECTION_TAG = bytes([1 << 3 | 2])
_DOC_ID_TAG = bytes([2 << 3 | 2])
_JSON_DATA_TAG = bytes([4 << 3 | 2])
_SEQUENCE_TAG = bytes([5 << 3])
_BATCH_ENTRY_TAG = bytes([1 << 3 | 2])
_CHANGE_TYPE_FIELD = {
    change_type: bytes([3 << 3, change_type.value])
    for change_type in (ChangeType.UPSERT, ChangeType.DELETE)
}


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(tag: bytes, text: str) -> bytes:
    data = text.encode()
    return tag + _varint(len(data)) + data
