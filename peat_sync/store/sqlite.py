"""The embedded default store: one SQLite file in WAL mode.

A single writer connection belongs to the node's producer; each read borrows a connection
from a pool, so reads never wait for a commit (WAL lets them run side by side), and there are
never more reader connections than reads at once. `synchronous=FULL`
makes every commit durable before `commit` returns, which is what lets the node acknowledge a
write: an acknowledged write survives `kill -9` and power loss alike. The producer batches
writes, so the cost of the fsync is shared by the whole batch.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Self

from peat_sync.store._types import (
    Change,
    HistoryPage,
    Mutation,
    PreconditionFailed,
    StoreClosed,
    StoredDocument,
)

DATABASE_FILE = "peat.sqlite3"
WAL_FILE = f"{DATABASE_FILE}-wal"
# A new store is made under this name and renamed to DATABASE_FILE once complete.
NEW_DATABASE_FILE = f"{DATABASE_FILE}.new"
LOCK_FILE = "peat.lock"
SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    json_data TEXT,            -- NULL marks a tombstone
    sequence INTEGER NOT NULL, -- the sequence of the last change to this document
    deleted_at REAL,           -- unix time of the delete, for tombstone retention
    written_at REAL,           -- unix time of the last put, for collection configs' expiry
    PRIMARY KEY (collection, doc_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS documents_by_sequence ON documents (sequence);
CREATE INDEX IF NOT EXISTS tombstones_by_sequence ON documents (sequence)
    WHERE json_data IS NULL;
"""


class StoreError(Exception):
    """The data dir cannot be used; the message says why and what to do."""


class StoreWriteError(StoreError):
    """SQLite refused a write (a full disk, an I/O error, a read-only file): nothing of it
    was stored. The message names the file, what happened and what to do."""


# What SQLite's errors of the file or the disk mean, by primary result code: what happened
# to the store file {path}, and what to do about it.
_SQLITE_FAILURES: dict[int, tuple[str, str]] = {
    sqlite3.SQLITE_FULL: (
        "the disk holding {path} is full",
        "free space on it; writes succeed again once there is room, without a restart",
    ),
    sqlite3.SQLITE_IOERR: (
        "an I/O error on {path}",
        "check the disk, its file system and the kernel log (dmesg), then retry",
    ),
    sqlite3.SQLITE_READONLY: (
        "{path} cannot be written",
        "make it, its data dir and their file system writable by the server's user",
    ),
    sqlite3.SQLITE_PERM: (
        "{path} may not be written",
        "make it, its data dir and their file system writable by the server's user",
    ),
    sqlite3.SQLITE_CANTOPEN: (
        "{path} or a file beside it (its -wal or -shm) cannot be opened",
        "make the data dir readable and writable by the server's user",
    ),
    sqlite3.SQLITE_BUSY: (
        "another process holds {path} locked",
        "stop whatever else has the store open (a sqlite3 shell, a backup tool)",
    ),
    sqlite3.SQLITE_NOMEM: ("the server ran out of memory writing {path}", "give it more memory"),
    sqlite3.SQLITE_CORRUPT: (
        "{path} is damaged",
        "stop the server and restore the store from a backup",
    ),
    sqlite3.SQLITE_NOTADB: (
        "{path} is not a SQLite database",
        "stop the server and restore the store from a backup",
    ),
}


