"""Hostile input end to end: fuzzed fields through the official client, garbage and silent
connections on the gRPC port, and a thousand subscribers at once.

Whatever a client sends, the call ends with success or a clean status whose message says what
is wrong, within its deadline; the server keeps serving everyone else and logs no traceback.
The tests at the end pin down inputs that broke this promise once.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import grpclib.client
import pytest
from google.protobuf.descriptor import FieldDescriptor
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from peat_sync import wire
from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import (
    TYPED,
    TYPED_COLLECTIONS,
    UPSERT,
    Event,
    GrpcioClient,
    delete,
    get,
    get_typed,
    list_ids,
    put,
    put_typed,
    status,
)
from tests.helpers.streams import (
    grpcio_subscription,
    open_grpclib_subscribe,
    recv_event,
    wait_for_subscribers,
    wait_for_subscribers_async,
)
from tests.helpers.waiting import CALL_TIMEOUT, STREAM_TIMEOUT, run_scenario, within

# The statuses a refused request may end with; anything else (UNKNOWN, INTERNAL, a deadline)
# is a server that failed to say what is wrong.
CLEAN_FAILURES = frozenset(
    {"INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE"}
)
# Enough examples per RPC to reach every kind of input, few enough for seconds per test.
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Collections and documents the fuzzed reads and deletes can find.
SEEDED = {("a", "x"): '{"seeded": 1}', ("a", "y"): '{"seeded": 2}', ("b", "x"): "{}"}

# ---------------------------------------------------------------------------------------------
# Strategies

CONTROL_CHARACTERS = st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u2028\u202e")
TEXT_CHARACTERS = st.characters(codec="utf-8") | CONTROL_CHARACTERS
SHORT_TEXT = st.text(TEXT_CHARACTERS, max_size=40)
# The official client refuses to encode these, and JSON can carry one only as an escape. A few
# suffice: hypothesis favours strategies with many distinct values, and most would be refused.
WITH_A_LONE_SURROGATE = st.sampled_from(["\ud800", "a\udfffb", "\udc80\udc80"])


class Described(str):
    """A long string that shows as the call that made it: a failing example then reads
    `huge_string(3000000)`, not three megabytes."""

    description: str

    def __repr__(self) -> str:
        return self.description


def described(text: str, function: Callable[..., str], *args: Any) -> Described:
    string = Described(text)
    string.description = f"{function.__name__}{args!r}".replace(",)", ")")
    return string


def repeated_to(unit: str, length: int) -> Described:
    return described((unit * (length // len(unit) + 1))[:length], repeated_to, unit, length)


# Long strings repeat a short unit: drawing megabytes character by character is slow, and the
# server's limits are on length.
LONG_TEXT = st.builds(
    repeated_to,
    st.text(TEXT_CHARACTERS, min_size=1, max_size=3),
    st.sampled_from([511, 512, 513, 4096, 65_536, 1_048_577, 3_000_000]),
)
ENCODABLE_TEXT = st.one_of(st.just(""), SHORT_TEXT, LONG_TEXT)
HOSTILE_TEXT = ENCODABLE_TEXT | WITH_A_LONE_SURROGATE
# Names: often ones that exist, so that reads and deletes find something.
ENCODABLE_NAMES = st.one_of(
    st.sampled_from(["a", "b", "x", "y"]),
    ENCODABLE_TEXT,
    st.sampled_from(["x" * 512, "é" * 256, "é" * 257, " ", ".", "\u200b", "a/b", "*"]),
)
NAMES = ENCODABLE_NAMES | WITH_A_LONE_SURROGATE

UINT64_LIMITS = st.sampled_from([0, 1, 2**63 - 1, 2**63, 2**64 - 1]) | st.integers(0, 2**64 - 1)
INT64_LIMITS = st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63)]) | st.integers(-(2**63), 2**63 - 1)
UINT32_LIMITS = st.sampled_from([0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1)
# Proto3 enums are open: the client sends any int32, defined or not.
ENUM_VALUES = st.integers(0, 6) | st.integers(-(2**31), 2**31 - 1)


def json_values(
    integers: st.SearchStrategy[int], text: st.SearchStrategy[str]
) -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | integers | st.floats() | text,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=12,
    )


def encoded(value: Any, ensure_ascii: bool) -> str:
    """`value` as JSON text; NaN and infinities come out as the bare words, which are not
    JSON; with `ensure_ascii`, a lone surrogate comes out as a valid `\\udXXX` escape."""
    return json.dumps(value, ensure_ascii=ensure_ascii)


def deeply_nested(depth: int, kind: str) -> Described:
    if kind == "list":
        text = '{"deep": ' + "[" * depth + "]" * depth + "}"
    else:
        text = '{"deep": ' * depth + "1" + "}" * depth
    return described(text, deeply_nested, depth, kind)


def huge_string(length: int) -> Described:
    return described('{"pad": "' + "x" * length + '"}', huge_string, length)


def many_keys(count: int) -> Described:
    text = "{" + ",".join(f'"k{index}": {index}' for index in range(count)) + "}"
    return described(text, many_keys, count)


ANY_JSON = json_values(st.integers(), SHORT_TEXT)
DOCUMENTS = st.one_of(
    # objects (the valid kind), then every other JSON value
    st.builds(encoded, st.dictionaries(SHORT_TEXT, ANY_JSON), st.booleans()),
    st.builds(encoded, ANY_JSON, st.booleans()),
    # lone surrogates as JSON escapes: valid JSON text that no UTF-8 string can hold
    st.builds(
        encoded, st.dictionaries(WITH_A_LONE_SURROGATE, WITH_A_LONE_SURROGATE), st.just(True)
    ),
    st.builds(
        deeply_nested,
        # Python's parser stops near 1,000 levels, less the depth of the stack it runs on.
        st.sampled_from([100, 998, 999, 1000, 10_000, 100_000]) | st.integers(900, 200_000),
        st.sampled_from(["list", "object"]),
    ),
    st.builds(huge_string, st.sampled_from([1_048_560, 1_048_570, 3_000_000])),
    st.builds(many_keys, st.sampled_from([10_000, 100_000])),
    st.sampled_from(
        [
            "NaN",
            '{"a": NaN}',
            '{"a": Infinity}',
            '{"a": -Infinity}',
            '{"a": 1e999}',
            '{"a": -0}',
            '{"a": 1' + "0" * 5000 + "}",
            '{"a": 1, "a": 2}',
            '{"a": 1}\x00',
            "\ufeff{}",
        ]
    ),
    HOSTILE_TEXT,
)


def document_write(collection: str, doc_id: str, json_data: str | None) -> dict[str, str]:
    """A `DocumentWrite`'s fields (built with the request, which may be refused)."""
    write = {"collection": collection, "doc_id": doc_id}
    if json_data is not None:
        write["json_data"] = json_data
    return write


