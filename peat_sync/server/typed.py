"""The typed collections: proto messages stored as JSON documents.

Upstream stores each message as a JSON object whose keys are the proto field names, with
enums as integers and absent optionals as null, keyed by the message's `id`. Upstream renamed
two fields (`Cell.platform_count` is `node_count`, `Track.source_platform` is `source_node`):
documents are written with the new names and read with either.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from typing import Any, Generic, NamedTuple, TypeVar, cast

import betterproto2

from peat_sync.generated.peat.sidecar.v1 import Cell, Command, Node, Platform, Track
from peat_sync.node import InvalidRequest

log = logging.getLogger("peat_sync.typed")

M = TypeVar("M", bound=betterproto2.Message)

COLLECTIONS: dict[type[betterproto2.Message], str] = {
    Platform: "platforms",
    Cell: "cells",
    Track: "tracks",
    Command: "commands",
    Node: "nodes",
}

# The JSON key each renamed field had in the first upstream proto, which stored documents
# may still use.
_OLD_KEYS: dict[type[betterproto2.Message], dict[str, str]] = {
    Cell: {"node_count": "platform_count"},
    Track: {"source_node": "source_platform"},
}


def to_json(message: betterproto2.Message, name: str) -> str:
    """The stored form of `message`; refuses enum values the proto does not define."""
    document: dict[str, Any] = {}
    for field in dataclasses.fields(cast(Any, message)):
        value = getattr(message, field.name)
        if isinstance(value, enum.Enum):
            # Proto3 parsing keeps unknown enum numbers; storing one would hand every reader
            # a value it cannot interpret.
            known = type(value).__members__.values()
            if value not in known:
                allowed = ", ".join(f"{member.value} ({member.name})" for member in known)
                raise InvalidRequest(
                    f"{name}.{field.name} is {value.value}, which is not a"
                    f" {type(value).__name__}; use one of {allowed}"
                )
            value = value.value
        elif isinstance(value, list):
            value = list(value)
        document[field.name] = value
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise InvalidRequest(
            f"{name} holds NaN or Infinity, which a JSON document cannot store"
        ) from None


# The values each integer type of proto can hold: a stored number outside them would be
# wrapped, or fail the whole read, when the message is encoded.
_INTEGER_RANGES = {
    **dict.fromkeys(("int32", "sint32", "sfixed32", "enum"), (-(2**31), 2**31 - 1)),
    **dict.fromkeys(("int64", "sint64", "sfixed64"), (-(2**63), 2**63 - 1)),
    **dict.fromkeys(("uint32", "fixed32"), (0, 2**32 - 1)),
    **dict.fromkeys(("uint64", "fixed64"), (0, 2**64 - 1)),
}


def _convert(annotation: str, proto_type: str, default: Any, value: Any) -> Any:
    """`value` as the field annotated `annotation` (of `proto_type`) holds it; ValueError if
    it does not fit."""
    base = annotation.removesuffix(" | None")
    if value is None:
        if base != annotation:
            return None
        return default
    if base == "str" and isinstance(value, str):
        value.encode()  # a lone surrogate (an escaped one in the JSON) is not UTF-8
        return value
    if base == "bool" and isinstance(value, bool):
        return value
    if not isinstance(value, bool):  # JSON true/false must not pass for numbers
        if base == "float" and isinstance(value, int | float):
            try:
                return float(value)
            except OverflowError:
                raise ValueError(f"{json.dumps(value)[:40]} is beyond a double's range") from None
        if isinstance(value, int) and (base == "int" or isinstance(default, enum.Enum)):
            low, high = _INTEGER_RANGES.get(proto_type, (value, value))
            if not low <= value <= high:
                raise ValueError(f"{json.dumps(value)[:40]} is outside a {proto_type}'s range")
            return value if base == "int" else type(default)(value)
    if base == "list[str]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        for item in value:
            item.encode()
        return value
    raise ValueError(f"{json.dumps(value)[:40]} is not a {base}")


class Parsed(NamedTuple, Generic[M]):
    """A stored document read as its message."""

    message: M
    # The fields whose stored value did not fit, so they hold their default: each as
    # "key: why".
    defaulted: list[str]


def from_json(message_type: type[M], json_data: str) -> Parsed[M]:
    """Read a stored document as `message_type`. A field whose value does not fit takes its
    default, as upstream reads it; raises ValueError if the document is not a JSON object."""
    document = json.loads(json_data)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    defaults = message_type()
    old_keys = _OLD_KEYS.get(message_type, {})
    values: dict[str, Any] = {}
    defaulted: list[str] = []
    for field in dataclasses.fields(cast(Any, message_type)):
        key = field.name
        if key not in document and key in old_keys:
            key = old_keys[key]
        if key in document:
            try:
                values[field.name] = _convert(
                    str(field.type),
                    field.metadata["betterproto"].proto_type,
                    getattr(defaults, field.name),
                    document[key],
                )
            except ValueError as exc:
                defaulted.append(f"{key}: {exc}")
    return Parsed(message_type(**values), defaulted)


def from_documents(message_type: type[M], documents: list[tuple[str, str]]) -> list[M]:
    """Read `(doc_id, json_data)` pairs. A document with fields that do not fit is returned
    with those fields defaulted, as upstream does, and a warning; one that is not a JSON
    object is skipped, with a warning."""
    collection = COLLECTIONS[message_type]
    name = message_type.__name__
    messages = []
    for doc_id, json_data in documents:
        try:
            message, defaulted = from_json(message_type, json_data)
        except ValueError as exc:
            log.warning("skipping %s/%s: it is not a valid %s: %s", collection, doc_id, name, exc)
            continue
        if defaulted:
            log.warning(
                "%s/%s is returned with defaults for the fields that do not fit a %s: %s",
                collection,
                doc_id,
                name,
                "; ".join(defaulted),
            )
        messages.append(message)
    return messages
