"""The options of every `peat-sync` command, in one table, and how their values are found.

A value comes from the flag, else from the option's PEAT_SIDECAR_* environment variable (if
it has one; its upstream name PEAT_NODE_* is read too, see `peat_sync.environment`), else from
the default. A default is written once: where the configuration it
sets is declared (`NodeConfig`, `ServeConfig`, the client library), and the table reads it
from there. Each value is checked here, so a bad one stops the command with a one-line message
naming the flag or variable at fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peat_sync import environment, tls
from peat_sync.address import ListenAddress
from peat_sync.bench.sizes import QUICK, SCENARIO_SUMMARIES, Sizes
from peat_sync.client.client import DEFAULT_ADDRESS, DEFAULT_TIMEOUT
from peat_sync.node import NodeConfig
from peat_sync.server.config import MESSAGE_OVERHEAD_BYTES, ServeConfig
from peat_sync.shared.config import STREAM_NAME, SharedConfig

ENV_PREFIX = environment.PREFIX


class ConfigError(Exception):
    """A bad option value; the message names its flag or variable."""


# Value kinds: each turns text into a value, or raises ValueError saying what is wrong ------


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise ValueError(f"must be at least 1, not {value}")
    return value


def sequence_number(text: str) -> int:
    value = whole_number(text)
    if value < 0:
        raise ValueError("a sequence is 0 or more")
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


def show_byte_size(value: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """A duration in seconds: 30 (seconds), 500ms, 10s, 15m, 24h, 7d; zero is allowed."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write it as 30, 500ms, 10s, 15m, 24h or 7d")
    return float(match[1]) * _SECONDS[(match[2] or "s").lower()]


def show_duration(seconds: float) -> str:
    for unit in ("h", "m", "s", "ms"):
        count = seconds / _SECONDS[unit]
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def positive_duration(text: str) -> float:
    value = duration(text)
    if value <= 0:
        raise ValueError("must be more than 0")
    return value


def seconds(text: str) -> float:
    """A number of seconds above zero, such as 10 or 2.5."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise ValueError("must be more than 0 seconds")
    return value


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


def path(text: str) -> Path:
    return Path(non_empty(text))


def one_of(*choices: str) -> Callable[[str], str]:
    def choice(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text.lower()

    return choice


LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


def metrics_address(text: str) -> ListenAddress:
    address = ListenAddress.parse(text)
    if address.path is not None:
        raise ValueError("metrics are served over TCP only: use tcp://HOST:PORT")
    return address


def http_address(text: str) -> ListenAddress | None:
    if text == "off":
        return None
    return ListenAddress.parse(text)


def show_http_address(address: ListenAddress | None) -> str:
    return "off" if address is None else str(address)


def cors_origin(text: str) -> str:
    if text != "*" and not re.fullmatch(r"https?://[^/\s]+", text):
        raise ValueError("an origin is scheme://host[:port], as in https://app.example.com, or *")
    return text


def server_address(text: str) -> str:
    """A server to connect to: HOST:PORT, tcp://HOST:PORT or unix:///PATH, kept as written."""
    ListenAddress.parse(text)
    return text


def subscriber_counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a list like 1,10,100") from None
    if not values or min(values) < 1 or values[0] != 1 or list(values) != sorted(set(values)):
        raise ValueError("expected increasing counts from 1, like 1,10,100")
    return values


NATS_SCHEMES = ("nats://", "tls://", "ws://", "wss://")


def nats_urls(text: str) -> tuple[str, ...]:
    """NATS servers of one cluster: URL[,URL...], each nats://HOST:PORT (or tls://, ws://,
    wss://); a bare HOST:PORT means nats://."""
    urls = []
    for part in text.split(","):
        url = part.strip()
        if not url:
            raise ValueError(f"{text!r} has an empty URL; write nats://HOST:PORT[,nats://...]")
        if "://" not in url:
            url = "nats://" + url
        if not url.startswith(NATS_SCHEMES):
            raise ValueError(f"{part.strip()!r} is not a NATS URL: use nats://HOST:PORT")
        urls.append(url)
    return tuple(urls)


