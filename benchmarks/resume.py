"""Resuming subscribers: catch-up rates from the replay log and from the store, and what
stalled subscribers cost the server. Prints figures; asserts nothing about timing.

    python benchmarks/resume.py [--events 50000] [--runs 3] [--subscribers 100]
                                [--writes 20000] [--event-bytes 200] [--buffer-size 256]

1. replay: loads EVENTS documents into a fresh server, whose replay log holds them all; a
   grpcio subscriber process (grpcio_subscriber.py) resumes with since_sequence=0 and reads
   them all: events/s, median of RUNS;
2. store: restarts the server, which empties its replay log, so the same resume is a
   catch-up from the store (CATCH_UP_BEGIN, the documents, CATCH_UP_END); and a snapshot of
   the same store (snapshot=true: SNAPSHOT_BEGIN, the documents, CATCH_UP_END). Each is timed
   from the stream's first event to its CATCH_UP_END (median of RUNS), beside the replay rate
   of step 1; all three with the server's CPU time per event;
3. stalled subscribers: a fresh server (--broadcast-buffer-size BUFFER_SIZE) and SUBSCRIBERS
   grpclib Subscribe streams from this process, one connection each with a 64 KiB HTTP/2
   window, that never read; then WRITES puts of EVENT_BYTES-byte events. The server's VmRSS
   (/proc/PID/status) before the streams, with them idle and after the writes, and GetStatus
   lag_events; then all of it again with streams that read everything: the difference is
   what stalling costs per subscriber. Also the bound of events one stalled stream takes from
   the feed: its channel (BUFFER_SIZE) + one stream pump batch (SEND_BATCH) + what HTTP/2
   flow control let through (measured). The events are shared with the replay log (one
   encoded copy each): the server holds references to them, not copies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpclib.config
import subscribe_throughput as throughput
from grpclib.client import Channel, Stream
from grpclib.const import Cardinality

from peat_sync.generated.peat.sidecar import v1 as pb

DEFAULT_REPLAY_LOG_SIZE = 100_000
SUBSCRIBE = "/peat.sidecar.v1.PeatSidecar/Subscribe"
CATCH_UP_END = pb.ChangeType.CATCH_UP_END.value
DATA_TYPES = (pb.ChangeType.UPSERT, pb.ChangeType.DELETE)
# As tests/e2e/conftest.py's small_window_config: a stream that does not read stalls the
# server's sends after 64 KiB, where grpclib's default window lets 4 MiB through.
WINDOW = 65_535
SMALL_WINDOW = grpclib.config.Configuration(
    http2_connection_window_size=WINDOW, http2_stream_window_size=WINDOW
)


@contextlib.contextmanager
def serving(data_dir: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """`peat-sync serve` on `data_dir` and a free port; stopped at the end."""
    port = throughput.free_port()
    argv = [sys.executable, "-m", "peat_sync", "serve", "--listen", f"tcp://127.0.0.1:{port}"]
    argv += ["--data-dir", str(data_dir), *options]
    server = throughput.start(argv, "serving peat.sidecar.v1")
    try:
        yield server, port
    finally:
        server.terminate()
        server.wait(30)


def resume(
    api: Path, server: subprocess.Popen[str], port: int, docs: int, mode: str
) -> tuple[float, float]:
    """One grpcio subscriber process reads the `docs` documents, replayed or caught up after
    since_sequence=0, or as a snapshot (`mode`): events/s, and server CPU us per event."""
    argv = [sys.executable, str(throughput.HERE / "grpcio_subscriber.py"), str(api)]
    # Every stream opens with a control event; a store read ends with CATCH_UP_END.
    argv += [f"127.0.0.1:{port}", str(docs + (1 if mode == "replay" else 2))]
    argv += ["--until", str(CATCH_UP_END)]
    argv += ["--snapshot"] if mode == "snapshot" else ["--since", "0"]
    cpu_before = throughput.cpu_seconds(server.pid)
    figures = throughput.result(throughput.start(argv, '"ready"', drain=False))
    cpu = throughput.cpu_seconds(server.pid) - cpu_before
    ended = mode == "replay" or figures["last_change_type"] == CATCH_UP_END
    if figures["data_events"] != docs or not ended:
        raise SystemExit(f"{mode}: expected {docs} documents, got {figures}")
    return docs / figures["seconds"], cpu / docs * 1e6


@dataclass(frozen=True)
class Memory:
    before: int  # the server's VmRSS in KiB, before any subscriber
    idle: int  # with the subscribers open, before the writes
    after: int  # after the writes
    lag_events: int
    puts_per_second: float
    window_bytes: float  # median bytes one stream received (when stalled: all it ever gets)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SystemExit(f"no VmRSS for process {pid}")


def sized_document(n: int, event_bytes: int) -> tuple[str, int]:
    """Document `n`, padded so that its event is about `event_bytes` long; and that length."""

    def event(document: str) -> int:  # as the server sends it, from a fresh store
        change = pb.DocumentChange("bench", f"doc-{n:06d}", pb.ChangeType.UPSERT, document, n + 1)
        return len(bytes(change))

    pad = event_bytes - event(json.dumps({"n": n, "p": ""})) - 1  # - 1: a longer length prefix
    document = json.dumps({"n": n, "p": "x" * max(0, pad)})
    return document, event(document)


async def put_sized(port: int, count: int, event_bytes: int) -> float:
    """Put `count` documents from concurrent writers, as subscribe_throughput.load does but
    with `event_bytes`-byte events (load's are ~70 bytes); returns puts per second."""
    async with Channel("127.0.0.1", port) as channel:
        stub = pb.PeatSidecarStub(channel)
        numbers = iter(range(count))

        async def writer() -> None:
            for n in numbers:
                document, _ = sized_document(n, event_bytes)
                await stub.put_document(pb.PutDocumentRequest("bench", f"doc-{n:06d}", document))

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(throughput.WRITERS)))
        return count / (time.perf_counter() - started)


