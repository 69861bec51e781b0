"""A store whose disk is full: SQLite's page limit stands in for the disk, so that tests
need no tiny file system of their own.

With the limit at the file's size, SQLite fails every write that needs another page with
SQLITE_FULL ("database or disk is full"), as on a full disk, and has already rolled the
transaction back when it says so. The limit belongs to the writer connection only.
"""

from __future__ import annotations

from peat_sync.store import SQLiteStore

# SQLite's own default page limit.
NO_PAGE_LIMIT = 4294967294


def fill_the_disk(store: SQLiteStore) -> None:
    with store._write_lock:  # commits and purges may run on worker threads
        (pages,) = store._writer.execute("PRAGMA page_count").fetchone()
        store._writer.execute(f"PRAGMA max_page_count = {pages}")


def free_space(store: SQLiteStore) -> None:
    with store._write_lock:
        store._writer.execute(f"PRAGMA max_page_count = {NO_PAGE_LIMIT}")
