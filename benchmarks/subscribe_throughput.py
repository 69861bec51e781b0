"""Subscribe throughput to one official grpcio subscriber, against the bare grpclib ceiling.

    python benchmarks/subscribe_throughput.py [--events 50000] [--runs 3]

In one run, on this machine:
1. starts `peat-sync serve` on a temporary data dir and loads EVENTS documents through
   PutDocument from concurrent grpclib writers (reports puts/s);
2. replay: a grpcio subscriber in its own process resumes with since_sequence=0 and reads
   them all from the replay log (events/s, median of RUNS);
3. live: a grpcio subscriber follows while the writers commit EVENTS more (events/s; this is
   bounded by the write rate, which is reported beside it);
4. baseline: the same subscriber reads EVENTS messages of the same shape from a bare grpclib
   server on plain asyncio (peat_sync/bench/baseline.py), median of RUNS;
and prints each figure with its ratio to the baseline. Figures from a shared machine are
noisy: compare the ratios, which are measured side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from grpc_tools import protoc
from grpclib.client import Channel

from peat_sync.generated.peat.sidecar import v1 as pb

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WRITERS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def compile_grpcio_api(out: Path) -> None:
    proto = ROOT / "proto"
    argv = ["protoc", f"-I{proto}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main([*argv, str(proto / "sidecar.proto")]) != 0:
        raise SystemExit("protoc failed on proto/sidecar.proto")


def start(argv: list[str], ready: str, *, drain: bool = True) -> subprocess.Popen[str]:
    """Start `argv` and wait for an output line matching `ready`. With `drain`, the rest of
    its output is read (and dropped) on a thread, so a chatty server never blocks on a full
    pipe."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stdout = process.stdout
    assert stdout is not None
    for line in stdout:
        if re.search(ready, line):
            if drain:
                threading.Thread(target=stdout.read, daemon=True).start()
            return process
    raise SystemExit(f"{' '.join(argv[:4])} did not start")


async def load(port: int, first: int, count: int) -> float:
    """Put `count` documents from concurrent writers; returns puts per second."""
    async with Channel("127.0.0.1", port) as channel:
        stub = pb.PeatSidecarStub(channel)
        numbers = iter(range(first, first + count))

        async def writer() -> None:
            for n in numbers:
                await stub.put_document(
                    pb.PutDocumentRequest(
                        collection="bench",
                        doc_id=f"doc-{n:06d}",
                        json_data=f'{{"n": {n}, "payload": "xxxxxxxxxxxxxxxx"}}',
                    )
                )

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(WRITERS)))
        return count / (time.perf_counter() - started)


def subscriber(api: Path, port: int, events: int, since: int | None) -> subprocess.Popen[str]:
    argv = [sys.executable, str(HERE / "grpcio_subscriber.py"), str(api), f"127.0.0.1:{port}"]
    argv.append(str(events))
    if since is not None:
        argv += ["--since", str(since)]
    return start(argv, '"ready"', drain=False)


def result(process: subprocess.Popen[str]) -> dict[str, float]:
    out, _ = process.communicate(timeout=600)
    try:
        figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise SystemExit(f"the subscriber failed:\n{out}") from None
    return figures


def rate(figures: dict[str, float]) -> float:
    return (figures["events"] - 1) / figures["seconds"]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_stream(
    server: subprocess.Popen[str], api: Path, port: int, events: int, since: int | None
) -> tuple[float, float]:
    """One subscriber run: events/s it received, and the server's CPU microseconds per event."""
    cpu_before = cpu_seconds(server.pid)
    figures = result(subscriber(api, port, events, since))
    cpu = cpu_seconds(server.pid) - cpu_before
    return rate(figures), cpu / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events per measurement")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    events = args.events

    with tempfile.TemporaryDirectory() as tmp:
        api = Path(tmp) / "api"
        api.mkdir()
        compile_grpcio_api(api)

        port = free_port()
        server = start(
            [
                *(sys.executable, "-m", "peat_sync", "serve"),
                *("--listen", f"tcp://127.0.0.1:{port}"),
                *("--data-dir", str(Path(tmp) / "data")),
                *("--replay-log-size", str(2 * events + 10)),
            ],
            "serving peat.sidecar.v1",
        )
        try:
            print(f"loading {events} documents with {WRITERS} concurrent writers ...", flush=True)
            put_rate = asyncio.run(load(port, 0, events))

            replay = []
            for run in range(args.runs):
                print(f"replay run {run + 1}/{args.runs} ...", flush=True)
                replay.append(measure_stream(server, api, port, events, since=0))

            print("live run ...", flush=True)
            live_sub = subscriber(api, port, events, since=None)
            live_put_rate = asyncio.run(load(port, events, events))
            live = rate(result(live_sub))
        finally:
            server.terminate()
            server.wait(30)

        base_port = free_port()
        baseline_server = start(
            [sys.executable, "-m", "peat_sync.bench.baseline", str(base_port)], "serving on"
        )
        try:
            baseline = []
            for run in range(args.runs):
                print(f"baseline run {run + 1}/{args.runs} ...", flush=True)
                baseline.append(measure_stream(baseline_server, api, base_port, events, since=None))
        finally:
            baseline_server.terminate()
            baseline_server.wait(30)

    base_rate, base_cpu = median_pair(baseline)
    replay_rate, replay_cpu = median_pair(replay)
    print(f"\n{'scenario':<38} {'events/s':>9} {'/ base':>7} {'server CPU/event':>17}")
    print(
        f"{'bare grpclib stream (baseline)':<38} {base_rate:>9,.0f} {1:>7.2f} {base_cpu:>14.1f} us"
    )
    print(
        f"{'Subscribe, replay from the log':<38} {replay_rate:>9,.0f}"
        f" {replay_rate / base_rate:>7.2f} {replay_cpu:>14.1f} us"
    )
    print(
        f"{'Subscribe, live':<38} {live:>9,.0f} {live / base_rate:>7.2f}"
        f"   (writers committed {live_put_rate:,.0f}/s)"
    )
    print(f"{'PutDocument, 32 writers, 1 process':<38} {put_rate:>9,.0f}")
    print(
        f"\n{events} events per run, median of {args.runs} runs, one grpcio subscriber process."
        "\nWhere the server's CPU per event is well below 1e6 / events/s, the subscriber, not"
        " the server, is the bottleneck."
    )


def median_pair(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r for r, _ in runs), statistics.median(c for _, c in runs)


if __name__ == "__main__":
    main()
