"""Scenario 4, latency at a fixed rate: put-to-delivery p50/p99/max of PutDocument calls at a
steady rate, delivered to several subscribers, with the server's CPU beside them; and, when
the p99 misses its goal at that rate, the highest rate at which it meets it.

The load is lean, so that the figures are the server's and not the contention of its clients
for the machine's cores: one writer process with one grpc.aio client, which sends
each put when it is due whether or not the earlier ones are answered, and one subscriber
process that holds every stream, each on a connection of its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from peat_sync.bench.report import Row, ScenarioResult, fmt
from peat_sync.bench.scenarios.context import (
    Bench,
    Paced,
    following,
    new_result,
    paced_run,
    shortfall,
    start_subscribers,
)
from peat_sync.bench.targets import LATENCY_P99_GOAL_MS
from peat_sync.bench.workers import workers

# The search below the rate asked: each rate tried is this fraction of the last one missed,
# until one meets the goal; then the gap above it is halved (on a log scale) this many times.
# With 0.6 and two halvings, the rate found is within 12% of the highest that meets the goal,
# in a few steps of some seconds each.
LADDER = 0.6
BISECTIONS = 2
# The search gives up below this fraction of the rate asked: the highest rate is then 0.
FLOOR = 1 / 50


def nice(rate: float) -> int:
    """`rate` to two significant figures, at least 1: rates read as 590, not 587."""
    rate = max(rate, 1.0)
    unit = int(10 ** max(0, math.floor(math.log10(rate)) - 1))
    return max(1, round(rate / unit) * unit)


def highest_rate(meets: Callable[[int], bool], top: int, floor: int) -> int:
    """The highest rate of at most `top` for which `meets` holds, in few calls of it: `top`,
    then down a LADDER until one meets it, then BISECTIONS halvings of the gap between that
    rate and the one above it that missed; 0 when no rate down to `floor` meets it."""
    if meets(top):
        return top
    missed = top
    while True:
        rate = nice(missed * LADDER)
        if rate < floor or rate >= missed:
            return 0
        if meets(rate):
            break
        missed = rate
    for _ in range(BISECTIONS):
        middle = nice(math.sqrt(rate * missed))
        if not rate < middle < missed:
            break
        if meets(middle):
            rate = middle
        else:
            missed = middle
    return rate


def _meets_goal(paced: Paced) -> bool:
    latency = paced.latency
    return paced.kept_up and latency is not None and latency.p99 <= LATENCY_P99_GOAL_MS


def latency(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, rate = sizes.latency_subscribers, sizes.rate
    result = new_result(
        "latency",
        f"Put-to-delivery latency: PutDocument at a steady rate from one writer process,"
        f" {count} subscribers in one process",
    )
    with bench.server() as server:
        bench.progress(f"starting a subscriber process of {count} streams")
        subscribers = start_subscribers(following(server), count, count, "subscriber process")
        with workers(*subscribers):
            seconds = sizes.latency_seconds
            runs = [
                paced_run(bench, server, subscribers, rate, seconds)
                for _ in bench.each_run(f"{rate:,} puts/s for {seconds:g} s")
            ]
            measured = {rate: Paced.median_of(runs)}

            def meets(asked: int) -> bool:
                if asked not in measured:
                    step = sizes.latency_search_seconds
                    bench.progress(
                        f"searching for the highest rate with a p99 <="
                        f" {LATENCY_P99_GOAL_MS:g} ms: {asked:,} puts/s for {step:g} s"
                    )
                    measured[asked] = paced_run(bench, server, subscribers, asked, step)
                return _meets_goal(measured[asked])

            best = highest_rate(meets, rate, max(1, math.ceil(rate * FLOOR)))
        rss = server.rss()
    for asked, paced in sorted(measured.items(), reverse=True):
        busy = fmt(paced.busy, ".0f", "% of one core")
        verdict = "meets" if _meets_goal(paced) else "misses"
        result.rows.append(
            Row(
                f"{asked:,} puts/s asked",
                paced.achieved,
                paced.latency,
                rss if asked == rate else None,
                None,
                paced.cpu_us,
                f"{verdict} p99 <= {LATENCY_P99_GOAL_MS:g} ms; server busy {busy}",
            )
        )
    at_rate = measured[rate]
    result.figures.update(
        {
            "subscribers": count,
            **at_rate.figures(),
            "rate": rate,
            "max_rate": best,
            "max_rate_figures": measured[best].figures() if best else None,
            "rates_tried": [measured[asked].figures() for asked in sorted(measured, reverse=True)],
        }
    )
    runs_text = f"the median of {sizes.runs} runs" if sizes.runs > 1 else "one run"
    result.notes += [
        f"per s: puts per second the writer achieved; latency: from the put's send to each"
        f" subscriber's receipt, over every event and subscriber; CPU us/ev: server CPU per"
        f" put, its {count} deliveries included; busy: server CPU from the first put to the"
        " last delivery, over that time",
        f"{rate:,} puts/s: {runs_text} of {sizes.latency_seconds:g} s; each lower rate: one"
        f" run of {sizes.latency_search_seconds:g} s, tried from {LADDER:g} x the last rate"
        f" that missed, down to {max(1, math.ceil(rate * FLOOR)):,}/s, then between the"
        " highest that met and the one above it",
        (
            f"the highest rate with a p99 <= {LATENCY_P99_GOAL_MS:g} ms: {best:,} puts/s"
            if best
            else f"no rate tried met a p99 <= {LATENCY_P99_GOAL_MS:g} ms"
        ),
    ]
    result.notes += shortfall(rate, at_rate.achieved)
    return result
