"""Collection configs against the real server: SetCollectionConfig, GetCollectionConfig and
ListCollectionConfigs through both clients (grpclib and the official grpcio), the reserved
collection refused to writers, IMMUTABLE refusing deletes, a server-made removal reaching a
subscriber as a DELETE with its sequence, and configs that survive a restart."""

from __future__ import annotations

import json
from typing import Any

import pytest

from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import ChangeType, Client, Rejected
from peat_sync.client.subscription import ResilientSubscription
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import Client as FacadeClient
from tests.helpers.clients import delete, failure_of, get, put, status
from tests.helpers.servers import stop_and_start
from tests.helpers.waiting import run_scenario, within

RESERVED = "_peat.collection_configs"
SOFT_DELETE = pb.DeletionPolicy.SOFT_DELETE.value
TOMBSTONE = pb.DeletionPolicy.TOMBSTONE.value
IMPLICIT_TTL = pb.DeletionPolicy.IMPLICIT_TTL.value
IMMUTABLE = pb.DeletionPolicy.IMMUTABLE.value


def set_config(client: FacadeClient, collection: str, policy: int, **ttls: int) -> None:
    config = client.message(
        "CollectionConfig", {"collection": collection, "deletion_policy": policy, **ttls}
    )
    client.call("SetCollectionConfig", config=config)


def config_dict(
    collection: str, policy: int, soft: int | None = None, tomb: int | None = None
) -> dict[str, Any]:
    return {
        "collection": collection,
        "deletion_policy": policy,
        "soft_delete_ttl_secs": soft,
        "tombstone_ttl_secs": tomb,
    }


def test_a_config_set_is_read_back_and_listed(client: FacadeClient) -> None:
    assert failure_of(client, "GetCollectionConfig", collection="notes").code == "NOT_FOUND"
    set_config(client, "notes", SOFT_DELETE, soft_delete_ttl_secs=3600)
    set_config(client, "ledger", IMMUTABLE)
    set_config(client, "logs", TOMBSTONE, tombstone_ttl_secs=60)
    notes = client.call("GetCollectionConfig", collection="notes")["config"]
    assert notes == config_dict("notes", SOFT_DELETE, soft=3600)
    listed = client.call("ListCollectionConfigs")["configs"]
    assert listed == [
        config_dict("ledger", IMMUTABLE),
        config_dict("logs", TOMBSTONE, tomb=60),
        config_dict("notes", SOFT_DELETE, soft=3600),
    ]
    assert status(client)["head_sequence"] == 3, "each config is a committed change"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"collection": "c", "deletion_policy": 7}, "deletion_policy is 7, which is not a"),
        ({"collection": "c", "deletion_policy": IMPLICIT_TTL}, "soft_delete_ttl_secs is required"),
        (
            {"collection": "c", "deletion_policy": TOMBSTONE, "tombstone_ttl_secs": 0},
            "tombstone_ttl_secs is 0",
        ),
        ({"collection": RESERVED, "deletion_policy": TOMBSTONE}, "is the server's own"),
        ({"collection": "", "deletion_policy": TOMBSTONE}, "must not be empty"),
        (None, "config is required"),
    ],
    ids=["unknown-policy", "ttl-missing", "ttl-zero", "reserved", "empty-name", "no-config"],
)
def test_a_config_that_cannot_be_set_is_invalid_argument(
    client: FacadeClient, fields: dict[str, Any] | None, message: str
) -> None:
    request = {} if fields is None else {"config": client.message("CollectionConfig", fields)}
    failure = failure_of(client, "SetCollectionConfig", **request)
    assert failure.code == "INVALID_ARGUMENT"
    assert message in failure.message
    assert client.call("ListCollectionConfigs")["configs"] == []


def test_clients_cannot_write_the_reserved_collection(client: FacadeClient) -> None:
    set_config(client, "ledger", IMMUTABLE)
    stored, sequence = get(client, RESERVED, "ledger")
    assert stored is not None
    assert json.loads(stored)["deletion_policy"] == IMMUTABLE
    writes = [client.message("DocumentWrite", {"collection": RESERVED, "doc_id": "ledger"})]
    requests: list[tuple[str, dict[str, Any]]] = [
        ("PutDocument", {"collection": RESERVED, "doc_id": "ledger", "json_data": "{}"}),
        ("DeleteDocument", {"collection": RESERVED, "doc_id": "ledger"}),
        ("WriteDocuments", {"writes": writes}),
    ]
    for rpc, request in requests:
        failure = failure_of(client, rpc, **request)
        assert failure.code == "INVALID_ARGUMENT", rpc
        assert "is reserved for the server" in failure.message, rpc
    assert get(client, RESERVED, "ledger") == (stored, sequence)


