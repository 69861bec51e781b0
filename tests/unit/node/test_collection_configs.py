"""Collection configs on the embedded node: set, validated, persisted across a restart as
documents of the reserved collection, refused to clients, and enforced (IMMUTABLE refuses
deletes, SOFT_DELETE marks and later removes, IMPLICIT_TTL removes unwritten documents,
TOMBSTONE keeps tombstones for a time of its own).

Commits and reads run on worker threads, so the node's tests keep the real clock (as
tests/unit/node/test_node.py does) and say "later" by passing a time to `remove_expired`, or
by shifting the clock that tombstone retention reads. The expiry's schedule, without the
node, runs on `autojump_clock`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from peat_sync.generated.peat.sidecar.v1 import ChangeType, DeletionPolicy
from peat_sync.node import InvalidRequest, Node, WriteRefused
from peat_sync.node import retention as retention_module
from peat_sync.node.collection_configs import (
    CONFIGS_COLLECTION,
    DEFAULT_TOMBSTONE_TTL_SECS,
    CollectionConfig,
    CollectionConfigs,
)
from peat_sync.node.errors import MustWait
from peat_sync.node.expiry import expiry_interval, run_expiry
from peat_sync.store import Change, Mutation, PreconditionFailed, SQLiteStore
from tests.helpers.nodes import DEADLINE, decode, read_until, running_node

HOUR = 3600
DAY = 24 * HOUR


def config(collection: str, policy: DeletionPolicy, **ttls: int) -> CollectionConfig:
    return CollectionConfig(collection, policy, **ttls)


def later(seconds: float) -> float:
    """The unix time `seconds` from now."""
    return time.time() + seconds


async def changes_of(node: Node, collections: list[str], since: int) -> list[tuple[Any, ...]]:
    """(sequence, change type, doc_id, document) of every change after `since`, to the head."""
    with node.subscribe(collections, since=since) as subscription:
        changes = await read_until(subscription, node.head_sequence)
    return [
        (
            change.sequence,
            change.change_type,
            change.doc_id,
            None if change.json_data is None else json.loads(change.json_data),
        )
        for change in changes
        if change.change_type in (ChangeType.UPSERT, ChangeType.DELETE)
    ]


# Setting, reading, persisting -----------------------------------------------------------------


async def test_a_config_is_a_document_of_the_reserved_collection_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    soft = config("notes", DeletionPolicy.SOFT_DELETE, soft_delete_ttl_secs=60)
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("notes", "n1", "{}")
            assert await node.set_collection_config(soft) == 2
            assert await node.set_collection_config(soft) == 0, "unchanged: nothing written"
            locked = config("ledger", DeletionPolicy.IMMUTABLE)
            assert await node.set_collection_config(locked) == 3
            stored = node.get(CONFIGS_COLLECTION, "notes")
            assert stored is not None
            assert stored.sequence == 2
            assert json.loads(stored.json_data) == {
                "collection": "notes",
                "deletion_policy": 1,
                "soft_delete_ttl_secs": 60,
                "tombstone_ttl_secs": None,
            }
            assert await node.list_ids(CONFIGS_COLLECTION) == ["ledger", "notes"]
        async with running_node(tmp_path) as node:
            assert node.collection_configs.all() == [locked, soft]
            with pytest.raises(WriteRefused):
                await node.delete("ledger", "anything")


async def test_a_subscriber_of_the_reserved_collection_or_of_all_sees_each_config_change(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.set_collection_config(config("a", DeletionPolicy.IMMUTABLE))
            await node.set_collection_config(config("a", DeletionPolicy.UNSPECIFIED))
            named = await changes_of(node, [CONFIGS_COLLECTION], since=0)
            everything = await changes_of(node, [], since=0)
    assert named == everything
    assert [(sequence, kind, doc_id) for sequence, kind, doc_id, _ in named] == [
        (1, ChangeType.UPSERT, "a"),
        (2, ChangeType.UPSERT, "a"),
    ]
    assert [document["deletion_policy"] for *_, document in named] == [4, 0]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (config("", DeletionPolicy.TOMBSTONE), "config.collection must not be empty"),
        (config("_peat.mine", DeletionPolicy.TOMBSTONE), "is the server's own"),
        (config("c", DeletionPolicy(7)), "config.deletion_policy is 7, which is not a"),
        (config("c", DeletionPolicy.TOMBSTONE, tombstone_ttl_secs=0), "from 1 to"),
        (config("c", DeletionPolicy.TOMBSTONE, tombstone_ttl_secs=2**63), "from 1 to"),
        (
            config("c", DeletionPolicy.TOMBSTONE, soft_delete_ttl_secs=5),
            "soft_delete_ttl_secs is set, but the policy is TOMBSTONE",
        ),
        (config("c", DeletionPolicy.IMPLICIT_TTL), "soft_delete_ttl_secs is required"),
    ],
)
async def test_a_config_that_cannot_be_set_is_refused_saying_why(
    tmp_path: Path, bad: CollectionConfig, message: str
) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with pytest.raises(InvalidRequest, match=message):
                await node.set_collection_config(bad)
            assert node.head_sequence == 0
            assert node.collection_configs.all() == []


async def test_clients_cannot_write_the_reserved_collection(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.set_collection_config(config("c", DeletionPolicy.IMMUTABLE))
            reserved = "is reserved for the server"
            with pytest.raises(InvalidRequest, match=reserved):
                await node.put(CONFIGS_COLLECTION, "c", '{"deletion_policy": 0}')
            with pytest.raises(InvalidRequest, match=reserved):
                await node.delete(CONFIGS_COLLECTION, "c")
            with pytest.raises(InvalidRequest, match=f"writes\\[1\\]: .*{reserved}"):
                await node.write([Mutation("c", "d", "{}"), Mutation("_peat.anything", "d", "{}")])
            with pytest.raises(InvalidRequest, match=reserved):
                node.put_nowait(CONFIGS_COLLECTION, "c", "{}", lambda outcome: None)
            assert node.head_sequence == 1
            assert node.collection_configs.get("c") == config("c", DeletionPolicy.IMMUTABLE)


# Enforcement ----------------------------------------------------------------------------------


async def test_immutable_refuses_deletes_and_a_request_holding_one_commits_nothing(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("ledger", "e1", '{"amount": 5}')
            await node.set_collection_config(config("ledger", DeletionPolicy.IMMUTABLE))
            head = node.head_sequence
            with pytest.raises(WriteRefused, match="'ledger' is IMMUTABLE"):
                await node.delete("ledger", "e1")
            with pytest.raises(WriteRefused, match="cannot be deleted"):
                node.delete_nowait("ledger", "e1", lambda outcome: None)
            with pytest.raises(WriteRefused, match=r"writes\[1\]: collection 'ledger'"):
                await node.write([Mutation("other", "o1", "{}"), Mutation("ledger", "e1", None)])
            assert node.head_sequence == head, "nothing of the refused request is committed"
            assert await node.put("ledger", "e2", "{}") == head + 1, "puts are allowed"
            assert node.get("ledger", "e1") is not None
            await node.set_collection_config(config("ledger", DeletionPolicy.UNSPECIFIED))
            assert await node.delete("ledger", "e1") > 0, "UNSPECIFIED undoes the policy"


async def test_soft_delete_marks_the_document_and_the_server_removes_it_after_the_ttl(
    tmp_path: Path,
) -> None:
    """The delete is an UPSERT of the document with `_deleted: true`; once the TTL has
    passed, the server's removal is a DELETE with a sequence of its own, which a subscriber
    sees like any other change."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            soft = config("notes", DeletionPolicy.SOFT_DELETE, soft_delete_ttl_secs=HOUR)
            base = await node.set_collection_config(soft)
            await node.put("notes", "n1", '{"text": "keep me", "n": 1.5}')
            await node.put("notes", "n2", '{"text": "live"}')
            with pytest.raises(MustWait):
                node.delete_nowait("notes", "n1", lambda outcome: None)
            deleted = await node.delete("notes", "n1")
            assert await node.delete("notes", "n1") == 0, "soft-deleted already"
            assert await node.delete("notes", "never") == 0
            marked = node.get("notes", "n1")
            assert marked is not None
            assert marked.sequence == deleted
            assert json.loads(marked.json_data) == {"text": "keep me", "n": 1.5, "_deleted": True}
            assert await node.remove_expired(later(HOUR - 60)) == 0, "not yet"
            assert await node.remove_expired(later(HOUR + 60)) == 1
            assert node.get("notes", "n1") is None
            assert await node.list_ids("notes") == ["n2"], "a live document is kept"
            changes = await changes_of(node, ["notes"], since=base)
    assert changes == [
        (base + 1, ChangeType.UPSERT, "n1", {"text": "keep me", "n": 1.5}),
        (base + 2, ChangeType.UPSERT, "n2", {"text": "live"}),
        (deleted, ChangeType.UPSERT, "n1", {"text": "keep me", "n": 1.5, "_deleted": True}),
        (deleted + 1, ChangeType.DELETE, "n1", None),
    ]


