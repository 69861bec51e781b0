"""Shared mode on a three-node NATS cluster (a stream of three replicas) under faults, real
processes on loopback: the nats-server that leads the stream killed under write load, a
sidecar killed and restarted, all of NATS stopped and started again.

Every document written carries a unique token, and every acknowledged write is recorded with
its sequence; subscribers from sequence 0 record every event. The checks are shared mode's
promises: no acknowledged write is lost, none is stored or delivered twice, and every store
and every subscriber's copy ends equal. Each test prints its counts (`pytest -rP` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import random
import re
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.nats_servers import NatsCluster, NatsServer, free_port
from peat_sync.client import ChangeType, Client, ConsistentCopy, Event, Unavailable
from tests.helpers.client_library import FAST_BACKOFF, QUICK_HEARTBEATS, applied_everywhere
from tests.helpers.waiting import eventually, run_scenario, wait_until, within
from tests.shared.conftest import PRESENCE, StartSidecar

COLLECTION = "fleet"
# The documents the writers share, so that writes of different sidecars supersede each other.
DOC_IDS = tuple(f"d{i}" for i in range(16))
# Short, so that a write caught in an election or an outage fails soon and its writer goes on.
WRITE_TIMEOUT = 3.0


def cluster_flags(*extra: str, write_timeout: float = WRITE_TIMEOUT) -> tuple[str, ...]:
    return ("--nats-replicas", "3", "--nats-write-timeout", f"{write_timeout:g}", *extra)


def sidecars_on(
    cluster: NatsCluster,
    start_sidecar: StartSidecar,
    *flags: str,
    write_timeout: float = WRITE_TIMEOUT,
) -> list[ServerProcess]:
    flags = cluster_flags(*flags, write_timeout=write_timeout)
    return [start_sidecar(cluster.urls, *flags, name=name) for name in "abc"]


# What the writers did -----------------------------------------------------------------------------


@dataclass
class Ledger:
    """The writes of a test: the sequence of each document an acknowledged write stored, by
    token; the tokens of the writes that failed (NATS may have stored them, or not); counts."""

    acked: dict[str, tuple[str, int]] = field(default_factory=dict)  # token: (doc_id, sequence)
    failed: set[str] = field(default_factory=set)
    writes_acked: Counter[str] = field(default_factory=Counter)  # by writer
    writes_failed: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)  # by kind
    acked_at: dict[str, list[float]] = field(default_factory=dict)  # by writer, monotonic

    def record(
        self, writer: str, tokens: list[str], doc_ids: list[str], sequences: list[int]
    ) -> None:
        self.writes_acked[writer] += 1
        self.acked_at.setdefault(writer, []).append(time.monotonic())
        for token, doc_id, sequence in zip(tokens, doc_ids, sequences, strict=True):
            self.acked[token] = (doc_id, sequence)

    def record_failure(self, writer: str, tokens: list[str], exc: Unavailable) -> None:
        self.writes_failed[writer] += 1
        self.failed.update(tokens)
        # Its kind: the message without the address and the numbers.
        self.failures[re.sub(r"\d+", "N", str(exc).partition(": ")[2].partition(" (")[0])] += 1

    def longest_pause(self, writer: str, since: float) -> float:
        """The longest time, from `since` on, in which no write of `writer` was acknowledged."""
        moments = [since, *(moment for moment in self.acked_at[writer] if moment > since)]
        return max(later - earlier for earlier, later in itertools.pairwise(moments))

    def summary(self) -> str:
        return (
            f"{self.writes_acked.total()} writes acknowledged ({len(self.acked)} documents),"
            f" {self.writes_failed.total()} failed {dict(self.failures)}"
        )


def token_document(token: str) -> dict[str, str]:
    return {"token": token, "by": token.partition("-")[0]}


async def write_until(
    client: Client, writer: str, ledger: Ledger, stop: asyncio.Event, seed: int
) -> None:
    """Sequential writes through `client` until `stop`: puts of one document and, every
    fifth, a WriteDocuments of two, each document with its own token. A write that fails is
    recorded, and the writer goes on."""
    rng = random.Random(seed)
    for step in itertools.count():
        if stop.is_set():
            return
        doc_ids = rng.sample(DOC_IDS, 2 if step % 5 == 4 else 1)
        tokens = [f"{writer}-{step}.{index}" for index in range(len(doc_ids))]
        try:
            if len(doc_ids) == 1:
                sequences = [await client.put(COLLECTION, doc_ids[0], token_document(tokens[0]))]
            else:
                sequences = await client.write(
                    (COLLECTION, doc_id, token_document(token))
                    for doc_id, token in zip(doc_ids, tokens, strict=True)
                )
        except Unavailable as exc:
            ledger.record_failure(writer, tokens, exc)
            await asyncio.sleep(0.05)  # a sidecar that is down refuses at once
            continue
        ledger.record(writer, tokens, doc_ids, sequences)


@contextlib.asynccontextmanager
async def writing(writers: Iterable[tuple[str, Client]], ledger: Ledger) -> AsyncIterator[None]:
    """A writer on each client for the duration of the block."""
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(write_until(client, writer, ledger, stop, seed))
        for seed, (writer, client) in enumerate(writers)
    ]
    try:
        yield
    finally:
        stop.set()
        # A write under way ends within the client's deadline.
        await within(asyncio.gather(*tasks), 20)


async def wait_for_writes(ledger: Ledger, writers: str, count: int, seconds: float = 40) -> None:
    """Wait until each of `writers` has `count` more writes acknowledged than now."""
    target = {writer: ledger.writes_acked[writer] + count for writer in writers}
    await eventually(
        lambda: all(ledger.writes_acked[writer] >= target[writer] for writer in writers),
        seconds=seconds,
        what=f"{count} more acknowledged writes by each of {writers}",
    )


# What the subscribers saw -------------------------------------------------------------------------


class Recorder:
    """A subscriber: every event it reads, and the copy they build, from `since` (0: the
    beginning) or, given `start`, from a copy at a resume point.

    Atomic catch-ups keep the copy consistent across reconnections (see `ConsistentCopy`).
    """

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        since: int = 0,
        epoch: str | None = None,
        start: ConsistentCopy | None = None,
    ) -> None:
        self.name = name
        self.subscription = client.subscribe(
            [COLLECTION], since=since, epoch=epoch, backoff=FAST_BACKOFF, atomic_catch_ups=True
        )
        self.copy = start or ConsistentCopy()
        self.events: list[Event] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Recorder:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # raises what ended it
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.subscription.aclose()

    async def _read(self) -> None:
        async for event in self.subscription:
            self.events.append(event)
            self.copy.apply(event)

    def count(self, change_type: ChangeType) -> int:
        return sum(event.type == change_type for event in self.events)

    def tokens(self) -> dict[str, set[int]]:
        """The sequences at which each token was seen."""
        seen: dict[str, set[int]] = {}
        for event in self.events:
            if event.type == ChangeType.UPSERT:
                seen.setdefault(event.document["token"], set()).add(event.sequence)
        return seen

    def resume_point(self) -> tuple[ConsistentCopy, int, str]:
        """A copy of the copy, and the sequence and epoch it stands at."""
        return copy.deepcopy(self.copy), self.copy.sequence, self.copy.epoch

    async def caught_up(self, sequence: int, seconds: float = 20) -> None:
        await eventually(
            lambda: self.copy.sequence >= sequence, seconds=seconds, what=f"{self.name}'s copy"
        )


@contextlib.asynccontextmanager
async def recorders(clients: list[Client]) -> AsyncIterator[list[Recorder]]:
    """A subscriber from sequence 0 on each sidecar (a, b, c)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(Recorder(client, f"the subscriber on {name}"))
            for client, name in zip(clients, "abc", strict=True)
        ]


