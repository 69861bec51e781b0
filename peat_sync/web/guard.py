"""What the HTTP listener holds around each API call, as the gRPC port does for its own:
the request bytes in flight, and responses whose client stops reading. Asyncio-flavoured.

- A request's bytes are taken from the server's budget of request bytes in flight
  (`--max-inflight-request-bytes`, shared with the gRPC port) before its body is read. A body
  of a known length holds that many bytes; one of unknown length (a stream's) holds its RPC's
  limit while it arrives. Once it is in, it holds what it is, so a long-lived stream does not
  keep the room its request might have taken.
- Every send of a response must complete within `--stalled-stream-timeout`: a client that
  reads nothing is cut off and its subscriber slot freed, while a slow reader is only slow.
  One task watches every send under way, so that a send costs two dictionary operations
  rather than a timer of its own (a timer per send was a third of a stream's CPU).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from peat_sync.server.service import SidecarService
from peat_sync.wire import SERVICE, SUBSCRIBE, SUBSCRIBE_BATCHED, WRITE_DOCUMENTS

log = logging.getLogger("peat_sync.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

# Sends are checked this many times per --stalled-stream-timeout: a stalled one is cut off
# after between 1 and 1 + 1/CHECKS_PER_TIMEOUT of the timeout.
CHECKS_PER_TIMEOUT = 4


class SendStalled(Exception):
    """A send of a response made no progress for the stalled-stream timeout."""


class Guard:
    """Runs API calls (`call`) within the request budget and the bound on stalled sends;
    `watch` must run meanwhile."""

    def __init__(self, service: SidecarService, stalled_after: float, largest: int) -> None:
        self._service = service
        self._stalled_after = stalled_after
        self._largest = largest
        # The task of each call with a send under way, and when the send began.
        self._sending: dict[asyncio.Task[Any], float] = {}
        self._stalled: set[asyncio.Task[Any]] = set()

    async def watch(self) -> None:
        """Cut off the calls whose send has been under way for the timeout; until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._stalled_after / CHECKS_PER_TIMEOUT)
            now = loop.time()
            for task, since in list(self._sending.items()):
                if now - since >= self._stalled_after and task not in self._stalled:
                    self._stalled.add(task)
                    task.cancel()

    async def call(self, api: App, scope: Scope, receive: Receive, send: Send) -> None:
        held = self._request_bytes(scope)
        budget = self._service.admission.total
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

        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        sending = self._sending

        async def send_watched(message: Message) -> None:
            sending[task] = loop.time()
            try:
                await send(message)
            except asyncio.CancelledError:
                if task in self._stalled:
                    task.uncancel()
                    raise SendStalled from None
                raise
            finally:
                del sending[task]

        try:
            await api(scope, receive_counted, send_watched)
        except SendStalled:
            self._cut_off(scope)
        finally:
            self._stalled.discard(task)
            budget.release(held)

    def _request_bytes(self, scope: Scope) -> int:
        """What a request's body holds of the budget until it is in."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit():
                return min(int(value), self._largest)
        limits = self._service.admission.limits
        if scope["path"] == WRITE_DOCUMENTS:
            return limits.max_request_bytes
        return limits.max_message_bytes

    def _cut_off(self, scope: Scope) -> None:
        node = self._service.attached_node
        if node is not None and scope["path"] in (SUBSCRIBE, SUBSCRIBE_BATCHED):
            node.stats.stalled_streams += 1
        client = scope.get("client")
        log.warning(
            "%s from %s stalled: no send completed for %gs (--stalled-stream-timeout), its"
            " client reading nothing; cutting it off",
            scope["path"].removeprefix(f"/{SERVICE}/"),
            f"{client[0]}:{client[1]}" if client else "a unix socket",
            self._stalled_after,
        )
