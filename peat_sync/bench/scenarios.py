"""The scenarios of `peat-sync bench`, one function each, returning its results.

Each scenario runs against a fresh `peat-sync serve` on a temporary data dir (or against the
deployment given with --addr), with its load in worker processes (peat_sync.bench.workers).
Throughput figures are the median of --runs runs; the baseline that a figure is divided by
is measured in the same scenario, on the bare grpclib server (peat_sync.bench.baseline).

Every document a writer sends carries the writer's clock, so each subscriber measures the
latency from the put to its delivery; doc_ids are unique within a run, so a catch-up (which
skips the intermediate states of a document) still delivers every event.
"""

from __future__ import annotations

import math
import signal
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peat_sync.bench.messages import (
    CATCH_UP_BEGIN,
    CATCH_UP_END,
    CHANGE_TYPE_NAMES,
    COLLECTION,
    HEARTBEAT,
    RESYNC,
    RESYNC_REASON_NAMES,
)
from peat_sync.bench.report import Histogram, Latency, Row, ScenarioResult, fmt, median
from peat_sync.bench.servers import (
    BenchError,
    Server,
    baseline_server,
    get_status,
    peat_server,
)
from peat_sync.bench.sizes import Sizes
from peat_sync.bench.workers import Worker, workers

T = TypeVar("T")

# ---------------------------------------------------------------------------------------------
# The context every scenario runs in


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
            yield Server(self.addr, None, "deployment")
            return
        self._servers += 1
        with peat_server(self.workdir / f"data-{self._servers}", *flags) as server:
            yield server

    def prefix(self) -> str:
        """A doc_id prefix that no other run of this bench used."""
        self._runs += 1
        return f"{int(time.time())}-{self._runs}-"


def head(server: Server) -> tuple[int, str]:
    status = get_status(server.target)
    return int(status.head_sequence), str(status.epoch)