def stream_name(text: str) -> str:
    if not STREAM_NAME.fullmatch(text):
        raise ValueError("a stream name is 1 to 64 letters, digits, - and _")
    return text


def readable_file(text: str) -> Path:
    file = path(text)
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {file}: {exc.strerror or exc}") from None
    return file


def replica_count(text: str) -> int:
    value = positive_int(text)
    if value > 5:
        raise ValueError(f"JetStream keeps at most 5 replicas, not {value}")
    return value


def scenario(text: str) -> str:
    names = list(SCENARIO_SUMMARIES)
    if text.isdigit() and 1 <= int(text) <= len(names):
        return names[int(text) - 1]
    if text not in SCENARIO_SUMMARIES:
        raise ValueError(
            f"no scenario {text!r}; choose from {', '.join(names)} (or 1-{len(names)})"
        )
    return text


# The table's rows ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a command.

    `default` is the value when neither the flag nor the variable is given (None: unset, and
    `unset` says what then happens). `env` is the variable, or None for an option without
    one. A `switch` takes no value; a `repeat` option may be given many times, and its value
    is the list of them."""

    flag: str
    parse: Callable[[str], Any]
    help: str
    default: Any = None
    env: str | None = None
    show: Callable[[Any], str] = str
    metavar: str = "VALUE"
    switch: bool = False
    repeat: bool = False
    unset: str = ""

    @property
    def dest(self) -> str:
        return _dest(self.flag)

    def describe(self) -> str:
        """The help line, with the default and the variable."""
        if self.default is not None and not self.switch:
            default = f" [default: {self.show(self.default)}]"
        elif self.unset:
            default = f" [default: {self.unset}]"
        else:
            default = ""
        env = f" (env {self.env})" if self.env else ""
        return f"{self.help}{default}{env}"


def _dest(flag: str) -> str:
    """The name of a flag's value: its configuration field, and its variable's suffix."""
    return flag.removeprefix("--").replace("-", "_")


def _env(flag: str) -> str:
    return ENV_PREFIX + _dest(flag).upper()


def _defaults(config: type[Any]) -> dict[str, Any]:
    return {
        field.name: field.default
        for field in dataclasses.fields(config)
        if field.default is not dataclasses.MISSING
    }


def _configured(config: type[Any]) -> Callable[..., Option]:
    """Options of the fields of `config`, a dataclass: each takes its field's default, and
    has the variable named after its flag."""
    defaults = _defaults(config)
    names = {field.name for field in dataclasses.fields(config)}

    def option(flag: str, parse: Callable[[str], Any], help: str, **extra: Any) -> Option:
        dest = _dest(flag)
        if dest not in names:  # a typo would otherwise pass silently
            raise AssertionError(f"{config.__name__} has no field {dest} for {flag}")
        return Option(flag, parse, help, defaults.get(dest), _env(flag), **extra)

    return option


_node = _configured(NodeConfig)
# What --max-message-bytes is unless given (`ServeConfig.request_limits`).
DERIVED_MESSAGE_LIMIT = f"--max-document-bytes + {show_byte_size(MESSAGE_OVERHEAD_BYTES)}"
_serve = _configured(ServeConfig)

SERVE_OPTIONS = (
    _serve(
        "--listen",
        ListenAddress.parse,
        "where to serve gRPC: tcp://HOST:PORT, tcp://[IPV6]:PORT or unix:///PATH",
    ),
    _serve(
        "--http-listen",
        http_address,
        "where to serve the live page and the API over HTTP (Connect and gRPC-Web, HTTP/1.1"
        " and h2c, or TLS with --tls-cert): tcp://HOST:PORT, unix:///PATH, or off",
        show=show_http_address,
    ),
    _serve(
        "--http-cors-origin",
        cors_origin,
        "let pages of this origin (https://app.example.com, or * for any) call the API from"
        " a browser; repeat for more",
        metavar="ORIGIN",
        repeat=True,
        show=lambda origins: ", ".join(origins) or "none",
    ),
    Option(
        "--tls-cert",
        tls.certificates_file,
        "serve TLS (on both ports) with this PEM certificate chain (the server's certificate"
        " first); needs --tls-key. TCP only: TLS is refused on a unix socket, which its file"
        " mode (0600) already keeps to its owner",
        env=_env("--tls-cert"),
    ),
    Option(
        "--tls-key",
        tls.private_key_file,
        "the PEM private key of --tls-cert, unencrypted; keep it readable by this user only",
        env=_env("--tls-key"),
    ),
    Option(
        "--tls-client-ca",
        tls.certificates_file,
        "mutual TLS: admit only clients whose certificate this PEM CA signed; needs --tls-cert"
        " and --tls-key",
        env=_env("--tls-client-ca"),
    ),
    _node("--data-dir", path, "directory of the store; created if missing"),
    _node("--node-id", non_empty, "this node's id", unset="a random id"),
    _node(
        "--broadcast-buffer-size",
        positive_int,
        "events buffered per subscriber before it counts as lagging",
    ),
    _node(
        "--max-subscribers",
        positive_int,
        "open Subscribe streams at most; one more is refused with RESOURCE_EXHAUSTED (each"
        " idle stream holds about 55 KiB)",
    ),
    _node(
        "--replay-log-size",
        positive_int,
        "events kept in memory for subscribers that resume or lag",
    ),
    _node(
        "--replay-log-bytes",
        byte_size,
        "byte bound of the replay log (512KiB, 64MiB, 1GiB ...)",
        show=show_byte_size,
    ),
    _node(
        "--max-document-bytes",
        byte_size,
        "largest document accepted; larger puts fail with RESOURCE_EXHAUSTED",
        show=show_byte_size,
    ),
    _node(
        "--heartbeat-interval",
        heartbeat_interval,
        "silence after which an idle Subscribe stream gets a heartbeat (500ms, 10s, 1m ...)",
        show=show_duration,
    ),
    _node(
        "--stalled-stream-timeout",
        duration,
        "a Subscribe stream whose send makes no progress this long (its client reads nothing)"
        " is cut off with its resume point, freeing its slot; longer than --heartbeat-interval"
        " (30s, 1m ...)",
        show=show_duration,
        unset="1m, or 3 heartbeat intervals if longer",
    ),
    _node(
        "--tombstone-retention",
        duration,
        "how long deletes stay available to catch-ups; a subscriber resuming from further back"
        " gets a RESYNC (15m, 24h, 7d ...)",
        show=show_duration,
    ),
    _serve(
        "--max-request-bytes",
        byte_size,
        "largest WriteDocuments request, and the most request bytes one connection holds at"
        " once; a larger request is refused with RESOURCE_EXHAUSTED as soon as its length"
        " arrives, before its body is read",
        show=show_byte_size,
    ),
    _serve(
        "--max-message-bytes",
        byte_size,
        "largest request of any other RPC, refused the same way",
        show=show_byte_size,
        unset=DERIVED_MESSAGE_LIMIT,
    ),
    _serve(
        "--max-inflight-request-bytes",
        byte_size,
        "request bytes the server holds at once, over all connections; further requests wait"
        " (unread: HTTP/2 flow control holds their clients) until calls end",
        show=show_byte_size,
    ),
    _serve(
        "--drain-timeout",
        duration,
        "on SIGTERM, how long calls under way (writes, and streams ending with their resume"
        " point) get to finish before they are cut off (500ms, 10s, 1m ...)",
        show=show_duration,
    ),
    _serve("--log-level", one_of(*LOG_LEVELS), "one of " + ", ".join(LOG_LEVELS)),
    _serve(
        "--log-format",
        one_of(*LOG_FORMATS),
        "text (a readable line per event) or json (an object per line, for log collectors)",
    ),
    _serve(
        "--metrics-listen",
        metrics_address,
        "serve Prometheus metrics at http://HOST:PORT/metrics (tcp://HOST:PORT)",
        unset="off",
    ),
)

_SHARED_DEFAULTS = _defaults(SharedConfig)


def _shared(flag: str, field: str, parse: Callable[[str], Any], help: str, **extra: Any) -> Option:
    """An option of shared mode: it sets `field` of `SharedConfig`."""
    return Option(flag, parse, help, _SHARED_DEFAULTS.get(field), _env(flag), **extra)


# Shared mode: several sidecars, one document space, over NATS JetStream. --nats turns it on.
SHARED_OPTIONS = (
    Option(
        "--nats",
        nats_urls,
        "shared mode: share documents with the other sidecars of --nats-stream through these"
        " NATS servers (nats://HOST:PORT[,nats://...], one cluster), which this sidecar's store"
        " then replicates",
        env=ENV_PREFIX + "NATS_URL",
        metavar="URLS",
        unset="off: a single node",
    ),
    _shared(
        "--nats-stream",
        "stream",
        stream_name,
        "the JetStream stream that holds the document space; made on first use",
        metavar="NAME",
    ),
    _shared(
        "--nats-replicas",
        "replicas",
        replica_count,
        "replicas of the stream when this sidecar makes it: 3 on a 3-node cluster",
        metavar="N",
    ),
    _shared(
        "--nats-creds",
        "creds",
        readable_file,
        "a NATS credentials file (user JWT and NKey seed) to connect with",
        metavar="PATH",
    ),
    _shared(
        "--nats-tls-ca",
        "tls_ca",
        tls.certificates_file,
        "connect to NATS over TLS, trusting the CA in this PEM file",
        metavar="PATH",
    ),
    _shared(
        "--nats-tls-cert",
        "tls_cert",
        tls.certificates_file,
        "client certificate (PEM) for NATS servers that verify clients; needs --nats-tls-key",
        metavar="PATH",
    ),
    _shared(
        "--nats-tls-key",
        "tls_key",
        tls.private_key_file,
        "the PEM private key of --nats-tls-cert",
        metavar="PATH",
    ),
    _shared(
        "--nats-write-timeout",
        "write_timeout",
        positive_duration,
        "how long a write waits for NATS (through a leader election or a reconnect) and to be"
        " applied here before it fails with UNAVAILABLE (500ms, 10s, 1m ...)",
        show=show_duration,
    ),
    _shared(
        "--nats-presence-interval",
        "presence_interval",
        positive_duration,
        "time between this sidecar's announcements to the others (ListPeers); one silent for"
        " three intervals is gone (500ms, 5s ...)",
        show=show_duration,
    ),
)
# Every client command: where the server is, and how to reach it.
CLIENT_OPTIONS = (
    Option(
        "--addr",
        server_address,
        "the server: HOST:PORT, tcp://HOST:PORT or unix:///PATH",
        DEFAULT_ADDRESS,
        _env("--addr"),
        metavar="ADDRESS",
    ),
    Option(
        "--timeout",
        seconds,
        "give up on a call after this long, in seconds",
        DEFAULT_TIMEOUT,
        _env("--timeout"),
        show="{:g}".format,
        metavar="SECONDS",
    ),
    Option(
        "--tls-ca",
        tls.certificates_file,
        "connect with TLS, trusting the server certificate's CA in this PEM file (without it,"
        " TLS trusts the system's CAs)",
        env=_env("--tls-ca"),
        metavar="PATH",
    ),
    # Their variables say CLIENT: the server's own --tls-cert and --tls-key have the plain names.
    Option(
        "--tls-cert",
        tls.certificates_file,
        "connect with TLS, presenting this PEM client certificate (for servers with"
        " --tls-client-ca); needs --tls-key",
        env=_env("--tls-client-cert"),
        metavar="PATH",
    ),
    Option(
        "--tls-key",
        tls.private_key_file,
        "the PEM private key of --tls-cert",
        env=_env("--tls-client-key"),
        metavar="PATH",
    ),
)

WATCH_OPTIONS = (
    Option(
        "--collection",
        str,  # the server checks it, and says what is wrong
        "a collection to follow; repeat for more",
        metavar="C",
        repeat=True,
        unset="all collections",
    ),
    Option(
        "--since",
        sequence_number,
        "start with the changes after sequence N",
        metavar="N",
        unset="from now on",
    ),
    Option(
        "--epoch",
        non_empty,
        "the store epoch that --since belongs to (from a control line)",
        metavar="E",
    ),
    Option("--snapshot", bool, "print the current documents first, then the changes", switch=True),
    Option("--heartbeats", bool, "print heartbeat lines too (idle streams)", switch=True),
)

# put and delete: a compare-and-set. No variable: a precondition belongs to one call.
WRITE_OPTIONS = (
    Option(
        "--expected-sequence",
        sequence_number,
        "only if the document's last change is at sequence N (as put, delete or watch printed"
        " it); 0: only if it does not exist. Otherwise nothing changes, and the command exits"
        " 5 naming the current sequence",
        metavar="N",
        unset="unconditional",
    ),
)

# What `peat-sync bench --peer` measures peat-sync against.
BENCH_PEERS = ("redis",)

BENCH_OPTIONS = (
    Option(
        "--addr",
        server_address,
        "bench the server at HOST:PORT, tcp://HOST:PORT or unix:///PATH instead of starting"
        " one; its RSS and CPU are then reported as n/a",
        metavar="ADDRESS",
    ),
    Option(
        "--scenario",
        scenario,
        "run this scenario (a name or number above); repeat for more",
        metavar="NAME",
        repeat=True,
        unset="all",
    ),
    Option("--quick", bool, "tiny sizes and one run: a smoke test of seconds", switch=True),
    Option(
        "--peer",
        one_of(*BENCH_PEERS),
        "measure peat-sync and a peer side by side, with the same documents and one client"
        " each, instead of the scenarios (or after those given with --scenario): 'redis'"
        " starts Debian's redis-server (apt-get install redis-server), durable per write"
        " (appendfsync always), and compares XADD, MULTI/EXEC, XREAD and XRANGE with"
        " PutDocument, WriteDocuments, Subscribe and SubscribeBatched",
        metavar="NAME",
    ),
    Option("--json", path, "write every figure as JSON", metavar="PATH"),
    Option(
        "--plot",
        path,
        "draw latency and throughput against subscribers (fan-out) as a PNG",
        metavar="PATH",
    ),
)

_size = _configured(Sizes)
# The sizes a bench run can be given; each sets the field of `Sizes` of its name. They are
# unset unless given, so that --quick's sizes apply; the help shows a full run's.
BENCH_SIZE_OPTIONS = tuple(
    dataclasses.replace(option, env=None, default=None, unset=option.show(option.default))
    for option in (
        _size("--runs", positive_int, "runs per figure, which is their median", metavar="N"),
        _size("--put-clients", positive_int, "concurrent PutDocument clients", metavar="N"),
        _size(
            "--stream-events",
            positive_int,
            "events the one subscriber reads",
            metavar="N",
            show="{:,}".format,
        ),
        _size(
            "--fanout",
            subscriber_counts,
            "subscriber counts of the fan-out",
            metavar="LIST",
            show=lambda counts: ",".join(map(str, counts)),
        ),
        _size(
            "--rate",
            positive_int,
            "events/s of the latency and stalled scenarios",
            metavar="N",
            show="{:,}".format,
        ),
        _size(
            "--stall-seconds",
            positive_int,
            "how long the stalled subscriber stays stopped",
            metavar="N",
            show="{:g}".format,
        ),
        _size(
            "--replay-events",
            positive_int,
            "how far behind the replaying subscriber is",
            metavar="N",
            show="{:,}".format,
        ),
        _size(
            "--idle-subscribers",
            positive_int,
            "idle subscribers of the memory scenario",
            metavar="N",
            show="{:,}".format,
        ),
        _size(
            "--write-count",
            positive_int,
            "documents per WriteDocuments run",
            metavar="N",
            show="{:,}".format,
        ),
        _size(
            "--shared-documents",
            positive_int,
            "documents written to a sidecar, then joined by another, in the shared scenario",
            metavar="N",
            show="{:,}".format,
        ),
    )
)


# Parsing --------------------------------------------------------------------------------------


def add_options(parser: argparse._ActionsContainer, options: Iterable[Option]) -> None:
    """Add `options` to `parser`. The values are found by `resolve`, not argparse: argparse
    keeps the raw text, so that a bad flag is reported as a bad variable is."""
    for option in options:
        if option.switch:
            parser.add_argument(
                option.flag,
                dest=option.dest,
                action="store_true",
                default=None,
                help=option.describe(),
            )
        else:
            parser.add_argument(
                option.flag,
                dest=option.dest,
                metavar=option.metavar,
                action="append" if option.repeat else "store",
                help=option.describe(),
            )


def resolve(
    options: Sequence[Option], args: argparse.Namespace, environ: Mapping[str, str]
) -> dict[str, Any]:
    """The value of each option, by dest: from its flag, else its variable (under either
    name), else its default. ConfigError names the flag or variable of a bad value, and both
    names of a variable set to two values."""
    values: dict[str, Any] = {}
    for option in options:
        given = getattr(args, option.dest)
        variable = _variable(option, environ)
        if given is not None:
            raw, source = given, option.flag
        elif variable is not None:
            raw, source = variable
        else:
            values[option.dest] = _unset_value(option)
            continue
        if option.switch:
            values[option.dest] = raw if isinstance(raw, bool) else _truth(raw, source)
            continue
        try:
            if option.repeat:
                raws = raw if isinstance(raw, list) else [raw]
                values[option.dest] = [option.parse(text) for text in raws]
            else:
                values[option.dest] = option.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    return values


def _variable(option: Option, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """`(value, name)` of `option`'s variable, if set under either name. Both names set to
    different values are refused even when a flag is given: the deployment is in doubt."""
    if option.env is None:
        return None
    try:
        return environment.lookup(option.env, environ)
    except environment.ConflictingVariables as exc:
        raise ConfigError(str(exc)) from None


def _unset_value(option: Option) -> Any:
    if option.switch:
        return bool(option.default)
    if option.repeat and option.default is None:
        return []
    return option.default


def _truth(text: str, source: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{source}={text!r}: expected true or false")


# Building the configurations -----------------------------------------------------------------


def _fields_of(config: type[Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values set for fields of `config`; unset ones keep the dataclass's default."""
    names = {field.name for field in dataclasses.fields(config)}
    return {name: value for name, value in values.items() if name in names and value is not None}


