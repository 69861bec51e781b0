"""What `peat-sync bench` runs, and how much: the scenarios' names and one-line summaries,
and the sizes of a full run and of a --quick one.

Only data, and no import of grpcio: the `peat-sync` command line imports this for its help,
and `peat-sync serve` must not load the client library.
"""

from __future__ import annotations

from dataclasses import dataclass

# The scenarios in the order they run, which numbers them from 1.
SCENARIO_SUMMARIES = {
    "put": "unary PutDocument calls/s from concurrent clients, / bare grpclib",
    "subscribe": "events/s one Subscribe stream reads, / bare grpclib",
    "fanout": "1 to 1,000 subscribers: latency at a fixed rate, events/s, CPU",
    "latency": "put-to-delivery p99, 1,000 puts/s, 10 subscribers; rate for 10 ms",
    "stalled": "1 of 10 subscribers SIGSTOPped: the others' p99, RSS, its catch-up",
    "replay": "reconnect 100,000 events behind: Subscribe and SubscribeBatched",
    "idle": "server RSS with 1,000 idle subscribers",
    "batched": "WriteDocuments docs/s and SubscribeBatched replay events/s",
    "shared": "sidecars on one NATS stream: writes, a join, latency, / nats-py",
    "connect": "Connect (h2c, HTTP/1.1) against gRPC from one Node client: stream, puts",
    "single": "GetStatus, GetDocument, PutDocument one at a time: p50, p99",
}


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each scenario does. The defaults keep a full run to a few minutes."""

    runs: int = 3
    put_count: int = 6_000  # PutDocument calls per run
    put_clients: int = 16
    stream_events: int = 50_000  # events the one subscriber of scenario 2 reads per run
    fanout: tuple[int, ...] = (1, 10, 100, 1000)
    fanout_events: int = 20_000  # events written per fan-out run ...
    fanout_deliveries: int = 300_000  # ... but no more than this many deliveries in all
    # The fan-out's fixed rate, in puts/s: one that the server sustains with 1,000
    # subscribers, whose deliveries are the server's costliest work.
    fanout_rate: int = 2
    fanout_latency_seconds: float = 10.0
    streams_per_process: int = 250  # subscriber streams per worker process
    rate: int = 1000  # puts/s of scenario 4, and of 5 unless 4 found a lower one
    latency_subscribers: int = 10
    latency_seconds: float = 8.0
    latency_search_seconds: float = 4.0  # per rate tried below `rate`
    stall_warmup: float = 4.0
    stall_seconds: float = 8.0
    stall_after: float = 2.0
    stall_replay_log: int = 2000
    replay_events: int = 100_000
    single_calls: int = 1000  # calls of each RPC per run, one at a time
    idle_subscribers: int = 1000
    idle_processes: int = 4
    write_count: int = 100_000  # documents per WriteDocuments run
    write_batch: int = 1000
    write_clients: int = 4
    shared_publishes: int = 100_000  # nats-py publishes per way (sequential: a tenth)
    shared_documents: int = 200_000  # written by WriteDocuments, then joined, per run
    shared_batch: int = 500  # writes per WriteDocuments (shared mode takes 1,000 at most)
    shared_clients: int = 4
    shared_rate: int = 500  # puts/s on one sidecar, delivered on another
    shared_latency_seconds: float = 5.0


QUICK = Sizes(
    runs=1,
    put_count=300,
    put_clients=4,
    stream_events=2000,
    fanout=(1, 4),
    fanout_events=500,
    fanout_deliveries=2000,
    fanout_rate=20,
    fanout_latency_seconds=1.0,
    streams_per_process=4,
    rate=500,
    latency_subscribers=3,
    latency_seconds=1.0,
    latency_search_seconds=1.0,
    stall_warmup=3.0,
    stall_seconds=3.0,
    stall_after=0.5,
    stall_replay_log=200,
    replay_events=3000,
    single_calls=100,
    idle_subscribers=20,
    idle_processes=2,
    write_count=3000,
    write_batch=500,
    write_clients=2,
    shared_publishes=2000,
    shared_documents=20_000,
    shared_clients=2,
    shared_latency_seconds=1.0,
)
