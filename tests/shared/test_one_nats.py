"""Three sidecars on one nats-server: one document space, one sequence, one epoch."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import nats
import pytest
from grpclib.const import Status

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.nats_servers import NatsServer
from peat_sync.client import ChangeType, Client, PreconditionFailed, Rejected, ResyncReason
from peat_sync.client.subscription import ResilientSubscription
from tests.helpers.client_library import (
    FAST_BACKOFF,
    Documents,
    applied_everywhere,
    store_documents,
)
from tests.helpers.metrics import scrape
from tests.helpers.servers import StartServer
from tests.helpers.waiting import run_scenario, within
from tests.shared.conftest import StartSidecar

COLLECTIONS = ("fleet", "commands")


def three_sidecars(nats_server: NatsServer, start_sidecar: StartSidecar) -> list[ServerProcess]:
    return [start_sidecar(nats_server.url, name=name) for name in ("a", "b", "c")]


async def converged(clients: list[Client]) -> Documents:
    """Wait until every sidecar has applied the stream's head; return their (equal) stores."""
    await applied_everywhere(clients)
    stores = [await store_documents(client, COLLECTIONS) for client in clients]
    for store in stores[1:]:
        assert store == stores[0]
    return stores[0]


def test_writes_on_every_sidecar_reach_every_store_and_every_subscriber(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    sidecars = three_sidecars(nats_server, start_sidecar)

    async def scenario() -> None:
        clients = [Client(sidecar.address) for sidecar in sidecars]
        statuses = [await client.status() for client in clients]
        assert {status.epoch for status in statuses} == {statuses[0].epoch}
        assert all(status.shared and status.connected for status in statuses)
        assert {status.stream for status in statuses} == {"PEAT"}
        mirrors = [client.mirror(backoff=FAST_BACKOFF) for client in clients]
        for mirror in mirrors:
            await mirror.__aenter__()
            await within(mirror.wait_ready())
        rng = random.Random(7)

        async def writer(client: Client, name: str) -> int:
            last = 0
            for step in range(40):
                collection = rng.choice(COLLECTIONS)
                doc_id = f"d{rng.randrange(12)}"
                if step % 10 == 9:
                    sequences = await client.write(
                        [(collection, f"{name}-batch-{step}-{i}", {"i": i}) for i in range(5)]
                    )
                    last = max(last, *sequences)
                elif rng.random() < 0.25:
                    last = max(last, await client.delete(collection, doc_id))
                else:
                    document = {"by": name, "step": step}
                    last = max(last, await client.put(collection, doc_id, document))
            return last

        lasts = await asyncio.gather(
            *(writer(client, name) for client, name in zip(clients, "abc", strict=True))
        )
        store = await within(converged(clients), 20)
        for mirror in mirrors:
            await within(mirror.wait_for(max(lasts)), 20)
            assert mirror.documents == store
        for mirror in mirrors:
            await mirror.__aexit__(None, None, None)
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=60)


async def events_until(
    subscription: ResilientSubscription, sequence: int
) -> list[tuple[int, ChangeType, str]]:
    """The events of `subscription` up to and including `sequence`, controls left out."""
    seen: list[tuple[int, ChangeType, str]] = []
    async for event in subscription:
        if event.type in (ChangeType.UPSERT, ChangeType.DELETE):
            seen.append((event.sequence, event.type, event.doc_id))
        assert event.type != ChangeType.RESYNC, event
        if event.sequence >= sequence:
            return seen
    raise AssertionError("the subscription ended")


