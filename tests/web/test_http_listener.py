"""The HTTP listener of `peat-sync serve`, end to end: the API in Connect's JSON as a person with
a shell calls it, its refusals, its limits, its streams through a drain and a stall, the page,
CORS, and its options. The Connect-Node and browser tests cover the other clients.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import struct
from pathlib import Path

import pytest

from peat_sync.bench.launcher import ServerProcess
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.clients import GrpcioApi, GrpcioClient, get, put
from tests.helpers.connect_http import ConnectStream, call, connection, ok
from tests.helpers.servers import StartServer
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.timeout(60)


def test_a_shell_user_puts_gets_lists_and_deletes_with_json(
    server: ServerProcess, grpcio_api: GrpcioApi
) -> None:
    url = server.http_url
    document = json.dumps({"callsign": "ALPHA", "fuel": 0.5})
    put_reply = ok(url, "PutDocument", {"collection": "fleet", "docId": "a1", "jsonData": document})
    assert put_reply == {"sequence": "1"}  # int64 is a string in protobuf's JSON
    assert ok(url, "GetDocument", {"collection": "fleet", "docId": "a1"}) == {
        "jsonData": document,
        "sequence": "1",
    }
    assert ok(url, "ListDocuments", {"collection": "fleet"}) == {"docIds": ["a1"]}
    # One document space: what either port writes, the other reads.
    grpcio = GrpcioClient(server.address, grpcio_api)
    try:
        assert get(grpcio, "fleet", "a1") == (document, 1)
        put(grpcio, "fleet", "b2", "{}")
    finally:
        grpcio.close()
    assert ok(url, "ListDocuments", {"collection": "fleet"}) == {"docIds": ["a1", "b2"]}
    assert ok(url, "DeleteDocument", {"collection": "fleet", "docId": "a1"}) == {"sequence": "3"}
    assert ok(url, "GetDocument", {"collection": "fleet", "docId": "a1"}) == {}
    status = ok(url, "GetStatus")
    assert status["headSequence"] == "3"
    assert status["phase"] == "NODE_PHASE_READY"


def test_refusals_carry_the_grpc_ports_codes_and_messages(server: ServerProcess) -> None:
    url = server.http_url
    unknown = call(url, "GetDocument", {"collection": "c", "docId": "d", "colour": "red"})
    assert unknown.status == 400
    assert unknown.body["code"] == "invalid_argument"
    assert 'no field named "colour"' in unknown.body["message"]

    empty = call(url, "PutDocument", {"collection": "", "docId": "d", "jsonData": "{}"})
    assert empty.body["code"] == "invalid_argument"
    assert "collection" in empty.body["message"]

    ok(url, "PutDocument", {"collection": "c", "docId": "d", "jsonData": "{}"})
    stale = call(
        url,
        "PutDocument",
        {"collection": "c", "docId": "d", "jsonData": "{}", "expectedSequence": "7"},
    )
    assert stale.status == 400
    assert stale.body["code"] == "failed_precondition"
    assert stale.headers["trailer-peat-current-sequence"] == "1"

    no_mesh = call(url, "ConnectPeer", {"endpointId": "x"})
    assert no_mesh.status == 501
    assert no_mesh.body["code"] == "unimplemented"
    assert "no peer mesh" in no_mesh.body["message"]

    assert call(url, "NoSuchRpc").status == 404


def test_requests_over_their_limit_are_refused(start_server: StartServer) -> None:
    server = start_server("--max-message-bytes", "100KiB", "--max-request-bytes", "1MiB")
    url = server.http_url
    big = json.dumps({"pad": "x" * 150_000})
    refused = call(url, "PutDocument", {"collection": "c", "docId": "d", "jsonData": big})
    assert refused.status == 429
    assert refused.body["code"] == "resource_exhausted"
    assert "--max-message-bytes" in refused.body["message"]
    # WriteDocuments has the larger limit, as on the gRPC port.
    medium = json.dumps({"pad": "x" * 90_000})
    writes = [{"collection": "c", "docId": f"d{i}", "jsonData": medium} for i in range(5)]
    assert len(ok(url, "WriteDocuments", {"writes": writes})["sequences"]) == 5
    too_many = call(url, "WriteDocuments", {"writes": writes * 3})
    assert too_many.body["code"] == "resource_exhausted"
    assert ok(url, "GetStatus")["headSequence"] == "5"


def test_a_stream_follows_writes_and_resumes_where_it_left(server: ServerProcess) -> None:
    url = server.http_url
    stream = ConnectStream(url, "Subscribe", {"sinceSequence": "0"})
    messages = stream.messages()
    for index in range(3):
        ok(url, "PutDocument", {"collection": "c", "docId": f"d{index}", "jsonData": "{}"})
    seen = [next(messages) for _ in range(3)]
    stream.close()
    assert [(m["docId"], m["sequence"], m["changeType"]) for m in seen] == [
        ("d0", "1", "CHANGE_TYPE_UPSERT"),
        ("d1", "2", "CHANGE_TYPE_UPSERT"),
        ("d2", "3", "CHANGE_TYPE_UPSERT"),
    ]
    epoch = ok(url, "GetStatus")["epoch"]
    ok(url, "PutDocument", {"collection": "c", "docId": "d3", "jsonData": "{}"})
    resumed = ConnectStream(url, "Subscribe", {"sinceSequence": "2", "epoch": epoch})
    try:
        following = resumed.messages()
        assert [next(following)["sequence"] for _ in range(2)] == ["3", "4"]
    finally:
        resumed.close()


def test_the_drain_ends_a_stream_with_where_to_resume(server: ServerProcess) -> None:
    url = server.http_url
    ok(url, "PutDocument", {"collection": "c", "docId": "d", "jsonData": "{}"})
    stream = ConnectStream(url, "Subscribe", {"sinceSequence": "0"})
    try:
        messages = stream.messages()
        assert next(messages)["sequence"] == "1"
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGTERM)
        assert list(messages) == []
        assert stream.end is not None, "the stream ended without its end-of-stream message"
        error = stream.end["error"]
        assert error["code"] == "unavailable"
        assert "since_sequence=1 and epoch=" in error["message"]
    finally:
        stream.close()
    assert server.process.wait(15) == 0
    assert "stopped cleanly" in server.log


def test_a_stream_whose_client_reads_nothing_is_cut_off(
    start_server: StartServer, grpcio_api: GrpcioApi
) -> None:
    server = start_server("--stalled-stream-timeout", "2s", "--heartbeat-interval", "500ms")
    port = int(server.http_url.rsplit(":", 1)[1].rstrip("/"))
    request = b'{"sinceSequence":"0"}'
    body = struct.pack(">BI", 0, len(request)) + request
    with socket.socket() as reader:  # subscribes, then never reads
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        reader.connect(("127.0.0.1", port))
        reader.sendall(
            b"POST /peat.sidecar.v1.PeatSidecar/Subscribe HTTP/1.1\r\nHost: peat\r\n"
            b"Content-Type: application/connect+json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        wait_until(lambda: ok(server.http_url, "GetStatus").get("subscribers") == 1)
        # More than the socket buffers on both sides hold (loopback's grow to 4 MiB).
        document = json.dumps({"pad": "x" * 4000})
        for batch in range(4):
            writes = [
                {"collection": "c", "docId": f"d{batch}-{i}", "jsonData": document}
                for i in range(500)
            ]
            ok(server.http_url, "WriteDocuments", {"writes": writes})
        # The stream is cut off and its slot freed; everyone else goes on.
        wait_until(
            lambda: "subscribers" not in ok(server.http_url, "GetStatus"),
            what="the stalled stream to be cut off",
        )
    server.wait_for_log(r"Subscribe from 127\.0\.0\.1:\d+ stalled: no send completed for 2s")
    grpcio = GrpcioClient(server.address, grpcio_api)
    try:
        assert put(grpcio, "c", "after", "{}") == 2001
    finally:
        grpcio.close()


def test_the_page_is_served_at_the_root(server: ServerProcess) -> None:
    conn = connection(server.http_url)
    try:
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200
        assert page.getheader("content-type", "").startswith("text/html")
        assert b"<html" in page.read().lower()
        conn.request("GET", "/no-such-file.js")
        missing = conn.getresponse()
        missing.read()
        assert missing.status == 404
    finally:
        conn.close()


def _preflight(url: str, origin: str) -> tuple[int, dict[str, str]]:
    conn = connection(url)
    try:
        conn.request(
            "OPTIONS",
            "/peat.sidecar.v1.PeatSidecar/GetStatus",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,connect-protocol-version",
            },
        )
        response = conn.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def test_cors_admits_the_origins_given_and_no_other(start_server: StartServer) -> None:
    server = start_server("--http-cors-origin", "https://fleet.example")
    status, headers = _preflight(server.http_url, "https://fleet.example")
    assert status == 200
    assert headers["access-control-allow-origin"] == "https://fleet.example"
    assert "connect-protocol-version" in headers["access-control-allow-headers"].lower()
    reply = call(server.http_url, "GetStatus", headers={"Origin": "https://fleet.example"})
    assert reply.headers["access-control-allow-origin"] == "https://fleet.example"
    assert "grpc-status" in reply.headers["access-control-expose-headers"]

    status, headers = _preflight(server.http_url, "https://elsewhere.example")
    assert status == 400
    assert "access-control-allow-origin" not in headers


def test_without_cors_origins_no_page_elsewhere_may_call(server: ServerProcess) -> None:
    status, headers = _preflight(server.http_url, "https://fleet.example")
    assert status != 200
    assert "access-control-allow-origin" not in headers
    reply = call(server.http_url, "GetStatus", headers={"Origin": "https://fleet.example"})
    assert "access-control-allow-origin" not in reply.headers


def test_http_listen_off_serves_no_http(start_server: StartServer) -> None:
    server = start_server("--http-listen", "off")
    assert server.http_url == ""
    assert "live page" not in server.log


def test_a_busy_http_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "serve",
            "--listen",
            "tcp://127.0.0.1:0",
            "--http-listen",
            f"tcp://127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "data"),
        )
    assert result.returncode == 1
    assert_one_line_error(result, f"cannot listen on tcp://127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--http-listen", "localhost", "expected tcp://HOST:PORT"),
        ("--http-cors-origin", "fleet.example", "an origin is scheme://host[:port]"),
    ],
)
def test_bad_http_options_exit_2_with_one_line(flag: str, value: str, says: str) -> None:
    result = run_cli("serve", flag, value)
    assert result.returncode == 2
    assert_one_line_error(result, flag, says)


def test_a_client_that_trickles_its_headers_is_dropped(server: ServerProcess) -> None:
    port = int(server.http_url.rsplit(":", 1)[1].rstrip("/"))
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        slow.sendall(b"GET / HTTP/1.1\r\nHost: peat\r\n")  # and never the blank line
        assert slow.recv(100) == b""  # closed: within the header timeout, not the socket's


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(self._path))


def test_the_http_listener_serves_a_unix_socket(
    start_server: StartServer, socket_dir: Path
) -> None:
    path = socket_dir / "http.sock"
    server = start_server("--http-listen", f"unix://{path}")
    assert f"Connect and gRPC-Web: unix://{path} (HTTP over a unix socket" in server.log
    assert path.stat().st_mode & 0o777 == 0o600
    conn = _UnixConnection(path)
    try:
        conn.request(
            "POST",
            "/peat.sidecar.v1.PeatSidecar/GetStatus",
            body="{}",
            headers={"content-type": "application/json"},
        )
        reply = conn.getresponse()
        assert reply.status == 200
        assert json.loads(reply.read())["phase"] == "NODE_PHASE_READY"
    finally:
        conn.close()
    assert server.stop() == 0
    assert not path.exists()  # removed on the way out