async def read_documents(stream: Stream[Any, pb.DocumentChange], count: int) -> None:
    """Read a stream until it has delivered `count` documents."""
    while count:
        change = await stream.recv_message()
        count -= change is not None and change.change_type in DATA_TYPES


async def poll(
    stub: pb.PeatSidecarStub, done: Callable[[pb.GetStatusResponse], bool], seconds: float = 30
) -> pb.GetStatusResponse:
    """GetStatus until `done(status)`, or until `seconds` have passed."""
    deadline = time.monotonic() + seconds
    while not done(status := await stub.get_status(pb.GetStatusRequest())):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    return status


async def subscribers(pid: int, port: int, args: argparse.Namespace, *, stalled: bool) -> Memory:
    """Open the subscribers, write, and measure the server's memory (step 3)."""
    count = args.subscribers
    before = rss_kib(pid)
    async with contextlib.AsyncExitStack() as stack:
        streams = []
        for _ in range(count):
            channel = Channel("127.0.0.1", port, config=SMALL_WINDOW)
            stack.callback(channel.close)
            stream = channel.request(
                SUBSCRIBE, Cardinality.UNARY_STREAM, pb.SubscribeRequest, pb.DocumentChange
            )
            await stack.enter_async_context(stream)
            stack.push_async_callback(stream.cancel)
            await stream.send_message(pb.SubscribeRequest(), end=True)
            streams.append(stream)
        stub = pb.PeatSidecarStub(await stack.enter_async_context(Channel("127.0.0.1", port)))
        await poll(stub, lambda status: status.subscribers == count)
        idle = rss_kib(pid)
        readers = [] if stalled else [read_documents(s, args.writes) for s in streams]
        read_all = asyncio.ensure_future(asyncio.gather(*readers))
        puts_per_second = await put_sized(port, args.writes, args.event_bytes)
        await asyncio.wait_for(read_all, 600)
        # Each stalled stream's channel overflows once, within BUFFER + SEND_BATCH + window events.
        status = await poll(stub, lambda status: not stalled or status.lag_events >= count)
        # grpclib's count of the DATA bytes a stream received (flow-controlled, unread).
        window = statistics.median(s._stream.data_received for s in streams)
        return Memory(before, idle, rss_kib(pid), status.lag_events, puts_per_second, window)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    option = parser.add_argument
    option("--events", type=int, default=50_000, help="documents to resume over (steps 1, 2)")
    option("--runs", type=int, default=3, help="runs per rate, of which the median is shown")
    option("--subscribers", type=int, default=100, help="Subscribe streams in step 3")
    option("--writes", type=int, default=20_000, help="puts in step 3")
    option("--event-bytes", type=int, default=200, help="event size in step 3, in bytes")
    option("--buffer-size", type=int, default=256, help="--broadcast-buffer-size in step 3")
    args = parser.parse_args()
    docs, count = args.events, args.subscribers
    rates: dict[str, list[tuple[float, float]]] = {"replay": [], "catch-up": [], "snapshot": []}
    memory: dict[bool, Memory] = {}

    with tempfile.TemporaryDirectory() as tmp:
        api, data = Path(tmp) / "api", Path(tmp) / "data"
        api.mkdir()
        throughput.compile_grpcio_api(api)
        log_size = ("--replay-log-size", str(max(docs, DEFAULT_REPLAY_LOG_SIZE)))
        with serving(data, *log_size) as (server, port):
            print(f"loading {docs} documents with {throughput.WRITERS} writers ...", flush=True)
            put_rate = asyncio.run(throughput.load(port, 0, docs))
            for run in range(args.runs):
                print(f"replay run {run + 1}/{args.runs} ...", flush=True)
                rates["replay"].append(resume(api, server, port, docs, "replay"))
        with serving(data, *log_size) as (server, port):
            for run in range(args.runs):
                for mode in ("catch-up", "snapshot"):
                    print(f"{mode} run {run + 1}/{args.runs} (restarted) ...", flush=True)
                    rates[mode].append(resume(api, server, port, docs, mode))
        for stalled in (True, False):
            kind = "stalled" if stalled else "reading"
            print(f"{count} {kind} subscribers, {args.writes} puts ...", flush=True)
            buffer = ("--broadcast-buffer-size", str(args.buffer_size))
            with serving(Path(tmp) / f"data-{kind}", *buffer) as (server, port):
                memory[stalled] = asyncio.run(subscribers(server.pid, port, args, stalled=stalled))

    replay = throughput.median_pair(rates["replay"])[0]
    print(f"\nResume with since_sequence=0 over {docs} documents, one grpcio subscriber process,")
    print(f"median of {args.runs} runs (PutDocument load: {put_rate:,.0f} puts/s)")
    print(f"{'source':<44} {'events/s':>9} {'/ replay':>9} {'server CPU/event':>17}")
    for mode, label in (
        ("replay", "replay log (fresh server)"),
        ("catch-up", "store catch-up (restarted server)"),
        ("snapshot", "store snapshot, snapshot=true (restarted)"),
    ):
        rate, cpu = throughput.median_pair(rates[mode])
        print(f"{label:<44} {rate:>9,.0f} {rate / replay:>9.2f} {cpu:>14.1f} us")

    stuck, reading = memory[True], memory[False]
    _, event = sized_document(args.writes, args.event_bytes)
    print(f"\n{count} Subscribe streams (one grpclib connection each, {WINDOW}-byte window),")
    print(f"--broadcast-buffer-size {args.buffer_size}, {args.writes} puts of {event}-byte events")
    rows: dict[str, Callable[[Memory], float]] = {
        "server VmRSS before the subscribers, MiB": lambda m: m.before / 1024,
        "server VmRSS, subscribers open and idle, MiB": lambda m: m.idle / 1024,
        "server VmRSS after the writes, MiB": lambda m: m.after / 1024,
        "open idle stream, KiB per subscriber": lambda m: (m.idle - m.before) / count,
        "growth over the writes, KiB per subscriber": lambda m: (m.after - m.idle) / count,
        "GetStatus lag_events": lambda m: m.lag_events,
        "puts/s during the writes": lambda m: m.puts_per_second,
    }
    print(f"{'':<46} {'stalled':>10} {'reading':>10}")
    for label, figure in rows.items():
        print(f"{label:<46} {figure(stuck):>10,.1f} {figure(reading):>10,.1f}")
    extra = ((stuck.after - stuck.idle) - (reading.after - reading.idle)) / count
    print(f"{'stalled minus reading, KiB per subscriber':<46} {extra:>10,.1f}")

    # Importing peat_sync.server here would put trio_asyncio's event loop under asyncio.run.
    code = "from peat_sync.server.service import SEND_BATCH; print(SEND_BATCH)"
    send_batch = int(subprocess.check_output([sys.executable, "-c", code]))
    wire = event + 5  # the gRPC message prefix
    through = int(stuck.window_bytes // wire)
    print(
        f"\nEvents one stalled stream has taken from the feed, at most:\n"
        f"  {args.buffer_size} (its channel, --broadcast-buffer-size)\n"
        f"+ {send_batch} (one batch of the stream pump, SEND_BATCH)\n"
        f"+ {through} (HTTP/2 flow control: {stuck.window_bytes:,.0f} bytes received per"
        f" stalled stream, measured;\n   {wire} bytes per event on the wire)\n"
        f"= {args.buffer_size + send_batch + through}. The server holds at most"
        f" {args.buffer_size + send_batch} of them, as references to events the replay log\n"
        "  holds anyway (one encoded copy per event), not copies."
    )


if __name__ == "__main__":
    main()
