"""The load processes of `peat-sync bench`, and the driver's handle on them.

    python -m peat_sync.bench.workers '{"kind": "subscribe", "target": "127.0.0.1:PORT", ...}'

A worker's one argument is its settings, as JSON: a `SubscriberSettings` (kind "subscribe"),
a `WriterSettings` (kind "put" or "write") or a `CallerSettings` (kind "calls"). The driver
makes them; the command line of the bench is peat_sync.cli.bench.

Each runs in a process of its own, apart from the server and from the driver, so that client
cost does not hide server cost. They use the official grpcio client with generic calls and the
protobuf runtime's message classes (`wire.message_class`): grpc.aio for subscribers and
writers, which keep many streams or calls going at once in one process, and the blocking
client for a caller, which makes one call at a time. Each stream or client has a channel, and
so a connection, of its own, as separate subscribers and clients would.

A worker talks JSON lines: it prints {"ready": ...} once connected (a subscriber: once every
stream has its opening event), then takes commands on stdin, one per line:

- `go`: writers start (every writer of a run starts at once); a caller makes its calls;
- `until SEQ`: a subscriber prints a report once every stream has reached sequence SEQ;
- `control TYPE`: ... once every stream has had a control event of TYPE since the last
  report;
- `quit`, or the end of stdin: stop and print the final report.

Subscriber reports hold the events received since the previous report: counts per change
type, the first control events, the receive times, and a histogram of put-to-delivery
latency (receive time minus the writer's timestamp in the document). Writers print one report
when done: count, start and end times, the last sequence committed, and a histogram of
acknowledgement latency. A caller prints one report per `go`: a histogram of the latency of
each RPC. Any failure is a line {"error": "..."} and exit status 1.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import grpc

from peat_sync.bench.messages import COLLECTION, DELETE, UPSERT, document, sent_at
from peat_sync.bench.report import Histogram
from peat_sync.bench.servers import BenchError
from peat_sync.wire import (
    GET_STATUS,
    PUT_DOCUMENT,
    SUBSCRIBE,
    SUBSCRIBE_BATCHED,
    WRITE_DOCUMENTS,
    message_class,
    rpc_path,
)

# Any: the runtime's classes are built at run time, and their fields are not known to mypy.
SubscribeRequest: Any = message_class("SubscribeRequest")
DocumentChange: Any = message_class("DocumentChange")
DocumentChangeBatch: Any = message_class("DocumentChangeBatch")
PutDocumentRequest: Any = message_class("PutDocumentRequest")
PutDocumentResponse: Any = message_class("PutDocumentResponse")
DocumentWrite: Any = message_class("DocumentWrite")
WriteDocumentsRequest: Any = message_class("WriteDocumentsRequest")
WriteDocumentsResponse: Any = message_class("WriteDocumentsResponse")
GetStatusRequest: Any = message_class("GetStatusRequest")
GetStatusResponse: Any = message_class("GetStatusResponse")
GetDocumentRequest: Any = message_class("GetDocumentRequest")
GetDocumentResponse: Any = message_class("GetDocumentResponse")
GET_DOCUMENT = rpc_path("GetDocument")

# Control events kept per report, to say how a stream resumed.
CONTROLS_KEPT = 8
# Each connection its own: grpcio would otherwise share one between equal channels.
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
CONNECT_TIMEOUT = 20.0
# A unary call that takes this long has met a dead server.
CALL_TIMEOUT = 60.0
# Calls of a paced writer that may wait for their answer at once. A server that keeps up
# has rate x latency in flight, a handful; one that does not would otherwise pile up calls
# without bound, and its memory and latency would measure that pile. At the bound the writer
# falls behind its schedule, which the achieved rate shows.
MAX_IN_FLIGHT = 100
# How often a worker checks that the driver is still there.
PARENT_POLL = 0.5
# A worker's reply to a command of the driver, or its ready line, takes at most this long.
REPLY_TIMEOUT = 180.0

# ---------------------------------------------------------------------------------------------
# Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberSettings:
    """A subscriber process: `streams` Subscribe (or SubscribeBatched) streams."""

    target: str  # grpcio target: HOST:PORT or unix:///PATH
    streams: int = 1
    collections: tuple[str, ...] = ()  # every collection, when empty
    since: int | None = None
    epoch: str = ""
    batched: bool = False
    latency: bool = False  # a histogram of put-to-delivery times
    until: int | None = None  # report once every stream reaches this sequence ...
    events: int | None = None  # ... or has had this many events
    once: bool = False  # exit after that report
    window: int | None = None  # an HTTP/2 window in bytes, held (no BDP probe)
    kind: Literal["subscribe"] = "subscribe"


@dataclass(frozen=True, slots=True, kw_only=True)
class WriterSettings:
    """A writer process: `clients` clients that write `count` documents between them, with
    PutDocument ("put") or WriteDocuments ("write")."""

    kind: Literal["put", "write"]
    target: str
    count: int
    clients: int = 1
    collection: str = COLLECTION
    prefix: str = "doc-"  # of the doc_ids; each document's number follows
    first: int = 0  # the number of the first document
    rate: float = 0.0  # documents/s; 0 is as fast as they go
    batch: int = 1000  # writes per WriteDocuments
    wait_go: bool = False  # start on "go" from stdin


@dataclass(frozen=True, slots=True, kw_only=True)
class CallerSettings:
    """A caller process: one client that, on each `go`, makes `count` calls of each RPC of
    SINGLE_CALLS, one at a time, in turns of `turn` calls of one RPC."""

    target: str
    count: int
    turn: int = 100
    warmup: int = 50  # calls of each RPC before the first `go`, not measured
    collection: str = COLLECTION
    prefix: str = "doc-"  # of the doc_ids that PutDocument writes
    kind: Literal["calls"] = "calls"


Settings = SubscriberSettings | WriterSettings | CallerSettings


def encode_settings(settings: Settings) -> str:
    """The worker's one argument."""
    return json.dumps(asdict(settings))


