"""Scenario 7, idle subscribers: the server's RSS, and its CPU, with many open streams on
which nothing happens."""

from __future__ import annotations

import math
import time

from peat_sync.bench.report import Row, ScenarioResult, fmt
from peat_sync.bench.scenarios.context import (
    Bench,
    busy_percent,
    cpu_of,
    new_result,
    start_subscribers,
)
from peat_sync.bench.servers import get_status
from peat_sync.bench.workers import SubscriberSettings, workers

# How long the idle streams are watched for the server's CPU.
IDLE_SECONDS = 2.0
# What the idle streams follow: a collection that nothing writes to.
IDLE_COLLECTION = "bench-idle"


def idle(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count = sizes.idle_subscribers
    result = new_result("idle", f"Memory: server RSS with {count:,} idle subscribers")
    with bench.server() as server:
        before = server.rss()
        bench.progress(f"opening {count:,} idle streams from {sizes.idle_processes} processes")
        per_process = math.ceil(count / sizes.idle_processes)
        idle = SubscriberSettings(target=server.target, collections=(IDLE_COLLECTION,))
        subscribers = start_subscribers(idle, count, per_process, "idle subscribers")
        with workers(*subscribers):
            open_streams = int(get_status(server.target).subscribers)
            with cpu_of(server) as cpu:
                time.sleep(IDLE_SECONDS)
            after = server.rss()
    growth = None if before is None or after is None else after - before
    per_subscriber = None if growth is None else growth / count
    result.rows += [
        Row("no subscriber", rss=before),
        Row(f"{count:,} idle subscribers", rss=after),
    ]
    idle_cpu = busy_percent(cpu, int(IDLE_SECONDS * 1e9))
    result.figures.update(
        subscribers=count,
        open_streams=open_streams,
        rss_before=before,
        rss_after=after,
        rss_per_subscriber=per_subscriber,
        idle_cpu_percent=idle_cpu,
    )
    per_subscriber_kib = None if per_subscriber is None else per_subscriber / 1024
    result.notes.append(
        f"per subscriber: {fmt(per_subscriber_kib, '.1f', ' KiB')}; the server counted"
        f" {open_streams:,} open streams; server CPU while idle:"
        f" {fmt(idle_cpu, '.1f', '% of a core')}; each stream has a connection of its own"
    )
    return result
