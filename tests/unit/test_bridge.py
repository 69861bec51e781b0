"""The trio/asyncio adapter: results, errors and cancellation cross intact."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio.testing
import trio_asyncio

from peat_sync.bridge import (
    CALLBACKS_PER_STEP,
    TIMER_SWEEP_SECONDS,
    BatchPump,
    call_asyncio,
    call_trio,
    open_asyncio_loop,
)

DEADLINE = 10


async def test_call_trio_returns_the_result_and_raises_the_error() -> None:
    async def double(value: int) -> int:
        await trio.lowlevel.checkpoint()
        if value < 0:
            raise ValueError("negative")
        return 2 * value

    async def from_asyncio() -> int:
        with pytest.raises(ValueError, match="negative"):
            await call_trio(double, -1)
        return await call_trio(double, 21)

    with trio.fail_after(DEADLINE):
        async with trio_asyncio.open_loop():
            assert await call_asyncio(from_asyncio) == 42


async def test_batch_pump_fetches_only_when_asked_and_passes_errors_on() -> None:
    send, receive = trio.open_memory_channel[int | Exception](10)

    async def fetch() -> int:
        value = await receive.receive()
        if isinstance(value, Exception):
            raise value
        return value

    async def consume() -> list[int]:
        results = []
        async with BatchPump(fetch).running() as pump:
            results.append(await pump.next())
            # Nothing is fetched ahead of the consumer.
            assert receive.statistics().current_buffer_used == 2
            results.append(await pump.next())
            with pytest.raises(KeyError):
                await pump.next()
        return results

    values: list[int | Exception] = [1, 2, KeyError("gone")]
    for value in values:
        send.send_nowait(value)
    with trio.fail_after(DEADLINE):
        async with trio_asyncio.open_loop():
            assert await call_asyncio(consume) == [1, 2]


async def test_cancelling_the_consumer_cancels_the_pump_task() -> None:
    fetch_cancelled = trio.Event()

    async def fetch() -> int:
        try:
            await trio.sleep_forever()
        finally:
            fetch_cancelled.set()
        raise AssertionError("unreachable")

    async def consume() -> None:
        async with BatchPump(fetch).running() as pump:
            await asyncio.wait_for(pump.next(), 0.05)  # the timeout cancels next()

    with trio.fail_after(DEADLINE):
        async with trio_asyncio.open_loop():
            with pytest.raises(TimeoutError):
                await call_asyncio(consume)
            await fetch_cancelled.wait()


async def test_the_loop_drops_cancelled_timers_and_keeps_live_ones(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """trio_asyncio keeps a cancelled timer until it falls due; the bridge's loop sweeps them
    out (a guard on the loop's private heap, which the sweep relies on)."""
    fired: list[int] = []

    async def schedule() -> None:
        loop = asyncio.get_running_loop()
        for number in range(1000):
            loop.call_later(3600, fired.append, number).cancel()  # a call's deadline, say
        loop.call_later(5, fired.append, -1)  # live: it stays, and fires

    with trio.fail_after(DEADLINE):
        async with open_asyncio_loop() as loop:
            await call_asyncio(schedule)
            await trio.sleep(0.1)  # the loop takes the queued timers into its heap
            assert len(loop._timers) == 1001
            await trio.sleep(TIMER_SWEEP_SECONDS)
            assert len(loop._timers) == 1
            await trio.sleep(5)
    assert fired == [-1]


async def test_the_loop_runs_the_queued_callbacks_in_one_step_not_those_they_queue() -> None:
    """The bridge's loop runs the callbacks queued when a step of its trio task begins, up to
    CALLBACKS_PER_STEP, where trio_asyncio's own runs one per step; a callback queued by one
    of them waits for a later step, as in asyncio's own loop. A trio task that is always
    ready counts the scheduler's rounds: none passes within a step. (Trio orders the tasks
    of a round at random, so two steps in a row may see the same count; three may not.)"""
    rounds = 0
    seen: list[int] = []
    chain: list[int] = []

    async def count_rounds() -> None:
        nonlocal rounds
        while True:
            await trio.lowlevel.checkpoint()
            rounds += 1

    def chained(links: int) -> None:
        chain.append(rounds)
        if links > 1:
            asyncio.get_running_loop().call_soon(chained, links - 1)

    # The loop waits for its first callback, and runs it alone: then the others are queued.
    queued = 1 + 3 * CALLBACKS_PER_STEP
    with trio.fail_after(DEADLINE):
        async with open_asyncio_loop() as loop, trio.open_nursery() as nursery:
            # The loop's first step began before the bridge set its own: let it end.
            await call_asyncio(asyncio.sleep, 0)
            nursery.start_soon(count_rounds)
            for _ in range(queued):
                loop.call_soon(lambda: seen.append(rounds))
            loop.call_soon(chained, 3)
            while len(seen) < queued or len(chain) < 3:
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    one_step = seen[1 : 1 + CALLBACKS_PER_STEP]
    assert set(one_step) == {one_step[0]}, "no scheduler round within a step"
    assert seen[-1] > seen[1], "a step stops at CALLBACKS_PER_STEP"
    assert chain[2] > chain[0], "what a callback queues waits for a later step"
