"""`ResilientSubscription`: a change feed that survives disconnects, restarts and RESYNCs.

The reconnect, resume and re-list loop every client of a change feed needs, written once:
the subscription remembers the last position the server vouched for and the store's epoch,
and each new stream resumes from there. The server then replays, catches up, or sends a
RESYNC followed by a snapshot; nothing is skipped without an event that says so.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

import grpclib.client
from grpclib.const import Cardinality, Status

from peat_sync.client.errors import (
    CALL_FAILURES,
    ClientError,
    Rejected,
    Unavailable,
    client_error,
)
from peat_sync.client.events import ChangeType, Event
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.wire import SUBSCRIBE, SUBSCRIBE_BATCHED

if TYPE_CHECKING:
    from peat_sync.client.client import Client

log = logging.getLogger("peat_sync.client")

# Three heartbeat intervals of a server on its default (10 s): a stream silent for longer
# has lost its server, even when no TCP reset ever arrives.
DEFAULT_SILENCE_TIMEOUT = 30.0

SubscribeStream = grpclib.client.Stream[
    pb.SubscribeRequest, pb.DocumentChange | pb.DocumentChangeBatch
]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter between reconnection attempts.

    The n-th attempt in a row waits between half and all of `initial * 2**n`, capped at
    `maximum`: the jitter spreads the reconnections of many clients after a server restart.
    """

    initial: float = 0.1
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        ceiling = min(self.maximum, self.initial * 2 ** min(attempt, 32))
        return random.uniform(ceiling / 2, ceiling)