def _explained(exc: sqlite3.Error, path: Path) -> str | None:
    """What SQLite's error `exc` on the store file `path` means and what to do, or None for
    an error that is not the file's or the disk's (a bug, such as a value it cannot bind)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _SQLITE_FAILURES:
        return None
    happened, remedy = _SQLITE_FAILURES[code & 0xFF]
    return f"{happened.format(path=path)} ({exc.sqlite_errorname}: {exc}): {remedy}"


def _not_a_store(path: Path, why: str) -> StoreError:
    return StoreError(
        f"the store file {path} {why}, so the server will not start on it: a new store is"
        " created only where there is no store file. To start over with an empty store, move"
        " the file out of the way; to keep its documents, restore it from a backup"
    )


# A put: insert the document, or replace it (and revive it, if it was deleted).
_UPSERT = (
    "INSERT INTO documents (collection, doc_id, json_data, sequence, written_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (collection, doc_id) DO UPDATE SET"
    " json_data = excluded.json_data, sequence = excluded.sequence, deleted_at = NULL,"
    " written_at = excluded.written_at"
)


class SQLiteStore:
    """The `Store` protocol on a SQLite file. Every method blocks: call it from a thread."""

    def __init__(self, path: Path, dir_lock: int) -> None:
        self.path = path
        self._dir_lock = dir_lock  # released by `close`
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._idle_readers: list[sqlite3.Connection] = []
        # Reads under way; `close` waits for them, since closing a connection under a running
        # query can crash the interpreter.
        self._reads = 0
        self._reads_done = threading.Condition(self._lock)
        self._closed = False
        if os.path.lexists(path):
            _check_holds_a_store(path)
        else:
            _create(path)
        self._writer = self._connect()
        self._write_lock = threading.Lock()
        try:
            self._epoch, self._head, self._catch_up_floor = self._initialise()
        except BaseException:
            self._writer.close()
            raise

    @classmethod
    def open(cls, data_dir: Path) -> Self:
        """Open the store in `data_dir`, creating the directory and the store if there is no
        store file. An existing store file that is not a store is refused, never replaced."""
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            dir_lock = _lock_data_dir(data_dir)
        except OSError as exc:
            raise StoreError(f"cannot open the store in {data_dir}: {exc}") from exc
        path = (data_dir / DATABASE_FILE).absolute()
        try:
            return cls(path, dir_lock)
        except BaseException as exc:
            os.close(dir_lock)
            if isinstance(exc, StoreWriteError | OSError):
                raise StoreError(f"cannot open the store in {data_dir}: {exc}") from exc
            if isinstance(exc, sqlite3.Error):
                why = _explained(exc, path) or exc
                raise StoreError(f"cannot open the store in {data_dir}: {why}") from exc
            raise

    @property
    def epoch(self) -> str:
        return self._epoch

    @property
    def head_sequence(self) -> int:
        return self._head

    @property
    def catch_up_floor(self) -> int:
        return self._catch_up_floor

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in commit).
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA busy_timeout=5000")
        except BaseException:
            connection.close()
            raise
        with self._lock:
            self._connections.append(connection)
        return connection

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A reader connection for the duration of one read."""
        # Pooled rather than one per thread: worker threads come and go, and a connection
        # per thread would leak file descriptors with each new one.
        with self._lock:
            if self._closed:
                raise StoreClosed("the store is closed")
            self._reads += 1
            connection = self._idle_readers.pop() if self._idle_readers else None
        try:
            if connection is None:
                connection = self._connect()
            yield connection
        finally:
            with self._lock:
                if connection is not None:
                    self._idle_readers.append(connection)
                self._reads -= 1
                self._reads_done.notify_all()

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside one transaction, committed when the block ends and
        rolled back if it raises. SQLite's errors of the file or the disk are raised as
        `StoreWriteError`, which says what happened and what to do."""
        # Commits and tombstone purges share the writer connection, from different threads.
        with self._write_lock:
            db = self._writer
            try:
                if db.in_transaction:  # a ROLLBACK that failed before
                    db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    _roll_back(db)
                    raise
            except sqlite3.Error as exc:
                explained = _explained(exc, self.path)
                if explained is None:
                    raise
                raise StoreWriteError(explained) from exc

    def _initialise(self) -> tuple[str, int, int]:
        """Check the store's schema version, bring its indexes up to date, and return its
        epoch, head and floor."""
        with self._writing() as db:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            version = meta.get("schema_version", SCHEMA_VERSION)
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {version}; this peat-sync reads version "
                    f"{SCHEMA_VERSION}. Use a peat-sync release that matches the data dir."
                )
            _create_schema(db)  # what stores made by older releases lack
            columns = {row[1] for row in db.execute("PRAGMA table_info(documents)")}
            if "written_at" not in columns:
                # Their documents' write times are unknown: expiry counts from now.
                meta["written_at_since"] = str(time.time())
                db.execute("ALTER TABLE documents ADD COLUMN written_at REAL")
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('written_at_since', ?)",
                    (meta["written_at_since"],),
                )
        # The write time of documents written before the store recorded write times.
        self._written_since = float(meta.get("written_at_since", "0"))
        self._stream = meta.get("stream")
        self._previous_epoch = meta.get("previous_epoch")
        if self._stream is not None:
            self._replicate()
        # Stores made before tombstone retention existed have purged nothing.
        return meta["epoch"], int(meta["head_sequence"]), int(meta.get("catch_up_floor", "0"))

    def commit(self, mutations: Sequence[Mutation]) -> list[Change | None]:
        with self._writing() as db:
            head = self._head
            now = time.time()
            changes: list[Change | None] = []
            puts: list[tuple[str, str, str, int, float]] = []  # written in one executemany
            for mutation in mutations:
                if mutation.json_data is None or mutation.expected_sequence is not None:
                    # The document as the earlier mutations of this commit left it.
                    db.executemany(_UPSERT, puts)
                    puts.clear()
                    live = _live_sequence(db, mutation)
                if mutation.json_data is None:
                    if live is None:
                        changes.append(None)
                        continue
                    head += 1
                    db.execute(
                        "UPDATE documents SET json_data = NULL, sequence = ?, deleted_at = ?"
                        " WHERE collection = ? AND doc_id = ?",
                        (head, now, mutation.collection, mutation.doc_id),
                    )
                else:
                    head += 1
                    puts.append(
                        (mutation.collection, mutation.doc_id, mutation.json_data, head, now)
                    )
                changes.append(
                    Change(head, mutation.collection, mutation.doc_id, mutation.json_data)
                )
            db.executemany(_UPSERT, puts)
            if head != self._head:
                db.execute("UPDATE meta SET value = ? WHERE key = 'head_sequence'", (str(head),))
        self._head = head
        return changes

    def get(self, collection: str, doc_id: str) -> StoredDocument | None:
        with self._reading() as db:
            row = db.execute(
                "SELECT json_data, sequence FROM documents WHERE collection = ? AND doc_id = ?"
                " AND json_data IS NOT NULL",
                (collection, doc_id),
            ).fetchone()
        return None if row is None else StoredDocument(collection, doc_id, row[0], row[1])

    def list_ids(self, collection: str) -> list[str]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT doc_id FROM documents WHERE collection = ? AND json_data IS NOT NULL"
                " ORDER BY doc_id",
                (collection,),
            ).fetchall()
        return [doc_id for (doc_id,) in rows]

    def list_documents(self, collection: str) -> list[StoredDocument]:
        with self._reading() as db:
            rows = db.execute(
                "SELECT doc_id, json_data, sequence FROM documents WHERE collection = ?"
                " AND json_data IS NOT NULL ORDER BY doc_id",
                (collection,),
            ).fetchall()
        return [StoredDocument(collection, *row) for row in rows]

    def changes_after(
        self,
        since: int,
        collections: frozenset[str] | None,
        limit: int,
        tombstones_after: int,
        max_bytes: int,
    ) -> HistoryPage:
        query = (
            "SELECT sequence, collection, doc_id, json_data FROM documents WHERE sequence > ?"
            " AND (json_data IS NOT NULL OR sequence > ?)"
        )
        parameters: list[object] = [since, tombstones_after]
        if collections is not None:
            query += f" AND collection IN ({', '.join('?' * len(collections))})"
            parameters.extend(sorted(collections))
        query += " ORDER BY sequence LIMIT ?"
        parameters.append(limit)
        with self._reading() as db:
            # One read transaction: the rows, the head and the floor come from one snapshot.
            db.execute("BEGIN")
            try:
                changes: list[Change] = []
                size = 0
                rows = db.execute(query, parameters)
                while size < max_bytes and (row := rows.fetchone()) is not None:
                    changes.append(Change(*row))
                    size += len(row[3] or "")
                complete = size < max_bytes and len(changes) < limit
                meta = dict(
                    db.execute(
                        "SELECT key, value FROM meta"
                        " WHERE key IN ('head_sequence', 'catch_up_floor')"
                    ).fetchall()
                )
            finally:
                db.execute("COMMIT")
        return HistoryPage(
            changes, int(meta["head_sequence"]), int(meta.get("catch_up_floor", "0")), complete
        )

    def documents_written_before(
        self, collection: str, written_before: float, limit: int, *, marked_deleted: bool
    ) -> list[tuple[str, int]]:
        query = (
            "SELECT doc_id, sequence FROM documents WHERE collection = ?"
            " AND json_data IS NOT NULL AND coalesce(written_at, ?) < ?"
        )
        if marked_deleted:
            query += " AND json_type(json_data, '$._deleted') = 'true'"
        query += " ORDER BY sequence LIMIT ?"
        with self._reading() as db:
            rows = db.execute(
                query, (collection, self._written_since, written_before, limit)
            ).fetchall()
        return [(doc_id, sequence) for doc_id, sequence in rows]

    def purge_tombstones(
        self,
        deleted_before: float,
        limit: int,
        *,
        collection: str | None = None,
        excluding: Collection[str] = (),
    ) -> int:
        query = (
            "SELECT collection, doc_id, sequence FROM documents WHERE json_data IS NULL"
            " AND deleted_at < ?"
        )
        parameters: list[object] = [deleted_before]
        if collection is not None:
            query += " AND collection = ?"
            parameters.append(collection)
        if excluding:
            query += f" AND collection NOT IN ({', '.join('?' * len(excluding))})"
            parameters.extend(sorted(excluding))
        query += " ORDER BY sequence LIMIT ?"
        parameters.append(limit)
        with self._writing() as db:
            purged = db.execute(query, parameters).fetchall()
            if not purged:
                return 0
            db.executemany(
                "DELETE FROM documents WHERE collection = ? AND doc_id = ?",
                [(collection, doc_id) for collection, doc_id, _ in purged],
            )
            floor = max(self._catch_up_floor, max(sequence for *_, sequence in purged))
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('catch_up_floor', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(floor),),
            )
        self._catch_up_floor = floor
        return len(purged)

    # Shared mode ----------------------------------------------------------------------------

    @property
    def stream(self) -> str | None:
        """The NATS stream this store is a replica of; None for a single node's store."""
        return self._stream

    @property
    def previous_epoch(self) -> str | None:
        """The epoch of the stream the store followed before the one it follows now."""
        return self._previous_epoch

    def follow(self, stream: str, epoch: str) -> str | None:
        """Make the store a replica of `stream`, whose epoch is `epoch`. A store that follows
        it already is left as it is. One that followed another stream, or this name before it
        was recreated, is emptied, and its old epoch returned: the stream holds its documents.
        A single node's store with documents is refused, since they exist nowhere else."""
        if self._stream == stream and self._epoch == epoch:
            return None
        if self._stream is None and self._head > 0:
            raise StoreError(
                f"the store in {self.path.parent} holds a single node's documents (head sequence"
                f" {self._head}); in shared mode the data dir holds a replica of the NATS"
                f" stream, so serving it with --nats would discard them. Give this sidecar a"
                " new --data-dir, and copy documents into the stream by writing them through it"
            )
        previous = self._epoch if self._stream is not None else None
        meta = {"stream": stream, "epoch": epoch, "head_sequence": "0", "catch_up_floor": "0"}
        if previous is not None:
            meta["previous_epoch"] = previous
        with self._writing() as db:
            db.execute("DELETE FROM documents")
            db.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(meta.items()),
            )
        self._stream, self._epoch, self._previous_epoch = stream, epoch, previous
        self._head = self._catch_up_floor = 0
        self._replicate()
        return previous

    def _replicate(self) -> None:
        """A replica's commits need not reach the disk before they return: the stream holds
        every change, and a store that lost its last commits in a power cut resumes the
        stream after the head it kept (WAL keeps the file consistent). This spares an fsync
        per applied batch."""
        with self._write_lock:
            self._writer.execute("PRAGMA synchronous=NORMAL")

    def apply(self, changes: Sequence[Change], head: int) -> list[Change | None]:
        """Apply changes the stream numbered, atomically, in order, and move the head to
        `head`: the last sequence of the stream they come from, which may be past the last
        change. Returns each change, or None for the delete of a document that is absent or
        already deleted; such a delete still leaves a tombstone, so that a catch-up from
        before it tells a consumer that had the document (on another sidecar) it is gone."""
        with self._writing() as db:
            now = time.time()
            applied: list[Change | None] = []
            puts: list[tuple[str, str, str, int, float]] = []  # written in one executemany
            for change in changes:
                if change.json_data is not None:
                    puts.append(
                        (change.collection, change.doc_id, change.json_data, change.sequence, now)
                    )
                    applied.append(change)
                    continue
                db.executemany(_UPSERT, puts)
                puts.clear()
                key = (change.collection, change.doc_id)
                deleted = db.execute(
                    "UPDATE documents SET json_data = NULL, sequence = ?, deleted_at = ?"
                    " WHERE collection = ? AND doc_id = ? AND json_data IS NOT NULL",
                    (change.sequence, now, *key),
                ).rowcount
                if not deleted:
                    db.execute(
                        "INSERT INTO documents (collection, doc_id, json_data, sequence,"
                        " deleted_at) VALUES (?, ?, NULL, ?, ?) ON CONFLICT DO NOTHING",
                        (*key, change.sequence, now),
                    )
                applied.append(change if deleted else None)
            db.executemany(_UPSERT, puts)
            db.execute("UPDATE meta SET value = ? WHERE key = 'head_sequence'", (str(head),))
        self._head = head
        return applied

    def close(self) -> None:
        """Wait for the reads under way, refuse new ones, and close every connection."""
        with self._lock:
            self._closed = True
            self._reads_done.wait_for(lambda: self._reads == 0)
            for connection in self._connections:
                connection.close()
            self._connections.clear()
            if self._dir_lock >= 0:
                os.close(self._dir_lock)  # lets another server open the store
                self._dir_lock = -1


