"""Writes in shared mode: published to the stream, acknowledged once applied here.

Asyncio-flavoured, like nats-py. A write is published first: a put or delete as one message,
a WriteDocuments as one JetStream atomic batch. Its id makes a retry after a lost
acknowledgement safe (NATS deduplicates by it), so the writer retries through a leader
election or a reconnect until `write_timeout`. The write is acknowledged to the client only
once this sidecar has applied it (the replica calls `applied`), so a client reads its own
writes on the sidecar it wrote to.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Sequence

from peat_sync.node.errors import LimitExceeded, QueueFull, StoreUnavailable, WriteRefused
from peat_sync.shared.jetstream import (
    MAX_BATCH_MESSAGES,
    MESSAGE_OVERHEAD_BYTES,
    JetStreamLink,
    Outgoing,
    Unavailable,
    WrongLastSequence,
)
from peat_sync.store import Change, Mutation, PreconditionFailed

log = logging.getLogger("peat_sync.shared")

# Writes published and not yet applied here, at most: beyond, writers wait (or the server
# falls back to the waiting path). A bound on memory, and backpressure on clients.
MAX_IN_FLIGHT = 4096
# A retry waits this long after NATS failed to answer, so an outage is not hammered.
RETRY_PAUSE = 0.25
# Seconds one publish waits for its acknowledgement before it is retried.
ACK_WAIT = 2.0

WriteDone = Callable[["list[Change | None] | BaseException"], None]


class _PendingWrite:
    """A write published, waiting for the replica to apply each of its messages, or to pass
    the sequence NATS stored it at: another write to the same document can supersede it in
    the stream (which keeps the latest message per document) before this sidecar reads it."""

    def __init__(self, mutations: Sequence[Mutation]) -> None:
        self.mutations = mutations
        self.changes: list[Change | None] = [None] * len(mutations)
        self.seen = [False] * len(mutations)
        self.remaining = len(mutations)
        self.sequence = 0  # of its last message, once NATS acknowledged it
        self.done: asyncio.Future[list[Change | None]] = asyncio.get_running_loop().create_future()

    def applied(self, index: int, change: Change | None) -> None:
        if self.done.done() or not 0 <= index < len(self.seen) or self.seen[index]:
            return
        self.changes[index] = change
        self.seen[index] = True
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set_result(self.changes)

    def passed(self) -> None:
        """The replica is past `sequence`: the messages it never saw were superseded."""
        if self.done.done():
            return
        first = self.sequence - len(self.mutations) + 1  # a batch's sequences are consecutive
        for index, mutation in enumerate(self.mutations):
            if not self.seen[index]:
                self.changes[index] = Change(
                    first + index, mutation.collection, mutation.doc_id, mutation.json_data
                )
        self.done.set_result(self.changes)


class StreamWriter:
    def __init__(self, link: JetStreamLink, write_timeout: float, applied: int) -> None:
        self._link = link
        self._timeout = write_timeout
        # The last stream sequence the replica has applied and told this writer about (the
        # store's head moves a moment before, while the writes are not yet told).
        self._applied = applied
        self._pending: dict[str, _PendingWrite] = {}
        # Acknowledged writes the replica has not passed yet, by sequence.
        self._acknowledged: list[tuple[int, str]] = []
        self._room = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.paused = False  # sync stopped: this sidecar applies nothing, so writes wait forever
        self.failures = 0  # writes that failed for want of NATS or of applying them in time

    def applied(self, write_id: str, index: int, change: Change | None) -> None:
        """Called by the replica for each message of a write it applied."""
        pending = self._pending.get(write_id)
        if pending is not None:
            pending.applied(index, change)

    def passed(self, head: int) -> None:
        """Called by the replica once it applied the stream up to `head`, and told `applied`
        of every message of this writer's up to it."""
        self._applied = head
        acknowledged = self._acknowledged
        while acknowledged and acknowledged[0][0] <= head:
            _, write_id = heapq.heappop(acknowledged)
            pending = self._pending.get(write_id)
            if pending is not None:
                pending.passed()

    def restart(self) -> None:
        """The store now follows a new stream: writes under way belong to the old one."""
        self._applied = 0
        self._acknowledged.clear()
        for pending in self._pending.values():
            if not pending.done.done():
                pending.done.set_exception(
                    StoreUnavailable(
                        "the stream was recreated (a new epoch) while the write was under way:"
                        " read the document back before retrying"
                    )
                )

    def write_nowait(self, mutations: Sequence[Mutation], done: WriteDone) -> None:
        """Start `write` without waiting, from asyncio; `done` gets its outcome. Raises
        `QueueFull` when `MAX_IN_FLIGHT` writes are under way."""
        if self._room.locked():
            raise QueueFull
        task = asyncio.ensure_future(self.write(mutations))
        task.add_done_callback(lambda task: done(task.exception() or task.result()))

    async def write(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        """Publish `mutations` atomically and wait until this sidecar applied them. Returns
        one entry per mutation: its change, or None when it changed nothing (the delete of
        an absent document)."""
        self._check(mutations)
        async with self._room:
            write_id = self._link.new_write_id()
            pending = _PendingWrite(mutations)
            self._pending[write_id] = pending
            try:
                return await self._publish_and_apply(write_id, pending, mutations)
            finally:
                del self._pending[write_id]

    def _check(self, mutations: Sequence[Mutation]) -> None:
        if self.paused:
            raise WriteRefused(
                "sync is stopped on this sidecar (StopSync), so it would not apply the write:"
                " call StartSync, or write through another sidecar"
            )
        if len(mutations) > MAX_BATCH_MESSAGES:
            raise LimitExceeded(
                f"{len(mutations)} writes in one request; in shared mode the limit is"
                f" {MAX_BATCH_MESSAGES} (one JetStream atomic batch): split them into several"
                " requests"
            )
        limit = self._link.max_payload - MESSAGE_OVERHEAD_BYTES
        for index, mutation in enumerate(mutations):
            size = len(mutation.json_data or "")
            if size > limit:
                where = f"writes[{index}]: " if len(mutations) > 1 else ""
                raise LimitExceeded(
                    f"{where}the document is {size:,} bytes; NATS takes messages of"
                    f" {self._link.max_payload:,} bytes (max_payload), so documents of at most"
                    f" {limit:,}: make it smaller, or raise max_payload in the NATS servers'"
                    " configuration"
                )

    async def _publish_and_apply(
        self, write_id: str, pending: _PendingWrite, mutations: Sequence[Mutation]
    ) -> list[Change | None]:
        link = self._link
        messages = [self._outgoing(mutation) for mutation in mutations]
        deadline = time.monotonic() + self._timeout
        attempt = 0
        maybe_stored = False  # an attempt was sent and its answer lost
        while True:
            remaining = deadline - time.monotonic()
            try:
                sequence = await link.publish(
                    write_id, messages, attempt, ack_wait=max(0.01, min(ACK_WAIT, remaining))
                )
                break
            except WrongLastSequence as exc:
                await self._precondition_failed(mutations, messages, exc)
                if remaining <= 0:
                    raise StoreUnavailable(
                        "the write was not stored: its precondition kept failing and then"
                        " holding, as other writers changed the document; retry it"
                    ) from None
            except Unavailable as exc:
                maybe_stored = maybe_stored or exc.maybe_stored
                outage = link.disconnected_since
                if remaining <= RETRY_PAUSE or (
                    outage is not None and time.monotonic() - outage > self._timeout
                ):
                    self.failures += 1
                    if maybe_stored:
                        raise StoreUnavailable(
                            f"the write may or may not be stored: {exc}. Read the document"
                            " back before you retry; reads and subscriptions go on from this"
                            " sidecar's store"
                        ) from None
                    raise StoreUnavailable(
                        f"the write was not stored: {exc}. Reads and subscriptions go on from"
                        " this sidecar's store; retry the write later"
                    ) from None
                await asyncio.sleep(RETRY_PAUSE)
            attempt += 1
        if sequence:
            pending.sequence = sequence
            if self._applied >= sequence:
                pending.passed()
            else:
                heapq.heappush(self._acknowledged, (sequence, write_id))
        try:
            return await asyncio.wait_for(
                asyncio.shield(pending.done), max(0.0, deadline - time.monotonic())
            )
        except TimeoutError:
            where = f" at sequence {sequence}" if sequence else ""
            raise StoreUnavailable(
                f"NATS stored the write{where}, but this sidecar has not applied it within"
                f" {self._timeout:g} s (it is behind the stream, or lost its connection):"
                " it will appear once applied; read it back before retrying"
            ) from None

    def _outgoing(self, mutation: Mutation) -> Outgoing:
        subject = self._link.subjects.document(mutation.collection, mutation.doc_id)
        if mutation.json_data is None:
            return Outgoing(subject, b"", True, mutation.expected_sequence)
        return Outgoing(subject, mutation.json_data.encode(), False, mutation.expected_sequence)

    async def _precondition_failed(
        self, mutations: Sequence[Mutation], messages: list[Outgoing], exc: WrongLastSequence
    ) -> None:
        """Raise `PreconditionFailed` for the write whose condition failed, or return, having
        adjusted the condition, when the document only has a tombstone: "0, must not exist"
        holds for a deleted document, whose subject's last message is its delete."""
        for mutation, message in zip(mutations, messages, strict=True):
            if message.expected_sequence is None:
                continue
            last = await self._link.last_change(message.subject)
            current, deleted = (0, False) if last is None else last
            if current == message.expected_sequence:
                continue  # this one holds; another write of the batch failed
            if deleted and message.expected_sequence == 0:
                message.expected_sequence = current
                return
            raise PreconditionFailed(
                mutation.collection,
                mutation.doc_id,
                mutation.expected_sequence or 0,
                0 if deleted else current,
            )
        # Each condition holds now: the document changed between the attempt and this check.
        log.debug("a write's precondition failed and then held: retrying it (%s)", exc)
