"""The hand-written encoding of data events: the same bytes as the generated encoder, and
batch entries that parse as a `DocumentChangeBatch`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.node import ChangeEvent
from peat_sync.store import Change

changes = st.builds(
    Change,
    sequence=st.integers(min_value=1, max_value=2**64 - 1),
    collection=st.text(min_size=1, max_size=300),
    doc_id=st.text(min_size=1, max_size=300),
    json_data=st.none() | st.text(max_size=3000),
)


@given(changes)
def test_a_data_event_encodes_as_the_generated_code_would(change: Change) -> None:
    expected = pb.DocumentChange(
        collection=change.collection,
        doc_id=change.doc_id,
        change_type=pb.ChangeType.DELETE if change.json_data is None else pb.ChangeType.UPSERT,
        json_data=change.json_data,
        sequence=change.sequence,
    )
    assert ChangeEvent.from_change(change).encoded == bytes(expected)


@given(st.lists(changes, max_size=20))
def test_batch_entries_concatenate_into_a_document_change_batch(batch: list[Change]) -> None:
    events = [ChangeEvent.from_change(change) for change in batch]
    data = b"".join(part for event in events for part in (event.batch_entry_prefix, event.encoded))
    parsed = pb.DocumentChangeBatch.parse(data).changes
    assert [bytes(change) for change in parsed] == [event.encoded for event in events]
