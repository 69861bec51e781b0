"""The replica: a sidecar's copy of the shared stream, applied in order to its local store.

Trio-flavoured, the counterpart in shared mode of the single-node producer: it is the node's
single writer to the store and feeds the change feed. It takes the stream's messages as the
ordered consumer delivers them, applies a batch of them in one SQLite transaction (never
ending a transaction inside an atomic batch, so a WriteDocuments is applied whole), hands the
events to the feed, and tells the writer which of its writes are now applied.

The store's head is the last stream sequence applied, committed with the documents: on a
restart or a reconnect the consumer resumes after it, so nothing is lost and nothing is
applied twice. When the stream no longer holds sequences the replica never saw (compacted to
the latest message per document, or purged), the feed is told, and subscribers catch up from
the store across the hole instead of jumping it silently.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from peat_sync.bridge import call_asyncio
from peat_sync.node.collection_configs import CollectionConfigs
from peat_sync.node.events import ChangeEvent
from peat_sync.node.feed import Committed
from peat_sync.node.stats import NodeStats
from peat_sync.shared.config import SharedConfig
from peat_sync.shared.jetstream import Delivered, ForeignStream, JetStreamLink, StreamIdentity
from peat_sync.shared.subjects import NotADocumentSubject, encode_token
from peat_sync.shared.writer import StreamWriter, WriteDone
from peat_sync.store import Change, Mutation, SQLiteStore
from peat_sync.store.sqlite import StoreError

log = logging.getLogger("peat_sync.shared")

# Seconds the replica waits for deliveries before it looks at the connection again.
IDLE_CHECK = 1.0
# Documents a replica applies on the trio thread rather than a worker thread.
INLINE_APPLY = 16
# Seconds the NATS connection gets to close (and flush) when the node stops.
CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: str
    endpoint: str


class Replica:
    """One sidecar's side of the stream: applies it, publishes writes to it, and announces
    the sidecar to the others."""

    def __init__(
        self,
        config: SharedConfig,
        store: SQLiteStore,
        *,
        node_id: str,
        max_batch: int,
        collection_configs: CollectionConfigs,
    ) -> None:
        self.config = config
        self._store = store
        # Told every change applied, to follow the collection configs of the stream.
        self._collection_configs = collection_configs
        self.stats = NodeStats()
        self._node_id = node_id
        self._max_batch = max_batch
        self._changed = trio.Event()  # the connection came or went
        self.link = JetStreamLink(config, node_id, self._connection_changed)
        self.writer = StreamWriter(self.link, config.write_timeout, store.head_sequence)
        self.stream_head = store.head_sequence
        self.syncing = True  # StartSync/StopSync
        self._sync_resumed = trio.Event()
        self.peers: list[Peer] = []
        self.endpoint = ""
        self._following = False  # a consumer of the stream delivers to `link.take`
        self._catch_up_target = 0  # the stream's head when the replica last followed it
        self._running = trio.CancelScope()
        # Sequences of the stream this replica never saw: superseded or purged before it read
        # them.
        self.skipped = 0

    # Writes (see StreamWriter) -----------------------------------------------------------------

    def write_nowait(self, mutations: Sequence[Mutation], done: WriteDone) -> None:
        self.writer.write_nowait(mutations, done)

    async def write(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        """Trio-flavoured: publish `mutations` atomically, and return once applied here."""
        return await call_asyncio(self.writer.write, mutations)

    def close(self) -> None:
        """Take no new writes, and stop: `run` disconnects from NATS and returns."""
        self.writer.paused = True
        self._running.cancel()

    # Sync control ------------------------------------------------------------------------------

    def stop_sync(self) -> None:
        """Pause applying the stream; writes are refused until `start_sync`."""
        if self.syncing:
            log.info("sync stopped: this sidecar no longer applies the stream (StopSync)")
        self.syncing = False
        self.writer.paused = True

    def start_sync(self) -> None:
        if not self.syncing:
            log.info("sync started: applying the stream after sequence %d", self.applied)
        self.syncing = True
        self.writer.paused = False
        self._sync_resumed.set()

    @property
    def applied(self) -> int:
        return self._store.head_sequence

    @property
    def connected(self) -> bool:
        return self.link.connected

    @property
    def sync_active(self) -> bool:
        """Whether changes of the other sidecars reach this one now."""
        return self.syncing and self.link.connected

    @property
    def catching_up(self) -> bool:
        """Whether the sidecar is still applying what the stream held when it (re)connected."""
        return self.applied < self._catch_up_target

    def _connection_changed(self) -> None:
        self._changed.set()

    # Start-up ----------------------------------------------------------------------------------

    async def join(self) -> str | None:
        """Trio-flavoured: connect and make the store a replica of the stream. Returns the
        epoch the store followed before, if the stream is not the one it followed (another
        stream, or the same name recreated): the store was emptied to follow this one.

        A store that already follows the stream does not wait for NATS: it serves reads at
        once, and `run` connects in the background. Any other waits until it can read the
        stream (NATS up, JetStream ready, the cluster with a leader).
        """
        if self._store.stream == self.config.stream:
            return None
        await call_asyncio(self.link.connect)
        for attempt in itertools.count():
            try:
                identity = await self._identity()
                break
            except StoreError:
                raise
            except Exception as exc:
                if attempt % 10 == 0:
                    log.warning(
                        "cannot read or make stream %s (%s); retrying: does the NATS server run"
                        " JetStream, and does its cluster have a leader?",
                        self.config.stream,
                        exc,
                    )
                await trio.sleep(IDLE_CHECK)
        previous = await trio.to_thread.run_sync(self._store.follow, identity.name, identity.epoch)
        self.stream_head = identity.last_sequence
        log.info(
            "the store follows stream %s (epoch %s, %d sequences to read)",
            identity.name,
            identity.epoch,
            identity.last_sequence,
        )
        return previous

    async def _identity(self) -> StreamIdentity:
        try:
            identity = await call_asyncio(self.link.stream)
        except ForeignStream as exc:
            raise StoreError(str(exc)) from None
        if identity.epoch == self._store.epoch:
            self.stream_head = max(self.stream_head, identity.last_sequence)
        return identity

    # The apply loop ----------------------------------------------------------------------------

    async def run(
        self,
        feed: trio.MemorySendChannel[Committed],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Trio-flavoured: follow the stream and apply it until cancelled."""
        task_status.started()
        try:
            with self._running:
                async with feed, trio.open_nursery() as nursery:
                    if not self.link.connected:
                        await call_asyncio(self.link.connect)
                    nursery.start_soon(self._announce)
                    await self._apply_stream(feed)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
                await call_asyncio(self.link.close)

    async def _apply_stream(self, feed: trio.MemorySendChannel[Committed]) -> None:
        carried: list[Delivered] = []  # an atomic batch's start, waiting for its end
        while True:
            if not self.syncing:
                carried = []
                if self._following:
                    await call_asyncio(self.link.unfollow)
                    self._following = False
                await self._sync_resumed.wait()
                self._sync_resumed = trio.Event()
                continue
            if not self._following or self._changed.is_set():
                # Connected anew: resume after the last sequence applied, on the stream as it
                # is now (it may have been recreated meanwhile).
                self._changed = trio.Event()
                carried = []  # delivered again by the new consumer
                if not self.link.connected:
                    await self._changed.wait()
                    continue
                if not await self._refollow(feed):
                    continue
            taken = await call_asyncio(self.link.take, self._max_batch, IDLE_CHECK)
            delivered = carried + taken
            # Never end a transaction inside an atomic batch: what follows the last batch's
            # end waits for the rest of its batch; unless nothing more came (its end may be
            # gone, superseded in the stream).
            end = _batches_end(delivered) if taken else len(delivered)
            delivered, carried = delivered[:end], delivered[end:]
            if delivered and self.syncing:  # else dropped: resumed after `applied` later
                await self._apply(delivered, feed)

    async def _refollow(self, feed: trio.MemorySendChannel[Committed]) -> bool:
        """Follow the stream after the last sequence applied, as the stream is now; False
        (after a pause) if that failed, to be tried again."""
        try:
            identity = await self._identity()
            if identity.epoch == self._store.epoch and identity.last_sequence < self.applied:
                identity = await self._renew_epoch(identity)
            if identity.epoch != self._store.epoch:
                await self._adopt(identity, feed)
            await call_asyncio(self.link.follow, self.applied)
        except Exception as exc:  # NATS went away again, or the stream has no leader yet
            log.warning(
                "cannot follow stream %s (%s); retrying in %g s",
                self.config.stream,
                exc,
                IDLE_CHECK,
            )
            await trio.sleep(IDLE_CHECK)
            self._following = False
            return False
        self._following = True
        self._catch_up_target = identity.last_sequence
        log.info(
            "following stream %s after sequence %d (its head: %d)",
            identity.name,
            self.applied,
            identity.last_sequence,
        )
        return True

    async def _renew_epoch(self, identity: StreamIdentity) -> StreamIdentity:
        """The stream ends below what this sidecar applied: NATS lost acknowledged messages
        (a server that restarted without them), and new writes would reuse their sequences
        for other changes. The stream gets a new epoch, so that every sidecar reads it anew
        and every subscriber is told."""
        log.error(
            "stream %s ends at sequence %d, below the %d this sidecar applied: NATS lost"
            " acknowledged messages. The stream gets a new epoch: every sidecar empties its"
            " store and reads the stream again, and subscribers get RESYNC (EPOCH_CHANGED)",
            identity.name,
            identity.last_sequence,
            self.applied,
        )
        return await call_asyncio(self.link.renew_epoch, identity.epoch)

    async def _adopt(
        self, identity: StreamIdentity, feed: trio.MemorySendChannel[Committed]
    ) -> None:
        """The stream was recreated (or is another one) while the sidecar ran: empty the
        store, follow the new stream, and tell every subscriber."""
        old = await trio.to_thread.run_sync(self._store.follow, identity.name, identity.epoch)
        self._collection_configs.emptied()
        self.stream_head = identity.last_sequence
        log.warning(
            "stream %s has epoch %s, not %s: it was recreated, so this sidecar's store was"
            " emptied to follow it; subscribers get RESYNC (EPOCH_CHANGED)",
            identity.name,
            identity.epoch,
            old,
        )
        await feed.send(Committed([], 0, new_epoch=True))

    async def _apply(
        self, delivered: list[Delivered], feed: trio.MemorySendChannel[Committed]
    ) -> None:
        """Apply `delivered` in one transaction, and hand the feed its events: one batch per
        run of sequences the replica saw whole. Between runs, and before the first, the
        stream may no longer hold sequences (superseded by a later change to the same
        document, or purged): those changes were never seen here, so the feed's subscribers
        catch up across them from the store."""
        head = self.applied
        fresh = [message for message in delivered if message.sequence > head]
        if not fresh:
            return
        self.stream_head = max(self.stream_head, fresh[-1].stream_head)
        changes = [self._change(message) for message in fresh]
        started = time.perf_counter()
        documents = [change for change in changes if change is not None]
        if len(documents) <= INLINE_APPLY:
            # A replica commits without an fsync: a few documents take less time than the
            # hop to a worker thread, which would add to the latency of every change.
            applied = self._store.apply(documents, fresh[-1].sequence)
        else:
            applied = await trio.to_thread.run_sync(
                self._store.apply, documents, fresh[-1].sequence
            )
        self.stats.commits.add(time.perf_counter() - started)
        self._collection_configs.committed(applied)
        outcome = iter(applied)
        runs: list[Committed] = []
        for message, change in zip(fresh, changes, strict=True):
            if message.sequence != head + 1 or not runs:
                skipped_to = message.sequence - 1 if message.sequence != head + 1 else None
                if skipped_to is not None:
                    self.skipped += skipped_to - head
                runs.append(Committed([], message.sequence, skipped_to=skipped_to))
            head = runs[-1].head = message.sequence
            result = None if change is None else next(outcome)
            if result is not None:
                runs[-1].events.append(ChangeEvent.from_change(result))
            if message.write_id is not None:
                self.writer.applied(message.write_id, message.index, result)
        self.writer.passed(head)
        for run in runs:
            await feed.send(run)

    def _change(self, message: Delivered) -> Change | None:
        """The change a delivered message makes, or None for one that is not a document's."""
        try:
            collection, doc_id = self.link.subjects.parse(message.subject)
            json_data = None if message.delete else message.payload.decode()
        except (NotADocumentSubject, UnicodeDecodeError) as exc:
            log.warning(
                "sequence %d of the stream is not a document; skipped: %s", message.sequence, exc
            )
            return None
        return Change(message.sequence, collection, doc_id, json_data)

    # Presence ----------------------------------------------------------------------------------

    async def _announce(self) -> None:
        """Every `presence_interval`: announce this sidecar, learn the others, and check that
        the stream is still the one the store follows (it may have been recreated)."""
        interval = self.config.presence_interval
        ttl = 3 * interval
        while True:
            if self.link.connected:
                try:
                    await self._presence_round(ttl)
                except Exception as exc:  # NATS went away; the next round tries again
                    log.debug("presence round failed: %s", exc)
            else:
                self.peers = []  # unknown until connected again
            await trio.sleep(interval)

    async def _presence_round(self, ttl: float) -> None:
        applied = self.applied  # before the stream is read: the stream is at least there
        identity = await self._identity()
        if identity.epoch != self._store.epoch or identity.last_sequence < applied:
            self._changed.set()  # the apply loop follows the stream anew (see `_refollow`)
        entry = {"node_id": self._node_id, "endpoint": self.endpoint, "applied": self.applied}
        await call_asyncio(self.link.announce, encode_token(self._node_id), entry, ttl)
        self.peers = [
            Peer(str(entry["node_id"]), str(entry["endpoint"]))
            for entry in await call_asyncio(self.link.peers)
            if entry.get("node_id") != self._node_id
        ]


def _batches_end(delivered: list[Delivered]) -> int:
    """How many of `delivered` end with the last message that ends an atomic batch."""
    for index in range(len(delivered) - 1, -1, -1):
        if delivered[index].ends_batch:
            return index + 1
    return 0