def decode_settings(text: str) -> Settings:
    """The settings a worker was given; ValueError if they are not a worker's."""
    data = json.loads(text)
    kind = data.get("kind") if isinstance(data, dict) else None
    try:
        if kind == "subscribe":
            return SubscriberSettings(**{**data, "collections": tuple(data["collections"])})
        if kind in ("put", "write"):
            return WriterSettings(**data)
        if kind == "calls":
            return CallerSettings(**data)
    except (KeyError, TypeError) as exc:  # a field missing, or one of no worker
        raise ValueError(f"bad {kind} worker settings: {exc}") from None
    raise ValueError(f"no worker of kind {kind!r}")


# ---------------------------------------------------------------------------------------------
# Subscribers


@dataclass(slots=True)
class Window:
    """What the streams of one process received since the last report."""

    events: int = 0
    data: int = 0
    types: collections.Counter[int] = field(default_factory=collections.Counter)
    controls: list[dict[str, Any]] = field(default_factory=list)
    latency: Histogram = field(default_factory=Histogram)
    first_ns: int | None = None
    last_ns: int | None = None

    def report(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "data": self.data,
            "types": {str(t): n for t, n in sorted(self.types.items())},
            "controls": self.controls,
            "latency": self.latency.to_json(),
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
        }


class StreamState:
    """One subscriber stream: its position, the control event types it received since the
    last report, and when it reached the current target."""

    __slots__ = ("data", "events", "opened", "position", "reached_ns", "seen")

    def __init__(self) -> None:
        self.position = -1
        self.events = 0
        self.data = 0  # since the last report
        self.seen: set[int] = set()
        self.opened = asyncio.Event()
        self.reached_ns: int | None = None


