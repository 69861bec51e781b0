"""`Mirror` against the real server: a local copy `{collection: {doc_id: document}}` that only
ever shows the store as it was at one sequence, `wait_for(sequence)`, and `changes()`.

The tests here are the store's only writer and record every change they commit (`History`),
so they know what the store held at every sequence: a mirror must equal that at its own
`sequence` whenever it is looked at, and its `changes()` replayed onto an empty copy must
pass only through such states. Done when the mirrors equal the store after a random run
with graceful and `kill -9` restarts and a tombstone purge that forces a RESYNC.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpclib.client
import pytest
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import AppliedChange, Client, Mirror, Rejected
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.client_library import (
    FAST_BACKOFF,
    QUICK_HEARTBEATS,
    Documents,
    store_documents,
    wait_for_purge,
)
from tests.helpers.links import Link
from tests.helpers.servers import StartServer, restart
from tests.helpers.waiting import eventually, run_scenario, within

COLLECTIONS = ("a", "b", "c")
RESYNC_COMPACTED = "RESYNC (HISTORY_COMPACTED)"


@dataclass
class History:
    """Every change the test committed, in sequence order; with a single writer, this is the
    store's whole history."""

    changes: list[tuple[int, str, str, Any]] = field(default_factory=list)

    @property
    def head(self) -> int:
        return self.changes[-1][0] if self.changes else 0

    async def put(self, client: Client, collection: str, doc_id: str, document: Any) -> int:
        sequence = await client.put(collection, doc_id, document)
        self.changes.append((sequence, collection, doc_id, document))
        return sequence

    async def delete(self, client: Client, collection: str, doc_id: str) -> int:
        """Delete a document; 0 (and nothing recorded) when there was none."""
        sequence = await client.delete(collection, doc_id)
        if sequence:
            self.changes.append((sequence, collection, doc_id, None))
        return sequence

    def at(self, sequence: int, collections: Collection[str]) -> Documents:
        """The store's documents of `collections` at `sequence`, in a mirror's shape."""
        documents: Documents = {}
        for committed, collection, doc_id, document in self.changes:
            if committed > sequence:
                break
            if collection not in collections:
                continue
            if document is None:
                documents.get(collection, {}).pop(doc_id, None)
            else:
                documents.setdefault(collection, {})[doc_id] = document
        return {collection: docs for collection, docs in documents.items() if docs}


def assert_consistent(mirror: Mirror, history: History, collections: Collection[str]) -> None:
    """The mirror, once ready, shows the store exactly as it was at its `sequence`."""
    if mirror.ready:
        expected = history.at(mirror.sequence, collections)
        assert mirror.documents == expected, f"not the store at sequence {mirror.sequence}"


def replay(
    changes: list[AppliedChange], history: History, collections: Collection[str]
) -> Documents:
    """`changes` applied to an empty copy. The changes of one sequence (one live change, or
    all the differences a catch-up or snapshot made) are one step: after each complete step,
    the copy must be the store at that sequence; the last step may still be arriving."""
    copy: Documents = {}
    for index, change in enumerate(changes):
        documents = copy.setdefault(change.collection, {})
        if change.deleted:
            assert change.doc_id in documents, f"{change} deletes what no change created"
            del documents[change.doc_id]
            if not documents:
                del copy[change.collection]
        else:
            documents[change.doc_id] = change.document
        following = changes[index + 1] if index + 1 < len(changes) else None
        if following is not None and following.sequence != change.sequence:
            assert following.sequence > change.sequence, (change, following)
            assert copy == history.at(change.sequence, collections), change
    return copy


async def collect(changes: AsyncIterator[AppliedChange], into: list[AppliedChange]) -> None:
    async for change in changes:
        into.append(change)


def replays_to_mirror(
    applied: list[AppliedChange], history: History, collections: Collection[str], mirror: Mirror
) -> bool:
    return replay(applied, history, collections) == mirror.documents


# ---------------------------------------------------------------------------------------------
# wait_for, and failures


def test_wait_for_makes_a_write_visible(start_server: StartServer) -> None:
    """`wait_ready` brings the first snapshot; after `wait_for` of the sequence a put or a
    delete returned, the mirror shows it; a write to a collection the mirror does not follow
    is passed by heartbeats; a collection emptied disappears from `documents`."""
    server = start_server(*QUICK_HEARTBEATS)

    async def scenario() -> None:
        async with Client(server.address) as client:
            before = await client.put("a", "old", {"v": 0})
            async with client.mirror(["a"]) as mirror:
                await mirror.wait_ready()
                assert mirror.documents == {"a": {"old": {"v": 0}}}
                assert (mirror.epoch, mirror.sequence) == ((await client.status()).epoch, before)
                sequence = await client.put("a", "new", {"v": 1})
                await mirror.wait_for(sequence)
                assert mirror.documents == {"a": {"old": {"v": 0}, "new": {"v": 1}}}
                await mirror.wait_for(await client.delete("a", "old"))
                assert mirror.documents == {"a": {"new": {"v": 1}}}
                elsewhere = await client.put("b", "x", {})
                await mirror.wait_for(elsewhere)
                assert mirror.sequence >= elsewhere
                assert mirror.documents == {"a": {"new": {"v": 1}}}
                await mirror.wait_for(await client.delete("a", "new"))
                assert mirror.documents == {}

    run_scenario(scenario, timeout=20)


