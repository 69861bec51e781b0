"""Server addresses as users write them: tcp://HOST:PORT, tcp://[IPV6]:PORT, unix:///PATH.

Shared by the server (where it listens) and the client library (where it connects), so it
imports nothing of either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """Where the server listens: a TCP host and port, or a unix socket path."""

    host: str = ""
    port: int = 0
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        if text.startswith("unix://"):
            path = text.removeprefix("unix://")
            if not path.startswith("/"):
                raise ValueError(
                    "a unix socket needs an absolute path, as in unix:///run/peat.sock"
                )
            return cls(path=Path(path))
        hostport = text.removeprefix("tcp://")
        match = re.fullmatch(
            r"\[(?P<v6>[0-9a-fA-F:.]+)\]:(?P<p6>\d+)|(?P<host>[^:\[\]]+):(?P<port>\d+)", hostport
        )
        if match is None:
            raise ValueError("expected tcp://HOST:PORT, tcp://[IPV6]:PORT or unix:///PATH")
        host = match["v6"] or match["host"]
        port = int(match["p6"] or match["port"])
        if port > 65535:
            raise ValueError(f"port {port} is out of range (0-65535)")
        return cls(host=host, port=port)

    @property
    def grpc_target(self) -> str:
        """The address as a grpcio channel target."""
        if self.path is not None:
            return f"unix://{self.path}"
        return self.host_port

    @property
    def host_port(self) -> str:
        """HOST:PORT as a URL writes it: an IPv6 host in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}"
        return f"tcp://{self.host_port}"
