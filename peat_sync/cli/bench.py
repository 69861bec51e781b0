"""`peat-sync bench`: the command line of the bench, which is the optional extra
`peat-sync[bench]` (grpcio and matplotlib)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import textwrap
from typing import Any

from peat_sync.bench.sizes import SCENARIO_SUMMARIES
from peat_sync.bench.targets import TARGETS, full_run_figures
from peat_sync.cli.options import (
    BENCH_OPTIONS,
    BENCH_SIZE_OPTIONS,
    add_options,
    bench_sizes,
    resolve,
)

EXIT_FAILED = 1
HELP_WIDTH = 79
INSTALL_HINT = "peat-sync bench needs its extra: pip install 'peat-sync[bench]'"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of the description and epilog, and never breaks a line inside a
    hyphenated word such as 'peat-sync[bench]', which must stay copyable."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


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
        " collection 'bench'. Needs the extra: pip install 'peat-sync[bench]'.",
        HELP_WIDTH,
        break_on_hyphens=False,
    )
    figures = full_run_figures()
    width = max(len(target.bound) for target in TARGETS)
    targets = "\n".join(
        textwrap.fill(
            target.text(figures),
            HELP_WIDTH,
            initial_indent=f"  {target.bound:<{width}}  ",
            subsequent_indent=" " * (width + 4),
            break_on_hyphens=False,
        )
        for target in TARGETS
    )
    parser: argparse.ArgumentParser = commands.add_parser(
        "bench",
        help="measure throughput, latency and memory against the targets",
        description=f"{description}\n\nscenarios:\n{scenarios}",
        epilog=f"targets (2-core machine, same run, median of 3):\n{targets}",
        formatter_class=_HelpFormatter,
    )
    add_options(parser, BENCH_OPTIONS)
    add_options(parser.add_argument_group("sizes (defaults of a full run)"), BENCH_SIZE_OPTIONS)
    parser.set_defaults(run=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    """Run the selected scenarios; returns the exit code. ConfigError for a bad option."""
    values = resolve((*BENCH_OPTIONS, *BENCH_SIZE_OPTIONS), args, os.environ)
    try:
        importlib.import_module("grpc")  # by name: the extra is absent from most installs
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr, flush=True)
        return EXIT_FAILED
    from peat_sync.bench.run import run_bench

    return run_bench(
        addr=values["addr"],
        scenarios=values["scenario"],
        sizes=bench_sizes(values),
        json_path=values["json"],
        plot_path=values["plot"],
        quick=values["quick"],
        peer=values["peer"],
    )
