"""`peat-sync bench` end to end, as a subprocess: the smoke run of CI.

`--quick` runs every scenario with tiny sizes against servers it starts itself; the JSON it
writes must hold every scenario and every target with a measured figure. No figure
is compared with a speed: the machine is shared and noisy, and the bench reports, it does not
judge. Also: the help, --addr against a running server (whose RSS and CPU are then not
known), and one-line errors for a bad address, an unreachable server, and a missing grpcio or
matplotlib.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

from peat_sync.bench.launcher import ServerProcess
from peat_sync.bench.launcher import server_env as clean_env
from tests.helpers.cli import assert_one_line_error, help_entries, peat_sync_command, run_cli
from tests.helpers.waiting import wait_until

# A quick run takes about 40 s on an idle 2-core machine.
QUICK_TIMEOUT = 110.0

SCENARIOS = [
    "put",
    "subscribe",
    "fanout",
    "latency",
    "stalled",
    "replay",
    "idle",
    "batched",
    "shared",
    "connect",
    "single",
]
TARGETS = [
    "subscribe_vs_baseline",
    "batched_replay",
    "batched_write",
    "put_vs_baseline",
    "fanout_cpu_ratio",
    "latency_p99",
    "latency_max_rate",
    "stalled_p99_vs_latency",
    "stalled_rss_growth",
    "shared_write_vs_publish",
    "shared_join_vs_replay",
    "shared_latency_p99",
    "connect_stream_vs_grpc",
    "single_put_vs_status",
    "single_get_vs_status",
]
# A difference of two growth rates: it may be negative, or nothing, on a quiet server.
SIGNED_TARGETS = {"stalled_rss_growth"}
# 0 when no rate tried meets the goal: a busy machine, not a fault of the bench.
MAY_BE_ZERO = {"latency_max_rate"}


def start_bench(*args: str) -> subprocess.Popen[str]:
    """`peat-sync bench ARGS` in a session of its own, so that the servers and workers it
    starts can all be killed with it."""
    return subprocess.Popen(
        [*peat_sync_command(), "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
        start_new_session=True,
    )


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    process = start_bench(*args)
    try:
        stdout, stderr = process.communicate(timeout=QUICK_TIMEOUT)
    finally:
        kill_session(process)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def kill_session(process: subprocess.Popen[str]) -> None:
    """Kill whatever of the bench's session is left (nothing, when it ended as it should)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def session_alive(process: subprocess.Popen[str]) -> bool:
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port


def hidden(tmp_path: Path, package: str) -> dict[str, str]:
    """An environment in which `package` cannot be imported: a package of that name, first
    on the path, that raises ImportError stands in for its absence."""
    fake = tmp_path / package
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('not installed here')\n")
    return clean_env(PYTHONPATH=str(tmp_path))


def assert_measured(rows: list[dict[str, Any]]) -> None:
    """Every rate, latency and RSS in the rows that is known is a positive number."""
    for row in rows:
        for value in (row["rate"], row["rss"], *(row["latency"] or {}).values()):
            assert value is None or value > 0, row


def test_quick_run_measures_every_scenario_and_target(tmp_path: Path) -> None:
    """The smoke run: every scenario runs, with its progress on stderr and its table on
    stdout, and the JSON holds every scenario's rows and every target with a figure."""
    path = tmp_path / "bench.json"

    result = run_bench("--quick", "--json", str(path))

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    document = json.loads(path.read_text())
    assert list(document["scenarios"]) == SCENARIOS
    for number, name in enumerate(SCENARIOS, start=1):
        scenario = document["scenarios"][name]
        assert scenario["number"] == number
        assert scenario["rows"], name
        assert_measured(scenario["rows"])
        assert f"{number}. {scenario['title'].split()[0]}" in result.stdout
        assert f" {number}/{len(SCENARIOS)} {name}: " in result.stderr
    assert list(document["targets"]) == TARGETS
    for key, target in document["targets"].items():
        measured = target["measured"]
        assert isinstance(measured, float), (key, target)
        allowed = key in SIGNED_TARGETS or (key in MAY_BE_ZERO and measured == 0)
        assert allowed or measured > 0, (key, target)
        assert target["met"] in (True, False)
        assert target["text"] in result.stdout
    assert document["meta"]["quick"] is True
    # The rows that need the server's pid have it: the bench started the servers.
    assert document["scenarios"]["idle"]["figures"]["rss_per_subscriber"] > 0
    stalled = document["scenarios"]["stalled"]["figures"]
    assert stalled["rss_while_one_stopped"]
    assert stalled["stalled_resume"]
    # Shared mode's figures all come from the same run: nats-py's five ways among them.
    shared = document["scenarios"]["shared"]["figures"]
    for way in ("sequential", "in_flight", "publish_async", "ordered_consumer", "pull_fetch"):
        assert shared[f"nats_py_{way}_per_s"] > 0, way
    # Latency comes with the server's CPU, at the rate asked and at each rate tried below it.
    latency = document["scenarios"]["latency"]["figures"]
    assert latency["rates_tried"][0]["rate"] == latency["rate"]
    for tried in latency["rates_tried"]:
        assert tried["p99_ms"] > 0, tried
        assert tried["server_busy_percent"] > 0, tried
        assert tried["server_cpu_us_per_put"] > 0, tried
    assert latency["max_rate"] in [0, *(tried["rate"] for tried in latency["rates_tried"])]
    # The fan-out has, at each count, the latency at the fixed rate and the throughput.
    points = document["scenarios"]["fanout"]["figures"]["points"]
    for point in points:
        assert point["p99_ms"] > 0, point
        assert point["events_per_s"] > 0, point
        assert point["kept_up"] in (True, False)
    # One call at a time: each RPC's p50 and p99.
    single = document["scenarios"]["single"]["figures"]
    for rpc in ("status", "get", "put"):
        assert 0 < single[f"{rpc}_p50_ms"] <= single[f"{rpc}_p99_ms"], rpc


