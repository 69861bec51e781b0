"""Three sidecars on one nats-server: one document space, one sequence, one epoch."""

from __future__ import annotations

import asyncio
import random

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.nats_servers import NatsServer
from peat_sync.client import Client
from tests.helpers.client_library import FAST_BACKOFF, Documents, store_documents
from tests.helpers.waiting import run_scenario, within
from tests.shared.conftest import StartSidecar

COLLECTIONS = ("fleet", "commands")


def three_sidecars(nats_server: NatsServer, start_sidecar: StartSidecar) -> list[ServerProcess]:
    return [start_sidecar(nats_server.url, name=name) for name in ("a", "b", "c")]


async def converged(clients: list[Client]) -> Documents:
    """Wait until every sidecar has applied the stream's head; return their (equal) stores."""

    while True:
        stats = [await client.sync_stats() for client in clients]
        heads = {(each.applied_sequence, each.stream_head) for each in stats}
        if len(heads) == 1 and stats[0].applied_sequence == stats[0].stream_head:
            break
        await asyncio.sleep(0.05)
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
