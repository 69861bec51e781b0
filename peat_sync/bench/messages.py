"""What the bench sends and reads: the document layout, and protobuf message classes.

Every bench document carries the writer's `time.monotonic_ns()` at the moment it sent the
write (CLOCK_MONOTONIC is one clock for every process of a Linux machine), so a subscriber in
another process knows each event's put-to-delivery latency. The timestamp comes first, at a
fixed offset, so reading it costs a slice rather than a JSON parse.

Message classes are protobuf's fast (upb) classes, built from the descriptors the generated
code registers: no protoc at run time.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message_factory import GetMessageClass

from peat_sync.generated.google_proto_descriptor_pool import default_google_proto_descriptor_pool
from peat_sync.generated.peat.sidecar.v1 import ChangeType, ResyncReason  # fills the pool too

PACKAGE = "peat.sidecar.v1"
SERVICE = f"/{PACKAGE}.PeatSidecar/"
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


def message_class(name: str) -> Any:
    """The upb class of message `name` of peat.sidecar.v1, such as "DocumentChange"."""
    pool = default_google_proto_descriptor_pool
    return GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
