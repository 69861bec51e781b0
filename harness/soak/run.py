"""The soak itself (asyncio-flavoured): writers, followers and a killer against one server,
until the writers have had the wanted number of writes acknowledged; then the check.

The writers, followers and the killer's schedule serve shared mode's soak too (`fleet`),
where a follower moves between sidecars and the killer strikes sidecars and NATS nodes."""

from __future__ import annotations

import asyncio
import functools
import json
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.soak.checker import (
    StoreContents,
    StoredDocument,
    copy_violations,
    feed_violations,
    noop_delete_violations,
    store_violations,
)
from harness.soak.feed import FeedRecord
from harness.soak.ledger import Ledger
from harness.soak.sightings import Sightings
from peat_sync.bench.launcher import ServerProcess, ServerStartError
from peat_sync.client import (
    Backoff,
    Client,
    ConsistentCopy,
    Rejected,
    ResilientSubscription,
    Unavailable,
)

COLLECTIONS = ["alpha", "bravo", "charlie", "delta"]
MAX_BATCH = 50
# Reconnect fast: the server is back within a second or two of each kill.
FOLLOWER_BACKOFF = Backoff(initial=0.05, maximum=1.0)
PROGRESS_EVERY = 2.0
STATUS_RETRY = 0.1
# Shared mode: the share of a follower's reopens that resume on another sidecar, after the
# first, which always does.
MOVE_SHARE = 0.5
SIDECARS = 3
# Shorter than the client's deadline (10 s), so that a write fails on the sidecar first.
NATS_WRITE_TIMEOUT = 3.0


@dataclass(frozen=True, slots=True)
class SoakOptions:
    events: int
    writers: int = 4
    subscribers: int = 8
    kills: int = 3
    kill_every: float | None = None
    # Enough that some deletes stay unrewritten beyond the tombstone retention, so purges
    # raise the catch-up floor and RESYNCs happen; few enough for many updates and deletes.
    doc_ids: int = 300
    seed: int | None = None
    replay_log_size: int = 500
    broadcast_buffer_size: int = 64
    heartbeat_interval: str = "200ms"
    tombstone_retention: str = "1s"
    # A follower's pauses: stalls (it stops reading) and closes (it is away, then resumes).
    # Those longer than the tombstone retention (and its purge period, 1 s at least) can
    # end in a RESYNC.
    fault_gap: float = 2.0
    max_stall: float = 5.0
    max_away: float = 5.0
    settle_timeout: float = 60.0
    silence_timeout: float = 2.0
    # Shared mode (`fleet`): this many sidecars on a three-node NATS cluster.
    shared: bool = False
    sidecars: int = SIDECARS
    nats_write_timeout: float = NATS_WRITE_TIMEOUT
    logs: Path | None = None  # a directory for each server's output at the end

    def server_flags(self) -> list[str]:
        return [
            *("--replay-log-size", str(self.replay_log_size)),
            *("--broadcast-buffer-size", str(self.broadcast_buffer_size)),
            *("--heartbeat-interval", self.heartbeat_interval),
            *("--tombstone-retention", self.tombstone_retention),
        ]


@dataclass(slots=True)
class SoakCounts:
    writes_acked: int = 0
    ambiguous_writes: int = 0
    events_received: int = 0
    kills_survived: int = 0
    resyncs: int = 0
    catch_ups: int = 0
    snapshots: int = 0
    reconnections: int = 0
    reopens: int = 0
    stalls: int = 0
    head_sequence: int = 0
    seconds: float = 0.0
    violations: int = 0


@dataclass(slots=True)
class SoakResult:
    counts: Any  # SoakCounts, or FleetCounts in shared mode: a dataclass of figures
    violations: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self.counts), "violation_list": self.violations}


