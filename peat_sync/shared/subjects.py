"""Where a document lives in the stream: one NATS subject per document.

The stream keeps the latest message per subject, so a subject must name exactly one
document. Collection and doc_id become one subject token each: letters, digits, `-` and `_`
stay as they are, so subjects read well in `nats stream view`, and every other character,
including `=` itself, becomes `=XX` for each byte of its UTF-8 encoding. Every valid name thus
maps to a valid token (no `.`, `*`, `>` or whitespace), and back, one to one.
"""

from __future__ import annotations

import re

# The characters a token keeps as they are; `=` starts an escape.
_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_ESCAPE = re.compile(r"(?:=[0-9A-F]{2})+")


class NotADocumentSubject(ValueError):
    """A subject of the stream that names no document: not written by peat-sync."""


def _escape(match: re.Match[str]) -> str:
    return "".join(f"={byte:02X}" for byte in match.group().encode())


def _unescape(match: re.Match[str]) -> str:
    return bytes.fromhex(match.group().replace("=", "")).decode()


def encode_token(name: str) -> str:
    """`name` as one subject token."""
    if _PLAIN.fullmatch(name):
        return name
    return _UNSAFE.sub(_escape, name)


def decode_token(token: str) -> str:
    """The name `encode_token` made `token` from; raises ValueError for a token it cannot
    have made."""
    if _PLAIN.fullmatch(token):
        return token
    rest = _ESCAPE.sub("", token)
    if not token or (rest and not _PLAIN.fullmatch(rest)):
        raise ValueError(f"{token!r} is not an encoded name")
    return _ESCAPE.sub(_unescape, token)


class Subjects:
    """The subjects of one document space: `peat.<stream>.<collection>.<doc_id>`."""

    def __init__(self, stream: str) -> None:
        self.prefix = f"peat.{stream}."
        self.all = f"{self.prefix}>"

    def document(self, collection: str, doc_id: str) -> str:
        return f"{self.prefix}{encode_token(collection)}.{encode_token(doc_id)}"

    def parse(self, subject: str) -> tuple[str, str]:
        """The collection and doc_id of a document's subject."""
        tokens = subject[len(self.prefix) :].split(".")
        if not subject.startswith(self.prefix) or len(tokens) != 2:
            raise NotADocumentSubject(f"{subject!r} names no document")
        try:
            return decode_token(tokens[0]), decode_token(tokens[1])
        except (ValueError, UnicodeDecodeError) as exc:
            raise NotADocumentSubject(f"{subject!r} names no document: {exc}") from None
