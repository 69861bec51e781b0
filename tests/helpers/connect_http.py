"""The HTTP listener called as a person with only a shell would: Connect's JSON over
HTTP/1.1, with Python's own http.client (what `curl -d` sends).

Streams are read envelope by envelope: a flags byte, a 4-byte length, then the message;
flag 2 marks the end of the stream, whose JSON holds the error, if any.
"""

from __future__ import annotations

import http.client
import json
import ssl
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tests.helpers.waiting import CALL_TIMEOUT

SERVICE_PATH = "/peat.sidecar.v1.PeatSidecar/"
END_STREAM = 0x02


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any  # the JSON body, or the bytes of one that is not JSON


def connection(url: str, tls: ssl.SSLContext | None = None) -> http.client.HTTPConnection:
    """A connection to the listener at `url` (http://HOST:PORT/ or https://...)."""
    parts = urlsplit(url)
    assert parts.hostname is not None, url
    assert parts.port is not None, url
    if parts.scheme == "https":
        return http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=CALL_TIMEOUT, context=tls
        )
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=CALL_TIMEOUT)


def call(
    url: str,
    rpc: str,
    request: dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """A Connect unary call of `rpc` with a JSON `request`."""
    conn = connection(url, tls)
    try:
        conn.request(
            "POST",
            SERVICE_PATH + rpc,
            body=json.dumps(request or {}),
            headers={"content-type": "application/json", **(headers or {})},
        )
        response = conn.getresponse()
        raw = response.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, body)
    finally:
        conn.close()


def ok(url: str, rpc: str, request: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON response of a call that must succeed."""
    reply = call(url, rpc, request)
    assert reply.status == 200, reply
    assert isinstance(reply.body, dict), reply
    return reply.body


class ConnectStream:
    """A Connect server stream of `rpc`, read over HTTP/1.1: `messages` yields each JSON
    message but heartbeats; `end` is the end-of-stream JSON once the stream ended."""

    def __init__(self, url: str, rpc: str, request: dict[str, Any]) -> None:
        self._conn = connection(url)
        body = json.dumps(request).encode()
        self._conn.request(
            "POST",
            SERVICE_PATH + rpc,
            body=struct.pack(">BI", 0, len(body)) + body,
            headers={"content-type": "application/connect+json"},
        )
        self.response = self._conn.getresponse()
        assert self.response.status == 200, self.response.read()
        self.end: dict[str, Any] | None = None

    def messages(self) -> Iterator[dict[str, Any]]:
        while True:
            prefix = self.response.read(5)
            if len(prefix) < 5:
                return  # the connection ended without an end-of-stream message
            flags, length = struct.unpack(">BI", prefix)
            message = json.loads(self.response.read(length))
            if flags & END_STREAM:
                self.end = message
                return
            if message.get("changeType") != "CHANGE_TYPE_HEARTBEAT":
                yield message

    def close(self) -> None:
        self._conn.close()
