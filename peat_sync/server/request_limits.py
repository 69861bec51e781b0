"""How many request bytes the server holds: a limit per message, enforced while it is received,
and budgets of bytes in flight, per connection and in all. Asyncio-flavoured.

A request's bytes are held from the moment its length is admitted until its call ends: the
body as grpclib buffers it, then the decoded message and its writes. A message over its RPC's
limit is refused with RESOURCE_EXHAUSTED as soon as its length prefix announces it, and
nothing of it is read; one within the limit waits until the budgets have room for it, its body
unread meanwhile, so HTTP/2 flow control holds the client back.
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from dataclasses import dataclass
from typing import Any

import grpclib.server
from grpclib import GRPCError
from grpclib.const import Status

from peat_sync.wire import on_request_length


class ByteBudget:
    """A semaphore of bytes, first come first served."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def idle(self) -> bool:
        return self.used == 0 and not self._waiters

    async def acquire(self, size: int) -> None:
        """Wait until `size` bytes fit, then take them; `size` is at most the capacity."""
        if not self._waiters and self.used + size <= self.capacity:
            self.used += size
            return
        granted = asyncio.get_running_loop().create_future()
        waiter = (size, granted)
        self._waiters.append(waiter)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted just as it was cancelled
            else:
                self._waiters.remove(waiter)
                self._grant()  # a smaller waiter behind it may fit now
            raise

    def release(self, size: int) -> None:
        self.used -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiters and self.used + self._waiters[0][0] <= self.capacity:
            size, granted = self._waiters.popleft()
            self.used += size
            granted.set_result(None)


def too_large(length: int, limit: int, flag: str) -> str:
    """Why a request of `length` bytes is refused, over the `limit` that `flag` sets."""
    return (
        f"the request is {length:,} bytes; the limit is {limit:,} ({flag}): send less in one"
        " request"
    )


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """`max_message_bytes` bounds a request of any RPC but WriteDocuments, which
    `max_request_bytes` bounds; a connection holds at most `max_request_bytes` of requests at
    once, and the server at most `max_inflight_bytes`."""

    max_message_bytes: int
    max_request_bytes: int
    max_inflight_bytes: int

    def of(self, request_name: str) -> tuple[int, str]:
        """The most bytes a request named `request_name` may have, and the flag that sets
        it."""
        if request_name == "WriteDocumentsRequest":
            return self.max_request_bytes, "--max-request-bytes"
        return self.max_message_bytes, "--max-message-bytes"


class RequestAdmission:
    """The budgets of one server, and the admission of each call's request bytes."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.total = ByteBudget(limits.max_inflight_bytes)
        self._per_connection: weakref.WeakKeyDictionary[Any, ByteBudget] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def inflight_bytes(self) -> int:
        return self.total.used

    def per_connection(self, connection: Any) -> ByteBudget:
        """The budget of request bytes of `connection`."""
        budget = self._per_connection.get(connection)
        if budget is None:
            budget = self._per_connection[connection] = ByteBudget(self.limits.max_request_bytes)
        return budget

    def admit(self, stream: grpclib.server.Stream[Any, Any], limit: int, flag: str) -> Held:
        """For the call on `stream`: refuse request messages over `limit` bytes (`flag` is the
        option that sets it), and admit the others within the budgets as their lengths
        arrive. The call gives their bytes back with `release` when it ends."""
        held = Held(self, stream._stream.connection, limit, flag)
        on_request_length(stream, held.admit)
        return held


class Held:
    """The request bytes one call holds of its connection's budget and the server's."""

    __slots__ = ("_admission", "_connection", "_flag", "_held", "_limit")

    def __init__(self, admission: RequestAdmission, connection: Any, limit: int, flag: str) -> None:
        self._admission = admission
        self._connection = connection
        self._limit = limit
        self._flag = flag
        self._held: list[tuple[ByteBudget, int]] = []

    async def admit(self, length: int) -> None:
        if length > self._limit:
            raise GRPCError(Status.RESOURCE_EXHAUSTED, too_large(length, self._limit, self._flag))
        admission = self._admission
        budget = admission.per_connection(self._connection)
        for each in (budget, admission.total):
            await each.acquire(length)
            self._held.append((each, length))

    def release(self) -> None:
        for budget, size in self._held:
            budget.release(size)
        self._held.clear()