def test_immutable_refuses_deletes_with_failed_precondition(client: FacadeClient) -> None:
    put(client, "ledger", "e1", "{}")
    set_config(client, "ledger", IMMUTABLE)
    head = status(client)["head_sequence"]
    failure = failure_of(client, "DeleteDocument", collection="ledger", doc_id="e1")
    assert failure.code == "FAILED_PRECONDITION"
    assert "'ledger' is IMMUTABLE" in failure.message
    writes = [
        client.message("DocumentWrite", {"collection": "other", "doc_id": "o", "json_data": "{}"}),
        client.message("DocumentWrite", {"collection": "ledger", "doc_id": "e1"}),
    ]
    failure = failure_of(client, "WriteDocuments", writes=writes)
    assert failure.code == "FAILED_PRECONDITION"
    assert failure.message.startswith("writes[1]: ")
    assert status(client)["head_sequence"] == head, "the refused request committed nothing"
    assert get(client, "other", "o") == (None, 0)
    assert delete(client, "elsewhere", "e1") == 0, "other collections delete as before"


async def changes(subscription: ResilientSubscription, count: int) -> list[tuple[Any, ...]]:
    """The next `count` changes: (sequence, type, doc_id, document)."""
    seen: list[tuple[Any, ...]] = []
    async for event in subscription:
        if event.is_change:
            seen.append((event.sequence, event.type, event.doc_id, event.document))
            if len(seen) == count:
                return seen
    raise AssertionError("the subscription ended")


def test_soft_delete_marks_then_the_server_removes_with_a_delete_event(
    server: ServerProcess,
) -> None:
    """A delete is an UPSERT with `_deleted: true`; once soft_delete_ttl_secs has passed the
    server removes the document, and the subscriber sees that DELETE with its own sequence."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            config = pb.CollectionConfig(
                collection="notes",
                deletion_policy=pb.DeletionPolicy.SOFT_DELETE,
                soft_delete_ttl_secs=1,
            )
            await client.set_collection_config(config)
            assert await client.get_collection_config("notes") == config
            async with client.subscribe(["notes"], since=1) as subscription:
                put = await client.put("notes", "n1", {"text": "hello"})
                deleted = await client.delete("notes", "n1")
                document = await client.get("notes", "n1")
                assert document is not None
                assert document.data == {"text": "hello", "_deleted": True}
                seen = await within(changes(subscription, 3), 15)
            assert await client.get("notes", "n1") is None
            assert await client.delete("notes", "n1") == 0

        assert seen == [
            (put, ChangeType.UPSERT, "n1", {"text": "hello"}),
            (deleted, ChangeType.UPSERT, "n1", {"text": "hello", "_deleted": True}),
            (deleted + 1, ChangeType.DELETE, "n1", None),
        ]

    run_scenario(scenario)


@pytest.mark.parametrize("how", ["graceful", "kill -9"])
def test_configs_survive_a_restart_and_are_enforced_after_it(
    server: ServerProcess, how: str
) -> None:
    async def set_them() -> None:
        async with Client(server.address) as client:
            await client.put("ledger", "e1", {})
            await client.set_collection_config(
                pb.CollectionConfig(
                    collection="ledger", deletion_policy=pb.DeletionPolicy.IMMUTABLE
                )
            )

    async def after_restart() -> None:
        async with Client(server.address) as client:
            configs = await client.list_collection_configs()
            assert [(config.collection, config.deletion_policy) for config in configs] == [
                ("ledger", pb.DeletionPolicy.IMMUTABLE)
            ]
            with pytest.raises(Rejected) as refused:
                await client.delete("ledger", "e1")
            assert refused.value.status.name == "FAILED_PRECONDITION"
            await client.set_collection_config(pb.CollectionConfig(collection="ledger"))
            assert await client.delete("ledger", "e1") > 0

    run_scenario(set_them)
    stop_and_start(server, how)
    run_scenario(after_restart)
