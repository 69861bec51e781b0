"""The soak of shared mode (`python -m harness.soak --shared`), asyncio-flavoured: sidecars
that share one document space through a stream of three replicas on a three-node NATS
cluster, writers and followers on every sidecar, and a killer that SIGKILLs a sidecar or a
NATS node at random moments; then the check of the whole fleet.

The writers and followers are the single-node soak's (`run`); a follower that reopens its
subscription resumes on another sidecar (the first time, then half the time) with its
position and epoch. The killer never has more than one process down: it restarts each before
the next kill, and before it kills a NATS node it waits for the stream's replicas to be
current again, so the cluster keeps its quorum. At the end the sidecars must all have
applied the stream's head, and the stream (read with nats-py) is the arbiter of what each
document's last write was.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import random
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nats
import nats.errors
import nats.js.errors

from harness.soak.checker import (
    LastMessage,
    StoreContents,
    StreamContents,
    copy_violations,
    documents_of,
    doubled_writes,
    feed_violations,
    noop_delete_violations,
    replica_violations,
    stream_violations,
    superseded_in,
)
from harness.soak.ledger import Ledger
from harness.soak.run import (
    COLLECTIONS,
    Follower,
    Killer,
    SoakOptions,
    SoakResult,
    Writers,
    make_followers,
    read_store,
    settle,
)
from harness.soak.sightings import Sightings
from peat_sync.bench.launcher import ChildServer, ServerProcess, ServerStartError
from peat_sync.bench.nats_servers import NatsCluster, NatsServer
from peat_sync.client import Client, Unavailable
from peat_sync.shared.jetstream import DELETE_HEADER
from peat_sync.shared.subjects import Subjects

T = TypeVar("T")

STREAM = "PEAT"  # the sidecars' --nats-stream, left at its default
# Sidecars announce themselves often: a restarted one is soon listed by the others again.
PRESENCE_INTERVAL = "1"
# Seconds a killed process stays down at most: a sidecar briefly, as the single node; a NATS
# node long enough for the stream to elect a new leader when it led.
SIDECAR_DOWN = 0.5
NATS_DOWN = 3.0
# Seconds the stream's replicas get to be current again before the next NATS node is killed.
REPLICAS_CURRENT_WITHIN = 60.0
# Seconds JetStream gets to answer on every server at the start.
JETSTREAM_READY_WITHIN = 30.0
POLL = 0.1
PROGRESS_EVERY = 2.0
WATCH_EVERY = 0.25


@dataclass(slots=True)
class FleetCounts:
    writes_acked: int = 0
    # Failed with UNAVAILABLE or a deadline: maybe applied, maybe not.
    ambiguous_writes: int = 0
    events_received: int = 0
    sidecar_kills: int = 0
    nats_kills: int = 0
    moves: int = 0
    resyncs: int = 0
    resync_reasons: dict[str, int] = field(default_factory=dict)
    catch_ups: int = 0
    snapshots: int = 0
    reconnections: int = 0
    reopens: int = 0
    stalls: int = 0
    # The longest time a sidecar applied nothing while another had applied more.
    apply_stall_max: float = 0.0
    head_sequence: int = 0
    seconds: float = 0.0
    violations: int = 0


class Fleet:
    """The processes: three nats-servers, and the sidecars on them, each sidecar on a unix
    socket of its own so that it keeps its address across restarts."""

    def __init__(self, scratch: Path, options: SoakOptions) -> None:
        self.cluster = NatsCluster(scratch / "nats")
        self.sidecars = [
            ServerProcess(
                scratch / f"sidecar-{index + 1}",
                *("--node-id", f"sidecar-{index + 1}", "--nats", self.cluster.urls),
                *("--nats-replicas", "3"),
                *("--nats-write-timeout", f"{options.nats_write_timeout:g}"),
                *("--nats-presence-interval", PRESENCE_INTERVAL),
                *options.server_flags(),
                listen=f"unix://{scratch / f's{index + 1}.sock'}",
            )
            for index in range(options.sidecars)
        ]
        # The process the killer has killed, until it runs again.
        self.striking: ChildServer | None = None

    @property
    def urls(self) -> list[str]:
        return self.cluster.urls.split(",")

    @property
    def processes(self) -> dict[str, ChildServer]:
        """Every process of the fleet, by name."""
        named: dict[str, ChildServer] = {self.name(s): s for s in self.sidecars}
        named.update((server.name, server) for server in self.cluster.servers)
        return named

    @staticmethod
    def name(sidecar: ServerProcess) -> str:
        return sidecar.data_dir.name

    async def start(self) -> None:
        """Asyncio-flavoured: the cluster, then the first sidecar (which makes the stream of
        three replicas), then the others together."""
        await asyncio.to_thread(self.cluster.start)
        await _jetstream_ready(self.cluster.servers)
        await asyncio.to_thread(self.sidecars[0].start)
        await asyncio.gather(*(asyncio.to_thread(sidecar.start) for sidecar in self.sidecars[1:]))

    def stop(self, logs: Path | None) -> None:
        """Stop the sidecars (SIGTERM; SIGKILL for one that does not stop in time), kill the
        nats-servers, and write everyone's output to `logs`, if given."""
        for sidecar in self.sidecars:
            if sidecar.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    sidecar.stop()
        self.cluster.kill()
        if logs is not None:
            for sidecar in self.sidecars:
                (logs / f"{self.name(sidecar)}.log").write_text(sidecar.log)
            for server in self.cluster.servers:
                (logs / f"{server.name}.log").write_text(server.log)


