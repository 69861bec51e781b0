"""Content queries: upstream's rules over top-level fields, and a clear error for a query that
does not validate."""

from __future__ import annotations

from typing import Any

import pytest

from peat_sync.generated.peat.sidecar.v1 import (
    QueryAll,
    QueryAnd,
    QueryCmp,
    QueryEq,
    QueryOr,
    SubscriptionQuery,
)
from peat_sync.node.errors import InvalidRequest
from peat_sync.node.query import MAX_DEPTH, compile_query


def eq(field: str, value: str) -> SubscriptionQuery:
    return SubscriptionQuery(eq=QueryEq(field=field, value=value))


def lt(field: str, value: str) -> SubscriptionQuery:
    return SubscriptionQuery(lt=QueryCmp(field=field, value=value))


def gt(field: str, value: str) -> SubscriptionQuery:
    return SubscriptionQuery(gt=QueryCmp(field=field, value=value))


@pytest.mark.parametrize(
    ("query", "document", "matches"),
    [
        (eq("kind", '"vehicle"'), {"kind": "vehicle"}, True),
        (eq("kind", '"vehicle"'), {"kind": "person"}, False),
        (eq("kind", '"vehicle"'), {}, False),
        (eq("n", "42"), {"n": 42}, True),
        (eq("n", "42"), {"n": 42.0}, True),
        (eq("n", "1"), {"n": True}, False),  # a boolean is not a number
        (eq("ok", "true"), {"ok": True}, True),
        (eq("x", "null"), {"x": None}, True),
        (eq("x", "null"), {}, False),
        (lt("n", "10"), {"n": 9.5}, True),
        (lt("n", "10"), {"n": 10}, False),
        (gt("n", "10"), {"n": 11}, True),
        (gt("name", '"m"'), {"name": "n"}, True),
        (lt("name", '"m"'), {"name": "a"}, True),
        (lt("n", "10"), {"n": "9"}, False),  # mixed types never order
        (gt("n", '"a"'), {"n": 5}, False),
        (lt("n", "10"), {"n": True}, False),
        (SubscriptionQuery(all=QueryAll()), {}, True),
        (SubscriptionQuery(not_=eq("kind", '"x"')), {"kind": "y"}, True),
        (
            SubscriptionQuery(and_=QueryAnd(clauses=[eq("a", "1"), gt("b", "2")])),
            {"a": 1, "b": 3},
            True,
        ),
        (
            SubscriptionQuery(and_=QueryAnd(clauses=[eq("a", "1"), gt("b", "2")])),
            {"a": 1, "b": 2},
            False,
        ),
        (SubscriptionQuery(or_=QueryOr(clauses=[eq("a", "1"), eq("a", "2")])), {"a": 2}, True),
        (SubscriptionQuery(or_=QueryOr(clauses=[eq("a", "1"), eq("a", "2")])), {"a": 3}, False),
    ],
)
def test_upstreams_rules(query: SubscriptionQuery, document: dict[str, Any], matches: bool) -> None:
    assert compile_query(query)(document) is matches


def nested(depth: int) -> SubscriptionQuery:
    query = SubscriptionQuery(all=QueryAll())
    for _ in range(depth - 1):
        query = SubscriptionQuery(not_=query)
    return query


def test_queries_nest_sixteen_deep_and_no_deeper() -> None:
    assert compile_query(nested(MAX_DEPTH))({}) is (MAX_DEPTH % 2 == 1)
    with pytest.raises(InvalidRequest, match="nest at most 16 deep"):
        compile_query(nested(MAX_DEPTH + 1))


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        (SubscriptionQuery(), "query has no condition"),
        (eq("", "1"), r"query\.eq\.field is empty"),
        (eq("a", "vehicle"), r"query\.eq\.value 'vehicle' is not JSON"),
        (lt("a", "true"), r"query\.lt\.value 'true': only numbers and strings order"),
        (SubscriptionQuery(and_=QueryAnd()), r"query\.and has no clauses"),
        (
            SubscriptionQuery(or_=QueryOr(clauses=[eq("a", "1"), SubscriptionQuery()])),
            r"query\.or\.clauses\[1\] has no condition",
        ),
    ],
)
def test_a_query_that_does_not_validate_is_refused_naming_its_fault(
    query: SubscriptionQuery, complaint: str
) -> None:
    with pytest.raises(InvalidRequest, match=complaint):
        compile_query(query)