def many_writes(count: int) -> list[dict[str, str]]:
    return [document_write("many", f"d{index}", "{}") for index in range(count)]


def request_fields(rpc: str) -> st.SearchStrategy[dict[str, Any]]:
    """The fields of a fuzzed request of `rpc`."""
    if rpc == "PutDocument":
        return st.fixed_dictionaries({"collection": NAMES, "doc_id": NAMES, "json_data": DOCUMENTS})
    if rpc in ("GetDocument", "DeleteDocument"):
        return st.fixed_dictionaries({"collection": NAMES, "doc_id": NAMES})
    if rpc == "ListDocuments":
        return st.fixed_dictionaries({"collection": NAMES})
    if rpc == "WriteDocuments":
        # One name the client refuses would refuse the whole request.
        writes = st.lists(
            st.builds(document_write, ENCODABLE_NAMES, ENCODABLE_NAMES, st.none() | DOCUMENTS),
            max_size=4,
        )
        # At most 10,000 writes are accepted.
        limits = st.builds(many_writes, st.sampled_from([10_000, 10_001]))
        return st.fixed_dictionaries({"writes": writes | limits})
    assert rpc in ("Subscribe", "SubscribeBatched"), rpc
    return st.fixed_dictionaries(
        {"collections": st.lists(ENCODABLE_NAMES, max_size=3)},
        optional={
            "since_sequence": UINT64_LIMITS,
            "epoch": HOSTILE_TEXT,
            "snapshot": st.booleans(),
        },
    )


def field_values(field: Any) -> st.SearchStrategy[Any]:
    """Values of every kind the official client sends for a field of a typed message."""
    scalars: dict[int, st.SearchStrategy[Any]] = {
        FieldDescriptor.TYPE_STRING: ENCODABLE_NAMES,
        FieldDescriptor.TYPE_DOUBLE: st.floats(),
        FieldDescriptor.TYPE_ENUM: ENUM_VALUES,
        FieldDescriptor.TYPE_UINT32: UINT32_LIMITS,
        FieldDescriptor.TYPE_INT64: INT64_LIMITS,
    }
    values = scalars[field.type]
    if field.is_repeated:
        return st.lists(values, max_size=3)
    return values


