"""The bench's figures: latency histograms and percentiles, the tables printed per scenario,
the targets (peat_sync.bench.targets) with the figure measured for each, the JSON file and
the plot.

matplotlib is imported only by `plot`, so the bench runs without it unless --plot is given.
"""

from __future__ import annotations

import importlib
import json
import math
import statistics
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from peat_sync.bench.targets import TARGETS

# Histogram buckets are 1% wide: bucket b holds values in [GROWTH**b, GROWTH**(b+1)).
GROWTH = 1.01
_LOG_GROWTH = math.log(GROWTH)


class Histogram:
    """Counts of non-negative integer values (latencies in ns) in buckets 1% wide, so that the
    workers' histograms merge exactly and a percentile is off by at most 1%. The largest
    value is kept exactly."""

    __slots__ = ("buckets", "count", "max")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.max = 0

    def add(self, value: int) -> None:
        bucket = int(math.log(value) / _LOG_GROWTH) if value > 1 else 0
        self.buckets[bucket] = self.buckets.get(bucket, 0) + 1
        self.count += 1
        if value > self.max:
            self.max = value

    def merge(self, other: Histogram) -> Histogram:
        for bucket, count in other.buckets.items():
            self.buckets[bucket] = self.buckets.get(bucket, 0) + count
        self.count += other.count
        self.max = max(self.max, other.max)
        return self

    def percentile(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100, nearest rank): a value that at least q% of the
        values are at most, to within 1%; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q / 100 * self.count))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                # The middle of the bucket, but never above the largest value seen.
                return min(float(GROWTH ** (bucket + 0.5)), float(self.max))
        raise AssertionError("unreachable: the counts add up to self.count")

    def to_json(self) -> dict[str, Any]:
        return {"buckets": {str(b): c for b, c in self.buckets.items()}, "max": self.max}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Histogram:
        histogram = cls()
        histogram.buckets = {int(b): int(c) for b, c in data["buckets"].items()}
        histogram.count = sum(histogram.buckets.values())
        histogram.max = int(data["max"])
        return histogram


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values` (0 < q <= 100), nearest rank."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """`value` in format `spec` followed by `unit`, or "n/a" when it is not known."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are known, None when none is."""
    known = [value for value in values if value is not None]
    return statistics.median(known) if known else None


@dataclass(slots=True)
class Latency:
    """Put-to-delivery (or put-to-acknowledgement) latency, in milliseconds."""

    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, histogram: Histogram) -> Latency | None:
        p50, p99 = histogram.percentile(50), histogram.percentile(99)
        if p50 is None or p99 is None:
            return None
        return cls(p50 / 1e6, p99 / 1e6, histogram.max / 1e6)

    @classmethod
    def median_of(cls, runs: Sequence[Latency | None]) -> Latency | None:
        known = [run for run in runs if run is not None]
        if not known:
            return None
        return cls(
            statistics.median(r.p50 for r in known),
            statistics.median(r.p99 for r in known),
            statistics.median(r.max for r in known),
        )


@dataclass(slots=True)
class Row:
    """One line of a scenario's table. `rate` is events (or documents, or calls) per second;
    `ratio` is the rate divided by the baseline's, where a target asks for one."""

    label: str
    rate: float | None = None
    latency: Latency | None = None
    rss: int | None = None
    ratio: float | None = None
    cpu_us: float | None = None  # server CPU microseconds per event
    note: str = ""


@dataclass(slots=True)
class ScenarioResult:
    key: str
    number: int
    title: str
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Target:
    """A target of peat_sync.bench.targets with the figure measured in this run, compared with
    its `goal` (at least, or at most)."""

    key: str
    text: str
    measured: float | None
    goal: float
    at_least: bool
    unit: str = ""

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured >= self.goal if self.at_least else self.measured <= self.goal


def targets(results: dict[str, ScenarioResult]) -> list[Target]:
    """The targets whose scenarios ran, each with the figure measured."""
    found = []
    for spec in TARGETS:
        if spec.scenario not in results:
            continue
        figures = results[spec.scenario].figures
        value = figures.get(spec.figure)
        measured = None if value is None else float(value)
        text = spec.text(figures)
        goal = spec.goal_in(figures)
        found.append(Target(spec.key, text, measured, goal, spec.at_least, spec.unit))
    return found


# ---------------------------------------------------------------------------------------------
# Text


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.1f} MiB"


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, the others right."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)]


# Titles and notes are wrapped to this width; tables are as wide as they need.
NOTE_WIDTH = 100
ROW_HEADER = ("", "per s", "p50 ms", "p99 ms", "max ms", "server RSS", "CPU us/ev", "/ base")


def scenario_lines(result: ScenarioResult) -> list[str]:
    cells = []
    for row in result.rows:
        latency = row.latency
        cells.append(
            [
                row.label,
                _rate(row.rate),
                _ms(latency.p50 if latency else None),
                _ms(latency.p99 if latency else None),
                _ms(latency.max if latency else None),
                _mib(row.rss),
                _number(row.cpu_us, 1),
                _number(row.ratio),
            ]
        )
    lines = textwrap.wrap(f"{result.number}. {result.title}", NOTE_WIDTH, subsequent_indent="   ")
    lines += ["  " + line for line in format_table(ROW_HEADER, cells)]
    notes = [f"{row.label}: {row.note}" for row in result.rows if row.note] + result.notes
    for note in notes:
        lines += textwrap.wrap(note, NOTE_WIDTH, initial_indent="  ", subsequent_indent="    ")
    return lines


def target_lines(found: Sequence[Target]) -> list[str]:
    cells = []
    for target in found:
        sign = ">=" if target.at_least else "<="
        met = {True: "met", False: "MISSED", None: "n/a"}[target.met]
        digits = 0 if target.goal >= 1000 or target.unit.endswith("/s") else 2
        shown = digits
        if target.met is False and f"{target.measured:.{digits}f}" == f"{target.goal:.{digits}f}":
            shown += 1  # "0.50 x ... >= 0.50 x  MISSED" would not say why
        cells.append(
            [
                target.text,
                fmt(target.measured, f",.{shown}f", f" {target.unit}".rstrip()),
                f"{sign} {_number(target.goal, digits)} {target.unit}".strip(),
                met,
            ]
        )
    return ["Targets", *("  " + line for line in format_table(("", "measured", "goal", ""), cells))]


def render(results: Sequence[ScenarioResult], found: Sequence[Target], header: str) -> str:
    blocks = [header]
    blocks += ["\n".join(scenario_lines(result)) for result in results]
    if found:
        blocks.append("\n".join(target_lines(found)))
    return "\n\n".join(blocks) + "\n"


# ---------------------------------------------------------------------------------------------
# JSON and the plot


def to_json(
    results: Sequence[ScenarioResult], found: Sequence[Target], meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "meta": meta,
        "scenarios": {result.key: asdict(result) for result in results},
        "targets": {target.key: {**asdict(target), "met": target.met} for target in found},
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n")


class PlotUnavailable(Exception):
    """matplotlib is not installed."""


PLOT_HINT = "--plot needs matplotlib: pip install 'peat-sync[bench]'"


def _pyplot() -> Any:
    """matplotlib.pyplot, drawing to files only; PlotUnavailable when not installed.
    Imported by name: matplotlib is an optional dependency, absent from most installs."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise PlotUnavailable(PLOT_HINT) from None
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def check_plotting() -> None:
    """Raise PlotUnavailable unless matplotlib can be imported (checked before the run)."""
    _pyplot()


def _values(points: Sequence[dict[str, Any]], key: str) -> list[float]:
    """The points' figure `key`, NaN where it is not known (matplotlib leaves a gap)."""
    return [math.nan if point.get(key) is None else float(point[key]) for point in points]


def plot(fanout: ScenarioResult, path: Path) -> None:
    """One PNG of two panels against the number of subscribers, from the fan-out scenario:
    the put-to-delivery latency p50 and p99 at the fixed rate (log scales), and the events
    delivered per second with writes as fast as they go. A count at which the server did not
    keep up with the fixed rate is drawn hollow: its latency includes a queue."""
    plt = _pyplot()
    points = fanout.figures["points"]
    rate = fanout.figures.get("rate")
    subscribers = [point["subscribers"] for point in points]
    queued = [point for point in points if point.get("kept_up") is False]
    figure, (latency_axis, rate_axis) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    plain = plt.FuncFormatter(lambda value, _: f"{value:,.4g}")
    for key, marker, label in (("p50_ms", "o", "p50"), ("p99_ms", "s", "p99")):
        (line,) = latency_axis.plot(subscribers, _values(points, key), f"{marker}-", label=label)
        if queued:
            latency_axis.plot(
                [point["subscribers"] for point in queued],
                _values(queued, key),
                marker,
                color=line.get_color(),
                markerfacecolor="white",
                label=f"{label}: the server did not keep up (a queue)",
            )
    latency_axis.set_yscale("log")
    latency_axis.set_ylabel("put-to-delivery latency (ms)")
    latency_axis.yaxis.set_major_formatter(plain)
    latency_axis.yaxis.set_minor_locator(plt.LogLocator(subs=(2, 5)))
    latency_axis.yaxis.set_minor_formatter(plain)
    at = "" if rate is None else f" at {rate:,.0f} PutDocument/s"
    latency_axis.set_title(f"latency{at}", fontsize=10)
    latency_axis.legend(loc="upper left")
    rate_axis.plot(
        subscribers,
        _values(points, "events_per_s"),
        "^-",
        color="tab:green",
        label="delivered events/s, all subscribers",
    )
    rate_axis.set_ylim(bottom=0)
    rate_axis.set_ylabel("delivered events/s")
    rate_axis.yaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    rate_axis.set_title("throughput: WriteDocuments as fast as they go", fontsize=10)
    rate_axis.legend(loc="lower right")
    for axis in (latency_axis, rate_axis):
        axis.set_xscale("log")
        axis.set_xlabel("subscribers")
        axis.set_xticks(subscribers, [f"{count:,}" for count in subscribers])
        axis.xaxis.set_minor_locator(plt.NullLocator())
        axis.grid(True, which="major", alpha=0.3)
    figure.suptitle("peat-sync bench, fan-out: latency and throughput by subscribers")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
