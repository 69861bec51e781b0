"""Scenario 4, latency at a fixed rate: put-to-delivery p50/p99/max of PutDocument calls at
a steady rate, delivered to several subscribers."""

from __future__ import annotations

from peat_sync.bench.report import Latency, Row, ScenarioResult, fmt, median
from peat_sync.bench.scenarios.context import (
    Bench,
    busy_percent,
    collect,
    cpu_of,
    finish_writers,
    following,
    new_result,
    paced,
    per_event_us,
    shortfall,
    start_subscribers,
    start_writers,
)
from peat_sync.bench.workers import workers


def latency(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, rate = sizes.latency_subscribers, sizes.rate
    result = new_result(
        "latency", f"Put-to-delivery latency: {rate:,} PutDocument/s, {count} subscribers"
    )
    with bench.server() as server:
        bench.progress(f"starting {count} subscriber processes")
        subscribers = start_subscribers(following(server), count, 1, "subscriber")
        rates, latencies, cpus, busy = [], [], [], []
        with workers(*subscribers):
            for _ in bench.each_run(f"{rate:,} events/s for {sizes.latency_seconds:g} s"):
                writers = start_writers(paced(bench, server, sizes.latency_seconds))
                with workers(*writers), cpu_of(server) as cpu:
                    written = finish_writers(writers)
                    received = collect(subscribers, written.last_sequence)
                rates.append(written.rate)
                latencies.append(Latency.of(received.latency))
                cpus.append(per_event_us(cpu, written.count))
                busy.append(busy_percent(cpu, received.reached_ns - written.start_ns))
        measured = Latency.median_of(latencies)
        label = f"{count} subscribers"
        result.rows.append(Row(label, median(rates), measured, server.rss(), None, median(cpus)))
    result.figures.update(
        subscribers=count,
        rate=rate,
        writer_rate=median(rates),
        p50_ms=measured.p50 if measured else None,
        p99_ms=measured.p99 if measured else None,
        max_ms=measured.max if measured else None,
        server_cpu_us_per_put=median(cpus),
        server_busy_percent=median(busy),
    )
    result.notes.append(
        f"per s: puts per second the writer achieved (asked: {rate:,}); latency: from the"
        " put's send to each subscriber's receipt, over every event and subscriber; CPU us/ev:"
        f" server CPU per put, its {count} deliveries included; the server was busy"
        f" {fmt(median(busy), '.0f', '%')} of one core"
    )
    result.notes += shortfall(rate, median(rates))
    return result
