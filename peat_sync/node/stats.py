"""What the node counts about itself, for the metrics endpoint: plain numbers, so the node
needs no metrics library, and reading them costs the node nothing."""

from __future__ import annotations

import bisect
import collections
from dataclasses import dataclass, field

# Upper bounds, in seconds, of the commit-latency buckets: from a cached write (a fraction of
# a millisecond) to a disk in trouble.
COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(slots=True)
class Histogram:
    """Counts of values per bucket of `bounds` (upper bounds, ascending, each inclusive; the
    last count is of the values beyond every bound), with the values' sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass(slots=True)
class NodeStats:
    """Totals since the node started."""

    events_delivered: int = 0  # events handed to subscribers' streams, control events too
    catch_ups: int = 0  # catch-ups from the store begun
    resyncs: collections.Counter[str] = field(default_factory=collections.Counter)  # by reason
    stalled_streams: int = 0  # Subscribe streams cut off because their client did not read
    commits: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS))  # seconds
    commit_failures: int = 0  # write requests failed because the store could not commit them