class Subscribers:
    """K streams of one process, each on its own channel, and their shared window."""

    def __init__(self, settings: SubscriberSettings) -> None:
        self.settings = settings
        self.window = Window()
        self.streams = [StreamState() for _ in range(settings.streams)]
        self.until: int | None = settings.until
        self.until_control: int | None = None
        self.all_reached = asyncio.Event()
        self.start_ns = 0

    def request(self) -> Any:
        settings = self.settings
        request = SubscribeRequest(collections=settings.collections, control_events=True)
        if settings.since is not None:
            request.since_sequence = settings.since
        if settings.epoch:
            request.epoch = settings.epoch
        return request

    def set_target(self, *, sequence: int | None = None, control: int | None = None) -> None:
        """Report once every stream reaches `sequence`, or has received a control event of
        type `control` since the last report."""
        self.until, self.until_control = sequence, control
        self.all_reached.clear()
        for stream in self.streams:
            stream.reached_ns = None
            self._check(stream, time.monotonic_ns())

    def _check(self, stream: StreamState, now: int) -> None:
        if stream.reached_ns is not None:
            return
        if (
            (self.until is not None and stream.position >= self.until)
            or (self.until_control is not None and self.until_control in stream.seen)
            or (self.settings.events is not None and stream.events >= self.settings.events)
        ):
            stream.reached_ns = now
            if all(s.reached_ns is not None for s in self.streams):
                self.all_reached.set()

    def take_report(self) -> dict[str, Any]:
        reached = [s.reached_ns for s in self.streams if s.reached_ns is not None]
        report = {
            **self.window.report(),
            "start_ns": self.start_ns,
            "reached_ns": max(reached) if reached else None,
            "stream_data": [stream.data for stream in self.streams],
        }
        self.window = Window()
        for stream in self.streams:
            stream.seen.clear()
            stream.data = 0
        return report

    async def follow(self, channel: grpc.aio.Channel, stream: StreamState) -> None:
        batched = self.settings.batched
        method = channel.unary_stream(
            SUBSCRIBE_BATCHED if batched else SUBSCRIBE,
            request_serializer=SubscribeRequest.SerializeToString,
            response_deserializer=(DocumentChangeBatch if batched else DocumentChange).FromString,
        )
        latency = self.settings.latency
        async for message in method(self.request()):
            now = time.monotonic_ns()
            changes = message.changes if batched else (message,)
            window = self.window
            if window.first_ns is None:
                window.first_ns = now
            window.last_ns = now
            window.events += len(changes)
            for change in changes:
                change_type = change.change_type
                window.types[change_type] += 1
                if change_type in (UPSERT, DELETE):
                    window.data += 1
                    stream.data += 1
                    if latency:
                        sent = sent_at(change.json_data)
                        if sent is not None:
                            window.latency.add(max(now - sent, 1))
                else:
                    stream.seen.add(change_type)
                    if len(window.controls) < CONTROLS_KEPT:
                        window.controls.append(
                            {
                                "type": change_type,
                                "sequence": change.sequence,
                                "reason": change.resync_reason,
                                "epoch": change.epoch,
                                "at_ns": now,
                            }
                        )
            if changes:
                stream.events += len(changes)
                stream.position = changes[-1].sequence
                stream.opened.set()
                self._check(stream, now)
            if self.settings.once and stream.reached_ns is not None:
                return
        raise BenchError("the server ended a Subscribe stream")


async def _connected(
    target: str, count: int, options: Sequence[tuple[str, Any]] = ()
) -> list[grpc.aio.Channel]:
    channels = [
        grpc.aio.insecure_channel(target, options=[*CHANNEL_OPTIONS, *options])
        for _ in range(count)
    ]
    try:
        await asyncio.wait_for(
            asyncio.gather(*(channel.channel_ready() for channel in channels)), CONNECT_TIMEOUT
        )
    except TimeoutError:
        raise BenchError(f"cannot connect to {target} within {CONNECT_TIMEOUT:g} s") from None
    return channels


