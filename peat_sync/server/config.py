"""What `serve` runs with: the node's configuration, and the server's own around it.

Each default is written here or in `NodeConfig`, once; the command line shows and applies
them from there (`peat_sync.cli.options`).
"""

from __future__ import annotations

from dataclasses import dataclass
from ssl import SSLContext

from peat_sync.address import ListenAddress
from peat_sync.node import NodeConfig

# Loopback only: exposing the documents to a network is a choice the user makes.
DEFAULT_LISTEN = ListenAddress("127.0.0.1", 50051)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    node: NodeConfig
    listen: ListenAddress = DEFAULT_LISTEN
    log_level: str = "info"
    log_format: str = "text"
    metrics_listen: ListenAddress | None = None  # None: no metrics endpoint
    drain_timeout: float = 10.0  # seconds
    # Built from --tls-* with the rest of the configuration, so that a key that does not fit
    # its certificate is a start-up error like any bad value; None serves plaintext.
    tls: SSLContext | None = None
