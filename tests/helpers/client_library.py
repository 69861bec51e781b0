"""The client library (`peat_sync.client`) against a real server: its settings for quick
tests, waiting for tombstones to be purged, and the store's documents as a mirror should
hold them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

from peat_sync.client import Backoff, Client

Documents = dict[str, dict[str, Any]]

# Reconnect within a fifth of a second: restarts cost the tests little time.
FAST_BACKOFF = Backoff(initial=0.02, maximum=0.2)
# A server whose idle streams carry a heartbeat five times a second.
QUICK_HEARTBEATS = ("--heartbeat-interval", "200ms")


async def wait_for_purge(client: Client, sequence: int, seconds: float = 10.0) -> None:
    """Asyncio-flavoured: wait until the tombstones up to `sequence` are purged, as GetStatus
    shows. With `--tombstone-retention 0`, the server purges at start and every second."""
    deadline = time.monotonic() + seconds
    while (await client.status()).catch_up_floor < sequence:
        if time.monotonic() > deadline:
            raise AssertionError(f"tombstones up to {sequence} not purged after {seconds} s")
        await asyncio.sleep(0.05)


async def store_documents(client: Client, collections: Iterable[str]) -> Documents:
    """The store's documents of `collections` in a mirror's shape (no key for an empty
    collection), as ListDocuments and GetDocument show them."""
    documents: Documents = {}
    for collection in collections:
        for doc_id in await client.list_ids(collection):
            document = await client.get(collection, doc_id)
            assert document is not None, f"{collection}/{doc_id} is listed but absent"
            documents.setdefault(collection, {})[doc_id] = document.data
    return documents


async def applied_everywhere(clients: list[Client], seconds: float = 30.0) -> int:
    """Asyncio-flavoured, shared mode: wait until every sidecar of `clients` has applied the
    stream's head, as GetSyncStats shows it; return that head."""
    deadline = time.monotonic() + seconds
    while True:
        stats = [await client.sync_stats() for client in clients]
        heads = {(each.applied_sequence, each.stream_head) for each in stats}
        if len(heads) == 1 and stats[0].applied_sequence == stats[0].stream_head:
            return stats[0].applied_sequence
        if time.monotonic() > deadline:
            raise AssertionError(f"not converged after {seconds} s: {heads}")
        await asyncio.sleep(0.05)