async def test_soft_delete_inside_write_documents_and_with_a_precondition(
    tmp_path: Path,
) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.set_collection_config(config("notes", DeletionPolicy.SOFT_DELETE))
            first = await node.put("notes", "n1", '{"v": 1}')
            with pytest.raises(PreconditionFailed):
                await node.delete("notes", "n1", expected_sequence=first - 1)
            sequences = await node.write(
                [
                    Mutation("notes", "n1", None),
                    Mutation("notes", "n2", '{"v": 2}'),
                    Mutation("notes", "n2", None),
                    Mutation("notes", "n3", None),
                    Mutation("other", "o1", "{}"),
                ]
            )
            assert sequences == [first + 1, first + 2, first + 3, 0, first + 4]
            n2 = node.get("notes", "n2")
            assert n2 is not None
            assert json.loads(n2.json_data) == {"v": 2, "_deleted": True}
            assert await node.delete("notes", "n2", expected_sequence=first + 3) == 0
            revived = await node.put("notes", "n1", '{"v": 3}')
            assert await node.remove_expired(later(DAY)) == 0, "no TTL: kept for good"
            n1 = node.get("notes", "n1")
            assert n1 is not None
            assert (n1.sequence, n1.json_data) == (revived, '{"v": 3}')


async def test_implicit_ttl_removes_documents_not_written_for_the_ttl(tmp_path: Path) -> None:
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            await node.put("beacons", "old", "{}")
            await node.put("elsewhere", "x", "{}")
            ttl = config("beacons", DeletionPolicy.IMPLICIT_TTL, soft_delete_ttl_secs=HOUR)
            await node.set_collection_config(ttl)
            assert await node.remove_expired(later(HOUR + 1)) == 1
            await node.put("beacons", "fresh", "{}")
            assert await node.remove_expired(later(10)) == 0
            assert await node.list_ids("beacons") == ["fresh"]
            assert await node.list_ids("elsewhere") == ["x"], "a collection with no config"
            assert await node.delete("beacons", "fresh") > 0, "deletes are ordinary"


