"""The bench's targets, as data: what each promises, and the bound it is held to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TargetSpec:
    summary: str
    bound: str


TARGETS = (
    TargetSpec("Subscribe, 1 subscriber", ">= 0.9 x the bare grpclib stream"),
    TargetSpec("SubscribeBatched replay", ">= 1,000,000 events/s to one grpcio client"),
    TargetSpec("WriteDocuments", ">= 50,000 documents/s, durable at return"),
    TargetSpec("PutDocument", ">= 0.8 x the bare grpclib unary echo"),
    TargetSpec("server CPU per delivered event", "100 subscribers <= 0.5 x 1 subscriber"),
    TargetSpec("put-to-delivery p99", "<= 10 ms at 1,000 events/s, 10 subscribers"),
    TargetSpec(
        "stalled subscriber",
        "others' p99 <= 1.1 x scenario 4's; the server's RSS does not grow with the events"
        " produced",
    ),
)
