"""Read a Subscribe stream with the official grpcio client and report how fast it went.

    python benchmarks/grpcio_subscriber.py API_DIR ADDRESS EVENTS [--since N] [--snapshot]
        [--until CHANGE_TYPE]

API_DIR holds sidecar_pb2 and sidecar_pb2_grpc compiled from proto/sidecar.proto. Reads EVENTS
events, or up to the first event of CHANGE_TYPE (7 = CATCH_UP_END) if that comes first. Prints
one JSON line: {"events": ..., "data_events": ..., "seconds": ..., "first_sequence": ...,
"last_sequence": ..., "last_change_type": ...}, timed from the first event received to the
last; data_events counts the UPSERT and DELETE events among them. Runs in its own process so
that client cost does not hide server cost.
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
    parser.add_argument("--snapshot", action="store_true")
    parser.add_argument("--until", type=int, help="stop at the first event of this change type")
    args = parser.parse_args()
    sys.path.insert(0, args.api_dir)
    import grpc
    import sidecar_pb2
    import sidecar_pb2_grpc

    request = sidecar_pb2.SubscribeRequest()
    if args.since is not None:
        request.since_sequence = args.since
    request.snapshot = args.snapshot
    data_types = {sidecar_pb2.CHANGE_TYPE_UPSERT, sidecar_pb2.CHANGE_TYPE_DELETE}
    with grpc.insecure_channel(args.address) as channel:
        stream = sidecar_pb2_grpc.PeatSidecarStub(channel).Subscribe(request, timeout=600)
        print(json.dumps({"ready": True}), flush=True)
        first = next(stream)
        started = time.perf_counter()
        last = first
        count = 1
        data_events = int(first.change_type in data_types)
        for count, change in enumerate(stream, start=2):
            last = change
            data_events += change.change_type in data_types
            if count >= args.events or change.change_type == args.until:
                break
        seconds = time.perf_counter() - started
        stream.cancel()
    print(
        json.dumps(
            {
                "events": count,
                "data_events": data_events,
                "seconds": seconds,
                "first_sequence": first.sequence,
                "last_sequence": last.sequence,
                "last_change_type": last.change_type,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
