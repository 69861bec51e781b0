"""`Sightings`: the sequence at which each written document was seen, to catch a write applied
twice.

Every document a writer sends is unique (the writer and a serial number are in it), so the
same content at two sequences is one write committed twice: a retry that NATS did not
deduplicate, say. Deletes carry no content, so a doubled delete goes unseen here.
"""

from __future__ import annotations


class Sightings:
    """`see` takes a write's fingerprint (see `change_digest`) with the sequence it was seen
    at and where; `doubled` lists each fingerprint seen at a second sequence."""

    def __init__(self) -> None:
        self._first: dict[int, int] = {}
        self._doubled: dict[int, str] = {}

    def see(self, digest: int, sequence: int, where: str, name: str) -> None:
        """`name` (collection/doc_id) and `where` only serve the message of a violation."""
        first = self._first.setdefault(digest, sequence)
        if first != sequence and digest not in self._doubled:
            self._doubled[digest] = (
                f"{name}: the same write at sequences {first} and {sequence} (the latter seen"
                f" by {where}): applied twice"
            )

    @property
    def doubled(self) -> list[str]:
        return list(self._doubled.values())
