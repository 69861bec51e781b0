"""The Prometheus metrics endpoint (`--metrics-listen`), served by prometheus_client.

Every figure is read from the node when Prometheus scrapes, from the node's own counters
(`NodeStats`) and state: the node keeps no metrics library objects, and a scrape costs the
node nothing between scrapes. The endpoint runs on prometheus_client's own thread; it only
reads plain numbers, which the GIL keeps whole.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio
from prometheus_client import start_http_server
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from peat_sync.address import ListenAddress
from peat_sync.node import Node
from peat_sync.node.stats import Histogram

if TYPE_CHECKING:
    from peat_sync.shared.replica import Replica

log = logging.getLogger("peat_sync.metrics")

# Buckets of a subscriber's buffer use: the share of --broadcast-buffer-size it holds unread.
BUFFER_BUCKETS = (0.0, 0.25, 0.5, 0.75, 1.0)


class NodeCollector(Collector):
    """The node's figures, for a registry; nothing until the node is open."""

    def __init__(self, current_node: Callable[[], Node | None]) -> None:
        self._current_node = current_node

    def collect(self) -> Iterator[Metric]:
        node = self._current_node()
        yield GaugeMetricFamily(
            "peat_up", "1 once the node serves, 0 while it starts", value=node is not None
        )
        if node is None:
            return
        feed, stats = node.feed, node.stats
        yield GaugeMetricFamily(
            "peat_subscribers", "open Subscribe streams", value=feed.subscriber_count
        )
        yield GaugeMetricFamily(
            "peat_head_sequence", "the newest committed sequence", value=node.head_sequence
        )
        yield GaugeMetricFamily(
            "peat_replay_floor_sequence",
            "the oldest since_sequence the replay log resumes exactly",
            value=node.replay_floor,
        )
        yield GaugeMetricFamily(
            "peat_catch_up_floor_sequence",
            "the oldest since_sequence a catch-up from the store can serve",
            value=node.catch_up_floor,
        )
        yield CounterMetricFamily(
            "peat_events_delivered",
            "events handed to subscribers' streams, control events included",
            value=stats.events_delivered,
        )
        yield CounterMetricFamily(
            "peat_lag_events",
            "times a subscriber's buffer overflowed (it then heals from the replay log,"
            " catches up, or gets a RESYNC)",
            value=feed.lag_events,
        )
        yield CounterMetricFamily(
            "peat_catch_ups", "catch-ups from the store begun", value=stats.catch_ups
        )
        yield CounterMetricFamily(
            "peat_stalled_streams",
            "Subscribe streams cut off because a send made no progress for"
            " --stalled-stream-timeout (their client did not read)",
            value=stats.stalled_streams,
        )
        resyncs = CounterMetricFamily(
            "peat_resyncs", "RESYNC events sent, by reason", labels=["reason"]
        )
        for reason, count in sorted(stats.resyncs.items()):
            resyncs.add_metric([reason], count)
        yield resyncs
        fill = Histogram(BUFFER_BUCKETS)
        for subscription in feed.live_subscriptions:
            fill.add(subscription.unread / feed.buffer_size)
        yield _family(
            "peat_subscriber_buffer_fill",
            "open live subscribers by the share of their buffer they hold unread",
            fill,
        )
        yield CounterMetricFamily(
            "peat_commit_failures",
            "write requests that failed because the store could not commit them (a full disk,"
            " an I/O error); the log says why",
            value=stats.commit_failures,
        )
        yield _family(
            "peat_commit_seconds",
            "time to commit a batch of writes to the store, fsync included",
            stats.commits,
        )
        if node.replica is not None:
            yield from _shared_mode(node.replica)


def _shared_mode(replica: Replica) -> Iterator[Metric]:
    """The figures of shared mode: what to alert on (see docs/operations.md)."""
    yield GaugeMetricFamily(
        "peat_nats_connected",
        "1 while connected to NATS (writes need it), 0 otherwise",
        value=replica.connected,
    )
    yield GaugeMetricFamily(
        "peat_sync_active", "1 while this sidecar applies the stream", value=replica.sync_active
    )
    applied = replica.applied
    stream_head = max(replica.stream_head, applied)
    yield GaugeMetricFamily(
        "peat_stream_head_sequence", "the stream's newest sequence, as last seen", value=stream_head
    )
    yield GaugeMetricFamily(
        "peat_stream_lag",
        "sequences of the stream not applied here yet",
        value=stream_head - applied,
    )
    yield GaugeMetricFamily("peat_peers", "other sidecars of the stream", value=len(replica.peers))
    yield CounterMetricFamily(
        "peat_stream_write_failures",
        "writes that failed with UNAVAILABLE: NATS did not take them in --nats-write-timeout,"
        " or this sidecar did not apply them in time; the log says why",
        value=replica.writer.failures,
    )
    yield CounterMetricFamily(
        "peat_stream_skipped",
        "sequences the stream no longer held when this sidecar read it (superseded or purged);"
        " its subscribers caught up across them",
        value=replica.skipped,
    )


def _family(name: str, documentation: str, histogram: Histogram) -> HistogramMetricFamily:
    """`histogram` as Prometheus has it: cumulative buckets, ending with +Inf."""
    buckets, running = [], 0
    for bound, count in zip((*map(str, histogram.bounds), "+Inf"), histogram.counts, strict=True):
        running += count
        buckets.append((bound, float(running)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=histogram.total)


class MetricsListenError(Exception):
    """The metrics endpoint cannot listen where asked; the message says why."""


@asynccontextmanager
async def serving_metrics(
    address: ListenAddress | None, current_node: Callable[[], Node | None]
) -> AsyncIterator[None]:
    """Trio-flavoured: serve /metrics at `address` (TCP; None: not at all) on a thread of its
    own for the duration of the block."""
    if address is None:
        yield
        return
    registry = CollectorRegistry(auto_describe=True)
    registry.register(NodeCollector(current_node))
    try:
        server, thread = start_http_server(address.port, addr=address.host, registry=registry)
    except OSError as exc:
        raise MetricsListenError(
            f"cannot serve metrics on {address}: {exc.strerror or exc}"
            " (choose another --metrics-listen)"
        ) from None
    bound = ListenAddress(str(server.server_address[0]), server.server_address[1])
    log.info("metrics on http://%s/metrics", bound.host_port)
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):  # its serving loop notices within half a second
            await trio.to_thread.run_sync(server.shutdown)
        server.server_close()
        thread.join()
