"""The node: the store, the producer, the change feed, and the nursery that runs them."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from peat_sync.node.collection_configs import (
    CONFIGS_COLLECTION,
    RESERVED_PREFIX,
    CollectionConfig,
    CollectionConfigs,
    reserved,
)
from peat_sync.node.errors import (
    InvalidRequest,
    LimitExceeded,
    MustWait,
    NodeClosed,
    RequestError,
    WriteRefused,
)
from peat_sync.node.expiry import remove_expired, run_expiry
from peat_sync.node.feed import ChangeFeed, Committed
from peat_sync.node.history import History, read_store
from peat_sync.node.producer import Producer, WriteCallback
from peat_sync.node.query import Predicate
from peat_sync.node.replay_log import ReplayLog
from peat_sync.node.retention import purge_expired_tombstones, run_tombstone_retention
from peat_sync.node.soft_delete import plan_soft_deletes
from peat_sync.node.stats import NodeStats
from peat_sync.node.subscription import Subscription
from peat_sync.node.validation import check_document, check_name, excerpt
from peat_sync.shared.config import SharedConfig
from peat_sync.store import (
    Change,
    Mutation,
    PreconditionFailed,
    SQLiteStore,
    Store,
    StoreClosed,
    StoredDocument,
)
from peat_sync.store.sqlite import StoreError

if TYPE_CHECKING:
    from peat_sync.shared.replica import Replica

log = logging.getLogger("peat_sync.node")

T = TypeVar("T")

# The published-batch channel between producer and feed: a few batches in flight let the
# producer commit the next batch while the feed fans out the previous one.
PUBLISH_CAPACITY = 16
# Reads run on worker threads; bound how many so a burst of List calls cannot pile up threads.
READ_THREADS = 8
# Writes in one atomic request: bounds the transaction, and the memory of one request.
MAX_WRITES = 10_000
# Times a soft delete is tried again when the document changed between its read and its
# write, and the seconds before the first retry (doubled for each one): in shared mode this
# node may not have applied the change yet.
SOFT_DELETE_ATTEMPTS = 5
SOFT_DELETE_RETRY = 0.01


def _random_node_id() -> str:
    return f"peat-{secrets.token_hex(4)}"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    data_dir: Path = Path("peat-data")
    node_id: str = field(default_factory=_random_node_id)
    broadcast_buffer_size: int = 256
    max_subscribers: int = 10_000
    replay_log_size: int = 100_000
    replay_log_bytes: int = 64 * 1024 * 1024
    max_document_bytes: int = 1024 * 1024
    max_batch: int = 1000
    heartbeat_interval: float = 10.0  # seconds of silence before an idle stream gets one
    tombstone_retention: float = 24 * 3600.0  # seconds a delete stays available to catch-ups
    # Seconds a send on a Subscribe stream may make no progress (its client reads nothing)
    # before the server cuts the stream off; longer than `heartbeat_interval`. None: a minute,
    # or three heartbeat intervals if that is longer (see `stalled_after`).
    stalled_stream_timeout: float | None = None
    # Shared mode: the NATS JetStream stream this node shares with other sidecars. None: a
    # single node, its SQLite store the only copy of its documents.
    shared: SharedConfig | None = None

    @property
    def stalled_after(self) -> float:
        """The stalled-stream timeout in effect."""
        if self.stalled_stream_timeout is not None:
            return self.stalled_stream_timeout
        return max(60.0, 3 * self.heartbeat_interval)


class Writer(Protocol):
    """The node's single writer to its store, which feeds the change feed: the producer of a
    single node, or in shared mode the replica of the stream."""

    async def write(self, mutations: Sequence[Mutation]) -> list[Change | None]: ...

    def write_nowait(
        self,
        mutations: Sequence[Mutation],
        done: Callable[[list[Change | None] | BaseException], None],
    ) -> None: ...

    async def run(
        self,
        publish: trio.MemorySendChannel[Committed],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> None: ...

    def close(self) -> None: ...


class Node:
    """A running node. Open it with `open_node`; every async method is trio-flavoured."""

    def __init__(
        self,
        config: NodeConfig,
        store: Store,
        replica: Replica | None = None,
        collection_configs: CollectionConfigs | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self.stats = NodeStats() if replica is None else replica.stats
        self.replica = replica  # shared mode's link to the stream; None for a single node
        # Kept current by the writer, which is given this same object (by `_join`, for the
        # replica).
        self.collection_configs = collection_configs or CollectionConfigs()
        self._producer: Writer = (
            replica
            if replica is not None
            else Producer(store, config.max_batch, self.stats, configs=self.collection_configs)
        )
        self._read_limiter = trio.CapacityLimiter(READ_THREADS)
        self._retention_scope = trio.CancelScope()
        self._expiry_scope = trio.CancelScope()
        self._feed = ChangeFeed(
            ReplayLog(
                max_entries=config.replay_log_size,
                max_bytes=config.replay_log_bytes,
                head=store.head_sequence,
            ),
            History(
                store,
                self._read_limiter,
                None if replica is None else lambda: replica.stream_head,
            ),
            buffer_size=config.broadcast_buffer_size,
            max_subscribers=config.max_subscribers,
            stats=self.stats,
            heartbeat_interval=config.heartbeat_interval,
        )

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def epoch(self) -> str:
        return self._store.epoch

    @property
    def head_sequence(self) -> int:
        """The newest committed sequence."""
        return self._store.head_sequence

    @property
    def replay_floor(self) -> int:
        """The oldest since_sequence the replay log resumes exactly."""
        return self._feed.replay_log.floor

    @property
    def catch_up_floor(self) -> int:
        """The oldest since_sequence a catch-up from the store can serve."""
        return self._store.catch_up_floor

    @property
    def feed(self) -> ChangeFeed:
        return self._feed

    async def put(
        self, collection: str, doc_id: str, json_data: str, *, expected_sequence: int | None = None
    ) -> int:
        """Store a JSON object; returns the sequence it was committed at. With
        `expected_sequence`, only if the document is still at it (see `Mutation`), else
        `PreconditionFailed`."""
        mutation = self._checked(collection, doc_id, json_data, expected_sequence)
        return _only_sequence(await self._producer.write([mutation]))

    async def delete(
        self, collection: str, doc_id: str, *, expected_sequence: int | None = None
    ) -> int:
        """Delete a document; returns the sequence of the delete, or 0 if it did not exist.
        With `expected_sequence`, only if the document is still at it (see `Mutation`), else
        `PreconditionFailed`. The collection's config may make the delete a put that marks
        the document (SOFT_DELETE), or refuse it (IMMUTABLE: `WriteRefused`)."""
        mutation = self._checked(collection, doc_id, None, expected_sequence)
        if self._soft_deletes([mutation]):
            (sequence,) = await self._write_soft([mutation])
            return sequence
        return _only_sequence(await self._producer.write([mutation]))

    async def write(self, mutations: Sequence[Mutation]) -> list[int]:
        """Commit puts and deletes atomically, in order: all of them or none. Returns the
        sequence of each, 0 for the delete of a document that did not exist. Deletes follow
        their collection's config, as in `delete`."""
        self._check_writes(mutations)
        if not mutations:
            return []
        if self._soft_deletes(mutations):
            return await self._write_soft(mutations)
        return _sequences(await self._producer.write(mutations))

    # The same writes without waiting, for callers outside trio: the asyncio gRPC handlers,
    # which would otherwise start a trio task per call. Each checks its request (raising
    # `RequestError`) and queues it; `done` gets what the waiting twin returns or raises,
    # once committed. They raise `QueueFull` when the queue is full, or `MustWait` when the
    # write must read first (a soft delete): then wait, with the twin.

    def put_nowait(
        self,
        collection: str,
        doc_id: str,
        json_data: str,
        done: Callable[[int | BaseException], None],
        *,
        expected_sequence: int | None = None,
    ) -> None:
        mutation = self._checked(collection, doc_id, json_data, expected_sequence)
        self._producer.write_nowait([mutation], _then(done, _only_sequence))

    def delete_nowait(
        self,
        collection: str,
        doc_id: str,
        done: Callable[[int | BaseException], None],
        *,
        expected_sequence: int | None = None,
    ) -> None:
        mutation = self._checked(collection, doc_id, None, expected_sequence)
        if self._soft_deletes([mutation]):
            raise MustWait
        self._producer.write_nowait([mutation], _then(done, _only_sequence))

    def write_nowait(
        self, mutations: Sequence[Mutation], done: Callable[[list[int] | BaseException], None]
    ) -> None:
        self._check_writes(mutations)
        if not mutations:
            done([])
            return
        if self._soft_deletes(mutations):
            raise MustWait
        self._producer.write_nowait(mutations, _then(done, _sequences))

    def _checked(
        self, collection: str, doc_id: str, json_data: str | None, expected_sequence: int | None
    ) -> Mutation:
        """The write, once it passed the checks; a delete when `json_data` is None."""
        mutation = Mutation(collection, doc_id, json_data, expected_sequence)
        self._check(mutation)
        return mutation

    def _check(self, mutation: Mutation) -> None:
        check_name("collection", mutation.collection)
        check_name("doc_id", mutation.doc_id)
        if mutation.collection.startswith(RESERVED_PREFIX):
            raise reserved(mutation.collection)
        if mutation.expected_sequence is not None and mutation.expected_sequence < 0:
            raise InvalidRequest(
                f"expected_sequence is {mutation.expected_sequence}: a sequence is 0 or more"
            )
        if mutation.json_data is not None:
            check_document(mutation.json_data, self.config.max_document_bytes)
        elif mutation.collection in self.collection_configs.immutable:
            raise WriteRefused(
                f"collection {excerpt(mutation.collection)} is IMMUTABLE (its collection"
                " config): its documents cannot be deleted. Nothing was written; to delete,"
                " first set another deletion_policy with SetCollectionConfig"
            )

    def _check_writes(self, mutations: Sequence[Mutation]) -> None:
        if len(mutations) > MAX_WRITES:
            raise LimitExceeded(
                f"{len(mutations)} writes in one request; the limit is {MAX_WRITES}:"
                " split them into several requests"
            )
        for index, mutation in enumerate(mutations):
            try:
                self._check(mutation)
            except RequestError as exc:  # name the write at fault; nothing is committed
                raise type(exc)(f"writes[{index}]: {exc}") from None

    def _soft_deletes(self, mutations: Sequence[Mutation]) -> bool:
        """Whether a delete of `mutations` is in a SOFT_DELETE collection."""
        soft = self.collection_configs.soft_deleting
        return bool(soft) and any(
            mutation.json_data is None and mutation.collection in soft for mutation in mutations
        )

    async def _write_soft(self, mutations: Sequence[Mutation]) -> list[int]:
        """`write`, with each delete in a SOFT_DELETE collection made a put (see
        `soft_delete`); planned anew if a document changed between its read and the write,
        unless the caller's own condition failed."""
        attempt = 1
        while True:
            plan = plan_soft_deletes(mutations, self.collection_configs.soft_deleting, self.get)
            writes = [write for write in plan.writes if write is not None]
            try:
                changes = await self._producer.write(writes) if writes else []
            except PreconditionFailed as exc:
                if (exc.collection, exc.doc_id) not in plan.conditioned:
                    raise
                if attempt == SOFT_DELETE_ATTEMPTS:
                    raise
                await trio.sleep(SOFT_DELETE_RETRY * 2 ** (attempt - 1))
                attempt += 1
                continue
            return plan.sequences(_sequences(changes))

    def get(self, collection: str, doc_id: str) -> StoredDocument | None:
        """The document, read on the caller's thread, from either side of the bridge: a
        lookup by primary key takes microseconds (WAL readers never wait for the writer),
        less than the hops to a trio task and a worker thread, which were most of a point
        read's latency."""
        check_name("collection", collection)
        check_name("doc_id", doc_id)
        try:
            return self._store.get(collection, doc_id)
        except StoreClosed:
            raise NodeClosed("the node is shutting down; retry against a running node") from None

    async def list_ids(self, collection: str) -> list[str]:
        check_name("collection", collection)
        return await read_store(self._store.list_ids, collection, limiter=self._read_limiter)

    async def list_documents(self, collection: str) -> list[StoredDocument]:
        check_name("collection", collection)
        return await read_store(self._store.list_documents, collection, limiter=self._read_limiter)

    def subscribe(
        self,
        collections: Iterable[str] = (),
        since: int | None = None,
        *,
        epoch: str | None = None,
        snapshot: bool = False,
        peer: str = "local",
        query: Predicate | None = None,
        legacy: bool = False,
    ) -> Subscription:
        """Follow the changes to `collections` (empty: all) after `since` (None: from now).

        `epoch` is the store epoch `since` belongs to, if the caller knows it. With
        `snapshot`, the current documents come first, and again after any RESYNC. `query`
        (see `peat_sync.node.query`) keeps the documents it matches. A `legacy` subscription
        is for a client that knows none of peat-sync's additions (see `Subscription`). Use the
        result as a context manager, and call its `next_batch` to receive events.
        """
        wanted = frozenset(collections)
        for collection in wanted:
            check_name("collection", collection)
        return self._feed.subscribe(
            wanted or None,
            since=since,
            epoch=epoch,
            snapshot=snapshot,
            peer=peer,
            query=query,
            legacy=legacy,
        )

    # Collection configs ----------------------------------------------------------------

    async def set_collection_config(self, config: CollectionConfig) -> int:
        """Set the config of a collection (see `CollectionConfig`), as a document of the
        reserved collection; returns its sequence, or 0 when the collection had this config
        already. Raises `InvalidRequest` for a config that cannot be set."""
        config.check()
        if self.collection_configs.get(config.collection) == config:
            return 0
        mutation = Mutation(CONFIGS_COLLECTION, config.collection, config.to_json())
        return _only_sequence(await self._producer.write([mutation]))

    async def remove_expired(self, now: float | None = None) -> int:
        """Remove the documents expired under their collection's config at the unix time
        `now` (default: now), as the node does on its own; returns how many."""
        return await remove_expired(
            self._store,
            self.collection_configs,
            self._producer.write,
            self._read_limiter,
            time.time() if now is None else now,
        )

    async def _run(self, nursery: trio.Nursery) -> None:
        publish_send, publish_receive = trio.open_memory_channel[Committed](PUBLISH_CAPACITY)
        await nursery.start(self._feed.run, publish_receive)
        await nursery.start(self._producer.run, publish_send)
        nursery.start_soon(self._run_tombstone_retention)
        nursery.start_soon(self._run_expiry)

    async def purge_expired_tombstones(self) -> int:
        """Purge the tombstones older than their retention now; returns how many."""
        return await purge_expired_tombstones(
            self._store,
            self.config.tombstone_retention,
            self.collection_configs.tombstone_retentions(),
        )

    async def _run_tombstone_retention(self) -> None:
        with self._retention_scope:
            await run_tombstone_retention(
                self._store, self.config.tombstone_retention, self.collection_configs
            )

    async def _run_expiry(self) -> None:
        with self._expiry_scope:
            await run_expiry(self._remove_expired_now, self.collection_configs)

    async def _remove_expired_now(self, now: float) -> int:
        replica = self.replica
        if replica is not None and (not replica.sync_active or replica.catching_up):
            # Shared mode away from NATS, with sync stopped, or behind the stream: removals
            # would fail or go stale; a later round makes them.
            return 0
        return await self.remove_expired(now)

    def _stop(self) -> None:
        self._producer.close()
        self._retention_scope.cancel()
        self._expiry_scope.cancel()


