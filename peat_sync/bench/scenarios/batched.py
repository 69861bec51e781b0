"""Scenario 8, the batched RPCs: WriteDocuments as fast as it goes, then SubscribeBatched
replays what was written, against the bare grpclib stream of the same events in batches."""

from __future__ import annotations

from peat_sync.bench.baseline import BATCH
from peat_sync.bench.report import Latency, Row, ScenarioResult, median
from peat_sync.bench.scenarios.context import (
    Bench,
    Measured,
    cpu_of,
    new_result,
    paired_rows,
    per_event_us,
    timed_read,
    write,
)
from peat_sync.bench.servers import baseline_server
from peat_sync.bench.workers import SubscriberSettings


def batched(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, batch, clients = sizes.write_count, sizes.write_batch, sizes.write_clients
    result = new_result(
        "batched",
        f"Batched RPCs: WriteDocuments ({count:,} documents in batches of {batch:,} from"
        f" {clients} clients), then SubscribeBatched replays them",
    )

    writes: list[Measured] = []
    replays: list[tuple[Measured, Measured]] = []
    with baseline_server() as base, bench.server() as server:
        for _ in bench.each_run(f"WriteDocuments {count:,}, then SubscribeBatched and baseline"):
            with cpu_of(server) as cpu:
                written = write(bench.writes(server, count, clients, batch))
            writes.append((written.rate, Latency.of(written.acks), per_event_us(cpu, count)))
            last = written.last_sequence
            from_base = SubscriberSettings(target=base.target, batched=True, events=count)
            from_log = SubscriberSettings(
                target=server.target, batched=True, since=last - count, until=last
            )
            replays.append((timed_read(from_base, base), timed_read(from_log, server)))
        write_row = Row(
            "WriteDocuments (docs/s)",
            median([rate for rate, _, _ in writes]),
            Latency.median_of([latency for _, latency, _ in writes]),
            server.rss(),
            None,
            median([cpu for _, _, cpu in writes]),
        )
        rows = paired_rows(
            replays, f"bare grpclib, {BATCH}-event batches", "SubscribeBatched replay", base, server
        )
    result.rows += [write_row, *rows]
    result.figures.update(
        write_documents_per_s=write_row.rate,
        replay_events_per_s=rows[1].rate,
        baseline_batched_events_per_s=rows[0].rate,
        replay_ratio=rows[1].ratio,
    )
    result.notes.append(
        "WriteDocuments latency: from the call to its acknowledgement, once the batch is"
        " committed; SubscribeBatched is timed from the request to the last event, as is the"
        " bare grpclib stream of the same events in messages of 500"
    )
    return result