# ---------------------------------------------------------------------------------------------
# Workers, started and read


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


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` whole shares as equal as can be."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def spread(total: int, per_process: int) -> list[int]:
    """`total` streams or clients over as few processes as hold `per_process` each, evenly."""
    return split(total, max(1, math.ceil(total / per_process)))


def start_subscribers(
    server: Server, total: int, per_process: int, *options: str, name: str
) -> list[Worker]:
    """Subscriber processes with `total` streams between them, each stream opened (the
    server has attached it) when this returns."""
    argv = [
        ("subscribe", "--target", server.target, "--streams", str(streams), *options)
        for streams in spread(total, per_process)
    ]
    return _start(argv, name)


def _start(argv: Sequence[Sequence[str]], name: str) -> list[Worker]:
    """A worker for each of `argv`, each ready when this returns; if one fails (or Ctrl-C
    comes), those already started are stopped."""
    started: list[Worker] = []
    try:
        for i, args in enumerate(argv):
            started.append(Worker(*args, name=f"{name} {i + 1}" if len(argv) > 1 else name))
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


def read_once(server: Server, *options: str, name: str) -> Received:
    """One subscriber process, one stream, that reads until its --until/--events and exits."""
    worker = Worker("subscribe", "--target", server.target, "--once", *options, name=name)
    with workers(worker):
        worker.expect("ready")
        received = Received()
        received.add(worker.expect("report")["report"])
        return received


def start_writers(
    server: Server, kind: str, clients: int, *options: str, per_process: int = 16
) -> list[Worker]:
    """Writer processes with `clients` clients between them, connected and waiting for go;
    each writes its share of --count (documents numbered apart) at its share of --rate."""
    shares = spread(clients, per_process)
    argv = [
        (
            kind,
            *("--target", server.target, "--clients", str(share), "--wait-go"),
            *_share(options, i, len(shares)),
        )
        for i, share in enumerate(shares)
    ]
    return _start(argv, f"{kind} writer")


def _share(options: Sequence[str], index: int, count: int) -> list[str]:
    """Writer process `index` of `count`: its part of --count and --rate, and numbers of its
    own for its documents."""
    shared = list(options)
    if "--count" in shared:
        at = shared.index("--count") + 1
        shared[at] = str(split(int(shared[at]), count)[index])
    if "--rate" in shared:
        at = shared.index("--rate") + 1
        shared[at] = str(float(shared[at]) / count)
    return [*shared, "--first", str(index * 10**9)]


def finish_writers(writers: Sequence[Worker]) -> Written:
    """Start the writers at once and wait for them to finish; their figures merged."""
    for worker in writers:
        worker.send("go")
    return Written.merge([worker.expect("report")["report"] for worker in writers])


def write(server: Server, kind: str, clients: int, *options: str) -> Written:
    writers = start_writers(server, kind, clients, *options)
    with workers(*writers):
        return finish_writers(writers)


def preload(bench: Bench, server: Server, count: int) -> Written:
    """Write `count` documents with WriteDocuments, as fast as the server takes them."""
    bench.progress(f"loading {count:,} documents with WriteDocuments")
    sizes = bench.sizes
    return write(
        server,
        "write",
        sizes.write_clients,
        *("--count", str(count), "--batch", str(sizes.write_batch), "--prefix", bench.prefix()),
    )


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


def _controls_text(controls: Sequence[dict[str, Any]]) -> str:
    return (
        ", ".join(
            f"{CHANGE_TYPE_NAMES.get(c['type'], c['type'])}@{c['sequence']}" for c in controls[:10]
        )
        or "none"
    )


def _type_counts(received: Received) -> str:
    return ", ".join(
        f"{CHANGE_TYPE_NAMES.get(t, str(t))} {n:,}" for t, n in sorted(received.types.items())
    )


def rate_of(received: Received, count: int, start_ns: int | None = None) -> float:
    start = received.start_ns if start_ns is None else start_ns
    if start is None or received.reached_ns <= start:
        raise BenchError("a subscriber reported no receive times")
    return count / (received.reached_ns - start) * 1e9


def _runs(bench: Bench, what: str) -> Iterator[int]:
    runs = bench.sizes.runs
    for run in range(runs):
        if runs > 1:
            bench.progress(f"{what}, run {run + 1} of {runs}")
        else:
            bench.progress(what)
        yield run


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


# ---------------------------------------------------------------------------------------------
# 1. Put throughput


def put_throughput(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    clients, count = sizes.put_clients, sizes.put_count
    result = ScenarioResult(
        "put", 1, f"Put throughput: unary PutDocument calls from {clients} concurrent clients"
    )

    def measure(server: Server) -> tuple[float, Latency | None, float | None]:
        options = ("--count", str(count), "--prefix", bench.prefix())
        writers = start_writers(server, "put", clients, *options)
        with workers(*writers), cpu_of(server) as cpu:
            written = finish_writers(writers)
        return written.rate, Latency.of(written.acks), per_event_us(cpu, written.count)

    with baseline_server() as base, bench.server() as server:
        runs = [
            (measure(base), measure(server))
            for _ in _runs(bench, f"{count:,} calls to the bare grpclib echo, then PutDocument")
        ]
        rows = _paired_rows(runs, "bare grpclib unary echo", "PutDocument", base, server)
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


def _paired_rows(
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


# ---------------------------------------------------------------------------------------------
# 2. Subscribe throughput, one subscriber


def subscribe_throughput(bench: Bench) -> ScenarioResult:
    events = bench.sizes.stream_events
    result = ScenarioResult(
        "subscribe",
        2,
        f"Subscribe throughput, 1 subscriber: {events:,} events from the replay log",
    )

    def measure(server: Server, *options: str) -> Measured:
        with cpu_of(server) as cpu:
            received = read_once(server, *options, name="subscriber")
        return (
            rate_of(received, received.events),
            None,
            per_event_us(cpu, received.events),
        )

    with baseline_server() as base, bench.server() as server:
        preload(bench, server, events)
        last, _ = head(server)
        since = ("--since", str(last - events), "--until", str(last))
        runs = [
            (measure(base, "--events", str(events)), measure(server, *since))
            for _ in _runs(bench, f"{events:,} events from the bare grpclib stream, then Subscribe")
        ]
        rows = _paired_rows(runs, "bare grpclib stream", "Subscribe", base, server)
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


# ---------------------------------------------------------------------------------------------
# 3. Fan-out


# The fan-out's load: WriteDocuments calls of this many documents, from this many clients,
# as fast as they go; batches small enough that events flow rather than arrive in bursts.
FANOUT_BATCH = 100
FANOUT_WRITERS = 2


def fanout(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    result = ScenarioResult(
        "fanout",
        3,
        f"Fan-out: events written with WriteDocuments (batches of {FANOUT_BATCH}) as fast as"
        " they go, delivered live to every subscriber",
    )
    points = []
    with bench.server() as server:
        for count in sizes.fanout:
            events = min(sizes.fanout_events, sizes.fanout_deliveries // count)
            bench.progress(f"{count} subscribers: starting them")
            subscribers = start_subscribers(
                server,
                count,
                sizes.streams_per_process,
                *("--collection", COLLECTION, "--latency"),
                name="subscriber process",
            )
            rates, latencies, cpus = [], [], []
            with workers(*subscribers):
                what = f"{count} subscribers: {events:,} events, {events * count:,} deliveries"
                for _ in _runs(bench, what):
                    writers = start_writers(
                        server,
                        "write",
                        FANOUT_WRITERS,
                        *("--count", str(events), "--batch", str(FANOUT_BATCH)),
                        *("--prefix", bench.prefix()),
                    )
                    with workers(*writers), cpu_of(server) as cpu:
                        written = finish_writers(writers)
                        received = collect(subscribers, written.last_sequence)
                    deliveries = events * count
                    short = [n for n in received.stream_data if n < events]
                    if short:
                        raise BenchError(
                            f"{len(short)} of {count} subscribers received fewer than the"
                            f" {events:,} events written, up to sequence"
                            f" {written.last_sequence}: {sorted(short)[:10]} (change types"
                            f" received: {_type_counts(received)}; controls:"
                            f" {_controls_text(received.controls)}; server lags:"
                            f" {get_status(server.target).lag_events})"
                        )
                    rates.append(rate_of(received, deliveries, written.start_ns))
                    latencies.append(Latency.of(received.latency))
                    cpus.append(per_event_us(cpu, deliveries))
            rate, latency, cpu_us = median(rates), Latency.median_of(latencies), median(cpus)
            label = f"{count} subscriber{'s' if count > 1 else ''}"
            result.rows.append(Row(label, rate, latency, server.rss(), None, cpu_us))
            points.append(
                {
                    "subscribers": count,
                    "events": events,
                    "events_per_s": rate,
                    "p50_ms": latency.p50 if latency else None,
                    "p99_ms": latency.p99 if latency else None,
                    "max_ms": latency.max if latency else None,
                    "cpu_us_per_event": cpu_us,
                }
            )
    first, most = points[0], points[-1]
    cpu_ratio = _ratio(most["cpu_us_per_event"], first["cpu_us_per_event"])
    result.figures.update(points=points, max_subscribers=most["subscribers"], cpu_ratio=cpu_ratio)
    result.notes.append(
        "per s: events delivered per second, all subscribers together, from the first write"
        " to the last delivery; CPU us/ev: server CPU over that time / events delivered;"
        f" {sizes.streams_per_process} subscribers per process at most, each on its own"
        " connection"
    )
    return result


# ---------------------------------------------------------------------------------------------
# 4. Latency at a fixed rate


def _paced_options(bench: Bench, seconds: float) -> list[str]:
    rate = bench.sizes.rate
    count = round(rate * seconds)
    return ["--rate", str(rate), "--count", str(count), "--prefix", bench.prefix()]


def latency(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, rate = sizes.latency_subscribers, sizes.rate
    result = ScenarioResult(
        "latency",
        4,
        f"Put-to-delivery latency: {rate:,} PutDocument/s, {count} subscribers",
    )
    with bench.server() as server:
        bench.progress(f"starting {count} subscriber processes")
        subscribers = start_subscribers(
            server, count, 1, *("--collection", COLLECTION, "--latency"), name="subscriber"
        )
        rates, latencies, cpus, busy = [], [], [], []
        with workers(*subscribers):
            for _ in _runs(bench, f"{rate:,} events/s for {sizes.latency_seconds:g} s"):
                writers = start_writers(
                    server, "put", 8, *_paced_options(bench, sizes.latency_seconds)
                )
                with workers(*writers), cpu_of(server) as cpu:
                    written = finish_writers(writers)
                    received = collect(subscribers, written.last_sequence)
                rates.append(written.rate)
                latencies.append(Latency.of(received.latency))
                cpus.append(per_event_us(cpu, written.count))
                busy.append(_busy(cpu, received.reached_ns - written.start_ns))
        measured = Latency.median_of(latencies)
        label = f"{count} subscribers"
        result.rows.append(Row(label, median(rates), measured, server.rss(), None, median(cpus)))
    result.figures.update(
        subscribers=count,
        rate=rate,
        writer_rate=median(rates),
        p50_ms=measured.p50 if measured else None,
        p99_ms=measured.p99 if measured else None,
        max_ms=measured.max if measured else None,
        server_cpu_us_per_put=median(cpus),
        server_busy_percent=median(busy),
    )
    result.notes.append(
        f"per s: puts per second the writer achieved (asked: {rate:,}); latency: from the"
        " put's send to each subscriber's receipt, over every event and subscriber; CPU us/ev:"
        f" server CPU per put, its {count} deliveries included; the server was busy"
        f" {fmt(median(busy), '.0f', '%')} of one core"
    )
    result.notes += _shortfall(rate, median(rates))
    return result


def _shortfall(asked: int, achieved: float | None) -> list[str]:
    """A note when the server took fewer writes per second than the writer offered."""
    if achieved is None or achieved >= 0.95 * asked:
        return []
    return [
        f"the server did not keep up: it took {achieved:,.0f} puts/s of the {asked:,} offered,"
        " so calls queued, and the latency (and memory) figures include that queue"
    ]


def _busy(cpu: list[float | None], nanoseconds: int) -> float | None:
    """The server's CPU time as a percentage of the wall time `nanoseconds`."""
    return None if cpu[0] is None else cpu[0] / (nanoseconds / 1e9) * 100


# ---------------------------------------------------------------------------------------------
# 5. A stalled subscriber


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


def _resume_kind(controls: list[dict[str, Any]]) -> str:
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
    readers, rate = sizes.latency_subscribers - 1, sizes.rate
    result = ScenarioResult(
        "stalled",
        5,
        f"Slow-subscriber isolation: {rate:,} PutDocument/s, {readers + 1} subscribers; one is"
        f" stopped (SIGSTOP) for {sizes.stall_seconds:g} s, then resumed (SIGCONT)",
    )
    log = sizes.stall_replay_log
    with bench.server("--replay-log-size", str(log)) as server:
        # The replay log full and the store past its caches first: what grows after that
        # grows with the events produced.
        preload(bench, server, PREFILL * log)
        bench.progress(f"starting {readers + 1} subscriber processes")
        options = ("--collection", COLLECTION, "--latency")
        subscribe = ("subscribe", "--target", server.target, *options)
        subscribers = _start(
            [(*subscribe, "--window", str(HTTP2_WINDOW)), *[subscribe] * readers], "subscriber"
        )
        stalled_one, others = subscribers[0], subscribers[1:]
        total = sizes.stall_warmup + sizes.stall_seconds + sizes.stall_after
        with workers(*subscribers):
            writers = start_writers(server, "put", 8, *_paced_options(bench, total))
            with workers(*writers):
                for worker in writers:
                    worker.send("go")
                bench.progress(f"all {readers + 1} reading for {sizes.stall_warmup:g} s")
                start, _ = head(server)
                reading = _sample_rss(server, sizes.stall_warmup, start)
                stall_start, _ = head(server)
                before = collect(others, stall_start)
                stalled_one.signal(signal.SIGSTOP)
                bench.progress(f"subscriber 1 stopped for {sizes.stall_seconds:g} s")
                stopped = _sample_rss(server, sizes.stall_seconds, stall_start)
                stall_end, _ = head(server)
                during = collect(others, stall_end)
                stalled_one.signal(signal.SIGCONT)
                resumed_ns = time.monotonic_ns()
                bench.progress("subscriber 1 resumed")
                written = Written.merge([w.expect("report")["report"] for w in writers])
            collect(others, written.last_sequence)
            back = collect([stalled_one], written.last_sequence)
            if _catching_up(back.controls):  # it is at the head: the catch-up ends next
                ending = collect([stalled_one], CATCH_UP_END, "control")
                back.controls += ending.controls
                back.data += ending.data
        lag_events = int(get_status(server.target).lag_events)
    scenario_4 = bench.results.get("latency")
    reference = scenario_4.figures.get("p99_ms") if scenario_4 else None
    stall = Latency.of(during.latency)
    p99_ratio = _ratio(stall.p99 if stall else None, reference)
    growth, control = _rss_growth(stopped), _rss_growth(reading)
    # What the stopped subscriber adds: the RSS may grow while all read too (a saturated
    # server queues calls; caches fill), and that is no cost of the stall.
    stall_growth = None if growth is None or control is None else growth - control
    kind = _resume_kind(back.controls)
    back_seconds = _recovered_ns(back, resumed_ns) / 1e9
    result.rows += [
        Row(f"{readers} others, all reading", written.rate, Latency.of(before.latency)),
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
        writer_rate=written.rate,
    )
    result.notes += [
        f"per s: PutDocument/s the writer achieved (asked: {rate:,}); / base: the others' p99"
        f" while one is stopped / scenario 4's p99 ({fmt(reference, '.2f', ' ms')})",
        f"the stopped subscriber, once resumed: {kind}, over {back_seconds:.2f} s; it"
        f" received {back.data:,} events in all (lags counted by the server: {lag_events})",
        f"server RSS growth per 1,000 events produced: {fmt(growth, '.1f', ' KiB')} while one"
        f" is stopped, {fmt(control, '.1f', ' KiB')} while all read; the stall's own:"
        f" {fmt(stall_growth, '.1f', ' KiB')}",
        "server RSS while one is stopped (MiB at events produced since): "
        + ", ".join(_rss_text(e, r) for e, r in _thinned(stopped, PRINTED_SAMPLES)),
    ]
    result.notes += _shortfall(rate, written.rate)
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


# ---------------------------------------------------------------------------------------------
# 6. Replay


def replay(bench: Bench) -> ScenarioResult:
    events = bench.sizes.replay_events
    result = ScenarioResult(
        "replay", 6, f"Replay: a subscriber reconnects {events:,} events behind and catches up"
    )
    with bench.server() as server:
        preload(bench, server, events)
        last, epoch = head(server)
        since = ("--since", str(last - events), "--epoch", epoch, "--until", str(last))
        for label, options in (("Subscribe", ()), ("SubscribeBatched", ("--batched",))):
            rates, cpus, kinds = [], [], set()
            for _ in _runs(bench, f"{label}: {events:,} events behind"):
                with cpu_of(server) as cpu:
                    received = read_once(server, *since, *options, name="subscriber")
                rates.append(rate_of(received, received.data))
                cpus.append(per_event_us(cpu, received.data))
                kinds.add(_resume_kind(received.controls))
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


# ---------------------------------------------------------------------------------------------
# 7. Idle subscribers


# How long the idle streams are watched for the server's CPU.
IDLE_SECONDS = 2.0


def idle(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count = sizes.idle_subscribers
    result = ScenarioResult("idle", 7, f"Memory: server RSS with {count:,} idle subscribers")
    with bench.server() as server:
        before = server.rss()
        bench.progress(f"opening {count:,} idle streams from {sizes.idle_processes} processes")
        per_process = math.ceil(count / sizes.idle_processes)
        subscribers = start_subscribers(
            server, count, per_process, "--collection", "bench-idle", name="idle subscribers"
        )
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
    idle_cpu = _busy(cpu, int(IDLE_SECONDS * 1e9))
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


# ---------------------------------------------------------------------------------------------
# 8. The batched RPCs


def batched(bench: Bench) -> ScenarioResult:
    sizes = bench.sizes
    count, batch, clients = sizes.write_count, sizes.write_batch, sizes.write_clients
    result = ScenarioResult(
        "batched",
        8,
        f"Batched RPCs: WriteDocuments ({count:,} documents in batches of {batch:,} from"
        f" {clients} clients), then SubscribeBatched replays them",
    )

    def replay(server: Server, *options: str) -> Measured:
        with cpu_of(server) as cpu:
            received = read_once(server, "--batched", *options, name="subscriber")
        return rate_of(received, received.events), None, per_event_us(cpu, received.events)

    writes: list[Measured] = []
    replays: list[tuple[Measured, Measured]] = []
    with baseline_server() as base, bench.server() as server:
        for _ in _runs(bench, f"WriteDocuments {count:,}, then SubscribeBatched and baseline"):
            options = ("--count", str(count), "--batch", str(batch), "--prefix", bench.prefix())
            with cpu_of(server) as cpu:
                written = write(server, "write", clients, *options)
            writes.append((written.rate, Latency.of(written.acks), per_event_us(cpu, count)))
            last = written.last_sequence
            replays.append(
                (
                    replay(base, "--events", str(count)),
                    replay(server, "--since", str(last - count), "--until", str(last)),
                )
            )
        write_row = Row(
            "WriteDocuments (docs/s)",
            median([rate for rate, _, _ in writes]),
            Latency.median_of([latency for _, latency, _ in writes]),
            server.rss(),
            None,
            median([cpu for _, _, cpu in writes]),
        )
        rows = _paired_rows(
            replays, "bare grpclib, 500-event batches", "SubscribeBatched replay", base, server
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


# ---------------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[Bench], ScenarioResult]] = {
    "put": put_throughput,
    "subscribe": subscribe_throughput,
    "fanout": fanout,
    "latency": latency,
    "stalled": stalled,
    "replay": replay,
    "idle": idle,
    "batched": batched,
}
