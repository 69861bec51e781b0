"""`Client` against the real server: a typed method for every RPC of proto/sidecar.proto, the
two kinds of failure (`Unavailable` when retrying later may work, `Rejected` with the gRPC
status when the request is at fault), unix socket addresses, and PEAT_SIDECAR_ADDR."""

from __future__ import annotations

import os
import re
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from grpclib.const import Status

from peat_sync.bench.launcher import ServerProcess
from peat_sync.client import (
    ADDRESS_ENV,
    DEFAULT_ADDRESS,
    ChangeType,
    Client,
    Rejected,
    Unavailable,
)
from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.paths import PROTO_DIR
from tests.helpers.servers import StartServer, restart
from tests.helpers.waiting import run_scenario

# Each RPC of the service, and the `Client` method that makes it.
METHOD_OF_RPC = {
    "GetStatus": "status",
    "ConnectPeer": "connect_peer",
    "DisconnectPeer": "disconnect_peer",
    "ListPeers": "list_peers",
    "PutDocument": "put",
    "GetDocument": "get",
    "DeleteDocument": "delete",
    "ListDocuments": "list_ids",
    "PutPlatform": "put_platform",
    "GetPlatforms": "get_platforms",
    "PutCell": "put_cell",
    "GetCells": "get_cells",
    "PutTrack": "put_track",
    "GetTracks": "get_tracks",
    "PutCommand": "put_command",
    "GetCommands": "get_commands",
    "PutNode": "put_node",
    "GetNodes": "get_nodes",
    "SetCollectionConfig": "set_collection_config",
    "GetCollectionConfig": "get_collection_config",
    "ListCollectionConfigs": "list_collection_configs",
    "Subscribe": "subscribe",  # with batched=False
    "SubscribeBatched": "subscribe",
    "WriteDocuments": "write",
    "StartSync": "start_sync",
    "StopSync": "stop_sync",
    "GetSyncStats": "sync_stats",
}

Call = Callable[[Client], Awaitable[object]]


def test_every_rpc_of_the_proto_has_a_method() -> None:
    """The table the tests below go through is the whole service: an RPC added to the proto
    without a method fails here."""
    rpcs = re.findall(r"^\s*rpc (\w+)\(", (PROTO_DIR / "sidecar.proto").read_text(), re.MULTILINE)
    assert sorted(rpcs) == sorted(METHOD_OF_RPC)
    for method in METHOD_OF_RPC.values():
        assert callable(getattr(Client, method)), method


@pytest.mark.parametrize("batched", [True, False], ids=["SubscribeBatched", "Subscribe"])
def test_document_calls_and_subscribe(server: ServerProcess, batched: bool) -> None:
    """GetStatus, PutDocument (a mapping, or JSON text sent as it is), GetDocument (a
    `Document`, or None), ListDocuments (sorted), DeleteDocument (0 when there was nothing
    to delete) and Subscribe or SubscribeBatched, with the sequences the server committed."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            status = await client.status()
            assert (status.phase, status.head_sequence) == (pb.NodePhase.READY, 0)
            assert status.epoch
            first = await client.put("fleet", "p1", {"name": "Ørn", "speed": 3})
            second = await client.put("fleet", "p0", '{"speed": 4}')
            assert (first, second) == (1, 2)
            document = await client.get("fleet", "p1")
            assert document is not None
            assert (document.collection, document.doc_id, document.sequence) == ("fleet", "p1", 1)
            assert document.data == {"name": "Ørn", "speed": 3}
            assert await client.get("fleet", "absent") is None
            assert await client.list_ids("fleet") == ["p0", "p1"]
            assert await client.delete("fleet", "p1") == 3
            assert await client.delete("fleet", "p1") == 0
            assert await client.list_ids("fleet") == ["p0"]
            status = await client.status()
            assert (status.head_sequence, status.subscribers) == (3, 0)

            async with client.subscribe(["fleet"], since=0, batched=batched) as subscription:
                events = [await anext(subscription) for _ in range(4)]
                assert (await client.status()).subscribers == 1
            assert [(e.type, e.sequence, e.doc_id, e.document) for e in events] == [
                (ChangeType.HEARTBEAT, 0, "", None),
                (ChangeType.UPSERT, 1, "p1", {"name": "Ørn", "speed": 3}),
                (ChangeType.UPSERT, 2, "p0", {"speed": 4}),
                (ChangeType.DELETE, 3, "p1", None),
            ]
            assert events[0].epoch == status.epoch

    run_scenario(scenario, timeout=20)


def test_write_commits_many_changes_atomically(server: ServerProcess) -> None:
    """WriteDocuments through `Client.write`: puts and deletes in order, one sequence each
    (0 for a delete of nothing); one bad write refuses the whole call, naming its index."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            sequences = await client.write(
                [("a", "1", {"v": 1}), ("a", "2", '{"v": 2}'), ("a", "1", None), ("a", "x", None)]
            )
            assert sequences == [1, 2, 3, 0]
            assert await client.list_ids("a") == ["2"]
            with pytest.raises(Rejected, match=r"writes\[1\]: json_data must be a JSON object"):
                await client.write([("a", "3", {"v": 3}), ("a", "4", "[4]")])
            assert (await client.status()).head_sequence == 3
            assert await client.write([]) == []

    run_scenario(scenario, timeout=20)


