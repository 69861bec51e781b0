"""The HTTP listener's application: the API (Connect and gRPC-Web) under the service's
path, within the limits of `guard`; the live page everywhere else; and CORS for the browser
origins allowed. Asyncio-flavoured."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connectrpc.server import ConnectASGIApplication
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.staticfiles import StaticFiles

from peat_sync.server.service import SidecarService
from peat_sync.web.codecs import BinaryCodec, JsonCodec
from peat_sync.web.endpoints import connect_endpoints
from peat_sync.web.guard import App, Guard, Receive, Scope, Send
from peat_sync.wire import CURRENT_SEQUENCE_TRAILER, SERVICE

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


def web_app(service: SidecarService, *, stalled_after: float, cors_origins: list[str]) -> App:
    """The listener's ASGI application for `service`."""
    limits = service.admission.limits
    largest = max(limits.max_message_bytes, limits.max_request_bytes)
    api = _ConnectApp(
        service=service,
        endpoints=connect_endpoints,
        codecs=[BinaryCodec(limits), JsonCodec(limits)],
        read_max_bytes=largest,
        # No compression: a sidecar's clients are near, and gzip cost a stream a quarter of
        # its CPU.
        compressions=[],
    )
    # Missing files answer 404, not a server error.
    page = ExceptionMiddleware(StaticFiles(directory=PAGE, html=True))

    guard = Guard(service, stalled_after, largest)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(guard, receive, send)
        elif scope["path"].startswith(API_PREFIX):
            await guard.call(api, scope, receive, send)
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


async def _lifespan(guard: Guard, receive: Receive, send: Send) -> None:
    """The guard's watch runs while the server does (`serve` opens and closes the node)."""
    watch = asyncio.create_task(guard.watch())
    try:
        while True:
            message = await receive()
            await send({"type": f"{message['type']}.complete"})
            if message["type"] == "lifespan.shutdown":
                return
    finally:
        watch.cancel()
