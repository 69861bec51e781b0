"""The collector's full passes skip what survived the last one; a cycle among those is
collected within THAW_SECONDS all the same."""

from __future__ import annotations

import gc
import weakref

import trio
import trio.testing

from peat_sync.server.collector import THAW_SECONDS, long_lived_objects_set_aside

DEADLINE = 2 * THAW_SECONDS  # of the autojump clock: the test passes one thaw


class Node:
    """An object that can be part of a reference cycle."""

    other: Node | None = None


def cycle() -> Node:
    """One of a reference cycle of two objects."""
    first, second = Node(), Node()
    first.other, second.other = second, first
    return first


async def test_survivors_of_a_full_pass_are_set_aside_until_the_thaw(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(DEADLINE):
        async with long_lived_objects_set_aside():
            await trio.testing.wait_all_tasks_blocked()  # the first full pass, at entry
            assert gc.get_freeze_count() > 0

            frozen = gc.get_freeze_count()
            garbage = weakref.ref(cycle())
            gc.collect()
            assert garbage() is None, "what came after the last pass is walked and collected"

            held = cycle()
            gc.collect()  # a full pass: what survives it is set aside, this cycle too...
            assert gc.get_freeze_count() > frozen
            dropped = weakref.ref(held)
            del held
            gc.collect()
            assert dropped() is not None, "...so, once it is garbage, the passes skip it"
            await trio.sleep(THAW_SECONDS)
            await trio.testing.wait_all_tasks_blocked()  # the thaw, due at this moment too
            assert dropped() is None, "until everything is walked again"
    assert gc.get_freeze_count() == 0, "all of it is thawed at the end"