def serve_config(args: argparse.Namespace, environ: Mapping[str, str]) -> ServeConfig:
    values = resolve(SERVE_OPTIONS, args, environ)
    shared = shared_config(args, environ)
    config = ServeConfig(
        node=NodeConfig(**_fields_of(NodeConfig, values), shared=shared),
        tls=server_tls(
            values["tls_cert"], values["tls_key"], values["tls_client_ca"], values["listen"]
        ),
        http_tls=server_tls(
            values["tls_cert"],
            values["tls_key"],
            values["tls_client_ca"],
            values["http_listen"],
            http1=True,
        ),
        **{
            **_fields_of(ServeConfig, values),
            "http_listen": values["http_listen"],  # None is "off", not unset
            "http_cors_origin": tuple(values["http_cors_origin"]),
        },
    )
    _check_request_limits(config)
    _check_stalled_stream_timeout(config.node)
    return config


def shared_config(args: argparse.Namespace, environ: Mapping[str, str]) -> SharedConfig | None:
    """Shared mode's configuration, or None without --nats."""
    values = resolve(SHARED_OPTIONS, args, environ)
    if values["nats"] is None:
        given = []
        for option in SHARED_OPTIONS[1:]:
            if getattr(args, option.dest) is not None:
                given.append(option.flag)
            elif (variable := _variable(option, environ)) is not None:
                given.append(variable[1])
        if given:
            raise ConfigError(f"{given[0]} is set without --nats: it configures shared mode")
        return None
    if (values["nats_tls_cert"] is None) != (values["nats_tls_key"] is None):
        raise ConfigError("--nats-tls-cert and --nats-tls-key go together: give both, or neither")
    return SharedConfig(
        servers=values["nats"],
        stream=values["nats_stream"],
        creds=values["nats_creds"],
        tls_ca=values["nats_tls_ca"],
        tls_cert=values["nats_tls_cert"],
        tls_key=values["nats_tls_key"],
        replicas=values["nats_replicas"],
        write_timeout=values["nats_write_timeout"],
        presence_interval=values["nats_presence_interval"],
    )


