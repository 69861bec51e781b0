"""The subscriber promise against the real server, on random runs (hypothesis).

Writers put and delete documents while followers, each keeping a copy of its collections the
way docs/subscribing.md says a client should, read at random moments, disconnect and resume
from their last position, and live through server restarts, graceful and `kill -9`. At the
end every follower's copy equals the store, and every sequence it did not receive one by one
is explained by its filter, a catch-up, a snapshot or a RESYNC.

The unit test tests/unit/test_no_loss.py covers far more interleavings on the embedded node;
this one checks that the promise survives the wire, real clients and real restarts.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import hypothesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.clients import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    DELETE,
    HEARTBEAT,
    RESYNC,
    SNAPSHOT_BEGIN,
    UPSERT,
    Event,
    GrpcioApi,
    GrpcioClient,
    delete,
    get,
    list_ids,
    put,
    status,
)
from tests.helpers.servers import StartServer, stop_and_start
from tests.helpers.streams import GrpcioSubscription
from tests.helpers.waiting import wait_until

COLLECTIONS = ("a", "b", "c")
# (collections, snapshot) of each follower.
FOLLOWERS: tuple[tuple[frozenset[str], bool], ...] = (
    (frozenset(), False),
    (frozenset({"a"}), False),
    (frozenset({"b", "c"}), True),
)
# Heartbeats keep every read short; a tiny replay log makes catch-ups common.
SERVER_ARGS = ("--heartbeat-interval", "0.2s", "--replay-log-size", "3")

Key = tuple[str, str]


def store_documents(client: GrpcioClient, collections: frozenset[str]) -> dict[Key, str]:
    documents = {}
    for collection in sorted(collections or COLLECTIONS):
        for doc_id in list_ids(client, collection):
            json_data, _ = get(client, collection, doc_id)
            if json_data is not None:
                documents[collection, doc_id] = json_data
    return documents


@dataclass
class Follower:
    """A client that keeps a copy of `collections` from one Subscribe stream at a time,
    following docs/subscribing.md: it resumes from its position with its epoch, re-lists on
    RESYNC (or, with `snapshot`, takes the snapshot that follows)."""

    collections: frozenset[str]
    snapshot: bool
    copy: dict[Key, str] = field(default_factory=dict)
    position: int | None = None  # None: from now on, which only a snapshot makes complete
    epoch: str | None = None
    in_snapshot: bool = False
    in_catch_up: bool = False
    stream: GrpcioSubscription | None = None
    # What the stream said, for the gap check: ("change", s), ("covered", s) for the end of a
    # catch-up, a snapshot or a RESYNC, and ("claim", s) for a heartbeat.
    record: list[tuple[str, int]] = field(default_factory=list)

    def read(self, client: GrpcioClient, events: int) -> None:
        for _ in range(events):
            self.apply(client, self.next_event(client))

    def next_event(self, client: GrpcioClient) -> Event:
        while True:
            if self.stream is None:
                self.stream = GrpcioSubscription(
                    client,
                    collections=sorted(self.collections),
                    since_sequence=self.position,
                    epoch=self.epoch,
                    snapshot=self.snapshot,
                )
            try:
                return self.stream.next(heartbeats=True)
            except grpc.RpcError:  # a restart ended the stream: resume where we were
                self.disconnect()

    def disconnect(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        if self.in_snapshot:
            self.position = None  # a partial snapshot cannot be resumed: take a new one
            self.in_snapshot = False
        self.in_catch_up = False

    def apply(self, client: GrpcioClient, event: Event) -> None:
        key = (event.collection, event.doc_id)
        if event.change_type not in (UPSERT, DELETE):
            assert event.epoch, f"a control event without the epoch: {event}"
            self.epoch = event.epoch
            hypothesis.event(f"control event {event.change_type}")
        if event.change_type == UPSERT:
            assert event.json_data is not None
            self.copy[key] = event.json_data
        elif event.change_type == DELETE:
            self.copy.pop(key, None)
        elif event.change_type in (SNAPSHOT_BEGIN, RESYNC) and self.snapshot:
            self.copy.clear()
            self.in_snapshot = True
        elif event.change_type == RESYNC:
            self.copy = store_documents(client, self.collections)
        elif event.change_type == CATCH_UP_BEGIN:
            assert event.sequence == self.position, (event, self.position)
            self.in_catch_up = True
            return
        elif event.change_type == CATCH_UP_END:
            self.in_snapshot = self.in_catch_up = False
        if self.in_snapshot:
            return
        if event.change_type in (UPSERT, DELETE):
            self.record.append(("covered" if self.in_catch_up else "change", event.sequence))
        elif event.change_type == HEARTBEAT:
            self.record.append(("claim", event.sequence))
        else:  # CATCH_UP_END or a RESYNC without a snapshot
            self.record.append(("covered", event.sequence))
        self.position = event.sequence

    def catch_up(self, client: GrpcioClient, head: int) -> None:
        """Read until the copy is complete up to `head`; heartbeats keep this bounded."""
        while self.position is None or self.position < head or self.in_snapshot:
            self.apply(client, self.next_event(client))

    def check_gaps(self, collection_at: dict[int, str]) -> None:
        """Changes come one by one, in order, without duplicates; whatever was not sent one by
        one lies in a catch-up, a snapshot or before a RESYNC; and a heartbeat never claims
        a change that was not delivered."""
        wanted = self.collections or frozenset(COLLECTIONS)
        position = 0
        for kind, sequence in self.record:
            if kind == "covered":
                assert sequence >= position, (kind, sequence, position)
                position = sequence
                continue
            missing = [
                s for s in range(position + 1, sequence + 1) if collection_at.get(s) in wanted
            ]
            if kind == "change":
                assert sequence > position, f"sequence {sequence} after {position}: repeated"
                missing.remove(sequence)
            assert not missing, f"sequences {missing} were lost silently ({kind} {sequence})"
            position = max(position, sequence)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from(COLLECTIONS), st.integers(0, 3)),
        st.tuples(st.just("delete"), st.sampled_from(COLLECTIONS), st.integers(0, 3)),
        st.tuples(st.just("read"), st.integers(0, len(FOLLOWERS) - 1), st.integers(1, 6)),
        st.tuples(st.just("disconnect"), st.integers(0, len(FOLLOWERS) - 1), st.just(0)),
        st.tuples(st.just("restart"), st.sampled_from(("graceful", "kill -9")), st.just(0)),
        st.tuples(st.just("purge"), st.just(""), st.just(0)),
    ),
    min_size=5,
    max_size=40,
)


def wait_for_purge(client: GrpcioClient, last_delete: int) -> None:
    """With no retention, the retention task purges every second: wait for it."""
    wait_until(
        lambda: status(client)["catch_up_floor"] >= last_delete,
        timeout=60,  # purges run every second; a loaded machine may run them late
        what=f"tombstones up to {last_delete} purged",
    )


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(ops=operations, retention=st.sampled_from(("24h", "0")))
# Followers that resume, after a kill -9, from before a delete: a catch-up that carries it.
@example(
    ops=[
        ("put", "a", 0),
        *[("read", follower, 2) for follower in (0, 1)],
        ("delete", "a", 0),
        ("restart", "kill -9", 0),
        *[("read", follower, 4) for follower in (0, 1)],
    ],
    retention="24h",
)
# Followers that resume from below purged deletes: a RESYNC, then a re-list or a snapshot.
@example(
    ops=[
        ("put", "b", 0),
        *[("read", follower, 2) for follower in (0, 2)],
        *[("disconnect", follower, 0) for follower in (0, 2)],
        ("put", "b", 1),
        ("delete", "b", 1),
        *[("put", "b", number) for number in (2, 3, 4)],
        ("purge", "", 0),
        *[("read", follower, 4) for follower in (0, 2)],
    ],
    retention="0",
)
def test_followers_converge_across_disconnects_and_restarts(
    start_server: StartServer,
    grpcio_api: GrpcioApi,
    ops: list[tuple[str, str | int, int]],
    retention: str,
) -> None:
    # Every example needs a store of its own; the fixture's tmp_path is shared by all.
    with tempfile.TemporaryDirectory(prefix="peat-promise-") as data_dir:
        server = start_server(
            *SERVER_ARGS, "--tombstone-retention", retention, data_dir=Path(data_dir)
        )
        run(server, grpcio_api, ops, purges=retention == "0")


def run(
    server: ServerProcess,
    grpcio_api: GrpcioApi,
    ops: list[tuple[str, str | int, int]],
    *,
    purges: bool,
) -> None:
    followers = [
        Follower(collections, snapshot, position=None if snapshot else 0)
        for collections, snapshot in FOLLOWERS
    ]
    collection_at: dict[int, str] = {}
    last_delete = 0
    client = GrpcioClient(server.address, grpcio_api)
    try:
        for kind, target, number in ops:
            if kind == "put":
                sequence = put(client, str(target), f"d{number}", f'{{"n": {number}}}')
                collection_at[sequence] = str(target)
            elif kind == "delete":
                if sequence := delete(client, str(target), f"d{number}"):
                    collection_at[sequence] = str(target)
                    last_delete = sequence
            elif kind == "read":
                followers[int(target)].read(client, number)
            elif kind == "disconnect":
                followers[int(target)].disconnect()
            elif kind == "purge":
                if purges:
                    wait_for_purge(client, last_delete)
            else:
                stop_and_start(server, str(target))
                # A restarted server listens on a new port. The followers' streams end, and
                # each resumes on its next read.
                client.close()
                client = GrpcioClient(server.address, grpcio_api)
        head = status(client)["head_sequence"]
        for follower in followers:
            follower.catch_up(client, head)
            assert follower.copy == store_documents(client, follower.collections)
            follower.check_gaps(collection_at)
    finally:
        for follower in followers:
            follower.disconnect()
        client.close()
        server.kill()
