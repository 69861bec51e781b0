"""The client commands of `peat-sync`: put, get, delete, list, status and watch.

Each talks to a running server at --addr (or PEAT_SIDECAR_ADDR), over TLS when a --tls-*
option (or its variable) is given, and prints JSON to stdout; errors go to stderr as one line,
and the exit code says what happened (see EXIT_CODES).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from ssl import SSLContext
from typing import Any

from peat_sync import tls
from peat_sync.client.client import ADDRESS_ENV, DEFAULT_TIMEOUT, Client, default_address
from peat_sync.client.errors import Rejected, Unavailable
from peat_sync.client.events import ChangeType

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_REJECTED = 4
EXIT_INTERRUPTED = 130  # as shells report a command that Ctrl-C stopped

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  done
  {EXIT_NOT_FOUND}  no such document (get)
  {EXIT_USAGE}  bad command line
  {EXIT_UNAVAILABLE}  the server cannot be reached or cannot serve now; retrying may work
  {EXIT_REJECTED}  the server rejected the request (the message says why)
  {EXIT_INTERRUPTED}  interrupted by Ctrl-C (watch: 0, its normal end)"""

HELP_WIDTH = 79

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]

# (flag, its variable, the check of its file) of each TLS option, as `serve` resolves its own.
TLS_OPTIONS = (
    ("--tls-ca", "PEAT_SIDECAR_TLS_CA", tls.certificates_file),
    ("--tls-cert", "PEAT_SIDECAR_TLS_CLIENT_CERT", tls.certificates_file),
    ("--tls-key", "PEAT_SIDECAR_TLS_CLIENT_KEY", tls.private_key_file),
)


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
    sequence = await client.put(args.collection, args.doc_id, text)
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
    sequence = await client.delete(args.collection, args.doc_id)
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
        }
    )
    return EXIT_OK


async def watch(client: Client, args: argparse.Namespace) -> int:
    # SIGTERM stops a watch as cleanly as Ctrl-C does: it is the way to end it.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with client.subscribe(
        args.collections, since=args.since, epoch=args.epoch, snapshot=args.snapshot
    ) as subscription:
        async for event in subscription:
            if event.type is not ChangeType.HEARTBEAT or args.heartbeats:
                _print_json(event.to_json())
    return EXIT_OK


def _sequence(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a sequence is 0 or more")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def add_client_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add the client commands to the `peat-sync` parser's subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--addr",
        default=None,
        metavar="ADDRESS",
        help=f"the server: HOST:PORT, tcp://HOST:PORT or unix:///PATH"
        f" [default: ${ADDRESS_ENV}, else {default_address()}]",
    )
    common.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"give up on a call after this long [default: {DEFAULT_TIMEOUT:g}]",
    )
    tls_help = {
        "--tls-ca": "connect with TLS, trusting the server certificate's CA in this PEM file"
        " (without it, TLS trusts the system's CAs)",
        "--tls-cert": "connect with TLS, presenting this PEM client certificate (for servers"
        " with --tls-client-ca); needs --tls-key",
        "--tls-key": "the PEM private key of --tls-cert",
    }
    for flag, env, _ in TLS_OPTIONS:
        common.add_argument(flag, metavar="PATH", help=f"{tls_help[flag]} [default: ${env}]")

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
        parser.set_defaults(client_command=command)
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

    parser = add("list", list_ids, "list a collection's doc_ids", "Print one doc_id per line.")
    parser.add_argument("collection", help="the collection")

    add(
        "status",
        status,
        "print the server's status",
        "Print the node's status as JSON: node id, phase, head sequence, epoch, subscribers,"
        " lag events and the replay and catch-up floors.",
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
    parser.add_argument(
        "--collection",
        dest="collections",
        action="append",
        default=[],
        metavar="C",
        help="a collection to follow; repeat for more [default: all collections]",
    )
    parser.add_argument(
        "--since",
        type=_sequence,
        metavar="N",
        help="start with the changes after sequence N [default: from now on]",
    )
    parser.add_argument(
        "--epoch", metavar="E", help="the store epoch that --since belongs to (from a control line)"
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="print the current documents first, then the changes",
    )
    parser.add_argument(
        "--heartbeats", action="store_true", help="print heartbeat lines too (idle streams)"
    )


def _tls_context(args: argparse.Namespace) -> SSLContext | None:
    """The TLS context the --tls-* options (or their variables) ask for; None for none.
    ValueError names the option at fault."""
    paths: list[Path | None] = []
    for flag, env, check in TLS_OPTIONS:
        flag_value = getattr(args, flag.removeprefix("--").replace("-", "_"))
        raw, source = (flag_value, flag) if flag_value is not None else (os.environ.get(env), env)
        try:
            paths.append(None if raw is None else check(raw))
        except ValueError as exc:
            raise ValueError(f"{source}={raw!r}: {exc}") from None
    if paths == [None, None, None]:
        return None
    try:
        return tls.client_context(*paths)
    except ValueError as exc:
        raise ValueError(f"--tls-cert/--tls-key: {exc}") from None


async def _run(command: Command, args: argparse.Namespace) -> int:
    async with Client(args.addr, timeout=args.timeout, ssl=_tls_context(args)) as client:
        return await command(client, args)


def run_client_command(args: argparse.Namespace) -> int:
    """Run the client command that `args` names; returns the exit code."""
    try:
        return asyncio.run(_run(args.client_command, args))
    except ValueError as exc:  # a bad --addr or --tls-* option
        return _fail(str(exc), EXIT_USAGE)
    except Unavailable as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except Rejected as exc:
        return _fail(f"rejected: {exc}", EXIT_REJECTED)
    except (KeyboardInterrupt, asyncio.CancelledError):
        # The normal end of a watch; any other command stopped before it was done.
        return EXIT_OK if args.client_command is watch else EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of stdout went away, as `head` does
        # Python flushes stdout once more at exit, and would fail then (exit status 120):
        # point it at /dev/null instead.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
