"""Scenario 6, replay: a subscriber reconnects far behind the head and catches up, with
Subscribe and with SubscribeBatched."""

from __future__ import annotations

from dataclasses import replace

from peat_sync.bench.report import Row, ScenarioResult, median
from peat_sync.bench.scenarios.context import (
    Bench,
    cpu_of,
    head,
    new_result,
    per_event_us,
    preload,
    rate_of,
    read_once,
    resume_kind,
)
from peat_sync.bench.workers import SubscriberSettings


def replay(bench: Bench) -> ScenarioResult:
    events = bench.sizes.replay_events
    result = new_result(
        "replay", f"Replay: a subscriber reconnects {events:,} events behind and catches up"
    )
    with bench.server() as server:
        preload(bench, server, events)
        last, epoch = head(server)
        behind = SubscriberSettings(
            target=server.target, since=last - events, epoch=epoch, until=last
        )
        for label, batched in (("Subscribe", False), ("SubscribeBatched", True)):
            rates, cpus, kinds = [], [], set()
            for _ in bench.each_run(f"{label}: {events:,} events behind"):
                with cpu_of(server) as cpu:
                    received = read_once(replace(behind, batched=batched))
                rates.append(rate_of(received, received.data))
                cpus.append(per_event_us(cpu, received.data))
                kinds.add(resume_kind(received.controls))
            rate = median(rates)
            result.rows.append(
                Row(label, rate, None, server.rss(), None, median(cpus), note="; ".join(kinds))
            )
            result.figures[f"{label}_events_per_s"] = rate
            result.figures[f"{label}_seconds"] = None if not rate else events / rate
    result.figures["events"] = events
    result.notes.append(
        "per s: events from the reconnect (the request) to the head, over that time"
    )
    return result