async def test_a_document_rewritten_between_its_read_and_its_removal_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal is conditional on the sequence the expiry read: as if the document had
    been written again after the read, a stale sequence fails the removal harmlessly."""
    read = SQLiteStore.documents_written_before

    def stale(store: SQLiteStore, *args: Any, **kwargs: Any) -> list[tuple[str, int]]:
        return [(doc_id, sequence - 1) for doc_id, sequence in read(store, *args, **kwargs)]

    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            ttl = config("beacons", DeletionPolicy.IMPLICIT_TTL, soft_delete_ttl_secs=1)
            await node.set_collection_config(ttl)
            await node.put("beacons", "b1", "{}")
            head = node.head_sequence
            monkeypatch.setattr(SQLiteStore, "documents_written_before", stale)
            assert await node.remove_expired(later(60)) == 0
            assert node.head_sequence == head
            assert await node.list_ids("beacons") == ["b1"]


async def test_the_node_removes_expired_documents_on_its_own(tmp_path: Path) -> None:
    """With a one-second TTL the expiry runs every second: the subscriber sees the removal
    within a few, as a DELETE with the next sequence."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path) as node:
            with node.subscribe(["beacons"]) as subscription:
                ttl = config("beacons", DeletionPolicy.IMPLICIT_TTL, soft_delete_ttl_secs=1)
                await node.set_collection_config(ttl)
                put = await node.put("beacons", "b1", "{}")
                changes = await read_until(subscription, put + 1)
    assert [(change.sequence, change.change_type) for change in changes] == [
        (put, ChangeType.UPSERT),
        (put + 1, ChangeType.DELETE),
    ]