def typed_messages(message_type: Any) -> st.SearchStrategy[dict[str, Any]]:
    fields = message_type.DESCRIPTOR.fields
    return st.fixed_dictionaries({}, optional={field.name: field_values(field) for field in fields})


# Beyond the range of some proto integer type, or of a double.
OUT_OF_RANGE = st.sampled_from([2**31, 2**32, 2**63, 2**64, 2**70, -(2**63) - 1, 10**400])
# Values for the typed fields of stored documents: of every JSON type, beyond every range, and
# strings that are no UTF-8.
FIELD_VALUES = st.one_of(
    OUT_OF_RANGE, WITH_A_LONE_SURROGATE, json_values(st.integers(), SHORT_TEXT)
)


def typed_documents(message_type: Any) -> st.SearchStrategy[str]:
    """Documents whose keys are mostly the fields of `message_type`; escaped to ASCII, so that
    a lone surrogate is valid JSON."""
    keys = st.sampled_from([field.name for field in message_type.DESCRIPTOR.fields]) | SHORT_TEXT
    return st.builds(encoded, st.dictionaries(keys, FIELD_VALUES, max_size=6), st.just(True))


# ---------------------------------------------------------------------------------------------
# Calls and checks

Outcome = tuple[str, str]


def outcome_of(call: Callable[[], Any]) -> Outcome:
    """The status code's name and message of a finished call ("OK" if it succeeded)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code().name, exc.details() or ""
    return "OK", ""


def first_message(call: Any) -> None:
    """Read the first message of a stream, then cancel it."""
    try:
        next(call)
    except StopIteration:
        raise AssertionError("the stream ended without a message or a status") from None
    finally:
        call.cancel()


def build(message_type: Any, fields: dict[str, Any]) -> Any | None:
    """The request, or None if the client refuses to encode it (a lone surrogate)."""
    try:
        return message_type(**fields)
    except UnicodeEncodeError:
        event("refused by the client: a lone surrogate")
        return None


def assert_clean(outcome: Outcome) -> None:
    """The call succeeded, or failed with a clean status and a message."""
    code, message = outcome
    if currently_in_test_context():  # the statuses' share, for --hypothesis-show-statistics
        event(code)
    if code != "OK":
        assert code in CLEAN_FAILURES, outcome
        assert message.strip(), f"{code} without a message"


def assert_serving(server: ServerProcess, client: GrpcioClient, since: int = 0) -> None:
    """The server answers, and has logged no traceback since log offset `since`: an example
    is blamed for its own traceback only."""
    status(client)  # fails unless answered within CALL_TIMEOUT
    log = server.log[since:]
    assert "Traceback" not in log, log[-5000:]


@pytest.fixture
def seeded_client(grpcio_client: GrpcioClient) -> GrpcioClient:
    """The official client, on a server that holds the SEEDED documents."""
    for (collection, doc_id), json_data in SEEDED.items():
        put(grpcio_client, collection, doc_id, json_data)
    return grpcio_client


# ---------------------------------------------------------------------------------------------
# Fuzzed RPC fields, through the official client


@pytest.mark.parametrize(
    "rpc", ["PutDocument", "GetDocument", "DeleteDocument", "ListDocuments", "WriteDocuments"]
)
@FUZZ
@given(data=st.data())
def test_fuzzed_document_calls_end_cleanly(
    server: ServerProcess, seeded_client: GrpcioClient, rpc: str, data: st.DataObject
) -> None:
    """Any names (empty, megabytes long, control characters, lone surrogates), any document,
    up to 10,001 writes in one request."""
    client = seeded_client
    since = len(server.log)
    request = build(getattr(client.pb2, f"{rpc}Request"), data.draw(request_fields(rpc)))
    if request is not None:
        method = getattr(client.stub, rpc)
        assert_clean(outcome_of(lambda: method(request, timeout=CALL_TIMEOUT)))
    assert_serving(server, client, since)


@FUZZ
# Each kind of hostile document at least once, whatever the draws.
@example(json_data=deeply_nested(100_000, "list"))
@example(json_data=deeply_nested(10_000, "object"))
@example(json_data=huge_string(3_000_000))
@example(json_data=many_keys(100_000))
@example(json_data="[1, 2]")
@example(json_data='{"a": NaN}')
@example(json_data='{"a": "\\udc80"}')
@given(json_data=DOCUMENTS)
def test_fuzzed_documents_get_one_verdict_from_both_writes(
    server: ServerProcess, grpcio_client: GrpcioClient, json_data: str
) -> None:
    """Any document, under valid names: PutDocument and a WriteDocuments of one write both
    end cleanly, with the same status."""
    client = grpcio_client
    since = len(server.log)
    put_request = build(
        client.pb2.PutDocumentRequest, {"collection": "a", "doc_id": "put", "json_data": json_data}
    )
    if put_request is not None:
        write = document_write("a", "write", json_data)
        write_request = client.pb2.WriteDocumentsRequest(writes=[write])
        put_outcome = outcome_of(lambda: client.stub.PutDocument(put_request, timeout=CALL_TIMEOUT))
        write_outcome = outcome_of(
            lambda: client.stub.WriteDocuments(write_request, timeout=CALL_TIMEOUT)
        )
        assert_clean(put_outcome)
        assert_clean(write_outcome)
        assert write_outcome[0] == put_outcome[0], (put_outcome, write_outcome)
    assert_serving(server, client, since)


@pytest.mark.parametrize("rpc", ["Subscribe", "SubscribeBatched"])
def test_fuzzed_subscriptions_open_cleanly(
    server: ServerProcess, seeded_client: GrpcioClient, rpc: str
) -> None:
    """Open the stream, read its first message (or its status), cancel it; in the end, the
    server has let every stream go."""
    client = seeded_client
    method = getattr(client.stub, rpc)

    @FUZZ
    @given(fields=request_fields(rpc))
    def open_read_cancel(fields: dict[str, Any]) -> None:
        since = len(server.log)
        # This proto's stream, which opens with a HEARTBEAT: a legacy one (no field of this
        # proto's own) may rightly send nothing on an idle store.
        request = build(client.pb2.SubscribeRequest, {**fields, "control_events": True})
        if request is not None:
            assert_clean(outcome_of(lambda: first_message(method(request, timeout=CALL_TIMEOUT))))
        assert_serving(server, client, since)

    open_read_cancel()
    wait_for_subscribers(client, 0)


def typed_read(client: GrpcioClient, kind: str) -> Outcome:
    """The outcome of the typed read of `kind` (GetPlatforms ...)."""
    _, _, get_rpc, _, _ = TYPED[kind]
    request = getattr(client.pb2, f"{get_rpc}Request")()
    method = getattr(client.stub, get_rpc)
    return outcome_of(lambda: method(request, timeout=CALL_TIMEOUT))


def clear(client: GrpcioClient, collection: str) -> None:
    """Delete every document of `collection`: each example starts from an empty one, so that
    a failure is the example's own."""
    for doc_id in list_ids(client, collection):
        delete(client, collection, doc_id)


