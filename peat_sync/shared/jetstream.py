"""The NATS connection and the JetStream stream, as the replica uses them. Asyncio-flavoured,
like nats-py: every async method here runs on the asyncio loop.

The stream is the one source of order: its sequence is the peat-sync sequence and its epoch,
a random id kept in the stream's metadata when the stream is made, is the epoch. It keeps
the latest message per subject (one subject per document, see `subjects`), so a sidecar that
joins reads each document's latest state, and a delete stays as a tombstone message.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from peat_sync.shared.config import SharedConfig
from peat_sync.shared.subjects import Subjects

log = logging.getLogger("peat_sync.shared")

EPOCH_KEY = "peat_epoch"
# A delete is a message with this header and no payload: the document's tombstone.
DELETE_HEADER = "Peat-Delete"
# Messages of one JetStream atomic batch at most (the server's limit).
MAX_BATCH_MESSAGES = 1000
# Room for the subject and headers next to a document within the server's max_payload.
MESSAGE_OVERHEAD_BYTES = 8 * 1024
# Delivered messages waiting for the replica: a bound on memory, and backpressure on NATS.
DELIVERY_QUEUE = 8192
# Beyond this, nats-py drops deliveries, and the ordered consumer restarts after the last
# message the replica took: memory stays bounded even if the replica stalls.
PENDING_BYTES_LIMIT = 64 * 1024 * 1024

# Seconds between the heartbeats of an idle consumer.
CONSUMER_HEARTBEAT = 1.0

# JetStream's error codes that the replica tells apart.
_STREAM_EXISTS_DIFFERENTLY = 10058
_WRONG_LAST_SEQUENCE = 10071
_BATCH_DUPLICATE_ID = 10201


class Unavailable(Exception):
    """NATS did not take a write; the message says why. `maybe_stored`: the write was sent
    and its answer lost, so NATS may have stored it."""

    def __init__(self, message: str, *, maybe_stored: bool) -> None:
        super().__init__(message)
        self.maybe_stored = maybe_stored


class WrongLastSequence(Exception):
    """A write's precondition failed: the document's subject is at `current`."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the document's last message is at sequence {current}")
        self.current = current


class ForeignStream(Exception):
    """The stream exists, but peat-sync did not make it."""


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    name: str
    epoch: str
    last_sequence: int


@dataclass(slots=True)
class Outgoing:
    """One message of a write: a document's new state, or its tombstone."""

    subject: str
    payload: bytes
    delete: bool
    expected_sequence: int | None  # of the document's subject, when the write has a condition


@dataclass(slots=True)
class Delivered:
    """A message of the stream, as the replica applies it."""

    sequence: int
    subject: str
    payload: bytes
    delete: bool
    write_id: str | None  # the write it belongs to, if a peat-sync sidecar published it
    index: int  # its place in that write
    ends_batch: bool  # no more messages of its atomic batch follow
    stream_head: int  # the stream's last sequence when it was delivered


def _write_id(headers: dict[str, str]) -> tuple[str | None, int, bool]:
    """The write a delivered message belongs to, its index in it, and whether it ends its
    batch: from Nats-Msg-Id for a single message, from the batch headers otherwise."""
    batch = headers.get("Nats-Batch-Id")
    if batch is None:
        return headers.get("Nats-Msg-Id"), 0, True
    write_id = batch.rpartition("-")[0] or None
    return write_id, int(headers["Nats-Batch-Sequence"]) - 1, "Nats-Batch-Commit" in headers


def _position(reply: str) -> tuple[int, int]:
    """The stream sequence of a delivered message, and how many follow it, from its reply
    subject: what nats-py's `Msg.metadata` parses, without the objects it builds."""
    tokens = reply.split(".")
    if len(tokens) == 9:  # $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        return int(tokens[5]), int(tokens[8])
    return int(tokens[Msg.Ack.StreamSeq]), int(tokens[Msg.Ack.NumPending])


