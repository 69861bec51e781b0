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
    clients, count = sizes.put_clients, sizes.put_count
    result = new_result(
        "put", f"Put throughput: unary PutDocument calls from {clients} concurrent clients"
    )

    def measure(server: Server) -> Measured:
        writers = start_writers(bench.puts(server, count, clients))
        with workers(*writers), cpu_of(server) as cpu:
            written = finish_writers(writers)
        return written.rate, Latency.of(written.acks), per_event_us(cpu, written.count)

    with baseline_server() as base, bench.server() as server:
        runs = [
            (measure(base), measure(server))
            for _ in bench.each_run(f"{count:,} calls to the bare grpclib echo, then PutDocument")
        ]
        rows = paired_rows(runs, "bare grpclib unary echo", "PutDocument", base, server)
    result.rows += rows
    result.figures.update(
        calls_per_s=rows[1].rate,
        baseline_calls_per_s=rows[0].rate,
        ratio=rows[1].ratio,
        server_cpu_us=rows[1].cpu_us,
    )
    result.notes.append(
        "latency: from the call to its acknowledgement (durable at return); / base: the"
        " median of each run's ratio, the two measured one after the other"
    )
    return result
