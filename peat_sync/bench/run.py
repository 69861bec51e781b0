"""A run of `peat-sync bench`: the scenarios it selects, their progress, and the report."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import importlib
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peat_sync.address import ListenAddress
from peat_sync.bench import report
from peat_sync.bench.nats_servers import NatsServerMissing, nats_server_binary
from peat_sync.bench.redis_servers import RedisServerMissing, redis_server_binary
from peat_sync.bench.scenarios import SCENARIOS, Bench
from peat_sync.bench.scenarios.peer_redis import KEY as REDIS_PEER
from peat_sync.bench.scenarios.peer_redis import QUICK_PEER, PeerSizes, redis_peer
from peat_sync.bench.servers import BenchError, get_status
from peat_sync.bench.sizes import SCENARIO_SUMMARIES, Sizes

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> int:
    print(f"peat-sync bench: {message}", file=sys.stderr, flush=True)
    return code


def run_bench(
    *,
    addr: str | None,
    scenarios: list[str],
    sizes: Sizes,
    json_path: Path | None,
    plot_path: Path | None,
    quick: bool,
    peer: str | None = None,
) -> int:
    """Run the selected `scenarios`, then the `peer` ("redis") if given; returns the exit
    code. No scenario selected means all of them, or none beside a peer: a peer's comparison
    is a run of its own, of minutes."""
    target = None if addr is None else ListenAddress.parse(addr).grpc_target
    wanted = scenarios or ([] if peer else list(SCENARIO_SUMMARIES))
    selected = [name for name in SCENARIO_SUMMARIES if name in wanted]
    for flag, path in (("--json", json_path), ("--plot", plot_path)):
        # Found out now rather than after minutes of measuring.
        if path is not None and not path.resolve().parent.is_dir():
            return _fail(f"{flag} {path}: no directory {path.parent}", EXIT_USAGE)
    if plot_path is not None:
        if "fanout" not in selected:
            return _fail("--plot draws the fan-out scenario: select it too", EXIT_USAGE)
        try:
            report.check_plotting()
        except report.PlotUnavailable as exc:
            return _fail(str(exc), EXIT_FAILED)
    if peer is not None:
        problem = _redis_problem()
        if problem is not None:
            return _fail(f"--peer {peer}: {problem}", EXIT_FAILED)
    shared_problem = _shared_problem(target) if "shared" in selected else None
    if shared_problem is not None and "shared" in scenarios:
        return _fail(f"--scenario shared: {shared_problem}", EXIT_USAGE if target else EXIT_FAILED)
    if target is not None:
        try:
            get_status(target)
        except BenchError as exc:
            return _fail(str(exc), EXIT_UNAVAILABLE)
    if shared_problem is not None:  # only by default: every scenario that can run, runs
        left_out = f"peat-sync bench: the shared scenario is left out: {shared_problem}"
        print(left_out, file=sys.stderr, flush=True)
        selected.remove("shared")
    # SIGTERM stops the bench as Ctrl-C does: the servers and workers it started are
    # stopped on the way out, not left running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    steps: dict[str, Callable[[Bench], report.ScenarioResult]] = {
        name: SCENARIOS[name] for name in selected
    }
    if peer is not None:
        steps[REDIS_PEER] = functools.partial(
            redis_peer, sizes=QUICK_PEER if quick else PeerSizes()
        )
    try:
        return _run(sizes, target, steps, json_path, plot_path, quick)
    except BenchError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # --json or --plot cannot be written, /proc unreadable ...
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _shared_problem(target: str | None) -> str | None:
    """Why the shared scenario cannot run, if it cannot: it starts its own nats-server and
    sidecars, so it needs nats-server, and has no use for a deployment."""
    if target is not None:
        return "it starts its own nats-server and sidecars, and does not run against --addr"
    try:
        nats_server_binary()
    except NatsServerMissing as exc:
        return str(exc)
    return None


def _redis_problem() -> str | None:
    """Why the Redis peer cannot run, if it cannot: it needs redis-py (the bench extra) and
    Debian's redis-server."""
    try:
        importlib.import_module("redis")  # by name: the extra is absent from most installs
    except ImportError:
        return "redis-py is not installed: pip install 'peat-sync[bench]'"
    try:
        redis_server_binary()
    except RedisServerMissing as exc:
        return str(exc)
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(
    sizes: Sizes,
    target: str | None,
    steps: dict[str, Callable[[Bench], report.ScenarioResult]],
    json_path: Path | None,
    plot_path: Path | None,
    quick: bool,
) -> int:
    started = time.monotonic()
    step = (0, "")

    def progress(message: str) -> None:
        elapsed = time.monotonic() - started
        number, name = step
        print(
            f"[{elapsed:5.1f}s] {number}/{len(steps)} {name}: {message}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="peat-bench-") as workdir:
        bench = Bench(sizes, Path(workdir), progress, addr=target)
        for number, (name, scenario) in enumerate(steps.items(), start=1):
            step = (number, name)
            progress("starting")
            bench.results[name] = scenario(bench)
    results = list(bench.results.values())
    found = report.targets(bench.results)
    meta = _meta(quick, sizes, target, time.monotonic() - started)
    print(report.render(results, found, _header(meta)), end="", flush=True)
    if json_path is not None:
        report.write_json(json_path, report.to_json(results, found, meta))
    if plot_path is not None:
        report.plot(bench.results["fanout"], plot_path)
    return EXIT_OK


def _meta(quick: bool, sizes: Sizes, target: str | None, seconds: float) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "server": target or "peat-sync serve on a temporary data dir, started per scenario",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "quick": quick,
        "sizes": dataclasses.asdict(sizes),
        "seconds": round(seconds, 1),
    }


def _header(meta: dict[str, Any]) -> str:
    runs = meta["sizes"]["runs"]
    return (
        f"peat-sync bench, {meta['date']}: {meta['server']}; {meta['cpus']} CPUs, Python"
        f" {meta['python']}; {'median of ' + str(runs) + ' runs' if runs > 1 else '1 run'}"
        f"{' (--quick)' if meta['quick'] else ''}; {meta['seconds']:.0f} s"
    )
