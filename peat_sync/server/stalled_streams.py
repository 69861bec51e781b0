"""Cutting off a stream whose client does not read. Every function here is
asyncio-flavoured.

grpclib's send blocks while the client's HTTP/2 window is 0, and that blocking is its only
backpressure (grpclib issue #133). A client that opens streams and never grants them window
keeps each one blocked for ever: its socket is healthy, so the dead-peer timeout
(TCP_USER_TIMEOUT) never fires, and each stream holds a subscriber slot. So every send on a
stream must complete within a bound (`--stalled-stream-timeout`); a stream whose send does
not is cut off, and its slot freed. A client that reads slowly still completes its sends,
and is never cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from typing import Any

import grpclib.server
from grpclib.const import Status
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError

from peat_sync.wire import send_encoded

# Moving an asyncio deadline costs about 5 microseconds, as much as sending a few events, so
# the deadline moves at most once per 1/DEADLINE_SLACK of the timeout, and lies that much
# further out: a send gets at least the timeout, and at most 1/64 more (60.9 s of 60).
DEADLINE_SLACK = 64
# How long the trailers of a stalled stream may wait for the connection to take them. They
# wait only when the client does not even read its socket, which the next send would not
# change either.
TRAILERS_SECONDS = 1.0


class StreamStalled(Exception):
    """A send on a stream made no progress for the stalled-stream timeout; the send was
    abandoned part-way, so nothing more may be sent on the stream but its end."""

    def __init__(self, stalled_for: float, *, mid_message: bool) -> None:
        super().__init__(f"no send completed for {stalled_for:.1f} s")
        self.stalled_for = stalled_for
        # Whether part of a message went out: trailers would then follow half a message.
        self.mid_message = mid_message


async def send_within(
    stream: grpclib.server.Stream[Any, Any],
    payloads: Iterable[bytes],
    *,
    paced: bool,
    stalled_after: float,
) -> None:
    """`send_encoded(stream, payloads, paced=paced)`, each of whose sends must complete
    within `stalled_after` seconds; raises `StreamStalled` when one does not.

    `send_encoded` asks for its next message only while no send is under way. When it asks
    and the stream has written bytes since it last asked, sends have completed: that is
    progress, and the deadline is counted from the last progress (or the start).
    """
    loop = asyncio.get_running_loop()
    slack = stalled_after / DEADLINE_SLACK
    # The HTTP/2 stream counts the bytes it wrote (a private API of grpclib, like the one
    # `send_encoded` writes through; tests/unit/server/test_stalled_streams.py covers both).
    http2_stream = stream._stream
    progress_at = moved_at = loop.time()
    sent_at_progress = http2_stream.data_sent

    def progress() -> None:
        nonlocal progress_at, moved_at, sent_at_progress
        progress_at = loop.time()
        sent_at_progress = http2_stream.data_sent
        if progress_at - moved_at > slack:
            deadline.reschedule(progress_at + stalled_after + slack)
            moved_at = progress_at

    def counted(payloads: Iterable[bytes]) -> Iterator[bytes]:
        # Most messages join a send with no write between them: one comparison each.
        for payload in payloads:
            if http2_stream.data_sent != sent_at_progress:
                progress()
            yield payload
        if http2_stream.data_sent != sent_at_progress:
            progress()

    try:
        async with asyncio.timeout_at(moved_at + stalled_after + slack) as deadline:
            await send_encoded(stream, counted(payloads), paced=paced)
    except TimeoutError:
        raise StreamStalled(
            loop.time() - progress_at, mid_message=http2_stream.data_sent != sent_at_progress
        ) from None


async def cut_off(
    stream: grpclib.server.Stream[Any, Any], stall: StreamStalled, status_message: str
) -> None:
    """End a stream after `stall`: with UNAVAILABLE and `status_message` when it stalled
    between two messages (trailers are a HEADERS frame, which flow control does not hold
    back), else, or if the connection does not take the trailers, with RST_STREAM (CANCEL):
    trailers after part of a message would read as a corrupt message."""
    if not stall.mid_message:
        try:
            async with asyncio.timeout(TRAILERS_SECONDS):
                await stream.send_trailing_metadata(
                    status=Status.UNAVAILABLE, status_message=status_message
                )
            return
        except (TimeoutError, StreamClosedError):  # no taker, or reset by the client meanwhile
            pass
    if stream._stream.closable:  # not already reset by the client, or gone with its connection
        stream._stream.reset_nowait(ErrorCodes.CANCEL)
