"""`ByteBudget`: request bytes are admitted first come first served, within the capacity, and
a waiter that gives up leaves nothing taken."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from peat_sync.server.request_limits import ByteBudget


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 10))


def test_requests_within_the_capacity_are_admitted_at_once() -> None:
    async def scenario() -> None:
        budget = ByteBudget(10)
        await budget.acquire(4)
        await budget.acquire(6)
        assert budget.used == 10
        budget.release(4)
        budget.release(6)
        assert budget.idle

    run(scenario())


def test_a_request_that_does_not_fit_waits_and_keeps_its_turn() -> None:
    """A large waiter is not overtaken by smaller ones that would fit: first come, first
    served, so a large request is never starved."""

    async def scenario() -> None:
        budget = ByteBudget(10)
        await budget.acquire(8)
        order: list[str] = []

        async def take(name: str, size: int) -> None:
            await budget.acquire(size)
            order.append(name)

        large = asyncio.create_task(take("large", 9))
        small = asyncio.create_task(take("small", 1))
        await asyncio.sleep(0)
        assert (order, budget.used) == ([], 8)
        budget.release(8)
        await asyncio.gather(large, small)
        assert order == ["large", "small"]
        assert budget.used == 10

    run(scenario())


@pytest.mark.parametrize("granted_first", [False, True], ids=["waiting", "just-granted"])
def test_a_cancelled_waiter_takes_nothing(granted_first: bool) -> None:
    async def scenario() -> None:
        budget = ByteBudget(10)
        await budget.acquire(10)
        waiter = asyncio.create_task(budget.acquire(5))
        behind = asyncio.create_task(budget.acquire(5))
        await asyncio.sleep(0)
        if granted_first:
            budget.release(10)  # both granted; the first is cancelled before it runs
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        if not granted_first:
            budget.release(10)
        await behind
        assert budget.used == 5, "the cancelled waiter's share went back"

    run(scenario())
