"""Read a Subscribe stream with the official grpcio client and report how fast it went.

    python benchmarks/grpcio_subscriber.py API_DIR ADDRESS EVENTS [--since N]

API_DIR holds sidecar_pb2 and sidecar_pb2_grpc compiled from proto/sidecar.proto. Prints one
JSON line: {"events": ..., "seconds": ..., "first_sequence": ..., "last_sequence": ...}, timed
from the first event received to the last. Runs in its own process so that client cost does
not hide server cost.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("api_dir")
    parser.add_argument("address")
    parser.add_argument("events", type=int)
    parser.add_argument("--since", type=int)
    args = parser.parse_args()
    sys.path.insert(0, args.api_dir)
    import grpc
    import sidecar_pb2
    import sidecar_pb2_grpc

    request = sidecar_pb2.SubscribeRequest()
    if args.since is not None:
        request.since_sequence = args.since
    with grpc.insecure_channel(args.address) as channel:
        stream = sidecar_pb2_grpc.PeatSidecarStub(channel).Subscribe(request, timeout=600)
        print(json.dumps({"ready": True}), flush=True)
        first = next(stream)
        started = time.perf_counter()
        last = first
        for count, change in enumerate(stream, start=2):
            last = change
            if count >= args.events:
                break
        seconds = time.perf_counter() - started
        stream.cancel()
    print(
        json.dumps(
            {
                "events": args.events,
                "seconds": seconds,
                "first_sequence": first.sequence,
                "last_sequence": last.sequence,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