def test_typed_collections(server: ServerProcess) -> None:
    """PutPlatform, PutNode, PutCell, PutTrack and PutCommand take the generated messages and
    return the sequence; the Get calls give the same messages back, and each is a document of
    its typed collection."""
    platform = pb.Platform(
        id="p1",
        platform_type="ugv",
        name="Rover",
        status=pb.PlatformStatus.READY,
        latitude=51.5,
        capabilities=["camera", "lidar"],
        callsign="R1",
    )
    node = pb.Node(id="n1", node_type="uav", status=pb.NodeStatus.BUSY, unit_id="u2")
    cell = pb.Cell(id="c1", name="Alpha", status=pb.CellStatus.ACTIVE, node_count=2)
    track = pb.Track(
        id="t1",
        source_node="p1",
        latitude=1.0,
        longitude=2.0,
        speed_mps=4.5,
        classification="vehicle",
        confidence=0.9,
        category=pb.TrackCategory.VEHICLE,
    )
    command = pb.Command(
        id="k1",
        target_id="p1",
        command_type="move",
        status=pb.CommandStatus.PENDING,
        created_at=1_700_000_000,
        payload_json='{"to": [1, 2]}',
    )

    async def scenario() -> None:
        async with Client(server.address) as client:
            assert await client.put_platform(platform) == 1
            assert await client.put_cell(cell) == 2
            assert await client.put_track(track) == 3
            assert await client.put_command(command) == 4
            assert await client.put_node(node) == 5
            assert await client.get_platforms() == [platform]
            assert await client.get_cells() == [cell]
            assert await client.get_tracks() == [track]
            assert await client.get_commands() == [command]
            assert await client.get_nodes() == [node]
            for collection, doc_id in (
                ("platforms", "p1"),
                ("nodes", "n1"),
                ("cells", "c1"),
                ("tracks", "t1"),
                ("commands", "k1"),
            ):
                assert await client.list_ids(collection) == [doc_id]

    run_scenario(scenario, timeout=20)


def test_peer_and_sync_calls_answer_honestly(server: ServerProcess) -> None:
    """ListPeers, StopSync and GetSyncStats answer for a node without a mesh; ConnectPeer,
    DisconnectPeer and StartSync surface as `Rejected` with the server's status and message."""
    refused: list[tuple[Call, Status]] = [
        (lambda client: client.connect_peer("peer-1", ["10.0.0.2:7000"]), Status.UNIMPLEMENTED),
        (lambda client: client.disconnect_peer("peer-1"), Status.FAILED_PRECONDITION),
        (lambda client: client.start_sync(), Status.UNIMPLEMENTED),
    ]

    async def scenario() -> None:
        async with Client(server.address) as client:
            assert await client.list_peers() == []
            await client.stop_sync()
            stats = await client.sync_stats()
            assert (stats.sync_active, stats.connected_peers, stats.bytes_sent) == (False, 0, 0)
            for call, status in refused:
                with pytest.raises(Rejected, match="no peer mesh") as raised:
                    await call(client)
                assert raised.value.status is status

    run_scenario(scenario, timeout=20)


BAD_INPUT: list[tuple[Call, str]] = [
    (lambda client: client.put("", "d", {}), "collection must not be empty"),
    (lambda client: client.put("c", "d" * 513, {}), "doc_id is 513 bytes long; the limit is 512"),
    (lambda client: client.put("c", "d", "{not json"), "json_data is not valid JSON"),
    (lambda client: client.put("c", "d", "[1, 2]"), "must be a JSON object"),
    (lambda client: client.get("c", "tab\there"), "must not contain control characters"),
    (lambda client: client.delete("", "d"), "collection must not be empty"),
    (lambda client: client.list_ids("c" * 600), "collection is 600 bytes long"),
    (lambda client: client.put_platform(pb.Platform(name="no id")), "platform.id must not be"),
]


def test_bad_input_is_rejected_with_invalid_argument(server: ServerProcess) -> None:
    """Each request the server refuses raises `Rejected` with INVALID_ARGUMENT and the server's
    message, and commits nothing."""

    async def scenario() -> None:
        async with Client(server.address) as client:
            for call, message in BAD_INPUT:
                with pytest.raises(Rejected) as raised:
                    await call(client)
                assert raised.value.status is Status.INVALID_ARGUMENT, raised.value
                assert message in str(raised.value)
            assert (await client.status()).head_sequence == 0

    run_scenario(scenario, timeout=20)


