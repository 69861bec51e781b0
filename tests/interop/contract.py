"""The API contract that every client must see the same way, written once and run against
each client in its own test module (test_grpc_js.py, test_grpcio.py, test_connect_node.py).

A module subclasses `Contract` (its tests are collected there), provides a `connect` fixture
that connects its client to a server as a `Driver`, and says how its client shows a RESYNC
event natively. Calls go through the `Client` facade of tests/helpers/clients.py; events
come back as its `Event`.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    HEARTBEAT,
    RESYNC,
    SNAPSHOT_BEGIN,
    UPSERT,
    Client,
    Event,
    delete,
    failure_of,
    get,
    list_ids,
    put,
    status,
)
from tests.helpers.servers import StartServer
from tests.helpers.streams import wait_for_subscribers

# Far ahead of any head, and beyond what a JavaScript number holds exactly.
MAX_UINT64 = 2**64 - 1


class Feed(Protocol):
    """A Subscribe stream opened for a number of events."""

    # The events as the client itself gave them, once `events` has returned.
    natives: list[Any]

    def events(self) -> list[Event]:
        """Wait for the stream's events, then end it; call once."""


class Driver(Client, Protocol):
    def subscribe(self, count: int, **request: Any) -> Feed:
        """Open a Subscribe stream of `request` (SubscribeRequest fields) for `count` events."""


Connect = Callable[[ServerProcess], Driver]


def upsert(sequence: int, collection: str, doc_id: str, json_data: str) -> Event:
    return Event(collection, doc_id, UPSERT, json_data, sequence)


def control(change_type: int, sequence: int, described: dict[str, Any], reason: int = 0) -> Event:
    """A control event at `sequence`, reporting the epoch and floors GetStatus `described`;
    its message is checked by `without_messages`."""
    return Event(
        "",
        "",
        change_type,
        None,
        sequence,
        reason,
        epoch=described["epoch"],
        replay_floor=described["replay_floor"],
        catch_up_floor=described["catch_up_floor"],
    )


def without_messages(events: list[Event]) -> list[Event]:
    """The events with their messages cleared, once checked: every control event but a
    HEARTBEAT explains itself, and no other event has a message."""
    for event in events:
        explains = event.change_type not in (UPSERT, DELETE, HEARTBEAT)
        assert bool(event.message) == explains, event
    return [dataclasses.replace(event, message="") for event in events]


def follow(client: Driver, count: int, *, then: Callable[[], object], **request: Any) -> Feed:
    """Open the only stream for `count` events and, once the server counts it, call `then`
    to write the live changes it must carry."""
    feed = client.subscribe(count, **request)
    wait_for_subscribers(client, 1)
    then()
    return feed