def test_a_subscriber_moves_to_another_sidecar_without_gap_or_duplicate(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """A resume token `(since_sequence, epoch)` from one sidecar is valid on every other:
    the stream's sequence and epoch are theirs."""
    sidecars = three_sidecars(nats_server, start_sidecar)

    async def scenario() -> None:
        a, b, c = (Client(sidecar.address) for sidecar in sidecars)
        first = [await b.put("fleet", f"d{i}", {"i": i}) for i in range(10)]
        async with a.subscribe(["fleet"], since=0) as on_a:
            before = await within(events_until(on_a, first[-1]))
            resume = (on_a.position, on_a.epoch)
        assert [sequence for sequence, _, _ in before] == first
        later = [await c.put("fleet", f"d{i}", {"i": -i}) for i in range(5)]
        later.append(await b.delete("fleet", "d7"))
        since, epoch = resume
        assert since == first[-1]
        async with c.subscribe(["fleet"], since=since, epoch=epoch) as on_c:
            after = await within(events_until(on_c, later[-1]))
        assert [sequence for sequence, _, _ in after] == later
        assert after[-1] == (later[-1], ChangeType.DELETE, "d7")
        for client in (a, b, c):
            client.close()

    run_scenario(scenario, timeout=60)


async def claim(
    client: Client, document: dict[str, int], expected: int
) -> int | PreconditionFailed:
    try:
        return await client.put("commands", "c1", document, expected_sequence=expected)
    except PreconditionFailed as exc:
        return exc


def test_expected_sequence_races_between_sidecars_have_one_winner(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """Compare-and-set across the fleet: writers on two sidecars that expect the same
    sequence of a document; exactly one wins, and the others learn its sequence."""
    sidecars = three_sidecars(nats_server, start_sidecar)

    async def scenario() -> None:
        clients = [Client(sidecar.address) for sidecar in sidecars[:2]]
        for round_ in range(5):
            start = await clients[0].put("commands", "c1", {"round": round_, "state": "new"})

            outcomes = await asyncio.gather(
                *(
                    claim(clients[who % 2], {"round": round_, "owner": who}, start)
                    for who in range(6)
                )
            )
            won = [outcome for outcome in outcomes if isinstance(outcome, int)]
            lost = [outcome for outcome in outcomes if isinstance(outcome, PreconditionFailed)]
            assert len(won) == 1, outcomes
            assert {exc.current_sequence for exc in lost} <= {won[0]}
            assert len(lost) == 5
        # "Must not exist" holds for a deleted document, whose stream subject keeps a
        # tombstone, and fails for a live one.
        deleted = await clients[1].delete("commands", "c1")
        assert deleted > 0
        assert await clients[0].put("commands", "c1", {"back": 1}, expected_sequence=0) > deleted
        with pytest.raises(PreconditionFailed) as refused:
            await clients[1].put("commands", "c1", {"again": 1}, expected_sequence=0)
        live = await clients[1].get("commands", "c1")
        assert live is not None
        assert refused.value.current_sequence == live.sequence
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=60)


def test_peers_sync_stats_and_sync_control(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """ListPeers shows the other sidecars of the stream; GetSyncStats its progress;
    StopSync pauses applying (and refuses writes, which could not be read back) until
    StartSync, after which the sidecar catches up."""
    sidecars = three_sidecars(nats_server, start_sidecar)

    async def scenario() -> None:
        a, b, _ = clients = [Client(sidecar.address) for sidecar in sidecars]

        async def peers_of_a() -> set[tuple[str, str]]:
            return {(peer.endpoint_id, peer.addresses[0]) for peer in await a.list_peers()}

        expected = {("b", f"tcp://{sidecars[1].address}"), ("c", f"tcp://{sidecars[2].address}")}
        for _ in range(200):
            if await peers_of_a() == expected:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"a lists {await peers_of_a()}, not {expected}")
        assert all(peer.connected for peer in await a.list_peers())
        assert (await a.status()).connected_peers == 2

        sequence = await b.put("fleet", "x", {"v": 1})
        await within(converged(clients))
        stats = await a.sync_stats()
        assert stats.sync_active
        assert (stats.applied_sequence, stats.stream_head, stats.lag) == (sequence, sequence, 0)
        assert stats.bytes_received > 0

        await a.stop_sync()
        assert not (await a.sync_stats()).sync_active
        with pytest.raises(Rejected, match="StartSync") as refused:
            await a.put("fleet", "y", {"v": 2})
        assert refused.value.status == Status.FAILED_PRECONDITION
        later = await b.put("fleet", "x", {"v": 3})
        await asyncio.sleep(0.5)
        paused = await a.get("fleet", "x")
        assert paused is not None
        assert paused.data == {"v": 1}  # not applied
        await a.start_sync()
        await within(converged(clients))
        document = await a.get("fleet", "x")
        assert document is not None
        assert (document.data, document.sequence) == ({"v": 3}, later)
        for client in clients:
            client.close()

    run_scenario(scenario, timeout=60)


def test_sidecars_that_start_empty_or_restart_after_kill_9_catch_up(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    a, b = start_sidecar(nats_server.url, name="a"), start_sidecar(nats_server.url, name="b")

    async def scenario() -> None:
        async with Client(a.address) as on_a:
            await on_a.write([("fleet", f"d{i}", {"i": i}) for i in range(300)])
            b.kill()
            for i in range(0, 300, 3):
                await on_a.put("fleet", f"d{i}", {"i": i, "again": True})
            await on_a.delete("fleet", "d1")
            await asyncio.to_thread(b.start)
            c = start_sidecar(nats_server.url, name="c")  # an empty data dir
            async with Client(b.address) as on_b, Client(c.address) as on_c:
                store = await within(converged([on_a, on_b, on_c]), 20)
        assert len(store["fleet"]) == 299
        assert store["fleet"]["d3"] == {"i": 3, "again": True}

    run_scenario(scenario, timeout=60)


def test_a_recreated_stream_is_a_new_epoch(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """Deleting the stream and making it anew (here by a sidecar that finds it gone) gives it
    a new epoch: the sidecars empty their stores to follow it, a live subscriber gets RESYNC
    (EPOCH_CHANGED), and one resuming with the old epoch is told the same."""
    sidecar = start_sidecar(nats_server.url)

    async def scenario() -> None:
        async with Client(sidecar.address) as client:
            old = await client.put("fleet", "x", {"v": 1})
            old_epoch = (await client.status()).epoch
            async with client.subscribe(["fleet"], since=0) as live:
                await within(events_until(live, old))
                connection = await nats.connect(nats_server.url)
                await connection.jetstream().delete_stream("PEAT")
                await connection.close()
                async for event in live:
                    if event.type == ChangeType.RESYNC:
                        assert event.resync_reason == ResyncReason.EPOCH_CHANGED, event
                        assert event.epoch != old_epoch
                        break
            status = await client.status()
            assert status.epoch != old_epoch
            assert await client.list_ids("fleet") == []
            async with client.subscribe(["fleet"], since=old, epoch=old_epoch) as resumed:
                first = await within(anext(aiter(resumed)))
            assert (first.type, first.resync_reason) == (
                ChangeType.RESYNC,
                ResyncReason.EPOCH_CHANGED,
            )

    run_scenario(scenario, timeout=60)


def test_a_data_dir_serves_one_mode_only(
    nats_server: NatsServer, start_sidecar: StartSidecar, start_server: StartServer, tmp_path: Path
) -> None:
    """A single node's store holds documents that exist nowhere else: shared mode refuses to
    replace them with the stream's. A replica of a stream is refused without --nats: its
    sequences are the stream's."""
    single = start_server(data_dir=tmp_path / "single")

    async def put_one() -> None:
        async with Client(single.address) as client:
            await client.put("fleet", "x", {"v": 1})

    run_scenario(put_one, timeout=20)
    single.stop()
    refused = ServerProcess(tmp_path / "single", "--nats", nats_server.url).start(must_start=False)
    assert refused.process is not None
    assert refused.process.returncode == 1
    assert "holds a single node's documents" in refused.log
    assert "Traceback" not in refused.log

    replica = start_sidecar(nats_server.url, name="r")
    assert replica.stop() == 0, replica.log
    refused = start_server(data_dir=replica.data_dir, must_start=False)
    assert refused.process is not None
    assert refused.process.returncode == 1
    assert "replica of the NATS stream PEAT" in refused.log
    assert "Traceback" not in refused.log


def test_metrics_of_shared_mode(nats_server: NatsServer, start_sidecar: StartSidecar) -> None:
    """What to alert on is exported: the NATS connection, sync, and the stream's lag."""
    sidecar = start_sidecar(nats_server.url, "--metrics-listen", "tcp://127.0.0.1:0")

    async def scenario() -> None:
        async with Client(sidecar.address) as client:
            await client.put("fleet", "x", {"v": 1})
            await within(converged([client]))

    run_scenario(scenario, timeout=30)
    metrics = scrape(sidecar)
    assert metrics[("peat_nats_connected", ())] == 1
    assert metrics[("peat_sync_active", ())] == 1
    assert metrics[("peat_stream_head_sequence", ())] == 1
    assert metrics[("peat_stream_lag", ())] == 0


def test_a_subscriber_resuming_on_a_sidecar_that_is_behind_waits_for_it(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """A position from a sidecar ahead is not refused as "ahead" by one that has not applied
    it yet: that one learns the stream's head, and delivers from the position once there."""
    a, b = start_sidecar(nats_server.url, name="a"), start_sidecar(nats_server.url, name="b")

    async def scenario() -> None:
        async with Client(a.address) as on_a, Client(b.address) as on_b:
            await on_b.stop_sync()
            written = [await on_a.put("fleet", f"d{i}", {"i": i}) for i in range(6)]
            since, epoch = written[2], (await on_a.status()).epoch
            assert (await on_b.status()).head_sequence < since
            async with on_b.subscribe(["fleet"], since=since, epoch=epoch) as on_b_feed:
                await on_b.start_sync()
                events = await within(events_until(on_b_feed, written[-1]))
        assert [sequence for sequence, _, _ in events] == written[3:]

    run_scenario(scenario, timeout=30)


def test_a_stream_that_lost_acknowledged_messages_gets_a_new_epoch(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    """A stream that ends below what a sidecar applied (NATS lost acknowledged messages; here
    it is made anew with the old epoch) would number new writes with sequences the sidecars
    already gave other changes: it gets a new epoch, and every subscriber is told."""
    sidecar = start_sidecar(nats_server.url)

    async def scenario() -> None:
        async with Client(sidecar.address) as client:
            for i in range(3):
                await client.put("fleet", f"d{i}", {"i": i})
            old_epoch = (await client.status()).epoch
            async with client.subscribe(["fleet"], since=0) as live:
                await within(events_until(live, 3))
                connection = await nats.connect(nats_server.url)
                stream = await connection.jetstream().stream_info("PEAT")
                await connection.jetstream().delete_stream("PEAT")
                await connection.jetstream().add_stream(stream.config)
                await connection.close()
                async for event in live:
                    if event.type == ChangeType.RESYNC:
                        assert event.resync_reason == ResyncReason.EPOCH_CHANGED, event
                        break
            status = await client.status()
            assert status.epoch != old_epoch
            assert status.head_sequence == 0
            assert await client.put("fleet", "after", {"v": 1}) == 1
            assert await client.list_ids("fleet") == ["after"]
        assert "NATS lost acknowledged messages" in sidecar.log

    run_scenario(scenario, timeout=60)
