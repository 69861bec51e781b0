"""The service's RPCs as Connect endpoints: the gRPC service's own handlers, with its
admission, drain and errors, answered in Connect's and gRPC-Web's terms.

Asyncio-flavoured, like the service.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import grpclib.const
from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import Endpoint
from grpclib import GRPCError
from grpclib.const import Status

from peat_sync.bridge import BatchPump
from peat_sync.node import ChangeEvent, NodeClosed, RequestError
from peat_sync.server.service import (
    ATTACHMENT_RPCS,
    SEND_BATCH,
    SidecarService,
    batched,
    grpc_error,
    one_per_message,
)
from peat_sync.server.subscribe_request import SubscribeRequest
from peat_sync.store import PreconditionFailed
from peat_sync.web.codecs import Encoded
from peat_sync.wire import (
    CURRENT_SEQUENCE_TRAILER,
    SERVICE,
    SUBSCRIBE,
    SUBSCRIBE_BATCHED,
    rpc_path,
)

# gRPC's status codes, as Connect names them (the same codes, one spelling apart).
CONNECT_CODE: dict[Status, Code] = {
    status: Code.CANCELED if status is Status.CANCELLED else Code[status.name]
    for status in Status
    if status is not Status.OK
}

Frame = Callable[[list[ChangeEvent]], Iterable[bytes]]
# What each change-feed RPC streams: its messages and how its events make them.
_STREAMS: dict[str, tuple[str, Frame]] = {
    SUBSCRIBE: ("DocumentChange", one_per_message),
    SUBSCRIBE_BATCHED: ("DocumentChangeBatch", batched),
}


def connect_endpoints(service: SidecarService) -> dict[str, Any]:
    """Every RPC of the service but upstream's attachment RPCs (whose messages this proto
    lacks: Connect answers their paths UNIMPLEMENTED, as upstream does without an
    attachment root), at its path."""
    attachments = set(map(rpc_path, ATTACHMENT_RPCS))
    endpoints: dict[str, Any] = {}
    for path, handler in service.__mapping__().items():
        if path in attachments or not path.startswith(f"/{SERVICE}/"):
            continue
        method = MethodInfo(
            name=path.rsplit("/", 1)[1],
            service_name=SERVICE,
            input=handler.request_type,
            output=handler.reply_type,
            idempotency_level=IdempotencyLevel.UNKNOWN,
            stream_type=StreamType.SERVER_STREAM
            if handler.cardinality is grpclib.const.Cardinality.UNARY_STREAM
            else StreamType.UNARY,
        )
        if path in _STREAMS:
            name, frame = _STREAMS[path]
            endpoints[path] = Endpoint.server_stream(
                method, functools.partial(_subscribe, service, path, name, frame)
            )
        else:
            endpoints[path] = Endpoint.unary(method, _unary(service, path))
    return endpoints


@contextlib.contextmanager
def _connect_errors(context: RequestContext[Any, Any]) -> Iterator[None]:
    """The node's and the service's refusals, as Connect errors with the same code and
    message; a failed precondition carries the document's current sequence as a trailer,
    as on the gRPC port."""
    try:
        yield
    except RequestError as exc:
        error = grpc_error(exc)
        raise ConnectError(CONNECT_CODE[error.status], error.message or "") from None
    except GRPCError as exc:
        raise ConnectError(CONNECT_CODE[exc.status], exc.message or "") from None
    except PreconditionFailed as exc:
        context.response_trailers[CURRENT_SEQUENCE_TRAILER] = str(exc.current)
        raise ConnectError(Code.FAILED_PRECONDITION, str(exc)) from None


def _unary(service: SidecarService, path: str) -> Callable[[Any, RequestContext[Any, Any]], Any]:
    answer = service.answer(path)

    async def call(request: Any, context: RequestContext[Any, Any]) -> Any:
        with _connect_errors(context), service.calling(path):
            return await answer(request)

    return call


async def _subscribe(
    service: SidecarService,
    path: str,
    name: str,
    frame: Frame,
    request: SubscribeRequest,
    context: RequestContext[Any, Any],
) -> AsyncIterator[Any]:
    """A change-feed stream. Each message goes once the previous one was taken by the
    connection, so a client that reads slowly holds back only its own stream, whose
    subscription then catches up or resyncs as on the gRPC port; one that reads nothing is
    cut off (see `guard`)."""
    with _connect_errors(context), service.calling(path):
        await service.learn_stream_head(request.since_sequence)
        peer = context.client_address or "unix socket"
        with service.opened_subscription(request, peer) as subscription:
            pump = BatchPump(functools.partial(subscription.next_batch, SEND_BATCH))
            async with pump.running():
                while True:
                    try:
                        events = await pump.next()
                    except NodeClosed:
                        raise ConnectError(
                            Code.UNAVAILABLE,
                            "the server is shutting down; "
                            + service.resume_advice(subscription.resume_point),
                        ) from None
                    for payload in frame(events):
                        yield Encoded(name, payload)
