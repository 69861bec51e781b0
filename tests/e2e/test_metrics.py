"""The Prometheus endpoint (`--metrics-listen`), scraped over HTTP while the server works."""

from __future__ import annotations

import json
import socket

from peat_sync.generated.peat.sidecar import v1 as pb
from tests.helpers.clients import GrpcioApi, GrpcioClient, put
from tests.helpers.metrics import scrape
from tests.helpers.servers import StartServer
from tests.helpers.streams import grpcio_subscription, wait_for_subscribers
from tests.helpers.waiting import CALL_TIMEOUT


def test_the_metrics_endpoint_counts_what_the_node_does(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    """Five puts, a subscriber that catches up from the store (the replay log holds 2), a
    RESYNC, and a live subscriber: each shows in the scraped figures."""
    server = start_server("--metrics-listen", "tcp://127.0.0.1:0", "--replay-log-size", "2")
    client = GrpcioClient(server.address, grpcio_api)
    try:
        before = scrape(server)
        assert before[("peat_up", ())] == 1
        assert before[("peat_subscribers", ())] == 0
        for number in range(5):
            put(client, "c", f"d{number}", json.dumps({"n": number}))
        with grpcio_subscription(client, collections=["c"], since_sequence=0) as catching_up:
            events = catching_up.take(7)  # CATCH_UP_BEGIN, 5 documents, CATCH_UP_END
            assert events[0].change_type == pb.ChangeType.CATCH_UP_BEGIN.value
        with grpcio_subscription(client, since_sequence=2**64 - 1) as ahead:
            assert ahead.take(1)[0].change_type == pb.ChangeType.RESYNC.value
            wait_for_subscribers(client, 1)
            figures = scrape(server)
    finally:
        client.close()

    assert figures[("peat_subscribers", ())] == 1
    assert figures[("peat_head_sequence", ())] == 5
    assert figures[("peat_replay_floor_sequence", ())] == 3
    assert figures[("peat_catch_ups_total", ())] == 1
    assert figures[("peat_resyncs_total", (("reason", "SEQUENCE_AHEAD"),))] == 1
    # The catch-up's 7 events and the RESYNC (heartbeats come only after 10 s of silence).
    assert figures[("peat_events_delivered_total", ())] == 8
    assert figures[("peat_commit_seconds_count", ())] == 5
    assert figures[("peat_commit_seconds_bucket", (("le", "+Inf"),))] == 5
    assert figures[("peat_commit_seconds_sum", ())] > 0
    # The RESYNC'd stream is live at the head, with nothing unread.
    assert figures[("peat_subscriber_buffer_fill_count", ())] == 1
    assert figures[("peat_subscriber_buffer_fill_bucket", (("le", "0.0"),))] == 1
    assert figures[("peat_lag_events_total", ())] == 0


def test_a_metrics_port_in_use_stops_the_start_with_one_line(start_server: StartServer) -> None:
    """A --metrics-listen port another program holds: exit status 1 and a line that names
    the address and the flag, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = start_server("--metrics-listen", f"tcp://127.0.0.1:{port}", must_start=False)
        assert server.process is not None
        assert server.process.wait(CALL_TIMEOUT) == 1
    assert f"cannot serve metrics on tcp://127.0.0.1:{port}" in server.log
    assert "--metrics-listen" in server.log
    assert "Traceback" not in server.log
