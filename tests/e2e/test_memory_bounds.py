"""Memory bounded by configuration under requests that are too large, hostile or legal: a
message over its limit is refused as soon as its length prefix arrives, and legal requests
wait for room in the in-flight budget instead of piling up. The server's RSS is read from
/proc and held to the formula of docs/operations.md, with generous slack."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import grpclib.client
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from peat_sync import wire
from peat_sync.bench.launcher import ServerProcess
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.servers import StartServer
from tests.helpers.streams import (
    grpclib_subscribe,
    small_window_config,
    wait_for_subscribers_async,
)
from tests.helpers.waiting import run_scenario

MiB = 1024 * 1024
CHUNK = 64 * 1024
# What the server may grow by beyond the formula's terms: allocator slack, grpclib's and
# h2's buffers for a few connections, Python objects around the bytes.
SLACK = 48 * MiB


def rss(server: ServerProcess) -> int:
    for line in Path(f"/proc/{server.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {server.pid}")


def host_port(server: ServerProcess) -> tuple[str, int]:
    host, port = server.address.rsplit(":", 1)
    return host, int(port)


async def announce_and_stream(
    server: ServerProcess, method: str, announced: int, sent: int
) -> tuple[GRPCError, int]:
    """Asyncio-flavoured: a request to `method` whose prefix announces `announced` bytes,
    followed by up to `sent` bytes of body; returns the status the server ended it with,
    and how many bytes of body had been sent by then."""
    streamed = 0
    async with grpclib.client.Channel(*host_port(server)) as channel:
        try:
            async with channel.request(
                wire.rpc_path(method),
                Cardinality.UNARY_UNARY,
                pb.PutDocumentRequest,
                pb.PutDocumentResponse,
            ) as stream:
                await stream.send_request()
                h2_stream = stream._stream
                await h2_stream.send_data(b"\x00" + announced.to_bytes(4, "big"))

                async def stream_body() -> None:
                    nonlocal streamed
                    while streamed < sent:
                        await h2_stream.send_data(b"x" * CHUNK)
                        streamed += CHUNK

                sending = asyncio.create_task(stream_body())
                try:
                    await stream.recv_initial_metadata()
                    await stream.recv_trailing_metadata()
                finally:
                    sending.cancel()
                    with contextlib.suppress(BaseException):
                        await sending
        except GRPCError as exc:
            return exc, streamed
    raise AssertionError("the server answered a request it cannot have read")


def test_a_message_announcing_4_gib_is_refused_before_its_body_is_read(
    start_server: StartServer,
) -> None:
    """The attack: a PutDocument that announces 4 GiB and streams its bytes. Before, the
    server buffered all that arrived (400 MiB sent took it from 42 to 501 MiB)."""
    server = start_server("--max-document-bytes", "1MiB")
    before = rss(server)

    refused, streamed = run_scenario(
        lambda: announce_and_stream(server, "PutDocument", 2**32 - 1, 400 * MiB)
    )

    assert refused.status is Status.RESOURCE_EXHAUSTED
    assert refused.message == (
        f"the request is {2**32 - 1:,} bytes; the limit is {MiB + 64 * 1024:,}"
        " (--max-message-bytes): send less in one request"
    )
    assert streamed < 100 * MiB, "refused at the prefix, not after the bytes arrived"
    assert rss(server) < before + SLACK


def test_a_write_documents_over_its_byte_bound_is_refused(start_server: StartServer) -> None:
    """300 documents of 1 MiB in one WriteDocuments (before: a peak of about 975 MiB) are
    more than --max-request-bytes; the writes stay at the 10,000 bound too."""
    server = start_server("--max-request-bytes", "16MiB")
    before = rss(server)

    refused, _ = run_scenario(
        lambda: announce_and_stream(server, "WriteDocuments", 300 * MiB, 300 * MiB)
    )

    assert refused.status is Status.RESOURCE_EXHAUSTED
    assert "(--max-request-bytes)" in (refused.message or "")
    assert rss(server) < before + SLACK


def big_writes(count: int, document_bytes: int, prefix: str) -> pb.WriteDocumentsRequest:
    document = '{"pad":"' + "x" * (document_bytes - 10) + '"}'
    return pb.WriteDocumentsRequest(
        writes=[
            pb.DocumentWrite(collection="big", doc_id=f"{prefix}-{i}", json_data=document)
            for i in range(count)
        ]
    )


def test_legal_large_requests_wait_for_room_and_all_commit(start_server: StartServer) -> None:
    """Eight connections each send a 6 MiB WriteDocuments at once, against an in-flight budget
    of 16 MiB: they take turns, each commits, and the server holds no more than the budget
    (plus the replay log, which keeps the events)."""
    inflight, replay_log = 16 * MiB, 64 * MiB
    server = start_server(
        "--max-request-bytes",
        "8MiB",
        "--max-inflight-request-bytes",
        "16MiB",
        "--replay-log-bytes",
        "64MiB",
    )
    before = rss(server)

    async def scenario() -> list[list[int]]:
        async def write(index: int) -> list[int]:
            async with grpclib.client.Channel(*host_port(server)) as channel:
                stub = pb.PeatSidecarStub(channel)
                response = await stub.write_documents(big_writes(6, MiB, f"c{index}"))
                return list(response.sequences)

        return list(await asyncio.gather(*(write(index) for index in range(8))))

    sequences = run_scenario(scenario, timeout=120)

    assert sorted(s for each in sequences for s in each) == list(range(1, 49))
    # Each request is parsed into Python objects beside its bytes: count it twice.
    assert rss(server) < before + 2 * inflight + replay_log + SLACK


def test_snapshot_subscribers_that_stop_reading_hold_a_page_each(
    start_server: StartServer,
) -> None:
    """Four subscribers ask for a snapshot of 160 documents of 1 MiB and read nothing. Before,
    each held a page of up to 512 documents until it was sent (about 570 MiB each); now a
    page holds about 2 MiB of documents (docs/operations.md): each costs a page and its
    encoding."""
    server = start_server("--replay-log-bytes", "8MiB")

    async def load() -> None:
        async with grpclib.client.Channel(*host_port(server)) as channel:
            stub = pb.PeatSidecarStub(channel)
            for batch in range(4):
                await stub.write_documents(big_writes(40, MiB, f"b{batch}"))

    run_scenario(load, timeout=120)
    before = rss(server)

    async def stalled_snapshots() -> int:
        channels = [
            grpclib.client.Channel(*host_port(server), config=small_window_config())
            for _ in range(4)
        ]
        try:
            async with contextlib.AsyncExitStack() as streams:
                for channel in channels:
                    await streams.enter_async_context(
                        grpclib_subscribe(channel, pb.SubscribeRequest(snapshot=True))
                    )
                # Asked on a channel of its own: the stalled streams' small windows, full,
                # would hold the answer back.
                async with grpclib.client.Channel(*host_port(server)) as status_channel:
                    await wait_for_subscribers_async(pb.PeatSidecarStub(status_channel), 4)
                # Each stream's first page is read and encoded, then its send blocks.
                peak = 0
                for _ in range(20):
                    peak = max(peak, rss(server))
                    await asyncio.sleep(0.1)
                return peak
        finally:
            for channel in channels:
                channel.close()

    peak = run_scenario(stalled_snapshots)

    # A page: 2 MiB of documents and one more that crosses the bound, and their encoding.
    page_in_memory = 2 * (2 * MiB + MiB)
    assert peak < before + 4 * page_in_memory + SLACK
