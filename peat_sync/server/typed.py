"""The typed collections: proto messages stored as JSON documents.

Upstream stores each message as a JSON object whose keys are the proto field names, with
enums as integers and absent optionals as null, keyed by the message's `id`.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from typing import Any, TypeVar, cast

import betterproto2

from peat_sync.generated.peat.sidecar.v1 import Cell, Command, Platform, Track
from peat_sync.node import InvalidRequest

log = logging.getLogger("peat_sync.typed")

M = TypeVar("M", bound=betterproto2.Message)

COLLECTIONS: dict[type[betterproto2.Message], str] = {
    Platform: "platforms",
    Cell: "cells",
    Track: "tracks",
    Command: "commands",
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


def from_json(message_type: type[M], json_data: str) -> M:
    """Parse a stored document; raises ValueError if it does not fit `message_type`."""
    document = json.loads(json_data)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    defaults = message_type()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cast(Any, message_type)):
        if field.name not in document:
            continue
        value = document[field.name]
        default = getattr(defaults, field.name)
        if value is None:
            values[field.name] = None if default is None else default
        elif isinstance(default, enum.Enum):
            values[field.name] = type(default)(value)
        elif isinstance(default, float) and isinstance(value, int):
            values[field.name] = float(value)
        else:
            values[field.name] = value
    return message_type(**values)


def from_documents(message_type: type[M], documents: list[tuple[str, str]]) -> list[M]:
    """Parse `(doc_id, json_data)` pairs, skipping (with a warning) those that do not fit."""
    messages = []
    for doc_id, json_data in documents:
        try:
            messages.append(from_json(message_type, json_data))
        except (ValueError, TypeError) as exc:
            log.warning(
                "skipping %s/%s: it is not a valid %s: %s",
                COLLECTIONS[message_type],
                doc_id,
                message_type.__name__,
                exc,
            )
    return messages
