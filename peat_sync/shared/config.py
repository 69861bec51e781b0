"""How a sidecar reaches the NATS JetStream stream it shares with other sidecars."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# JetStream's rule for stream names, kept narrower so that the name is also a subject token.
STREAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class SharedConfig:
    servers: tuple[str, ...]  # nats:// or tls:// URLs of one cluster
    stream: str = "PEAT"
    creds: Path | None = None  # a NATS credentials file (JWT and NKey seed)
    tls_ca: Path | None = None  # CA bundle that signs the NATS servers' certificates
    tls_cert: Path | None = None  # client certificate, for NATS servers that verify clients
    tls_key: Path | None = None
    replicas: int = 1  # of the stream, when this sidecar creates it: 3 on a 3-node cluster
    # Seconds a write may wait for NATS to acknowledge it (retried through a leader election
    # or a reconnect) and for this sidecar to apply it.
    write_timeout: float = 10.0
    # Seconds between presence announcements; a sidecar silent for three is gone.
    presence_interval: float = 5.0

    @property
    def peers_bucket(self) -> str:
        """The KV bucket in which the sidecars of the stream announce themselves."""
        return f"peat-sidecars-{self.stream}"

    def describe(self) -> str:
        return f"stream {self.stream} on {','.join(self.servers)}"
