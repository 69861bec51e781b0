"""The `peat-sync` command."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from typing import NoReturn

import trio

from peat_sync.bench.command import add_bench_command, run_bench
from peat_sync.client.commands import add_client_commands, run_client_command
from peat_sync.config import SERVE_OPTIONS, ConfigError, ServeConfig, add_options, serve_config
from peat_sync.logs import configure_logging
from peat_sync.server.metrics import MetricsListenError
from peat_sync.server.serve import ListenError, serve
from peat_sync.soak.command import add_soak_command, run_soak_command
from peat_sync.store.sqlite import StoreError

log = logging.getLogger("peat_sync.cli")

EXIT_USAGE = 2
EXIT_FAILURE = 1


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
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.epilog = "Run 'peat-sync COMMAND --help' for the options of a command."
    serve_parser = commands.add_parser(
        "serve",
        help="run the sidecar server",
        description="Run the peat.sidecar.v1 gRPC server on a SQLite store in --data-dir."
        " SIGINT or SIGTERM shuts it down cleanly. Each option can also be set with the"
        " environment variable shown; a flag wins over its variable.",
    )
    add_options(serve_parser, SERVE_OPTIONS)
    add_client_commands(commands)
    add_bench_command(commands)
    add_soak_command(commands)
    return parser


async def _serve_until_signalled(config: ServeConfig) -> None:
    """Trio-flavoured: serve; the first SIGINT or SIGTERM shuts down cleanly, a second one
    stops at once (a commit under way still completes)."""
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch_signals() -> None:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    if stop.is_set():
                        log.warning("received %s again: stopping now", name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("received %s: shutting down", name)
                    stop.set()

            nursery.start_soon(watch_signals)
            await serve(config, stop)
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if "client_command" in args:
        return run_client_command(args)
    if "bench_command" in args:
        return run_bench(args)
    if "soak_command" in args:
        return run_soak_command(args)
    try:
        config = serve_config(args)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"peat-sync {args.command}: error: {exc}\n")
    configure_logging(config.log_level, config.log_format)
    failed = False
    try:
        trio.run(_serve_until_signalled, config)
    except* (ListenError, MetricsListenError, StoreError) as group:
        for message in _leaf_messages(group):
            log.error("%s", message)
        failed = True
    return EXIT_FAILURE if failed else 0


def _leaf_messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [message for inner in error.exceptions for message in _leaf_messages(inner)]
    return [str(error)]


if __name__ == "__main__":
    sys.exit(main())