class ResilientSubscription:
    """Asyncio-flavoured: an async iterator of `Event`s from one server that reconnects with
    `Backoff` after any failure, and resumes from the last position with the epoch.

    Use it in `async with`, which closes the stream. Events arrive exactly as the server
    sends them (docs/subscribing.md), with two additions that keep the feed whole:

    - after a RESYNC on a stream that was not asked for snapshots, the subscription
      re-subscribes with a snapshot, so a SNAPSHOT_BEGIN ... CATCH_UP_END follows the RESYNC
      here too;
    - every later stream asks for a snapshot when it cannot resume, so a reconnection in the
      middle of a snapshot, or after the history was compacted, starts a new snapshot.

    `position` and `epoch` are what a new subscription would resume from. Every event of a
    catch-up is a valid resume point for a consumer that applies each event as it comes; a
    consumer that applies a catch-up only at its CATCH_UP_END (as `Mirror` does) passes
    `atomic_catch_ups=True`, and an interrupted catch-up then resumes from its start, where
    the new stream opens with a HEARTBEAT or a new CATCH_UP_BEGIN. A stream silent for
    `silence_timeout` seconds (heartbeats included) counts as lost; keep it at three server
    heartbeat intervals or more. A request the server rejects (a bad collection name, say)
    raises `Rejected` from the iteration; connection failures, and a server at its
    subscriber limit, never end it.

    With `batched` (the default), it reads the SubscribeBatched RPC, whose messages carry
    many events each, and yields them one by one: the same events, at a fraction of the cost
    per event. `batched=False` reads Subscribe, for servers without SubscribeBatched.
    """

    def __init__(
        self,
        client: Client,
        collections: Iterable[str] = (),
        *,
        since: int | None = None,
        epoch: str | None = None,
        snapshot: bool = False,
        backoff: Backoff | None = None,
        silence_timeout: float | None = None,
        atomic_catch_ups: bool = False,
        batched: bool = True,
        query: pb.SubscriptionQuery | None = None,
    ) -> None:
        self._client = client
        self._batched = batched
        # Events of the current stream's last batch that are not yet yielded.
        self._pending: deque[pb.DocumentChange] = deque()
        self.collections = list(collections)
        self.position = since
        self.epoch = epoch
        self._snapshot = snapshot
        self._query = query
        self._backoff = backoff or Backoff()
        self._silence_timeout = silence_timeout or DEFAULT_SILENCE_TIMEOUT
        self._atomic_catch_ups = atomic_catch_ups
        # In a snapshot (or, with atomic catch-ups, a catch-up): the position stays put.
        self._holding_position = False
        self._stream: SubscribeStream | None = None
        self._stream_has_snapshots = False
        self._failures = 0
        self.reconnections = 0

    async def __aenter__(self) -> ResilientSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ResilientSubscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._pending:
                return await self._deliver(self._pending.popleft())
            if self._stream is None:
                await self._open()
            assert self._stream is not None
            try:
                async with asyncio.timeout(self._silence_timeout):
                    message = await self._stream.recv_message()
            except TimeoutError:
                await self._lost(f"no event or heartbeat for {self._silence_timeout:g} s")
                continue
            except CALL_FAILURES as exc:
                error = client_error(exc, self._client.address)
                if not _retryable(error):
                    await self.aclose()
                    raise error from exc
                await self._lost(str(error))
                continue
            if message is None:
                await self._lost("the server ended the stream")
                continue
            self._failures = 0
            if isinstance(message, pb.DocumentChangeBatch):
                self._pending.extend(message.changes)
                continue
            return await self._deliver(message)

    async def _deliver(self, message: pb.DocumentChange) -> Event:
        event = Event.from_message(message)
        await self._follow(event)
        return event

    async def aclose(self) -> None:
        """Close the current stream; iterating again opens a new one."""
        stream, self._stream = self._stream, None
        self._pending.clear()  # the rest of a closed stream's batch is not for the new one
        if stream is not None:
            await _abandon(stream)

    async def _follow(self, event: Event) -> None:
        """Track the resume point the event vouches for."""
        # From the first event on, the caller holds state, and a stream that cannot resume
        # must bring a snapshot to put it right.
        self._snapshot = True
        if event.epoch:
            self.epoch = event.epoch
        match event.type:
            case ChangeType.SNAPSHOT_BEGIN:
                self._holding_position = True  # no resume point until the snapshot is complete
                self.position = None
            case ChangeType.CATCH_UP_BEGIN:
                self._holding_position = self._atomic_catch_ups
                self.position = event.sequence
            case ChangeType.CATCH_UP_END:
                self._holding_position = False
                self.position = event.sequence
            case ChangeType.RESYNC:
                self.position = None
                if not self._stream_has_snapshots:
                    # This stream goes on from the head without a re-list; a new one, which
                    # asks for a snapshot, brings the copy back first.
                    await self.aclose()
            case _:
                if not self._holding_position:
                    self.position = event.sequence

    def _request(self) -> pb.SubscribeRequest:
        return pb.SubscribeRequest(
            collections=self.collections,
            since_sequence=self.position,
            epoch=self.epoch,
            snapshot=self._snapshot,
            query=self._query,
            control_events=True,  # this library reads them all
        )

    async def _open(self) -> None:
        """Open a stream, retrying with backoff until the server takes the request."""
        while True:
            request = self._request()
            stream: SubscribeStream = (
                self._client.channel.request(
                    SUBSCRIBE_BATCHED,
                    Cardinality.UNARY_STREAM,
                    pb.SubscribeRequest,
                    pb.DocumentChangeBatch,
                )
                if self._batched
                else self._client.channel.request(
                    SUBSCRIBE, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
                )
            )
            try:
                # A peer that accepts the connection but never answers must not hang here.
                async with asyncio.timeout(self._silence_timeout):
                    await stream.__aenter__()
                    await stream.send_message(request, end=True)
            except CALL_FAILURES as exc:
                await _abandon(stream)
                error = client_error(exc, self._client.address)
                if not _retryable(error):
                    raise error from exc
                await self._wait_before_retry(str(error))
                continue
            self._stream = stream
            self._stream_has_snapshots = request.snapshot
            self._holding_position = False
            return

    async def _lost(self, reason: str) -> None:
        await self.aclose()
        await self._wait_before_retry(reason)

    async def _wait_before_retry(self, reason: str) -> None:
        delay = self._backoff.delay(self._failures)
        self._failures += 1
        self.reconnections += 1
        if self.position is not None:
            resume = f"from sequence {self.position}"
        else:
            resume = "with a snapshot" if self._snapshot else "from the head"
        log.warning("subscription: %s; reconnecting in %.1f s, %s", reason, delay, resume)
        await asyncio.sleep(delay)


def _retryable(error: ClientError) -> bool:
    """Whether a subscription may try again after `error`. A Subscribe request carries no
    document, so RESOURCE_EXHAUSTED means the server is at its subscriber limit for now."""
    return isinstance(error, Unavailable) or (
        isinstance(error, Rejected) and error.status is Status.RESOURCE_EXHAUSTED
    )


class _Abandoned(Exception):
    """Leaves a stream's block without waiting for the stream to end."""


async def _abandon(stream: SubscribeStream) -> None:
    # Left with an exception, a grpclib stream resets itself at once instead of waiting for
    # the server's trailers, which a stream abandoned mid-flight would never get.
    await stream.__aexit__(_Abandoned, _Abandoned(), None)
