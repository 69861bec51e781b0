"""Deadlines and polling: every wait of a test is bounded.

grpcio calls take `timeout=`, asyncio (grpclib) scenarios run under `asyncio.wait_for`, and
conditions are polled (never slept on) with a bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

# The deadline of one unary call.
CALL_TIMEOUT = 10.0
# The deadline of one streaming call or one whole grpclib scenario.
STREAM_TIMEOUT = 60.0

T = TypeVar("T")


def wait_until(condition: Callable[[], T], *, timeout: float = 10.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; return that, or fail after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


async def eventually(
    condition: Callable[[], T], *, seconds: float = 10.0, what: str = "condition"
) -> T:
    """Asyncio-flavoured: poll `condition` (while other tasks run) until it returns something
    truthy; return that, or fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        await asyncio.sleep(0.01)
    return value


def run_scenario(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = 60.0) -> T:
    """Run an asyncio (grpclib) scenario from a sync test, under a deadline."""

    async def bounded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


async def within(awaitable: Awaitable[T], seconds: float = CALL_TIMEOUT) -> T:
    """Asyncio-flavoured: await with a deadline."""
    return await asyncio.wait_for(awaitable, seconds)