def test_a_mirror_of_a_query_holds_the_documents_it_matches(start_server: StartServer) -> None:
    """A document that stops matching leaves the copy; one that starts matching enters it."""
    server = start_server(*QUICK_HEARTBEATS)
    vehicles = pb.SubscriptionQuery(eq=pb.QueryEq(field="kind", value='"vehicle"'))

    async def scenario() -> None:
        async with Client(server.address) as client:
            await client.put("fleet", "t1", {"kind": "vehicle"})
            await client.put("fleet", "p1", {"kind": "person"})
            async with client.mirror(["fleet"], query=vehicles) as mirror:
                await mirror.wait_ready()
                assert mirror.documents == {"fleet": {"t1": {"kind": "vehicle"}}}
                await mirror.wait_for(await client.put("fleet", "t1", {"kind": "person"}))
                assert mirror.documents == {}
                await mirror.wait_for(await client.put("fleet", "p1", {"kind": "vehicle"}))
                assert mirror.documents == {"fleet": {"p1": {"kind": "vehicle"}}}

    run_scenario(scenario, timeout=20)


def test_a_rejected_collection_is_raised_by_every_waiter(server: ServerProcess) -> None:
    """A mirror of a collection the server refuses raises `Rejected` (INVALID_ARGUMENT) from
    `wait_ready`, from `changes()` and when its block exits, instead of retrying forever."""

    async def follow(mirror: Mirror) -> None:
        async with mirror:
            with pytest.raises(Rejected):
                await mirror.wait_ready()
            async with mirror.changes() as changes:
                with pytest.raises(Rejected):
                    await anext(changes)

    async def scenario() -> None:
        async with Client(server.address) as client:
            with pytest.raises(Rejected, match="must not be empty") as raised:
                await follow(client.mirror([""], backoff=FAST_BACKOFF))
            assert raised.value.status is Status.INVALID_ARGUMENT

    run_scenario(scenario, timeout=20)


# ---------------------------------------------------------------------------------------------
# Catch-ups and RESYNCs


def test_after_a_resync_changes_are_only_the_differences(
    socket_dir: Path, start_unix_server: StartServer
) -> None:
    """Cut off, the mirror misses an update, a create, and a delete whose tombstone is then
    purged. Back, it gets RESYNC HISTORY_COMPACTED and a snapshot; `changes()` yields only
    what the snapshot changed (not the document that stayed the same), at the snapshot's
    sequence, and the mirror equals the store."""
    server = start_unix_server("--replay-log-size", "1", "--tombstone-retention", "0")

    async def scenario() -> None:
        async with (
            Link(socket_dir / "link.sock", server) as link,
            Client(server.address) as client,
            Client(link.address) as mirror_client,
        ):
            for doc_id in ("same", "changed", "gone"):
                await client.put("a", doc_id, {"v": 1})
            async with (
                mirror_client.mirror(["a"], backoff=FAST_BACKOFF) as mirror,
                mirror.changes() as changes,
            ):
                applied: list[AppliedChange] = []
                collecting = asyncio.create_task(collect(changes, applied))
                await mirror.wait_ready()
                await link.cut()
                await client.put("a", "changed", {"v": 2})
                deleted = await client.delete("a", "gone")
                head = await client.put("a", "new", {"v": 1})
                await wait_for_purge(client, deleted)
                await link.restore()
                await mirror.wait_for(head)
                assert mirror.documents == await store_documents(client, ["a"])
                await eventually(lambda: len(applied) >= 6, what="6 changes")
                collecting.cancel()
            # The first snapshot, from nothing; then what the RESYNC's snapshot changed.
            assert sorted(c.doc_id for c in applied[:3]) == ["changed", "gone", "same"]
            assert sorted((c.doc_id, c.document, c.sequence) for c in applied[3:]) == [
                ("changed", {"v": 2}, head),
                ("gone", None, head),
                ("new", {"v": 1}, head),
            ]
            await eventually(lambda: RESYNC_COMPACTED in server.log, what="the RESYNC's log line")

    run_scenario(scenario, timeout=20)


