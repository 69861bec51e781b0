"""Scenario 9, shared mode: sidecars that share one document space through a NATS JetStream
stream, against nats-py alone on the same nats-server (peat_sync.bench.nats_ceiling).

The scenario starts one nats-server (file storage, in the bench's temporary dir) and, in each
run, uses streams no other run used:

1. nats-py publishes three ways, each into a fresh stream;
2. sidecar A, on the run's stream, takes `shared_documents` documents by WriteDocuments;
3. nats-py reads that stream whole: an ordered consumer, then a pull consumer;
4. sidecar B starts with an empty data dir and joins the stream: documents applied per second,
   from when it has joined to its reaching the stream's head, its start-up left out;
5. puts on A at `shared_rate` a second, delivered to a subscriber on B.

WriteDocuments is divided by publish_async, and the join by the ordered consumer, each pair
measured one after the other in the same run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from peat_sync.bench.nats_ceiling import (
    IN_FLIGHT,
    PUBLISH_WAYS,
    READ_WAYS,
    CeilingSettings,
    measure,
)
from peat_sync.bench.nats_servers import NatsServerMissing, nats_server_binary
from peat_sync.bench.report import Latency, Row, ScenarioResult, fmt, median
from peat_sync.bench.scenarios.context import (
    PACED_CLIENTS,
    Bench,
    collect,
    cpu_of,
    finish_writers,
    following,
    new_result,
    per_event_us,
    shortfall,
    start_subscribers,
    start_writers,
    write,
)
from peat_sync.bench.servers import (
    BenchError,
    Server,
    nats_server,
    peat_server,
    peat_server_listening,
)
from peat_sync.bench.workers import workers
from peat_sync.wire import message_class, rpc_path

GET_SYNC_STATS = rpc_path("GetSyncStats")
# How often the joining sidecar's progress is read: a fraction of a join of seconds, and few
# enough calls not to slow it.
JOIN_POLL = 0.01
# A join slower than this many documents a second has stalled.
JOIN_SLOWEST = 500


@dataclass(slots=True)
class Joined:
    """A sidecar's join: documents applied per second, its CPU us per document, how busy it
    and nats-server were (% of one core), and the most documents it applied between two
    looks at it."""

    rate: float
    cpu_us: float | None
    busy: dict[str, float | None]
    largest_step: int


@dataclass(slots=True)
class PutLatency:
    """Paced puts on one sidecar: the rate achieved, their acknowledgement and delivery
    latency, and the CPU us per put of the sidecar written to and of the one delivering."""

    rate: float
    acks: Latency | None
    ack_cpu: float | None
    delivery: Latency | None
    delivery_cpu: float | None


@dataclass(slots=True)
class SharedRun:
    """One run's figures: messages (or documents) per second, server CPU us per document."""

    nats_py: dict[str, float]  # messages/s of each way of nats_ceiling
    write: float
    write_acks: Latency | None
    write_cpu: float | None
    write_busy: dict[str, float | None]
    join: Joined
    puts: PutLatency
    rss: dict[str, int | None]