# Stores -------------------------------------------------------------------------------------------

Store = dict[str, tuple[int, str]]  # doc_id: (sequence, token)


async def store_of(client: Client) -> Store:
    store: Store = {}
    for doc_id in await client.list_ids(COLLECTION):
        document = await client.get(COLLECTION, doc_id)
        assert document is not None, f"{doc_id} is listed but absent"
        store[doc_id] = (document.sequence, document.data["token"])
    return store


async def converged(clients: list[Client], seconds: float = 30) -> tuple[int, Store]:
    """Wait until every sidecar has applied the stream's head; return it and the stores,
    which must be equal."""
    head = await applied_everywhere(clients, seconds)
    stores = [await store_of(client) for client in clients]
    for client, store in zip(clients[1:], stores[1:], strict=True):
        assert store == stores[0], f"the store of {client.address} differs"
    return head, stores[0]


def as_copy(store: Store) -> dict[str, dict[str, Any]]:
    """The store as a subscriber's copy holds it."""
    if not store:
        return {}
    return {COLLECTION: {doc_id: token_document(token) for doc_id, (_, token) in store.items()}}


# The checks ---------------------------------------------------------------------------------------


def check_nothing_lost(ledger: Ledger, store: Store) -> None:
    """Each acknowledged token is in the store at its sequence, or its document was written
    again later; and the store holds nothing no writer wrote."""
    written = ledger.failed | ledger.acked.keys()
    for doc_id, (_, token) in store.items():
        assert token in written, f"{doc_id} holds {token}, which no writer wrote"
    for token, (doc_id, sequence) in ledger.acked.items():
        assert doc_id in store, f"acknowledged {token} ({doc_id} at {sequence}) is not stored"
        now, holds = store[doc_id]
        assert now >= sequence, f"{doc_id} is at {now}, before acknowledged {token} at {sequence}"
        if now == sequence:
            assert holds == token, f"{doc_id} holds {holds} at {sequence}, acknowledged: {token}"