class JetStreamLink:
    """One sidecar's NATS connection, reconnecting for as long as the sidecar runs."""

    def __init__(self, config: SharedConfig, name: str, on_change: Callable[[], None]) -> None:
        self.config = config
        self.subjects = Subjects(config.stream)
        self._name = name
        self._on_change = on_change  # told when the connection comes or goes
        self._client: Client | None = None
        self.disconnected_since: float | None = time.monotonic()
        self.last_error = "not connected yet"
        self.bytes_sent = 0
        self.bytes_received = 0
        # A process-wide prefix of write ids: NATS deduplicates by them for two minutes, so
        # they must not repeat across restarts.
        self._write_prefix = secrets.token_hex(6)
        self._writes = 0
        self._following: Subscription | None = None
        self._closing = False
        # Delivered messages of the current consumer, until `take` takes them.
        self._deliveries: collections.deque[Delivered] = collections.deque()
        self._delivered = asyncio.Event()  # set when a message is added to `_deliveries`
        self._taken = asyncio.Event()  # set when `take` took messages

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    @property
    def max_payload(self) -> int:
        return self._client.max_payload if self._client is not None else 1024 * 1024

    def new_write_id(self) -> str:
        self._writes += 1
        return f"{self._write_prefix}{self._writes:x}"

    def describe_outage(self) -> str:
        """Why writes fail now, for their error messages."""
        since = self.disconnected_since
        for_how_long = "" if since is None else f" for {time.monotonic() - since:.0f} s"
        return (
            f"this sidecar has not been connected to NATS ({','.join(self.config.servers)})"
            f"{for_how_long}: {self.last_error}"
        )

    # Connection ----------------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect, retrying until it succeeds; then nats-py reconnects by itself."""
        attempt = 0
        while True:
            try:
                self._client = await nats.connect(
                    servers=list(self.config.servers),
                    name=self._name,
                    user_credentials=str(self.config.creds) if self.config.creds else None,
                    tls=self._tls(),
                    connect_timeout=2,
                    reconnect_time_wait=0.5,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                )
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                self.last_error = str(exc) or type(exc).__name__
                if attempt % 10 == 0:
                    log.warning(
                        "cannot connect to NATS at %s (%s); retrying",
                        ",".join(self.config.servers),
                        self.last_error,
                    )
                attempt += 1
                await asyncio.sleep(min(0.2 * attempt, 2.0))
                continue
            self.disconnected_since = None
            log.info("connected to NATS at %s", self._server())
            self._on_change()
            return

    def _tls(self) -> ssl.SSLContext | None:
        config = self.config
        if config.tls_ca is None and config.tls_cert is None:
            return None
        context = ssl.create_default_context(cafile=str(config.tls_ca) if config.tls_ca else None)
        if config.tls_cert is not None:
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key or config.tls_cert))
        return context

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = str(exc) or type(exc).__name__

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        if self.disconnected_since is None:
            self.disconnected_since = time.monotonic()
            log.warning("disconnected from NATS; reconnecting (writes wait or fail meanwhile)")
            self._on_change()

    async def _on_reconnected(self) -> None:
        self.disconnected_since = None
        assert self._client is not None
        log.info("reconnected to NATS at %s", self._server())
        self._on_change()

    def _server(self) -> str:
        url = None if self._client is None else self._client.connected_url
        return "?" if url is None else str(url.netloc)

    async def close(self) -> None:
        self._closing = True
        if self._client is not None:
            await self._client.close()

    @property
    def _js(self) -> nats.js.JetStreamContext:
        assert self._client is not None
        return self._client.jetstream(timeout=5)

    # The stream ------------------------------------------------------------------------------

    async def stream(self) -> StreamIdentity:
        """The stream's identity, making the stream (and its epoch) if there is none yet."""
        config = StreamConfig(
            name=self.config.stream,
            subjects=[self.subjects.all],
            max_msgs_per_subject=1,  # the latest message of each document
            allow_atomic=True,  # WriteDocuments is one atomic batch
            allow_direct=True,
            storage=StorageType.FILE,
            num_replicas=self.config.replicas,
            metadata={EPOCH_KEY: secrets.token_hex(8)},
        )
        try:
            info = await self._js.add_stream(config)
            log.info("made stream %s", config.name)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_EXISTS_DIFFERENTLY:
                raise
            info = await self._js.stream_info(self.config.stream)
        epoch = (info.config.metadata or {}).get(EPOCH_KEY)
        if epoch is None:
            raise ForeignStream(
                f"the NATS stream {self.config.stream} was not made by peat-sync (it has no"
                f" {EPOCH_KEY} in its metadata): name another stream with --nats-stream"
            )
        return StreamIdentity(self.config.stream, epoch, info.state.last_seq)

    async def renew_epoch(self, old: str) -> StreamIdentity:
        """Give the stream a new epoch, unless another sidecar already replaced `old`."""
        info = await self._js.stream_info(self.config.stream)
        metadata = dict(info.config.metadata or {})
        if metadata.get(EPOCH_KEY) == old:
            metadata[EPOCH_KEY] = secrets.token_hex(8)
            info.config.metadata = metadata
            info = await self._js.update_stream(info.config)
        return StreamIdentity(self.config.stream, metadata[EPOCH_KEY], info.state.last_seq)

    async def last_sequence(self) -> int:
        return (await self._js.stream_info(self.config.stream)).state.last_seq

    async def last_change(self, subject: str) -> tuple[int, bool] | None:
        """The sequence of the last message of `subject`, and whether it is a tombstone."""
        try:
            message = await self._js.get_last_msg(self.config.stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        assert message.seq is not None
        return message.seq, bool(message.headers and DELETE_HEADER in message.headers)

    # Writes ----------------------------------------------------------------------------------

    async def publish(
        self, write_id: str, messages: list[Outgoing], attempt: int, ack_wait: float
    ) -> int:
        """Publish one write, atomically; returns the stream sequence of its last message.

        Raises `WrongLastSequence` when a precondition failed, `Unavailable` when NATS did not
        answer in time. A retry with the same `write_id` after a lost answer does not store
        the write twice: NATS deduplicates it, and answers with the first sequence.
        """
        client = self._client
        if client is None or not client.is_connected:
            raise Unavailable(self.describe_outage(), maybe_stored=False)
        last = len(messages) - 1
        try:
            if last == 0:
                headers = self._headers(messages[0])
                headers["Nats-Msg-Id"] = write_id
                reply = await self._request(client, messages[0], headers, ack_wait)
            else:
                batch_id = f"{write_id}-{attempt}"
                for index, message in enumerate(messages):
                    headers = self._headers(message)
                    headers["Nats-Batch-Id"] = batch_id
                    headers["Nats-Batch-Sequence"] = str(index + 1)
                    if index < last:
                        await client.publish(message.subject, message.payload, headers=headers)
                        self.bytes_sent += len(message.payload)
                    else:
                        headers["Nats-Batch-Commit"] = "1"
                        headers["Nats-Msg-Id"] = write_id
                        reply = await self._request(client, message, headers, ack_wait)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise Unavailable(
                f"NATS did not acknowledge the write ({type(exc).__name__}): the stream has"
                " no leader now, or no server of it is reachable",
                maybe_stored=True,
            ) from None
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
            raise Unavailable(self.describe_outage(), maybe_stored=True) from None
        answer = json.loads(reply.data)
        error = answer.get("error")
        if error is None:
            return int(answer["seq"])
        code = error.get("err_code")
        if code == _WRONG_LAST_SEQUENCE:
            raise WrongLastSequence(int(error["description"].rpartition(" ")[2]))
        if code == _BATCH_DUPLICATE_ID:
            # An earlier attempt of this batch was stored: its sequence is unknown here, but
            # the replica finds its messages by the write id.
            return 0
        raise Unavailable(
            f"NATS refused the write: {error.get('description', error)}", maybe_stored=False
        )

    def _headers(self, message: Outgoing) -> dict[str, str]:
        headers: dict[str, str] = {}
        if message.delete:
            headers[DELETE_HEADER] = "1"
        if message.expected_sequence is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(message.expected_sequence)
        return headers

    async def _request(
        self, client: Client, message: Outgoing, headers: dict[str, str], ack_wait: float
    ) -> Msg:
        self.bytes_sent += len(message.payload)
        return await client.request(
            message.subject, message.payload, timeout=ack_wait, headers=headers
        )

    # Reading the stream ----------------------------------------------------------------------

    async def follow(self, after: int) -> None:
        """Deliver the stream's messages after sequence `after` to `take`, in order, with an
        ordered consumer: nats-py recreates it after the last message delivered whenever it
        misses one. Replaces the consumer of an earlier call, whose deliveries are dropped
        (each consumer has a queue of its own, so none of them can come late)."""
        await self.unfollow()
        if after == 0:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        else:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
            )
        deliveries: collections.deque[Delivered] = collections.deque()
        self._deliveries = deliveries

        async def deliver(message: Msg) -> None:
            headers = message.headers or {}
            sequence, pending = _position(message.reply)
            write_id, index, ends_batch = _write_id(headers)
            self.bytes_received += len(message.data)
            delivered = Delivered(
                sequence,
                message.subject,
                message.data,
                DELETE_HEADER in headers,
                write_id,
                index,
                ends_batch,
                sequence + pending,
            )
            deliveries.append(delivered)
            self._delivered.set()
            while len(deliveries) >= DELIVERY_QUEUE and deliveries is self._deliveries:
                # Backpressure: nats-py holds what comes next, up to PENDING_BYTES_LIMIT.
                self._taken.clear()
                await self._taken.wait()

        self._following = await self._js.subscribe(
            self.subjects.all,
            cb=deliver,
            ordered_consumer=True,
            # nats-py makes the consumer anew after two heartbeats missed: a consumer on a
            # server that died is replaced within seconds, not ten.
            idle_heartbeat=CONSUMER_HEARTBEAT,
            config=config,
            pending_bytes_limit=PENDING_BYTES_LIMIT,
        )

    async def unfollow(self) -> None:
        """Stop the consumer of `follow`."""
        if self._following is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._following.unsubscribe()
            self._following = None

    async def take(self, limit: int, wait: float) -> list[Delivered]:
        """Up to `limit` delivered messages, waiting at most `wait` seconds for the first."""
        deliveries = self._deliveries
        if not deliveries:
            self._delivered.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._delivered.wait(), wait)
        taken = [deliveries.popleft() for _ in range(min(limit, len(deliveries)))]
        self._taken.set()
        return taken

    # Presence --------------------------------------------------------------------------------

    async def announce(self, key: str, value: dict[str, object], ttl: float) -> None:
        """Put this sidecar's entry in the peers bucket, which forgets it after `ttl`."""
        bucket = await self._bucket(ttl)
        await bucket.put(key, json.dumps(value).encode())

    async def peers(self) -> list[dict[str, object]]:
        """The entries of every sidecar announced within the bucket's time to live."""
        bucket = await self._bucket(self.config.presence_interval * 3)
        try:
            keys = await bucket.keys()
        except nats.js.errors.NoKeysError:
            return []
        entries = []
        for key in keys:
            try:
                entry = await bucket.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value:
                entries.append(json.loads(entry.value))
        return entries

    async def _bucket(self, ttl: float) -> nats.js.kv.KeyValue:
        try:
            return await self._js.key_value(self.config.peers_bucket)
        except nats.js.errors.BucketNotFoundError:
            return await self._js.create_key_value(
                bucket=self.config.peers_bucket,
                ttl=ttl,
                history=1,
                replicas=self.config.replicas,
            )