class FleetWatch:
    """Watches the fleet: a process that exits when the killer is not at it (a violation, with
    its last words), and stalls. It polls every sidecar's GetSyncStats for the longest time
    one of them, while it answered, applied nothing although another had applied further (so
    the stream had more for it). A sidecar stalled so is behind for its subscribers, and its
    writes fail."""

    def __init__(self, fleet: Fleet, clients: list[Client]) -> None:
        self.fleet = fleet
        self.clients = clients
        self.longest = 0.0
        self.longest_at = ""
        self.exited: dict[str, str] = {}  # the name of a process that exited: its last words

    async def run(self) -> None:
        """Asyncio-flavoured: watch until cancelled."""
        stalled_since: list[float | None] = [None] * len(self.clients)
        applied = [0] * len(self.clients)
        while True:
            self.note_exits()
            for index, client in enumerate(self.clients):
                try:
                    async with asyncio.timeout(1.0):
                        now_applied = (await client.sync_stats()).applied_sequence
                except (Unavailable, TimeoutError):
                    stalled_since[index] = None  # down, or starting: the killer's doing
                    continue
                if now_applied != applied[index]:
                    stalled_since[index] = None
                applied[index] = now_applied
            now = time.monotonic()
            for index, since in enumerate(stalled_since):
                if applied[index] >= max(applied):
                    stalled_since[index] = None
                elif since is None:
                    stalled_since[index] = now
                elif now - since > self.longest:
                    self.longest = now - since
                    self.longest_at = self.fleet.name(self.fleet.sidecars[index])
            await asyncio.sleep(WATCH_EVERY)

    def note_exits(self) -> None:
        for name, server in self.fleet.processes.items():
            if server is not self.fleet.striking and not server.running:
                self.exited.setdefault(name, server.last_words(5))

    def violations(self) -> list[str]:
        self.note_exits()
        return [
            f"{name} exited, and not by the killer's kill: {words}"
            for name, words in self.exited.items()
        ]


async def _jetstream_ready(servers: list[NatsServer]) -> None:
    """Asyncio-flavoured: return once every server answers JetStream requests (a cluster
    does not until it has elected its metadata leader)."""
    deadline = time.monotonic() + JETSTREAM_READY_WITHIN
    for server in servers:
        while True:
            try:
                connection = await nats.connect(
                    server.url, connect_timeout=2, allow_reconnect=False
                )
                try:
                    await connection.jetstream(timeout=2).account_info()
                finally:
                    await connection.close()
                break
            except (TimeoutError, OSError, nats.errors.Error) as exc:
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"{server.name} does not answer JetStream requests after"
                        f" {JETSTREAM_READY_WITHIN:g} s ({exc!r}): {server.last_words()}"
                    ) from None
                await asyncio.sleep(POLL)


@contextlib.asynccontextmanager
async def _stream_connection(urls: list[str]) -> AsyncIterator[nats.js.JetStreamContext]:
    connection = await nats.connect(urls, connect_timeout=2, allow_reconnect=False)
    try:
        yield connection.jetstream(timeout=5)
    finally:
        await connection.close()