def _check_stalled_stream_timeout(node: NodeConfig) -> None:
    """A client is told to wait a few heartbeat intervals before it gives up on a silent
    stream; the server gives a client that reads nothing no less than one. (The default
    follows the heartbeat interval.)"""
    if node.stalled_stream_timeout is not None and node.stalled_after <= node.heartbeat_interval:
        raise ConfigError(
            f"--stalled-stream-timeout ({show_duration(node.stalled_after)}) must be"
            f" longer than --heartbeat-interval ({show_duration(node.heartbeat_interval)}):"
            " raise the first, or lower the second"
        )


def _check_request_limits(config: ServeConfig) -> None:
    """Every request that one connection may send must fit in what the server holds."""
    limits = config.request_limits
    if limits.max_request_bytes > limits.max_inflight_bytes:
        raise ConfigError(
            f"--max-request-bytes ({limits.max_request_bytes:,}) is more than"
            f" --max-inflight-request-bytes ({limits.max_inflight_bytes:,}): raise the second,"
            " or lower the first"
        )
    if limits.max_message_bytes > limits.max_request_bytes:
        raise ConfigError(
            f"the largest single request ({limits.max_message_bytes:,} bytes: --max-message-bytes,"
            f" or {DERIVED_MESSAGE_LIMIT}) is more than --max-request-bytes"
            f" ({limits.max_request_bytes:,}), the most one connection may hold: raise"
            " --max-request-bytes"
        )


