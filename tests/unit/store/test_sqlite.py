"""SQLiteStore: the persisted sequence, the epoch, tombstones, atomic batches, unusable dirs."""

from __future__ import annotations

import gc
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from peat_sync.store import (
    Change,
    Mutation,
    PreconditionFailed,
    SQLiteStore,
    StoreClosed,
    StoredDocument,
)
from peat_sync.store.sqlite import DATABASE_FILE, WAL_FILE, StoreError, StoreWriteError
from tests.helpers.stores import fill_the_disk, free_space

MiB = 1024 * 1024


def put(collection: str, doc_id: str, json_data: str = "{}") -> Mutation:
    return Mutation(collection, doc_id, json_data)


def delete(collection: str, doc_id: str) -> Mutation:
    return Mutation(collection, doc_id, None)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore.open(data_dir)
    yield store
    store.close()


def test_a_new_store_is_empty(store: SQLiteStore) -> None:
    """A fresh store starts at head 0 with a non-empty epoch and no documents."""
    assert store.head_sequence == 0
    assert store.epoch
    assert store.get("c", "d") is None
    assert store.list_ids("c") == []


def test_sequences_strictly_increase_across_commits(store: SQLiteStore) -> None:
    """Each change gets the next store-wide sequence, across batches and collections."""
    first = store.commit([put("a", "1")])
    second = store.commit([put("b", "1"), put("a", "2", '{"x":1}')])

    assert first == [Change(1, "a", "1", "{}")]
    assert second == [Change(2, "b", "1", "{}"), Change(3, "a", "2", '{"x":1}')]
    assert store.head_sequence == 3
    assert store.get("a", "2") == StoredDocument("a", "2", '{"x":1}', 3)


def test_an_update_moves_the_document_to_a_new_sequence(store: SQLiteStore) -> None:
    """Putting an existing document replaces it and records the sequence of the update."""
    store.commit([put("c", "d", '{"v":1}')])
    (change,) = store.commit([put("c", "d", '{"v":2}')])

    assert change == Change(2, "c", "d", '{"v":2}')
    assert store.get("c", "d") == StoredDocument("c", "d", '{"v":2}', 2)
    assert store.list_ids("c") == ["d"]


def test_head_and_documents_survive_close_and_reopen(data_dir: Path) -> None:
    """The head is persisted with the data, so sequences keep increasing after a restart."""
    store = SQLiteStore.open(data_dir)
    store.commit([put("c", "1"), put("c", "2")])
    store.close()

    reopened = SQLiteStore.open(data_dir)
    try:
        assert reopened.head_sequence == 2
        assert reopened.get("c", "2") == StoredDocument("c", "2", "{}", 2)
        assert reopened.commit([put("c", "3")]) == [Change(3, "c", "3", "{}")]
    finally:
        reopened.close()


def test_epoch_is_stable_across_reopen_and_new_for_a_new_data_dir(tmp_path: Path) -> None:
    """The epoch identifies one store: the same after a restart, different for a new dir."""
    first = SQLiteStore.open(tmp_path / "one")
    epoch = first.epoch
    first.commit([put("c", "d")])
    first.close()

    reopened = SQLiteStore.open(tmp_path / "one")
    other = SQLiteStore.open(tmp_path / "two")
    try:
        assert reopened.epoch == epoch
        assert other.epoch != epoch
    finally:
        reopened.close()
        other.close()


def test_delete_leaves_a_tombstone_hidden_from_get_and_list(
    store: SQLiteStore, data_dir: Path
) -> None:
    """A delete is a change with its own sequence; the row stays behind as a tombstone."""
    store.commit([put("c", "keep"), put("c", "gone")])

    assert store.commit([delete("c", "gone")]) == [Change(3, "c", "gone", None)]
    assert store.get("c", "gone") is None
    assert store.list_ids("c") == ["keep"]
    assert [document.doc_id for document in store.list_documents("c")] == ["keep"]

    with closing(sqlite3.connect(data_dir / DATABASE_FILE)) as db:
        row = db.execute(
            "SELECT json_data, sequence, deleted_at FROM documents WHERE doc_id = 'gone'"
        ).fetchone()
    assert row is not None, "the delete must keep a tombstone row for catch-up"
    assert row[0] is None
    assert row[1] == 3
    assert row[2] is not None


