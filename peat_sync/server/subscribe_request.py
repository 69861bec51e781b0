"""The server's reading of a `SubscribeRequest`, which two generations of clients send.

Upstream's clients of today send a `SubscriptionQuery` at field 2, where peat-sync (as the
original feature request did) has `since_sequence`. The wire types tell them apart: a varint
at field 2 is `since_sequence`, length-delimited bytes are upstream's query. Clients of this
proto send the query at its own field. A field 2 of another wire type, a query that does not
decode or validate, and any field the server does not know are refused with
INVALID_ARGUMENT: no request is half understood in silence.

A request that uses none of the fields peat-sync added (`since_sequence`, `epoch`,
`snapshot`, the query at its own field, `control_events`) comes from a client that does not
know them: it gets a *legacy* stream (see `Subscription`).
"""

from __future__ import annotations

from dataclasses import dataclass

from peat_sync.generated.peat.sidecar.v1 import SubscribeRequest as GeneratedSubscribeRequest
from peat_sync.generated.peat.sidecar.v1 import SubscriptionQuery
from peat_sync.node.query import Predicate, compile_query
from peat_sync.server.codec import refuse_unknown_fields
from peat_sync.wire import (
    LENGTH_DELIMITED,
    VARINT,
    WIRE_TYPE_NAMES,
    message_class,
    top_level_fields,
)

SINCE_SEQUENCE_OR_UPSTREAM_QUERY = 2


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    collections: list[str]
    since_sequence: int | None
    epoch: str | None
    snapshot: bool
    query: Predicate | None
    legacy: bool  # uses none of peat-sync's fields: a client that does not know them

    @classmethod
    def FromString(cls, data: bytes) -> SubscribeRequest:
        """Read a request; ValueError says what is wrong with one the server refuses."""
        upstream_query: bytes | None = None
        for field in top_level_fields(data):
            if field.number != SINCE_SEQUENCE_OR_UPSTREAM_QUERY:
                continue
            if field.wire_type == LENGTH_DELIMITED:
                upstream_query = data[field.value : field.end]
                data = data[: field.start] + data[field.end :]  # the rest is ours to read
                break
            if field.wire_type != VARINT:
                raise ValueError(
                    f"field 2 is {WIRE_TYPE_NAMES[field.wire_type]}: it is since_sequence (a"
                    " varint), or upstream's SubscriptionQuery (length-delimited)"
                )
        refuse_unknown_fields(message_class("SubscribeRequest").FromString(data), data)
        request = GeneratedSubscribeRequest.parse(data)
        query: Predicate | None = None
        if upstream_query is not None:
            if request.query is not None:
                raise ValueError("a query at field 2 (upstream's) and at field 5: send one")
            query = compile_query(SubscriptionQuery.parse(_strict_query(upstream_query)))
        elif request.query is not None:
            query = compile_query(request.query)
        legacy = not (
            request.control_events
            or request.since_sequence is not None
            or request.epoch is not None
            or request.snapshot
            or request.query is not None
        )
        return cls(
            list(request.collections),
            request.since_sequence,
            request.epoch or None,
            request.snapshot,
            query,
            legacy,
        )


def _strict_query(data: bytes) -> bytes:
    """Upstream's query bytes, checked by the protobuf runtime, which refuses what the
    generated decoder would take leniently."""
    query = message_class("SubscriptionQuery").FromString(data)
    refuse_unknown_fields(query, data, "the query at field 2")
    return data
