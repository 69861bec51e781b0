"""The scenarios of `peat-sync bench`, one module each, and the `Bench` they run in.

Each scenario runs against a fresh `peat-sync serve` on a temporary data dir (or against the
deployment given with --addr), with its load in worker processes (peat_sync.bench.workers).
Throughput figures are the median of --runs runs; the baseline that a figure is divided by
is measured in the same scenario, on the bare grpclib server (peat_sync.bench.baseline).

Every document a writer sends carries the writer's clock, so each subscriber measures the
latency from the put to its delivery; doc_ids are unique within a run, so a catch-up (which
skips the intermediate states of a document) still delivers every event.
"""

from __future__ import annotations

from collections.abc import Callable

from peat_sync.bench.report import ScenarioResult
from peat_sync.bench.scenarios.batched import batched
from peat_sync.bench.scenarios.connect import connect
from peat_sync.bench.scenarios.context import Bench
from peat_sync.bench.scenarios.fanout import fanout
from peat_sync.bench.scenarios.idle import idle
from peat_sync.bench.scenarios.latency import latency
from peat_sync.bench.scenarios.put import put_throughput
from peat_sync.bench.scenarios.replay import replay
from peat_sync.bench.scenarios.shared import shared
from peat_sync.bench.scenarios.single import single
from peat_sync.bench.scenarios.stalled import stalled
from peat_sync.bench.scenarios.subscribe import subscribe_throughput

__all__ = ["SCENARIOS", "Bench"]

# In the order of SCENARIO_SUMMARIES (peat_sync.bench.sizes), which numbers them.
SCENARIOS: dict[str, Callable[[Bench], ScenarioResult]] = {
    "put": put_throughput,
    "subscribe": subscribe_throughput,
    "fanout": fanout,
    "latency": latency,
    "stalled": stalled,
    "replay": replay,
    "idle": idle,
    "batched": batched,
    "shared": shared,
    "connect": connect,
    "single": single,
}
