"""The HTTP listener's application: the API (Connect and gRPC-Web) under the service's
path, the live page everywhere else, and CORS for the browser origins allowed.

Asyncio-flavoured. Around the API it holds what HTTP needs of its own, as the gRPC port
does for its requests:
- a request's bytes are taken from the server's budget of request bytes in flight
  (`--max-inflight-request-bytes`) before its body is read, and given back when its call
  ends; its size is bounded by its RPC's limit (see `codecs`);
- every send of a response must complete within `--stalled-stream-timeout`: a client that
  reads nothing is cut off and its subscriber slot freed, while a slow reader is only slow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from connectrpc.server import ConnectASGIApplication
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.staticfiles import StaticFiles

from peat_sync.server.service import SidecarService
from peat_sync.web.codecs import BinaryCodec, JsonCodec
from peat_sync.web.endpoints import connect_endpoints
from peat_sync.wire import CURRENT_SEQUENCE_TRAILER, SERVICE, WRITE_DOCUMENTS

log = logging.getLogger("peat_sync.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

PAGE = Path(__file__).parent / "page"
API_PREFIX = f"/{SERVICE}/"

# What a browser may send and read across origins: Connect's and gRPC-Web's headers.
CORS_REQUEST_HEADERS = [
    "content-type",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "grpc-timeout",
    "grpc-accept-encoding",
    "x-grpc-web",
    "x-user-agent",
]
CORS_RESPONSE_HEADERS = [
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    CURRENT_SEQUENCE_TRAILER,
    f"trailer-{CURRENT_SEQUENCE_TRAILER}",
]


class _ConnectApp(ConnectASGIApplication[SidecarService]):
    @property
    def path(self) -> str:
        return f"/{SERVICE}"


class SendStalled(Exception):
    """A send of a response made no progress for the stalled-stream timeout."""


def web_app(service: SidecarService, *, stalled_after: float, cors_origins: list[str]) -> App:
    """The listener's ASGI application for `service`."""
    limits = service.admission.limits
    largest = max(limits.max_message_bytes, limits.max_request_bytes)
    api = _ConnectApp(
        service=service,
        endpoints=connect_endpoints,
        codecs=[BinaryCodec(limits), JsonCodec(limits)],
        read_max_bytes=largest,
    )
    # Missing files answer 404, not a server error.
    page = ExceptionMiddleware(StaticFiles(directory=PAGE, html=True))

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _no_lifespan(receive, send)
        elif scope["path"].startswith(API_PREFIX):
            await _guarded(api, service, stalled_after, largest, scope, receive, send)
        else:
            await page(scope, receive, send)

    if not cors_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=cors_origins,
        allow_methods=["GET", "POST"],
        allow_headers=CORS_REQUEST_HEADERS,
        expose_headers=CORS_RESPONSE_HEADERS,
        max_age=7200,
    )


async def _guarded(
    api: App,
    service: SidecarService,
    stalled_after: float,
    largest: int,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Run `api` for one request within the budget of request bytes and the bound on
    stalled sends.

    A body of a known length holds that many bytes; one of unknown length (a stream's)
    holds its RPC's limit while it arrives. Once it is in, it holds what it is, so a
    long-lived stream does not keep the room its request might have taken."""
    length = _content_length(scope)
    if length is None:
        limits = service.admission.limits
        held = (
            limits.max_request_bytes
            if scope["path"] == WRITE_DOCUMENTS
            else limits.max_message_bytes
        )
    else:
        held = min(length, largest)
    budget = service.admission.total  # shared with the gRPC port
    await budget.acquire(held)
    received = 0

    async def receive_counted() -> Message:
        nonlocal held, received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if not message.get("more_body", False) and received < held:
                budget.release(held - received)
                held = received
        return message

    async def send_within(message: Message) -> None:
        try:
            async with asyncio.timeout(stalled_after):
                await send(message)
        except TimeoutError:
            raise SendStalled from None

    try:
        await api(scope, receive_counted, send_within)
    except SendStalled:
        node = service.attached_node
        if node is not None and scope["path"].endswith(("/Subscribe", "/SubscribeBatched")):
            node.stats.stalled_streams += 1
        log.warning(
            "%s from %s stalled: no send completed for %gs (--stalled-stream-timeout), its"
            " client reading nothing; cutting it off",
            scope["path"].removeprefix(API_PREFIX),
            _client(scope),
            stalled_after,
        )
    finally:
        budget.release(held)


async def _no_lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop with the server: `serve` opens and closes the node."""
    while True:
        message = await receive()
        await send({"type": f"{message['type']}.complete"})
        if message["type"] == "lifespan.shutdown":
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return max(int(value), 0)
            except ValueError:
                return None
    return None


def _client(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "a unix socket"
    return f"{client[0]}:{client[1]}"
