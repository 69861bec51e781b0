"""What every scenario runs in: the `Bench` (its sizes, its progress, the server it measures),
the load it puts on that server from worker processes, and what the workers report back.

Writers are started connected and waiting, then told to go at once; subscribers are started
with their streams open, then asked to report once they reach a sequence. Every figure that
is divided by another comes from runs measured in pairs, one after the other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peat_sync.bench.messages import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    CHANGE_TYPE_NAMES,
    COLLECTION,
    HEARTBEAT,
    RESYNC,
    RESYNC_REASON_NAMES,
)
from peat_sync.bench.report import Histogram, Latency, Row, ScenarioResult, median
from peat_sync.bench.servers import BenchError, Server, get_status, peat_server
from peat_sync.bench.sizes import SCENARIO_SUMMARIES, Sizes
from peat_sync.bench.workers import (
    Settings,
    SubscriberSettings,
    Worker,
    WriterSettings,
    workers,
)

# Clients of a paced PutDocument load, all in one writer process. One grpc.aio client keeps
# the load lean, so that it leaves the server its core (18 client processes on 2 cores
# measured their own contention); HTTP/2 carries the calls in flight side by side.
PACED_CLIENTS = 1
# A paced load is taken when the server takes at least this fraction of the rate offered.
KEPT_UP = 0.95


@dataclass(slots=True)
class Bench:
    """Options of the run, where progress goes, and the server each scenario measures."""

    sizes: Sizes
    workdir: Path
    progress: Callable[[str], None]
    addr: str | None = None  # a running deployment's grpcio target
    results: dict[str, ScenarioResult] = field(default_factory=dict)
    _servers: int = 0
    _runs: int = 0

    @contextmanager
    def server(self, *flags: str) -> Iterator[Server]:
        """A fresh `peat-sync serve` with `flags`, or the deployment at --addr (whose own
        configuration applies: `flags` are then not used)."""
        if self.addr is not None:
            get_status(self.addr)
            yield Server(self.addr, None)
            return
        self._servers += 1
        with peat_server(self.workdir / f"data-{self._servers}", *flags) as server:
            yield server

    def prefix(self) -> str:
        """A doc_id prefix that no other run of this bench used."""
        self._runs += 1
        return f"{int(time.time())}-{self._runs}-"

    def puts(self, server: Server, count: int, clients: int, rate: float = 0.0) -> WriterSettings:
        """PutDocument writers of `count` documents of their own (`prefix`), as fast as they
        go or at `rate`."""
        return WriterSettings(
            kind="put",
            target=server.target,
            count=count,
            clients=clients,
            rate=rate,
            prefix=self.prefix(),
        )

    def writes(self, server: Server, count: int, clients: int, batch: int) -> WriterSettings:
        """WriteDocuments writers of `count` documents of their own (`prefix`), in batches of
        `batch`, as fast as they go."""
        return WriterSettings(
            kind="write",
            target=server.target,
            count=count,
            clients=clients,
            batch=batch,
            prefix=self.prefix(),
        )

    def each_run(self, what: str) -> Iterator[int]:
        """The runs of a figure, numbered from 0, each announced as progress."""
        runs = self.sizes.runs
        for run in range(runs):
            if runs > 1:
                self.progress(f"{what}, run {run + 1} of {runs}")
            else:
                self.progress(what)
            yield run


def new_result(key: str, title: str) -> ScenarioResult:
    """The empty result of scenario `key`, numbered as the scenarios run."""
    return ScenarioResult(key, list(SCENARIO_SUMMARIES).index(key) + 1, title)


def head(server: Server) -> tuple[int, str]:
    status = get_status(server.target)
    return int(status.head_sequence), str(status.epoch)


# ---------------------------------------------------------------------------------------------
# What workers report


@dataclass(slots=True)
class Received:
    """What a set of subscriber streams received in one window, merged."""

    events: int = 0
    data: int = 0
    types: dict[int, int] = field(default_factory=dict)
    controls: list[dict[str, Any]] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)
    start_ns: int | None = None
    reached_ns: int = 0
    stream_data: list[int] = field(default_factory=list)  # data events of each stream

    def add(self, report: dict[str, Any]) -> None:
        self.events += report["events"]
        self.data += report["data"]
        self.stream_data += report["stream_data"]
        for change_type, count in report["types"].items():
            self.types[int(change_type)] = self.types.get(int(change_type), 0) + count
        self.controls += report["controls"]
        self.latency.merge(Histogram.from_json(report["latency"]))
        if report["start_ns"] and (self.start_ns is None or report["start_ns"] < self.start_ns):
            self.start_ns = report["start_ns"]
        self.reached_ns = max(self.reached_ns, report["reached_ns"] or 0)


@dataclass(slots=True)
class Written:
    count: int
    start_ns: int
    end_ns: int
    last_sequence: int
    acks: Histogram

    @property
    def rate(self) -> float:
        return self.count / max(self.end_ns - self.start_ns, 1) * 1e9

    @classmethod
    def merge(cls, reports: Sequence[dict[str, Any]]) -> Written:
        """The figures of writers that ran together."""
        acks = Histogram()
        for report in reports:
            acks.merge(Histogram.from_json(report["acks"]))
        return cls(
            count=sum(r["count"] for r in reports),
            start_ns=min(r["start_ns"] for r in reports),
            end_ns=max(r["end_ns"] for r in reports),
            last_sequence=max(r["last_sequence"] for r in reports),
            acks=acks,
        )


# One run's figures: events (or calls) per second, latency, and server CPU us per event.
Measured = tuple[float, Latency | None, float | None]


# ---------------------------------------------------------------------------------------------
# Workers, started and read


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` whole shares as equal as can be."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def spread(total: int, per_process: int) -> list[int]:
    """`total` streams or clients over as few processes as hold `per_process` each, evenly."""
    return split(total, max(1, math.ceil(total / per_process)))


def following(server: Server) -> SubscriberSettings:
    """Subscribers that follow the bench's documents live, and time each delivery."""
    return SubscriberSettings(target=server.target, collections=(COLLECTION,), latency=True)


