"""What the bench sends and reads: the layout of its documents, and the change types.

Every bench document carries the writer's `time.monotonic_ns()` at the moment it sent the
write (CLOCK_MONOTONIC is one clock for every process of a Linux machine), so a subscriber in
another process knows each event's put-to-delivery latency. The timestamp comes first, at a
fixed offset, so reading it costs a slice rather than a JSON parse.

RPC paths and message classes are peat_sync.wire's.
"""

from __future__ import annotations

from peat_sync.generated.peat.sidecar.v1 import ChangeType, ResyncReason

COLLECTION = "bench"
# Filler that brings a document to about 100 bytes, a small telemetry record.
PAD = "x" * 48
_PREFIX = '{"t":'

# ChangeType values, as ints: the workers read them from upb messages.
UPSERT, DELETE, RESYNC, HEARTBEAT = (
    ChangeType.UPSERT.value,
    ChangeType.DELETE.value,
    ChangeType.RESYNC.value,
    ChangeType.HEARTBEAT.value,
)
CATCH_UP_BEGIN, CATCH_UP_END = ChangeType.CATCH_UP_BEGIN.value, ChangeType.CATCH_UP_END.value
CHANGE_TYPE_NAMES = {change_type.value: change_type.name for change_type in ChangeType}
RESYNC_REASON_NAMES = {reason.value: reason.name for reason in ResyncReason}


def document(n: int, sent_ns: int) -> str:
    """Document number `n`, stamped with the writer's monotonic clock."""
    return f'{_PREFIX}{sent_ns},"n":{n},"pad":"{PAD}"}}'


def sent_at(json_data: str) -> int | None:
    """The writer's timestamp in a bench document, or None for any other document."""
    if not json_data.startswith(_PREFIX):
        return None
    end = json_data.find(",", len(_PREFIX))
    try:
        return int(json_data[len(_PREFIX) : end])
    except ValueError:
        return None
