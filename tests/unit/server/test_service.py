"""The service's handlers in process: grpclib's `ChannelFor` (an in-memory connection) to a
`SidecarService` on a node in a temporary dir, inside the asyncio loop that runs in trio, as
`serve` runs them. These cover the handler logic; tests/e2e covers the real server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.testing import ChannelFor

from peat_sync.bridge import call_asyncio, enter_asyncio, open_asyncio_loop
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.node import Node, NodeConfig, QueueFull, open_node
from peat_sync.server.codec import RequestCodec
from peat_sync.server.config import ServeConfig
from peat_sync.server.request_limits import RequestLimits
from peat_sync.server.service import (
    ATTACHMENT_RPCS,
    NO_ATTACHMENTS,
    NODE_STARTING,
    SHUTTING_DOWN,
    SidecarService,
)
from peat_sync.wire import rpc_path

T = TypeVar("T")
DEADLINE = 20


@dataclass
class Served:
    node: Node
    service: SidecarService
    stub: pb.PeatSidecarStub

    async def call(self, scenario: Callable[[pb.PeatSidecarStub], Awaitable[T]]) -> T:
        """Trio-flavoured: run the asyncio-flavoured `scenario` against the service."""
        return await call_asyncio(scenario, self.stub)


@asynccontextmanager
async def served(
    tmp_path: Path,
    *,
    attach: bool = True,
    limits: RequestLimits | None = None,
    **config: Any,
) -> AsyncIterator[Served]:
    node_config = NodeConfig(data_dir=tmp_path / "data", **config)
    async with open_node(node_config) as node, open_asyncio_loop():
        limits = limits or ServeConfig(node_config).request_limits
        service = SidecarService(node.node_id, "in-process", limits)
        if attach:
            service.attach(node)
        async with enter_asyncio(ChannelFor([service], codec=RequestCodec())) as channel:
            yield Served(node, service, pb.PeatSidecarStub(channel))


async def failure(call: Awaitable[Any]) -> GRPCError:
    """Asyncio-flavoured: the GRPCError `call` fails with."""
    with pytest.raises(GRPCError) as raised:
        await call
    return raised.value


async def test_documents_are_put_read_listed_and_deleted(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> None:
        put = await stub.put_document(
            pb.PutDocumentRequest(collection="c", doc_id="d1", json_data='{"n": 1}')
        )
        assert put.sequence == 1
        got = await stub.get_document(pb.GetDocumentRequest(collection="c", doc_id="d1"))
        assert (got.json_data, got.sequence) == ('{"n": 1}', 1)
        listed = await stub.list_documents(pb.ListDocumentsRequest(collection="c"))
        assert listed.doc_ids == ["d1"]
        deleted = await stub.delete_document(pb.DeleteDocumentRequest(collection="c", doc_id="d1"))
        assert deleted.sequence == 2
        absent = await stub.get_document(pb.GetDocumentRequest(collection="c", doc_id="d1"))
        assert absent.json_data is None
        again = await stub.delete_document(pb.DeleteDocumentRequest(collection="c", doc_id="d1"))
        assert again.sequence == 0

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            await server.call(scenario)
            assert server.node.head_sequence == 2


async def test_write_documents_commits_all_or_names_the_write_at_fault(tmp_path: Path) -> None:
    def write(doc_id: str, json_data: str | None) -> pb.DocumentWrite:
        return pb.DocumentWrite(collection="c", doc_id=doc_id, json_data=json_data)

    async def scenario(stub: pb.PeatSidecarStub) -> None:
        done = await stub.write_documents(
            pb.WriteDocumentsRequest(writes=[write("a", "{}"), write("b", "{}"), write("a", None)])
        )
        assert done.sequences == [1, 2, 3]
        refused = await failure(
            stub.write_documents(
                pb.WriteDocumentsRequest(writes=[write("c", "{}"), write("d", "not json")])
            )
        )
        assert refused.status is Status.INVALID_ARGUMENT
        assert (refused.message or "").startswith("writes[1]: ")

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            await server.call(scenario)
            assert server.node.head_sequence == 3, "nothing of the refused request committed"


@pytest.mark.parametrize(
    ("collection", "json_data", "status", "fragment"),
    [
        ("c", "not json", Status.INVALID_ARGUMENT, "not valid JSON"),
        ("c", "[1]", Status.INVALID_ARGUMENT, "must be a JSON object"),
        ("", "{}", Status.INVALID_ARGUMENT, "collection must not be empty"),
        ("c", json.dumps({"pad": "x" * 200}), Status.RESOURCE_EXHAUSTED, "bytes"),
    ],
    ids=["bad-json", "not-an-object", "empty-collection", "too-large"],
)
async def test_refused_requests_get_the_status_of_their_error(
    tmp_path: Path, collection: str, json_data: str, status: Status, fragment: str
) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> GRPCError:
        return await failure(
            stub.put_document(
                pb.PutDocumentRequest(collection=collection, doc_id="d", json_data=json_data)
            )
        )

    with trio.fail_after(DEADLINE):
        async with served(tmp_path, max_document_bytes=100) as server:
            refused = await server.call(scenario)
    assert refused.status is status
    assert fragment in (refused.message or "")


async def test_typed_puts_are_documents_of_their_collection(tmp_path: Path) -> None:
    platform = pb.Platform(id="p1", name="Rover", status=pb.PlatformStatus.READY, latitude=1.5)

    async def scenario(stub: pb.PeatSidecarStub) -> None:
        put = await stub.put_platform(pb.PutPlatformRequest(platform=platform))
        assert put.sequence == 1
        assert (await stub.get_platforms(pb.GetPlatformsRequest())).platforms == [platform]
        stored = await stub.get_document(pb.GetDocumentRequest(collection="platforms", doc_id="p1"))
        assert json.loads(stored.json_data or "")["name"] == "Rover"
        missing = await failure(stub.put_platform(pb.PutPlatformRequest()))
        assert (missing.status, missing.message) == (
            Status.INVALID_ARGUMENT,
            "platform is required",
        )
        unnamed = await failure(stub.put_cell(pb.PutCellRequest(cell=pb.Cell(name="no id"))))
        assert (unnamed.status, unnamed.message) == (
            Status.INVALID_ARGUMENT,
            "cell.id must not be empty",
        )

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            await server.call(scenario)


async def test_status_tells_where_the_node_stands(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> pb.GetStatusResponse:
        await stub.put_document(pb.PutDocumentRequest(collection="c", doc_id="d", json_data="{}"))
        return await stub.get_status(pb.GetStatusRequest())

    with trio.fail_after(DEADLINE):
        async with served(tmp_path, node_id="hub-1") as server:
            status = await server.call(scenario)
            assert status.epoch == server.node.epoch
    assert (status.node_id, status.endpoint_addr, status.phase) == (
        "hub-1",
        "in-process",
        pb.NodePhase.READY,
    )
    assert (status.head_sequence, status.subscribers, status.sync_active) == (1, 0, False)


async def test_until_the_node_is_attached_only_status_answers(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> tuple[pb.GetStatusResponse, GRPCError]:
        status = await stub.get_status(pb.GetStatusRequest())
        refused = await failure(stub.list_documents(pb.ListDocumentsRequest(collection="c")))
        return status, refused

    with trio.fail_after(DEADLINE):
        async with served(tmp_path, attach=False) as server:
            status, refused = await server.call(scenario)
    assert (status.phase, status.epoch) == (pb.NodePhase.INITIALIZING, "")
    assert (refused.status, refused.message) == (Status.UNAVAILABLE, NODE_STARTING)


async def attachment_call(stub: pb.PeatSidecarStub, rpc: str) -> None:
    """Asyncio-flavoured: call upstream's attachment RPC `rpc` at its path, with an empty
    request (their messages are not in this proto)."""
    async with stub.channel.request(
        rpc_path(rpc), ATTACHMENT_RPCS[rpc], pb.GetStatusRequest, pb.GetStatusResponse
    ) as stream:
        await stream.send_message(pb.GetStatusRequest(), end=True)
        await stream.recv_message()


@pytest.mark.parametrize("attach", [True, False], ids=["ready", "starting"])
async def test_attachment_rpcs_answer_unimplemented_without_the_node(
    tmp_path: Path, attach: bool
) -> None:
    """Whether the node is open or not: attachments are not a peat-sync feature, so there
    is nothing to wait for."""

    async def scenario(stub: pb.PeatSidecarStub) -> list[GRPCError]:
        return [await failure(attachment_call(stub, rpc)) for rpc in ATTACHMENT_RPCS]

    with trio.fail_after(DEADLINE):
        async with served(tmp_path, attach=attach) as server:
            refusals = await server.call(scenario)
            assert server.service.calls == 0
    assert [(refused.status, refused.message) for refused in refusals] == [
        (Status.UNIMPLEMENTED, NO_ATTACHMENTS.format(rpc=rpc)) for rpc in ATTACHMENT_RPCS
    ]


async def test_a_draining_service_refuses_new_calls_but_status(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> tuple[pb.GetStatusResponse, GRPCError]:
        refused = await failure(
            stub.put_document(pb.PutDocumentRequest(collection="c", doc_id="d", json_data="{}"))
        )
        return await stub.get_status(pb.GetStatusRequest()), refused

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            server.service.drain()
            status, refused = await server.call(scenario)
            assert server.node.head_sequence == 0
    assert status.phase == pb.NodePhase.SHUTTING_DOWN
    assert (refused.status, refused.message) == (Status.UNAVAILABLE, SHUTTING_DOWN)


async def test_peer_and_sync_calls_answer_that_there_is_no_mesh(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> None:
        connect = await failure(stub.connect_peer(pb.ConnectPeerRequest(endpoint_id="x")))
        assert connect.status is Status.UNIMPLEMENTED
        disconnect = await failure(stub.disconnect_peer(pb.DisconnectPeerRequest(endpoint_id="x")))
        assert disconnect.status is Status.FAILED_PRECONDITION
        start = await failure(stub.start_sync(pb.StartSyncRequest()))
        assert start.status is Status.UNIMPLEMENTED
        assert (await stub.list_peers(pb.ListPeersRequest())).peers == []
        await stub.stop_sync(pb.StopSyncRequest())
        stats = await stub.get_sync_stats(pb.GetSyncStatsRequest())
        assert (stats.sync_active, stats.connected_peers, stats.bytes_sent) == (False, 0, 0)

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            await server.call(scenario)


async def test_a_full_write_queue_makes_the_write_wait_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the producer's queue is full, a unary write is queued by a trio task that waits
    for room, and is acknowledged as usual."""
    refusals = 0

    def full(*args: Any) -> None:
        nonlocal refusals
        refusals += 1
        raise QueueFull

    async def scenario(stub: pb.PeatSidecarStub) -> int:
        put = await stub.put_document(
            pb.PutDocumentRequest(collection="c", doc_id="d", json_data="{}")
        )
        return put.sequence

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            monkeypatch.setattr(server.node._producer, "write_nowait", full)
            assert await server.call(scenario) == 1
            assert server.node.head_sequence == 1
    assert refusals == 1


