"""Run the node and its gRPC server until asked to stop."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from peat_sync import tls
from peat_sync.address import ListenAddress
from peat_sync.bridge import call_asyncio, open_asyncio_loop
from peat_sync.node import open_node
from peat_sync.server.collector import long_lived_objects_set_aside
from peat_sync.server.config import ServeConfig
from peat_sync.server.grpc_server import GrpcServer
from peat_sync.server.metrics import serving_metrics
from peat_sync.server.service import SidecarService
from peat_sync.store.sqlite import StoreError

log = logging.getLogger("peat_sync.server")

# After the drain, calls still under way (cancelled by the server's close) get this long to
# finish.
SHUTDOWN_GRACE_SECONDS = 5.0


class ListenError(Exception):
    """The listen address cannot be bound; the message says why."""


def dead_peer_timeout(heartbeat_interval: float) -> float:
    """Seconds sent data may stay unacknowledged before a connection counts as dead: a few
    heartbeats, so that a stream to a vanished peer ends instead of waiting for minutes."""
    return max(3 * heartbeat_interval, 20.0)


def _bind(address: ListenAddress, heartbeat_interval: float) -> tuple[socket.socket, ListenAddress]:
    """Bind a listening socket; returns it with the address actually bound (port 0 resolved)."""
    if address.path is not None:
        return _bind_unix(address.path), address
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            address.host, address.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.create_server(sockaddr[:2], family=family)
        # asyncio disables Nagle only on sockets created with proto=IPPROTO_TCP, and this one
        # has proto 0; accepted connections inherit the option from the listening socket.
        # Without it every small response waits for a delayed ACK (about 40 ms).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):  # Linux; inherited like TCP_NODELAY
            milliseconds = int(dead_peer_timeout(heartbeat_interval) * 1000)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, milliseconds)
    except OSError as exc:
        raise ListenError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    return sock, ListenAddress(host=host, port=port)


def _accepts_connections(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


def _bind_unix(path: Path) -> socket.socket:
    try:
        if path.exists():
            if not stat.S_ISSOCK(path.stat().st_mode):
                raise ListenError(f"cannot listen on unix://{path}: it exists and is not a socket")
            if _accepts_connections(path):
                raise ListenError(
                    f"cannot listen on unix://{path}: another server is listening on it;"
                    " stop that server or choose another path"
                )
            path.unlink()  # a stale socket left by a server that is gone
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Only the owner may connect: documents are not for every local user. bind creates the
        # socket file with the umask's mode, so it is 0600 from its first instant; a chmod
        # after bind would leave a moment in which another user could connect. Nothing else
        # runs yet that could create files under this process-wide umask.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        sock.listen()
    except OSError as exc:
        raise ListenError(f"cannot listen on unix://{path}: {exc.strerror or exc}") from None
    return sock


def _create_data_dir(path: Path) -> None:
    """Create the data dir, if need be, before the server listens, so that an unusable one
    is a one-line start-up error like a busy port; the store opens there afterwards."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot open the store in {path}: {exc}") from None


def page_address(address: ListenAddress, tls_context: ssl.SSLContext | None) -> str:
    """Where the HTTP listener at `address` is reached, and how."""
    if address.path is not None:
        return f"{address} (HTTP over a unix socket: through a proxy, or curl --unix-socket)"
    return f"{'https' if tls_context else 'http'}://{address.host_port}/ (open it in a browser)"


def _log_unhandled(loop: Any, context: dict[str, Any]) -> None:
    """An error that no handler took, on one connection, say, is logged: trio_asyncio's own
    handler would raise it into the server and end it, for every client."""
    exception = context.get("exception")
    log.error(
        "an error nothing handled (the server goes on): %s",
        context.get("message") or "no message",
        exc_info=exception if isinstance(exception, BaseException) else None,
    )


def _warn_if_open(
    listen: ListenAddress, bound: ListenAddress, tls_context: ssl.SSLContext | None
) -> None:
    """Warn of a port that every interface reaches in plaintext."""
    if tls_context is None and _listens_everywhere(listen):
        log.warning(
            "listening on every interface (%s) without TLS: anyone who can reach this port"
            " can read and change every document, and see the traffic; serve TLS with"
            " --tls-cert/--tls-key (and --tls-client-ca to admit only known clients), or"
            " listen on loopback (tcp://127.0.0.1:PORT)",
            bound,
        )


def _listens_everywhere(address: ListenAddress) -> bool:
    """Whether `address` is every interface of the machine (0.0.0.0, ::, or no host)."""
    if address.path is not None:
        return False
    try:
        return not address.host or ipaddress.ip_address(address.host).is_unspecified
    except ValueError:  # a host name: one interface
        return False


@asynccontextmanager
async def _grpc_server(
    services: list[Any],
    sock: socket.socket,
    listen: ListenAddress,
    tls_context: ssl.SSLContext | None,
) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Trio-flavoured, inside the asyncio loop: serve `services` on `sock`, over TLS with
    `tls_context` if given, for the duration of the block. Yields `close`, which closes the
    server once: running calls are cancelled and get `SHUTDOWN_GRACE_SECONDS` to finish; the
    block's end calls it too."""
    server = GrpcServer(services)  # inside the asyncio loop, which grpclib binds to
    await call_asyncio(server.start, sock, tls_context)
    closed = False

    async def close() -> None:
        nonlocal closed
        if closed:
            return
        closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_GRACE_SECONDS):
            await call_asyncio(server.close)
        if listen.path is not None:
            listen.path.unlink(missing_ok=True)

    try:
        yield close
    finally:
        await close()