def check_nothing_doubled(ledger: Ledger, seen: Iterable[Recorder]) -> None:
    """No token at two sequences in any subscriber's history, and an acknowledged token, if
    seen, at the sequence its writer was told."""
    for recorder in seen:
        for token, sequences in recorder.tokens().items():
            assert len(sequences) == 1, f"{recorder.name} saw {token} at {sorted(sequences)}"
            if token in ledger.acked:
                _, sequence = ledger.acked[token]
                assert sequences == {sequence}, (
                    f"{recorder.name} saw {token} at {sequences}, acknowledged at {sequence}"
                )


async def check_copies(seen: Iterable[Recorder], head: int, store: Store) -> None:
    """Every subscriber's copy equals the store, and none had to start over."""
    for recorder in seen:
        await recorder.caught_up(head)
        assert recorder.copy.documents == as_copy(store), f"{recorder.name}'s copy differs"
        restarts = recorder.count(ChangeType.RESYNC) + recorder.count(ChangeType.SNAPSHOT_BEGIN)
        assert restarts == 0, f"{recorder.name} got a RESYNC or a snapshot"


async def stream_leader(cluster: NatsCluster) -> NatsServer:
    """The nats-server that leads the stream's replicas."""
    connection = await nats.connect(
        servers=cluster.urls.split(","), connect_timeout=2, allow_reconnect=False
    )
    try:
        info = await connection.jetstream(timeout=5).stream_info("PEAT")
    finally:
        await connection.close()
    assert info.cluster is not None
    return next(server for server in cluster.servers if server.name == info.cluster.leader)


# Writes one at a time -----------------------------------------------------------------------------


async def put_token(ledger: Ledger, writer: str, client: Client, doc_id: str) -> str:
    """One put with a new token, recorded in `ledger`; returns the token."""
    token = f"{writer}-{len(ledger.acked) + len(ledger.failed)}.0"  # each put adds one
    try:
        sequence = await client.put(COLLECTION, doc_id, token_document(token))
    except Unavailable as exc:
        ledger.record_failure(writer, [token], exc)
        raise
    ledger.record(writer, [token], [doc_id], [sequence])
    return token


async def until_disconnected(client: Client) -> None:
    while True:
        if not (await client.status()).connected:
            return
        await asyncio.sleep(0.05)


async def until_stored(ledger: Ledger, writer: str, client: Client, doc_id: str) -> str:
    """Retry a put until it is stored: after a restart, NATS elects its leaders again."""
    while True:
        try:
            return await put_token(ledger, writer, client, doc_id)
        except Unavailable:
            await asyncio.sleep(0.2)


# The tests ----------------------------------------------------------------------------------------


