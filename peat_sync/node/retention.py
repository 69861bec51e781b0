"""Tombstone retention: a delete is remembered for a while, so that catch-ups include it.

Once a tombstone is older than the retention it is purged, and the store's catch-up floor
rises past it: a subscriber resuming from below the floor gets a RESYNC instead of a
catch-up that would miss the delete.
"""

from __future__ import annotations

import logging
import time

import trio

from peat_sync.store import Store

log = logging.getLogger("peat_sync.retention")

# Tombstones purged per transaction, so that writers never wait long for the purge.
PURGE_CHUNK = 10_000


def purge_interval(retention: float) -> float:
    """How often to purge: tombstones outlive the retention by a tenth of it at most, with a
    check at least every ten minutes and at most every second."""
    return min(max(retention / 10, 1.0), 600.0)


async def purge_expired_tombstones(store: Store, retention: float) -> int:
    """Trio-flavoured: purge every tombstone older than `retention` seconds; returns the
    count."""
    deleted_before = time.time() - retention
    purged = 0
    while True:
        count = await trio.to_thread.run_sync(store.purge_tombstones, deleted_before, PURGE_CHUNK)
        purged += count
        if count < PURGE_CHUNK:
            return purged


async def run_tombstone_retention(store: Store, retention: float) -> None:
    """Trio-flavoured: purge expired tombstones now and every `purge_interval`, until
    cancelled."""
    while True:
        try:
            purged = await purge_expired_tombstones(store, retention)
        except Exception as exc:  # a full disk, say: the store still serves, so retry later
            log.error("purging expired tombstones failed, will retry: %s", exc)
        else:
            if purged:
                log.info(
                    "purged %d tombstones older than %gs; catch-ups now start at sequence %d"
                    " or later",
                    purged,
                    retention,
                    store.catch_up_floor,
                )
        await trio.sleep(purge_interval(retention))
