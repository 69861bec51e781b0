"""The client commands of `peat-sync`: put, get, delete, list, status, health and watch.

Each talks to a running server at --addr (or PEAT_SIDECAR_ADDR), over TLS when a --tls-*
option (or its variable) is given, and prints JSON to stdout; errors go to stderr as one line,
and the exit code says what happened (see EXIT_CODES).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from typing import Any

from peat_sync.cli.options import (
    CLIENT_OPTIONS,
    WATCH_OPTIONS,
    WRITE_OPTIONS,
    ConfigError,
    Option,
    add_options,
    client_tls,
    resolve,
)
from peat_sync.client import ChangeType, Client, PreconditionFailed, Rejected, Unavailable

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4
EXIT_CHANGED = 5
EXIT_INTERRUPTED = 130  # as shells report a command that Ctrl-C stopped

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  done
  {EXIT_NOT_FOUND}  no such document (get)
  {EXIT_USAGE}  bad command line
  {EXIT_UNAVAILABLE}  the server cannot be reached or cannot serve now; retrying may work
  {EXIT_REJECTED}  the server rejected the request (the message says why)
  {EXIT_CHANGED}  --expected-sequence did not hold: the document changed since
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (watch: 0, its normal end)"""

HELP_WIDTH = 79

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _fail(message: str, code: int) -> int:
    print(f"peat-sync: {message}", file=sys.stderr)
    return code


async def put(client: Client, args: argparse.Namespace) -> int:
    if args.json in (None, "-"):
        if sys.stdin.isatty():
            print("reading the document from stdin; end it with Ctrl-D", file=sys.stderr)
        text = sys.stdin.read()
    else:
        text = args.json
    sequence = await client.put(
        args.collection, args.doc_id, text, expected_sequence=args.expected_sequence
    )
    _print_json({"collection": args.collection, "doc_id": args.doc_id, "sequence": sequence})
    return EXIT_OK


async def get(client: Client, args: argparse.Namespace) -> int:
    document = await client.get(args.collection, args.doc_id)
    if document is None:
        message = f"no document {args.doc_id!r} in collection {args.collection!r}"
        return _fail(message, EXIT_NOT_FOUND)
    print(document.json_data, flush=True)
    return EXIT_OK


async def delete(client: Client, args: argparse.Namespace) -> int:
    sequence = await client.delete(
        args.collection, args.doc_id, expected_sequence=args.expected_sequence
    )
    _print_json({"collection": args.collection, "doc_id": args.doc_id, "sequence": sequence})
    return EXIT_OK


async def list_ids(client: Client, args: argparse.Namespace) -> int:
    for doc_id in await client.list_ids(args.collection):
        print(doc_id)
    sys.stdout.flush()
    return EXIT_OK


async def status(client: Client, args: argparse.Namespace) -> int:
    response = await client.status()
    _print_json(
        {
            "node_id": response.node_id,
            "endpoint_addr": response.endpoint_addr,
            "phase": response.phase.name.lower(),
            "head_sequence": response.head_sequence,
            "epoch": response.epoch,
            "subscribers": response.subscribers,
            "lag_events": response.lag_events,
            "replay_floor": response.replay_floor,
            "catch_up_floor": response.catch_up_floor,
            "sync_active": response.sync_active,
            "connected_peers": response.connected_peers,
            **(
                {"stream": response.stream, "nats_connected": response.connected}
                if response.shared
                else {}
            ),
        }
    )
    return EXIT_OK


async def health(client: Client, args: argparse.Namespace) -> int:
    if await client.serving():
        print("serving", flush=True)
        return EXIT_OK
    return _fail("not serving: the server is starting or draining", EXIT_UNAVAILABLE)


async def watch(client: Client, args: argparse.Namespace) -> int:
    # SIGTERM stops a watch as cleanly as Ctrl-C does: it is the way to end it.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with client.subscribe(
        args.collection, since=args.since, epoch=args.epoch, snapshot=args.snapshot
    ) as subscription:
        async for event in subscription:
            if event.type is not ChangeType.HEARTBEAT or args.heartbeats:
                _print_json(event.to_json())
    return EXIT_OK


