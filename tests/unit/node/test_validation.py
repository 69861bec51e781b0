"""Checks on collection names, document ids and documents, through the node: a bad request
gets InvalidRequest or LimitExceeded, saying what is wrong, and nothing is committed."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from peat_sync.node import (
    InvalidRequest,
    LimitExceeded,
)
from tests.helpers.nodes import (
    DEADLINE,
    running_node,
)

BAD_NAMES = ["", "a\x00b", "tab\there", "line\nbreak", "bell\x07", "del\x7f", "x" * 513]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_refused_before_anything_is_stored(tmp_path: Path, name: str) -> None:
    """Empty, control-character and oversized collections and doc_ids get InvalidRequest
    from every call that takes them, and nothing is committed."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with pytest.raises(InvalidRequest, match=r"^collection "):
                await node.put(name, "d", "{}")
            with pytest.raises(InvalidRequest, match=r"^doc_id "):
                await node.put("c", name, "{}")
            with pytest.raises(InvalidRequest, match=r"^doc_id "):
                await node.delete("c", name)
            with pytest.raises(InvalidRequest, match=r"^collection "):
                node.get(name, "d")
            with pytest.raises(InvalidRequest, match=r"^collection "):
                await node.list_ids(name)
            with pytest.raises(InvalidRequest, match=r"^collection "):
                node.subscribe([name])
            assert node.head_sequence == 0
            assert node.feed.subscriber_count == 0


async def test_longest_allowed_name_is_accepted(tmp_path: Path) -> None:
    """A 512-byte name is at the limit and accepted (the limit counts UTF-8 bytes)."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            assert await node.put("x" * 512, "é" * 256, "{}") == 1
            with pytest.raises(InvalidRequest, match="513 bytes long"):
                await node.put("c", "é" * 256 + "x", "{}")


BAD_DOCUMENTS = [
    ("{", "not valid JSON"),
    ('{"a": 1,}', "not valid JSON"),
    ("", "not valid JSON"),
    ('{"a": 1} {"b": 2}', "not valid JSON"),
    ("[1, 2]", "must be a JSON object, not a JSON list"),
    ("42", "must be a JSON object, not a JSON int"),
    ('"text"', "must be a JSON object, not a JSON str"),
    ("null", "must be a JSON object, not a JSON NoneType"),
    ('{"a": NaN}', "NaN is not valid JSON"),
    ('{"a": Infinity}', "Infinity is not valid JSON"),
    ('{"a": -Infinity}', "-Infinity is not valid JSON"),
    ("[" * 100_000, "nested too deeply"),
    ('{"a":' * 100_000, "nested too deeply"),
    ('{"a": ' + "9" * 5_000 + "}", "integer of more than 4,300 digits"),
]


@pytest.mark.parametrize(("json_data", "complaint"), BAD_DOCUMENTS, ids=range(len(BAD_DOCUMENTS)))
async def test_bad_documents_are_refused(tmp_path: Path, json_data: str, complaint: str) -> None:
    """Invalid JSON, non-objects, NaN/Infinity and pathological nesting get InvalidRequest
    with a message saying what is wrong, and nothing is committed."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, max_document_bytes=1024 * 1024) as node:
            with pytest.raises(InvalidRequest, match=complaint):
                await node.put("c", "d", json_data)
            assert node.head_sequence == 0
            assert node.get("c", "d") is None


async def test_oversized_document_is_refused_by_byte_size(tmp_path: Path) -> None:
    """The limit counts UTF-8 bytes: a document at the limit is stored, one byte more is not."""
    limit = 64
    at_limit = '{"a":"' + "x" * (limit - 8) + '"}'
    assert len(at_limit.encode()) == limit
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, max_document_bytes=limit) as node:
            assert await node.put("c", "fits", at_limit) == 1
            with pytest.raises(LimitExceeded, match="65 bytes; the limit is 64 bytes"):
                await node.put("c", "big", at_limit.replace('"}', 'x"}'))
            # 40 characters, 80 bytes.
            with pytest.raises(LimitExceeded, match="the limit is 64 bytes"):
                await node.put("c", "wide", '{"a":"' + "é" * 34 + '"}')
            assert node.head_sequence == 1


@pytest.mark.parametrize(
    ("collection", "doc", "json_data"),
    [("c", "bad\udc80", "{}"), ("bad\udc80", "d", "{}"), ("c", "d", '{"a": "\ud800"}')],
)
async def test_unencodable_text_is_an_invalid_request(
    tmp_path: Path, collection: str, doc: str, json_data: str
) -> None:
    """Text that cannot be stored as UTF-8 (a lone surrogate, as `os.fsdecode` makes from a
    bad file name) is the caller's error: InvalidRequest, not a store failure."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with pytest.raises(InvalidRequest):
                await node.put(collection, doc, json_data)
