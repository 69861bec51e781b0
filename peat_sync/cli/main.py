"""The `peat-sync` parser, and the dispatch to the command it names."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from peat_sync.cli.bench import add_bench_command
from peat_sync.cli.client import add_client_commands
from peat_sync.cli.options import ConfigError
from peat_sync.cli.serve import add_serve_command

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, pointing at --help instead of printing the
    usage synopsis; subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="peat-sync",
        description="A document-sync sidecar: JSON documents in collections over gRPC, with a"
        " change feed that never loses an event silently.",
        epilog="Run 'peat-sync COMMAND --help' for the options of a command.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_serve_command(commands)
    add_client_commands(commands)
    add_bench_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"peat-sync {args.command}: error: {exc}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
