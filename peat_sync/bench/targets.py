"""The bench's targets, as data: the figure each holds to a bound, and what it promises.

The report compares each figure measured with its goal; the help of `peat-sync bench` lists
the same targets as a full run has them. Only data, and no import of grpcio, as sizes.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from peat_sync.bench.sizes import Sizes


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """Figure `figure` of scenario `scenario`, held to at least (or at most) `goal` `unit`.
    `{name}` in `description` stands for the scenario's figure `name`. With `goal_figure`,
    the goal is that figure of the run (`goal` being a full run's, for the help)."""

    key: str
    scenario: str
    figure: str
    description: str
    goal: float
    at_least: bool
    unit: str
    goal_figure: str | None = None

    def text(self, figures: Mapping[str, Any]) -> str:
        """The description, with the figures it names."""
        return self.description.format_map(figures)

    def goal_in(self, figures: Mapping[str, Any]) -> float:
        """The goal in a run with these figures."""
        if self.goal_figure is None or figures.get(self.goal_figure) is None:
            return self.goal
        return float(figures[self.goal_figure])

    @property
    def bound(self) -> str:
        """The goal as the help shows it, such as ">= 0.9 x"."""
        goal = f"{self.goal:,.0f}" if self.goal == int(self.goal) else f"{self.goal:,}"
        return f"{'>=' if self.at_least else '<='} {goal} {self.unit}"


# The peer that `--peer redis` measures, named as its scenarios are (it is not one of them:
# only data here, no import of its module).
PEER_REDIS = "redis"

# A retained event costs at least its ~120 encoded bytes plus a Python object around them, so
# keeping every event would grow the RSS by well over 150 KiB per 1,000 events: a tenth of
# the smallest real leak counts as not growing.
STALL_RSS_GOAL_KIB = 15.0
# The put-to-delivery p99 that scenario 4 asks of its rate; below that rate, it searches for
# the highest rate that meets it.
LATENCY_P99_GOAL_MS = 10.0

TARGETS = (
    TargetSpec(
        "subscribe_vs_baseline",
        "subscribe",
        "ratio",
        "Subscribe, 1 subscriber: events/s / bare grpclib stream",
        0.9,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "batched_replay",
        "batched",
        "replay_events_per_s",
        "SubscribeBatched replay to 1 grpcio client",
        1_000_000,
        at_least=True,
        unit="events/s",
    ),
    TargetSpec(
        "batched_write",
        "batched",
        "write_documents_per_s",
        "WriteDocuments, durable at return",
        50_000,
        at_least=True,
        unit="docs/s",
    ),
    TargetSpec(
        "put_vs_baseline",
        "put",
        "ratio",
        "PutDocument: calls/s / bare grpclib unary echo, the lower of two numbers of calls in"
        " flight",
        0.8,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "fanout_cpu_ratio",
        "fanout",
        "cpu_ratio",
        "server CPU per delivered event, {max_subscribers:,} subscribers / 1 subscriber",
        0.5,
        at_least=False,
        unit="x",
    ),
    TargetSpec(
        "latency_p99",
        "latency",
        "p99_ms",
        "put-to-delivery p99 at {rate:,} puts/s, {subscribers} subscribers",
        LATENCY_P99_GOAL_MS,
        at_least=False,
        unit="ms",
    ),
    TargetSpec(
        "latency_max_rate",
        "latency",
        "max_rate",
        f"the highest rate with a put-to-delivery p99 <= {LATENCY_P99_GOAL_MS:g} ms,"
        " {subscribers} subscribers",
        Sizes().rate,
        at_least=True,
        unit="puts/s",
        goal_figure="rate",  # the rate asked: the search goes no higher
    ),
    TargetSpec(
        "stalled_p99_vs_latency",
        "stalled",
        "p99_ratio",
        "one subscriber stopped: the others' p99 / scenario 4's p99",
        1.1,
        at_least=False,
        unit="x",
    ),
    TargetSpec(
        "stalled_rss_growth",
        "stalled",
        "rss_growth_kib_per_1000_events",
        "one subscriber stopped: server RSS growth per 1,000 events, over all reading",
        STALL_RSS_GOAL_KIB,
        at_least=False,
        unit="KiB",
    ),
    TargetSpec(
        "shared_write_vs_publish",
        "shared",
        "write_ratio",
        "shared mode: WriteDocuments docs/s / nats-py publish_async msgs/s",
        0.5,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "shared_join_vs_replay",
        "shared",
        "join_ratio",
        "shared mode: an empty sidecar joins, docs applied/s / nats-py ordered consumer msgs/s",
        0.5,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "shared_latency_p99",
        "shared",
        "p99_ms",
        "shared mode: put on one sidecar to delivery on another, p99 at {put_rate:,} puts/s",
        25.0,
        at_least=False,
        unit="ms",
    ),
    TargetSpec(
        "put_vs_redis",
        PEER_REDIS,
        "one_at_a_time_ratio",
        "one write at a time, one client: PutDocument calls/s / Redis XADD (appendfsync always)",
        1.0,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "connect_stream_vs_grpc",
        "connect",
        "connect_ratio",
        "Connect Subscribe (binary, h2c) events/s / gRPC Subscribe, one Node client",
        0.5,
        at_least=True,
        unit="x",
    ),
    TargetSpec(
        "single_put_vs_status",
        "single",
        "put_ratio",
        "one call at a time, idle server: PutDocument p50 / GetStatus p50",
        1.5,
        at_least=False,
        unit="x",
    ),
    TargetSpec(
        "single_get_vs_status",
        "single",
        "get_ratio",
        "one call at a time, idle server: GetDocument p50 / GetStatus p50",
        1.2,
        at_least=False,
        unit="x",
    ),
)


def full_run_figures() -> dict[str, Any]:
    """The figures the descriptions name, as a full run has them: for the help."""
    sizes = Sizes()
    return {
        "max_subscribers": sizes.fanout[-1],
        "rate": sizes.rate,
        "subscribers": sizes.latency_subscribers,
        "put_rate": sizes.shared_rate,
    }
