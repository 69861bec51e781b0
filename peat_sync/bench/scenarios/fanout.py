"""Scenario 3, fan-out: for 1, 10, 100 and 1,000 subscribers, the put-to-delivery latency at
a fixed rate of PutDocument calls that the server sustains; then the events delivered per
second, and the server's CPU per delivered event, with events written as fast as they go.

The two are measured apart: with writes as fast as they go, events wait in a queue, and its
latency is the queue's, not the server's. The load is lean, as scenario 4's: one
writer process at the fixed rate, and the subscribers in as few processes as hold
`streams_per_process` streams each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peat_sync.bench.messages import CHANGE_TYPE_NAMES
from peat_sync.bench.report import Row, ScenarioResult, fmt, median
from peat_sync.bench.scenarios.context import (
    Bench,
    Received,
    collect,
    cpu_of,
    finish_writers,
    following,
    new_result,
    paced_run,
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
    fixed = sizes.fanout_rate
    result = new_result(
        "fanout",
        f"Fan-out: latency at {fixed:,} PutDocument/s, and events written with WriteDocuments"
        f" (batches of {FANOUT_BATCH}) as fast as they go, delivered live to every subscriber",
    )
    points = []
    with bench.server() as server:
        for count in sizes.fanout:
            events = min(sizes.fanout_events, sizes.fanout_deliveries // count)
            bench.progress(f"{count:,} subscribers: starting them")
            subscribers = start_subscribers(
                following(server), count, sizes.streams_per_process, "subscriber process"
            )
            rates, cpus = [], []
            with workers(*subscribers):
                seconds = sizes.fanout_latency_seconds
                bench.progress(f"{count:,} subscribers: {fixed:,} puts/s for {seconds:g} s")
                steady = paced_run(bench, server, subscribers, fixed, seconds)
                what = f"{count:,} subscribers: {events:,} events, {events * count:,} deliveries"
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
                    cpus.append(per_event_us(cpu, deliveries))
            rate, cpu_us = median(rates), median(cpus)
            label = f"{count:,} subscriber{'s' if count > 1 else ''}"
            steady_cpu = None if steady.cpu_us is None else steady.cpu_us / count
            busy = fmt(steady.busy, ".0f", "% of one core")
            result.rows += [
                Row(
                    f"{label}, {fixed:,} puts/s",
                    steady.achieved,
                    steady.latency,
                    None,
                    None,
                    steady_cpu,
                    f"server busy {busy}"
                    + ("" if steady.kept_up else "; the server did not keep up: calls queued"),
                ),
                Row(f"{label}, as fast as they go", rate, None, server.rss(), None, cpu_us),
            ]
            points.append(
                {
                    "subscribers": count,
                    **steady.figures(),
                    "kept_up": steady.kept_up,
                    "steady_cpu_us_per_event": steady_cpu,
                    "events": events,
                    "events_per_s": rate,
                    "cpu_us_per_event": cpu_us,
                }
            )
    first, most = points[0], points[-1]
    cpu_ratio = ratio(most["cpu_us_per_event"], first["cpu_us_per_event"])
    result.figures.update(
        points=points, rate=fixed, max_subscribers=most["subscribers"], cpu_ratio=cpu_ratio
    )
    result.notes += [
        f"{fixed:,} puts/s: one writer process, PutDocument at that rate for"
        f" {sizes.fanout_latency_seconds:g} s (one run); per s: puts/s it achieved; latency:"
        " from the put's send to each subscriber's receipt; CPU us/ev: server CPU per"
        " delivered event",
        "as fast as they go: per s: events delivered per second, all subscribers together,"
        " from the first write to the last delivery; CPU us/ev: server CPU over that time /"
        " events delivered",
        f"{sizes.streams_per_process:,} subscribers per process at most, each on its own"
        " connection",
    ]
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