@pytest.mark.parametrize("kind", list(TYPED))
@FUZZ
@given(data=st.data())
def test_fuzzed_typed_puts_end_cleanly_and_read_back(
    server: ServerProcess, grpcio_client: GrpcioClient, kind: str, data: st.DataObject
) -> None:
    """Any field values (invalid enums, NaN, the integer limits, hostile ids): the put ends
    cleanly, and the typed read of the collection still works."""
    client = grpcio_client
    since = len(server.log)
    put_rpc, field, _, _, message_name = TYPED[kind]
    message_type = getattr(client.pb2, message_name)
    message = build(message_type, data.draw(typed_messages(message_type)))
    try:
        if message is not None:
            request = getattr(client.pb2, f"{put_rpc}Request")(**{field: message})
            method = getattr(client.stub, put_rpc)
            assert_clean(outcome_of(lambda: method(request, timeout=CALL_TIMEOUT)))
        assert typed_read(client, kind) == ("OK", "")
        assert_serving(server, client, since)
    finally:
        clear(client, TYPED_COLLECTIONS[kind])


@pytest.mark.parametrize("kind", list(TYPED))
@FUZZ
@given(data=st.data())
def test_typed_reads_survive_any_document_in_their_collection(
    server: ServerProcess, grpcio_client: GrpcioClient, kind: str, data: st.DataObject
) -> None:
    """A document put as plain JSON in a typed collection, with values of the wrong type or
    beyond the range of its typed fields, is read with those fields defaulted by the typed
    read, which succeeds."""
    client = grpcio_client
    since = len(server.log)
    _, _, _, _, message_name = TYPED[kind]
    json_data = data.draw(typed_documents(getattr(client.pb2, message_name)))
    request = build(
        client.pb2.PutDocumentRequest,
        {"collection": TYPED_COLLECTIONS[kind], "doc_id": "fuzzed", "json_data": json_data},
    )
    try:
        if request is not None:
            put_document = client.stub.PutDocument
            assert_clean(outcome_of(lambda: put_document(request, timeout=CALL_TIMEOUT)))
        assert typed_read(client, kind) == ("OK", "")
        assert_serving(server, client, since)
    finally:
        clear(client, TYPED_COLLECTIONS[kind])