def put_request(doc_id: str) -> pb.PutDocumentRequest:
    return pb.PutDocumentRequest(collection="c", doc_id=doc_id, json_data=f'{{"id": "{doc_id}"}}')


async def test_subscribe_replays_from_since_then_follows_live_writes(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> list[tuple[pb.ChangeType, int, str]]:
        for doc_id in ("a", "b"):
            await stub.put_document(put_request(doc_id))
        seen = []
        async for change in stub.subscribe(pb.SubscribeRequest(since_sequence=0)):
            seen.append((change.change_type, change.sequence, change.doc_id))
            if len(seen) == 3:
                await stub.put_document(put_request("c"))
            if len(seen) == 4:
                break
        return seen

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            seen = await server.call(scenario)
    assert seen == [
        (pb.ChangeType.HEARTBEAT, 0, ""),
        (pb.ChangeType.UPSERT, 1, "a"),
        (pb.ChangeType.UPSERT, 2, "b"),
        (pb.ChangeType.UPSERT, 3, "c"),
    ]


async def test_subscribe_batched_carries_the_events_of_subscribe(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub) -> tuple[list[bytes], list[bytes]]:
        for doc_id in ("a", "b", "c"):
            await stub.put_document(put_request(doc_id))
        request = pb.SubscribeRequest(collections=["c"], since_sequence=0)
        single: list[bytes] = []
        async for change in stub.subscribe(request):
            if change.change_type is not pb.ChangeType.HEARTBEAT:
                single.append(bytes(change))
            if len(single) == 3:
                break
        batched: list[bytes] = []
        async for batch in stub.subscribe_batched(request):
            batched += (
                bytes(c) for c in batch.changes if c.change_type is not pb.ChangeType.HEARTBEAT
            )
            if len(batched) >= 3:
                break
        return single, batched

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            single, batched = await server.call(scenario)
    assert len(single) == 3
    assert batched == single


async def test_a_closing_node_ends_each_stream_with_its_resume_point(tmp_path: Path) -> None:
    async def scenario(stub: pb.PeatSidecarStub, close: Callable[[], None]) -> GRPCError:
        await stub.put_document(put_request("a"))

        async def follow() -> None:
            async for change in stub.subscribe(pb.SubscribeRequest(since_sequence=0)):
                if change.sequence == 1:
                    close()

        return await failure(follow())

    with trio.fail_after(DEADLINE):
        async with served(tmp_path) as server:
            ended = await call_asyncio(scenario, server.stub, server.node.feed.close)
            epoch = server.node.epoch
    assert ended.status is Status.UNAVAILABLE
    assert ended.message == (
        f"the server is shutting down; resubscribe with since_sequence=1 and epoch={epoch}"
    )
