"""`Client`: typed calls for every RPC of one peat-sync server."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from ssl import SSLContext
from types import TracebackType
from typing import Any, TypeVar

import grpclib.client
import grpclib.config
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from peat_sync import environment
from peat_sync.address import ListenAddress
from peat_sync.client.errors import CALL_FAILURES, PreconditionFailed, Rejected, client_error
from peat_sync.client.mirror import Mirror
from peat_sync.client.subscription import Backoff, ResilientSubscription
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.wire import CURRENT_SEQUENCE_TRAILER, DELETE_DOCUMENT, PUT_DOCUMENT

T = TypeVar("T")

DEFAULT_ADDRESS = "127.0.0.1:50051"
ADDRESS_ENV = "PEAT_SIDECAR_ADDR"
# Unary calls answer in milliseconds; a call that takes this long has met a dead server.
DEFAULT_TIMEOUT = 10.0


def default_address() -> str:
    """`PEAT_SIDECAR_ADDR` (or its upstream name, `PEAT_NODE_ADDR`) if set, else the server's
    default listen address. ValueError if both names are set to different addresses."""
    variable = environment.lookup(ADDRESS_ENV, os.environ)
    return (variable and variable[0]) or DEFAULT_ADDRESS


@dataclass(frozen=True, slots=True)
class Document:
    """A stored document and the sequence of the change that last wrote it."""

    collection: str
    doc_id: str
    json_data: str
    sequence: int

    @property
    def data(self) -> Any:
        return json.loads(self.json_data)


def encode_document(document: Mapping[str, Any] | str) -> str:
    """JSON text for a document given as a mapping, or as JSON text (sent as it is, so the
    server's validation and messages apply)."""
    if isinstance(document, str):
        return document
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


class Client:
    """Asyncio-flavoured: a connection to one peat-sync server, with a typed method for each
    RPC of `peat.sidecar.v1.PeatSidecar`.

    `address` is HOST:PORT, tcp://HOST:PORT or unix:///PATH. With `ssl` (see
    `peat_sync.tls.client_context`), the connection to a TCP address is TLS, and the server's
    certificate must name its HOST. The connection opens on the first call and reopens after
    a failure; use the client in `async with`, or call `close()`. Every failure is a
    `ClientError`: `Unavailable` when retrying later may work, `Rejected` when the request
    itself is at fault.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        config: grpclib.config.Configuration | None = None,
        ssl: SSLContext | None = None,
    ) -> None:
        self.address = address or default_address()
        try:
            self._target = ListenAddress.parse(self.address)
        except ValueError as exc:
            raise ValueError(f"bad server address {self.address!r}: {exc}") from None
        if ssl is not None and self._target.path is not None:
            raise ValueError(
                f"TLS is for tcp:// addresses, not {self.address}: the server does not serve"
                " TLS on a unix socket"
            )
        self.timeout = timeout
        self._config = config
        self._ssl = ssl
        self._channel: grpclib.client.Channel | None = None

    @property
    def channel(self) -> grpclib.client.Channel:
        """The grpclib channel; created on first use, inside the running asyncio loop."""
        if self._channel is None:
            if self._target.path is not None:
                self._channel = grpclib.client.Channel(
                    path=str(self._target.path), config=self._config
                )
            else:
                self._channel = grpclib.client.Channel(
                    self._target.host, self._target.port, config=self._config, ssl=self._ssl
                )
        return self._channel

    @property
    def stub(self) -> pb.PeatSidecarStub:
        return pb.PeatSidecarStub(self.channel)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        try:
            return await method(request, timeout=self.timeout)
        except CALL_FAILURES as exc:
            raise client_error(exc, self.address) from exc

    async def _write(
        self,
        path: str,
        request: pb.PutDocumentRequest | pb.DeleteDocumentRequest,
        reply_type: type[T],
    ) -> T:
        """A unary write to the RPC at `path`; a failed expected_sequence raises
        `PreconditionFailed` with the current sequence from the call's trailing metadata,
        which the generated stub does not expose."""
        stream = self.channel.request(
            path, Cardinality.UNARY_UNARY, type(request), reply_type, timeout=self.timeout
        )
        try:
            async with stream:
                await stream.send_message(request, end=True)
                reply = await stream.recv_message()
        except GRPCError as exc:
            if exc.status is Status.FAILED_PRECONDITION and request.expected_sequence is not None:
                raise PreconditionFailed(
                    exc.message or "the document changed: re-read it and retry",
                    _current_sequence(stream.trailing_metadata),
                ) from exc
            raise client_error(exc, self.address) from exc
        except CALL_FAILURES as exc:
            raise client_error(exc, self.address) from exc
        assert reply is not None
        return reply

    # Lifecycle ---------------------------------------------------------------------------

    async def status(self) -> pb.GetStatusResponse:
        """The node's id, phase, head sequence, epoch, subscribers and replay floors."""
        return await self._call(self.stub.get_status, pb.GetStatusRequest())

    async def serving(self) -> bool:
        """Whether the server's health service (`grpc.health.v1.Health/Check`) reports it
        SERVING: False while it starts or drains."""
        # Imported here: grpclib's health proto clashes with grpcio's copy in a process that
        # imports both (a test run), and only this call needs it.
        from grpclib.health.v1.health_grpc import HealthStub
        from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

        response = await self._call(HealthStub(self.channel).Check, HealthCheckRequest())
        return bool(response.status == HealthCheckResponse.SERVING)

    # Documents ---------------------------------------------------------------------------

    async def put(
        self,
        collection: str,
        doc_id: str,
        document: Mapping[str, Any] | str,
        *,
        expected_sequence: int | None = None,
    ) -> int:
        """Store a JSON object (a mapping, or JSON text); returns the sequence it was
        committed at, once it is durable.

        With `expected_sequence`, only if the document's last change is at that sequence (0:
        only if it does not exist); else `PreconditionFailed`, and nothing is stored."""
        request = pb.PutDocumentRequest(
            collection=collection,
            doc_id=doc_id,
            json_data=encode_document(document),
            expected_sequence=expected_sequence,
        )
        return (await self._write(PUT_DOCUMENT, request, pb.PutDocumentResponse)).sequence

    async def get(self, collection: str, doc_id: str) -> Document | None:
        """The document, or None when there is none."""
        request = pb.GetDocumentRequest(collection=collection, doc_id=doc_id)
        response = await self._call(self.stub.get_document, request)
        if response.json_data is None:
            return None
        return Document(collection, doc_id, response.json_data, response.sequence)

    async def delete(
        self, collection: str, doc_id: str, *, expected_sequence: int | None = None
    ) -> int:
        """Delete a document; returns the sequence of the delete, or 0 when there was
        nothing to delete.

        With `expected_sequence`, only if the document's last change is at that sequence (0:
        only if it does not exist, which deletes nothing); else `PreconditionFailed`."""
        request = pb.DeleteDocumentRequest(
            collection=collection, doc_id=doc_id, expected_sequence=expected_sequence
        )
        return (await self._write(DELETE_DOCUMENT, request, pb.DeleteDocumentResponse)).sequence

    async def list_ids(self, collection: str) -> list[str]:
        """The doc_ids of a collection, sorted."""
        request = pb.ListDocumentsRequest(collection=collection)
        return list((await self._call(self.stub.list_documents, request)).doc_ids)

    async def write(
        self, writes: Iterable[tuple[str, str, Mapping[str, Any] | str | None]]
    ) -> list[int]:
        """Commit many `(collection, doc_id, document)` writes atomically, in order, in one
        call: all of them or none. A document of None deletes. Returns the sequence of each,
        0 for the delete of a document that did not exist. At most 10,000 per call."""
        request = pb.WriteDocumentsRequest(
            writes=[
                pb.DocumentWrite(
                    collection=collection,
                    doc_id=doc_id,
                    json_data=None if document is None else encode_document(document),
                )
                for collection, doc_id, document in writes
            ]
        )
        return list((await self._call(self.stub.write_documents, request)).sequences)

    # Typed collections -------------------------------------------------------------------

    async def put_platform(self, platform: pb.Platform) -> int:
        request = pb.PutPlatformRequest(platform=platform)
        return (await self._call(self.stub.put_platform, request)).sequence

    async def get_platforms(self) -> list[pb.Platform]:
        return list((await self._call(self.stub.get_platforms, pb.GetPlatformsRequest())).platforms)

    async def put_cell(self, cell: pb.Cell) -> int:
        return (await self._call(self.stub.put_cell, pb.PutCellRequest(cell=cell))).sequence

    async def get_cells(self) -> list[pb.Cell]:
        return list((await self._call(self.stub.get_cells, pb.GetCellsRequest())).cells)

    async def put_track(self, track: pb.Track) -> int:
        return (await self._call(self.stub.put_track, pb.PutTrackRequest(track=track))).sequence

    async def get_tracks(self) -> list[pb.Track]:
        return list((await self._call(self.stub.get_tracks, pb.GetTracksRequest())).tracks)

    async def put_command(self, command: pb.Command) -> int:
        request = pb.PutCommandRequest(command=command)
        return (await self._call(self.stub.put_command, request)).sequence

    async def get_commands(self) -> list[pb.Command]:
        return list((await self._call(self.stub.get_commands, pb.GetCommandsRequest())).commands)

    async def put_node(self, node: pb.Node) -> int:
        return (await self._call(self.stub.put_node, pb.PutNodeRequest(node=node))).sequence

    async def get_nodes(self) -> list[pb.Node]:
        return list((await self._call(self.stub.get_nodes, pb.GetNodesRequest())).nodes)

    # Collection configs ------------------------------------------------------------------

    async def set_collection_config(self, config: pb.CollectionConfig) -> None:
        request = pb.SetCollectionConfigRequest(config=config)
        await self._call(self.stub.set_collection_config, request)

    async def get_collection_config(self, collection: str) -> pb.CollectionConfig | None:
        """The config of `collection`; None when none was set."""
        request = pb.GetCollectionConfigRequest(collection=collection)
        try:
            reply = await self._call(self.stub.get_collection_config, request)
        except Rejected as exc:
            if exc.status is Status.NOT_FOUND:
                return None
            raise
        return reply.config

    async def list_collection_configs(self) -> list[pb.CollectionConfig]:
        request = pb.ListCollectionConfigsRequest()
        return list((await self._call(self.stub.list_collection_configs, request)).configs)

    # Peers and sync: this node has no mesh, and says so --------------------------------

    async def connect_peer(
        self, endpoint_id: str, addresses: Iterable[str] = (), relay_url: str = ""
    ) -> None:
        request = pb.ConnectPeerRequest(
            endpoint_id=endpoint_id, addresses=list(addresses), relay_url=relay_url
        )
        await self._call(self.stub.connect_peer, request)

    async def disconnect_peer(self, endpoint_id: str) -> None:
        request = pb.DisconnectPeerRequest(endpoint_id=endpoint_id)
        await self._call(self.stub.disconnect_peer, request)

    async def list_peers(self) -> list[pb.PeerInfo]:
        return list((await self._call(self.stub.list_peers, pb.ListPeersRequest())).peers)

    async def start_sync(self) -> None:
        await self._call(self.stub.start_sync, pb.StartSyncRequest())

    async def stop_sync(self) -> None:
        await self._call(self.stub.stop_sync, pb.StopSyncRequest())

    async def sync_stats(self) -> pb.GetSyncStatsResponse:
        return await self._call(self.stub.get_sync_stats, pb.GetSyncStatsRequest())

    # Change feed -------------------------------------------------------------------------

    def subscribe(
        self,
        collections: Iterable[str] = (),
        *,
        since: int | None = None,
        epoch: str | None = None,
        snapshot: bool = False,
        backoff: Backoff | None = None,
        silence_timeout: float | None = None,
        atomic_catch_ups: bool = False,
        batched: bool = True,
        query: pb.SubscriptionQuery | None = None,
    ) -> ResilientSubscription:
        """A subscription that reconnects and resumes by itself; see `ResilientSubscription`."""
        return ResilientSubscription(
            self,
            collections,
            since=since,
            epoch=epoch,
            snapshot=snapshot,
            backoff=backoff,
            silence_timeout=silence_timeout,
            atomic_catch_ups=atomic_catch_ups,
            batched=batched,
            query=query,
        )

    def mirror(
        self,
        collections: Iterable[str] = (),
        *,
        backoff: Backoff | None = None,
        silence_timeout: float | None = None,
        query: pb.SubscriptionQuery | None = None,
    ) -> Mirror:
        """A local copy of `collections` (of the documents `query` matches, if given), kept
        equal to the store; see `Mirror`."""
        return Mirror(
            self, collections, backoff=backoff, silence_timeout=silence_timeout, query=query
        )


def _current_sequence(trailers: Mapping[str, str | bytes] | None) -> int | None:
    """The current sequence a refused write's trailers carry, None when they do not."""
    value = None if trailers is None else trailers.get(CURRENT_SEQUENCE_TRAILER)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