def start_subscribers(
    settings: SubscriberSettings, total: int, per_process: int, name: str
) -> list[Worker]:
    """Subscriber processes with `total` streams between them, each stream opened (the
    server has attached it) when this returns."""
    shares = spread(total, per_process)
    return start_workers([replace(settings, streams=share) for share in shares], name)


def start_workers(settings: Sequence[Settings], name: str) -> list[Worker]:
    """A worker for each of `settings`, each ready when this returns; if one fails (or
    Ctrl-C comes), those already started are stopped."""
    started: list[Worker] = []
    try:
        for i, one in enumerate(settings):
            started.append(Worker(one, name=f"{name} {i + 1}" if len(settings) > 1 else name))
        for worker in started:
            worker.expect("ready")
    except BaseException:
        for worker in started:
            worker.stop()
        raise
    return started


def collect(subscribers: Sequence[Worker], until: int, command: str = "until") -> Received:
    """Ask every subscriber to report once all its streams reach sequence `until` (or, with
    `command` "control", have had a control event of type `until`)."""
    for worker in subscribers:
        worker.send(f"{command} {until}")
    received = Received()
    for worker in subscribers:
        received.add(worker.expect("report")["report"])
    return received


def read_once(settings: SubscriberSettings) -> Received:
    """One subscriber process, one stream, that reads until its `until` (or `events`) and
    exits."""
    worker = Worker(replace(settings, once=True), name="subscriber")
    with workers(worker):
        worker.expect("ready")
        received = Received()
        received.add(worker.expect("report")["report"])
        return received


def timed_read(reader: SubscriberSettings, server: Server) -> Measured:
    """One subscriber that reads as fast as it can, with `read_once`: its events/s, from its
    request to its last event, and the server's CPU per event."""
    with cpu_of(server) as cpu:
        received = read_once(reader)
    return rate_of(received, received.events), None, per_event_us(cpu, received.events)


def start_writers(settings: WriterSettings) -> list[Worker]:
    """Writer processes with `settings.clients` clients between them, connected and waiting
    for go (`writer_shares`)."""
    return start_workers(writer_shares(settings), f"{settings.kind} writer")


def writer_shares(settings: WriterSettings, per_process: int = 16) -> list[WriterSettings]:
    """The writer processes of `settings`: each with its share of the clients, of `count`
    and of `rate`, and numbers of its own for its documents; each waits for go."""
    shares = spread(settings.clients, per_process)
    counts = split(settings.count, len(shares))
    return [
        replace(
            settings,
            clients=share,
            count=counts[i],
            rate=settings.rate / len(shares),
            first=i * 10**9,
            wait_go=True,
        )
        for i, share in enumerate(shares)
    ]


def finish_writers(writers: Sequence[Worker]) -> Written:
    """Start the writers at once and wait for them to finish; their figures merged."""
    for worker in writers:
        worker.send("go")
    return Written.merge([worker.expect("report")["report"] for worker in writers])


def write(settings: WriterSettings) -> Written:
    writers = start_writers(settings)
    with workers(*writers):
        return finish_writers(writers)


def preload(bench: Bench, server: Server, count: int) -> Written:
    """Write `count` documents with WriteDocuments, as fast as the server takes them."""
    bench.progress(f"loading {count:,} documents with WriteDocuments")
    sizes = bench.sizes
    return write(bench.writes(server, count, sizes.write_clients, sizes.write_batch))


def paced(
    bench: Bench, server: Server, seconds: float, rate: float | None = None
) -> WriterSettings:
    """A PutDocument writer at `rate` (by default the run's), for `seconds`."""
    rate = bench.sizes.rate if rate is None else rate
    return bench.puts(server, max(1, round(rate * seconds)), PACED_CLIENTS, rate)


