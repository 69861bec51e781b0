"""Checks on collection names, document ids and documents, done before anything is queued."""

from __future__ import annotations

import json
import re
import sys

from peat_sync.node.errors import InvalidRequest, LimitExceeded

MAX_NAME_BYTES = 512

# Control characters would make ids unreadable in logs and ambiguous in terminals.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# Characters of a client's string that a message or a log line quotes at most.
EXCERPT_CHARACTERS = 64


def excerpt(value: str) -> str:
    """`value` quoted, cut short if long: messages and logs never echo a client's string
    whole (a megabyte id would flood the log, and one in a gRPC status costs HPACK time
    quadratic in its length)."""
    if len(value) <= EXCERPT_CHARACTERS:
        return repr(value)
    return f"{value[:EXCERPT_CHARACTERS]!r}... ({len(value):,} characters)"


def _utf8_size(kind: str, value: str) -> int:
    # A lone surrogate (say, from a badly decoded file name) is not text SQLite can store.
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{kind} is not valid UTF-8: lone surrogate at character {exc.start}"
        ) from None


def check_name(kind: str, value: str) -> None:
    """Refuse an empty, oversized or control-character `collection` or `doc_id`."""
    if not value:
        raise InvalidRequest(f"{kind} must not be empty")
    size = _utf8_size(kind, value)
    if size > MAX_NAME_BYTES:
        raise InvalidRequest(f"{kind} is {size} bytes long; the limit is {MAX_NAME_BYTES}")
    if _CONTROL.search(value):
        raise InvalidRequest(f"{kind} must not contain control characters")


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every document: `json.loads` with an option builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)


def check_document(json_data: str, max_bytes: int) -> None:
    """Refuse a document that is not a JSON object, or that is larger than `max_bytes`."""
    size = _utf8_size("json_data", json_data)
    if size > max_bytes:
        raise LimitExceeded(
            f"the document is {size} bytes; the limit is {max_bytes} bytes"
            " (set by --max-document-bytes)"
        )
    try:
        document = _DECODER.decode(json_data)
    except RecursionError:
        raise InvalidRequest("json_data is nested too deeply to parse") from None
    except ValueError as exc:
        if "int_max_str_digits" in str(exc):  # Python's own limit, and advice for the server
            raise InvalidRequest(
                f"json_data holds an integer of more than {sys.get_int_max_str_digits():,}"
                " digits, which the server does not read; send it as a string"
            ) from None
        raise InvalidRequest(f"json_data is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidRequest(
            f"json_data must be a JSON object, not a JSON {type(document).__name__}"
        )
