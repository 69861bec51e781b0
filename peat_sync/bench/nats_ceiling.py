"""The ceiling of shared mode: nats-py alone, against the bench's own nats-server, run as a
process of its own.

    python -m peat_sync.bench.nats_ceiling '{"measure": "publish", "url": "nats://...", ...}'

Nothing is behind it: no sidecar, no store, no trio. It writes the bench's documents as a
sidecar writes them (one subject per document, `peat_sync.shared.subjects`) to streams made as
a sidecar makes them (`JetStreamLink.stream`), and reads a stream a sidecar wrote. A sidecar's
figures divided by these, measured in the same run against the same server, show what the
sidecar costs on top of nats-py itself.

- "publish": three ways, each into a fresh stream named after `stream`: `js.publish`, each
  awaited before the next (`sequential` of them); IN_FLIGHT publishers at once, each awaiting
  its own; and `js.publish_async`, then a wait for every acknowledgement.
- "read": the stream `stream`, whose `count` messages a sidecar wrote, read whole twice: by an
  ordered push consumer, as a sidecar's replica reads it, then by a pull consumer that fetches
  FETCH messages at a time.

It prints one JSON line, {"report": {WAY: {"count": N, "seconds": S}, ...}}, or
{"error": "..."} and exits with status 1. `measure` runs it from the bench's side.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from peat_sync.bench.messages import COLLECTION, document
from peat_sync.bench.servers import BenchError
from peat_sync.shared.config import SharedConfig
from peat_sync.shared.jetstream import JetStreamLink
from peat_sync.shared.subjects import Subjects

# Publishers of the "in flight" way, each with one publish waiting for its acknowledgement.
IN_FLIGHT = 256
# Messages per fetch of the pull consumer.
FETCH = 1000
# A publish, a fetch or a whole read that takes this long has met a dead server.
TIMEOUT = 120.0
# The ways of each measure, in the order they run and report.
PUBLISH_WAYS = ("sequential", "in_flight", "publish_async")
READ_WAYS = ("ordered_consumer", "pull_fetch")


@dataclass(frozen=True, slots=True, kw_only=True)
class CeilingSettings:
    measure: Literal["publish", "read"]
    url: str  # the nats-server, nats://HOST:PORT
    stream: str  # "publish": the prefix of its streams' names; "read": the stream read
    count: int  # messages per way ("read": the stream's messages, every one read)
    sequential: int = 0  # "publish": messages of the sequential way, the slowest


# ---------------------------------------------------------------------------------------------
# The ceiling process


async def _new_stream(url: str, name: str) -> Subjects:
    """Stream `name`, made as a sidecar makes it; its subjects."""
    link = JetStreamLink(SharedConfig(servers=(url,), stream=name), "bench-ceiling", lambda: None)
    await link.connect()
    try:
        await link.stream()
    finally:
        await link.close()
    return link.subjects


def _messages(subjects: Subjects, count: int) -> Iterator[tuple[str, bytes]]:
    """The subject and payload of each of `count` new documents, stamped as they are made."""
    for n in range(count):
        yield subjects.document(COLLECTION, f"raw-{n}"), document(n, time.monotonic_ns()).encode()


async def _publish(settings: CeilingSettings) -> dict[str, dict[str, float]]:
    client = await nats.connect(settings.url)
    js = client.jetstream(timeout=TIMEOUT)
    report = {}
    try:
        for way in PUBLISH_WAYS:
            count = settings.sequential if way == "sequential" else settings.count
            subjects = await _new_stream(settings.url, f"{settings.stream}-{way}")
            messages = _messages(subjects, count)
            started = time.perf_counter()
            await _publish_all(js, way, messages)
            report[way] = {"count": count, "seconds": time.perf_counter() - started}
    finally:
        await client.close()
    return report


async def _publish_all(
    js: JetStreamContext, way: str, messages: Iterator[tuple[str, bytes]]
) -> None:
    """Publish every one of `messages` the `way` of PUBLISH_WAYS, each acknowledged."""
    if way == "sequential":
        for subject, payload in messages:
            await js.publish(subject, payload)
    elif way == "in_flight":

        async def publisher() -> None:
            for subject, payload in messages:  # shared: each publisher takes the next
                await js.publish(subject, payload)

        await asyncio.gather(*(publisher() for _ in range(IN_FLIGHT)))
    else:
        acks = [await js.publish_async(subject, payload) for subject, payload in messages]
        await js.publish_async_completed()
        for ack in acks:
            ack.result()  # raises the error of a publish that failed


async def _read(settings: CeilingSettings) -> dict[str, dict[str, float]]:
    client = await nats.connect(settings.url)
    js = client.jetstream(timeout=TIMEOUT)
    subjects = Subjects(settings.stream)
    count = settings.count
    report = {}
    try:
        # Ordered push consumer: the replica's way (`JetStreamLink.follow`), minus the replica.
        received = itertools.count(1)
        done = asyncio.Event()

        async def take(message: Msg) -> None:
            if next(received) == count:
                done.set()

        started = time.perf_counter()
        subscription = await js.subscribe(
            subjects.all,
            cb=take,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        async with asyncio.timeout(TIMEOUT):
            await done.wait()
        report["ordered_consumer"] = {"count": count, "seconds": time.perf_counter() - started}
        await subscription.unsubscribe()

        # Pull consumer: without acknowledgements, as a reader of the whole stream needs none.
        started = time.perf_counter()
        puller = await js.pull_subscribe(
            subjects.all,
            stream=settings.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        fetched = 0
        while fetched < count:
            fetched += len(await puller.fetch(FETCH, timeout=TIMEOUT))
        report["pull_fetch"] = {"count": fetched, "seconds": time.perf_counter() - started}
        await puller.unsubscribe()
    finally:
        await client.close()
    return report


def main(argv: Sequence[str]) -> int:
    """Measure what `argv`'s one argument (the settings, as JSON) asks; the exit status."""
    if len(argv) != 1:
        print("usage: python -m peat_sync.bench.nats_ceiling SETTINGS_JSON", file=sys.stderr)
        return 2
    try:
        settings = CeilingSettings(**json.loads(argv[0]))
        run = _publish if settings.measure == "publish" else _read
        report = asyncio.run(run(settings))
    except (TimeoutError, OSError, TypeError, ValueError, nats.errors.Error) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps({"report": report}), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# The bench's side


def measure(settings: CeilingSettings) -> dict[str, float]:
    """Run the ceiling process with `settings`; messages per second of each way it measured.
    BenchError if it fails."""
    argv = [sys.executable, "-m", "peat_sync.bench.nats_ceiling", json.dumps(asdict(settings))]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TIMEOUT * 4, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise BenchError(
            f"nats-py {settings.measure}: no answer within {TIMEOUT * 4:g} s"
        ) from None
    lines = done.stdout.strip().splitlines()
    answer: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if "report" not in answer:
        why = answer.get("error") or (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BenchError(f"nats-py {settings.measure} exited ({done.returncode}): {why}")
    return {way: figures["count"] / figures["seconds"] for way, figures in answer["report"].items()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
