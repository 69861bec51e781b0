"""Tombstone retention: a delete is remembered for a while, so that catch-ups include it.

Once a tombstone is older than the retention it is purged, and the store's catch-up floor
rises past it: a subscriber resuming from below the floor gets a RESYNC instead of a
catch-up that would miss the delete.

A collection whose config sets a retention of its own (TOMBSTONE, or `tombstone_ttl_secs`)
has its tombstones purged after that time instead. The floor stays store-wide, the highest
sequence of any tombstone purged, whatever its collection: so a short retention of one
collection shortens how far back every subscriber can catch up, and a long one keeps that
collection's tombstones for catch-ups only while the floor is not raised past them by
another collection's purge. Either way no catch-up ever misses a delete.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Collection, Mapping

import trio

from peat_sync.node.collection_configs import CollectionConfigs
from peat_sync.store import Store

log = logging.getLogger("peat_sync.retention")

# Tombstones purged per transaction, so that writers never wait long for the purge.
PURGE_CHUNK = 10_000


def purge_interval(retention: float) -> float:
    """How often to purge: tombstones outlive the retention by a tenth of it at most, with a
    check at least every ten minutes and at most every second."""
    return min(max(retention / 10, 1.0), 600.0)


async def purge_expired_tombstones(
    store: Store, retention: float, retentions: Mapping[str, float] | None = None
) -> int:
    """Trio-flavoured: purge every tombstone older than `retention` seconds, or, of the
    collections in `retentions`, than their own; returns the count."""
    now = time.time()
    own = retentions or {}
    purged = await _purge(store, now - retention, excluding=own.keys())
    for collection, seconds in own.items():
        purged += await _purge(store, now - seconds, collection=collection)
    return purged


async def _purge(
    store: Store,
    deleted_before: float,
    *,
    collection: str | None = None,
    excluding: Collection[str] = (),
) -> int:
    purge = functools.partial(store.purge_tombstones, deleted_before, PURGE_CHUNK)
    # With neither, the plain call: no collection config, no change in behaviour.
    if collection is not None:
        purge = functools.partial(purge, collection=collection)
    if excluding:
        purge = functools.partial(purge, excluding=frozenset(excluding))
    purged = 0
    while True:
        count = await trio.to_thread.run_sync(purge)
        purged += count
        if count < PURGE_CHUNK:
            return purged


async def run_tombstone_retention(
    store: Store, retention: float, configs: CollectionConfigs
) -> None:
    """Trio-flavoured: purge expired tombstones now and every `purge_interval` of the
    shortest retention, and when the collection configs change, until cancelled."""
    while True:
        retentions = configs.tombstone_retentions()
        try:
            purged = await purge_expired_tombstones(store, retention, retentions)
        except Exception as exc:  # a full disk, say: the store still serves, so retry later
            log.error("purging expired tombstones failed, will retry: %s", exc)
        else:
            if purged:
                log.info(
                    "purged %d tombstones older than %gs%s; catch-ups now start at sequence %d"
                    " or later",
                    purged,
                    retention,
                    " (or their collection's tombstone_ttl_secs)" if retentions else "",
                    store.catch_up_floor,
                )
        interval = min(purge_interval(seconds) for seconds in (retention, *retentions.values()))
        with trio.move_on_after(interval):
            await configs.wait_changed()
