"""Errors the node raises for requests it refuses; the server maps each to a gRPC status."""


class RequestError(Exception):
    """A request the node refuses. The message tells the caller what to change."""


class InvalidRequest(RequestError):
    """The request is malformed: bad JSON, an empty or unusable name."""


class LimitExceeded(RequestError):
    """The request is well formed but larger than the configured limits allow."""


class NodeClosed(RequestError):
    """The node is shutting down and takes no more work."""


class QueueFull(Exception):
    """A write that does not wait found the write queue full: wait for room instead."""


class MustWait(QueueFull):
    """A write that does not wait must read the store first (a delete in a SOFT_DELETE
    collection rewrites the document): make it with the waiting twin instead."""


class StoreUnavailable(RequestError):
    """The store failed to commit (a full disk, an I/O error); nothing of the write was stored."""


class WriteRefused(RequestError):
    """The node takes no writes in its present state (shared mode with sync stopped)."""