def _live_sequence(db: sqlite3.Connection, mutation: Mutation) -> int | None:
    """The sequence of the live document `mutation` changes, None when it is absent or
    deleted; raises `PreconditionFailed` when the mutation's `expected_sequence` does not
    hold."""
    row = db.execute(
        "SELECT json_data IS NOT NULL, sequence FROM documents WHERE collection = ? AND doc_id = ?",
        (mutation.collection, mutation.doc_id),
    ).fetchone()
    live = row is not None and bool(row[0])
    current = row[1] if live else 0
    expected = mutation.expected_sequence
    # A tombstone keeps the sequence of its delete: expecting it holds, as expecting 0 does,
    # so that whoever saw the delete may put the document back.
    tombstone = row[1] if row is not None and not live else None
    if expected is not None and expected not in (current, tombstone):
        raise PreconditionFailed(mutation.collection, mutation.doc_id, expected, current)
    return current if live else None


def _roll_back(db: sqlite3.Connection) -> None:
    """Roll back the transaction under way, if SQLite has not already: after some errors (a
    full disk, an I/O error) it has, and a ROLLBACK would only fail with "cannot rollback -
    no transaction is active". A ROLLBACK that fails is left to the next transaction to retry:
    the error the caller sees is the one that failed the write."""
    if db.in_transaction:
        with suppress(sqlite3.Error):
            db.execute("ROLLBACK")