def bench_sizes(values: Mapping[str, Any]) -> Sizes:
    """The sizes of a bench run: those of a full run (or of --quick), with the given ones."""
    return dataclasses.replace(QUICK if values["quick"] else Sizes(), **_fields_of(Sizes, values))


def server_tls(
    cert: Path | None,
    key: Path | None,
    client_ca: Path | None,
    listen: ListenAddress | None,
    *,
    http1: bool = False,
) -> ssl.SSLContext | None:
    """The TLS context of the server's port at `listen` (None: not served) from the --tls-*
    values (their files already checked); `http1` for the HTTP listener."""
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
    if listen is None:
        return None
    if listen.path is not None:
        raise ConfigError(
            f"--tls-cert: TLS is not served on a unix socket ({listen}), whose file"
            " mode (0600) already keeps it to its owner; drop the --tls-* options, or listen"
            " on tcp://HOST:PORT"
        )
    try:
        return tls.server_context(cert, key, client_ca, http1=http1)
    except ValueError as exc:
        raise ConfigError(f"--tls-cert/--tls-key: {exc}") from None


def client_tls(values: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The client's TLS context the --tls-* values ask for; None for none."""
    paths = (values["tls_ca"], values["tls_cert"], values["tls_key"])
    if paths == (None, None, None):
        return None
    try:
        return tls.client_context(*paths)
    except ValueError as exc:
        raise ConfigError(f"--tls-cert/--tls-key: {exc}") from None
