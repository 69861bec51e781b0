"""The PeatSidecar gRPC service. Every handler here is asyncio-flavoured."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpclib.const
import grpclib.server
from betterproto2.casing import snake_case
from grpclib import GRPCError
from grpclib.const import Status
from h2.exceptions import StreamClosedError

from peat_sync.bridge import BatchPump, call_nowait, call_trio
from peat_sync.generated.peat.sidecar import v1 as pb
from peat_sync.node import (
    ChangeEvent,
    InvalidRequest,
    LimitExceeded,
    Node,
    NodeClosed,
    QueueFull,
    RequestError,
    StoreUnavailable,
    Subscription,
    WriteRefused,
)
from peat_sync.node.collection_configs import CollectionConfig
from peat_sync.node.validation import check_name, excerpt
from peat_sync.server import typed
from peat_sync.server.request_limits import RequestAdmission, RequestLimits
from peat_sync.server.stalled_streams import StreamStalled, cut_off, send_within
from peat_sync.server.subscribe_request import SubscribeRequest
from peat_sync.store import Mutation, PreconditionFailed
from peat_sync.wire import (
    CURRENT_SEQUENCE_TRAILER,
    GET_STATUS,
    PUT_DOCUMENT,
    SUBSCRIBE,
    SUBSCRIBE_BATCHED,
    WRITE_DOCUMENTS,
    message_class,
    rpc_path,
)

if TYPE_CHECKING:
    from peat_sync.shared.replica import Replica

log = logging.getLogger("peat_sync.service")

T = TypeVar("T")

PutDocumentRequest = message_class("PutDocumentRequest")
PutDocumentResponse = message_class("PutDocumentResponse")
WriteDocumentsRequest = message_class("WriteDocumentsRequest")
WriteDocumentsResponse = message_class("WriteDocumentsResponse")
# Seconds a Subscribe waits to learn the stream's head (shared mode) before judging its
# since_sequence on what it knows.
STREAM_HEAD_WAIT = 2.0
# Events taken from a subscription per crossing into trio.
SEND_BATCH = 512
# Subscribe streams are paced (see `send_encoded`) while the node has at most this many
# subscribers.
PACED_STREAMS = 4
# The size a SubscribeBatched message grows to before the next one starts: well under the
# 4 MiB that gRPC clients accept by default (one event can be larger, up to its document).
BATCH_MESSAGE_BYTES = 1024 * 1024

_STATUS_OF: dict[type[RequestError], Status] = {
    InvalidRequest: Status.INVALID_ARGUMENT,
    LimitExceeded: Status.RESOURCE_EXHAUSTED,
    NodeClosed: Status.UNAVAILABLE,
    StoreUnavailable: Status.UNAVAILABLE,
    WriteRefused: Status.FAILED_PRECONDITION,
}
# And the store's PreconditionFailed (a write's expected_sequence did not hold) is
# FAILED_PRECONDITION, with the document's current sequence in the trailers: see
# `_refuse_stale_write`.

NODE_STARTING = "the node is starting (opening the store); retry shortly"
SHUTTING_DOWN = "the server is shutting down; retry against the restarted server"

SHARED_PEERS = (
    "in shared mode the sidecars of a stream find each other through NATS, so {rpc} is not"
    " needed: give every sidecar the same --nats and --nats-stream, and ListPeers shows them"
)
NO_MESH = (
    "peat-sync is a single-node sidecar with no peer mesh; {rpc} is not available."
    " Subscribe to the change feed to follow every change instead."
)

NO_COLLECTION_CONFIG = (
    "collection {collection} has no config: its deletes leave tombstones, kept for"
    " --tombstone-retention. Set one with SetCollectionConfig"
)

# Upstream's attachment RPCs, with how each answers. Their messages are not in this proto
# (their shapes are not known here), so they are served at their paths without decoding a
# request: upstream itself answers UNIMPLEMENTED unless an attachment root is configured.
ATTACHMENT_RPCS = {
    "SendAttachments": grpclib.const.Cardinality.UNARY_UNARY,
    "GetAttachmentDistribution": grpclib.const.Cardinality.UNARY_UNARY,
    "SubscribeAttachmentBundle": grpclib.const.Cardinality.UNARY_STREAM,
    "CancelAttachmentDistribution": grpclib.const.Cardinality.UNARY_UNARY,
}
NO_ATTACHMENTS = (
    "{rpc}: attachments are not supported by peat-sync (upstream serves them only with an"
    " attachment root configured); keep files elsewhere and put their references in documents"
)
# The RPCs that answer without the node: while it starts and while the server drains.
_NODE_FREE = frozenset({GET_STATUS, *map(rpc_path, ATTACHMENT_RPCS)})

StreamHandler = Callable[[grpclib.server.Stream[Any, Any]], Awaitable[None]]


class _Call:
    """A call under way (see `SidecarService.calling`): a plain class, since a generator's
    context manager cost a unary call a few percent of its CPU."""

    __slots__ = ("_service",)

    def __init__(self, service: SidecarService) -> None:
        self._service = service

    def __enter__(self) -> None:
        self._service.calls_under_way(+1)

    def __exit__(self, *exc_info: object) -> None:
        self._service.calls_under_way(-1)


def grpc_error(error: RequestError) -> GRPCError:
    """The gRPC status of a request the node refused, with the node's message."""
    return GRPCError(_STATUS_OF[type(error)], str(error))


