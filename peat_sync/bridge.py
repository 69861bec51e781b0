"""The one place where asyncio (grpclib) and trio (the node) meet: the only module of the
package that imports both, which a test checks.

Trio programs use the asyncio-flavoured client library (`peat_sync.client`) through it too:
inside `open_asyncio_loop()`, `call_asyncio`, `enter_asyncio` and `iterate_asyncio` run its
calls, context managers and iterators.

grpclib runs on asyncio inside `trio_asyncio.open_loop()`, in the same thread as trio. Every
crossing costs scheduler hops, so callers cross once per RPC or once per batch of events,
never once per event. A stream crosses through a `BatchPump`: `call_trio` starts a new trio
task for each call, and for a stream woken by every event that start-up cost twice the
whole delivery (measured: 187 against 88 microseconds of server CPU per delivered event).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, ParamSpec, TypeVar, cast

import trio
import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")


# How often the loop's cancelled timers are looked for (see `_drop_cancelled_timers`).
TIMER_SWEEP_SECONDS = 1.0
# Ready asyncio callbacks the loop runs per step of its trio task (see `_run_ready_in_batches`).
CALLBACKS_PER_STEP = 64


@asynccontextmanager
async def open_asyncio_loop() -> AsyncIterator[Any]:
    """For trio-flavoured `async with`: an asyncio loop running inside trio, in the same
    thread, for the duration of the block. Build grpclib objects inside it."""
    async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
        _run_ready_in_batches(loop)
        nursery.start_soon(_drop_cancelled_timers, loop)
        yield loop
        nursery.cancel_scope.cancel()


def _run_ready_in_batches(loop: Any) -> None:
    """Make `loop` run the callbacks that are ready when its trio task is scheduled, up to
    CALLBACKS_PER_STEP, instead of one.

    trio_asyncio's loop is a trio task that takes one callback from its queue per step, and
    each step is a round of the trio scheduler. A unary call makes several callbacks (its
    task's start and each wake-up): with the scheduler, about 30% of the server's CPU per
    PutDocument. Running the callbacks already queued in the same step took PutDocument from
    about 1,700 to 2,100 calls/s with 16 in flight, and from 1,780 to 2,600 with 64.

    As asyncio's own loop does, a step runs only the callbacks queued before it began, not
    those they queue: `asyncio.sleep(0)` still lets I/O in before the task goes on, which
    paced sends rely on (`wire.send_encoded`). The bound keeps the trio tasks' wait for their
    turn short. The step is trio_asyncio's private `_main_loop_one` (`no_wait=True` runs one
    callback if one is queued, else raises WouldBlock), looked up on the loop at every step,
    and its queue is the private `_q_recv`: tests/unit/test_bridge.py checks both."""
    step = type(loop)._main_loop_one

    async def run_ready(no_wait: bool = False) -> None:
        queued = loop._q_recv.statistics().current_buffer_used
        await step(loop, no_wait)
        for _ in range(min(queued, CALLBACKS_PER_STEP) - 1):
            try:
                await step(loop, True)
            except (trio.WouldBlock, trio.EndOfChannel):  # none ready, or closed (told next step)
                return

    loop._main_loop_one = run_ready


async def _drop_cancelled_timers(loop: Any) -> None:
    """Trio-flavoured: keep the loop's heap of timers to the live ones.

    trio_asyncio keeps a cancelled timer until it falls due, where asyncio's own loop drops
    them once they are half its heap. A gRPC call's deadline is such a timer, cancelled as
    the call ends: with 30 s deadlines at 1,000 calls/s, 27,000 of them and their contexts
    stayed, most of what the garbage collector's full passes walked (25 to 75 ms each, the
    put-to-delivery p99). The heap is private to trio_asyncio; tests/unit/test_bridge.py
    checks that this still empties it."""
    while True:
        await trio.sleep(TIMER_SWEEP_SECONDS)
        timers: list[asyncio.TimerHandle] = loop._timers
        live = [timer for timer in timers if not timer.cancelled()]
        if len(live) < len(timers):
            heapq.heapify(live)
            timers[:] = live  # in place: the loop holds this list


async def call_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Asyncio-flavoured: run the trio-flavoured `fn` and return its result."""
    return cast(T, await trio_asyncio.trio_as_aio(fn)(*args, **kwargs))


async def call_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Trio-flavoured: run the asyncio-flavoured `fn` and return its result."""
    return cast(T, await trio_asyncio.aio_as_trio(fn)(*args, **kwargs))


async def call_nowait(start: Callable[[Callable[[T | BaseException], None]], None]) -> T:
    """Asyncio-flavoured: call `start`, a function of the node that returns at once and later
    passes an outcome (a result, or an exception) to the callback it is given; return that
    result, or raise that exception. Unlike `call_trio`, no trio task is started: for a unary
    write that task cost more server CPU than the write's own trio side."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def done(outcome: T | BaseException) -> None:
        if future.done():  # the caller was cancelled
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    start(done)
    return await future


def enter_asyncio(manager: AbstractAsyncContextManager[T]) -> AbstractAsyncContextManager[T]:
    """For trio-flavoured `async with`: enter and exit an asyncio-flavoured context manager."""
    return cast(AbstractAsyncContextManager[T], trio_asyncio.aio_as_trio(manager))


def iterate_asyncio(iterable: AsyncIterable[T]) -> AsyncIterator[T]:
    """For trio-flavoured `async for`: the items of an asyncio-flavoured async iterable, each
    fetched with one crossing."""
    return cast(AsyncIterator[T], trio_asyncio.aio_as_trio(aiter(iterable)))


class BatchPump(Generic[T]):
    """Hands the results of the trio-flavoured `fetch` to asyncio, one call at a time,
    through one trio task that lives as long as the pump runs.

    Nothing is fetched ahead: `fetch` runs only while `next()` waits, so a consumer that
    stops asking holds nothing beyond what it already has.
    """

    def __init__(self, fetch: Callable[[], Awaitable[T]]) -> None:
        self._fetch = fetch
        self._wanted = trio.Event()
        self._waiter: asyncio.Future[T] | None = None

    async def run(self) -> None:
        """Trio-flavoured: serve `next()` calls until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            waiter = self._waiter
            assert waiter is not None
            try:
                result = await self._fetch()
            except Exception as exc:  # delivered to next(); the pump has nothing left to do
                if not waiter.done():
                    waiter.set_exception(exc)
                return
            if not waiter.done():
                waiter.set_result(result)

    async def next(self) -> T:
        """Asyncio-flavoured: the next result of `fetch`."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._wanted.set()
        return await self._waiter

    @asynccontextmanager
    async def running(self) -> AsyncIterator[BatchPump[T]]:
        """Asyncio-flavoured: run the pump's trio task for the duration of the block."""
        task = trio_asyncio.current_loop.get().trio_as_future(self.run)
        try:
            yield self
        finally:
            task.cancel()