class Contract(ABC):
    """The contract's tests; `connect` is the fixture of the subclass's module."""

    @abstractmethod
    def assert_native_resync(self, native: Any, reason: str, sequence: int) -> None:
        """`native`, an event as the client gave it, is a RESYNC at `sequence` whose reason is
        the one the proto names `reason`, as the client spells it."""

    def test_crud(self, server: ServerProcess, connect: Connect) -> None:
        """Put returns the sequence it committed at, one after another; Get gives a present
        document's JSON and sequence, and an absent one's unset json_data and 0; List gives
        the ids in order; Delete returns its sequence, or 0 when there was nothing to delete;
        GetStatus reports the head; invalid JSON fails INVALID_ARGUMENT with a message that
        says why, and commits nothing."""
        client = connect(server)
        assert status(client)["head_sequence"] == 0
        assert put(client, "a", "d2", '{"v": 1}') == 1
        assert put(client, "a", "d1", '{"v": 2}') == 2
        assert put(client, "b", "d1", "{}") == 3
        assert put(client, "a", "d2", '{"v": "new"}') == 4
        assert get(client, "a", "d2") == ('{"v": "new"}', 4)
        assert get(client, "a", "absent") == (None, 0)
        assert list_ids(client, "a") == ["d1", "d2"]
        assert list_ids(client, "empty") == []

        assert delete(client, "a", "d2") == 5
        assert delete(client, "a", "d2") == 0
        assert get(client, "a", "d2") == (None, 0)
        assert list_ids(client, "a") == ["d1"]

        for json_data, why in [('{"v": ', "not valid JSON"), ("[1]", "must be a JSON object")]:
            failure = failure_of(
                client, "PutDocument", collection="a", doc_id="d3", json_data=json_data
            )
            assert failure.code == "INVALID_ARGUMENT", failure
            assert why in failure.message, failure
        assert status(client)["head_sequence"] == 5

    def test_subscribe_resumes_exactly_after_since(
        self, server: ServerProcess, connect: Connect
    ) -> None:
        """A stream resuming from since_sequence S, with the store's epoch, opens with a
        HEARTBEAT at S that carries the epoch, replays every change after S in order (a delete
        as DELETE), then carries live changes with no gap; with a collection filter, only
        that collection's changes."""
        client = connect(server)
        put(client, "a", "d1", '{"v": 1}')
        put(client, "b", "d1", '{"v": 1}')
        put(client, "a", "d2", '{"v": 2}')
        since = put(client, "a", "d1", '{"v": 3}')
        delete(client, "a", "d2")
        put(client, "b", "d2", '{"v": 4}')
        described = status(client)

        feed = follow(
            client,
            4,
            since_sequence=since,
            epoch=described["epoch"],
            then=lambda: put(client, "a", "live", "{}"),
        )
        assert without_messages(feed.events()) == [
            control(HEARTBEAT, since, described),
            Event("a", "d2", DELETE, None, 5),
            upsert(6, "b", "d2", '{"v": 4}'),
            upsert(7, "a", "live", "{}"),
        ]

        filtered = client.subscribe(3, collections=["b"], since_sequence=1)
        assert without_messages(filtered.events()) == [
            control(HEARTBEAT, 1, described),
            upsert(2, "b", "d1", '{"v": 1}'),
            upsert(6, "b", "d2", '{"v": 4}'),
        ]

    def test_resume_after_a_restart_catches_up_from_the_store(
        self, start_server: StartServer, connect: Connect
    ) -> None:
        """After a restart the replay log is empty, so resuming from an older S is a catch-up:
        CATCH_UP_BEGIN at S, the latest state of each document changed after S in sequence
        order (an intermediate state skipped, a delete as DELETE), then CATCH_UP_END at the
        head. The epoch is the one from before the restart."""
        server = start_server()
        client = connect(server)
        for doc_id in ("d1", "d2", "d3"):
            since = put(client, "a", doc_id, '{"v": 0}')
        put(client, "a", "d1", '{"v": "skipped"}')
        put(client, "a", "d1", '{"v": "latest"}')
        delete(client, "a", "d2")
        head = put(client, "b", "d4", "{}")
        epoch = status(client)["epoch"]

        server.restart()
        client = connect(server)  # the restarted server listens on a new port
        described = status(client)
        assert (described["epoch"], described["replay_floor"]) == (epoch, head)
        events = client.subscribe(5, since_sequence=since, epoch=epoch).events()
        assert without_messages(events) == [
            control(CATCH_UP_BEGIN, since, described),
            upsert(5, "a", "d1", '{"v": "latest"}'),
            Event("a", "d2", DELETE, None, 6),
            upsert(7, "b", "d4", "{}"),
            control(CATCH_UP_END, head, described),
        ]

    def test_resync_when_the_position_is_not_this_stores(
        self, server: ServerProcess, connect: Connect
    ) -> None:
        """A since_sequence ahead of the head (here the largest uint64) gets RESYNC
        SEQUENCE_AHEAD at the head, then the changes after it; one with another store's
        epoch gets RESYNC UNKNOWN_EPOCH and, as the request asks for snapshots, a snapshot
        of the current documents at once. The client sees each reason as the proto names
        it."""
        client = connect(server)
        put(client, "a", "d1", "{}")
        head = put(client, "a", "d2", "{}")
        described = status(client)

        feed = follow(
            client, 2, since_sequence=MAX_UINT64, then=lambda: put(client, "a", "live", "{}")
        )
        events = feed.events()
        assert without_messages(events) == [
            control(RESYNC, head, described, pb.ResyncReason.SEQUENCE_AHEAD.value),
            upsert(head + 1, "a", "live", "{}"),
        ]
        self.assert_native_resync(feed.natives[0], "RESYNC_REASON_SEQUENCE_AHEAD", head)
        # The server quotes the since_sequence it received: all 64 bits arrived, not a double.
        assert str(MAX_UINT64) in events[0].message

        head += 1
        feed = client.subscribe(6, since_sequence=1, epoch="not-this-store", snapshot=True)
        assert without_messages(feed.events()) == [
            control(RESYNC, head, described, pb.ResyncReason.UNKNOWN_EPOCH.value),
            control(SNAPSHOT_BEGIN, head, described),
            upsert(1, "a", "d1", "{}"),
            upsert(2, "a", "d2", "{}"),
            upsert(3, "a", "live", "{}"),
            control(CATCH_UP_END, head, described),
        ]
        self.assert_native_resync(feed.natives[0], "RESYNC_REASON_UNKNOWN_EPOCH", head)
