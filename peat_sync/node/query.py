"""Content queries: upstream's `SubscriptionQuery`, over the top-level fields of a document.

`eq`, `lt` and `gt` compare a top-level field with a JSON-encoded value: numbers with numbers,
strings with strings; values of other or mixed types never order, and `eq` holds only for
values of one type (a boolean is not a number). `and`, `or`, `not` and `all` combine them,
nested at most `MAX_DEPTH` deep. A query is checked whole when it is compiled, so a
subscription never starts on a query half understood.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import betterproto2

from peat_sync.generated.peat.sidecar.v1 import SubscriptionQuery
from peat_sync.node.errors import InvalidRequest
from peat_sync.node.validation import excerpt

MAX_DEPTH = 16  # as upstream

Document = Mapping[str, Any]
Predicate = Callable[[Document], bool]


def compile_query(query: SubscriptionQuery, where: str = "query") -> Predicate:
    """The predicate of `query`; InvalidRequest names the part of it at fault."""
    return _compile(query, where, 1)


def _compile(query: SubscriptionQuery, where: str, depth: int) -> Predicate:
    if depth > MAX_DEPTH:
        raise InvalidRequest(f"queries nest at most {MAX_DEPTH} deep; this one is deeper: {where}")
    field, part = betterproto2.which_one_of(query, "q")
    kind = field.rstrip("_")  # and_, or_, not_: the generated names of and, or, not
    if part is None:
        raise InvalidRequest(f"{where} has no condition: set one of eq, lt, gt, and, or, not, all")
    if kind == "all":
        return lambda document: True
    if kind == "not":
        inner = _compile(part, f"{where}.not", depth + 1)
        return lambda document: not inner(document)
    if kind in ("and", "or"):
        if not part.clauses:
            raise InvalidRequest(f"{where}.{kind} has no clauses")
        clauses = [
            _compile(clause, f"{where}.{kind}.clauses[{index}]", depth + 1)
            for index, clause in enumerate(part.clauses)
        ]
        combine = all if kind == "and" else any
        return lambda document: combine(clause(document) for clause in clauses)
    if kind in ("eq", "lt", "gt"):
        return _comparison(kind, part.field, part.value, f"{where}.{kind}")
    raise InvalidRequest(f"{where}: {kind} is not a condition this server knows")


def _comparison(kind: str, field: str, text: str, where: str) -> Predicate:
    if not field:
        raise InvalidRequest(f"{where}.field is empty: name a top-level field of the documents")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise InvalidRequest(
            f"{where}.value {excerpt(text)} is not JSON ({exc}): encode it, as"
            ' "\\"vehicle\\"", "42" or "true"'
        ) from None
    if kind == "eq":
        return lambda document: field in document and _equal(document[field], value)
    if not (_is_number(value) or isinstance(value, str)):
        raise InvalidRequest(f"{where}.value {excerpt(text)}: only numbers and strings order")
    if kind == "lt":
        return lambda document: field in document and _ordered(document[field], value)
    return lambda document: field in document and _ordered(value, document[field])


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: object, right: object) -> bool:
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def _ordered(low: object, high: object) -> bool:
    """low < high, for two numbers or two strings; False otherwise."""
    if _is_number(low) and _is_number(high):
        return bool(low < high)  # type: ignore[operator]
    if isinstance(low, str) and isinstance(high, str):
        return low < high
    return False