# ---------------------------------------------------------------------------------------------
# Garbage and silence on the port

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Hostile connections held open at once, each opened with the same kind of bytes.
HOSTILE_CONNECTIONS = 20


def random_bytes(index: int) -> bytes:
    return random.Random(index).randbytes(4096)


def random_frames(index: int) -> bytes:
    """The HTTP/2 preface, then frames of any type, flags and stream whose payloads are
    random: the frame parser sees them whole (random bytes after the preface would announce a
    frame of megabytes, and wait for it)."""
    rng = random.Random(index)
    frames = [H2_PREFACE]
    for _ in range(16):
        payload = rng.randbytes(rng.randrange(64))
        frame_type, flags, stream = rng.randrange(12), rng.randrange(256), rng.randrange(2**31)
        header = len(payload).to_bytes(3, "big") + bytes([frame_type, flags])
        frames.append(header + stream.to_bytes(4, "big") + payload)
    return b"".join(frames)


OPENINGS: dict[str, Callable[[int], bytes]] = {
    "random-bytes": random_bytes,
    "http1": lambda index: f"GET /{index} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode(),
    "h2-preface-then-random-frames": random_frames,
    "h2-preface-then-nothing": lambda index: H2_PREFACE,
    "half-open": lambda index: b"",
}


@pytest.mark.parametrize("opening", OPENINGS.values(), ids=list(OPENINGS))
def test_hostile_connections_leave_other_clients_served(
    server: ServerProcess, grpcio_client: GrpcioClient, opening: Callable[[int], bytes]
) -> None:
    """While twenty connections of one hostile kind are open, another client puts and
    subscribes as usual."""
    client = grpcio_client
    with ExitStack() as hostile:
        for index in range(HOSTILE_CONNECTIONS):
            sock = hostile.enter_context(
                socket.create_connection(("127.0.0.1", server.port), timeout=CALL_TIMEOUT)
            )
            sock.sendall(opening(index))
        # With every one of them still open:
        with grpcio_subscription(client, collections=["ok"]) as subscription:
            wait_for_subscribers(client, 1)
            sequence = put(client, "ok", "doc", '{"ok": true}')
            change = subscription.next()
        assert (change.change_type, change.doc_id, change.sequence) == (UPSERT, "doc", sequence)
        assert get(client, "ok", "doc") == ('{"ok": true}', sequence)
    assert_serving(server, client)


# ---------------------------------------------------------------------------------------------
# A thousand subscribers

# grpclib serves at most 100 concurrent streams per HTTP/2 connection (h2's default setting).
SUBSCRIBER_CONNECTIONS = 10
STREAMS_PER_CONNECTION = 100
SUBSCRIBERS = SUBSCRIBER_CONNECTIONS * STREAMS_PER_CONNECTION
# Server memory per open Subscribe stream, at most. Measured: 21-23 KiB (an idle server holds
# 43 MiB, and 65-66 MiB with 1,000 streams open). Three times that leaves room for allocator
# noise, while an idle stream holding a send chunk of its own (64 KiB) would cross it.
MAX_KIB_PER_SUBSCRIBER = 64


