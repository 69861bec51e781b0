"""How fast a follower that is N documents behind gets them: by the client it reads them
with, and by where the server reads them from. `peat-sync bench` measures neither: its
readers are grpcio processes, and its replay scenario reads from the replay log alone.
Prints figures; asserts nothing about timing.

    python harness/follower_rates.py [--events 50000] [--runs 3]

Loads EVENTS documents (WriteDocuments batches) into a fresh server whose replay log holds
them all. Then each read, timed from its first event to its last, median of RUNS:

1. By client, what the client library costs a follower: from sequence 0, out of the replay
   log, a bare grpclib stream on Subscribe and on SubscribeBatched, a `ResilientSubscription`
   on each, a `Mirror` (a snapshot, timed until `wait_for(head)` returns) and `peat-sync
   watch` (its own process, writing JSON lines to a pipe). The bare streams use grpclib and
   the generated classes, as the library does, with none of its work (events, resume points,
   reconnection); each library row is divided by the bare stream of its RPC.
2. By source, with the official grpcio client (its synchronous API and the protobuf
   runtime's classes of `peat_sync.wire`, in this process, which does nothing else
   meanwhile), beside the server's CPU time per document: a replay from the replay log
   (since_sequence=0); then the server is restarted, which empties its replay log, so the
   same resume is a catch-up from the store (CATCH_UP_BEGIN, the documents, CATCH_UP_END);
   and a snapshot (snapshot=true), the read of a subscriber after a RESYNC.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
from grpclib.client import Channel
from grpclib.const import Cardinality

from peat_sync import wire
from peat_sync.bench.launcher import ServerProcess, server_env
from peat_sync.client import Client
from peat_sync.generated.peat.sidecar import v1 as pb

COLLECTION = "bench"
# Documents per WriteDocuments call of the load.
LOAD_BATCH = 1000
DATA_TYPES = {pb.ChangeType.UPSERT.value, pb.ChangeType.DELETE.value}
CATCH_UP_END = pb.ChangeType.CATCH_UP_END.value
WATCH_TIMEOUT = 30.0
# A grpcio read that gets nothing for this long has met a stuck server.
CALL_TIMEOUT = 600.0
BARE = "bare grpclib stream"
SubscribeRequest = wire.message_class("SubscribeRequest")
DocumentChange = wire.message_class("DocumentChange")


async def load(address: str, count: int) -> None:
    """Write `count` documents in WriteDocuments batches."""
    async with Client(address) as client:
        for first in range(0, count, LOAD_BATCH):
            numbers = range(first, min(first + LOAD_BATCH, count))
            await client.write(
                (COLLECTION, f"doc-{n:06d}", f'{{"n": {n}, "payload": "xxxxxxxxxxxxxxxx"}}')
                for n in numbers
            )


# ---------------------------------------------------------------------------------------------
# 1. By client


async def bare_stream(address: str, events: int, *, batched: bool = False) -> float:
    """Subscribe, or SubscribeBatched, from 0 on a bare grpclib stream; seconds to read
    `events` documents."""
    host, port = address.rsplit(":", 1)
    reply: type[pb.DocumentChangeBatch | pb.DocumentChange] = (
        pb.DocumentChangeBatch if batched else pb.DocumentChange
    )
    path = wire.SUBSCRIBE_BATCHED if batched else wire.SUBSCRIBE
    async with (
        Channel(host, int(port)) as channel,
        channel.request(path, Cardinality.UNARY_STREAM, pb.SubscribeRequest, reply) as stream,
    ):
        await stream.send_message(pb.SubscribeRequest(since_sequence=0), end=True)
        started, seen = time.perf_counter(), 0
        while seen < events:
            message = await stream.recv_message()
            assert message is not None, "the server ended the stream"
            changes = message.changes if isinstance(message, pb.DocumentChangeBatch) else [message]
            seen += sum(change.change_type in DATA_TYPES for change in changes)
        elapsed = time.perf_counter() - started
        await stream.cancel()
    return elapsed


async def subscription(address: str, events: int, *, batched: bool = True) -> float:
    """A `ResilientSubscription` from 0; seconds to read `events` documents."""
    async with (
        Client(address) as client,
        client.subscribe(since=0, batched=batched) as following,
    ):
        started, seen = time.perf_counter(), 0
        async for event in following:
            seen += event.is_change
            if seen == events:
                return time.perf_counter() - started
    raise AssertionError("the subscription ended")


async def mirror(address: str, events: int) -> float:
    """A `Mirror` of every collection; seconds until it holds the `events` documents."""
    async with Client(address) as client:
        started = time.perf_counter()
        async with client.mirror() as copy:
            await copy.wait_for(events)
            assert sum(len(documents) for documents in copy.documents.values()) == events
            return time.perf_counter() - started


async def watch(address: str, events: int) -> float:
    """`read_watch`, on a thread."""
    return await asyncio.to_thread(read_watch, address, events)


def read_watch(address: str, events: int) -> float:
    """`peat-sync watch --since 0` in its own process; seconds to read `events` lines,
    counted from its first line (once the process is up), scaled to all of them."""
    argv = [sys.executable, "-m", "peat_sync", "watch", "--addr", address, "--since", "0"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=server_env())
    assert process.stdout is not None
    process.stdout.readline()
    started = time.perf_counter()
    for _ in range(events - 1):
        process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.terminate()
    process.wait(WATCH_TIMEOUT)
    return elapsed * events / max(events - 1, 1)


@dataclass(frozen=True)
class Follower:
    name: str
    rpc: str
    follow: Callable[[str, int], Coroutine[Any, Any, float]]


FOLLOWERS = [
    Follower(BARE, "SubscribeBatched", partial(bare_stream, batched=True)),
    Follower(BARE, "Subscribe", bare_stream),
    Follower("ResilientSubscription", "SubscribeBatched", subscription),
    Follower("ResilientSubscription", "Subscribe", partial(subscription, batched=False)),
    Follower("Mirror (snapshot)", "SubscribeBatched", mirror),
    Follower("peat-sync watch", "SubscribeBatched", watch),
]


# ---------------------------------------------------------------------------------------------
# 2. By source


@dataclass(frozen=True)
class Read:
    """One kind of read: its label, its SubscribeRequest's fields, and the event a stream of
    that kind opens with."""

    label: str
    request: dict[str, Any]
    opening: pb.ChangeType


READS = {
    "replay": Read("replay log (fresh server)", {"since_sequence": 0}, pb.ChangeType.HEARTBEAT),
    "catch-up": Read(
        "store catch-up (restarted)", {"since_sequence": 0}, pb.ChangeType.CATCH_UP_BEGIN
    ),
    "snapshot": Read(
        "store snapshot (restarted)", {"snapshot": True}, pb.ChangeType.SNAPSHOT_BEGIN
    ),
}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read(server: ServerProcess, documents: int, kind: str) -> tuple[float, float]:
    """One read of the `documents` documents, of `kind` (a key of READS): documents/s, and
    the server's CPU microseconds per document. SystemExit if the stream is not of that
    kind or does not hold every document."""
    request, opening = READS[kind].request, READS[kind].opening
    cpu_before = cpu_seconds(server.pid)
    with grpc.insecure_channel(server.address) as channel:
        subscribe = channel.unary_stream(
            wire.SUBSCRIBE,
            request_serializer=SubscribeRequest.SerializeToString,
            response_deserializer=DocumentChange.FromString,
        )
        stream = subscribe(SubscribeRequest(control_events=True, **request), timeout=CALL_TIMEOUT)
        first = last = next(stream)
        started = time.perf_counter()
        data = 0
        # A replay has no end marker: it is done with the last document. A store read ends
        # with its CATCH_UP_END.
        from_store = opening is not pb.ChangeType.HEARTBEAT
        while data < documents or (from_store and last.change_type != CATCH_UP_END):
            last = next(stream)
            data += last.change_type in DATA_TYPES
        seconds = time.perf_counter() - started
        stream.cancel()
    cpu = cpu_seconds(server.pid) - cpu_before
    if first.change_type != opening.value or data != documents:
        raise SystemExit(
            f"{kind}: expected {opening.name} and {documents} documents, got"
            f" {pb.ChangeType(first.change_type).name} and {data} documents"
        )
    return documents / seconds, cpu / documents * 1e6


# ---------------------------------------------------------------------------------------------
# The run


def by_client(server: ServerProcess, args: argparse.Namespace) -> None:
    """Measure and print the table of part 1."""
    rates: list[float] = []
    for follower in FOLLOWERS:
        seconds = [
            asyncio.run(follower.follow(server.address, args.events)) for _ in range(args.runs)
        ]
        rates.append(args.events / statistics.median(seconds))
        progress(f"{follower.name} ({follower.rpc}): {rates[-1]:,.0f} events/s")
    rows = list(zip(FOLLOWERS, rates, strict=True))
    bare = {follower.rpc: rate for follower, rate in rows if follower.name == BARE}
    print(f"By client: {args.events:,} events from sequence 0, median of {args.runs} runs")
    print(f"{'follower':<24} {'rpc':<17} {'events/s':>10} {'/ bare':>7}")
    for follower, rate in rows:
        ratio = rate / bare[follower.rpc]
        print(f"{follower.name:<24} {follower.rpc:<17} {rate:>10,.0f} {ratio:>7.2f}")


def by_source(server: ServerProcess, args: argparse.Namespace) -> None:
    """Measure and print the table of part 2; restarts the server."""
    figures: dict[str, list[tuple[float, float]]] = {kind: [] for kind in READS}

    def runs(kind: str) -> None:
        for _ in range(args.runs):
            figures[kind].append(read(server, args.events, kind))
            progress(f"{kind}: {figures[kind][-1][0]:,.0f} documents/s")

    runs("replay")
    progress("restarting the server, which empties its replay log")
    server.restart()
    runs("catch-up")
    runs("snapshot")
    replay = statistics.median(rate for rate, _ in figures["replay"])
    print(f"\nBy source: {args.events:,} documents, grpcio, median of {args.runs} runs")
    print(f"{'read':<28} {'docs/s':>9} {'/ replay':>9} {'server CPU/doc':>15}")
    for kind, kind_of_read in READS.items():
        rate = statistics.median(rate for rate, _ in figures[kind])
        cpu = statistics.median(cpu for _, cpu in figures[kind])
        print(f"{kind_of_read.label:<28} {rate:>9,.0f} {rate / replay:>9.2f} {cpu:>12.1f} us")


def progress(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="documents behind")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(Path(tmp) / "data", "--replay-log-size", str(args.events))
        server.start()
        try:
            progress(f"loading {args.events:,} documents")
            asyncio.run(load(server.address, args.events))
            by_client(server, args)
            by_source(server, args)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