@dataclass(slots=True)
class Paced:
    """A paced PutDocument load delivered to subscribers: the rate asked and achieved, the
    put-to-delivery latency, and the server's CPU."""

    asked: float
    achieved: float | None
    latency: Latency | None
    cpu_us: float | None  # server CPU per put, its deliveries included
    busy: float | None  # server CPU as % of one core, from the first put to the last delivery

    @property
    def kept_up(self) -> bool:
        return self.achieved is not None and self.achieved >= KEPT_UP * self.asked

    @classmethod
    def median_of(cls, runs: Sequence[Paced]) -> Paced:
        """Each figure the median of the runs' (of one rate)."""
        return cls(
            runs[0].asked,
            median(run.achieved for run in runs),
            Latency.median_of([run.latency for run in runs]),
            median(run.cpu_us for run in runs),
            median(run.busy for run in runs),
        )

    def figures(self) -> dict[str, float | None]:
        latency = self.latency
        return {
            "rate": self.asked,
            "writer_rate": self.achieved,
            "p50_ms": latency.p50 if latency else None,
            "p99_ms": latency.p99 if latency else None,
            "max_ms": latency.max if latency else None,
            "server_cpu_us_per_put": self.cpu_us,
            "server_busy_percent": self.busy,
        }


def paced_run(
    bench: Bench, server: Server, subscribers: Sequence[Worker], rate: float, seconds: float
) -> Paced:
    """One writer process at `rate` puts/s for `seconds`, each put delivered to every stream
    of `subscribers`."""
    writers = start_writers(paced(bench, server, seconds, rate))
    with workers(*writers), cpu_of(server) as cpu:
        written = finish_writers(writers)
        received = collect(subscribers, written.last_sequence)
    return Paced(
        rate,
        written.rate,
        Latency.of(received.latency),
        per_event_us(cpu, written.count),
        busy_percent(cpu, received.reached_ns - written.start_ns),
    )


# ---------------------------------------------------------------------------------------------
# Figures


@contextmanager
def cpu_of(server: Server) -> Iterator[list[float | None]]:
    """The server's CPU seconds over the block, in the list yielded (None via --addr)."""
    spent: list[float | None] = []
    before = server.cpu()
    yield spent
    after = server.cpu()
    spent.append(None if before is None or after is None else after - before)


def per_event_us(cpu: list[float | None], events: int) -> float | None:
    return None if cpu[0] is None or not events else cpu[0] / events * 1e6


def busy_percent(cpu: list[float | None], nanoseconds: int) -> float | None:
    """The server's CPU time as a percentage of the wall time `nanoseconds`."""
    return None if cpu[0] is None else cpu[0] / (nanoseconds / 1e9) * 100


def rate_of(received: Received, count: int, start_ns: int | None = None) -> float:
    start = received.start_ns if start_ns is None else start_ns
    if start is None or received.reached_ns <= start:
        raise BenchError("a subscriber reported no receive times")
    return count / (received.reached_ns - start) * 1e9


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def paired_rows(
    runs: Sequence[tuple[Measured, Measured]],
    base_label: str,
    label: str,
    base: Server,
    server: Server,
) -> list[Row]:
    """Rows of the baseline and of peat-sync from runs measured in pairs, one after the
    other, so that a machine busy for a while slows both: each figure is the median of its
    runs, the ratio the median of the pairs' ratios."""
    rows = []
    for side, row_label, measured in ((0, base_label, base), (1, label, server)):
        rows.append(
            Row(
                row_label,
                median([run[side][0] for run in runs]),
                Latency.median_of([run[side][1] for run in runs]),
                measured.rss(),
                1.0 if side == 0 else median([mine[0] / theirs[0] for theirs, mine in runs]),
                median([run[side][2] for run in runs]),
            )
        )
    return rows


def shortfall(asked: float, achieved: float | None) -> list[str]:
    """A note when the server took fewer writes per second than the writer offered."""
    if achieved is None or achieved >= KEPT_UP * asked:
        return []
    return [
        f"the server did not keep up: it took {achieved:,.0f} puts/s of the {asked:,.0f} offered,"
        " so calls queued, and the latency (and memory) figures include that queue"
    ]


def resume_kind(controls: list[dict[str, Any]]) -> str:
    """How a resumed stream got back what it missed, from its control events."""
    for control in controls:
        if control["type"] == RESYNC:
            return f"RESYNC ({RESYNC_REASON_NAMES.get(control['reason'], control['reason'])})"
    types = [control["type"] for control in controls]
    if CATCH_UP_BEGIN in types:
        begin = next(c for c in controls if c["type"] == CATCH_UP_BEGIN)["sequence"]
        end = next((c["sequence"] for c in controls if c["type"] == CATCH_UP_END), None)
        return f"catch-up (CATCH_UP_BEGIN at {begin}, CATCH_UP_END at {end})"
    others = sorted({CHANGE_TYPE_NAMES.get(t, str(t)) for t in types if t != HEARTBEAT})
    return "exact replay: no catch-up, no RESYNC" + (f" ({', '.join(others)})" if others else "")
