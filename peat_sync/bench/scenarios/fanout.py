"""Scenario 3, fan-out: events written as fast as they go, delivered live to 1, 10 and 100
subscribers; the server's CPU per delivered event at each count."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peat_sync.bench.messages import CHANGE_TYPE_NAMES
from peat_sync.bench.report import Latency, Row, ScenarioResult, median
from peat_sync.bench.scenarios.context import (
    Bench,
    Received,
    collect,
    cpu_of,
    finish_writers,
    following,
    new_result,
    per_event_us,
    rate_of,
    ratio,
    start_subscribers,
    start_writers,
)
from peat_sync.bench.servers import BenchError, get_status
from peat_sync.bench.workers import workers

# The fan-out's load: WriteDocuments calls of this many documents, from this many clients,
# as fast as they go; batches small enough that events flow rather than arrive in bursts.
FANOUT_BATCH = 100
FANOUT_WRITERS = 2


def fanout(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = new_result(
        "fanout",
        f"Fan-out: events written with WriteDocuments (batches of {FANOUT_BATCH}) as fast as"
        " they go, delivered live to every subscriber",
    )
    points = []
    with bench.server() as server:
        for count in sizes.fanout:
            events = min(sizes.fanout_events, sizes.fanout_deliveries // count)
            bench.progress(f"{count} subscribers: starting them")
            subscribers = start_subscribers(
                following(server), count, sizes.streams_per_process, "subscriber process"
            )
            rates, latencies, cpus = [], [], []
            with workers(*subscribers):
                what = f"{count} subscribers: {events:,} events, {events * count:,} deliveries"
                for _ in bench.each_run(what):
                    writers = start_writers(
                        bench.writes(server, events, FANOUT_WRITERS, FANOUT_BATCH)
                    )
                    with workers(*writers), cpu_of(server) as cpu:
                        written = finish_writers(writers)
                        received = collect(subscribers, written.last_sequence)
                    deliveries = events * count
                    short = [n for n in received.stream_data if n < events]
                    if short:
                        raise BenchError(
                            f"{len(short)} of {count} subscribers received fewer than the"
                            f" {events:,} events written, up to sequence"
                            f" {written.last_sequence}: {sorted(short)[:10]} (change types"
                            f" received: {_type_counts(received)}; controls:"
                            f" {_controls_text(received.controls)}; server lags:"
                            f" {get_status(server.target).lag_events})"
                        )
                    rates.append(rate_of(received, deliveries, written.start_ns))
                    latencies.append(Latency.of(received.latency))
                    cpus.append(per_event_us(cpu, deliveries))
            rate, latency, cpu_us = median(rates), Latency.median_of(latencies), median(cpus)
            label = f"{count} subscriber{'s' if count > 1 else ''}"
            result.rows.append(Row(label, rate, latency, server.rss(), None, cpu_us))
            points.append(
                {
                    "subscribers": count,
                    "events": events,
                    "events_per_s": rate,
                    "p50_ms": latency.p50 if latency else None,
                    "p99_ms": latency.p99 if latency else None,
                    "max_ms": latency.max if latency else None,
                    "cpu_us_per_event": cpu_us,
                }
            )
    first, most = points[0], points[-1]
    cpu_ratio = ratio(most["cpu_us_per_event"], first["cpu_us_per_event"])
    result.figures.update(points=points, max_subscribers=most["subscribers"], cpu_ratio=cpu_ratio)
    result.notes.append(
        "per s: events delivered per second, all subscribers together, from the first write"
        " to the last delivery; CPU us/ev: server CPU over that time / events delivered;"
        f" {sizes.streams_per_process} subscribers per process at most, each on its own"
        " connection"
    )
    return result


def _controls_text(controls: Sequence[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{CHANGE_TYPE_NAMES.get(c['type'], c['type'])}@{c['sequence']}" for c in controls[:10]
        )
        or "none"
    )


def _type_counts(received: Received) -> str:
    return ", ".join(
        f"{CHANGE_TYPE_NAMES.get(t, str(t))} {n:,}" for t, n in sorted(received.types.items())
    )
