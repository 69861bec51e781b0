"""How the server reads a SubscribeRequest: field 2 by wire type (since_sequence, or
upstream's query), the query at its own field, legacy requests, and a refusal, never a
half-understanding, for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peat_sync.generated.peat.sidecar.v1 import QueryEq, SubscribeRequest, SubscriptionQuery
from peat_sync.server.subscribe_request import SubscribeRequest as ServerRequest
from peat_sync.wire import top_level_fields, varint

VEHICLES = SubscriptionQuery(eq=QueryEq(field="kind", value='"vehicle"'))


def length_delimited(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(value)) + value


def test_a_varint_at_field_2_is_since_sequence() -> None:
    request = ServerRequest.FromString(bytes(SubscribeRequest(collections=["c"], since_sequence=7)))
    assert (request.collections, request.since_sequence, request.query) == (["c"], 7, None)
    assert not request.legacy


def test_bytes_at_field_2_are_upstreams_query_and_are_applied() -> None:
    data = length_delimited(1, b"fleet") + length_delimited(2, bytes(VEHICLES))
    request = ServerRequest.FromString(data)
    assert request.collections == ["fleet"]
    assert request.since_sequence is None
    assert request.query is not None
    assert request.query({"kind": "vehicle"})
    assert not request.query({"kind": "person"})
    assert request.legacy, "upstream's own request: none of peat-sync's fields"


def test_the_query_at_its_own_field_is_this_protos() -> None:
    request = ServerRequest.FromString(bytes(SubscribeRequest(query=VEHICLES)))
    assert request.query is not None
    assert request.query({"kind": "vehicle"})
    assert not request.legacy


@pytest.mark.parametrize(
    "fields",
    [{}, {"collections": ["a", "b"]}],
)
def test_a_request_with_none_of_peat_syncs_fields_is_legacy(fields: dict[str, list[str]]) -> None:
    assert ServerRequest.FromString(bytes(SubscribeRequest(**fields))).legacy  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"since_sequence": 0},
        {"epoch": ""},
        {"snapshot": True},
        {"control_events": True},
        {"query": VEHICLES},
    ],
)
def test_any_of_peat_syncs_fields_asks_for_the_whole_stream(fields: dict[str, object]) -> None:
    assert not ServerRequest.FromString(bytes(SubscribeRequest(**fields))).legacy  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "complaint"),
    [
        (bytes([2 << 3 | 5, 0, 0, 0, 0]), "field 2 is a 32-bit value"),
        (bytes([2 << 3 | 1]) + bytes(8), "field 2 is a 64-bit value"),
        (
            length_delimited(2, bytes(VEHICLES)) + bytes(SubscribeRequest(query=VEHICLES)),
            "a query at field 2",
        ),
        (
            bytes([9 << 3, 1]),
            "field 9 .a varint. of the request is not a field of SubscribeRequest",
        ),
        (
            length_delimited(2, bytes([9 << 3, 1])),
            "field 9 .a varint. of the query at field 2 is not a field of SubscriptionQuery",
        ),
        (length_delimited(2, b"\xff\xff"), "Error parsing message|Truncated"),
        (length_delimited(2, bytes(SubscriptionQuery())), "query has no condition"),
        (b"\x0a\x05ab", "runs past the end"),
    ],
)
def test_a_request_the_server_cannot_wholly_understand_is_refused(
    data: bytes, complaint: str
) -> None:
    with pytest.raises(Exception, match=complaint):
        ServerRequest.FromString(data)


KNOWN = {1, 2, 3, 4, 5, 6}

field_values = st.one_of(
    st.tuples(st.just(0), st.integers(0, 2**64 - 1)),
    st.tuples(st.just(1), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just(2), st.binary(max_size=24)),
    st.tuples(st.just(5), st.binary(min_size=4, max_size=4)),
)


def encode(number: int, wire_type: int, value: int | bytes) -> bytes:
    tag = varint(number << 3 | wire_type)
    if wire_type == 0:
        assert isinstance(value, int)
        return tag + varint(value)
    assert isinstance(value, bytes)
    if wire_type == 2:
        return tag + varint(len(value)) + value
    return tag + value


@given(
    st.lists(st.tuples(st.integers(1, 8), field_values), max_size=6).map(
        lambda fields: b"".join(encode(number, *value) for number, value in fields)
    )
    | st.binary(max_size=40)
)
def test_malformed_requests_are_refused_or_read_whole(data: bytes) -> None:
    """Whatever the bytes: a refusal, or a request of which every field was understood."""
    try:
        request = ServerRequest.FromString(data)
    except Exception as exc:  # a refusal, which the server sends as INVALID_ARGUMENT
        refusal = str(exc)
    else:
        refusal = ""
        fields = top_level_fields(data)
        assert {field.number for field in fields} <= KNOWN
        for field in fields:
            if field.number == 2 and field.wire_type == 2:
                assert request.query is not None, "upstream's query was not applied"
            if field.number in (3, 5) or (field.number == 2 and field.wire_type == 0):
                assert not request.legacy, "a field of peat-sync's was not seen"
        return
    assert refusal, "a refusal says why"
