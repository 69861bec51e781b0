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

import peat_sync.generated.peat.sidecar.v1  # noqa: F401  (fills the descriptor pool)
from peat_sync.generated.google_proto_descriptor_pool import default_google_proto_descriptor_pool

PACKAGE = "peat.sidecar.v1"
SERVICE = f"/{PACKAGE}.PeatSidecar/"
COLLECTION = "bench"
# Filler that brings a document to about 100 bytes, a small telemetry record.
PAD = "x" * 48
_PREFIX = '{"t":'

# ChangeType values (proto/sidecar.proto).
UPSERT, DELETE, RESYNC, HEARTBEAT = 1, 2, 3, 4
SNAPSHOT_BEGIN, CATCH_UP_BEGIN, CATCH_UP_END = 5, 6, 7
CHANGE_TYPE_NAMES = {
    UPSERT: "UPSERT",
    DELETE: "DELETE",
    RESYNC: "RESYNC",
    HEARTBEAT: "HEARTBEAT",
    SNAPSHOT_BEGIN: "SNAPSHOT_BEGIN",
    CATCH_UP_BEGIN: "CATCH_UP_BEGIN",
    CATCH_UP_END: "CATCH_UP_END",
}
RESYNC_REASON_NAMES = {
    0: "UNSPECIFIED",
    1: "SLOW_CONSUMER",
    2: "HISTORY_COMPACTED",
    3: "UNKNOWN_EPOCH",
    4: "SEQUENCE_AHEAD",
}


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
