"""A client's copy of the store, as the end-to-end tests keep one from the events they read."""

from __future__ import annotations

from collections.abc import Iterable

from tests.helpers.clients import DELETE, UPSERT, Event

Key = tuple[str, str]
# A client's copy of the store: (collection, doc_id) -> (json_data, sequence).
View = dict[Key, tuple[str, int]]


def apply(view: View, events: Iterable[Event]) -> View:
    """`view` with the document events applied, as a subscriber applies them; a DELETE of a
    document the copy does not have is ignored."""
    view = dict(view)
    for event in events:
        key = (event.collection, event.doc_id)
        if event.change_type == DELETE:
            view.pop(key, None)
        else:
            assert event.change_type == UPSERT, event
            assert event.json_data is not None, event
            view[key] = (event.json_data, event.sequence)
    return view
