"""`ResilientSubscription` and `Backoff` against the real server.

The subscription must reconnect with capped exponential backoff and jitter, resume from the
last position it saw with the store's epoch (across graceful and `kill -9` restarts, with a
writer going on, and with no gap and no duplicate), advance its position on heartbeats, carry
on after a RESYNC with a snapshot, count a silent stream as lost, and raise a rejected request
instead of retrying it forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from peat_sync import wire
from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import (
    Backoff,
    ChangeType,
    Client,
    Event,
    Rejected,
    ResilientSubscription,
    ResyncReason,
    Unavailable,
)
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.client_library import (
    FAST_BACKOFF,
    QUICK_HEARTBEATS,
    store_documents,
    wait_for_purge,
)
from tests.helpers.links import Link
from tests.helpers.servers import StartServer, restart
from tests.helpers.waiting import eventually, run_scenario, within


@dataclass
class Reader:
    """Reads a subscription, keeping each event with the number of streams the subscription
    had lost before it arrived."""

    subscription: ResilientSubscription
    events: list[tuple[int, Event]] = field(default_factory=list)

    async def next(self) -> Event:
        event = await anext(self.subscription)
        self.events.append((self.subscription.reconnections, event))
        return event

    async def until(self, done: Callable[[Event], bool]) -> list[Event]:
        """Events up to and including the first one `done` accepts."""
        events = [await self.next()]
        while not done(events[-1]):
            events.append(await self.next())
        return events

    async def through(self, sequence: int) -> list[Event]:
        """Events until the subscription's position reaches `sequence` (none if it has)."""
        events = []
        while (self.subscription.position or -1) < sequence:
            events.append(await self.next())
        return events

    @property
    def changes(self) -> list[Event]:
        return [event for _, event in self.events if event.is_change]

    def first_after_reconnecting(self) -> Event:
        return next(event for lost, event in self.events if lost)


def kinds(events: list[Event]) -> list[ChangeType]:
    return [event.type for event in events]


# ---------------------------------------------------------------------------------------------
# Backoff


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    """The n-th attempt in a row waits between half and all of `initial * 2**n`, capped at
    `maximum`, and the waits are spread (jitter); a huge attempt number stays at the cap."""
    assert Backoff() == Backoff(initial=0.1, maximum=10.0)
    backoff = Backoff(initial=0.1, maximum=10.0)
    for attempt in range(40):
        step = min(10.0, 0.1 * 2**attempt)
        delays = [backoff.delay(attempt) for _ in range(100)]
        assert all(step / 2 <= delay <= step for delay in delays), (attempt, step, delays)
        assert len(set(delays)) > 1, "no jitter"
    assert 5.0 <= backoff.delay(10**9) <= 10.0


@dataclass(frozen=True)
class RecordingBackoff(Backoff):
    """A `Backoff` that remembers each attempt number it was asked for."""

    attempts: list[int] = field(default_factory=list)

    def delay(self, attempt: int) -> float:
        self.attempts.append(attempt)
        return super().delay(attempt)


def test_reconnects_with_growing_backoff_until_the_server_is_back(
    socket_dir: Path, start_unix_server: StartServer
) -> None:
    """While nobody serves the address, each failed attempt waits with the next backoff step;
    the first event resets the count, so the next outage starts from the first step."""
    backoff = RecordingBackoff(initial=0.01, maximum=0.05)

    async def scenario() -> None:
        async with (
            Client(f"unix://{socket_dir / 'peat.sock'}") as client,
            client.subscribe(backoff=backoff) as subscription,
        ):
            first = asyncio.create_task(anext(subscription))
            await eventually(lambda: len(backoff.attempts) >= 5, what="5 failed attempts")
            server = await asyncio.to_thread(start_unix_server)
            assert (await within(first)).type is ChangeType.HEARTBEAT
            failures = len(backoff.attempts)
            assert backoff.attempts == list(range(failures))
            assert subscription.reconnections == failures

            backoff.attempts.clear()
            await restart(server, "kill -9")
            assert (await anext(subscription)).type is ChangeType.HEARTBEAT
            assert backoff.attempts[0] == 0
            assert subscription.reconnections == failures + len(backoff.attempts)

    run_scenario(scenario, timeout=30)


# ---------------------------------------------------------------------------------------------
# Resuming


