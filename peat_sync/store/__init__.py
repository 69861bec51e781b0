"""Durable storage for documents, their sequences and tombstones.

The node talks to storage only through the `Store` protocol, so that another backend (a
distributed log such as NATS JetStream) can replace the embedded SQLite file without touching
the node. Every method is synchronous and blocking: the node calls them from worker threads.
"""

from peat_sync.store._types import (
    Change,
    HistoryPage,
    Mutation,
    PreconditionFailed,
    Store,
    StoreClosed,
    StoredDocument,
)
from peat_sync.store.sqlite import SQLiteStore

__all__ = [
    "Change",
    "HistoryPage",
    "Mutation",
    "PreconditionFailed",
    "SQLiteStore",
    "Store",
    "StoreClosed",
    "StoredDocument",
]
