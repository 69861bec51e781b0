"""Streams whose client does not read (`--stalled-stream-timeout`), end to end.

A client that opens Subscribe streams and never grants them HTTP/2 window, while it reads its
socket as any healthy client does, must not hold subscriber slots for ever: each stream is
cut off once a send has made no progress for the timeout, with a warning, and its slot goes
to the next subscriber. A client that reads slowly, each send completing, is never cut off.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from peat_sync import wire
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import HEARTBEAT, UPSERT, GrpcioApi, GrpcioClient, put, status
from tests.helpers.metrics import scrape
from tests.helpers.servers import StartServer
from tests.helpers.slow_consumers import padded
from tests.helpers.streams import (
    GrpclibStream,
    grpcio_subscription,
    small_window_config,
    wait_for_subscribers,
)
from tests.helpers.waiting import CALL_TIMEOUT

# Room above the timeout for the server to notice a stall and the client to hear of it, on a
# loaded machine; the timeout itself is the lower bound.
CUT_OFF_SLACK = 5.0
# Windowless streams of one connection, and the server's --max-subscribers: they fill it.
STALLED_STREAMS = 3
# Where the windowless streams' subscriptions follow; written to before they open.
COLLECTION = "stall"
GRPC_STATUS_UNAVAILABLE = "14"


@dataclass
class RawStream:
    """What a raw HTTP/2 stream received, with when it ended (monotonic seconds)."""

    opened_at: float
    data: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] | None = None
    reset_code: int | None = None
    ended_at: float | None = None

    @property
    def status_message(self) -> str:
        assert self.trailers is not None, "the stream ended without trailers"
        return urllib.parse.unquote(self.trailers.get("grpc-message", ""))


class WindowlessConnection:
    """An HTTP/2 connection that opens gRPC streams with a stream window of `window` bytes
    (SETTINGS_INITIAL_WINDOW_SIZE, which HTTP/2 allows to be 0) and never grants more, while
    it reads every byte the server sends and answers its SETTINGS and PINGs."""

    def __init__(self, port: int, window: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CALL_TIMEOUT)
        self.local_port: int = self.sock.getsockname()[1]  # the peer the server names
        config = h2.config.H2Configuration(client_side=True)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self._flush()
        self.streams: dict[int, RawStream] = {}

    def _flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def open(self, rpc: str, request: bytes) -> RawStream:
        """Open a stream of `rpc` (a path of `wire`) and send its whole request."""
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", rpc),
            (":authority", f"127.0.0.1:{self.sock.getpeername()[1]}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.h2.send_headers(stream_id, headers)
        self.h2.send_data(stream_id, wire.grpc_prefix(request) + request, end_stream=True)
        self._flush()
        self.streams[stream_id] = stream = RawStream(opened_at=time.monotonic())
        return stream

    def read_until(self, done: Callable[[], bool], seconds: float, what: str) -> None:
        """Read from the server until `done()`, or fail after `seconds`."""
        deadline = time.monotonic() + seconds
        self.sock.settimeout(0.05)
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {seconds} s waiting for {what}")
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert data, "the server closed the connection"
            for event in self.h2.receive_data(data):
                self._note(event)
            self._flush()  # SETTINGS and PING acknowledgements, never a WINDOW_UPDATE

    def _note(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            return
        if isinstance(event, h2.events.DataReceived):
            stream.data += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = {bytes(k).decode(): bytes(v).decode() for k, v in event.headers}
            stream.ended_at = time.monotonic()
        elif isinstance(event, h2.events.StreamReset):
            stream.reset_code = event.error_code
            stream.ended_at = stream.ended_at or time.monotonic()

    def close(self) -> None:
        self.sock.close()


@contextmanager
def windowless_connection(port: int, window: int = 0) -> Iterator[WindowlessConnection]:
    connection = WindowlessConnection(port, window)
    try:
        yield connection
    finally:
        connection.close()


def cut_off_warnings(log: str) -> list[tuple[int, float, str]]:
    """The stalled-stream warnings: (the peer's port, seconds stalled, how it was cut off)."""
    pattern = re.compile(
        r"WARNING peat_sync\.service: subscriber #\d+ \(127\.0\.0\.1:(\d+)\) stalled: no send"
        r" completed for ([\d.]+)s \(--stalled-stream-timeout [\d.]+s\), its client reading"
        r" nothing; cutting the stream off \(([^;]+);"
    )
    return [(int(m[1]), float(m[2]), m[3]) for m in pattern.finditer(log)]


def subscribe_request(**fields: object) -> bytes:
    return bytes(pb.SubscribeRequest(control_events=True, **fields))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "rpc", [wire.SUBSCRIBE, wire.SUBSCRIBE_BATCHED], ids=["Subscribe", "SubscribeBatched"]
)
def test_streams_that_never_get_window_are_cut_off_and_free_their_slots(
    start_server: StartServer, grpcio_api: GrpcioApi, rpc: str
) -> None:
    """Three streams with a window of 0 fill --max-subscribers, so a real subscriber is
    refused; within the timeout (and a little) each ends with UNAVAILABLE and its resume
    point, each is logged with its peer, the count drops, and the real subscriber gets in
    and resumes where the stalled ones would have."""
    timeout = 3.0
    server = start_server(
        *("--max-subscribers", str(STALLED_STREAMS), "--heartbeat-interval", "500ms"),
        *("--stalled-stream-timeout", f"{timeout:g}s", "--metrics-listen", "tcp://127.0.0.1:0"),
    )
    client = GrpcioClient(server.address, grpcio_api)
    try:
        head = put(client, COLLECTION, "before", '{"n": 0}')
        epoch = status(client)["epoch"]
        with windowless_connection(server.port) as hostile:
            streams = [
                hostile.open(rpc, subscribe_request(collections=[COLLECTION]))
                for _ in range(STALLED_STREAMS)
            ]
            wait_for_subscribers(client, STALLED_STREAMS)
            with (
                grpcio_subscription(client, collections=[COLLECTION]) as refused,
                pytest.raises(grpc.RpcError) as raised,
            ):
                refused.next()
            assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            # Written while they are stalled: their subscriptions hold them, unsent.
            put(client, COLLECTION, "during", '{"n": 1}')
            hostile.read_until(
                lambda: all(stream.ended_at for stream in streams),
                timeout + CUT_OFF_SLACK,
                "every windowless stream to be cut off",
            )
            wait_for_subscribers(client, 0)
            with grpcio_subscription(
                client, collections=[COLLECTION], since_sequence=head, epoch=epoch
            ) as resumed:
                opening, missed = resumed.take(2, heartbeats=True)
                assert (opening.change_type, opening.sequence) == (HEARTBEAT, head)
                assert (missed.change_type, missed.doc_id) == (UPSERT, "during")
            figures = scrape(server)
            warnings = cut_off_warnings(server.log)
    finally:
        client.close()

    for stream in streams:
        assert not stream.data, "a stream without window was sent data"
        assert stream.trailers is not None, stream
        assert stream.trailers["grpc-status"] == GRPC_STATUS_UNAVAILABLE
        assert "cut off" in stream.status_message
        assert "the client did not read it" in stream.status_message
        assert f"since_sequence={head} and epoch={epoch}" in stream.status_message
        assert stream.ended_at is not None
        stalled_for = stream.ended_at - stream.opened_at
        assert timeout <= stalled_for <= timeout + CUT_OFF_SLACK, stalled_for
    assert [(port, how) for port, _, how in warnings] == [
        (hostile.local_port, "UNAVAILABLE")
    ] * STALLED_STREAMS
    assert all(timeout <= seconds <= timeout + CUT_OFF_SLACK for _, seconds, _ in warnings)
    assert figures[("peat_stalled_streams_total", ())] == STALLED_STREAMS
    assert "Traceback" not in server.log


