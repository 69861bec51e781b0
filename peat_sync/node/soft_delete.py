"""Soft deletes: in a SOFT_DELETE collection a delete is a put of the document marked
`"_deleted": true` (an UPSERT event), which the expiry removes later.

The mark needs the document, so such a delete reads it first and is written on condition
that the document is still at the sequence read (`Mutation.expected_sequence`): a change
made in between is never overwritten with the older content.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from peat_sync.store import Mutation, PreconditionFailed, StoredDocument

Read = Callable[[str, str], StoredDocument | None]


def mark_deleted(json_data: str) -> str | None:
    """The document with `"_deleted": true`; None if it is so already."""
    document = json.loads(json_data)
    if document.get("_deleted") is True:
        return None
    document["_deleted"] = True
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


@dataclass(slots=True)
class SoftDeletePlan:
    """What a request writes once its soft deletes are puts."""

    # One per mutation of the request: None for the delete of a document soft-deleted
    # already, which changes nothing.
    writes: list[Mutation | None] = field(default_factory=list)
    # The documents whose puts are conditional on the sequence read, not on the caller's:
    # if that condition fails, the document changed meanwhile, and the plan is made again.
    conditioned: set[tuple[str, str]] = field(default_factory=set)

    def sequences(self, committed: Sequence[int]) -> list[int]:
        """The sequence of each mutation of the request, from those of the writes made."""
        made = iter(committed)
        return [0 if write is None else next(made) for write in self.writes]


def plan_soft_deletes(
    mutations: Sequence[Mutation], soft_deleting: frozenset[str], read: Read
) -> SoftDeletePlan:
    """`mutations`, their deletes in the `soft_deleting` collections made
    puts of the documents as `read` finds them (or as the request's earlier writes leave
    them). Raises `PreconditionFailed` when a caller's `expected_sequence` does not hold."""
    plan = SoftDeletePlan()
    written: dict[tuple[str, str], str | None] = {}  # by the request's earlier writes
    for mutation in mutations:
        key = (mutation.collection, mutation.doc_id)
        if mutation.json_data is not None or mutation.collection not in soft_deleting:
            written[key] = mutation.json_data
            plan.writes.append(mutation)
            continue
        expected = mutation.expected_sequence
        if key in written:
            json_data = written[key]
        else:
            document = read(*key)
            json_data = None if document is None else document.json_data
            if document is not None:
                if expected is not None and expected != document.sequence:
                    raise PreconditionFailed(*key, expected, document.sequence)
                if expected is None:
                    plan.conditioned.add(key)
                expected = document.sequence
        if json_data is None:  # absent: an ordinary delete, which changes nothing
            plan.writes.append(mutation)
            continue
        marked = mark_deleted(json_data)
        plan.writes.append(None if marked is None else Mutation(*key, marked, expected))
        if marked is not None:
            written[key] = marked
    return plan
