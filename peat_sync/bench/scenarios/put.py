"""Scenario 1, put throughput: unary PutDocument calls from concurrent clients as fast as
they go, against the bare grpclib unary echo in the same run."""

from __future__ import annotations

from peat_sync.bench.report import Latency, ScenarioResult
from peat_sync.bench.scenarios.context import (
    Bench,
    Measured,
    cpu_of,
    finish_writers,
    new_result,
    paired_rows,
    per_event_us,
    start_writers,
)
from peat_sync.bench.servers import Server, baseline_server
from peat_sync.bench.workers import workers


def put_throughput(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count = sizes.put_count
    # The calls in flight, as the target has them: `put_clients`, and four times as many.
    in_flight = (sizes.put_clients, 4 * sizes.put_clients)
    result = new_result(
        "put",
        "Put throughput: unary PutDocument calls from"
        f" {' and '.join(map(str, in_flight))} concurrent clients",
    )

    def measure(server: Server, clients: int) -> Measured:
        writers = start_writers(bench.puts(server, count, clients))
        with workers(*writers), cpu_of(server) as cpu:
            written = finish_writers(writers)
        return written.rate, Latency.of(written.acks), per_event_us(cpu, written.count)

    ratios = []
    with baseline_server() as base, bench.server() as server:
        for clients in in_flight:
            runs = [
                (measure(base, clients), measure(server, clients))
                for _ in bench.each_run(
                    f"{count:,} calls to the bare grpclib echo, then PutDocument,"
                    f" {clients} in flight"
                )
            ]
            rows = paired_rows(
                runs,
                f"bare grpclib unary echo, {clients} in flight",
                f"PutDocument, {clients} in flight",
                base,
                server,
            )
            result.rows += rows
            ratios.append(rows[1].ratio)
            result.figures.update(
                {
                    f"calls_per_s_{clients}": rows[1].rate,
                    f"baseline_calls_per_s_{clients}": rows[0].rate,
                    f"ratio_{clients}": rows[1].ratio,
                    f"server_cpu_us_{clients}": rows[1].cpu_us,
                }
            )
    known = [ratio for ratio in ratios if ratio is not None]
    result.figures["ratio"] = min(known) if known else None
    result.notes.append(
        "latency: from the call to its acknowledgement (durable at return); / base: the"
        " median of each run's ratio, the two measured one after the other"
    )
    return result