def test_deleting_an_absent_or_deleted_document_changes_nothing(store: SQLiteStore) -> None:
    """A delete that finds nothing returns None and does not consume a sequence."""
    assert store.commit([delete("c", "never")]) == [None]
    assert store.head_sequence == 0

    store.commit([put("c", "d")])
    store.commit([delete("c", "d")])
    assert store.commit([delete("c", "d")]) == [None]
    assert store.head_sequence == 2

    assert store.commit([put("c", "next")]) == [Change(3, "c", "next", "{}")]


def test_a_deleted_document_can_be_put_again(store: SQLiteStore) -> None:
    """Putting over a tombstone revives the document at a new sequence."""
    store.commit([put("c", "d", '{"v":1}'), delete("c", "d")])
    (change,) = store.commit([put("c", "d", '{"v":2}')])

    assert change == Change(3, "c", "d", '{"v":2}')
    assert store.get("c", "d") == StoredDocument("c", "d", '{"v":2}', 3)
    assert store.list_ids("c") == ["d"]


def test_a_batch_applies_in_order(store: SQLiteStore) -> None:
    """A put and a delete of the same document in one batch apply in the order given."""
    changes = store.commit([put("c", "d"), delete("c", "d"), delete("c", "absent")])

    assert changes == [Change(1, "c", "d", "{}"), Change(2, "c", "d", None), None]
    assert store.get("c", "d") is None
    assert store.head_sequence == 2

    changes = store.commit([delete("c", "d"), put("c", "d", '{"v":2}')])
    assert changes == [None, Change(3, "c", "d", '{"v":2}')]
    assert store.get("c", "d") == StoredDocument("c", "d", '{"v":2}', 3)


def test_a_failing_batch_stores_nothing(store: SQLiteStore, data_dir: Path) -> None:
    """When one mutation of a batch fails, the whole batch rolls back, head included."""
    store.commit([put("c", "before")])
    unbindable = Mutation("c", "bad", object())  # type: ignore[arg-type]

    with pytest.raises(sqlite3.Error):
        store.commit([put("c", "first"), delete("c", "before"), unbindable])

    assert store.head_sequence == 1
    assert store.get("c", "first") is None
    assert store.get("c", "before") is not None
    assert store.commit([put("c", "after")]) == [Change(2, "c", "after", "{}")]
    store.close()
    reopened = SQLiteStore.open(data_dir)
    try:
        assert reopened.head_sequence == 2
        assert reopened.list_ids("c") == ["after", "before"]
    finally:
        reopened.close()


# ---------------------------------------------------------------------------------------------
# expected_sequence: compare-and-set


def put_if(doc_id: str, expected: int, json_data: str = '{"new":true}') -> Mutation:
    return Mutation("c", doc_id, json_data, expected_sequence=expected)


def delete_if(doc_id: str, expected: int) -> Mutation:
    return Mutation("c", doc_id, None, expected_sequence=expected)


@pytest.fixture
def documents(store: SQLiteStore) -> SQLiteStore:
    """ "live" at sequence 2 (put at 1, put again at 2), "deleted" a tombstone at 4 (put at 3,
    deleted at 4), "absent" never written; the head is 4."""
    store.commit([put("c", "live"), put("c", "live", '{"v":2}')])
    store.commit([put("c", "deleted"), delete("c", "deleted")])
    assert store.head_sequence == 4
    return store


# (doc_id, expected_sequence, whether it holds, the current sequence a failure reports)
PRECONDITIONS = [
    ("live", 2, True, 2),
    ("live", 1, False, 2),
    ("live", 0, False, 2),
    ("live", 3, False, 2),
    ("deleted", 0, True, 0),
    ("deleted", 4, True, 0),  # the tombstone's own sequence, as the delete event showed it
    ("deleted", 3, False, 0),
    ("deleted", 2, False, 0),
    ("absent", 0, True, 0),
    ("absent", 1, False, 0),
]


@pytest.mark.parametrize(("doc_id", "expected", "holds", "current"), PRECONDITIONS)
def test_a_put_with_expected_sequence_commits_only_if_it_holds(
    documents: SQLiteStore, doc_id: str, expected: int, holds: bool, current: int
) -> None:
    """A live document holds at its sequence only; a deleted one at 0 or its tombstone's
    sequence; an absent one at 0. A failure stores nothing and names the current sequence
    (0 for a document that does not exist)."""
    before = documents.get("c", doc_id)
    if holds:
        assert documents.commit([put_if(doc_id, expected)]) == [
            Change(5, "c", doc_id, '{"new":true}')
        ]
        assert documents.get("c", doc_id) == StoredDocument("c", doc_id, '{"new":true}', 5)
        return
    with pytest.raises(PreconditionFailed) as failed:
        documents.commit([put_if(doc_id, expected)])
    assert (failed.value.collection, failed.value.doc_id) == ("c", doc_id)
    assert (failed.value.expected, failed.value.current) == (expected, current)
    assert documents.head_sequence == 4
    assert documents.get("c", doc_id) == before


