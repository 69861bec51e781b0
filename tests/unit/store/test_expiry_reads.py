"""SQLiteStore for collection configs: the write time of each document (and of those a store
made before it recorded write times), the expired documents found by it, and tombstones
purged by collection, with a floor that stays store-wide."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from peat_sync.store import Change, Mutation, SQLiteStore
from peat_sync.store.sqlite import DATABASE_FILE


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore.open(tmp_path / "data")
    yield store
    store.close()


def test_documents_written_before_finds_live_documents_by_their_last_put(
    store: SQLiteStore,
) -> None:
    store.commit([Mutation("c", "old", "{}"), Mutation("c", "marked", '{"_deleted": true}')])
    store.commit(
        [
            Mutation("c", "gone", "{}"),
            Mutation("c", "gone", None),
            Mutation("c", "false", '{"_deleted": false}'),
            Mutation("c", "number", '{"_deleted": 1}'),
            Mutation("other", "o", "{}"),
        ]
    )
    now = time.time()
    assert store.documents_written_before("c", now - 60, 100, marked_deleted=False) == []
    every = store.documents_written_before("c", now + 1, 100, marked_deleted=False)
    assert every == [("old", 1), ("marked", 2), ("false", 5), ("number", 6)]
    assert store.documents_written_before("c", now + 1, 2, marked_deleted=False) == every[:2]
    marked = store.documents_written_before("c", now + 1, 100, marked_deleted=True)
    assert marked == [("marked", 2)], "only a JSON true marks a soft delete"


def test_a_replicas_applied_documents_get_their_write_time(store: SQLiteStore) -> None:
    store.apply([Change(7, "c", "d", "{}")], head=7)
    assert store.documents_written_before("c", time.time() + 1, 10, marked_deleted=False) == [
        ("d", 7)
    ]


def test_a_store_made_before_write_times_counts_its_documents_as_written_when_it_opens(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    store = SQLiteStore.open(data_dir)
    store.commit([Mutation("c", "d", "{}")])
    store.close()
    with closing(sqlite3.connect(data_dir / DATABASE_FILE)) as db:  # as an older release left it
        db.execute("ALTER TABLE documents DROP COLUMN written_at")
        db.commit()
    before_open = time.time()
    store = SQLiteStore.open(data_dir)
    try:
        assert store.documents_written_before("c", before_open, 10, marked_deleted=False) == []
        assert store.documents_written_before("c", time.time() + 1, 10, marked_deleted=False) == [
            ("d", 1)
        ]
    finally:
        store.close()


def test_tombstones_are_purged_by_collection_and_the_floor_stays_store_wide(
    store: SQLiteStore,
) -> None:
    store.commit([Mutation(name, "d", "{}") for name in ("a", "b", "c")])
    store.commit([Mutation(name, "d", None) for name in ("a", "b", "c")])  # sequences 4, 5, 6
    later = time.time() + 1
    assert store.purge_tombstones(later, 100, collection="b") == 1
    assert store.catch_up_floor == 5
    assert store.purge_tombstones(later, 100, excluding={"c"}) == 1
    assert store.catch_up_floor == 5, "a purge of an older tombstone never lowers the floor"
    page = store.changes_after(0, None, 100, 0, 1 << 20)
    assert [(change.collection, change.json_data) for change in page.changes] == [("c", None)]
