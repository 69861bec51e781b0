"""The node embedded in a unit test: opened on a data dir of the test's own, its store
reopened after it closed, and its subscriptions read as a consumer reads them.

Commits and reads run on worker threads, so tests keep the real clock and a generous
`DEADLINE`. The async functions here are Trio-flavoured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from peat_sync.generated.peat.sidecar.v1 import ChangeType, DocumentChange
from peat_sync.node import (
    ChangeEvent,
    Node,
    NodeClosed,
    NodeConfig,
    Subscription,
    open_node,
)
from peat_sync.store import SQLiteStore

DEADLINE = 30


def node_config(tmp_path: Path, **overrides: Any) -> NodeConfig:
    return NodeConfig(data_dir=tmp_path / "data", node_id="test-node", **overrides)


@asynccontextmanager
async def running_node(tmp_path: Path, **overrides: Any) -> AsyncIterator[Node]:
    async with open_node(node_config(tmp_path, **overrides)) as node:
        yield node


def decode(event: ChangeEvent) -> DocumentChange:
    return DocumentChange.FromString(event.encoded)


def doc_id(sequence: int) -> str:
    return f"d{sequence:03d}"


async def read_until(
    subscription: Subscription, sequence: int, limit: int = 100
) -> list[DocumentChange]:
    """Read until an event at or past `sequence` arrives; returns every event read but the
    heartbeats."""
    changes: list[DocumentChange] = []
    while not changes or changes[-1].sequence < sequence:
        for event in await subscription.next_batch(limit):
            change = decode(event)
            if change.change_type != ChangeType.HEARTBEAT:
                changes.append(change)
    return changes


async def stall_while_live(subscription: Subscription) -> None:
    """Read heartbeats until the subscription waits on the live feed, then stop reading: it
    now stalls like a client that stopped draining its stream. Only for a subscription with
    nothing to replay."""

    async def read_heartbeats() -> None:
        while True:
            for event in await subscription.next_batch(1):
                assert decode(event).change_type == ChangeType.HEARTBEAT

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_heartbeats)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()


async def read_until_node_closed(subscription: Subscription, outcome: list[NodeClosed]) -> None:
    """Read `subscription` until the node closes; the NodeClosed that ends it goes to
    `outcome`."""
    try:
        while True:
            await subscription.next_batch(100)
    except NodeClosed as exc:
        outcome.append(exc)


def stored(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore.open(tmp_path / "data")