class Follower:
    """One subscriber: a resilient subscription with snapshots and atomic catch-ups feeding
    a `ConsistentCopy` (what `Mirror` does inside, here with each event in view for the
    `FeedRecord`). With `stalls`, it stops reading now and then; with `reopens`, it closes
    its subscription now and then, stays away, and resumes from its position and epoch: in
    shared mode, the first time and then every other time or so on another sidecar (`at` is
    the one it follows)."""

    def __init__(
        self,
        name: str,
        collections: list[str],
        *,
        stalls: bool,
        reopens: bool,
        at: int = 0,
        shared: bool = False,
        sightings: Sightings | None = None,
    ) -> None:
        self.name = name
        self.collections = collections
        self.stalls = stalls
        self.reopens = reopens
        self.at = at
        # In shared mode, a delete passed over is judged by what the copy held: see FeedRecord.
        self.record = FeedRecord(name, collections, sightings, track_documents=shared)
        self.copy = ConsistentCopy()
        self.progress = asyncio.Event()
        self.subscription: ResilientSubscription | None = None
        self.closed_reconnections = 0  # of the subscriptions closed so far
        self.reopened = 0
        self.stalled = 0
        self.moves = 0

    async def follow(
        self,
        clients: Sequence[Client],
        ledger: Ledger,
        options: SoakOptions,
        faults_over: asyncio.Event,
    ) -> None:
        """Asyncio-flavoured: follow the feed until cancelled; `clients` has one client per
        server (per sidecar in shared mode)."""
        rng = random.Random(None if options.seed is None else f"{options.seed}/{self.name}")
        since: int | None = None
        epoch: str | None = None
        while True:
            subscription = clients[self.at].subscribe(
                self.collections,
                since=since,
                epoch=epoch,
                snapshot=True,
                atomic_catch_ups=True,
                backoff=FOLLOWER_BACKOFF,
                silence_timeout=options.silence_timeout,
            )
            self.subscription = subscription
            try:
                await self._read(subscription, ledger, options, faults_over, rng)
            finally:
                self.closed_reconnections += subscription.reconnections
                self.subscription = None
                await subscription.aclose()
            since, epoch = subscription.position, subscription.epoch
            self.reopened += 1
            # Every other time away for long enough to outlast the tombstone retention, so
            # that the resumption meets a RESYNC; else briefly, for a replay or a catch-up.
            longest = options.max_away if self.reopened % 2 else options.max_away / 2
            await _pause(rng.uniform(longest / 2, longest), faults_over)
            if len(clients) > 1 and (not self.moves or rng.random() < MOVE_SHARE):
                self.at = rng.choice([at for at in range(len(clients)) if at != self.at])
                self.moves += 1

    async def _read(
        self,
        subscription: ResilientSubscription,
        ledger: Ledger,
        options: SoakOptions,
        faults_over: asyncio.Event,
        rng: random.Random,
    ) -> None:
        """Read until it is time to close the subscription (a reopen)."""
        next_fault = time.monotonic() + rng.expovariate(1 / options.fault_gap)
        async for event in subscription:
            self.record.observe(event, ledger)
            self.copy.apply(event)
            self.progress.set()
            self.progress = asyncio.Event()
            if faults_over.is_set() or time.monotonic() < next_fault:
                continue
            next_fault = time.monotonic() + rng.expovariate(1 / options.fault_gap)
            if self.reopens and (not self.stalls or rng.random() < 0.5):
                return
            if self.stalls:
                self.stalled += 1
                await _pause(rng.uniform(0.1, options.max_stall), faults_over)

    @property
    def reconnections(self) -> int:
        current = self.subscription.reconnections if self.subscription is not None else 0
        return self.closed_reconnections + current

    async def wait_for(self, sequence: int) -> None:
        """Asyncio-flavoured: return once the copy is whole and at `sequence` or later."""
        while not (self.copy.ready and self.copy.sequence >= sequence):
            await self.progress.wait()


async def _pause(seconds: float, faults_over: asyncio.Event) -> None:
    """Asyncio-flavoured: sleep `seconds`, or less if the faults are over."""
    try:
        async with asyncio.timeout(seconds):
            await faults_over.wait()
    except TimeoutError:
        pass


class Writers:
    """The writers: puts, deletes and WriteDocuments batches over a small doc-id space, each
    acknowledged one recorded in the ledger, each failed one recorded as ambiguous."""

    def __init__(self, ledger: Ledger, options: SoakOptions) -> None:
        self.ledger = ledger
        self.options = options
        self.rejections: list[str] = []

    async def write(self, client: Client, writer: int) -> None:
        """Asyncio-flavoured: write until the ledger holds `options.events` acknowledged
        writes."""
        options = self.options
        rng = random.Random(None if options.seed is None else f"{options.seed}/writer{writer}")
        serial = 0

        def one_write(delete_share: float) -> tuple[str, str, str | None]:
            nonlocal serial
            serial += 1
            collection = rng.choice(COLLECTIONS)
            doc_id = f"d{rng.randrange(options.doc_ids)}"
            if rng.random() < delete_share:
                return collection, doc_id, None
            document = {"writer": writer, "serial": serial, "pad": "x" * rng.randrange(64)}
            return collection, doc_id, json.dumps(document, separators=(",", ":"))

        while self.ledger.acked_writes < options.events:
            choice = rng.random()
            if choice < 0.45:
                writes = [one_write(0.0)]
            elif choice < 0.6:
                writes = [one_write(1.0)]
            else:
                writes = [one_write(0.2) for _ in range(rng.randint(1, MAX_BATCH))]
            sent_at = time.monotonic()
            try:
                sequences = await _send(client, writes)
            except Unavailable:
                self.ledger.record_ambiguous(writes, time.monotonic())
                await asyncio.sleep(rng.uniform(0.01, 0.1))
                continue
            except Rejected as exc:
                self.rejections.append(f"writer {writer}: write rejected: {exc}")
                continue
            self.ledger.record_acked(writes, sequences, sent_at)


