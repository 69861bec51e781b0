"""Scenario 5, a stalled subscriber: one of several subscribers is stopped (SIGSTOP) while
the others read at a steady rate, then resumed (SIGCONT). What the others' latency and the
server's memory do during the stall, and how the stopped one gets back what it missed.

The load is scenario 4's, as lean: one writer process, and the subscribers in two processes,
the one to stop and one with all the others. Its rate is the highest at which scenario 4 met
its p99 goal, when scenario 4 ran and found one below the rate asked: a stall is measured
against a server that keeps up, not against a queue.
"""

from __future__ import annotations

import signal
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypeVar

from peat_sync.bench.messages import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    CHANGE_TYPE_NAMES,
    HEARTBEAT,
    RESYNC,
)
from peat_sync.bench.report import Latency, Row, ScenarioResult, fmt
from peat_sync.bench.scenarios.context import (
    Bench,
    Received,
    Written,
    collect,
    following,
    head,
    new_result,
    paced,
    preload,
    ratio,
    resume_kind,
    shortfall,
    start_workers,
    start_writers,
)
from peat_sync.bench.servers import Server, get_status
from peat_sync.bench.workers import workers

T = TypeVar("T")

# The stopped subscriber holds HTTP/2's default window instead of letting grpcio grow it: a
# stall then reaches the server after about 64 KiB rather than megabytes of buffers, and a
# stall of seconds shows what the server does with a subscriber that does not read.
HTTP2_WINDOW = 65_535
# Replay logs of documents written before the stall: the log full, and the store's
# caches past their first growth.
PREFILL = 10
# Seconds between two samples of the server's RSS; the text shows some, the JSON all.
RSS_INTERVAL = 0.5
PRINTED_SAMPLES = 10
# The replay log holds at most this fraction of the events of the stall, so that the stall
# outruns it at any rate.
LOG_PER_STALL = 1 / 4


def _rate_and_reference(bench: Bench) -> tuple[int, float | None]:
    """The rate of the stall, and scenario 4's p99 at that rate (None if scenario 4 did not
    run): the highest rate at which it met its goal when that is below the rate asked (and
    not 0), else the rate asked."""
    rate = bench.sizes.rate
    scenario_4 = bench.results.get("latency")
    if scenario_4 is None:
        return rate, None
    figures = scenario_4.figures
    best, at_best = figures.get("max_rate"), figures.get("max_rate_figures")
    if best and best < rate and at_best:
        return int(best), at_best["p99_ms"]
    return rate, figures.get("p99_ms")


def _catching_up(controls: Sequence[dict[str, Any]]) -> bool:
    """Whether the last catch-up in `controls` has not ended yet."""
    types = [control["type"] for control in controls if control["type"] != HEARTBEAT]
    return bool(types) and types[-1] == CATCH_UP_BEGIN


def _recovered_ns(received: Received, resumed_ns: int) -> int:
    """How long after `resumed_ns` a resumed stream had recovered: its CATCH_UP_END, its
    RESYNC, or else (an exact replay, or buffers that held everything) its last event."""
    for control in received.controls:
        if control["type"] in (CATCH_UP_END, RESYNC) and control["at_ns"] > resumed_ns:
            return int(control["at_ns"]) - resumed_ns
    return received.reached_ns - resumed_ns


