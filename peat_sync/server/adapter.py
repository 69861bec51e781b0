"""The one place where asyncio (grpclib) and trio (the node) meet.

grpclib runs on asyncio inside `trio_asyncio.open_loop()`, in the same thread as trio. Every
crossing costs a task hop, so callers cross once per RPC or once per batch of events, never
once per event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar, cast

import trio_asyncio

P = ParamSpec("P")
T = TypeVar("T")


async def call_trio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Asyncio-flavoured: run the trio-flavoured `fn` and return its result."""
    return cast(T, await trio_asyncio.trio_as_aio(fn)(*args, **kwargs))


async def call_asyncio(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Trio-flavoured: run the asyncio-flavoured `fn` and return its result."""
    return cast(T, await trio_asyncio.aio_as_trio(fn)(*args, **kwargs))
