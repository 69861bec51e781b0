"""anycorn serving the listener's application on a bound socket, over HTTP/1.1 and h2c, or
TLS. Asyncio-flavoured (anycorn runs on AnyIO, here on asyncio): the trio side runs it
through the bridge.

anycorn is hypercorn's fork on AnyIO. It is used for the fixes hypercorn lacks: an HTTP/2
stream whose client grants no window must hold its writer back (flow control, the bound on
a slow subscriber's memory), and a request body arriving for a stream already answered must
not end the connection's task with an error."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Any, cast

from anycorn.config import Config, Sockets
from anycorn.run import worker_serve
from anycorn.utils import wrap_app

from peat_sync.web.guard import App

# A connection must send its request's headers within this many seconds of opening (or of
# its previous request ending): a client that trickles them holds no connection for long.
HEADER_SECONDS = 10.0
TLS_HANDSHAKE_SECONDS = 10.0
# Header bytes a request may have: HTTP/1.1 request line and headers, and HTTP/2's list.
MAX_HEADER_BYTES = 64 * 1024


class _Config(Config):
    """anycorn's configuration, with the server's own TLS context."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        super().__init__()
        self._tls = tls

    @property
    def ssl_enabled(self) -> bool:
        return self._tls is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self._tls


class HttpServer:
    """Serves `app` on `sock` from `serve` until `close`; with `tls`, over TLS (the context
    offers h2 and http/1.1 through ALPN)."""

    def __init__(self, app: App, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        self._app = app
        self._sockets = Sockets([sock] if tls else [], [] if tls else [sock], [])
        self._config = config = _Config(tls)
        config.keep_alive_timeout = HEADER_SECONDS
        config.ssl_handshake_timeout = TLS_HANDSHAKE_SECONDS
        config.h11_max_incomplete_size = MAX_HEADER_BYTES
        config.h2_max_header_list_size = MAX_HEADER_BYTES
        # A client keeps its connection for as many calls as it likes, as on the gRPC port
        # (the default closes it after 1,000, and clients differ in how they retry).
        config.keep_alive_max_requests = 2**62
        config.include_server_header = False
        config.accesslog = None
        # Its start-up line repeats the server's own; its errors are worth a warning.
        errors = logging.getLogger("peat_sync.web.http")
        errors.setLevel(logging.WARNING)
        config.errorlog = errors
        self._closing = asyncio.Event()

    async def serve(self) -> None:
        """Serve until `close`; then stop accepting, and give the requests under way the
        grace `close` gave."""

        async def closing() -> None:
            await self._closing.wait()

        await worker_serve(
            wrap_app(cast(Any, self._app), self._config.wsgi_max_body_size, "asgi"),
            self._config,
            sockets=self._sockets,
            shutdown_trigger=closing,
        )

    def close(self, grace: float) -> None:
        self._config.graceful_timeout = grace
        self._closing.set()
