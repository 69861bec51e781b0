"""`peat-sync bench`: the command line, and the run of the scenarios it selects."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from peat_sync.bench.sizes import QUICK, SCENARIO_SUMMARIES, Sizes

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

HELP_WIDTH = 79
TARGETS = """targets (issue 5; 2-core machine, same run, median of 3):
  Subscribe, 1 subscriber          >= 0.9 x the bare grpclib stream
  SubscribeBatched replay          >= 1,000,000 events/s to one grpcio client
  WriteDocuments                   >= 50,000 documents/s, durable at return
  PutDocument                      >= 0.8 x the bare grpclib unary echo
  server CPU per delivered event   100 subscribers <= 0.5 x 1 subscriber
  put-to-delivery p99              <= 10 ms at 1,000 events/s, 10 subscribers
  stalled subscriber               others' p99 <= 1.1 x scenario 4's; the server's
                                   RSS does not grow with the events produced"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of the description and epilog, and never breaks a line inside a
    hyphenated word such as 'peat-sync[plot]', which must stay copyable."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _counts(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list like 1,10,100") from None
    if not values or min(values) < 1 or values[0] != 1 or list(values) != sorted(set(values)):
        raise argparse.ArgumentTypeError("expected increasing counts from 1, like 1,10,100")
    return values


def _scenario(text: str) -> str:
    names = list(SCENARIO_SUMMARIES)
    if text.isdigit() and 1 <= int(text) <= len(names):
        return names[int(text) - 1]
    if text not in SCENARIO_SUMMARIES:
        raise argparse.ArgumentTypeError(
            f"no scenario {text!r}; choose from {', '.join(names)} (or 1-{len(names)})"
        )
    return text


def add_bench_command(commands: argparse._SubParsersAction[Any]) -> None:
    """Add `bench` to the `peat-sync` parser's subcommands."""
    scenarios = "\n".join(
        f"  {number}. {name:<10} {summary}"
        for number, (name, summary) in enumerate(SCENARIO_SUMMARIES.items(), start=1)
    )
    description = textwrap.fill(
        "Measure peat-sync: each scenario runs against a fresh `peat-sync serve` on a"
        " temporary data dir (or against a running deployment, with --addr), with the"
        " subscribers and writers in processes of their own (the official grpcio client), and"
        " beside the bare grpclib baseline, measured in the same run. Progress goes to stderr;"
        " a table per scenario, then the targets, to stdout. Documents are written to the"
        " collection 'bench'.",
        HELP_WIDTH,
    )
    parser: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure throughput, latency and memory against the targets",
        description=f"{description}\n\nscenarios:\n{scenarios}",
        epilog=TARGETS,
        formatter_class=_HelpFormatter,
    )
    parser.set_defaults(bench_command=True)
    parser.add_argument(
        "--addr",
        metavar="ADDRESS",
        help="bench the server at HOST:PORT, tcp://HOST:PORT or unix:///PATH instead of"
        " starting one; its RSS and CPU are then reported as n/a",
    )
    parser.add_argument(
        "--scenario",
        dest="scenarios",
        action="append",
        type=_scenario,
        metavar="NAME",
        help="run this scenario (a name or number above); repeat for more [default: all]",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one run: a smoke test of seconds"
    )
    parser.add_argument(
        "--runs", type=_positive, metavar="N", help="runs per figure, which is their median [3]"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure as JSON")
    parser.add_argument(
        "--plot",
        type=Path,
        metavar="PATH",
        help="draw latency and throughput against subscribers (fan-out) as a PNG; needs"
        " matplotlib (pip install 'peat-sync[plot]')",
    )
    sizes = parser.add_argument_group("sizes (defaults of a full run)")
    default = Sizes()
    sizes.add_argument(
        "--put-clients",
        type=_positive,
        metavar="N",
        help=f"concurrent PutDocument clients [{default.put_clients}]",
    )
    sizes.add_argument(
        "--stream-events",
        type=_positive,
        metavar="N",
        help=f"events the one subscriber reads [{default.stream_events:,}]",
    )
    sizes.add_argument(
        "--fanout",
        type=_counts,
        metavar="LIST",
        help=f"subscriber counts of the fan-out [{','.join(map(str, default.fanout))}]",
    )
    sizes.add_argument(
        "--rate",
        type=_positive,
        metavar="N",
        help=f"events/s of the latency and stalled scenarios [{default.rate:,}]",
    )
    sizes.add_argument(
        "--stall-seconds",
        type=_positive,
        metavar="N",
        help=f"how long the stalled subscriber stays stopped [{default.stall_seconds:g}]",
    )
    sizes.add_argument(
        "--replay-events",
        type=_positive,
        metavar="N",
        help=f"how far behind the replaying subscriber is [{default.replay_events:,}]",
    )
    sizes.add_argument(
        "--idle-subscribers",
        type=_positive,
        metavar="N",
        help=f"idle subscribers of the memory scenario [{default.idle_subscribers:,}]",
    )
    sizes.add_argument(
        "--write-count",
        type=_positive,
        metavar="N",
        help=f"documents per WriteDocuments run [{default.write_count:,}]",
    )


# Options that set a field of Sizes of the same name.
_SIZE_OPTIONS = (
    "runs",
    "put_clients",
    "stream_events",
    "fanout",
    "rate",
    "stall_seconds",
    "replay_events",
    "idle_subscribers",
    "write_count",
)


def _sizes(args: argparse.Namespace) -> Sizes:
    chosen = {name: getattr(args, name) for name in _SIZE_OPTIONS}
    base = QUICK if args.quick else Sizes()
    return dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})