async def _send(client: Client, writes: list[tuple[str, str, str | None]]) -> list[int]:
    """Asyncio-flavoured: one write as PutDocument or DeleteDocument, more as WriteDocuments."""
    if len(writes) > 1:
        return await client.write(writes)
    collection, doc_id, json_data = writes[0]
    if json_data is None:
        return [await client.delete(collection, doc_id)]
    return [await client.put(collection, doc_id, json_data)]


Strike = Callable[[random.Random], Awaitable[None]]


class Killer:
    """Strikes at random moments: `options.kills` times spread over the writes, or every
    `kill_every` seconds on average. A strike (a coroutine function that takes the killer's
    random generator) kills something with SIGKILL, and returns once it runs again."""

    def __init__(self, strike: Strike, ledger: Ledger, options: SoakOptions) -> None:
        self.strike = strike
        self.ledger = ledger
        self.options = options
        self.kills_survived = 0

    async def run(self, faults_over: asyncio.Event) -> None:
        """Asyncio-flavoured: kill and restart until the faults are over."""
        options = self.options
        rng = random.Random(None if options.seed is None else f"{options.seed}/killer")
        if options.kill_every is not None:
            while not faults_over.is_set():
                await _pause(rng.uniform(0.5, 1.5) * options.kill_every, faults_over)
                if not faults_over.is_set():
                    await self._kill_and_restart(rng)
            return
        # Kill k at a random point of the k-th stretch of the writes, all before the end.
        for kill in range(options.kills):
            at = options.events * 0.95 * (kill + rng.uniform(0.2, 0.8)) / options.kills
            while self.ledger.acked_writes < at:
                if faults_over.is_set():
                    return
                await asyncio.sleep(0.02)
            await self._kill_and_restart(rng)

    async def _kill_and_restart(self, rng: random.Random) -> None:
        await self.strike(rng)
        self.kills_survived += 1


async def kill_and_restart(server: ServerProcess, rng: random.Random) -> None:
    """Asyncio-flavoured: SIGKILL `server`, and start it again on the same data dir and
    socket after a moment, during which calls fail."""
    await asyncio.to_thread(server.kill)
    await asyncio.sleep(rng.uniform(0, 0.5))
    await asyncio.to_thread(server.start)


async def run_soak(
    options: SoakOptions, report: Callable[[str], None] = lambda line: None
) -> SoakResult:
    """Asyncio-flavoured: run a soak with a server of its own; `report` gets progress lines.
    ServerStartError if the server does not start, at first or after a kill."""
    # A unix socket, so that the server is at the same address after each restart; in a
    # short temporary directory, as its path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="peat-soak-") as scratch:
        server = ServerProcess(
            Path(scratch, "data"),
            *options.server_flags(),
            listen=f"unix://{Path(scratch, 'peat.sock')}",
        )
        await asyncio.to_thread(server.start)
        try:
            return await _soak(server, options, report)
        except* ServerStartError as failed:
            # A restart of the killer's that failed: the error it is, not a group of one.
            raise failed.exceptions[0] from None
        finally:
            await asyncio.to_thread(server.stop)
            if options.logs is not None:
                (options.logs / "server.log").write_text(server.log)


