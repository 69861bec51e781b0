"""Scenario 2, Subscribe throughput: one subscriber reads events from the replay log as fast
as it can, against the bare grpclib stream of the same events in the same run."""

from __future__ import annotations

from peat_sync.bench.report import ScenarioResult
from peat_sync.bench.scenarios.context import (
    Bench,
    Measured,
    cpu_of,
    head,
    new_result,
    paired_rows,
    per_event_us,
    preload,
    rate_of,
    read_once,
)
from peat_sync.bench.servers import Server, baseline_server


def subscribe_throughput(bench: Bench) -> ScenarioResult:
    events = bench.sizes.stream_events
    result = new_result(
        "subscribe", f"Subscribe throughput, 1 subscriber: {events:,} events from the replay log"
    )

    def measure(server: Server, *options: str) -> Measured:
        with cpu_of(server) as cpu:
            received = read_once(server, *options, name="subscriber")
        return (
            rate_of(received, received.events),
            None,
            per_event_us(cpu, received.events),
        )

    with baseline_server() as base, bench.server() as server:
        preload(bench, server, events)
        last, _ = head(server)
        since = ("--since", str(last - events), "--until", str(last))
        runs = [
            (measure(base, "--events", str(events)), measure(server, *since))
            for _ in bench.each_run(
                f"{events:,} events from the bare grpclib stream, then Subscribe"
            )
        ]
        rows = paired_rows(runs, "bare grpclib stream", "Subscribe", base, server)
    result.rows += rows
    result.figures.update(
        events_per_s=rows[1].rate,
        baseline_events_per_s=rows[0].rate,
        ratio=rows[1].ratio,
        events=events,
    )
    result.notes.append(
        "one grpcio subscriber process reads as fast as it can, timed from its request to its"
        " last event (the opening HEARTBEAT counts as one); where the server's CPU per event is"
        " well below 1e6 / events/s, the subscriber, not the server, is the bottleneck"
    )
    return result
