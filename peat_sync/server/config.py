"""What `serve` runs with: the node's configuration, and the server's own around it.

Each default is written here or in `NodeConfig`, once; the command line shows and applies
them from there (`peat_sync.cli.options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ssl import SSLContext

from peat_sync.address import ListenAddress
from peat_sync.node import NodeConfig
from peat_sync.server.request_limits import RequestLimits

# Loopback only: exposing the documents to a network is a choice the user makes.
DEFAULT_LISTEN = ListenAddress("127.0.0.1", 50051)
# Beside gRPC's port, and clear of the 8080 that applications in the same pod often take.
DEFAULT_HTTP_LISTEN = ListenAddress("127.0.0.1", 50052)
# What a request holds beyond its document: the collection, the doc_id (512 bytes each at
# most) and the message's framing, with room to spare.
MESSAGE_OVERHEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServeConfig:
    node: NodeConfig
    listen: ListenAddress = DEFAULT_LISTEN
    # The HTTP listener (Connect, gRPC-Web and the live page); None: none.
    http_listen: ListenAddress | None = DEFAULT_HTTP_LISTEN
    # Browser origins allowed to call the API from other pages (CORS); none by default.
    http_cors_origin: tuple[str, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    metrics_listen: ListenAddress | None = None  # None: no metrics endpoint
    drain_timeout: float = 10.0  # seconds
    # Built from --tls-* with the rest of the configuration, so that a key that does not fit
    # its certificate is a start-up error like any bad value; None serves plaintext.
    tls: SSLContext | None = None
    http_tls: SSLContext | None = None  # the same certificate, for HTTP/1.1 and h2
    max_request_bytes: int = 64 * 1024 * 1024  # a WriteDocuments request; a connection's
    max_message_bytes: int | None = None  # any other request; None: the document's, + overhead
    max_inflight_request_bytes: int = 256 * 1024 * 1024

    @property
    def request_limits(self) -> RequestLimits:
        return RequestLimits(
            max_message_bytes=self.max_message_bytes
            or self.node.max_document_bytes + MESSAGE_OVERHEAD_BYTES,
            max_request_bytes=self.max_request_bytes,
            max_inflight_bytes=self.max_inflight_request_bytes,
        )
