"""The Redis Streams peer (`peat-sync bench --peer redis`): four workloads on peat-sync and on
a local redis-server, with the same documents and one client each, measured side by side in
the same run. Redis Streams with `appendfsync always` is what a user would pick instead for a
replayable log that is durable per write.

1. one write at a time: PutDocument calls, each sent once the one before it is acknowledged,
   against XADDs sent the same way;
2. atomic batches: WriteDocuments against MULTI/EXEC pipelines of as many XADDs;
3. replay, one event per message: Subscribe from `since_sequence` over the batches just
   written, against XREAD of `batch` entries a call (Redis has no stream that pushes one
   entry per message: a reader asks for them);
4. replay, batched: SubscribeBatched against XRANGE of `batch` entries a call.

Each client is a process of its own: peat-sync's is the bench's grpcio worker
(peat_sync.bench.workers), Redis's a redis-py process (peat_sync.bench.redis_peer). In every
run each workload is measured on Redis, then on peat-sync; a ratio is the median of the
runs' ratios, peat-sync / Redis. The peer runs alone, or after the scenarios given with
--scenario, and is numbered after the bench's last scenario.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, replace

from peat_sync.bench.messages import COLLECTION
from peat_sync.bench.redis_peer import PeerSettings, measure
from peat_sync.bench.redis_servers import redis_server, redis_server_version
from peat_sync.bench.report import Latency, ScenarioResult, fmt, median
from peat_sync.bench.scenarios.context import (
    Bench,
    Measured,
    cpu_of,
    finish_writers,
    paired_rows,
    per_event_us,
    rate_of,
    read_once,
    resume_kind,
    start_writers,
)
from peat_sync.bench.servers import Server
from peat_sync.bench.sizes import SCENARIO_SUMMARIES
from peat_sync.bench.targets import PEER_REDIS
from peat_sync.bench.workers import SubscriberSettings, WriterSettings, workers

KEY = PEER_REDIS
# The figures' names, in the order the workloads run; each has {name}_per_s (peat-sync),
# redis_{name}_per_s and {name}_ratio (peat-sync / Redis).
WORKLOADS = ("one_at_a_time", "batches", "replay", "replay_batched")


@dataclass(frozen=True, slots=True)
class PeerSizes:
    """How much each side does per run."""

    puts: int = 2000  # written one at a time
    documents: int = 100_000  # written in batches, then replayed twice
    batch: int = 1000  # writes per transaction, and entries per Redis read


QUICK_PEER = PeerSizes(puts=200, documents=3000)


def redis_peer(bench: Bench, sizes: PeerSizes) -> ScenarioResult:
    puts, documents, batch = sizes.puts, sizes.documents, sizes.batch
    result = ScenarioResult(
        KEY,
        len(SCENARIO_SUMMARIES) + 1,
        "Redis Streams peer: the same documents, one client each, against a local"
        " redis-server (appendfsync always) in the same run",
    )
    pairs: dict[str, list[tuple[Measured, Measured]]] = {name: [] for name in WORKLOADS}
    client_busy: dict[str, list[float]] = {name: [] for name in WORKLOADS}
    resumed: set[str] = set()
    with redis_server(bench.workdir / "redis") as redis, bench.server() as server:
        port = int(redis.target.rsplit(":", 1)[1])

        def on_redis(name: str, settings: PeerSettings) -> Measured:
            figures, busy = _redis(redis, settings)
            client_busy[name].append(busy)
            return figures

        for run in bench.each_run(
            f"{puts:,} writes one at a time, {documents:,} in batches of {batch:,}, two"
            " replays of them: Redis, then peat-sync"
        ):
            stream = f"{COLLECTION}-{run + 1}"

            bench.progress(f"one write at a time: {puts:,} XADDs, then PutDocument calls")
            single = on_redis(
                "one_at_a_time",
                PeerSettings(
                    measure="xadd",
                    port=port,
                    stream=f"{stream}-single",
                    count=puts,
                    prefix=bench.prefix(),
                ),
            )
            put, _ = _peat_write(bench.puts(server, puts, 1), server)
            pairs["one_at_a_time"].append((single, put))

            bench.progress(f"batches of {batch:,}: MULTI/EXEC of XADDs, then WriteDocuments")
            multi = on_redis(
                "batches",
                PeerSettings(
                    measure="multi",
                    port=port,
                    stream=stream,
                    count=documents,
                    batch=batch,
                    prefix=bench.prefix(),
                ),
            )
            written, last = _peat_write(bench.writes(server, documents, 1, batch), server)
            pairs["batches"].append((multi, written))

            from_log = SubscriberSettings(target=server.target, since=last - documents, until=last)
            xread = PeerSettings(
                measure="xread", port=port, stream=stream, count=documents, batch=batch
            )
            for name, reader, batched in (
                ("replay", xread, False),
                ("replay_batched", replace(xread, measure="xrange"), True),
            ):
                bench.progress(
                    f"replay of {documents:,}: {reader.measure.upper()} COUNT {batch}, then"
                    f" {'SubscribeBatched' if batched else 'Subscribe'}"
                )
                read = on_redis(name, reader)
                replayed, how = _peat_read(replace(from_log, batched=batched), server)
                resumed.add(how)
                pairs[name].append((read, replayed))
        rows = [
            *paired_rows(
                pairs["one_at_a_time"],
                "one write at a time: Redis XADD",
                "one write at a time: PutDocument",
                redis,
                server,
            ),
            *paired_rows(
                pairs["batches"],
                f"batches of {batch:,}: Redis MULTI/EXEC of XADDs",
                f"batches of {batch:,}: WriteDocuments",
                redis,
                server,
            ),
            *paired_rows(
                pairs["replay"],
                f"replay: Redis XREAD COUNT {batch}",
                "replay: Subscribe, one event per message",
                redis,
                server,
            ),
            *paired_rows(
                pairs["replay_batched"],
                f"replay, batched: Redis XRANGE COUNT {batch}",
                "replay, batched: SubscribeBatched",
                redis,
                server,
            ),
        ]
    result.rows += rows
    for index, name in enumerate(WORKLOADS):
        theirs, ours = rows[2 * index], rows[2 * index + 1]
        result.figures[f"{name}_per_s"] = ours.rate
        result.figures[f"redis_{name}_per_s"] = theirs.rate
        result.figures[f"{name}_ratio"] = ours.ratio
    busy = {name: median(values) for name, values in client_busy.items()}
    version = redis_server_version()
    result.figures.update(
        puts=puts,
        documents=documents,
        batch=batch,
        redis_version=version,
        redis_client_busy_percent=busy,
    )
    result.notes += [
        "per s: calls (one at a time), documents (batches) or events (replays) of one client;"
        " latency: from the call to its acknowledgement, durable at return on both sides;"
        " CPU us/ev: the server's (redis-server, peat-sync serve) per document; / base: the"
        " median of each run's peat-sync / Redis, the two measured one after the other",
        f"redis-server {version}: appendonly yes, appendfsync always (the append-only file"
        " fsynced before each reply), no snapshots; one stream entry per document, fields"
        f" doc_id and json_data; client: {_redis_py()}, one connection",
        "the Redis client's CPU, % of one core (near 100: redis-py was the limit): XADD"
        f" {fmt(busy['one_at_a_time'], '.0f')}, MULTI/EXEC {fmt(busy['batches'], '.0f')},"
        f" XREAD {fmt(busy['replay'], '.0f')}, XRANGE {fmt(busy['replay_batched'], '.0f')}",
        f"peat-sync's replays: {'; '.join(sorted(resumed))}",
    ]
    return result


def _redis(redis: Server, settings: PeerSettings) -> tuple[Measured, float]:
    """One Redis workload: its figures, and how busy its client was (% of one core)."""
    with cpu_of(redis) as cpu:
        report = measure(settings)
    latency = Latency.of(report.acks)
    return (report.rate, latency, per_event_us(cpu, report.count)), report.busy_percent


def _peat_write(settings: WriterSettings, server: Server) -> tuple[Measured, int]:
    """One writer process, connected before it is timed: its figures, and the last sequence
    it wrote."""
    writers = start_writers(settings)
    with workers(*writers), cpu_of(server) as cpu:
        written = finish_writers(writers)
    measured = (written.rate, Latency.of(written.acks), per_event_us(cpu, written.count))
    return measured, written.last_sequence


def _peat_read(settings: SubscriberSettings, server: Server) -> tuple[Measured, str]:
    """One subscriber process that replays up to its `until`: its figures, and how it got
    what it missed (exact replay, or a catch-up from the store)."""
    with cpu_of(server) as cpu:
        received = read_once(settings)
    measured = (rate_of(received, received.data), None, per_event_us(cpu, received.data))
    return measured, resume_kind(received.controls)


def _redis_py() -> str:
    """redis-py's version, and its parser: hiredis (C) when installed."""
    version = importlib.metadata.version("redis")
    parser = "hiredis" if importlib.util.find_spec("hiredis") else "its Python parser"
    return f"redis-py {version} with {parser}"