class Tripwire:
    """Ends a Subscribe or SubscribeBatched stream, as a lost connection would, at the first
    event `trips` accepts; only once. The events before it in its batch still arrive."""

    def __init__(self, trips: Callable[[pb.DocumentChange], bool]) -> None:
        self.trips = trips
        self.fired = False

    def check(self, message: pb.DocumentChange) -> None:
        if not self.fired and self.trips(message):
            self.fired = True
            raise StreamTerminatedError("connection lost (injected by the test)")


class _TrippingStream:
    def __init__(self, stream: Any, tripwire: Tripwire) -> None:
        self._stream = stream
        self._tripwire = tripwire
        self._cut = False  # the tripwire fired inside a batch: the next receive fails

    async def __aenter__(self) -> _TrippingStream:
        await self._stream.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        return await self._stream.__aexit__(*exc_info)

    async def send_message(self, message: Any, *, end: bool = False) -> None:
        await self._stream.send_message(message, end=end)

    async def recv_message(self) -> Any:
        if self._cut:
            raise StreamTerminatedError("connection lost (injected by the test)")
        message = await self._stream.recv_message()
        if isinstance(message, pb.DocumentChangeBatch):
            for index, change in enumerate(message.changes):
                try:
                    self._tripwire.check(change)
                except StreamTerminatedError:
                    self._cut = True
                    return pb.DocumentChangeBatch(changes=message.changes[:index])
        elif message is not None:
            self._tripwire.check(message)
        return message


class _TrippingChannel:
    def __init__(self, channel: grpclib.client.Channel, tripwire: Tripwire) -> None:
        self._channel = channel
        self._tripwire = tripwire

    def request(self, name: str, *args: Any, **kwargs: Any) -> Any:
        stream = self._channel.request(name, *args, **kwargs)
        following = name.endswith(("/Subscribe", "/SubscribeBatched"))
        return _TrippingStream(stream, self._tripwire) if following else stream

    def close(self) -> None:
        self._channel.close()


class TrippingClient(Client):
    """A `Client` whose Subscribe streams go through a `Tripwire`."""

    def __init__(self, address: str, tripwire: Tripwire) -> None:
        super().__init__(address)
        self.tripwire = tripwire

    @property
    def channel(self) -> grpclib.client.Channel:
        return cast(grpclib.client.Channel, _TrippingChannel(super().channel, self.tripwire))


def test_an_interrupted_catch_up_starts_again(
    socket_dir: Path, start_unix_server: StartServer
) -> None:
    """A mirror cut off while 8 documents are written comes back to a catch-up (its position
    is older than the replay log), and loses its stream just before the last document, when
    the last one it got is in the replay log. The half-done catch-up is never applied: the
    mirror resumes from where its copy stands, takes the whole catch-up again, applies it at
    once at its end, and equals the store."""
    server = start_unix_server("--replay-log-size", "3")

    async def scenario() -> None:
        history = History()
        last = ("a", "d8")
        tripwire = Tripwire(
            lambda message: (
                message.change_type is pb.ChangeType.UPSERT
                and (message.collection, message.doc_id) == last
            )
        )
        async with (
            Link(socket_dir / "link.sock", server) as link,
            Client(server.address) as client,
            TrippingClient(link.address, tripwire) as mirror_client,
            mirror_client.mirror(["a"], backoff=FAST_BACKOFF) as mirror,
            mirror.changes() as changes,
        ):
            applied: list[AppliedChange] = []
            collecting = asyncio.create_task(collect(changes, applied))
            await mirror.wait_for(await history.put(client, "a", "d0", {}))
            position = mirror.sequence
            await link.cut()
            for number in range(1, 9):
                await history.put(client, "a", f"d{number}", {"n": number})
            assert (await client.status()).replay_floor > position
            await link.restore()
            await within(mirror.wait_for(history.head), 10)
            assert tripwire.fired
            assert mirror.documents == history.at(history.head, ["a"])
            assert mirror.documents == await store_documents(client, ["a"])
            await eventually(lambda: len(applied) >= 9, what="9 changes")
            collecting.cancel()
        # d0 live, then d1..d8 once each, all at the catch-up's end.
        assert [(c.doc_id, c.sequence) for c in applied[1:]] == [
            (f"d{number}", history.head) for number in range(1, 9)
        ]
        # The catch-up was asked for twice from the same position.
        asked = f"since: {position}, snapshot: yes"
        await eventually(lambda: server.log.count(asked) == 2, what=f"two requests {asked!r}")

    run_scenario(scenario, timeout=20)


# ---------------------------------------------------------------------------------------------
# The randomized run