def _check_holds_a_store(path: Path) -> None:
    """Raise a StoreError unless the file at `path` holds a store, without changing the file:
    the writer's connection would turn a SQLite database of another kind to WAL mode."""
    if path.stat().st_size == 0:
        raise _not_a_store(path, "is empty (0 bytes)")
    try:
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            has_meta = db.execute(
                "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'"
            ).fetchone()
            has_epoch = has_meta and db.execute("SELECT 1 FROM meta WHERE key = 'epoch'").fetchone()
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", None)
        if code == sqlite3.SQLITE_NOTADB:
            raise _not_a_store(path, f"is not a SQLite database ({exc})") from exc
        if code == sqlite3.SQLITE_CORRUPT:
            raise _not_a_store(path, f"is damaged ({exc})") from exc
        if code == sqlite3.SQLITE_ERROR:  # a table named meta, but not the store's
            raise _not_a_store(path, f"holds no peat-sync store ({exc})") from exc
        raise
    if not has_epoch:
        raise _not_a_store(path, "holds no peat-sync store (it has no epoch)")


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def _create(path: Path) -> None:
    """Make a new, empty store at `path`, with its epoch.

    It is made under another name and renamed once committed, so that the file at `path`
    always holds a whole store: a crash midway leaves no store file, and the next start makes
    a new one, while a store file that is empty or holds no store is refused, never replaced.
    """
    wal = path.with_name(WAL_FILE)
    if os.path.lexists(wal) and wal.stat().st_size > 0:
        raise StoreError(
            f"{wal} is left from a store file that is gone ({path}), so the server will not"
            " create a new store beside it. To start over with an empty store, move it out of"
            f" the way; to keep its documents, restore {path} from a backup"
        )
    new = path.with_name(NEW_DATABASE_FILE)
    for leftover in (new, new.with_name(f"{NEW_DATABASE_FILE}-journal")):
        leftover.unlink(missing_ok=True)  # of a creation that a crash cut short
    with closing(sqlite3.connect(new, isolation_level=None)) as db:
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")
        _create_schema(db)
        meta = [
            ("schema_version", SCHEMA_VERSION),
            ("epoch", secrets.token_hex(8)),
            ("head_sequence", "0"),
        ]
        db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta)
        db.execute("COMMIT")
    os.rename(new, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename survives a crash
    finally:
        os.close(directory)


def _lock_data_dir(data_dir: Path) -> int:
    """Take the data dir for this process; returns the open lock file, whose lock lasts until
    it is closed (or the process dies, even by kill -9).

    Two servers on one store would each count sequences in memory and hand out the same
    ones: the second is refused, naming the first.
    """
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreError(
            f"another peat-sync server (pid {holder}) is using the store in {data_dir};"
            " stop it, or give this server another --data-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