@pytest.mark.parametrize(("doc_id", "expected", "holds", "current"), PRECONDITIONS)
def test_a_delete_with_expected_sequence_commits_only_if_it_holds(
    documents: SQLiteStore, doc_id: str, expected: int, holds: bool, current: int
) -> None:
    """The same rule for deletes; one that holds on a document that does not exist deletes
    nothing, as a plain delete of it does."""
    if holds:
        changes = documents.commit([delete_if(doc_id, expected)])
        assert changes == ([Change(5, "c", doc_id, None)] if doc_id == "live" else [None])
        assert documents.get("c", doc_id) is None
        return
    with pytest.raises(PreconditionFailed) as failed:
        documents.commit([delete_if(doc_id, expected)])
    assert (failed.value.expected, failed.value.current) == (expected, current)
    assert documents.head_sequence == 4
    assert documents.get("c", "live") == StoredDocument("c", "live", '{"v":2}', 2)


def test_a_failed_precondition_says_where_the_document_is(documents: SQLiteStore) -> None:
    with pytest.raises(PreconditionFailed) as live:
        documents.commit([put_if("live", 1)])
    assert str(live.value) == "document 'c'/'live' is at sequence 2, not 1: re-read it and retry"
    with pytest.raises(PreconditionFailed) as deleted:
        documents.commit([delete_if("deleted", 3)])
    assert str(deleted.value) == (
        "document 'c'/'deleted' does not exist, so it is not at sequence 3: re-read it and retry"
    )


def test_each_precondition_of_a_commit_sees_the_mutations_before_it(store: SQLiteStore) -> None:
    """Checked in order, inside the transaction: a mutation's expected sequence may be one
    that an earlier mutation of the same commit made."""
    changes = store.commit(
        [
            put_if("d", 0, '{"v":1}'),
            put_if("d", 1, '{"v":2}'),
            delete_if("d", 2),
            put_if("d", 3, '{"v":3}'),
            put_if("e", 0),
            delete_if("absent", 0),
        ]
    )
    assert changes == [
        Change(1, "c", "d", '{"v":1}'),
        Change(2, "c", "d", '{"v":2}'),
        Change(3, "c", "d", None),
        Change(4, "c", "d", '{"v":3}'),
        Change(5, "c", "e", '{"new":true}'),
        None,
    ]
    assert store.get("c", "d") == StoredDocument("c", "d", '{"v":3}', 4)

    with pytest.raises(PreconditionFailed) as failed:
        store.commit([put("c", "f"), put_if("f", 0)])
    assert (failed.value.expected, failed.value.current) == (0, 6)
    assert store.get("c", "f") is None


def test_a_failed_precondition_rolls_back_the_whole_commit(
    store: SQLiteStore, data_dir: Path
) -> None:
    """The mutations before the one that fails, puts and deletes alike, are not stored, and
    the head does not move."""
    store.commit([put("c", "before")])

    with pytest.raises(PreconditionFailed):
        store.commit([put("c", "first"), delete_if("before", 1), put_if("before", 1)])

    assert store.head_sequence == 1
    assert store.get("c", "first") is None
    assert store.get("c", "before") == StoredDocument("c", "before", "{}", 1)
    assert store.commit([put("c", "after")]) == [Change(2, "c", "after", "{}")]
    store.close()
    reopened = SQLiteStore.open(data_dir)
    try:
        assert reopened.head_sequence == 2
        assert reopened.list_ids("c") == ["after", "before"]
    finally:
        reopened.close()


def test_a_full_disk_fails_the_commit_with_its_own_error_and_writes_resume_once_freed(
    store: SQLiteStore, data_dir: Path
) -> None:
    """The error says the disk is full and names the store file, not the "cannot rollback"
    of a ROLLBACK after SQLite rolled back already; nothing is stored; and once there is
    room the same store commits again, numbering on from the last commit."""
    store.commit([put("c", "before")])
    fill_the_disk(store)

    with pytest.raises(StoreWriteError) as raised:
        store.commit([put("c", "big", '{"pad": "' + "x" * 100_000 + '"}'), delete("c", "before")])

    path = (data_dir / DATABASE_FILE).absolute()
    assert str(raised.value) == (
        f"the disk holding {path} is full (SQLITE_FULL: database or disk is full): free space"
        " on it; writes succeed again once there is room, without a restart"
    )
    assert "rollback" not in str(raised.value)
    assert store.head_sequence == 1
    assert store.get("c", "big") is None
    assert store.get("c", "before") is not None

    free_space(store)
    assert store.commit([put("c", "after")]) == [Change(2, "c", "after", "{}")]
    store.close()
    with closing(SQLiteStore.open(data_dir)) as reopened:
        assert reopened.head_sequence == 2
        assert reopened.list_ids("c") == ["after", "before"]


