"""Expiry: the server removes the documents a collection's config says have lived long
enough (SOFT_DELETE: soft-deleted ones, after `soft_delete_ttl_secs`; IMPLICIT_TTL: any, that
long after its last write).

Each removal is an ordinary delete through the node's single writer, so it has a sequence
and reaches subscribers as a DELETE event like any other. It is conditional on the
document's sequence as this node read it (`Mutation.expected_sequence`): a document written
meanwhile is kept, and in shared mode, where every sidecar runs the expiry, one sidecar's
removal wins in the stream and the others' fail their precondition, harmlessly.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from peat_sync.generated.peat.sidecar.v1 import DeletionPolicy
from peat_sync.node.collection_configs import CollectionConfig, CollectionConfigs
from peat_sync.node.errors import NodeClosed, WriteRefused
from peat_sync.node.history import read_store
from peat_sync.node.retention import purge_interval
from peat_sync.node.validation import excerpt
from peat_sync.store import Change, Mutation, PreconditionFailed, Store

log = logging.getLogger("peat_sync.expiry")

# Removals in one atomic write: well under a shared-mode batch (1,000 messages), and a
# transaction short enough that writers hardly wait for it.
EXPIRY_CHUNK = 500

Write = Callable[[Sequence[Mutation]], Awaitable[list[Change | None]]]


async def remove_expired(
    store: Store,
    configs: CollectionConfigs,
    write: Write,
    limiter: trio.CapacityLimiter,
    now: float,
) -> int:
    """Trio-flavoured: remove, with `write`, every document expired at the unix time `now`;
    returns how many were removed."""
    removed = 0
    for config in configs.expiring():
        removed += await _remove_expired_of(store, config, write, limiter, now)
    return removed


async def _remove_expired_of(
    store: Store,
    config: CollectionConfig,
    write: Write,
    limiter: trio.CapacityLimiter,
    now: float,
) -> int:
    assert config.lifetime is not None
    expired = functools.partial(
        store.documents_written_before,
        marked_deleted=config.deletion_policy == DeletionPolicy.SOFT_DELETE,
    )
    removed = 0
    while True:
        found = await read_store(
            expired, config.collection, now - config.lifetime, EXPIRY_CHUNK, limiter=limiter
        )
        if not found:
            return removed
        try:
            changes = await write(
                [Mutation(config.collection, doc_id, None, sequence) for doc_id, sequence in found]
            )
        except PreconditionFailed as exc:
            # Written again since it was read, or removed by another sidecar first: the
            # next round reads the collection anew.
            log.debug("an expired document changed before its removal: %s", exc)
            return removed
        count = sum(change is not None for change in changes)
        removed += count
        if len(found) < EXPIRY_CHUNK or count == 0:
            return removed


def expiry_interval(configs: CollectionConfigs) -> float:
    """How often to look for expired documents: a tenth of the shortest lifetime, between a
    second and ten minutes (as tombstones are purged); never, with nothing to expire."""
    return min(
        (purge_interval(config.lifetime or 0) for config in configs.expiring()), default=math.inf
    )


async def run_expiry(remove: Callable[[float], Awaitable[int]], configs: CollectionConfigs) -> None:
    """Trio-flavoured: call `remove` (`remove_expired` of the node) now, every
    `expiry_interval`, and when the configs change, until cancelled or the node closes."""
    while True:
        try:
            removed = await remove(time.time())
        except NodeClosed:
            return
        except WriteRefused:
            pass  # shared mode with sync stopped: the node writes nothing until it starts
        except Exception as exc:  # NATS or the disk away: the next round tries again
            log.warning("removing expired documents failed, will retry: %s", exc)
        else:
            if removed:
                names = ", ".join(excerpt(config.collection) for config in configs.expiring())
                log.info("removed %d expired documents (collections: %s)", removed, names)
        with trio.move_on_after(expiry_interval(configs)):
            await configs.wait_changed()
