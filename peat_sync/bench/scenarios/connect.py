"""Scenario 10, Connect: the HTTP listener against the gRPC port, measured with one client
for both, Connect-Node (interop/connect-node/bench.js), so that the difference is the
protocols' and the servers' and not the clients'.

- Subscribe: one stream reads events from the replay log as fast as it can: gRPC over
  HTTP/2, then the Connect protocol (binary) over h2c and over HTTP/1.1.
- PutDocument: unary calls, `put_clients` at a time, over the same three.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from peat_sync.bench.node_clients import (
    NodeClientError,
    install_dependencies,
    interop_client,
    node,
    node_env,
)
from peat_sync.bench.report import Latency, Row, ScenarioResult, median, percentile
from peat_sync.bench.scenarios.context import Bench, cpu_of, head, new_result, per_event_us, preload
from peat_sync.bench.servers import BenchError, Server

CLIENT_TIMEOUT = 300.0


@dataclass(frozen=True, slots=True)
class Protocol:
    label: str
    transport: str  # bench.js --transport
    http_version: str
    grpc_port: bool  # the gRPC port, else the HTTP listener


PROTOCOLS = (
    Protocol("gRPC (HTTP/2)", "grpc", "2", grpc_port=True),
    Protocol("Connect, binary, h2c", "connect-binary", "2", grpc_port=False),
    Protocol("Connect, binary, HTTP/1.1", "connect-binary", "1.1", grpc_port=False),
)


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    cpu_us: float | None
    latency: Latency | None


def _client(client: Path, server: Server, protocol: Protocol, *args: str) -> dict[str, object]:
    url = f"http://{server.target}" if protocol.grpc_port else server.http_url.rstrip("/")
    command = [
        str(node()),
        "bench.js",
        *("--transport", protocol.transport, "--http-version", protocol.http_version),
        url,
        *args,
    ]
    try:
        done = subprocess.run(
            command,
            cwd=client,
            env=node_env(),
            capture_output=True,
            text=True,
            timeout=CLIENT_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"the Connect-Node client took over {CLIENT_TIMEOUT:g} s") from None
    if done.returncode != 0:
        raise BenchError(f"the Connect-Node client failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def _measured(client: Path, server: Server, protocol: Protocol, *args: str) -> Run:
    with cpu_of(server) as cpu:
        result = _client(client, server, protocol, *args)
    count = int(str(result["count"]))
    latencies = result.get("latencies_ms")
    latency = None
    if isinstance(latencies, list) and latencies:
        latency = Latency(percentile(latencies, 50), percentile(latencies, 99), max(latencies))
    return Run(count / float(str(result["seconds"])), per_event_us(cpu, count), latency)


def _rows(runs: Sequence[Sequence[Run]], what: str, server: Server) -> list[Row]:
    """A row per protocol: the median of its runs, and its ratio to gRPC's (the median of
    each run's ratio)."""
    rows = []
    for index, protocol in enumerate(PROTOCOLS):
        mine = [run[index] for run in runs]
        rows.append(
            Row(
                f"{what}, {protocol.label}",
                median([run.rate for run in mine]),
                Latency.median_of([run.latency for run in mine]),
                server.rss(),
                median([run[index].rate / run[0].rate for run in runs]),
                median([run.cpu_us for run in mine]),
            )
        )
    return rows


def connect(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    events, calls, clients = sizes.stream_events, sizes.put_count, sizes.put_clients
    result = new_result(
        "connect",
        f"Connect against gRPC, one Connect-Node client for both: a Subscribe of {events:,}"
        f" events from the replay log, and {calls:,} PutDocument calls, {clients} at a time",
    )
    try:
        client = interop_client("connect-node")
        install_dependencies(client)
    except NodeClientError as exc:
        raise BenchError(str(exc)) from None
    with bench.server() as server:
        if not server.http_url:
            raise BenchError("the server has no HTTP listener (--http-listen) to measure")
        preload(bench, server, events)
        last, _ = head(server)
        since, until = str(last - events), str(last)
        streams = [
            [
                _measured(client, server, protocol, "subscribe", since, until)
                for protocol in PROTOCOLS
            ]
            for _ in bench.each_run(f"{events:,} events over gRPC, Connect h2c, Connect HTTP/1.1")
        ]
        puts = [
            [
                _measured(client, server, protocol, "put", str(calls), str(clients))
                for protocol in PROTOCOLS
            ]
            for _ in bench.each_run(f"{calls:,} puts over gRPC, Connect h2c, Connect HTTP/1.1")
        ]
        result.rows += _rows(streams, "Subscribe", server)
        result.rows += _rows(puts, "PutDocument", server)
    stream_rows, put_rows = result.rows[:3], result.rows[3:]
    result.figures.update(
        grpc_events_per_s=stream_rows[0].rate,
        connect_events_per_s=stream_rows[1].rate,
        connect_ratio=stream_rows[1].ratio,
        connect_http1_ratio=stream_rows[2].ratio,
        grpc_calls_per_s=put_rows[0].rate,
        connect_calls_per_s=put_rows[1].rate,
        connect_put_ratio=put_rows[1].ratio,
        events=events,
    )
    result.notes.append(
        "each Subscribe is timed in the client from its request to its last event; / gRPC: the"
        " median of each run's ratio to the gRPC figure measured just before it. Latency is"
        " from a put to its acknowledgement. Server CPU per event or call."
    )
    return result
