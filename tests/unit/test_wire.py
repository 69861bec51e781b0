"""`peat_sync.wire`: events encoded by hand give the generated encoder's bytes, batch entries
parse as a `DocumentChangeBatch`, and already-encoded messages sent through grpclib's private
HTTP/2 stream arrive as the messages they are (this fails if grpclib moves that API)."""

from __future__ import annotations

import asyncio
from typing import Any

import grpclib.const
import grpclib.server
import pytest
from grpclib.const import Cardinality
from grpclib.testing import ChannelFor
from hypothesis import given
from hypothesis import strategies as st

from peat_sync import wire
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


def generated(change: Change) -> pb.DocumentChange:
    return pb.DocumentChange(
        collection=change.collection,
        doc_id=change.doc_id,
        change_type=pb.ChangeType.DELETE if change.json_data is None else pb.ChangeType.UPSERT,
        json_data=change.json_data,
        sequence=change.sequence,
    )


@given(changes)
def test_a_data_event_encodes_as_the_generated_code_would(change: Change) -> None:
    assert ChangeEvent.from_change(change).encoded == bytes(generated(change))


@given(st.lists(changes, max_size=20))
def test_batch_entries_concatenate_into_a_document_change_batch(batch: list[Change]) -> None:
    events = [ChangeEvent.from_change(change) for change in batch]
    data = b"".join(part for event in events for part in (event.batch_entry_prefix, event.encoded))
    parsed = pb.DocumentChangeBatch.parse(data).changes
    assert [bytes(change) for change in parsed] == [event.encoded for event in events]


def test_rpc_paths_are_the_services_own() -> None:
    """The paths the server overrides and the bench calls are the generated service's."""
    paths = set(pb.PeatSidecarBase().__mapping__())
    for path in (
        wire.GET_STATUS,
        wire.PUT_DOCUMENT,
        wire.WRITE_DOCUMENTS,
        wire.SUBSCRIBE,
        wire.SUBSCRIBE_BATCHED,
    ):
        assert path in paths


class PreEncodedStream:
    """A Subscribe that streams the given encoded messages through `wire.send_encoded`."""

    def __init__(self, payloads: list[bytes], *, paced: bool) -> None:
        self.payloads = payloads
        self.paced = paced

    async def subscribe(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_initial_metadata()
        await wire.send_encoded(stream, self.payloads, paced=self.paced)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            wire.SUBSCRIBE: grpclib.const.Handler(
                self.subscribe, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
            )
        }


async def received(service: PreEncodedStream) -> list[pb.DocumentChange]:
    async with (
        ChannelFor([service]) as channel,
        channel.request(
            wire.SUBSCRIBE, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
        ) as stream,
    ):
        await stream.send_message(pb.SubscribeRequest(), end=True)
        messages = []
        for _ in service.payloads:
            message = await asyncio.wait_for(stream.recv_message(), 10)
            assert message is not None
            messages.append(message)
        return messages


@pytest.mark.parametrize("paced", [False, True], ids=["shared-frames", "paced"])
def test_encoded_messages_arrive_whole_through_grpclibs_http2_stream(paced: bool) -> None:
    """Small messages share writes, or are paced; a message larger than a send chunk
    (`SEND_CHUNK_BYTES`) arrives whole too."""
    expected = [
        generated(Change(sequence, "c", f"d{sequence}", f'{{"n": {sequence}}}'))
        for sequence in range(1, 300)
    ]
    expected.append(generated(Change(300, "c", "big", '"' + "x" * wire.SEND_CHUNK_BYTES * 3 + '"')))
    service = PreEncodedStream([bytes(message) for message in expected], paced=paced)

    assert asyncio.run(received(service)) == expected