def _sequences(changes: Sequence[Change | None]) -> list[int]:
    """The sequence of each change, 0 for a write that changed nothing."""
    return [0 if change is None else change.sequence for change in changes]


def _only_sequence(changes: Sequence[Change | None]) -> int:
    """The sequence of a one-write request's change, 0 if it changed nothing."""
    (sequence,) = _sequences(changes)
    return sequence


def _then(
    done: Callable[[T | BaseException], None], convert: Callable[[list[Change | None]], T]
) -> WriteCallback:
    """A producer callback that hands `done` the converted changes, or the error."""

    def converted(outcome: list[Change | None] | BaseException) -> None:
        done(outcome if isinstance(outcome, BaseException) else convert(outcome))

    return converted


@asynccontextmanager
async def open_node(config: NodeConfig) -> AsyncIterator[Node]:
    """Trio-flavoured: open the store in `config.data_dir` and run the node until the block
    ends.

    On a normal exit the node commits every queued write before closing. When the caller's
    scope is cancelled, every task stops; a commit already under way still completes.
    """
    store = await trio.to_thread.run_sync(SQLiteStore.open, config.data_dir)
    try:
        log.info(
            "store %s opened: epoch %s, head sequence %d",
            store.path.resolve(),
            store.epoch,
            store.head_sequence,
        )
        collection_configs = CollectionConfigs()
        replica = (
            None
            if config.shared is None
            else await _join(config, config.shared, store, collection_configs)
        )
        if replica is None and store.stream is not None:
            raise StoreError(
                f"the store in {config.data_dir} is a replica of the NATS stream"
                f" {store.stream}: serve it with --nats, or give this server another"
                " --data-dir to start a single-node store"
            )
        collection_configs.load(
            await trio.to_thread.run_sync(store.list_documents, CONFIGS_COLLECTION)
        )
        node = Node(config, store, replica, collection_configs)
        async with trio.open_nursery() as nursery:
            await node._run(nursery)
            try:
                yield node
            finally:
                node._stop()
    finally:
        # Reads that other tasks started (a subscription's catch-up, say) may still run on
        # worker threads: the store waits for them before it closes.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)


async def _join(
    config: NodeConfig,
    shared: SharedConfig,
    store: SQLiteStore,
    collection_configs: CollectionConfigs,
) -> Replica:
    """Shared mode: the replica that makes the store follow the stream. Call it inside the
    asyncio loop of `peat_sync.bridge.open_asyncio_loop`, which nats-py runs on."""
    from peat_sync.shared.replica import Replica  # only shared mode loads nats-py

    replica = Replica(
        shared,
        store,
        node_id=config.node_id,
        max_batch=config.max_batch,
        collection_configs=collection_configs,
    )
    previous_epoch = await replica.join()
    if previous_epoch is not None:
        log.warning(
            "the store followed another stream (epoch %s); it was emptied to follow stream %s"
            " (epoch %s)",
            previous_epoch,
            shared.stream,
            store.epoch,
        )
    return replica