def test_a_stream_stalled_mid_message_is_reset(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """With a window of 8 bytes, the opening event's first 8 bytes go out and the rest never
    can: trailers now would follow half a message, so the stream is reset instead, and its
    slot freed all the same."""
    timeout = 1.0
    server = start_server(
        *("--heartbeat-interval", "200ms", "--stalled-stream-timeout", f"{timeout:g}s")
    )
    client = GrpcioClient(server.address, grpcio_api)
    try:
        with windowless_connection(server.port, window=8) as hostile:
            stream = hostile.open(wire.SUBSCRIBE, subscribe_request())
            wait_for_subscribers(client, 1)
            hostile.read_until(
                lambda: stream.ended_at is not None,
                timeout + CUT_OFF_SLACK,
                "the stream to be reset",
            )
            wait_for_subscribers(client, 0)
    finally:
        client.close()

    assert len(stream.data) == 8
    assert stream.trailers is None
    assert stream.reset_code == h2.errors.ErrorCodes.CANCEL
    assert [(port, how) for port, _, how in cut_off_warnings(server.log)] == [
        (hostile.local_port, "RST_STREAM mid-message")
    ]
    assert "Traceback" not in server.log


# The slow reader's documents, and how long it takes over each: a batch of them takes several
# timeouts to send, while each send (one document) completes well within one.
SLOW_DOCUMENTS = 30
SLOW_DOCUMENT_BYTES = 16 * 1024
SLOW_READ_PAUSE = 0.2


def test_a_slow_reader_that_keeps_reading_is_not_cut_off(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """One commit of 30 documents of 16 KiB to a reader with a 64 KiB window that takes one
    every 0.2 s: its batch takes about 6 s to send, three times the timeout, and it gets every
    document on the same stream."""
    timeout = 2.0
    server = start_server(
        *("--heartbeat-interval", "200ms", "--stalled-stream-timeout", f"{timeout:g}s")
    )
    client = GrpcioClient(server.address, grpcio_api)
    reader = GrpclibStream(
        server.port,
        pb.SubscribeRequest(collections=["slow"], control_events=True),
        small_window_config(),
    )
    try:
        reader.next(heartbeats=True)  # the opening event
        doc_ids = [f"d{i:02d}" for i in range(SLOW_DOCUMENTS)]
        document = {"collection": "slow", "json_data": padded(SLOW_DOCUMENT_BYTES)}
        writes = [client.message("DocumentWrite", {**document, "doc_id": d}) for d in doc_ids]
        client.call("WriteDocuments", writes=writes)
        started = time.monotonic()
        received = []
        for _ in range(SLOW_DOCUMENTS):
            received.append(reader.next().doc_id)
            time.sleep(SLOW_READ_PAUSE)  # a slow reader, not a measure of time
        took = time.monotonic() - started
        assert status(client)["subscribers"] == 1
    finally:
        reader.close()
        client.close()

    assert received == doc_ids
    assert took > 2 * timeout, f"the batch took only {took:.1f} s: the reader was not slow"
    assert "stalled" not in server.log