def shared(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    documents, batch, clients = sizes.shared_documents, sizes.shared_batch, sizes.shared_clients
    rate = sizes.shared_rate
    result = new_result(
        "shared",
        "Shared mode: sidecars on one NATS JetStream stream (one nats-server, file storage),"
        " against nats-py alone on the same server",
    )
    if bench.addr is not None:
        raise BenchError("the shared scenario starts its own sidecars: it does not use --addr")
    try:
        nats_server_binary()
    except NatsServerMissing as exc:
        raise BenchError(str(exc)) from None
    runs = []
    with nats_server(bench.workdir / "nats") as nats:
        for run in bench.each_run(
            f"nats-py, then {documents:,} documents by WriteDocuments, a join, {rate} puts/s"
        ):
            runs.append(_one_run(bench, nats, run))
    result.rows += _rows(runs, sizes.shared_publishes, documents, batch, clients)
    figures = _figures(runs)
    result.figures.update(figures, put_rate=rate, documents=documents)
    result.notes += [
        "nats-py: messages of the bench's documents (about 100 bytes, one subject each), to"
        " streams made as a sidecar makes them; sequential: each publish awaited before the"
        f" next ({_sequential(sizes.shared_publishes):,} of them); {IN_FLIGHT} in flight:"
        f" {IN_FLIGHT} publishers, each awaiting its own; the reads are of the stream sidecar A"
        " wrote, the pull consumer without acknowledgements",
        f"WriteDocuments: {batch} writes per request from {clients} clients, timed from the"
        " first call to the last acknowledgement (the sidecar applied the batch); join: from"
        " B's first answer to GetSyncStats (it answers once it has joined the stream, as it"
        " starts to apply it) to its applied_sequence reaching the stream's head, polled every"
        f" {JOIN_POLL * 1000:g} ms; it applied up to {figures['join_largest_step']:,}"
        " documents between two polls; CPU us/ev: the sidecar's CPU per document",
        "busy, % of one core: during WriteDocuments, sidecar A"
        f" {fmt(figures['write_sidecar_busy_percent'], '.0f')}, nats-server"
        f" {fmt(figures['write_nats_busy_percent'], '.0f')}; during the join, sidecar B"
        f" {fmt(figures['join_sidecar_busy_percent'], '.0f')}, nats-server"
        f" {fmt(figures['join_nats_busy_percent'], '.0f')}",
        f"latency: puts on sidecar A at {rate:,}/s from {PACED_CLIENTS} clients, to their"
        " acknowledgement (applied on A) and to their delivery to a Subscribe stream on B;"
        " CPU us/ev: A's CPU per put, then B's per event",
    ]
    result.notes += shortfall(rate, figures["writer_rate"])
    return result


def _one_run(bench: Bench, nats: Server, run: int) -> SharedRun:
    sizes = bench.sizes
    url = f"nats://{nats.target}"
    stream = f"bench-{run + 1}"
    bench.progress(f"nats-py publishes, {sizes.shared_publishes:,} a way")
    publish = measure(
        CeilingSettings(
            measure="publish",
            url=url,
            stream=f"{stream}-nats-py",
            count=sizes.shared_publishes,
            sequential=_sequential(sizes.shared_publishes),
        )
    )
    flags = ("--nats", url, "--nats-stream", stream)
    with peat_server(_data_dir(bench, run, "a"), *flags, "--node-id", "a") as a:
        documents = sizes.shared_documents
        bench.progress(f"WriteDocuments: {documents:,} documents to sidecar A")
        settings = bench.writes(a, documents, sizes.shared_clients, sizes.shared_batch)
        with cpu_of(a) as a_cpu, cpu_of(nats) as nats_cpu:
            written = write(settings)
        seconds = (written.end_ns - written.start_ns) / 1e9
        write_busy = {"sidecar": _busy(a_cpu[0], seconds), "nats": _busy(nats_cpu[0], seconds)}
        bench.progress(f"nats-py reads the {documents:,} messages")
        read = measure(CeilingSettings(measure="read", url=url, stream=stream, count=documents))
        bench.progress(f"sidecar B joins: {written.last_sequence:,} messages")
        with peat_server_listening(_data_dir(bench, run, "b"), *flags, "--node-id", "b") as b:
            join = _join(b, nats, written.last_sequence)
            bench.progress(
                f"puts on A at {sizes.shared_rate:,}/s for {sizes.shared_latency_seconds:g} s,"
                " delivered on B"
            )
            puts = _puts(bench, a, b)
            rss = {"a": a.rss(), "b": b.rss()}
    return SharedRun(
        nats_py=publish | read,
        write=written.rate,
        write_acks=Latency.of(written.acks),
        write_cpu=per_event_us(a_cpu, written.count),
        write_busy=write_busy,
        join=join,
        puts=puts,
        rss=rss,
    )


def _sequential(publishes: int) -> int:
    """Sequential publishes, a tenth of the others: they are the slowest by far."""
    return max(1, publishes // 10)


def _data_dir(bench: Bench, run: int, sidecar: str) -> Path:
    return bench.workdir / f"shared-{run + 1}-{sidecar}"


def _busy(cpu: float | None, seconds: float) -> float | None:
    return None if cpu is None or seconds <= 0 else cpu / seconds * 100


def _join(sidecar: Server, nats: Server, head: int) -> Joined:
    """Watch `sidecar`, starting with an empty data dir, apply the stream up to `head`: from
    its first answer to GetSyncStats (it answers once it has joined the stream, as it starts
    to apply it; its start-up is left out) to its applied_sequence reaching `head`."""
    request_class = message_class("GetSyncStatsRequest")
    response_class = message_class("GetSyncStatsResponse")
    deadline = time.monotonic() + 60 + head / JOIN_SLOWEST
    first: tuple[float, int, float | None, float | None] | None = None
    applied = largest_step = 0
    with grpc.insecure_channel(sidecar.target) as channel:
        call = channel.unary_unary(
            GET_SYNC_STATS,
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        while applied < head:
            if time.monotonic() > deadline:
                raise BenchError(f"the joining sidecar did not reach sequence {head:,} in time")
            time.sleep(JOIN_POLL)
            try:
                stats = call(request_class(), timeout=5)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE:  # it has not joined yet
                    continue
                raise BenchError(f"GetSyncStats: {exc.code().name}: {exc.details()}") from None
            now = time.monotonic()
            largest_step = max(largest_step, int(stats.applied_sequence) - applied)
            applied = int(stats.applied_sequence)
            if first is None:
                if applied >= head:
                    raise BenchError(
                        f"the joining sidecar applied all {head:,} documents before it answered"
                        " GetSyncStats: give the scenario more documents"
                    )
                first = (now, applied, sidecar.cpu(), nats.cpu())
    assert first is not None
    started, applied_first, sidecar_before, nats_before = first
    seconds = now - started
    sidecar_cpu, nats_cpu = (
        None if before is None or after is None else after - before
        for before, after in ((sidecar_before, sidecar.cpu()), (nats_before, nats.cpu()))
    )
    documents = head - applied_first
    return Joined(
        documents / seconds,
        per_event_us([sidecar_cpu], documents),
        {"sidecar": _busy(sidecar_cpu, seconds), "nats": _busy(nats_cpu, seconds)},
        largest_step,
    )


def _puts(bench: Bench, a: Server, b: Server) -> PutLatency:
    """Puts on `a` at the run's rate, each timed to its acknowledgement and to its delivery
    to a subscriber of `b`."""
    sizes = bench.sizes
    rate = sizes.shared_rate
    subscribers = start_subscribers(following(b), 1, 1, "subscriber on B")
    with workers(*subscribers):
        writers = start_writers(
            bench.puts(a, round(rate * sizes.shared_latency_seconds), PACED_CLIENTS, rate)
        )
        with workers(*writers), cpu_of(a) as a_cpu, cpu_of(b) as b_cpu:
            written = finish_writers(writers)
            received = collect(subscribers, written.last_sequence)
    return PutLatency(
        written.rate,
        Latency.of(written.acks),
        per_event_us(a_cpu, written.count),
        Latency.of(received.latency),
        per_event_us(b_cpu, received.data),
    )


def _rows(
    runs: list[SharedRun], publishes: int, documents: int, batch: int, clients: int
) -> list[Row]:
    def rate(way: str) -> float | None:
        return median([run.nats_py[way] for run in runs])

    rows = [
        Row(f"nats-py js.publish, sequential ({_sequential(publishes):,})", rate("sequential")),
        Row(f"nats-py js.publish, {IN_FLIGHT} in flight ({publishes:,})", rate("in_flight")),
        Row(f"nats-py js.publish_async ({publishes:,})", rate("publish_async"), ratio=1.0),
        Row(
            f"WriteDocuments on A, {batch}/request, {clients} clients",
            median([run.write for run in runs]),
            Latency.median_of([run.write_acks for run in runs]),
            _median_int([run.rss["a"] for run in runs]),
            median([run.write / run.nats_py["publish_async"] for run in runs]),
            median([run.write_cpu for run in runs]),
        ),
        Row(f"nats-py ordered consumer ({documents:,})", rate("ordered_consumer"), ratio=1.0),
        Row(f"nats-py pull consumer, fetch(1000) ({documents:,})", rate("pull_fetch")),
        Row(
            f"B joins with an empty data dir ({documents:,})",
            median([run.join.rate for run in runs]),
            None,
            _median_int([run.rss["b"] for run in runs]),
            median([run.join.rate / run.nats_py["ordered_consumer"] for run in runs]),
            median([run.join.cpu_us for run in runs]),
        ),
        Row(
            "put on A, acknowledged by A",
            median([run.puts.rate for run in runs]),
            Latency.median_of([run.puts.acks for run in runs]),
            None,
            None,
            median([run.puts.ack_cpu for run in runs]),
        ),
        Row(
            "put on A, delivered on B",
            None,
            Latency.median_of([run.puts.delivery for run in runs]),
            None,
            None,
            median([run.puts.delivery_cpu for run in runs]),
        ),
    ]
    return rows


def _median_int(values: list[int | None]) -> int | None:
    found = median(values)
    return None if found is None else round(found)


def _figures(runs: list[SharedRun]) -> dict[str, Any]:
    delivery = Latency.median_of([run.puts.delivery for run in runs])
    figures: dict[str, Any] = {
        f"nats_py_{way}_per_s": median([run.nats_py[way] for run in runs])
        for way in (*PUBLISH_WAYS, *READ_WAYS)
    }
    figures |= {
        "write_documents_per_s": median([run.write for run in runs]),
        "write_ratio": median([run.write / run.nats_py["publish_async"] for run in runs]),
        "join_documents_per_s": median([run.join.rate for run in runs]),
        "join_ratio": median([run.join.rate / run.nats_py["ordered_consumer"] for run in runs]),
        "join_largest_step": max(run.join.largest_step for run in runs),
        "writer_rate": median([run.puts.rate for run in runs]),
        "p50_ms": delivery.p50 if delivery else None,
        "p99_ms": delivery.p99 if delivery else None,
        "max_ms": delivery.max if delivery else None,
    }
    for who in ("sidecar", "nats"):
        figures[f"write_{who}_busy_percent"] = median([run.write_busy[who] for run in runs])
        figures[f"join_{who}_busy_percent"] = median([run.join.busy[who] for run in runs])
    return figures