def test_a_read_only_store_fails_the_commit_saying_so(store: SQLiteStore, data_dir: Path) -> None:
    """Other errors of the file get the same care: a store that cannot be written says so,
    names the file and says what to do; the store writes again once it can."""
    store._writer.execute("PRAGMA query_only = 1")  # SQLite then answers as for a read-only file

    with pytest.raises(StoreWriteError) as raised:
        store.commit([put("c", "d")])

    assert str(raised.value) == (
        f"{(data_dir / DATABASE_FILE).absolute()} cannot be written (SQLITE_READONLY: attempt"
        " to write a readonly database): make it, its data dir and their file system writable"
        " by the server's user"
    )
    store._writer.execute("PRAGMA query_only = 0")
    assert store.commit([put("c", "d")]) == [Change(1, "c", "d", "{}")]


def test_data_dir_that_is_a_regular_file_gives_a_clear_error(tmp_path: Path) -> None:
    """A data dir path naming an existing file is refused with a StoreError naming it."""
    not_a_dir = tmp_path / "data"
    not_a_dir.write_text("I am a file")

    with pytest.raises(StoreError, match="cannot open the store in") as raised:
        SQLiteStore.open(not_a_dir)

    assert str(not_a_dir) in str(raised.value)
    assert not_a_dir.read_text() == "I am a file"


def test_data_dir_below_a_regular_file_gives_a_clear_error(tmp_path: Path) -> None:
    """A data dir whose parent is a file cannot be created; the error says where."""
    (tmp_path / "file").write_text("")
    data_dir = tmp_path / "file" / "data"

    with pytest.raises(StoreError, match="cannot open the store in") as raised:
        SQLiteStore.open(data_dir)

    assert str(data_dir) in str(raised.value)


def sqlite_database(*statements: str) -> Callable[[Path], None]:
    """Writes a SQLite database made by `statements` at the path it is given."""

    def write(path: Path) -> None:
        with closing(sqlite3.connect(path)) as db, db:
            for statement in statements:
                db.execute(statement)

    return write


@pytest.mark.parametrize(
    ("write", "why"),
    [
        (lambda path: path.write_bytes(b""), "is empty (0 bytes)"),
        (
            lambda path: path.write_bytes(b"this is not a database" * 100),
            "is not a SQLite database (file is not a database)",
        ),
        (
            sqlite_database("CREATE TABLE notes (text TEXT)"),
            "holds no peat-sync store (it has no epoch)",
        ),
        (
            sqlite_database(
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                "INSERT INTO meta VALUES ('schema_version', '1')",
            ),
            "holds no peat-sync store (it has no epoch)",
        ),
        (
            sqlite_database("CREATE TABLE meta (name TEXT)"),
            "holds no peat-sync store (no such column: key)",
        ),
    ],
    ids=["empty", "not-sqlite", "another-database", "no-epoch", "another-meta"],
)
def test_a_store_file_that_holds_no_store_is_refused_not_replaced(
    data_dir: Path, write: Callable[[Path], None], why: str
) -> None:
    """Only a data dir without a store file gets a new store. A store file left empty (by a
    crash, a bad restore, a mistake) or holding something else is refused, left as it is,
    with a message that names it and says how to start over: move it away."""
    data_dir.mkdir()
    path = data_dir / DATABASE_FILE
    write(path)
    before = path.read_bytes()

    with pytest.raises(StoreError) as raised:
        SQLiteStore.open(data_dir)

    message = str(raised.value)
    assert message.startswith(f"the store file {path.absolute()} {why}, "), message
    assert "To start over with an empty store, move the file out of the way" in message
    assert path.read_bytes() == before
    path.rename(data_dir / "moved-away")
    with closing(SQLiteStore.open(data_dir)) as store:  # as the message says
        assert store.head_sequence == 0