async def _stream_state(urls: list[str]) -> tuple[int, str | None, bool]:
    """Asyncio-flavoured: the stream's last sequence, its leader, and whether every replica
    is current."""
    async with _stream_connection(urls) as jetstream:
        info = await jetstream.stream_info(STREAM)
    cluster = info.cluster
    replicas = (cluster.replicas or []) if cluster is not None else []
    current = (
        cluster is not None
        and cluster.leader is not None
        and all(replica.current and not replica.offline for replica in replicas)
    )
    return info.state.last_seq, None if cluster is None else cluster.leader, current


async def _retrying(call: Callable[[], Awaitable[T]], within: float) -> T:
    """Asyncio-flavoured: `call()`, retried for `within` seconds while it fails the way a
    process being killed or restarted, or a NATS election, makes it fail."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call()
        except (Unavailable, TimeoutError, OSError, nats.errors.Error):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(POLL)


class FleetStrikes:
    """The killer's strikes: SIGKILL of a sidecar or of a NATS node, restarted after a
    moment. With a planned number of kills, half of them (rounded at random) are of each
    kind, in random order; else each kind at even odds."""

    def __init__(self, fleet: Fleet, options: SoakOptions, report: Callable[[str], None]) -> None:
        self.fleet = fleet
        self.report = report
        rng = random.Random(None if options.seed is None else f"{options.seed}/strikes")
        self._planned: list[bool] | None = None  # True: a NATS node
        if options.kill_every is None:
            nats_kills = options.kills // 2 + (options.kills % 2 and rng.random() < 0.5)
            self._planned = [True] * nats_kills + [False] * (options.kills - nats_kills)
            rng.shuffle(self._planned)
        self.sidecar_kills = 0
        self.nats_kills = 0

    async def __call__(self, rng: random.Random) -> None:
        """Asyncio-flavoured: one strike."""
        of_nats = self._planned.pop() if self._planned else rng.random() < 0.5
        if of_nats:
            await self._kill_nats_node(rng)
        else:
            await self._kill_sidecar(rng)

    async def _kill_sidecar(self, rng: random.Random) -> None:
        sidecar = rng.choice(self.fleet.sidecars)
        self.report(f"soak: kill -9 of {self.fleet.name(sidecar)}")
        self.fleet.striking = sidecar
        await asyncio.to_thread(sidecar.kill)
        await asyncio.sleep(rng.uniform(0, SIDECAR_DOWN))
        await asyncio.to_thread(sidecar.start)
        self.fleet.striking = None
        self.sidecar_kills += 1

    async def _kill_nats_node(self, rng: random.Random) -> None:
        leader = await self._replicas_current()
        server = rng.choice(self.fleet.cluster.servers)
        role = " (the stream's leader)" if server.name == leader else ""
        self.report(f"soak: kill -9 of {server.name}{role}")
        self.fleet.striking = server
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(rng.uniform(NATS_DOWN / 3, NATS_DOWN))
        await asyncio.to_thread(server.start)
        self.fleet.striking = None
        self.nats_kills += 1

    async def _replicas_current(self) -> str | None:
        """Wait, with a bound, until the stream has a leader and every replica is current
        (the last NATS node killed has caught up); returns the leader's name."""
        deadline = time.monotonic() + REPLICAS_CURRENT_WITHIN
        leader: str | None = None
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError, OSError, nats.errors.Error):
                _, leader, current = await _stream_state(self.fleet.urls)
                if current:
                    return leader
            await asyncio.sleep(POLL * 5)
        self.report(
            f"soak: the stream's replicas are not all current after"
            f" {REPLICAS_CURRENT_WITHIN:g} s; killing a NATS node all the same"
        )
        return leader


async def run_fleet_soak(
    options: SoakOptions, report: Callable[[str], None] = lambda line: None
) -> SoakResult:
    """Asyncio-flavoured: run a soak of shared mode with a fleet of its own; `report` gets
    progress lines. ServerStartError if a process does not start, at first or after a kill."""
    # Unix sockets in a short temporary directory: their paths are limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="peat-fleet-") as scratch:
        fleet = Fleet(Path(scratch), options)
        try:
            await fleet.start()
            return await _soak(fleet, options, report)
        except* ServerStartError as failed:
            raise failed.exceptions[0] from None
        finally:
            await asyncio.to_thread(fleet.stop, options.logs)


