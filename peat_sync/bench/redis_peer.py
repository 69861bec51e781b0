"""The Redis Streams peer of `peat-sync bench --peer redis`: one redis-py client against the
bench's redis-server (peat_sync.bench.redis_servers), run as a process of its own.

    python -m peat_sync.bench.redis_peer '{"measure": "xadd", "port": 6379, ...}'

It does with the bench's documents what a user who picked Redis Streams instead of peat-sync
would do: one stream entry per document, in a stream of the collection, with the fields
`doc_id` and `json_data`. redis-py parses replies with hiredis (C) when it is installed, as the
grpcio client parses messages with the protobuf runtime's C classes. Each measure is one of
the peer's four workloads, timed from its first call to its last reply:

- "xadd": `count` XADDs, each sent once the one before it is acknowledged;
- "multi": `count` XADDs in MULTI/EXEC transactions of `batch`, each sent as one pipeline;
- "xread": the stream read whole by XREAD COUNT `batch`, each call after the last id read;
- "xrange": the same by XRANGE COUNT `batch`.

It prints one JSON line, {"report": {"count": N, "seconds": S, "cpu_seconds": C, "acks": ...}}
(C its own CPU time over the S seconds, acks a histogram of the writes' round trips), or
{"error": "..."} and exits with status 1. `measure` runs it from the bench's side, which
imports no redis-py: that is only needed with --peer redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

from peat_sync.bench.messages import document
from peat_sync.bench.report import Histogram
from peat_sync.bench.servers import BenchError

if TYPE_CHECKING:
    import redis
    from redis.typing import EncodableT, FieldT

# A reply, or a whole measure, that takes this long has met a dead server.
TIMEOUT = 60.0
MEASURES = ("xadd", "multi", "xread", "xrange")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSettings:
    measure: Literal["xadd", "multi", "xread", "xrange"]
    port: int  # of the redis-server on 127.0.0.1
    stream: str  # written by "xadd" and "multi", read whole by "xread" and "xrange"
    count: int  # entries written, or read
    batch: int = 1  # XADDs per MULTI/EXEC, or entries per XREAD or XRANGE
    prefix: str = "doc-"  # of the doc_ids; each document's number follows


@dataclass(slots=True)
class PeerReport:
    """What the peer process measured: `count` entries in `seconds`, with its own CPU time,
    and the round trip of each write (empty for a read)."""

    count: int
    seconds: float
    cpu_seconds: float
    acks: Histogram

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def busy_percent(self) -> float:
        """The client's CPU time as a percentage of the wall time: near 100, it was the limit."""
        return self.cpu_seconds / self.seconds * 100


# ---------------------------------------------------------------------------------------------
# The peer process


def _write(client: redis.Redis, settings: PeerSettings, acks: Histogram) -> int:
    """Write `count` documents, one XADD at a time or in MULTI/EXEC pipelines of `batch`."""
    stream, prefix, count = settings.stream, settings.prefix, settings.count
    batch = settings.batch if settings.measure == "multi" else 1
    for first in range(0, count, batch):
        sent = time.monotonic_ns()
        if settings.measure == "xadd":
            client.xadd(stream, {"doc_id": f"{prefix}{first}", "json_data": document(first, sent)})
        else:
            with client.pipeline(transaction=True) as pipeline:
                for n in range(first, min(first + batch, count)):
                    fields: dict[FieldT, EncodableT] = {
                        "doc_id": f"{prefix}{n}",
                        "json_data": document(n, sent),
                    }
                    pipeline.xadd(stream, fields)
                pipeline.execute()
        acks.add(max(time.monotonic_ns() - sent, 1))
    return count


def _read(client: redis.Redis, settings: PeerSettings) -> int:
    """Read the stream's first `count` entries, `batch` a call, each call after the last id."""
    stream, count, batch = settings.stream, settings.count, settings.batch
    read = 0
    last = b"0-0"
    while read < count:
        entries: Any
        if settings.measure == "xread":
            reply: Any = client.xread({stream: last}, count=min(batch, count - read))
            entries = reply[0][1] if reply else []
        else:
            after = b"(" + last if read else b"-"  # "(": after it (Redis 6.2 and later)
            entries = client.xrange(stream, min=after, max="+", count=min(batch, count - read))
        if not entries:
            raise BenchError(f"the stream {stream} holds {read:,} entries, not {count:,}")
        read += len(entries)
        last = entries[-1][0]
    return read


def _measure(settings: PeerSettings) -> PeerReport:
    import redis  # only in the peer process: the extra is absent from most installs

    client = redis.Redis(
        host="127.0.0.1",
        port=settings.port,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
    )
    try:
        client.ping()  # connected before the clock starts
        acks = Histogram()
        cpu, started = time.process_time(), time.perf_counter()
        if settings.measure in ("xadd", "multi"):
            count = _write(client, settings, acks)
        else:
            count = _read(client, settings)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        client.close()
    return PeerReport(count, seconds, cpu, acks)


def main(argv: Sequence[str]) -> int:
    """Measure what `argv`'s one argument (the settings, as JSON) asks; the exit status."""
    if len(argv) != 1:
        print("usage: python -m peat_sync.bench.redis_peer SETTINGS_JSON", file=sys.stderr)
        return 2
    import redis

    try:
        settings = PeerSettings(**json.loads(argv[0]))
        if settings.measure not in MEASURES:
            raise ValueError(f"no measure {settings.measure!r}")
        report = _measure(settings)
    except (BenchError, OSError, TypeError, ValueError, redis.RedisError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    answer = {
        "count": report.count,
        "seconds": report.seconds,
        "cpu_seconds": report.cpu_seconds,
        "acks": report.acks.to_json(),
    }
    print(json.dumps({"report": answer}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The bench's side


def measure(settings: PeerSettings) -> PeerReport:
    """Run the peer process with `settings` and wait for its report; BenchError if it fails."""
    argv = [sys.executable, "-m", "peat_sync.bench.redis_peer", json.dumps(asdict(settings))]
    what = f"redis-py {settings.measure}"
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT * 4, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no answer within {TIMEOUT * 4:g} s") from None
    lines = done.stdout.strip().splitlines()
    answer: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if "report" not in answer:
        why = answer.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"{what} exited ({done.returncode}): {why}")
    report = answer["report"]
    return PeerReport(
        report["count"],
        report["seconds"],
        report["cpu_seconds"],
        Histogram.from_json(report["acks"]),
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