def _slope(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of y against x."""
    if len(points) < 2:
        return None
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    spread_x = sum((x - mean_x) ** 2 for x in xs)
    if not spread_x:
        return None
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread_x


def stalled(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    readers = sizes.latency_subscribers - 1
    rate, reference = _rate_and_reference(bench)
    result = new_result(
        "stalled",
        f"Slow-subscriber isolation: {rate:,} PutDocument/s, {readers + 1} subscribers; one is"
        f" stopped (SIGSTOP) for {sizes.stall_seconds:g} s, then resumed (SIGCONT)",
    )
    log = min(sizes.stall_replay_log, max(1, round(rate * sizes.stall_seconds * LOG_PER_STALL)))
    with bench.server("--replay-log-size", str(log)) as server:
        # The replay log full and the store past its caches first: what grows after that
        # grows with the events produced.
        preload(bench, server, PREFILL * log)
        bench.progress(f"starting 2 subscriber processes: 1 stream to stop, {readers} others")
        reader = following(server)
        subscribers = start_workers(
            [replace(reader, window=HTTP2_WINDOW), replace(reader, streams=readers)],
            "subscriber process",
        )
        stalled_one, others = subscribers[0], subscribers[1:]
        with workers(*subscribers):
            # Writers of each phase. Those of the stall start when it does: on a loaded
            # machine, writers of one schedule fall behind during the warm-up and catch up in
            # a burst, which could land every write before the stall and leave it none to
            # measure growth by.
            warming = start_writers(paced(bench, server, sizes.stall_warmup, rate))
            stalling = start_writers(
                paced(bench, server, sizes.stall_seconds + sizes.stall_after, rate)
            )
            with workers(*warming, *stalling):
                for worker in warming:
                    worker.send("go")
                bench.progress(f"all {readers + 1} reading for {sizes.stall_warmup:g} s")
                start, _ = head(server)
                reading = _sample_rss(server, sizes.stall_warmup, start)
                warm = Written.merge([w.expect("report")["report"] for w in warming])
                before = collect(others, warm.last_sequence)
                stalled_one.signal(signal.SIGSTOP)
                stall_start, _ = head(server)
                for worker in stalling:
                    worker.send("go")
                bench.progress(f"subscriber 1 stopped for {sizes.stall_seconds:g} s")
                stopped = _sample_rss(server, sizes.stall_seconds, stall_start)
                stall_end, _ = head(server)
                during = collect(others, stall_end)
                stalled_one.signal(signal.SIGCONT)
                resumed_ns = time.monotonic_ns()
                bench.progress("subscriber 1 resumed")
                written = Written.merge([w.expect("report")["report"] for w in stalling])
            collect(others, written.last_sequence)
            back = collect([stalled_one], written.last_sequence)
            if _catching_up(back.controls):  # it is at the head: the catch-up ends next
                ending = collect([stalled_one], CATCH_UP_END, "control")
                back.controls += ending.controls
                back.data += ending.data
        lag_events = int(get_status(server.target).lag_events)
    stall = Latency.of(during.latency)
    p99_ratio = ratio(stall.p99 if stall else None, reference)
    growth, control = _rss_growth(stopped), _rss_growth(reading)
    # What the stopped subscriber adds: the RSS may grow while all read too (a saturated
    # server queues calls; caches fill), and that is no cost of the stall.
    stall_growth = None if growth is None or control is None else growth - control
    kind = resume_kind(back.controls)
    back_seconds = _recovered_ns(back, resumed_ns) / 1e9
    result.rows += [
        Row(f"{readers} others, all reading", warm.rate, Latency.of(before.latency)),
        Row(
            f"{readers} others, one stopped",
            None,
            stall,
            stopped[-1][1] if stopped else None,
            p99_ratio,
        ),
        Row("the stopped one, once resumed", None, Latency.of(back.latency)),
    ]
    result.figures.update(
        p99_ms=stall.p99 if stall else None,
        scenario_4_p99_ms=reference,
        p99_ratio=p99_ratio,
        rss_while_all_read=[{"events": e, "rss": r} for e, r in reading],
        rss_while_one_stopped=[{"events": e, "rss": r} for e, r in stopped],
        rss_growth_kib_per_1000_events=stall_growth,
        rss_growth_one_stopped_kib_per_1000_events=growth,
        rss_growth_all_reading_kib_per_1000_events=control,
        stalled_resume=kind,
        stalled_controls=[
            {
                "type": CHANGE_TYPE_NAMES.get(c["type"], c["type"]),
                "sequence": c["sequence"],
                "seconds_after_resume": round((c["at_ns"] - resumed_ns) / 1e9, 3),
            }
            for c in back.controls
        ],
        stalled_events=back.data,
        stalled_recovery_seconds=back_seconds,
        lag_events=lag_events,
        rate=rate,
        writer_rate=warm.rate,
    )
    result.notes += [
        f"per s: PutDocument/s the writer achieved (asked: {rate:,}); / base: the others' p99"
        f" while one is stopped / scenario 4's p99 at {rate:,} puts/s"
        f" ({fmt(reference, '.2f', ' ms')})",
        f"the stopped subscriber, once resumed: {kind}, over {back_seconds:.2f} s; it"
        f" received {back.data:,} events in all (lags counted by the server: {lag_events})",
        f"server RSS growth per 1,000 events produced: {fmt(growth, '.1f', ' KiB')} while one"
        f" is stopped, {fmt(control, '.1f', ' KiB')} while all read; the stall's own:"
        f" {fmt(stall_growth, '.1f', ' KiB')}",
        "server RSS while one is stopped (MiB at events produced since): "
        + ", ".join(_rss_text(e, r) for e, r in _thinned(stopped, PRINTED_SAMPLES)),
    ]
    if rate != sizes.rate:
        result.notes.append(
            f"{rate:,} puts/s: the highest rate at which scenario 4 met its p99 goal, below"
            f" the {sizes.rate:,} it was asked"
        )
    result.notes += shortfall(rate, warm.rate)
    if bench.addr is None:
        result.notes.append(
            f"the server runs with --replay-log-size {log} (filled first), so that the stall"
            " outruns the replay log and the stopped subscriber must catch up from the store"
            " (with the default log of 100,000 events it would get an exact replay); the"
            f" stopped subscriber's HTTP/2 window is held at {HTTP2_WINDOW:,} bytes"
            " (grpcio would grow it to megabytes, which a stall of seconds would not fill)"
        )
    return result


def _sample_rss(server: Server, seconds: float, start: int) -> list[tuple[int, int | None]]:
    """(events produced since sequence `start`, server RSS), every RSS_INTERVAL for
    `seconds`."""
    samples: list[tuple[int, int | None]] = []
    deadline = time.monotonic() + seconds
    while (now := time.monotonic()) < deadline:
        time.sleep(min(RSS_INTERVAL, deadline - now))
        sequence, _ = head(server)
        samples.append((sequence - start, server.rss()))
    return samples


def _rss_growth(samples: Sequence[tuple[int, int | None]]) -> float | None:
    """KiB of RSS per 1,000 events produced: the least-squares slope over the samples after
    the first second (in which a stopped stream's buffers fill), keeping at least two."""
    skip = max(0, min(int(1 / RSS_INTERVAL), len(samples) - 2))
    points = [(float(e), float(r)) for e, r in samples[skip:] if r is not None]
    slope = _slope(points)
    return None if slope is None else slope * 1000 / 1024


def _thinned(samples: Sequence[T], count: int) -> list[T]:
    """At most `count` of `samples`, evenly spaced, the first and last included."""
    if len(samples) <= count:
        return list(samples)
    return [samples[round(i * (len(samples) - 1) / (count - 1))] for i in range(count)]


def _rss_text(events: int, rss: int | None) -> str:
    return f"{fmt(None if rss is None else rss / 2**20, '.1f')} at {events:,}"