def test_a_wal_file_left_without_its_store_file_is_refused(data_dir: Path) -> None:
    """A store file moved away without its WAL leaves changes behind that SQLite would apply
    to a new store: the WAL is refused, named, until it is moved away too."""
    with closing(SQLiteStore.open(data_dir)) as store:
        store.commit([put("c", "d")])
        # Taken while the WAL holds the commit, as a backup tool or a crash might leave it.
        wal = (data_dir / WAL_FILE).read_bytes()
    assert wal
    (data_dir / DATABASE_FILE).unlink()
    (data_dir / WAL_FILE).write_bytes(wal)

    with pytest.raises(StoreError, match=f"{data_dir.absolute() / WAL_FILE} is left from a"):
        SQLiteStore.open(data_dir)

    assert (data_dir / WAL_FILE).read_bytes() == wal
    assert not (data_dir / DATABASE_FILE).exists()


def test_a_start_cut_short_while_creating_the_store_leaves_no_store_file(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new store appears under its name only once complete, so a crash while it is made
    leaves no store file behind (which the next start would refuse), and the next start
    creates the store."""

    def crash(nbytes: int) -> str:
        raise KeyboardInterrupt  # stands for the process dying

    with monkeypatch.context() as patched:
        patched.setattr(secrets, "token_hex", crash)
        with pytest.raises(KeyboardInterrupt):
            SQLiteStore.open(data_dir)

    assert not (data_dir / DATABASE_FILE).exists()
    with closing(SQLiteStore.open(data_dir)) as store:
        assert store.head_sequence == 0
        assert store.commit([put("c", "d")]) == [Change(1, "c", "d", "{}")]


def test_a_store_of_another_schema_version_is_refused(data_dir: Path) -> None:
    """A data dir written by an incompatible release is refused with a message saying so."""
    SQLiteStore.open(data_dir).close()
    with closing(sqlite3.connect(data_dir / DATABASE_FILE)) as db, db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    with pytest.raises(StoreError, match="schema version 99"):
        SQLiteStore.open(data_dir)


# Catch-up reads and tombstone retention ------------------------------------------------------


def test_changes_after_gives_the_latest_state_of_each_changed_document_in_sequence_order(
    store: SQLiteStore,
) -> None:
    """A catch-up sees each document once, at its last change, tombstones included, with the
    head it was read at."""
    store.commit([put("c", "a", "1"), put("c", "b"), put("o", "x")])  # 1..3
    store.commit([put("c", "a", "2"), delete("c", "b"), put("c", "n")])  # 4..6
    page = store.changes_after(1, None, 100, tombstones_after=1, max_bytes=MiB)
    assert page.changes == [
        Change(3, "o", "x", "{}"),
        Change(4, "c", "a", "2"),
        Change(5, "c", "b", None),
        Change(6, "c", "n", "{}"),
    ]
    assert (page.head_sequence, page.catch_up_floor) == (6, 0)


def test_changes_after_filters_collections_pages_and_old_tombstones(store: SQLiteStore) -> None:
    """The collection filter, the page limit and `tombstones_after` all narrow the read."""
    store.commit([put("c", "a"), put("o", "x"), put("c", "b"), delete("c", "a"), put("p", "y")])
    only_c = store.changes_after(0, frozenset({"c"}), 100, tombstones_after=0, max_bytes=MiB)
    assert [(c.sequence, c.doc_id) for c in only_c.changes] == [(3, "b"), (4, "a")]
    first_page = store.changes_after(0, None, 2, tombstones_after=0, max_bytes=MiB)
    assert [c.sequence for c in first_page.changes] == [2, 3]
    # A snapshot has no use for tombstones older than its start.
    snapshot = store.changes_after(0, None, 100, tombstones_after=4, max_bytes=MiB)
    assert [c.sequence for c in snapshot.changes] == [2, 3, 5]


def test_a_page_stops_at_its_byte_bound_and_says_whether_the_read_is_done(
    store: SQLiteStore,
) -> None:
    """A page holds documents until their JSON reaches `max_bytes`, one at least; only a page
    that found every remaining change is complete."""
    kib = "x" * 1024
    store.commit([put("c", f"d{n}", f'{{"pad": "{kib}"}}') for n in range(5)])  # 1..5
    pages = [store.changes_after(0, None, 100, tombstones_after=0, max_bytes=2500)]
    while not pages[-1].complete:
        cursor = pages[-1].changes[-1].sequence
        pages.append(store.changes_after(cursor, None, 100, tombstones_after=0, max_bytes=2500))
    assert [[c.sequence for c in page.changes] for page in pages] == [[1, 2, 3], [4, 5]]
    one = store.changes_after(0, None, 100, tombstones_after=0, max_bytes=1)
    assert ([c.sequence for c in one.changes], one.complete) == ([1], False)
    counted = store.changes_after(0, None, 5, tombstones_after=0, max_bytes=MiB)
    assert (len(counted.changes), counted.complete) == (5, False), "a full page may have more"


def test_purging_removes_only_expired_tombstones_and_raises_the_floor(
    store: SQLiteStore, data_dir: Path
) -> None:
    """A purge takes the oldest expired tombstones first, up to its limit, and persists the
    floor it raised; live documents are never purged."""
    store.commit([put("c", "a"), put("c", "b"), put("c", "keep")])
    store.commit([delete("c", "a"), delete("c", "b")])  # 4, 5
    assert store.purge_tombstones(deleted_before=0.0, limit=100) == 0, "nothing is that old"
    assert store.catch_up_floor == 0
    assert store.purge_tombstones(deleted_before=float("inf"), limit=1) == 1
    assert store.catch_up_floor == 4, "the oldest tombstone goes first"
    assert store.purge_tombstones(deleted_before=float("inf"), limit=100) == 1
    assert store.catch_up_floor == 5
    page = store.changes_after(0, None, 100, tombstones_after=0, max_bytes=MiB)
    assert [c.doc_id for c in page.changes] == ["keep"]
    assert page.catch_up_floor == 5
    store.close()
    reopened = SQLiteStore.open(data_dir)
    try:
        assert reopened.catch_up_floor == 5, "the floor is persisted"
        assert reopened.head_sequence == 5
    finally:
        reopened.close()


def test_a_document_put_again_after_its_delete_is_not_purged(store: SQLiteStore) -> None:
    """A put over a tombstone turns it back into a live document."""
    store.commit([put("c", "a"), delete("c", "a"), put("c", "a", "2")])
    assert store.purge_tombstones(deleted_before=float("inf"), limit=100) == 0
    assert store.get("c", "a") == StoredDocument("c", "a", "2", 3)


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_reads_from_ever_new_threads_do_not_leak_connections(store: SQLiteStore) -> None:
    """Worker threads come and go; each read borrows a pooled connection, so a long-running
    server does not accumulate open files."""
    store.commit([put("c", "a")])

    def read() -> None:
        assert store.get("c", "a") is not None
        store.changes_after(0, None, 10, tombstones_after=0, max_bytes=MiB)

    def open_files() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    read()
    gc.collect()  # files that earlier tests left to the collector must not close mid-count
    before = open_files()
    for _ in range(20):
        thread = threading.Thread(target=read)
        thread.start()
        thread.join()
    # A connection per thread would hold 3 more files each (database, WAL, shared memory).
    assert open_files() <= before


def test_close_waits_for_reads_under_way_and_refuses_later_ones(data_dir: Path) -> None:
    """Closing a connection under a running query can crash the interpreter: `close` lets
    reads on other threads finish, and a read after it raises StoreClosed."""
    store = SQLiteStore.open(data_dir)
    store.commit([put("c", f"d{i}") for i in range(20_000)])
    outcomes: list[object] = []
    started = threading.Event()

    def read_until_closed() -> None:
        try:
            while True:
                started.set()
                page = store.changes_after(0, None, 20_000, tombstones_after=0, max_bytes=MiB)
                outcomes.append(len(page.changes))
        except StoreClosed as exc:
            outcomes.append(exc)

    reader = threading.Thread(target=read_until_closed)
    reader.start()
    started.wait(10)
    store.close()
    reader.join(10)
    assert isinstance(outcomes[-1], StoreClosed)
    assert all(outcome == 20_000 for outcome in outcomes[:-1])
    with pytest.raises(StoreClosed):
        store.get("c", "d0")


def test_a_second_store_on_the_same_data_dir_is_refused_until_the_first_closes(
    data_dir: Path,
) -> None:
    """Two stores on one data dir would hand out the same sequences: the second is refused,
    naming the process that holds the store, and may open once the first has closed."""
    first = SQLiteStore.open(data_dir)
    with pytest.raises(StoreError, match=rf"another peat-sync server \(pid {os.getpid()}\)"):
        SQLiteStore.open(data_dir)
    first.commit([put("c", "d")])
    first.close()
    second = SQLiteStore.open(data_dir)
    try:
        assert second.head_sequence == 1
    finally:
        second.close()