def rss_kib(pid: int) -> int:
    """The resident memory of process `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def test_a_thousand_subscribers_each_get_the_write(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """Every stream gets the write, GetStatus counts them all, and the server's memory grows
    by a bounded amount per stream."""
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> tuple[int, int, int, list[Event]]:
        """Asyncio-flavoured: open every stream, write once, read the write from each."""
        writer = grpclib.client.Channel("127.0.0.1", server.port)
        readers = [
            grpclib.client.Channel("127.0.0.1", server.port) for _ in range(SUBSCRIBER_CONNECTIONS)
        ]
        stub = pb.PeatSidecarStub(writer, timeout=CALL_TIMEOUT)
        try:
            await stub.get_status()
            idle = rss_kib(pid)
            request = pb.SubscribeRequest(collections=["fan"], control_events=True)
            streams = await asyncio.gather(
                *(
                    open_grpclib_subscribe(channel, request)
                    for channel in readers
                    for _ in range(STREAMS_PER_CONNECTION)
                )
            )
            await within(wait_for_subscribers_async(stub, SUBSCRIBERS), STREAM_TIMEOUT)
            subscribed = rss_kib(pid)
            written = await stub.put_document(
                pb.PutDocumentRequest(collection="fan", doc_id="all", json_data='{"n": 1}')
            )
            changes = await asyncio.gather(
                *(recv_event(stream, STREAM_TIMEOUT) for stream in streams)
            )
            return idle, subscribed, written.sequence, changes
        finally:
            for channel in readers:  # ends every stream of the connection
                channel.close()
            writer.close()

    idle, subscribed, sequence, changes = run_scenario(scenario, timeout=STREAM_TIMEOUT)
    assert len(changes) == SUBSCRIBERS
    assert {(change.change_type, change.doc_id, change.sequence) for change in changes} == {
        (UPSERT, "all", sequence)
    }
    growth = subscribed - idle
    assert growth <= SUBSCRIBERS * MAX_KIB_PER_SUBSCRIBER, f"RSS {idle} KiB -> {subscribed} KiB"
    wait_for_subscribers(grpcio_client, 0)
    assert_serving(server, grpcio_client)


# ---------------------------------------------------------------------------------------------
# Request bytes that are not the request


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Protobuf field `number` holding `payload` (a string, bytes or a message)."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def fixed64_field(number: int, value: bytes) -> bytes:
    return varint(number << 3 | 1) + value


# A lone surrogate as the surrogatepass codec writes it: what a client that does not check its
# strings sends (the official clients refuse to).
LONE_SURROGATE_UTF8 = "\udc80".encode("utf-8", "surrogatepass")
STRING_BYTES = st.one_of(
    st.text(max_size=20).map(str.encode),
    st.binary(max_size=40),
    st.sampled_from([LONE_SURROGATE_UTF8, b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]),
)
# Bytes that are no whole protobuf message: field number 0, a length past the end, a varint
# that never ends, a length that never ends.
NOT_PROTOBUF = st.sampled_from([b"\x00", b"\x0a\x05ab", b"\xff\xff\xff\xff", b"\x0a\xff"])
UNKNOWN_FIELDS = st.builds(length_delimited, st.integers(16, 2**29 - 1), st.binary(max_size=20))


# How deep nested messages are built field by field: a recursive message (SubscriptionQuery)
# has no bottom. Deeper, a message field holds any bytes.
NESTING = 4


def field_bytes(field: Any, depth: int) -> st.SearchStrategy[bytes]:
    """One occurrence of `field`, with its own wire type and any content."""
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        content = (
            message_bytes(field.message_type, depth - 1) if depth > 0 else st.binary(max_size=20)
        )
        return st.builds(length_delimited, st.just(field.number), content)
    if field.type == FieldDescriptor.TYPE_STRING:
        return st.builds(length_delimited, st.just(field.number), STRING_BYTES)
    if field.type == FieldDescriptor.TYPE_DOUBLE:
        return st.builds(fixed64_field, st.just(field.number), st.binary(min_size=8, max_size=8))
    # Booleans, enums and integers of every width: any varint, up to 64 bits.
    return st.builds(varint_field, st.just(field.number), UINT64_LIMITS)


def message_bytes(descriptor: Any, depth: int = NESTING) -> st.SearchStrategy[bytes]:
    """Encodings of `descriptor`'s message as a parser meets them: any of its fields, in any
    order, repeated or not, with invalid UTF-8 in strings and any varint in numbers, among
    unknown fields. Each field has its own wire type: see
    test_fields_of_another_wire_type_are_refused_cleanly."""
    fields = [field_bytes(field, depth) for field in descriptor.fields]
    return st.lists(st.one_of(*fields, UNKNOWN_FIELDS), max_size=8).map(b"".join)


CONTROL_EVENTS = bytes([6 << 3, 1])


def call_with_bytes(client: GrpcioClient, rpc: str, payload: bytes) -> Outcome:
    """Call `rpc` with `payload` as its request, as it is; read a stream's first message."""
    path = wire.rpc_path(rpc)
    if rpc.startswith("Subscribe"):
        stream = client.channel.unary_stream(
            path, request_serializer=bytes, response_deserializer=bytes
        )
        # With control_events (field 6) = true, a request served opens with a HEARTBEAT; a
        # legacy one may rightly send nothing on an idle store.
        payload += CONTROL_EVENTS
        return outcome_of(lambda: first_message(stream(payload, timeout=CALL_TIMEOUT)))
    unary = client.channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes)
    return outcome_of(lambda: unary(payload, timeout=CALL_TIMEOUT))