def test_killing_the_stream_leader_under_write_load_loses_and_doubles_no_write(
    nats_cluster: NatsCluster, start_sidecar: StartSidecar
) -> None:
    """kill -9 of the nats-server that leads the stream while writers on three sidecars
    write: writes fail during the election, and go on after it."""
    sidecars = sidecars_on(nats_cluster, start_sidecar)

    async def scenario() -> None:
        clients = [Client(sidecar.address) for sidecar in sidecars]
        ledger = Ledger()
        async with recorders(clients) as seen:
            async with writing(zip("abc", clients, strict=True), ledger):
                await eventually(lambda: len(ledger.acked) >= 150, seconds=20, what="writes")
                leader = await within(stream_leader(nats_cluster))
                leader.kill()
                killed_at = time.monotonic()
                before_kill = ledger.writes_acked.total()
                failed_before_kill = ledger.writes_failed.total()
                await wait_for_writes(ledger, "abc", 30, seconds=50)  # through the election
                # Back with its store: it catches up its replica of the stream, under load.
                await asyncio.to_thread(leader.start)
                await wait_for_writes(ledger, "abc", 30)
            head, store = await within(converged(clients), 40)
            check_nothing_lost(ledger, store)
            check_nothing_doubled(ledger, seen)
            await check_copies(seen, head, store)
        seen_tokens = set().union(*(recorder.tokens().keys() for recorder in seen))
        pauses = ", ".join(f"{ledger.longest_pause(writer, killed_at):.1f}" for writer in "abc")
        print(
            f"1 kill (stream leader {leader.name}) after {before_kill} acknowledged writes"
            f" ({failed_before_kill} failed before it), restarted later; in all"
            f" {ledger.summary()}; {len(ledger.failed & seen_tokens)} of the failed documents"
            f" were stored nonetheless; after the kill, no write through a, b, c was"
            f" acknowledged for {pauses} s at most; stream head {head}"
        )
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=80)


def test_a_sidecar_killed_and_restarted_catches_up_and_its_subscribers_resume_without_gap(
    nats_cluster: NatsCluster, start_sidecar: StartSidecar
) -> None:
    """kill -9 of a sidecar under write load, and a restart on the same address: it catches
    up with what the others wrote meanwhile; its subscriber, reconnecting by itself, and a
    new subscriber given the resume point of before the kill, miss nothing."""
    listen = f"tcp://127.0.0.1:{free_port()}"
    a = start_sidecar(nats_cluster.urls, *cluster_flags(), name="a")
    b = start_sidecar(nats_cluster.urls, *cluster_flags("--listen", listen), name="b")
    c = start_sidecar(nats_cluster.urls, *cluster_flags(), name="c")

    async def scenario() -> None:
        clients = [Client(sidecar.address) for sidecar in (a, b, c)]
        on_b = clients[1]
        ledger = Ledger()
        async with recorders(clients) as seen:
            async with writing(zip("abc", clients, strict=True), ledger):
                await wait_for_writes(ledger, "abc", 30)
                await seen[1].caught_up(max(sequence for _, sequence in ledger.acked.values()))
                start, since, epoch = seen[1].resume_point()
                b.kill()
                await wait_for_writes(ledger, "ac", 50)  # while b is down
                await asyncio.to_thread(b.start)
                await wait_for_writes(ledger, "abc", 30)
            head, store = await within(converged(clients), 40)
            async with Recorder(
                on_b, "a new subscriber on b", since=since, epoch=epoch, start=start
            ) as resumed:
                check_nothing_lost(ledger, store)
                check_nothing_doubled(ledger, [*seen, resumed])
                await check_copies([*seen, resumed], head, store)
            assert seen[1].subscription.reconnections >= 1  # it did lose b
        print(
            f"1 kill (sidecar b) at sequence {since}; in all {ledger.summary()};"
            f" stream head {head}; the subscriber on b reconnected"
            f" {seen[1].subscription.reconnections} times"
        )
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=80)


