"""Slow consumers end to end: a server with small buffers, writing until a subscriber that
does not read is stalled for good, and checking how it heals: its stream (no gap, no
duplicate; a catch-up or a RESYNC where it lost its place) and the server's lag warnings.

The stalled subscriber follows the collection `lag`, whose documents are written once each,
`doc_id_of(sequence)` at `sequence`.
"""

from __future__ import annotations

import re

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import CATCH_UP_BEGIN, CATCH_UP_END, Event, GrpcioClient, put

SLOW_CONSUMER = pb.ResyncReason.SLOW_CONSUMER.value
SLOW_SERVER_ARGS = ("--broadcast-buffer-size", "4", "--replay-log-size", "8")
# Written while a subscriber is seen stalled: more than the replay log keeps, so it cannot heal.
WRITES_WHILE_STALLED = 16
# A bound on the writes a stall may take to show; far more than any client buffers.
MAX_STALL_WRITES = 400
_OVERFLOW = re.compile(r"subscriber (#\d+ \([^)]*\)) \(collections: lag\) fell \d+ events behind")
_CAUGHT_UP = re.compile(r"subscriber #\d+ \([^)]*\) \(collections: lag\) lagged and missed")


def stalled(log: str) -> bool:
    """Whether the server logged an overflow of the `lag` subscriber that it has not yet come
    back from: its send is blocked on a client that does not read."""
    return len(_OVERFLOW.findall(log)) > len(_CAUGHT_UP.findall(log))


def doc_id_of(sequence: int) -> str:
    return f"d{sequence:05d}"


def assert_contiguous(events: list[Event], start: int) -> list[Event]:
    """Check a single-collection stream of documents written once each, that began after
    `start`: every change is the one right after the previous position. A catch-up moves the
    position to its end, and a RESYNC to its head. Returns the events that heal a lag
    (CATCH_UP_BEGIN and RESYNC)."""
    position = start
    heals = []
    for event in events:
        if event.is_resync:
            assert event.resync_reason == SLOW_CONSUMER, event
            assert event.sequence > position, (event, position)
            assert event.message, "a RESYNC explains itself"
            heals.append(event)
        elif event.change_type == CATCH_UP_BEGIN:
            assert event.sequence == position, (event, position)
            heals.append(event)
            continue
        elif event.change_type == CATCH_UP_END:
            assert event.sequence >= position, (event, position)
        else:
            assert event.sequence == position + 1, f"gap or duplicate after {position}: {event}"
            assert event.doc_id == doc_id_of(event.sequence)
        position = event.sequence
    return heals


def lag_warnings(log: str, subscriber: str) -> list[tuple[int, int, int, str, str, str]]:
    """The lag warnings of `subscriber` that did not heal from the replay log:
    (count, first sequence, last sequence, first doc_id, last doc_id, outcome)."""
    pattern = re.compile(
        rf"WARNING peat_sync\.subscription: subscriber {re.escape(subscriber)}"
        r" \(collections: lag\) lagged and missed (\d+) events: sequences (\d+)\.\.(\d+),"
        r" doc_ids '([^']*)'\.\.'([^']*)'; the replay log starts after sequence \d+,? (.*)"
    )
    return [(int(m[1]), int(m[2]), int(m[3]), m[4], m[5], m[6]) for m in pattern.finditer(log)]


def assert_lag_logged(server: ServerProcess, events: list[Event], start: int) -> None:
    """Each catch-up or RESYNC in `events` has its lag warning, naming the range it missed
    from the position where it stopped, and what happens next."""
    subscriber = _OVERFLOW.search(server.log)
    assert subscriber, server.log
    warnings = lag_warnings(server.log, subscriber[1])
    position = start
    heals = 0
    for event in events:
        if event.is_resync or event.change_type == CATCH_UP_BEGIN:
            count, first, last, first_doc, last_doc, outcome = warnings[heals]
            assert first == position + 1, (warnings[heals], position)
            assert position < last <= event.sequence or event.change_type == CATCH_UP_BEGIN
            assert count == last - first + 1
            assert (first_doc, last_doc) == (doc_id_of(first), doc_id_of(last))
            expected = "gets a RESYNC" if event.is_resync else "catching up from the store"
            assert expected in outcome, outcome
            heals += 1
        position = event.sequence
    assert heals == len(warnings), server.log


async def write_while_stalled(
    stub: pb.PeatSidecarStub, server: ServerProcess, json_data: str
) -> int:
    """Asyncio-flavoured: put documents into `lag` until the subscriber has been stalled for
    `WRITES_WHILE_STALLED` writes in a row; returns the last sequence.

    A burst can overflow a subscriber that then catches up on its own; only a stall that
    lasts counts."""
    sequence = streak = 0
    while streak < WRITES_WHILE_STALLED:
        assert sequence < MAX_STALL_WRITES, f"no lasting stall:\n{server.log}"
        sequence = await put_lag(stub, sequence + 1, json_data)
        streak = streak + 1 if stalled(server.log) else 0
    return sequence


async def put_lag(stub: pb.PeatSidecarStub, expected: int, json_data: str) -> int:
    response = await stub.put_document(
        pb.PutDocumentRequest(collection="lag", doc_id=doc_id_of(expected), json_data=json_data)
    )
    assert response.sequence == expected
    return response.sequence


def padded(size: int) -> str:
    return '{"pad": "' + "x" * size + '"}'


def write_until_stalled(server: ServerProcess, writer: GrpcioClient, document: str) -> int:
    """Put documents to "lag" until a subscriber nobody reads stays stalled; returns the head.

    grpcio reads ahead a few MB for a stream nobody reads: write past that, until the
    server's send blocks and the subscriber overflows for good."""
    head = streak = 0
    while streak < WRITES_WHILE_STALLED:
        assert head < MAX_STALL_WRITES, f"no lasting stall:\n{server.log}"
        head = put(writer, "lag", doc_id_of(head + 1), document)
        streak = streak + 1 if stalled(server.log) else 0
    return head
