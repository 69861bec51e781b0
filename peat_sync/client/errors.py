"""What a client call can fail with."""

from __future__ import annotations

import asyncio

from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

# Statuses after which the same call may succeed later: the server is starting, stopping or
# unreachable. Anything else is the request's own fault and is not retried; that includes
# RESOURCE_EXHAUSTED, which the server answers to a document over its size limit (and to a
# subscription beyond its limit, which `ResilientSubscription` retries).
RETRYABLE = frozenset(
    {
        Status.UNAVAILABLE,
        Status.DEADLINE_EXCEEDED,
        Status.ABORTED,
        Status.INTERNAL,
        Status.UNKNOWN,
    }
)


class ClientError(Exception):
    """A call to the server failed; the message says why."""


class Unavailable(ClientError):
    """The server cannot be reached, or cannot serve the call now: retrying later may work."""


class Rejected(ClientError):
    """The server refused the request (bad input, a missing precondition, an unimplemented
    RPC); retrying the same request will fail again."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


class PreconditionFailed(Rejected):
    """A put or delete with `expected_sequence` found the document changed since: re-read it
    and retry. `current_sequence` is the document's sequence now (0: it does not exist), or
    None when the server did not say."""

    def __init__(self, message: str, current_sequence: int | None) -> None:
        super().__init__(Status.FAILED_PRECONDITION, message)
        self.current_sequence = current_sequence


def client_error(exc: BaseException, address: str) -> ClientError:
    """The `ClientError` that stands for a grpclib or socket failure of a call to `address`."""
    if isinstance(exc, GRPCError):
        message = exc.message or exc.status.name.lower().replace("_", " ")
        if exc.status in RETRYABLE:
            return Unavailable(f"{address}: {message}")
        return Rejected(exc.status, message)
    if isinstance(exc, asyncio.TimeoutError):
        return Unavailable(f"{address}: no answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return Unavailable(f"cannot connect to {address}: is peat-sync serving there?")
    if isinstance(exc, OSError):
        return Unavailable(f"cannot reach {address}: {exc.strerror or exc}")
    return Unavailable(f"connection to {address} lost: {exc or type(exc).__name__}")


# Everything a call over a connection that fails can raise, short of a bug.
CALL_FAILURES = (GRPCError, StreamTerminatedError, ProtocolError, OSError, asyncio.TimeoutError)
