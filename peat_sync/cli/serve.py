"""`peat-sync serve`: run the sidecar until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

import trio

from peat_sync.cli.options import SERVE_OPTIONS, SHARED_OPTIONS, add_options, serve_config
from peat_sync.logs import configure_logging
from peat_sync.server.config import ServeConfig
from peat_sync.server.metrics import MetricsListenError
from peat_sync.server.serve import ListenError, serve
from peat_sync.store.sqlite import StoreError

log = logging.getLogger("peat_sync.cli")

EXIT_FAILURE = 1


def add_serve_command(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run the sidecar server",
        description="Run the peat.sidecar.v1 gRPC server on a SQLite store in --data-dir."
        " With --nats, several sidecars share one document space: each publishes its writes"
        " to a NATS JetStream stream and applies the stream to its store. SIGINT or SIGTERM"
        " shuts it down cleanly. Each option can also be set with the environment variable"
        " shown; a flag wins over its variable.",
    )
    add_options(parser, SERVE_OPTIONS)
    add_options(
        parser.add_argument_group(
            "shared mode",
            "several sidecars, one document space, over NATS JetStream (docs/operations.md)",
        ),
        SHARED_OPTIONS,
    )
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until signalled; returns the exit code. ConfigError for a bad option."""
    config = serve_config(args, os.environ)
    configure_logging(config.log_level, config.log_format)
    failed = False
    try:
        trio.run(_serve_until_signalled, config)
    except* (ListenError, MetricsListenError, StoreError) as group:
        for message in _leaf_messages(group):
            log.error("%s", message)
        failed = True
    return EXIT_FAILURE if failed else 0


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


def _leaf_messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [message for inner in error.exceptions for message in _leaf_messages(inner)]
    return [str(error)]