async def write_until(
    client: Client, stop: asyncio.Event, acknowledged: dict[int, str], limit: int = 2000
) -> None:
    """Put a new document to `w` after another, until `stop`; remember each acknowledged put.
    A put that fails retries with a new doc_id: one that failed may still have committed,
    and then it is one more document of the store, never a second version of one."""
    for number in range(limit):
        if stop.is_set():
            return
        doc_id = f"w{number}"
        while True:
            try:
                acknowledged[await client.put("w", doc_id, {"n": number})] = doc_id
                break
            except Unavailable:  # the server is restarting
                doc_id += "+"
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.003)  # a steady pace, not a flood
    raise AssertionError("the writer was never stopped")


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_resumes_across_a_restart_without_gap_or_duplicate(
    socket_dir: Path, start_unix_server: StartServer, how: str
) -> None:
    """A writer goes on while the subscription is cut off, the server restarts, and the
    subscription comes back. It resumes from the last position it saw, with the epoch: the
    restart emptied the replay log, so a catch-up from that position follows, and no RESYNC
    or snapshot. Every document is written once, so every committed sequence must arrive
    exactly once: no gap, no duplicate, every acknowledged put among them, and the documents
    received are the store's."""
    server = start_unix_server()

    async def scenario() -> None:
        async with (
            Link(socket_dir / "link.sock", server) as link,
            Client(server.address) as writer,
            Client(link.address) as client,
            client.subscribe(["w"], backoff=FAST_BACKOFF) as subscription,
        ):
            reader = Reader(subscription)
            assert (await reader.next()).type is ChangeType.HEARTBEAT
            epoch = subscription.epoch
            acknowledged: dict[int, str] = {}
            stop = asyncio.Event()
            writing = asyncio.create_task(write_until(writer, stop, acknowledged))

            async def more_writes() -> None:
                written = len(acknowledged)
                await eventually(lambda: len(acknowledged) >= written + 5, what="writes")

            await reader.until(lambda _: len(reader.changes) >= 10)
            position = subscription.position
            await link.cut()
            await more_writes()  # committed while the subscription cannot see them
            await restart(server, how)
            await more_writes()  # committed while the subscription is still away
            await link.restore()
            await reader.until(lambda _: len(reader.changes) >= 40)
            stop.set()
            await within(writing)
            head = (await client.status()).head_sequence
            await reader.through(head)

            resumed = reader.first_after_reconnecting()
            assert (resumed.type, resumed.sequence) == (ChangeType.CATCH_UP_BEGIN, position)
            assert resumed.epoch == subscription.epoch == epoch
            assert set(kinds([event for _, event in reader.events])) <= {
                ChangeType.HEARTBEAT,
                ChangeType.CATCH_UP_BEGIN,
                ChangeType.CATCH_UP_END,
                ChangeType.UPSERT,
            }
            assert [change.sequence for change in reader.changes] == list(range(1, head + 1))
            delivered = {change.doc_id: change.document for change in reader.changes}
            assert set(acknowledged.values()) <= set(delivered)
            assert await store_documents(client, ["w"]) == {"w": delivered}

    run_scenario(scenario, timeout=40)


def test_resumes_with_the_epoch_so_a_new_store_means_a_resync(
    start_unix_server: StartServer, tmp_path: Path
) -> None:
    """The subscription sends the epoch with its position. A server on a new data dir holds
    other changes under the same sequence numbers; from the epoch it answers RESYNC
    UNKNOWN_EPOCH, and the snapshot that follows replaces what came from the old store
    (without the epoch, the position alone would resume silently into the wrong history)."""
    old = start_unix_server()

    async def scenario() -> None:
        async with (
            Client(old.address) as client,
            client.subscribe(["a"], backoff=FAST_BACKOFF) as subscription,
        ):
            reader = Reader(subscription)
            await reader.next()
            await client.put("a", "old", {})
            await reader.through(await client.put("a", "older", {}))
            old_epoch = subscription.epoch
            await asyncio.to_thread(old.stop)
            new = await asyncio.to_thread(start_unix_server, data_dir=tmp_path / "new")
            for number in range(4):
                head = await client.put("a", f"new{number}", {"n": number})
            new_epoch = (await client.status()).epoch
            assert new_epoch != old_epoch

            resync = await reader.next()
            assert (resync.type, resync.resync_reason) == (
                ChangeType.RESYNC,
                ResyncReason.UNKNOWN_EPOCH,
            )
            snapshot = await reader.until(lambda event: event.type is ChangeType.CATCH_UP_END)
            assert kinds(snapshot) == [
                ChangeType.SNAPSHOT_BEGIN,
                *[ChangeType.UPSERT] * 4,
                ChangeType.CATCH_UP_END,
            ]
            assert [event.doc_id for event in snapshot[1:-1]] == [f"new{n}" for n in range(4)]
            assert (subscription.position, subscription.epoch) == (head, new_epoch)
            assert new.serving

    run_scenario(scenario, timeout=30)