async def _soak(fleet: Fleet, options: SoakOptions, report: Callable[[str], None]) -> SoakResult:
    started = time.monotonic()
    addresses = [sidecar.address for sidecar in fleet.sidecars]
    ledger = Ledger(COLLECTIONS)
    sightings = Sightings()
    followers = make_followers(options, sightings)
    writers = Writers(ledger, options)
    strikes = FleetStrikes(fleet, options, report)
    watch = FleetWatch(fleet, [Client(address) for address in addresses])
    killer = Killer(strikes, ledger, options)
    faults_over = asyncio.Event()
    # One connection per writer to its sidecar, and per follower to each sidecar.
    writer_clients = [
        Client(addresses[writer % len(addresses)]) for writer in range(options.writers)
    ]
    follower_clients = [[Client(address) for address in addresses] for _ in followers]
    checking = [Client(address) for address in addresses]
    counts = FleetCounts()

    def tally() -> FleetCounts:
        counts.writes_acked = ledger.acked_writes
        counts.ambiguous_writes = ledger.ambiguous_writes
        counts.sidecar_kills = strikes.sidecar_kills
        counts.nats_kills = strikes.nats_kills
        counts.moves = sum(f.moves for f in followers)
        counts.events_received = sum(f.record.events for f in followers)
        counts.resyncs = sum(f.record.resyncs for f in followers)
        reasons: dict[str, int] = {}
        for follower in followers:
            for reason, number in follower.record.resync_reasons.items():
                reasons[reason] = reasons.get(reason, 0) + number
        counts.resync_reasons = dict(sorted(reasons.items()))
        counts.catch_ups = sum(f.record.catch_ups for f in followers)
        counts.snapshots = sum(f.record.snapshots for f in followers)
        counts.reconnections = sum(f.reconnections for f in followers)
        counts.reopens = sum(f.reopened for f in followers)
        counts.stalls = sum(f.stalled for f in followers)
        counts.apply_stall_max = round(watch.longest, 1)
        counts.seconds = round(time.monotonic() - started, 1)
        return counts

    async def show_progress() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            report(_progress_line(tally(), options))

    try:
        async with asyncio.TaskGroup() as group:
            follower_tasks = [
                group.create_task(follower.follow(clients, ledger, options, faults_over))
                for follower, clients in zip(followers, follower_clients, strict=True)
            ]
            progress_task = group.create_task(show_progress())
            watch_task = group.create_task(watch.run())
            killer_task = group.create_task(killer.run(faults_over))
            async with asyncio.TaskGroup() as writing:
                for writer, client in enumerate(writer_clients):
                    writing.create_task(writers.write(client, writer))
            faults_over.set()
            await killer_task
            # A sidecar that exited by itself is a violation; the others are checked.
            violations = watch.violations()
            running = [index for index, sidecar in enumerate(fleet.sidecars) if sidecar.running]
            report("soak: writes done; waiting for every sidecar to apply the stream's head")
            counts.head_sequence, late = await _converge(fleet, running, checking, options)
            violations += late
            if watch.longest_at:
                report(
                    f"soak: the longest apply stall was {watch.longest:.1f} s, of"
                    f" {watch.longest_at}"
                )
            report("soak: waiting for every follower to reach the head")
            settled = [follower for follower in followers if follower.at in running]
            violations += await settle(settled, counts.head_sequence, options)
            violations += await _final_check(
                fleet, running, checking, settled, ledger, sightings, writers, options
            )
            for task in [*follower_tasks, progress_task, watch_task]:
                task.cancel()
    finally:
        for client in itertools.chain(writer_clients, checking, watch.clients, *follower_clients):
            client.close()
    counts = tally()
    counts.violations = len(violations)
    return SoakResult(counts, violations)


async def _final_check(
    fleet: Fleet,
    running: list[int],
    clients: list[Client],
    followers: list[Follower],
    ledger: Ledger,
    sightings: Sightings,
    writers: Writers,
    options: SoakOptions,
) -> list[str]:
    """Asyncio-flavoured: read the stream, and the stores of the `running` sidecars; then
    check every promise of shared mode (see `checker`)."""
    failures = (Unavailable, TimeoutError, OSError, nats.errors.Error)
    try:
        stream = await _retrying(
            lambda: _read_stream(fleet.urls, options.doc_ids), options.settle_timeout
        )
    except failures as exc:
        return [f"the stream cannot be read after {options.settle_timeout:g} s: {exc!r}"]
    stores: dict[str, StoreContents] = {}
    violations: list[str] = []
    for index in running:
        name = fleet.name(fleet.sidecars[index])
        try:
            read = functools.partial(read_store, clients[index])
            stores[name] = await _retrying(read, options.settle_timeout)
        except failures as exc:
            violations.append(f"{name}: its store cannot be read: {exc}")
    checked = [f for f in followers if fleet.name(fleet.sidecars[f.at]) in stores]
    return violations + _check(fleet, checked, ledger, sightings, writers, stream, stores)