# Mirrors of the run: two of the three collections, and all of them.
MIRRORS: dict[str, tuple[str, ...]] = {"a and b": ("a", "b"), "all": ()}
CATCHING_UP = "catching up from the store"
# While the mirrors are cut off: random writes; only puts (so no tombstone can be purged
# after the mirrors' position, and they must catch up); or writes and a purged tombstone
# after their position (so they must take a RESYNC).
PARTITIONS = ("partition", "catch-up partition", "resync partition")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mirrors_equal_the_store_after_a_random_run(
    socket_dir: Path, start_unix_server: StartServer, seed: int
) -> None:
    """Random puts and deletes across 3 collections; at random points, a graceful restart, a
    kill -9 restart, and partitions that cut the mirrors off while the store moves on
    (sometimes across a restart): one brings a catch-up, one purges a tombstone and so forces
    a RESYNC. Two mirrors (of `a` and `b`, and of everything) follow through the link that
    the partitions cut. After every step each mirror shows the store at its own sequence; at
    the end, after `wait_for(head)`, each equals the store (listed and read back); and each
    one's `changes()`, replayed onto an empty copy, passes only through states of the store
    and ends equal to the mirror."""
    server = start_unix_server(
        *QUICK_HEARTBEATS, "--replay-log-size", "3", "--tombstone-retention", "0"
    )
    rng = random.Random(seed)
    steps = [rng.choice(("put", "put", "delete")) for _ in range(40)]
    for special in ("graceful", "kill -9", *PARTITIONS):
        steps.insert(rng.randrange(len(steps) + 1), special)

    async def scenario() -> None:
        history = History()

        async def write(kind: str) -> None:
            collection, doc_id = rng.choice(COLLECTIONS), f"d{rng.randrange(5)}"
            if kind == "put":
                await history.put(client, collection, doc_id, {"n": rng.randrange(100)})
            else:
                await history.delete(client, collection, doc_id)

        async def partition(kind: str, mirrors: list[Mirror]) -> None:
            if kind == "catch-up partition":
                for mirror in mirrors:  # tombstones purged from now on lie behind them
                    await mirror.wait_for(history.head)
            await link.cut()
            # More writes than the replay log holds: a replay is out of the question.
            for _ in range(rng.randrange(4, 8)):
                await write(
                    "put" if kind == "catch-up partition" else rng.choice(("put", "delete"))
                )
            if kind == "resync partition":
                await history.put(client, "a", "purged", {})
                await wait_for_purge(client, await history.delete(client, "a", "purged"))
            elif rng.random() < 0.5:
                await restart(server, rng.choice(("graceful", "kill -9")))
            expected = {
                "catch-up partition": (CATCHING_UP, server.log.count(CATCHING_UP) + len(mirrors)),
                "resync partition": (
                    RESYNC_COMPACTED,
                    server.log.count(RESYNC_COMPACTED) + len(mirrors),
                ),
            }
            await link.restore()
            for mirror in mirrors:
                await mirror.wait_for(history.head)
            if kind in expected:
                line, count = expected[kind]
                # The server logged the line before it sent the stream; the thread reading its
                # log may not have read it yet.
                await eventually(
                    lambda: server.log.count(line) >= count,
                    what=f"{kind}: {count} lines {line!r} in the server's log",
                )

        async with (
            Link(socket_dir / "link.sock", server) as link,
            Client(server.address) as client,
            Client(link.address) as mirror_client,
            AsyncExitStack() as stack,
        ):
            mirrors: dict[str, tuple[Mirror, Collection[str], list[AppliedChange]]] = {}
            for name, chosen in MIRRORS.items():
                mirror = await stack.enter_async_context(
                    # Heartbeats come every 200 ms: a connection made through the cut link,
                    # which never answers, is given up after 2 s rather than 30.
                    mirror_client.mirror(chosen, backoff=FAST_BACKOFF, silence_timeout=2.0)
                )
                # Registered before the mirror's task first runs: it sees every change.
                changes = await stack.enter_async_context(mirror.changes())
                applied: list[AppliedChange] = []
                stack.callback(asyncio.create_task(collect(changes, applied)).cancel)
                mirrors[name] = (mirror, chosen or COLLECTIONS, applied)

            for step in steps:
                if step in ("put", "delete"):
                    await write(step)
                elif step in PARTITIONS:
                    await partition(step, [mirror for mirror, _, _ in mirrors.values()])
                else:
                    await restart(server, step)
                for mirror, collections, _ in mirrors.values():
                    assert_consistent(mirror, history, collections)

            head = (await client.status()).head_sequence
            assert head == history.head
            for name, (mirror, collections, applied) in mirrors.items():
                await mirror.wait_for(head)
                assert mirror.documents == history.at(head, collections), name
                assert mirror.documents == await store_documents(client, collections), name
                await eventually(
                    partial(replays_to_mirror, applied, history, collections, mirror),
                    what=f"the changes of mirror {name} to replay to it",
                )

    run_scenario(scenario, timeout=30)