def test_heartbeats_advance_the_position_of_a_quiet_subscription(
    start_server: StartServer,
) -> None:
    """A subscription to a collection nobody writes gets only heartbeats while another
    collection changes, and its position follows them to the head."""
    server = start_server(*QUICK_HEARTBEATS)

    async def scenario() -> None:
        async with (
            Client(server.address) as client,
            client.subscribe(["quiet"]) as subscription,
        ):
            opening = await anext(subscription)
            assert (opening.type, opening.sequence, subscription.position) == (
                ChangeType.HEARTBEAT,
                0,
                0,
            )
            for number in range(3):
                head = await client.put("busy", f"b{number}", {})
            events = await Reader(subscription).through(head)
            assert set(kinds(events)) == {ChangeType.HEARTBEAT}
            assert subscription.position == events[-1].sequence == head

    run_scenario(scenario, timeout=20)


@pytest.mark.parametrize("snapshot", [False, True], ids=["live-only", "with-snapshots"])
def test_a_resync_brings_a_snapshot_then_live_changes(
    start_server: StartServer, snapshot: bool
) -> None:
    """A `since` the server cannot resume from (a wrong epoch, a sequence ahead of the head)
    opens with RESYNC and the reason. Then a snapshot follows, whether or not the request
    asked for snapshots (the subscription re-subscribes with one): SNAPSHOT_BEGIN, the current
    documents, CATCH_UP_END at the head; then live changes, with the position following."""
    server = start_server()

    async def scenario() -> None:
        async with Client(server.address) as client:
            await client.put("a", "1", {"n": 1})
            await client.put("b", "x", {})
            head = await client.put("a", "2", {"n": 2})
            epoch = (await client.status()).epoch
            for since, wrong_epoch, reason in (
                (head, "not-this-store", ResyncReason.UNKNOWN_EPOCH),
                (head + 10, None, ResyncReason.SEQUENCE_AHEAD),
            ):
                async with client.subscribe(
                    ["a"], since=since, epoch=wrong_epoch, snapshot=snapshot
                ) as subscription:
                    reader = Reader(subscription)
                    resync = await reader.next()
                    assert (resync.type, resync.resync_reason) == (ChangeType.RESYNC, reason)
                    assert (resync.sequence, resync.epoch) == (head, epoch)
                    assert subscription.position is None
                    begin, *documents, end = await reader.until(
                        lambda event: event.type is ChangeType.CATCH_UP_END
                    )
                    assert begin.type is ChangeType.SNAPSHOT_BEGIN
                    assert {"a": {e.doc_id: e.document for e in documents}} == (
                        await store_documents(client, ["a"])
                    )
                    assert set(kinds(documents)) == {ChangeType.UPSERT}
                    assert subscription.position == end.sequence == head
                    assert subscription.epoch == epoch
                    head = await client.put("a", "live", {"since": since})
                    live = await reader.until(lambda event: event.is_change)
                    assert (live[-1].doc_id, live[-1].sequence) == ("live", head)
                    assert subscription.position == head

    run_scenario(scenario, timeout=20)


def test_history_compacted_after_restarts_brings_a_snapshot(
    start_unix_server: StartServer,
) -> None:
    """The subscription was away across two restarts. Between them, a document it had was
    deleted; the second restart emptied the replay log that held the delete, and purged its
    tombstone (`--tombstone-retention 0`). Resuming from its old position, the subscription
    gets RESYNC HISTORY_COMPACTED, then a snapshot without the deleted document, then live
    changes."""
    server = start_unix_server("--tombstone-retention", "0")

    async def scenario() -> None:
        async with (
            Client(server.address) as client,
            client.subscribe(["a"], backoff=FAST_BACKOFF) as subscription,
        ):
            reader = Reader(subscription)
            await reader.next()
            await client.put("a", "kept", {})
            await reader.through(await client.put("a", "gone", {}))
            position = subscription.position
            # The subscription reads nothing meanwhile: it is away for all of this.
            await restart(server, "graceful")
            deleted = await client.delete("a", "gone")
            head = await client.put("a", "new", {})
            await restart(server, "kill -9")
            await wait_for_purge(client, deleted)  # the purge at start runs beside serving

            events = await reader.until(lambda event: event.type is ChangeType.CATCH_UP_END)
            assert [(e.type, e.doc_id) for e in events] == [
                (ChangeType.RESYNC, ""),
                (ChangeType.SNAPSHOT_BEGIN, ""),
                (ChangeType.UPSERT, "kept"),
                (ChangeType.UPSERT, "new"),
                (ChangeType.CATCH_UP_END, ""),
            ]
            assert events[0].resync_reason is ResyncReason.HISTORY_COMPACTED
            assert position is not None
            assert events[0].catch_up_floor >= deleted > position
            assert subscription.position == events[-1].sequence == head
            head = await client.put("a", "live", {})
            assert (await reader.until(lambda event: event.is_change))[-1].sequence == head

    run_scenario(scenario, timeout=30)


