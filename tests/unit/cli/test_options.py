"""The options table (`peat_sync.cli.options`) as `peat-sync serve` reads it: defaults, flags
over environment, the forms of addresses, sizes and durations, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from peat_sync.address import ListenAddress
from peat_sync.bench.launcher import server_env
from peat_sync.bench.sizes import QUICK, Sizes
from peat_sync.cli.main import build_parser
from peat_sync.cli.options import (
    BENCH_OPTIONS,
    BENCH_SIZE_OPTIONS,
    CLIENT_OPTIONS,
    ConfigError,
    bench_sizes,
    byte_size,
    duration,
    heartbeat_interval,
    resolve,
    serve_config,
    show_byte_size,
    show_duration,
)
from peat_sync.server.config import ServeConfig

MiB = 1024 * 1024


def configure(*flags: str, env: Mapping[str, str] | None = None) -> ServeConfig:
    args = build_parser().parse_args(["serve", *flags])
    return serve_config(args, env or {})


def test_defaults() -> None:
    """With no flags and no variables, the documented defaults apply."""
    config = configure()

    assert config.listen == ListenAddress(host="127.0.0.1", port=50051)
    assert config.node.data_dir == Path("peat-data")
    assert config.node.broadcast_buffer_size == 256
    assert config.node.max_subscribers == 10_000
    assert config.node.replay_log_size == 100_000
    assert config.node.replay_log_bytes == 64 * MiB
    assert config.node.max_document_bytes == MiB
    assert config.node.heartbeat_interval == 10.0
    assert config.node.tombstone_retention == 24 * 3600.0
    assert config.node.stalled_stream_timeout is None
    assert config.node.stalled_after == 60.0
    assert config.log_level == "info"
    assert config.log_format == "text"
    assert config.drain_timeout == 10.0
    assert config.metrics_listen is None
    assert config.node.shared is None


def test_default_node_id_is_random() -> None:
    """Without --node-id each start gets its own id."""
    first, second = configure().node.node_id, configure().node.node_id

    assert first
    assert first != second


# (flag, environment variable, value, how to read it from the config, expected)
OPTIONS: list[tuple[str, str, str, Callable[[ServeConfig], Any], Any]] = [
    (
        "--listen",
        "PEAT_SIDECAR_LISTEN",
        "tcp://0.0.0.0:7000",
        lambda c: c.listen,
        ListenAddress("0.0.0.0", 7000),
    ),
    (
        "--data-dir",
        "PEAT_SIDECAR_DATA_DIR",
        "/var/peat",
        lambda c: c.node.data_dir,
        Path("/var/peat"),
    ),
    ("--node-id", "PEAT_SIDECAR_NODE_ID", "hub-1", lambda c: c.node.node_id, "hub-1"),
    (
        "--broadcast-buffer-size",
        "PEAT_SIDECAR_BROADCAST_BUFFER_SIZE",
        "1_024",
        lambda c: c.node.broadcast_buffer_size,
        1024,
    ),
    (
        "--max-subscribers",
        "PEAT_SIDECAR_MAX_SUBSCRIBERS",
        "50",
        lambda c: c.node.max_subscribers,
        50,
    ),
    (
        "--replay-log-size",
        "PEAT_SIDECAR_REPLAY_LOG_SIZE",
        "500",
        lambda c: c.node.replay_log_size,
        500,
    ),
    (
        "--replay-log-bytes",
        "PEAT_SIDECAR_REPLAY_LOG_BYTES",
        "8MiB",
        lambda c: c.node.replay_log_bytes,
        8 * MiB,
    ),
    (
        "--max-document-bytes",
        "PEAT_SIDECAR_MAX_DOCUMENT_BYTES",
        "512KiB",
        lambda c: c.node.max_document_bytes,
        512 * 1024,
    ),
    (
        "--heartbeat-interval",
        "PEAT_SIDECAR_HEARTBEAT_INTERVAL",
        "500ms",
        lambda c: c.node.heartbeat_interval,
        pytest.approx(0.5),
    ),
    (
        "--stalled-stream-timeout",
        "PEAT_SIDECAR_STALLED_STREAM_TIMEOUT",
        "2m",
        lambda c: c.node.stalled_stream_timeout,
        120.0,
    ),
    (
        "--tombstone-retention",
        "PEAT_SIDECAR_TOMBSTONE_RETENTION",
        "7d",
        lambda c: c.node.tombstone_retention,
        7 * 86400.0,
    ),
    ("--log-level", "PEAT_SIDECAR_LOG_LEVEL", "DEBUG", lambda c: c.log_level, "debug"),
    ("--log-format", "PEAT_SIDECAR_LOG_FORMAT", "JSON", lambda c: c.log_format, "json"),
    (
        "--drain-timeout",
        "PEAT_SIDECAR_DRAIN_TIMEOUT",
        "500ms",
        lambda c: c.drain_timeout,
        pytest.approx(0.5),
    ),
    (
        "--metrics-listen",
        "PEAT_SIDECAR_METRICS_LISTEN",
        "tcp://0.0.0.0:9464",
        lambda c: c.metrics_listen,
        ListenAddress("0.0.0.0", 9464),
    ),
]
OPTION_IDS = [option[0] for option in OPTIONS]


@pytest.mark.parametrize(("flag", "env", "value", "read", "expected"), OPTIONS, ids=OPTION_IDS)
def test_environment_variable_is_used_without_a_flag(
    flag: str, env: str, value: str, read: Callable[[ServeConfig], Any], expected: Any
) -> None:
    """Each option can be set by its PEAT_SIDECAR_* variable alone."""
    assert read(configure(env={env: value})) == expected


@pytest.mark.parametrize(("flag", "env", "value", "read", "expected"), OPTIONS, ids=OPTION_IDS)
def test_flag_wins_over_environment_variable(
    flag: str, env: str, value: str, read: Callable[[ServeConfig], Any], expected: Any
) -> None:
    """A flag beats its variable, even when the variable holds a bad value."""
    assert read(configure(flag, value, env={env: "not a valid value at all"})) == expected


@pytest.mark.parametrize(("flag", "env", "value", "read", "expected"), OPTIONS, ids=OPTION_IDS)
def test_the_upstream_name_of_a_variable_is_read_too(
    flag: str, env: str, value: str, read: Callable[[ServeConfig], Any], expected: Any
) -> None:
    """Each PEAT_SIDECAR_* variable can be set by its upstream name, PEAT_NODE_*, alone; both
    names set to the same value agree."""
    upstream = env.replace("PEAT_SIDECAR_", "PEAT_NODE_", 1)
    assert read(configure(env={upstream: value})) == expected
    assert read(configure(env={env: value, upstream: value})) == expected


@pytest.mark.parametrize(
    ("flags", "env"),
    [
        ((), {"PEAT_SIDECAR_NODE_ID": "alpha", "PEAT_NODE_NODE_ID": "beta"}),
        (("--node-id", "gamma"), {"PEAT_SIDECAR_NODE_ID": "alpha", "PEAT_NODE_NODE_ID": "beta"}),
        ((), {"PEAT_SIDECAR_NODE_ID": "alpha", "PEAT_NODE_NODE_ID": ""}),
    ],
    ids=["variables", "with-the-flag", "one-empty"],
)
def test_both_names_of_a_variable_set_to_different_values_are_refused(
    flags: tuple[str, ...], env: dict[str, str]
) -> None:
    """Which one the deployment meant is in doubt, even when the flag decides the value: the
    start is refused with one line naming both."""
    with pytest.raises(ConfigError) as raised:
        configure(*flags, env=env)

    message = str(raised.value)
    assert message == (
        f"PEAT_SIDECAR_NODE_ID='alpha' and PEAT_NODE_NODE_ID={env['PEAT_NODE_NODE_ID']!r} set"
        " the same option to different values: unset one of them"
    )


def test_a_bad_upstream_variable_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^PEAT_NODE_BROADCAST_BUFFER_SIZE='x': 'x' is not a"):
        configure(env={"PEAT_NODE_BROADCAST_BUFFER_SIZE": "x"})


def test_a_shared_mode_variable_without_nats_is_named_by_its_upstream_name() -> None:
    with pytest.raises(ConfigError, match=r"^PEAT_NODE_NATS_REPLICAS is set without --nats"):
        configure(env={"PEAT_NODE_NATS_REPLICAS": "3"})
    assert configure(env={"PEAT_NODE_NATS_URL": "n1:4222"}).node.shared is not None


@pytest.mark.parametrize(
    ("flag", "value", "complaint"),
    [
        ("--broadcast-buffer-size", "x", "is not a whole number"),
        ("--broadcast-buffer-size", "0", "must be at least 1"),
        ("--replay-log-size", "-5", "must be at least 1"),
        ("--replay-log-bytes", "lots", "is not a size"),
        ("--max-document-bytes", "1.5MiB", "is not a size"),
        ("--max-document-bytes", "0", "must be at least 1 byte"),
        ("--node-id", "  ", "must not be empty"),
        ("--log-level", "verbose", "is not one of"),
        ("--log-format", "xml", "is not one of"),
        ("--metrics-listen", "unix:///run/m.sock", "over TCP only"),
        ("--listen", "localhost", "expected tcp://HOST:PORT"),
        ("--heartbeat-interval", "0", "must be at least 100ms"),
        ("--heartbeat-interval", "often", "is not a duration"),
        ("--tombstone-retention", "-5", "is not a duration"),
        ("--nats", "http://n1:4222", "is not a NATS URL"),
        ("--nats", "nats://n1:4222,,nats://n2:4222", "has an empty URL"),
        ("--nats-stream", "my.stream", "1 to 64 letters, digits, - and _"),
        ("--nats-replicas", "7", "at most 5 replicas"),
        ("--nats-creds", "/nonexistent/user.creds", "cannot read"),
        ("--nats-write-timeout", "0", "must be more than 0"),
    ],
)
def test_bad_flag_value_names_the_flag(flag: str, value: str, complaint: str) -> None:
    """A bad flag value stops start-up with a message naming the flag and the value."""
    with pytest.raises(ConfigError) as raised:
        configure(flag, value, *(() if flag == "--nats" else ("--nats", "nats://n1:4222")))

    message = str(raised.value)
    assert message.startswith(f"{flag}={value!r}: ")
    assert complaint in message


@pytest.mark.parametrize(
    ("env", "value", "complaint"),
    [
        ("PEAT_SIDECAR_BROADCAST_BUFFER_SIZE", "x", "is not a whole number"),
        ("PEAT_SIDECAR_REPLAY_LOG_BYTES", "64 parsecs", "is not a size"),
        ("PEAT_SIDECAR_LISTEN", "unix://relative.sock", "absolute path"),
        ("PEAT_SIDECAR_NODE_ID", "", "must not be empty"),
        ("PEAT_SIDECAR_HEARTBEAT_INTERVAL", "0ms", "must be at least 100ms"),
        ("PEAT_SIDECAR_TOMBSTONE_RETENTION", "a day", "is not a duration"),
    ],
)
def test_bad_environment_value_names_the_variable(env: str, value: str, complaint: str) -> None:
    """A bad variable stops start-up with a message naming the variable, not the flag."""
    with pytest.raises(ConfigError) as raised:
        configure(env={env: value})

    message = str(raised.value)
    assert message.startswith(f"{env}={value!r}: ")
    assert complaint in message


def test_shared_mode_is_configured_by_the_nats_options() -> None:
    config = configure(
        "--nats",
        "nats://n1:4222,n2:4222",
        "--nats-stream",
        "fleet-1",
        "--nats-replicas",
        "3",
        env={"PEAT_SIDECAR_NATS_WRITE_TIMEOUT": "2.5"},
    )

    shared = config.node.shared
    assert shared is not None
    assert shared.servers == ("nats://n1:4222", "nats://n2:4222")
    assert (shared.stream, shared.replicas, shared.write_timeout) == ("fleet-1", 3, 2.5)
    assert configure(env={"PEAT_SIDECAR_NATS_URL": "n1:4222"}).node.shared is not None


@pytest.mark.parametrize(
    ("flags", "env", "complaint"),
    [
        (("--nats-stream", "S"), {}, "--nats-stream is set without --nats"),
        ((), {"PEAT_SIDECAR_NATS_REPLICAS": "3"}, "PEAT_SIDECAR_NATS_REPLICAS is set without"),
    ],
)
def test_shared_mode_options_that_do_not_fit_are_refused(
    flags: tuple[str, ...], env: dict[str, str], complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        configure(*flags, env=env)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:50051", ListenAddress("127.0.0.1", 50051)),
        ("tcp://example.org:80", ListenAddress("example.org", 80)),
        ("localhost:9000", ListenAddress("localhost", 9000)),
        ("tcp://[::1]:50051", ListenAddress("::1", 50051)),
        ("tcp://[::]:0", ListenAddress("::", 0)),
        ("tcp://0.0.0.0:65535", ListenAddress("0.0.0.0", 65535)),
        ("unix:///run/peat/peat.sock", ListenAddress(path=Path("/run/peat/peat.sock"))),
    ],
)
def test_listen_address_forms(text: str, expected: ListenAddress) -> None:
    """TCP host:port (with or without the scheme), bracketed IPv6, and absolute unix paths."""
    assert configure("--listen", text).listen == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("unix://run/peat.sock", "absolute path"),
        ("unix://", "absolute path"),
        ("tcp://127.0.0.1:65536", "port 65536 is out of range"),
        ("tcp://127.0.0.1:99999999", "out of range"),
        ("tcp://127.0.0.1", "expected tcp://HOST:PORT"),
        ("tcp://::1:50051", "expected tcp://HOST:PORT"),
        ("tcp://[::1]", "expected tcp://HOST:PORT"),
        ("tcp://:50051", "expected tcp://HOST:PORT"),
        ("tcp://host:port", "expected tcp://HOST:PORT"),
    ],
)
def test_bad_listen_address_is_refused(text: str, complaint: str) -> None:
    """Relative unix paths, out-of-range ports and malformed addresses are refused clearly."""
    with pytest.raises(ConfigError, match=r"^--listen=") as raised:
        configure("--listen", text)

    assert complaint in str(raised.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1048576", 1048576),
        ("1", 1),
        ("512KiB", 512 * 1024),
        ("64MiB", 64 * MiB),
        ("1GiB", 1024 * MiB),
        ("64M", 64 * MiB),
        ("64mb", 64 * MiB),
        ("100b", 100),
        (" 2 MiB ", 2 * MiB),
    ],
)
def test_byte_sizes(text: str, expected: int) -> None:
    """Sizes are plain bytes or K/M/G multiples of 1024, with an optional (i)B suffix."""
    assert byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "1.5MiB", "-1", "64TiB", "64 MiB extra", "0KiB"])
def test_bad_byte_sizes(text: str) -> None:
    """Anything that is not a whole, positive size is refused."""
    with pytest.raises(ValueError, match=r"is not a size|at least 1 byte"):
        byte_size(text)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("10s", 10),
        ("15m", 900),
        ("24h", 86400),
        ("7d", 604800),
        ("30", 30),
        ("0.2s", 0.2),
        ("1.5h", 5400),
        ("2.5", 2.5),
        ("0", 0),
        ("0s", 0),
        (" 10 S ", 10),
        ("250MS", 0.25),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    """Durations are seconds, or a whole or decimal number with a unit (ms, s, m, h, d, in
    any case); zero is allowed."""
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "s",
        "soon",
        "-1",
        "-5s",
        ".5s",
        "1.5.2s",
        "1e3",
        "10w",
        "10 minutes",
        "5s5",
        "nan",
        "inf",
    ],
)
def test_bad_durations(text: str) -> None:
    """Anything but a non-negative number with an optional known unit is refused, with the
    forms that are accepted."""
    with pytest.raises(ValueError, match=r"is not a duration; write it as 30, 500ms, 10s"):
        duration(text)


@pytest.mark.parametrize(("text", "seconds"), [("100ms", 0.1), ("0.2s", 0.2), ("10s", 10)])
def test_heartbeat_intervals(text: str, seconds: float) -> None:
    """A heartbeat interval is any duration of at least 100ms."""
    assert heartbeat_interval(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("0", "must be at least 100ms"),
        ("99ms", "must be at least 100ms"),
        ("0.0h", "must be at least 100ms"),
        ("-1s", "is not a duration"),
        ("fast", "is not a duration"),
    ],
)
def test_bad_heartbeat_intervals(text: str, complaint: str) -> None:
    """Shorter heartbeat intervals would make idle streams cost real CPU."""
    with pytest.raises(ValueError, match=complaint):
        heartbeat_interval(text)


@pytest.mark.parametrize(
    ("flags", "env", "shown"),
    [
        (
            ("--stalled-stream-timeout", "10s"),
            {},
            "(10s) must be longer than --heartbeat-interval (10s)",
        ),
        (
            ("--heartbeat-interval", "1s"),
            {"PEAT_SIDECAR_STALLED_STREAM_TIMEOUT": "500ms"},
            "(500ms) must be longer than --heartbeat-interval (1s)",
        ),
    ],
)
def test_a_stalled_stream_timeout_within_a_heartbeat_interval_is_refused(
    flags: tuple[str, ...], env: dict[str, str], shown: str
) -> None:
    """A client is told to wait a few heartbeat intervals for a silent stream; the server
    must not cut off one that reads nothing for less than one."""
    with pytest.raises(ConfigError) as raised:
        configure(*flags, env=env)

    assert str(raised.value).startswith(f"--stalled-stream-timeout {shown}")


@pytest.mark.parametrize(("heartbeat", "stalled_after"), [("10s", 60.0), ("1m", 180.0)])
def test_the_default_stalled_stream_timeout_follows_the_heartbeat(
    heartbeat: str, stalled_after: float
) -> None:
    """A minute, or three heartbeat intervals when that is longer: a longer heartbeat needs
    no second flag."""
    assert configure("--heartbeat-interval", heartbeat).node.stalled_after == stalled_after


def run_serve(tmp_path: Path, *flags: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """`peat-sync serve` with `flags` and only the peat-sync variables given."""
    return subprocess.run(
        [sys.executable, "-m", "peat_sync", "serve", *flags],
        capture_output=True,
        text=True,
        env={**server_env(), **variables},
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_bad_value_on_the_command_line_exits_2_without_a_traceback(tmp_path: Path) -> None:
    """The real command prints one line naming the flag on stderr and exits with status 2."""
    result = run_serve(tmp_path, "--broadcast-buffer-size", "x")

    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "--broadcast-buffer-size='x'" in lines[0]
    assert "is not a whole number" in lines[0]
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == [], "a refused start must not create the data dir"


def test_a_variable_set_twice_differently_stops_the_command(tmp_path: Path) -> None:
    """The real command refuses to start with one line naming both variables."""
    result = run_serve(
        tmp_path, PEAT_SIDECAR_DATA_DIR=str(tmp_path / "a"), PEAT_NODE_DATA_DIR=str(tmp_path / "b")
    )

    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "PEAT_SIDECAR_DATA_DIR=" in lines[0]
    assert "PEAT_NODE_DATA_DIR=" in lines[0]
    assert list(tmp_path.iterdir()) == [], "a refused start must not create the data dir"


def bench_sizes_of(*flags: str) -> Sizes:
    args = build_parser().parse_args(["bench", *flags])
    return bench_sizes(resolve((*BENCH_OPTIONS, *BENCH_SIZE_OPTIONS), args, {}))


def test_quick_bench_sizes_are_kept_unless_a_size_is_given() -> None:
    assert bench_sizes_of() == Sizes()
    assert bench_sizes_of("--quick") == QUICK
    assert bench_sizes_of("--quick", "--runs", "2", "--fanout", "1,3") == replace(
        QUICK, runs=2, fanout=(1, 3)
    )
    assert bench_sizes_of("--rate", "50").rate == 50


@pytest.mark.parametrize(
    ("flags", "env", "expected"),
    [
        ((), {}, ("127.0.0.1:50051", 10.0)),
        (
            (),
            {"PEAT_SIDECAR_ADDR": "unix:///run/p.sock", "PEAT_SIDECAR_TIMEOUT": "2.5"},
            ("unix:///run/p.sock", 2.5),
        ),
        (
            ("--addr", "h:1", "--timeout", "3"),
            {"PEAT_SIDECAR_ADDR": "x", "PEAT_SIDECAR_TIMEOUT": "x"},
            ("h:1", 3.0),
        ),
        (
            (),
            {"PEAT_NODE_ADDR": "unix:///run/p.sock", "PEAT_NODE_TIMEOUT": "2.5"},
            ("unix:///run/p.sock", 2.5),
        ),
    ],
    ids=["defaults", "variables", "flags-win", "upstream-variables"],
)
def test_client_commands_resolve_addr_and_timeout_like_serve_options(
    flags: tuple[str, ...], env: dict[str, str], expected: tuple[str, float]
) -> None:
    values = resolve(CLIENT_OPTIONS, build_parser().parse_args(["status", *flags]), env)
    assert (values["addr"], values["timeout"]) == expected


def test_a_bad_client_tls_variable_is_named() -> None:
    args = build_parser().parse_args(["status"])
    with pytest.raises(
        ConfigError, match=r"^PEAT_SIDECAR_TLS_CLIENT_CERT='/nowhere.pem': cannot read"
    ):
        resolve(CLIENT_OPTIONS, args, {"PEAT_SIDECAR_TLS_CLIENT_CERT": "/nowhere.pem"})


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (
            show_byte_size,
            [(64 * MiB, "64MiB"), (1024**3, "1GiB"), (512 * 1024, "512KiB"), (1000, "1000")],
        ),
        (show_duration, [(10.0, "10s"), (24 * 3600.0, "24h"), (0.5, "500ms"), (90.0, "90s")]),
    ],
    ids=["byte-size", "duration"],
)
def test_defaults_are_shown_as_a_user_would_write_them(
    value: Callable[[Any], str], shown: list[tuple[Any, str]]
) -> None:
    for number, text in shown:
        assert value(number) == text