def test_with_all_of_nats_down_writes_fail_clearly_reads_and_feeds_go_on_then_all_recovers(
    nats_cluster: NatsCluster, start_sidecar: StartSidecar
) -> None:
    """kill -9 of the three nats-servers: writes fail with UNAVAILABLE and say that NATS is
    unreachable; reads, and the subscriptions' heartbeats, go on from each sidecar's store.
    Once the servers are back (same ports, same store dirs), writes succeed again, and the
    writes of each sidecar reach every subscriber."""
    write_timeout = 2.0
    sidecars = sidecars_on(
        nats_cluster, start_sidecar, *QUICK_HEARTBEATS, write_timeout=write_timeout
    )

    async def scenario() -> None:
        clients = [Client(sidecar.address) for sidecar in sidecars]
        writers = list(zip("abc", clients, strict=True))
        ledger = Ledger()
        async with recorders(clients) as seen:
            for doc_id in DOC_IDS[:5]:
                for writer, client in writers:
                    await put_token(ledger, writer, client, doc_id)
            _, before = await within(converged(clients))

            nats_cluster.kill()
            for client in clients:
                await within(until_disconnected(client))
            heartbeats = [recorder.count(ChangeType.HEARTBEAT) for recorder in seen]
            refusals: list[tuple[float, str]] = []
            for writer, client in writers:
                started = time.monotonic()
                with pytest.raises(Unavailable) as refused:
                    await put_token(ledger, writer, client, "outage")
                refusals.append((time.monotonic() - started, str(refused.value)))
                cause = refused.value.__cause__
                assert isinstance(cause, GRPCError), refused.value
                assert cause.status == Status.UNAVAILABLE
                assert "NATS" in str(refused.value), refused.value
                assert "the write was not stored" in str(refused.value), refused.value
            for client in clients:
                assert await store_of(client) == before
                assert await client.get(COLLECTION, "outage") is None
                status = await client.status()
                assert status.shared
                assert not status.connected
            for recorder, count in zip(seen, heartbeats, strict=True):
                await eventually(
                    lambda: recorder.count(ChangeType.HEARTBEAT) >= count + 3,  # noqa: B023
                    what=f"heartbeats at {recorder.name}",
                )
                assert recorder.subscription.reconnections == 0

            await asyncio.to_thread(nats_cluster.start)
            restarted = time.monotonic()
            after = [
                await within(until_stored(ledger, writer, client, f"after-{writer}"), 40)
                for writer, client in writers
            ]
            recovered_in = time.monotonic() - restarted
            for index in range(3):
                for writer, client in writers:
                    after.append(await put_token(ledger, writer, client, f"{writer}-{index}"))
            head, store = await within(converged(clients))
            check_nothing_lost(ledger, store)
            assert "outage" not in store  # every write of the outage said "not stored"
            check_nothing_doubled(ledger, seen)
            await check_copies(seen, head, store)
            for recorder in seen:  # the writes since the outage, of every sidecar, reached it
                assert set(after) <= recorder.tokens().keys(), recorder.name
            for client in clients:
                assert (await client.status()).connected
        print(
            "all 3 nats-servers killed: writes refused after"
            f" {', '.join(f'{seconds:.1f}' for seconds, _ in refusals)} s"
            f" (--nats-write-timeout {write_timeout:g}), saying {refusals[0][1]!r};"
            f" writes stored again {recovered_in:.1f} s after the restart; in all"
            f" {ledger.summary()}"
        )
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=80)


def test_a_sidecar_started_before_jetstream_has_a_metadata_leader_waits_for_one(
    tmp_path: Path,
) -> None:
    """A sidecar that joins a NATS cluster which has just started (or is electing its
    JetStream metadata leader) retries until JetStream answers, as it retries connecting:
    it used to exit at start-up with "nats: timeout"."""
    cluster = NatsCluster(tmp_path / "nats")
    sidecar = ServerProcess(
        tmp_path / "sidecar", "--nats", cluster.urls, *PRESENCE, *cluster_flags()
    )
    try:
        cluster.servers[0].start()  # alone: no quorum, so no metadata leader yet
        # `start` returns once the sidecar serves; the launcher may miss an exit that follows
        # the end of the output by a moment, so the test watches the process itself.
        threading.Thread(target=sidecar.start, kwargs={"must_start": False}, daemon=True).start()
        wait_until(lambda: sidecar.process is not None, what="the sidecar's process")
        sidecar.wait_for_log("connected to NATS")
        for server in cluster.servers[1:]:
            server.start()
        cluster.wait_for_jetstream()
        wait_until(lambda: sidecar.serving or not sidecar.running, timeout=30, what="serving")
        assert sidecar.serving, f"the sidecar exited:\n{sidecar.log}"

        async def scenario() -> None:
            async with Client(sidecar.address) as client:
                sequence = await client.put(COLLECTION, "d0", token_document("a-0.0"))
                document = await client.get(COLLECTION, "d0")
                assert document is not None
                assert document.sequence == sequence

        run_scenario(scenario, timeout=30)
    finally:
        sidecar.kill()
        cluster.kill()
