"""Subscribe streams in tests: grpcio's read one event at a time under the call's deadline,
grpclib's opened with their request sent and read under a deadline (from asyncio, or from
sync code on a loop of their own), and waiting until the server counts the open streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from typing import Any

import grpclib.client
import grpclib.config
from grpclib.const import Cardinality
from grpclib.exceptions import StreamTerminatedError

from peat_sync import wire
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import Client, Event, GrpcioClient, status
from tests.helpers.waiting import CALL_TIMEOUT, STREAM_TIMEOUT, wait_until, within


def small_window_config() -> grpclib.config.Configuration:
    """A grpclib client that buffers at most 64 KiB unread: a stalled reader stalls the
    server's sends almost at once."""
    return grpclib.config.Configuration(
        http2_connection_window_size=65535, http2_stream_window_size=65535
    )


class GrpcioSubscription:
    """A grpcio Subscribe stream, read one event at a time under the call's deadline."""

    def __init__(self, client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any):
        self.call = client.stub.Subscribe(
            client.pb2.SubscribeRequest(**{"control_events": True, **request}), timeout=timeout
        )

    def next(self, *, heartbeats: bool = False) -> Event:
        """The next event; heartbeats are skipped unless asked for."""
        while True:
            event = Event.from_grpcio(next(self.call))
            if heartbeats or not event.is_heartbeat:
                return event

    def take(self, count: int, *, heartbeats: bool = False) -> list[Event]:
        return [self.next(heartbeats=heartbeats) for _ in range(count)]

    def until(self, stop: Callable[[Event], bool], *, heartbeats: bool = False) -> list[Event]:
        """Events up to and including the first one for which `stop` is true."""
        events = []
        while True:
            event = self.next(heartbeats=heartbeats)
            events.append(event)
            if stop(event):
                return events

    def cancel(self) -> None:
        self.call.cancel()


@contextmanager
def grpcio_subscription(
    client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any
) -> Iterator[GrpcioSubscription]:
    subscription = GrpcioSubscription(client, timeout, **request)
    try:
        yield subscription
    finally:
        subscription.cancel()


def wait_for_subscribers(client: Client, count: int) -> dict[str, Any]:
    return wait_until(
        lambda: (response := status(client))["subscribers"] == count and response,
        what=f"{count} open subscriber streams",
    )


async def open_grpclib_subscribe(
    channel: grpclib.client.Channel, request: pb.SubscribeRequest
) -> Any:
    """Asyncio-flavoured: open a Subscribe stream and send its request, reading nothing.

    Returns the entered grpclib stream; prefer `grpclib_subscribe`, which also closes it.
    """
    stream = channel.request(
        wire.SUBSCRIBE,
        Cardinality.UNARY_STREAM,
        pb.SubscribeRequest,
        pb.DocumentChange,
        timeout=STREAM_TIMEOUT,
    )
    await within(stream.__aenter__())
    await within(stream.send_message(request, end=True))
    return stream


@asynccontextmanager
async def grpclib_subscribe(
    channel: grpclib.client.Channel, request: pb.SubscribeRequest
) -> AsyncIterator[Any]:
    """Asyncio-flavoured: a Subscribe stream whose request is sent, and nothing read yet."""
    stream = await open_grpclib_subscribe(channel, request)
    try:
        yield stream
    finally:
        # The connection may already be gone (a server that stopped); that ends the stream too.
        with suppress(StreamTerminatedError):
            await within(stream.cancel())
            await within(stream.__aexit__(None, None, None))


async def recv_event(
    stream: Any, seconds: float = CALL_TIMEOUT, *, heartbeats: bool = False
) -> Event:
    """Asyncio-flavoured: the next event of a grpclib Subscribe stream; heartbeats are
    skipped unless asked for."""
    while True:
        message = await within(stream.recv_message(), seconds)
        assert message is not None, "the Subscribe stream ended"
        event = Event.from_grpclib(message)
        if heartbeats or not event.is_heartbeat:
            return event


class GrpclibStream:
    """A grpclib Subscribe stream read from sync code, on an event loop of its own (so each
    thread can have one); reads like `GrpcioSubscription`."""

    def __init__(
        self,
        port: int,
        request: pb.SubscribeRequest,
        config: grpclib.config.Configuration | None = None,
    ) -> None:
        self._runner = asyncio.Runner()
        self._channel = self._runner.run(self._open(port, config))
        self._stream = self._runner.run(open_grpclib_subscribe(self._channel, request))

    @staticmethod
    async def _open(
        port: int, config: grpclib.config.Configuration | None
    ) -> grpclib.client.Channel:
        return grpclib.client.Channel("127.0.0.1", port, config=config)

    def next(self, *, heartbeats: bool = False, seconds: float = CALL_TIMEOUT) -> Event:
        """The next event (heartbeats skipped unless asked for), within `seconds`."""
        try:
            return self._runner.run(recv_event(self._stream, seconds, heartbeats=heartbeats))
        except TimeoutError:
            raise AssertionError(f"no event within {seconds} s") from None

    def until(self, stop: Callable[[Event], bool], *, heartbeats: bool = False) -> list[Event]:
        events = [self.next(heartbeats=heartbeats)]
        while not stop(events[-1]):
            events.append(self.next(heartbeats=heartbeats))
        return events

    def close(self) -> None:
        with suppress(StreamTerminatedError):
            self._runner.run(within(self._stream.cancel()))
            self._runner.run(within(self._stream.__aexit__(None, None, None)))
        self._channel.close()
        self._runner.close()


async def wait_for_subscribers_async(stub: pb.PeatSidecarStub, count: int) -> None:
    """Asyncio-flavoured: poll GetStatus until `count` Subscribe streams are open."""
    while True:
        if (await stub.get_status()).subscribers == count:
            return
        await asyncio.sleep(0.01)
