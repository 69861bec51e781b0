"""Scenario 11, one call at a time: the latency of GetStatus, GetDocument and PutDocument from
one grpcio client that makes each call once the one before it has returned, on a server that
nothing else loads.

GetStatus is the cheapest answer the server gives: a call's whole way through the transport
and back. GetDocument's ratio to it is what a point read from the store adds, PutDocument's
what a durable write adds (a point read once cost a millisecond more than GetStatus,
although SQLite answers it in microseconds).
"""

from __future__ import annotations

from peat_sync.bench.report import Histogram, Latency, Row, ScenarioResult, median
from peat_sync.bench.scenarios.context import Bench, new_result, ratio, start_workers
from peat_sync.bench.workers import SINGLE_CALLS, CallerSettings, workers

# The figures' names of each RPC.
SHORT = {"GetStatus": "status", "GetDocument": "get", "PutDocument": "put"}


def single(bench: Bench) -> ScenarioResult:
    calls = bench.sizes.single_calls
    result = new_result(
        "single",
        f"One call at a time: {calls:,} calls of each RPC per run from one grpcio client, on"
        " an idle server",
    )
    runs: list[dict[str, Latency | None]] = []
    with bench.server() as server:
        bench.progress("starting the caller")
        settings = CallerSettings(target=server.target, count=calls, prefix=bench.prefix())
        callers = start_workers([settings], "caller")
        with workers(*callers):
            (caller,) = callers
            for _ in bench.each_run(f"{calls:,} calls each of {', '.join(SINGLE_CALLS)}"):
                caller.send("go")
                report = caller.expect("report")["report"]
                runs.append(
                    {name: Latency.of(Histogram.from_json(report[name])) for name in SINGLE_CALLS}
                )
        rss = server.rss()

    def p50(run: dict[str, Latency | None], name: str) -> float | None:
        latency = run[name]
        return latency.p50 if latency else None

    def p50_ratio(name: str) -> float | None:
        """The median of the runs' ratios of `name`'s p50 to GetStatus's."""
        return median(ratio(p50(run, name), p50(run, "GetStatus")) for run in runs)

    for name in SINGLE_CALLS:
        latency = Latency.median_of([run[name] for run in runs])
        short = SHORT[name]
        result.rows.append(
            Row(name, None, latency, rss if name == "GetStatus" else None, p50_ratio(name))
        )
        result.figures.update(
            {
                f"{short}_p50_ms": latency.p50 if latency else None,
                f"{short}_p99_ms": latency.p99 if latency else None,
            }
        )
    result.figures.update(get_ratio=p50_ratio("GetDocument"), put_ratio=p50_ratio("PutDocument"))
    result.notes.append(
        "latency: from the call to its answer, each call made once the one before it returned;"
        " / base: p50 / GetStatus's p50 (the median of the runs' ratios); the RPCs take turns"
        f" of {settings.turn} calls, after {settings.warmup} of each that are not counted;"
        " PutDocument is durable at return"
    )
    return result