async def _soak(
    server: ServerProcess, options: SoakOptions, report: Callable[[str], None]
) -> SoakResult:
    started = time.monotonic()
    ledger = Ledger(COLLECTIONS)
    followers = make_followers(options)
    writers = Writers(ledger, options)
    killer = Killer(functools.partial(kill_and_restart, server), ledger, options)
    faults_over = asyncio.Event()
    clients = [Client(server.address) for _ in range(options.writers + len(followers))]
    counts = SoakCounts()

    def tally() -> SoakCounts:
        counts.writes_acked = ledger.acked_writes
        counts.ambiguous_writes = ledger.ambiguous_writes
        counts.kills_survived = killer.kills_survived
        counts.events_received = sum(f.record.events for f in followers)
        counts.resyncs = sum(f.record.resyncs for f in followers)
        counts.catch_ups = sum(f.record.catch_ups for f in followers)
        counts.snapshots = sum(f.record.snapshots for f in followers)
        counts.reconnections = sum(f.reconnections for f in followers)
        counts.reopens = sum(f.reopened for f in followers)
        counts.stalls = sum(f.stalled for f in followers)
        counts.seconds = round(time.monotonic() - started, 1)
        return counts

    async def show_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            report(_progress_line(tally(), options))

    try:
        async with asyncio.TaskGroup() as group:
            follower_tasks = [
                group.create_task(follower.follow([client], ledger, options, faults_over))
                for follower, client in zip(followers, clients[options.writers :], strict=False)
            ]
            progress_task = group.create_task(show_progress())
            killer_task = group.create_task(killer.run(faults_over))
            async with asyncio.TaskGroup() as writing:
                for writer, client in enumerate(clients[: options.writers]):
                    writing.create_task(writers.write(client, writer))
            faults_over.set()
            await killer_task
            report("soak: writes done; waiting for every follower to reach the head")
            counts.head_sequence = (await _status(clients[0], options.settle_timeout)).head_sequence
            violations = await settle(followers, counts.head_sequence, options)
            store = await read_store(clients[0])
            violations += writers.rejections
            violations += store_violations(ledger, store)
            for follower in followers:
                violations += copy_violations(
                    follower.name, follower.collections, follower.copy.documents, store
                )
            noop_deletes, noop_sequences = noop_delete_violations(ledger)
            violations += noop_deletes
            violations += feed_violations(
                [f.record for f in followers],
                ledger,
                excused=noop_sequences.__contains__ if noop_sequences else None,
            )
            for task in [*follower_tasks, progress_task]:
                task.cancel()
    finally:
        for client in clients:
            client.close()
    counts = tally()
    counts.violations = len(violations)
    return SoakResult(counts, violations)


def make_followers(options: SoakOptions, sightings: Sightings | None = None) -> list[Follower]:
    """Half of them filtered to one or two collections; a mix of steady ones, stallers,
    reopeners and both. In shared mode they start spread over the sidecars."""
    rng = random.Random(None if options.seed is None else f"{options.seed}/followers")
    servers = options.sidecars if options.shared else 1
    followers = []
    for index in range(options.subscribers):
        filtered = index >= options.subscribers // 2
        collections = sorted(rng.sample(COLLECTIONS, rng.randint(1, 2))) if filtered else []
        followers.append(
            Follower(
                f"subscriber {index} ({','.join(collections) or 'all'})",
                collections,
                stalls=index % 4 in (1, 3),
                reopens=index % 4 in (2, 3),
                at=index % servers,
                shared=options.shared,
                sightings=sightings,
            )
        )
    return followers


async def settle(followers: list[Follower], head: int, options: SoakOptions) -> list[str]:
    """Asyncio-flavoured: wait, with a bound, for every follower to reach `head`; a follower
    that does not is a violation. Returns those violations."""
    late: list[str] = []
    deadline = time.monotonic() + options.settle_timeout
    for follower in followers:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.1)):
                await follower.wait_for(head)
        except TimeoutError:
            late.append(
                f"{follower.name}: not at the head {head} after {options.settle_timeout:g} s"
                f" (at {follower.copy.sequence}, ready: {follower.copy.ready})"
            )
    return late


async def _status(client: Client, within: float) -> Any:
    """Asyncio-flavoured: GetStatus, retried for `within` seconds while the server is
    (re)starting."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await client.status()
            except Unavailable:
                await asyncio.sleep(STATUS_RETRY)


async def read_store(client: Client) -> StoreContents:
    """Asyncio-flavoured: every document of the soak's collections, through ListDocuments
    and GetDocument (nothing writes any more)."""
    store: StoreContents = {}
    for collection in COLLECTIONS:
        documents = store.setdefault(collection, {})
        for doc_id in await client.list_ids(collection):
            document = await client.get(collection, doc_id)
            if document is not None:
                documents[doc_id] = StoredDocument(document.json_data, document.sequence)
    return store


def _progress_line(counts: SoakCounts, options: SoakOptions) -> str:
    rate = counts.writes_acked / counts.seconds if counts.seconds else 0.0
    return (
        f"soak: {counts.seconds:7.1f} s  {counts.writes_acked:,}/{options.events:,} writes"
        f" acked ({rate:,.0f}/s), {counts.ambiguous_writes:,} ambiguous,"
        f" {counts.events_received:,} events, {counts.kills_survived} kills,"
        f" {counts.catch_ups} catch-ups, {counts.resyncs} resyncs,"
        f" {counts.reconnections} reconnections, {counts.reopens} reopens"
    )


def print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