def _peer_name(stream: grpclib.server.Stream[Any, Any]) -> str:
    address = stream.peer.addr()
    if not address:
        return "unix socket"
    return f"{address[0]}:{address[1]}"


def _required(value: typed.M | None, name: str) -> typed.M:
    if value is None:
        raise InvalidRequest(f"{name} is required")
    return value


class SidecarService(pb.PeatSidecarBase):
    """The sidecar's RPCs. It is served before its node opens: until `attach`, GetStatus
    reports the `phase` and every other RPC fails with UNAVAILABLE."""

    def __init__(self, node_id: str, endpoint_addr: str, limits: RequestLimits) -> None:
        self._node: Node | None = None
        self.admission = RequestAdmission(limits)
        self._node_id = node_id
        self._endpoint_addr = endpoint_addr
        self.phase = pb.NodePhase.INITIALIZING
        self._calls = 0  # under way
        self._draining = False
        self._drained = asyncio.Event()

    def attach(self, node: Node) -> None:
        """Serve every RPC from `node`, which is open, from now on: the phase is READY."""
        self._node = node
        self.phase = pb.NodePhase.READY

    def drain(self) -> None:
        """Refuse every new call but GetStatus from now on, with UNAVAILABLE (clients retry
        against the restarted server); the calls under way go on."""
        self.phase = pb.NodePhase.SHUTTING_DOWN
        self._draining = True
        if self._calls == 0:
            self._drained.set()

    @property
    def calls(self) -> int:
        """Calls under way, streams included."""
        return self._calls

    async def wait_drained(self) -> None:
        """Asyncio-flavoured: after `drain`, wait until no call is under way."""
        await self._drained.wait()

    @property
    def attached_node(self) -> Node | None:
        """The node, once attached; None while it starts."""
        return self._node

    @property
    def node(self) -> Node:
        """The open node; UNAVAILABLE while it is starting."""
        if self._node is None:
            raise GRPCError(Status.UNAVAILABLE, NODE_STARTING)
        return self._node

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping = super().__mapping__()
        # The change feed is served from the stream itself, to send pre-encoded events.
        # Read by `SubscribeRequest`, which tells upstream's query at field 2 from
        # since_sequence.
        mapping[SUBSCRIBE] = mapping[SUBSCRIBE]._replace(
            func=functools.partial(self._subscribe, frame=one_per_message),
            request_type=SubscribeRequest,
        )
        mapping[SUBSCRIBE_BATCHED] = mapping[SUBSCRIBE_BATCHED]._replace(
            func=functools.partial(self._subscribe, frame=batched),
            request_type=SubscribeRequest,
        )
        for name, func, request_type, reply_type in (
            (PUT_DOCUMENT, self._put_document, PutDocumentRequest, PutDocumentResponse),
            (WRITE_DOCUMENTS, self._write_documents, WriteDocumentsRequest, WriteDocumentsResponse),
        ):
            mapping[name] = mapping[name]._replace(
                func=func, request_type=request_type, reply_type=reply_type
            )
        for rpc, cardinality in ATTACHMENT_RPCS.items():
            # The request is never read, so its types are never used.
            mapping[rpc_path(rpc)] = grpclib.const.Handler(
                functools.partial(_no_attachments, rpc), cardinality, bytes, bytes
            )
        return {
            name: handler._replace(func=self._served(name, handler.func, handler.request_type))
            for name, handler in mapping.items()
        }

    def calling(self, path: str) -> _Call:
        """A call of the RPC at `path`, over any transport, for `with`: counted while under
        way, and, unless the RPC answers without the node, refused with UNAVAILABLE until
        the node is attached and once the server drains."""
        if path not in _NODE_FREE:
            if self._node is None:
                raise GRPCError(Status.UNAVAILABLE, NODE_STARTING)
            if self._draining:
                raise GRPCError(Status.UNAVAILABLE, SHUTTING_DOWN)
        return _Call(self)

    def calls_under_way(self, change: int) -> None:
        """Count a call that starts (+1) or ends (-1); the last to end after `drain` sets
        the server drained."""
        self._calls += change
        if self._draining and self._calls == 0:
            self._drained.set()

    def _served(self, path: str, handler: StreamHandler, request_type: type) -> StreamHandler:
        """`handler`, run as a call (`calling`), its request bytes admitted within the RPC's
        limit and the budgets, with the node's request errors turned into gRPC statuses
        with the node's message (a failed precondition, too)."""
        limit, flag = self.admission.limits.of(request_type.__name__)
        admission = self.admission

        @functools.wraps(handler)
        async def served(stream: grpclib.server.Stream[Any, Any]) -> None:
            failure: GRPCError | None = None
            with self.calling(path):
                held = admission.admit(stream, limit, flag)
                try:
                    await handler(stream)
                except RequestError as exc:
                    failure = grpc_error(exc)
                except PreconditionFailed as exc:
                    await _refuse_stale_write(stream, exc)
                except GRPCError as exc:
                    failure = GRPCError(exc.status, exc.message, exc.details)
                finally:
                    held.release()
            if failure is not None:
                # Raised afresh, outside the handler's except: the original's traceback, with
                # the frames that held the request's bytes, goes now, not when grpclib drops
                # its finished handler tasks.
                raise failure

        return served

    # Lifecycle ---------------------------------------------------------------------------

    async def get_status(self, message: pb.GetStatusRequest) -> pb.GetStatusResponse:
        status = pb.GetStatusResponse(
            node_id=self._node_id,
            endpoint_addr=self._endpoint_addr,
            sync_active=False,
            connected_peers=0,
            phase=self.phase,
        )
        node = self._node
        if node is not None:  # while the store opens, nothing more is known
            status.head_sequence = node.head_sequence
            status.epoch = node.epoch
            status.subscribers = node.feed.subscriber_count
            status.lag_events = node.feed.lag_events
            status.replay_floor = node.replay_floor
            status.catch_up_floor = node.catch_up_floor
            replica = node.replica
            if replica is not None:
                status.shared = True
                status.stream = replica.config.stream
                status.connected = replica.connected
                status.sync_active = replica.sync_active
                status.connected_peers = len(replica.peers)
                if self.phase == pb.NodePhase.READY and replica.catching_up:
                    status.phase = pb.NodePhase.SYNCING
        return status

    # Peers and sync: over the shared stream in shared mode; honest answers for a single node

    def _shared_mode(self, rpc: str) -> Replica:
        replica = self.node.replica
        if replica is None:
            raise GRPCError(Status.UNIMPLEMENTED, NO_MESH.format(rpc=rpc))
        return replica

    async def connect_peer(self, message: pb.ConnectPeerRequest) -> pb.ConnectPeerResponse:
        if self.node.replica is not None:
            raise GRPCError(Status.UNIMPLEMENTED, SHARED_PEERS.format(rpc="ConnectPeer"))
        raise GRPCError(Status.UNIMPLEMENTED, NO_MESH.format(rpc="ConnectPeer"))

    async def disconnect_peer(self, message: pb.DisconnectPeerRequest) -> pb.DisconnectPeerResponse:
        how = NO_MESH.format(rpc="a peer")
        if self.node.replica is not None:
            how = SHARED_PEERS.format(rpc="DisconnectPeer")
        raise GRPCError(
            Status.FAILED_PRECONDITION,
            f"no peer {excerpt(message.endpoint_id)} is connected: {how}",
        )

    async def list_peers(self, message: pb.ListPeersRequest) -> pb.ListPeersResponse:
        replica = self.node.replica
        if replica is None:
            return pb.ListPeersResponse(peers=[])
        return pb.ListPeersResponse(
            peers=[
                pb.PeerInfo(endpoint_id=peer.node_id, addresses=[peer.endpoint], connected=True)
                for peer in replica.peers
            ]
        )

    async def start_sync(self, message: pb.StartSyncRequest) -> pb.StartSyncResponse:
        self._shared_mode("StartSync").start_sync()
        return pb.StartSyncResponse()

    async def stop_sync(self, message: pb.StopSyncRequest) -> pb.StopSyncResponse:
        replica = self.node.replica
        if replica is not None:
            replica.stop_sync()
        # A single node never syncs, so it is already stopped.
        return pb.StopSyncResponse()

    async def get_sync_stats(self, message: pb.GetSyncStatsRequest) -> pb.GetSyncStatsResponse:
        replica = self.node.replica
        if replica is None:
            return pb.GetSyncStatsResponse(
                sync_active=False, connected_peers=0, bytes_sent=0, bytes_received=0
            )
        applied = replica.applied
        stream_head = max(replica.stream_head, applied)
        return pb.GetSyncStatsResponse(
            sync_active=replica.sync_active,
            connected_peers=len(replica.peers),
            bytes_sent=replica.link.bytes_sent,
            bytes_received=replica.link.bytes_received,
            applied_sequence=applied,
            stream_head=stream_head,
            lag=stream_head - applied,
        )

    # Documents ---------------------------------------------------------------------------

    async def get_document(self, message: pb.GetDocumentRequest) -> pb.GetDocumentResponse:
        document = self.node.get(message.collection, message.doc_id)
        if document is None:
            return pb.GetDocumentResponse()
        return pb.GetDocumentResponse(json_data=document.json_data, sequence=document.sequence)

    async def delete_document(self, message: pb.DeleteDocumentRequest) -> pb.DeleteDocumentResponse:
        node = self.node
        sequence = await _committed(
            functools.partial(node.delete_nowait, expected_sequence=message.expected_sequence),
            functools.partial(node.delete, expected_sequence=message.expected_sequence),
            message.collection,
            message.doc_id,
        )
        return pb.DeleteDocumentResponse(sequence=sequence)

    async def list_documents(self, message: pb.ListDocumentsRequest) -> pb.ListDocumentsResponse:
        doc_ids = await call_trio(self.node.list_ids, message.collection)
        return pb.ListDocumentsResponse(doc_ids=doc_ids)

    # Decoded and answered with the runtime's C message classes (see `wire.message_class`):
    # the writes' share of the server's CPU.

    async def put(self, request: Any) -> Any:
        """PutDocument, in the runtime's classes."""
        expected = request.expected_sequence if request.HasField("expected_sequence") else None
        node = self.node
        sequence = await _committed(
            functools.partial(node.put_nowait, expected_sequence=expected),
            functools.partial(node.put, expected_sequence=expected),
            request.collection,
            request.doc_id,
            request.json_data,
        )
        return PutDocumentResponse(sequence=sequence)

    async def write(self, request: Any) -> Any:
        """WriteDocuments, in the runtime's classes."""
        mutations = [
            Mutation(
                write.collection,
                write.doc_id,
                write.json_data if write.HasField("json_data") else None,
            )
            for write in request.writes
        ]
        node = self.node
        sequences = await _committed(node.write_nowait, node.write, mutations)
        return WriteDocumentsResponse(sequences=sequences)

    async def _put_document(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(await self.put(request))

    async def _write_documents(self, stream: grpclib.server.Stream[Any, Any]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(await self.write(request))

    def answer(self, path: str) -> Callable[[Any], Awaitable[Any]]:
        """The unary RPC at `path` as a function from its request message to its response,
        for transports other than grpclib's; the request is of the class `__mapping__`
        gives."""
        if path == PUT_DOCUMENT:
            return self.put
        if path == WRITE_DOCUMENTS:
            return self.write
        rpc = path.rsplit("/", 1)[1]
        if rpc in ATTACHMENT_RPCS:
            return functools.partial(_no_attachment, rpc)
        return cast(Callable[[Any], Awaitable[Any]], getattr(self, snake_case(rpc)))

    # Typed collections -------------------------------------------------------------------

    async def _put_typed(self, message: typed.M | None, name: str) -> int:
        message = _required(message, name)
        collection = typed.COLLECTIONS[type(message)]
        doc_id = getattr(message, "id", "")
        if not doc_id:
            raise InvalidRequest(f"{name}.id must not be empty")
        node = self.node
        return await _committed(
            node.put_nowait, node.put, collection, doc_id, typed.to_json(message, name)
        )

    async def _get_typed(self, message_type: type[typed.M]) -> list[typed.M]:
        documents = await call_trio(self.node.list_documents, typed.COLLECTIONS[message_type])
        return typed.from_documents(
            message_type, [(document.doc_id, document.json_data) for document in documents]
        )

    async def put_platform(self, message: pb.PutPlatformRequest) -> pb.PutPlatformResponse:
        return pb.PutPlatformResponse(sequence=await self._put_typed(message.platform, "platform"))

    async def get_platforms(self, message: pb.GetPlatformsRequest) -> pb.GetPlatformsResponse:
        return pb.GetPlatformsResponse(platforms=await self._get_typed(pb.Platform))

    async def put_cell(self, message: pb.PutCellRequest) -> pb.PutCellResponse:
        return pb.PutCellResponse(sequence=await self._put_typed(message.cell, "cell"))

    async def get_cells(self, message: pb.GetCellsRequest) -> pb.GetCellsResponse:
        return pb.GetCellsResponse(cells=await self._get_typed(pb.Cell))

    async def put_track(self, message: pb.PutTrackRequest) -> pb.PutTrackResponse:
        return pb.PutTrackResponse(sequence=await self._put_typed(message.track, "track"))

    async def get_tracks(self, message: pb.GetTracksRequest) -> pb.GetTracksResponse:
        return pb.GetTracksResponse(tracks=await self._get_typed(pb.Track))

    async def put_command(self, message: pb.PutCommandRequest) -> pb.PutCommandResponse:
        return pb.PutCommandResponse(sequence=await self._put_typed(message.command, "command"))

    async def get_commands(self, message: pb.GetCommandsRequest) -> pb.GetCommandsResponse:
        return pb.GetCommandsResponse(commands=await self._get_typed(pb.Command))

    async def put_node(self, message: pb.PutNodeRequest) -> pb.PutNodeResponse:
        return pb.PutNodeResponse(sequence=await self._put_typed(message.node, "node"))

    async def get_nodes(self, message: pb.GetNodesRequest) -> pb.GetNodesResponse:
        return pb.GetNodesResponse(nodes=await self._get_typed(pb.Node))

    # Collection configs ------------------------------------------------------------------

    # Kept as documents of a reserved collection and enforced by the node: see
    # `peat_sync.node.collection_configs`. Read from the node's memory, which follows that
    # collection.

    async def set_collection_config(
        self, message: pb.SetCollectionConfigRequest
    ) -> pb.SetCollectionConfigResponse:
        config = _required(message.config, "config")
        await call_trio(
            self.node.set_collection_config,
            CollectionConfig(
                config.collection,
                config.deletion_policy,
                config.soft_delete_ttl_secs,
                config.tombstone_ttl_secs,
            ),
        )
        return pb.SetCollectionConfigResponse()

    async def get_collection_config(
        self, message: pb.GetCollectionConfigRequest
    ) -> pb.GetCollectionConfigResponse:
        check_name("collection", message.collection)
        config = self.node.collection_configs.get(message.collection)
        if config is None:
            raise GRPCError(
                Status.NOT_FOUND,
                NO_COLLECTION_CONFIG.format(collection=excerpt(message.collection)),
            )
        return pb.GetCollectionConfigResponse(config=_collection_config(config))

    async def list_collection_configs(
        self, message: pb.ListCollectionConfigsRequest
    ) -> pb.ListCollectionConfigsResponse:
        configs = self.node.collection_configs.all()
        return pb.ListCollectionConfigsResponse(configs=list(map(_collection_config, configs)))

    # Change feed -------------------------------------------------------------------------

    async def _subscribe(
        self,
        stream: grpclib.server.Stream[SubscribeRequest, Any],
        *,
        frame: Callable[[list[ChangeEvent]], Iterable[bytes]],
    ) -> None:
        # Read the request before streaming: an unread request holds flow-control window.
        request = await stream.recv_message()
        assert request is not None
        await self.learn_stream_head(request.since_sequence)
        with self.opened_subscription(request, _peer_name(stream)) as subscription:
            await stream.send_initial_metadata()  # then each message is only its bytes
            pump = BatchPump(functools.partial(subscription.next_batch, SEND_BATCH))
            stalled_after = self.node.config.stalled_after
            # Where the client resumes once every batch sent so far has arrived.
            resume_point = subscription.resume_point
            # Few streams: the server has CPU to spare, and readers take paced messages
            # faster; many: messages share frames, at a tenth of the server's CPU each.
            feed = self.node.feed
            try:
                async with pump.running():
                    while True:
                        events = await pump.next()
                        paced = frame is one_per_message and feed.subscriber_count <= PACED_STREAMS
                        await send_within(
                            stream, frame(events), paced=paced, stalled_after=stalled_after
                        )
                        resume_point = subscription.resume_point
            except NodeClosed:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    # The client reset the stream while the node closed: there is nobody to
                    # tell, and grpclib expects the cancellation to finish the handler.
                    raise asyncio.CancelledError from None
                # Sent here, inside the subscription's block, so the trailers are on their
                # way before the server, seeing every subscription closed, stops.
                await stream.send_trailing_metadata(
                    status=Status.UNAVAILABLE,
                    status_message="the server is shutting down; "
                    + self.resume_advice(subscription.resume_point),
                )
            except StreamStalled as stall:
                self.node.stats.stalled_streams += 1
                log.warning(
                    "subscriber %s stalled: no send completed for %.1fs (--stalled-stream-timeout"
                    " %gs), its client reading nothing; cutting the stream off (%s; it resumes"
                    " from %s)",
                    subscription.name,
                    stall.stalled_for,
                    stalled_after,
                    "RST_STREAM mid-message" if stall.mid_message else "UNAVAILABLE",
                    "a new snapshot" if resume_point is None else f"sequence {resume_point}",
                )
                # Inside the subscription's block: the slot is freed once the client is told.
                await cut_off(
                    stream,
                    stall,
                    f"cut off: the stream sent nothing for {stall.stalled_for:.1f}s because the"
                    " client did not read it (--stalled-stream-timeout); "
                    + self.resume_advice(resume_point),
                )

    @contextlib.contextmanager
    def opened_subscription(self, request: SubscribeRequest, peer: str) -> Iterator[Subscription]:
        """The node's subscription for `request` from `peer`, over any transport, logged as
        it opens and closes. Learn the stream's head first (`learn_stream_head`)."""
        with self.node.subscribe(
            request.collections,
            request.since_sequence,
            epoch=request.epoch,
            snapshot=request.snapshot,
            peer=peer,
            query=request.query,
            legacy=request.legacy,
        ) as subscription:
            log.info(
                "subscriber %s opened (collections: %s, since: %s, snapshot: %s%s%s)",
                subscription.name,
                subscription.describe_collections(),
                request.since_sequence,
                "yes" if request.snapshot or (request.legacy and request.collections) else "no",
                ", with a query" if request.query else "",
                ", legacy: UPSERT, DELETE and RESYNC only" if request.legacy else "",
            )
            try:
                yield subscription
            finally:
                log.info(
                    "subscriber %s closed at sequence %d",
                    subscription.name,
                    subscription.position,
                )

    async def learn_stream_head(self, since: int | None) -> None:
        """Asyncio-flavoured. Shared mode: a position from another sidecar can be ahead of
        what this one has applied. Learn the stream's head before judging it, so that it is
        followed (once this sidecar gets there) rather than refused as ahead."""
        replica = self.node.replica
        if replica is None or since is None or since <= replica.stream_head:
            return
        with contextlib.suppress(Exception):  # NATS away: judged by what is known
            head = await asyncio.wait_for(replica.link.last_sequence(), STREAM_HEAD_WAIT)
            replica.stream_head = max(replica.stream_head, head)

    def resume_advice(self, resume_point: int | None) -> str:
        """What a subscriber whose stream ends at `resume_point` resubscribes with."""
        if resume_point is None:
            return "resubscribe with snapshot=true: the snapshot was not complete"
        return f"resubscribe with since_sequence={resume_point} and epoch={self.node.epoch}"


def _collection_config(config: CollectionConfig) -> pb.CollectionConfig:
    return pb.CollectionConfig(
        collection=config.collection,
        deletion_policy=config.deletion_policy,
        soft_delete_ttl_secs=config.soft_delete_ttl_secs,
        tombstone_ttl_secs=config.tombstone_ttl_secs,
    )


async def _no_attachments(rpc: str, stream: grpclib.server.Stream[Any, Any]) -> None:
    """Asyncio-flavoured: answer an attachment RPC UNIMPLEMENTED, its request unread (grpclib
    resets the stream after a failed status, which gives back its flow-control window)."""
    await _no_attachment(rpc, None)


async def _no_attachment(rpc: str, request: object) -> None:
    raise GRPCError(Status.UNIMPLEMENTED, NO_ATTACHMENTS.format(rpc=rpc))


async def _refuse_stale_write(
    stream: grpclib.server.Stream[Any, Any], refused: PreconditionFailed
) -> None:
    """Asyncio-flavoured: end the call with FAILED_PRECONDITION, its message, and the
    document's current sequence as trailing metadata (`CURRENT_SEQUENCE_TRAILER`).

    Sent here rather than raised: grpclib turns a raised GRPCError into trailers of its
    status, message and details only (`grpclib.server.Stream.__aexit__`), so custom trailing
    metadata goes through `send_trailing_metadata`, as the handler's own non-OK end."""
    with contextlib.suppress(StreamClosedError):  # reset by the client: nobody to tell
        await stream.send_trailing_metadata(
            status=Status.FAILED_PRECONDITION,
            status_message=str(refused),
            metadata={CURRENT_SEQUENCE_TRAILER: str(refused.current)},
        )


async def _committed(
    nowait: Callable[..., None], wait: Callable[..., Awaitable[T]], *args: Any
) -> T:
    """Asyncio-flavoured: a write of the node, queued without a trio task (`nowait`), or,
    when the write queue is full, through its waiting twin (`wait`)."""
    try:
        return await call_nowait(functools.partial(nowait, *args))
    except QueueFull:
        return cast(T, await call_trio(wait, *args))


def one_per_message(events: list[ChangeEvent]) -> Iterator[bytes]:
    """Subscribe: each event is one `DocumentChange` message."""
    return (event.encoded for event in events)


def batched(events: list[ChangeEvent]) -> Iterator[bytes]:
    """SubscribeBatched: `DocumentChangeBatch` messages of up to `BATCH_MESSAGE_BYTES`, each
    the concatenation of its events' bytes, as the wire format of a repeated field allows."""
    parts: list[bytes] = []
    size = 0
    for event in events:
        if parts and size + len(event.encoded) > BATCH_MESSAGE_BYTES:
            yield b"".join(parts)
            parts, size = [], 0
        parts += (event.batch_entry_prefix, event.encoded)
        size += len(event.encoded)
    if parts:
        yield b"".join(parts)