def _check(
    fleet: Fleet,
    followers: list[Follower],
    ledger: Ledger,
    sightings: Sightings,
    writers: Writers,
    stream: StreamContents,
    stores: dict[str, StoreContents],
) -> list[str]:
    """Every promise of shared mode, once the fleet has converged (see `checker`)."""
    violations = list(writers.rejections)
    violations += stream_violations(ledger, stream)
    expected = documents_of(stream)
    names = list(stores)
    for name, store in stores.items():
        violations += replica_violations(f"{name}'s store, against the stream", store, expected)
    for name in names[1:]:
        violations += replica_violations(
            f"{name}'s store, against {names[0]}'s", stores[name], stores[names[0]]
        )
    for follower in followers:
        store = stores[fleet.name(fleet.sidecars[follower.at])]
        violations += copy_violations(
            follower.name, follower.collections, follower.copy.documents, store
        )
    superseded = superseded_in(stream, ledger)
    noop_deletes, noop_sequences = noop_delete_violations(ledger, superseded)
    violations += noop_deletes
    violations += feed_violations(
        [follower.record for follower in followers],
        ledger,
        excused=lambda sequence: sequence in noop_sequences or superseded(sequence),
        sent=ledger.acknowledged_digests() | ledger.unsequenced_digests(),
    )
    violations += doubled_writes(sightings, ledger, stream, stores)
    return violations


async def _converge(
    fleet: Fleet, running: list[int], clients: list[Client], options: SoakOptions
) -> tuple[int, list[str]]:
    """Asyncio-flavoured: wait, with a bound, until every `running` sidecar has applied the
    stream's head; a sidecar that has not is a violation. Returns the head and those
    violations."""
    deadline = time.monotonic() + options.settle_timeout
    while True:
        head = -1
        applied: dict[str, int] = {}
        with contextlib.suppress(Unavailable, TimeoutError, OSError, nats.errors.Error):
            head, _, _ = await _stream_state(fleet.urls)
            for index in running:
                stats = await clients[index].sync_stats()
                applied[fleet.name(fleet.sidecars[index])] = stats.applied_sequence
        if len(applied) == len(running) and all(each == head for each in applied.values()):
            return head, []
        if time.monotonic() > deadline:
            return head, [
                f"{name}: applied the stream up to {each}, not its head {head}, after"
                f" {options.settle_timeout:g} s"
                for name, each in applied.items()
                if each != head
            ] or [f"the fleet did not answer for {options.settle_timeout:g} s"]
        await asyncio.sleep(POLL)


async def _read_stream(urls: list[str], doc_ids: int) -> StreamContents:
    """Asyncio-flavoured: the last message of every document the writers may have written,
    read from the stream's leader."""
    subjects = Subjects(STREAM)
    stream: StreamContents = {}
    async with _stream_connection(urls) as jetstream:
        for collection in COLLECTIONS:
            for number in range(doc_ids):
                doc_id = f"d{number}"
                try:
                    message = await jetstream.get_last_msg(
                        STREAM, subjects.document(collection, doc_id)
                    )
                except nats.js.errors.NotFoundError:
                    continue
                assert message.seq is not None
                deleted = bool(message.headers and DELETE_HEADER in message.headers)
                json_data = None if deleted else (message.data or b"").decode()
                stream[(collection, doc_id)] = LastMessage(message.seq, json_data)
    return stream


def _progress_line(counts: FleetCounts, options: SoakOptions) -> str:
    rate = counts.writes_acked / counts.seconds if counts.seconds else 0.0
    return (
        f"soak: {counts.seconds:7.1f} s  {counts.writes_acked:,}/{options.events:,} writes"
        f" acked ({rate:,.0f}/s), {counts.ambiguous_writes:,} ambiguous,"
        f" {counts.events_received:,} events, {counts.sidecar_kills} sidecar kills,"
        f" {counts.nats_kills} NATS kills, {counts.catch_ups} catch-ups,"
        f" {counts.resyncs} resyncs, {counts.reconnections} reconnections,"
        f" {counts.moves} moves, longest apply stall {counts.apply_stall_max:.1f} s"
    )