def test_a_document_over_the_size_limit_is_rejected(start_server: StartServer) -> None:
    """A put larger than the server's limit is the request's own fault: `Rejected`, with the
    server's status and message, rather than `Unavailable`."""
    server = start_server("--max-document-bytes", "100")

    async def scenario() -> None:
        async with Client(server.address) as client:
            with pytest.raises(Rejected, match="the limit is 100 bytes") as raised:
                await client.put("c", "d", {"text": "x" * 200})
            assert raised.value.status is Status.RESOURCE_EXHAUSTED

    run_scenario(scenario, timeout=20)


def test_nobody_serving_is_unavailable(socket_dir: Path) -> None:
    """A TCP port nobody listens on, and a unix socket path nothing is bound to: every call
    raises `Unavailable`, which says where it tried."""
    # Bound but not listening: connections are refused, and no other test can take the port.
    with socket.socket() as unserved:
        unserved.bind(("127.0.0.1", 0))
        port = unserved.getsockname()[1]

        async def scenario() -> None:
            for address in (f"127.0.0.1:{port}", f"unix://{socket_dir / 'nobody.sock'}"):
                async with Client(address) as client:
                    with pytest.raises(Unavailable, match="cannot"):
                        await client.status()
                    with pytest.raises(Unavailable, match=re.escape(address)):
                        await client.put("c", "d", {})

        run_scenario(scenario, timeout=20)


def test_a_server_that_does_not_answer_is_unavailable(server: ServerProcess) -> None:
    """A call a stopped (SIGSTOP) server never answers raises `Unavailable` after the
    client's timeout; once the server runs again, the next call succeeds."""
    assert server.process is not None
    pid = server.process.pid

    async def scenario() -> None:
        async with Client(server.address, timeout=0.5) as client:
            await client.status()  # connected before the server stops
            os.kill(pid, signal.SIGSTOP)
            try:
                with pytest.raises(Unavailable, match=r"no answer in time|deadline"):
                    await client.status()
            finally:
                os.kill(pid, signal.SIGCONT)
            assert (await client.status()).phase == pb.NodePhase.READY

    run_scenario(scenario, timeout=20)


def test_unix_socket_address_and_reconnection(start_unix_server: StartServer) -> None:
    """`unix:///PATH` reaches a server on a unix socket, for calls and subscriptions; after
    the server restarts (gracefully, then with kill -9), the next call connects again."""
    server = start_unix_server()
    assert server.address.startswith("unix:///")

    async def scenario() -> None:
        async with Client(server.address) as client:
            assert await client.put("c", "d", {"n": 1}) == 1
            async with client.subscribe(since=0) as subscription:
                assert (await anext(subscription)).type is ChangeType.HEARTBEAT
                assert (await anext(subscription)).doc_id == "d"
            for how in ("graceful", "kill -9"):
                await restart(server, how)
                document = await client.get("c", "d")
                assert document is not None
                assert document.data == {"n": 1}

    run_scenario(scenario, timeout=30)


def test_address_from_the_environment(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no address, the client uses PEAT_SIDECAR_ADDR, else 127.0.0.1:50051; an address
    given explicitly wins over the variable."""
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    assert Client().address == DEFAULT_ADDRESS == "127.0.0.1:50051"
    monkeypatch.setenv(ADDRESS_ENV, server.address)
    assert Client("tcp://10.1.2.3:9").address == "tcp://10.1.2.3:9"

    async def scenario() -> None:
        async with Client() as client:
            assert client.address == server.address
            assert await client.put("c", "d", {}) == 1

    run_scenario(scenario, timeout=20)


def test_address_from_the_upstream_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """PEAT_NODE_ADDR, upstream's name of the variable, is read too; set to another address
    than PEAT_SIDECAR_ADDR, the client refuses to guess."""
    monkeypatch.delenv(ADDRESS_ENV, raising=False)
    monkeypatch.setenv("PEAT_NODE_ADDR", "tcp://10.1.2.3:9")
    assert Client().address == "tcp://10.1.2.3:9"
    monkeypatch.setenv(ADDRESS_ENV, "tcp://10.1.2.3:9")
    assert Client().address == "tcp://10.1.2.3:9"
    monkeypatch.setenv(ADDRESS_ENV, "tcp://10.9.9.9:9")
    with pytest.raises(ValueError, match=r"PEAT_SIDECAR_ADDR=.* and PEAT_NODE_ADDR=.* set the"):
        Client()
    assert Client("h:1").address == "h:1"


@pytest.mark.parametrize("address", ["localhost", "unix://relative/peat.sock", "host:70000"])
def test_a_bad_address_is_refused_at_once(address: str) -> None:
    """An address that is not HOST:PORT, tcp://HOST:PORT or unix:///PATH is a ValueError
    when the client is made, not a failure of every later call."""
    with pytest.raises(ValueError, match="bad server address"):
        Client(address)