@pytest.mark.parametrize(
    "rpc",
    [
        "PutDocument",
        "GetDocument",
        "DeleteDocument",
        "ListDocuments",
        "WriteDocuments",
        "PutTrack",
        "Subscribe",
        "SubscribeBatched",
    ],
)
@FUZZ
@given(data=st.data())
def test_fuzzed_request_bytes_end_cleanly(
    server: ServerProcess, seeded_client: GrpcioClient, rpc: str, data: st.DataObject
) -> None:
    """The request's bytes as a client that does not check them sends them: the decoding
    fails cleanly, or the request is served."""
    client = seeded_client
    since = len(server.log)
    request_type = "SubscribeRequest" if rpc.startswith("Subscribe") else f"{rpc}Request"
    descriptor = getattr(client.pb2, request_type).DESCRIPTOR
    payload = data.draw(message_bytes(descriptor) | NOT_PROTOBUF)
    assert_clean(call_with_bytes(client, rpc, payload))
    assert_serving(server, client, since)


UNDECODABLE_REQUESTS = {
    "put-lone-surrogate": (
        "PutDocument",
        length_delimited(1, b"c" + LONE_SURROGATE_UTF8)
        + length_delimited(2, b"d")
        + length_delimited(3, b"{}"),
    ),
    "put-not-protobuf": ("PutDocument", b"\xff\xff\xff\xff"),
    "write-lone-surrogate": (
        "WriteDocuments",
        length_delimited(1, length_delimited(1, b"c") + length_delimited(2, LONE_SURROGATE_UTF8)),
    ),
    "get-invalid-utf8": (
        "GetDocument",
        length_delimited(1, b"\xff\xfe") + length_delimited(2, b"d"),
    ),
    "list-lone-surrogate": ("ListDocuments", length_delimited(1, LONE_SURROGATE_UTF8)),
    "typed-lone-surrogate": (
        "PutTrack",
        length_delimited(1, length_delimited(1, LONE_SURROGATE_UTF8)),
    ),
    "subscribe-lone-surrogate": ("Subscribe", length_delimited(1, LONE_SURROGATE_UTF8)),
}


@pytest.mark.parametrize(
    ("rpc", "payload"), UNDECODABLE_REQUESTS.values(), ids=list(UNDECODABLE_REQUESTS)
)
def test_requests_that_do_not_decode_are_invalid_argument(
    server: ServerProcess, grpcio_client: GrpcioClient, rpc: str, payload: bytes
) -> None:
    code, message = call_with_bytes(grpcio_client, rpc, payload)
    assert code == "INVALID_ARGUMENT", (code, message)
    assert "the request is not a valid" in message
    assert_serving(server, grpcio_client)


# Each a field of the request sent with another wire type than its own: the betterproto2 decoder
# keeps the value (an int for a message or a string, bytes for a number) for the handler to
# trip on.
OTHER_WIRE_TYPES = {
    "track-as-varint": ("PutTrack", varint_field(1, 0)),
    "track-id-as-varint": ("PutTrack", length_delimited(1, varint_field(1, 5))),
    "collection-as-varint": ("GetDocument", varint_field(1, 5)),
    "collections-as-varint": ("Subscribe", varint_field(1, 5)),
    "since-as-bytes": ("SubscribeBatched", length_delimited(2, b"")),
}


@pytest.mark.parametrize(("rpc", "payload"), OTHER_WIRE_TYPES.values(), ids=list(OTHER_WIRE_TYPES))
def test_fields_of_another_wire_type_are_refused_cleanly(
    server: ServerProcess, grpcio_client: GrpcioClient, rpc: str, payload: bytes
) -> None:
    """Refused, or ignored as the protobuf runtime's own decoder does: either way cleanly."""
    assert_clean(call_with_bytes(grpcio_client, rpc, payload))
    assert_serving(server, grpcio_client)


