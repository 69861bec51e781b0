"""What the client library costs a follower: events/s read from one server by a bare grpclib
stream, a `ResilientSubscription`, a `Mirror` and `peat-sync watch`. Prints figures; asserts
nothing about timing.

    python benchmarks/client_follow.py [--events 50000] [--runs 3]

Loads EVENTS documents into a fresh server (its replay log holds them all), then each
follower reads all of them from sequence 0, timed from the first event to the last
(median of RUNS), in this process except `watch`, which is its own process writing JSON lines
to a pipe. The mirror takes them as a snapshot, timed until `wait_for(head)` returns.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import subscribe_throughput as throughput
from grpclib.client import Channel
from grpclib.const import Cardinality
from resume import SUBSCRIBE, serving

from peat_sync.client import Client
from peat_sync.generated.peat.sidecar import v1 as pb

CHANGES = (pb.ChangeType.UPSERT, pb.ChangeType.DELETE)


async def bare_stream(port: int, events: int) -> float:
    async with Channel("127.0.0.1", port) as channel:
        request = pb.SubscribeRequest(since_sequence=0)
        async with channel.request(
            SUBSCRIBE, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
        ) as stream:
            await stream.send_message(request, end=True)
            started, seen = time.perf_counter(), 0
            while seen < events:
                message = await stream.recv_message()
                assert message is not None
                seen += message.change_type in CHANGES
            elapsed = time.perf_counter() - started
            await stream.cancel()
    return elapsed


async def subscription(port: int, events: int) -> float:
    async with (
        Client(f"127.0.0.1:{port}") as client,
        client.subscribe(since=0) as following,
    ):
        started, seen = time.perf_counter(), 0
        async for event in following:
            seen += event.is_change
            if seen == events:
                return time.perf_counter() - started
    raise AssertionError("the subscription ended")


async def mirror(port: int, events: int) -> float:
    async with Client(f"127.0.0.1:{port}") as client:
        started = time.perf_counter()
        async with client.mirror() as copy:
            await copy.wait_for(events)
            assert sum(len(documents) for documents in copy.documents.values()) == events
            return time.perf_counter() - started


async def watch(port: int, events: int) -> float:
    return await asyncio.to_thread(read_watch, port, events)


def read_watch(port: int, events: int) -> float:
    argv = [sys.executable, "-m", "peat_sync", "watch", "--addr", f"127.0.0.1:{port}"]
    process = subprocess.Popen([*argv, "--since", "0"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.readline()  # the first change: the process is up
    started = time.perf_counter()
    for _ in range(events - 1):
        process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.terminate()
    process.wait(30)
    return elapsed * events / (events - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="documents to follow")
    parser.add_argument("--runs", type=int, default=3, help="runs per follower (median)")
    args = parser.parse_args()
    followers: dict[str, Callable[[int, int], Coroutine[Any, Any, float]]] = {
        "bare grpclib stream": bare_stream,
        "ResilientSubscription": subscription,
        "Mirror (snapshot)": mirror,
        "peat-sync watch": watch,
    }
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp) / "data") as (_, port):
        print(f"loading {args.events} documents ...", file=sys.stderr)
        asyncio.run(throughput.load(port, 0, args.events))
        rates: dict[str, float] = {}
        for name, follow in followers.items():
            seconds = [asyncio.run(follow(port, args.events)) for _ in range(args.runs)]
            rates[name] = args.events / statistics.median(seconds)
            print(f"  {name}: {rates[name]:,.0f} events/s", file=sys.stderr)
    bare = rates["bare grpclib stream"]
    print(f"{'follower':<24} {'events/s':>10} {'/ bare':>7}")
    for name, value in rates.items():
        print(f"{name:<24} {value:>10,.0f} {value / bare:>7.2f}")


if __name__ == "__main__":
    main()