def add_client_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the client commands to the `peat-sync` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    add_options(common, CLIENT_OPTIONS)

    def add(name: str, command: Command, summary: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name,
            parents=[common],
            help=summary,
            # Wrapped here, because the raw formatter keeps the exit-code table's layout.
            description=textwrap.fill(description, HELP_WIDTH),
            epilog=EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.set_defaults(run=functools.partial(run_client_command, command))
        return parser

    def add_document_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("collection", help="the collection, such as 'commands'")
        parser.add_argument("doc_id", metavar="DOC_ID", help="the document's id")

    parser = add(
        "put",
        put,
        "store a JSON document",
        "Store a JSON object as a document, replacing any document with that id. The JSON"
        " comes from the argument, or from stdin when it is left out or is '-'. Prints the"
        " sequence the change was committed at, once it is durable.",
    )
    add_document_arguments(parser)
    parser.add_argument("json", nargs="?", metavar="JSON", help="the document, as a JSON object")
    add_options(parser, WRITE_OPTIONS)

    parser = add("get", get, "print a document", "Print a document's JSON as it was stored.")
    add_document_arguments(parser)

    parser = add(
        "delete",
        delete,
        "delete a document",
        "Delete a document and print the sequence of the delete. Deleting a document that"
        " does not exist succeeds and prints sequence 0.",
    )
    add_document_arguments(parser)
    add_options(parser, WRITE_OPTIONS)

    parser = add("list", list_ids, "list a collection's doc_ids", "Print one doc_id per line.")
    parser.add_argument("collection", help="the collection")

    add(
        "status",
        status,
        "print the server's status",
        "Print the node's status as JSON: node id, phase, head sequence, epoch, subscribers,"
        " lag events and the replay and catch-up floors.",
    )

    add(
        "health",
        health,
        "check that the server serves (for probes)",
        "Ask the server's gRPC health service (grpc.health.v1.Health/Check) whether it"
        " serves. Exits 0 when it does, and 3 while it starts or drains, or when it cannot"
        " be reached: a container's health check, or a Kubernetes exec probe where the"
        " server listens on a unix socket (the native grpc probe needs TCP).",
    )

    parser = add(
        "watch",
        watch,
        "print every change as it happens",
        "Print one JSON line per event of the change feed, until interrupted. The watch"
        " reconnects by itself when the server goes away, and resumes where it stopped, so"
        " no change is missed or printed twice; when the server cannot resume it, a"
        " 'resync' line says so and a snapshot of the current documents follows. While the"
        " server cannot be reached, watch keeps retrying (it never exits 3). To resume"
        " a later watch, pass the sequence of the last line and the epoch of the last"
        " control line (any type but upsert and delete) as --since and --epoch.",
    )
    add_options(parser, WATCH_OPTIONS)


# The options of a command besides CLIENT_OPTIONS.
_COMMAND_OPTIONS: dict[Command, tuple[Option, ...]] = {
    put: WRITE_OPTIONS,
    delete: WRITE_OPTIONS,
    watch: WATCH_OPTIONS,
}


async def _run(command: Command, client: Client, args: argparse.Namespace) -> int:
    async with client:
        return await command(client, args)


def run_client_command(command: Command, args: argparse.Namespace) -> int:
    """Run a client command; returns the exit code. ConfigError for a bad option."""
    values = resolve((*CLIENT_OPTIONS, *_COMMAND_OPTIONS.get(command, ())), args, os.environ)
    args = argparse.Namespace(**{**vars(args), **values})
    try:
        client = Client(args.addr, timeout=args.timeout, ssl=client_tls(values))
    except ValueError as exc:  # TLS asked for on a unix socket
        raise ConfigError(str(exc)) from None
    try:
        return asyncio.run(_run(command, client, args))
    except Unavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except PreconditionFailed as exc:
        return _fail(f"precondition failed: {exc}", EXIT_CHANGED)
    except Rejected as exc:
        return _fail(f"rejected: {exc}", EXIT_REJECTED)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # The normal end of a watch; any other command stopped before it was done.
        return EXIT_OK if command is watch else EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away, as `head` does
        # Python flushes stdout once more at exit, and would fail then (exit status 120):
        # point it at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
