"""The asyncio-flavoured client library, used from trio through peat_sync's adapter."""

from __future__ import annotations

import trio
import trio_asyncio

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bridge import call_asyncio, enter_asyncio, iterate_asyncio
from peat_sync.client import ChangeType, Client


async def test_a_trio_program_writes_mirrors_and_follows_changes(server: ServerProcess) -> None:
    """Calls, the mirror (context manager, `wait_for`, `changes()`) and a subscription all
    work from trio code inside `trio_asyncio.open_loop()`."""
    with trio.fail_after(30):
        async with (
            trio_asyncio.open_loop(),
            enter_asyncio(Client(server.address)) as client,
        ):
            first = await call_asyncio(client.put, "fleet", "p1", {"speed": 3})
            async with enter_asyncio(client.mirror(["fleet"])) as mirror:
                await call_asyncio(mirror.wait_for, first)
                assert mirror.documents == {"fleet": {"p1": {"speed": 3}}}
                async with enter_asyncio(mirror.changes()) as changes:
                    second = await call_asyncio(client.put, "fleet", "p2", {"speed": 4})
                    async for change in iterate_asyncio(changes):
                        assert (change.doc_id, change.document, change.sequence) == (
                            "p2",
                            {"speed": 4},
                            second,
                        )
                        break
            seen: list[tuple[ChangeType, int]] = []
            async with enter_asyncio(client.subscribe(["fleet"], since=0)) as subscription:
                async for event in iterate_asyncio(subscription):
                    seen.append((event.type, event.sequence))
                    if len(seen) == 3:
                        break
    assert seen == [
        (ChangeType.HEARTBEAT, 0),
        (ChangeType.UPSERT, first),
        (ChangeType.UPSERT, second),
    ]