def test_a_silent_stream_counts_as_lost(
    start_unix_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that stops answering (SIGSTOP) sends no TCP reset and no error: after
    `silence_timeout` without an event or a heartbeat, the subscription gives up the stream
    and reconnects, and once the server runs again (SIGCONT) it resumes without losing or
    repeating a change, including one committed just before the server stopped."""
    server = start_unix_server(*QUICK_HEARTBEATS)
    assert server.process is not None
    pid = server.process.pid
    caplog.set_level(logging.WARNING, logger="peat_sync.client")

    async def scenario() -> None:
        async with (
            Client(server.address) as client,
            client.subscribe(["a"], backoff=FAST_BACKOFF, silence_timeout=2.0) as subscription,
        ):
            reader = Reader(subscription)
            await reader.next()
            await reader.through(await client.put("a", "before", {}))
            await client.put("a", "unread", {})
            assert subscription.reconnections == 0  # heartbeats kept the stream alive
            reading = asyncio.create_task(reader.until(lambda event: event.doc_id == "after"))
            os.kill(pid, signal.SIGSTOP)
            try:
                await eventually(lambda: subscription.reconnections >= 1, what="a reconnection")
            finally:
                os.kill(pid, signal.SIGCONT)
            head = await client.put("a", "after", {})
            await within(reading)
            assert [(c.doc_id, c.sequence) for c in reader.changes] == [
                ("before", 1),
                ("unread", 2),
                ("after", head),
            ]
            assert head == 3

    run_scenario(scenario, timeout=30)
    assert "no event or heartbeat for 2 s" in caplog.text


def test_a_rejected_request_is_raised_not_retried(server: ServerProcess) -> None:
    """A collection name the server refuses (empty, over the 512-byte limit, with a control
    character) raises `Rejected` with INVALID_ARGUMENT from the first iteration, without a
    single reconnection, and leaves no stream open."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            for collection, message in (
                ("", "collection must not be empty"),
                ("c" * 513, "collection is 513 bytes long"),
                ("new\nline", "control characters"),
            ):
                async with client.subscribe(
                    ["fine", collection], backoff=FAST_BACKOFF
                ) as subscription:
                    with pytest.raises(Rejected, match=message) as raised:
                        await anext(subscription)
                    assert raised.value.status is Status.INVALID_ARGUMENT
                    assert subscription.reconnections == 0
            assert (await client.status()).subscribers == 0

    run_scenario(scenario, timeout=20)


def test_a_server_at_its_subscriber_limit_refuses_then_takes_a_waiting_subscription(
    start_server: StartServer,
) -> None:
    """With `--max-subscribers 2`, a third Subscribe gets RESOURCE_EXHAUSTED naming the flag,
    the server warns once, and the two open streams go on. A resilient subscription treats
    the limit as a busy server: it retries with backoff, and gets in, from its position, once
    a stream closes."""
    server = start_server("--max-subscribers", "2")

    async def scenario() -> None:
        async with Client(server.address) as client:
            first = await client.put("c", "d1", {"n": 1})
            async with (
                client.subscribe(["c"], since=0, backoff=FAST_BACKOFF) as one,
                client.subscribe(["c"], since=0, backoff=FAST_BACKOFF) as two,
            ):
                for subscription in (one, two):  # both open: each has its first event
                    assert (await next_change(subscription)).sequence == first
                channel = client.channel
                async with channel.request(
                    wire.SUBSCRIBE,
                    Cardinality.UNARY_STREAM,
                    pb.SubscribeRequest,
                    pb.DocumentChange,
                ) as refused:
                    await refused.send_message(pb.SubscribeRequest(), end=True)
                    with pytest.raises(GRPCError) as raised:
                        await refused.recv_message()
                assert raised.value.status is Status.RESOURCE_EXHAUSTED
                assert "--max-subscribers" in (raised.value.message or "")

                async with client.subscribe(["c"], since=0, backoff=FAST_BACKOFF) as waiting:
                    waited = asyncio.create_task(next_change(waiting))
                    await eventually(lambda: waiting.reconnections >= 2, what="two retries")
                    assert not waited.done()
                    second = await client.put("c", "d2", {"n": 2})
                    assert (await next_change(one)).sequence == second  # the open ones go on
                    await one.aclose()
                    assert (await within(waited, 10)).sequence == first
                    assert (await next_change(waiting)).sequence == second
            # Said once for the whole spell at the limit, not once per refusal.
            refusing = "refusing new subscriptions until one closes"
            await eventually(lambda: refusing in server.log, what="the limit's warning")
            assert server.log.count(refusing) == 1

    run_scenario(scenario, timeout=30)


async def next_change(subscription: ResilientSubscription) -> Event:
    """Asyncio-flavoured: the subscription's next document change, past heartbeats."""
    async for event in subscription:
        if event.type in (ChangeType.UPSERT, ChangeType.DELETE):
            return event
    raise AssertionError("the subscription ended")