def test_a_truncated_request_is_refused(grpcio_client: GrpcioClient) -> None:
    client = grpcio_client
    # The track's id announces 5 bytes and holds 2.
    truncated = length_delimited(1, b"\x0a\x05ab")
    code, _ = call_with_bytes(client, "PutTrack", truncated)
    assert code == "INVALID_ARGUMENT"
    assert get_typed(client, "track") == []


# ---------------------------------------------------------------------------------------------
# Stored documents that do not fit their typed collection

# Documents put as plain JSON in a typed collection, each with a value that no field of its
# type can hold.
MISFITS = {
    "int64-below-range": ("command", '{"id": "bad", "created_at": -9223372036854775809}'),
    "int64-above-range": ("command", '{"id": "bad", "expires_at": 9223372036854775808}'),
    "uint32-negative": ("cell", '{"id": "bad", "node_count": -1}'),
    "uint32-beyond-64-bits": ("cell", '{"id": "bad", "node_count": 1180591620717411303424}'),
    "uint32-old-name": ("cell", '{"id": "bad", "platform_count": -1}'),
    "enum-as-string": ("node", '{"id": "bad", "status": "NODE_STATUS_READY"}'),
    "double-overflow": ("track", '{"id": "bad", "latitude": 1' + "0" * 400 + "}"),
    "lone-surrogate-escape": ("track", '{"id": "bad", "classification": "\\udc80"}'),
}


@pytest.mark.parametrize(("kind", "json_data"), MISFITS.values(), ids=list(MISFITS))
def test_typed_reads_default_stored_fields_that_do_not_fit(
    server: ServerProcess, grpcio_client: GrpcioClient, kind: str, json_data: str
) -> None:
    """As upstream reads it, the document is returned with the field that does not fit at
    its default, and a warning: not wrapped into another value, and not failing the read for
    everyone."""
    client = grpcio_client
    put_typed(client, kind, {"id": "good"})
    put(client, TYPED_COLLECTIONS[kind], "bad", json_data)
    empty = {key: value for key, value in get_typed(client, kind)[1].items() if key != "id"}
    assert get_typed(client, kind) == [{"id": "bad", **empty}, {"id": "good", **empty}]
    server.wait_for_log(
        rf"{TYPED_COLLECTIONS[kind]}/bad is returned with defaults for the fields that do not fit"
    )
    assert_serving(server, client)


# ---------------------------------------------------------------------------------------------
# Long client strings in statuses and logs

# A log line or a status message this long quotes more of a client's string than anyone reads.
MAX_ECHO = 10_000


def test_a_huge_peer_id_is_refused_promptly(
    server: ServerProcess, grpcio_client: GrpcioClient
) -> None:
    """The refusal quotes the id cut short: a status message is an HTTP/2 header, whose HPACK
    coding takes time quadratic in its length (a 1 MB one blocked the server for a minute)."""
    client = grpcio_client
    request = client.pb2.DisconnectPeerRequest(endpoint_id="x" * 1_000_000)
    code, message = outcome_of(lambda: client.stub.DisconnectPeer(request, timeout=5.0))
    assert code == "FAILED_PRECONDITION", code
    assert len(message) < MAX_ECHO
    assert_serving(server, client)


ECHOED = {
    "unknown-epoch": {"since_sequence": 0, "epoch": "e" * 1_000_000},
    "collections": {"collections": [f"{index:0>500}" for index in range(2_000)]},
}


@pytest.mark.parametrize("request_fields", ECHOED.values(), ids=list(ECHOED))
def test_long_subscribe_fields_are_quoted_cut_short(
    server: ServerProcess, grpcio_client: GrpcioClient, request_fields: dict[str, Any]
) -> None:
    """An unknown epoch in the RESYNC message and the log, the collections in the log: a
    megabyte each would flood the log with every Subscribe."""
    with grpcio_subscription(grpcio_client, **request_fields) as subscription:
        opening = subscription.next(heartbeats=True)
    server.wait_for_log(r"subscriber #\d+ \([^)]*\) closed at sequence")
    assert len(opening.message) < MAX_ECHO
    assert max(len(line) for line in server.log.splitlines()) < MAX_ECHO
