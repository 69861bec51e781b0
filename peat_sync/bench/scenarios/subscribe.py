"""Scenario 2, Subscribe throughput: one subscriber reads events from the replay log as fast
as it can, against the bare grpclib stream of the same events in the same run."""

from __future__ import annotations

from peat_sync.bench.report import ScenarioResult
from peat_sync.bench.scenarios.context import (
    Bench,
    head,
    new_result,
    paired_rows,
    preload,
    timed_read,
)
from peat_sync.bench.servers import baseline_server
from peat_sync.bench.workers import SubscriberSettings


def subscribe_throughput(bench: Bench) -> ScenarioResult:
    events = bench.sizes.stream_events
    result = new_result(
        "subscribe", f"Subscribe throughput, 1 subscriber: {events:,} events from the replay log"
    )
    with baseline_server() as base, bench.server() as server:
        preload(bench, server, events)
        last, _ = head(server)
        from_base = SubscriberSettings(target=base.target, events=events)
        from_log = SubscriberSettings(target=server.target, since=last - events, until=last)
        runs = [
            (timed_read(from_base, base), timed_read(from_log, server))
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