async def _commands() -> AsyncIterator[str]:
    """The driver's commands, one per line of stdin, until `quit` or the end of stdin."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        if line == "quit":
            return
        yield line


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


async def _until_first(tasks: Sequence[asyncio.Task[None]], awaitable: Any) -> None:
    """Await `awaitable`, but fail as soon as one of `tasks` fails (a stream that ends)."""
    waiter = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    for task in done:
        if task is not waiter and (error := task.exception()) is not None:
            raise error


async def subscribe(settings: SubscriberSettings) -> None:
    subscribers = Subscribers(settings)
    options = []
    if settings.window is not None:
        options = [("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", settings.window)]
    channels = await _connected(settings.target, settings.streams, options)
    subscribers.start_ns = time.monotonic_ns()
    tasks = [
        asyncio.create_task(subscribers.follow(channel, stream))
        for channel, stream in zip(channels, subscribers.streams, strict=True)
    ]
    try:
        opened = asyncio.gather(*(stream.opened.wait() for stream in subscribers.streams))
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                await _until_first(tasks, opened)
        except TimeoutError:
            raise BenchError(f"streams not open after {REPLY_TIMEOUT:g} s") from None
        _emit(ready=True, streams=len(tasks))
        if settings.once:
            await _until_first(tasks, subscribers.all_reached.wait())
            _emit(report=subscribers.take_report())
            return
        async for command in _commands():
            verb, _, value = command.partition(" ")
            if verb == "until":
                subscribers.set_target(sequence=int(value))
            elif verb == "control":
                subscribers.set_target(control=int(value))
            else:
                raise BenchError(f"unknown command {command!r}")
            await _until_first(tasks, subscribers.all_reached.wait())
            _emit(report=subscribers.take_report())
        _emit(report=subscribers.take_report(), done=True)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in channels))


# ---------------------------------------------------------------------------------------------
# Writers


@dataclass(slots=True)
class WriterTotals:
    count: int = 0
    last_sequence: int = 0
    acks: Histogram = field(default_factory=Histogram)
    start_ns: int = 0
    end_ns: int = 0


def _schedule(settings: WriterSettings, start_ns: int) -> Iterator[tuple[int, int]]:
    """(number, due time in ns) of each of the `count` writes: all due at once at full speed
    (`rate` 0), else one every 1/rate seconds from `start_ns`."""
    rate = settings.rate
    for index, n in enumerate(range(settings.first, settings.first + settings.count)):
        yield n, start_ns + int(index * 1e9 / rate) if rate else 0


Sender = Callable[[list[int]], Awaitable[int]]


async def _send(send: Sender, chunk: list[tuple[int, int]], totals: WriterTotals) -> None:
    sent = time.monotonic_ns()
    sequence = await send([n for n, _ in chunk])
    done = time.monotonic_ns()
    totals.acks.add(max(done - sent, 1))
    totals.count += len(chunk)
    totals.last_sequence = max(totals.last_sequence, sequence)
    totals.end_ns = max(totals.end_ns, done)


async def _closed_loop(
    send: Sender, batch: int, schedule: Iterator[tuple[int, int]], totals: WriterTotals
) -> None:
    """One client at full speed: send the next `batch` writes of the shared schedule once
    the previous ones are acknowledged, until the schedule ends."""
    while chunk := list(itertools.islice(schedule, batch)):
        await _send(send, chunk, totals)


async def _open_loop(
    senders: Sequence[Sender], batch: int, schedule: Iterator[tuple[int, int]], totals: WriterTotals
) -> None:
    """At a fixed rate: send each write when it is due, whether or not earlier ones are
    acknowledged (a slow server must not slow the load down and so hide its own latency),
    taking the clients in turn; at most MAX_IN_FLIGHT calls wait at once."""
    in_flight: set[asyncio.Task[None]] = set()
    failures: list[BaseException] = []
    room = asyncio.Semaphore(MAX_IN_FLIGHT)

    def finished(task: asyncio.Task[None]) -> None:
        in_flight.discard(task)
        room.release()
        if not task.cancelled() and (error := task.exception()) is not None:
            failures.append(error)

    clients = itertools.cycle(senders)
    while (chunk := list(itertools.islice(schedule, batch))) and not failures:
        delay = (chunk[-1][1] - time.monotonic_ns()) / 1e9
        if delay > 0:
            await asyncio.sleep(delay)
        await room.acquire()
        task = asyncio.create_task(_send(next(clients), chunk, totals))
        in_flight.add(task)
        task.add_done_callback(finished)
    if in_flight:
        await asyncio.wait(in_flight)
    if failures:
        raise failures[0]


def _put_sender(channel: grpc.aio.Channel, settings: WriterSettings) -> Sender:
    put = channel.unary_unary(
        PUT_DOCUMENT,
        request_serializer=PutDocumentRequest.SerializeToString,
        response_deserializer=PutDocumentResponse.FromString,
    )

    async def send(numbers: list[int]) -> int:
        (n,) = numbers
        request = PutDocumentRequest(
            collection=settings.collection,
            doc_id=f"{settings.prefix}{n}",
            json_data=document(n, time.monotonic_ns()),
        )
        response = await put(request, timeout=CALL_TIMEOUT)
        return int(response.sequence)

    return send


def _write_sender(channel: grpc.aio.Channel, settings: WriterSettings) -> Sender:
    write = channel.unary_unary(
        WRITE_DOCUMENTS,
        request_serializer=WriteDocumentsRequest.SerializeToString,
        response_deserializer=WriteDocumentsResponse.FromString,
    )

    async def send(numbers: list[int]) -> int:
        now = time.monotonic_ns()
        writes = [
            DocumentWrite(
                collection=settings.collection,
                doc_id=f"{settings.prefix}{n}",
                json_data=document(n, now),
            )
            for n in numbers
        ]
        response = await write(WriteDocumentsRequest(writes=writes), timeout=CALL_TIMEOUT)
        return int(max(response.sequences, default=0))

    return send


async def writer(settings: WriterSettings) -> None:
    channels = await _connected(settings.target, settings.clients)
    try:
        make_sender = _write_sender if settings.kind == "write" else _put_sender
        batch = settings.batch if settings.kind == "write" else 1
        _emit(ready=True, clients=len(channels))
        if settings.wait_go:
            async for command in _commands():
                if command == "go":
                    break
            else:
                return  # stdin ended before the driver said go: the driver is gone
        totals = WriterTotals(start_ns=time.monotonic_ns())
        schedule = _schedule(settings, totals.start_ns)
        senders = [make_sender(channel, settings) for channel in channels]
        if settings.rate:
            await _open_loop(senders, batch, schedule, totals)
        else:
            await asyncio.gather(*(_closed_loop(send, batch, schedule, totals) for send in senders))
        _emit(
            report={
                "count": totals.count,
                "start_ns": totals.start_ns,
                "end_ns": totals.end_ns,
                "last_sequence": totals.last_sequence,
                "acks": totals.acks.to_json(),
            }
        )
    finally:
        await asyncio.gather(*(channel.close() for channel in channels))


# ---------------------------------------------------------------------------------------------
# A caller: one call at a time

# What a caller calls, in this order in each turn: the cheapest answer the server gives, a
# point read from its store, and a durable write.
SINGLE_CALLS = ("GetStatus", "GetDocument", "PutDocument")


def _single_calls(
    channel: grpc.Channel, settings: CallerSettings
) -> dict[str, Callable[[], object]]:
    """Each RPC of SINGLE_CALLS as a call without arguments. GetDocument reads the first
    document that PutDocument writes; each PutDocument writes a document of its own."""
    status = channel.unary_unary(
        GET_STATUS,
        request_serializer=GetStatusRequest.SerializeToString,
        response_deserializer=GetStatusResponse.FromString,
    )
    get = channel.unary_unary(
        GET_DOCUMENT,
        request_serializer=GetDocumentRequest.SerializeToString,
        response_deserializer=GetDocumentResponse.FromString,
    )
    put = channel.unary_unary(
        PUT_DOCUMENT,
        request_serializer=PutDocumentRequest.SerializeToString,
        response_deserializer=PutDocumentResponse.FromString,
    )
    status_request = GetStatusRequest()
    get_request = GetDocumentRequest(collection=settings.collection, doc_id=f"{settings.prefix}0")
    numbers = itertools.count()

    def put_document() -> object:
        n = next(numbers)
        request = PutDocumentRequest(
            collection=settings.collection,
            doc_id=f"{settings.prefix}{n}",
            json_data=document(n, time.monotonic_ns()),
        )
        return put(request, timeout=CALL_TIMEOUT)

    calls: dict[str, Callable[[], object]] = {
        "GetStatus": lambda: status(status_request, timeout=CALL_TIMEOUT),
        "GetDocument": lambda: get(get_request, timeout=CALL_TIMEOUT),
        "PutDocument": put_document,
    }
    return {name: calls[name] for name in SINGLE_CALLS}


def _one_at_a_time(
    calls: dict[str, Callable[[], object]], settings: CallerSettings
) -> dict[str, Any]:
    """`count` calls of each RPC, each once the one before it has returned, in turns of
    `turn` calls of one RPC: every RPC is measured warm, and a while in which the machine is
    busy slows each of them rather than one. The latency of each RPC, as a histogram."""
    latency = {name: Histogram() for name in calls}
    for start in range(0, settings.count, settings.turn):
        for name, call in calls.items():
            histogram = latency[name]
            for _ in range(min(settings.turn, settings.count - start)):
                sent = time.monotonic_ns()
                call()
                histogram.add(max(time.monotonic_ns() - sent, 1))
    return {name: histogram.to_json() for name, histogram in latency.items()}


def call_one_at_a_time(settings: CallerSettings) -> None:
    """A caller: one blocking grpcio client (the lightest a client gets, so that the latency
    is the server's), warmed up with `warmup` calls of each RPC, then measured on each `go`."""
    with grpc.insecure_channel(settings.target, options=CHANNEL_OPTIONS) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=CONNECT_TIMEOUT)
        except grpc.FutureTimeoutError:
            raise BenchError(
                f"cannot connect to {settings.target} within {CONNECT_TIMEOUT:g} s"
            ) from None
        calls = _single_calls(channel, settings)
        calls["PutDocument"]()  # the document GetDocument reads
        for call in calls.values():
            for _ in range(settings.warmup):
                call()
        _emit(ready=True)
        for line in sys.stdin:
            command = line.strip()
            if command in ("", "quit"):
                return
            if command != "go":
                raise BenchError(f"unknown command {command!r}")
            _emit(report=_one_at_a_time(calls, settings))


