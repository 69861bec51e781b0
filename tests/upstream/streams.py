"""Subscribe streams of upstream's clients, read as those clients read them: a request with
none of peat-sync's fields, and messages with upstream's fields only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from tests.helpers.clients import DELETE, UPSERT, GrpcioClient
from tests.helpers.waiting import STREAM_TIMEOUT


@dataclass(frozen=True)
class Change:
    """One `DocumentChange` with upstream's fields; change_type as the int on the wire."""

    collection: str
    doc_id: str
    change_type: int
    json_data: str | None

    @classmethod
    def of(cls, message: Any) -> Change:
        return cls(
            message.collection,
            message.doc_id,
            int(message.change_type),
            message.json_data if message.HasField("json_data") else None,
        )


class UpstreamSubscription:
    """A Subscribe stream of an upstream client (`client` built from one of upstream's
    protos), read one message at a time under the call's deadline."""

    def __init__(self, client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any):
        self.pb2 = client.pb2
        self.call = client.stub.Subscribe(client.pb2.SubscribeRequest(**request), timeout=timeout)
        self.messages: list[Any] = []

    def next(self) -> Change:
        self.messages.append(next(self.call))
        return Change.of(self.messages[-1])

    def until(self, stop: Callable[[Change], bool]) -> list[Change]:
        """Messages up to and including the first one for which `stop` is true."""
        changes = [self.next()]
        while not stop(changes[-1]):
            changes.append(self.next())
        return changes

    def cancel(self) -> None:
        self.call.cancel()


@contextmanager
def upstream_subscription(
    client: GrpcioClient, timeout: float = STREAM_TIMEOUT, **request: Any
) -> Iterator[UpstreamSubscription]:
    subscription = UpstreamSubscription(client, timeout, **request)
    try:
        yield subscription
    finally:
        subscription.cancel()


def apply(copy: dict[str, str], change: Change) -> None:
    """Apply a document change to a copy of one collection, as a client of upstream does."""
    if change.change_type == UPSERT:
        assert change.json_data is not None, change
        copy[change.doc_id] = change.json_data
    else:
        assert change.change_type == DELETE, change
        copy.pop(change.doc_id, None)


def relist(client: GrpcioClient, collection: str) -> dict[str, str]:
    """The documents of `collection`, as a client of upstream lists them."""
    copy = {}
    for doc_id in client.call("ListDocuments", collection=collection)["doc_ids"]:
        json_data = client.call("GetDocument", collection=collection, doc_id=doc_id)["json_data"]
        if json_data is not None:
            copy[doc_id] = json_data
    return copy
