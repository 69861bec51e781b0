"""Subscribe requests of upstream's shape that the server cannot follow exactly are refused
with INVALID_ARGUMENT naming the problem, never half understood: queries that do not
validate (sent by today's upstream client), and a field 2 that is neither since_sequence nor
a query (sent as raw bytes). The server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.wire import varint
from tests.helpers.clients import UPSERT, GrpcioApi, GrpcioClient
from tests.helpers.waiting import CALL_TIMEOUT
from tests.upstream.conftest import Connect
from tests.upstream.streams import Change, upstream_subscription

SUBSCRIBE = "/peat.sidecar.v1.PeatSidecar/Subscribe"


class ProblemNotNamed(AssertionError):
    """A refusal whose message does not name the problem."""


def assert_names(details: str, complaint: str) -> None:
    if complaint not in details:
        raise ProblemNotNamed(f"{complaint!r} is not in {details!r}")


def refusal(call: Any) -> tuple[grpc.StatusCode, str]:
    """The status a Subscribe stream ends with before its first message."""
    with pytest.raises(grpc.RpcError) as raised:
        next(call)
    return raised.value.code(), raised.value.details() or ""


def eq(pb2: Any, field: str, value: str) -> Any:
    return pb2.SubscriptionQuery(eq=pb2.QueryEq(field=field, value=value))


def nested_not(pb2: Any, depth: int) -> Any:
    """A query `depth` levels deep: nots around an eq."""
    query = eq(pb2, "kind", '"vehicle"')
    for _ in range(depth - 1):
        query = pb2.SubscriptionQuery(**{"not": query})
    return query


# case -> (the query, made with today's upstream pb2; what the refusal must say)
BAD_QUERIES: dict[str, tuple[Callable[[Any], Any], str]] = {
    "a value that is not JSON": (
        lambda pb2: eq(pb2, "kind", "vehicle"),
        "query.eq.value 'vehicle' is not JSON",
    ),
    "an empty field": (
        lambda pb2: pb2.SubscriptionQuery(lt=pb2.QueryCmp(field="", value="3")),
        "query.lt.field is empty",
    ),
    "a value that does not order": (
        lambda pb2: pb2.SubscriptionQuery(gt=pb2.QueryCmp(field="speed", value="true")),
        "query.gt.value 'true': only numbers and strings order",
    ),
    "no condition": (
        lambda pb2: pb2.SubscriptionQuery(),
        "query has no condition: set one of eq, lt, gt, and, or, not, all",
    ),
    "an and of nothing": (
        lambda pb2: pb2.SubscriptionQuery(**{"and": pb2.QueryAnd()}),
        "query.and has no clauses",
    ),
    "a bad clause deep inside": (
        lambda pb2: pb2.SubscriptionQuery(
            **{"or": pb2.QueryOr(clauses=[eq(pb2, "a", "1"), eq(pb2, "b", "[1,")])}
        ),
        "query.or.clauses[1].eq.value '[1,' is not JSON",
    ),
    "17 levels": (lambda pb2: nested_not(pb2, 17), "queries nest at most 16 deep"),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
def test_a_query_at_field_2_that_does_not_validate_is_refused_naming_the_problem(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi, case: str
) -> None:
    today = connect(server, upstream_today)
    make_query, complaint = BAD_QUERIES[case]
    with upstream_subscription(
        today, CALL_TIMEOUT, collections=["fleet"], query=make_query(today.pb2)
    ) as subscription:
        code, details = refusal(subscription.call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert_still_serving(today)
    assert_names(details, complaint)


def test_a_query_16_levels_deep_is_upstreams_limit_and_is_followed(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi
) -> None:
    today = connect(server, upstream_today)
    today.call("PutDocument", collection="fleet", doc_id="v1", json_data='{"kind": "vehicle"}')
    today.call("PutDocument", collection="fleet", doc_id="p1", json_data='{"kind": "person"}')
    # 15 nots around the eq: an odd number, so the query is "kind is not vehicle".
    with upstream_subscription(
        today, CALL_TIMEOUT, collections=["fleet"], query=nested_not(today.pb2, 16)
    ) as subscription:
        assert subscription.next() == Change("fleet", "p1", UPSERT, '{"kind": "person"}')


def field(number: int, wire_type: int, payload: bytes) -> bytes:
    return varint(number << 3 | wire_type) + payload


def length_delimited(number: int, payload: bytes) -> bytes:
    return field(number, 2, varint(len(payload)) + payload)


# case -> (the request's bytes after its collections; what the refusal must say)
RAW_REQUESTS: dict[str, tuple[bytes, str]] = {
    "a 64-bit field 2": (field(2, 1, bytes(8)), "field 2 is a 64-bit value"),
    "a 32-bit field 2": (field(2, 5, bytes(4)), "field 2 is a 32-bit value"),
    "a group at field 2": (field(2, 3, b"") + field(2, 4, b""), "field 2 is a group"),
    "a field 2 whose bytes are no query": (
        length_delimited(2, b"\xff\xff\xff"),
        "Error parsing message with type 'peat.sidecar.v1.SubscriptionQuery'",
    ),
    "a query with a condition this server does not know": (
        length_delimited(2, length_delimited(8, b"")),
        "field 8 (length-delimited bytes) of the query at field 2 is not a field of"
        " SubscriptionQuery",
    ),
}


@pytest.mark.parametrize("case", list(RAW_REQUESTS))
def test_a_field_2_that_is_neither_since_sequence_nor_a_query_is_refused(
    server: ServerProcess, connect: Connect, upstream_today: GrpcioApi, case: str
) -> None:
    today = connect(server, upstream_today)
    data, complaint = RAW_REQUESTS[case]
    subscribe = today.channel.unary_stream(SUBSCRIBE)  # bytes in, bytes out
    code, details = refusal(subscribe(length_delimited(1, b"fleet") + data, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert_still_serving(today)
    assert_names(details, complaint)


def assert_still_serving(client: GrpcioClient) -> None:
    document = json.dumps({"still": "serving"})
    client.call("PutDocument", collection="after", doc_id="x", json_data=document)
    assert client.call("GetDocument", collection="after", doc_id="x") == {"json_data": document}