# ---------------------------------------------------------------------------------------------
# The worker process


async def _main(settings: SubscriberSettings | WriterSettings) -> None:
    if isinstance(settings, SubscriberSettings):
        await subscribe(settings)
    else:
        await writer(settings)


def _run(settings: Settings) -> None:
    if isinstance(settings, CallerSettings):
        call_one_at_a_time(settings)
    else:
        asyncio.run(_main(settings))


def _exit_with_parent(parent: int) -> None:
    """Exit once the driver is gone (killed before it could stop this worker): a worker
    left behind would go on loading the server, or wait for ever."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    os._exit(1)


def main(argv: Sequence[str]) -> int:
    """Run the worker whose settings are `argv`'s one argument; returns the exit status."""
    if len(argv) != 1:
        print("usage: python -m peat_sync.bench.workers SETTINGS_JSON", file=sys.stderr)
        return 2
    # The driver stops a worker with SIGTERM: exit at once, without a traceback. Ctrl-C is
    # the driver's to handle: it stops every worker itself.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        _run(decode_settings(argv[0]))
    except grpc.RpcError as exc:  # of either client, grpc.aio's or the blocking one
        _emit(error=f"{exc.code().name}: {exc.details()}")
        return 1
    except (BenchError, OSError, ValueError) as exc:
        _emit(error=str(exc))
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# The driver's side


class Worker:
    """A worker process, as the driver sees it: JSON lines out, commands in."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, "-m", "peat_sync.bench.workers", encode_settings(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=5)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if line.strip():
                self._stderr.append(line.strip())

    def expect(self, key: str, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        """The next line of the worker, which must hold `key`; BenchError if the worker fails,
        exits or stays silent for `timeout` seconds."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no answer within {timeout:g} s") from None
        if line is None:
            self.process.wait(10)
            last = self._stderr[-1] if self._stderr else "no output"
            raise BenchError(f"{self.name} exited ({self.process.returncode}): {last}")
        if "error" in line:
            raise BenchError(f"{self.name}: {line['error']}")
        if key not in line:
            raise BenchError(f"{self.name}: expected {key!r}, got {line}")
        return line

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"{self.name} is gone") from None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot exit
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextlib.contextmanager
def workers(*started: Worker) -> Iterator[list[Worker]]:
    """Stop every worker when the block ends, however it ends."""
    try:
        yield list(started)
    finally:
        for worker in started:
            worker.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