@asynccontextmanager
async def _http_server(
    config: ServeConfig, service: SidecarService
) -> AsyncIterator[tuple[ListenAddress | None, Callable[[], Awaitable[None]]]]:
    """Trio-flavoured, inside the asyncio loop: the HTTP listener (Connect, gRPC-Web and the
    live page) for `service`, if `config` has one, for the duration of the block. Yields
    the address it bound (None: no listener) and `close`, which closes it once, giving the
    requests under way `SHUTDOWN_GRACE_SECONDS`; the block's end calls it too."""
    listen = config.http_listen
    if listen is None:
        yield None, trio.lowlevel.checkpoint
        return
    from peat_sync.web.asgi import web_app
    from peat_sync.web.listener import HttpServer

    sock, bound = _bind(listen, config.node.heartbeat_interval)
    _warn_if_open(listen, bound, config.http_tls)
    app = web_app(
        service,
        stalled_after=config.node.stalled_after,
        cors_origins=list(config.http_cors_origin),
    )
    server = HttpServer(app, sock, config.http_tls)
    closed = False
    async with trio.open_nursery() as nursery:

        async def close() -> None:
            nonlocal closed
            if closed:
                return
            closed = True
            server.close(SHUTDOWN_GRACE_SECONDS)
            with trio.CancelScope(shield=True), trio.move_on_after(2 * SHUTDOWN_GRACE_SECONDS):
                await serving.wait()
            nursery.cancel_scope.cancel()
            if listen.path is not None:
                listen.path.unlink(missing_ok=True)

        serving = trio.Event()

        async def run() -> None:
            try:
                await call_asyncio(server.serve)
            finally:
                serving.set()

        nursery.start_soon(run)
        try:
            yield bound, close
        finally:
            await close()


async def serve(
    config: ServeConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[ListenAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Trio-flavoured: serve until `stop` is set, then shut down cleanly.

    The server listens before the store opens: while it opens, GetStatus reports
    INITIALIZING, health checks NOT_SERVING, and every other call fails with UNAVAILABLE.
    Reports the bound address through `task_status` once the node is ready. On stop, the
    server drains: it refuses new calls, health checks report NOT_SERVING, open streams end
    with their resume point, and calls under way get `--drain-timeout` in all to finish;
    then the node commits what is queued and closes the store.
    """
    # Imported only to serve: grpclib's health and reflection protos go into protobuf's
    # default pool, where grpcio's own copies (grpcio-health-checking, grpcio-reflection)
    # clash with them in any process that imports both, such as a test run.
    from peat_sync.server.standard import Health, reflection, service_names

    sock, bound = _bind(config.listen, config.node.heartbeat_interval)
    _warn_if_open(config.listen, bound, config.tls)
    _create_data_dir(config.node.data_dir)
    data_dir = config.node.data_dir.resolve()
    async with open_asyncio_loop() as loop:
        loop.set_exception_handler(_log_unhandled)
        service = SidecarService(config.node.node_id, str(bound), config.request_limits)
        health = Health(service_names([service]))
        services = [service, health, *reflection([service, health])]
        async with (
            _grpc_server(services, sock, config.listen, config.tls) as close_server,
            _http_server(config, service) as (http_bound, close_http),
            serving_metrics(config.metrics_listen, lambda: service.attached_node),
        ):
            log.info("listening on %s; opening the store in %s", bound, data_dir)
            if http_bound is not None:
                log.info(
                    "the live page, and the API in Connect and gRPC-Web: %s",
                    page_address(http_bound, config.http_tls),
                )
            async with open_node(config.node) as node, long_lived_objects_set_aside():
                try:
                    service.attach(node)
                    if node.replica is not None:
                        node.replica.endpoint = str(bound)  # what ListPeers shows the others
                    await call_asyncio(health.set_serving, True)
                    log.info(
                        "serving peat.sidecar.v1 on %s (%s, node %s, data dir %s, head"
                        " sequence %d%s)",
                        bound,
                        tls.describe(config.tls),
                        node.node_id,
                        data_dir,
                        node.head_sequence,
                        ""
                        if node.replica is None
                        else f"; shared: {node.replica.config.describe()}",
                    )
                    task_status.started(bound)
                    await stop.wait()
                    # Drain: new calls are refused from now on; the calls under way, and the
                    # writes they queued, get the drain timeout to finish.
                    service.drain()
                    deadline = trio.current_time() + config.drain_timeout
                    # Health watchers learn of the drain first, before any subscriber stream
                    # ends: each is sent NOT_SERVING, then UNAVAILABLE.
                    with trio.move_on_at(deadline):
                        await call_asyncio(health.shut_down)
                    log.info(
                        "shutting down: %d calls under way, %d of them subscriber streams,"
                        " which now end",
                        service.calls,
                        node.feed.subscriber_count,
                    )
                    # Each subscriber stream ends with UNAVAILABLE and the since_sequence to
                    # resume from.
                    node.feed.close()
                    with trio.move_on_at(deadline):
                        await call_asyncio(service.wait_drained)
                    if service.calls:  # a stream whose client stopped reading, say
                        log.warning(
                            "the drain timeout (--drain-timeout %gs) ran out: cutting off the"
                            " calls still under way (%d)",
                            config.drain_timeout,
                            service.calls,
                        )
                finally:
                    # Before the node closes: calls under way finish on an open node.
                    await close_http()
                    await close_server()
    log.info("stopped cleanly at sequence %d", node.head_sequence)