def test_against_a_running_server(server: ServerProcess, tmp_path: Path) -> None:
    """With --addr the bench uses that server: figures that need its pid (RSS, CPU) are n/a,
    the others are measured."""
    path = tmp_path / "bench.json"

    result = run_bench(
        *("--quick", "--addr", f"tcp://{server.address}", "--scenario", "replay"),
        *("--json", str(path)),
    )

    assert result.returncode == 0, result.stderr[-3000:]
    replay = json.loads(path.read_text())["scenarios"]["replay"]
    assert [row["label"] for row in replay["rows"]] == ["Subscribe", "SubscribeBatched"]
    for row in replay["rows"]:
        assert row["rate"] > 0
        assert row["rss"] is None
        assert row["cpu_us"] is None
    assert "n/a" in result.stdout
    assert "serving peat.sidecar.v1" in server.log


def test_sigterm_stops_the_bench_and_everything_it_started() -> None:
    """SIGTERM in the middle of a run ends the bench as Ctrl-C does: a one-line message,
    exit status 130, and no server or worker process of its own left running."""
    process = start_bench("--quick", "--scenario", "idle")
    try:
        assert process.stderr is not None
        for line in process.stderr:
            if "opening" in line:  # its server and workers are up
                break
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)

        assert process.returncode == 130
        assert stderr.strip().splitlines()[-1] == "peat-sync bench: interrupted"
        assert "Traceback" not in stderr
        # A bound, not a speed check: on a loaded machine the workers take a while to go.
        wait_until(
            lambda: not session_alive(process),
            timeout=60,
            what="the bench's processes to exit",
        )
    finally:
        kill_session(process)


def test_help_explains_scenarios_options_and_targets() -> None:
    result = run_cli("bench", "--help")

    assert result.returncode == 0
    for number, name in enumerate(SCENARIOS, start=1):
        assert f"  {number}. {name} " in result.stdout
    entries = help_entries(result.stdout)
    for flag in ("--addr", "--scenario", "--quick", "--runs", "--json", "--plot"):
        assert entries.get(flag), flag
    assert "pip install 'peat-sync[bench]'" in " ".join(result.stdout.split())
    targets = " ".join(result.stdout.split("targets")[-1].split())
    for goal in (">= 0.9 x", ">= 1,000,000 events/s", ">= 50,000 docs/s", ">= 0.8 x", "<= 0.5 x"):
        assert goal in targets
    for goal in ("<= 10 ms", ">= 1,000 puts/s", "<= 1.5 x", "<= 1.2 x"):
        assert goal in targets
    assert "1,000 subscribers / 1" in targets
    assert "<= 25 ms" in targets
    assert "p99 at 500 puts/s" in targets


def test_bad_address_is_one_line() -> None:
    result = run_cli("bench", "--addr", "nowhere")

    assert result.returncode == 2
    assert_one_line_error(result, "peat-sync bench: error: --addr='nowhere': expected")


def test_unreachable_server_is_one_line() -> None:
    result = run_cli("bench", "--addr", f"127.0.0.1:{free_port()}")

    assert result.returncode == 3
    assert_one_line_error(result, "peat-sync bench: cannot reach a peat-sync server")


def test_bad_option_values_are_one_line() -> None:
    for args, fragment in [
        (("--scenario", "nope"), "no scenario 'nope'"),
        (("--runs", "0"), "must be at least 1"),
        (("--fanout", "10,1"), "increasing counts from 1"),
        (("--json", "/no/such/dir/bench.json"), "no directory /no/such/dir"),
        (("--scenario", "shared", "--addr", "127.0.0.1:1"), "does not run against --addr"),
    ]:
        result = run_cli("bench", *args)
        assert result.returncode == 2, result
        assert_one_line_error(result, fragment)


def test_missing_grpcio_is_one_line(tmp_path: Path) -> None:
    """Without grpcio (the bench extra not installed), the bench says in one line what to
    install, before it starts anything."""
    result = subprocess.run(
        [*peat_sync_command(), "bench", "--quick"],
        capture_output=True,
        text=True,
        timeout=30,
        env=hidden(tmp_path, "grpc"),
    )

    assert result.returncode == 1
    line = assert_one_line_error(result, "pip install 'peat-sync[bench]'")
    assert line.startswith("peat-sync bench needs its extra")


def test_missing_matplotlib_is_one_line(tmp_path: Path) -> None:
    """Without matplotlib, --plot fails at once, naming the extra to install."""
    result = subprocess.run(
        [*peat_sync_command(), "bench", "--plot", str(tmp_path / "plot.png")],
        capture_output=True,
        text=True,
        timeout=30,
        env=hidden(tmp_path, "matplotlib"),
    )

    assert result.returncode == 1
    assert_one_line_error(result, "pip install 'peat-sync[bench]'")
    assert not (tmp_path / "plot.png").exists()
