"""Keeping the garbage collector's full passes short while the server runs.

A full pass walks every object the collector tracks, and a serving node's are mostly
long-lived: what start-up made (about 60,000 objects) and the replay log's events (100,000
when it is full). Passes over them paused every call for 20 to 75 ms, many times a minute
under load: most of the put-to-delivery p99.

`gc.freeze()` sets aside what exists, so that later passes walk only what is newer. So what
survives a full pass is set aside at once, and the next pass walks only what came since. A
frozen object is still freed as soon as nothing refers to it (an evicted event, say), but a
reference cycle among frozen objects is not collected while they stay frozen: so once every
THAW_SECONDS everything is thawed and collected in one full pass, and set aside again.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

THAW_SECONDS = 60.0


@asynccontextmanager
async def long_lived_objects_set_aside() -> AsyncIterator[None]:
    """Trio-flavoured: for the duration of the block, what survives a full pass of the
    collector is set aside from the next ones, and everything is walked again once every
    THAW_SECONDS; on exit, all of it is thawed."""
    gc.callbacks.append(_set_aside_survivors)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_collect_everything_periodically)
            yield
            nursery.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(_set_aside_survivors)
        gc.unfreeze()


def _set_aside_survivors(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


async def _collect_everything_periodically() -> None:
    while True:
        gc.unfreeze()
        gc.collect()  # a full pass: `_set_aside_survivors` freezes what it leaves
        await trio.sleep(THAW_SECONDS)
