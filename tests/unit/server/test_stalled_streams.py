"""`peat_sync.server.stalled_streams` through grpclib's own HTTP/2 stack, socket-free: a stream
whose client stops reading is cut off once a send has waited the timeout, with a status after
its last whole message, or reset when it stalled mid-message; sends that each complete in
time are never cut off, however long they take together. These fail if grpclib moves the
private API the module reads (`data_sent`, `reset_nowait`, `closable`)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import grpclib.const
import grpclib.server
import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.testing import ChannelFor

from peat_sync import wire
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.server.stalled_streams import StreamStalled, cut_off, send_within

DEADLINE = 10.0
STALLED_AFTER = 0.2
# grpclib's client grants each stream 4 MiB of window (`Configuration`'s default): 64 sends of
# one message of 64 KiB with its 5-byte prefix fill it exactly, so the 65th cannot start.
WINDOW = 4 * 1024 * 1024
WHOLE_MESSAGES = 64


def document_change(size: int) -> bytes:
    """An encoded `DocumentChange` of `size` bytes."""
    pad = size - len(wire.encode_change("c", "d", "", 1))
    encoded = wire.encode_change("c", "d", "x" * (pad - 2), 1)  # the length takes 3 bytes
    assert len(encoded) == size
    return encoded


PAYLOAD = document_change(WINDOW // WHOLE_MESSAGES - 5)
STATUS_MESSAGE = "cut off: the client did not read it; resubscribe with since_sequence=7"


class StallingService:
    """A Subscribe that sends `payloads` one per send (paced), and cuts its stream off when a
    send stalls; `finished` is set once it has."""

    def __init__(self, payloads: list[bytes]) -> None:
        self.payloads = payloads
        self.stall: StreamStalled | None = None
        self.finished = asyncio.Event()

    async def subscribe(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        await stream.recv_message()
        await stream.send_initial_metadata()
        try:
            await send_within(stream, self.payloads, paced=True, stalled_after=STALLED_AFTER)
        except StreamStalled as stall:
            self.stall = stall
            await cut_off(stream, stall, STATUS_MESSAGE)
        finally:
            self.finished.set()

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            wire.SUBSCRIBE: grpclib.const.Handler(
                self.subscribe, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
            )
        }


async def read_after_the_cut(service: StallingService) -> tuple[int, BaseException | None]:
    """Open the stream, read nothing until the service has cut it off, then read it to its
    end: how many messages arrived, and what ended the stream (None: a clean end)."""
    messages = 0
    async with ChannelFor([service]) as channel:
        try:
            async with channel.request(
                wire.SUBSCRIBE, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
            ) as stream:
                await stream.send_message(pb.SubscribeRequest(), end=True)
                await asyncio.wait_for(service.finished.wait(), DEADLINE)
                while await asyncio.wait_for(stream.recv_message(), DEADLINE) is not None:
                    messages += 1
        except (GRPCError, StreamTerminatedError) as exc:
            return messages, exc
    return messages, None


def test_a_stream_stalled_between_messages_ends_with_its_status_after_every_whole_one() -> None:
    """The window is full after exactly 64 messages: the 65th send never starts, and the
    client reads the 64, then UNAVAILABLE with the message (trailers need no window)."""
    service = StallingService([PAYLOAD] * (WHOLE_MESSAGES + 10))

    messages, ended_by = asyncio.run(read_after_the_cut(service))

    assert service.stall is not None
    assert not service.stall.mid_message
    assert service.stall.stalled_for >= STALLED_AFTER
    assert messages == WHOLE_MESSAGES
    assert isinstance(ended_by, GRPCError), ended_by
    assert (ended_by.status, ended_by.message) == (Status.UNAVAILABLE, STATUS_MESSAGE)


def test_a_stream_stalled_mid_message_is_reset() -> None:
    """Messages 100 bytes longer: the window ends inside one, and trailers after it would
    read as a corrupt message, so the stream is reset (grpclib's client then drops what it
    holds unread)."""
    service = StallingService([document_change(len(PAYLOAD) + 100)] * (WHOLE_MESSAGES + 10))

    _, ended_by = asyncio.run(read_after_the_cut(service))

    assert service.stall is not None
    assert service.stall.mid_message
    assert isinstance(ended_by, StreamTerminatedError), ended_by
    assert "error_code: 8" in str(ended_by)  # CANCEL


class TimedHttp2Stream:
    """Stands in for grpclib's HTTP/2 stream: each send takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.data_sent = 0

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        await asyncio.sleep(self.seconds)  # a client that reads slowly
        self.data_sent += len(data)


class TimedStream:
    def __init__(self, seconds: float) -> None:
        self._stream = TimedHttp2Stream(seconds)


# A timeout long enough that a send of half of it completes in time on a loaded machine.
SLOW_TIMEOUT = 0.4


@pytest.mark.parametrize("paced", [False, True], ids=["shared-frames", "paced"])
def test_sends_that_each_complete_in_time_are_never_cut_off(paced: bool) -> None:
    """Six sends of half the timeout each: three timeouts in all, and no stall, since the
    deadline counts from the last send that completed."""
    stream = TimedStream(SLOW_TIMEOUT / 2)
    payloads = [b"z" * wire.SEND_CHUNK_BYTES] * 6  # one send each, shared frames or not

    async def send() -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await send_within(cast(Any, stream), payloads, paced=paced, stalled_after=SLOW_TIMEOUT)
        return loop.time() - started

    took = asyncio.run(send())

    assert took >= 3 * SLOW_TIMEOUT
    assert stream._stream.data_sent == len(payloads) * (wire.SEND_CHUNK_BYTES + 5)