def _fail(message: str, code: int) -> int:
    print(f"peat-sync bench: {message}", file=sys.stderr, flush=True)
    return code


def run_bench(args: argparse.Namespace) -> int:
    """Run the selected scenarios; returns the exit code."""
    # Imported here: they load grpcio, which `peat-sync serve` has no use for.
    from peat_sync.bench import report
    from peat_sync.bench.servers import BenchError, get_status, grpc_target

    target = None
    if args.addr is not None:
        try:
            target = grpc_target(args.addr)
        except ValueError as exc:
            return _fail(f"bad --addr {args.addr!r}: {exc}", EXIT_USAGE)
    selected = [
        name for name in SCENARIO_SUMMARIES if name in (args.scenarios or SCENARIO_SUMMARIES)
    ]
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        # Found out now rather than after minutes of measuring.
        if path is not None and not path.resolve().parent.is_dir():
            return _fail(f"{flag} {path}: no directory {path.parent}", EXIT_USAGE)
    if args.plot is not None:
        if "fanout" not in selected:
            return _fail("--plot draws the fan-out scenario: select it too", EXIT_USAGE)
        try:
            report.check_plotting()
        except report.PlotUnavailable as exc:
            return _fail(str(exc), EXIT_FAILED)
    if target is not None:
        try:
            get_status(target)
        except BenchError as exc:
            return _fail(str(exc), EXIT_UNAVAILABLE)
    # SIGTERM stops the bench as Ctrl-C does: the servers and workers it started are
    # stopped on the way out, not left running.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(args, target, selected)
    except BenchError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # --json or --plot cannot be written, /proc unreadable ...
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, target: str | None, selected: list[str]) -> int:
    from peat_sync.bench import report
    from peat_sync.bench.scenarios import SCENARIOS, Bench

    sizes = _sizes(args)
    started = time.monotonic()
    step = (0, "")

    def progress(message: str) -> None:
        elapsed = time.monotonic() - started
        number, name = step
        print(
            f"[{elapsed:5.1f}s] {number}/{len(selected)} {name}: {message}",
            file=sys.stderr,
            flush=True,
        )

    with tempfile.TemporaryDirectory(prefix="peat-bench-") as workdir:
        bench = Bench(sizes, Path(workdir), progress, addr=target)
        for number, name in enumerate(selected, start=1):
            step = (number, name)
            progress("starting")
            bench.results[name] = SCENARIOS[name](bench)
    results = list(bench.results.values())
    found = report.targets(bench.results)
    meta = _meta(args, sizes, target, time.monotonic() - started)
    print(report.render(results, found, _header(meta)), end="", flush=True)
    if args.json is not None:
        report.write_json(args.json, report.to_json(results, found, meta))
    if args.plot is not None:
        report.plot(bench.results["fanout"], args.plot)
    return EXIT_OK


def _meta(
    args: argparse.Namespace, sizes: Sizes, target: str | None, seconds: float
) -> dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "server": target or "peat-sync serve on a temporary data dir, started per scenario",
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "quick": args.quick,
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