def stored_config(sequence: int, config: CollectionConfig) -> Change:
    """The change that sets `config`, as the writer commits it."""
    return Change(sequence, CONFIGS_COLLECTION, config.collection, config.to_json())


async def test_expiry_runs_a_tenth_of_the_shortest_lifetime_apart_and_when_configs_change(
    autojump_clock: trio.testing.MockClock,
) -> None:
    configs = CollectionConfigs()
    rounds: list[float] = []

    async def remove(now: float) -> int:
        rounds.append(trio.current_time())
        return 0

    with trio.fail_after(DEADLINE):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_expiry, remove, configs)
            await trio.sleep(10)
            assert rounds == [0], "nothing expires: the next round waits for a config"
            week = config("b", DeletionPolicy.SOFT_DELETE, soft_delete_ttl_secs=7 * 24 * HOUR)
            configs.committed([stored_config(1, week), None])
            await trio.sleep(1)
            assert rounds == [0, 10], "at once when a config changes"
            assert expiry_interval(configs) == 600, "at most ten minutes apart"
            short = config("a", DeletionPolicy.IMPLICIT_TTL, soft_delete_ttl_secs=50)
            configs.committed([stored_config(2, short)])
            await trio.sleep(12)
            nursery.cancel_scope.cancel()
    assert rounds == [0, 10, 11, 16, 21], "every tenth of the shortest lifetime"


async def test_tombstone_keeps_a_collections_tombstones_for_its_own_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A short tombstone_ttl_secs purges that collection's tombstones while others are kept;
    the store-wide catch-up floor rises past the purged one, so a subscriber resuming from
    before it gets a RESYNC, never a catch-up without the delete."""
    with trio.fail_after(DEADLINE):
        async with running_node(tmp_path, replay_log_size=1, tombstone_retention=DAY) as node:
            short = config("short", DeletionPolicy.TOMBSTONE, tombstone_ttl_secs=60)
            await node.set_collection_config(short)
            await node.set_collection_config(config("long", DeletionPolicy.TOMBSTONE))
            assert node.collection_configs.tombstone_retentions() == {
                "long": DEFAULT_TOMBSTONE_TTL_SECS,
                "short": 60,
            }
            for collection in ("short", "long", "plain"):
                await node.put(collection, "d", "{}")
            resume_point = node.head_sequence
            await node.delete("long", "d")
            short_delete = await node.delete("short", "d")
            await node.delete("plain", "d")
            await node.put("plain", "after", "{}")
            assert await node.purge_expired_tombstones() == 0
            monkeypatch.setattr(retention_module, "time", SimpleNamespace(time=lambda: later(61)))
            assert await node.purge_expired_tombstones() == 1
            assert node.catch_up_floor == short_delete
            with node.subscribe(["plain"], since=resume_point) as subscription:
                (resync,) = [decode(event) for event in await subscription.next_batch(10)]
            after_floor = await changes_of(node, ["long", "plain"], since=short_delete)
    assert resync.change_type == ChangeType.RESYNC
    assert [(kind, doc_id) for _, kind, doc_id, _ in after_floor] == [
        (ChangeType.DELETE, "d"),
        (ChangeType.UPSERT, "after"),
    ]
