"""Collection configs in shared mode: a config is a document of the stream, so one set on a
sidecar is enforced on every other; and every sidecar runs the expiry, whose removals are
conditional on the document's sequence, so that each expired document is removed once."""

from __future__ import annotations

import asyncio

import pytest
from grpclib.const import Status

from peat_sync.bench.nats_servers import NatsServer
from peat_sync.client import ChangeType, Client, Rejected
from peat_sync.client.subscription import ResilientSubscription
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.client_library import FAST_BACKOFF
from tests.helpers.waiting import run_scenario, within
from tests.shared.conftest import StartSidecar

BEACONS = 20


async def config_of(client: Client, collection: str) -> pb.CollectionConfig:
    """Poll until the sidecar has applied a config of `collection`."""
    while True:
        config = await client.get_collection_config(collection)
        if config is not None:
            return config
        await asyncio.sleep(0.05)


async def settled(clients: list[Client]) -> int:
    """Wait until every sidecar has applied the stream's head, the same one; return it."""
    while True:
        stats = [await client.sync_stats() for client in clients]
        heads = {(each.applied_sequence, each.stream_head) for each in stats}
        if len(heads) == 1 and stats[0].applied_sequence == stats[0].stream_head:
            return stats[0].stream_head
        await asyncio.sleep(0.05)


async def deletes(subscription: ResilientSubscription, count: int) -> list[tuple[int, str]]:
    """(sequence, doc_id) of the next `count` DELETE events."""
    seen: list[tuple[int, str]] = []
    async for event in subscription:
        if event.type is ChangeType.DELETE:
            seen.append((event.sequence, event.doc_id))
            if len(seen) == count:
                return seen
    raise AssertionError("the subscription ended")


def test_a_config_set_on_one_sidecar_is_enforced_on_another_and_expiry_removes_once(
    nats_server: NatsServer, start_sidecar: StartSidecar
) -> None:
    a, b = (start_sidecar(nats_server.url, name=name) for name in "ab")

    async def scenario() -> None:
        async with Client(a.address) as on_a, Client(b.address) as on_b:
            await on_b.put("ledger", "e1", {"amount": 5})
            ledger = pb.CollectionConfig(
                collection="ledger", deletion_policy=pb.DeletionPolicy.IMMUTABLE
            )
            await on_a.set_collection_config(ledger)
            assert await within(config_of(on_b, "ledger")) == ledger
            with pytest.raises(Rejected) as refused:
                await on_b.delete("ledger", "e1")
            assert refused.value.status is Status.FAILED_PRECONDITION
            with pytest.raises(Rejected, match="is reserved for the server"):
                await on_b.put("_peat.collection_configs", "ledger", {})

            beacons = pb.CollectionConfig(
                collection="beacons",
                deletion_policy=pb.DeletionPolicy.IMPLICIT_TTL,
                soft_delete_ttl_secs=1,
            )
            await on_b.set_collection_config(beacons)
            await within(config_of(on_a, "beacons"))
            written = await on_a.write([("beacons", f"b{i}", {"i": i}) for i in range(BEACONS)])
            subscriptions = [
                client.subscribe(["beacons"], since=max(written), backoff=FAST_BACKOFF)
                for client in (on_a, on_b)
            ]
            seen = []
            for subscription in subscriptions:
                async with subscription:
                    seen.append(await within(deletes(subscription, BEACONS), 20))
            # Both sidecars run the expiry every second: give them a few more rounds.
            await asyncio.sleep(3)
            head = await within(settled([on_a, on_b]))
            assert await on_a.list_ids("beacons") == await on_b.list_ids("beacons") == []

        assert seen[0] == seen[1], "both sidecars saw the same removals"
        assert sorted(doc_id for _, doc_id in seen[0]) == sorted(f"b{i}" for i in range(BEACONS))
        assert head == max(written) + BEACONS, "each document was removed once, by one sidecar"

    run_scenario(scenario, timeout=90)
