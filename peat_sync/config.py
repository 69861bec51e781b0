"""Configuration of `peat-sync serve`: every flag has a PEAT_SIDECAR_* environment variable.

A flag wins over its variable, and the variable over the default. Each value is checked here,
so a bad one stops start-up with a one-line message naming the flag or variable at fault.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any

from peat_sync import tls
from peat_sync.node import NodeConfig


class ConfigError(Exception):
    """A bad configuration value; the message names its flag or variable."""


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

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: ListenAddress
    node: NodeConfig
    log_level: str
    log_format: str = "text"
    metrics_listen: ListenAddress | None = None  # None: no metrics endpoint
    drain_timeout: float = 10.0  # seconds
    # Built from --tls-* with the rest of the configuration, so that a key that does not fit
    # its certificate is a start-up error like any bad value; None serves plaintext.
    tls: SSLContext | None = None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def byte_size(text: str) -> int:
    """A size in bytes: 1048576, 512KiB, 64MiB, 1GiB (K, M and G are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a size; write it as 1048576, 512KiB or 64MiB")
    value = int(match[1]) * _UNITS[match[2].lower()]
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """A duration in seconds: 30 (seconds), 500ms, 10s, 15m, 24h, 7d; zero is allowed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write it as 30, 500ms, 10s, 15m, 24h or 7d")
    return float(match[1]) * _SECONDS[(match[2] or "s").lower()]


# Each idle stream wakes once per heartbeat interval: below this, idle streams cost real CPU.
MIN_HEARTBEAT_INTERVAL = 0.1


def heartbeat_interval(text: str) -> float:
    value = duration(text)
    if value < MIN_HEARTBEAT_INTERVAL:
        raise ValueError(f"must be at least {MIN_HEARTBEAT_INTERVAL * 1000:g}ms")
    return value


def non_empty(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def directory(text: str) -> Path:
    return Path(non_empty(text))


LOG_LEVELS = ("debug", "info", "warning", "error")


def log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return text.lower()


def metrics_address(text: str) -> ListenAddress:
    address = ListenAddress.parse(text)
    if address.path is not None:
        raise ValueError("metrics are served over TCP only: use tcp://HOST:PORT")
    return address


LOG_FORMATS = ("text", "json")


def log_format(text: str) -> str:
    if text.lower() not in LOG_FORMATS:
        raise ValueError(f"{text!r} is not one of {', '.join(LOG_FORMATS)}")
    return text.lower()


@dataclass(frozen=True, slots=True)
class Option:
    flag: str
    parse: Callable[[str], Any]
    default: str | None
    help: str

    @property
    def env(self) -> str:
        return "PEAT_SIDECAR_" + self.flag.removeprefix("--").replace("-", "_").upper()

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


SERVE_OPTIONS = (
    Option(
        "--listen",
        ListenAddress.parse,
        "tcp://127.0.0.1:50051",
        "where to serve gRPC: tcp://HOST:PORT, tcp://[IPV6]:PORT or unix:///PATH",
    ),
    Option(
        "--tls-cert",
        tls.certificates_file,
        None,
        "serve TLS with this PEM certificate chain (the server's certificate first); needs"
        " --tls-key. TCP only: TLS is refused on a unix socket, which its file mode (0600)"
        " already keeps to its owner",
    ),
    Option(
        "--tls-key",
        tls.private_key_file,
        None,
        "the PEM private key of --tls-cert, unencrypted; keep it readable by this user only",
    ),
    Option(
        "--tls-client-ca",
        tls.certificates_file,
        None,
        "mutual TLS: admit only clients whose certificate this PEM CA signed; needs --tls-cert"
        " and --tls-key",
    ),
    Option("--data-dir", directory, "peat-data", "directory of the store; created if missing"),
    Option("--node-id", non_empty, None, "this node's id (default: a random id)"),
    Option(
        "--broadcast-buffer-size",
        positive_int,
        "256",
        "events buffered per subscriber before it counts as lagging",
    ),
    Option(
        "--max-subscribers",
        positive_int,
        "10000",
        "open Subscribe streams at most; one more is refused with RESOURCE_EXHAUSTED (each"
        " idle stream holds about 55 KiB)",
    ),
    Option(
        "--replay-log-size",
        positive_int,
        "100000",
        "events kept in memory for subscribers that resume or lag",
    ),
    Option(
        "--replay-log-bytes",
        byte_size,
        "64MiB",
        "byte bound of the replay log (512KiB, 64MiB, 1GiB ...)",
    ),
    Option(
        "--max-document-bytes",
        byte_size,
        "1MiB",
        "largest document accepted; larger puts fail with RESOURCE_EXHAUSTED",
    ),
    Option(
        "--heartbeat-interval",
        heartbeat_interval,
        "10s",
        "silence after which an idle Subscribe stream gets a heartbeat (500ms, 10s, 1m ...)",
    ),
    Option(
        "--tombstone-retention",
        duration,
        "24h",
        "how long deletes stay available to catch-ups; a subscriber resuming from further back"
        " gets a RESYNC (15m, 24h, 7d ...)",
    ),
    Option(
        "--drain-timeout",
        duration,
        "10s",
        "on SIGTERM, how long calls under way (writes, and streams ending with their resume"
        " point) get to finish before they are cut off (500ms, 10s, 1m ...)",
    ),
    Option("--log-level", log_level, "info", "one of " + ", ".join(LOG_LEVELS)),
    Option(
        "--log-format",
        log_format,
        "text",
        "text (a readable line per event) or json (an object per line, for log collectors)",
    ),
    Option(
        "--metrics-listen",
        metrics_address,
        None,
        "serve Prometheus metrics at http://HOST:PORT/metrics (tcp://HOST:PORT; default: off)",
    ),
)


def add_options(parser: argparse.ArgumentParser, options: tuple[Option, ...]) -> None:
    for option in options:
        default = f" [default: {option.default}]" if option.default is not None else ""
        parser.add_argument(
            option.flag,
            dest=option.dest,
            metavar="VALUE",
            help=f"{option.help}{default} (env {option.env})",
        )


def resolve(
    options: tuple[Option, ...], args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The value of each option from its flag, else its variable, else its default."""
    values: dict[str, Any] = {}
    for option in options:
        flag_value = getattr(args, option.dest)
        if flag_value is not None:
            raw, source = flag_value, option.flag
        elif option.env in environ:
            raw, source = environ[option.env], option.env
        else:
            raw, source = option.default, "default"
        if raw is None:
            values[option.dest] = None
            continue
        try:
            values[option.dest] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    return values


def server_tls(values: Mapping[str, Any]) -> SSLContext | None:
    """The server's TLS context from the --tls-* values (their files already checked)."""
    cert, key, client_ca = values["tls_cert"], values["tls_key"], values["tls_client_ca"]
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(
                "--tls-client-ca needs --tls-cert and --tls-key: mutual TLS runs over TLS"
            )
        return None
    if cert is None or key is None:
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise ConfigError(
            f"{given} is set without {missing}: give both the certificate chain and its private"
            " key, or neither to serve plaintext"
        )
    if values["listen"].path is not None:
        raise ConfigError(
            f"--tls-cert: TLS is not served on a unix socket ({values['listen']}), whose file"
            " mode (0600) already keeps it to its owner; drop the --tls-* options, or listen"
            " on tcp://HOST:PORT"
        )
    try:
        return tls.server_context(cert, key, client_ca)
    except ValueError as exc:
        raise ConfigError(f"--tls-cert/--tls-key: {exc}") from None


def serve_config(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> ServeConfig:
    values = resolve(SERVE_OPTIONS, args, environ)
    node_values = {
        "data_dir": values["data_dir"],
        "broadcast_buffer_size": values["broadcast_buffer_size"],
        "max_subscribers": values["max_subscribers"],
        "replay_log_size": values["replay_log_size"],
        "replay_log_bytes": values["replay_log_bytes"],
        "max_document_bytes": values["max_document_bytes"],
        "heartbeat_interval": values["heartbeat_interval"],
        "tombstone_retention": values["tombstone_retention"],
    }
    if values["node_id"] is not None:
        node_values["node_id"] = values["node_id"]
    return ServeConfig(
        listen=values["listen"],
        node=NodeConfig(**node_values),
        log_level=values["log_level"],
        log_format=values["log_format"],
        metrics_listen=values["metrics_listen"],
        drain_timeout=values["drain_timeout"],
        tls=server_tls(values),
    )
